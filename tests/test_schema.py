"""Every key checked by the schema (sweep/config/schema.py): plausible mistakes, one at a time, as a
user makes them on the command line. Each must end in one clear line and exit code 2, never a
traceback, a silent exit 0 or a sweep that spins, and write nothing."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
from omegaconf import OmegaConf

from conftest import run_cli
from sweep.config import schema
from sweep.errors import UserError

TYPE = "Fix it; `python -m sweep.run --cfg job` prints every key and value"

MISTAKES = [
    # top level
    (["seed=abc"], "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["seed=-1"], "seed must be an integer in [0, 2**32), got -1"),
    (["l1_lambda=-1e-4"], "l1_lambda must be >= 0, got -0.0001"),
    (["l1_lambda=abc"], "l1_lambda=abc: Value 'abc' of type 'str' could not be converted to Float"),
    (["l2_lambda=-1"], "l2_lambda must be >= 0"),  # even where the regularizer ignores it
    (["l1_lambda=-1", "regularizer=none"], "l1_lambda must be >= 0"),
    (["sparsity.tol=-1"], "sparsity.tol must be >= 0"),
    (["device=gpu"], "device=gpu is not usable here"),
    (["train.epochs=0"], "train.epochs must be an integer >= 1, got 0"),
    (["train.batch_size=0"], "train.batch_size must be an integer >= 1"),
    (["train.log_every=0"], "train.log_every must be an integer >= 1"),
    (["train.threads=-2"], "train.threads must be an integer >= 1, got -2"),
    (["train.epoch=3"], "Key 'epoch' not in 'TrainConfig'. Did you mean: 'epochs'?"),
    # groups
    (["model=resnet9"], "Could not find 'model/resnet9'. Available options in 'model': lenet5"),
    (["model=resnet", "model.depth=21"], "model.depth must be 6n + 2 with n >= 1"),
    (["model.hidden=[0]"], "model.hidden must be a list of integers >= 1"),
    (["model.hidden=abc"], "model.hidden=abc: Invalid value assigned: str is not a ListConfig"),
    (["data.val_fraction=1.5"], "data.val_fraction must be in (0, 1), got 1.5"),
    (["data.test_fraction=0"], "data.test_fraction must be in (0, 1), got 0"),
    (["data=mnist", "data.root=nowhere"], "or use data=digits or data=fashion_mnist"),
    (["regularizer.params=bias"], "regularizer.params must be all, weights or a list of layer"),
    (["regularizer.params=[]"], "regularizer.params must be all, weights or a list of layer"),
    (["data=csv", "data.standardize=maybe"], "Value 'maybe' is not a valid bool"),
    (["data=npz", "data.test_fraction=1"], "data.test_fraction must be in (0, 1), got 1"),
    (["data=csv", "data.features=a"], "data.features=a: Invalid value assigned: str is not a"),
    (["data=torchvision", "data.options=3"], "data.options=3"),
    (["allow_targets=mypkg.*"], "allow_targets=mypkg.*: Invalid value assigned: str is not a"),
    (["regularizer.proximal=maybe"], "Value 'maybe' is not a valid bool"),
    (["optimizer.lr=abc"], "optimizer.lr=abc: Value 'abc' of type 'str' could not be converted"),
    (["optimizer.lr=-1"], "optimizer.lr must be > 0, got -1.0"),
    (["optimizer.momentum=-0.5"], "optimizer.momentum must be >= 0, got -0.5"),
    (["schedule=cosine", "schedule.eta_min=-1"], "schedule.eta_min must be >= 0"),
    (["prune=magnitude", "prune.sparsity=1.5"], "prune.sparsity must be in [0, 1), got 1.5"),
    (["prune=magnitude", "prune.rounds=0"], "prune.rounds must be an integer >= 1, got 0"),
    (["prune.scope=local"], "prune.scope must be one of global, layer, got 'local'"),
    (["objective.direction=[up]"], "objective.direction entries must be one of maximize"),
    (["objective=within_drop", "objective.max_drop=2"], "objective.max_drop must be in [0, 1)"),
    (["experiment=fashion_frontier", "train.epochs=-3"], "train.epochs must be an integer >= 1"),
    (["recipe=fullbatch"], "Could not find 'recipe/fullbatch'. Available options in 'recipe'"),
    # data files the test writes (write_files): values that are not finite
    (["data=csv", "data.path=inf.csv", "data.target=y"],
     "inf.csv: the data holds inf values in 1 rows"),
    (["data=npz", "data.path=nan.npz"], "nan.npz: the data holds NaN values in 1 rows"),
]  # fmt: skip

SWEEP_MISTAKES = [
    (["hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs must be auto or an integer >= 1, got 0"),
    (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials must be an integer >= 1, got 0"),
    (["hydra.sweeper.n_jobs=abc"],
     "hydra.sweeper.n_jobs must be auto or an integer >= 1, got 'abc'"),
    (["hydra/launcher=slurm"], "hydra.sweeper.n_jobs=auto chooses for this machine; on a cluster"),
    (["hydra.sweeper.max_failure_rate=2"], "hydra.sweeper.max_failure_rate must be in [0, 1]"),
    (["hydra.sweeper.sampler.seed=abc"], "Value 'abc' of type 'str' could not be converted"),
    (["hydra/sweeper/pruner=median", "objective=pareto"],
     "Optuna's pruners need a single objective, and objective.metrics has 2 (val_acc, sparsity)"),
    (["hydra/sweeper/pruner=front"],
     "hydra/sweeper/pruner=front stops trials dominated by a front of several objectives, and "
     "objective.metrics has one (val_acc): use hydra/sweeper/pruner=median, successive_halving"),
    (["hydra/sweeper/pruner=front", "objective=pareto", "hydra.sweeper.pruner.margin=-1"],
     "hydra.sweeper.pruner.margin must be >= 0, got -1"),
    (["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.interval_steps=0"],
     "hydra.sweeper.pruner.interval_steps must be an integer >= 1, got 0"),
    (["hydra/sweeper/pruner=hyperband", "hydra.sweeper.pruner.max_resource=abc"],
     "hydra.sweeper.pruner: "),
    (["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trial=3"],
     "Key 'n_startup_trial' not in 'MedianPrunerConfig'"),
    (["hydra.sweeper.enqueue=[{l1_lambda:1}]"], "hydra.sweeper.enqueue: l1_lambda=1 is outside"),
    (["hydra.sweeper.enqueue=[{lr:0.1}]"], "hydra.sweeper.enqueue: lr is not searched"),
    (["hydra.sweeper.stale_after=0"], "hydra.sweeper.stale_after must be > 0"),
    (["model.hidden=[0]"], "model.hidden must be a list of integers >= 1"),
    (["seed=-1"], "cannot make the sampler: Seed must be between 0 and 2**32 - 1; check"),
    (["seed=abc"], "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["device=gpu"], "device=gpu is not usable here"),
    (["l1_lambda=-1e-4"], "l1_lambda must be >= 0"),
    (["l1_lambda=tag(log, interval(0, 1e-3))"], "bad search space"),
    (["l1_lambda=interval(-1e-3, 1e-3)"], "must lie in (0, inf)"),
    (["hydra/sweeper/sampler=grid"], "with the grid sampler"),
    (["data=mnist", "data.root=missing_dir"], "not found in"),
    (["hydra.sweeper.storage=postgresql+psycopg://nobody@127.0.0.1:9/none"],
     "cannot open the Optuna storage"),
    (["hydra.sweeper.storage=sqlite:////proc/no/such.db"], "cannot open the Optuna storage"),
    (["hydra.sweeper.storage=nosuchdb://x"], "cannot open the Optuna storage"),
    (["hydra.sweeper.storage_wait=-1"], "hydra.sweeper.storage_wait must be >= 0, got -1"),
    # every configuration the search can choose must have every searched key
    (["optimizer=choice(sgd,adam)", "optimizer.momentum=interval(0.0,0.9)"],
     "optimizer.momentum is searched, but optimizer=adam has no optimizer.momentum"),
    (["optimizer=adam", "optimizer.momentum=interval(0.0,0.9)"],
     "optimizer.momentum is searched, but the configuration has no optimizer.momentum"),
    (["optimizer=choice(sgd,nosuch)"], "searched optimizer=nosuch: "),
    (["l1_lambda=glob(*)"], "glob(...) chooses among a config group's options"),
    (["optimizer=glob(zz*)"], "optimizer=glob(zz*) matches none of optimizer's options"),
    # one direction per metric, checked before the study is made
    (["objective.metrics=[val_acc,sparsity]"],
     "objective.metrics has 2 (val_acc, sparsity) but objective.direction has 1 (maximize)"),
    (["objective=pareto", "objective.direction=[maximize]"],
     "objective.metrics has 2 (val_acc, sparsity) but objective.direction has 1 (maximize)"),
    (["objective=pareto", "hydra/sweeper/sampler=motpe"],
     "Optuna removed MOTPESampler in version 4.0; TPESampler handles several objectives: use "
     "hydra/sweeper/sampler=tpe"),
    # outside code, the whole line (it used to be cut off)
    (["hydra.sweeper.custom_search_space=os.getcwd"],
     "hydra.sweeper.custom_search_space=os.getcwd is code outside l1sweep, which runs only if "
     "you allow it: add allow_targets=[os.*] to the command line or to your config (see "
     "docs/own_model_and_data.md)"),
    # Optuna's samplers that need a package it does not install (on a fresh install)
    *[([f"hydra/sweeper/sampler={option}"], f"pip install {package}")
      for option, package in (("cmaes", "cmaes"), ("qmc", "scipy"), ("gp", "scipy"))
      if importlib.util.find_spec(package) is None],
    (["data=csv", "data.path=inf.csv", "data.target=y"], "the data holds inf values in 1 rows"),
    # a comma makes a sweep list under -m: a key that needs one value says so, and how to quote
    (["data=csv", "data.path=a,b.csv", "data.target=y"],
     "data.path=a,b.csv is a sweep list of 2 values"),
    (["data=csv", "data.path=t.csv", "data.target=y,z"], "data.target=y,z is a sweep list"),
    (["data=torchvision", "data.dataset=KMNIST,MNIST"],
     "data.dataset=KMNIST,MNIST is a sweep list of 2 values"),
    (["data=npz", "data.path=choice(nan.npz,t.npz)"], "is a search space, but data.path must"),
]  # fmt: skip


def write_files(cwd) -> None:
    """The data files the rows above name: a clean table (t.csv, and a,b.csv), one with an
    inf cell (inf.csv), arrays with a NaN (nan.npz)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(40, 2)), columns=["a", "b"]).assign(y=np.arange(40) % 2)
    for name in ("t.csv", "a,b.csv"):
        table.to_csv(cwd / name, index=False)
    table.loc[7, "b"] = np.inf
    table.to_csv(cwd / "inf.csv", index=False)
    x = rng.normal(size=(40, 3))
    x[11, 0] = np.nan
    np.savez(cwd / "nan.npz", x=x, y=np.arange(40) % 2)


