"""Many photos -> one metric scene (``metro reconstruct FOLDER -o scene.ply``), and the ``--separate`` batch.

Folder pipeline (:class:`MultiviewJob`)
    1. Photos of the folder, sorted by file name (image files only; ``*.depth.png`` / ``*.depth.npy`` and
       hidden files are skipped). Each photo's metric depth comes from the model, or from ``depth_dir``
       (``DIR/<stem>.depth.png|.depth.npy|.png|.npy``: 16-bit PNG millimetres, ``.npy`` metres, stored or
       displayed orientation as in :mod:`metrocli.io.sensor_depth`). A photo that cannot be read is reported
       and left out; the others go on.
    2. Registration in any order (:func:`metrocli.geometry.posegraph.register_frames`): SIFT matches lifted
       to 3D, RANSAC + Umeyama, per-photo depth scale (model depth), ICP, match graph (largest connected part
       kept; the photos left out are reported with the reason), Open3D pose-graph optimisation.
    3. TSDF fusion (:mod:`metrocli.geometry.fusion`) and a mesh with vertex normals and colours.
    4. Output: the mesh (``.ply``/``.obj``/``.glb``) in the **camera frame of the first photo** (by file name;
       if that photo is left out, the first registered one), metres, and ``<out>.json`` beside it with every
       photo's pose (4x4 camera-to-first-camera), intrinsics, focal source and depth scale. Atomic writes.

Focal length (``focal_auto``, ``--focal auto``)
    Each photo's focal length is self-calibrated from its own model prediction (depth–normal consistency,
    :mod:`metrocli.pipeline.selfcal`; no second forward): photos without an EXIF focal length get a real one
    instead of the default field of view, photos with one are cross-checked (``disagreement``). A photo whose
    objective is flat (e.g. only a wall) keeps its own focal length, with a warning. The source and the
    uncertainty are recorded per photo. Model depth only (sensor depth has no predicted normals).

Scale convention
    With model depth each photo's depth gets a scale ``s_k`` (``depth * s_k`` is used). By default the first
    registered photo defines the metric frame (``s = 1`` there: ``scale_reference="first"``). With
    ``scale_reference="mean"`` the scales are normalised to a geometric mean of 1 instead: when the
    per-photo errors of the model are independent and unbiased, the mean of N photos estimates the true scale
    about sqrt(N) times better than any single photo does. Sensor depth is metric in every photo: scale 1.

Batch (``--separate``, :func:`reconstruct_separate`)
    One mesh (or cloud) per photo with :func:`metrocli.pipeline.single.reconstruct_photo`, resumable.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from metrocli.errors import DepthMapError, MetroUsageError, ReconstructionError

log = logging.getLogger("metrocli.pipeline.multiview")

#: File extensions of photos picked up in a folder.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".heic", ".heif", ".tif", ".tiff", ".webp", ".bmp"})
#: Depth files tried for photo ``<stem>.*`` in ``--depth-dir``, in this order.
DEPTH_PATTERNS = ("{stem}.depth.png", "{stem}.depth.npy", "{stem}.png", "{stem}.npy")
#: Version of the scene.json layout.
SCENE_JSON_VERSION = 1

ScaleReference = Literal["first", "mean"]


def is_depth_file(path: Path) -> bool:
    """``x.depth.png`` / ``x.depth.npy`` (depth maps written by ``metro depth`` and the sample renderer)."""
    name = path.name.lower()
    return name.endswith((".depth.png", ".depth.npy", ".depth.tif", ".depth.tiff"))


def list_photos(
    folder: str | os.PathLike[str], depth_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Image files of ``folder`` sorted by name: not hidden, not ``*.depth.*``, and (when ``depth_dir`` is
    the same folder) not the depth map of another photo there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetroUsageError(f"{folder}: not a folder")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    files = [p for p in files if not is_depth_file(p)]
    if depth_dir is not None and Path(depth_dir).resolve() == folder.resolve():
        stems_of_others = {p.stem for p in files if p.suffix.lower() != ".png"}
        files = [p for p in files if not (p.suffix.lower() == ".png" and p.stem in stems_of_others)]
    return files


def find_depth_file(photo: Path, depth_dir: str | os.PathLike[str]) -> Path:
    """The depth map of ``photo`` in ``depth_dir`` (see :data:`DEPTH_PATTERNS`); DepthMapError if none."""
    depth_dir = Path(depth_dir)
    for pattern in DEPTH_PATTERNS:
        cand = depth_dir / pattern.format(stem=photo.stem)
        if cand.is_file() and cand.resolve() != photo.resolve():
            return cand
    tried = ", ".join(p.format(stem=photo.stem) for p in DEPTH_PATTERNS)
    raise DepthMapError(f"{photo}: no depth map in {depth_dir} (tried {tried})")


@dataclass(frozen=True)
class MultiviewOptions:
    """Options of the folder pipeline.

    Attributes:
        depth_dir: folder of sensor depth maps; None = the model.
        voxel_m: TSDF voxel size in metres (None: from the scene extent, see
            :func:`metrocli.geometry.fusion.default_voxel_m`).
        per_photo_scale: estimate a depth scale per photo (None: yes for model depth, no for sensor depth).
        scale_reference: ``"first"`` or ``"mean"`` (see the module docstring).
        icp: ``"point-to-plane"``, ``"colored"`` or ``"none"``.
        simplify: target triangle count of the output mesh, or None.
        model_name, weights, device, precision: the model (unused with ``depth_dir``).
        force: recompute even when the output is up to date.
        focal_px, fov_deg: override every photo's focal length.
        focal_auto: self-calibrate every photo's focal length (model depth only; see the module docstring).
    """

    depth_dir: Path | None = None
    voxel_m: float | None = None
    per_photo_scale: bool | None = None
    scale_reference: ScaleReference = "first"
    icp: Literal["point-to-plane", "colored", "none"] = "point-to-plane"
    simplify: int | None = None
    model_name: str = "vit-small"
    weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    force: bool = False
    focal_px: float | None = None
    fov_deg: float | None = None
    focal_auto: bool = False


def _check_focal_auto(options: Any) -> None:
    """MetroUsageError when ``focal_auto`` is combined with sensor depth or a focal override."""
    if not options.focal_auto:
        return
    if options.depth_dir is not None:
        raise MetroUsageError(
            "--focal auto needs the model's depth and normals, not sensor depth maps (--depth-dir)"
        )
    if options.focal_px is not None or options.fov_deg is not None:
        raise MetroUsageError("give --focal auto or a focal length (--focal-px/--fov), not both")


@dataclass(frozen=True)
class LoadedView:
    """One photo with its depth, ready to register."""

    path: Path
    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: Any  # Intrinsics
    orientation: int
    depth_source: str
    depth_file: Path | None
    selfcal: dict | None = None  # SelfCalibrated.report() with focal_auto


def _focal_record(intrinsics: Any, selfcal: dict | None) -> dict:
    """Per-photo focal length, its source and (self-calibrated) uncertainty for the JSON outputs."""
    out = {
        "focal_px": intrinsics.fx,
        "focal_source": intrinsics.focal_source,
        "focal_uncertainty_px": selfcal["uncertainty_px"] if selfcal else None,
    }
    if selfcal is not None:
        out["selfcal"] = selfcal
    return out


@dataclass(frozen=True)
class MultiviewResult:
    """What :meth:`MultiviewJob.finish` wrote (``skipped`` when the output was already up to date)."""

    output: Path
    json_path: Path
    reference: str
    registered: tuple[str, ...]
    left_out: dict[str, str]
    scales: dict[str, float]
    n_vertices: int
    n_triangles: int
    voxel_m: float
    timings_s: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    focals: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary; ``focals``: per registered photo ``focal_px``, ``focal_source``,
        ``focal_uncertainty_px`` (self-calibrated only) and, with ``focal_auto``, ``selfcal``."""
        return {
            "output": str(self.output),
            "json": str(self.json_path),
            "reference": self.reference,
            "registered": list(self.registered),
            "left_out": dict(self.left_out),
            "scales": dict(self.scales),
            "n_vertices": self.n_vertices,
            "n_triangles": self.n_triangles,
            "voxel_m": self.voxel_m,
            "timings_s": dict(self.timings_s),
            "skipped": self.skipped,
            "focals": {name: dict(rec) for name, rec in self.focals.items()},
        }


