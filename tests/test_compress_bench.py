"""benchmarks/compress.py keeps running: its smoke mode on digits, figures checked."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

# a benchmark's smoke run
pytestmark = pytest.mark.slow


def test_compress_benchmark_smoke_prints_parsable_figures(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compress.py"), "--smoke", "--work",
         str(tmp_path)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    figures = dict(kv.split("=") for kv in lines[-1].split())
    assert figures["mode"] == "smoke" and figures["bits"] == "4"
    dense, archived = int(figures["dense_bytes"]), int(figures["archive_bytes"])
    # the archive the benchmark measured is the file it wrote
    assert archived == os.path.getsize(tmp_path / "pruned" / "export-b4e0" / "model.l1z")
    assert dense == os.path.getsize(tmp_path / "pruned" / "model.pt")
    assert float(figures["ratio"]) == round(dense / archived, 2) and float(figures["ratio"]) > 8
    # 80% zeros and 4 bits cost a trained digits model little
    assert float(figures["archive_test"]) > float(figures["dense_test"]) - 0.05 > 0.8
    assert float(figures["wall_s"]) > 0
