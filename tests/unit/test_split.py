"""The split stage: exact sizes, disjoint stratified train/val, test untouched, same seed same bytes."""

import hashlib
import zipfile

import numpy as np
import pytest

from mnist_pipeline.config import ConfigError
from mnist_pipeline.data import idx
from mnist_pipeline.data.split import split, val_quota
from support.data import MNIST_NAMES

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = MNIST_NAMES
SPLITS = ("train", "val", "test")


def load(folder):
    out = {}
    for name in SPLITS:
        with np.load(folder / f"{name}.npz", allow_pickle=False) as npz:
            out[name] = {key: npz[key] for key in npz.files}
    return out


def digests(folder):
    return {name: hashlib.sha256((folder / f"{name}.npz").read_bytes()).hexdigest() for name in SPLITS}


def test_sizes_dtypes_and_contents(fake_raw, tmp_path):
    out = tmp_path / "processed"
    counts = split(fake_raw, out, 120, 0)
    data = load(out)
    images, labels = idx.read_images(fake_raw / TRAIN_IMAGES), idx.read_labels(fake_raw / TRAIN_LABELS)
    assert {name: len(d["labels"]) for name, d in data.items()} == {"train": 480, "val": 120, "test": 100}
    for name, d in data.items():
        assert sorted(d) == ["images", "index", "labels"]
        assert d["images"].dtype == np.uint8 and d["images"].shape == (len(d["labels"]), 28, 28)
        assert d["labels"].dtype == np.int64 and d["index"].dtype == np.int64
        assert np.all(np.diff(d["index"]) > 0)  # ascending canonical order
        np.testing.assert_array_equal(counts[name], np.bincount(d["labels"], minlength=10))
    for name in ("train", "val"):
        np.testing.assert_array_equal(data[name]["images"], images[data[name]["index"]])
        np.testing.assert_array_equal(data[name]["labels"], labels[data[name]["index"]])


def test_train_and_val_are_disjoint_and_cover_everything(fake_raw, tmp_path):
    split(fake_raw, tmp_path, 77, 3)
    data = load(tmp_path)
    train, val = set(data["train"]["index"]), set(data["val"]["index"])
    assert not train & val
    assert train | val == set(range(600))


def test_val_is_stratified(fake_raw, tmp_path):
    split(fake_raw, tmp_path, 101, 0)
    labels = idx.read_labels(fake_raw / TRAIN_LABELS)
    val_counts = np.bincount(load(tmp_path)["val"]["labels"], minlength=10)
    proportional = np.bincount(labels, minlength=10) * 101 / len(labels)
    assert val_counts.sum() == 101
    assert np.all(np.abs(val_counts - proportional) < 1)


def test_largest_remainder_rounding_is_exact():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)  # shares of 4: 2.0, 1.2, 0.8
    assert val_quota(labels, 4) == {0: 2, 1: 1, 2: 1}
    assert val_quota(np.array([0, 1, 2]), 2) == {0: 1, 1: 1, 2: 0}  # ties: lower class first


def test_same_seed_same_bytes_other_seed_other_split(fake_raw, tmp_path):
    split(fake_raw, tmp_path / "a", 100, 7)
    split(fake_raw, tmp_path / "b", 100, 7)
    split(fake_raw, tmp_path / "c", 100, 8)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    with zipfile.ZipFile(tmp_path / "a" / "train.npz") as npz:  # no clock in the bytes
        assert {info.date_time for info in npz.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert digests(tmp_path / "a")["test"] == digests(tmp_path / "c")["test"]
    a_val, c_val = load(tmp_path / "a")["val"]["index"], load(tmp_path / "c")["val"]["index"]
    assert not np.array_equal(a_val, c_val)


def test_test_split_is_untouched(fake_raw, tmp_path):
    split(fake_raw, tmp_path, 50, 0)
    test = load(tmp_path)["test"]
    np.testing.assert_array_equal(test["images"], idx.read_images(fake_raw / TEST_IMAGES))
    np.testing.assert_array_equal(test["labels"], idx.read_labels(fake_raw / TEST_LABELS))
    np.testing.assert_array_equal(test["index"], np.arange(100))


@pytest.mark.parametrize("val_size", [0, -1, 600, 601, 5000.5, "abc", True, None, 10.0])
def test_bad_val_size_is_a_config_error_before_any_write(fake_raw, tmp_path, val_size):
    out = tmp_path / "processed"
    with pytest.raises(ConfigError, match=r"data\.split\.val_size must be an integer in 1 \.\. ") as err:
        split(fake_raw, out, val_size, 0)
    assert repr(val_size) in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize("seed", [-1, 1.5, "x", False])
def test_bad_seed_is_a_config_error(fake_raw, tmp_path, seed):
    with pytest.raises(ConfigError, match=r"data\.split\.seed"):
        split(fake_raw, tmp_path / "processed", 10, seed)
    assert not (tmp_path / "processed").exists()


def test_missing_or_damaged_raw_files_say_how_to_fix(fake_raw, tmp_path):
    (fake_raw / TEST_IMAGES).write_bytes(b"\0\0\x08\x03")
    with pytest.raises(ConfigError, match=r"too short for its IDX header.*run `mnist fetch`"):
        split(fake_raw, tmp_path / "processed", 10, 0)
    with pytest.raises(ConfigError, match=r"not found \(paths\.raw_dir\): run `mnist fetch`"):
        split(tmp_path / "nowhere", tmp_path / "processed", 10, 0)
    assert not (tmp_path / "processed").exists()
