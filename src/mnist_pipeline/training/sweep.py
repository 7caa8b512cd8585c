"""Hydra callbacks: sweeps (`-m`) as one MLflow parent run with a child run per sweep point, and
when each job starts.

A Hydra callback does the once-per-sweep work in the launching process, before any job starts and
after they all ended: it checks every point's config (a bad key or value stops the sweep before
anything runs), creates the store, the experiment and the parent run (parallel jobs must never
race on creating them), and at the end records on the parent what happened: the swept values (or
Optuna's search space) as params, the best val_full/acc and the number of points, failed points
and pruned points as metrics, the best point's run id as the tag `best_run_id`.
Jobs find the parent through the environment, which joblib's worker processes inherit.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_pipeline.tracking.runs import PARENT_ENV, SWEEP_ENV, SWEPT_KEYS_ENV

_jobs_started: list[float] = []  # wall-clock start of every Hydra job of this process


class JobStart(Callback):
    """Notes when Hydra starts each job in this process (conf/config.yaml's hydra.callbacks)."""

    def on_job_start(self, config: Any = None, **kwargs: Any) -> None:
        _jobs_started.append(time.time())


def job_start_time() -> float:
    """The wall-clock start of this job: its process's start for the first job of the process."""
    if len(_jobs_started) > 1:
        return _jobs_started[-1]
    import psutil

    return psutil.Process().create_time()


def sweep_points(task_overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """Every job's overrides (as Hydra's basic sweeper expands them) and the swept keys."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(task_overrides)
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return jobs, swept


class MLflowSweep(Callback):
    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from mnist_pipeline.config import ConfigError, project_root, resolve_path
        from mnist_pipeline.tracking.runs import git_state, process_tags
        from mnist_pipeline.tracking.store import ensure_experiment, use_store
        from mnist_pipeline.training.checks import check_config, check_data, check_tracking
        from mnist_pipeline.training.optuna_study import check_storage, points_to_check
        from mnist_pipeline.training.slurm import check_launcher

        task = list(config.hydra.overrides.task)
        try:
            check_launcher(config)
            # hparams_search=optuna: points that hold every searched value's ends; else the grid
            jobs, swept = points_to_check(config.hydra, task) or sweep_points(task)
            for job in jobs:
                cfg = compose(config_name=config_name, overrides=job)
                check_config(cfg)
                check_data(cfg, resolve_path(cfg.data.processed_dir))
            check_tracking(cfg)  # every point writes to the same store and experiment
            check_storage(config.hydra, task)  # an Optuna storage that cannot be opened, a study that differs
        except (ConfigError, HydraException, OmegaConfBaseException) as e:
            # Hydra turns a callback's exception into a warning and goes on: stop the sweep here.
            sys.exit(f"error: no sweep point was run: {' '.join(str(e).split())}")
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept)
        if not cfg.logger.enabled:
            return
        uri = use_store(cfg.logger.tracking_uri)
        experiment_id = ensure_experiment(uri, cfg.logger.experiment_name)
        name = f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')} " + " ".join(o for o in task if "," in o or "(" in o)
        from mlflow.tracking import MlflowClient

        run = MlflowClient(uri).create_run(
            experiment_id, run_name=name.strip(),
            tags={"sweep": name.strip(), "swept_keys": ",".join(swept), "hydra_overrides": " ".join(task),
                  **git_state(project_root()), **process_tags()},
        )
        _log_sweep_params(MlflowClient(uri), run.info.run_id, config, task)
        os.environ[PARENT_ENV] = run.info.run_id
        os.environ[SWEEP_ENV] = name.strip()
        os.environ["MLFLOW_TRACKING_URI"] = uri  # every job, in any worker process, uses this store
        print(f"MLflow parent run of this sweep: {name.strip()} ({run.info.run_id})", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = os.environ.pop(PARENT_ENV, None)
        if not parent:
            return
        from mlflow.tracking import MlflowClient

        from mnist_pipeline.tracking.sweep_table import read_sweep

        client = MlflowClient()
        sweep = read_sweep(client, client.get_run(parent))
        failed = [r for r in sweep.points if r.info.status != "FINISHED"]
        _log_sweep_outcome(client, parent, sweep.points, failed)
        client.set_terminated(parent, "FINISHED")
        print(f"\n{sweep.text()}", flush=True)  # what `mnist compare` prints first
        if failed:
            names = ", ".join(r.info.run_name for r in failed)
            print(f"{len(failed)} of {len(sweep.points)} sweep points failed: {names}", flush=True)
        print("pictures, and the sweep in the MLflow UI: mnist compare", flush=True)


def _log_sweep_params(client, parent: str, config: DictConfig, task: list[str]) -> None:
    """The parent run's params: each swept key with its values as given (`0.05,0.15,0.5`), or, for
    an Optuna sweep, its search space (`tag(log, interval(0.01, 1.0))`)."""
    from mlflow.entities import Param

    space = config.hydra.sweeper.get("params") or {}
    swept = {str(k): str(v) for k, v in space.items()}
    for override in task:
        key, _, values = override.partition("=")
        if ("," in values or "(" in values) and not key.startswith("hydra."):
            swept[key.lstrip("+~")] = values
    if swept:
        client.log_batch(parent, params=[Param(k, v[:6000]) for k, v in swept.items()])


def _log_sweep_outcome(client, parent: str, points: list, failed: list) -> None:
    """What the sweep's collapsed row shows: the best val_full/acc and the number of points, failed
    points and pruned points as metrics (and tags, as before), the best point's run id as a tag."""
    import math

    from mlflow.entities import Metric, RunTag

    from mnist_pipeline.tracking.runs import SELECTION

    scored = [r for r in points
              if r.info.status == "FINISHED" and not math.isnan(r.data.metrics.get(SELECTION, math.nan))]
    best = max(scored, key=lambda r: r.data.metrics[SELECTION], default=None)
    counts = {"points": len(points), "failed_points": len(failed),
              "pruned_points": sum("pruned_at_step" in r.data.tags for r in points)}
    now = int(time.time() * 1000)
    metrics = [Metric(f"sweep/{k}", float(v), now, 0) for k, v in counts.items()]
    tags = [RunTag(k, str(v)) for k, v in counts.items() if k != "pruned_points"]
    if best is not None:
        metrics.append(Metric(SELECTION, best.data.metrics[SELECTION], now, 0))
        tags.append(RunTag("best_run_id", best.info.run_id))
    client.log_batch(parent, metrics=metrics, tags=tags)
