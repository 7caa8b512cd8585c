"""Sweeps on a real one-node SLURM cluster (support/slurm_cluster.py: munged, slurmctld, slurmd on
this machine, no GPUs, no accounting): one job, one folder and one run per point; SIGUSR2 requeues
a job that continues its run; scancel, scontrol requeue and a SIGKILL; DDP (trainer=ddp_cpu: one
node, 2 tasks) inside a job. Multi-node jobs are not tested: the cluster has one node."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import MNIST, ROOT, metric_steps, store_client
from support.slurm_cluster import missing_programs, start_cluster

# No skip when SLURM is missing: `make test-system` installs it, and the fixture fails saying what is missing.
pytestmark = pytest.mark.system_packages


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    assert not missing_programs(), f"SLURM's programs are missing (make test-system installs them): {missing_programs()}"
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


class Sweep:
    """`mnist train -m hydra/launcher=slurm ...` running in the background, and what it recorded."""

    def __init__(self, cluster, processed: Path, tmp: Path, *extra: str, max_steps: int = 10) -> None:
        self.cluster, self.store, self.dir = cluster, tmp / "mlruns", tmp / "sweep"
        args = ["train", "-m", "hydra/launcher=slurm", f"paths.processed_dir={processed}",
                f"logger.tracking_uri=sqlite:///{self.store}/mlflow.db", "data.val_subset_size=100",
                "data.eval_batch_size=100", f"trainer.max_steps={max_steps}", "progress_every_n_steps=1",
                "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={self.dir}", *extra]
        self.started = time.monotonic()
        self.proc = subprocess.Popen([*MNIST, *args], cwd=ROOT, env={**os.environ, **cluster.env},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self, timeout: float = 240) -> str:
        try:
            out = self.proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the sweep did not end within {timeout} s: {self.proc.communicate()[0][-3000:]}")
        assert self.proc.returncode == 0, out[-4000:]
        return out

    def wait_for_step(self, step: int, point: int | None = None, timeout: float = 120) -> str:
        """Wait until a point's rank-0 log (point `point` of a job array, if given) shows training at
        `step` or later; that point's job id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pattern = "*_0_log.out" if point is None else f"*_{point}_0_log.out"
            for log in self.dir.glob(f"slurm/*/{pattern}"):
                steps = [int(line.split(" step ")[1].split("/")[0]) for line in log.read_text().splitlines()
                         if " step " in line and "train/loss" in line]
                if steps and max(steps) >= step:
                    return log.name.rsplit("_", 2)[0]
            assert self.proc.poll() is None, f"the sweep ended early: {self.proc.communicate()[0][-3000:]}"
            time.sleep(0.5)
        raise AssertionError(f"no point reached step {step} within {timeout} s")

    def wait_for_log(self, job: str, text: str, timeout: float = 60) -> None:
        log = self.dir / "slurm" / job / f"{job}_0_log.out"
        deadline = time.monotonic() + timeout
        while not (log.is_file() and text in log.read_text()):
            assert time.monotonic() < deadline, f"{text!r} not in {log} after {timeout} s"
            time.sleep(0.5)

    def wait_for_state(self, job: str, states: tuple[str, ...], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.cluster.queue_state(job)) not in states:
            assert time.monotonic() < deadline, f"job {job} is {state}, not {states}, after {timeout} s"
            time.sleep(0.5)
        return state


    def runs(self):
        client = store_client(self.store)
        runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(runs) == 1 + len(children)
        return parent, {r.data.tags["slurm_job_id"]: r for r in children}


def test_a_2x2_sweep_is_one_job_one_folder_and_one_run_per_point(cluster, processed, tmp_path):
    sweep = Sweep(cluster, processed, tmp_path, "optimizer.lr=0.05,0.1", "data.batch_size=32,64")
    out = sweep.finish()
    parent, points = sweep.runs()
    (array,) = {job.split("_")[0] for job in points}
    assert sorted(points) == [f"{array}_{i}" for i in range(4)], "one job of the job array per point"
    assert {(r.data.params["optimizer.lr"], r.data.params["data.batch_size"]) for r in points.values()} == \
        {("0.05", "32"), ("0.05", "64"), ("0.1", "32"), ("0.1", "64")}
    assert all(r.info.status == "FINISHED" for r in points.values())
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_points"] == "0"
    for i in range(4):
        run = points[f"{array}_{i}"]
        assert run.data.tags["output_dir"] == str(sweep.dir / str(i))
        assert (sweep.dir / str(i) / "checkpoints" / "last.ckpt").is_file()
        assert (sweep.dir / "slurm" / f"{array}_{i}" / f"{array}_{i}_0_log.out").is_file(), "logs in the sweep"
    assert "best first by val_full/acc" in out
    assert cluster.queue() and all(state == "COMPLETED" for job, state in cluster.queue() if job.startswith(array))
    print(f"\n2x2 sweep in {time.monotonic() - sweep.started:.0f} s; parent {parent.info.status} "
          f"failed_points={parent.data.tags['failed_points']}")
    for job, run in sorted(points.items()):
        print(f"  job {job} ({cluster.queue_state(job)}): run {run.info.run_id} {run.info.run_name!r} {run.info.status}")


def _assert_continued(client, run, steps: int) -> None:
    """One run, every step once: the requeued job continued it."""
    for key in ("train/loss", "train/acc"):
        assert metric_steps(client, run.info.run_id, key) == list(range(1, steps + 1)), key


