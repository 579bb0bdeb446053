"""Write rendered views as phone photos (JPEG + EXIF) with sensor-style depth; generate ``sample_photos/``.

``python -m metrocli.synth.samples sample_photos/`` regenerates the shipped samples deterministically: for
each view a JPEG with phone EXIF, a 16-bit PNG depth map in millimetres beside it (``<stem>.depth.png``, in
the STORED orientation of the JPEG, 0 = no depth), plus ``samples.json`` (intrinsics, poses, object corners in
pixels, demo measurements) and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metrocli.atomic import write_text_atomic
from metrocli.io import maps
from metrocli.synth.camera import IPHONE, PIXEL, Phone, intrinsics_for_lens, look_at
from metrocli.synth.render import Render, render, visible
from metrocli.synth.scene import Scene, room_scene, street_scene

#: Depth PNG unit: metres per count (16-bit PNG in millimetres).
DEPTH_PNG_SCALE_M = 0.001


def to_display(stored: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` (1-8) to an (H, W[, C]) array stored like the photo: the upright array."""
    a = np.asarray(stored)
    ops = {
        1: lambda x: x,
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: np.swapaxes(x, 0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
        8: lambda x: np.rot90(x, 1),
    }
    if orientation not in ops:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation!r}")
    return np.ascontiguousarray(ops[orientation](a))


def to_stored(display: np.ndarray, orientation: int) -> np.ndarray:
    """Inverse of :func:`to_display`: the array stored so that ``orientation`` shows ``display`` upright."""
    inverse = {6: 8, 8: 6}.get(orientation, orientation)
    return to_display(display, inverse)


