"""Many photos -> one metric scene (``metro reconstruct FOLDER -o scene.ply``), and the ``--separate`` batch.

Folder pipeline (:class:`MultiviewJob`)
    1. Photos of the folder, sorted by file name (:func:`metrocli.pipeline.inputs.list_photos`). Each
       photo's metric depth comes from the depth provider: the model, or a folder of sensor maps
       (``DIR/<stem>.depth.png|.depth.npy|.png|.npy``: 16-bit PNG millimetres, ``.npy`` metres, stored or
       displayed orientation as in :mod:`metrocli.io.sensor_depth`). A photo that cannot be read is reported
       and left out; the others go on.
    2. Registration (:func:`metrocli.geometry.posegraph.register_frames`), file-name order taken as the
       capture order: candidate pairs from that order and from image retrieval (not all pairs); per pair,
       pose hypotheses from SIFT matches lifted to 3D and from FPFH geometry, decided by dense verification
       (ICP kept only when it does not worsen it; ambiguous pairs refused); per-photo depth scale (model
       depth); match graph (largest connected part kept; the photos left out are reported with the reason);
       Open3D pose-graph optimisation with a cycle check and loop closures. ``scene.json`` records each pair's
       verification and residual, each photo's pose uncertainty and the spread of the per-photo scales.
    3. TSDF fusion (:mod:`metrocli.geometry.fusion`) and a mesh with vertex normals and colours.
    4. Output: the mesh (``.ply``/``.obj``/``.glb``) in the **camera frame of the first photo** (by file name;
       if that photo is left out, the first registered one), metres, and ``<out>.json`` beside it with every
       photo's pose (4x4 camera-to-first-camera), intrinsics, focal source and depth scale
       (:mod:`metrocli.pipeline.scene_json`). Atomic writes.

Focal length (``FocalMode(auto=True)``, ``--focal auto``)
    Each photo's focal length is self-calibrated from its own model prediction (depth–normal consistency,
    :mod:`metrocli.pipeline.selfcal`; no second forward): photos without an EXIF focal length get a real one
    instead of the default field of view, photos with one are cross-checked (``disagreement``). A photo whose
    objective is flat (e.g. only a wall) keeps its own focal length, with a warning. The source and the
    uncertainty are recorded per photo. Model depth only (sensor depth has no predicted normals).

Scale convention
    With model depth each photo's depth gets a scale ``s_k`` (``depth * s_k`` is used). By default the first
    photos define the metric frame by their median scale (``scale_reference="median"``, the default: the
    scale of the majority, which one photo with an outlying model scale does not move). With
    ``scale_reference="mean"`` the scales are normalised to a geometric mean of 1 instead (when the
    per-photo errors of the model are independent and unbiased, the mean of N photos estimates the true scale
    about sqrt(N) times better than any single photo does); with ``"first"`` the first registered photo has
    ``s = 1``. The spread of the scales (``scale_spread``, standard deviation of ``log s``) is the
    uncertainty of the scene's scale that the photos' disagreement shows. Sensor depth is metric in every
    photo: scale 1.

The ``--separate`` batch (one mesh per photo) is :mod:`metrocli.pipeline.separate`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from metrocli.errors import DepthMapError, MetroUsageError, ReconstructionError
from metrocli.pipeline.provider import DepthProvider, ModelDepth, SensorDepth, photos_of
from metrocli.pipeline.scene_json import (
    FusedScene,
    LoadedView,
    MultiviewResult,
    focal_record,
    loose_poses,
    result_from_doc,
    scene_doc,
)
from metrocli.prediction import Prediction

log = logging.getLogger("metrocli.pipeline.multiview")

ScaleReference = Literal["median", "mean", "first"]
IcpMode = Literal["point-to-plane", "colored", "none"]


@dataclass(frozen=True)
class MultiviewOptions:
    """Options of the folder pipeline (where depth comes from is the provider's business).

    Attributes:
        voxel_m: TSDF voxel size in metres (None: from the scene extent, see
            :func:`metrocli.geometry.fusion.default_voxel_m`).
        per_photo_scale: estimate a depth scale per photo (None: yes for model depth, no for sensor depth).
        scale_reference: ``"median"``, ``"mean"`` or ``"first"`` (see the module docstring).
        icp: ``"point-to-plane"``, ``"colored"`` or ``"none"``.
        simplify: target triangle count of the output mesh, or None.
        force: recompute even when the output is up to date.
        cameras: a GLB output also gets a frustum mesh per registered photo (``--cameras``; its camera
            nodes are always there).
        mesh_normals: also write the fused mesh's vertex normals (``--mesh-normals``).
        cache: keep each photo's model prediction beside the output
            (:mod:`metrocli.pipeline.prediction_cache`), so a re-run after one photo changed runs one forward.
    """

    voxel_m: float | None = None
    per_photo_scale: bool | None = None
    scale_reference: ScaleReference = "median"
    icp: IcpMode = "point-to-plane"
    simplify: int | None = None
    force: bool = False
    cameras: bool = False
    cache: bool = True
    mesh_normals: bool = False

    def key(self) -> dict[str, Any]:
        """The options that shape the scene (resume record)."""
        return {
            "voxel_m": self.voxel_m,
            "per_photo_scale": self.per_photo_scale,
            "scale_reference": self.scale_reference,
            "icp": self.icp,
            "simplify": self.simplify,
            "cameras": self.cameras,
            "mesh_normals": self.mesh_normals,
        }


def json_path_for(out_path: str | os.PathLike[str]) -> Path:
    """``scene.ply`` -> ``scene.json`` (beside it)."""
    return Path(out_path).with_suffix(".json")


class MultiviewJob:
    """The folder pipeline in steps, so that the CLI can show progress and report bad photos as they come:

    >>> job = MultiviewJob(folder, "scene.ply", SensorDepth(folder))
    >>> for photo in job.photos: job.load(photo)      # MetroError for a bad photo; the others go on
    >>> result = job.finish()                          # registers, fuses, writes scene.ply + scene.json
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        out_path: str | os.PathLike[str],
        provider: DepthProvider,
        options: MultiviewOptions = MultiviewOptions(),
    ) -> None:
        from metrocli.io.geometry_io import MESH_SUFFIXES

        self.folder = Path(folder)
        self.out_path = Path(out_path)
        self.provider = provider
        self.options = options
        if self.out_path.suffix.lower() not in MESH_SUFFIXES:
            raise MetroUsageError(
                f"{self.out_path}: the scene is a mesh; use one of {', '.join(MESH_SUFFIXES)} as extension"
            )
        if options.voxel_m is not None and not (np.isfinite(options.voxel_m) and options.voxel_m > 0):
            raise MetroUsageError(f"--voxel-m must be a positive number of metres, got {options.voxel_m}")
        if options.simplify is not None and options.simplify <= 0:
            raise MetroUsageError(f"--simplify must be a positive triangle count, got {options.simplify}")
        if options.cameras and self.out_path.suffix.lower() != ".glb":
            raise MetroUsageError(f"{self.out_path}: --cameras draws camera frustums into a .glb output")
        if isinstance(provider, SensorDepth) and not provider.is_folder:
            raise MetroUsageError(f"{provider.path}: a folder of photos needs a folder of depth maps")
        self.photos = photos_of(self.folder, provider)
        if not self.photos:
            raise MetroUsageError(f"{self.folder}: no photos found")
        self.views: dict[Path, LoadedView] = {}
        self.failed: dict[Path, str] = {}
        self.cache_keys: list[str] = []
        self.timings_s: dict[str, float] = {"load": 0.0}

    @property
    def json_path(self) -> Path:
        return json_path_for(self.out_path)

    def prepare(self) -> None:
        """Load the model when depth comes from it (WeightsError up front rather than once per photo)."""
        self.provider.prepare()

    def options_key(self) -> dict[str, Any]:
        """Everything that shapes the scene: the geometry options and the provider's settings (with the
        identity of the weights file)."""
        from metrocli.pipeline.fingerprint import provider_key

        return {**self.options.key(), **provider_key(self.provider)}

    def inputs_key(self) -> list[list[str]]:
        """Name and resume key (content of the photo and of its sensor map, settings) of each photo."""
        from metrocli.pipeline.fingerprint import resume_key

        return [[p.name, resume_key(p, self.provider)] for p in self.photos]

    def up_to_date(self) -> MultiviewResult | None:
        """The previous result when ``out_path`` and its JSON exist for the same inputs (resume)."""
        if self.options.force or not (self.out_path.is_file() and self.json_path.is_file()):
            return None
        try:
            data = json.loads(self.json_path.read_text())
            if data.get("inputs") != self.inputs_key() or data.get("options") != self.options_key():
                return None
            return result_from_doc(self.out_path, self.json_path, data)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load(self, photo: Path, prediction: Prediction | None = None) -> None:
        """Load one photo and its depth; a :class:`MetroError` marks it failed (and is re-raised).

        ``prediction``: an already computed model :class:`~metrocli.prediction.Prediction` of the photo (made
        with its intrinsics, e.g. from ``metro depth``) instead of running the model (model depth only).
        """
        from metrocli.errors import MetroError

        t0 = time.perf_counter()
        try:
            ph = self.provider.focal.load_photo(photo)
            if prediction is None and isinstance(self.provider, ModelDepth) and self.options.cache:
                from metrocli.pipeline.prediction_cache import cache_dir_for, cached_model_depth

                depth, key = cached_model_depth(
                    self.provider, ph, cache_dir_for(self.out_path), refresh=self.options.force
                )
                self.cache_keys.append(key)
            elif prediction is None:
                depth = self.provider.provide(ph)
            elif isinstance(self.provider, ModelDepth):
                _check_shape(photo, prediction.depth.shape, ph.image.shape[:2])
                depth = self.provider.from_prediction(prediction, ph)
            else:
                raise MetroUsageError(f"{photo}: a prediction was given but depth comes from sensor maps")
            _check_shape(photo, depth.depth_m.shape, ph.image.shape[:2])
            if not (np.isfinite(depth.depth_m) & (depth.depth_m > 0)).any():
                raise DepthMapError(f"{photo}: no valid depth")
            self.views[photo] = LoadedView(photo, ph.image, depth, ph.orientation)
        except MetroError as exc:
            self.failed[photo] = str(exc)
            raise
        finally:
            self.timings_s["load"] += time.perf_counter() - t0

    def finish(self) -> MultiviewResult:
        """Register the loaded photos, fuse them and write the mesh and its JSON (atomically)."""
        from metrocli.atomic import write_text_atomic

        views = [self.views[p] for p in self.photos if p in self.views]
        if len(views) < 2:
            raise ReconstructionError(
                f"{self.folder}: multi-view reconstruction needs at least 2 readable photos, got {len(views)}"
            )
        fused = _register_and_fuse(views, self.options, self.out_path, self.timings_s)
        reg = fused.registration
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
        doc = scene_doc(
            views,
            fused,
            self.out_path,
            left_out,
            timings_s=self.timings_s,
            inputs=self.photos,
            options_key=self.options_key(),
        )
        from metrocli.jsonsafe import json_ready

        doc["inputs"] = self.inputs_key()
        loose = loose_poses(doc["photos"])
        doc["loose_poses"] = [{"photo": n, "reason": r} for n, r in loose.items()]
        for name, why in loose.items():
            log.warning("%s %s", name, why)
        write_text_atomic(self.json_path, json.dumps(json_ready(doc), indent=1, allow_nan=False) + "\n")
        if self.options.cache and isinstance(self.provider, ModelDepth):
            from metrocli.pipeline.prediction_cache import cache_dir_for, prune

            prune(cache_dir_for(self.out_path), self.cache_keys)
        order = sorted(reg.poses)
        return MultiviewResult(
            self.out_path,
            self.json_path,
            ref_name,
            tuple(views[k].path.name for k in order),
            left_out,
            {views[k].path.name: reg.scales[k] for k in order},
            fused.n_vertices,
            fused.n_triangles,
            fused.voxel_m,
            dict(self.timings_s),
            focals={views[k].path.name: focal_record(views[k].intrinsics, views[k].selfcal) for k in order},
            scale_spread=float(reg.scale_spread),
            loose=loose,
        )


