"""A training job on SLURM: one owner of requeueing (submitit), a clean stop before it requeues, and
the requeued job continuing its own MLflow run.

Three signal handlers would compete in a job that `hydra/launcher=slurm` submits: submitit requeues
on SIGUSR2 (time limit near, or preemption) and ignores SIGTERM; `stopping.py` turns SIGTERM and
SIGINT into a KILLED run; Lightning's SLURMEnvironment requeues on SIGUSR1. Here:
- Lightning's auto-requeue is off (`trainer_plugins`): submitit alone requeues.
- SIGUSR2 stops training at the next step boundary (every DDP rank at the same step: `SlurmStop`),
  the `last` checkpoint is saved and the metrics flushed, the run stays RUNNING with the tag
  `requeued`, and only then submitit's own handler runs (`requeue_on_usr2`): it requeues the job.
- SIGTERM and SIGINT alone (scancel, Ctrl-C) end the run KILLED, as everywhere.
- A requeued job (`SLURM_RESTART_COUNT` > 0, or a RUNNING run carrying this job's id) continues the
  run tagged with its job id from its `last` checkpoint (`find_requeued`), as `resume=<id>` would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path

from mnist_pipeline.config import ConfigError
from mnist_pipeline.tracking.runs import PARENT_ENV, SLURM_JOB_TAG, slurm_job_id
from mnist_pipeline.training.stopping import RunKilled, StopAtStepBoundary

log = logging.getLogger(__name__)

# The Hydra launcher of `hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml).
LAUNCHER = "hydra_plugins.mnist_pipeline_slurm.launcher.SlurmSweepLauncher"


class RunRequeued(BaseException):
    """SIGUSR2 under submitit: the run stops cleanly and stays RUNNING; the job is requeued and
    continues it. A BaseException, as RunKilled: no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} to be requeued")
        self.signum = signum
        self.run_id: str | None = None  # set by the code that owns the run (train.mlflow_run)


def under_submitit() -> bool:
    """A job that submitit started on SLURM (its `_submit` process installed the SIGUSR2 handler)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def check_launcher(config) -> None:
    """`hydra/launcher=slurm` needs SLURM's `sbatch`: say so before any run or folder exists."""
    target = str(config.hydra.launcher.get("_target_", ""))
    if target == LAUNCHER and shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=slurm: SLURM's `sbatch` is not on PATH; run the sweep where "
                          "SLURM is installed (a cluster's login node), or drop hydra/launcher=slurm")


def trainer_plugins() -> list:
    """Lightning's SLURM environment with its own requeue on SIGUSR1 off, wherever Lightning would
    pick that environment anyway (a process started by srun, not in an interactive allocation)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


class SlurmStop(StopAtStepBoundary):
    """StopAtStepBoundary that stops SIGUSR2 as `RunRequeued`, and, with several processes, stops
    every rank at the same step: the ranks agree on the signal (the largest seen, 0 for none) before
    each step. A rank stopping alone would leave the others waiting in a collective for ever."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.world_size <= 1:
            return super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        import torch

        seen = torch.tensor(float(self.signum or 0), device=pl_module.device)
        agreed = int(trainer.strategy.reduce(seen, reduce_op="max").item())
        if agreed:
            raise self.exception(agreed)

    def exception(self, signum: int) -> BaseException:
        return RunRequeued(signum) if signum == signal.SIGUSR2 else RunKilled(signum)


def step_boundary_stop() -> StopAtStepBoundary:
    return SlurmStop() if "SLURM_JOB_ID" in os.environ else StopAtStepBoundary()


