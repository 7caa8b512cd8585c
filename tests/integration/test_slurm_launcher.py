"""`hydra/launcher=slurm` without a cluster: refused in one line where `sbatch` is missing, and the
squeue watcher that bounds every wait on a job (a fake `squeue` on PATH). The launcher against a
real SLURM is tests/system/test_slurm.py."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from support import MNIST, mnist, store_runs, tiny_overrides


def test_a_slurm_sweep_without_sbatch_is_refused_before_anything_exists(processed, tmp_path):
    store, sweep = tmp_path / "mlruns", tmp_path / "sweep"
    bin_dir = Path(MNIST[0]).parent  # this environment's commands, and no SLURM
    result = mnist("train", "-m", "hydra/launcher=slurm", *tiny_overrides(processed, store, None),
                   "optimizer.lr=0.05,0.1", f"hydra.sweep.dir={sweep}", env={"PATH": str(bin_dir)})
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "sbatch" in errors[0] and "hydra/launcher=slurm" in errors[0]
    assert "Traceback" not in result.stderr
    assert store_runs(store) == [] and not store.exists() and not sweep.exists()


def _fake_squeue(tmp_path: Path, monkeypatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\n{script}\n")
    squeue.chmod(squeue.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_the_watcher_reads_squeue_and_takes_a_job_slurm_forgot_as_over(tmp_path, monkeypatch):
    from mnist_pipeline.training.slurm_launcher import GONE, SqueueWatcher

    _fake_squeue(tmp_path, monkeypatch, "printf '12_0|COMPLETED\\n12_1|RUNNING\\n12_[2-3]|PENDING\\n'")
    watcher = SqueueWatcher()
    for job in ("12_0", "12_1", "12_2", "12_3", "12_4"):
        watcher.register_job(job)
    watcher.update()
    states = {job: watcher.get_state(job, mode="cache") for job in ("12_0", "12_1", "12_2", "12_4")}
    assert states == {"12_0": "COMPLETED", "12_1": "RUNNING", "12_2": "PENDING", "12_4": GONE}
    assert [watcher.is_done(j, mode="cache") for j in ("12_0", "12_1", "12_2", "12_4")] == [True, False, False, True]


def test_the_watcher_takes_jobs_as_over_when_squeue_knows_none(tmp_path, monkeypatch):
    from mnist_pipeline.training.slurm_launcher import GONE, SqueueWatcher

    _fake_squeue(tmp_path, monkeypatch, "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    watcher = SqueueWatcher()
    watcher.register_job("7")
    watcher.update()
    assert watcher.get_state("7", mode="cache") == GONE and watcher.is_done("7", mode="cache")


def test_a_failing_squeue_ends_the_wait_after_its_bound(tmp_path, monkeypatch):
    from mnist_pipeline.training.slurm_launcher import UNREACHABLE, SqueueWatcher

    _fake_squeue(tmp_path, monkeypatch, "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1")
    watcher = SqueueWatcher(unreachable_s=0.5)
    watcher.register_job("7")
    watcher.update()
    assert not watcher.is_done("7", mode="cache"), "one failure is not the end of the job"
    time.sleep(0.6)
    watcher.update()
    assert watcher.get_state("7", mode="cache") == UNREACHABLE and watcher.is_done("7", mode="cache")


@pytest.mark.parametrize(("signum", "stopped_as"), [(signal.SIGUSR2, "RunRequeued"), (signal.SIGTERM, "RunKilled"),
                                                     (signal.SIGINT, "RunKilled")])
def test_under_slurm_usr2_stops_a_run_for_requeue_and_the_others_kill_it(signum, stopped_as):
    from mnist_pipeline.training.slurm import SlurmStop

    assert type(SlurmStop().exception(signum)).__name__ == stopped_as
