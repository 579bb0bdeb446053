"""Shared pieces of the CLI: logging to stderr, error handling, common options, JSON Lines, batches."""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from metrocli.errors import MetroError, MetroUsageError

if TYPE_CHECKING:
    from rich.console import Console

    from metrocli.camera.calibration import Calibration
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.provider import FocalMode, ModelDepth, SensorDepth

log = logging.getLogger("metrocli")
_VERBOSITY = 0
T = TypeVar("T")


def setup_logging(verbose: int) -> None:
    """Log to stderr through rich: warnings by default, info with -v, debug with -vv."""
    global _VERBOSITY
    _VERBOSITY = verbose
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(
        console=stderr_console(),
        show_time=verbose > 1,
        show_path=verbose > 1,
        markup=False,
        rich_tracebacks=True,
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("metrocli")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


_STDERR_CONSOLE: Console | None = None


def stderr_console() -> Console:
    """The shared rich console on stderr (progress bars, warnings)."""
    global _STDERR_CONSOLE
    if _STDERR_CONSOLE is None or _STDERR_CONSOLE.file is not sys.stderr:
        from rich.console import Console

        _STDERR_CONSOLE = Console(stderr=True, highlight=False)
    return _STDERR_CONSOLE


def error_line(message: str) -> None:
    """Print one ``metro: error: ...`` line on stderr."""
    click.echo(f"metro: error: {message}", err=True)


def run_cli(group: click.Group, argv: Sequence[str] | None = None) -> int:
    """Run ``group`` and return the exit code: 0 ok, 1 failure, 2 usage error, 130 interrupted.

    MetroError becomes one clean line; any other exception becomes one line too (with the traceback only at
    -vv), because users must never see a traceback for bad input.
    """
    try:
        rv = group.main(
            args=list(argv) if argv is not None else None, prog_name="metro", standalone_mode=False
        )
        # Without standalone mode click *returns* the code of a raised Exit (e.g. BatchFailed).
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        error_line("aborted")
        return 130
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    except MetroError as exc:
        error_line(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        return 1
    except Exception as exc:  # last line of defence: never a traceback unless asked for
        if _VERBOSITY >= 2:
            import traceback

            traceback.print_exc()
        error_line(f"unexpected {type(exc).__name__}: {exc} (run with -vv for details)")
        return 1
    return 0


class BatchFailed(click.exceptions.Exit):
    """Raised at the end of a batch in which some inputs failed: exit code 1, the summary already printed."""

    def __init__(self) -> None:
        super().__init__(1)


def json_option(func: Callable) -> Callable:
    """``--json``: JSON Lines on stdout, one object per input."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON Lines (one object per input).")(
        func
    )


def positive(what: str = "number") -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Click callback: the value (int or float, or None) must be finite and positive ("must be a positive
    ``what``")."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise click.BadParameter(f"must be a positive {what}", ctx=ctx, param=param)
        return value

    return check


def _fov(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 < value < 180):
        raise click.BadParameter(
            "must be a horizontal field of view in (0, 180) degrees", ctx=ctx, param=param
        )
    return value


def _wrap(func: Callable, build: Callable[[dict[str, Any]], None]) -> Callable:
    """``func`` called with its keyword arguments rewritten by ``build`` (click options kept)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            build(kwargs)
        except MetroUsageError as exc:
            raise click.UsageError(str(exc)) from None
        return func(*args, **kwargs)

    return wrapper


def _calibration(intrinsics: str | None, camera_file: Path | None) -> Calibration | None:
    """The user's full intrinsics (``--intrinsics`` or ``--camera``, not both), or None."""
    from metrocli.camera.calibration import parse_intrinsics, read_camera_file

    if intrinsics is not None and camera_file is not None:
        raise MetroUsageError("give --intrinsics or --camera, not both")
    if intrinsics is not None:
        return parse_intrinsics(intrinsics)
    return read_camera_file(camera_file) if camera_file is not None else None


def focal_options(*, auto: bool = True) -> Callable[[Callable], Callable]:
    """``--focal-px``, ``--fov`` (override the EXIF focal length) and, with ``auto``, ``--focal exif|auto``.

    The decorated command receives ``focal``: a :class:`~metrocli.pipeline.provider.FocalMode` (more than
    one of them is a usage error).
    """

    def decorate(func: Callable) -> Callable:
        def build(kwargs: dict[str, Any]) -> None:
            from metrocli.pipeline.provider import FocalMode

            focal_px, fov_deg = kwargs.pop("focal_px"), kwargs.pop("fov_deg")
            calibration = _calibration(kwargs.pop("intrinsics"), kwargs.pop("camera_file"))
            auto = kwargs.pop("focal_mode", "exif") == "auto"
            kwargs["focal"] = FocalMode(focal_px, fov_deg, auto=auto, calibration=calibration)

        func = _wrap(func, build)
        if auto:
            func = click.option(
                "--focal",
                "focal_mode",
                type=click.Choice(["exif", "auto"]),
                default="exif",
                show_default=True,
                help="auto: self-calibrate the focal length from the model's depth and normals (one forward; "
                "for photos without EXIF, or to cross-check it). ViT models only.",
            )(func)
        func = click.option(
            "--camera",
            "camera_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="Intrinsics from a COLMAP cameras.txt or an OpenCV calibration YAML; overrides EXIF.",
        )(func)
        func = click.option(
            "--intrinsics",
            "intrinsics",
            default=None,
            metavar="FX,FY,CX,CY",
            help="Full intrinsics in pixels of the displayed photo (an off-centre principal point, e.g. a "
            "crop, is honoured); overrides EXIF.",
        )(func)
        func = click.option(
            "--fov",
            "fov_deg",
            type=float,
            default=None,
            callback=_fov,
            help="Horizontal field of view in degrees; overrides EXIF.",
        )(func)
        return click.option(
            "--focal-px",
            "focal_px",
            type=float,
            default=None,
            callback=positive(),
            help="Focal length in pixels of the displayed photo; overrides EXIF.",
        )(func)

    return decorate


def model_options(func: Callable) -> Callable:
    """``--model``, ``--weights``, ``--device``, ``--precision``, ``--threads``: which Metric3D runs, and how.

    The decorated command receives ``spec``: a :class:`~metrocli.model.spec.ModelSpec`.
    """
    from metrocli.model.presets import PRESETS  # pure data, no torch
    from metrocli.model.spec import DEVICES, PRECISIONS, ModelSpec

    def build(kwargs: dict[str, Any]) -> None:
        kwargs["spec"] = ModelSpec(
            name=kwargs.pop("model_name"),
            weights=kwargs.pop("weights"),
            device=kwargs.pop("device"),
            precision=kwargs.pop("precision"),
            threads=kwargs.pop("threads"),
        )

    func = _wrap(func, build)
    func = click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        envvar="METRO_THREADS",
        help="CPU threads for the model [env METRO_THREADS; default: one per physical core].",
    )(func)
    func = click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="fp32",
        show_default=True,
        help="Model arithmetic. fp32 reproduces the official outputs; bf16 is 1.3-2.7x faster on CPUs with "
        "native bf16 (AMX / AVX512-BF16); fp16 is for CUDA. auto: fp16 on CUDA; on the CPU the half "
        "precision measured within 1% depth and 2 deg normals (p99) for this model and CPU, else fp32.",
    )(func)
    func = click.option(
        "--device",
        type=click.Choice(DEVICES),
        default="auto",
        show_default=True,
        help="Where the model runs (auto: CUDA, then MPS, then CPU).",
    )(func)
    func = click.option(
        "--weights",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Official-format checkpoint file instead of the cached download.",
    )(func)
    return click.option(
        "--model",
        "model_name",
        type=click.Choice(list(PRESETS)),
        default="vit-small",
        show_default=True,
        help="Metric3D model (v2 ViT: depth + normals; v1 ConvNeXt: depth only).",
    )(func)


