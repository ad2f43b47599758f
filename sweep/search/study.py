"""Study bookkeeping: open a study (its storage shown with the password masked), the
fingerprint that keeps a named study's trials comparable, the resume command, results.csv,
the sweep directory's owner, and the trials a killed sweep left RUNNING."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sweep import _compat, _moved
from sweep.errors import UserError
from sweep.results import points
from sweep.results import table as results
from sweep.results.command import command, config_flags
from sweep.results.row import JobResult
from sweep.search.launcher import FORK_LOCK
from sweep.search.trials import ROW_ATTR, SUBDIR, record, set_user_attrs, trial_by_number

CONFIG_ATTR = "l1sweep_config"
log = logging.getLogger(__name__)


def shown(storage: Any) -> str:
    """The storage as it may be printed: a URL's password as ***."""
    if not isinstance(storage, str):
        return str(storage)
    try:
        return make_url(storage).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy knows; nothing in it is marked secret
        return storage


def masked(text: str, storage: Any) -> str:
    """`text` with the storage URL's password masked wherever it occurs (URL or alone)."""
    if not isinstance(storage, str) or shown(storage) == storage:
        return text
    text = text.replace(storage, shown(storage))
    password = make_url(storage).password
    return text.replace(f":{password}@", ":***@") if password else text


class ResultFiles:
    """results.csv and points.csv of one sweep directory, rewritten whole from the study after
    every trial (a process sharing the study may have added trials): every finished trial
    once, keyed by trial number. A finished trial's row and points never change, so each is
    built once per process (the plan's, from the start's catch-up on), not at every rewrite (a
    path trial's rounds.csv read again after every trial made a rewrite grow with the sweep:
    issue 33)."""

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = csv_path
        # trial -> (row, points); the points' `seconds` counted from 0 (the POSIX time they
        # finished), moved to the sweep's first start at each rewrite: that start moves when
        # a trial that started earlier finishes later
        self.built: dict[int, tuple[dict, list[dict]]] = {}

    def write(self, study: optuna.Study) -> None:
        """Rewrite both files from `study`, under the directory's lock."""
        with results.locked(self.csv_path):
            # Finished trials only: another process's trial may hold its row a moment before
            # its state, and a trial failed over by Ctrl-C keeps a row that no longer
            # describes it.
            finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            told = study.get_trials(deepcopy=False, states=finished)
            trials = [t for t in told if t.user_attrs.get(ROW_ATTR) is not None]
            for t in trials:
                if t.number not in self.built:
                    row = dict(t.user_attrs[ROW_ATTR])
                    self.built[t.number] = (row, points.trial_points(t, row, start=0.0))
            rows = [dict(self.built[t.number][0]) for t in trials]
            if len(study.directions) > 1:
                front = {t.number for t in study.best_trials}
                for row in rows:
                    row["pareto"] = row["trial"] in front
            results.write_atomic(rows, self.csv_path)
            start = points.first_start(trials) or 0.0
            every = [{**p, "seconds": p["seconds"] - start}  # every level's model
                     for t in trials for p in self.built[t.number][1]]  # fmt: skip
            points.write(every, self.csv_path.with_name(points.NAME))


