"""`mnist runs cleanup`: a run left RUNNING by a SIGKILLed training is marked FAILED
with its last step; runs of other hosts, and of live processes, are never touched."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time

import psutil
import pytest

from mnist_pipeline.tracking.cleanup import cleanup, list_running, main
from support import MNIST, ROOT, tiny_overrides

pytestmark = pytest.mark.timeout(150)


def _wait_for_steps(client, experiment: str, n: int, proc, log, timeout: float = 90):
    """The one run of `experiment` once its train/loss history has `n` steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended early:\n{log.read_text()[-3000:]}"
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= n:
            return runs[0]
        time.sleep(0.3)
    raise AssertionError(f"the training logged fewer than {n} steps in {timeout} s")


def test_cleanup_marks_only_runs_whose_process_is_gone(processed, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.runs import process_tags

    store = tmp_path / "mlruns"
    uri = f"sqlite:///{store}/mlflow.db"
    client = MlflowClient(uri)

    # A real training, SIGKILLed mid-run: nothing in it can end its run, which stays RUNNING.
    log = tmp_path / "train.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [*MNIST, "train", *tiny_overrides(processed, store, tmp_path / "out"),
             "trainer.max_steps=100000", "logger.flush_every_n_steps=1"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        killed = _wait_for_steps(client, "mnist", 3, proc, log)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    killed_id = killed.info.run_id
    assert client.get_run(killed_id).info.status == "RUNNING"
    steps = [m.step for m in client.get_metric_history(killed_id, "train/loss")]
    last = max(steps)

    experiment_id = killed.info.experiment_id
    me = process_tags()
    # Another host's run (a shared server): its PID means nothing here, even a dead one.
    other_host = client.create_run(experiment_id, run_name="other host",
                                   tags={**me, "host": "some-other-host", "pid": str(proc.pid)}).info.run_id
    # A live process: this test's own.
    alive = client.create_run(experiment_id, run_name="alive", tags=me).info.run_id
    # This test's PID, but another start time: the PID was reused, the run's process is gone.
    reused = client.create_run(
        experiment_id, run_name="pid reused",
        tags={**me, "pid_start_time": f"{psutil.Process().create_time() - 3600:.2f}"}).info.run_id
    # Untagged (made by some other tool): cannot tell, left alone.
    untagged = client.create_run(experiment_id, run_name="untagged").info.run_id

    dry = io.StringIO()
    assert sorted(cleanup(uri, "mnist", dry_run=True, out=dry)) == sorted([killed_id, reused])
    assert f"would mark FAILED: {killed.info.run_name} ({killed_id})" in dry.getvalue()
    assert all(client.get_run(r).info.status == "RUNNING" for r in (killed_id, other_host, alive, reused, untagged))

    main(["cleanup", "--tracking-uri", uri])  # `mnist runs cleanup --tracking-uri URI`
    out = capsys.readouterr().out
    assert f"marked FAILED: {killed.info.run_name} ({killed_id}): no process {proc.pid}, last step {last}" in out
    assert f"marked FAILED: pid reused ({reused}): pid {os.getpid()} now belongs to another process, " \
           "no step logged" in out
    assert f"skipped: other host ({other_host}): runs on host some-other-host" in out
    assert f"skipped: alive ({alive}): process {os.getpid()} is alive" in out
    assert f"skipped: untagged ({untagged}): no host/pid tags" in out

    dead = client.get_run(killed_id)
    assert dead.info.status == "FAILED"
    assert dead.data.tags["cleanup"] == "process gone" and dead.data.tags["last_step"] == str(last)
    assert dead.info.end_time == max(m.timestamp for m in client.get_metric_history(killed_id, "train/loss"))
    assert client.get_run(reused).info.status == "FAILED"
    for run_id in (other_host, alive, untagged):
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING" and "cleanup" not in run.data.tags

    listed = io.StringIO()
    list_running(uri, "mnist", out=listed)
    assert killed_id not in listed.getvalue() and f"ok    alive ({alive})" in listed.getvalue()


def test_cleanup_without_a_store_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["cleanup", "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db"])
    assert "no MLflow store" in str(exit_.value.code)
    assert not (tmp_path / "none").exists()
