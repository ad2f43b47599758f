"""What the benchmarks share: a whole `python -m ...` process run and timed, as a user runs it.

Each benchmark imports this module from its own folder (a script's folder is first on its
sys.path), so they time processes the same way: this checkout first on PYTHONPATH, Python's
warnings off, the output kept in cwd/log.txt, and a failed run ends the benchmark with the
last 25 lines of its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str], cwd: Path, env: dict[str, str] | None = None,
          name: str | None = None) -> tuple[float, float]:  # fmt: skip
    """Run `args` in `cwd` (made if missing) with this checkout first on PYTHONPATH and `env`
    added; returns (start as a POSIX time, wall seconds). Exits with the log's tail, under
    `name` (default: the command), where the process fails."""
    cwd.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    full = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path, **(env or {})}
    start, clock = time.time(), time.perf_counter()
    with open(cwd / "log.txt", "w") as log:
        proc = subprocess.run(args, cwd=cwd, env=full, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - clock
    if proc.returncode != 0:
        tail = "\n".join((cwd / "log.txt").read_text().splitlines()[-25:])
        sys.exit(f"{name or ' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return start, seconds
