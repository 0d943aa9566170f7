"""train.py's parts: the run's config, data, model and schedule, evaluation, checkpoints and logs,
processes and signals. train.py holds the command line and the training loop, and re-exports these."""