def open_study(
    name: str,
    storage: Any,
    directions: list[str],
    sampler: optuna.samplers.BaseSampler | None,
    pruner: optuna.pruners.BasePruner | None = None,
    create: bool = True,
) -> tuple[optuna.Study, optuna.storages.BaseStorage, bool]:
    """The study `name` in `storage` (a URL, a storage config or object), made if it does not
    exist (with create=False: only loaded, and None where it does not exist; its directions are
    then not checked); the storage object it is held in (Optuna's public lookups are the
    storage's); and whether this call made it.
    Bad input (a URL, a server that does not answer, other directions) is a UserError."""
    url = storage
    for attempt in range(5):
        try:
            if isinstance(storage, str) and storage.startswith("sqlite:///"):
                Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(storage, DictConfig):
                storage = _compat.instantiate(storage, ("optuna.storages.*",))
            # one engine for both calls below, and held for the lookups a Study lacks
            storage = _compat.get_storage(storage)
            created = (
                name is None or storage is None or name not in optuna.get_all_study_names(storage)
            )
            if not create:  # loaded, not made: no "Using an existing study" line, said later
                if created:
                    return None, storage, False  # type: ignore[return-value]
                study = optuna.load_study(
                    study_name=name, storage=storage, sampler=sampler, pruner=pruner
                )
                return study, storage, False
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                directions=directions,
                load_if_exists=True,
            )
            return study, storage, created
        except ValueError as e:
            if "direction" in str(e).lower():
                raise UserError(f"study {name!r} was created with other directions: {e}") from e
            error: Exception = e
        except Exception as e:  # SQLAlchemy/driver/OS errors: bad URL, server down, no such dir
            # Optuna's RDB storage creates its tables on first connect; two processes starting
            # on a fresh database race there (a duplicate key; SQLite: UNIQUE constraint
            # failed, on alembic_version). The loser retries and finds them.
            error = e
            if any(m in str(e) for m in ("duplicate key", "already exists", "UNIQUE constraint")):
                time.sleep(0.5 * (attempt + 1))
                continue
        break
    reason = masked(str(error).splitlines()[0], url)
    raise UserError(
        f"cannot open the Optuna storage {shown(url)!r}: {reason}. "
        "Check hydra.sweeper.storage (URL, server, file permissions)."
    ) from None  # the chained error's text may hold the password


