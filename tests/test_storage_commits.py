"""What one trial costs the study's storage: its writes as few transactions (issue 33).

Each RDBStorage write commits on its own, and on SQLite each commit is an fsync of the file
(about 18 ms on this project's machine): a finished trial's row and its ~30 dashboard figures
were ~31 commits, more than a short trial's training. The COMMITs are counted here with
SQLAlchemy's engine event on a real SQLite file."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from sqlalchemy import event

from sweep import _compat
from sweep.search import trials
from sweep.search.launcher import ForkLauncher
from sweep.search.loop import TrialLoop
from sweep.search.study import HEARTBEAT_ATTR, OWNER_ATTR, ResultFiles

# a row as a 1-epoch digits trial returns it (sweep/results/row.py's columns)
ROW = {
    "trial": 0, "status": "complete", "l1_lambda": 0.000125, "l2_lambda": 0.0,
    "regularizer": "l1_prox", "model": "simple_net", "data": "digits", "optimizer": "sgd",
    "schedule": "constant", "prune": "none", "seed": 0, "epochs": 2, "val_acc": 0.7118,
    "test_acc": 0.6889, "pruned_val_acc": 0.7118, "pruned_test_acc": 0.6889,
    "sparsity": 0.00489, "sparsity_tol": 0.01457, "tol": 0.001, "sparsity_params": "all",
    "nnz": 9563, "n_params": 9610, "active_inputs": 64, "n_classes": 10, "n_inputs": 64,
    "groups_removed": 0, "compact_shape": "64-128-10", "flops": 9472, "flops_ratio": 1.0,
    "train_loss": 1.717, "archive_bytes": 6029, "compression": 6.73, "archive_val_acc": 0.7153,
    "archive_test_acc": 0.6972, "train_seconds": 1.22, "device": "cpu", "objective": 0.7118,
    "overrides": "l1_lambda=0.000125 train.epochs=2",
    "run_dir": "outputs/sweeps/s/trial_0",
}  # fmt: skip
CURVE = [[1, 0.69], [2, 0.7118]]


def _counted(engine) -> list[int]:
    """The transactions `engine` commits from now on: COMMITs with writes to commit (Optuna
    commits its read-only sessions too, which SQLite makes no transaction of)."""
    commits: list[int] = []

    def on_commit(conn) -> None:
        if conn.connection.dbapi_connection.in_transaction:
            commits.append(1)

    event.listen(engine, "commit", on_commit)
    return commits


@pytest.fixture
def study(tmp_path):
    """A study in a real SQLite file, opened as the sweeper opens it, and the list its
    engine's COMMITs are counted in."""
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    held = _compat.get_storage(rdb)
    study = optuna.create_study(study_name="s", storage=held, direction="maximize")
    commits = _counted(rdb.engine)
    study.rdb, study.held = rdb, held  # for the fence's test, the loop's plan
    yield study, commits
    rdb.engine.dispose()


def _stored(study: optuna.Study) -> tuple[dict, dict]:
    [t] = study.get_trials()
    return t.user_attrs, t.intermediate_values


def test_a_trials_row_figures_and_curve_are_one_commit(study):
    study, commits = study
    trial = study.ask()
    commits.clear()
    trials.record(trial, ROW, CURVE, single_objective=True)
    assert len(commits) == 1
    attrs, curve = _stored(study)
    assert attrs["row"]["val_acc"] == 0.7118 and attrs["row"]["compact_shape"] == "64-128-10"
    # every finite number of the row is its own float attribute: the dashboard sorts by them
    assert attrs["nnz"] == 9563.0 and attrs["flops_ratio"] == 1.0 and attrs["objective"] == 0.7118
    assert "device" not in attrs and "regularizer" not in attrs  # text is no figure
    assert len(attrs) == 1 + len(trials.figures(ROW)) == 28
    assert curve == {1: 0.69, 2: 0.7118}


def test_one_at_a_time_the_same_is_stored_in_a_commit_each(study, tmp_path, monkeypatch):
    """With batching off (as after a library change) the study holds the same, at 30 commits."""
    batched, commits = study
    trials.record(batched.ask(), ROW, CURVE, single_objective=True)
    monkeypatch.setitem(_compat.BATCH_WRITES, "on", False)
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/plain.db")
    plain = optuna.create_study(study_name="s", storage=_compat.get_storage(rdb))
    trial = plain.ask()
    plain_commits = _counted(rdb.engine)
    trials.record(trial, ROW, CURVE, single_objective=True)
    rdb.engine.dispose()
    assert _stored(plain) == _stored(batched)
    assert len(plain_commits) == 1 + len(trials.figures(ROW)) + len(CURVE) == 30


