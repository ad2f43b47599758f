"""Numbers and pictures that say what they mean: the front's outline in front_points.png
encloses the hypervolume printed beside it; hypervolumes are measured above chance on the
data's own classes (0.5 for two), and the summary says which and where it learned it; a
missing data set's error names what helps; the digits split is what its comment says."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_cli
from sweep import analyze
from sweep.analysis.hypervolume import front_points_figure, hypervolume_report, sweep_points
from sweep.errors import UserError
from sweep.results import points
from sweep.results.hypervolume import hypervolume, kept_axis, outline, path_hypervolume


def enclosed(xy: np.ndarray) -> float:
    """The area a closed polygon (its first vertex repeated last) encloses: the shoelace."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])))


def point_frame(name: str, rng: np.random.Generator, n: int, **extra) -> pd.DataFrame:
    return pd.DataFrame({
        "sweep": name, "trial": range(n), "kind": "trial",
        "sparsity": rng.uniform(0.0, 0.995, n), "val_acc": rng.uniform(0.05, 0.95, n),
        "test_acc": rng.uniform(0.05, 0.95, n), **extra,
    })  # fmt: skip


def test_the_outline_encloses_exactly_the_hypervolume():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        pts = [*zip(rng.uniform(0, 3, n).round(1), rng.uniform(0, 1, n).round(2))]
        pts += [(0.0, 0.97)] if rng.random() < 0.3 else []  # the dense model: x = 0
        pts += [(math.nan, 0.9)] if rng.random() < 0.2 else []
        ref = (0.0, float(rng.choice([0.1, 0.5])))
        line = outline(pts, ref)
        area = enclosed(np.array(line)) if line else 0.0
        assert area == pytest.approx(hypervolume(pts, ref), abs=1e-12), (pts, ref)
    # the staircase's steps drop at each point's own x: what the point dominates, no more
    assert outline([(2.0, 0.5), (1.0, 0.8), (0.5, 0.6), (3.0, 0.05)], (0.0, 0.1)) == [
        (0.0, 0.8), (1.0, 0.8), (1.0, 0.5), (2.0, 0.5), (2.0, 0.1), (0.0, 0.1), (0.0, 0.8),
    ]  # fmt: skip


