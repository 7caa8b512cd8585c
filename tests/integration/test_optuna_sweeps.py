"""One Optuna study, many sweeping processes (`hparams_search=optuna` with a storage): processes
started at once share it, a killed one's study continues, and a storage that cannot be opened stops
the sweep before anything runs."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from support import MNIST, ROOT, mnist, store_client


def _optuna_args(processed: Path, store: Path, sweep_dir: Path, storage: str, n_trials: int, *extra: str) -> list[str]:
    return ["train", "-m", f"paths.processed_dir={processed}", f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
            "data.val_subset_size=100", "data.eval_batch_size=100", "trainer.max_steps=10",
            f"hydra.sweep.dir={sweep_dir}", "hparams_search=optuna", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=shared", f"hydra.sweeper.n_trials={n_trials}", *extra]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """`mnist args` in the background, its output to `log` (a pipe nobody reads would stall it)."""
    with open(log, "w") as out:
        return subprocess.Popen([*MNIST, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)


def _runs(store: Path) -> tuple[dict, list]:
    """({parent run id: parent run}, the trials' runs) of the store's `mnist` experiment."""
    client = store_client(store)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id], max_results=1000)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _study(storage: str):
    return optuna.load_study(study_name="shared", storage=storage)


def test_two_processes_at_once_share_one_study(processed, tmp_path):
    store, storage = tmp_path / "mlruns", f"sqlite:///{tmp_path}/optuna.db"
    logs = [tmp_path / f"process{i}.log" for i in (0, 1)]
    procs = [_start(_optuna_args(processed, store, tmp_path / f"sweep{i}", storage, 4), log)
             for i, log in enumerate(logs)]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
        assert "database is locked" not in log.read_text()
    trials = _study(storage).get_trials()
    assert sorted(t.number for t in trials) == list(range(8)), "8 trials, 8 distinct numbers"
    assert all(t.state == TrialState.COMPLETE for t in trials)
    parents, children = _runs(store)
    assert len(parents) == 2 and len(children) == 8, "one parent run per sweeping process, one run per trial"
    by_number = {int(r.data.tags["optuna_trial"]): r for r in children}
    assert sorted(by_number) == list(range(8)) and {r.data.tags["optuna_study"] for r in children} == {"shared"}
    for trial in trials:
        run = by_number[trial.number]
        parent = parents[run.data.tags["mlflow.parentRunId"]]
        assert run.data.tags["pid"] == parent.data.tags["pid"] == trial.user_attrs["pid"], \
            "each trial's run is under its own process's parent run"
        assert float(run.data.params["optimizer.lr"]) == trial.params["optimizer.lr"]
        assert int(run.data.params["data.batch_size"]) == trial.params["data.batch_size"]
        assert run.data.metrics["val_full/acc"] == trial.value
    spans = {}
    for run in children:
        start, end = spans.get(run.data.tags["pid"], (float("inf"), 0))
        spans[run.data.tags["pid"]] = (min(start, run.info.start_time), max(end, run.info.end_time))
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, "the two processes ran their trials at the same time"
    assert all(p.info.status == "FINISHED" and p.data.tags["points"] == "4" for p in parents.values())


def _wait_for_running_trial(store: Path, number: int, proc: subprocess.Popen, log: Path, timeout: float = 300):
    """Once the run of trial `number` exists and is RUNNING. The store is read with plain sqlite3,
    read-only: an MLflow client opening it while the sweep creates it would race its migration."""
    query = ("select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
             "where t.key = 'optuna_trial' and t.value = ? and r.status = 'RUNNING'")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with contextlib.closing(sqlite3.connect(f"file:{store}/mlflow.db?mode=ro", uri=True, timeout=5)) as db:
                if db.execute(query, (str(number),)).fetchone()[0]:
                    return
        except sqlite3.Error:  # no store yet, or its tables not yet made
            pass
        time.sleep(0.1)
    pytest.fail(f"trial {number} never started:\n{log.read_text()[-3000:]}")


def test_a_killed_sweep_continues_its_study_and_fails_the_trial_it_left_running(processed, tmp_path):
    store, storage = tmp_path / "mlruns", f"sqlite:///{tmp_path}/optuna.db"
    args = _optuna_args(processed, store, tmp_path / "sweep", storage, 2, "trainer.max_steps=40")
    log = tmp_path / "killed.log"
    killed = _start(args, log)
    try:
        _wait_for_running_trial(store, 1, killed, log)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    trials = _study(storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    parents, children = _runs(store)
    before = {r.data.tags["optuna_trial"]: r.info.status for r in children}
    assert before == {"0": "FINISHED", "1": "RUNNING"}, "the kill came mid-trial"
    (killed_parent,) = parents.values()
    assert killed_parent.info.status == "RUNNING"

    restarted = mnist(*args, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    output = restarted.stdout + restarted.stderr
    assert "trial 1 of study 'shared' left RUNNING by a process that is gone" in output
    trials = _study(storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    parents, children = _runs(store)
    after = {}
    for run in children:
        after.setdefault(run.data.tags["optuna_trial"], []).append(run)
    assert sorted(after) == ["0", "1", "2", "3"] and all(len(runs) == 1 for runs in after.values()), \
        "the COMPLETE trial 0 was not trained again"
    (lost,) = after["1"]
    assert lost.info.status == "FAILED" and lost.data.tags["cleanup"] == "process gone"
    assert parents[killed_parent.info.run_id].info.status == "FAILED"
    (new_parent,) = [p for p in parents.values() if p.info.run_id != killed_parent.info.run_id]
    assert new_parent.info.status == "FINISHED"
    assert {after[n][0].data.tags["mlflow.parentRunId"] for n in ("2", "3")} == {new_parent.info.run_id}
    assert after["0"][0].info.status == "FINISHED" and after["0"][0].data.tags["mlflow.parentRunId"] == killed_parent.info.run_id


@pytest.mark.parametrize(("override", "named"), [
    ("hydra.sweeper.storage=sqlite:////nonexistent/dir/x.db", "hydra.sweeper.storage=sqlite:////nonexistent/dir/x.db: cannot open"),
    ("hydra.sweeper.storage=garbage", "hydra.sweeper.storage=garbage: cannot open"),
    ("hydra.sweeper.direction=up", "hydra.sweeper.direction=up: Optuna can only maximize or minimize"),
    ("hydra.sweeper.params={optimizer.lr:'interval(0.1'}", "hydra.sweeper.params.optimizer.lr: cannot search this"),
])
def test_bad_sweeper_settings_stop_the_sweep_before_anything(processed, tmp_path, override, named):
    store, sweep_dir = tmp_path / "mlruns", tmp_path / "sweep"
    result = mnist(*_optuna_args(processed, store, sweep_dir, f"sqlite:///{tmp_path}/optuna.db", 2, override))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], "one line"
    assert result.stderr.startswith(f"error: no sweep point was run: {named}")
    assert not store.exists() and not sweep_dir.exists() and not os.path.exists("/nonexistent")
    assert not (tmp_path / "optuna.db").exists() or override.startswith("hydra.sweeper.storage=")
