"""The TensorFlow.js MNIST tutorial as a reproducible DVC + Hydra + Lightning + MLflow pipeline."""
