"""Learning-rate schedules (group `schedule`), stepped once per optimizer step."""

from __future__ import annotations

import torch


def constant(optimizer: torch.optim.Optimizer, total_steps: int) -> None:
    """The seed's fixed learning rate: no scheduler at all, so nothing runs per step."""
    return None


def cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, eta_min: float = 0.0
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay from the optimizer's lr at the first step to eta_min after the last."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=eta_min)
