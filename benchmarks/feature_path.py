"""L1 feature selection: l1sweep's regularization path beside scikit-learn's.

    python benchmarks/feature_path.py [--work DIR] [--plot docs/feature_path.png] [--quick]
                                      [--settings defaults,minibatch,obvious]

Two tables, written as CSV files into the work directory: scikit-learn's bundled breast-cancer
table (569 rows, 30 features, labels benign/malignant) and a synthetic one from
make_classification (1000 rows, 200 features of which the first 10, f0-f9, are informative;
one cluster per class, so that a linear model suits it).
For each, l1sweep runs a grid sweep over l1_lambda with the commands a user would type
(`python -m sweep.run -m data=csv ... model=linear`), and
scikit-learn's L1 logistic regression (saga) is fitted on the very same standardized training
split (the Dataset l1sweep's config builds). Both minimize the same objective:
l1sweep's mean cross-entropy + l1_lambda * sum|W| is scikit-learn's
C * sum(log-loss) + |w|_1 divided by C * n_train, so C = 1 / (l1_lambda * n_train); for two
classes l1sweep's two weight rows reach the same optimum as scikit-learn's one (w1 - w0), and
neither penalizes the intercept.

l1sweep is run with its defaults, which for model=linear with sgd on data=csv are the
full-batch proximal recipe (conf/recipe/full_batch.yaml: every training row in each step, lr
0.25, 8000 steps, L1 on the weights only: ISTA, which converges to the exact L1 optimum), and
with recipe=none, the minibatch defaults of l1sweep's network sweeps (minibatches of 64, lr
0.01, 200 epochs), whose gradient noise leaves weights that the exact optimum has at zero just
off it. `obvious` runs the command a user types first, a TPE sweep of 20 trials over
l1_lambda in [1e-4, 0.3], with the defaults. Each setting is summed up as its best test
accuracy among the points with at most 10 selected features, beside scikit-learn's (its
40-lambda path).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import sweep from this checkout

LAMBDAS = [1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1]
COMMON = ["model=linear"]
SETTINGS = {
    "defaults": [],  # for model=linear on a table: the full-batch recipe
    # batch 64, lr 0.01, data=csv's 200 epochs: the defaults before the recipe, L1 on weights
    "minibatch": ["recipe=none", "regularizer.params=weights"],
}
OBVIOUS = "l1_lambda=tag(log, interval(1e-4, 3e-1))"  # TPE, the default 20 trials
MAX_FEATURES = 10  # "best test accuracy with at most 10 features"


def write_tables(work: Path) -> dict[str, tuple[Path, str, list[str]]]:
    """The two CSV files: name -> (path, target column, truly informative features)."""
    from sklearn.datasets import load_breast_cancer, make_classification

    work.mkdir(parents=True, exist_ok=True)
    bunch = load_breast_cancer(as_frame=True)
    table = bunch.frame.drop(columns="target")
    table["diagnosis"] = bunch.target_names[bunch.target]
    table.to_csv(work / "breast_cancer.csv", index=False)
    x, y = make_classification(
        n_samples=1000, n_features=200, n_informative=10, n_redundant=0, n_repeated=0,
        n_clusters_per_class=1, shuffle=False, random_state=0,
    )  # fmt: skip  # shuffle=False: the informative features are columns 0-9
    synthetic = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    synthetic["y"] = y
    synthetic.to_csv(work / "synthetic.csv", index=False)
    return {
        "breast_cancer": (work / "breast_cancer.csv", "diagnosis", []),
        "synthetic": (work / "synthetic.csv", "y", [f"f{i}" for i in range(10)]),
    }


def data_overrides(csv: Path, target: str) -> list[str]:
    return ["data=csv", f"data.path={csv}", f"data.target={target}"]


def l1sweep_path(
    work: Path,
    name: str,
    csv: Path,
    target: str,
    lambdas: list[float] | None,
    setting: list[str],
) -> pd.DataFrame:
    """Run the grid sweep as a user would; one row per l1_lambda with the selected features.
    lambdas=None: the obvious command's TPE sweep instead (its 20 trials, seed 0)."""
    search = (
        [OBVIOUS]
        if lambdas is None
        else [
            "hydra/sweeper/sampler=grid",
            f"l1_lambda=choice({','.join(map(repr, lambdas))})",
            f"hydra.sweeper.n_trials={len(lambdas)}",
        ]
    )
    args = [
        sys.executable, "-m", "sweep.run", "-m", *data_overrides(csv, target), *COMMON,
        *setting, "train.log_every=100000", *search, f"hydra.sweeper.study_name={name}",
        # one trial at a time on one thread: a full-batch step on a small table is a few small
        # matrix products, and on a shared machine a second torch thread waiting for a busy
        # core made each trial 100x slower (545 s against 3.7 s, measured)
        "hydra.sweeper.n_jobs=1", "train.threads=1",
    ]  # fmt: skip
    proc = subprocess.run(
        args, cwd=work, capture_output=True, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"l1sweep failed:\n{proc.stdout}\n{proc.stderr}")
    rows = pd.read_csv(work / "outputs" / "sweeps" / name / "results.csv")
    selected = [
        pd.read_csv(work / run_dir / "features.csv").query("selected")["feature"].tolist()
        for run_dir in rows["run_dir"]
    ]
    return pd.DataFrame(
        {
            "l1_lambda": rows["l1_lambda"],
            "features": rows["active_inputs"],
            "test_acc": rows["test_acc"],
            "selected": selected,
        }
    ).sort_values("l1_lambda", ignore_index=True)


