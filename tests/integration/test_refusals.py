"""Bad input is refused before any work: one line naming the key or file and the fix, a non-zero
exit, and no MLflow run, no output folder. A failure during a run is one line too, with the run
FAILED, its checkpoints kept and the traceback in its log file. A run that works ends with a
summary, and off a terminal its progress is plain lines."""

from __future__ import annotations

import shutil

import pytest

from support import FAULTY, mnist, store_runs, tiny_overrides


def _refused(processed, tmp_path, *extra: str, env: dict | None = None) -> str:
    """Run `mnist train` that must be refused; its one error line."""
    store, out, run_dir = tmp_path / "mlruns", tmp_path / "out", tmp_path / "run"
    result = mnist("train", *tiny_overrides(processed, store, out), f"hydra.run.dir={run_dir}", *extra, env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert store_runs(store) == [] and not store.exists(), "no MLflow run (nor store)"
    assert not out.exists() and not run_dir.exists(), "no output folder"
    return errors[0]


def test_a_seed_out_of_range(processed, tmp_path):
    line = _refused(processed, tmp_path, "seed=-1")
    assert line == "error: seed must be a whole number in 0 .. 4294967295, got -1: e.g. seed=0"


def test_a_batch_larger_than_the_training_split(processed, tmp_path):
    line = _refused(processed, tmp_path, "data.batch_size=70000")
    assert line.startswith("error: data.batch_size=70000 is larger than the training split (640 images in ")


def test_a_gpu_trainer_without_cuda(processed, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the refusal cannot happen here")
    line = _refused(processed, tmp_path, "trainer=gpu")
    assert line == ("error: trainer.accelerator=gpu (trainer=gpu or trainer=ddp): no CUDA device here: "
                    "use trainer=cpu or trainer=ddp_cpu")


def test_a_truncated_split_file(processed, tmp_path):
    damaged = tmp_path / "processed"
    shutil.copytree(processed, damaged)
    data = (damaged / "train.npz").read_bytes()
    (damaged / "train.npz").write_bytes(data[: len(data) // 2])
    line = _refused(processed, tmp_path, f"paths.processed_dir={damaged}")
    assert line.startswith(f"error: {damaged / 'train.npz'} is not a readable split file (BadZipFile: ")
    assert line.endswith("run `dvc repro split` (or `mnist split`) to write it again")


@pytest.mark.parametrize("key", ["paths.reports_dir", "hydra.run.dir"])
def test_a_folder_that_cannot_be_written(processed, tmp_path, key):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("a file where a folder should be\n")
    line = _refused(processed, tmp_path, f"{key}={in_the_way / 'sub'}")
    assert line == (f"error: {key}={in_the_way / 'sub'}: cannot write there ({in_the_way} is a file, not a "
                    "folder): choose another folder")


def test_a_failure_during_the_run_is_one_line_and_keeps_the_checkpoints(processed, tmp_path):
    """A full disk halfway (the model's 8th training step raises ENOSPC, as a write would)."""
    store, out, run_dir = tmp_path / "mlruns", tmp_path / "out", tmp_path / "run"
    result = mnist("train", *tiny_overrides(processed, store, out), f"hydra.run.dir={run_dir}",
                   "model._target_=support.faulty.DiskFullAtStep8", env=FAULTY)
    assert result.returncode == 1
    log = run_dir / "train.log"
    assert result.stderr.strip().splitlines()[-1] == (
        "error: training failed: OSError: [Errno 28] No space left on device: 'out/checkpoints' "
        f"(the traceback is in {log})")
    assert "Traceback" not in result.stderr and "Traceback" in log.read_text()
    (run,) = store_runs(store)
    assert run.info.status == "FAILED"
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "best.ckpt").is_file()


def test_a_run_off_a_terminal_logs_plain_lines_and_ends_with_a_summary(processed, tmp_path):
    store, out, run_dir = tmp_path / "mlruns", tmp_path / "out", tmp_path / "run"
    result = mnist("train", *tiny_overrides(processed, store, out), f"hydra.run.dir={run_dir}",
                   "progress_every_n_steps=10")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "\r" not in output, "no progress-bar frames"
    steps = [line.split(" - ", 1)[1] for line in output.splitlines() if "] - step " in line]
    assert [s.split()[1] for s in steps] == ["10/23", "20/23", "23/23"] and "train/loss" in steps[0]
    assert "val/acc" in steps[-1]
    logged = (run_dir / "train.log").read_text()
    assert all(s in logged for s in steps), "the same lines in the run's log file"
    (run,) = store_runs(store)
    summary = result.stdout.strip().splitlines()[-4:]
    metrics = run.data.metrics
    assert summary == [
        f"done: val_full/acc {metrics['val_full/acc']:.4f}, test/acc {metrics['test/acc']:.4f}",
        f"  run:     {run.info.run_name} ({run.info.run_id})",
        f"  folder:  {out}",
        f"  MLflow:  http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}   "
        f"(`mnist ui --tracking-uri sqlite:///{store}/mlflow.db` serves it)",
    ]


def test_predict_reports_missing_files_without_looking_for_a_model(tmp_path):
    result = mnist("predict", "--tracking-uri", f"sqlite:///{tmp_path}/nowhere/mlflow.db",
                   str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'a.png'}: no such file",
                                          f"error: {tmp_path / 'b.png'}: no such file"]
