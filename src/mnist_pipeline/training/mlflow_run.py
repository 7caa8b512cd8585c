"""The MLflow run of one training job: opened (created, continued when resuming, or attached to a
DDP launcher's run) and ended with the status only this process knows: FINISHED, FAILED (an
exception; a diverged loss also gets the tag `diverged_at_step`), KILLED (SIGINT/SIGTERM), or left
RUNNING for a requeued SLURM job to continue. With its tracking server away at the end, the status
is kept with the run's other unsent records (`tracking.spool`): TrackingLost."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from omegaconf import DictConfig


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@contextlib.contextmanager
def mlflow_run(cfg: DictConfig, processed_dir: Path, out_dir: Path, extra_params: dict, resumed=None,
               tags: dict[str, str] | None = None):
    """The run this process records into, or None (tracking off, or not global rank 0); `tags`
    (what may change on resume, such as the device) are set when it is created or reopened.

    A run this process created is ended here: FINISHED, FAILED (an exception; a diverged loss also
    gets the tag `diverged_at_step`) or KILLED (SIGINT/SIGTERM), or left RUNNING for the requeued
    job (SIGUSR2 under SLURM). A run created by a DDP launcher (`launch.RUN_ID_ENV`) is only written
    to: the launcher ends it. A resumed run first sends what its folder kept from a lost server.
    While the run is open, the machine's use is recorded into it (`tracking.system_metrics`).
    """
    from mnist_pipeline.model.module import DivergedError
    from mnist_pipeline.tracking import outcome, runs
    from mnist_pipeline.tracking.spool import TrackingLost
    from mnist_pipeline.tracking.store import use_store
    from mnist_pipeline.tracking.sync import sync
    from mnist_pipeline.tracking.system_metrics import system_metrics
    from mnist_pipeline.training import launch, slurm
    from mnist_pipeline.training.stopping import RunKilled

    if not cfg.logger.enabled or launch.global_rank() != 0:
        yield None
        return
    uri = use_store(cfg.logger.tracking_uri)
    attached = os.environ.get(launch.RUN_ID_ENV)
    if resumed is not None:
        run_id = resumed.run_id
        sync(out_dir, uri)
        runs.reopen_run(run_id, resumed.step, tags)
    else:
        run_id = attached or runs.start_run(cfg, processed_dir=processed_dir, out_dir=out_dir,
                                                overrides=hydra_overrides(), extra_params=extra_params, tags=tags)
    status = "FAILED"
    try:
        with system_metrics(None if attached else run_id, cfg, uri, resumed=resumed is not None):
            yield run_id
        status = "FINISHED"
    except slurm.RunRequeued as e:  # SIGUSR2 under SLURM: the requeued job continues this run
        status = None
        slurm.leave_running(run_id, e)
        raise
    except RunKilled:
        status = "KILLED"
        raise
    except DivergedError as e:
        outcome.tag_or_keep(run_id, uri, out_dir, "diverged_at_step", str(e.step))
        raise
    except launch.WorkersFailed:
        step = runs.get_tag(run_id, "diverged_at_step")
        if step is not None:
            raise DivergedError(int(step), float("nan")) from None
        raise
    finally:
        if not attached and status is not None:
            try:
                outcome.end_run(run_id, status, uri, out_dir)
            except TrackingLost as e:
                if status == "FINISHED":
                    raise
                logging.getLogger(__name__).warning("%s", e)
            except Exception as e:  # the store failing too: the run's own error is the one to report
                if status == "FINISHED":
                    raise
                logging.getLogger(__name__).warning("could not mark run %s %s: %s", run_id, status, e)
