"""The private API l1sweep still uses sits in sweep/_compat/, and fails loudly, by name, when a
library changes; the rest of sweep/ uses public API only."""

from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from torch.optim.optimizer import register_optimizer_step_post_hook

from sweep import _compat
from sweep.config.user_code import key_of
from sweep.models.builtin import mlp
from sweep.search.space import grid_choices, suggest
from sweep.training import fastmlp, fastsgd
from sweep.training.train import flatten_parameters

REPO = Path(__file__).resolve().parents[1]


def test_every_private_name_is_present_in_the_installed_libraries():
    assert _compat.missing() == ()
    _compat.check()  # raises, naming the name, where one is gone


def test_hooks_are_seen_through_compat():
    model = mlp(4, 2, [3])
    assert not _compat.has_module_hooks(model.fc1)
    model.fc1.register_full_backward_hook(lambda *_: None)
    assert _compat.has_module_hooks(model.fc1)
    assert not _compat.has_module_hooks(model.fc1, forward_only=True)
    model.fc1.register_forward_pre_hook(lambda *_: None)
    assert _compat.has_module_hooks(model.fc1, forward_only=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert not _compat.has_optimizer_step_hooks(opt)
    handle = register_optimizer_step_post_hook(lambda *_: None)
    try:  # a global hook counts for every optimizer
        assert _compat.has_optimizer_step_hooks(opt)
        flat, grad, _ = flatten_parameters(model, list(model.parameters()))
        assert "step hook" in fastsgd.unsupported(opt, flat, grad)
    finally:
        handle.remove()
    assert not _compat.has_optimizer_step_hooks(opt)


def test_a_library_change_turns_the_fast_steps_off_with_the_reason(monkeypatch):
    monkeypatch.setattr(_compat, "missing", lambda: ("torch._log_softmax_backward_data",))
    reason = fastmlp.unsupported(mlp(4, 2, [3]))
    assert reason == "the installed torch lacks torch._log_softmax_backward_data"


def test_the_key_of_a_node_is_found_from_its_root():
    cfg = OmegaConf.create({"model": {"_target_": "m"}, "callbacks": {"a": {"_target_": "c"}}})
    assert key_of(cfg.model) == "model"
    assert key_of(cfg.callbacks.a) == "callbacks.a"
    assert key_of(cfg) == "config"
    assert _compat.config_root(cfg.callbacks.a) is cfg


def test_suggest_and_grid_choices_follow_each_distribution():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    spaces = {
        "f": FloatDistribution(1e-5, 1e-3, log=True),
        "s": FloatDistribution(0.1, 0.5, step=0.1),
        "i": IntDistribution(1, 9, step=2),
        "c": CategoricalDistribution(["a", "b"]),
    }
    drawn = {name: suggest(trial, name, dist) for name, dist in spaces.items()}
    assert trial.distributions == spaces and trial.params == drawn
    assert 1e-5 <= drawn["f"] <= 1e-3 and drawn["i"] in (1, 3, 5, 7, 9)
    assert grid_choices(spaces["i"]) == [1, 3, 5, 7, 9]
    assert grid_choices(spaces["c"]) == ["a", "b"]
    assert grid_choices(spaces["s"]) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    with pytest.raises(ValueError, match="discrete"):
        grid_choices(spaces["f"])
