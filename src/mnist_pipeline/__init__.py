"""The TensorFlow.js MNIST tutorial as a reproducible DVC + Hydra + Lightning + MLflow pipeline.

Layers, bottom to top; a module imports only from its own layer or lower ones (a test checks it):
- `config`, `atomic`: the project's root and config, atomic writes;
- `data` (MNIST on disk, the fetch and split stages) and `model` (architectures, LightningModule),
  which do not import each other;
- `tracking`: MLflow (the store, runs, the Lightning logger, models as data);
- `training`: `mnist train`, sweeps, DDP, resume, reports;
- `serving` (registry, compare, promote, predict, evaluate, serve) and `cli` (the `mnist` command).
"""