def depth_to_png_mm(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) uint16 millimetres from float depth (m), the sensor convention: 0 where depth is 0, negative,
    non-finite or beyond 65.535 m (no return), see :func:`metrocli.io.maps.depth_to_png_mm`."""
    return maps.depth_to_png_mm(depth_m, beyond="invalid")


def depth_path_for(photo_path: str | os.PathLike[str]) -> Path:
    """``room_01.jpg`` -> ``room_01.depth.png`` (same folder)."""
    p = Path(photo_path)
    return p.with_name(p.stem + ".depth.png")


def write_depth_png(path: str | os.PathLike[str], depth_m: np.ndarray) -> Path:
    """Write (H, W) depth in metres as a 16-bit PNG in millimetres, atomically. Returns ``path``."""
    return maps.write_png(Path(path), depth_to_png_mm(depth_m))


@dataclass(frozen=True)
class SampleFiles:
    """Paths written by :func:`write_sample`."""

    photo: Path
    depth: Path


def write_sample(
    view: Render,
    path: str | os.PathLike[str],
    *,
    phone: Phone = IPHONE,
    lens: str = "main",
    make: str | None = None,
    model: str | None = None,
    focal_length_mm: float | None = None,
    orientation: int = 1,
    quality: int = 90,
    focal_plane: bool = True,
) -> SampleFiles:
    """Write ``view`` as a phone JPEG at ``path`` and its depth as ``<stem>.depth.png`` beside it.

    ``view`` is upright (displayed); the JPEG stores it transformed by the inverse of ``orientation`` and tags
    Orientation so viewers show it upright again. EXIF (as phones write it): Make/Model (``make``/``model``,
    default ``phone``'s), FocalLength = ``focal_length_mm`` (default ``phone.lenses[lens]``'s real focal
    length), FocalLengthIn35mmFilm from the view's intrinsics (diagonal rule, whole mm) and, when
    ``focal_plane``, FocalPlaneX/YResolution (pixels per inch) chosen so that FocalLength x resolution equals
    the view's focal length in pixels exactly. The depth PNG is 16-bit millimetres in the STORED orientation.
    Both writes are atomic.
    """
    from metrocli.camera.exif_write import write_jpeg

    k = view.intrinsics
    if not math.isclose(k.fx, k.fy, rel_tol=1e-9):
        raise ValueError(f"write_sample needs square pixels, got fx={k.fx} fy={k.fy}")
    f_mm = focal_length_mm if focal_length_mm is not None else phone.lenses[lens].focal_length_mm
    path = Path(path)
    write_jpeg(
        path,
        to_stored(view.rgb, orientation),
        make=make or phone.make,
        model=model or phone.model,
        focal_length_mm=f_mm,
        focal_35mm=k.focal_35mm,
        focal_plane_res_per_mm=(k.fx / f_mm) if focal_plane else None,
        orientation=orientation,
        quality=quality,
    )
    depth = write_depth_png(depth_path_for(path), to_stored(view.depth_m, orientation))
    return SampleFiles(path, depth)


@dataclass(frozen=True)
class SampleView:
    """One shipped sample: where the camera stands and which phone/lens takes it."""

    name: str
    scene: str
    phone: Phone
    lens: str
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    display_size: tuple[int, int] = (1280, 960)
    orientation: int = 1


#: The shipped views (all room views see the table; room_01 sees it whole, room_04 is stored rotated).
SAMPLE_VIEWS: tuple[SampleView, ...] = (
    SampleView("room_01", "room", IPHONE, "main", (1.0, 0.45, 1.55), (2.0, 2.9, 0.65)),
    SampleView("room_02", "room", IPHONE, "ultra-wide", (3.6, 0.35, 1.75), (1.8, 3.4, 0.7)),
    SampleView("room_03", "room", IPHONE, "tele", (2.4, 0.5, 1.5), (1.85, 3.1, 0.85)),
    SampleView("room_04", "room", PIXEL, "main", (0.45, 1.3, 1.45), (2.2, 3.5, 0.8), (960, 1280), 6),
    SampleView("room_05", "room", IPHONE, "main", (3.6, 1.6, 1.6), (1.6, 3.4, 0.7)),
    SampleView("street_01", "street", PIXEL, "main", (-5.0, -6.5, 1.6), (0.5, 0.5, 1.0)),
    SampleView("street_02", "street", PIXEL, "ultra-wide", (3.5, -7.0, 1.5), (0.5, 0.5, 1.2)),
    SampleView("street_03", "street", PIXEL, "tele", (-6.0, -13.0, 1.6), (1.0, -0.8, 0.9)),
)

_SCENES = {"room": room_scene, "street": street_scene}


def render_view(sv: SampleView, *, scale: float = 1.0, supersample: int = 2) -> tuple[Scene, Render]:
    """Render sample view ``sv`` (display size times ``scale``). Returns ``(scene, render)``."""
    scene = _SCENES[sv.scene]()
    w, h = (max(8, round(d * scale)) for d in sv.display_size)
    k = intrinsics_for_lens(w, h, sv.phone.lenses[sv.lens].focal_35mm)
    return scene, render(scene, k, look_at(sv.eye, sv.target), supersample=supersample)


def _inset_edge(obj_corners: np.ndarray, a: int, b: int, inset_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Points ``inset_m`` inside the top face from corners a and b (along the edge and towards the centre)."""
    pa, pb = obj_corners[a], obj_corners[b]
    centre = obj_corners[4:].mean(axis=0)
    along = (pb - pa) / np.linalg.norm(pb - pa)
    mid = 0.5 * (pa + pb)
    inward = centre - mid
    inward -= along * float(inward @ along)
    inward /= np.linalg.norm(inward)
    return pa + inset_m * (along + inward), pb + inset_m * (-along + inward)


def table_measurements(scene: Scene, view: Render, inset_m: float = 0.01) -> list[dict]:
    """Lines on the table top (length and width) for ``metro measure``, with their true lengths.

    The end points lie ``inset_m`` inside the top face (away from the edge, so sub-pixel depth sampling stays
    on the table), so the true distance is the edge length minus ``2·inset_m``. Only fully visible lines are
    returned, the one nearest to the camera for each of length and width.
    """
    table = scene.object("table")
    c = table.corners_world
    out = []
    for label, edges, size in (
        ("table length", ((4, 5), (7, 6)), table.size_m[0]),
        ("table width", ((4, 7), (5, 6)), table.size_m[1]),
    ):
        best = None
        for a, b in edges:
            pa, pb = _inset_edge(c, a, b, inset_m)
            pts = np.stack([pa, pb])
            if not visible(scene, view, pts, tol_m=0.002).all():
                continue
            dist_cam = float(np.linalg.norm(0.5 * (pa + pb) - view.eye))
            if best is None or dist_cam < best[0]:
                best = (dist_cam, pa, pb)
        if best is None:
            continue
        _, pa, pb = best
        uv, _ = view.project(np.stack([pa, pb]))
        out.append(
            {
                "name": label,
                "object": "table",
                "from_px": [round(float(uv[0, 0]), 2), round(float(uv[0, 1]), 2)],
                "to_px": [round(float(uv[1, 0]), 2), round(float(uv[1, 1]), 2)],
                "true_m": round(float(np.linalg.norm(pb - pa)), 6),
                "edge_m": size,
                "inset_m": inset_m,
            }
        )
    return out


