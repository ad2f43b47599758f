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


@pytest.mark.parametrize(
    ("setting", "jobs", "liar"),
    [(None, 2, True), (None, 1, False), ("false", 2, False), ("true", 1, True), ("file", 2, False)],
)
def test_constant_liar_is_on_for_parallel_trials_unless_the_user_set_it(
    tmp_path, setting, jobs, liar
):
    from hydra import compose, initialize_config_dir

    from sweep.search import sampling

    conf = Path(__file__).resolve().parents[1] / "conf"
    # a primary config of the user's own that sets it false (a file, not the command line)
    (tmp_path / "mine.yaml").write_text(
        f"defaults:\n  - config\n  - _self_\nhydra:\n  searchpath: [file://{conf}]\n"
        "  sweeper:\n    sampler:\n      constant_liar: false\n"
    )
    given = [] if setting in (None, "file") else [f"hydra.sweeper.sampler.constant_liar={setting}"]
    where, name = (tmp_path, "mine") if setting == "file" else (conf, "config")
    with initialize_config_dir(str(where), version_base=None):
        cfg = compose(name, overrides=given, return_hydra_config=True)
    made = sampling.make_sampler(cfg.hydra.sweeper.sampler)
    chosen = sampling.for_study(made, cfg, {}, jobs)
    # Optuna keeps the option as _constant_liar (no public getter); the value TPE runs with
    assert chosen.sampler._constant_liar is liar
