"""One configuration's run: `job` (build, fit, prune and fine-tune, measure, the row), the
`callbacks` that write its files, the `loggers` (MLflow, TensorBoard) and the `objectives` a
sweep optimizes."""
