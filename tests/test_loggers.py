"""The `logger` group (sweep/loggers.py) against the real trackers: a local MLflow sqlite store
read back with mlflow.search_runs, TensorBoard event files read with TensorBoard's own reader."""

import json
import sys

import pandas as pd
import pytest

from conftest import run_cli

# trackers: MLflow and TensorBoard runs
pytestmark = pytest.mark.slow


def test_mlflow_has_one_run_per_trial_under_the_sweeps_parent_across_resume_and_repeats(
    tmp_path,
):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path}/ml/mlflow.db"
    common = ("-m", "logger=mlflow", f"logger.mlflow.tracking_uri={uri}", "train.epochs=2",
              "repeats=2", "hydra.sweeper.study_name=tracked")  # fmt: skip
    run_cli(tmp_path, *common, "hydra.sweeper.n_trials=2")  # two trials forked at once
    # resumed under joblib's launcher: one more trial (n_trials is the study's total), under
    # the same parent
    run_cli(tmp_path, *common, "hydra.sweeper.n_trials=3", "hydra/launcher=joblib")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["l1sweep"])
    parents = runs[runs["tags.l1sweep.role"] == "sweep"]
    assert list(parents["tags.mlflow.runName"]) == ["tracked"]
    trials = runs[runs["tags.l1sweep.role"] == "trial"].set_index("tags.l1sweep.trial")
    assert sorted(trials.index) == ["0", "1", "2"]  # one run per trial, 2 seeds each
    assert (trials["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]).all()
    assert (trials["status"] == "FINISHED").all()
    rows = pd.read_csv(tmp_path / "outputs" / "sweeps" / "tracked" / "results.csv")
    client = mlflow.tracking.MlflowClient(uri)
    for row in rows.itertuples():
        run = trials.loc[str(row.trial)]
        assert run["tags.mlflow.runName"] == f"trial_{row.trial}"
        assert float(run["params.l1_lambda"]) == row.l1_lambda and run["params.trial"] == str(
            row.trial
        )
        assert run["params.train.epochs"] == "2" and run["params.logger"] == "mlflow"
        assert run["tags.l1sweep.command"] == row.command  # the command that reruns it
        seeds = json.loads((tmp_path / row.run_dir / "metrics.json").read_text())["seeds"]
        # every figure of each seed's row, the seeds as steps 0 and 1
        for key in ("val_acc", "test_acc", "sparsity", "nnz", "archive_bytes"):
            history = client.get_metric_history(run["run_id"], key)
            assert [(m.step, m.value) for m in history] == [(0, seeds[0][key]), (1, seeds[1][key])]
        epochs = client.get_metric_history(run["run_id"], "epoch_val_acc")
        assert sorted(m.step for m in epochs) == [1, 1, 2, 2]  # 2 epochs, 2 seeds
        files = {a.path for a in client.list_artifacts(run["run_id"])}
        assert {"model.pt", "layers.csv", "metrics.json", "seed_1"} <= files
        got = client.download_artifacts(run["run_id"], "layers.csv", str(tmp_path / "dl"))
        seed0 = tmp_path / row.run_dir / "seed_0" / "layers.csv"
        assert open(got).read() == seed0.read_text()


def test_tensorboard_has_each_trials_scalars_and_the_hparams_table(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_cli(tmp_path, "-m", "logger=tensorboard", "train.epochs=2", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.study_name=tb")  # fmt: skip
    sweep = tmp_path / "outputs" / "sweeps" / "tb"
    rows = pd.read_csv(sweep / "results.csv")
    for row in rows.itertuples():
        events = EventAccumulator(str(sweep / "tensorboard" / f"trial_{row.trial}"))
        events.Reload()
        curve = json.loads((sweep / f"trial_{row.trial}" / "metrics.json").read_text())
        val = [(e.step, e.value) for e in events.Scalars("val_acc")]
        assert val == [(s, pytest.approx(v)) for s, v in curve["val_acc_curve"]]
        assert [e.step for e in events.Scalars("sparsity")] == [1, 2]
        assert events.Scalars("hparam/val_acc")[0].value == pytest.approx(row.val_acc)
        assert events.Scalars("final/nnz")[0].value == row.nnz
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        ).session_start_info
        assert start.hparams["l1_lambda"].number_value == pytest.approx(row.l1_lambda)
        assert start.hparams["trial"].number_value == row.trial


def test_a_tracker_that_is_not_installed_is_one_line_naming_the_extra(tmp_path):
    # a package named mlflow that cannot be imported, first on the path
    fake = tmp_path / "fake" / "mlflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named mlflow')\n")
    env = {"PYTHONPATH": f"{tmp_path / 'fake'}:{':'.join(sys.path)}"}
    proc = run_cli(tmp_path, "logger=mlflow", "train.epochs=1", check=False, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert (
        'logger=mlflow needs the mlflow package, not installed: pip install -e ".[mlflow]"' in out
    )