def _check_shape(photo: Path, depth_shape: tuple[int, ...], photo_shape: tuple[int, ...]) -> None:
    if tuple(depth_shape) != tuple(photo_shape):
        h, w = depth_shape[:2]
        raise DepthMapError(f"{photo}: depth is {w}x{h} but the photo is {photo_shape[1]}x{photo_shape[0]}")


def _register_and_fuse(
    views: list[LoadedView], opts: MultiviewOptions, out_path: Path, timings_s: dict[str, float]
) -> FusedScene:
    """Register the views, fuse them (TSDF), simplify and write the mesh to ``out_path``."""
    from metrocli.geometry.fusion import FusionFrame, default_voxel_m, fuse_tsdf
    from metrocli.geometry.mesh import Mesh, simplify
    from metrocli.geometry.posegraph import register_frames
    from metrocli.geometry.registration import Frame
    from metrocli.io.geometry_io import CameraView, write_mesh

    sensor = all(v.depth.source == "sensor" for v in views)
    per_scale = (not sensor) if opts.per_photo_scale is None else bool(opts.per_photo_scale)
    frames = [Frame(v.path.name, v.rgb, v.depth.depth_m, v.intrinsics) for v in views]
    t0 = time.perf_counter()
    reg = register_frames(
        frames, estimate_scale=per_scale, scale_reference=opts.scale_reference, icp=opts.icp
    )
    t1 = time.perf_counter()
    fusion_frames = [
        FusionFrame(
            views[k].rgb,
            views[k].depth.depth_m * reg.depth_factor(k, views[k].depth.depth_m.shape),
            views[k].intrinsics,
            reg.poses[k],
        )
        for k in sorted(reg.poses)
    ]
    voxel = float(opts.voxel_m) if opts.voxel_m is not None else default_voxel_m(fusion_frames)
    mesh = Mesh.from_open3d(fuse_tsdf(fusion_frames, voxel_m=voxel))
    if opts.simplify is not None:
        mesh = simplify(mesh, opts.simplify)
    t2 = time.perf_counter()
    cameras = [CameraView(views[k].path.name, views[k].intrinsics, reg.poses[k]) for k in sorted(reg.poses)]
    write_mesh(out_path, mesh, normals=opts.mesh_normals, cameras=cameras, frustums=opts.cameras)
    timings_s.update({"register": t1 - t0, "fuse": t2 - t1, "write": time.perf_counter() - t2})
    return FusedScene(reg, per_scale, voxel, len(mesh.vertices), len(mesh.triangles))


def reconstruct_folder(
    folder: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    provider: DepthProvider,
    options: MultiviewOptions = MultiviewOptions(),
) -> MultiviewResult:
    """The whole folder pipeline in one call (photos that cannot be read are left out with a warning)."""
    from metrocli.errors import MetroError

    job = MultiviewJob(folder, out_path, provider, options)
    done = job.up_to_date()
    if done is not None:
        return done
    job.prepare()
    for photo in job.photos:
        try:
            job.load(photo)
        except MetroError as exc:
            log.warning("%s", exc)
    return job.finish()
