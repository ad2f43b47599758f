"""Pruning and fine-tuning on real digits data: masks hold, rounds land on their targets,
and a row says what the model was before pruning and what it is after."""

import json
import shlex

import pandas as pd
import pytest
import torch

from conftest import run_cli, write_mnist_like
from sweep.data.datasets import load_digits
from sweep.errors import UserError
from sweep.models.builtin import mlp
from sweep.sparsity import pruning
from sweep.sparsity.pruning import Pruner
from sweep.sparsity.regularizers import Regularizer
from sweep.training.train import fit


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)


def test_round_targets_grow_geometrically_and_end_exactly_on_the_sparsity():
    p = Pruner("magnitude", sparsity=0.96, rounds=2, epochs=1)
    assert p.targets() == pytest.approx([0.8, 0.96]) and p.targets()[-1] == 0.96
    assert Pruner("magnitude", sparsity=0.9, rounds=1).targets() == [0.9]
    assert Pruner("threshold", tol=1e-3, rounds=5).rounds == 1  # a threshold has one cut


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_keep_prunes_exactly_the_smallest_weights(scope):
    torch.manual_seed(0)
    params = [torch.randn(40, 10), torch.randn(10, 3)]
    params[0][0, :5] = 0.0  # zeros the training left: pruned first, never revived
    w, sizes = pruning.flat(params), [400, 30]
    keep = Pruner("magnitude", sparsity=0.7, scope=scope).keep(w, sizes, 0.7)
    parts = [w] if scope == "global" else list(w.split(sizes))
    for part, kept in zip(parts, [keep] if scope == "global" else keep.split(sizes)):
        k = round(0.7 * part.numel())
        assert int((~kept).sum()) == k
        assert part.abs()[~kept].max() <= part.abs()[kept].min()  # the cut is by magnitude
    assert not keep[:5].any()


def test_threshold_keeps_what_is_above_tol():
    w = torch.tensor([0.0, 5e-4, -1e-3, 2e-3, -0.5])
    keep = Pruner("threshold", tol=1e-3).keep(w, [5], 0.0)
    assert keep.tolist() == [False, False, False, True, True]


@pytest.mark.parametrize(
    "make_opt,state_keys",
    [
        (
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
            ["momentum_buffer"],
        ),
        (lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-3), ["exp_avg", "exp_avg_sq"]),
        (lambda p: torch.optim.AdamW(p, lr=1e-3), ["exp_avg", "exp_avg_sq"]),
    ],
    ids=["sgd-momentum-wd", "adam-wd", "adamw"],
)
def test_a_mask_holds_through_fine_tuning_and_no_optimizer_state_revives_it(
    digits, make_opt, state_keys
):
    torch.manual_seed(0)
    model = mlp(64, 10, [32])
    reg = Regularizer(0.0, 0.0, False, "weights")
    fit(
        model,
        digits,
        reg,
        make_opt(model.parameters()),
        epochs=5,
        batch_size=64,
        seed=0,
        log_every=5,
    )
    counted = reg.select(model)
    keep = Pruner("magnitude", sparsity=0.8).keep(pruning.flat(counted), [2048, 320], 0.8)
    opt = make_opt(model.parameters())  # fresh state, as a fine-tuning round gets
    result = fit(model, digits, reg, opt, epochs=5, batch_size=64, seed=1, log_every=5, keep=keep)
    w = pruning.flat(counted)
    assert result["status"] == "complete" and result["val_acc"] > 0.5
    assert int((w == 0).sum()) == round(0.8 * w.numel())  # exactly the pruned ones
    assert torch.equal(w != 0, keep)  # and every kept weight is still alive
    for key in state_keys:
        state = pruning.flat([opt.state[p][key] for p in counted])
        assert not state[~keep].any(), key  # nothing that could move a pruned weight
        assert state[keep].any(), key


def test_bad_prune_options_are_user_errors():
    with pytest.raises(UserError, match=r"prune.sparsity must be in \[0, 1\), got 1.5"):
        Pruner("magnitude", sparsity=1.5)
    with pytest.raises(UserError, match="prune.rounds must be an integer >= 1"):
        Pruner("magnitude", sparsity=0.5, rounds=0)
    with pytest.raises(UserError, match="prune.scope must be one of global, layer"):
        Pruner("magnitude", sparsity=0.5, scope="tensor")
    with pytest.raises(UserError, match="prune.lr_scale must be > 0"):
        Pruner("threshold", lr_scale=0)


