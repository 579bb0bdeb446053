"""Export a :class:`~metrocli.model.metric3d.Metric3D` (any preset) to ONNX, checked against torch first.

The graph (``torch.onnx.export(..., dynamo=True)``, opset 18) has one input and named outputs:

* ``image``: float32 (1, 3, H, W) RGB in 0-255, the photo already resized and mean-colour padded to the
  network input (:func:`metrocli.model.preprocess.resize_and_pad`). The ImageNet normalisation is inside the
  graph, as in the official export (``onnx/metric3d_onnx_export.py``), so a deployment only resizes and pads.
* ``depth`` (1, 1, H, W) canonical metres (focal 1000 px: multiply by ``fx * scale / 1000``),
  ``confidence`` (1, 1, H, W); ViT presets also ``normal`` (1, 3, H, W) unit camera-frame normals and
  ``normal_confidence`` (1, 1, H, W).

The file's metadata (``metadata_props``) names the preset, the canonical focal length, the input size
(``H,W`` or ``dynamic``), the sha256 of the weights, the metrocli version and the measured fidelity. Before a
file is accepted, onnxruntime runs it on a fixed test image and its outputs must match torch float32 within
:data:`MAX_DEPTH_REL` (depth), :data:`MAX_CONFIDENCE_REL` (confidences) and :data:`MAX_NORMAL_DEG`
(normals); the file is written atomically (a temporary file renamed onto the target), so a failed check
or a crash leaves no file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from metrocli.atomic import atomic_path
from metrocli.errors import DependencyError, ExportError, MetroUsageError
from metrocli.model.presets import CANONICAL_FOCAL_PX, RGB_MEAN, RGB_STD, Preset, get_preset

if TYPE_CHECKING:
    from metrocli.model.metric3d import Metric3D

log = logging.getLogger("metrocli.model.onnx_export")

#: ONNX opset of the exported graphs (the dynamo exporter's translations are written for opset 18).
ONNX_OPSET = 18
#: Name of the graph's input.
INPUT_NAME = "image"
#: Names of the graph's outputs; depth-only presets (ConvNeXt) have the first two.
OUTPUT_NAMES = ("depth", "confidence", "normal", "normal_confidence")
#: Largest relative depth difference (onnxruntime vs torch float32) an export may have.
MAX_DEPTH_REL = 1e-4
#: Largest relative difference of the confidences (a ratio of two small, noisy quantities).
MAX_CONFIDENCE_REL = 1e-3
#: Largest angle (degrees) between onnxruntime's and torch's normals.
MAX_NORMAL_DEG = 0.1
#: Graphs with more weight bytes than this keep them in a ``<file>.data`` file beside the ``.onnx`` file
#: (a protobuf message cannot exceed 2 GiB).
EXTERNAL_DATA_BYTES = 1_800_000_000
#: Seed of the test image of the check.
CHECK_SEED = 20261130
#: Text of the ``input_format`` metadata entry.
INPUT_FORMAT = (
    "image: float32 (1, 3, H, W) RGB 0-255, keep-ratio resized and padded with the mean colour "
    "(124, 116, 104); normalised inside the graph"
)


def output_names(preset: Preset) -> tuple[str, ...]:
    """The graph outputs of ``preset``: all four for ViT presets, ``depth`` and ``confidence`` otherwise."""
    return OUTPUT_NAMES if preset.has_normals else OUTPUT_NAMES[:2]


def size_multiple(preset: Preset) -> int:
    """Input sides must be multiples of this: 2 patches (28 px) for ViT, the 32 px stride for ConvNeXt."""
    return 2 * preset.patch_size if preset.family == "vit" else 32


def check_export_size(preset: Preset, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` (H, W) if both sides are positive multiples of :func:`size_multiple`; MetroUsageError else."""
    step = size_multiple(preset)
    height, width = size
    if height < step or width < step or height % step or width % step:
        raise MetroUsageError(
            f"input size {height}x{width} does not fit {preset.name}: height and width must be positive "
            f"multiples of {step} (the preset's own size is {preset.input_size[0]}x{preset.input_size[1]})"
        )
    return height, width


