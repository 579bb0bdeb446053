"""`metro reconstruct INPUT -o OUT`: metric 3D mesh of one photo, or one fused scene of a folder."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from metrocli.cli.common import (
    BatchFailed,
    BatchReport,
    batch_size_option,
    build_provider,
    emit_json,
    focal_options,
    json_option,
    model_options,
    positive,
    quiet,
    run_batch,
    stderr_console,
)
from metrocli.errors import MetroError

if TYPE_CHECKING:
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.multiview import MultiviewJob, MultiviewOptions, ScaleReference
    from metrocli.pipeline.provider import DepthProvider, FocalMode
    from metrocli.pipeline.separate import SeparateJob, SeparateOptions
    from metrocli.pipeline.single import MeshMethod


@click.command("reconstruct")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Output mesh (.ply, .obj, .glb); with --separate an output folder.",
)
@click.option(
    "--depth",
    "depth_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Sensor depth map of the single PHOTO (.npy metres, 16-bit .png millimetres) instead of the model.",
)
@click.option(
    "--depth-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of sensor depth maps STEM.depth.png|STEM.depth.npy|STEM.png|STEM.npy for photos STEM.*.",
)
@click.option(
    "--depth-scale",
    type=float,
    default=None,
    callback=positive("number of metres per unit"),
    help="Metres per unit of the --depth/--depth-dir maps (default 0.001 for PNG, 1 for .npy; "
    "KITTI: 0.00390625, NYU: 0.001).",
)
@click.option("--separate", is_flag=True, help="One mesh per photo into the folder -o (batch conversion).")
@click.option("--force", is_flag=True, help="Recompute outputs that already exist (default: skip them).")
@click.option("-r", "--recursive", is_flag=True, help="--separate: also the photos in subfolders of INPUT.")
@click.option(
    "--voxel-m",
    type=float,
    default=None,
    callback=positive("number of metres"),
    help="TSDF voxel size in metres for a folder [default: from the scene extent, about 1 cm in a room].",
)
@click.option(
    "--per-photo-scale/--no-per-photo-scale",
    default=None,
    help="Estimate a depth scale per photo [default: on for model depth, off for sensor depth].",
)
@click.option(
    "--scale-ref",
    type=click.Choice(["median", "mean", "first"]),
    default="median",
    show_default=True,
    help="Model depth: the scene's metric scale is the median of the photos' scales (the majority's), "
    "their geometric mean, or the first photo's. The spread of the scales is in the summary and OUT.json.",
)
@model_options
@focal_options()
@click.option("--points-only", is_flag=True, help="Single photo / --separate: write the point cloud.")
@click.option(
    "--mesh",
    "mesh_method",
    type=click.Choice(["grid", "poisson"]),
    default="grid",
    show_default=True,
    help="Single photo / --separate: pixel-grid mesh or screened Poisson.",
)
@click.option(
    "--simplify",
    type=int,
    default=None,
    callback=positive("number of triangles"),
    help="Target triangle count of the mesh.",
)
@click.option(
    "--mesh-normals",
    is_flag=True,
    help="Also write vertex normals into the mesh (photo: the predicted normals; folder: the fused "
    "surface's). Off by default: viewers shade from the faces, and the file is ~20% smaller.",
)
@click.option(
    "--cameras",
    is_flag=True,
    help="Folder with a .glb output: draw each registered photo's camera as a frustum mesh.",
)
@click.option(
    "--export",
    "export",
    type=(click.Choice(["colmap"]), click.Path(file_okay=False, path_type=Path)),
    default=None,
    metavar="colmap DIR",
    help="Folder: also write the scene as a COLMAP model (cameras.txt, images.txt, points3D.txt) in DIR.",
)
@click.option(
    "--fps",
    type=float,
    default=2.0,
    show_default=True,
    callback=positive("number of frames per second"),
    help="Video INPUT: frames sampled per second of video.",
)
@batch_size_option
@json_option
def reconstruct(
    input_path: Path,
    out_path: Path,
    depth_file: Path | None,
    depth_dir: Path | None,
    depth_scale: float | None,
    separate: bool,
    force: bool,
    recursive: bool,
    voxel_m: float | None,
    per_photo_scale: bool | None,
    scale_ref: ScaleReference,
    spec: ModelSpec,
    focal: FocalMode,
    points_only: bool,
    mesh_method: MeshMethod,
    simplify: int | None,
    mesh_normals: bool,
    cameras: bool,
    export: tuple[str, Path] | None,
    fps: float,
    batch_size: int,
    as_json: bool,
) -> None:
    """Metric 3D of INPUT: a photo, or a folder of photos of one scene.

    \b
    INPUT a photo:   photo -> metric depth -> cleaned points -> mesh (or --points-only) in its camera frame.
    INPUT a folder:  the photos (sorted by name) are registered in any order, fused (TSDF) into one mesh in
                     the camera frame of the first photo, in metres; OUT.json beside OUT holds each photo's
                     pose (4x4 camera-to-first-camera), intrinsics, focal source and depth scale, and the
                     photos left out with the reason; a photo placed with a pose uncertainty over 1° or
                     5 cm (1σ) is listed as uncertain ("loose" in --json). A .glb holds every registered
                     photo's camera (--cameras: also a frustum mesh each); --export colmap DIR writes a
                     COLMAP model.
    INPUT a video:   frames sampled at --fps (default 2 per second) are registered in time order and fused
                     like a folder (model depth; frames have no EXIF, so give --fov or --focal-px if known).
    --separate:      one mesh per photo into the folder -o; re-running skips finished photos (--force redoes).
    --focal auto:    every photo's focal length is self-calibrated from its own prediction (model depth
                     only); a photo with a flat objective keeps its EXIF/default focal length, with a
                     warning. --json reports focal_source and focal_uncertainty_px per photo.
    """
    import tempfile

    from metrocli.io.video import is_video, write_frames
    from metrocli.pipeline.multiview import MultiviewOptions
    from metrocli.pipeline.separate import SeparateOptions

    if input_path.is_dir() and depth_file is not None:
        raise click.UsageError("--depth is for a single photo; use --depth-dir with a folder")
    if is_video(input_path) and (depth_file is not None or depth_dir is not None):
        raise click.UsageError("a video's depth comes from the model; --depth/--depth-dir are for photos")
    if cameras and (separate or not input_path.is_dir()):
        raise click.UsageError("--cameras is for a folder fused into one .glb scene")
    if export is not None and (separate or not input_path.is_dir()):
        raise click.UsageError("--export colmap is for a folder fused into one scene")
    if batch_size > 1 and not separate:
        raise click.UsageError("--batch-size is for --separate (a folder's photos are registered together)")
    _check_outputs(
        input_path,
        out_path,
        separate=separate,
        points_only=points_only,
        inputs=[input_path, depth_file, spec.weights],
    )
    provider = build_provider(spec, focal, sensor=depth_file or depth_dir, depth_scale=depth_scale)
    if not separate:
        _check_not_inputs(input_path, out_path, provider)
    if separate:
        options = SeparateOptions(
            points_only, mesh_method, simplify, force, recursive=recursive, mesh_normals=mesh_normals
        )
        _separate(input_path, out_path, provider, options, as_json, batch_size)
    elif recursive:
        raise click.UsageError("--recursive is for --separate (a scene is the photos of one folder)")
    elif input_path.is_dir():
        if points_only or mesh_method != "grid":
            raise click.UsageError(
                "--points-only and --mesh are for single photos and --separate; a folder is fused by TSDF"
            )
        folder = MultiviewOptions(
            voxel_m,
            per_photo_scale,
            scale_ref,
            simplify=simplify,
            force=force,
            cameras=cameras,
            mesh_normals=mesh_normals,
        )
        _folder(input_path, out_path, provider, folder, as_json, export[1] if export else None)
    elif is_video(input_path):
        folder = MultiviewOptions(
            voxel_m, per_photo_scale, scale_ref, simplify=simplify, force=True, mesh_normals=mesh_normals
        )
        with tempfile.TemporaryDirectory(prefix="metro-video-") as tmp:
            frames = write_frames(input_path, tmp, fps)
            if len(frames) < 2:
                raise click.UsageError(
                    f"{input_path}: {len(frames)} frame(s) at --fps {fps:g}; need 2 or more"
                )
            click.echo(f"{input_path}: {len(frames)} frames sampled at {fps:g} per second", err=True)
            _folder(Path(tmp), out_path, provider, folder, as_json)
    else:
        single = SeparateOptions(points_only, mesh_method, simplify, mesh_normals=mesh_normals)
        _single(input_path, out_path, provider, single, as_json)


def _check_not_inputs(input_path: Path, out_path: Path, provider: DepthProvider) -> None:
    """Usage error before any work when the mesh or its JSON would replace a photo or a depth map."""
    from metrocli.pipeline.multiview import json_path_for
    from metrocli.pipeline.outputs import check_not_input
    from metrocli.pipeline.provider import SensorDepth, photos_of

    photos = photos_of(input_path, provider) if input_path.is_dir() else [input_path]
    maps = []
    if isinstance(provider, SensorDepth):
        for photo in photos:
            with contextlib.suppress(MetroError):
                maps.append(provider.depth_file(photo))
    outputs = [out_path, json_path_for(out_path)] if input_path.is_dir() else [out_path]
    check_not_input(outputs, [*photos, *maps])


def _check_outputs(
    input_path: Path, out_path: Path, *, separate: bool, points_only: bool, inputs: list[Path | None]
) -> None:
    """The output (and the scene JSON beside a folder's mesh) checked before any work; stale temporaries of
    killed runs removed from the folder written into."""
    from metrocli.atomic import remove_stale_temps
    from metrocli.io.geometry_io import MESH_SUFFIXES, POINT_CLOUD_SUFFIXES
    from metrocli.pipeline.multiview import json_path_for
    from metrocli.pipeline.outputs import check_output_file, check_output_folder, check_sibling, is_scene_json

    if separate:
        check_output_folder(out_path)
        remove_stale_temps(out_path)
        return
    folder = input_path.is_dir()
    suffixes = POINT_CLOUD_SUFFIXES if points_only and not folder else MESH_SUFFIXES
    check_output_file(out_path, inputs=inputs, suffixes=suffixes)
    if folder:
        sibling = json_path_for(out_path)
        check_output_file(sibling, inputs=inputs)
        check_sibling(sibling, ours=is_scene_json(sibling, out_path.name), owner=out_path)
    remove_stale_temps(out_path.parent)


def _focal_text(focal_px: float, source: str, uncertainty_px: float | None) -> str:
    """``1234.5 ± 24.7 px self-calibrated`` (no ± without an uncertainty)."""
    sigma = f" ± {uncertainty_px:.1f}" if uncertainty_px is not None else ""
    return f"{focal_px:.1f}{sigma} px {source}"


def _single(photo: Path, out_path: Path, provider: DepthProvider, o: SeparateOptions, as_json: bool) -> None:
    from metrocli.pipeline.single import reconstruct_photo

    result = reconstruct_photo(
        photo,
        out_path,
        provider,
        points_only=o.points_only,
        mesh_method=o.mesh_method,
        simplify=o.simplify,
        mesh_normals=o.mesh_normals,
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        what = (
            f"{result.n_points} points"
            if result.kind == "points"
            else f"{result.n_vertices} vertices, {result.n_triangles} triangles"
        )
        focal = _focal_text(result.focal_px, result.focal_source, result.focal_uncertainty_px)
        click.echo(f"{photo}: {result.output} ({what}, focal {focal})")


def _separate(
    inputs: Path,
    out_dir: Path,
    provider: DepthProvider,
    options: SeparateOptions,
    as_json: bool,
    batch_size: int = 1,
) -> None:
    from metrocli.pipeline.lock import output_lock
    from metrocli.pipeline.separate import SeparateJob

    job = SeparateJob(inputs, out_dir, provider, options)
    job.prepare()
    with output_lock(out_dir):
        _separate_batch(job, as_json, batch_size)


def _separate_batch(job: SeparateJob, as_json: bool, batch_size: int) -> None:
    from contextlib import closing

    # photos decoded ahead of the model, up to batch_size per forward, meshes written behind it
    outcomes = job.run_many(batch_size=batch_size)

    def work(item: tuple[Path, str]) -> None:
        outcome = next(outcomes)  # the engine yields in plan order: this item's outcome
        assert outcome.item == item
        result = outcome.result()
        if as_json:
            emit_json(result.to_dict())
        else:
            note = " (skipped: exists)" if result.skipped else ""
            click.echo(f"{result.photo}: {result.output}{note}")

    with closing(outcomes):  # Ctrl-C: writes under way complete, nothing new starts
        report = run_batch(
            job.plan,
            work,
            name=lambda item: str(item[0]),
            what="photo",
            description="reconstruct",
            error_record=(lambda item: {"photo": str(item[0])}) if as_json else None,
        )
    report.finish()


def _folder(
    folder: Path,
    out_path: Path,
    provider: DepthProvider,
    options: MultiviewOptions,
    as_json: bool,
    colmap_dir: Path | None = None,
) -> None:
    from metrocli.pipeline.lock import output_lock
    from metrocli.pipeline.multiview import MultiviewJob

    job = MultiviewJob(folder, out_path, provider, options)
    with output_lock(out_path.parent):
        _folder_locked(job, out_path, provider, as_json, colmap_dir)


def _folder_locked(
    job: MultiviewJob, out_path: Path, provider: DepthProvider, as_json: bool, colmap_dir: Path | None
) -> None:
    from metrocli.pipeline.colmap_export import export_colmap

    result = job.up_to_date()
    report = BatchReport(what="photo")
    if result is None:
        job.prepare()
        report = run_batch(job.photos, job.load, name=str, what="photo", description="loading")
        with stderr_console().status("registering and fusing"):
            result = job.finish()
    if colmap_dir is not None:
        export_colmap(result.json_path, colmap_dir)
    if as_json:
        emit_json({**result.to_dict(), **({"colmap": str(colmap_dir)} if colmap_dir else {})})
    else:
        note = " (skipped: up to date)" if result.skipped else ""
        left = f", {len(result.left_out)} left out" if result.left_out else ""
        click.echo(
            f"{out_path}: {len(result.registered)} photos registered{left}, "
            f"{result.n_vertices} vertices, {result.n_triangles} triangles, "
            f"frame of {result.reference}; poses in {result.json_path}{note}"
        )
        for name, why in sorted(result.left_out.items()):
            click.echo(f"  left out {name}: {why}")
        for name, why in sorted(result.loose.items()):
            click.echo(f"  uncertain {name}: {why}")
        if colmap_dir is not None:
            click.echo(f"  COLMAP model: {colmap_dir}")
        if provider.focal.auto:
            for name, rec in result.focals.items():
                focal = _focal_text(rec["focal_px"], rec["focal_source"], rec.get("focal_uncertainty_px"))
                click.echo(f"  focal {name}: {focal}")
    # the summary counts what happened: registered and left out (at loading or registration), never
    # "8 of 8 succeeded" when 3 were left out; anything left out is exit 1, on a resumed run too
    total = len(result.registered) + len(result.left_out)
    if not quiet():
        click.echo(
            f"{total} photos: {len(result.registered)} registered, {len(result.left_out)} left out", err=True
        )
    if report.failed:
        report.finish()
    if result.left_out:
        raise BatchFailed()
