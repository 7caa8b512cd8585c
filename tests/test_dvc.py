"""`dvc repro` in a copy of this repository: the whole pipeline, then only what an edit touches."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def _sh(*cmd, cwd, timeout=600):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _stages_run(result) -> set[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(re.findall(r"Running stage '(\w+)'", result.stdout))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory, real_mnist_raw) -> Path:
    """The committed and working-tree files of this repo (not data/, mlruns/, ...), as a new git repo,
    fetching from a local folder of real MNIST and training a short tutorial."""
    copy = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    shutil.rmtree(copy / "reports", ignore_errors=True)
    (copy / "dvc.lock").unlink(missing_ok=True)
    _edit(copy / "conf/data/mnist.yaml", "source_dir: null", f"source_dir: {real_mnist_raw}")
    _edit(copy / "conf/data/mnist.yaml", "sources: [local, cache, mirrors, pypi, npm]", "sources: [local]")
    _edit(copy / "conf/experiment/tutorial.yaml", "max_steps: 100", "max_steps: 10")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=copy, check=True, capture_output=True)
    return copy


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

    _edit(repo_copy / "conf/optimizer/sgd.yaml", "lr: 0.15", "lr: 0.1")
    assert _stages_run(_sh("dvc", "repro", cwd=repo_copy)) == {"train"}

    _edit(repo_copy / "conf/data/mnist.yaml", "  seed: 0", "  seed: 1")
    assert _stages_run(_sh("dvc", "repro", cwd=repo_copy)) == {"split", "train"}

    metrics_show = _sh("dvc", "metrics", "show", "--json", cwd=repo_copy)
    assert "test/acc" in metrics_show.stdout
