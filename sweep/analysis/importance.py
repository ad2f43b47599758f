"""What mattered: Optuna's parameter importances, and the optimization and hypervolume
histories, from a sweep's rows (an in-memory study rebuilt from results.csv: no storage).

`what_mattered(frame)` gives the summary's "What mattered" section; `plot_what_mattered` draws
importance_<metric>.png, history_<metric>.png and hypervolume.png. Optuna and matplotlib are
imported inside the functions: loading a sweep does not pay for them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis.load import UNRECORDED, Objective, complete, objectives
from sweep.analysis.plots import file_name

NOT_SEARCHED = ("hydra.", "train.threads")  # overrides the sweeper adds to every trial
PED_ANOVA_MIN = 5  # trials in the top quantile PED-ANOVA needs (Optuna's docs: at least 5)


def searched_params(frame: pd.DataFrame) -> dict[str, list]:
    """The parameters a sweep searched: the override keys whose values differ between its
    complete trials, each with its trials' values (floats where every one is a number), in
    the frame's row order."""
    import shlex

    from sweep.results.command import by_key

    parsed = [by_key(shlex.split(str(text))) for text in frame["overrides"]]
    keys = [
        k for k in dict.fromkeys(k for p in parsed for k in p) if not k.startswith(NOT_SEARCHED)
    ]
    out: dict[str, list] = {}
    for key in keys:
        values = [p.get(key) for p in parsed]
        if None in values or len(set(values)) < 2:
            continue
        try:
            out[key] = [float(v) for v in values]
        except ValueError:
            out[key] = values
    return out


