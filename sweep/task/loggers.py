"""Experiment trackers (group `logger`, as lightning-hydra-template's): callbacks that send each
run to MLflow or TensorBoard as well as to its files.

- `logger=csv` (the default): nothing more than the files every run writes and the sweep's
  results.csv.
- `logger=mlflow` (`MLflowLogger`): one MLflow run per trial, nested under one parent run per
  sweep named by the study; the trial's overrides as params, every numeric figure of its row
  as a metric, each measured epoch's `val_acc`, `train_loss` and `sparsity` as metric
  histories (`epoch_*`, step = the run's epoch), and `model.pt`, `layers.csv`, `metrics.json`
  as artifacts. A run is found by its tags before one is made (`l1sweep.key`: the sweep's
  key, which names its study and moves with its directory; `l1sweep.trial`), so a resumed
  sweep, a trial run again or the seeds of `repeats` add to the trial's one run (with
  repeats, each seed's row figures are steps 0, 1, ... of their metric).
- `logger=tensorboard` (`TensorBoardLogger`): one event directory per trial under one log
  directory per sweep (`<sweep dir>/tensorboard/trial_<n>`), each epoch's scalars, and the
  hparams plugin's table (the trial's overrides against its final figures).

Both work in whichever process runs the trial (forked, joblib's workers, a SLURM job): each
trial opens its own connection there; nothing is shared with the sweep process.

A tracker is telemetry: it never costs a trial. Its store is reached before trial 0 (a sweep)
or before training (a single run), and refused in one line where it cannot be; during a run a
tracker that fails costs a bounded wait (MLflow's HTTP retries bounded by `HTTP_BOUNDS`) and
one warning, and the run goes on without it, its row and files whole.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sweep.config.paths import started_in, url_started_in
from sweep.errors import UserError
from sweep.task.callbacks import Callback
from sweep.task.where import Where

if TYPE_CHECKING:
    from sweep.task.job import Run

log = logging.getLogger(__name__)

STUDY_TAG, TRIAL_TAG, ROLE_TAG = "l1sweep.study", "l1sweep.trial", "l1sweep.role"
SWEEP_TAG, RUN_DIR_TAG = "l1sweep.sweep_dir", "l1sweep.run_dir"  # shown, never searched
KEY_TAG = "l1sweep.key"  # what runs are found by: hex, so no search filter needs quoting
COMMAND_TAG = "l1sweep.command"  # the command that reruns the run (results/command.py)
OWNER_FILE = ".l1sweep-study"  # the sweep directory's owner record (sweep/search/study.py)
# MLflow's own HTTP retries (7, backoff factor 2, a 120 s timeout) hold a trial 4 min 16 s on
# a server that is gone. These bound them (a user's own MLFLOW_HTTP_REQUEST_* settings win):
# a refused connection costs ~3 s, a server that never answers ~35 s, once per trial.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
START_TIMEOUT = 5.0  # seconds a tracking server has to answer before trial 0
ARTIFACTS = ("model.pt", "layers.csv", "metrics.json")
EPOCH_FIGURES = ("val_acc", "train_loss", "sparsity")


def need(module: str, extra: str) -> Any:
    """Import `module`, or raise UserError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(
            f"logger={extra} needs the {module} package, not installed: "
            f'pip install -e ".[{extra}]" (or pip install {extra}), or use logger=csv'
        ) from e


