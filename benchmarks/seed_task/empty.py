"""The seed task's sweep (conf/config.yaml, the stock hydra-optuna-sweeper) with a task that
trains nothing: what the stock sweeper itself costs a trial (Hydra's job set-up, its config
composed, Optuna's ask and tell). benchmarks/trial_cost.py times it against l1sweep's.

    python benchmarks/seed_task/empty.py -m hydra.sweeper.n_trials=20
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    return float(cfg.l1_lambda)


if __name__ == "__main__":
    main()
