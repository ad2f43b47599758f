"""Entry point: `python -m sweep.run [overrides]` trains one configuration;
`python -m sweep.run -m [overrides]` runs the Optuna sweep over l1_lambda."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sweep import objectives, train
from sweep.errors import UserError

log = logging.getLogger("sweep")


@hydra.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    try:
        metrics = train.run(cfg, Path(hc.runtime.output_dir), dict(hc.runtime.choices))
    except UserError as e:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial, then reports it
        log.error(f"error: {e}")
        sys.exit(2)
    metrics["objective"] = objectives.values(metrics, cfg.objective)
    log.info(
        f"{metrics['status']}: val_acc {metrics['val_acc']:.4f}  test_acc {metrics['test_acc']:.4f}"
        f"  sparsity {metrics['sparsity']:.4f}  ({metrics['train_seconds']:.1f}s)"
        f"  -> {hc.runtime.output_dir}"
    )
    return metrics


if __name__ == "__main__":
    main()
