"""Where a run belongs (its sweep, trial number and reproducing command), read from Hydra's
config of the running job: what the trackers (task/loggers.py) file a run under."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sweep.results import command


class Where:
    """Where a run belongs: its sweep (study name and directory) and trial number, or a single
    run (study None). Read from Hydra's config of the running job; `run_dir` is the run's
    directory (a `repeats` seed's seed_<s>/ is inside its trial's)."""

    def __init__(self, run_dir: Path) -> None:
        trial_dir = run_dir.parent if run_dir.name.startswith("seed_") else run_dir
        self.run_dir = trial_dir
        self.overrides: list[str] = []
        self.flags: list[str] = []  # how the configuration was chosen (results/command.py)
        self.study: str | None = None
        self.trial: int | None = None
        self.sweep_dir = trial_dir
        if HydraConfig.initialized():
            hc = HydraConfig.get()
            self.overrides = [o for o in hc.overrides.task if not o.startswith("hydra.")]
            self.flags = command.config_flags(hc)
            if hc.mode == RunMode.MULTIRUN:
                # the sweep directory's name: the study's (outputs/sweeps/<study>) unless
                # hydra.sweep.dir says otherwise. Not hydra.sweeper.study_name read here: its
                # default ${now:...} can resolve a second later in a trial's process.
                self.sweep_dir = trial_dir.parent
                self.study = self.sweep_dir.name
                number = trial_dir.name.removeprefix("trial_")
                self.trial = int(number) if number.isdigit() else None
        self.name = f"trial_{self.trial}" if self.trial is not None else trial_dir.name

    def params(self) -> dict[str, str]:
        """What reproduces the run, as key -> value: the flags that chose its configuration
        (`config_dir`, `config_name`, `config_path`, where given), its overrides, and its
        trial number."""
        flags = dict(zip(self.flags[::2], self.flags[1::2]))
        out = {k.lstrip("-").replace("-", "_"): v for k, v in flags.items()}
        out.update(command.by_key(self.overrides))
        if self.trial is not None:
            out["trial"] = str(self.trial)
        return out

    def command(self) -> str:
        """The command that reruns the run as a single run (results/command.py)."""
        return command.command(self.flags, self.overrides)