class _LazyModel:
    """Loads the model on first use, once per batch."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self._model = None

    def load(self) -> None:
        """Load the model now (missing or unsafe weights: one clear error before any photo)."""
        if self._model is None:
            from metrocli.model.factory import load_model

            o = self.options
            self._model = load_model(o.model_name, weights=o.weights, device=o.device, precision=o.precision)

    def predict(self, photo: Any):  # -> Prediction
        self.load()
        return self._model.predict(photo.image, photo.intrinsics)


def _self_calibrated(photo: Any, prediction: Any) -> tuple[Any, dict]:
    """``(prediction at the self-calibrated focal length, its report)`` for one photo."""
    from metrocli.pipeline.selfcal import self_calibrated_prediction

    calibrated = self_calibrated_prediction(prediction, photo.intrinsics, label=Path(photo.path).name)
    return calibrated.prediction, calibrated.report()


def json_path_for(out_path: str | os.PathLike[str]) -> Path:
    """``scene.ply`` -> ``scene.json`` (beside it)."""
    p = Path(out_path)
    return p.with_suffix(".json")


class MultiviewJob:
    """The folder pipeline in steps, so that the CLI can show progress and report bad photos as they come:

    >>> job = MultiviewJob(folder, "scene.ply", MultiviewOptions(depth_dir=folder))
    >>> for photo in job.photos: job.load(photo)      # MetroError for a bad photo; the others go on
    >>> result = job.finish()                          # registers, fuses, writes scene.ply + scene.json
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        out_path: str | os.PathLike[str],
        options: MultiviewOptions = MultiviewOptions(),
    ) -> None:
        from metrocli.io.geometry_io import MESH_SUFFIXES

        self.folder = Path(folder)
        self.out_path = Path(out_path)
        self.options = options
        if self.out_path.suffix.lower() not in MESH_SUFFIXES:
            raise MetroUsageError(
                f"{self.out_path}: the scene is a mesh; use one of {', '.join(MESH_SUFFIXES)} as extension"
            )
        if options.voxel_m is not None and not (np.isfinite(options.voxel_m) and options.voxel_m > 0):
            raise MetroUsageError(f"--voxel-m must be a positive number of metres, got {options.voxel_m}")
        if options.simplify is not None and options.simplify <= 0:
            raise MetroUsageError(f"--simplify must be a positive triangle count, got {options.simplify}")
        if options.depth_dir is not None and not Path(options.depth_dir).is_dir():
            raise MetroUsageError(f"--depth-dir {options.depth_dir}: not a folder")
        _check_focal_auto(options)
        self.photos = list_photos(self.folder, options.depth_dir)
        if not self.photos:
            raise MetroUsageError(f"{self.folder}: no photos found")
        self.views: dict[Path, LoadedView] = {}
        self.failed: dict[Path, str] = {}
        self._model = _LazyModel(options)
        self.timings_s: dict[str, float] = {"load": 0.0}

    @property
    def json_path(self) -> Path:
        return json_path_for(self.out_path)

    def prepare(self) -> None:
        """Load the model when depth comes from it (WeightsError up front rather than once per photo)."""
        if self.options.depth_dir is None:
            self._model.load()

    def _fingerprint(self) -> list[list]:
        items = []
        for p in self.photos:
            st = p.stat()
            items.append([p.name, st.st_size, int(st.st_mtime)])
        return items

    def _options_key(self) -> dict:
        o = self.options
        return {
            "depth_dir": str(o.depth_dir) if o.depth_dir else None,
            "voxel_m": o.voxel_m,
            "per_photo_scale": o.per_photo_scale,
            "scale_reference": o.scale_reference,
            "icp": o.icp,
            "simplify": o.simplify,
            "model": None if o.depth_dir else o.model_name,
            "focal_px": o.focal_px,
            "fov_deg": o.fov_deg,
            **({"focal": "auto"} if o.focal_auto else {}),
        }

    def up_to_date(self) -> MultiviewResult | None:
        """The previous result when ``out_path`` and its JSON exist for the same inputs (resume)."""
        if self.options.force or not (self.out_path.is_file() and self.json_path.is_file()):
            return None
        try:
            data = json.loads(self.json_path.read_text())
            if data.get("inputs") != self._fingerprint() or data.get("options") != self._options_key():
                return None
            return MultiviewResult(
                self.out_path,
                self.json_path,
                data["reference_photo"],
                tuple(v["photo"] for v in data["photos"]),
                {v["photo"]: v["reason"] for v in data["left_out"]},
                {v["photo"]: v["scale"] for v in data["photos"]},
                int(data["n_vertices"]),
                int(data["n_triangles"]),
                float(data["voxel_m"]),
                skipped=True,
                focals={
                    v["photo"]: {
                        "focal_px": v["focal_px"],
                        "focal_source": v["focal_source"],
                        "focal_uncertainty_px": v.get("focal_uncertainty_px"),
                        **({"selfcal": v["selfcal"]} if "selfcal" in v else {}),
                    }
                    for v in data["photos"]
                },
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load(self, photo: Path, prediction: Any = None) -> None:
        """Load one photo and its depth; a :class:`MetroError` marks it failed (and is re-raised).

        ``prediction``: an already computed model :class:`~metrocli.prediction.Prediction` of the photo (made
        with its intrinsics, e.g. from ``metro depth``) instead of running the model; not with ``depth_dir``.
        """
        from metrocli.camera.photo import load_photo
        from metrocli.errors import MetroError

        t0 = time.perf_counter()
        try:
            ph = load_photo(photo, focal_px=self.options.focal_px, fov_deg=self.options.fov_deg)
            intrinsics, selfcal = ph.intrinsics, None
            if prediction is not None and self.options.depth_dir is not None:
                raise MetroUsageError(f"{photo}: a prediction was given but depth comes from --depth-dir")
            if self.options.depth_dir is not None:
                from metrocli.io.sensor_depth import read_depth_map

                depth_file = find_depth_file(photo, self.options.depth_dir)
                depth = read_depth_map(depth_file, ph)
                source = "sensor"
            else:
                depth_file = None
                if prediction is None:
                    prediction = self._model.predict(ph)
                if prediction.depth.shape != ph.image.shape[:2]:
                    h, w = prediction.depth.shape
                    raise DepthMapError(
                        f"{photo}: depth is {w}x{h} but the photo is {ph.image.shape[1]}x{ph.image.shape[0]}"
                    )
                if self.options.focal_auto:
                    prediction, selfcal = _self_calibrated(ph, prediction)
                depth, intrinsics = prediction.depth, prediction.intrinsics
                source = prediction.model or self.options.model_name
            depth = np.asarray(depth, dtype=np.float32)
            if not (np.isfinite(depth) & (depth > 0)).any():
                raise DepthMapError(f"{photo}: no valid depth")
            self.views[photo] = LoadedView(
                photo, ph.image, depth, intrinsics, ph.orientation, source, depth_file, selfcal
            )
        except MetroError as exc:
            self.failed[photo] = str(exc)
            raise
        finally:
            self.timings_s["load"] += time.perf_counter() - t0

    def finish(self) -> MultiviewResult:
        """Register the loaded photos, fuse them and write the mesh and its JSON (atomically)."""
        from metrocli.atomic import write_text_atomic
        from metrocli.geometry.fusion import FusionFrame, default_voxel_m, fuse_tsdf
        from metrocli.geometry.mesh import Mesh
        from metrocli.geometry.posegraph import register_frames
        from metrocli.geometry.registration import Frame
        from metrocli.io.geometry_io import write_mesh

        views = [self.views[p] for p in self.photos if p in self.views]
        if len(views) < 2:
            raise ReconstructionError(
                f"{self.folder}: multi-view reconstruction needs at least 2 readable photos, got {len(views)}"
            )
        opts = self.options
        sensor = all(v.depth_source == "sensor" for v in views)
        per_scale = (not sensor) if opts.per_photo_scale is None else bool(opts.per_photo_scale)
        frames = [Frame(v.path.name, v.rgb, v.depth_m, v.intrinsics) for v in views]
        t0 = time.perf_counter()
        reg = register_frames(
            frames, estimate_scale=per_scale, scale_reference=opts.scale_reference, icp=opts.icp
        )
        t1 = time.perf_counter()
        order = sorted(reg.poses)
        fusion_frames = [
            FusionFrame(views[k].rgb, views[k].depth_m * reg.scales[k], views[k].intrinsics, reg.poses[k])
            for k in order
        ]
        voxel = float(opts.voxel_m) if opts.voxel_m is not None else default_voxel_m(fusion_frames)
        mesh = fuse_tsdf(fusion_frames, voxel_m=voxel)
        if opts.simplify is not None and len(mesh.triangles) > opts.simplify:
            mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=int(opts.simplify))
            mesh.compute_vertex_normals()
        t2 = time.perf_counter()
        write_mesh(self.out_path, Mesh.from_open3d(mesh))
        self.timings_s.update({"register": t1 - t0, "fuse": t2 - t1, "write": time.perf_counter() - t2})

        ref_name = views[reg.reference].path.name
        if reg.reference != 0:
            log.warning(
                "%s could not be registered; the scene is in the camera frame of %s",
                views[0].path.name,
                ref_name,
            )
        left_out = {views[k].path.name: why for k, why in reg.left_out.items()}
        for k, why in reg.left_out.items():
            log.warning("%s left out: %s", views[k].path.name, why)
        for p, why in self.failed.items():
            left_out[p.name] = why
        photos_json = []
        for k in order:
            v = views[k]
            photos_json.append(
                {
                    "photo": v.path.name,
                    "pose_camera_to_reference": np.asarray(reg.poses[k]).round(9).tolist(),
                    "intrinsics": v.intrinsics.to_dict(),
                    "focal_px": v.intrinsics.fx,
                    "focal_source": v.intrinsics.focal_source,
                    "orientation": v.orientation,
                    "scale": reg.scales[k],
                    "depth_source": v.depth_source,
                    "depth_file": str(v.depth_file) if v.depth_file else None,
                    "focal_uncertainty_px": v.selfcal["uncertainty_px"] if v.selfcal else None,
                    **({"selfcal": v.selfcal} if v.selfcal is not None else {}),
                }
            )
        names = [v.path.name for v in views]
        doc = {
            "version": SCENE_JSON_VERSION,
            "mesh": self.out_path.name,
            "units": "metres",
            "frame": f"camera frame of {ref_name}: x right, y down, z forward (OpenCV)",
            "reference_photo": ref_name,
            "per_photo_scale": per_scale,
            "scale_reference": reg.scale_reference,
            "scale_meaning": "depth of the photo is multiplied by scale before fusion",
            "voxel_m": voxel,
            "n_vertices": len(mesh.vertices),
            "n_triangles": len(mesh.triangles),
            "photos": photos_json,
            "left_out": [{"photo": n, "reason": r} for n, r in sorted(left_out.items())],
            "pairs": [
                {
                    "a": names[p.i],
                    "b": names[p.j],
                    "registered": p.ok,
                    "matches": p.n_matches,
                    "inliers": p.n_inliers,
                    **({"reason": p.reason} if not p.ok else {"scale_b_over_a": p.scale}),
                }
                for p in reg.pairs
            ],
            "timings_s": dict(self.timings_s),
            "inputs": self._fingerprint(),
            "options": self._options_key(),
        }
        write_text_atomic(self.json_path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
        return MultiviewResult(
            self.out_path,
            self.json_path,
            ref_name,
            tuple(views[k].path.name for k in order),
            left_out,
            {views[k].path.name: reg.scales[k] for k in order},
            len(mesh.vertices),
            len(mesh.triangles),
            voxel,
            dict(self.timings_s),
            focals={views[k].path.name: _focal_record(views[k].intrinsics, views[k].selfcal) for k in order},
        )


def reconstruct_folder(
    folder: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    options: MultiviewOptions = MultiviewOptions(),
) -> MultiviewResult:
    """The whole folder pipeline in one call (photos that cannot be read are left out with a warning)."""
    from metrocli.errors import MetroError

    job = MultiviewJob(folder, out_path, options)
    done = job.up_to_date()
    if done is not None:
        return done
    for photo in job.photos:
        try:
            job.load(photo)
        except MetroError as exc:
            log.warning("%s", exc)
    return job.finish()


# ------------------------------------------------------------------------------------------- --separate


@dataclass(frozen=True)
class SeparateOptions:
    """Options of the ``--separate`` batch: those of :func:`metrocli.pipeline.single.reconstruct_photo`."""

    depth_dir: Path | None = None
    points_only: bool = False
    mesh_method: Literal["grid", "poisson"] = "grid"
    simplify: int | None = None
    focal_px: float | None = None
    fov_deg: float | None = None
    model_name: str = "vit-small"
    weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    force: bool = False
    suffix: str = ".ply"
    focal_auto: bool = False


@dataclass(frozen=True)
class SeparateResult:
    """One photo of the ``--separate`` batch: its output file and whether it was skipped (already there)."""

    photo: Path
    output: Path
    skipped: bool
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"photo": str(self.photo), "output": str(self.output), "skipped": self.skipped, **self.details}


