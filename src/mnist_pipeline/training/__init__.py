"""Training: `mnist train` (`train.py`), the datamodule, the sweep callback, DDP launching, resume,
signals, checkpoints, progress, reports and diagnostics, and `mnist bench`. The DVC `train` stage
depends on this folder, `data/`, `model/` and `tracking/`."""
