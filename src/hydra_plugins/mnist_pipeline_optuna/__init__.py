"""Our Optuna sweeper where Hydra looks for plugins: Hydra instantiates a sweeper only from the
`hydra_plugins` namespace package (conf/hydra/sweeper/optuna.yaml names this class). Hydra imports
this module at every start, so it imports nothing heavy: the sweeper imports Optuna when it sweeps."""

from mnist_pipeline.training import optuna_sweeper


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    """mnist_pipeline.training.optuna_sweeper.OptunaSweeper, under the name Hydra accepts."""
