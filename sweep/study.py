"""Study bookkeeping: open a study (its storage shown with the password masked), the
fingerprint that keeps a named study's trials comparable, the resume command, results.csv,
and the trials a killed sweep left RUNNING."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sweep import results
from sweep.errors import UserError
from sweep.launcher import FORK_LOCK
from sweep.trials import ROW_ATTR

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


def write_csv(study: optuna.Study, csv_path: Path) -> None:
    """Rewrite results.csv from the study: every finished trial once, keyed by trial number."""
    with results.locked(csv_path):
        # Finished trials only: another process's trial may hold its row a moment before its
        # state, and a trial failed over by Ctrl-C keeps a row that no longer describes it.
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        told = study.get_trials(deepcopy=False, states=finished)
        trials = [t for t in told if t.user_attrs.get(ROW_ATTR) is not None]
        rows = [dict(t.user_attrs[ROW_ATTR]) for t in trials]
        if len(study.directions) > 1:
            front = {t.number for t in study.best_trials}
            for row in rows:
                row["pareto"] = row["trial"] in front
        results.write_atomic(rows, csv_path)


def open_study(
    name: str,
    storage: Any,
    directions: list[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    url = storage
    for attempt in range(5):
        try:
            if isinstance(storage, str) and storage.startswith("sqlite:///"):
                Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(storage, DictConfig):
                storage = instantiate(storage, _execution_whitelist_=("optuna.storages.*",))
            return optuna.create_study(
                study_name=name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                directions=directions,
                load_if_exists=True,
            )
        except ValueError as e:
            if "direction" in str(e).lower():
                raise UserError(f"study {name!r} was created with other directions: {e}") from e
            error: Exception = e
        except Exception as e:  # SQLAlchemy/driver/OS errors: bad URL, server down, no such dir
            # Optuna's RDB storage creates its tables on first connect; two processes starting
            # on a fresh database race there (duplicate key). The loser retries and finds them.
            error = e
            if "duplicate key" in str(e) or "already exists" in str(e):
                time.sleep(0.5 * (attempt + 1))
                continue
        break
    reason = masked(str(error).splitlines()[0], url)
    raise UserError(
        f"cannot open the Optuna storage {shown(url)!r}: {reason}. "
        "Check hydra.sweeper.storage (URL, server, file permissions)."
    ) from None  # the chained error's text may hold the password


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
    flat["choices"] = {k: v for k, v in flat["choices"].items() if not k.startswith("hydra")}
    return json.loads(json.dumps(flat, default=str))


def check_same_config(study: optuna.Study, fingerprint: dict) -> None:
    old = study.user_attrs.get(CONFIG_ATTR)
    if old is None:
        study.set_user_attr(CONFIG_ATTR, fingerprint)
        return
    diff = sorted(k for k in old.keys() | fingerprint.keys() if old.get(k) != fingerprint.get(k))
    if diff:
        changes = "; ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in diff[:4])
        raise UserError(
            f"study {study.study_name!r} was started with a different configuration ({changes}). "
            "Its trials would not be comparable: use a new hydra.sweeper.study_name."
        )


def flatten(d: dict, prefix: str = "") -> dict:
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
    command = shlex.join(
        ["python", "-m", "sweep.run", "-m", *hydra_args,
         f"hydra.sweeper.study_name={study_name}", *arguments]
    )  # fmt: skip
    return masked(command, storage)


# ---- stale trials -------------------------------------------------------------------------
# A trial whose sweep process was killed (SIGKILL, a lost node) stays RUNNING in the storage.
# Optuna's own heartbeat (heartbeat_interval) works only inside study.optimize, not with
# ask/tell, so each sweep marks the trials it runs with its host and pid, and beats for them.

OWNER_ATTR = "l1sweep_owner"
HEARTBEAT_ATTR = "l1sweep_heartbeat"
RERUN_ATTR = "l1sweep_rerun_of"


def claim(trial: optuna.Trial) -> None:
    """Mark a trial this process has just asked for as its own, alive now."""
    trial.set_user_attr(OWNER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
    trial.set_user_attr(HEARTBEAT_ATTR, time.time())


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


def recover_stale(study: optuna.Study, grace: float) -> list[int]:
    """Fail the study's RUNNING trials whose sweep is gone, and enqueue their parameters (if
    they had drawn any) so that they run first; returns their numbers. Gone: on this host, its
    pid is not alive; on any host, no heartbeat for `grace` seconds. A live trial of another
    process is untouched."""
    host, now, lost = socket.gethostname(), time.time(), []
    for t in study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        owner = t.user_attrs.get(OWNER_ATTR) or {}
        beat = t.user_attrs.get(HEARTBEAT_ATTR, t.datetime_start.timestamp())
        if owner.get("host") == host and owner.get("pid") == os.getpid():
            continue  # this process's own (none at start; kept for safety)
        if owner.get("host") == host and isinstance(owner.get("pid"), int):
            why = None if _alive(owner["pid"]) else f"its process {owner['pid']} is gone"
        else:
            why = None
        if why is None and now - beat > grace:
            why = f"no heartbeat for {now - beat:.0f}s, grace {grace:g}s"
        if why is None:
            continue
        try:
            if t.user_attrs.get(ROW_ATTR) is not None:
                # killed between recording its row and telling its state: the row would stand
                # in the CSV as a finished trial the study has failed (its parameters rerun)
                study._storage.set_trial_user_attr(t._trial_id, ROW_ATTR, None)
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
