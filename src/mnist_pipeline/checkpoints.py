"""Checkpoint files: written atomically, read as data only.

Lightning writes a checkpoint straight to its final path, so a kill mid-write leaves a truncated
file under the name `resume` would trust. Here each save goes to a temp file that is renamed over
the old one. Loading uses `torch.load(weights_only=True)`: a checkpoint never runs code.
"""

from __future__ import annotations

import io

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from mnist_pipeline.atomic import write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        write_bytes(path, buf.getvalue())

    def load_checkpoint(self, path, map_location=None, weights_only=True):
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
