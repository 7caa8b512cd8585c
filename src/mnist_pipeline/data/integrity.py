"""Whether the split files can be trained on: every file whole and readable, and, for the files of
the project's own `split` stage, the ones `dvc.lock` recorded. Checked before any run starts: a
file truncated or changed by hand is named, with the fix (`dvc repro split`), instead of failing
a run halfway.

dvc.lock records the stage output's total size; DVC's cache keeps the manifest (`<md5>.dir`: each
file's md5) it was computed from. The size is always compared; each file's md5 too when the
manifest is in the cache (after any `dvc repro` on this machine).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from mnist_pipeline.config import ConfigError, project_root
from mnist_pipeline.data.processed import check_processed, split_files

FIX = "run `dvc repro split` (or `mnist split`) to write it again"
_checked: dict[tuple, dict[str, int]] = {}  # a process checks each unchanged set of files once


def _state(files: dict[str, Path]) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files.values())


def check_splits(processed_dir: str | Path) -> dict[str, int]:
    """{split: number of images}, once every split file is known to be whole and readable."""
    check_processed(processed_dir)
    files = split_files(processed_dir)
    key = _state(files)
    if key not in _checked:
        sizes = {name: _images_in(path) for name, path in files.items()}
        _check_against_dvc_lock(Path(processed_dir), files)
        _checked[key] = sizes
    return _checked[key]


def _images_in(path: Path) -> int:
    """The number of images of a split file, after checking every byte of it (zip CRCs)."""
    import numpy as np

    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            if broken is not None:
                raise ConfigError(f"{path} is damaged (its member {broken} fails its checksum): {FIX}")
            shapes = {}
            for name in ("images", "labels"):
                with archive.open(f"{name}.npy") as member:  # the header only: the bytes were just checked
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shapes[name] = read_header(member)[0]
    except ConfigError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise ConfigError(f"{path} is not a readable split file ({type(e).__name__}: "
                          f"{' '.join(str(e).split()) or 'no detail'}): {FIX}") from None
    images, labels = shapes["images"], shapes["labels"]
    if len(images) != 3 or images[1:] != (28, 28) or len(labels) != 1 or labels[0] != images[0]:
        raise ConfigError(f"{path} holds images of shape {images} and labels of shape {labels}, not N x 28 x 28 "
                          f"and N: {FIX}")
    return images[0]


def _check_against_dvc_lock(processed_dir: Path, files: dict[str, Path]) -> None:
    """For the split stage's own output folder: the files dvc.lock recorded, by size and md5."""
    root = project_root()
    recorded = _recorded_output(root, processed_dir)
    if recorded is None:
        return
    size = sum(p.stat().st_size for p in files.values())
    if recorded.get("size") is not None and size != recorded["size"]:
        raise ConfigError(f"{processed_dir}: its split files hold {size} bytes, dvc.lock recorded "
                          f"{recorded['size']}: {FIX}")
    manifest = root / ".dvc" / "cache" / "files" / "md5" / recorded["md5"][:2] / recorded["md5"][2:]
    if not manifest.is_file():
        return
    expected = {entry["relpath"]: entry["md5"] for entry in json.loads(manifest.read_text())}
    for path in files.values():
        if path.name in expected:
            with open(path, "rb") as f:
                md5 = hashlib.file_digest(f, "md5").hexdigest()
            if md5 != expected[path.name]:
                raise ConfigError(f"{path} is not the file dvc.lock recorded (md5 {md5}, recorded "
                                  f"{expected[path.name]}): {FIX}")


def _recorded_output(root: Path, processed_dir: Path) -> dict | None:
    """dvc.lock's entry for `processed_dir` as an output of the split stage, or None."""
    import yaml

    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        outs = yaml.safe_load(lock.read_text())["stages"]["split"]["outs"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    for out in outs:
        same = (root / out.get("path", "")).resolve() == processed_dir.resolve()
        if same and str(out.get("md5", "")).endswith(".dir"):
            return out
    return None
