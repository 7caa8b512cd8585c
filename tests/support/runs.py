"""Running the pipeline as users do (the `mnist` command, configs composed from conf/) on tiny data,
and reading what it recorded in a test's own MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The environment of a training whose model is one of support/faulty.py's
# (`model._target_=support.faulty.X`): the training process imports it from tests/.
FAULTY = {"PYTHONPATH": f"{ROOT / 'tests'}:{os.environ.get('PYTHONPATH', '')}"}
# `mnist`, as this environment installs it
MNIST = [str(Path(sys.executable).parent / "mnist")]


def tiny_overrides(processed: Path, store: Path, out: Path | None, *extra: str) -> list[str]:
    """Overrides of a tiny run; `out=None` leaves `paths.output_dir` out (Hydra's job folder is used)."""
    return [
        f"paths.processed_dir={processed}",
        f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
        *([f"paths.output_dir={out}"] if out is not None else []),
        "data.val_subset_size=100",
        "data.eval_batch_size=100",
        "trainer.max_steps=23",
        *extra,
    ]


def store_client(store: Path):
    """An MlflowClient over the SQLite store `store/mlflow.db`."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{store}/mlflow.db")


def store_runs(store: Path) -> list:
    """Every run of every experiment in `store` ([] if it has no database yet, without creating one)."""
    if not (store / "mlflow.db").exists():
        return []
    client = store_client(store)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def metric_steps(client, run_id: str, key: str) -> list[int]:
    """The steps at which `key` was logged in the run, in order."""
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def compose(*overrides: str):
    from mnist_pipeline.config import compose as compose_config

    return compose_config(list(overrides))


def mnist(*args: str, timeout: float = 120, env: dict | None = None, cwd: Path = ROOT):
    """`mnist args...` as a user runs it; returns the CompletedProcess."""
    return subprocess.run([*MNIST, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


class TinyRun:
    """One short training run through `train(cfg)`, shared by every test that only reads it."""

    def __init__(self, tmp: Path, processed: Path) -> None:
        from mnist_pipeline.training.train import train

        self.store, self.out, self.reports = tmp / "mlruns", tmp / "out", tmp / "reports"
        self.uri = f"sqlite:///{self.store}/mlflow.db"
        self.cfg = compose(*tiny_overrides(processed, self.store, self.out, f"paths.reports_dir={self.reports}"))
        self.metrics = train(self.cfg)
        self.client = store_client(self.store)
        experiment = self.client.get_experiment_by_name("mnist")
        (self.run,) = self.client.search_runs([experiment.experiment_id])
        self.run_id = self.run.info.run_id

    def steps(self, key: str) -> list[int]:
        return metric_steps(self.client, self.run_id, key)
