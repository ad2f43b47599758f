"""Entry point: `python -m sweep.run [overrides]` trains one configuration;
`python -m sweep.run -m [overrides]` runs the Optuna sweep over l1_lambda."""

from __future__ import annotations

import atexit
import fnmatch
import gc
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweep.config import schema
from sweep.errors import UserError, config_error
from sweep.results.row import JobResult
from sweep.search import console, trials  # schema: registers the config schemas
from sweep.task import objectives, rules

log = logging.getLogger("sweep")
assert schema  # imported for its ConfigStore entries

# A run's results: a hydra.run.dir holding them (or a repeated run's seed_<n>/ holding them)
# holds a run, never overwritten. A refused start's files are not results: it removes them.
RUN_FILES = ("metrics.json", "model.pt")
# What a run writes into its directory (the default callbacks, the tensorboard logger, a
# repeated run's seeds, a path's levels): the only new entries a refused start removes, so a
# file another process put beside them is never touched.
RUN_OUTPUTS = (*RUN_FILES, "layers.csv", "model.l1z", "features.csv", "rounds.csv",
               "tensorboard", "seed_*", "level_*.pt")  # fmt: skip
_free: dict[str, str] = {}


@dataclass
class Before:
    """What a single run's directory held before this start, so that a refused start (exit
    2) can leave it as it was: `made`, the first directory this start created (the run
    directory or an ancestor; None where it existed), its entries, the bytes of the files in
    its .hydra/ (which Hydra rewrites before the run's checks) and the size of its run.log
    (which Hydra appends to). `known` False: taken only once Hydra had written (a
    hydra.run.dir set in a config file), so .hydra/ and run.log's end count as this start's."""

    path: Path
    made: Path | None
    names: frozenset[str]
    hydra: dict[str, bytes]
    log_size: int | None
    known: bool = True

    @classmethod
    def of(cls, path: str | Path) -> Before:
        """The state of `path` now (absolute: a job may change the working directory)."""
        path = Path(os.path.abspath(path))
        if not path.is_dir():
            made = path
            while not made.parent.exists() and made.parent != made:
                made = made.parent
            return cls(path, made, frozenset(), {}, None)
        hydra = path / ".hydra"
        saved = {p.name: p.read_bytes() for p in hydra.iterdir() if p.is_file()} if (
            hydra.is_dir()) else {}  # fmt: skip
        log_file = path / "run.log"
        size = log_file.stat().st_size if log_file.is_file() else None
        return cls(path, None, frozenset(os.listdir(path)), saved, size)

    def restore(self) -> None:
        """Undo this start: remove what it created in the directory (a run's own outputs,
        RUN_OUTPUTS; or the directory and its ancestors where it created them, if nothing else
        is in them now), put .hydra/'s files back and cut run.log back to its size. Best
        effort: a file that cannot be removed is left (the refusal being reported matters)."""
        if not self.path.is_dir():
            return
        if self.made is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self.path.parents:
                if not parent.is_relative_to(self.made):
                    break
                try:
                    os.rmdir(parent)  # only if empty: another process may be writing there
                except OSError:
                    break
            return
        for name in set(os.listdir(self.path)) - self.names - {".hydra", "run.log"}:
            if any(fnmatch.fnmatch(name, pattern) for pattern in RUN_OUTPUTS):
                _remove(self.path / name)
        self._restore_hydra()
        self._restore_log()

    def _restore_hydra(self) -> None:
        """.hydra/ as it was: its files' bytes put back, or the directory removed where this
        start made it (or rewrote it, unknown from what)."""
        hydra = self.path / ".hydra"
        if ".hydra" not in self.names or not self.known:
            _remove(hydra)
            return
        for p in hydra.iterdir():
            if p.name not in self.hydra:
                _remove(p)
        for name, data in self.hydra.items():
            file = hydra / name
            if not file.is_file() or file.read_bytes() != data:
                file.write_bytes(data)

    def _restore_log(self) -> None:
        """run.log cut back to its size, or removed where this start made it."""
        log_file = self.path / "run.log"
        size = self.log_size
        if "run.log" in self.names and size is not None and (self.known or size > 0):
            if log_file.is_file():
                os.truncate(log_file, size)
        else:
            _remove(log_file)


