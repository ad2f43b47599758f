"""A user's own model, from their own package and config directory, as the docs show it."""

import json

import pandas as pd
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from conftest import run_cli
from sweep.errors import UserError
from sweep.sparsity.regularizers import Regularizer
from sweep.training.train import build

PACKAGE = '''
import torch
import torch.nn as nn


def tiny(n_inputs, n_classes, width):
    """A factory: takes what it needs of n_inputs / n_classes / input_shape."""
    return nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, width), nn.Tanh(),
                         nn.Linear(width, n_classes))


class Dense(nn.Module):
    """A layer type of the user's own, with a weight: counted only if named."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) * 0.1)

    def forward(self, x):
        return x @ self.weight.T


class Net(nn.Module):
    """An nn.Module class taking only (n_inputs, n_classes)."""

    def __init__(self, n_inputs, n_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), Dense(n_inputs, 32), nn.ReLU())
        self.head = nn.Linear(32, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


def wrong(n_inputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, 3))


def notmodel(n_inputs, n_classes):
    return [n_inputs, n_classes]


def space(cfg, trial):
    """hydra.sweeper.custom_search_space: adds the learning rate to the search."""
    trial.suggest_float("optimizer.lr", 0.01, 0.02)
'''


@pytest.fixture
def user(tmp_path):
    """tmp_path holds mypkg/ and myconf/model/*.yaml, as a user's project would."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(PACKAGE)
    models = tmp_path / "myconf" / "model"
    models.mkdir(parents=True)
    (models / "tiny.yaml").write_text("_target_: mypkg.tiny\nwidth: 16\n")
    (models / "net.yaml").write_text("_target_: mypkg.Net\n")
    (models / "wrong.yaml").write_text("_target_: mypkg.wrong\n")
    (models / "notmodel.yaml").write_text("_target_: mypkg.notmodel\n")
    return tmp_path


def test_outside_model_is_refused_with_how_to_allow_it(user):
    proc = run_cli(user, "--config-dir", "myconf", "model=tiny", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert (
        "model._target_=mypkg.tiny is code outside l1sweep, which runs only if you allow it: "
        "add allow_targets=[mypkg.*] to the command line or to your config"
    ) in out
    assert not list((user / "outputs").glob("**/metrics.json"))


def test_allowed_user_model_sweeps_from_its_config_dir(user):
    proc = run_cli(
        user, "-m", "--config-dir", "myconf", "model=tiny", "allow_targets=[mypkg.*]",
        "train.epochs=3", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=own",
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "model: running outside code mypkg.tiny (allowed by allow_targets=['mypkg.*'])" in out
    df = pd.read_csv(user / "outputs" / "sweeps" / "own" / "results.csv")
    assert (df["model"] == "tiny").all() and (df["status"] == "complete").all()
    # digits: 64 inputs -> 16 -> 10, every parameter counted (regularizer.params=all)
    assert (df["n_params"] == 64 * 16 + 16 + 16 * 10 + 10).all()
    assert (df["val_acc"] > 0.1).all()


def test_module_class_with_own_layer_and_the_counting_rule(user):
    # allowed from the user's own config directory instead of the command line
    (user / "myconf" / "mine.yaml").write_text(
        "defaults:\n  - config\n  - _self_\nallow_targets: [mypkg.Net, mypkg.Dense]\n"
    )
    args = ["--config-dir", "myconf", "--config-name", "mine", "model=net", "train.epochs=2"]
    run_cli(user, *args, "regularizer.params=weights", "hydra.run.dir=outputs/w")
    run_cli(user, *args, "regularizer.params=[Dense,Linear]", "hydra.run.dir=outputs/d")
    weights = json.loads((user / "outputs" / "w" / "metrics.json").read_text())
    dense = json.loads((user / "outputs" / "d" / "metrics.json").read_text())
    assert weights["n_params"] == 32 * 10 and weights["sparsity_params"] == "weights"
    assert dense["n_params"] == 64 * 32 + 32 * 10 and dense["sparsity_params"] == "Dense,Linear"
    layers = pd.read_csv(user / "outputs" / "d" / "layers.csv")
    assert layers["layer"].tolist() == ["body.1.weight", "head.weight"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["model=wrong"], "model returns (2, 3) for a batch of 2; it must return logits of "
                          "shape (batch, n_classes) = (2, 10)"),
        (["model=notmodel"], "model._target_=mypkg.notmodel returned a list, not a "
                             "torch.nn.Module"),
        (["model=tiny", "+model.depth=2"], "model: mypkg.tiny(n_inputs, n_classes, width) "
                                           "cannot take its arguments"),
        (["model=tiny", "model._target_=mypkg.nothere"],
         "model._target_=mypkg.nothere cannot be imported"),
        (["model=net", "regularizer.params=[Conv2d]"],
         "regularizer.params=Conv2d selects no parameter of this model"),
        (["model=net", "allow_targets=[*]"], "allow_targets entries name a module or a target"),
    ],
)  # fmt: skip
def test_contract_errors_are_one_line(user, args, message):
    proc = run_cli(user, "--config-dir", "myconf", "allow_targets=[mypkg.*]", *args,
                   "train.epochs=1", check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert message in out


def test_nested_outside_target_is_refused_before_import():
    cfg = OmegaConf.create(
        {"allow_targets": [], "model": {"_target_": "torch.nn.Sequential",
                                        "_args_": [{"_target_": "evil.layer"}]}}
    )  # fmt: skip
    # the nested node's whole key, though Hydra is given a copy (omegaconf 2.4.1rc2 writes a
    # list index as _args_[0], rc1 as _args_0)
    with pytest.raises(UserError, match=r"^model\._args_\[?0\]?\._target_=evil\.layer is code"):
        build(cfg.model)


def test_counting_rule_on_any_module():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5),
    )  # fmt: skip
    model(torch.zeros(1, 1, 6, 6))  # materialize the lazy layer: 4*4*4 inputs
    emb = nn.Embedding(7, 3)
    both = nn.ModuleDict({"net": model, "emb": emb})
    weights = Regularizer(1e-4, 0.0, True, "weights").select(both)
    assert [p.shape for p in weights] == [(4, 1, 3, 3), (5, 64)]  # not BN, not the embedding
    assert len(Regularizer(1e-4, 0.0, True, "all").select(both)) == 7
    assert Regularizer(1e-4, 0.0, True, ["Embedding"]).select(both) == [emb.weight]
    with pytest.raises(UserError, match="lists layer class names"):
        Regularizer(1e-4, 0.0, True, ["not a name"])


def test_a_custom_search_space_is_outside_code_run_only_if_allowed(user):
    args = ["-m", "hydra.sweeper.custom_search_space=mypkg.space", "train.epochs=1",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=cs"]  # fmt: skip
    refused = run_cli(user, *args, check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "Traceback" not in out, out
    [line] = [ln for ln in out.splitlines() if "error:" in ln]
    assert line.endswith(
        "error: hydra.sweeper.custom_search_space=mypkg.space is code outside l1sweep, which "
        "runs only if you allow it: add allow_targets=[mypkg.*] to the command line or to your "
        "config (see docs/own_model_and_data.md)"
    )
    assert not (user / "outputs" / "sweeps" / "cs").exists()
    proc = run_cli(user, *args, "allow_targets=[mypkg.*]")
    out = proc.stdout + proc.stderr
    assert (
        "hydra.sweeper.custom_search_space: running outside code mypkg.space "
        "(allowed by allow_targets=['mypkg.*'])"
    ) in out
    df = pd.read_csv(user / "outputs" / "sweeps" / "cs" / "results.csv")
    lrs = df["overrides"].str.extract(r"optimizer\.lr=([0-9.e-]+)")[0].astype(float)
    assert len(df) == 2 and lrs.between(0.01, 0.02).all()
