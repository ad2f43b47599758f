"""The flat SGD step (sweep/training/fastsgd.py) against torch.optim.SGD's own step, inside fit.

The reference is a subclass of torch.optim.SGD that adds nothing: fit steps it with torch's own
`step` (the flat step takes exactly torch.optim.SGD), so each pair of runs differs only in who
does the update. The checks are exact (torch.equal): weights, momentum buffers, fit's result.
"""

import itertools
import logging
import warnings

import pytest
import torch

from sweep.data.datasets import load_digits
from sweep.models.builtin import mlp
from sweep.sparsity import pruning
from sweep.sparsity.pruning import Pruner
from sweep.sparsity.regularizers import Regularizer
from sweep.training import fastsgd
from sweep.training.train import fit, flatten_parameters


class TorchSGD(torch.optim.SGD):
    """torch.optim.SGD, stepped by torch: fit leaves a subclass to its own step."""


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)


def cosine(opt, steps):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)


# 300-100 on digits: 50,710 parameters, more than one thread's share of an elementwise kernel
# (32,768), so with 2 threads the flat step's split and vector tails differ from the tensors'.
HIDDEN = [300, 100]


def train(digits, cls, options, reg, schedule=None, keep=None, epochs=3, opt=None, model=None,
          lr=0.05):  # fmt: skip
    if model is None:
        torch.manual_seed(0)
        model = mlp(64, 10, HIDDEN)
    opt = opt or cls(model.parameters(), lr=lr, **options)
    result = fit(model, digits, reg, opt, epochs=epochs, batch_size=64, seed=0, log_every=epochs,
                 schedule=schedule, keep=keep)  # fmt: skip
    return result, model, opt


def assert_same(a, b):
    (r_a, m_a, o_a), (r_b, m_b, o_b) = a, b
    assert r_a == r_b  # loss, status, validation accuracy
    for p, q in zip(m_a.parameters(), m_b.parameters()):
        assert torch.equal(p, q)
    assert len(o_a.state) == len(o_b.state)  # no momentum: no state at all, as torch
    for p, q in zip(m_a.parameters(), m_b.parameters()):
        assert o_a.state[p].keys() == o_b.state[q].keys()
        if "momentum_buffer" in o_b.state[q]:
            assert torch.equal(o_a.state[p]["momentum_buffer"], o_b.state[q]["momentum_buffer"])


OPTIONS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n, wd, mx in itertools.product(
        (0.0, 0.9), (0.0, 0.1), (False, True), (0.0, 1e-3), (False, True)
    )  # fmt: skip
    if not n or (m > 0 and d == 0)  # torch refuses nesterov otherwise
]


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
def test_the_flat_step_trains_torchs_weights_and_momentum_bit_for_bit(digits, options):
    reg = Regularizer(1e-3, 0.0, True, "weights")  # the weights first in the buffer
    torch.manual_seed(1)
    keep = Pruner("magnitude", sparsity=0.5).keep(torch.randn(64 * 300 + 300 * 100 + 1000),
                                                  [19200, 30000, 1000], 0.5)  # fmt: skip
    lr = 0.05
    if options["maximize"]:  # ascent on the loss: slowly, so that it stays finite
        reg, lr = Regularizer(0.0, 0.0, False, "weights"), 1e-3
    for schedule, mask in itertools.product((None, cosine), (None, keep)):
        runs = [
            train(digits, cls, options, reg, schedule, mask, lr=lr)
            for cls in (torch.optim.SGD, TorchSGD)
        ]
        assert_same(*runs)
        assert runs[0][0]["status"] == "complete"  # finite: NaNs would compare unequal anyway
        if mask is not None:
            assert not pruning.flat(reg.select(runs[0][1]))[~mask].any()  # the mask held


