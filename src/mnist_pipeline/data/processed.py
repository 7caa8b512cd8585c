"""The processed split files (data/processed/{train,val,test}.npz, written by split.py): where they
are, whether they are there, their digest, reading them, and how a network sees their pixels.
Light to import (no Lightning): the training, evaluation and sweep commands all read the splits
through here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mnist_pipeline.config import ConfigError

SPLITS = ("train", "val", "test")


def split_files(processed_dir: str | Path) -> dict[str, Path]:
    """Where split.py writes each split, and where everything else reads it."""
    return {name: Path(processed_dir) / f"{name}.npz" for name in SPLITS}


def check_processed(processed_dir: str | Path) -> None:
    missing = [str(p) for p in split_files(processed_dir).values() if not p.is_file()]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}: run `dvc repro split` first")


def read_split(path: str | Path):
    """One split file as CPU tensors: uint8 images (N, 28, 28) and int64 labels."""
    import torch

    with np.load(path) as npz:
        return torch.from_numpy(npz["images"]), torch.from_numpy(npz["labels"]).long()


def load_splits(processed_dir: str | Path) -> dict:
    """The three splits, as `read_split` gives them."""
    check_processed(processed_dir)
    return {name: read_split(path) for name, path in split_files(processed_dir).items()}


def split_sha256s(processed_dir: str | Path) -> dict[str, str]:
    """Each split file's sha256 (hex), by split name."""
    digests = {}
    for name, path in split_files(processed_dir).items():
        with open(path, "rb") as f:
            digests[name] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def processed_sha256(processed_dir: str | Path, digests: dict[str, str] | None = None) -> str:
    """One digest naming the exact data a run saw: sha256 over the split files' own sha256s
    (`digests`, when they are known already)."""
    digests = digests or split_sha256s(processed_dir)
    return hashlib.sha256("".join(f"{name}:{digests[name]}\n" for name in SPLITS).encode()).hexdigest()


def as_input(images):
    """uint8 images (N, 28, 28) -> the networks' input, float (N, 1, 28, 28) in [0, 1], as the
    tutorial scales pixels. Training, evaluation and the reports all scale through here."""
    return images.unsqueeze(1).float().div_(255.0)
