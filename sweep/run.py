"""Entry point: `python -m sweep.run [overrides]` trains one configuration;
`python -m sweep.run -m [overrides]` runs the Optuna sweep over l1_lambda."""

from __future__ import annotations

import logging
import os
import sys
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

# A single run's files: another run's in hydra.run.dir are never overwritten.
RUN_FILES = ("metrics.json", "model.pt", ".hydra")
_free: dict[str, str] = {}


def free_dir(path: str) -> str:
    """`path`, or `path_1`, `path_2`, ... where `path` is taken: the default single-run
    directory (outputs/runs/<date>_<time>, conf/config.yaml), so that two runs started in the
    same second do not write into one directory. The name is reserved by creating it (two
    processes cannot both create it), and kept for the rest of this process."""
    if path not in _free:
        candidate, n = path, 0
        while True:
            try:
                Path(candidate).mkdir(parents=True)
                break
            except FileExistsError:
                n += 1
                candidate = f"{path}_{n}"
        _free[path] = candidate
    return _free[path]


# OmegaConf 2.4's name (hydra-core 1.4 needs 2.4, where register_new_resolver warns)
OmegaConf.register_resolver("l1sweep.free_dir", free_dir, replace=True)


def held_run(directory: Path) -> Path | None:
    """The first of another run's files in `directory`, if it holds one."""
    return next((directory / f for f in RUN_FILES if (directory / f).exists()), None)


def check_run_dir(args: list[str]) -> None:
    """A single run given a hydra.run.dir on the command line that holds another run's files
    is refused before Hydra writes its .hydra/ there (UserError)."""
    if {"-m", "--multirun", "-c", "--cfg", "-i", "--info", "-h", "--help", "--hydra-help"} & set(
        args
    ):
        return
    given = [a for a in args if a.split("=", 1)[0] in ("hydra.run.dir", "++hydra.run.dir")]
    if not given:
        return
    try:
        [override] = OverridesParser.create().parse_overrides(given[-1:])
        value = override.value()
    except Exception:  # Hydra reports a bad override itself
        return
    if not isinstance(value, str) or "${" in value:
        return
    found = held_run(Path(value))
    if found is not None:
        raise UserError(
            f"hydra.run.dir={value} already holds a run ({found}); l1sweep does not overwrite "
            "one: choose another directory, or remove that one first"
        )


@hydra.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> JobResult:
    """One job (a single run, or one trial of a sweep): `job.run` on the task config; returns
    its row, validation curve and `objective` values for the sweeper (`JobResult`). Bad
    input: UserError, exit 2 (in a sweep's trial: raised, for the sweeper to record)."""
    hc = HydraConfig.get()
    console.quiet_trial()  # a sweep's trial: its epochs go to its run.log only
    try:
        # The pre-flight check's first step, before the import below: torch and scikit-learn
        # take 2-4 s to load, which a mistaken override need not wait for.
        rules.check(cfg)
        from sweep.task import job

        out_dir, choices = Path(hc.runtime.output_dir), dict(hc.runtime.choices)
        if hc.mode != RunMode.MULTIRUN and (out_dir / "metrics.json").exists():
            # a hydra.run.dir set in a config file (the command line's is checked in cli)
            raise UserError(
                f"hydra.run.dir={out_dir} already holds a run (metrics.json); l1sweep does not "
                "overwrite one: choose another directory, or remove that one first"
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


def cli() -> None:
    """Hydra's main, but a config error is one line and exit code 2, as other bad input is."""
    # Hydra prints such errors over several lines and exits 1; HYDRA_FULL_ERROR makes it raise
    # them instead. Anything else keeps its traceback (and a user's own HYDRA_FULL_ERROR=1 all).
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        check_run_dir(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except (CompactHydraException, OmegaConfBaseException) as e:
        if full:
            raise
        print(f"error: {config_error(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