def dataset(csv: Path, target: str) -> object:
    """The Dataset a run with these data overrides trains on: same splits, same scaling."""
    from hydra import compose, initialize_config_dir

    from sweep.training import train

    with initialize_config_dir(str(REPO / "conf")):
        cfg = compose("config", overrides=data_overrides(csv, target))
    return train.build(cfg.data, seed=cfg.seed)


def sklearn_path(data: object, lambdas: list[float]) -> pd.DataFrame:
    """scikit-learn's L1 logistic regression (saga) at C = 1 / (l1_lambda * n_train)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y = data.x_train.numpy(), data.y_train.numpy()
    x_test, y_test = data.x_test.numpy(), data.y_test.numpy()
    rows = []
    for lam in lambdas:
        model = LogisticRegression(
            C=1.0 / (lam * len(y)), l1_ratio=1.0, solver="saga", tol=1e-6, max_iter=20000
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        keep = (model.coef_ != 0).any(axis=0)
        rows.append(
            {
                "l1_lambda": lam,
                "features": int(keep.sum()),
                "test_acc": model.score(x_test, y_test),
                "selected": [n for n, k in zip(data.feature_names, keep) if k],
            }
        )
    return pd.DataFrame(rows)


def at_equal_sparsity(ours: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """For each of our points, the test accuracy of the reference path's point with the same
    number of features (the nearest count if none has it; among several, the nearest
    l1_lambda on a log scale): accuracy at equal sparsity."""
    out = []
    for k, lam in zip(ours["features"], ours["l1_lambda"]):
        gap = (reference["features"] - k).abs()
        same = reference[gap == gap.min()]
        nearest = (np.log(same["l1_lambda"]) - np.log(lam)).abs().idxmin()
        out.append(reference.loc[nearest, "test_acc"])
    return pd.Series(out, index=ours.index)


def best_sparse(path: pd.DataFrame) -> str:
    """The best test accuracy among the path's points with at most MAX_FEATURES features."""
    sparse = path[path["features"] <= MAX_FEATURES]
    if sparse.empty:
        return f"no point with <= {MAX_FEATURES} features"
    best = sparse.loc[sparse["test_acc"].idxmax()]
    return (
        f"{best['test_acc']:.4f} ({best['features']} features, l1_lambda {best['l1_lambda']:.3g})"
    )


