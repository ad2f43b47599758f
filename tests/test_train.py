"""The fast trainer computes what the seed's per-tensor loop computes, bit for bit."""

import pytest
import torch
import torch.nn.functional as F

from sweep.data.datasets import load_digits
from sweep.models.builtin import mlp
from sweep.sparsity.regularizers import Regularizer
from sweep.training.train import fit, flatten_parameters


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)


def reference(data, reg: Regularizer, make_opt, epochs: int, seed: int = 0) -> list:
    """The seed's loop on the same batches: the penalty in the loss through autograd,
    zero_grad / backward / step per parameter tensor, the proximal step after it."""
    torch.manual_seed(seed)
    model = mlp(64, 10, [32])
    opt = make_opt(model.parameters())
    params = reg.select(model)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            if not reg.proximal:
                loss = loss + reg.l1 * sum(p.abs().sum() for p in params)
            loss = loss + reg.l2 * sum(p.pow(2.0).sum() for p in params)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for p in params if reg.proximal else []:
                    t = opt.param_groups[0]["lr"] * reg.l1
                    p.copy_(torch.sign(p) * torch.clamp(p.abs() - t, min=0))
    return [p.detach() for p in model.parameters()]


def trained(data, reg: Regularizer, make_opt, epochs: int, seed: int = 0) -> list:
    torch.manual_seed(seed)
    model = mlp(64, 10, [32])
    fit(
        model,
        data,
        reg,
        make_opt(model.parameters()),
        epochs=epochs,
        batch_size=64,
        seed=seed,
        log_every=epochs,
    )
    return [p.detach() for p in model.parameters()]


@pytest.mark.parametrize(
    "reg,make_opt",
    [
        (Regularizer(1e-3, 0.0, False, "all"), lambda p: torch.optim.SGD(p, lr=0.01)),
        (Regularizer(1e-3, 0.0, True, "weights"), lambda p: torch.optim.SGD(p, lr=0.01)),
        (Regularizer(1e-3, 0.0, True, "all"), lambda p: torch.optim.Adam(p, lr=1e-3)),
        (Regularizer(0.0, 0.0, False, "all"), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    ],
    ids=["l1-sgd", "prox-weights-sgd", "prox-adam", "none-momentum"],
)
def test_fit_matches_the_seeds_loop_bit_for_bit(digits, reg, make_opt):
    ours, seed = trained(digits, reg, make_opt, 3), reference(digits, reg, make_opt, 3)
    for a, b in zip(ours, seed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_flatten_parameters_keeps_values_and_puts_the_chosen_tensors_first():
    torch.manual_seed(0)
    model = mlp(6, 3, [5])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = [id(p) for p in model.parameters()]
    weights = [model.fc1.weight, model.fc2.weight]
    flat, grad, k = flatten_parameters(model, weights)
    assert [id(p) for p in model.parameters()] == ids  # an optimizer's references stay valid
    assert k == 6 * 5 + 5 * 3 and flat.shape == grad.shape == (6 * 5 + 5 + 5 * 3 + 3,)
    assert torch.equal(flat[:k], torch.cat([before["fc1.weight"].flatten(),
                                            before["fc2.weight"].flatten()]))  # fmt: skip
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])
    with torch.no_grad():
        flat[:k].zero_()  # writes through to the model's weights, not its biases
    assert not model.fc1.weight.any() and torch.equal(model.fc1.bias, before["fc1.bias"])
    model(torch.rand(4, 6)).sum().backward()  # autograd adds into the flat gradient buffer
    assert grad[k:].abs().sum() > 0 and model.fc2.bias.grad.data_ptr() == grad[-3:].data_ptr()


def test_flatten_parameters_refuses_mixed_dtypes():
    model = mlp(6, 3, [5])
    model.fc2.double()
    with pytest.raises(ValueError, match="one device, of one dtype"):
        flatten_parameters(model, list(model.parameters()))
    assert model.fc1.weight.dtype == torch.float32 and model.fc2.weight.dtype == torch.float64