def test_iterative_pruning_run_reaches_the_target_and_reports_before_and_after(tmp_path):
    proc = run_cli(
        tmp_path, "regularizer=none", "regularizer.params=weights", "prune=magnitude",
        "prune.sparsity=0.9", "prune.rounds=3", "prune.epochs=20", "prune.lr_scale=1",
        "train.epochs=40",
        "hydra.run.dir=out",
    )  # fmt: skip
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    n = 64 * 128 + 128 * 10
    assert m["n_params"] == n and m["nnz"] == n - round(0.9 * n)
    assert m["sparsity"] == round(0.9 * n) / n
    assert m["prune"] == "magnitude" and m["prune_rounds"] == 3 and m["prune_sparsity"] == 0.9
    assert m["trained_sparsity"] == 0.0 and m["trained_nnz"] == n and m["epochs"] == 40
    assert m["trained_val_acc"] > 0.8 and m["val_acc"] > 0.8
    assert 0 <= m["oneshot_test_acc"] <= 1
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    zeros = sum(int((state[k] == 0).sum()) for k in ("fc1.weight", "fc2.weight"))
    assert zeros == round(0.9 * n)  # model.pt is the final, pruned model
    out = proc.stdout + proc.stderr
    rounds = [ln.split("): ")[1].split(" of")[0] for ln in out.splitlines() if "prune round" in ln]
    expected = [1 - 0.1 ** (1 / 3), 1 - 0.1 ** (2 / 3), 0.9]  # a tenth of the rest each round
    assert [float(r) for r in rounds] == pytest.approx(expected, abs=1e-4)


def test_pruning_without_fine_tuning_measures_the_pruned_model(tmp_path):
    run_cli(tmp_path, "prune=magnitude", "prune.sparsity=0.9", "prune.epochs=0",
            "train.epochs=30", "hydra.run.dir=out")  # fmt: skip
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["val_acc"] == m["oneshot_val_acc"] and m["test_acc"] == m["oneshot_test_acc"]
    assert m["val_acc"] != m["trained_val_acc"] and m["train_loss"] == m["trained_train_loss"]
    assert m["sparsity"] == pytest.approx(0.9, abs=1e-4)


def test_threshold_pruning_zeroes_what_l1_shrank(tmp_path):
    run_cli(tmp_path, "prune=threshold", "sparsity.tol=5e-3", "l1_lambda=1e-3",
            "train.epochs=30", "prune.epochs=2", "hydra.run.dir=out")  # fmt: skip
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["prune"] == "threshold" and "prune_sparsity" not in m
    assert m["sparsity"] == pytest.approx(m["trained_sparsity_tol"])  # every |w| <= tol is gone
    assert m["sparsity"] > m["trained_sparsity"]


@pytest.fixture
def fashion_like(tmp_path):
    """Small real images (digits pixels in 28x28 IDX files) where data=fashion_mnist looks."""
    write_mnist_like(tmp_path / "data" / "FashionMNIST" / "raw", n_train=1200, n_test=300)
    return ["data.root=data", "data.fallback_dir=null", "data.val_fraction=0.2"]