def build_provider(
    spec: ModelSpec, focal: FocalMode, *, sensor: Path | None = None, depth_scale: float | None = None
) -> ModelDepth | SensorDepth:
    """The depth provider of a command's options (:func:`~metrocli.pipeline.provider.make_provider`);
    a broken rule (``--focal auto`` with sensor depth or a v1 model, ...) is a usage error."""
    from metrocli.pipeline.provider import make_provider

    try:
        return make_provider(spec, focal, sensor=sensor, depth_scale=depth_scale)
    except MetroUsageError as exc:
        raise click.UsageError(str(exc)) from None


def emit_json(obj: Any) -> None:
    """Print one JSON object as a line on stdout."""
    from metrocli.pipeline.jsonsafe import json_ready

    click.echo(json.dumps(json_ready(obj), allow_nan=False))


@dataclass
class BatchReport:
    """Successes and failures of a batch; :meth:`finish` prints the summary line and sets the exit code."""

    what: str = "file"
    succeeded: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def ok(self, name: str) -> None:
        self.succeeded.append(name)

    def fail(self, name: str, message: str) -> None:
        """Record and immediately report one failure on stderr (one line naming the input)."""
        self.failed.append((name, message))
        error_line(message if name in message else f"{name}: {message}")

    def finish(self, quiet_if_single: bool = True) -> None:
        """Print the summary on stderr (for batches of more than one); exit 1 if anything failed."""
        total = len(self.succeeded) + len(self.failed)
        if total > 1 or not quiet_if_single:
            line = f"{len(self.succeeded)} of {total} {self.what}s succeeded"
            if self.failed:
                line += f"; failed: {', '.join(name for name, _ in self.failed)}"
            click.echo(line, err=True)
        if self.failed:
            raise BatchFailed()


def run_batch(
    items: Iterable[T],
    work: Callable[[T], None],
    *,
    name: Callable[[T], str] = str,
    what: str = "file",
    progress: bool = True,
    description: str = "working",
) -> BatchReport:
    """Run ``work(item)`` for each item; MetroError and unexpected errors are reported and the batch goes on.

    A rich progress bar runs on stderr when ``progress`` and there is more than one item. Call
    :meth:`BatchReport.finish` afterwards.
    """
    items = list(items)
    report = BatchReport(what=what)

    def _one(item: T) -> None:
        label = name(item)
        try:
            work(item)
        except MetroError as exc:
            report.fail(label, str(exc))
        except (KeyboardInterrupt, click.exceptions.Exit):
            raise
        except Exception as exc:  # one bad input never kills the batch
            if _VERBOSITY >= 2:
                import traceback

                traceback.print_exc()
            report.fail(label, f"{label}: unexpected {type(exc).__name__}: {exc}")
        else:
            report.ok(label)

    from metrocli.pipeline.progress import with_progress

    for item in with_progress(
        items, description=description, name=name, enabled=progress, console=stderr_console()
    ):
        _one(item)
    return report
