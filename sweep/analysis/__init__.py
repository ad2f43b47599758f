"""Reading sweeps back: fronts, knees, plots and parameter importances
(`python -m sweep.analyze`)."""
