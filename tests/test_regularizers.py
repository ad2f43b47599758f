import pandas as pd
import pytest
import torch

from sweep.errors import UserError
from sweep.models.builtin import mlp
from sweep.sparsity.regularizers import Regularizer
from sweep.training.train import flatten_parameters


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


# ---- the group lasso -------------------------------------------------------------------


def _bound(reg, model):
    flat, grad, k = flatten_parameters(model, reg.bind(model))
    return flat[:k], grad[:k]


def _small_mlp():
    torch.manual_seed(0)
    model = mlp(3, 2, [2])
    with torch.no_grad():  # fc1 rows norms: sqrt(.09+.16+0 + .0) = 0.5 and a small one
        model.fc1.weight.copy_(torch.tensor([[0.3, 0.4, 0.0], [0.01, -0.02, 0.02]]))
        model.fc1.bias.copy_(torch.tensor([0.0, 0.0]))
        model.fc2.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        model.fc2.bias.copy_(torch.tensor([0.1, -0.1]))
    return model


def test_group_prox_is_the_block_soft_threshold_in_closed_form():
    from sweep.sparsity.regularizers import GroupLasso

    model = _small_mlp()
    reg = GroupLasso(0.0, 0.0, True, "all", group=0.5, groups="neurons")
    w, _ = _bound(reg, model)
    reg.prox_(w, lr=0.1)  # threshold lr * group * sqrt(|g|) = 0.05 * sqrt(4): rows + bias
    t = 0.05 * 2.0
    row0 = torch.tensor([0.3, 0.4, 0.0]) * (1 - t / 0.5)  # norm 0.5 -> scaled by 0.8
    torch.testing.assert_close(model.fc1.weight[0], row0)
    assert torch.equal(model.fc1.weight[1], torch.zeros(3))  # norm 0.03 < t: exactly zero
    assert torch.equal(model.fc1.bias, torch.zeros(2))
    # the output layer's rows are the classes: no group, untouched
    assert torch.equal(model.fc2.weight, torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
    # size_weighted=False: threshold 0.05, the small row still goes, row 0 scaled by 0.9
    model = _small_mlp()
    reg = GroupLasso(0.0, 0.0, True, "weights", group=0.5, size_weighted=False)
    w, _ = _bound(reg, model)
    reg.prox_(w, lr=0.1)
    torch.testing.assert_close(model.fc1.weight[0], torch.tensor([0.3, 0.4, 0.0]) * 0.9)
    assert not model.fc1.weight[1].any()


def test_input_groups_are_the_first_layers_columns_and_sparse_group_nests_the_prox():
    from sweep.sparsity.regularizers import GroupLasso

    model = _small_mlp()
    reg = GroupLasso(0.05, 0.0, True, "weights", group=0.2, groups="inputs")
    w, _ = _bound(reg, model)
    before = model.fc1.weight.detach().clone()
    reg.prox_(w, lr=1.0)
    # elementwise soft-threshold at 0.05 first, then each column's block threshold
    # 0.2 * sqrt(2) (columns have 2 entries)
    soft = torch.sign(before) * (before.abs() - 0.05).clamp(min=0)
    norms = soft.norm(dim=0)
    expected = soft * (1 - 0.2 * 2**0.5 / norms).clamp(min=0).nan_to_num(0.0)
    torch.testing.assert_close(model.fc1.weight, expected)
    assert model.fc1.weight[:, 0].tolist() == [0.0, 0.0]  # ||(0.25, 0)|| < 0.28: column gone
    assert model.fc1.weight[0, 1] != 0  # ||(0.35, 0)|| = 0.35 > 0.28: kept, shrunk
    assert reg.columns() == {"group_lambda": 0.2, "groups": "inputs"}


def test_group_penalty_value_and_subgradient_match_autograd():
    from sweep.sparsity.regularizers import GroupLasso

    model = _small_mlp()
    reg = GroupLasso(0.01, 0.0, False, "all", group=0.3, groups="both")
    params = reg.select(model)
    fc1w, fc1b = model.fc1.weight, model.fc1.bias
    rows = torch.sqrt((fc1w**2).sum(1) + fc1b**2)
    penalty = 0.3 * (2.0 * rows.sum() + 2**0.5 * fc1w.norm(dim=0).sum())
    penalty = penalty + 0.01 * sum(p.abs().sum() for p in params)
    penalty.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    w, g = _bound(reg, model)
    g.zero_()
    meter = reg.meter(w)
    reg.add_gradient_(w, g, meter)
    assert reg.value(meter) == pytest.approx(float(penalty.detach()))
    assert reg.penalty(w) == pytest.approx(float(penalty.detach()))
    for ours, autograd in zip(model.parameters(), expected):
        torch.testing.assert_close(ours.grad, autograd)


def test_conv_filters_and_input_channels_are_groups():
    from sweep.models.builtin import lenet5
    from sweep.sparsity.regularizers import GroupLasso

    model = lenet5(784, 10, (28, 28))
    reg = GroupLasso(0.0, 0.0, True, "weights", group=1.0, groups="both")
    w, _ = _bound(reg, model)
    kinds = [(tuple(reg.shapes[f.weight]), f.dim, f.size) for f in reg.families]
    assert kinds == [((6, 1, 5, 5), 0, 25), ((16, 6, 5, 5), 0, 150), ((120, 400), 0, 400),
                     ((84, 120), 0, 120), ((6, 1, 5, 5), 1, 150)]  # fmt: skip
    reg.prox_(w, lr=10.0)  # a huge threshold: every group goes
    assert not model.conv2.weight.any() and not model.fc1.weight.any()
    assert model.fc3.weight.any()  # the classes are no group


def test_group_lasso_refuses_bad_input_and_models_without_its_groups():
    from sweep.sparsity.regularizers import GroupLasso

    with pytest.raises(UserError, match="group_lambda must be >= 0"):
        GroupLasso(0.0, 0.0, True, "all", group=-1.0)
    with pytest.raises(UserError, match="regularizer.groups must be one of neurons, inputs, both"):
        GroupLasso(0.0, 0.0, True, "all", group=1.0, groups="rows")
    with pytest.raises(UserError, match="groups=neurons finds no hidden Linear/Conv layer"):
        GroupLasso(0.0, 0.0, True, "all", group=1.0).bind(mlp(4, 2, []))
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    with pytest.raises(UserError, match="first layer with parameters is BatchNorm1d"):
        GroupLasso(0.0, 0.0, True, "all", group=1.0, groups="inputs").bind(model)


def test_for_finetuning_turns_the_sparsity_terms_off_and_keeps_the_selection():
    from sweep.sparsity.regularizers import GroupLasso

    reg = GroupLasso(1e-3, 1e-4, True, ["Linear"], group=1e-2, groups="both")
    tune = reg.for_finetuning()
    assert type(tune) is Regularizer and (tune.l1, tune.l2, tune.params) == (0.0, 1e-4, "Linear")
    model = mlp(4, 2, [3])
    assert tune.select(model) == reg.select(model)


# ---- the group lasso as feature selection on a table (breast cancer) ------------------------


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory):
    """scikit-learn's breast cancer table written to a CSV and read as `data=csv` reads it."""
    from sklearn.datasets import load_breast_cancer

    from sweep.data.tables import load_csv

    path = tmp_path_factory.mktemp("bc") / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    return load_csv(0, str(path), "target")


