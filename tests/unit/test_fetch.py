"""The fetch stage: sources in order, sha256 before rename, nothing partial left behind, one-line errors."""

import hashlib
import logging
import os

import pytest
from omegaconf import OmegaConf

from mnist_pipeline.config import ConfigError
from mnist_pipeline.data import fetch as fetch_module
from mnist_pipeline.data.fetch import FetchError, build_sources, fetch
from mnist_pipeline.data.sources import Folder, Unavailable
from support.data import MNIST_NAMES, assert_fetched, listing, write_fake_mnist

TRAIN_IMAGES = MNIST_NAMES[0]


class Exploding:
    """A source that must not be asked: the files are already there."""

    name = "exploding"

    def fetch(self, names, install):
        raise AssertionError("fetch asked a source although nothing was missing")


class HalfThenFail:
    """A source whose download breaks midway through the first file."""

    name = "flaky"

    def __init__(self, error=OSError("connection reset")):
        self.error = error

    def fetch(self, names, install):
        def write(f):
            f.write(b"\0" * 1000)
            raise self.error

        install(names[0], write)


@pytest.fixture
def good(tmp_path):
    """A folder of four fake files, and their checksum table."""
    folder = tmp_path / "good"
    return folder, write_fake_mnist(folder)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_local_folder(tmp_path, caplog, gz):
    folder = tmp_path / "src"
    checksums = write_fake_mnist(folder, gz=gz)
    raw = tmp_path / "raw"
    with caplog.at_level(logging.INFO, logger="mnist_pipeline"):
        assert fetch(raw, [Folder("local", folder)], checksums) == "local"
    assert_fetched(raw, folder, checksums)
    assert "source used: local" in caplog.text


def test_corrupt_file_is_rejected_and_the_next_source_wins(tmp_path, good, caplog):
    folder, checksums = good
    bad = tmp_path / "bad"
    write_fake_mnist(bad)
    data = bytearray((bad / TRAIN_IMAGES).read_bytes())
    data[500] ^= 0xFF
    (bad / TRAIN_IMAGES).write_bytes(data)
    raw = tmp_path / "raw"
    with caplog.at_level(logging.INFO, logger="mnist_pipeline"):
        assert fetch(raw, [Folder("bad", bad), Folder("good", folder)], checksums) == "good"
    assert_fetched(raw, folder, checksums)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("bad failed"))
    assert TRAIN_IMAGES in line
    assert checksums[TRAIN_IMAGES].sha256 in line
    assert hashlib.sha256(data).hexdigest() in line


def test_truncated_file_names_file_and_both_checksums(tmp_path, good):
    folder, checksums = good
    truncated = (folder / TRAIN_IMAGES).read_bytes()[:-100]
    (folder / TRAIN_IMAGES).write_bytes(truncated)
    raw = tmp_path / "raw"
    with pytest.raises(FetchError) as err:
        fetch(raw, [Folder("local", folder)], checksums)
    message = str(err.value)
    assert TRAIN_IMAGES in message
    assert checksums[TRAIN_IMAGES].sha256 in message and hashlib.sha256(truncated).hexdigest() in message
    assert f"({len(truncated):,} bytes)" in message
    assert TRAIN_IMAGES not in listing(raw)


def test_missing_file_then_next_source(tmp_path, good, caplog):
    folder, checksums = good
    partial = tmp_path / "partial"
    write_fake_mnist(partial)
    (partial / MNIST_NAMES[3]).unlink()
    raw = tmp_path / "raw"
    with caplog.at_level(logging.INFO, logger="mnist_pipeline"):
        assert fetch(raw, [Folder("partial", partial), Folder("good", folder)], checksums) == "good"
    assert f"partial failed: {MNIST_NAMES[3]} (plain or .gz) not in {partial}" in caplog.text
    assert_fetched(raw, folder, checksums)


def test_failing_first_source_then_working_second(tmp_path, good):
    folder, checksums = good
    raw = tmp_path / "raw"
    assert fetch(raw, [HalfThenFail(), Folder("local", folder)], checksums) == "local"
    assert_fetched(raw, folder, checksums)


