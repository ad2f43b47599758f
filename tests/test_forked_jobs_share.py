"""What a sweep does once, before its first trial, so that the jobs it forks need not (issue
33): the data placed as a job places it, the modules a job's callbacks import on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _task_config(*overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import sweep.run  # noqa: F401  (the project's config schema)

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("config", ["train.epochs=1", *overrides])
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def test_the_sweeps_preflight_places_the_data_a_job_then_finds():
    from sweep.task import job

    cfg = _task_config("seed=7")
    job._datasets.clear()
    parts = job.preflight(cfg)  # the sweep's check, on its task config
    assert parts.data.x_train.device.type == "cpu"
    # a job of the sweep (same data, same seed) gets that very object: not split, copied or
    # checked again
    assert job.dataset(cfg, torch.device("cpu")) is parts.data
    assert len(parts.data.x_val) + len(parts.data.x_train) + len(parts.data.x_test) == 1797


# a fresh process: the callbacks made (as the sweep's preflight makes them), then the modules a
# forked job would otherwise import for its model.l1z and model.pt
FRESH = """
import sys
from sweep.task import callbacks
before = {m for m in ("sweep.deploy.archive", "sweep.deploy.measure", "torch.utils.serialization")
          if m in sys.modules}
callbacks.Archive(bits=4, epochs=0)
callbacks.ModelCheckpoint()
after = {m for m in ("sweep.deploy.archive", "sweep.deploy.measure", "torch.utils.serialization")
         if m in sys.modules}
print(sorted(before), sorted(after))
"""


def test_making_the_callbacks_imports_what_their_files_need():
    done = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True,
                          cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == (
        "[] ['sweep.deploy.archive', 'sweep.deploy.measure', 'torch.utils.serialization']"
    )
