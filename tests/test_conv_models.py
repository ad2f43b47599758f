"""Channel pruning of real conv nets beyond the built-in ResNet: a torchvision model
(`model=torchvision`) cut through its dependency graph and compacted, logits equal to the
masked model's and FLOPs down; and the graph of a model traced once per run
(`sweep.models.graph.graph_of`), the same figures as a fresh trace."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from test_channels import SHAPE, random_batchnorms

from sweep.models import compact, graph
from sweep.models.resnet import resnet, torchvision_model
from sweep.sparsity.pruning import NeuronPruner, apply_
from sweep.sparsity.regularizers import Regularizer
from sweep.training import layout
from sweep.training.train import training_step


def cut_half(model: nn.Module, shape: tuple[int, ...], criterion: str = "norm") -> nn.Module:
    """The model with half its channel groups' channels masked to zero by prune=neurons."""
    pruner = NeuronPruner("neurons", sparsity=0.5, scope="global", criterion=criterion)
    pruner.check(model, shape)
    counted = Regularizer(0, 0, True, "weights").select(model)
    apply_(pruner.held(model, counted), pruner.mask(model, counted, 0.5))
    return model.eval()


@pytest.mark.parametrize("name, shape", [
    pytest.param("resnet18", (3, 32, 32), marks=pytest.mark.slow),  # 2 s: the full tier
    ("mobilenet_v3_small", (1, 28, 28)),  # depthwise convs, squeeze-excitation, Hardswish
])  # fmt: skip
def test_a_torchvision_model_is_cut_through_its_graph_and_compacted(name, shape):
    torch.manual_seed(0)
    model = torchvision_model(math.prod(shape), 10, shape, name)
    random_batchnorms(model)
    dense_flops = compact.flops(model, shape)
    cut_half(model, shape)
    plan = graph.dead_plan(graph.check(model, shape))
    small = graph.compact_model(model, shape, plan)
    x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = model(x), small(x)
    assert got.shape == (8, 10) and float(want.abs().max()) > 1e-2  # logits, not ~0
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), float((got - want).abs().max())
    figures = compact.measures(model, shape)
    widths = graph.Graph(model, shape).dg.get_out_channels
    total = sum(widths(g[0].dep.target.module) for _, g in graph.Graph(model, shape).groups())
    assert figures["channels_removed"] == sum(map(len, plan.values()))
    assert figures["channels_removed"] >= 0.45 * total
    assert figures["flops"] == compact.flops(small, shape) < dense_flops / 1.5
    assert figures["flops_ratio"] == pytest.approx(dense_flops / figures["flops"])


def test_a_models_graph_is_traced_once_and_again_when_its_modules_change():
    model = resnet(64, 10, SHAPE, depth=8, width=4)
    first = graph.graph_of(model, SHAPE)
    assert graph.graph_of(model, SHAPE) is first and graph.check(model, SHAPE) is first
    with torch.no_grad():  # new weights: the same couplings, the same graph
        model.fc.weight.mul_(0.5)
    assert graph.graph_of(model, SHAPE) is first
    model.fc = nn.Linear(model.fc.in_features, 10)  # a new module: traced again
    again = graph.graph_of(model, SHAPE)
    assert again is not first and again.model is model
    assert graph.graph_of(model, (1, *SHAPE)) is not again  # another example's shape


def test_the_figures_of_a_remembered_graph_are_a_fresh_traces():
    torch.manual_seed(0)
    model = resnet(64, 10, SHAPE, depth=8, width=4)
    random_batchnorms(model)
    graph.check(model, SHAPE)  # traced and tried before training, as a run does
    cut_half(model, SHAPE, "bn_scale")
    remembered = compact.measures(model, SHAPE)
    fresh = graph.Graph(model, SHAPE)
    plan = graph.dead_plan(fresh)
    small = graph.compact_model(model, SHAPE, plan)
    assert remembered["compact_shape"] == graph.shape_string(graph.Graph(small, SHAPE))
    assert remembered["channels_removed"] == sum(map(len, plan.values())) > 0
    assert remembered["flops"] == compact.flops(small, SHAPE)


def test_a_channels_last_step_gives_the_nchw_steps_logits_gradients_and_statistics():
    # the trainer's conv layout (train.fast): the same model and the same step, only faster
    torch.manual_seed(0)
    nchw = resnet(784, 10, (28, 28), depth=8, width=4)
    last = resnet(784, 10, (28, 28), depth=8, width=4)
    last.load_state_dict(nchw.state_dict())
    x = torch.rand(6, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    forward = layout.channels_last_forward(last)
    want, got = nchw(x), forward(x)
    torch.nn.functional.cross_entropy(want, y).backward()
    torch.nn.functional.cross_entropy(got, y).backward()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(nchw.named_parameters(), last.parameters(), strict=True):
        assert q.is_contiguous(), name  # the flat buffer's NCHW views keep their layout
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    torch.testing.assert_close(last.bn1.running_mean, nchw.bn1.running_mean)
    assert float(last.bn1.running_mean.abs().sum()) > 0  # updated in place, as model(x) does
    assert layout.has_conv2d(last) and not layout.has_conv2d(nn.Linear(3, 2))


def test_the_trainer_runs_a_conv_net_channels_last_with_fast_and_nchw_without(caplog):
    torch.manual_seed(0)
    model = resnet(784, 10, (28, 28), depth=8, width=4)
    grad = torch.zeros(1)
    with caplog.at_level("INFO", logger="sweep.training.train"):
        training_step(model, grad, fast=True)
    assert "channels-last" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="sweep.training.train"):
        training_step(model, grad, fast=False)
    assert "channels-last" not in caplog.text


def test_the_fashion_resnet_preset_is_the_conv_benchmarks_recipe(monkeypatch):
    import sys

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sweep.config import schema

    repo = Path(__file__).resolve().parents[1]
    with initialize_config_dir(str(repo / "conf"), version_base=None):
        cfg = compose("config", overrides=["experiment=fashion_resnet"])
        own = compose("config", overrides=["experiment=fashion_resnet", "model=torchvision"])
    schema.check(cfg)
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["conv_speed.py"])
    import conv_speed

    a = conv_speed.arguments()  # the benchmark's defaults: the figures in docs/deploy.md
    assert cfg.model._target_ == "sweep.models.resnet.resnet"
    assert (cfg.model.depth, cfg.model.width) == (a.depth, a.width) == (8, 32)
    assert cfg.regularizer._target_.endswith("BatchNormL1") and cfg.bn_lambda == a.bn_lambda
    assert (cfg.prune.method, cfg.prune.criterion) == ("neurons", a.criterion)
    assert (cfg.prune.sparsity, cfg.prune.epochs) == (a.sparsity, a.finetune)
    assert (cfg.prune.lr_scale, cfg.prune.rounds) == (a.lr_scale, a.rounds)
    assert cfg.prune.round_to == a.round_to == 16
    assert (cfg.train.epochs, cfg.optimizer.lr, cfg.optimizer.momentum) == (a.epochs, 0.05, 0.9)
    assert "depth" not in OmegaConf.to_container(own.model)  # a user's model keeps its keys