def drop_if_unused(study: optuna.Study, storage: optuna.storages.BaseStorage) -> bool:
    """Delete `study` (which this process made in `storage`) if no trial of it has started: a
    start that failed before its first trial leaves no study, so the corrected command may use
    its name. Returns whether it was deleted; a storage that fails here keeps it (nothing is
    lost)."""
    try:
        if any(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            return False
        optuna.delete_study(study_name=study.study_name, storage=storage)
    except Exception:  # the error being reported matters more than this clean-up
        return False
    log.info(f"study {study.study_name} had no trial yet: deleted")
    return True


# ---- the sweep directory's owner ----------------------------------------------------------
# A sweep directory holds one study's results.csv and trial_<n> directories. A second study
# started there (the same fixed hydra.sweep.dir) would overwrite them, its trial numbers
# starting at 0 too; the marker file names the owner, and any other study is refused.

OWNER_FILE = ".l1sweep-study"


def _storage_id(storage: Any) -> str:
    """The storage as the marker records it: a URL with its password masked, a storage config
    (the journal file) as its keys."""
    if isinstance(storage, DictConfig):
        return json.dumps(OmegaConf.to_container(storage, resolve=True), sort_keys=True)
    return shown(storage)


def check_owner(sweep_dir: Path, name: str | None, storage: Any) -> str | None:
    """Whether study `name` in `storage` may run in `sweep_dir`, before anything is written
    there: None if the directory's marker names it; "new" if the directory holds no sweep;
    "old" if it holds one from before markers (claim_dir decides). Raises UserError (which
    study owns it, and how to choose another directory) for another study's directory."""
    marker = sweep_dir / OWNER_FILE
    if marker.is_file():
        try:
            owner = json.loads(marker.read_text())
            study, where = owner["study"], owner["storage"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{marker} is not l1sweep's owner record ({e}); choose another directory "
                "with hydra.sweep.dir=..."
            ) from None
        if study == name and where == _storage_id(storage):
            return None
        raise UserError(
            f"the sweep directory {sweep_dir} belongs to study {study!r} in {where}; study "
            f"{name!r} would overwrite its results.csv and trial_* files: choose another "
            f"directory with hydra.sweep.dir=... (the default, outputs/sweeps/<study_name>, "
            f"is the study's own), or resume {study!r} with hydra.sweeper.study_name={study}"
        )
    held = (sweep_dir / "results.csv").is_file() or any(sweep_dir.glob(f"{SUBDIR}*"))
    return "old" if sweep_dir.is_dir() and held else "new"


def claim_dir(sweep_dir: Path, study: optuna.Study, storage: Any, how: str) -> None:
    """Write `sweep_dir`'s marker for `study`. A directory from before markers ("old") is the
    study's only if one of its trials ran there; otherwise UserError, as for another owner."""
    if how == "old":
        here = os.path.abspath(sweep_dir)
        ran = (
            (t.user_attrs.get(ROW_ATTR) or {}).get("run_dir")
            for t in study.get_trials(deepcopy=False)
        )
        if not any(r and os.path.dirname(os.path.abspath(r)) == here for r in ran):
            raise UserError(
                f"the sweep directory {sweep_dir} holds another sweep's results.csv or trial_* "
                f"files, which study {study.study_name!r} would overwrite: choose another "
                "directory with hydra.sweep.dir=..."
            )
    # `id`: the sweep's own name for trackers (MLflow's parent run is found by it), which moves
    # with the directory; made once: a second process claiming at the same instant keeps the
    # first's record (a hard link is made only where no file is)
    record = {"study": study.study_name, "storage": _storage_id(storage), "id": uuid.uuid4().hex}
    tmp = sweep_dir / f".{OWNER_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    try:
        os.link(tmp, sweep_dir / OWNER_FILE)
    except FileExistsError:  # claimed meanwhile: the owner's check says whether by this study
        check_owner(sweep_dir, study.study_name, storage)
    finally:
        tmp.unlink()


def fingerprint(cfg: DictConfig, space: dict, directions: list[str]) -> dict:
    """What must match for trials to be comparable: the task config minus searched keys."""
    task = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
    )
    flat = flatten(task)
    for name in space:
        flat.pop(name, None)
    flat.pop("objective.baseline_val_acc", None)
    # Neither changes a trial's numbers: how often it logs, and the hand-written MLP and SGD
    # steps (bit for bit autograd's and torch.optim's on CPU), so a study resumes across them.
    flat.pop("train.log_every", None)
    flat.pop("train.fast", None)
    flat["search_space"] = {k: repr(v) for k, v in space.items()}
    flat["directions"] = directions
    flat["choices"] = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    # experiment/<name>@<group> choices follow from `experiment` and the group's own choice
    skipped = ("hydra", "experiment/")
    flat["choices"] = {k: v for k, v in flat["choices"].items() if not k.startswith(skipped)}
    return json.loads(json.dumps(flat, default=str))


def check_same_config(study: optuna.Study, fingerprint: dict) -> None:
    """Record the study's configuration `fingerprint` on a new study; on a resumed one, a
    UserError naming each key that differs (a resumed study must search the same thing)."""
    old = study.user_attrs.get(CONFIG_ATTR)
    if old is None:
        study.set_user_attr(CONFIG_ATTR, fingerprint)
        return
    # a study started before the modules moved recorded their old _target_ paths
    old = {k: _moved.current(v) if k.endswith("_target_") and isinstance(v, str) else v
           for k, v in old.items()}  # fmt: skip
    diff = sorted(k for k in old.keys() | fingerprint.keys() if old.get(k) != fingerprint.get(k))
    if diff:
        changes = "; ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in diff[:4])
        raise UserError(
            f"study {study.study_name!r} was started with a different configuration ({changes}). "
            "Its trials would not be comparable: use a new hydra.sweeper.study_name."
        )


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested dict as one level of dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resume_command(cfg: DictConfig, study_name: str, arguments: list[str], storage: Any) -> str:
    """The command that continues this study; a storage password in it is masked (the user
    supplies it again, or better keeps it out of the command line: docs/long_sweeps.md)."""
    # unresolved: an override `hydra.sweeper.storage=${oc.env:...}` stays that, not the secret
    overrides = OmegaConf.to_container(cfg.hydra.overrides.hydra, resolve=False)
    hydra_args = [
        o for o in overrides if not o.startswith(("hydra.sweeper.study_name=", "hydra.mode="))
    ]
    overrides = [*hydra_args, f"hydra.sweeper.study_name={hydra_value(study_name)}", *arguments]
    return masked(command(config_flags(cfg.hydra), overrides, multirun=True), storage)


