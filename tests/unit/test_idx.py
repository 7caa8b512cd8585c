"""The IDX reader accepts what the writer writes and names the file and the problem otherwise."""

import struct

import numpy as np
import pytest

from mnist_pipeline.data import idx
from mnist_pipeline.data.idx import IDXError


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
        np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8),
        np.array([[-1.5, 2.25], [1e30, -0.0]], dtype=np.float32),
        np.array([-32768, 0, 32767], dtype=np.int16),
        np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
        np.array([np.pi, -np.e], dtype=np.float64),
        np.array([-128, 127], dtype=np.int8),
    ],
    ids=["uint8-3d", "uint8-1d", "float32-2d", "int16", "int32", "float64", "int8"],
)
def test_round_trip(tmp_path, array):
    path = tmp_path / "a-idx"
    idx.write(path, array)
    back = idx.read(path, expected_ndim=array.ndim)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_multibyte_values_are_big_endian_on_disk(tmp_path):
    path = tmp_path / "a-idx"
    idx.write(path, np.array([1, 258], dtype=np.int32))
    assert path.read_bytes() == b"\0\0\x0c\x01" + struct.pack(">I", 2) + struct.pack(">ii", 1, 258)


def test_images_and_labels_readers(tmp_path):
    idx.write(tmp_path / "images", np.zeros((3, 28, 28), np.uint8))
    idx.write(tmp_path / "labels", np.zeros(3, np.uint8))
    assert idx.read_images(tmp_path / "images").shape == (3, 28, 28)
    assert idx.read_labels(tmp_path / "labels").shape == (3,)
    with pytest.raises(IDXError, match="wrong number of dimensions: the header says 1, expected 3"):
        idx.read_images(tmp_path / "labels")


def test_write_leaves_no_temp_file(tmp_path):
    idx.write(tmp_path / "a", np.zeros(4, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_unsupported_dtype_is_refused(tmp_path):
    with pytest.raises(IDXError, match="cannot store dtype int64"):
        idx.write(tmp_path / "a", np.zeros(3, np.int64))
    assert not (tmp_path / "a").exists()


def _labels_file(n=5):
    return b"\0\0\x08\x01" + struct.pack(">I", n) + bytes(range(n))


@pytest.mark.parametrize(
    "content, expected_ndim, problem",
    [
        (b"\x01\0\x08\x01" + _labels_file()[4:], None, r"bad IDX magic 01000801: the first two bytes must be zero"),
        (b"\0\0\x07\x01" + _labels_file()[4:], None, r"bad IDX magic 00000701: unknown dtype code 0x07"),
        (_labels_file(), 3, r"wrong number of dimensions: the header says 1, expected 3"),
        (b"\0\0", None, r"too short for an IDX header: 2 bytes"),
        (b"", None, r"too short for an IDX header: 0 bytes"),
        (b"\0\0\x08\x03" + struct.pack(">I", 10), None, r"too short for its IDX header: 8 bytes, .* needs 16"),
        (_labels_file()[:-2], None, r"truncated: .* needs 5 data bytes, the file has 3"),
        (_labels_file() + b"xy", None, r"trailing bytes: .* needs 5 data bytes, the file has 7"),
    ],
    ids=["bad-magic", "unknown-dtype", "wrong-ndim", "short-magic", "empty", "short-dims", "truncated", "trailing"],
)
def test_malformed_files_name_the_file_and_the_problem(tmp_path, content, expected_ndim, problem):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(IDXError, match=problem) as err:
        idx.read(path, expected_ndim=expected_ndim)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_real_sized_images_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    idx.write(path, np.zeros((100, 28, 28), np.uint8))
    with open(path, "r+b") as f:
        f.truncate(16 + 100 * 784 - 1)
    expected = r"truncated: the header \(shape \(100, 28, 28\), uint8\) needs 78400 data bytes, the file has 78399"
    with pytest.raises(IDXError, match=expected):
        idx.read_images(path)