def test_all_sources_failing_gives_one_line_listing_each(tmp_path, good):
    _, checksums = good
    raw = tmp_path / "raw"
    unset = Unavailable("local", "not set (data.fetch.source_dir)")
    srcs = [unset, Folder("cache", tmp_path / "nope"), HalfThenFail()]
    with pytest.raises(FetchError) as err:
        fetch(raw, srcs, checksums)
    message = str(err.value)
    assert "\n" not in message
    assert "local: not set (data.fetch.source_dir)" in message
    assert f"cache: no folder {tmp_path / 'nope'}" in message
    assert "flaky: OSError: connection reset" in message
    assert "Fix:" in message
    assert isinstance(err.value, ConfigError)  # so stage_main prints it as one `error:` line, exit 2
    assert listing(raw) == []


def test_valid_files_already_present_are_kept(tmp_path, good):
    folder, checksums = good
    raw = tmp_path / "raw"
    fetch(raw, [Folder("local", folder)], checksums)
    before = {name: os.stat(raw / name) for name in checksums}
    assert fetch(raw, [Exploding()], checksums) == "present"
    for name, st in before.items():
        after = os.stat(raw / name)
        assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_invalid_present_file_is_replaced(tmp_path, good, caplog):
    folder, checksums = good
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / TRAIN_IMAGES).write_bytes(b"not mnist")
    (raw / f".{TRAIN_IMAGES}.x1y2.part").write_bytes(b"left by a killed run")
    with caplog.at_level(logging.INFO, logger="mnist_pipeline"):
        assert fetch(raw, [Folder("local", folder)], checksums) == "local"
    assert f"removing {raw / TRAIN_IMAGES}" in caplog.text
    assert_fetched(raw, folder, checksums)


@pytest.mark.parametrize("error", [OSError("disk on fire"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_interrupted_write_leaves_no_partial_or_temp_file(tmp_path, good, error):
    _, checksums = good
    raw = tmp_path / "raw"
    with pytest.raises(FetchError if isinstance(error, Exception) else KeyboardInterrupt):
        fetch(raw, [HalfThenFail(error)], checksums)
    assert listing(raw) == []


def test_failure_inside_the_rename_leaves_no_file(tmp_path, good, monkeypatch):
    folder, checksums = good
    raw = tmp_path / "raw"

    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(FetchError, match="rename failed"):
        fetch(raw, [Folder("local", folder)], checksums)
    assert listing(raw) == []


def test_cache_serves_the_second_fetch(tmp_path, good):
    folder, checksums = good
    cache = tmp_path / "cache"
    assert fetch(tmp_path / "raw1", [Folder("local", folder)], checksums, cache_dir=cache) == "local"
    assert listing(cache) == sorted(checksums)
    raw2 = tmp_path / "raw2"
    srcs = [Unavailable("local", "not set"), Folder("cache", cache)]
    assert fetch(raw2, srcs, checksums, cache_dir=cache) == "cache"
    assert_fetched(raw2, folder, checksums)
    assert os.stat(raw2 / TRAIN_IMAGES).st_ino != os.stat(cache / TRAIN_IMAGES).st_ino  # a copy, not a link


def fetch_cfg(**overrides):
    base = {
        "source_dir": None,
        "sources": ["local", "cache", "mirrors", "pypi", "npm"],
        "mirrors": ["http://127.0.0.1:9/"],
        "timeout": 5,
        "cache_dir": "/tmp/some-cache",
    }
    return OmegaConf.create({**base, **overrides})


def test_build_sources_in_configured_order():
    built = build_sources(fetch_cfg())
    assert [s.name for s in built] == ["local", "cache", "mirrors", "pypi", "npm"]
    assert isinstance(built[0], Unavailable) and "not set" in built[0].reason
    assert built[1].folder == fetch_module.resolve_path("/tmp/some-cache")
    assert isinstance(build_sources(fetch_cfg(source_dir="/data/mnist"))[0], Folder)


@pytest.mark.parametrize(
    "overrides, key",
    [({"sources": ["local", "ftp"]}, "data.fetch.sources"), ({"sources": []}, "data.fetch.sources"),
     ({"sources": "pypi"}, "data.fetch.sources"),
     ({"timeout": 0}, "data.fetch.timeout"), ({"timeout": "soon"}, "data.fetch.timeout")],
)
def test_bad_fetch_settings_are_config_errors(overrides, key):
    with pytest.raises(ConfigError, match=key):
        build_sources(fetch_cfg(**overrides))