def _plan(study: optuna.Study, tmp_path: Path, **fields) -> SimpleNamespace:
    """The parts of a SweepPlan that TrialLoop.ask and _record read: the default sweep's."""
    options = SimpleNamespace(db=lambda what, fn, *a, **k: fn(*a, **k))
    return SimpleNamespace(
        options=options, study=study, storage=study.held, csv_path=tmp_path / "results.csv",
        files=ResultFiles(tmp_path / "results.csv"),
        reseed=None, first_job=0, directions=("maximize",), extra=(),
        space={"l1_lambda": FloatDistribution(1e-5, 1e-3, log=True)}, fixed={},
        extend_space=None, fixed_overrides=("train.epochs=1",), **{"n_trials": 20, **fields},
    )  # fmt: skip


def test_a_whole_trial_of_the_loop_is_three_commits(study, tmp_path):
    """TrialLoop's writes for a trial of the default sweep: the ask, its draw and claim, its
    row with its tell (35 commits before: 2 for the claim, 30 for the row, 1 the tell)."""
    study, commits = study
    loop = TrialLoop(_plan(study, tmp_path), ForkLauncher())
    commits.clear()
    trial = loop.ask()
    assert len(commits) == 2  # Optuna's ask, then the draw and claim
    loop._record(trial, ROW, TrialState.COMPLETE, [0.7118], CURVE)
    assert len(commits) == 3
    [t] = study.get_trials()
    assert t.state == TrialState.COMPLETE and t.value == 0.7118
    assert {OWNER_ATTR, HEARTBEAT_ATTR, "row", "val_acc"} <= t.user_attrs.keys()
    assert t.intermediate_values == {1: 0.69, 2: 0.7118}
    assert loop.overrides[0] == (f"l1_lambda={t.params['l1_lambda']}", "train.epochs=1",
                                 "hydra.sweep.subdir=trial_0")  # fmt: skip


def test_a_rolled_back_row_and_tell_leave_the_trial_running_and_the_retry_stores_both(
    study, tmp_path
):
    """The row and the tell are one transaction: a storage failing at its commit keeps
    neither (the trial stays RUNNING, not told as finished by Optuna's cache either), and
    the retry (Options.db) records the row, the curve and the state."""
    study, commits = study
    seen = []

    def db(what, fn, *a, **k):
        if what.startswith("recording") and not seen:
            with pytest.raises(RuntimeError), _compat.one_transaction(study.held):
                fn(*a, **k)
                raise RuntimeError("database is locked")
            [t] = study.get_trials()
            seen.append((t.state, t.user_attrs.get("row"), t.intermediate_values))
        return fn(*a, **k)

    plan = _plan(study, tmp_path)
    plan.options.db = db
    loop = TrialLoop(plan, ForkLauncher())
    trial = loop.ask()
    commits.clear()
    loop._record(trial, ROW, TrialState.COMPLETE, [0.7118], CURVE)
    assert seen == [(TrialState.RUNNING, None, {})]
    [t] = study.get_trials()
    assert (t.state, t.value, t.user_attrs["row"]) == (TrialState.COMPLETE, 0.7118, ROW)
    assert t.intermediate_values == {1: 0.69, 2: 0.7118} and len(commits) == 1


def test_fixed_values_join_the_draw_and_a_retried_draw_stores_its_parameters(study, tmp_path):
    study, commits = study
    failed = []

    def db(what, fn, *a, **k):  # the storage fails at the draw's first commit, once
        if what.startswith("drawing") and not failed:
            failed.append(what)
            with pytest.raises(RuntimeError), _compat.one_transaction(study.held):
                fn(*a, **k)
                raise RuntimeError("database is locked")
        return fn(*a, **k)

    plan = _plan(study, tmp_path)
    plan.fixed = {"seed": 3}
    plan.options.db = db
    loop = TrialLoop(plan, ForkLauncher())
    commits.clear()
    loop.ask()
    assert failed and len(commits) == 2  # the ask, the retried draw with claim and fixed value
    [t] = study.get_trials()
    assert "l1_lambda" in t.params and t.user_attrs["seed"] == 3 and OWNER_ATTR in t.user_attrs


def test_a_block_that_fails_stores_nothing_and_its_retry_stores_all(study):
    study, commits = study
    trial = study.ask()
    commits.clear()
    with pytest.raises(RuntimeError, match="lost"), _compat.one_transaction(trial.storage):
        trial.set_user_attr("row", ROW)
        trial.report(0.69, 1)
        raise RuntimeError("connection lost")
    assert commits == [] and _stored(study) == ({}, {})  # rolled back
    # `trial` believes step 1 reported; the retry (Options.db) must report it again
    trials.record(trial, ROW, CURVE, single_objective=True)
    attrs, curve = _stored(study)
    assert attrs["row"] == ROW
    assert curve == {1: 0.69, 2: 0.7118}


def test_a_block_of_several_commits_turns_batching_off_in_one_line(study, caplog, monkeypatch):
    """The fence: where Optuna's writes no longer join the block (here: two writes of another
    connection inside it), batching stops, saying so once."""
    study, _ = study
    monkeypatch.setitem(_compat.BATCH_WRITES, "on", True)
    trial = study.ask()
    with caplog.at_level(logging.WARNING), _compat.one_transaction(trial.storage) as batched:
        assert batched
        for _ in range(2):
            with study.rdb.engine.begin() as conn:
                conn.exec_driver_sql("SELECT 1")
    assert _compat.BATCH_WRITES["on"] is False
    lines = [r.getMessage() for r in caplog.records if "own transaction" in r.getMessage()]
    assert lines == ["l1sweep: each storage write is its own transaction from now on "
                     "(a block made 3 commits: optuna changed)"]  # fmt: skip
    with _compat.one_transaction(trial.storage) as batched:
        assert not batched


