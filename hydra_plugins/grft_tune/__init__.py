"""grft's Hydra sweeper: an Optuna study on validation data (``hydra/sweeper=tune``, ``make tune``)."""
