"""One GPU per job: parallel sweep jobs (`hydra/launcher=joblib hydra.launcher.n_jobs=K trainer=gpu`)
each take a GPU of their own from a pool of slots, and give it back when they end.

A slot is a lock file per GPU (`flock`), shared by every process on the machine: a job that ends,
fails or is killed frees its GPU at once (the kernel drops a dead process's locks), and a job that
finds every GPU taken waits for the first one freed. A fixed index per job number could not do
this. The GPU is chosen as an index inside the visible set (`trainer.devices=[i]`), never by
setting `CUDA_VISIBLE_DEVICES`: joblib reuses its worker processes, in which CUDA may already have
started, and a `CUDA_VISIBLE_DEVICES` the user set is honoured (the slots are named after the
physical GPUs it lists).

Off for a job that names its devices (`trainer.devices=[2]`), uses several (DDP), or runs under
SLURM, which gives each job its own GPUs already.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SLOTS_DIR_ENV = "MNIST_PIPELINE_GPU_SLOTS"
log = logging.getLogger(__name__)


def slots_dir() -> Path:
    """One folder per machine, shared by every user's jobs (the GPUs are)."""
    folder = Path(os.environ.get(SLOTS_DIR_ENV) or Path(tempfile.gettempdir()) / "mnist-pipeline-gpu-slots")
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            folder.chmod(0o1777)
    return folder


def physical_ids(visible_count: int) -> list[str]:
    """The physical GPU behind each visible index: what `CUDA_VISIBLE_DEVICES` lists, else the index."""
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:visible_count] if listed else [str(i) for i in range(visible_count)]


@contextlib.contextmanager
def gpu_slot(ids: list[str], folder: Path, poll_s: float = 0.5) -> Iterator[int]:
    """Hold the first free GPU of `ids` (physical ids, in visible order) while inside; yields its
    visible index. Waits while every GPU is held by another job."""
    waited = False
    while True:
        for index, gpu in enumerate(ids):
            path = folder / f"gpu-{gpu}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                yield index
            finally:
                os.close(fd)  # releases the lock
            return
        if not waited:
            log.info("all %d GPUs are held by other jobs: waiting for one (%s)", len(ids), folder)
            waited = True
        time.sleep(poll_s)


def wants_a_slot(cfg) -> bool:
    trainer = cfg.trainer
    return (str(trainer.accelerator) in ("gpu", "cuda") and trainer.devices == 1 and trainer.num_nodes == 1
            and "SLURM_JOB_ID" not in os.environ)


@dataclass(frozen=True)
class Device:
    """What the trainer runs on: `tag` for the run's `device` tag (a tag, not a param: it may change
    on resume), `devices` for the Trainer (None: the config's own `trainer.devices`)."""
    tag: str
    devices: list[int] | None = None


@contextlib.contextmanager
def device_for(cfg, gpu_count: int | None = None) -> Iterator[Device]:
    """While inside, this job holds its own GPU when it wants one. `gpu_count`: the visible GPUs
    (tests fake it; default: what torch sees)."""
    trainer = cfg.trainer
    if not wants_a_slot(cfg):
        n = trainer.devices if isinstance(trainer.devices, int) else len(trainer.devices)
        kind = "cpu" if str(trainer.accelerator) == "cpu" else str(trainer.accelerator)
        yield Device(kind if n * trainer.num_nodes == 1 else f"{kind} x{n * trainer.num_nodes}")
        return
    if gpu_count is None:
        import torch

        gpu_count = torch.cuda.device_count()
    ids = physical_ids(gpu_count)
    with gpu_slot(ids, slots_dir()) as index:
        physical = f" (CUDA_VISIBLE_DEVICES {ids[index]})" if "CUDA_VISIBLE_DEVICES" in os.environ else ""
        yield Device(f"cuda:{index}{physical}", [index])