def _fit_table(data, reg, hidden, epochs=150):
    """Full-batch proximal SGD at lr 0.25 (the full_batch recipe's), as data=csv trains."""
    from sweep.training.train import fit

    torch.manual_seed(0)
    model = mlp(data.n_inputs, data.n_classes, hidden)
    opt = torch.optim.SGD(model.parameters(), lr=0.25)
    fit(model, data, reg, opt, epochs=epochs, batch_size=10**6, seed=0, log_every=10**6)
    with torch.no_grad():
        acc = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    return model, int(model.fc1.weight.ne(0).any(0).sum()), acc


def test_group_lasso_on_the_inputs_of_a_linear_model_selects_as_well_as_l1(breast_cancer):
    """Two classes: the logits' difference is what counts, and both penalties are smallest
    with w0 = -w1 for a feature's two weights, where |w0| + |w1| = sqrt(2) * ||(w0, w1)||:
    l1_prox at lambda and the size-weighted group lasso at lambda have the same optimum. On
    the way there (a fixed budget of steps) the group lasso drops a feature's two weights
    together, so it keeps fewer features at the same accuracy; its edge in the optimum
    (tying a feature's per-class weights) shows only with more than two classes."""
    from sweep.sparsity.regularizers import GroupLasso

    for lam in (0.01, 0.03, 0.1):
        _, k_l1, acc_l1 = _fit_table(breast_cancer, Regularizer(lam, 0, True, "weights"), [])
        group = GroupLasso(0, 0, True, "weights", group=lam, groups="inputs")
        _, k_group, acc_group = _fit_table(breast_cancer, group, [])
        # no more features than l1_prox keeps, at no lower accuracy (measured, 150 steps:
        # 17 vs 20, 11 vs 14, 4 vs 4 features, the same test accuracy at each lambda)
        assert 2 <= k_group <= k_l1 < 30, lam
        assert acc_group >= acc_l1 and acc_group > 0.9, lam


def test_group_lasso_selects_an_mlps_input_features_and_features_csv_names_them(
    breast_cancer, tmp_path
):
    from sweep.sparsity import features
    from sweep.sparsity.regularizers import GroupLasso

    group = GroupLasso(0, 0, True, "weights", group=0.03, groups="inputs")
    model, k, acc = _fit_table(breast_cancer, group, [16])
    assert 2 <= k < 30 and acc > 0.85  # whole features dropped, every hidden neuron's weight
    features.write(model, breast_cancer, tmp_path / "features.csv")
    table = pd.read_csv(tmp_path / "features.csv")
    read = model.fc1.weight.ne(0).any(0)
    assert table["feature"].tolist() == list(breast_cancer.feature_names)
    assert table["selected"].tolist() == read.tolist() and table["selected"].sum() == k
    assert (table.loc[~table["selected"], "nnz"] == 0).all()  # a dropped feature: a zero column
    assert (table.loc[table["selected"], "nnz"] > 0).all()
