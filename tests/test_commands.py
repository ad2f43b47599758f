"""Every command l1sweep prints or stores reproduces from the directory the sweep started in,
with the user's own config directory and primary config (results/command.py)."""

from __future__ import annotations

import json
import re
import shlex

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import run_cli, run_module
from sweep.results.command import DEFAULT_PATH, command, config_flags

# A primary config of one's own: another model, fewer epochs, and sweep options that the
# default config does not have (2 trials, one at a time). Run without --config-name, its
# overrides would train simple_net for 5 epochs, 20 trials at n_jobs=auto.
MINE = """
defaults:
  - config
  - override model: linear
  - _self_

train:
  epochs: 2
hydra:
  sweeper:
    study_name: mine
    n_trials: 2
    n_jobs: 1
"""


def _hydra(cwd: str, sources: list[dict], name: str = "config") -> dict:
    return {"runtime": {"cwd": cwd, "config_sources": sources}, "job": {"config_name": name}}


def test_the_flags_are_what_chose_the_configuration(tmp_path):
    main = {"path": DEFAULT_PATH, "schema": "file", "provider": "main"}
    pkg = {"path": "hydra.conf", "schema": "pkg", "provider": "hydra"}
    mine = {"path": str(tmp_path / "myconf"), "schema": "file", "provider": "command-line"}
    outside = {"path": "/etc/l1", "schema": "file", "provider": "command-line"}
    assert config_flags(_hydra(str(tmp_path), [pkg, main])) == []
    assert config_flags(_hydra(str(tmp_path), [main, mine], "own")) == [
        "--config-dir", "myconf", "--config-name", "own"]  # fmt: skip
    assert config_flags(_hydra(str(tmp_path), [main, outside])) == ["--config-dir", "/etc/l1"]
    other = {"path": str(tmp_path / "app"), "schema": "file", "provider": "main"}
    assert config_flags(_hydra(str(tmp_path), [other])) == [
        "--config-path", str(tmp_path / "app")]  # fmt: skip
    # quoted for a shell: a value with a space or a quote stays one word
    line = command(["--config-dir", "my conf"], ["data.path=o'brien.csv"], multirun=True)
    assert shlex.split(line) == ["python", "-m", "sweep.run", "-m", "--config-dir", "my conf",
                                 "data.path=o'brien.csv"]  # fmt: skip


def _run(cwd, line: str, *more: str, **kwargs):
    """Run a printed `python -m sweep.run ...` line as a user would (after the program)."""
    words = shlex.split(line)
    assert words[:3] == ["python", "-m", "sweep.run"], line
    return run_cli(cwd, *words[3:], *more, **kwargs)


@pytest.mark.slow
def test_what_a_sweep_of_ones_own_config_prints_and_stores_reproduces_it(tmp_path):
    pytest.importorskip("mlflow")
    (tmp_path / "myconf").mkdir()
    (tmp_path / "myconf" / "mine.yaml").write_text(MINE)
    uri = f"sqlite:///{tmp_path}/ml/mlflow.db"
    tracked = ("logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
    first = run_cli(tmp_path, "-m", "--config-dir", "myconf", "--config-name", "mine", *tracked)
    out = first.stdout + first.stderr
    resume = re.search(r"resume or extend with: (.*?) \(hydra\.sweeper\.n_trials", out).group(1)
    assert "--config-dir myconf --config-name mine" in resume, resume
    csv = tmp_path / "outputs" / "sweeps" / "mine" / "results.csv"
    rows = pd.read_csv(csv)
    assert len(rows) == 2 and set(rows["model"]) == {"linear"}

    # the resume line as printed: the same study, nothing refused, nothing more to run
    again = _run(tmp_path, resume)
    assert "nothing to run" in again.stdout + again.stderr
    # ... and extended: the third trial is of the same configuration
    _run(tmp_path, resume, "hydra.sweeper.n_trials=3")
    rows = pd.read_csv(csv)
    assert len(rows) == 3 and set(rows["model"]) == {"linear"}

    # a row's command, run as a single run, gives the row's figures exactly
    row = rows.iloc[-1]
    assert row["command"].startswith("python -m sweep.run --config-dir myconf --config-name mine")
    _run(tmp_path, row["command"], "hydra.run.dir=repro")
    metrics = json.loads((tmp_path / "repro" / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "sparsity"):
        assert metrics[key] == row[key], key
    hydra = OmegaConf.load(tmp_path / "repro" / ".hydra" / "hydra.yaml").hydra
    assert hydra.runtime.choices.model == "linear" and hydra.job.config_name == "mine"

    # the analysis's choice is given as the same command
    analysis = run_module("sweep.analyze", tmp_path, "outputs/sweeps/mine", "--max-drop", "100")
    use = re.search(r"^use: (.*)$", analysis.stdout, re.M).group(1)
    assert use in set(rows["command"]), analysis.stdout[-2000:]

    # the tracker holds the command and the flags beside the overrides
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["l1sweep"])
    trials = runs[runs["tags.l1sweep.role"] == "trial"].set_index("tags.l1sweep.trial")
    run = trials.loc[str(row["trial"])]
    assert run["tags.l1sweep.command"] == row["command"]
    assert run["params.config_dir"] == "myconf" and run["params.config_name"] == "mine"
