"""Bad sweep points stopped early (`sweep.prune=median`).

At each validation after the warm-up, a point stops there when its val/acc is below the median of
the sweep's other points at the same step, once at least `sweep.prune_min_points` of them reported
that step. The other points' values come from their MLflow runs (the children of the sweep's parent
run, or every run of the Optuna study), so pruning works with every launcher, SLURM included; to be
seen by the others, a point sends each validation's values to MLflow as soon as they are logged.

A pruned point ends like any other, FINISHED, evaluated with its best checkpoint so far, with the
tag `pruned_at_step`. It returns `Pruned` to Hydra: a float (the selection metric), which every
sweeper understands, that also says where it stopped (the Optuna sweeper marks its trial PRUNED).
"""

from __future__ import annotations

import os
import statistics
import time

from pytorch_lightning.callbacks import Callback

from mnist_pipeline.tracking.runs import PARENT_ENV

CURVE = "val/acc"


class Pruned(float):
    """The value a pruned sweep point returns to Hydra: a float, with `at_step`."""

    def __new__(cls, value: float, at_step: int) -> Pruned:
        pruned = super().__new__(cls, value)
        pruned.at_step = at_step
        return pruned

    def __reduce__(self):  # joblib and submitit send it back to the sweeper pickled
        return Pruned, (float(self), self.at_step)


class PeerCurves:
    """The val/acc curves of a sweep's other points, read from MLflow. A finished point's curve is
    read once; a running one's again only when it lacks the step asked for."""

    def __init__(self, client, experiment_id: str, run_id: str, *, parent: str | None, study: str | None) -> None:
        self.client, self.experiment_id, self.run_id = client, experiment_id, run_id
        # An Optuna study spans the sweeps of several processes (one parent run each).
        self.query = f"tags.optuna_study = '{study}'" if study else f"tags.mlflow.parentRunId = '{parent}'"
        self.curves: dict[str, dict[int, float]] = {}
        self.finished: set[str] = set()

    def values_at(self, step: int) -> list[float]:
        values = []
        for run in self.client.search_runs([self.experiment_id], self.query, max_results=10000):
            run_id = run.info.run_id
            if run_id == self.run_id:
                continue
            curve = self.curves.get(run_id)
            if curve is None or (step not in curve and run_id not in self.finished):
                curve = {m.step: m.value for m in self.client.get_metric_history(run_id, CURVE)}
                self.curves[run_id] = curve
                if run.info.status != "RUNNING":
                    self.finished.add(run_id)
            if step in curve:
                values.append(curve[step])
        return values


class MedianPruning(Callback):
    """Stops training at a validation where this point is below the other points' median. Rank 0
    decides (it holds the run) and every DDP process stops at that same step."""

    def __init__(self, peers: PeerCurves, logger, warmup: int, min_points: int) -> None:
        self.peers, self.logger = peers, logger
        self.warmup, self.min_points = warmup, min_points
        self.pruned_at: int | None = None
        self.seconds = 0.0  # flushing and reading MLflow: what pruning costs the run

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.pruned_at is not None:
            return
        started = time.perf_counter()
        step = trainer.global_step
        stop = False
        if trainer.is_global_zero:
            if self.logger is not None:
                self.logger.flush()  # the others judge this point by what MLflow holds
            value = trainer.callback_metrics.get(CURVE)
            if step >= self.warmup and value is not None:
                others = self.peers.values_at(step)
                stop = len(others) >= self.min_points and float(value) < statistics.median(others)
        stop = trainer.strategy.broadcast(stop, src=0)
        if stop:
            self.pruned_at = step
            trainer.should_stop = True
        self.seconds += time.perf_counter() - started


def median_pruning(cfg, run_id: str | None, logger) -> MedianPruning | None:
    """The callback `cfg.sweep` asks for, or None (off, or no run to compare: tracking off, not rank 0)."""
    control = cfg.get("sweep") or {}
    if control.get("prune") != "median":
        return None
    warmup = control.get("prune_warmup")
    warmup = cfg.trainer.max_steps // 4 if warmup is None else warmup
    peers = None
    if run_id:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        run = client.get_run(run_id)
        parent = os.environ.get(PARENT_ENV) or run.data.tags.get("mlflow.parentRunId")
        study = control.get("optuna_study")
        if parent or study:
            peers = PeerCurves(client, run.info.experiment_id, run_id, parent=parent, study=study)
    # Without peers nothing is compared, and nobody reads this point's values early: no flush.
    return MedianPruning(peers or NoPeers(), logger if peers else None, warmup,
                         int(control.get("prune_min_points") or 2))


class NoPeers:
    """A run with nothing to compare against (not in a sweep), or a process other than rank 0."""

    def values_at(self, step: int) -> list[float]:
        return []
