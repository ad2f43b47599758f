"""Each preset (conf/experiment/) combines with any option of each group it chooses: the user's
`regularizer=none` replaces the preset's regularizer (Hydra's defaults list), and the preset's
own settings never name a key that the user's option lacks. Composed in-process with Hydra's
compose API on the repository's conf/, and checked by the schema's rules as `python -m
sweep.run` checks them; the preset's dense baseline is run once for real."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from conftest import REPO, run_cli, write_mnist_like
from sweep.config import schema
from sweep.errors import UserError
from sweep.task import rules

CONF = REPO / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# The combinations the run's own rules refuse, in one line: an objective of a path needs a path
# (the preset that walks one, with prune=none; the others, with objective=path_hypervolume).
PATH_RULE = "objective=path_hypervolume needs a path to measure"
REFUSED = {
    ("fashion_path", "prune", "none"),
    ("fashion_frontier", "objective", "path_hypervolume"),
    ("fashion_structured", "objective", "path_hypervolume"),
    ("fashion_resnet", "objective", "path_hypervolume"),
}


def chosen_groups(preset: str) -> list[str]:
    """The groups whose option the preset chooses (`override /<group>: ...`)."""
    defaults = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml")["defaults"]
    return [
        key.removeprefix("override /")
        for entry in defaults
        if isinstance(entry, dict) or OmegaConf.is_dict(entry)
        for key in entry
        if str(key).startswith("override /")
    ]


def test_every_preset_chooses_the_groups_it_is_tested_with():
    assert PRESETS == ["fashion_frontier", "fashion_path", "fashion_resnet", "fashion_structured"]
    for preset in PRESETS:
        groups = chosen_groups(preset)
        assert {"data", "regularizer", "optimizer", "prune", "objective"} <= set(groups), preset


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_composes_with_every_option_of_each_group_it_chooses(preset):
    from hydra import compose, initialize_config_dir

    failures = []
    with initialize_config_dir(str(CONF), version_base=None):
        for group in chosen_groups(preset):
            for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
                over = [f"experiment={preset}", f"{group}={option}"]
                try:
                    cfg = compose("config", overrides=over, return_hydra_config=True)
                    # the user's option wins over the preset's: its own schema, its own choice
                    assert cfg.hydra.runtime.choices[group] == option
                    schema.check(cfg)  # every key in range: what `python -m sweep.run` checks
                except Exception as e:  # noqa: BLE001 - every failing combination is listed
                    failures.append(f"{' '.join(over)}: {type(e).__name__}: {e}")
                    continue
                try:
                    rules.check(cfg)
                except UserError as e:
                    assert (preset, group, option) in REFUSED and str(e).startswith(PATH_RULE)
                else:
                    assert (preset, group, option) not in REFUSED
    assert not failures, "\n".join(failures)


def test_the_preset_settings_of_one_option_follow_that_option():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base=None):
        preset = compose("config", overrides=["experiment=fashion_structured"])
        dense = compose("config", overrides=["experiment=fashion_structured", "regularizer=none",
                                             "prune=none", "optimizer=adam"])  # fmt: skip
        sparse_group = compose("config", overrides=["experiment=fashion_structured",
                                                    "regularizer=sparse_group_l1"])  # fmt: skip
        lr = compose("config", overrides=["experiment=fashion_frontier", "optimizer.lr=0.1"])
    assert preset.regularizer.groups == "both" and sparse_group.regularizer.groups == "both"
    assert (preset.optimizer.lr, preset.optimizer.momentum) == (0.05, 0.9)
    assert "groups" not in dense.regularizer and dense.regularizer.l1 == 0.0
    assert dict(dense.optimizer) == {"_target_": "torch.optim.Adam", "_partial_": True,
                                     "lr": 0.001}  # fmt: skip
    assert dense.prune.method == "none" and dense.train.epochs == 10  # the rest is the preset's
    assert (lr.optimizer.lr, lr.optimizer.momentum) == (0.1, 0.9)  # the command line wins


def test_the_structured_presets_dense_baseline_trains(tmp_path):
    # 28x28 images where data=fashion_mnist looks (the real set is 60k images)
    write_mnist_like(tmp_path / "data" / "FashionMNIST" / "raw", n_train=1200, n_test=300)
    run_cli(tmp_path, "experiment=fashion_structured", "regularizer=none", "prune=none",
            "train.epochs=1", "data.root=data", "data.fallback_dir=null",
            "data.val_fraction=0.2", "hydra.run.dir=dense")  # fmt: skip
    m = json.loads((tmp_path / "dense" / "metrics.json").read_text())
    assert (m["regularizer"], m["prune"], m["data"]) == ("none", "none", "fashion_mnist")
    assert m["status"] == "complete" and m["epochs"] == 1 and m["l1_lambda"] == 0.0
    assert m.get("groups") is None and m.get("prune_sparsity") is None
    assert m["n_params"] == 784 * 128 + 128 + 128 * 10 + 10  # regularizer=none counts biases too
    assert m["val_acc"] > 0.3  # it learned (chance: 0.1)