@contextlib.contextmanager
def requeue_on_usr2(stop: StopAtStepBoundary):
    """While inside, under submitit: SIGUSR2 stops the run at the next step boundary (at once
    outside fitting) as `RunRequeued`; once the run's owner has left it RUNNING, submitit's own
    handler runs: rank 0 saves submitit's state, requeues the job (`scontrol requeue`) and exits.
    When submitit refuses (the job timed out `max_num_timeout` times), the run ends KILLED, with
    the tag `requeue_refused`, and the job exits 140 (128 + SIGUSR2)."""
    submitit_handler = signal.getsignal(signal.SIGUSR2)
    if not under_submitit() or not callable(submitit_handler):
        yield
        return

    def handler(signum, _frame) -> None:
        if stop.fitting:
            if stop.signum is None:
                stop.signum = signum
            return
        raise RunRequeued(signum)

    signal.signal(signal.SIGUSR2, handler)
    try:
        yield
    except RunRequeued as e:
        signal.signal(signal.SIGUSR2, submitit_handler)
        log.warning("%s: the run stays RUNNING, its job is requeued", e)
        try:
            submitit_handler(signal.SIGUSR2, None)  # rank 0 requeues and exits (SystemExit)
        except Exception as refused:  # submitit's UncompletedJobError, or `scontrol requeue` failing
            log.error("the job is not requeued: %s", refused)
            if e.run_id:
                _end_refused(e.run_id, str(refused))
            raise RunKilled(signal.SIGUSR2) from refused
        raise SystemExit(-1) from None  # the other ranks: rank 0 requeues the whole job
    finally:
        if signal.getsignal(signal.SIGUSR2) is handler:
            signal.signal(signal.SIGUSR2, submitit_handler)


def leave_running(run_id: str, stopped: RunRequeued) -> None:
    """The run's owner, on `RunRequeued`: the run stays RUNNING, tagged `requeued` (how many times)."""
    from mnist_pipeline.tracking import runs

    runs.set_tag(run_id, "requeued", str(int(os.environ.get("SLURM_RESTART_COUNT", 0)) + 1))
    stopped.run_id = run_id


def _end_refused(run_id: str, why: str) -> None:
    from mnist_pipeline.tracking import runs

    runs.set_tag(run_id, "requeue_refused", " ".join(why.split())[:500])
    runs.end_run(run_id, "KILLED")


def find_requeued(cfg):
    """In a SLURM job that runs again (requeued), the run it started before: a `resume.Resumable`,
    or None (not a requeued job, tracking off, or no such run, or one with another config). A run
    found without a checkpoint to continue from is ended KILLED, and a new run starts."""
    job = slurm_job_id()
    if job is None or not cfg.logger.enabled:
        return None
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.runs import end_run
    from mnist_pipeline.tracking.store import StoreError, experiment_id, use_store
    from mnist_pipeline.training import resume

    client = MlflowClient(use_store(cfg.logger.tracking_uri))
    try:
        experiment = experiment_id(client, cfg.logger.experiment_name)
    except StoreError:
        return None
    found = client.search_runs([experiment], f"tags.{SLURM_JOB_TAG} = '{job}'",
                               order_by=["attributes.start_time DESC"], max_results=20)
    parent = os.environ.get(PARENT_ENV)
    found = [r for r in found if parent is None or r.data.tags.get("mlflow.parentRunId") == parent]
    # Restarted: the job's earlier run is over whatever its status says. Not restarted: only a run
    # this job stopped to be requeued (two trainings in one allocation must never take each other's run).
    restarted = int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0
    run = next((r for r in found if (restarted and r.info.status in resume.RESUMABLE)
                or (r.info.status == "RUNNING" and "requeued" in r.data.tags)), None)
    if run is None:
        if restarted:
            log.warning("job %s was restarted but has no run to continue: a new run starts", job)
        return None
    if "diverged_at_step" in run.data.tags:
        return None
    checkpoint = Path(run.data.tags.get("output_dir", "/nonexistent")) / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        log.warning("run %s of job %s has no checkpoint to continue from: it ends KILLED, a new run starts",
                    run.info.run_id, job)
        if run.info.status == "RUNNING":
            end_run(run.info.run_id, "KILLED")
        return None
    try:
        found_run = resume.load(cfg, run)
    except ConfigError as e:  # another config, or an unreadable checkpoint: not this job's run to continue
        log.warning("job %s does not continue run %s (%s): a new run starts", job, run.info.run_id, e)
        return None
    log.warning("job %s was requeued: continuing run %s from step %d", job, run.info.run_id, found_run.step)
    return found_run