def check_export_request(preset: Preset, size: tuple[int, int] | None, dynamic: bool) -> tuple[int, int]:
    """The (H, W) to trace: ``size`` (checked, :func:`check_export_size`) or the preset's.

    Raises :class:`MetroUsageError` for ``dynamic`` with a ViT preset: its positional embedding is resampled
    with a scale computed in Python from the patch grid, which the exporter freezes to the traced grid, so
    the graph would only run at the traced size.
    """
    if dynamic and preset.family == "vit":
        raise MetroUsageError(
            f"--dynamic is not available for {preset.name}: the ViT positional embedding is resampled with a "
            "scale the exporter freezes to one patch grid; export one file per input size with --size H,W"
        )
    return check_export_size(preset, size or preset.input_size)


def require_onnx() -> None:
    """Raise :class:`DependencyError` unless onnx, onnxruntime and onnxscript can be imported."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise DependencyError(
            f"ONNX support needs {', '.join(missing)}: install the optional extra with "
            "`pip install 'metrocli[onnx]'`"
        )


class ImageInputNet(nn.Module):
    """``model`` with the normalisation in front: 0-255 RGB (1, 3, H, W) in, the tuple of outputs out."""

    def __init__(self, model: Metric3D) -> None:
        super().__init__()
        self.model = model
        self.names = output_names(model.preset)
        device = model.device
        self.rgb_mean: Tensor
        self.rgb_std: Tensor
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN, device=device).view(1, 3, 1, 1))
        self.register_buffer("rgb_std", torch.tensor(RGB_STD, device=device).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        # the same float32 arithmetic as metrocli.model.preprocess.normalise
        out = self.model.forward_canonical(torch.div(image - self.rgb_mean, self.rgb_std))
        return tuple(out[name] for name in self.names)


@dataclass(frozen=True)
class Fidelity:
    """Largest differences between two runs of a model (onnxruntime vs torch float32).

    Attributes:
        depth_max_rel: largest ``|a - b| / max(|b|, 1% of max |b|)`` of the depth.
        confidence_max_rel: the same for the depth confidence.
        normal_max_deg: largest angle (degrees) between the normals, or None for depth-only models.
        normal_confidence_max_rel: relative difference of the normal confidence, or None.
    """

    depth_max_rel: float
    confidence_max_rel: float
    normal_max_deg: float | None = None
    normal_confidence_max_rel: float | None = None

    def problems(self) -> list[str]:
        """What exceeds :data:`MAX_DEPTH_REL`, :data:`MAX_CONFIDENCE_REL` or :data:`MAX_NORMAL_DEG`."""
        checks = (
            ("depth", self.depth_max_rel, MAX_DEPTH_REL, "relative"),
            ("confidence", self.confidence_max_rel, MAX_CONFIDENCE_REL, "relative"),
            ("normal", self.normal_max_deg, MAX_NORMAL_DEG, "degrees"),
            ("normal_confidence", self.normal_confidence_max_rel, MAX_CONFIDENCE_REL, "relative"),
        )
        return [
            f"{name} differs by {value:.3g} {unit} (at most {limit:g} allowed)"
            for name, value, limit, unit in checks
            if value is not None and not value <= limit  # NaN fails too
        ]

    def as_metadata(self) -> dict[str, str]:
        """The non-None fields as ``check_<field>`` metadata strings."""
        return {f"check_{k}": f"{v:.3g}" for k, v in self.__dict__.items() if v is not None}


def max_rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    """Largest ``|ours - ref| / max(|ref|, 1% of max |ref|)`` (the floor keeps near-zero values sane)."""
    ref64 = ref.astype(np.float64)
    floor = max(0.01 * float(np.abs(ref64).max(initial=0.0)), np.finfo(np.float32).tiny)
    return float(
        (np.abs(ours.astype(np.float64) - ref64) / np.maximum(np.abs(ref64), floor)).max(initial=0.0)
    )


def max_angle_deg(ours: np.ndarray, ref: np.ndarray, axis: int = 1) -> float:
    """Largest angle in degrees between corresponding vectors of ``ours`` and ``ref`` along ``axis``."""
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    cross = np.linalg.norm(np.cross(a, b, axis=axis), axis=axis)
    return float(np.degrees(np.arctan2(cross, (a * b).sum(axis))).max(initial=0.0))


def compare_outputs(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> Fidelity:
    """The :class:`Fidelity` of ``ours`` against ``ref`` (dicts of raw (1, C, H, W) outputs by name)."""
    for name, value in ref.items():
        if name not in ours or ours[name].shape != value.shape:
            got = ours[name].shape if name in ours else "nothing"
            raise ExportError(f"output {name!r} has shape {got}, expected {value.shape}")
    normals = "normal" in ref
    return Fidelity(
        depth_max_rel=max_rel_diff(ours["depth"], ref["depth"]),
        confidence_max_rel=max_rel_diff(ours["confidence"], ref["confidence"]),
        normal_max_deg=max_angle_deg(ours["normal"], ref["normal"]) if normals else None,
        normal_confidence_max_rel=(
            max_rel_diff(ours["normal_confidence"], ref["normal_confidence"]) if normals else None
        ),
    )


def check_input(size: tuple[int, int], seed: int = CHECK_SEED) -> np.ndarray:
    """A photo-like (1, 3, H, W) float32 0-255 input: smooth random colour fields with fine texture."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = size
    coarse = rng.uniform(0, 255, size=(max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    smooth = np.asarray(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC))
    image = np.rint(np.clip(smooth + rng.normal(0, 8, size=smooth.shape), 0, 255)).astype(np.float32)
    return np.ascontiguousarray(image.transpose(2, 0, 1))[None]


def onnx_session(
    path: Path, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None
):
    """An ``onnxruntime.InferenceSession`` of ``path`` (all graph optimisations, ``threads`` intra-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


@dataclass(frozen=True)
class OnnxExport:
    """The result of :func:`export_onnx`.

    Attributes:
        path: the written ``.onnx`` file.
        preset: preset name.
        input_size: (H, W) of the graph input, or None for a graph with dynamic height and width.
        check_sizes: the (H, W) input sizes the check ran at.
        fidelity: the worst differences from torch float32 over the checks.
        export_s: seconds the export and its check took.
        metadata: the file's ``metadata_props``.
        data_files: weight files written beside ``path`` (graphs over 2 GiB), else empty.
    """

    path: Path
    preset: str
    input_size: tuple[int, int] | None
    check_sizes: tuple[tuple[int, int], ...]
    fidelity: Fidelity
    export_s: float
    metadata: dict[str, str] = field(default_factory=dict)
    data_files: tuple[Path, ...] = ()


def _worst(fidelities: Sequence[Fidelity]) -> Fidelity:
    def worst(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return max(present, key=lambda v: (np.isnan(v), v)) if present else None

    def field_worst(name: str) -> float | None:
        return worst([getattr(f, name) for f in fidelities])

    depth, confidence = field_worst("depth_max_rel"), field_worst("confidence_max_rel")
    assert depth is not None and confidence is not None  # always set
    return Fidelity(
        depth, confidence, field_worst("normal_max_deg"), field_worst("normal_confidence_max_rel")
    )


@contextlib.contextmanager
def _staged(target: Path, external: bool) -> Iterator[Path]:
    """A temporary path to save the graph to, moved onto ``target`` when the block succeeds.

    Single-file graphs use :func:`metrocli.atomic.atomic_path`. A graph with external weights is saved as
    ``target.name`` (+ ``target.name.data``) in a hidden folder beside ``target``; on success the data file
    is moved first and the ``.onnx`` file last, so no ``.onnx`` file ever points at missing weights.
    """
    if not external:
        with atomic_path(target) as tmp:
            yield tmp
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staged = folder / target.name
        yield staged
        for file in sorted(folder.iterdir(), key=lambda p: p == staged):  # the .onnx file last
            os.replace(file, target.parent / file.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter prints its progress on stdout (where metro writes results) and warns about every
    torchvision operator it cannot register: progress goes to stderr, the warnings only with ``-vv``."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    if not log.isEnabledFor(logging.DEBUG):
        registration.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        registration.setLevel(level)


def export_onnx(
    model: Metric3D,
    target: str | os.PathLike[str],
    *,
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    weights_sha256: str = "",
    extra_metadata: dict[str, str] | None = None,
) -> OnnxExport:
    """Export ``model`` to an ONNX file at ``target``, accepted only if onnxruntime reproduces torch float32.

    Args:
        model: a loaded :class:`Metric3D`; exported in float32 whatever its ``precision``.
        target: the ``.onnx`` file to write (atomically; graphs over 2 GiB also write ``<target>.data``).
        size: (H, W) of the graph input (multiples of :func:`size_multiple`); None: the preset's size.
        dynamic: height and width are graph dimensions (any multiple of :func:`size_multiple`); ``size``
            is then only the size traced and checked. ConvNeXt presets only (see below).
        weights_sha256: sha256 of the checkpoint, recorded in the metadata.
        extra_metadata: more ``metadata_props`` entries.

    Raises:
        MetroUsageError: a size that does not fit the preset; ``dynamic`` for a ViT preset
            (:func:`check_export_request`).
        DependencyError: onnx / onnxruntime / onnxscript are not installed.
        ExportError: the exporter failed, or the file does not match torch (nothing is written).
    """
    require_onnx()
    from metrocli import __version__

    preset = model.preset
    trace_size = check_export_request(preset, size, dynamic)
    target = Path(target)
    names = output_names(preset)
    t0 = time.perf_counter()
    net = ImageInputNet(model).eval()
    x = torch.from_numpy(check_input(trace_size)).to(model.device)
    dynamic_shapes: dict[str, Any] | None = None
    if dynamic:
        step = size_multiple(preset)
        dim = torch.export.Dim
        dynamic_shapes = {
            INPUT_NAME: {
                2: step * dim("height_steps", min=1, max=512),
                3: step * dim("width_steps", min=1, max=512),
            }
        }
    saved_precision = model.precision
    model.precision = "fp32"  # the graph and the torch reference it is checked against are float32
    try:
        try:
            with _quiet_exporter():
                program = torch.onnx.export(
                    net,
                    (x,),
                    None,
                    dynamo=True,
                    opset_version=ONNX_OPSET,
                    input_names=[INPUT_NAME],
                    output_names=list(names),
                    dynamic_shapes=dynamic_shapes,
                    verbose=False,
                )
        except Exception as exc:
            raise ExportError(
                f"torch.onnx.export failed for {preset.name}: {type(exc).__name__}: {exc}"
            ) from exc
        if program is None:  # pragma: no cover - dynamo=True always returns a program
            raise ExportError(f"torch.onnx.export returned nothing for {preset.name}")
        metadata = {
            "preset": preset.name,
            "family": preset.family,
            "canonical_focal_px": f"{CANONICAL_FOCAL_PX:g}",
            "input_size": "dynamic" if dynamic else f"{trace_size[0]},{trace_size[1]}",
            "preset_input_size": f"{preset.input_size[0]},{preset.input_size[1]}",
            "size_multiple": str(size_multiple(preset)),
            "input_format": INPUT_FORMAT,
            "rgb_mean": ",".join(f"{v:g}" for v in RGB_MEAN),
            "rgb_std": ",".join(f"{v:g}" for v in RGB_STD),
            "outputs": ",".join(names),
            "depth_range_m": f"{preset.depth_range_m[0]:g},{preset.depth_range_m[1]:g}",
            "weights_sha256": weights_sha256,
            "metrocli_version": __version__,
            "torch_version": torch.__version__,
            "opset": str(ONNX_OPSET),
            **(extra_metadata or {}),
        }
        check_sizes: tuple[tuple[int, int], ...] = (trace_size,)
        if dynamic:  # a second size proves the graph is not frozen to the traced one
            step = size_multiple(preset)
            check_sizes += ((trace_size[0] + step, trace_size[1] + 2 * step),)
        weight_bytes = sum(t.numel() * 4 for t in model.parameters())
        external = weight_bytes > EXTERNAL_DATA_BYTES
        with _staged(target, external) as staged:
            fidelities = _save_and_check(program, staged, net, names, check_sizes, metadata, external)
            fidelity = _worst(fidelities)
            metadata.update(fidelity.as_metadata())
            problems = fidelity.problems()
            if problems:
                raise ExportError(
                    f"the ONNX export of {preset.name} does not reproduce torch float32 "
                    f"({'; '.join(problems)}); {target} was not written"
                )
    finally:
        model.precision = saved_precision
    data_files = (target.with_name(target.name + ".data"),) if external else ()
    elapsed = time.perf_counter() - t0
    log.info("exported %s to %s in %.1f s (%s)", preset.name, target, elapsed, fidelity)
    return OnnxExport(
        path=target,
        preset=preset.name,
        input_size=None if dynamic else trace_size,
        check_sizes=check_sizes,
        fidelity=fidelity,
        export_s=elapsed,
        metadata=metadata,
        data_files=data_files,
    )


def _save_and_check(
    program: Any,
    path: Path,
    net: ImageInputNet,
    names: tuple[str, ...],
    check_sizes: Sequence[tuple[int, int]],
    metadata: dict[str, str],
    external: bool,
) -> list[Fidelity]:
    """Save ``program`` with ``metadata`` to ``path``, then compare onnxruntime with torch at each size.

    The fidelity figures go into the metadata too, so the file is saved again once they are known.
    """
    program.model.metadata_props.update(metadata)
    program.save(path, external_data=external)
    try:
        session = onnx_session(path)
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load the exported graph: {type(exc).__name__}: {exc}") from exc
    fidelities = []
    for size in check_sizes:
        x = check_input(size)
        with torch.inference_mode():
            ref_t = net(torch.from_numpy(x).to(next(net.model.parameters()).device))
        ref = {name: t.float().cpu().numpy() for name, t in zip(names, ref_t, strict=True)}
        try:
            got = dict(zip(names, session.run(list(names), {INPUT_NAME: x}), strict=True))
        except Exception as exc:
            raise ExportError(
                f"onnxruntime failed on a {size[0]}x{size[1]} input: {type(exc).__name__}: {exc}"
            ) from exc
        fidelities.append(compare_outputs(got, ref))
    del session
    program.model.metadata_props.update(_worst(fidelities).as_metadata())
    program.save(path, external_data=external)
    return fidelities


def export_preset(
    name: str,
    target: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
) -> OnnxExport:
    """Load preset ``name`` (``weights`` or the cached official checkpoint) on the CPU in float32 and
    :func:`export_onnx` it to ``target``; the checkpoint's sha256 goes into the metadata."""
    require_onnx()
    from metrocli.model.factory import load_model
    from metrocli.model.weights import resolve_weights, sha256_file

    check_export_request(get_preset(name), size, dynamic)
    path = resolve_weights(name, weights)
    model = load_model(name, weights=path, device="cpu", precision="fp32")
    return export_onnx(model, target, size=size, dynamic=dynamic, weights_sha256=sha256_file(path))
