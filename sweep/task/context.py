"""What a run's callbacks see of it (`Run`), apart from the run itself (sweep/task/job.py), so
that the callbacks (sweep/task/callbacks.py) can name its type without importing the job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
from omegaconf import DictConfig

from sweep.data.datasets import Dataset
from sweep.sparsity.regularizers import Regularizer


@dataclass
class Run:
    """What a callback sees of a run: its config, data, model (trained in place), regularizer,
    the parameters it counts (`reg.select(model)`), and the directory its files go to."""

    cfg: DictConfig
    data: Dataset
    model: nn.Module
    reg: Regularizer
    counted: list[nn.Parameter]
    out_dir: Path
