import pytest
import torch

from sweep.models.builtin import mlp


def test_simple_net_is_the_seeds_784_128_10():
    model = mlp(784, 10, [128])
    names = [n for n, _ in model.named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert sum(p.numel() for p in model.parameters()) == 784 * 128 + 128 + 128 * 10 + 10
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize("hidden", [[], [300, 100], [7]])
def test_mlp_widths_follow_hidden(hidden):
    model = mlp(64, 3, hidden)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [m.in_features for m in linears] == [64, *hidden]
    assert [m.out_features for m in linears] == [*hidden, 3]
    assert model(torch.rand(2, 8, 8)).shape == (2, 3)
