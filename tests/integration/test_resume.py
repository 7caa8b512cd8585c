"""Crash and resume: a run killed at any step continues in the same run and ends exactly as an
uninterrupted one; SIGTERM/SIGINT leave a checkpoint and a KILLED run; what cannot be resumed says why."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from support import FAULTY, MNIST, ROOT, compose, metric_steps, mnist, store_client, store_runs, tiny_overrides


def _steps(store: Path, run_id: str, key: str) -> list[int]:
    return metric_steps(store_client(store), run_id, key)


def _args(processed: Path, store: Path, job: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(processed, store, None), "trainer.max_steps=60", "trainer.deterministic=true",
            f"hydra.run.dir={job}", *extra]


def test_sigkill_at_step_37_then_resume_ends_exactly_like_an_uninterrupted_run(processed, tmp_path):
    from mnist_pipeline.training.train import train

    baseline = train(compose(*tiny_overrides(processed, tmp_path / "base", tmp_path / "base_out"),
                             "trainer.max_steps=60", "trainer.deterministic=true"))

    store, job = tmp_path / "mlruns", tmp_path / "job"
    args = _args(processed, store, job, "model._target_=support.faulty.KillsItself")
    crashed = mnist("train", *args, env={**FAULTY, "KILL_AT_CALL": "37"})
    assert crashed.returncode == -signal.SIGKILL
    (run,) = store_runs(store)
    assert run.info.status == "RUNNING", "SIGKILL leaves the run RUNNING"
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 35

    resumed = mnist("train", *[a for a in args if not a.startswith("hydra.run.dir")],
                      "resume=last", env=FAULTY)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stdout + resumed.stderr, "the loader is resumable: no false warning"
    (after,) = store_runs(store)
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["resumed_at_step"] == "35" and after.data.tags["output_dir"] == str(job)
    assert _steps(store, run.info.run_id, "train/loss") == list(range(1, 61)), "no step missing or twice"
    assert _steps(store, run.info.run_id, "val/acc") == list(range(5, 61, 5))
    for key, value in baseline.items():
        assert after.data.metrics[key] == value, key
    val_csv = (job / "plots" / "val.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in val_csv[1:]] == [str(s) for s in range(5, 61, 5)], "the reports' curves are whole"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_writes_a_checkpoint_marks_killed_and_resume_finishes_it(processed, tmp_path, signum):
    store, job = tmp_path / "mlruns", tmp_path / "job"
    args = _args(processed, store, job, "trainer.max_steps=600", "trainer.val_check_interval=25")
    proc = subprocess.Popen([*MNIST, "train", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (job / "checkpoints" / "last.ckpt").exists():  # the first periodic checkpoint (step 25)
        assert time.monotonic() < deadline and proc.poll() is None, "training never got going"
        time.sleep(0.1)
    time.sleep(0.3)  # somewhere between two periodic checkpoints
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-2000:]
    (run,) = store_runs(store)
    assert run.info.status == "KILLED"
    step = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 25 <= step < 600
    # The checkpoint is where the run stopped: the last logged step is the checkpoint's step.
    assert _steps(store, run.info.run_id, "train/loss") == list(range(1, step + 1))

    resumed = mnist("train", *[a for a in args if not a.startswith("hydra.run.dir")],
                      f"resume={run.info.run_id}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (after,) = store_runs(store)
    assert after.info.status == "FINISHED" and after.data.tags["resumed_at_step"] == str(step)
    assert _steps(store, run.info.run_id, "train/loss") == list(range(1, 601))


def test_what_cannot_be_resumed_says_why(processed, tmp_path, tiny_run):
    from mnist_pipeline.config import ConfigError
    from mnist_pipeline.training.train import train

    store = tmp_path / "empty"
    with pytest.raises(ConfigError, match="no resumable run"):
        train(compose(*tiny_overrides(processed, store, tmp_path / "o"), "resume=last"))
    finished = compose(*tiny_overrides(processed, tiny_run.store, tmp_path / "o2"), f"resume={tiny_run.run_id}")
    with pytest.raises(ConfigError, match="it is FINISHED"):
        train(finished)
    with pytest.raises(ConfigError, match="no such MLflow run"):
        train(compose(*tiny_overrides(processed, tiny_run.store, tmp_path / "o3"), "resume=0123456789abcdef"))
    result = mnist("train", *tiny_overrides(processed, tiny_run.store, tmp_path / "o4"), "resume=last",
                     "ckpt_path=/x")
    assert result.returncode != 0 and "error:" in result.stderr and "Traceback" not in result.stderr