def view_record(sv: SampleView, scene: Scene, view: Render, files: SampleFiles | None = None) -> dict:
    """JSON-ready description of a written sample: camera, EXIF, and each object's corners in pixels."""
    k = view.intrinsics
    objects = {}
    for obj in scene.objects:
        uv, _ = view.project(obj.corners_world)
        vis = visible(scene, view, obj.corners_world)
        objects[obj.name] = {
            "size_m": list(obj.size_m),
            "corners_world_m": np.round(obj.corners_world, 6).tolist(),
            "corners_px": [
                [round(float(p[0]), 2), round(float(p[1]), 2)] if ok else None
                for p, ok in zip(uv, vis, strict=True)
            ],
        }
    w, h = k.width, k.height
    stored = (h, w) if sv.orientation in (5, 6, 7, 8) else (w, h)
    return {
        "file": f"{sv.name}.jpg" if files is None else files.photo.name,
        "depth_file": f"{sv.name}.depth.png" if files is None else files.depth.name,
        "depth_scale_m": DEPTH_PNG_SCALE_M,
        "scene": sv.scene,
        "make": sv.phone.make,
        "model": sv.phone.model,
        "lens": sv.lens,
        "focal_length_mm": sv.phone.lenses[sv.lens].focal_length_mm,
        "focal_35mm": sv.phone.lenses[sv.lens].focal_35mm,
        "orientation": sv.orientation,
        "display_size": [w, h],
        "stored_size": list(stored),
        "intrinsics": k.to_dict(),
        "pose_camera_to_world": np.round(view.pose, 9).tolist(),
        "objects": objects,
        "measurements": table_measurements(scene, view) if sv.scene == "room" else [],
    }


