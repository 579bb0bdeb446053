"""Shared pieces of the CLI: logging to stderr, error handling, common options, JSON Lines, batches."""

from __future__ import annotations

import contextlib
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
        handler.setFormatter(_OneLineFormatter("%(message)s"))
    else:
        handler = _PlainHandler()
    root = logging.getLogger("metrocli")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _OneLineFormatter(logging.Formatter):
    """A record's message (with its arguments: a file name) on one line, control characters and odd bytes
    escaped by :func:`one_line`, so that a photo named ``"a\\x1b[2J.jpg"`` cannot clear the terminal or forge
    a line of the log."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


class _PlainHandler(logging.StreamHandler):
    """``metro: warning: message`` on the current ``sys.stderr``, one line per record (see
    :class:`_OneLineFormatter`)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_OneLineFormatter("metro: %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        record.levelname = record.levelname.lower()
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


def one_line(text: str) -> str:
    """``text`` safe for one line of a terminal: control characters (a newline in a file name) escaped as
    ``\\n``, ``\\x1b``, ..., and undecodable bytes of a file name (surrogate escapes) as ``\\xff``."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of a non-UTF-8 byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or 0xD800 <= code <= 0xDFFF:
            out.append(ch.encode("unicode_escape").decode("ascii") if code < 0xD800 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def error_line(message: str) -> None:
    """Print one ``metro: error: ...`` line on stderr (control characters and odd bytes escaped)."""
    click.echo(f"metro: error: {one_line(message)}", err=True)


#: Signals that stop a run like Ctrl-C (temporaries removed by the unwinding) and their exit codes.
_STOP_SIGNALS = {"SIGTERM": 143, "SIGHUP": 129}


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C (atomic writes remove their temporaries)."""

    def __init__(self, name: str, exit_code: int) -> None:
        super().__init__(name)
        self.name = name
        self.exit_code = exit_code


def _install_stop_handlers() -> dict[int, Any]:
    """SIGTERM and SIGHUP raise :class:`Stopped` in the main thread; returns the previous handlers."""
    import signal
    import threading

    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name, code in _STOP_SIGNALS.items():
        signum = getattr(signal, name, None)
        if signum is None:
            continue

        def handler(_signum: int, _frame: Any, name: str = name, code: int = code) -> None:
            raise Stopped(name, code)

        previous[signum] = signal.signal(signum, handler)
    return previous


def run_cli(group: click.Group, argv: Sequence[str] | None = None) -> int:
    """Run ``group`` and return the exit code: 0 ok, 1 failure, 2 usage error, 130 interrupted.

    MetroError becomes one clean line; any other exception becomes one line too (with the traceback only at
    -vv), because users must never see a traceback for bad input.
    """
    import signal

    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")
    previous = _install_stop_handlers()
    try:
        return _run(group, argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(group: click.Group, argv: Sequence[str] | None) -> int:
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
    except Stopped as exc:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            error_line(f"stopped by {exc.name}")
        return exc.exit_code
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, Stopped):  # click turns KeyboardInterrupt into Abort
            with contextlib.suppress(OSError):
                error_line(f"stopped by {exc.__cause__.name}")
            return exc.__cause__.exit_code
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


def batch_size_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--batch-size N`` (``batch_size``): photos per forward of the model (the pipelined engine)."""
    return click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Photos per forward of the model. More than 1 helps on a GPU (it stays busy); on a CPU it "
        "gains little and holds more photos in memory.",
    )(func)


def positive(what: str = "number") -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Click callback: the value (int or float, or None) must be finite and positive ("must be a positive
    ``what``")."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise click.BadParameter(f"must be a positive {what}", ctx=ctx, param=param)
        return value

    return check


def within(lo: float, hi: float, what: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Click callback: the value (or None) must be a finite number in [``lo``, ``hi``] ("must be ``what``
    from lo to hi")."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and not (math.isfinite(value) and lo <= value <= hi):
            raise click.BadParameter(
                f"must be {what} from {lo:g} to {hi:g}, got {value!r}", ctx=ctx, param=param
            )
        return value

    return check


def _checked(check_name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Click callback running ``metrocli.camera.focal.<check_name>`` (the one range rule of that option)."""

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        from metrocli.camera import focal

        if value is not None:
            try:
                getattr(focal, check_name)(value)
            except MetroUsageError as exc:
                raise click.BadParameter(str(exc).split(" ", 1)[1], ctx=ctx, param=param) from None
        return value

    return check


_fov = _checked("check_user_fov_deg")
_focal_px = _checked("check_user_focal_px")


def _threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """``--threads``: 1 to 4 threads per CPU (more makes OpenBLAS fail to create threads and crash)."""
    import os

    most = 4 * (os.cpu_count() or 1)
    if value is not None and not 1 <= value <= most:
        raise click.BadParameter(f"must be 1 to {most} (4 per CPU of this machine), got {value}", ctx, param)
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
            help="Horizontal field of view in degrees (1 to 179); overrides EXIF.",
        )(func)
        return click.option(
            "--focal-px",
            "focal_px",
            type=float,
            default=None,
            callback=_focal_px,
            help="Focal length in pixels of the displayed photo (1 to 1e6); overrides EXIF.",
        )(func)

    return decorate