def rebuilt_study(frame: pd.DataFrame, objective: Objective) -> tuple[Any, dict[str, list]]:
    """An in-memory Optuna study of one sweep's complete trials with finite objective values
    (in trial order), over its searched parameters: a number's distribution spans its values
    (log-scaled where all are positive and span 10x or more), any other is categorical.
    Returns the study and the searched parameters."""
    import optuna

    done = frame[complete(frame)].sort_values("trial")
    done = done[np.isfinite(done[list(objective.metrics)].astype(float)).all(axis=1)]
    params = searched_params(done)
    dists: dict[str, Any] = {}
    for key, values in params.items():
        if all(isinstance(v, float) for v in values):
            low, high = min(values), max(values)
            dists[key] = optuna.distributions.FloatDistribution(
                low, high, log=low > 0 and high / low >= 10
            )
        else:
            dists[key] = optuna.distributions.CategoricalDistribution(sorted(set(values)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=list(objective.directions))
    for i, (_, row) in enumerate(done.iterrows()):
        study.add_trial(
            optuna.trial.create_trial(
                params={k: v[i] for k, v in params.items()},
                distributions=dists,
                values=[float(row[m]) for m in objective.metrics],
            )
        )
    return study, params


def importance_evaluator(n_trials: int) -> tuple[Any, str]:
    """PED-ANOVA (Watanabe et al., IJCAI 2023: how much each parameter explains reaching the
    top quantile of trials) where the sweep has at least PED_ANOVA_MIN trials in its top
    quantile (target_quantile = max(0.1, 5 / n), at most 0.5); else Optuna's fANOVA (Hutter et
    al., ICML 2014: the share of the objective's variance each parameter explains, through a
    random forest). Returns the evaluator and its name in words."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    quantile = max(0.1, PED_ANOVA_MIN / max(n_trials, 1))
    if quantile <= 0.5:
        evaluator = PedAnovaImportanceEvaluator(target_quantile=quantile, region_quantile=1.0)
        return evaluator, f"PED-ANOVA (top {quantile:.0%} of {n_trials} trials vs all)"
    return FanovaImportanceEvaluator(seed=0), f"fANOVA ({n_trials} trials, seed 0)"


def constant_metrics(study: Any, objective: Objective) -> dict[str, float]:
    """{metric: its value} of the objectives on which every trial of `study` scored the same:
    no parameter can explain a value that did not vary (an evaluator would still split the
    importance among them, 0.5/0.5 for two, or give it all to one)."""
    values = np.array([t.values for t in study.trials], dtype=float)
    return {
        metric: float(values[0, i])
        for i, metric in enumerate(objective.metrics)
        if len(values) and np.all(values[:, i] == values[0, i])
    }


def top_line(metric: str, scores: dict[str, float]) -> str:
    """The summary's line naming the parameter that mattered most for `metric`, or the ones
    that tie for it (equal to 1e-9): a tie names no parameter above another."""
    best = max(scores.values())
    top = [p for p, v in scores.items() if best - v <= 1e-9]
    if len(top) == 1:
        return f"- most important for {metric}: {top[0]} ({best:.3f})"
    tied = ", ".join(top)
    return f"- most important for {metric}: none above the others: {tied} tie ({best:.3f} each)"


def _importances(study: Any, objective: Objective, evaluator: Any) -> dict[str, dict[str, float]]:
    """{metric: {param: importance}} of `study` by `evaluator`, normalized to sum to 1 per
    metric; each objective's sign set so that lower is better, as PED-ANOVA assumes. An
    objective every trial scored the same on (`constant_metrics`) has no entry."""
    import optuna

    table: dict[str, dict[str, float]] = {}
    constant = constant_metrics(study, objective)
    for i, (metric, direction) in enumerate(zip(objective.metrics, objective.directions)):
        if metric in constant:
            continue
        sign = -1.0 if direction == "maximize" else 1.0
        with warnings.catch_warnings():  # PED-ANOVA is experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # its reminder that lower is better: the sign above sees to that
            warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes")
            table[metric] = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=lambda t, i=i, s=sign: s * t.values[i],
                normalize=True,
            )  # fmt: skip
    return table


def what_mattered(
    frame: pd.DataFrame,
) -> tuple[str, dict[str, dict[str, float]], Any, Objective]:
    """Parameter importances per objective of the frame's first sweep that searched more than
    one parameter (`optuna.importance.get_param_importances`, evaluator by
    `importance_evaluator`; each objective's sign set so that lower is better, as PED-ANOVA
    assumes), as a markdown section naming the parameter that mattered most for each
    objective (or the ones that tie for it). An objective on which every trial scored the same
    gets no importances: the section says that nothing varied. Returns (text, {metric: {param:
    importance}} of the objectives that varied, the rebuilt study or None, that sweep's
    objective); ("", {}, None, UNRECORDED) where no sweep searched two parameters over three or
    more trials."""
    for sweep, rows in frame.groupby("sweep", sort=False):
        objective = objectives(rows)
        study, params = rebuilt_study(rows, objective)
        if len(params) < 2 or len(study.trials) < 3:
            continue
        evaluator, name = importance_evaluator(len(study.trials))
        table = _importances(study, objective, evaluator)
        lines = [f"## What mattered ({sweep}: {len(params)} parameters searched)", ""]
        if table:
            shown = pd.DataFrame(table).reindex(list(params)).fillna(0.0)
            lines += [f"parameter importances, normalized to sum to 1 per objective; evaluator: "
                      f"{name}", "", shown.to_markdown(floatfmt=".3f"), ""]  # fmt: skip
        for metric in objective.metrics:
            if metric in table:
                lines.append(top_line(metric, table[metric]))
            else:
                value = constant_metrics(study, objective)[metric]
                lines.append(f"- {metric}: every one of the {len(study.trials)} trials scored "
                             f"{value:.6g}: nothing varied, so no parameter mattered")  # fmt: skip
        return "\n".join(lines), table, study, objective
    return "", {}, None, UNRECORDED


def plot_what_mattered(
    study: Any, table: dict[str, dict[str, float]], objective: Objective, out: Path
) -> list[str]:
    """importance_<metric>.png (a bar per parameter) for each objective; for a study of
    several objectives also history_<metric>.png (each trial's value and the best so far,
    Optuna's optimization history) and hypervolume.png (the front's hypervolume after each
    trial, against a reference point 10% of each objective's range beyond its worst value).
    Returns the file names written. `study`, `table` and `objective` are what_mattered's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for metric, scores in table.items():
        fig, ax = plt.subplots(figsize=(5, 0.5 + 0.4 * len(scores)))
        names = sorted(scores, key=scores.get)
        ax.barh(names, [scores[n] for n in names])
        ax.set_xlabel(f"importance for {metric}")
        fig.tight_layout()
        fig.savefig(out / f"importance_{file_name(metric)}.png")
        plt.close(fig)
        written.append(f"importance_{file_name(metric)}.png")
    if study is None or len(objective.metrics) < 2:
        return written
    return written + _plot_histories(study, objective, out, plt)


def _plot_histories(study: Any, objective: Objective, out: Path, plt: Any) -> list[str]:
    """history_<metric>.png per objective and hypervolume.png of a multi-objective study (see
    plot_what_mattered); the file names written."""
    import optuna
    from optuna.visualization.matplotlib import (
        plot_hypervolume_history,
        plot_optimization_history,
    )

    written = []
    with warnings.catch_warnings():  # optuna.visualization.matplotlib is experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i, metric in enumerate(objective.metrics):
            ax = plot_optimization_history(study, target=lambda t, i=i: t.values[i],
                                           target_name=metric)  # fmt: skip
            ax.figure.savefig(out / f"history_{file_name(metric)}.png", bbox_inches="tight")
            plt.close(ax.figure)
            written.append(f"history_{file_name(metric)}.png")
        values = np.array([t.values for t in study.trials])
        span = values.max(axis=0) - values.min(axis=0)
        span = np.where(span > 0, span, 1.0)
        maximize = np.array([d == "maximize" for d in objective.directions])
        reference = np.where(maximize, values.min(axis=0) - 0.1 * span,
                             values.max(axis=0) + 0.1 * span)  # fmt: skip
        ax = plot_hypervolume_history(study, reference_point=reference)
        ax.figure.savefig(out / "hypervolume.png", bbox_inches="tight")
        plt.close(ax.figure)
        written.append("hypervolume.png")
    return written