def _one_line_exit_2(proc, message: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if "error:" in ln]
    assert len(errors) == 1 and message in errors[0], out


@pytest.mark.parametrize("args,message", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_a_mistaken_key_is_one_line_and_exit_2(tmp_path, args, message):
    write_files(tmp_path)
    proc = run_cli(tmp_path, *args, "hydra.run.dir=out", check=False)
    _one_line_exit_2(proc, message)
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize(
    "args,message", SWEEP_MISTAKES, ids=[" ".join(a) for a, _ in SWEEP_MISTAKES]
)
def test_a_mistaken_sweep_stops_before_any_trial(tmp_path, args, message):
    # run_cli's timeout would fail a sweep that spins (n_jobs=0 used to loop for ever)
    write_files(tmp_path)
    proc = run_cli(tmp_path, "-m", "hydra.sweeper.study_name=b", "train.epochs=1", *args,
                   check=False)  # fmt: skip
    _one_line_exit_2(proc, message)
    assert "trial 0" not in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("outputs/sweeps/*/trial_*"))


def test_a_type_error_names_the_fix_and_a_user_full_error_keeps_the_trace(tmp_path):
    proc = run_cli(tmp_path, "seed=abc", check=False)
    assert TYPE in proc.stderr
    full = run_cli(tmp_path, "seed=abc", check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr


def test_every_group_option_has_a_schema():
    """Each conf/<group>/<option>.yaml composes onto a schema dataclass, so a new option without
    one (or a new group) fails here rather than going unchecked."""
    from hydra import compose, initialize_config_dir

    from conftest import REPO

    groups = [d for d in (REPO / "conf").iterdir() if d.is_dir() and d.name != "hydra"]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        for group in groups:
            for option in sorted(group.glob("*.yaml")):
                cfg = compose("config", overrides=[f"{group.name}={option.stem}"])
                # experiment and recipe options are global presets: the root's schema; a
                # callbacks option is a mapping of _target_s (the root's `callbacks` field),
                # each checked when job.callbacks builds it
                node = (
                    cfg
                    if group.name in ("experiment", "recipe", "callbacks", "logger")
                    else cfg[group.name]
                )
                kind = OmegaConf.get_type(node)
                assert dataclasses.is_dataclass(kind), f"{group.name}={option.stem}: {kind}"
        for option in sorted((REPO / "conf" / "hydra" / "sweeper" / "pruner").glob("*.yaml")):
            over = [f"hydra/sweeper/pruner={option.stem}"]
            cfg = compose("config", overrides=over, return_hydra_config=True)
            kind = OmegaConf.get_type(cfg.hydra.sweeper.pruner)
            assert dataclasses.is_dataclass(kind), f"{over}: {kind}"


def test_rules_reject_what_they_say_and_accept_the_defaults():
    cfg = OmegaConf.structured(schema.TrainConfig(epochs=3, batch_size=64, threads=None,
                                                  log_every=1))  # fmt: skip
    schema.check(cfg, "train.")  # None is allowed where the type is Optional
    cfg.threads = 0
    with pytest.raises(UserError, match=r"^train.threads must be an integer >= 1, got 0$"):
        schema.check(cfg, "train.")
    for rule, good, bad in [
        (schema.FRACTION, 0.5, 1.0), (schema.SPARSITY, 0.0, 1.0), (schema.POSITIVE, 1e-9, 0.0),
        (schema.NONNEGATIVE, 0.0, float("nan")), (schema.WIDTHS, [1, 300], [300, 0]),
    ]:  # fmt: skip
        assert rule.test(good) and not rule.test(bad), rule.text
