"""Compaction: the compact model computes the masked model's logits, on real inputs, for every
built-in model; FLOPs against hand counts; models it cannot follow are refused in one line."""

import re

import pytest
import torch
import torch.nn as nn

from conftest import write_mnist_like
from sweep.data.datasets import load_digits, load_torchvision
from sweep.models import compact, deployable
from sweep.models.builtin import lenet5, mlp
from sweep.sparsity.pruning import NeuronPruner, apply_
from sweep.sparsity.regularizers import GroupLasso, Regularizer


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)


@pytest.fixture(scope="module")
def idx_images(tmp_path_factory):
    """28x28 images read from IDX files this test writes (where data=fashion_mnist looks)."""
    root = tmp_path_factory.mktemp("idx")
    write_mnist_like(root / "FashionMNIST" / "raw", n_train=300, n_test=100)
    return load_torchvision(0, "FashionMNIST", str(root), 0.2, fallback_dir=None)


@torch.no_grad()
def structured_zeros(model: nn.Module, inputs: bool = True) -> None:
    """Remove units as the methods do: neuron pruning (rows, biases, outgoing columns), a
    group lasso step on the inputs, and two neurons left with a bias but no incoming weight
    (a constant, to be folded into the next layer's bias)."""
    counted = Regularizer(0, 0, True, "weights").select(model)
    pruner = NeuronPruner("neurons", sparsity=0.5, scope="layer")
    if pruner.removed(model, 0.5):
        apply_(pruner.held(model, counted), pruner.mask(model, counted, 0.5))
    if inputs:
        reg = GroupLasso(0.0, 0.0, True, "weights", group=1.0, groups="inputs")
        flat = torch.cat([p.reshape(-1) for p in reg.bind(model)])
        first = flat[: reg.shapes[0].numel()].view(reg.shapes[0])
        norms = first.flatten(2).norm(dim=2).norm(dim=0) if first.dim() > 2 else first.norm(dim=0)
        t = float(norms.quantile(0.4))  # about 40% of the inputs' columns go
        reg.prox_(flat, lr=t / (reg.families[0].size ** 0.5))
        counted[0].copy_(first)
    first = counted[0]
    alive = first.flatten(1).any(1).nonzero().flatten()
    if len(counted) > 1 and len(alive) > 2:
        first[alive[:2]] = 0.0  # incoming weights gone, bias kept: a constant neuron


@pytest.mark.parametrize(
    "make,hidden_left",
    [(lambda: mlp(64, 10, [128]), True), (lambda: mlp(64, 10, [32, 16]), True),
     (lambda: mlp(64, 10, []), False)],
    ids=["simple_net", "two_hidden", "linear"],
)  # fmt: skip
def test_compact_logits_equal_the_masked_models_on_digits(digits, make, hidden_left):
    torch.manual_seed(0)
    model = make()
    structured_zeros(model)
    small, kept = compact.compact(model, digits.image_shape)
    x = digits.x_test
    torch.testing.assert_close(
        small(compact.select_inputs(x, kept)), model(x), rtol=1e-5, atol=1e-5
    )
    assert kept.shape == (8, 8) and 20 < int(kept.sum()) < 64  # some pixels are no longer read
    dense = [m.weight.shape for m in model if isinstance(m, nn.Linear)]
    shrunk = [m.weight.shape for m in small if isinstance(m, nn.Linear)]
    assert shrunk[0][1] == int(kept.sum()) and shrunk[-1][0] == 10  # the classes all stay
    if hidden_left:  # half the neurons were pruned, two more made constant and folded
        assert all(s[0] < d[0] for s, d in zip(shrunk[:-1], dense[:-1]))
        assert shrunk[0][0] <= dense[0][0] // 2 - 2


@pytest.mark.parametrize(
    "hidden", [[128], [300, 100], [64, 32]], ids=["simple_net", "mlp", "two_hidden"]
)
def test_compact_mlps_on_idx_images_equal_the_masked_models(idx_images, hidden):
    torch.manual_seed(0)
    model = mlp(784, 10, hidden)
    structured_zeros(model)
    small, kept = compact.compact(model, (28, 28))
    x = idx_images.x_test
    assert x.shape[1:] == (28, 28)
    torch.testing.assert_close(
        small(compact.select_inputs(x, kept)), model(x), rtol=1e-5, atol=1e-5
    )
    assert kept.shape == (28, 28) and 300 < int(kept.sum()) < 784
    shrunk = [m.out_features for m in small if isinstance(m, nn.Linear)]
    assert all(s < h for s, h in zip(shrunk, hidden)) and shrunk[-1] == 10


