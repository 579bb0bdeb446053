"""`metro --help` start-up versus `python -c "import click"` (target: at most 2.5x).

Run: .venv/bin/python benchmarks/bench_startup.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path


def best_of(cmd: list[str], n: int = 15) -> float:
    """Best wall-clock seconds of ``n`` runs of ``cmd``."""
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    metro = shutil.which("metro", path=str(Path(sys.executable).parent)) or shutil.which("metro")
    baseline = best_of([sys.executable, "-c", "import click"])
    module = best_of([sys.executable, "-m", "metrocli.cli.main", "--help"])
    print(f"python -c 'import click'    {baseline * 1e3:7.1f} ms")
    print(f"python -m metrocli --help   {module * 1e3:7.1f} ms  ({module / baseline:.2f}x)")
    if metro:
        script = best_of([metro, "--help"])
        print(
            f"metro --help (script)       {script * 1e3:7.1f} ms  ({script / baseline:.2f}x, target <= 2.5x)"
        )


if __name__ == "__main__":
    main()
