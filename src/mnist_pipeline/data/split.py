"""DVC stage: data/raw -> data/processed/{train,val,test}.npz, a seeded, stratified train/val split.

The canonical training images are split into train and val, every digit giving val its share in
proportion to its count; the canonical test images pass through untouched. Each file holds
`images` (N, 28, 28) uint8, `labels` (N,) int64 and `index` (N,) int64 (the position in the canonical
source file), in ascending index order. The same seed gives the same bytes: the zip entries carry a
fixed date instead of the current time that np.savez would write.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from numbers import Integral
from pathlib import Path

import numpy as np

from mnist_pipeline.atomic import atomic_write, remove_stale_temps
from mnist_pipeline.config import ConfigError, resolve_path, stage_main
from mnist_pipeline.data import idx
from mnist_pipeline.data.fetch import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from mnist_pipeline.data.processed import split_files

log = logging.getLogger(__name__)

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_val_size(val_size, n_train: int) -> int:
    """`val_size` as an int, if it is one with 0 < val_size < n_train; else a ConfigError."""
    if not _is_int(val_size) or not 0 < val_size < n_train:
        raise ConfigError(
            f"data.split.val_size must be an integer in 1 .. {n_train - 1} (images taken from the "
            f"{n_train} training images for validation), got {val_size!r}"
        )
    return int(val_size)


def check_seed(seed) -> int:
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"data.split.seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def val_quota(labels: np.ndarray, val_size: int) -> dict[int, int]:
    """Images of each class that go to val: proportional, largest remainders rounded up, total exact."""
    classes, counts = np.unique(labels, return_counts=True)
    shares = counts.astype(np.int64) * val_size
    quota = shares // len(labels)
    short = val_size - int(quota.sum())
    largest_remainders = np.lexsort((classes, -(shares % len(labels))))[:short]
    quota[largest_remainders] += 1
    return {int(c): int(q) for c, q in zip(classes, quota)}


def stratified_val_indices(labels: np.ndarray, val_size: int, seed: int) -> np.ndarray:
    """Sorted positions of the val images: a seeded random sample of each class's quota."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in val_quota(labels, val_size).items()]
    return np.sort(np.concatenate(chosen))


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz np.load reads, atomically, whose bytes depend only on the arrays."""
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _read_raw(path: Path, reader: Callable[[Path], np.ndarray]) -> np.ndarray:
    fix = "run `mnist fetch` (or `dvc repro fetch`) to fetch MNIST"
    try:
        return reader(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (paths.raw_dir): {fix}") from None
    except idx.IDXError as e:
        raise ConfigError(f"{e}: delete it and {fix} again") from None


def _read_pair(raw_dir: Path, images_name: str, labels_name: str, labels: np.ndarray | None = None):
    labels = _read_raw(raw_dir / labels_name, idx.read_labels) if labels is None else labels
    images = _read_raw(raw_dir / images_name, idx.read_images)
    if len(images) != len(labels):
        raise ConfigError(
            f"{raw_dir}: {images_name} has {len(images)} images but {labels_name} has {len(labels)} labels: "
            "run `mnist fetch` to fetch MNIST again"
        )
    return images, labels


def split(
    raw_dir: str | os.PathLike, processed_dir: str | os.PathLike, val_size, seed
) -> dict[str, np.ndarray]:
    """Write train/val/test .npz files into `processed_dir`; each split's label counts (digits 0-9)."""
    seed = check_seed(seed)
    raw_dir, processed_dir = Path(raw_dir), Path(processed_dir)
    train_labels = _read_raw(raw_dir / TRAIN_LABELS, idx.read_labels)
    val_size = check_val_size(val_size, len(train_labels))
    train_images, train_labels = _read_pair(raw_dir, TRAIN_IMAGES, TRAIN_LABELS, train_labels)
    test_images, test_labels = _read_pair(raw_dir, TEST_IMAGES, TEST_LABELS)

    in_val = np.zeros(len(train_labels), dtype=bool)
    in_val[stratified_val_indices(train_labels, val_size, seed)] = True
    indices = {
        "train": np.flatnonzero(~in_val),
        "val": np.flatnonzero(in_val),
        "test": np.arange(len(test_labels)),
    }
    processed_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(processed_dir)
    label_counts = {}
    for name, index in indices.items():
        images, labels = (test_images, test_labels) if name == "test" else (train_images, train_labels)
        labels = labels[index].astype(np.int64)
        arrays = {"images": images[index], "labels": labels, "index": index.astype(np.int64)}
        write_npz(split_files(processed_dir)[name], arrays)
        label_counts[name] = np.bincount(labels, minlength=10)
        log.info(
            "%s.npz: %d images; labels 0-9: %s", name, len(index), " ".join(str(c) for c in label_counts[name])
        )
    return label_counts


def run(cfg) -> dict[str, np.ndarray]:
    paths, params = cfg.paths, cfg.data.split
    return split(resolve_path(paths.raw_dir), resolve_path(paths.processed_dir), params.val_size, params.seed)


def main(argv: list[str] | None = None, prog: str = "mnist split") -> None:
    stage_main(run, argv, prog)


if __name__ == "__main__":
    from mnist_pipeline.data.split import main  # the importable module: logs then carry its name

    main(prog="python -m mnist_pipeline.data.split")
