import torch

from sweep.models.builtin import mlp
from sweep.sparsity import measures as sparsity
from sweep.training.train import accuracy


def model_with_zeros():
    torch.manual_seed(0)
    model = mlp(4, 2, [3])
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[0.0, 1.0, 0.0, 2e-4], [0.0, -1.0, 0.5, 0.0],
                                             [0.0, 0.0, 0.0, 0.3]]))  # fmt: skip
        model.fc1.bias.copy_(torch.tensor([0.0, 0.1, -5e-4]))
    return model


def test_layer_table_counts_exact_and_tol_zeros_and_adds_up():
    model = model_with_zeros()
    counted = list(model.parameters())
    rows = sparsity.layer_table(model, counted, tol=1e-3)
    fc1w = rows[0]
    assert (fc1w["layer"], fc1w["shape"], fc1w["n"], fc1w["nnz"]) == ("fc1.weight", "3x4", 12, 5)
    assert fc1w["sparsity"] == 7 / 12 and fc1w["sparsity_tol"] == 8 / 12
    tot = sparsity.totals(rows)
    assert tot["n_params"] == sum(p.numel() for p in counted) == 4 * 3 + 3 + 3 * 2 + 2
    assert tot["nnz"] == sum(int((p != 0).sum()) for p in counted)
    assert tot["sparsity"] == 1 - tot["nnz"] / tot["n_params"]
    assert tot["sparsity_tol"] == sum(int((p.abs() <= 1e-3).sum()) for p in counted) / 23


def test_weights_only_counts_weight_matrices():
    model = model_with_zeros()
    counted = [p for p in model.parameters() if p.dim() > 1]
    rows = sparsity.layer_table(model, counted, tol=0.0)
    assert [r["layer"] for r in rows] == ["fc1.weight", "fc2.weight"]
    assert sparsity.totals(rows)["n_params"] == 18


def test_active_inputs_counts_columns_with_a_nonzero_weight():
    assert sparsity.active_inputs(model_with_zeros()) == 3  # input 0 has no outgoing weight


def test_pruned_zeroes_small_weights_only_in_a_copy():
    model = model_with_zeros()
    small = sparsity.pruned(model, list(model.parameters()), tol=1e-3)
    assert small.fc1.weight[0, 3] == 0 and model.fc1.weight[0, 3] == 2e-4
    assert small.fc1.bias[2] == 0 and small.fc1.bias[1] == 0.1


def test_pruned_accuracy_equals_accuracy_when_nothing_is_below_tol():
    torch.manual_seed(1)
    model = mlp(64, 10, [32])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.sign(p) * 0.01)  # every |w| > 0.01 > tol
    x, y = torch.rand(500, 8, 8), torch.randint(0, 10, (500,))
    small = sparsity.pruned(model, list(model.parameters()), tol=1e-3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), small.parameters()))
    assert accuracy(small, x, y) == accuracy(model, x, y)
