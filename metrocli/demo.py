"""`make demo`: the main job end to end on ``sample_photos/``, as a newcomer would type it.

Runs real ``metro`` subprocesses (each command is echoed first): ``metro info`` on the samples,
``metro measure`` of the table with ``--annotate`` (true size beside the measured one),
``metro reconstruct`` of the folder and ``metro depth`` with the model. Without model weights (offline), the
model steps use the depth maps recorded beside the samples and say so; ``metro depth`` needs the model and
is skipped with the command that fetches the weights. Outputs land in ``--out`` (default ``demo/``), listed
at the end. A failing step prints a clear message and the demo goes on; the exit status is 1 when any step
failed.

Usage: ``python -m metrocli.demo [--out demo] [--samples sample_photos] [--steps info,measure,...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STEPS = ("info", "measure", "reconstruct", "depth")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Demo:
    """State of one demo run: where things are, whether model weights exist, what failed."""

    samples: Path
    out: Path
    model: str = "vit-small"
    weights_ok: bool = False
    failures: list[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def heading(self, text: str) -> None:
        self.say()
        self.say(f"== {text} " + "=" * max(0, 70 - len(text)))

    def run(
        self, args: list[str], *, capture: bool = False, ok_codes: tuple[int, ...] = (0,)
    ) -> subprocess.CompletedProcess | None:
        """Echo ``metro ARGS`` and run it as ``python -m metrocli.cli.main ARGS``; None when it failed (with
        an exit code not in ``ok_codes``)."""
        self.say(f"$ metro {shlex.join(args)}")
        cmd = [sys.executable, "-m", "metrocli.cli.main", *args]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, stdout=subprocess.PIPE if capture else None, text=True, check=False, env=_child_env()
            )
        except OSError as exc:
            self.fail(f"`metro {args[0]}` could not start: {exc}")
            return None
        if proc.returncode not in ok_codes:
            self.fail(f"`metro {args[0]}` failed with exit code {proc.returncode} (see its message above)")
            if capture and proc.stdout:
                self.say(proc.stdout.rstrip())
            return None
        self.say(f"   ({time.perf_counter() - t0:.1f} s)")
        return proc

    def fail(self, message: str) -> None:
        self.failures.append(message)
        self.say(f"!! {message}; continuing")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Make `python -m metrocli.cli.main` importable even when the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _photos(samples: Path) -> list[Path]:
    return sorted(p for p in samples.glob("*.jpg") if not p.name.startswith("."))


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_weights(demo: Demo, try_pull: bool) -> None:
    """Set ``demo.weights_ok``: cached weights, or (``try_pull``) a successful ``metro weights pull``."""
    from metrocli.errors import WeightsError
    from metrocli.model.weights import resolve_weights

    demo.heading("model weights")
    try:
        path = resolve_weights(demo.model)
    except WeightsError as exc:
        demo.say(f"not cached: {exc}")
        if try_pull:
            demo.say("trying to download them (needs the internet):")
            demo.say(f"$ metro weights pull {demo.model}")
            proc = subprocess.run(
                [sys.executable, "-m", "metrocli.cli.main", "weights", "pull", demo.model],
                check=False,
                env=_child_env(),
            )
            if proc.returncode == 0:
                try:
                    resolve_weights(demo.model)
                    demo.weights_ok = True
                except WeightsError as again:
                    demo.say(f"still no weights: {again}")
    else:
        demo.say(f"using {demo.model} weights at {path}")
        demo.weights_ok = True
    if not demo.weights_ok:
        demo.say(
            f"OFFLINE MODE: no {demo.model} weights, so the model steps below use the depth maps recorded "
            f"beside the samples (*.depth.png); get real weights with `metro weights pull {demo.model}`."
        )


def step_info(demo: Demo) -> None:
    demo.heading("metro info: size, orientation and focal length (pixels) of each sample photo")
    photos = _photos(demo.samples)
    if not photos:
        demo.fail(f"no *.jpg in {demo.samples}")
        return
    demo.run(["info", *(_rel(p) for p in photos)])


def _table_lines(samples: Path, photo_name: str) -> list[dict]:
    meta = json.loads((samples / "samples.json").read_text())
    for rec in meta["photos"]:
        if rec["file"] == photo_name:
            return rec["measurements"]
    return []


def step_measure(demo: Demo, photo_name: str = "room_01.jpg") -> None:
    demo.heading("metro measure: the table in room_01.jpg, with an annotated picture")
    photo = demo.samples / photo_name
    try:
        lines = _table_lines(demo.samples, photo_name)
    except (OSError, ValueError, KeyError) as exc:
        demo.fail(f"cannot read the table's pixel coordinates from {demo.samples / 'samples.json'}: {exc}")
        return
    if not lines:
        demo.fail(f"{demo.samples / 'samples.json'} lists no table measurement for {photo_name}")
        return
    args = ["measure", _rel(photo)]
    for m in lines:
        args += ["--line", ",".join(f"{x:g}" for x in (*m["from_px"], *m["to_px"]))]
    if demo.weights_ok:
        demo.say("depth from the model")
    else:
        depth = photo.with_name(photo.stem + ".depth.png")
        demo.say(f"depth from the recorded map {_rel(depth)} (offline mode)")
        args += ["--depth", _rel(depth)]
    annotated = demo.out / "room_01-measured.png"
    args += ["--annotate", _rel(annotated), "--json"]
    proc = demo.run(args, capture=True)
    if proc is None:
        return
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        measured = result["measurements"]
    except (ValueError, KeyError, IndexError):
        demo.fail("`metro measure --json` printed no JSON result")
        demo.say(proc.stdout)
        return
    demo.say(
        f"focal length {result.get('focal_px', float('nan')):.1f} px ({result.get('focal_source', '?')})"
    )
    demo.say(f"{'line':<14}{'measured':>11}{'± (mm)':>9}{'true':>10}{'error':>10}")
    for m, got in zip(lines, measured, strict=False):
        d, u, true = got["distance_m"], got.get("uncertainty_m"), m["true_m"]
        unc = f"{1000 * u:.1f}" if isinstance(u, int | float) else "-"
        err = 1000 * (d - true)
        demo.say(f"{m['name']:<14}{d:>9.4f} m{unc:>9}{true:>8.4f} m{err:>+7.1f} mm")
    sizes = " x ".join(f"{m['edge_m']:.2f}" for m in lines)
    demo.say(
        f"(true = distance between the two points, each {lines[0]['inset_m'] * 100:.0f} cm inside the "
        f"corners of the {sizes} m table top)"
    )
    if annotated.is_file():
        demo.say(f"annotated photo: {_rel(annotated)}")


def step_reconstruct(demo: Demo) -> None:
    demo.heading("metro reconstruct: one metric mesh from all sample photos")
    demo.say("(the street photos do not overlap the room: the largest connected group is fused)")
    scene = demo.out / "scene.ply"
    args = ["reconstruct", _rel(demo.samples), "-o", _rel(scene)]
    if not demo.weights_ok:
        demo.say(f"depth from the recorded maps in {_rel(demo.samples)} (offline mode)")
        args += ["--depth-dir", _rel(demo.samples)]
    # exit 1 says that photos were left out: expected here, for the street photos and only for them
    if demo.run(args, ok_codes=(0, 1)) is None:
        return
    try:
        doc = json.loads(scene.with_suffix(".json").read_text())
        registered = {p["photo"] for p in doc["photos"]}
        left_out = {p["photo"] for p in doc["left_out"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        demo.fail(f"`metro reconstruct` wrote no readable {scene.with_suffix('.json')}: {exc}")
        return
    rooms = {p.name for p in _photos(demo.samples) if p.name.startswith("room_")}
    if registered != rooms or left_out != {p.name for p in _photos(demo.samples)} - rooms:
        demo.fail(
            f"`metro reconstruct` registered {sorted(registered)} and left out {sorted(left_out)}; "
            f"expected the room photos {sorted(rooms)} registered and the street photos left out"
        )
        return
    demo.say(f"as expected: the {len(rooms)} room photos fused, the street photos left out with their reason")


def step_depth(demo: Demo, photo_name: str = "room_01.jpg") -> None:
    demo.heading(f"metro depth: the model's metric depth and normals of {photo_name}")
    if not demo.weights_ok:
        demo.say(
            f"skipped: `metro depth` runs the model and no {demo.model} weights are available offline; "
            f"fetch them with `metro weights pull {demo.model}` and run `make demo` again."
        )
        return
    demo.run(
        ["depth", _rel(demo.samples / photo_name), "-o", _rel(demo.out / "depth"), "--model", demo.model]
    )


def list_outputs(demo: Demo) -> None:
    demo.heading(f"files written in {_rel(demo.out)}/")
    files = sorted(p for p in demo.out.rglob("*") if p.is_file()) if demo.out.is_dir() else []
    if not files:
        demo.say("(none)")
    for p in files:
        demo.say(f"{p.stat().st_size:>12,d}  {_rel(p)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metrocli.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: demo)")
    ap.add_argument("--samples", type=Path, default=REPO / "sample_photos", help="sample photo folder")
    ap.add_argument("--model", default="vit-small", help="model preset (default: vit-small)")
    ap.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)} (default: all)"
    )
    ap.add_argument("--no-pull", action="store_true", help="do not try to download missing weights")
    args = ap.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {unknown}; choose from {list(STEPS)}")
    demo = Demo(samples=args.samples, out=args.out, model=args.model)
    if not (demo.samples / "samples.json").is_file():
        print(
            f"error: {demo.samples} has no samples.json; regenerate the samples with "
            f"`python -m metrocli.synth.samples {demo.samples}`",
            file=sys.stderr,
        )
        return 1
    demo.out.mkdir(parents=True, exist_ok=True)
    demo.say(
        "metro demo: metric measurements and 3D from phone photos (rendered samples with known geometry)."
    )
    demo.say("Each step is a real command; `metro` is `python -m metrocli.cli.main` when not installed.")
    if any(s in steps for s in ("measure", "reconstruct", "depth")):
        check_weights(demo, try_pull=not args.no_pull)
    runners = {
        "info": step_info,
        "measure": step_measure,
        "reconstruct": step_reconstruct,
        "depth": step_depth,
    }
    for name in STEPS:
        if name in steps:
            runners[name](demo)
    list_outputs(demo)
    if demo.failures:
        demo.say()
        demo.say(f"{len(demo.failures)} step(s) failed:")
        for f in demo.failures:
            demo.say(f"  - {f}")
        return 1
    demo.say()
    demo.say("demo finished: all steps ran.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
