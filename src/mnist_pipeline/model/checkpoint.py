"""Reading a checkpoint file as data: its net's weights and the architecture that made them.

`torch.load(weights_only=True)`: a file holding a pickled object (which could run code when
loaded) is refused before anything in it runs. The architecture comes from the checkpoint's own
record (`{"name", "settings"}`, see `architectures`), or, for checkpoints written before there was
one, from the names and shapes of its weights. Every way a file can be unusable is one
`CheckpointError` line that starts with the file's path. No Lightning here: `predict --ckpt` stays
light.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_pipeline.model import architectures

NET_PREFIX = "net."  # the LightningModule keeps the network as `self.net`


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line that starts with its path."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    weights: dict          # the net's state dict (without the `net.` prefix)
    architecture: dict | None   # the recorded {"name", "settings"}, None in older checkpoints
    raw: dict              # everything the file holds, as plain containers and tensors


def _one_line(e: BaseException) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split()).split(". ")[0]  # its first sentence
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def read(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  the parser of a damaged file can fail in any way (KeyError, ...)
        message = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in message \
                and "Unsupported operand" not in message:
            found = re.search(r"Unsupported global: GLOBAL [\w.]+", message)
            raise CheckpointError(
                f"{path}: refused: it holds more than plain data "
                f"({found.group(0) if found else 'a pickled object'}), which could run code when loaded; "
                "nothing in it was run. Use checkpoints written by this pipeline") from None
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint file ({_one_line(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint of this project (no state_dict in it)")
    weights = {k.removeprefix(NET_PREFIX): v for k, v in state["state_dict"].items() if k.startswith(NET_PREFIX)}
    return Checkpoint(path, weights, state.get("architecture"), state)


def load_into(checkpoint: Checkpoint, net: torch.nn.Module) -> None:
    """The checkpoint's weights into `net`, which must be the same architecture."""
    try:
        net.load_state_dict(checkpoint.weights)
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint.path}: its weights do not fit this model ({_one_line(e)})") from None


def architecture_of(checkpoint: Checkpoint) -> dict:
    """The architecture the checkpoint records, else the known one its weights' names and shapes fit."""
    if checkpoint.architecture is not None:
        return checkpoint.architecture
    record = architectures.identify(checkpoint.weights)
    if record is None:
        raise CheckpointError(f"{checkpoint.path}: it records no architecture and its weights fit none of "
                              f"this version's ({', '.join(architectures.names())})")
    return record


def rebuild(checkpoint: Checkpoint) -> torch.nn.Module:
    """The net that trained the checkpoint, whatever its architecture, with its weights."""
    record = architecture_of(checkpoint)
    try:
        return architectures.from_record(record, checkpoint.weights)
    except architectures.ArchitectureError as e:
        raise CheckpointError(f"{checkpoint.path}: {e}") from None
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint.path}: its weights do not fit its architecture "
                              f"{record.get('name')!r} ({_one_line(e)})") from None
