"""Trial configs derived by value are the configs Hydra composes, key for key."""

import pickle

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from conftest import REPO
from sweep.compose import ComposeCache, value_keys

KEYS = frozenset({"l1_lambda", "optimizer.lr", "hydra.sweep.subdir"})


class Counting:
    """Hydra's own config loader, counting the configs it composes."""

    def __init__(self, loader):
        self.loader, self.composed = loader, 0

    def load_sweep_config(self, master, overrides):
        self.composed += 1
        return self.loader.load_sweep_config(master, overrides)


@pytest.fixture
def hydra_loader():
    with initialize_config_dir(config_dir=str(REPO / "conf"), job_name="t"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration(
            "config", ["hydra.sweeper.n_trials=3", "data=digits"], run_mode=RunMode.MULTIRUN
        )
        yield loader, master


def same(a, b) -> bool:
    return OmegaConf.to_container(a, resolve=False) == OmegaConf.to_container(b, resolve=False)


def trial(i: int, lam: str, *extra: str) -> list[str]:
    return [f"l1_lambda={lam}", "train.epochs=2", *extra, f"hydra.sweep.subdir=trial_{i}"]


def test_derived_configs_equal_hydras_and_are_composed_once(hydra_loader):
    loader, master = hydra_loader
    counting = Counting(loader)
    cache = ComposeCache(counting, KEYS)
    jobs = [trial(0, "1e-05"), trial(1, "0.000316"), trial(2, "0.001", "optimizer.lr=0.05")]
    jobs += [trial(3, "2e-4", "optimizer.lr=0.1")]
    configs = [cache.load_sweep_config(master, job) for job in jobs]
    assert counting.composed == 2  # one per shape: with and without optimizer.lr
    for job, config in zip(jobs, configs):
        assert same(config, loader.load_sweep_config(master, job)), job
    derived = configs[3]
    assert derived.l1_lambda == 2e-4 and derived.optimizer.lr == 0.1
    assert derived.hydra.sweep.subdir == "trial_3"
    assert list(derived.hydra.overrides.task) == jobs[3][:3]
    assert "hydra.sweep.subdir=trial_3" in derived.hydra.overrides.hydra
    assert "hydra.sweep.subdir=trial_2" not in derived.hydra.overrides.hydra


def test_a_launcher_changing_its_config_leaves_the_next_trial_alone(hydra_loader):
    loader, master = hydra_loader
    cache = ComposeCache(loader, KEYS)
    first = cache.load_sweep_config(master, trial(0, "1e-05"))
    first.hydra.job.num = 7  # as BasicLauncher does, with the config it gets
    first.l1_lambda = 5.0
    second = cache.load_sweep_config(master, trial(1, "1e-04"))
    assert OmegaConf.is_missing(second.hydra.job, "num") and second.l1_lambda == 1e-4
    assert same(second, loader.load_sweep_config(master, trial(1, "1e-04")))


def test_other_differences_are_composed_by_hydra(hydra_loader):
    loader, master = hydra_loader
    counting = Counting(loader)
    cache = ComposeCache(counting, KEYS)
    prox = cache.load_sweep_config(master, trial(0, "1e-4", "regularizer=l1_prox"))
    penalty = cache.load_sweep_config(master, trial(1, "1e-4", "regularizer=l1"))
    assert counting.composed == 2  # a config group choice is not a value
    assert prox.regularizer.proximal is True and penalty.regularizer.proximal is False
    # a searched key given twice: Hydra's last-one-wins is Hydra's to apply
    twice = [*trial(2, "1e-4"), "l1_lambda=3e-4"]
    assert cache.load_sweep_config(master, twice).l1_lambda == 3e-4
    assert cache.load_sweep_config(master, twice).l1_lambda == 3e-4
    assert counting.composed == 4


def test_the_cache_travels_to_launcher_workers(hydra_loader):
    loader, master = hydra_loader
    cache = ComposeCache(loader, KEYS)
    cache.load_sweep_config(master, trial(0, "1e-05"))
    copy = pickle.loads(pickle.dumps(cache))  # joblib and submitit pickle the launcher
    assert same(copy.load_sweep_config(master, trial(1, "1e-3")),
                loader.load_sweep_config(master, trial(1, "1e-3")))  # fmt: skip
    assert copy.get_search_path() is not None  # the rest is the wrapped loader's


def test_value_keys_are_the_numeric_searched_keys_and_the_subdir():
    space = {
        "l1_lambda": FloatDistribution(1e-5, 1e-3, log=True),
        "model.width": IntDistribution(16, 256),
        "optimizer.lr": CategoricalDistribution([0.01, 0.1]),
        "regularizer": CategoricalDistribution(["l1", "l1_prox"]),
        "train.shuffle": CategoricalDistribution([True, False]),
        "+optimizer.dampening": FloatDistribution(0.0, 1e-3),
        "++optimizer.momentum": FloatDistribution(0.0, 0.9),
    }
    assert value_keys(space) == {
        "l1_lambda", "model.width", "optimizer.lr", "++optimizer.momentum", "hydra.sweep.subdir"
    }  # fmt: skip


def test_searched_keys_the_trials_add_are_composed_right(hydra_loader):
    loader, master = hydra_loader
    space = {
        "+optimizer.dampening": FloatDistribution(0.0, 1e-3),
        "++optimizer.momentum": FloatDistribution(0.0, 0.9),
    }
    cache = ComposeCache(loader, value_keys(space))
    for i, (decay, momentum) in enumerate([("1e-4", "0.5"), ("2e-4", "0.8"), ("3e-4", "0.1")]):
        job = trial(
            i, "1e-4", f"+optimizer.dampening={decay}", f"++optimizer.momentum={momentum}"
        )
        config = cache.load_sweep_config(master, job)
        assert config.optimizer.dampening == float(decay)
        assert config.optimizer.momentum == float(momentum)
        assert same(config, loader.load_sweep_config(master, job))
