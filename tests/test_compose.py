"""A trial's job config is Hydra's composition, composed once a sweep and copied (issue 33):
the copies equal what Hydra composes for each trial, on the project's own config."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

import sweep.run  # noqa: F401  (the project's config schema and sweeper, as a sweep has them)
from sweep.search.compose import Composer

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def hydra_loader():
    """Hydra's config loader and a sweep's master config (as `python -m sweep.run -m
    train.epochs=1` composes it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            loader = GlobalHydra.instance().config_loader()
            master = loader.load_configuration(
                "config", overrides=["train.epochs=1"], run_mode=RunMode.MULTIRUN
            )
            yield loader, master


def _trial(i: int, *extra: str) -> list[str]:
    return [f"l1_lambda={1e-4 * (i + 1)}", "train.epochs=1", *extra,
            f"hydra.sweep.subdir=trial_{i}"]  # fmt: skip


def _as_hydra(loader, master, overrides) -> dict:
    return OmegaConf.to_container(loader.load_sweep_config(master, overrides), resolve=False)


def test_later_trials_are_copies_equal_to_hydras_composition(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    for i in range(5):
        overrides = _trial(i, f"seed={i}", f"train.fast={i % 2 == 0}", "optimizer.lr=0.05")
        got = composer.config(overrides)
        assert OmegaConf.to_container(got, resolve=False) == _as_hydra(loader, master, overrides)
        assert got.seed == i and got.hydra.sweep.subdir == f"trial_{i}"
        assert list(got.hydra.overrides.task) == overrides[:-1]
    # the first composed as the template, the second composed too to check the copy
    assert composer.composed == 2 and composer.checked is True


def test_a_config_groups_choice_is_composed_by_hydra_every_time(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    for i, model in enumerate(("mlp", "linear", "mlp")):
        overrides = _trial(i, f"model={model}")
        got = composer.config(overrides)
        assert OmegaConf.to_container(got, resolve=False) == _as_hydra(loader, master, overrides)
    assert composer.composed == 3


def test_a_copy_that_differs_from_hydras_turns_copying_off_in_one_line(hydra_loader, caplog):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    composer.config(_trial(0))
    composer.template.seed = 99  # as if Hydra's composition did more than set the values
    with caplog.at_level(logging.INFO, logger="sweep.search.compose"):
        second = composer.config(_trial(1))
        third = composer.config(_trial(2))
    assert composer.checked is False and second.seed == third.seed == master.seed
    assert [r.getMessage() for r in caplog.records] == [
        "job configs: a copy with the trial's values differs from Hydra's composition here; "
        "every trial's config is composed by Hydra"
    ]
    assert composer.composed == 3


def test_other_keys_make_a_new_template(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    composer.config(_trial(0))
    composer.config(_trial(1))  # checked
    got = composer.config(_trial(2, "seed=7"))  # other keys: Hydra composes, a new template
    assert got.seed == 7 and composer.composed == 3
    copied = composer.config(_trial(3, "seed=8"))
    assert copied.seed == 8 and composer.composed == 3
    assert OmegaConf.to_container(copied, resolve=False) == _as_hydra(
        loader, master, _trial(3, "seed=8")
    )
