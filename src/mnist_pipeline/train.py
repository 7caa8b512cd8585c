"""Train the tutorial's CNN: `python -m mnist_pipeline.train [key=value ...]` (Hydra overrides).

The story, top to bottom: check the config and the data (a bad setting stops here, before any
MLflow run exists), build data, model and trainer from the config, open the MLflow run, fit with a
validation every `trainer.val_check_interval` steps, evaluate the whole val split and the test split
with the best checkpoint, then write reports and log artifacts and the model. The run ends FINISHED,
FAILED (an exception, or a diverged loss: tag `diverged_at_step`) or KILLED (SIGINT/SIGTERM).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mnist_pipeline.config import (ConfigError, config_source, project_root, refresh_params_file, reports_dir,
                                   resolve_path)
from mnist_pipeline.models import SELECTION


def _positive(cfg: DictConfig, key: str, kind: type = int) -> None:
    value = OmegaConf.select(cfg, key)
    ok_type = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value) or value <= 0:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{key} must be {what} > 0, got {value!r}: e.g. {key}={'64' if kind is int else '0.15'}")


def check_config(cfg: DictConfig) -> None:
    """Every setting a typo can break, checked before any work is done."""
    _positive(cfg, "optimizer.lr", float)
    for key in ("data.batch_size", "data.val_subset_size", "data.eval_batch_size", "trainer.max_steps",
                "trainer.val_check_interval"):
        _positive(cfg, key)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be a whole number, got {cfg.seed!r}")
    devices, nodes = cfg.trainer.devices, cfg.trainer.num_nodes
    if isinstance(devices, int) and isinstance(nodes, int) and cfg.data.batch_size % (devices * nodes):
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} does not split evenly across {devices * nodes} "
            "processes: make it a multiple of trainer.devices * trainer.num_nodes"
        )
    if cfg.ckpt_path is not None and not resolve_path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    if cfg.resume is not None and cfg.ckpt_path is not None:
        raise ConfigError("give resume= (continue a run) or ckpt_path= (start from weights), not both")
    if cfg.resume is not None and not cfg.logger.enabled:
        raise ConfigError("resume= finds the run in MLflow: it needs logger=mlflow")


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


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _quiet_framework_noise() -> None:
    """Drop Lightning's advertising tip and a deprecation warning from its own internals."""
    import logging
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip")
    )
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@contextlib.contextmanager
def mlflow_run(cfg: DictConfig, processed_dir: Path, out_dir: Path, extra_params: dict, resumed=None):
    """The run this process records into, or None (tracking off, or not global rank 0).

    A run this process created is ended here: FINISHED, FAILED (an exception; a diverged loss also
    gets the tag `diverged_at_step`) or KILLED (SIGINT/SIGTERM). A run created by a DDP launcher
    (`launch.RUN_ID_ENV`) is only written to: the launcher ends it.
    """
    from mnist_pipeline import launch, tracking
    from mnist_pipeline.module import DivergedError
    from mnist_pipeline.stopping import RunKilled

    if not cfg.logger.enabled or launch.global_rank() != 0:
        yield None
        return
    tracking.use_store(cfg.logger.tracking_uri)
    attached = os.environ.get(launch.RUN_ID_ENV)
    if resumed is not None:
        run_id = resumed.run_id
        tracking.reopen_run(run_id, resumed.step)
    else:
        run_id = attached or tracking.start_run(cfg, processed_dir=processed_dir, out_dir=out_dir,
                                                overrides=hydra_overrides(), extra_params=extra_params)
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except RunKilled:
        status = "KILLED"
        raise
    except DivergedError as e:
        tracking.set_tag(run_id, "diverged_at_step", str(e.step))
        raise
    except launch.WorkersFailed:
        step = tracking.get_tag(run_id, "diverged_at_step")
        if step is not None:
            raise DivergedError(int(step), float("nan")) from None
        raise
    finally:
        if not attached:
            tracking.end_run(run_id, status)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, evaluate and record one run; returns the end-of-run metrics (val_full/*, test/*)."""
    train_called = time.perf_counter()
    check_config(cfg)
    _quiet_framework_noise()
    from mnist_pipeline import launch
    from mnist_pipeline.processed import check_processed

    processed_dir = resolve_path(cfg.data.processed_dir)
    check_processed(processed_dir)
    world_size, local_procs = launch.layout(cfg)
    if world_size > 1 and cfg.trainer.num_nodes > 1 and not launch.under_launcher():
        raise ConfigError(f"trainer.num_nodes={cfg.trainer.num_nodes} needs one launcher per node: "
                          "torchrun --nnodes=... or srun (see README, Scaling out)")
    threads = cfg.get("threads") or max(1, len(os.sched_getaffinity(0)) // (local_procs * parallel_jobs()))
    extra_params = {"world_size": world_size, "threads": threads}
    resumed = None
    if cfg.resume is not None:
        from mnist_pipeline import resume

        resumed = resume.find(cfg)
    resume_ckpt = os.environ.get(launch.RESUME_ENV) or (resumed and str(resumed.checkpoint))
    weights = None
    if cfg.ckpt_path is not None:
        from hydra.utils import instantiate

        from mnist_pipeline.checkpoints import read_weights

        weights = read_weights(resolve_path(cfg.ckpt_path), instantiate(cfg.model))
    out_dir = resumed.out_dir if resumed else output_dir(cfg)

    from mnist_pipeline.stopping import StopAtStepBoundary, signals_end_runs

    stop = StopAtStepBoundary()
    with signals_end_runs(stop), mlflow_run(cfg, processed_dir, out_dir, extra_params, resumed) as run_id:
        if local_procs > 1 and not launch.under_launcher():
            return launch.run_workers(cfg, out_dir, local_procs,
                                      env={launch.RUN_ID_ENV: run_id or "", launch.RESUME_ENV: resume_ckpt or ""})
        return fit_and_evaluate(cfg, processed_dir, out_dir, run_id, threads, stop, resume_ckpt, weights, train_called)


def fit_and_evaluate(cfg: DictConfig, processed_dir: Path, out_dir: Path, run_id: str | None, threads: int,
                     stop, resume_ckpt: str | None, weights: dict | None,
                     train_called: float) -> dict[str, float]:
    """This process's part of the run: fit (from `resume_ckpt` when resuming, or starting from the
    checkpoint `weights`), evaluate the best checkpoint, write reports (rank 0)."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from mnist_pipeline import diagnostics
    from mnist_pipeline import reports, tracking
    from mnist_pipeline.checkpoints import AtomicCheckpointIO
    from mnist_pipeline.mlflow_logger import attach_logger
    from mnist_pipeline.module import MNISTClassifier
    from mnist_pipeline.perf import PhaseTimes
    from mnist_pipeline.stopping import RunKilled
    from mnist_pipeline.progress import StepProgressBar

    torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, processed_dir=str(processed_dir), seed=cfg.seed)
    model = MNISTClassifier(net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer),
                            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None)
    if weights is not None:
        model.net.load_state_dict(weights)

    history = reports.HistoryLogger()
    phases = PhaseTimes(train_called)
    loggers: list = [history]
    if run_id:
        loggers.append(attach_logger(cfg, run_id))
    # `best` by val/acc, and `last` at every periodic validation (Lightning's save_last only saves
    # alongside a new best) and when a run stops on an exception or a signal.
    best = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor="val/acc", mode="max")
    last = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           save_on_exception=True)
    trainer = instantiate(
        cfg.trainer,
        logger=loggers,
        callbacks=[best, last, reports.HistoryInCheckpoint(history), stop, phases, StepProgressBar()],
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,   # the datamodule slices each global batch itself
        check_val_every_n_epoch=None,    # validate every val_check_interval steps, across epochs
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
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
    if trainer.is_global_zero:
        into = reports_dir(cfg, out_dir)
        files = reports.write_reports(into, metrics, history.history)
        files += diagnostics.write_diagnostics(into, model.net, *datamodule.splits["test"])
        if run_id:
            tracking.log_outcome(run_id, cfg, model.net, files, [best.best_model_path, last.best_model_path])
            timings = phases.metrics(trainer, datamodule.train_batches.seconds, time.perf_counter())
            tracking.log_metrics(run_id, timings, trainer.global_step)
    return metrics


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path=config_source()[0], config_name=config_source()[1], version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Returns val_full/acc, the selection metric (what sweepers such as Optuna maximise). In a
    sweep, a failed point is recorded FAILED and returns NaN, so the other points still run."""
    import logging

    from mnist_pipeline.launch import WorkersFailed
    from mnist_pipeline.module import DivergedError
    from mnist_pipeline.stopping import RunKilled

    try:
        return train(cfg)[SELECTION]
    except RunKilled as e:
        print(f"\n{e}: run marked KILLED", file=sys.stderr)
        sys.exit(128 + e.signum)
    except (ConfigError, DivergedError, WorkersFailed) as e:
        if not _in_multirun():
            sys.exit(f"error: {e}")
        logging.getLogger(__name__).error("error: %s", e)
    except Exception:
        if not _in_multirun():
            raise
        logging.getLogger(__name__).exception("this sweep point failed")
    return float("nan")


if __name__ == "__main__":
    from mnist_pipeline.launch import global_rank

    if global_rank() > 0:  # a DDP worker other than rank 0: no output folder, no log file of its own
        sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    else:
        refresh_params_file()
        from mnist_pipeline.resume import hydra_dir_override

        try:
            sys.argv += hydra_dir_override(sys.argv[1:])
        except ConfigError as e:
            sys.exit(f"error: {e}")
    main()