@pytest.mark.slow
def test_the_frontier_preset_composes_and_runs_one_model_and_a_sweep(tmp_path, fashion_like):
    job = run_cli(tmp_path, "experiment=fashion_frontier", "--cfg", "job").stdout
    for line in ("momentum: 0.9", "lr: 0.05", "_target_: sweep.training.schedules.cosine",
                 "method: magnitude", "params: weights", "epochs: 15"):  # fmt: skip
        assert line in job, line
    run_cli(tmp_path, "experiment=fashion_frontier", "prune.sparsity=0.9", *fashion_like,
            "train.epochs=2", "prune.epochs=1", "hydra.run.dir=one")  # fmt: skip
    m = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert (m["data"], m["schedule"], m["prune"]) == ("fashion_mnist", "cosine", "magnitude")
    assert m["sparsity"] == pytest.approx(0.9, abs=1e-4) and m["n_params"] == 784 * 128 + 1280
    run_cli(tmp_path, "-m", "experiment=fashion_frontier", *fashion_like, "train.epochs=1",
            "prune.epochs=1", "prune.rounds=1", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.study_name=frontier")  # fmt: skip
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "frontier" / "results.csv")
    assert len(df) == 2 and df["pareto"].any()
    assert df["prune_sparsity"].between(0.5, 0.99).all()
    assert (df["sparsity"] >= df["prune_sparsity"] - 1e-4).all()
    assert df["overrides"].str.contains("prune.sparsity=").all()
    row = df.iloc[1]  # a pruned, fine-tuned row is still reproduced by its overrides alone
    run_cli(tmp_path, *shlex.split(row["overrides"]), "hydra.run.dir=repro")
    again = json.loads((tmp_path / "repro" / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "sparsity", "nnz", "trained_val_acc", "oneshot_val_acc"):
        assert again[key] == row[key], key


@pytest.mark.slow
def test_lenet5_trains_on_real_images_and_refuses_8x8(tmp_path, fashion_like):
    run_cli(tmp_path, "model=lenet5", "data=fashion_mnist", *fashion_like, "train.epochs=30",
            "optimizer.lr=0.05", "optimizer.momentum=0.9", "regularizer.params=weights",
            "prune=magnitude", "prune.sparsity=0.5", "prune.epochs=1",
            "hydra.run.dir=le")  # fmt: skip
    m = json.loads((tmp_path / "le" / "metrics.json").read_text())
    weights = 6 * 25 + 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    assert m["model"] == "lenet5" and m["n_params"] == weights
    assert m["trained_val_acc"] > 0.6 and m["val_acc"] > 0.6  # chance is 0.1
    assert m["active_inputs"] is None and m["n_inputs"] == 784  # a conv first layer: no mask
    layers = pd.read_csv(tmp_path / "le" / "layers.csv").set_index("layer")
    assert list(layers.index) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight",
                                  "fc3.weight"]  # fmt: skip
    assert layers.loc["conv2.weight", "sparsity"] > 0  # a global cut reaches the convolutions
    assert m["nnz"] == weights - round(0.5 * weights)
    run_cli(tmp_path, "-m", "model=lenet5", "data=fashion_mnist", *fashion_like, "train.epochs=1",
            "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=le")  # fmt: skip
    [row] = pd.read_csv(tmp_path / "outputs" / "sweeps" / "le" / "results.csv").to_dict("records")
    assert row["model"] == "lenet5" and row["status"] == "complete"
    proc = run_cli(tmp_path, "model=lenet5", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out
    assert "model=lenet5 needs 28x28 single-channel images" in out
    assert "got examples of shape (8, 8)" in out


# ---- prune=neurons ---------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_neuron_pruning_removes_the_smallest_norm_units_never_the_classes(scope):
    from sweep.sparsity.pruning import NeuronPruner

    torch.manual_seed(0)
    model = mlp(20, 5, [40, 10])
    with torch.no_grad():
        model.fc1.weight[:8] *= 0.01  # 8 small neurons in fc1
        model.fc2.weight[:, 30] = 0.0  # fc1's neuron 30 feeds nothing: dead already
    pruner = NeuronPruner("neurons", sparsity=0.5, scope=scope)
    cut = pruner.removed(model, 0.5)
    assert [len(c) for c in cut] == [40, 10]  # hidden layers only: fc3's rows are the classes
    assert int(sum(c.sum() for c in cut)) == 25  # half of the 50 hidden units
    assert cut[0][:8].all() and cut[0][30]  # the smallest first, and the dead one
    if scope == "layer":
        assert [int(c.sum()) for c in cut] == [20, 5]
    counted = Regularizer(0, 0, False, "weights").select(model)
    keep = pruner.mask(model, counted, 0.5)
    params = pruner.held(model, counted)
    assert keep.numel() == sum(p.numel() for p in model.parameters())
    masks = dict(zip([id(p) for p in params], keep.split([p.numel() for p in params])))
    w1 = masks[id(model.fc1.weight)].view(40, 20)
    assert not w1[cut[0]].any() and w1[~cut[0]].all()
    assert not masks[id(model.fc1.bias)][cut[0]].any()  # a removed neuron's bias too
    assert not masks[id(model.fc2.weight)].view(10, 40)[:, cut[0]].any()  # and what it feeds
    assert masks[id(model.fc3.bias)].all()


def test_input_pruning_removes_the_smallest_columns_in_the_rounds_and_only_of_a_linear():
    from sweep.models.builtin import lenet5
    from sweep.sparsity.pruning import NeuronPruner

    torch.manual_seed(0)
    model = mlp(20, 5, [40])
    with torch.no_grad():
        model.fc1.weight[:, :4] *= 0.01  # 4 weak inputs
        model.fc1.weight[:, 7] = 0.0  # input 7 unread already: removed first
    pruner = NeuronPruner("neurons", sparsity=0.5, rounds=2, inputs=0.25)
    assert pruner.columns()["prune_inputs"] == 0.25
    level = pruner.targets()[0]  # the first round: 1 - sqrt(0.5) of the neurons
    assert pruner.input_level(level) == pytest.approx(0.25 * level / 0.5)
    counted = Regularizer(0, 0, False, "weights").select(model)
    params = pruner.held(model, counted)
    for target, removed in ((level, round(0.25 * level / 0.5 * 20)), (0.5, 5)):
        keep = pruner.mask(model, counted, target)
        masks = dict(zip([id(p) for p in params], keep.split([p.numel() for p in params])))
        read = masks[id(model.fc1.weight)].view(40, 20).any(0)
        assert int((~read).sum()) == removed
        assert not read[7] and (removed < 5 or not read[:4].any())  # unread, then the weakest
    assert not pruner.reached(model, counted, 0.5)  # one input unread, five asked
    for bad in (1.0, -0.1, "a"):
        with pytest.raises(UserError, match="prune.inputs must be"):
            NeuronPruner("neurons", sparsity=0.5, inputs=bad)
    with pytest.raises(UserError, match="first layer is a Conv2d; set prune.inputs=0"):
        pruner.check(lenet5(784, 10, (1, 28, 28)))
    with pytest.raises(UserError, match="prune=magnitude removes single weights: set prune.inp"):
        Pruner("magnitude", sparsity=0.5, inputs=0.25)
    assert not Pruner("none", inputs=0.25).active  # a preset's option, unused without pruning


@pytest.mark.parametrize(
    "make_opt",
    [lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
     lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-3)],
    ids=["sgd-momentum-wd", "adam-wd"],
)  # fmt: skip
def test_pruned_neurons_stay_exactly_zero_biases_included_under_fine_tuning(digits, make_opt):
    from sweep.models import compact
    from sweep.sparsity.pruning import NeuronPruner

    torch.manual_seed(0)
    model = mlp(64, 10, [32])
    reg = Regularizer(0.0, 0.0, False, "weights")
    fit(
        model,
        digits,
        reg,
        make_opt(model.parameters()),
        epochs=3,
        batch_size=64,
        seed=0,
        log_every=5,
    )
    pruner = NeuronPruner("neurons", sparsity=0.75, scope="layer")
    keep = pruner.mask(model, reg.select(model), 0.75)
    gone = pruner.removed(model, 0.75)[0]
    opt = make_opt(model.parameters())
    result = fit(model, digits, reg, opt, epochs=3, batch_size=64, seed=1, log_every=5, keep=keep)
    assert result["status"] == "complete" and result["val_acc"] > 0.3  # chance: 0.1
    assert int(gone.sum()) == 24
    assert not model.fc1.weight[gone].any() and not model.fc1.bias[gone].any()
    assert not model.fc2.weight[:, gone].any()
    assert model.fc1.bias[~gone].all() and model.fc1.weight[~gone].any(1).all()
    for key, state in opt.state[model.fc1.bias].items():
        if key != "step":
            assert not state[gone].any(), key  # nothing that could move a pruned bias
    small, kept = compact.compact(model, (8, 8))
    assert small.fc1.out_features == 8
    torch.testing.assert_close(small(compact.select_inputs(digits.x_val, kept)),
                               model(digits.x_val))  # fmt: skip


