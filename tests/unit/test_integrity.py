"""The split files are checked before a run: whole and readable, and, for the split stage's own
folder, the files `dvc.lock` recorded (by total size, and by md5 when DVC's manifest is cached)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from mnist_pipeline.config import ConfigError
from mnist_pipeline.data import integrity
from support.synthetic import write_processed


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project whose split stage wrote data/processed, recorded in dvc.lock and DVC's cache."""
    processed = write_processed(tmp_path / "data" / "processed", n_train=100, n_val=20, n_test=20)
    entries = [{"md5": hashlib.md5((processed / name).read_bytes()).hexdigest(), "relpath": name}
               for name in ("test.npz", "train.npz", "val.npz")]
    manifest = json.dumps(entries).encode()
    digest = hashlib.md5(manifest).hexdigest() + ".dir"
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5" / digest[:2]
    cache.mkdir(parents=True)
    (cache / digest[2:]).write_bytes(manifest)
    size = sum(p.stat().st_size for p in processed.glob("*.npz"))
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  split:\n    cmd: mnist split\n    outs:\n    - path: data/processed\n"
        f"      hash: md5\n      md5: {digest}\n      size: {size}\n      nfiles: 3\n")
    monkeypatch.setattr(integrity, "project_root", lambda: tmp_path)
    integrity._checked.clear()
    return processed


def test_the_recorded_files_pass(project):
    assert integrity.check_splits(project) == {"train": 100, "val": 20, "test": 20}


def test_a_file_of_the_same_size_but_other_bytes_is_named(project):
    path = project / "val.npz"
    data = bytearray(path.read_bytes())
    with np.load(path) as npz:
        labels = npz["labels"].copy()
    np.savez(path, images=np.zeros((20, 28, 28), np.uint8), labels=labels, index=np.arange(20))
    assert path.stat().st_size == len(data), "a same-size rewrite: only the md5 tells"
    with pytest.raises(ConfigError, match=rf"^{path} is not the file dvc.lock recorded \(md5 \w+, recorded \w+\): "
                                          r"run `dvc repro split`"):
        integrity.check_splits(project)


def test_a_different_size_is_caught_without_the_cache(project, tmp_path):
    shutil.rmtree(tmp_path / ".dvc")
    write_processed(project, n_train=110, n_val=20, n_test=20)
    with pytest.raises(ConfigError, match=r"its split files hold \d+ bytes, dvc.lock recorded \d+: run `dvc repro"):
        integrity.check_splits(project)


def test_another_folder_is_not_compared_with_dvc_lock(project, tmp_path):
    elsewhere = write_processed(tmp_path / "elsewhere", n_train=110, n_val=20, n_test=20)
    assert integrity.check_splits(elsewhere)["train"] == 110


def test_a_file_whose_bytes_fail_their_checksum_is_named(tmp_path):
    processed = write_processed(tmp_path / "p", n_train=100, n_val=20, n_test=20)
    path = processed / "test.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the images
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"^{path} is damaged \(its member images.npy fails its checksum\)"):
        integrity.check_splits(processed)
