"""Data for the tests: tiny fake MNIST folders made on the spot (the fixtures that use them, and
the real MNIST fetched once, are in `plugin.py`)."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
from pathlib import Path

import numpy as np

from mnist_pipeline.data import idx
from mnist_pipeline.data.fetch import CANONICAL, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, FileSpec
from mnist_pipeline.data.sources import sha256_file

MNIST_NAMES = tuple(CANONICAL)


def fake_mnist_arrays(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28x28 uint8 images and digit labels under the four canonical file names."""
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, n_train).astype(np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, n_test).astype(np.uint8),
    }


def write_fake_mnist(
    folder: Path, n_train: int = 20, n_test: int = 10, seed: int = 0, gz: bool = False
) -> dict[str, FileSpec]:
    """Four fake MNIST files in `folder` (gzipped if asked); the checksum table of their plain bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for name, array in fake_mnist_arrays(n_train, n_test, seed).items():
        path = folder / name
        idx.write(path, array)
        checksums[name] = FileSpec(sha256_file(path), path.stat().st_size)
        if gz:
            with open(path, "rb") as src, gzip.open(folder / f"{name}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()
    return checksums


def listing(folder: Path) -> list[str]:
    """Every name in `folder`, temp files included: what a reader or a later run would find."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_fetched(raw: Path, source_dir: Path, checksums: dict[str, FileSpec]) -> None:
    """`raw` holds exactly the files of `checksums`, verified, equal to those in `source_dir` if plain."""
    assert listing(raw) == sorted(checksums)
    for name, spec in checksums.items():
        assert sha256_file(raw / name) == spec.sha256
        if (source_dir / name).exists():
            assert (raw / name).read_bytes() == (source_dir / name).read_bytes()


def py2_style_pickle(obj) -> bytes:
    """A pickle shaped like mnist.pkl.gz's: array data as latin-1 text, `numpy.core` names, protocol 2."""

    class Py2StylePickler(pickle.Pickler):
        def reducer_override(self, o):
            if not isinstance(o, np.ndarray):
                return NotImplemented
            reconstruct, (cls, shape, _), (version, dims, dtype, fortran, data) = o.__reduce__()
            return reconstruct, (cls, shape, "b"), (version, dims, dtype, fortran, data.decode("latin1"))

    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