def hydra_value(value: str) -> str:
    """`value` as a value in Hydra's override grammar: as it is where it is a plain name, else
    quoted ('o\\'brien': a quote, and backslashes before a quote or the end, escaped)."""
    if re.fullmatch(r"[\w.\-/]+", value):
        return value
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


# ---- stale trials -------------------------------------------------------------------------
# A trial whose sweep process was killed (SIGKILL, a lost node) stays RUNNING in the storage.
# Optuna's own heartbeat (heartbeat_interval) works only inside study.optimize, not with
# ask/tell, so each sweep marks the trials it runs with its host and pid, and beats for them.

OWNER_ATTR = "l1sweep_owner"
# beside results.csv: processes sharing a study ask, claim and recover one at a time, so a
# RUNNING trial without an owner seen under this lock was asked by a process that died before
# claiming it (TrialLoop.ask), not one another process is claiming now
ASK_LOCK = ".l1sweep-ask"
HEARTBEAT_ATTR = "l1sweep_heartbeat"
RERUN_ATTR = "l1sweep_rerun_of"


def claim(trial: optuna.Trial) -> None:
    """Mark a trial this process has just asked for as its own, alive now."""
    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    set_user_attrs(trial, {OWNER_ATTR: owner, HEARTBEAT_ATTR: time.time()})


