"""Concurrent writers: 8 training processes started at once against a SQLite store and experiment
that do not exist yet all finish, each with its whole metric history: no "database is locked", no
duplicate-experiment error, no lost run. On a server (the scale-out path, where no file lock can
help), 8 threads create the experiment at the same moment here; 8 trainings at once against the
PostgreSQL-backed team server are in tests/system/test_team_server.py (make test-system)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import MNIST, ROOT, metric_steps
from support.servers import start_ui, stop_ui

pytestmark = pytest.mark.timeout(240)

N = 8
STEPS = 10
FORBIDDEN = ("database is locked", "RESOURCE_ALREADY_EXISTS", "already exists", "Traceback")


def _train_all(processed: Path, uri: str, tmp: Path, timeout: float = 180) -> list[tuple[int, int, str]]:
    """Start N trainings at once; (pid, exit code, stderr) of each."""
    procs = []
    try:
        for i in range(N):
            procs.append(subprocess.Popen(
                [*MNIST, "train", f"paths.processed_dir={processed}",
                 f"logger.tracking_uri={uri}", f"paths.output_dir={tmp / f'out{i}'}",
                 "data.val_subset_size=100", "data.eval_batch_size=100", f"trainer.max_steps={STEPS}",
                 "logger.flush_every_n_steps=1",  # a write to the store at every step: real contention
                 f"seed={i}", "+threads=1"],  # 8 processes share the cores: 1 thread each
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + timeout
        results = []
        for proc in procs:
            _, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.pid, proc.returncode, stderr))
        return results
    finally:
        for proc in procs:  # a hang: stop every training this test started, by PID
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _check_store(uri: str, results) -> None:
    from mlflow.tracking import MlflowClient

    for pid, code, stderr in results:
        assert code == 0, f"training {pid} failed:\n{stderr[-3000:]}"
        for bad in FORBIDDEN:
            assert bad not in stderr, f"training {pid}: {bad!r}\n{stderr[-3000:]}"
    client = MlflowClient(uri)
    experiments = [e for e in client.search_experiments() if e.name == "mnist"]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id], max_results=100)
    assert sorted(int(r.data.tags["pid"]) for r in runs) == sorted(pid for pid, _, _ in results), \
        "one run per process, none lost, none doubled"
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name

        def steps(key: str) -> list[int]:
            return metric_steps(client, run.info.run_id, key)

        assert steps("train/loss") == list(range(1, STEPS + 1)), run.info.run_name
        assert steps("train/acc") == list(range(1, STEPS + 1)), run.info.run_name
        assert steps("val/acc") == [5, 10], run.info.run_name
        assert steps("test/acc") == [STEPS], run.info.run_name
        assert {"checkpoints", "reports", "config.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_eight_trainings_at_once_into_a_fresh_sqlite_store(processed, tmp_path):
    store = tmp_path / "mlruns"  # neither the folder, the database nor the experiment exist yet
    uri = f"sqlite:///{store}/mlflow.db"
    _check_store(uri, _train_all(processed, uri, tmp_path))


def test_eight_threads_create_the_experiment_at_once_on_a_fresh_mlflow_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the server keeps proxied artifacts in ./mlartifacts: here, not in the repo
    proc, base = start_ui(tmp_path / "server-store")
    try:
        _create_experiment_at_the_same_moment(base)
    finally:
        stop_ui(proc)


def _create_experiment_at_the_same_moment(uri: str) -> None:
    """Trainings rarely look the experiment up at the very same moment; here 8 threads do: all must
    get the one experiment, none an "already exists" error (no file lock helps on a server)."""
    from mnist_pipeline.tracking.store import ensure_experiment

    barrier, ids, errors = threading.Barrier(N), [], []

    def create() -> None:
        barrier.wait(timeout=30)
        try:
            ids.append(ensure_experiment(uri, "race"))
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(repr(e)[:500])

    threads = [threading.Thread(target=create) for _ in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(ids) == N and len(set(ids)) == 1
