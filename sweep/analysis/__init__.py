"""Reading sweeps back: fronts, knees, plots and parameter importances
(`python -m sweep.analyze`, whose work `report.analyze` does).

load         results.csv files as one typed frame; each sweep's objective (metrics, directions)
fronts       methods, dense baselines, Pareto fronts, knees, the best trial
summary      the per-method markdown tables and the line that reruns a trial
plots        accuracy vs sparsity, bytes and l1_lambda; input masks; shared plot helpers
features     feature selection: the regularization path and features.png
hypervolume  the front over every point (points.csv) and its hypervolume
importance   what mattered: parameter importances, optimization and hypervolume histories
speed        accuracy vs FLOPs and vs measured time
choice       --max-drop: the one configuration to use within an accuracy drop
report       `analyze`: all of the above, into summary.md, pareto.csv, choice.csv and the plots
"""