def test_a_journal_storage_writes_as_optuna_does(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(storage=_compat.get_storage(storage))
    trial = study.ask()
    with _compat.one_transaction(trial.storage) as batched:
        trials.record(trial, ROW, CURVE, single_objective=True)
    assert not batched
    assert _stored(study)[1] == {1: 0.69, 2: 0.7118}


def test_the_loops_first_record_uses_the_asked_trial_not_a_lookup(study, tmp_path):
    """The row, curve and tell of a trial go through the Trial the loop asked for (nothing
    reported to it yet): no lookup of the study by name and of the trial by number, two
    queries a trial (issue 33); the curve is stored all the same."""
    study, _ = study
    loop = TrialLoop(_plan(study, tmp_path), ForkLauncher())
    trial = loop.ask()
    statements: list[str] = []
    event.listen(study.rdb.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *rest: statements.append(sql))  # fmt: skip
    loop._record(trial, ROW, TrialState.COMPLETE, [0.7118], CURVE)
    assert statements and not [s for s in statements if "studies.study_name =" in s]
    [t] = study.get_trials()
    assert t.state == TrialState.COMPLETE and t.intermediate_values == {1: 0.69, 2: 0.7118}


def _attr_writes(engine) -> list[str]:
    """The statements `engine` sends from now on that write trial_user_attributes."""
    writes: list[str] = []

    def seen(conn, cursor, sql, *rest) -> None:
        verb = sql.split()[0].upper()
        if "trial_user_attributes" in sql and verb in ("INSERT", "UPDATE", "DELETE"):
            writes.append(verb)

    event.listen(engine, "before_cursor_execute", seen)
    return writes


def test_a_trials_attributes_are_two_statements_and_store_what_one_by_one_does(
    study, tmp_path, monkeypatch
):
    """The row and its 27 figures: one multi-row upsert and Optuna's own of the last, where
    Optuna alone sends one write each; the study holds the same, a value written before
    replaced."""
    batched, _ = study
    trial = batched.ask()
    trial.set_user_attr("val_acc", "before")
    writes = _attr_writes(batched.rdb.engine)
    trials.record(trial, ROW, CURVE, single_objective=True)
    assert writes == ["INSERT", "INSERT"]
    monkeypatch.setitem(_compat.BULK_ATTRS, "on", False)
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/plain.db")
    plain = optuna.create_study(study_name="s", storage=_compat.get_storage(rdb))
    plain_writes = _attr_writes(rdb.engine)
    trials.record(plain.ask(), ROW, CURVE, single_objective=True)
    rdb.engine.dispose()
    assert len(plain_writes) == 28
    assert _stored(plain) == _stored(batched) and _stored(batched)[0]["val_acc"] == 0.7118


def test_attributes_of_a_finished_trial_are_refused_and_none_is_written(study):
    """Optuna's own check (the last attribute goes through set_user_attr) refuses a finished
    trial, and the block's rollback takes the bulk-written ones with it."""
    study, _ = study
    trial = study.ask()
    study.tell(trial, 0.5)
    with pytest.raises(RuntimeError, match="finished"):
        _compat.set_trial_user_attrs(trial, {"a": 1.0, "b": 2.0, "row": {"c": 1}})
    assert _stored(study)[0] == {}


def test_a_table_optuna_changed_turns_the_one_statement_off_in_one_line(study, caplog, monkeypatch):
    """The fence: a trial_user_attributes table whose columns are not the four it was written
    for (here one more, as a schema change would add) is left to Optuna, said once, and stays
    so for that database even where the switch is turned on again."""
    study, _ = study
    monkeypatch.setitem(_compat.BULK_ATTRS, "on", True)
    with study.rdb.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE trial_user_attributes ADD COLUMN value_type TEXT")
    writes = _attr_writes(study.rdb.engine)
    with caplog.at_level(logging.WARNING):
        trials.record(study.ask(), ROW, CURVE, single_objective=True)
    assert _compat.BULK_ATTRS["on"] is False and len(writes) == 28
    lines = [r.getMessage() for r in caplog.records if "one by one" in r.getMessage()]
    assert lines == [
        "l1sweep: a trial's attributes are written one by one from now on (optuna's "
        "trial_user_attributes table has columns ['key', 'trial_id', 'trial_user_attribute_id', "
        "'value_json', 'value_type'])"
    ]
    assert _stored(study)[0]["row"] == ROW
    monkeypatch.setitem(_compat.BULK_ATTRS, "on", True)
    writes.clear()
    trial = study.ask()
    trials.record(trial, ROW, CURVE, single_objective=True)
    assert len(writes) == 28