def test_compact_lenet5_on_idx_images_equals_the_masked_model(idx_images):
    torch.manual_seed(0)
    model = lenet5(784, 10, (28, 28))
    structured_zeros(model, inputs=False)
    with torch.no_grad():  # a conv filter with zero weights and a bias: a constant channel
        model.conv2.weight[3] = 0.0
    small, kept = compact.compact(model, (28, 28))
    x = idx_images.x_test
    assert x.shape[1:] == (28, 28)
    torch.testing.assert_close(
        small(compact.select_inputs(x, kept)), model(x), rtol=1e-5, atol=1e-5
    )
    convs = [m for m in small if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [6 // 2 - 2, 16 // 2 - 1]  # 3 - 2 constant; 8 - 1
    assert small.fc1.in_features == convs[-1].out_channels * 25  # the flatten's columns follow
    shape = compact.measures(model, (28, 28))["compact_shape"]
    assert shape == f"784-1-7-{small.fc1.out_features}-{small.fc2.out_features}-10"


def test_a_neuron_whose_outgoing_weights_are_zero_is_removed_and_an_unread_input_too():
    torch.manual_seed(0)
    model = mlp(5, 3, [4, 4])
    with torch.no_grad():
        model.fc2.weight[:, 1] = 0.0  # fc1's neuron 1 feeds nothing
        model.fc3.weight[:, 2] = 0.0  # fc2's neuron 2 feeds nothing
        model.fc1.weight[:, 4] = 0.0  # input 4 is read by no neuron
    small, kept = compact.compact(model, (5,), feature_names=("a", "b", "c", "d", "e"))
    assert kept == ["a", "b", "c", "d"]
    assert compact.shape_string(small, 4) == "4-3-3-3"
    x = torch.randn(7, 5)
    torch.testing.assert_close(small(x[:, :4]), model(x))
    m = compact.measures(model, (5,))
    assert m["groups_removed"] == 3 and m["compact_shape"] == "4-3-3-3"
    assert m["flops"] == 4 * 3 + 3 * 3 + 3 * 3
    assert m["flops_ratio"] == pytest.approx((5 * 4 + 4 * 4 + 4 * 3) / 30)


def test_a_layer_with_every_unit_dead_compacts_to_a_constant_model():
    torch.manual_seed(0)
    model = mlp(6, 3, [4])
    with torch.no_grad():
        model.fc1.weight.zero_()  # every neuron outputs relu(bias): a constant, folded
    small, kept = compact.compact(model, (6,))
    assert not kept.any() and compact.shape_string(small, 0) == "0-0-3"
    x = torch.randn(5, 6)
    torch.testing.assert_close(small(compact.select_inputs(x, kept)), model(x))
    m = compact.measures(model, (6,))
    assert m["flops"] == 0 and m["flops_ratio"] == float("inf") and m["groups_removed"] == 10


@pytest.mark.parametrize(
    "make,shape,hand",
    [
        (lambda: mlp(64, 10, [128]), (8, 8), 64 * 128 + 128 * 10),  # simple_net on digits
        (lambda: mlp(784, 10, [300, 100]), (28, 28), 784 * 300 + 300 * 100 + 100 * 10),  # mlp
        (lambda: mlp(30, 2, []), (30,), 30 * 2),  # linear on a table
        # lenet5: conv1 6 filters of 1x5x5 at 28x28 outputs (padded); conv2 16 of 6x5x5 at
        # 10x10; then 400-120-84-10
        (lambda: lenet5(784, 10, (28, 28)), (28, 28),
         6 * 28 * 28 * 25 + 16 * 10 * 10 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10),
    ],
    ids=["simple_net", "mlp", "linear", "lenet5"],
)  # fmt: skip
def test_flops_match_a_hand_count(make, shape, hand):
    model = make()
    assert compact.flops(model, shape) == hand
    small, kept = compact.compact(model, shape)  # a dense model compacts to itself
    assert compact.flops(small, (int(kept.sum()),)) == hand


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(x + torch.relu(self.fc1(x)))


def test_models_it_cannot_follow_are_refused_in_one_line():
    cases = [
        (Residual(), "this model is a Residual with its own forward"),
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)),
         "cannot follow layer 1 (BatchNorm1d): it knows Linear, Conv2d"),
        (nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), "layer 1 (Tanh)"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, groups=1), nn.Flatten()), "end in a Linear layer"),
    ]  # fmt: skip
    for model, message in cases:
        with pytest.raises(compact.CannotCompact, match=re.escape(message)) as e:
            compact.compact(model, (4,))
        assert "\n" not in str(e.value)
    assert compact.measures(Residual(), (4,))["compact_shape"] is None  # a row still gets one


