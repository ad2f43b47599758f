"""sweep.analyze's speed plots: what structured sparsity buys in compute, per method.

accuracy_vs_flops.png     validation accuracy against the compact model's multiply-adds
                          per example (the row's `flops`, sweep.models.compact), a front each
accuracy_vs_latency.png   for the trials `python -m sweep.export` measured (their
                          export/export.csv): the compact model's test accuracy read back
                          from disk against its measured time per batch of 256 on one
                          thread (torch eager), with the dense model's time of the same run
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sweep.analysis.load import complete, trial_dir
from sweep.analysis.plots import plot_front_by_method, save_figure

# The export.csv row and column the latency plot reads: the compact model, batch 256, 1 thread.
COMPACT, DENSE = "model.compact.l1z", "model.pt"
TIME = "ms_batch256_1thread"


def exported_times(done: pd.DataFrame) -> pd.DataFrame:
    """Per trial with an export/export.csv holding latency columns: method, the compact
    model's test_acc and TIME, and the dense model's TIME (measured in the same run). Empty
    where no trial was exported with latency."""
    rows = []
    for index, row in done.iterrows():
        csv = trial_dir(row) / "export" / "export.csv"
        if not csv.is_file():
            continue
        table = pd.read_csv(csv).set_index("artifact")
        if TIME not in table or COMPACT not in table.index or DENSE not in table.index:
            continue
        compact, dense = table.loc[COMPACT], table.loc[DENSE]
        if pd.isna(compact[TIME]):
            continue
        rows.append({"index": index, "method": row["method"], "test_acc": compact["test_acc"],
                     "ms": compact[TIME], "dense_ms": dense[TIME]})  # fmt: skip
    return pd.DataFrame(rows, columns=["index", "method", "test_acc", "ms", "dense_ms"])


def plot_speed(frame: pd.DataFrame, out: Path) -> list[str]:
    """Write accuracy_vs_flops.png (where rows have `flops`) and accuracy_vs_latency.png (where
    trials were exported with latency) into `out`; the names of the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[complete(frame)]
    if "method" not in done:
        done = done.assign(method=done["sweep"])
    colours = plt.get_cmap("tab10").colors
    written = []
    if "flops" in done and pd.to_numeric(done["flops"], errors="coerce").gt(0).any():
        plot_front_by_method(
            done, frame, "flops", out / "accuracy_vs_flops.png", plt,
            xlabel="multiply-adds per example of the compact model (log scale)",
            ylabel="validation accuracy", title="accuracy vs FLOPs, one front per method",
        )  # fmt: skip
        written.append("accuracy_vs_flops.png")
    times = exported_times(done)
    if not times.empty:
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
        for i, (name, trials) in enumerate(times.groupby("method", sort=False)):
            colour, marker = colours[i % 10], "osD^v<>p*h"[i % 10]
            ax.scatter(trials["ms"], trials["test_acc"], color=colour, marker=marker,
                       edgecolor="k", lw=0.3, s=26, label=f"{name}: compact model")  # fmt: skip
            for ms in trials["dense_ms"]:
                ax.axvline(ms, color=colour, ls=":", lw=0.8)
        ax.plot([], [], color="0.4", ls=":", lw=0.8, label="dense model.pt, same run")
        ax.set(xscale="log", xlabel="ms per batch of 256, 1 thread, torch eager (log scale)",
               ylabel="test accuracy of model.compact.l1z (read back)",
               title="accuracy vs measured time (sweep.export)")  # fmt: skip
        save_figure(fig, ax, out / "accuracy_vs_latency.png", plt)
        written.append("accuracy_vs_latency.png")
    return written