@pytest.mark.parametrize("threads", [1, 2])
def test_bit_for_bit_with_one_and_two_threads(digits, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        options = dict(momentum=0.9, dampening=0.1, weight_decay=1e-3)
        reg = Regularizer(1e-4, 1e-4, False, "all")
        assert_same(
            *(train(digits, cls, options, reg, cosine) for cls in (torch.optim.SGD, TorchSGD))
        )
    finally:
        torch.set_num_threads(before)


def test_state_dict_and_a_second_fit_carry_the_momentum_on_as_torch(digits):
    reg = Regularizer(1e-3, 0.0, True, "weights")
    runs = []
    for cls in (torch.optim.SGD, TorchSGD):
        result, model, opt = train(digits, cls, dict(momentum=0.9, nesterov=True), reg, epochs=2)
        state = opt.state_dict()["state"]
        runs.append(train(digits, cls, {}, reg, epochs=2, opt=opt, model=model) + (state,))
    (*fast, s_fast), (*ref, s_ref) = runs
    assert_same(fast, ref)
    assert s_fast.keys() == s_ref.keys() == set(range(6))
    for i in s_ref:
        assert torch.equal(s_fast[i]["momentum_buffer"], s_ref[i]["momentum_buffer"])


def test_the_scheduler_sees_the_step_run_first(digits):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(digits, torch.optim.SGD, {}, Regularizer(0.0, 0.0, False, "all"), cosine, epochs=1)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


@pytest.mark.parametrize(
    "make_opt,why",
    [
        (lambda p: torch.optim.Adam(p, lr=1e-3), "the optimizer is Adam, not torch.optim.SGD"),
        (lambda p: TorchSGD(p, lr=0.05, momentum=0.9), "the optimizer is TorchSGD"),
    ],
    ids=["adam", "sgd-subclass"],
)
def test_other_optimizers_keep_their_own_step_and_train(digits, caplog, make_opt, why):
    torch.manual_seed(0)
    model = mlp(64, 10, [32])
    opt = make_opt(model.parameters())
    with caplog.at_level(logging.INFO, logger="sweep.training.fastsgd"):
        result = fit(
            model, digits, Regularizer(0.0, 0.0, False, "all"), opt, epochs=3, batch_size=64, seed=0
        )
    assert f"flat SGD step off: {why}" in caplog.text
    assert result["status"] == "complete" and result["val_acc"] > 0.5
    assert len(opt.state) == 4  # torch's step kept its per-parameter state


def test_unsupported_names_what_the_flat_step_cannot_do():
    torch.manual_seed(0)
    model = mlp(64, 10, [32])
    params = list(model.parameters())
    flat, grad, _ = flatten_parameters(model, params[::-1])  # any order
    assert fastsgd.unsupported(torch.optim.SGD(params, lr=0.1, momentum=0.9), flat, grad) is None
    cases = {
        "foreach=True": torch.optim.SGD(params, lr=0.1, foreach=True),
        "fused=True": torch.optim.SGD(params, lr=0.1, fused=True),
        "a hyperparameter is a Tensor": torch.optim.SGD(params, lr=torch.tensor(0.1)),
        "2 param groups": torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1),
        "not exactly the model's parameters": torch.optim.SGD(params[1:], lr=0.1),
    }
    hooked = torch.optim.SGD(params, lr=0.1)
    hooked.register_step_post_hook(lambda *_: None)
    cases["step hook is registered"] = hooked
    replaced = torch.optim.SGD(params, lr=0.1)
    replaced.step = lambda: None
    cases["step is replaced"] = replaced
    scheduled = torch.optim.SGD(params, lr=0.1)
    torch.optim.lr_scheduler.CosineAnnealingLR(scheduled, 10)  # wraps .step only to count
    assert fastsgd.unsupported(scheduled, flat, grad) is None
    for why, opt in cases.items():
        assert why in (fastsgd.unsupported(opt, flat, grad) or ""), why
    half = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    half.state[params[0]]["momentum_buffer"] = torch.zeros_like(params[0])
    assert "only some params" in fastsgd.unsupported(half, flat, grad)
    with pytest.raises(ValueError, match="FlatSGD cannot step this optimizer: foreach=True"):
        fastsgd.FlatSGD(cases["foreach=True"], flat, grad)
