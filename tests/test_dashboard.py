"""What optuna-dashboard shows of a sweep, read from its own server's JSON API (the data its
pages draw): sortable figures, the objective's name, learning curves."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from conftest import run_cli

# optuna-dashboard, a tracker
pytestmark = pytest.mark.slow

EPOCHS = 3


# straight to 127.0.0.1: urlopen's shared opener keeps the proxies of the environment it was
# first built in (a test that set http_proxy, in this worker, made every call a refused one)
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> dict:
    with DIRECT.open(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def dashboard(tmp_path):
    """A 2-trial digits sweep, and optuna-dashboard serving its storage on 127.0.0.1."""
    # beside this interpreter first: `.venv/bin/python -m pytest` runs without the venv on PATH
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or shutil.which(
        "optuna-dashboard"
    )
    if exe is None:
        pytest.fail("optuna-dashboard is a dev dependency: pip install -e '.[dev]'")
    run_cli(tmp_path, "-m", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=dash",
            f"train.epochs={EPOCHS}")  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "dashboard.log"  # what the server said, for a failure's message
    server = subprocess.Popen(
        [exe, f"sqlite:///{tmp_path}/outputs/optuna.db", "--host", "127.0.0.1",
         "--port", str(port), "--quiet"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api"
    try:
        end = time.time() + 60
        while True:
            try:
                studies = _get(f"{base}/studies")["study_summaries"]
                break
            except OSError as e:
                if time.time() > end or server.poll() is not None:
                    raise AssertionError(
                        f"optuna-dashboard did not answer ({e}; exit {server.poll()}): "
                        f"{log.read_text()[-2000:]}"
                    ) from e
                time.sleep(0.2)
        [study] = [s for s in studies if s["study_name"] == "dash"]
        detail = _get(f"{base}/studies/{study['study_id']}")
        yield detail, pd.read_csv(tmp_path / "outputs" / "sweeps" / "dash" / "results.csv")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_dashboard_sorts_and_plots_every_figure_of_a_row(dashboard):
    detail, df = dashboard
    assert detail["objective_names"] == ["val_acc"]
    sortable = {a["key"] for a in detail["union_user_attrs"] if a["sortable"]}
    numeric = {
        c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().all()
    }
    numeric -= {"pareto"}  # booleans are not figures
    assert {"sparsity", "test_acc", "nnz", "train_seconds", "val_acc"} <= numeric
    assert numeric <= sortable, numeric - sortable
    for trial in detail["trials"]:
        row = df.set_index("trial").loc[trial["number"]]
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        for key in numeric - {"trial"}:
            assert math.isclose(float(attrs[key]), row[key], rel_tol=1e-12), key


def test_the_dashboard_draws_each_trials_learning_curve(dashboard):
    detail, df = dashboard
    assert detail["has_intermediate_values"]
    for trial in detail["trials"]:
        curve = trial["intermediate_values"]
        assert [v["step"] for v in curve] == list(range(1, EPOCHS + 1))
        val_acc = df.set_index("trial").loc[trial["number"], "val_acc"]
        assert float(curve[-1]["value"]) == val_acc  # the last epoch's is the row's
        assert float(trial["values"][0]) == val_acc