def test_front_points_png_draws_the_area_its_legend_prints():
    """`where="post"` drew each point's accuracy on to the next point's x: on an axis both
    objectives maximize, that staircase enclosed the area up to the next point too, more than
    the hypervolume in the legend."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    pts = pd.concat([point_frame("ten", rng, 15, n_classes=10),
                     point_frame("two", rng, 15, n_classes=2)], ignore_index=True)  # fmt: skip
    fig = front_points_figure(pts)
    lines = {ln.get_label().split(" ")[0]: ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"ten", "two"}
    for name, chance in (("ten", 0.1), ("two", 0.5)):
        line, part = lines[name], pts[pts["sweep"] == name].reset_index(drop=True)
        printed = float(re.search(r"\((\d\.\d{4}) above chance (\S+)\)", line.get_label())[1])
        assert f"above chance {chance:g})" in line.get_label()
        hv = points.front_figures(part, (0.0, chance))["hypervolume"]
        assert printed == pytest.approx(hv, abs=5e-5)
        assert enclosed(np.asarray(line.get_xydata())) == pytest.approx(hv, abs=1e-12)
        # the front's points are the staircase's outer corners
        best = points.front_figures(part, (0.0, chance))["front"]
        corners = {(kept_axis(s), v) for s, v in part.loc[best, ["sparsity", "val_acc"]].values
                   if v > chance}  # fmt: skip
        assert corners <= {tuple(p) for p in line.get_xydata()}
    plt.close(fig)


def test_the_reference_is_chance_on_the_datas_classes_and_the_summary_says_so():
    rng = np.random.default_rng(2)
    two = point_frame("two", rng, 10, n_classes=2, classes_from="recorded in results.csv")
    text = hypervolume_report(two)
    assert ("reference point (0, 0.5) (the dense model's x, and chance: 1 / 2 classes, "
            "recorded in results.csv)") in text  # fmt: skip
    row = text.split("| two ")[1].split("|")
    assert float(row[5]) == pytest.approx(points.front_figures(two, (0, 0.5))["hypervolume"],
                                          abs=1e-4)  # fmt: skip
    assert points.front_figures(two)["hypervolume"] == pytest.approx(
        points.front_figures(two, (0, 0.5))["hypervolume"]  # the points' own classes
    )
    # sweeps of data with different classes: each above its own chance, none over both
    ten = point_frame("ten", rng, 10, n_classes=10, classes_from="from the trials' config")
    text = hypervolume_report(pd.concat([ten, two], ignore_index=True))
    assert ("per sweep: ten: (0, 0.1), 10 classes, from the trials' config; two: (0, 0.5), 2 "
            "classes, recorded in results.csv; all sweeps together: none") in text  # fmt: skip
    assert re.search(r"\| all sweeps \|(\s+\d+ \|){4}\s+nan\s+\|\s+nan\s+\|", text)
    with pytest.raises(ValueError, match="no common reference point"):
        points.front_figures(pd.concat([ten, two]))


def test_a_two_class_sweep_is_measured_above_one_half(tmp_path):
    """A path sweep on a two-class table: the row's path_hypervolume and the analysis' front
    are measured above 0.5, the accuracy of guessing, not 0.1 (chance on ten classes)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    labels = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no")
    pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]).assign(label=labels).to_csv(
        tmp_path / "two.csv", index=False
    )
    run_cli(tmp_path, "-m", "data=csv", "data.path=two.csv", "data.target=label",
            "model=linear", "train.epochs=100", "prune=magnitude", "prune.path=[0.3,0.6]",
            "prune.epochs=20", "objective=path_hypervolume", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.study_name=two")  # fmt: skip
    sweep = tmp_path / "outputs" / "sweeps" / "two"
    results, pts = pd.read_csv(sweep / "results.csv"), pd.read_csv(sweep / "points.csv")
    for t, levels in pts.groupby("trial"):
        hv = results.set_index("trial").loc[t, "path_hypervolume"]
        assert hv == pytest.approx(path_hypervolume(levels.to_dict("records"), 2))
        assert hv != pytest.approx(path_hypervolume(levels.to_dict("records"), 10))
    # the analysis finds the classes in the rows (n_classes) or else in the trials' data
    frame = analyze.load([sweep])
    assert set(sweep_points(frame)["n_classes"]) == {2}
    assert analyze.main([str(sweep), "--no-mask"]) == 0
    summary = (sweep / "summary.md").read_text()
    assert "reference point (0, 0.5) (the dense model's x, and chance: 1 / 2 classes, " in summary
    row = summary.split("| two ")[1].split("|")
    expected = points.front_figures(pts, (0.0, 0.5))["hypervolume"]
    assert float(row[5]) == pytest.approx(expected, abs=1e-4) and expected > 0


def test_unrecorded_classes_are_said_to_be_assumed(tmp_path):
    rng = np.random.default_rng(3)
    part = point_frame("old", rng, 5).assign(status="complete", csv=str(tmp_path / "r.csv"))
    pts = sweep_points(part)  # no n_classes, no trial directory to read a config from
    assert set(pts["n_classes"]) == {10}
    assert (
        "reference point (0, 0.1) (the dense model's x, and chance: 1 / 10 classes, "
        "assumed: neither its rows nor its trials' configs say)"
    ) in hypervolume_report(pts)


def test_a_missing_fashion_mnist_names_what_helps_not_itself(tmp_path, monkeypatch, request):
    import urllib.request

    from sweep.data import datasets

    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # no download, wherever it runs
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    # urlopen builds its shared opener once, with the proxies of that moment: dropped after
    # this test, or every later urlopen in this worker would go to 127.0.0.1:9 (test_dashboard
    # was refused so in CI)
    request.addfinalizer(lambda: urllib.request.install_opener(None))
    nowhere = tmp_path / "debian"
    with pytest.raises(UserError) as e:
        datasets.load_torchvision(seed=0, dataset="FashionMNIST", root=str(tmp_path),
                                  val_fraction=0.1, fallback_dir=str(nowhere))  # fmt: skip
    msg = str(e.value)
    raw = tmp_path.resolve() / "FashionMNIST" / "raw"
    assert msg.startswith(f"FashionMNIST not found in {raw} and could not be downloaded (")
    assert "\n" not in msg and "data=fashion_mnist" not in msg  # not the set that failed
    for helps in ("Download its four IDX files (train-images-idx3-ubyte, train-labels-idx1-"
                  "ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) where a network exists "
                  "and copy them there",
                  f"their .gz files into data.fallback_dir={nowhere} (it does not exist)",
                  "`apt install dataset-fashion-mnist` puts them in "
                  "/usr/share/datasets/fashion-mnist, the default data.fallback_dir",
                  "or use data=digits (scikit-learn's bundled 8x8 digits, offline"):  # fmt: skip
        assert helps in msg, helps
    with pytest.raises(UserError) as e:  # MNIST may suggest Fashion-MNIST, and how to get it
        datasets.load_torchvision(seed=0, dataset="MNIST", root=str(tmp_path), val_fraction=0.1)
    assert "or use data=digits or data=fashion_mnist (`apt install dataset-fashion-mnist`" in str(
        e.value
    )


def test_the_digits_split_is_what_its_comment_says():
    from sweep.data.datasets import load_digits

    text = (REPO / "conf" / "data" / "digits.yaml").read_text()
    said = re.search(r"(\d+) train / (\d+) val / (\d+) test", text)
    data = load_digits(0, 0.2, 0.2, 0)  # the file's fractions and test_seed
    assert "val_fraction: 0.2 " in text and "test_fraction: 0.2\n" in text
    sizes = (len(data.y_train), len(data.y_val), len(data.y_test))
    assert tuple(int(n) for n in said.groups()) == sizes == (1149, 288, 360)
