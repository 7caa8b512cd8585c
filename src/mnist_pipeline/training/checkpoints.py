"""Checkpoint files in training: written atomically, read as data only.

Lightning writes a checkpoint straight to its final path, so a kill mid-write leaves a truncated
file under the name `resume` would trust. Here each save goes to a temp file that is renamed over
the old one. Loading uses `torch.load(weights_only=True)`: a checkpoint never runs code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from mnist_pipeline.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        # No fsync: `last` is rewritten at every validation (every 5 steps in the tutorial), and an
        # fsync would cost more than serialising it. A killed process still leaves the previous
        # whole file or the new whole file.
        with atomic_write(path, "wb", durable=False) as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path, map_location=None, weights_only=True):
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def read_weights(ckpt_path: Path, net: torch.nn.Module, key: str = "ckpt_path") -> dict:
    """The net's weights of a checkpoint (read as data only, see `model.checkpoint`), checked to
    fit `net`. Every way a file can be unusable is one ConfigError line, before any work starts."""
    from mnist_pipeline.config import ConfigError
    from mnist_pipeline.model.checkpoint import CheckpointError, load_into, read

    try:
        checkpoint = read(ckpt_path)
        load_into(checkpoint, net)
    except CheckpointError as e:
        raise ConfigError(f"{key}={e}") from None
    return checkpoint.weights
