"""Channels out of real conv nets (sweep/models/graph.py, sweep/sparsity/channels.py): for each
construct (residual add, concatenation, BatchNorm, depthwise and grouped convs, a Linear after
a global pool or a flatten), prune=neurons' mask zeroes coupled channels, and the compact
model (channels cut, BatchNorm folded) computes the masked model's logits on the digits'
test split; the masks hold through fine-tuning under momentum and Adam; bn_l1 puts scales
exactly on zero; a model whose graph cannot be cut is refused in one line, before training."""

import pytest
import torch
import torch.nn as nn

from conftest import run_cli
from sweep.data.datasets import load_digits
from sweep.errors import UserError
from sweep.models import graph
from sweep.models.resnet import resnet
from sweep.sparsity import channels
from sweep.sparsity.measures import zero_scales
from sweep.sparsity.pruning import NeuronPruner, Pruner, apply_
from sweep.sparsity.regularizers import BatchNormL1, GroupLasso, Regularizer
from sweep.training.train import fit

SHAPE = (8, 8)  # the digits' images


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)


def cbr(c_in: int, c_out: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, groups=groups), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.b = cbr(1, 8), cbr(8, 8), cbr(8, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x.unsqueeze(1))
        x = x + self.b(self.a(x))  # the add couples stem's, and b's, channels
        return self.head(x.mean((2, 3)))  # a Linear after a global pool


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left, self.right, self.mix = cbr(1, 6), cbr(1, 4), cbr(10, 8)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = x.unsqueeze(1)
        x = self.mix(torch.cat([self.left(x), self.right(x)], 1))
        return self.head(torch.flatten(nn.functional.max_pool2d(x, 2), 1))  # after a flatten


class Depthwise(nn.Module):  # MobileNet's separable conv: depthwise then pointwise
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.dw = cbr(1, 8), cbr(8, 8, groups=8)
        self.pw, self.head = cbr(8, 12), nn.Linear(12, 10)

    def forward(self, x):
        x = self.pw(self.dw(self.stem(x.unsqueeze(1))))
        return self.head(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.g, self.head = cbr(1, 8), cbr(8, 8, groups=2), nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.g(self.stem(x.unsqueeze(1))).mean((2, 3)))


CONSTRUCTS = {
    "residual": Residual,
    "concat": Concat,
    "depthwise": Depthwise,
    "grouped": Grouped,
    "resnet": lambda: resnet(64, 10, SHAPE, depth=8, width=4),
}


