"""The hand-written MLP step (sweep/training/fastmlp.py) against autograd, and fit with it on and
off.

It calls the kernels autograd calls, with the same operand layouts, so on CPU the checks are
exact (rtol=0, atol=0), which is stronger than the float tolerance the step was asked for.
"""

import json
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import run_cli
from sweep.data.datasets import load_digits
from sweep.models.builtin import lenet5, mlp
from sweep.sparsity import pruning
from sweep.sparsity.pruning import Pruner
from sweep.sparsity.regularizers import Regularizer
from sweep.training.fastmlp import FastMLP, unsupported
from sweep.training.train import fit, flatten_parameters, training_step

EXACT = {"rtol": 0, "atol": 0}


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)


def pair(hidden: list[int]) -> tuple[nn.Module, torch.Tensor, nn.Module, torch.Tensor]:
    """Two identical mlps on digits, each with its flat gradient buffer as fit makes it."""
    out = []
    for _ in range(2):
        torch.manual_seed(0)
        model = mlp(64, 10, hidden)
        out += [model, flatten_parameters(model, list(model.parameters()))[1]]
    return tuple(out)


@pytest.mark.parametrize("hidden", [[128], [300, 100], []], ids=["simple_net", "300-100", "linear"])
def test_the_fast_step_gives_autograds_loss_and_gradients(digits, hidden):
    ref, ref_grad, model, grad = pair(hidden)
    fast = FastMLP(model)
    # a full batch and the ragged last one (1149 = 17 * 64 + 61), after a few steps so that
    # some ReLUs are off and the weights are not the initial ones
    for start, stop in ((0, 64), (64, 128), (128, 192), (1088, 1149)):
        x, y = digits.x_train[start:stop], digits.y_train[start:stop]
        expected = F.cross_entropy(ref(x), y)
        ref_grad.zero_()
        expected.backward()
        torch.testing.assert_close(fast.step(x, y), expected.detach(), **EXACT)
        torch.testing.assert_close(grad, ref_grad, **EXACT)
        for net in (ref, model):
            with torch.no_grad():
                for p in net.parameters():
                    p.sub_(0.5 * p.grad)  # big steps: the next batch sees new weights


def train(digits, reg, make_opt, fast: bool, hidden=(32,), schedule=None, keep=None):
    torch.manual_seed(0)
    model = mlp(64, 10, list(hidden))
    opt = make_opt(model.parameters())
    result = fit(model, digits, reg, opt, epochs=4, batch_size=64, seed=0, log_every=4,
                 schedule=schedule, keep=keep, fast=fast)  # fmt: skip
    return result, [p.detach().clone() for p in model.parameters()]


def cosine(opt, steps):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)


@pytest.mark.parametrize(
    "reg,make_opt,schedule",
    [
        (Regularizer(1e-3, 0.0, True, "all"),
         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), None),
        (Regularizer(1e-3, 1e-3, True, "weights"),
         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
         cosine),
        (Regularizer(3e-4, 0.0, False, "all"), lambda p: torch.optim.SGD(p, lr=0.01), None),
        (Regularizer(0.0, 1e-3, False, "weights"), lambda p: torch.optim.Adam(p, lr=1e-3), None),
        (Regularizer(1e-3, 0.0, True, "weights"),
         lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4), cosine),
        (Regularizer(0.0, 0.0, False, "all"), lambda p: torch.optim.AdamW(p, lr=1e-3), None),
    ],
    ids=["l1_prox-momentum", "elastic_net_prox-nesterov-wd-cosine", "l1-penalty-sgd", "l2-adam",
         "l1_prox-adam-wd-cosine", "none-adamw"],
)  # fmt: skip
def test_fit_trains_the_same_weights_with_the_fast_step_on_or_off(digits, reg, make_opt, schedule):
    (on, w_on), (off, w_off) = (train(digits, reg, make_opt, f, schedule=schedule)
                                for f in (True, False))  # fmt: skip
    assert on == off  # loss, status, validation accuracy
    for a, b in zip(w_on, w_off):
        torch.testing.assert_close(a, b, **EXACT)