def _remove(path: Path) -> None:
    """Remove a file or a directory tree, if there; best effort."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


# The single-run directories this process may undo on a refusal: the command line's
# hydra.run.dir (cli), the default one free_dir made, or, for one set in a config file, the
# run's directory as main found it.
_before: dict[Path, Before] = {}


def free_dir(path: str) -> str:
    """`path`, or `path_1`, `path_2`, ... where `path` is taken: the default single-run
    directory (outputs/runs/<date>_<time>, conf/config.yaml), so that two runs started in the
    same second do not write into one directory. The name is reserved by creating it (two
    processes cannot both create it), and kept for the rest of this process."""
    if path not in _free:
        candidate, n = path, 0
        while True:
            before = Before.of(candidate)
            try:
                Path(candidate).mkdir(parents=True)
                break
            except FileExistsError:
                n += 1
                candidate = f"{path}_{n}"
        _free[path] = candidate
        _before.setdefault(before.path, before)
    return _free[path]


# OmegaConf 2.4's name (hydra-core 1.4 needs 2.4, where register_new_resolver warns)
OmegaConf.register_resolver("l1sweep.free_dir", free_dir, replace=True)


def held_run(directory: Path) -> Path | None:
    """The first of a run's results in `directory` (RUN_FILES, there or in a repeated run's
    seed_<n>/), if it holds one. A refused start's .hydra/ and run.log are not a run."""
    places = [directory, *sorted(directory.glob("seed_*"))] if directory.is_dir() else []
    return next((p / f for p in places for f in RUN_FILES if (p / f).exists()), None)


# Hydra's mode flags, of which it takes one (a second is a ValueError traceback from Hydra)
MODES = {"-m": "-m", "--multirun": "-m", "-c": "--cfg", "--cfg": "--cfg", "-i": "--info",
         "--info": "--info", "-r": "--run", "--run": "--run"}  # fmt: skip


def check_modes(args: list[str]) -> None:
    """UserError (one line) where the command line gives more than one of Hydra's modes: -m,
    --cfg, --info, --run (e.g. `-m --cfg job`)."""
    given = sorted({MODES[a.split("=")[0]] for a in args if a.split("=")[0] in MODES})
    if len(given) < 2:
        return
    hint = ""
    if "-m" in given and ("--cfg" in given or "--info" in given):
        hint = (": --cfg and --info print and run nothing, so there is no sweep for -m; drop -m "
                "(`python -m sweep.run --cfg job` prints what every trial starts from, "
                "`--cfg hydra` the sweeper's settings)")  # fmt: skip
    raise UserError(f"{' and '.join(given)} cannot be given together (Hydra takes one){hint}")


def check_run_dir(args: list[str]) -> Before | None:
    """A single run given a hydra.run.dir on the command line that holds another run's results
    is refused before Hydra writes its .hydra/ there (UserError); else what that directory
    holds now (Before), for a refused start to restore. None: not a single run, or no
    hydra.run.dir on the command line."""
    if {"-m", "--multirun", "-c", "--cfg", "-i", "--info", "-h", "--help", "--hydra-help"} & set(
        args
    ):
        return None
    given = [a for a in args if a.split("=", 1)[0] in ("hydra.run.dir", "++hydra.run.dir")]
    if not given:
        return None
    try:
        [override] = OverridesParser.create().parse_overrides(given[-1:])
        value = override.value()
    except Exception:  # Hydra reports a bad override itself
        return None
    if not isinstance(value, str) or "${" in value:
        return None
    found = held_run(Path(value))
    if found is not None:
        raise UserError(
            f"hydra.run.dir={value} already holds a run ({found}); l1sweep does not overwrite "
            "one: choose another directory, or remove that one first"
        )
    return Before.of(value)


