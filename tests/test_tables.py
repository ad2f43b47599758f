"""data=csv and data=npz: real files written here, read as a user's would be."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_iris

from conftest import run_cli
from sweep.data.tables import load_csv, load_npz
from sweep.errors import UserError


@pytest.fixture
def iris_csv(tmp_path):
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame["species"] = bunch.target_names[bunch.target]  # string labels
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    return path


def test_csv_labels_become_classes_and_features_are_standardized_on_train(iris_csv):
    ds = load_csv(seed=0, path=str(iris_csv), target="species")
    assert ds.class_names == ("setosa", "versicolor", "virginica") and ds.n_classes == 3
    assert ds.feature_names == (
        "sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)",
    )  # fmt: skip
    assert ds.image_shape == (4,) and ds.n_inputs == 4
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (96, 24, 30)
    assert torch.bincount(ds.y_test).tolist() == [10, 10, 10]  # stratified
    # the training split's statistics, not the whole table's: train is exactly standard
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(ds.x_train.std(0), torch.ones(4), atol=1e-5)
    assert not torch.allclose(ds.x_test.mean(0), torch.zeros(4), atol=1e-3)
    # the label of a row is its species
    raw = pd.read_csv(iris_csv)
    raw_ds = load_csv(seed=0, path=str(iris_csv), target="species", standardize=False)
    first = raw_ds.x_test[0].numpy()
    match = raw[np.isclose(raw.iloc[:, :4].to_numpy(), first).all(axis=1)]
    assert match["species"].iloc[0] == ds.class_names[int(ds.y_test[0])]


def test_csv_feature_selection_seeds_and_the_fixed_test_split(iris_csv):
    a = load_csv(seed=0, path=str(iris_csv), target="species", features=["petal width (cm)"])
    b = load_csv(seed=1, path=str(iris_csv), target="species", features=["petal width (cm)"])
    assert a.feature_names == ("petal width (cm)",) and a.x_train.shape == (96, 1)
    raw_a = load_csv(seed=0, path=str(iris_csv), target="species", standardize=False)
    raw_b = load_csv(seed=1, path=str(iris_csv), target="species", standardize=False)
    assert torch.equal(raw_a.x_test, raw_b.x_test)  # the test hold-out never moves
    assert not torch.equal(raw_a.x_val, raw_b.x_val)  # the validation split follows the seed
    assert not torch.equal(a.x_train, b.x_train)


def write(tmp_path, text: str, name: str = "t.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def rows(n: int, label=lambda i: "ab"[i % 2]) -> str:
    return "".join(f"{i},{i * 2.5},{label(i)}\n" for i in range(n))


@pytest.mark.parametrize(
    "text,kwargs,message",
    [
        ("", {}, "is empty; it needs a header row"),
        ("a,b,label\n", {}, "has a header but no data rows"),
        ("a,b,label\n" + rows(20), {"target": "class"},
         "data.target=class is not a column of"),
        ("a,b,label\n" + rows(20), {"features": ["a", "c"]},
         "data.features names c, not columns of"),
        ("a,b,label\n" + rows(20).replace("5.0,", "five,", 1), {},
         "feature column b of {path} is not numeric ('five' in data row 3); encode it"),
        ("a,b,label\n" + rows(20).replace("5.0,", ",", 1), {},
         "feature column b of {path} has 1 empty values (first in data row 3)"),
        ("a,b,label\n" + rows(20, lambda i: "a"), {}, "has one class only (a)"),
        ("a,b,label\n" + rows(20, lambda i: i * 0.37), {}, "holds non-integer numbers"),
        ("a,b,label\n" + rows(20, lambda i: "b" if i else "a"), {},
         "cannot split 20 rows into stratified train/validation/test sets"),
    ],
)  # fmt: skip
def test_bad_csv_files_get_one_clear_line(tmp_path, text, kwargs, message):
    path = write(tmp_path, text)
    args = {"target": "label", **kwargs}
    with pytest.raises(UserError) as err:
        load_csv(seed=0, path=path, **args)
    assert message.format(path=path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_csv_and_missing_keys(tmp_path):
    with pytest.raises(UserError, match="data=csv needs data.path="):
        load_csv(seed=0, path=None, target="y")
    with pytest.raises(UserError, match="no such file"):
        load_csv(seed=0, path=str(tmp_path / "nope.csv"), target="y")
    with pytest.raises(UserError, match="data=csv needs data.target="):
        load_csv(seed=0, path=write(tmp_path, "a,y\n1,2\n"), target=None)


def test_an_edited_csv_is_read_again(tmp_path):
    path = write(tmp_path, "a,b,label\n" + rows(40))
    assert load_csv(seed=0, path=path, target="label").n_classes == 2
    write(tmp_path, "a,b,label\n" + rows(60, lambda i: "abc"[i % 3]))
    assert load_csv(seed=0, path=path, target="label").n_classes == 3


def test_npz_arrays_with_a_given_test_set_and_names(tmp_path):
    bunch = load_breast_cancer()
    x, y = bunch.data, bunch.target_names[bunch.target]  # string labels
    path = tmp_path / "bc.npz"
    np.savez(path, x=x[:400], y=y[:400], x_test=x[400:], y_test=y[400:],
             feature_names=bunch.feature_names)  # fmt: skip
    ds = load_npz(seed=0, path=str(path))
    assert ds.class_names == ("benign", "malignant")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (320, 80, 169)
    assert ds.feature_names == tuple(bunch.feature_names)
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(30), atol=1e-4)
    # no test rows held out: the given ones, in order, with their labels
    assert ds.y_test.tolist() == [0 if v == "benign" else 1 for v in y[400:]]


def test_npz_without_test_arrays_holds_out_images_in_their_shape(tmp_path):
    path = tmp_path / "img.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((100, 3, 4)), y=np.arange(100) % 4)
    ds = load_npz(seed=0, path=str(path), standardize=False)
    assert ds.image_shape == (3, 4) and ds.n_inputs == 12 and ds.n_classes == 4
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (64, 16, 20)
    assert ds.feature_names[:2] == ("x0", "x1") and len(ds.feature_names) == 12


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"x": np.zeros((10, 2))}, "has no array 'y' (it has: x)"),
        ({"x": np.zeros((10, 2)), "y": np.zeros(9)}, "y has shape (9,); it needs one label"),
        ({"x": np.zeros(10), "y": np.zeros(10)}, "x has shape (10,); it needs one row"),
        ({"x": np.array([["a", "b"]] * 10), "y": np.arange(10) % 2}, "x holds <U1 values"),
        ({"x": np.zeros((10, 2)), "y": np.zeros(10), "x_test": np.zeros((4, 2))},
         "has only one of x_test, y_test"),
        ({"x": np.zeros((10, 2)), "y": np.arange(10) % 2, "x_test": np.zeros((4, 3)),
          "y_test": np.zeros(4)}, "x_test rows have shape (3,), x rows (2,)"),
        ({"x": np.zeros((10, 2)), "y": np.arange(10) % 2, "x_test": np.zeros((4, 2)),
          "y_test": np.full(4, 7)}, "y_test has classes that y has not (7)"),
        ({"x": np.zeros((10, 2)), "y": np.ones(10)}, "has one class only (1)"),
        ({"x": np.zeros((10, 2)), "y": np.array([{}] * 10, dtype=object)},
         "holds Python objects, which l1sweep does not unpickle"),
    ],
)  # fmt: skip
def test_bad_npz_files_get_one_clear_line(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError) as err:
        load_npz(seed=0, path=str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_npz(tmp_path):
    path = write(tmp_path, "x,y\n", "fake.npz")
    with pytest.raises(UserError, match="is not a .npz file"):
        load_npz(seed=0, path=path)


def test_csv_run_end_to_end_and_its_bad_file_error(tmp_path, iris_csv):
    run_cli(tmp_path, "data=csv", f"data.path={iris_csv}", "data.target=species",
            "model=linear", "train.epochs=20", "hydra.run.dir=outputs/iris")  # fmt: skip
    features = pd.read_csv(tmp_path / "outputs" / "iris" / "features.csv")
    assert features["feature"].tolist()[0] == "sepal length (cm)" and len(features) == 4
    proc = run_cli(tmp_path, "data=csv", f"data.path={iris_csv}", "data.target=kind",
                   check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out
    assert f"data.target=kind is not a column of {iris_csv}; its columns: sepal length" in out


# ---- non-finite values: refused wherever they sit, by the Dataset every loader makes -------


def _table(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    frame["y"] = np.arange(n) % 2
    return frame


def _split_of_rows(tmp_path, frame: pd.DataFrame) -> dict[str, int]:
    """The table's row numbers in each split, as load_csv splits the table (read from a copy
    whose column `a` numbers the rows)."""
    marked = frame.assign(a=np.arange(len(frame), dtype=float))
    path = tmp_path / "marked.csv"
    marked[["a", "y"]].to_csv(path, index=False)
    data = load_csv(seed=0, path=str(path), target="y", standardize=False)
    return {p: getattr(data, f"x_{p}")[:, 0].long().tolist() for p in ("train", "val", "test")}


def test_inf_and_nan_anywhere_in_a_csv_are_one_line_naming_columns_and_rows(tmp_path):
    frame = _table()
    where = _split_of_rows(tmp_path, frame)
    # spread over the splits: two training rows, a validation row, two test rows
    bad_rows = [where["train"][0], where["val"][0], where["test"][0], where["train"][5],
                where["test"][3]]  # fmt: skip
    frame.loc[bad_rows[:4], "b"] = np.inf
    frame.loc[bad_rows[4], "c"] = -np.inf
    frame.loc[bad_rows[0], "c"] = -np.inf  # a second bad cell in a row already counted
    path = tmp_path / "inf.csv"
    frame.to_csv(path, index=False)
    assert "inf" in path.read_text()  # written as a user's tool writes it
    per_split = {p: sum(r in bad_rows for r in rows) for p, rows in where.items()}
    assert per_split == {"train": 2, "val": 1, "test": 2}
    for standardize in (True, False):
        with pytest.raises(UserError) as err:
            load_csv(seed=0, path=str(path), target="y", standardize=standardize)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{path}: ")
        split = ", ".join(f"{per_split[p]} {p}" for p in ("train", "val", "test"))
        assert f"the data holds -inf and inf values in 5 rows ({split}), in columns b, c" in message
        assert "fix or drop those rows" in message


def test_a_non_finite_label_in_a_csv_or_npz_is_refused(tmp_path):
    frame = _table()
    frame["y"] = frame["y"].astype(float)
    frame.loc[7, "y"] = np.inf
    frame.to_csv(tmp_path / "label.csv", index=False)
    with pytest.raises(UserError, match=r"data.target=y of .* holds inf or -inf in 1 rows"):
        load_csv(seed=0, path=str(tmp_path / "label.csv"), target="y")
    y = (np.arange(40) % 2).astype(float)
    y[5] = -np.inf
    np.savez(tmp_path / "label.npz", x=np.ones((40, 2)), y=y)
    with pytest.raises(UserError, match=r"y of .* holds inf or -inf in 1 rows"):
        load_npz(seed=0, path=str(tmp_path / "label.npz"))


def test_nan_in_an_npz_test_set_is_refused_before_it_is_scored(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3))
    x_test = np.ones((10, 3))
    x_test[4, 2] = np.nan
    y, y_test = np.arange(40) % 2, np.arange(10) % 2
    np.savez(tmp_path / "a.npz", x=x, y=y, x_test=x_test, y_test=y_test,
             feature_names=np.array(["p", "q", "r"]))  # fmt: skip
    with pytest.raises(UserError) as err:
        load_npz(seed=0, path=str(tmp_path / "a.npz"))
    assert "the data holds NaN values in 1 rows (1 test), in column r;" in str(err.value)


def test_a_users_own_dataset_is_checked_too():
    """A loader of the user's own returns a Dataset: the same check, images named by position."""
    from sweep.data.datasets import Dataset

    x = torch.zeros(6, 8, 8)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    bad[4, 2, 3] = float("inf")
    with pytest.raises(UserError) as err:
        Dataset(x, y, bad, y, x, y, (8, 8), 2)
    assert str(err.value).startswith(
        "the data holds NaN and inf values in 2 rows (2 val), in column input (2, 3);"
    )
    with pytest.raises(UserError, match=r"in 1 rows \(1 train\), in column the labels"):
        Dataset(x, torch.tensor([0.0, 1, float("nan"), 1, 0, 1]), x, y, x, y, (8, 8), 2)
    Dataset(x, y, x, y, x, y, (8, 8), 2)  # finite: accepted


