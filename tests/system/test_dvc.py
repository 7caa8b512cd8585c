"""`dvc repro` in a copy of this repository: the whole pipeline, then only what an edit touches."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from support import ROOT, store_client
from support.repo_copy import copy_repo, edit, run_in


def _sh(*cmd, cwd, timeout=600):
    return run_in(cwd, *cmd, timeout=timeout)


def _stages_run(result) -> set[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(re.findall(r"Running stage '(\w+)'", result.stdout))


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _status(repo: Path) -> dict:
    result = _sh("dvc", "status", "--json", cwd=repo)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "{}")


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory, real_mnist_raw) -> Path:
    """This repo as a new git repo (support/repo_copy.py), fetching from a local folder of real MNIST
    and training a short tutorial."""
    return copy_repo(tmp_path_factory.mktemp("repo"), real_mnist_raw)


def test_repro_runs_everything_then_nothing_then_only_what_changed(repo_copy):
    first = _sh("dvc", "repro", cwd=repo_copy)
    assert _stages_run(first) == {"fetch", "split", "train"}

    sizes = {}
    for name in ("train", "val", "test"):
        with np.load(repo_copy / "data" / "processed" / f"{name}.npz") as npz:
            sizes[name] = len(npz["labels"])
            assert npz["images"].shape[1:] == (28, 28) and npz["images"].dtype == np.uint8
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    metrics = json.loads((repo_copy / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"val_full/acc", "val_full/loss", "test/acc", "test/loss"}
    assert metrics["test/acc"] > 0.3  # 10 steps of the tutorial on real MNIST
    assert (repo_copy / "reports" / "plots" / "val.csv").read_text().startswith("step,loss,acc\n5,")
    assert (repo_copy / "mlruns" / "mlflow.db").is_file(), "the copy's own store: the project root is the copy"

    started = time.monotonic()
    second = _sh("dvc", "repro", cwd=repo_copy)
    no_op = time.monotonic() - started
    assert _stages_run(second) == set()
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    print(f"no-op dvc repro: {no_op:.2f} s")

    # Code by folder: an edit under serving/ changes no stage; one to the datamodule changes train only.
    _append(repo_copy / "src/mnist_pipeline/serving/predict.py", "# an edit to predict\n")
    assert _status(repo_copy) == {}, "serving/ is in no stage's deps"
    datamodule = repo_copy / "src/mnist_pipeline/training/datamodule.py"
    original = datamodule.read_text()
    _append(datamodule, "# an edit to the datamodule\n")
    changed = _status(repo_copy)
    assert set(changed) == {"train"}, changed
    assert {"changed deps": {"src/mnist_pipeline/training": "modified"}} in changed["train"]
    datamodule.write_text(original)
    assert _status(repo_copy) == {}

    edit(repo_copy / "conf/optimizer/sgd.yaml", "lr: 0.15", "lr: 0.1")
    assert _stages_run(_sh("dvc", "repro", cwd=repo_copy)) == {"train"}
    assert _newest_run(repo_copy).data.params["optimizer.lr"] == "0.1", "trained with the edit, not stale values"
    assert "lr: 0.1\n" in (repo_copy / "params.yaml").read_text(), "params.yaml records what ran"

    edit(repo_copy / "conf/data/mnist.yaml", "  seed: 0", "  seed: 1")
    assert _stages_run(_sh("dvc", "repro", cwd=repo_copy)) == {"split", "train"}

    metrics_show = _sh("dvc", "metrics", "show", "--json", cwd=repo_copy)
    assert "test/acc" in metrics_show.stdout

    # `dvc plots show`: each plot once, into dvc_plots/, which git ignores.
    plots = json.loads(_sh("dvc", "plots", "show", "--json", cwd=repo_copy).stdout)["data"]
    assert sorted(plots) == sorted(["Loss vs training step", "Accuracy vs validation step", "reports/plots/loss.png",
                                    "reports/plots/accuracy.png", "Confusion matrix of the test set",
                                    "reports/plots/confusion_matrix.png", "reports/plots/most_confident_errors.png"])
    assert _sh("dvc", "plots", "show", cwd=repo_copy).returncode == 0 and (repo_copy / "dvc_plots").is_dir()
    assert "dvc_plots" not in _sh("git", "status", "--porcelain", cwd=repo_copy).stdout


def _store(repo: Path):
    client = store_client(repo / "mlruns")
    return client, client.get_experiment_by_name("mnist").experiment_id


def _newest_run(repo: Path):
    client, experiment_id = _store(repo)
    return client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


def test_dvc_experiments_train_with_their_overrides_and_land_in_the_repo_store(repo_copy):
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "edits"]):
        subprocess.run(cmd, cwd=repo_copy, check=True, capture_output=True)

    one = _sh("dvc", "exp", "run", "-S", "optimizer.lr=0.05", cwd=repo_copy)
    assert _stages_run(one) == {"train"}
    run = _newest_run(repo_copy)
    assert run.data.params["optimizer.lr"] == "0.05" and run.data.tags.get("dvc_exp")

    queued = _sh("dvc", "exp", "run", "--queue", "-S", "optimizer.lr=0.07,0.09", cwd=repo_copy)
    assert queued.returncode == 0, queued.stderr
    assert _sh("dvc", "queue", "start", cwd=repo_copy).returncode == 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            status = _sh("dvc", "queue", "status", cwd=repo_copy).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        else:
            pytest.fail(f"queued experiments did not finish: {status}")
    finally:
        _sh("dvc", "queue", "stop", cwd=repo_copy)
    assert status.count("Success") >= 2, status

    client, experiment_id = _store(repo_copy)
    runs = client.search_runs([experiment_id], "tags.dvc_exp != ''")
    by_lr = {r.data.params["optimizer.lr"]: r for r in runs}
    assert {"0.05", "0.07", "0.09"} <= set(by_lr)
    assert all(by_lr[lr].info.status == "FINISHED" for lr in ("0.07", "0.09"))
    assert not list((repo_copy / ".dvc" / "tmp").rglob("mlflow.db")), "no run lost in a temporary copy"

    # The README's `dvc exp show` line: the swept keys and the metrics that rank runs, readable.
    (line,) = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("dvc exp show --")]
    table = subprocess.run(f"{line} --no-pager", shell=True, cwd=repo_copy, capture_output=True, text=True,
                           env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                                "COLUMNS": "100"}, timeout=120)
    assert table.returncode == 0, table.stderr
    rows = [row.strip() for row in table.stdout.splitlines() if row.strip() and not row.strip().startswith("─")]
    assert rows[0].split() == ["Experiment", "test/acc", "val_full/acc", "seed", "data.batch_size", "optimizer.lr"]
    assert max(len(row) for row in table.stdout.splitlines()) <= 100
    assert any("0.05" in row for row in rows[1:])

    show = json.loads(_sh("dvc", "exp", "show", "--json", cwd=repo_copy).stdout)
    text = json.dumps(show)
    assert "optimizer" in text and "test/acc" in text
    for lr in (0.05, 0.07, 0.09):
        assert f'"lr": {lr}' in text
