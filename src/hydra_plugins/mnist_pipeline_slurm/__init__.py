"""`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml): Hydra loads launchers only from the
`hydra_plugins` package, so the class lives here; its logic is mnist_pipeline.training.slurm_launcher."""
