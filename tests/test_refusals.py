"""A refused command leaves nothing behind: the corrected command, in the same directory, runs.

A single run's checks run once Hydra has written the run directory's .hydra/ and run.log; a
refused start (exit 2) removes what it wrote, or puts back what the directory held. A
directory holds a run when it holds a run's results (metrics.json, model.pt), not a refused
attempt's .hydra/. Real `python -m sweep.run` processes, real Hydra and Optuna."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import run_cli

REFUSED = "error: prune.sparsity must be in [0, 1), got 1.0"


def tree(directory: Path) -> dict[str, str]:
    """Every file and directory under `directory`, by relative path: a file's sha256."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(directory.rglob("*"))}  # fmt: skip


def refused(proc, message: str = REFUSED) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert message in out


def test_a_refused_run_leaves_nothing_and_the_corrected_command_runs(tmp_path):
    proc = run_cli(tmp_path, "prune.sparsity=1.0", "hydra.run.dir=outputs/runs/exp1",
                   check=False)  # fmt: skip
    refused(proc)
    assert list(tmp_path.iterdir()) == []  # not even outputs/runs/
    run_cli(tmp_path, "prune.sparsity=0.5", "train.epochs=1", "hydra.run.dir=outputs/runs/exp1")
    assert (tmp_path / "outputs" / "runs" / "exp1" / "metrics.json").is_file()


def test_a_refused_run_in_the_default_directory_leaves_nothing(tmp_path):
    refused(run_cli(tmp_path, "prune.sparsity=1.0", check=False))
    assert list(tmp_path.iterdir()) == []


def test_a_refusal_from_inside_the_run_leaves_nothing(tmp_path):
    """A check that needs the data (an unwritable data.root) refuses from inside the run."""
    (tmp_path / "afile").write_text("")
    proc = run_cli(tmp_path, "data=fashion_mnist", "data.root=afile/x", "hydra.run.dir=run",
                   check=False)  # fmt: skip
    refused(proc, "set data.root to a writable directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_refused_run_puts_back_what_its_directory_held(tmp_path):
    """A directory with a user's file and an earlier refused attempt's .hydra/ and run.log
    (as l1sweep left them before): the refusal leaves every byte as it was, and a refused
    attempt's files do not make it a run."""
    run = tmp_path / "exp"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 7\n")
    (run / "run.log").write_text("[earlier] error: something\n")
    (run / "notes.txt").write_text("mine\n")
    before = tree(run)
    refused(run_cli(tmp_path, "prune.sparsity=1.0", "hydra.run.dir=exp", check=False))
    assert tree(run) == before
    run_cli(tmp_path, "train.epochs=1", "hydra.run.dir=exp")
    assert (run / "metrics.json").is_file() and (run / "notes.txt").read_text() == "mine\n"
    # a directory that holds a run's results is still refused, and left as it was
    held = tree(run)
    refused(run_cli(tmp_path, "train.epochs=2", "hydra.run.dir=exp", check=False),
            "error: hydra.run.dir=exp already holds a run (exp/metrics.json)")  # fmt: skip
    assert tree(run) == held


def test_a_refused_run_in_a_directory_set_by_a_config_file_leaves_no_run_behind(tmp_path):
    (tmp_path / "myconf").mkdir()
    (tmp_path / "myconf" / "mine.yaml").write_text(
        "defaults:\n  - config\n  - _self_\nhydra:\n  run:\n    dir: fixed\n"
    )
    args = ["--config-dir", "myconf", "--config-name", "mine"]
    refused(run_cli(tmp_path, *args, "prune.sparsity=1.0", check=False))
    assert list((tmp_path / "fixed").iterdir()) == []  # no .hydra/, no run.log
    run_cli(tmp_path, *args, "train.epochs=1")
    assert (tmp_path / "fixed" / "metrics.json").is_file()


def test_a_refused_sweep_leaves_nothing_and_the_corrected_sweep_runs(tmp_path):
    common = ["-m", "hydra.sweep.dir=outputs/sweeps/exp1", "hydra.sweeper.n_trials=1",
              "train.epochs=1"]  # fmt: skip
    refused(run_cli(tmp_path, *common, "prune.sparsity=1.0", check=False))
    assert not (tmp_path / "outputs" / "sweeps").exists()
    run_cli(tmp_path, *common, "prune.sparsity=0.5")
    assert (tmp_path / "outputs" / "sweeps" / "exp1" / "results.csv").is_file()


def test_a_sweep_the_sampler_refuses_leaves_no_directory(tmp_path):
    common = ["-m", "hydra/sweeper/sampler=grid", "hydra.sweep.dir=outputs/sweeps/exp1",
              "hydra.sweeper.n_trials=1", "train.epochs=1"]  # fmt: skip
    proc = run_cli(tmp_path, *common, "l1_lambda=interval(1e-5,1e-3)", check=False)
    refused(proc, "Every searched key needs choice(...) or range(...) with the grid sampler")
    assert not (tmp_path / "outputs" / "sweeps" / "exp1").exists()


def test_two_of_hydras_modes_are_one_line_and_leave_nothing(tmp_path):
    import pytest

    from sweep.errors import UserError
    from sweep.run import check_modes

    for args in (("--multirun", "--cfg=hydra"), ("-m", "--info"), ("-c", "job", "-r")):
        with pytest.raises(UserError, match="cannot be given together"):
            check_modes(list(args))
    check_modes(["--cfg", "job", "data.path=-m"])  # one mode; a value is not a flag
    proc = run_cli(tmp_path, "-m", "--cfg", "job", check=False)
    refused(proc, "-m cannot be given together (Hydra takes one)")
    assert len((proc.stdout + proc.stderr).strip().splitlines()) == 1 and "drop -m" in proc.stderr
    assert tree(tmp_path) == {}