class SeparateJob:
    """``--separate``: one mesh (or cloud) per photo into ``out_dir``, model loaded once, resumable."""

    def __init__(
        self, inputs: str | os.PathLike[str], out_dir: str | os.PathLike[str], options: SeparateOptions
    ) -> None:
        from metrocli.pipeline.depth import plan_stems

        inputs = Path(inputs)
        self.out_dir = Path(out_dir)
        self.options = options
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise MetroUsageError(f"-o {self.out_dir}: --separate needs an output folder")
        _check_focal_auto(options)
        photos = list_photos(inputs, options.depth_dir) if inputs.is_dir() else [inputs]
        if not photos:
            raise MetroUsageError(f"{inputs}: no photos found")
        self.plan = plan_stems(photos)
        self._model = _LazyModel(options)

    def prepare(self) -> None:
        """Load the model when some photo still needs model depth (WeightsError up front)."""
        o = self.options
        if o.depth_dir is None and any(
            o.force or not self.output_for(stem).is_file() for _, stem in self.plan
        ):
            self._model.load()

    def output_for(self, stem: str) -> Path:
        return self.out_dir / f"{stem}{self.options.suffix}"

    def run(self, item: tuple[Path, str]) -> SeparateResult:
        """Reconstruct one photo (skipped when its output exists, unless ``force``)."""
        from metrocli.camera.photo import load_photo
        from metrocli.pipeline.single import reconstruct_photo

        photo, stem = item
        out = self.output_for(stem)
        o = self.options
        if out.is_file() and not o.force:
            return SeparateResult(photo, out, True)
        depth_file = find_depth_file(photo, o.depth_dir) if o.depth_dir is not None else None
        prediction = None
        if depth_file is None:
            prediction = self._model.predict(load_photo(photo, focal_px=o.focal_px, fov_deg=o.fov_deg))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        result = reconstruct_photo(
            photo,
            out,
            depth_file=depth_file,
            points_only=o.points_only,
            mesh_method=o.mesh_method,
            simplify=o.simplify,
            focal_px=o.focal_px,
            fov_deg=o.fov_deg,
            model_name=o.model_name,
            weights=o.weights,
            device=o.device,
            precision=o.precision,
            prediction=prediction,
            focal_auto=o.focal_auto,
        )
        details = result.to_dict() if hasattr(result, "to_dict") else {}
        details.pop("photo", None)
        details.pop("output", None)
        return SeparateResult(photo, out, False, details)