def test_usr2_stops_the_run_and_the_requeued_job_continues_it(cluster, processed, tmp_path):
    sweep = Sweep(cluster, processed, tmp_path, "optimizer.lr=0.05", max_steps=80)
    job = sweep.wait_for_step(10)
    cluster.run("scancel", "--signal=USR2", job)
    sweep.wait_for_log(job, f"Requeued job {job}")
    # The requeued job may start again after 10 s (the test cluster's cred_expire): the run as the
    # first run of the job left it.
    _, points = sweep.runs()
    before = points[job]
    assert before.info.status == "RUNNING" and before.data.tags["requeued"] == "1"
    assert (sweep.dir / "0" / "checkpoints" / "last.ckpt").is_file()
    logged_before = metric_steps(store_client(sweep.store), before.info.run_id, "train/loss")
    assert len(logged_before) >= 10 and logged_before == list(range(1, len(logged_before) + 1)), "flushed"
    sweep.finish()
    parent, points = sweep.runs()
    (after,) = points.values()
    assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
    stopped_at = int(after.data.tags["resumed_at_step"])
    assert stopped_at == len(logged_before)
    _assert_continued(store_client(sweep.store), after, 80)
    assert parent.data.tags["failed_points"] == "0"
    print(f"\nUSR2 to job {job}: run {before.info.run_id} RUNNING requeued=1 with steps 1..{logged_before[-1]} "
          f"logged; requeued job continued run {after.info.run_id} from step {stopped_at}: {after.info.status}, "
          f"train/loss steps 1..80 once each")


def test_scontrol_requeue_kills_the_run_and_the_job_continues_it(cluster, processed, tmp_path):
    sweep = Sweep(cluster, processed, tmp_path, "optimizer.lr=0.05", max_steps=200)
    job = sweep.wait_for_step(10)
    cluster.run("scontrol", "requeue", job)
    sweep.finish()
    _, points = sweep.runs()
    (run,) = points.values()
    assert run.info.status == "FINISHED" and "requeued" not in run.data.tags
    assert 10 <= int(run.data.tags["resumed_at_step"]) < 200
    assert "killed by SIGTERM: run marked KILLED" in (sweep.dir / "slurm" / job / f"{job}_0_log.err").read_text()
    _assert_continued(store_client(sweep.store), run, 200)
    print(f"\nscontrol requeue {job}: run {run.info.run_id} KILLED at step {run.data.tags['resumed_at_step']}, "
          f"continued by the requeued job: {run.info.status}, steps 1..200 once each")


def test_killed_jobs_fail_only_their_points_and_never_hang_the_sweep(cluster, processed, tmp_path):
    """scancel (SIGTERM): the run ends KILLED. A training process killed by SIGKILL (as the kernel's
    out-of-memory killer does: no handler runs, no result is written): the sweep sees its job over
    through squeue and marks its run FAILED. The third point finishes."""
    sweep = Sweep(cluster, processed, tmp_path, "optimizer.lr=0.05,0.1,0.2", max_steps=150)
    first = sweep.wait_for_step(5, point=0)
    array = first.split("_")[0]
    cluster.run("scancel", first)
    sweep.wait_for_step(3, point=1)
    _, points = sweep.runs()
    os.kill(int(points[f"{array}_1"].data.tags["pid"]), signal.SIGKILL)
    sweep.finish()
    parent, points = sweep.runs()
    killed, dead, finished = (points[f"{array}_{i}"] for i in range(3))
    assert killed.info.status == "KILLED"
    stderr = (sweep.dir / "slurm" / f"{array}_0" / f"{array}_0_0_log.err").read_text()
    assert "killed by SIGTERM: run marked KILLED" in stderr and "exit code 143" in stderr
    assert dead.info.status == "FAILED" and dead.data.tags["slurm_state"] in ("FAILED", "CANCELLED")
    assert finished.info.status == "FINISHED"
    assert parent.data.tags["failed_points"] == "2" and parent.data.tags["points"] == "3"
    print(f"\nkilled jobs: sweep over in {time.monotonic() - sweep.started:.0f} s, rc 0, failed_points=2")
    for job, run in sorted(points.items()):
        print(f"  job {job} ({cluster.queue_state(job)}): {run.info.status} slurm_state={run.data.tags.get('slurm_state')}")


def test_ddp_in_a_job_stops_every_rank_at_one_step_and_continues(cluster, processed, tmp_path):
    """trainer=ddp_cpu: one job of 2 tasks (srun), one run (rank 0), world_size 2; SIGUSR2 reaches
    both ranks, which stop at the same step; the requeued job continues the run."""
    sweep = Sweep(cluster, processed, tmp_path, "optimizer.lr=0.05", "trainer=ddp_cpu", max_steps=60)
    job = sweep.wait_for_step(8)
    assert (sweep.dir / "slurm" / job / f"{job}_1_log.out").is_file(), "a second task"
    cluster.run("scancel", "--signal=USR2", job)
    sweep.finish()
    _, points = sweep.runs()
    (run,) = points.values()
    assert run.data.params["world_size"] == "2" and run.info.status == "FINISHED"
    assert run.data.tags["requeued"] == "1" and 8 <= int(run.data.tags["resumed_at_step"]) < 60
    _assert_continued(store_client(sweep.store), run, 60)
    print(f"\nddp_cpu job {job} (2 tasks): run {run.info.run_id} world_size={run.data.params['world_size']}, "
          f"USR2 at step {run.data.tags['resumed_at_step']}, requeued, {run.info.status}, steps 1..60 once each")
