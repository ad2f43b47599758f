"""The sweep: the Hydra sweeper plugin (`sweeper`), its search `space`, the Optuna `study`
and its `storage`, what a job leaves in its trial (`trials`), the `launcher`, how many
trials run at once (`parallel`), Ctrl-C (`interrupts`) and the `console`."""