def test_neuron_pruning_run_reports_the_compact_model(tmp_path):
    run_cli(tmp_path, "regularizer=group_l1", "group_lambda=1e-3", "prune=neurons",
            "prune.sparsity=0.75", "prune.rounds=2", "prune.epochs=5", "train.epochs=30",
            "optimizer.momentum=0.9", "train.threads=1", "hydra.run.dir=out",
            "prune.inputs=0.25")  # fmt: skip
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["prune"] == "neurons" and m["prune_rounds"] == 2 and m["regularizer"] == "group_l1"
    assert m["group_lambda"] == 1e-3 and m["groups"] == "neurons" and m["l1_lambda"] == 0.0
    assert m["prune_inputs"] == 0.25
    inputs, hidden, classes = map(int, m["compact_shape"].split("-"))
    # 128 * (1 - 0.75) neurons left, and at most 64 * (1 - 0.25) pixels read
    assert hidden == 32 and classes == 10 and inputs <= 48
    assert m["flops"] == inputs * 32 + 32 * 10
    assert m["flops_ratio"] == pytest.approx((64 * 128 + 1280) / m["flops"])
    assert m["groups_removed"] == 96 + 64 - inputs
    assert m["val_acc"] > 0.8
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert int((state["fc1.weight"].abs().sum(1) + state["fc1.bias"].abs() > 0).sum()) == 32
    assert int((state["fc1.weight"] != 0).any(0).sum()) == inputs  # the pixels it reads


def test_neuron_pruning_and_group_lasso_refuse_models_without_their_groups(tmp_path):
    for args, message in [
        (["model=linear", "prune=neurons"], "prune=neurons needs a hidden layer"),
        (["model=linear", "regularizer=group_l1"], "groups=neurons finds no hidden"),
        (["regularizer=group_l1", "group_lambda=-1"], "group_lambda must be >= 0, got -1"),
        (["regularizer=group_l1", "regularizer.groups=rows"], "regularizer.groups must be one of"),
    ]:
        proc = run_cli(tmp_path, *args, "train.epochs=1", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in out, out
        assert message in out and "epoch 1/1" not in out, args  # before any training