def test_a_sweep_on_a_table_with_inf_stops_before_training(tmp_path):
    frame = _table()
    frame.loc[[3, 41], "b"] = np.inf
    frame.to_csv(tmp_path / "inf.csv", index=False)
    for mode in (["-m", "hydra.sweeper.study_name=inf"], ["hydra.run.dir=out"]):
        proc = run_cli(tmp_path, *mode, "data=csv", "data.path=inf.csv", "data.target=y",
                       "model=linear", check=False)  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in out, out
        [line] = [ln for ln in out.splitlines() if "error:" in ln]
        assert "inf.csv: the data holds inf values in 2 rows" in line and "column b;" in line
        assert "epoch" not in out  # nothing trained
    assert not list(tmp_path.glob("outputs/sweeps/inf/trial_*"))
    assert not (tmp_path / "out" / "metrics.json").exists()


# ---- a value that -m turned into a sweep list --------------------------------------------


def test_a_path_with_a_comma_under_m_says_how_to_quote_it(tmp_path, iris_csv):
    (tmp_path / "a,b.csv").write_bytes(iris_csv.read_bytes())
    args = ["-m", "data=csv", "data.target=species", "train.epochs=1",
            "hydra.sweeper.n_trials=1"]  # fmt: skip
    proc = run_cli(tmp_path, *args, "data.path=a,b.csv", "hydra.sweeper.study_name=c",
                   check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out
    [line] = [ln for ln in out.splitlines() if "error:" in ln]
    assert "data.path=a,b.csv is a sweep list of 2 values" in line
    assert "quote it: 'data.path=\"a,b.csv\"' (or data.path='\"a,b.csv\"')" in line
    assert "needs data.path" not in line
    assert not list(tmp_path.glob("outputs/sweeps/c/trial_*"))
    # both quotings the message shows, as the shell passes them, are the one path to Hydra,
    # and the sweep runs with it
    from hydra.core.override_parser.overrides_parser import OverridesParser

    quoted = ['data.path="a,b.csv"', "data.path='a,b.csv'"]
    assert [o.value() for o in OverridesParser.create().parse_overrides(quoted)] == ["a,b.csv"] * 2
    run_cli(tmp_path, *args, quoted[0], "hydra.sweeper.study_name=q")
    rows = pd.read_csv(tmp_path / "outputs" / "sweeps" / "q" / "results.csv")
    assert rows["status"].tolist() == ["complete"]
    # a data config with a default path: the trial's half of the split path names the whole
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "mine.yaml").write_text(
        "defaults:\n  - csv\n  - _self_\npath: iris.csv\ntarget: species\n"
    )
    proc = run_cli(tmp_path, "--config-dir", "conf", *args, "data=mine", "data.path=a,b.csv",
                   "hydra.sweeper.study_name=d", check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "a,b.csv exists: under -m a comma separates values" in out


def test_a_required_key_given_as_a_search_space_says_so(tmp_path, iris_csv):
    proc = run_cli(tmp_path, "-m", "data=csv", f"data.path={iris_csv}",
                   "data.target=choice(species,kind)", "hydra.sweeper.study_name=t",
                   check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out
    [line] = [ln for ln in out.splitlines() if "error:" in ln]
    assert (
        "data.target=choice(species,kind) is a search space, but data.target must have one" in line
    )
