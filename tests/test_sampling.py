"""Which parameters a sweep draws: reproducible from the sampler's seed, different in processes
sharing a study (tests/test_long_sweeps.py starts two at once), and enqueued sets first."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from conftest import run_cli

FAST = ["train.epochs=1", "hydra.sweeper.n_trials=3"]
ENQUEUE = "hydra.sweeper.enqueue=[{l1_lambda:1e-5},{l1_lambda:1e-3}]"


def _params(cwd: Path, name: str) -> list[float]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/outputs/optuna.db")
    return [t.params["l1_lambda"] for t in study.trials]


@pytest.mark.slow
def test_a_study_is_reproducible_from_its_seed(tmp_path):
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    run_cli(tmp_path / "a", "-m", "hydra.sweeper.study_name=s", *FAST)
    run_cli(tmp_path / "b", "-m", "hydra.sweeper.study_name=s", *FAST)
    run_cli(tmp_path / "c", "-m", "hydra.sweeper.study_name=s", "seed=1", *FAST)
    a, b, c = (_params(tmp_path / d, "s") for d in ("a", "b", "c"))
    assert a == b and len(set(a)) == 3
    assert not set(a) & set(c)


def test_enqueued_sets_run_first_and_once(tmp_path):
    run_cli(tmp_path, "-m", "hydra.sweeper.study_name=q", ENQUEUE, *FAST)
    assert _params(tmp_path, "q")[:2] == [1e-5, 1e-3]
    # n_trials is the study's total: one more trial
    run_cli(tmp_path, "-m", "hydra.sweeper.study_name=q", ENQUEUE, "train.epochs=1",
            "hydra.sweeper.n_trials=4")  # fmt: skip
    resumed = _params(tmp_path, "q")
    assert len(resumed) == 4 and resumed[3] not in (1e-5, 1e-3)