def generate(
    out_dir: str | os.PathLike[str],
    *,
    views: tuple[SampleView, ...] = SAMPLE_VIEWS,
    scale: float = 1.0,
    supersample: int = 2,
    quality: int = 90,
    log=None,
) -> list[dict]:
    """Render and write ``views`` into ``out_dir`` (photos, depth PNGs, ``samples.json``, ``README.md``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for sv in views:
        scene, view = render_view(sv, scale=scale, supersample=supersample)
        files = write_sample(
            view,
            out / f"{sv.name}.jpg",
            phone=sv.phone,
            lens=sv.lens,
            orientation=sv.orientation,
            quality=quality,
        )
        records.append(view_record(sv, scene, view, files))
        if log is not None:
            log(f"wrote {files.photo} and {files.depth.name}")
    meta = {
        "generator": "python -m metrocli.synth.samples",
        "world_frame": "metres, z up, floor/ground z = 0; poses are camera-to-world, OpenCV camera axes",
        "pixel_convention": "pixel [v, u] (row, column) has its centre at (u, v), in the displayed image",
        "photos": records,
    }
    write_text_atomic(out / "samples.json", json.dumps(meta, indent=1) + "\n")
    write_text_atomic(out / "README.md", readme_text(records))
    return records


def _fmt_px(p: list[float] | None) -> str:
    return "hidden" if p is None else f"({p[0]:.1f}, {p[1]:.1f})"


def readme_text(records: list[dict]) -> str:
    """Markdown for ``sample_photos/README.md``: sizes, per-photo camera and corner pixels."""
    lines = [
        "# sample_photos",
        "",
        'Rendered "phone photos" with exactly known geometry, made by the project\'s own ray caster',
        "(`metrocli/synth`, Open3D `RaycastingScene`). Regenerate (deterministic) with:",
        "",
        "```",
        "python -m metrocli.synth.samples sample_photos/",
        "```",
        "",
        "- `NAME.jpg`: the photo, with the EXIF a phone writes (Make/Model, Orientation, FocalLength,",
        "  FocalLengthIn35mmFilm, FocalPlaneX/YResolution in pixels per inch).",
        "- `NAME.depth.png`: the exact depth along the camera axis, 16-bit PNG in **millimetres**,",
        "  0 = no depth (sky), in the **stored** orientation of the JPEG (for `room_04`, EXIF orientation 6,",
        "  it is rotated like the stored pixels). Use with `metro measure PHOTO --depth NAME.depth.png`",
        "  or `metro reconstruct sample_photos/ --depth-dir sample_photos`.",
        "- `samples.json`: intrinsics (displayed image), camera-to-world poses (world: metres, z up,",
        "  OpenCV camera axes), object corners in pixels and the table measurements used by `make demo`.",
        "",
        "Pixel coordinates below are in the **displayed** (upright) image; pixel `[row v, column u]` has its",
        "centre at `(u, v)`. Corners are listed bottom face first, then top face, counter-clockwise seen",
        'from above; "hidden" = outside the photo or occluded.',
        "",
    ]
    for scene_name in ("room", "street"):
        recs = [r for r in records if r["scene"] == scene_name]
        if not recs:
            continue
        lines += [
            f"## {scene_name.capitalize()} scene: true sizes",
            "",
            "| object | length (m) | width (m) | height (m) |",
            "|---|---|---|---|",
        ]
        for name, obj in recs[0]["objects"].items():
            size = obj["size_m"]
            lines.append(f"| {name} | {size[0]:.3f} | {size[1]:.3f} | {size[2]:.3f} |")
        lines.append("")
        if scene_name == "room":
            lines += [
                "The table's box is its bounding box: a 4 cm top on four 6 cm legs standing 5 cm in from the",
                "bottom corners (so the bottom corners are points in the air at floor level).",
                "",
            ]
        for r in recs:
            k = r["intrinsics"]
            w, h = r["display_size"]
            lines += [
                f"### {r['file']}",
                "",
                f"{r['make']} {r['model']}, {r['lens']} lens ({r['focal_length_mm']} mm, "
                f"{r['focal_35mm']:.0f} mm equivalent), {w}x{h} displayed, "
                f"EXIF orientation {r['orientation']}, focal {k['fx']:.2f} px.",
                "",
                "| object | corner pixels (u, v): bottom 0-3, top 4-7 |",
                "|---|---|",
            ]
            for name, obj in r["objects"].items():
                if all(p is None for p in obj["corners_px"]):
                    continue
                lines.append(f"| {name} | " + ", ".join(_fmt_px(p) for p in obj["corners_px"]) + " |")
            lines.append("")
            for m in r["measurements"]:
                line = ",".join(str(x) for x in (*m["from_px"], *m["to_px"]))
                lines.append(
                    f"- {m['name']}: `--line {line}` true {m['true_m']:.3f} m "
                    f"(points {m['inset_m'] * 100:.0f} cm inside the {m['edge_m']:.2f} m edge)"
                )
            if r["measurements"]:
                lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m metrocli.synth.samples OUT_DIR [--scale S] [--only NAME ...]``."""
    ap = argparse.ArgumentParser(prog="python -m metrocli.synth.samples", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="resolution factor (1 = shipped size)")
    ap.add_argument("--supersample", type=int, default=2, help="colour anti-aliasing rays per pixel side")
    ap.add_argument("--only", nargs="*", default=None, help="names of views to render (default: all)")
    args = ap.parse_args(argv)
    views = SAMPLE_VIEWS if not args.only else tuple(v for v in SAMPLE_VIEWS if v.name in set(args.only))
    if not views:
        print(f"no sample view named {args.only}; known: {[v.name for v in SAMPLE_VIEWS]}", file=sys.stderr)
        return 2
    generate(
        args.out_dir,
        views=views,
        scale=args.scale,
        supersample=args.supersample,
        log=lambda m: print(m, file=sys.stderr),
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