@contextlib.contextmanager
def heartbeat(trials: list[optuna.Trial], every: float) -> Iterator[None]:
    """While the block runs, renew the heartbeat of `trials` every `every` seconds."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            for trial in list(trials):
                # FORK_LOCK: no trial's process is forked while this thread is in the storage
                with FORK_LOCK, contextlib.suppress(Exception):  # told meanwhile: nothing to renew
                    trial.set_user_attr(HEARTBEAT_ATTR, time.time())

    thread = threading.Thread(target=beat, name="l1sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _why_lost(t: optuna.trial.FrozenTrial, grace: float, unclaimed_are_lost: bool) -> str | None:
    """Why RUNNING trial `t`'s sweep is gone (recover_stale's rule), or None if it may live."""
    owner, host = t.user_attrs.get(OWNER_ATTR) or {}, socket.gethostname()
    beat = t.user_attrs.get(HEARTBEAT_ATTR, t.datetime_start.timestamp())
    if owner.get("host") == host and owner.get("pid") == os.getpid():
        return None  # this process's own (none at start; kept for safety)
    if owner.get("host") == host and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
        return f"its process {owner['pid']} is gone"
    if not owner and unclaimed_are_lost:
        return "its sweep stopped before claiming it"
    if time.time() - beat > grace:
        return f"no heartbeat for {time.time() - beat:.0f}s, grace {grace:g}s"
    return None


def recover_stale(
    study: optuna.Study,
    grace: float,
    sweep_dir: Path | None = None,
    *,
    storage: optuna.storages.BaseStorage,
    unclaimed_are_lost: bool = False,
) -> list[int]:
    """Settle the study's RUNNING trials whose sweep is gone; returns their numbers. Gone: on
    this host, its pid is not alive; on any host, no heartbeat for `grace` seconds. A live
    trial of another process is untouched.

    A lost trial whose job finished (its sweep_dir/trial_<n>/metrics.json says complete,
    pruned or diverged: the sweep lost the storage, or was killed, before telling it) is told
    that result, with its row, from its files (`finished_from_files`). Any other is failed,
    and its parameters (if it had drawn any) enqueued, so that they run first. `storage` is
    the one `study` was opened with (see `trial_by_number`). `unclaimed_are_lost`: the caller
    holds the study's ASK_LOCK, so a trial with no owner is one whose sweep died between its
    ask and its claim (it would otherwise wait out `grace`, counted as running)."""
    lost = []
    for t in study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        why = _why_lost(t, grace, unclaimed_are_lost)
        if why is None:
            continue
        trial_dir = sweep_dir / f"{SUBDIR}{t.number}" if sweep_dir is not None else None
        if trial_dir is not None and told_from_files(study, storage, t, trial_dir) is not None:
            log.warning(
                f"trial {t.number} was left RUNNING ({why}) after its job had finished: its "
                f"result is recorded from {sweep_dir / f'{SUBDIR}{t.number}'}, not trained again"
            )
            lost.append(t.number)
            continue
        try:
            if t.user_attrs.get(ROW_ATTR) is not None:
                # killed between recording its row and telling its state: the row would stand
                # in the CSV as a finished trial the study has failed (its parameters rerun)
                trial_by_number(study, storage, t.number).set_user_attr(ROW_ATTR, None)
            study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another process recovered it first
            continue
        left = f"trial {t.number} was left RUNNING ({why}): failed;"
        if t.params:
            study.enqueue_trial(t.params, user_attrs={RERUN_ATTR: t.number})
            log.warning(f"{left} its parameters run next")
        else:  # killed between its ask and its draw: no point to run again
            log.warning(f"{left} it had drawn no parameters, so nothing is run again for it")
        lost.append(t.number)
    return lost


def finished_from_files(trial_dir: Path, number: int) -> tuple[dict, list, list[float]] | None:
    """What the sweeper would have recorded for the job that ran in `trial_dir` (a finished
    job's metrics.json, its .hydra/ config and overrides): (row, curve, objective values), or
    None where the job did not finish (no metrics.json, or one without a final status)."""
    from sweep.task import objectives  # the objective of the trial's own config

    try:
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        config = OmegaConf.load(trial_dir / ".hydra" / "config.yaml")
        overrides = OmegaConf.to_container(OmegaConf.load(trial_dir / ".hydra" / "overrides.yaml"))
        hydra = OmegaConf.load(trial_dir / ".hydra" / "hydra.yaml").hydra
        output_dir = hydra.runtime.output_dir
    except (OSError, ValueError, AttributeError):
        return None
    if metrics.get("status") not in ("complete", "pruned", "diverged"):
        return None
    # what its job would have returned: the row without the curve or the seeds' own figures
    result = JobResult.of_metrics(metrics, objectives.values(metrics, config.objective))
    values = result.objective or []
    row = result.to_row(number, overrides, output_dir, len(values) == 1, config_flags(hydra))
    return row, result.curve, values


def told_from_files(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    t: optuna.trial.FrozenTrial,
    trial_dir: Path,
) -> dict | None:
    """Tell unfinished trial `t` the result its job left in `trial_dir`; returns its row, or
    None if the job left none (or another process settled the trial first)."""
    found = finished_from_files(trial_dir, t.number)
    if found is None:
        return None
    row, curve, values = found
    trial = trial_by_number(study, storage, t.number)
    single = len(study.directions) == 1
    reported = set(t.intermediate_values)  # a pruning job reported its curve itself
    try:
        record(trial, row, [p for p in curve if p[0] not in reported], single)
        if row["status"] == "complete" and all(map(math.isfinite, values)):
            study.tell(t.number, values=values)
        elif row["status"] == "pruned":
            study.tell(t.number, state=TrialState.PRUNED)
        else:
            study.tell(t.number, state=TrialState.FAIL)
    except (ValueError, RuntimeError):  # another process settled it first
        return None
    return row