def test_a_flops_pareto_sweep_searches_group_lambda_and_writes_the_columns(tmp_path):
    import pandas as pd

    from conftest import run_cli

    run_cli(tmp_path, "-m", "objective=pareto_flops", "regularizer=group_l1",
            "regularizer.groups=both", "train.epochs=20", "optimizer.momentum=0.9",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.sweeper.study_name=fl",
            "group_lambda=tag(log, interval(1e-3, 1e-1))",
            "hydra.sweeper.enqueue=[{group_lambda: 0.001}, {group_lambda: 0.05}]",
            )  # fmt: skip
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "fl" / "results.csv")
    cols = list(df.columns)
    assert cols.index("group_lambda") == cols.index("l2_lambda") + 1
    assert cols[cols.index("n_inputs") + 1 : cols.index("n_inputs") + 5] == [
        "groups_removed", "compact_shape", "flops", "flops_ratio"]  # fmt: skip
    assert len(df) == 3 and df["pareto"].any() and (df["groups"] == "both").all()
    assert df["group_lambda"].between(1e-3, 1e-1).all()
    weak, strong = df.set_index("group_lambda").loc[[0.001, 0.05]].to_dict("records")
    assert strong["flops"] < weak["flops"] and strong["flops_ratio"] > 1  # more removed
    for row in df.to_dict("records"):
        widths = list(map(int, row["compact_shape"].split("-")))
        assert row["flops"] == widths[0] * widths[1] + widths[1] * widths[2]


SKIP_PACKAGE = '''
import torch.nn as nn


class Skip(nn.Module):
    """A skip connection: what compact cannot follow."""

    def __init__(self, n_inputs, n_classes):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(n_inputs, n_inputs), nn.Linear(n_inputs, n_classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc2(x + self.fc1(x).relu())
'''


def test_a_model_compact_cannot_follow_trains_but_a_flops_objective_is_refused_first(tmp_path):
    import json

    from conftest import run_cli

    (tmp_path / "skippkg").mkdir()
    (tmp_path / "skippkg" / "__init__.py").write_text(SKIP_PACKAGE)
    (tmp_path / "myconf" / "model").mkdir(parents=True)
    (tmp_path / "myconf" / "model" / "skip.yaml").write_text("_target_: skippkg.Skip\n")
    args = ["--config-dir", "myconf", "model=skip", "allow_targets=[skippkg.*]",
            "train.epochs=1", "train.threads=1"]  # fmt: skip
    proc = run_cli(tmp_path, *args, "objective=pareto_flops", "hydra.run.dir=flops", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert ("error: the objective's flops is of the compact model, which this model has none "
            "of (compact follows a plain nn.Sequential, and this model is a Skip with its own "
            "forward") in out  # fmt: skip
    assert "epoch 1/1" not in out and not (tmp_path / "flops" / "metrics.json").exists()
    run_cli(tmp_path, *args, "hydra.run.dir=plain")  # the default objective: it trains
    m = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert m["status"] == "complete" and m["val_acc"] > 0.1
    assert m["compact_shape"] is None and m["flops"] is None


@pytest.mark.parametrize(
    "index,by_runs",
    [([*range(20, 200), *range(300, 780)], True), (list(range(0, 784, 3)), False)],
    ids=["runs", "scattered"],
)
def test_the_gather_reads_the_same_inputs_in_torch_and_in_onnxruntime(
    idx_images, tmp_path, index, by_runs
):
    import numpy as np
    import onnx
    import onnxruntime as ort

    gather = deployable.Gather(index, 784)
    assert (gather.runs is not None) == by_runs  # 262 runs of one pixel: an index_select
    x = idx_images.x_test[:5]
    torch.testing.assert_close(gather(x), x.flatten(1)[:, index], rtol=0, atol=0)
    path = tmp_path / "gather.onnx"
    # as sweep.export exports (torch's dynamo exporter, a dynamic batch axis)
    batch = torch.export.Dim("batch")
    torch.onnx.export(gather, (x,), str(path), dynamo=True, external_data=False,
                      input_names=["x"], dynamic_shapes=({0: batch},))  # fmt: skip
    gathers = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Gather"]
    # rows of the transposed batch (axis 0): onnxruntime copies an element at a time on axis 1
    assert [a.i for n in gathers for a in n.attribute if a.name == "axis"] == (
        [] if by_runs else [0]
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for xb in (x, idx_images.x_test[:1]):
        out = session.run(None, {"x": xb.numpy()})[0]
        np.testing.assert_array_equal(out, xb.flatten(1)[:, index].numpy())
