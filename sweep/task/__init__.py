"""One configuration's run: `job` (the pre-flight check; build, fit, prune and fine-tune,
measure, the row), `rules` (a configuration's own rules, checked before torch is imported),
`context` (`Run`, what callbacks see), the `callbacks` that write its files, the `loggers`
(MLflow, TensorBoard) and the `objectives` a sweep optimizes."""
