"""Train the tutorial's CNN: `mnist train [key=value ...]`, `mnist train -m ...` for a sweep.

The story, top to bottom: check the config and the data (a bad setting stops here, before any
MLflow run exists), build data, model and trainer from the config, open the MLflow run, fit with a
validation every `trainer.val_check_interval` steps, evaluate the whole val split and the test split
with the best checkpoint, then write reports and log artifacts and the model. The run ends FINISHED,
FAILED (an exception, or a diverged loss: tag `diverged_at_step`) or KILLED (SIGINT/SIGTERM).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_pipeline.config import (
    ConfigError,
    config_source,
    project_root,
    reports_dir,
    resolve_path,
)
from mnist_pipeline.tracking.runs import SELECTION
from mnist_pipeline.training.checks import check_config, check_data, check_tracking, check_writable


def output_dir(cfg: DictConfig) -> Path:
    """`paths.output_dir` if set, else the Hydra job's folder, else a fresh folder under outputs/."""
    if cfg.paths.get("output_dir"):
        return resolve_path(cfg.paths.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return project_root() / "outputs" / time.strftime("%Y-%m-%d/%H-%M-%S") / f"run-{os.getpid()}"


def parallel_jobs() -> int:
    """Sweep jobs sharing this machine at once (hydra/launcher=joblib n_jobs), to share its cores."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    return n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else 1


def _quiet_framework_noise() -> None:
    """Drop Lightning's advertising tip, a deprecation warning from its own internals and its hint to
    use `srun` wherever SLURM is installed."""
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip")
    )
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # On any machine with SLURM installed: jobs go through hydra/launcher=slurm, not `srun` by hand.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, evaluate and record one run; returns the end-of-run metrics (val_full/*, test/*)."""
    train_called = time.perf_counter()
    check_config(cfg)
    _quiet_framework_noise()
    from mnist_pipeline.training import launch

    processed_dir = resolve_path(cfg.data.processed_dir)
    check_data(cfg, processed_dir)
    if launch.global_rank() == 0:
        check_tracking(cfg)
    world_size, local_procs = launch.layout(cfg)
    if world_size > 1 and cfg.trainer.num_nodes > 1 and not launch.under_launcher():
        raise ConfigError(f"trainer.num_nodes={cfg.trainer.num_nodes} needs one launcher per node: "
                          "torchrun --nnodes=... or srun (see README, Scaling out)")
    threads = cfg.get("threads") or max(1, len(os.sched_getaffinity(0)) // (local_procs * parallel_jobs()))
    extra_params = {"world_size": world_size, "threads": threads}
    resumed = None
    if cfg.resume is not None:
        from mnist_pipeline.training import resume

        resumed = resume.find(cfg)
    elif "SLURM_JOB_ID" in os.environ:  # a requeued SLURM job continues its own run
        from mnist_pipeline.training import slurm

        resumed = slurm.find_requeued(cfg)
    resume_ckpt = os.environ.get(launch.RESUME_ENV) or (resumed and str(resumed.checkpoint))
    weights = None
    if cfg.ckpt_path is not None:
        from hydra.utils import instantiate

        from mnist_pipeline.training.checkpoints import read_weights

        weights = read_weights(resolve_path(cfg.ckpt_path), instantiate(cfg.model))
    out_dir = resumed.out_dir if resumed else output_dir(cfg)
    if launch.global_rank() == 0:  # the only process that writes there
        check_writable("paths.output_dir" if cfg.paths.get("output_dir") else "hydra.run.dir", out_dir)
        check_writable("paths.reports_dir", reports_dir(cfg, out_dir))

    from mnist_pipeline.training.gpu_slots import device_for
    from mnist_pipeline.training.mlflow_run import mlflow_run
    from mnist_pipeline.training.slurm import requeue_on_usr2, step_boundary_stop
    from mnist_pipeline.training.stopping import signals_end_runs

    stop = step_boundary_stop()
    # requeue_on_usr2 outermost: submitit's requeue (which SIGTERMs the job) runs once ours is gone
    with requeue_on_usr2(stop), signals_end_runs(stop), device_for(cfg) as device, \
            mlflow_run(cfg, processed_dir, out_dir, extra_params, resumed, tags={"device": device.tag}) as run_id:
        if local_procs > 1 and not launch.under_launcher():
            metrics = launch.run_workers(cfg, out_dir, local_procs,
                                         env={launch.RUN_ID_ENV: run_id or "", launch.RESUME_ENV: resume_ckpt or ""})
        else:
            metrics = fit_and_evaluate(cfg, processed_dir, out_dir, run_id, threads, stop, resume_ckpt, weights,
                                       train_called, device.devices)
    return Outcome(metrics, run_id=run_id, out_dir=out_dir)


class Outcome(dict):
    """The end-of-run metrics (val_full/*, test/*), and where the run went."""

    def __init__(self, metrics: dict, run_id: str | None = None, out_dir: Path | None = None) -> None:
        super().__init__(metrics)
        self.run_id, self.out_dir = run_id, out_dir


def fit_and_evaluate(cfg: DictConfig, processed_dir: Path, out_dir: Path, run_id: str | None, threads: int,
                     stop, resume_ckpt: str | None, weights: dict | None,
                     train_called: float, devices: list[int] | None = None) -> dict[str, float]:
    """This process's part of the run: fit (from `resume_ckpt` when resuming, or starting from the
    checkpoint `weights`) on `devices` (None: the config's), evaluate the best checkpoint, write
    reports (rank 0)."""
    from concurrent.futures import ThreadPoolExecutor

    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from mnist_pipeline.model.architectures import record
    from mnist_pipeline.model.module import MNISTClassifier
    from mnist_pipeline.tracking.lightning_logger import attach_logger
    from mnist_pipeline.tracking.logged_model import log_model
    from mnist_pipeline.tracking.outcome import EndOfRun, send_or_keep
    from mnist_pipeline.training import diagnostics, reports
    from mnist_pipeline.training.checkpoints import AtomicCheckpointIO
    from mnist_pipeline.training.perf import PhaseTimes
    from mnist_pipeline.training.progress import progress_callback
    from mnist_pipeline.training.pruning import median_pruning
    from mnist_pipeline.training.slurm import trainer_plugins
    from mnist_pipeline.training.stopping import RunKilled

    torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, processed_dir=str(processed_dir), seed=cfg.seed)
    model = MNISTClassifier(net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer),
                            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
                            architecture=record(cfg.model))
    if weights is not None:
        model.net.load_state_dict(weights)

    history = reports.HistoryLogger()
    phases = PhaseTimes(train_called)
    loggers: list = [history]
    if run_id:
        loggers.append(attach_logger(cfg, run_id, out_dir))
    pruning = median_pruning(cfg, run_id, loggers[-1] if run_id else None)  # sweep.prune=median
    # `best` by val/acc, and `last` at every periodic validation (Lightning's save_last only saves
    # alongside a new best) and when a run stops on an exception or a signal.
    best = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor="val/acc", mode="max")
    last = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           save_on_exception=True)
    progress, bars = progress_callback(cfg.get("progress_every_n_steps"), cfg.trainer.max_steps)
    trainer = instantiate(
        cfg.trainer,
        logger=loggers,
        callbacks=[best, last, reports.HistoryInCheckpoint(history), stop, phases, progress,
                   *([pruning] if pruning else [])],
        enable_progress_bar=bars,
        plugins=[AtomicCheckpointIO(), *trainer_plugins()],
        use_distributed_sampler=False,   # the datamodule slices each global batch itself
        check_val_every_n_epoch=None,    # validate every val_check_interval steps, across epochs
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
        **({"devices": devices} if devices is not None else {}),  # this job's own GPU (gpu_slots.py)
    )
    # The objects alive now (the libraries', the config's, the model's: ~0.5-1 million) outlive the
    # fit. Frozen, Python's cyclic collector stops rescanning them: a full pass over them costs
    # ~0.5 s, a sixth of an epoch, whenever it lands inside the training loop.
    gc.freeze()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_ckpt, weights_only=True)
    except SIGTERMException:  # Lightning's own SIGTERM stop, which would exit with code 0
        raise RunKilled(signal.SIGTERM) from None
    finally:
        gc.unfreeze()
    trainer.test(model, datamodule=datamodule, ckpt_path=best.best_model_path or None, verbose=False,
                 weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.split("/")[0] in ("val_full", "test")}
    if pruning and pruning.pruned_at is not None:
        metrics["pruned_at_step"] = pruning.pruned_at  # in metrics.json too: a DDP launcher reads it there
    logging_model = bool(run_id) and trainer.is_global_zero
    lost = logging_model and loggers[-1].lost  # the server is away: the run's records are kept (spool)
    if trainer.is_global_zero:
        # The model's export and logging (~1 s, most of it what the first torch.export and MLflow's
        # first requirements check cost in a process) run beside the reports and their pictures.
        with ThreadPoolExecutor(1) as beside:
            model_logged = (beside.submit(log_model, run_id, model.net, record(cfg.model))
                            if logging_model and not lost else None)
            into = reports_dir(cfg, out_dir)
            files = reports.write_reports(into, metrics, history.history)
            files += diagnostics.write_diagnostics(into, model.net, *datamodule.splits["test"])
    if logging_model:
        timings = phases.metrics(trainer, datamodule.train_batches.seconds, time.perf_counter())
        if pruning:
            timings["perf/pruning_s"] = pruning.seconds
        end = EndOfRun(files, [best.best_model_path, last.best_model_path], timings, trainer.global_step,
                       {"pruned_at_step": str(pruning.pruned_at)} if pruning and pruning.pruned_at is not None else {})
        send_or_keep(run_id, cfg, out_dir, end, model_logged, best.best_model_path, lost)
    return metrics


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path=config_source()[0], config_name=config_source()[1], version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Returns val_full/acc, the selection metric (what sweepers such as Optuna maximise). In a
    sweep, a failed point is recorded FAILED and returns NaN, so the other points still run. A
    single run ends with a summary, or with one `error:` line (a traceback goes to its log file)."""
    from mnist_pipeline.model.module import DivergedError
    from mnist_pipeline.tracking.spool import TrackingLost
    from mnist_pipeline.training import console
    from mnist_pipeline.training.launch import WorkersFailed, global_rank
    from mnist_pipeline.training.stopping import RunKilled

    try:
        outcome = train(cfg)
    except RunKilled as e:
        print(f"\n{e}: run marked KILLED", file=sys.stderr)
        sys.exit(128 + e.signum)
    except (ConfigError, DivergedError, WorkersFailed, TrackingLost) as e:
        if not _in_multirun():
            sys.exit(f"error: {e}")
        logging.getLogger(__name__).error("error: %s", e)
        return float("nan")
    except Exception as e:
        if not _in_multirun():
            if global_rank() == 0:
                sys.exit(console.failure_line(e))
            raise
        logging.getLogger(__name__).exception("this sweep point failed")
        return float("nan")
    if not _in_multirun() and global_rank() == 0:
        print(console.summary(outcome, outcome.out_dir, *_run_of(cfg, outcome.run_id)), flush=True)
    if "pruned_at_step" in outcome:
        from mnist_pipeline.training.pruning import Pruned

        return Pruned(outcome[SELECTION], int(outcome["pruned_at_step"]))
    return outcome[SELECTION]


def _run_of(cfg: DictConfig, run_id: str | None) -> tuple:
    """(the run, the store's URI), or (None, None) without tracking."""
    if not run_id:
        return None, None
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.store import tracking_uri

    uri = tracking_uri(cfg.logger.tracking_uri)
    return MlflowClient(uri).get_run(run_id), uri