def random_batchnorms(model: nn.Module) -> None:
    """BatchNorm statistics and affine terms as after training, not 0 / 1."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)


def pruned(make, criterion: str = "norm", target: float = 0.5) -> tuple[nn.Module, NeuronPruner]:
    torch.manual_seed(0)
    model = make()
    random_batchnorms(model)
    pruner = NeuronPruner("neurons", sparsity=target, scope="global", criterion=criterion)
    pruner.check(model, SHAPE)
    counted = Regularizer(0, 0, True, "weights").select(model)
    apply_(pruner.held(model, counted), pruner.mask(model, counted, target))
    return model.eval(), pruner


@pytest.mark.parametrize("name", list(CONSTRUCTS))
def test_the_compact_model_computes_the_masked_models_logits(digits, name):
    model, _ = pruned(CONSTRUCTS[name])
    figures = graph.measures(model, SHAPE)
    small = graph.compact_model(model, SHAPE, graph.dead_plan(graph.Graph(model, SHAPE)))
    with torch.no_grad():
        want, got = model(digits.x_test), small(digits.x_test)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()
    assert figures["channels_removed"] > 0 and figures["flops_ratio"] > 1.0
    dense = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in small.parameters()) < dense  # channels really out
    assert not any(isinstance(m, nn.BatchNorm2d) for m in small.modules())  # all folded
    assert figures["compact_shape"].endswith("-10")  # the classes are never cut


def test_coupled_channels_are_cut_together_and_the_output_layer_never():
    model, _ = pruned(Residual, target=0.5)
    small = graph.compact_model(model, SHAPE, graph.dead_plan(graph.Graph(model, SHAPE)))
    # stem, a's input, b's output and the head's input are one coupled set of channels
    assert small.stem[0].out_channels == small.b[0].out_channels == small.a[0].in_channels
    assert small.head.in_features == small.stem[0].out_channels < 8
    assert small.head.out_features == 10


def test_bn_scale_ranks_coupled_channels_by_their_batchnorm_scales():
    torch.manual_seed(0)
    model = Residual()
    random_batchnorms(model)
    with torch.no_grad():  # the two smallest scales of the coupled set (stem, b)
        model.stem[1].weight[[1, 6]] = 1e-3
        model.b[1].weight[[1, 6]] = 1e-3
    pruner = NeuronPruner("neurons", sparsity=0.25, scope="layer", criterion="bn_scale")
    pruner.check(model, SHAPE)
    counted = Regularizer(0, 0, True, "weights").select(model)
    apply_(pruner.held(model, counted), pruner.mask(model, counted, 0.25))
    for bn in (model.stem[1], model.b[1]):
        assert bn.weight.nonzero().flatten().tolist() == [0, 2, 3, 4, 5, 7]
    assert int((model.a[1].weight == 0).sum()) == 2  # 0.25 of a's own group too


def test_round_to_keeps_each_groups_nearest_multiple_of_channels(digits):
    torch.manual_seed(0)
    model = resnet(64, 10, SHAPE, depth=8, width=16)  # groups of 16, 16, 32, 32, 64, 64
    random_batchnorms(model)
    free, sizes = channels.plan(model, SHAPE, 0.5, "bn_scale", "global")
    cut, _ = channels.plan(model, SHAPE, 0.5, "bn_scale", "global", round_to=8)
    kept = {root: sizes[root] - len(c) for root, c in free.items()}
    rounded = {root: sizes[root] - len(c) for root, c in cut.items()}
    assert rounded == {r: max(8, 8 * round(k / 8 + 1e-9)) for r, k in kept.items()}  # ties up
    assert rounded != kept  # the cut without rounding leaves other counts here
    for root in cut:  # rounding moves the line in the group's own order: one set holds the other
        a, b = set(free[root]), set(cut[root])
        assert a <= b or b <= a
    pruner = NeuronPruner("neurons", sparsity=0.5, criterion="bn_scale", round_to=8)
    pruner.check(model, SHAPE)
    counted = Regularizer(0, 0, True, "weights").select(model)
    apply_(pruner.held(model, counted), pruner.mask(model, counted, 0.5))
    model.eval()
    small = graph.compact_model(model, SHAPE, graph.dead_plan(graph.Graph(model, SHAPE)))
    convs = [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert all(c % 8 == 0 for c in convs) and convs != [m.out_channels for m in model.modules()
                                                       if isinstance(m, nn.Conv2d)]  # fmt: skip
    with torch.no_grad():
        assert torch.allclose(small(digits.x_test), model(digits.x_test), atol=1e-5, rtol=1e-5)


def test_round_to_is_refused_where_it_does_not_apply_in_one_line():
    with pytest.raises(UserError, match="prune.round_to rounds the channels prune=neurons") as e:
        Pruner("magnitude", sparsity=0.5, round_to=16)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="prune.round_to") as e:
        NeuronPruner("neurons", sparsity=0.5, round_to=0)
    assert "\n" not in str(e.value)


def test_a_grouped_conv_loses_the_same_positions_in_every_channel_group():
    model, _ = pruned(Grouped, target=0.5)
    gone = (model.stem[1].weight == 0).nonzero().flatten().tolist()
    assert len(gone) in (2, 4) and all(j + 4 in gone for j in gone if j < 4)


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=1e-3),
    ],
    ids=["sgd-momentum", "adam"],
)
def test_the_mask_holds_through_fine_tuning(digits, make_opt):
    model, pruner = pruned(CONSTRUCTS["resnet"])
    model.train()
    reg = Regularizer(0, 0, True, "weights")
    counted = reg.select(model)
    keep = pruner.mask(model, counted, 0.5)
    fit(model, digits, reg, make_opt(model.parameters()), epochs=1, batch_size=64, seed=0,
        keep=keep)  # fmt: skip
    held = torch.cat([p.detach().reshape(-1) for p in pruner.held(model, counted)])
    assert not held[~keep].any()  # every removed entry still exactly zero
    model.eval()
    small = graph.compact_model(model, SHAPE, graph.dead_plan(graph.Graph(model, SHAPE)))
    with torch.no_grad():
        assert torch.allclose(small(digits.x_test), model(digits.x_test), atol=1e-5, rtol=1e-5)


def test_bn_l1_puts_batchnorm_scales_exactly_on_zero(digits):
    torch.manual_seed(0)
    model = resnet(64, 10, SHAPE, depth=8, width=4)
    reg = BatchNormL1(0.0, 0.0, True, "weights", bn=0.5)
    fit(model, digits, reg, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
        batch_size=64, seed=0)  # fmt: skip
    assert zero_scales(model) > 0
    assert reg.columns() == {"bn_lambda": 0.5}
    assert zero_scales(nn.Linear(3, 2)) is None
    with pytest.raises(UserError, match="regularizer=bn_l1 .* no BatchNorm"):
        BatchNormL1(0, 0, True, "weights", bn=1e-3).bind(nn.Sequential(nn.Linear(3, 2)))


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = cbr(1, 4), cbr(4, 4), nn.Linear(4, 10)

    def forward(self, x):
        x = self.a(x.unsqueeze(1)).detach()  # the graph ends here
        return self.head(self.b(x).mean((2, 3)))


class FixedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = cbr(1, 4), cbr(4, 4), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.b(self.a(x.unsqueeze(1))).view(-1, 4, 64).flatten(1))


@pytest.mark.parametrize(
    "make,message",
    [
        (Detached, r"layer 'a.0' runs off the autograd path .*detach\(\)"),
        (FixedView, r"cutting channels of layer 'b.0' breaks the model: .*a channel count written"),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), "needs a hidden layer"),
    ],
    ids=["detach", "fixed-view", "no-hidden"],
)
def test_a_model_whose_channels_cannot_be_cut_is_refused_in_one_line(make, message):
    with pytest.raises(UserError, match=message) as e:
        NeuronPruner("neurons", sparsity=0.5).check(make(), SHAPE)
    assert "\n" not in str(e.value)


def test_bn_scale_on_a_model_without_batchnorm_is_refused():
    with pytest.raises(UserError, match="prune.criterion=bn_scale .* no BatchNorm"):
        NeuronPruner("neurons", sparsity=0.5, criterion="bn_scale").check(
            nn.Sequential(nn.Unflatten(1, (1, 8)), nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 36, 10)), SHAPE)  # fmt: skip


@pytest.mark.slow
def test_a_resnet_run_with_bn_l1_and_channel_pruning_writes_the_rows_figures(tmp_path):
    import json

    run_cli(tmp_path, "model=resnet", "model.depth=8", "model.width=4", "train.epochs=2",
            "regularizer=bn_l1", "bn_lambda=1e-3", "prune=neurons", "prune.sparsity=0.5",
            "prune.criterion=bn_scale", "prune.epochs=1", "hydra.run.dir=run")  # fmt: skip
    row = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert row["channels_removed"] == 28 and row["flops_ratio"] > 1.5
    assert row["bn_lambda"] == 1e-3 and row["bn_zero_scales"] >= 28
    assert row["prune_criterion"] == "bn_scale" and row["compact_shape"].endswith("-10")
    # sweep.export writes the compact conv net as ONNX, measured read back
    import pandas as pd

    from conftest import run_module

    run_module("sweep.export", tmp_path, "run", "--latency-rounds", "1",
               "--latency-seconds", "0.02")  # fmt: skip
    table = pd.read_csv(tmp_path / "run" / "export" / "export.csv").set_index("artifact")
    onnx = table.loc["model.compact.onnx"]
    assert onnx["bytes"] < table.loc["model.onnx", "bytes"] and onnx["max_abs_logit_diff"] < 1e-4
    assert onnx["flops"] == pytest.approx(row["flops"], rel=1e-6)
    small = table.loc["model.compact.l1z"]  # the archive, rebuilt from _target_ + new sizes
    assert small["max_abs_logit_diff"] < 1e-4 and small["flops"] == onnx["flops"]
    import os
    import subprocess
    import sys

    from test_export import BLOCKING_LOADER, REPO

    proc = subprocess.run([sys.executable, "-c", BLOCKING_LOADER,
                           str(tmp_path / "run" / "export" / "model.compact.l1z")],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(3, 10) []"  # torch and numpy only, no pickle


@pytest.mark.slow
def test_a_conv_net_option_refused_is_one_line_before_training(tmp_path):
    proc = run_cli(tmp_path, "model=resnet", "model.depth=8", "model.width=4",
                   "prune=neurons", "prune.inputs=0.5", check=False)  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "prune.inputs removes a plain MLP's inputs" in out and "epoch 1" not in out


def test_group_l1_channels_groups_each_hidden_convs_filters(digits):
    torch.manual_seed(0)
    model = Residual()
    reg = GroupLasso(0.0, 0.0, True, "weights", group=0.2, groups="channels")
    counted = reg.bind(model)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [counted[f.weight] is convs[i] for i, f in enumerate(reg.families)] == [True] * 3
    assert all(f.dim == 0 for f in reg.families)  # filters, not the head's rows
    fit(model, digits, reg, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
        batch_size=64, seed=0)  # fmt: skip
    dead = sum(int((w.flatten(1) == 0).all(1).sum()) for w in convs)
    assert dead > 0  # whole filters exactly zero
    with pytest.raises(UserError, match="regularizer.groups=channels finds no hidden Conv"):
        GroupLasso(0, 0, True, "weights", group=1e-3, groups="channels").bind(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
        )


def test_resnet_and_torchvision_models_take_the_datas_images():
    from sweep.models.resnet import torchvision_model

    net = resnet(3072, 100, (3, 32, 32), depth=20, width=16)  # ResNet-20 on CIFAR-100 shapes
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    n = sum(p.numel() for p in resnet(784, 10, (28, 28)).parameters())
    assert n == 272_186  # 0.27M (He et al. 2016, table 6), with 1x1 projection shortcuts
    tv = torchvision_model(784, 10, (28, 28), name="resnet18")
    assert tv(torch.zeros(2, 28, 28)).shape == (2, 10)  # one channel, no channel axis
    with pytest.raises(UserError, match="model.name must be a torchvision classification"):
        torchvision_model(784, 10, (28, 28), name="resnet_nine")
    with pytest.raises(UserError, match=r"model.depth must be 6n \+ 2"):
        resnet(784, 10, (28, 28), depth=21)


def test_a_flops_objective_takes_a_conv_net_its_graph_can_cut():
    from sweep.models import compact

    compact.check_objective(resnet(64, 10, SHAPE, depth=8, width=4), SHAPE, ["val_acc", "flops"])
    with pytest.raises(UserError, match="the objective's flops .* runs off the autograd path"):
        compact.check_objective(Detached(), SHAPE, ["val_acc", "flops"])


def test_a_compact_resnet_is_rebuilt_from_its_target_and_layer_sizes(digits):
    model, _ = pruned(CONSTRUCTS["resnet"])
    plan = graph.dead_plan(graph.Graph(model, SHAPE))
    small = graph.compact_model(model, SHAPE, plan, fold=False)
    arch = {"_target_": "sweep.models.resnet.resnet", "n_inputs": 64, "n_classes": 10,
            "input_shape": [8, 8], "depth": 8, "width": 4}  # fmt: skip
    again = graph.narrowed(arch, graph.layout(small))
    again.load_state_dict(small.state_dict())
    with torch.no_grad():
        assert torch.allclose(again.eval()(digits.x_test), model(digits.x_test), atol=1e-5)
    with pytest.raises(UserError, match="rebuilds networks of sweep.models only"):
        graph.narrowed({"_target_": "mypkg.Net"}, {})
