"""l1sweep: how much L1 regularization a PyTorch model can take, and what it costs.

The package is laid out by concern (docs/architecture.md has the map and the import order):
`search` (the Hydra sweeper plugin and its trial loop), `task` (one configuration's run),
`training`, `sparsity`, `models`, `data`, `deploy`, `analysis`, `results`, `config`; the entry
points `run`, `analyze` and `export` stay at the top.

Files written before the subpackages (results.csv, config.yaml, model.l1z, a user's configs)
name `_target_`s such as `sweep.regularizers.Regularizer` or `sweep.callbacks.Archive`: the
importer in `sweep._moved` keeps those names importable, as the modules they moved to.
"""

from sweep import _moved

_moved.install()
