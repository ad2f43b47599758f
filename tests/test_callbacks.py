"""The callbacks group: the files a run writes are callbacks; a user's own plugs in the same way."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import run_cli

PACKAGE = '''
import json
from sweep.task.callbacks import Callback


class Recorder(Callback):
    """Records every hook it sees into hooks.json, and adds a figure to the row."""

    def __init__(self, figure=1.5):
        self.seen, self.figure = [], figure

    def on_epoch_end(self, run, step, metrics):
        self.seen.append(["epoch", step, sorted(metrics)])

    def on_prune_round_end(self, run, round, metrics):
        self.seen.append(["round", round, metrics["sparsity"]])

    def on_run_end(self, run, metrics):
        metrics["my_figure"] = self.figure * run.data.n_classes
        (run.out_dir / "hooks.json").write_text(json.dumps(self.seen))


class NotOne:
    pass
'''


@pytest.fixture
def user(tmp_path):
    (tmp_path / "mycb").mkdir()
    (tmp_path / "mycb" / "__init__.py").write_text(PACKAGE)
    return tmp_path


def test_the_default_callbacks_write_the_runs_files(tmp_path):
    run_cli(tmp_path, "train.epochs=2", "prune=magnitude", "prune.rounds=2", "prune.epochs=1",
            "hydra.run.dir=outputs/run")  # fmt: skip
    out = tmp_path / "outputs" / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert [s for s, _ in metrics["val_acc_curve"]] == [1, 2, 3, 4]  # fine-tuning numbered on
    layers = pd.read_csv(out / "layers.csv")
    assert layers["nnz"].sum() == metrics["nnz"]
    assert (out / "model.pt").stat().st_size > 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["round"]) == [1, 2]
    assert rounds["target"].iloc[-1] == pytest.approx(0.9)
    # the last round's model is the final one
    assert rounds["sparsity"].iloc[-1] == pytest.approx(metrics["sparsity"])
    assert rounds["val_acc"].iloc[-1] == pytest.approx(metrics["val_acc"])
    assert rounds["sparsity"].iloc[0] < rounds["sparsity"].iloc[1]


def test_a_default_callback_can_be_dropped(tmp_path):
    run_cli(tmp_path, "train.epochs=1", "~callbacks.model_checkpoint", "hydra.run.dir=outputs/r")
    out = tmp_path / "outputs" / "r"
    assert (out / "metrics.json").is_file() and not (out / "model.pt").exists()


def test_a_users_callback_sees_every_hook_and_adds_to_the_row(user):
    proc = run_cli(
        user, "-m", "+callbacks.rec._target_=mycb.Recorder", "allow_targets=[mycb.*]",
        "train.epochs=2", "prune=magnitude", "prune.rounds=2", "prune.epochs=1",
        "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=cb",
    )  # fmt: skip
    assert "callbacks.rec: running outside code mycb.Recorder" in proc.stdout + proc.stderr
    trial = user / "outputs" / "sweeps" / "cb" / "trial_0"
    hooks = json.loads((trial / "hooks.json").read_text())
    epochs = [h for h in hooks if h[0] == "epoch"]
    assert [h[1] for h in epochs] == [1, 2, 3, 4]
    assert epochs[0][2] == ["sparsity", "train_loss", "val_acc"]
    rounds = [h for h in hooks if h[0] == "round"]
    assert [h[1] for h in rounds] == [1, 2] and rounds[0][2] < rounds[1][2]
    # the figure it added reaches metrics.json (written after it) and the sweep's CSV row
    assert json.loads((trial / "metrics.json").read_text())["my_figure"] == 1.5 * 10
    row = pd.read_csv(user / "outputs" / "sweeps" / "cb" / "results.csv").iloc[0]
    assert row["my_figure"] == 15.0


def test_an_outside_callback_is_refused_unless_allowed(user):
    proc = run_cli(user, "+callbacks.rec._target_=mycb.Recorder", "train.epochs=1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert "callbacks.rec._target_=mycb.Recorder is code outside l1sweep" in out
    assert "allow_targets=[mycb.*]" in out


def test_a_callback_that_is_not_one_is_one_line(user):
    proc = run_cli(user, "+callbacks.x._target_=mycb.NotOne", "allow_targets=[mycb.*]",
                   "train.epochs=1", check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert "callbacks: mycb.NotOne made a NotOne, not a sweep.task.callbacks.Callback" in out


def test_l1sweeps_own_callbacks_are_made_without_hydras_instantiate():
    """Issue 33: the default callbacks (plain keys, l1sweep's own classes) are made by calling
    their class (`made_directly`), with the values Hydra would pass; a key the class does not
    take, or another module's target, goes to Hydra's instantiate and its one-line refusal."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import sweep.run  # noqa: F401  (the config schema)
    from conftest import REPO
    from sweep.errors import UserError
    from sweep.task import callbacks as cbs
    from sweep.task import job

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("config", ["export.bits=3", "+callbacks.x._target_=mycb.Mine"])
    archive = cbs.made_directly(cfg.callbacks.archive)
    assert type(archive) is cbs.Archive and (archive.bits, archive.epochs) == (3, 0)
    assert isinstance(cbs.made_directly(cfg.callbacks.rounds_csv), cbs.RoundsCsv)
    assert cbs.made_directly(cfg.callbacks.x) is None  # not l1sweep's: built, allow-listed
    made = job.callbacks(compose_without(cfg, "x"))
    names = ["LayersCsv", "ModelCheckpoint", "Archive", "FeaturesCsv", "RoundsCsv", "MetricsJson"]
    assert [type(c).__name__ for c in made] == names
    assert made[4].rows == [] and made[4] is not job.callbacks(compose_without(cfg, "x"))[4]
    with open_dict(cfg):
        cfg.callbacks.archive.colour = "red"  # a key Archive does not take
    assert cbs.made_directly(cfg.callbacks.archive) is None
    with pytest.raises(UserError, match=r"callbacks.archive: sweep.task.callbacks.Archive.*colour"):
        job.callbacks(compose_without(cfg, "x"))


def compose_without(cfg, key: str):
    """`cfg` with callbacks.<key> dropped (a copy)."""
    from omegaconf import open_dict

    out = cfg.copy()
    with open_dict(out):
        del out.callbacks[key]
    return out