def report(
    name: str, paths: dict[str, pd.DataFrame], fine: pd.DataFrame, informative: list[str]
) -> str:
    """The paths side by side per l1_lambda, and how each l1sweep path agrees with
    scikit-learn's: at equal l1_lambda (same objective) and at equal sparsity (`fine`)."""
    reference = paths["scikit-learn"]
    table = pd.DataFrame({"l1_lambda": reference["l1_lambda"]})
    for label, path in paths.items():
        table[f"{label}: features"] = path["features"].to_numpy()
        if informative:
            table[f"{label}: informative"] = [
                len(set(s) & set(informative)) for s in path["selected"]
            ]
        table[f"{label}: test_acc"] = path["test_acc"].to_numpy()
    lines = [f"## {name}", table.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    for label, path in paths.items():
        if label == "scikit-learn":
            continue
        same_k = path["features"].to_numpy() == reference["features"].to_numpy()
        same_set = [set(a) == set(b) for a, b in zip(path["selected"], reference["selected"])]
        at_lambda = (path["test_acc"] - reference["test_acc"]).abs()
        at_k = (path["test_acc"] - at_equal_sparsity(path, fine)).abs()
        lines.append(
            f"{label}: same features as scikit-learn at {same_k.sum()}/{len(path)} lambdas "
            f"(same set at {sum(same_set)}); |test_acc difference| at equal l1_lambda: max "
            f"{at_lambda.max():.4f}, at equal sparsity: max {at_k.max():.4f}, mean "
            f"{at_k.mean():.4f}"
        )
    return "\n".join(lines)


def plot(
    results: dict[str, dict[str, pd.DataFrame]], fine_paths: dict[str, pd.DataFrame], out: Path
) -> None:
    """Test accuracy against selected features: scikit-learn's fine path as a line, l1sweep's
    points on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 3.6), dpi=90)
    for ax, (name, paths) in zip(np.atleast_1d(axes), results.items()):
        fine = fine_paths[name].sort_values("features")
        ax.plot(fine["features"], fine["test_acc"], "-", color="0.6", label="scikit-learn (saga)")
        styles = {"defaults": ("o", "C0"), "minibatch": ("x", "C3"), "obvious": ("+", "C2")}
        for label, path in paths.items():
            if label in styles:
                marker, color = styles[label]
                ax.plot(path["features"], path["test_acc"], marker, color=color, ms=6,
                        mfc="none", label=f"l1sweep, {label}")  # fmt: skip
        ax.set(xscale="log", xlabel="selected features", ylabel="test accuracy", title=name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="where the CSVs and sweeps go (default: temp)")
    parser.add_argument("--plot", type=Path, default=Path("feature_path.png"))
    parser.add_argument("--quick", action="store_true", help="breast cancer, 3 lambdas")
    parser.add_argument(
        "--settings", default="defaults,minibatch,obvious",
        help="which l1sweep runs: defaults, minibatch (recipe=none), obvious (TPE, 20 trials)",
    )  # fmt: skip
    args = parser.parse_args()
    chosen = [s for s in args.settings.split(",") if s]
    unknown = set(chosen) - {*SETTINGS, "obvious"}
    if unknown:
        parser.error(f"--settings: unknown {', '.join(sorted(unknown))}")
    work = (args.work or Path(tempfile.mkdtemp(prefix="feature_path-"))).resolve()
    tables = write_tables(work)
    lambdas = [1e-2, 3e-2, 1e-1] if args.quick else LAMBDAS
    if args.quick:
        tables = {"breast_cancer": tables["breast_cancer"]}
    print(f"work directory: {work}; l1_lambda grid: {lambdas}")
    results, fine_paths = {}, {}  # fine: scikit-learn on 40 lambdas, for equal sparsity
    for name, (csv, target, informative) in tables.items():
        data = dataset(csv, target)
        print(f"{name}: {data.n_inputs} features, {len(data.y_train)} train / "
              f"{len(data.y_val)} val / {len(data.y_test)} test rows")  # fmt: skip
        paths = {"scikit-learn": sklearn_path(data, lambdas)}
        fine_paths[name] = sklearn_path(data, list(np.geomspace(5e-4, 0.5, 40)))
        for label, setting in SETTINGS.items():
            if label in chosen:
                study = f"{name}-{label.replace(' ', '_')}"
                paths[label] = l1sweep_path(work, study, csv, target, lambdas, setting)
        results[name] = paths
        print(report(name, paths, fine_paths[name], informative))
        sparse = {"scikit-learn (the grid)": paths["scikit-learn"],
                  "scikit-learn (40 lambdas)": fine_paths[name], **paths}  # fmt: skip
        sparse.pop("scikit-learn")
        if "obvious" in chosen:
            sparse["obvious (TPE, 20 trials)"] = paths_obvious = l1sweep_path(
                work, f"{name}-obvious", csv, target, None, []
            )
            results[name]["obvious"] = paths_obvious
        for label, path in sparse.items():
            print(f"{name}: best test_acc with <= {MAX_FEATURES} features, {label}: "
                  f"{best_sparse(path)}")  # fmt: skip
        if informative:
            for label, path in paths.items():
                best = path.loc[path["test_acc"].idxmax()]
                kept = len(set(best["selected"]) & set(informative))
                print(f"{label}: best test_acc {best['test_acc']:.4f} at l1_lambda "
                      f"{best['l1_lambda']:g} with {best['features']} features, "
                      f"{kept} of the {len(informative)} informative")  # fmt: skip
    plot(results, fine_paths, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