def test_a_pruning_mask_holds_on_the_fast_path(digits):
    make_opt = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3)  # noqa: E731
    reg = Regularizer(0.0, 0.0, False, "weights")
    torch.manual_seed(0)
    keep = Pruner("magnitude", sparsity=0.8).keep(torch.randn(64 * 32 + 32 * 10), [2048, 320], 0.8)
    runs = [train(digits, reg, make_opt, fast, hidden=[32], keep=keep) for fast in (True, False)]
    (on, w_on), (off, w_off) = runs
    w = pruning.flat([w_on[0], w_on[2]])  # the regularized tensors: fc1's and fc2's weights
    assert on == off and on["val_acc"] > 0.25  # it learns (chance: 0.1) in 4 short epochs
    assert torch.equal(w != 0, keep)  # every pruned weight exactly zero, every kept one alive
    for a, b in zip(w_on, w_off):
        torch.testing.assert_close(a, b, **EXACT)


def test_other_models_keep_autograd_and_the_log_says_why(digits, caplog):
    torch.manual_seed(0)
    model = lenet5(784, 10, (28, 28))
    grad = flatten_parameters(model, list(model.parameters()))[1]
    with caplog.at_level(logging.INFO, logger="sweep.training.train"):
        step = training_step(model, grad)
    assert step.__name__ == "autograd_step"
    assert "fast MLP path off: its layers (Unflatten, Conv2d, ReLU" in caplog.text
    caplog.clear()
    model = mlp(64, 10, [32])
    grad = flatten_parameters(model, list(model.parameters()))[1]
    with caplog.at_level(logging.INFO, logger="sweep.training.train"):
        assert training_step(model, grad, fast=False).__name__ == "autograd_step"
        assert training_step(model, grad).__self__.__class__ is FastMLP
    assert caplog.messages == ["fast MLP path off: train.fast=false"]


def test_unsupported_names_what_the_fast_step_cannot_compute():
    assert unsupported(mlp(64, 10, [128])) is None
    assert unsupported(mlp(64, 10, [])) is None
    assert unsupported(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))) is None

    class Custom(nn.Sequential):
        pass

    assert "a Custom, not" in unsupported(Custom(nn.Linear(4, 2)))
    assert "not Linear, ReLU" in unsupported(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)))
    tanh = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    assert "not Linear, ReLU" in unsupported(tanh)
    assert "not Linear, ReLU" in unsupported(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
    assert "no bias" in unsupported(nn.Sequential(nn.Linear(4, 2, bias=False)))
    assert "Flatten" in unsupported(nn.Sequential(nn.Flatten(2), nn.Linear(4, 2)))
    hooked = mlp(64, 10, [32])
    hooked.fc1.register_forward_hook(lambda *_: None)
    assert "hook" in unsupported(hooked)
    frozen = mlp(64, 10, [32])
    frozen.fc1.bias.requires_grad_(False)
    assert "frozen" in unsupported(frozen)
    with pytest.raises(ValueError, match="FastMLP cannot train this model: the model is a Linear"):
        FastMLP(nn.Linear(4, 2))


def test_train_fast_false_runs_autograd_and_gives_the_same_row(tmp_path):
    rows = []
    for fast in ("true", "false"):
        proc = run_cli(
            tmp_path, "train.epochs=3", f"train.fast={fast}", f"hydra.run.dir=run_{fast}"
        )
        assert ("fast MLP path off: train.fast=false" in proc.stderr + proc.stdout) == (
            fast == "false"
        )
        rows.append(json.loads((tmp_path / f"run_{fast}" / "metrics.json").read_text()))
    for row in rows:
        del row["train_seconds"]
    assert rows[0] == rows[1]


def test_a_train_fast_that_is_not_a_boolean_is_refused(tmp_path):
    proc = run_cli(tmp_path, "train.fast=maybe", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "train.fast" in out and "Traceback" not in out, out
