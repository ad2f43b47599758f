"""Training callbacks: what plugs into a run (group `callbacks`, in lightning-hydra-template's
style: a mapping of names to `_target_`s, instantiated in order).

A run (sweep/task/job.py) calls each callback's hooks in the mapping's order:
- `on_epoch_end(run, step, metrics)`: every epoch whose validation accuracy is measured; `step`
  counts the run's epochs across training and every fine-tuning round; metrics hold `val_acc`,
  `train_loss` and `sparsity` (fraction of the counted weights exactly zero).
- `on_prune_round_end(run, round, metrics)`: after each prune round's fine-tuning, with that
  round's measures (`round`, `target`, the row's accuracy and sparsity figures).
- `on_run_end(run, metrics)`: once, after the final model is measured. A callback may add
  figures to `metrics`: they become columns of the run's row, seen by the callbacks after it
  (`metrics_json` has a higher `order`, so it runs after every other, a user's too).

`run` is the job's `Run`: its `cfg`, `data`, `model`, `reg`, `counted` (the regularized
parameters) and `out_dir`. The defaults (conf/callbacks/default.yaml) write the files a run has
always written; `~callbacks.features_csv` drops one, and a user's own callback comes in like a
user's model: `+callbacks.mine._target_=mypkg.MyCallback` with `allow_targets=[mypkg.*]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweep.results import table
from sweep.sparsity import features
from sweep.sparsity import measures as sparsity

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from sweep.task.context import Run


class Callback:
    """The hooks a run calls; each does nothing unless overridden. Callbacks run in the config's
    order, stably sorted by `order` (a writer of the whole row, e.g. MetricsJson, sets a high
    one, so it sees every figure the others add, a user's too)."""

    order: int = 0

    def on_epoch_end(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        """After a measured epoch: step is the run's epoch count so far (training first, then
        each prune round's fine-tuning epochs)."""

    def on_prune_round_end(self, run: Run, round: int, metrics: dict[str, Any]) -> None:
        """After prune round `round` (1-based) and its fine-tuning, with its measures."""

    def on_run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """After the final model is measured; may add figures to `metrics` (the row)."""


class LayersCsv(Callback):
    """layers.csv: per counted tensor `layer, shape, n, nnz, n_le_tol, sparsity, sparsity_tol`
    of the final model."""

    def on_run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Write layers.csv into the run's directory."""
        rows = sparsity.layer_table(run.model, run.counted, run.cfg.sparsity.tol)
        # the csv module, not a DataFrame: a trial's first DataFrame of strings cost 15 ms
        # of its 0.2 s beyond training (issue 33); pandas reads the same table back
        table.write_rows(rows, table.ordered(rows), run.out_dir / "layers.csv")


class ModelCheckpoint(Callback):
    """model.pt: the final model's state_dict, plain tensors (`torch.load(path,
    weights_only=True)` reads it)."""

    def on_run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Write model.pt into the run's directory."""
        # Cloned: the parameters are views of fit's flat buffer, which torch.save would keep
        # whole in every tensor's storage.
        state = {k: v.clone() for k, v in run.model.state_dict().items()}
        torch.save(state, run.out_dir / "model.pt")

    def __init__(self) -> None:
        # torch.save imports its settings module on first use (~5 ms); a sweep makes its
        # callbacks once before forking its jobs (job.preflight), so they find it imported
        import torch.utils.serialization  # noqa: F401


class FeaturesCsv(Callback):
    """features.csv: per input feature, whether the first layer still uses it (see
    sweep/sparsity/features.py); nothing for a conv first layer."""

    def on_run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Write features.csv into the run's directory (nothing for a conv first layer)."""
        features.write(run.model, run.data, run.out_dir / "features.csv")


class RoundsCsv(Callback):
    """rounds.csv: one row per prune round, measured after its fine-tuning (the iterative
    pruner's report: every round's model is a point of the accuracy-sparsity curve)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_prune_round_end(self, run: Run, round: int, metrics: dict[str, Any]) -> None:
        """Add the round's row and rewrite rounds.csv (a killed run keeps its rounds)."""
        self.rows.append(dict(metrics))
        table.write_rows(self.rows, table.ordered(self.rows), run.out_dir / "rounds.csv")


class Archive(Callback):
    """model.l1z beside model.pt: the final model compressed in l1sweep's archive format
    (sweep/deploy/archive.py, docs/deploy.md) with `bits`-bit codebooks fine-tuned `epochs`
    epochs (conf/config.yaml's `export.bits`, `export.epochs`), and its cost in the row:
    `archive_bytes` (the file's size), `compression` (dense fp32 state_dict bytes / archive
    bytes), `archive_val_acc` and `archive_test_acc` (the accuracies
    of the weights decoded from those bytes). Each prune round's row of rounds.csv gets the
    same figures of that round's model (no file). A diverged model has none (its weights mean
    nothing); a model with no Linear or Conv weight to compress has none either."""

    def __init__(self, bits: int, epochs: int) -> None:  # defaults: conf/config.yaml's export
        # imported here, not at the top: numpy and lzma load only where a run asks for an
        # archive; and here, not in on_run_end: a sweep makes its callbacks once before its
        # first trial (job.preflight), so the jobs it forks find them imported (~15 ms a trial)
        import sweep.deploy.measure  # noqa: F401

        self.bits, self.epochs = bits, epochs

    def _figures(self, run: Run, path: Path | None) -> dict[str, Any]:
        from sweep.deploy import archive, measure

        arch = measure.architecture(
            run.cfg.model, run.data.n_inputs, run.data.n_classes, run.data.image_shape
        )
        try:
            return measure.archive_metrics(
                run.model, run.data, self.bits, arch, self.epochs, path=path
            )
        except archive.ArchiveError:  # nothing to compress: the row says nothing of it
            return {}

    def on_prune_round_end(self, run: Run, round: int, metrics: dict[str, Any]) -> None:
        """Add the round's model's archive figures to its rounds.csv row (no file)."""
        metrics.update(self._figures(run, None))

    def on_run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Write model.l1z and add its figures to the row (not for a diverged model)."""
        if metrics["status"] != "diverged":
            metrics.update(self._figures(run, run.out_dir / "model.l1z"))


class MetricsJson(Callback):
    """metrics.json: the run's whole row, and its validation curve ([step, val_acc], ...)."""

    order = 100  # after every callback that adds to the row

    def on_run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Write metrics.json, the row as every callback before it left it."""
        write_json(run.out_dir / "metrics.json", metrics)


def write_json(path: Path, metrics: dict[str, Any]) -> None:
    """`metrics` as indented JSON, ending in a newline."""
    path.write_text(json.dumps(metrics, indent=2) + "\n")


PLAIN = (str, int, float, bool, type(None))


def made_directly(node: DictConfig) -> Callback | None:
    """One of l1sweep's own callbacks (a class of sweep/task/callbacks.py whose keys are plain
    values: a number, a word, null) made by calling the class with its resolved keys, as
    hydra.utils.instantiate would; None for any other node, or one the class refuses (then
    `job.callbacks` builds it, or says in one line what is wrong).

    Why: `build` (Hydra's instantiate with the allow-list and the argument check) costs 2 ms
    a node, 12 ms of a trial for the six default callbacks (issue 33), and these targets
    are l1sweep's own, always allowed, with nothing nested to instantiate."""
    name = node.get("_target_")
    if not isinstance(name, str) or not name.startswith(f"{__name__}."):
        return None
    try:
        keys = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:  # a key that does not resolve: build() says so
        return None
    assert isinstance(keys, dict)
    del keys["_target_"]
    cls = globals().get(name.removeprefix(f"{__name__}."))
    plain = all(isinstance(v, PLAIN) and not k.startswith("_") for k, v in keys.items())
    if not (plain and isinstance(cls, type) and issubclass(cls, Callback)):
        return None
    try:
        return cls(**keys)
    except TypeError:  # an unknown or missing key: build() names it
        return None
