"""`train(cfg)` end to end on tiny synthetic data, and what it leaves in MLflow and reports/."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from support import compose, store_runs, tiny_overrides


def test_metrics_returned_and_written(tiny_run):
    m = tiny_run.metrics
    assert set(m) == {"val_full/acc", "val_full/loss", "test/acc", "test/loss"}
    assert m["test/acc"] > 0.3, "a few steps on learnable data beat chance (0.1)"
    assert json.loads((tiny_run.reports / "metrics.json").read_text()) == pytest.approx(m)


def test_validation_every_five_steps_on_the_train_step_axis(tiny_run):
    # 640 images / batch 64 = 10 steps an epoch: 23 steps cross two epoch boundaries.
    assert tiny_run.steps("train/loss") == list(range(1, 24))
    assert tiny_run.steps("train/acc") == list(range(1, 24))
    assert tiny_run.steps("val/acc") == [5, 10, 15, 20]
    assert tiny_run.steps("val/loss") == [5, 10, 15, 20]
    for key in ("val_full/acc", "val_full/loss", "test/acc", "test/loss"):
        assert tiny_run.steps(key) == [23]
    val_csv = (tiny_run.reports / "plots" / "val.csv").read_text().splitlines()
    assert val_csv[0] == "step,loss,acc" and [row.split(",")[0] for row in val_csv[1:]] == ["5", "10", "15", "20"]


def test_run_params_tags_and_status(tiny_run):
    run = tiny_run.client.get_run(tiny_run.run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["optimizer.lr"] == "0.15" and p["data.batch_size"] == "64" and p["trainer.max_steps"] == "23"
    assert p["model.name"] == "tfjs_cnn" and "model" not in p and p["seed"] == "0"
    assert "ckpt_path" not in p and "resume" not in p
    t = run.data.tags
    assert len(t["git_commit"]) == 40 and t["git_dirty"] in ("true", "false")
    assert t["hydra_overrides"] == "", "train(cfg) called directly has no command-line overrides"
    assert len(t["data_sha256"]) == 64
    assert t["pid"].isdigit() and float(t["pid_start_time"]) > 0 and t["host"]
    assert run.info.run_name.startswith("tfjs_cnn lr=0.15 bs=64 ")


def test_artifacts_checkpoints_plots_config(tiny_run):
    def walk(path=None):
        for a in tiny_run.client.list_artifacts(tiny_run.run_id, path):
            yield from walk(a.path) if a.is_dir else [a.path]

    files = set(walk())
    assert {"config.yaml", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "reports/metrics.json",
            "reports/plots/loss.png", "reports/plots/accuracy.png", "reports/plots/train.csv",
            "reports/plots/val.csv"} <= files
    png = (tiny_run.reports / "plots" / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_checkpoints_are_plain_data(tiny_run):
    ckpt = torch.load(tiny_run.out / "checkpoints" / "last.ckpt", weights_only=True)
    # `last` is saved at every periodic validation: the last one was at step 20 of 23.
    assert ckpt["global_step"] == 20 and "state_dict" in ckpt
    assert ckpt["MNISTDataModule"]["step"] == 20


def test_logged_model_loads_and_predicts_probabilities(tiny_run):
    import mlflow

    mlflow.set_tracking_uri(tiny_run.uri)
    (model,) = mlflow.search_logged_models(experiment_ids=[tiny_run.run.info.experiment_id], output_format="list")
    assert model.source_run_id == tiny_run.run_id
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    probs = mlflow.pyfunc.load_model(model.model_uri).predict(x)
    assert probs.shape == (4, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()
    net = mlflow.pytorch.load_model(model.model_uri)
    with torch.no_grad():
        assert np.allclose(net(torch.from_numpy(x)).numpy(), probs, atol=1e-6)


def _history(cfg):
    from mnist_pipeline.training.reports import HistoryLogger
    from mnist_pipeline.training.train import train

    captured = {}
    original = HistoryLogger.__init__

    def spy(self):
        original(self)
        captured["h"] = self.history

    HistoryLogger.__init__ = spy
    try:
        metrics = train(cfg)
    finally:
        HistoryLogger.__init__ = original
    return metrics, {k: v for k, v in captured["h"].items()}


def test_same_seed_is_bit_identical_and_another_seed_differs(processed, tmp_path):
    def run(seed, name):
        return _history(compose(*tiny_overrides(processed, tmp_path / "s", tmp_path / name), "logger=none",
                                "trainer.max_steps=12", "trainer.deterministic=true", f"seed={seed}"))

    (m1, h1), (m2, h2), (_, h3) = run(0, "a"), run(0, "b"), run(1, "c")
    assert m1 == m2 and h1 == h2
    assert h1["train/loss"] != h3["train/loss"]
    assert not (tmp_path / "s").exists(), "logger=none writes no MLflow store"


def test_exception_in_training_marks_the_run_failed(processed, tmp_path, monkeypatch):
    from mnist_pipeline.model.module import MNISTClassifier
    from mnist_pipeline.training.train import train

    def boom(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("injected failure")
        return original(self, batch, batch_idx)

    original = MNISTClassifier.training_step
    monkeypatch.setattr(MNISTClassifier, "training_step", boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        train(compose(*tiny_overrides(processed, tmp_path / "mlruns", tmp_path / "out")))
    (run,) = store_runs(tmp_path / "mlruns")
    assert run.info.status == "FAILED"
