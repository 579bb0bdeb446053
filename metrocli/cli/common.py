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
    """Log to stderr: warnings by default, info with -v, debug with -vv, errors only with -q (``verbose`` -1).

    In a terminal through rich; otherwise (a log file, CI, a pipe) as plain one-line records
    ``metro: warning: ...`` that are never wrapped or coloured.
    """
    global _VERBOSITY
    _VERBOSITY = verbose
    level = (
        logging.ERROR
        if verbose < 0
        else logging.WARNING
        if verbose == 0
        else logging.INFO
        if verbose == 1
        else logging.DEBUG
    )
    handler: logging.Handler
    if stderr_is_terminal():
        from rich.logging import RichHandler

        handler = RichHandler(
            console=stderr_console(),
            show_time=verbose > 1,
            show_path=verbose > 1,
            markup=False,
            rich_tracebacks=True,
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _PlainHandler()
    root = logging.getLogger("metrocli")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _PlainHandler(logging.StreamHandler):
    """``metro: warning: message`` on the current ``sys.stderr``, one line per record (newlines escaped)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("metro: %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        record.levelname = record.levelname.lower()
        record.msg = str(record.msg).replace("\n", " ")
        super().emit(record)


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (progress bars, rich output) or a file or pipe (plain lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def quiet() -> bool:
    """-q/--quiet was given: no progress, no per-photo lines, errors only."""
    return _VERBOSITY < 0


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
        _stdout_closed()
        return 0
    except Exception as exc:  # last line of defence: never a traceback unless asked for
        if _VERBOSITY >= 2:
            import traceback

            traceback.print_exc()
        error_line(f"unexpected {type(exc).__name__}: {exc} (run with -vv for details)")
        return 1
    return 0


def _stdout_closed() -> None:
    """The reader of stdout has gone (``metro info --json ... | head -1``): like Unix tools, stop quietly.

    stdout is pointed at /dev/null so that the interpreter's final flush does not complain again.
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


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

    emit_line(json.dumps(json_ready(obj), allow_nan=False))


#: The console of the progress bar being shown, while one is (see :func:`emit_line`).
_LIVE_CONSOLE: Console | None = None


def emit_line(text: str) -> None:
    """Print one result line on stdout. While a progress bar is shown in the same terminal, the line is
    printed above the bar through its console, so that results and progress never share a line."""
    try:
        if _LIVE_CONSOLE is not None and sys.stdout.isatty():
            _LIVE_CONSOLE.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)
            return
        click.echo(text)
    except BrokenPipeError:
        # the reader has gone (`| head -1`): stop the whole command now, quietly, exit 0 like Unix tools
        _stdout_closed()
        raise click.exceptions.Exit(0) from None


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
    import time

    items = list(items)
    report = BatchReport(what=what)
    # Without a terminal on stderr (a log file, CI): one plain line per finished item instead of a bar.
    lines = not stderr_is_terminal() and not quiet() and len(items) > 1

    def _one(index: int, item: T) -> None:
        label = name(item)
        start = time.perf_counter()
        status = "ok"
        try:
            work(item)
        except MetroError as exc:
            status = "failed"
            report.fail(label, str(exc))
        except (KeyboardInterrupt, click.exceptions.Exit, BrokenPipeError):
            raise  # Ctrl-C, a decided exit, or the reader of stdout gone: stop the batch now
        except Exception as exc:  # one bad input never kills the batch
            status = "failed"
            if _VERBOSITY >= 2:
                import traceback

                traceback.print_exc()
            report.fail(label, f"{label}: unexpected {type(exc).__name__}: {exc}")
        else:
            report.ok(label)
        if lines:
            seconds = time.perf_counter() - start
            click.echo(f"[{index}/{len(items)}] {label} {seconds:.1f} s {status}", err=True)

    from metrocli.pipeline.progress import with_progress

    global _LIVE_CONSOLE
    bar = progress and stderr_is_terminal() and not quiet()
    _LIVE_CONSOLE = stderr_console() if bar and len(items) > 1 else None
    try:
        for index, item in enumerate(
            with_progress(items, description=description, name=name, enabled=bar, console=stderr_console()),
            start=1,
        ):
            _one(index, item)
    finally:
        _LIVE_CONSOLE = None
    return report
