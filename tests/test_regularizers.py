import pytest
import torch

from sweep.errors import UserError
from sweep.models import mlp
from sweep.regularizers import Regularizer
from sweep.train import flatten_parameters


def hand_params():
    """The weights [[0.5, -2], [0, 1.5]] and [-0.25, 3], flat, as the trainer hands them over."""
    return torch.tensor([0.5, -2.0, 0.0, 1.5, -0.25, 3.0])


def test_penalty_values_match_hand_computation():
    params = hand_params()
    # sum|w| = 0.5 + 2 + 0 + 1.5 + 0.25 + 3 = 7.25 ; sum w^2 = .25 + 4 + 0 + 2.25 + .0625 + 9
    assert Regularizer(0.1, 0.0, False, "all").penalty(params) == pytest.approx(0.725)
    assert Regularizer(0.0, 0.01, False, "all").penalty(params) == pytest.approx(0.155625)
    both = Regularizer(0.1, 0.01, False, "all").penalty(params)
    assert both == pytest.approx(0.725 + 0.155625)
    assert Regularizer(0.0, 0.0, False, "all").penalty(params) == 0.0


def test_meter_sums_the_penalty_of_every_step_it_sees():
    w = hand_params()
    g = torch.zeros_like(w)
    reg = Regularizer(0.1, 0.01, False, "all")
    meter = reg.meter(w)
    reg.add_gradient_(w, g, meter)  # step 1 at these weights
    w[5] = -1.0  # step 2: sum|w| 7.25 - 3 + 1 = 5.25; sum w^2 15.5625 - 9 + 1
    reg.add_gradient_(w, g, meter)
    assert reg.value(meter) == pytest.approx(0.1 * (7.25 + 5.25) + 0.01 * (15.5625 + 7.5625))
    # w[:4] did not change: two steps' gradients, each l1 * sign(w) + 2 * l2 * w
    expected = 2 * (0.1 * torch.sign(w[:4]) + 2 * 0.01 * w[:4])
    torch.testing.assert_close(g[:4], expected)


def test_params_weights_excludes_biases():
    model = mlp(4, 2, [3])
    assert len(Regularizer(1e-3, 0, False, "all").select(model)) == 4
    assert [p.dim() for p in Regularizer(1e-3, 0, False, "weights").select(model)] == [2, 2]


def _grads(reg: Regularizer, by_autograd: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = mlp(6, 3, [5])
    with torch.no_grad():
        model.fc1.weight[0, :3] = 0.0  # exact zeros: subgradient 0 there
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    params = reg.select(model)
    if not by_autograd:  # the trainer's way: flat buffers, the penalty's gradient added by hand
        flat, grad, k = flatten_parameters(model, params)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if by_autograd:  # the seed's way: the penalty in the loss
        loss = loss + reg.l1 * sum(p.abs().sum() for p in params)
        loss = loss + reg.l2 * sum(p.pow(2.0).sum() for p in params)
    loss.backward()
    if not by_autograd:
        reg.add_gradient_(flat[:k], grad[:k])
    return [p.grad.clone() for p in model.parameters()]


def test_l1_gradient_is_bitwise_the_seeds_autograd_penalty():
    reg = Regularizer(1e-3, 0.0, False, "all")
    for ours, seed in zip(_grads(reg, False), _grads(reg, True)):
        assert torch.equal(ours, seed)


def test_elastic_net_gradient_matches_autograd_penalty():
    reg = Regularizer(1e-3, 1e-2, False, "weights")
    for ours, seed in zip(_grads(reg, False), _grads(reg, True)):
        torch.testing.assert_close(ours, seed, rtol=1e-6, atol=1e-8)


def test_l1_penalty_gradient_is_lambda_sign_w_away_from_zero():
    w = torch.tensor([0.3, -0.7, 2.0, -1e-4])
    g = torch.zeros_like(w)
    Regularizer(0.05, 0.0, False, "all").add_gradient_(w, g)
    assert torch.equal(g, 0.05 * torch.sign(w))


def test_prox_matches_closed_form_soft_threshold_and_makes_exact_zeros():
    w = torch.tensor([0.3, -0.7, 0.004, -0.005, 0.0, 0.006, -2.0])
    expected = torch.sign(w) * torch.clamp(w.abs() - 0.005, min=0)
    reg = Regularizer(0.5, 0.0, True, "all")
    reg.prox_(w, lr=0.01)  # threshold lr * l1 = 0.005
    assert torch.equal(w, expected)
    assert (w == 0).sum() == 3
    assert w[0] == pytest.approx(0.295) and w[-1] == pytest.approx(-1.995)


def test_prox_does_nothing_for_the_penalty_method():
    w = torch.tensor([0.001, -0.002])
    Regularizer(0.5, 0.0, False, "all").prox_(w, lr=0.01)
    assert torch.equal(w, torch.tensor([0.001, -0.002]))


@pytest.mark.parametrize(
    "l1,l2,msg",
    [(-1e-4, 0, "l1_lambda must be >= 0"), (0, -1, "l2_lambda must be >= 0"),
     ("abc", 0, "l1_lambda must be a number"), (float("nan"), 0, "l1_lambda must be >= 0")],
)  # fmt: skip
def test_bad_lambdas_are_refused(l1, l2, msg):
    with pytest.raises(UserError, match=msg):
        Regularizer(l1, l2, False, "all")
