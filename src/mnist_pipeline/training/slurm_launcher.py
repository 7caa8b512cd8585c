"""`hydra/launcher=slurm`: one SLURM job per sweep point (hydra-submitit-launcher's SLURM launcher;
the class is hydra_plugins.mnist_pipeline_slurm.launcher), where no wait on a job can hang the sweep.

submitit learns that a job ended from its result file, or else from `sacct`; on a cluster without
accounting (`sacct` answers nothing) a job killed before writing its result (scancel, a node lost,
the time limit without requeue, an out-of-memory kill) would be waited on for ever. Here a job's
state comes from `squeue` (`SqueueWatcher`): a job in a final state, or one slurmctld no longer
knows, is over. A job over without a result fails its point only: the point returns NaN, its run is
marked FAILED if it was left RUNNING (a KILLED run stays KILLED), the other points go on, and the
sweep's parent run counts it in `failed_points`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from mnist_pipeline.tracking.runs import PARENT_ENV, SLURM_JOB_TAG

log = logging.getLogger(__name__)

# States of a job that is not over (squeue's %T): waiting, running, or on its way back to the queue.
NOT_OVER = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
            "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "RESV_DEL_HOLD", "PREEMPTED", "UNKNOWN"}
GONE = "GONE"  # slurmctld no longer knows the job (it ended more than MinJobAge ago)
UNREACHABLE = "UNREACHABLE"  # squeue kept failing for `unreachable_s`


class SqueueWatcher(SlurmInfoWatcher):
    """submitit's job watcher, reading `squeue --states=all` instead of `sacct`. squeue failing
    (slurmctld down) for `unreachable_s` in a row ends the jobs still watched, as UNREACHABLE."""

    def __init__(self, delay_s: int = 10, unreachable_s: float = 600) -> None:
        super().__init__(delay_s=delay_s)
        self.unreachable_s = unreachable_s
        self._failing_since: float | None = None

    def _make_command(self) -> list[str] | None:
        to_check = sorted({x.split("_")[0] for x in self._registered - self._finished})
        if not to_check:
            return None
        return ["squeue", "--noheader", "--states=all", "--format=%i|%T", f"--jobs={','.join(to_check)}"]

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        watched = self._registered - self._finished
        try:
            answer = subprocess.run(command, capture_output=True, text=True, timeout=60)
            # every job asked for unknown: squeue exits 1, "Invalid job id specified"
            known = answer.returncode == 0 or "Invalid job id" in answer.stderr
            problem = answer.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            known, problem = False, str(e)
        now = time.time()
        if known:
            self._failing_since = None
            listed = self.read_info("JobID|State\n" + (answer.stdout if answer.returncode == 0 else ""))
            for job_id in watched:
                self._info_dict[job_id] = listed.get(job_id, {"State": GONE})
        else:
            self._failing_since = self._failing_since or now
            log.warning("squeue failed (%s); jobs are taken as over after %.0f s of this", problem, self.unreachable_s)
            if now - self._failing_since >= self.unreachable_s:
                for job_id in watched:
                    self._info_dict[job_id] = {"State": UNREACHABLE}
        self._last_status_check = now
        for job_id in watched:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).split()[0].upper() not in NOT_OVER


@contextlib.contextmanager
def _watched_by(watcher: SqueueWatcher):
    """submitit's SLURM jobs (a class-wide watcher) use `watcher` while inside."""
    previous = SlurmJob.watcher
    SlurmJob.watcher = watcher
    try:
        yield
    finally:
        SlurmJob.watcher = previous


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    """hydra-submitit-launcher's `launch` (one job array, one job per point), except that a CPU
    trainer asks for no GPU, and each point's wait is bounded (`SqueueWatcher`, `_outcome`)."""
    import submitit

    config = launcher.config
    assert config is not None
    params = dict(launcher.params)
    if config.trainer.accelerator == "cpu":
        params["gpus_per_node"] = None  # the preset's `${trainer.devices}` counts processes, not GPUs
    init_keys = {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"],
                                     slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in init_keys})
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("SLURM sweep: %d job(s), output and job logs in %s", len(job_overrides), sweep_dir)
    job_params = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    with _watched_by(SqueueWatcher()):
        jobs = executor.map_array(launcher, *zip(*job_params))
        return [_outcome(job, overrides) for job, overrides in zip(jobs, job_overrides)]


def _outcome(job, overrides: Sequence[str]) -> JobReturn:
    """The point's JobReturn (rank 0's), or NaN when its job ended without one."""
    job.wait()  # bounded: SqueueWatcher ends the wait once the job is over, result or not
    try:
        return job.task(0).result()
    except Exception as e:  # submitit's UncompletedJobError (no result) or FailedJobError
        state = job.task(0).state
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        log.error("sweep point %s: SLURM job %s ended without a result (%s): %s",
                  " ".join(overrides), job.job_id, state, first)
        _fail_runs_of_job(job.job_id, state)
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=float("nan"))


def _fail_runs_of_job(job_id: str, state: str) -> None:
    """The sweep point's run, left RUNNING by a job that died, ends FAILED (tag `slurm_state`)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_run(parent).info.experiment_id
    query = f"tags.{SLURM_JOB_TAG} = '{job_id}' and attributes.status = 'RUNNING'"
    for run in client.search_runs([experiment], query):
        if run.data.tags.get("mlflow.parentRunId") == parent:
            client.set_tag(run.info.run_id, "slurm_state", state)
            client.set_terminated(run.info.run_id, "FAILED")