def model_options(func: Callable) -> Callable:
    """``--model``, ``--weights``, ``--device``, ``--precision``, ``--threads``, ``--backend``: which Metric3D
    runs, and how.

    The decorated command receives ``spec``: a :class:`~metrocli.model.spec.ModelSpec`.
    """
    from metrocli.model.presets import PRESETS  # pure data, no torch
    from metrocli.model.spec import BACKENDS, DEVICES, PRECISIONS, ModelSpec

    def build(kwargs: dict[str, Any]) -> None:
        kwargs["spec"] = ModelSpec(
            name=kwargs.pop("model_name"),
            weights=kwargs.pop("weights"),
            device=kwargs.pop("device"),
            precision=kwargs.pop("precision"),
            threads=kwargs.pop("threads"),
            backend=kwargs.pop("backend"),
        )

    func = _wrap(func, build)
    func = click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default="torch",
        show_default=True,
        help="What runs the network. onnxruntime: --weights is a file from `metro export onnx` (fp32; "
        "pip install metrocli[onnx]).",
    )(func)
    func = click.option(
        "--threads",
        type=int,
        default=None,
        callback=_threads,
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
    from metrocli.jsonsafe import json_ready

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
            click.echo(one_line(line), err=True)
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
    error_record: Callable[[T], dict[str, Any]] | None = None,
) -> BatchReport:
    """Run ``work(item)`` for each item; MetroError and unexpected errors are reported and the batch goes on.

    A rich progress bar runs on stderr when ``progress`` and there is more than one item. With
    ``error_record`` (``--json``), a failed item also prints the JSON line ``{**error_record(item), "error":
    reason}`` on stdout, in its place among the results. Call :meth:`BatchReport.finish` afterwards.
    """
    import time

    items = list(items)
    report = BatchReport(what=what)
    # Without a terminal on stderr (a log file, CI): one plain line per finished item instead of a bar.
    lines = not stderr_is_terminal() and not quiet() and len(items) > 1

    def failed(item: T, label: str, message: str) -> None:
        report.fail(label, message)
        if error_record is not None:
            emit_json({**error_record(item), "error": message})

    def _one(index: int, item: T) -> None:
        label = name(item)
        start = time.perf_counter()
        status = "ok"
        try:
            work(item)
        except MetroError as exc:
            status = "failed"
            failed(item, label, str(exc))
        except (KeyboardInterrupt, click.exceptions.Exit, BrokenPipeError):
            raise  # Ctrl-C, a decided exit, or the reader of stdout gone: stop the batch now
        except Exception as exc:  # one bad input never kills the batch
            status = "failed"
            if _VERBOSITY >= 2:
                import traceback

                traceback.print_exc()
            failed(item, label, f"{label}: unexpected {type(exc).__name__}: {exc}")
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
