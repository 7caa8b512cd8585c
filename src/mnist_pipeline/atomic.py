"""Atomic file writes: a reader (or a kill at any moment) sees the old file or the whole new one.

Data goes to a hidden temp file in the destination folder, is flushed to disk (unless the caller
says the file need not survive a power cut), then renamed over the destination (`os.replace` is
atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", durable: bool = True,
                 private: bool = False) -> Iterator[IO]:
    """Open a temp file next to `path`; on a clean exit it replaces `path`, on any error it is removed.
    durable=False skips the fsync: the file is still whole or absent after a kill of the process
    (the page cache outlives it), but a power cut may lose its newest version. private=True keeps
    mode 600 (a secret: readable by its owner only, from the first byte written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if not private:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_secret(path: str | os.PathLike, text: str) -> None:
    """A password or key: mode 600 from the start, never readable by others, even for a moment."""
    with atomic_write(path, "w", private=True) as f:
        f.write(text)


def write_png(path: str | os.PathLike, fig) -> None:
    """A matplotlib figure as a PNG file; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Delete temp files a killed writer left behind (SIGKILL skips every cleanup)."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(f".*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
