"""The sweep: the Hydra sweeper plugin (`sweeper`), the plan of a run and every check before its
first trial (`plan`), the trial loop (`loop`: ask, launch, tell), the `sampling`, its search
`space`, the Optuna `study` and its `storage`, what a job leaves in its trial (`trials`), the
`launcher`, how many trials run at once (`parallel`), Ctrl-C (`interrupts`) and the `console`."""
