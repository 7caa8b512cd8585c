"""`mnist train` as a process: bad input refused before any work, divergence and signals recorded,
a checkpoint that would run code refused."""

from __future__ import annotations

import pickle
import signal
import subprocess
import time

import pytest
import torch

from support import MNIST, ROOT, metric_steps, mnist, store_client, store_runs, tiny_overrides
from support.payloads import touching


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", "optimizer.lr must be a number > 0"),
        ("optimizer.lr=abc", "optimizer.lr must be a number > 0"),
        ("data.batch_size=0", "data.batch_size must be a whole number > 0"),
        ("trainer.max_step=5", "Key 'max_step' is not in struct"),
        ("model=nonexistent", "Could not find 'model/nonexistent'"),
        ("paths.processed_dir=/nonexistent/processed", "run `dvc repro split`"),
        ("ckpt_path=/nonexistent/last.ckpt", "no such checkpoint file"),
    ],
)
def test_bad_input_fails_fast_with_one_message_and_no_run(processed, tmp_path, override, message):
    store = tmp_path / "mlruns"
    result = mnist("train", *tiny_overrides(processed, store, tmp_path / "out"), override, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert store_runs(store) == []
    assert not (tmp_path / "out").exists(), "refused before the run's output folder was made"


def test_divergence_stops_the_run_failed_with_its_step(processed, tmp_path):
    store = tmp_path / "mlruns"
    result = mnist("train", *tiny_overrides(processed, store, tmp_path / "out"), "optimizer.lr=1e20")  # lr=50 diverges on real MNIST
    assert result.returncode == 1
    assert "diverged at step" in result.stderr and "Traceback" not in result.stderr
    (run,) = store_runs(store)
    assert run.info.status == "FAILED"
    assert "optimizer.lr=1e20" in run.data.tags["hydra_overrides"].split()
    step = int(run.data.tags["diverged_at_step"])
    assert 1 <= step < 23
    assert max(metric_steps(store_client(store), run.info.run_id, "train/loss")) == step - 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_kill_marks_the_run_killed_and_exits_nonzero(processed, tmp_path, signum):
    store = tmp_path / "mlruns"
    args = tiny_overrides(processed, store, tmp_path / "out", "trainer.max_steps=1000000")
    proc = subprocess.Popen([*MNIST, "train", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # not the store: opening it while it is created races
        if (tmp_path / "out" / "checkpoints" / "last.ckpt").exists():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training never started")
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, out[-2000:]
    (run,) = store_runs(store)
    assert run.info.status == "KILLED"


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def malicious_ckpt(tiny_run, tmp_path):
    """A real checkpoint with one more entry: a payload that creates a marker file when unpickled."""
    marker = tmp_path / "payload-ran"
    ckpt = torch.load(tiny_run.out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["callbacks"]["extra"] = touching(marker)
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    return path, marker


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(malicious_ckpt, processed, tmp_path):
    from mnist_pipeline.training.checkpoints import AtomicCheckpointIO

    path, marker = malicious_ckpt
    result = mnist("train", *tiny_overrides(processed, tmp_path / "mlruns", tmp_path / "out"), f"ckpt_path={path}",
                   timeout=90)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert f"ckpt_path={path}: refused: it holds more than plain data (Unsupported global: GLOBAL exec)" in line
    assert "nothing in it was run" in line
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "mlruns").exists(), "refused before any MLflow run was created"

    # Lightning's own loading path (trainer.fit/test ckpt_path=..., resuming) refuses it too.
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists(), "the payload ran"

    # The payload is real: an unsafe load would have run it.
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()
