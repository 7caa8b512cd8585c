"""Checkpoint files: written atomically, read as data only.

Lightning writes a checkpoint straight to its final path, so a kill mid-write leaves a truncated
file under the name `resume` would trust. Here each save goes to a temp file that is renamed over
the old one. Loading uses `torch.load(weights_only=True)`: a checkpoint never runs code.
"""

from __future__ import annotations

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
    """The `state_dict` of a checkpoint, checked to fit `net` (the network under `net.` keys).
    Checkpoints are data, never code: weights_only=True, so a file holding a pickled object (which
    could run code when loaded) is refused before anything in it runs. Every way a file can be
    unusable ends in one ConfigError line, before any work starts."""
    import pickle
    import re

    from mnist_pipeline.config import ConfigError

    def one_line(e: BaseException) -> str:
        text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split()).split(". ")[0]  # its first sentence
        return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__

    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  the parser of a damaged file can fail in any way (KeyError, ...)
        message = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in message \
                and "Unsupported operand" not in message:
            found = re.search(r"Unsupported global: GLOBAL [\w.]+", message)
            raise ConfigError(
                f"{key}={ckpt_path}: refused: it holds more than plain data "
                f"({found.group(0) if found else 'a pickled object'}), which could run code when loaded; "
                "nothing in it was run. Use checkpoints written by this pipeline"
            ) from e
        raise ConfigError(f"{key}={ckpt_path}: truncated or corrupt checkpoint file ({one_line(e)})") from e
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ConfigError(f"{key}={ckpt_path}: not a Lightning checkpoint (no state_dict in it)")
    weights = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise ConfigError(f"{key}={ckpt_path}: its weights do not fit this model ({one_line(e)})") from e
    return weights