def _refused() -> None:
    """A single run refused (exit 2): its directory left as this start found it, unless it
    now holds a run's results (a late error: what the run wrote is kept)."""
    for before in _before.values():
        if before.path.is_dir() and held_run(before.path) is None:
            before.restore()


@hydra.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> JobResult:
    """One job (a single run, or one trial of a sweep): `job.run` on the task config; returns
    its row, validation curve and `objective` values for the sweeper (`JobResult`). Bad
    input: UserError, exit 2 (in a sweep's trial: raised, for the sweeper to record)."""
    hc = HydraConfig.get()
    console.quiet_trial()  # a sweep's trial: its epochs go to its run.log only
    out_dir = Path(hc.runtime.output_dir)
    if hc.mode != RunMode.MULTIRUN and out_dir not in _before:
        # a hydra.run.dir set in a config file: what Hydra found there is no longer known
        found = Before.of(out_dir)
        _before[out_dir] = Before(out_dir, None, found.names, {}, found.log_size, known=False)
    try:
        # The pre-flight check's first step, before the import below: torch and scikit-learn
        # take 2-4 s to load, which a mistaken override need not wait for.
        rules.check(cfg)
        from sweep.task import job

        choices = dict(hc.runtime.choices)
        found = held_run(out_dir) if hc.mode != RunMode.MULTIRUN else None
        if found is not None:
            # a hydra.run.dir set in a config file (the command line's is checked in cli)
            raise UserError(
                f"hydra.run.dir={out_dir} already holds a run ({found.relative_to(out_dir)}); "
                "l1sweep does not overwrite one: choose another directory, or remove that one "
                "first"
            )
        metrics = job.run(cfg, out_dir, choices, trials.job_reporter())
    except UserError as e:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial, then reports it
        log.error(f"error: {e}")
        sys.exit(2)
    result = JobResult.of_metrics(metrics, objectives.values(metrics, cfg.objective))
    log.info(
        f"{metrics['status']}: val_acc {metrics['val_acc']:.4f}  test_acc {metrics['test_acc']:.4f}"
        f"  sparsity {metrics['sparsity']:.4f}  ({metrics['train_seconds']:.1f}s)"
        f"  -> {hc.runtime.output_dir}"
    )
    return result


# At exit, after the atexit handlers registered later (the loggers' runs ended), the objects still
# alive are frozen (`gc.freeze`, public and documented), so the interpreter's final garbage
# collections skip them: a sweep process that imported torch, scikit-learn and torch._dynamo spent
# 1.72 s of the README's 17.5 s digits sweep with two objectives after its last trial, 0.36 s with
# the freeze (benchmarks/exit_cost.py, docs/performance.md, Start-up). Nothing l1sweep leaves to
# those collections: the storages' connections are closed by their own handler
# (sweep/_compat/rdb.py `close_all`), logging's handler flushes and closes without one.
# L1SWEEP_FREEZE_AT_EXIT=0 turns it off.
FREEZE_AT_EXIT = os.environ.get("L1SWEEP_FREEZE_AT_EXIT", "1") != "0"


def cli() -> None:
    """Hydra's main, but a config error is one line and exit code 2, as other bad input is."""
    if FREEZE_AT_EXIT:
        atexit.register(gc.freeze)  # runs after the handlers registered from here on
    # Hydra prints such errors over several lines and exits 1; HYDRA_FULL_ERROR makes it raise
    # them instead. Anything else keeps its traceback (and a user's own HYDRA_FULL_ERROR=1 all).
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        check_modes(sys.argv[1:])
        before = check_run_dir(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if before is not None:
        _before[before.path] = before
    # A refusal (exit 2) leaves nothing behind: what Hydra wrote before the checks ran is undone
    try:
        main()
    except SystemExit as e:
        if e.code == 2:
            _refused()
        raise
    except (CompactHydraException, OmegaConfBaseException) as e:
        _refused()
        if full:
            raise
        print(f"error: {config_error(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