def numeric(row: dict[str, Any]) -> dict[str, float]:
    """The row's finite numbers (not booleans) as floats: what a tracker takes as metrics."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
    }


@contextmanager
def locked(path: Path):
    """An exclusive lock on `path` (made if missing) between the processes of one host: two
    trials starting together must not both make the sweep's parent run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MLflowLogger(Callback):
    """logger=mlflow: the run in an MLflow tracking store (module doc).

    tracking_uri: MLflow's store, e.g. sqlite:///outputs/mlflow.db (the default; a relative
    file reads from the directory the command was started in, also under
    hydra.job.chdir=true: config/paths.py), a directory, or http://host:5000. experiment: the MLflow
    experiment's name. artifact_location: where a new experiment keeps its artifacts (None:
    `mlartifacts/` beside an sqlite file, else MLflow's default).
    Raises UserError where mlflow is not installed (at construction: before any trial), and,
    in a single run, where the store cannot be reached (`check`; a sweep checks before its
    first trial, `check_reachable`). A failure while a run logs is one warning: the rest of
    that run logs nothing more to MLflow, and the run goes on."""

    order = 200  # after metrics_json (100): the row is whole and its file written

    def __init__(
        self,
        tracking_uri: str = "sqlite:///outputs/mlflow.db",
        experiment: str = "l1sweep",
        artifact_location: str | None = None,
    ) -> None:
        need("mlflow", "mlflow")
        for key, value in HTTP_BOUNDS.items():  # read by MLflow at each request
            os.environ.setdefault(key, value)
        self.given_uri = tracking_uri  # as the user wrote it, for messages
        self.tracking_uri, self.experiment = url_started_in(tracking_uri), experiment
        self.artifact_location = artifact_location
        self._client: Any = None  # made in the trial's own process, never forked
        self._run_id: str | None = None
        self._pending: list[Any] = []
        self._flushed = time.monotonic()
        self._off = False  # a call failed: this run logs nothing more to MLflow
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
            self.check()  # a single run, before it trains

    def check(self) -> None:
        """The store can be reached: an http(s) server answers within START_TIMEOUT seconds
        (any HTTP answer); a SQLite file's or a directory store's folder can be made and
        written. Other stores are met at their first use. Raises UserError (one line)."""
        parts = urlsplit(self.tracking_uri)
        if parts.scheme in ("http", "https"):
            reason = _unanswered(self.tracking_uri)
        elif parts.scheme in ("sqlite", "file", ""):
            reason = _unwritable(self.tracking_uri)
        else:
            return
        if reason is not None:
            raise UserError(
                f"logger.mlflow.tracking_uri={_shown(self.given_uri)} cannot be reached "
                f"({reason}): start the tracking server, correct the URI, or use logger=csv"
            )

    # -- the store ------------------------------------------------------------------------
    def client(self) -> Any:
        """The MLflow client of `tracking_uri`, made once (an SQLite file's folder is made)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):  # its folder must exist
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                    parents=True, exist_ok=True
                )
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        """The id of the experiment `experiment`, made if it does not exist."""
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = self.artifact_location
        if location is None and self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri.removeprefix("sqlite:///")).resolve()
            location = (db.parent / "mlartifacts").as_uri()
        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # another trial made it meanwhile
            return client.get_experiment_by_name(self.experiment).experiment_id

    def _find(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        """The run with these tags: values l1sweep makes (hex keys, numbers, role names), so
        the filter needs no quoting whatever a path or a study name holds."""
        assert not any(set("'\"\\`") & set(v) for v in tags.values()), tags
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client().search_runs([experiment_id], filter_string=where, max_results=1)
        return runs[0].info.run_id if runs else None

    def _find_or_create(
        self, experiment_id: str, tags: dict[str, str], name: str, extra: dict[str, str]
    ) -> str:
        found = self._find(experiment_id, tags)
        if found is not None:
            return found
        run = self.client().create_run(experiment_id, tags={**tags, **extra}, run_name=name)
        return run.info.run_id

    def run_id(self, run: Run) -> str:
        """This trial's MLflow run: found by its tags, or made (under its sweep's parent, the
        study's: found by the sweep's key, `sweep_key`, not by its directory's path)."""
        if self._run_id is not None:
            return self._run_id
        where = Where(run.out_dir)
        # One process at a time: MLflow builds a new sqlite store's tables on first use, which
        # two trials starting together would both do; and a sweep has one parent run.
        lock = where.sweep_dir / ".mlflow.lock"
        if self.tracking_uri.startswith("sqlite:///"):
            lock = Path(self.tracking_uri.removeprefix("sqlite:///") + ".lock")
        with locked(lock):
            exp, client = self.experiment_id(), self.client()
            if where.study is None:  # a single run: its own, named by its directory
                path = str(where.run_dir.resolve())
                tags = {ROLE_TAG: "run", KEY_TAG: _key(path)}
                self._run_id = self._find_or_create(exp, tags, where.name, {RUN_DIR_TAG: path})
                return self._run_id
            key, study = sweep_key(where.sweep_dir)
            shown = {STUDY_TAG: study or where.study, SWEEP_TAG: str(where.sweep_dir.resolve())}
            sweep_tags = {ROLE_TAG: "sweep", KEY_TAG: key}
            parent = self._find(exp, sweep_tags)
            if parent is None:  # a folder for the trials' runs; it logs nothing of its own
                made = client.create_run(exp, tags={**sweep_tags, **shown},
                                         run_name=shown[STUDY_TAG])  # fmt: skip
                parent = made.info.run_id
                client.set_terminated(parent, "FINISHED")
            tags = {ROLE_TAG: "trial", KEY_TAG: key, TRIAL_TAG: str(where.trial)}
            self._run_id = self._find_or_create(
                exp, tags, where.name, {"mlflow.parentRunId": parent, **shown}
            )
        return self._run_id

    def _flush(self, run: Run) -> None:
        if self._pending:
            run_id = self.run_id(run)  # first: the store is made under its lock
            self.client().log_batch(run_id, metrics=self._pending)
            self._pending = []
        self._flushed = time.monotonic()

    def _guarded(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        """fn(*args), a call to the store: one that fails (MLflow's bounded retries spent)
        is one warning, and this run logs nothing more to MLflow; the run goes on."""
        if self._off:
            return
        retries = logging.getLogger("urllib3.connectionpool")  # a line per retry: said once
        level = retries.level
        retries.setLevel(logging.ERROR)
        try:
            fn(*args)
        except Exception as e:
            self._off, self._pending = True, []
            log.warning(
                f"logger=mlflow: {what} failed ({_reason(e)}); this run goes on without "
                f"MLflow, its row and files whole (logger.mlflow.tracking_uri="
                f"{_shown(self.tracking_uri)})"
            )
        finally:
            retries.setLevel(level)

    # -- the hooks --------------------------------------------------------------------------
    def on_epoch_end(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        """Queue the epoch's figures as `epoch_*` metric steps; flushed every 10 s."""
        self._guarded("sending the epoch's figures", self._epoch_end, run, step, metrics)

    def _epoch_end(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [
            Metric(f"epoch_{k}", float(metrics[k]), now, step)
            for k in EPOCH_FIGURES
            if k in metrics and math.isfinite(metrics[k])
        ]
        if time.monotonic() - self._flushed > 10:  # live enough to watch, not a write an epoch
            self._flush(run)

    def on_run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Log the trial's params, row figures and artifacts to its run, and end it."""
        self._guarded("logging the run", self._run_end, run, metrics)

    def _run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        where = Where(run.out_dir)
        run_id = self.run_id(run)
        client = self.client()
        step = run.cfg.seed - _base_seed(where, run.cfg.seed)  # a repeats seed's index
        now = int(time.time() * 1000)
        figures = {k: v for k, v in numeric(metrics).items() if k != "seed"}
        self._pending += [Metric(k, v, now, step) for k, v in figures.items()]
        existing = client.get_run(run_id).data.params
        params = {k: v[:6000] for k, v in where.params().items() if k not in existing}
        tags = {k: str(metrics[k]) for k in ("status", "device") if k in metrics}
        tags[COMMAND_TAG] = where.command()[:8000]  # MLflow's limit on a tag's value
        client.log_batch(
            run_id,
            metrics=self._pending,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        self._pending = []
        for name in ARTIFACTS:
            if (run.out_dir / name).exists():
                path = None if step == 0 else f"seed_{run.cfg.seed}"
                client.log_artifact(run_id, str(run.out_dir / name), artifact_path=path)
        client.set_terminated(run_id, "FINISHED" if metrics["status"] != "failed" else "FAILED")


def check_reachable(callbacks: list[Callback]) -> None:
    """Before a sweep's first trial: each tracker's store can be reached (UserError if not)."""
    for cb in (cb for cb in callbacks if isinstance(cb, MLflowLogger)):
        cb.check()


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sweep_key(sweep_dir: Path) -> tuple[str, str | None]:
    """The sweep's key for a tracker, and its study's name where known: the sweep is its study,
    not its path. The `id` of the directory's owner record (sweep/search/study.py: made once
    per study, it moves with the directory); a hash of the record's study and storage where it
    has none (an older record); of the directory's path where there is no record."""
    try:
        owner = json.loads((sweep_dir / OWNER_FILE).read_text())
        study, storage = str(owner["study"]), str(owner["storage"])
    except (OSError, ValueError, KeyError, TypeError):
        return _key(str(sweep_dir.resolve())), None
    made = str(owner.get("id") or "")
    if len(made) == 32 and all(c in "0123456789abcdef" for c in made):
        return made, study
    return _key(json.dumps([storage, study])), study


def _reason(error: Exception) -> str:
    """A failed call's error in a few words: the operating system's reason where one is in
    it (MLflow wraps requests' wrapping of urllib3's), else its first line."""
    text = str(error).strip()
    found = re.search(r"\[Errno -?\d+\] [^'\")(]+", text)
    if found:
        return f"{type(error).__name__}: {found.group(0).strip()}"
    first = (text.splitlines() or [""])[0]
    return f"{type(error).__name__}: {first[:200]}{'...' if len(first) > 200 else ''}"


def _shown(uri: str) -> str:
    """The URI as it may be printed: a password in it as ***."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return uri.replace(f":{parts.password}@", ":***@")


def _unanswered(uri: str) -> str | None:
    """Why the http(s) server at `uri` gives no answer within START_TIMEOUT seconds (None:
    it answered, whatever it said, but for a proxy's 502-504). MLflow's own session is not
    used: this process forks the trials, which must not share its connections."""
    parts = urlsplit(uri)
    try:
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
        with urllib.request.urlopen(url, timeout=START_TIMEOUT):
            return None
    except urllib.error.HTTPError as e:  # it answered; a gateway's error: no server behind it
        return f"HTTP {e.code} {e.reason}" if e.code in (502, 503, 504) else None
    except urllib.error.URLError as e:
        return str(e.reason)
    except (OSError, ValueError) as e:  # a timeout, a bad port
        return str(e) or type(e).__name__


def _unwritable(uri: str) -> str | None:
    """Why the SQLite file or directory store of `uri` cannot be written (None: it can)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        folder = path.parent
    else:  # a directory store
        path = folder = Path(urlsplit(uri).path if uri.startswith("file:") else uri)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot make {folder}: {e.strerror}"
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path} is read-only"
    return None


def _base_seed(where: Where, seed: int) -> int:
    """The first seed of a `repeats` trial (its seed_<s>/ directories), or `seed` itself."""
    seeds = sorted(
        int(p.name.removeprefix("seed_"))
        for p in where.run_dir.glob("seed_*")
        if p.name.removeprefix("seed_").isdigit()
    )
    return seeds[0] if seeds else seed


class TensorBoardLogger(Callback):
    """logger=tensorboard: each epoch's val_acc, train_loss and sparsity as scalars (step = the
    run's epoch), the final figures as `final/<key>` scalars, and the hparams plugin's row (the
    trial's overrides against its final val_acc, test_acc, sparsity) in
    `<log_dir>/<trial_n or the run's directory name>`.

    log_dir: None = `<sweep dir>/tensorboard` for a sweep's trials, `<run dir>/tensorboard`
    for a single run. Raises UserError where tensorboard is not installed."""

    order = 200
    HPARAM_METRICS = ("val_acc", "test_acc", "sparsity", "nnz")

    def __init__(self, log_dir: str | None = None) -> None:
        need("tensorboard", "tensorboard")
        self.log_dir = log_dir
        self._writer: Any = None

    def writer(self, run: Run) -> Any:
        """The SummaryWriter of this trial's log directory, made once."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            where = Where(run.out_dir)
            root = started_in(self.log_dir) if self.log_dir else where.sweep_dir / "tensorboard"
            name = (
                where.name if run.out_dir == where.run_dir else f"{where.name}_{run.out_dir.name}"
            )
            self._writer = SummaryWriter(log_dir=str(root / name))
        return self._writer

    def on_epoch_end(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        """Write the epoch's figures as scalars at `step`."""
        w = self.writer(run)
        for key in EPOCH_FIGURES:
            if key in metrics:
                w.add_scalar(key, metrics[key], step)

    def on_run_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Write the row's figures and the hparams table entry, and close the writer."""
        from torch.utils.tensorboard.summary import hparams

        w = self.writer(run)
        figures = numeric(metrics)
        for key, value in figures.items():
            w.add_scalar(f"final/{key}", value, 0)
        params: dict[str, Any] = {}
        for key, value in Where(run.out_dir).params().items():
            try:
                params[key] = float(value)
            except ValueError:
                params[key] = value
        chosen = {f"hparam/{k}": figures[k] for k in self.HPARAM_METRICS if k in figures}
        for summary in hparams(params, chosen):  # the plugin's experiment, its session, its end
            w.file_writer.add_summary(summary)
        for key, value in chosen.items():
            w.add_scalar(key, value, 0)
        w.close()
        self._writer = None
