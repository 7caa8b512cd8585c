"""One GPU per job, on CPU with a fake GPU count: no two concurrent jobs hold one slot, every slot is
freed (by a job that failed, and by one killed with SIGKILL too), a job waits when all are held,
and the slots honour a CUDA_VISIBLE_DEVICES the user set."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from mnist_pipeline.training.gpu_slots import SLOTS_DIR_ENV, Device, device_for, gpu_slot
from support import compose

GPUS = ["0", "1"]


def _job(folder, number, fail, queue, gpus=GPUS):
    try:
        with gpu_slot(gpus, folder, poll_s=0.02) as index:
            start = time.monotonic()
            time.sleep(0.2)
            queue.put((number, index, start, time.monotonic()))
            if fail:
                raise RuntimeError("this job fails while holding its GPU")
    except RuntimeError:
        pass


def test_concurrent_jobs_never_share_a_gpu_and_failed_jobs_free_theirs(tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    jobs = [context.Process(target=_job, args=(tmp_path, n, n % 3 == 0, queue)) for n in range(6)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=30)
    held = sorted(queue.get(timeout=5) for _ in jobs)
    assert [n for n, *_ in held] == list(range(6)), "every job got a GPU, the failing ones (0, 3) too"
    for gpu in (0, 1):
        spans = sorted((start, end) for _, index, start, end in held if index == gpu)
        assert spans, f"GPU {gpu} was never used: the jobs did not spread"
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), \
            f"two jobs held GPU {gpu} at once: {spans}"
    with gpu_slot(GPUS, tmp_path, poll_s=0.02) as first, gpu_slot(GPUS, tmp_path, poll_s=0.02) as second:
        assert (first, second) == (0, 1), "every slot is free again"


def _hold_forever(folder, ready):
    with gpu_slot(GPUS[:1], folder):
        ready.set()
        time.sleep(600)


def test_a_killed_job_frees_its_gpu_and_a_waiting_job_gets_it(tmp_path):
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_forever, args=(tmp_path, ready))
    holder.start()
    assert ready.wait(30)
    waiter = context.Process(target=_job, args=(tmp_path, 0, False, context.Queue(), GPUS[:1]))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive(), "the only GPU is held: the next job waits"
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    waiter.join(timeout=10)
    assert waiter.exitcode == 0, "the killed job's GPU went to the waiting job"


@pytest.fixture
def slots(tmp_path, monkeypatch):
    monkeypatch.setenv(SLOTS_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return tmp_path


def test_a_gpu_job_gets_an_index_inside_the_visible_set(slots, monkeypatch):
    cfg = compose("trainer=gpu")
    with device_for(cfg, gpu_count=2) as first, device_for(cfg, gpu_count=2) as second:
        assert (first, second) == (Device("cuda:0", [0]), Device("cuda:1", [1]))
    assert cfg.trainer.devices == 1, "the config (logged as params) is left as it was"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with device_for(cfg, gpu_count=2) as first, device_for(cfg, gpu_count=2) as second:
        assert second == Device("cuda:1 (CUDA_VISIBLE_DEVICES 5)", [1])
        assert sorted(p.name for p in slots.iterdir()) == ["gpu-0.lock", "gpu-1.lock", "gpu-3.lock", "gpu-5.lock"]


@pytest.mark.parametrize(("overrides", "tag"), [(["trainer=cpu"], "cpu"), (["trainer=ddp_cpu"], "cpu x2"),
                                                (["trainer=gpu", "trainer.devices=[2]"], "gpu"),
                                                (["trainer=ddp"], "gpu x2")])
def test_jobs_that_name_or_span_devices_take_no_slot(slots, overrides, tag):
    with device_for(compose(*overrides), gpu_count=4) as device:
        assert device == Device(tag)
    assert list(slots.iterdir()) == []
