"""This repository copied into a new git repo, for tests that run `dvc` (or `make`) on the real
`dvc.yaml` without touching the checkout: its own data/, dvc.lock, mlruns/ and DVC config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.runs import ROOT


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def git_commit(repo: Path, message: str) -> None:
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)


def copy_repo(dest: Path, mnist_raw: Path) -> Path:
    """The committed and working-tree files of this repo (not data/, mlruns/, .dvc/config.local, ...)
    in `dest`, committed as a new git repo, fetching from the local folder `mnist_raw` only and
    training a 10-step tutorial; no dvc.lock and no reports/, so a first `dvc repro` runs every stage."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    shutil.rmtree(dest / "reports", ignore_errors=True)
    (dest / "dvc.lock").unlink(missing_ok=True)
    edit(dest / "conf/data/mnist.yaml", "source_dir: null", f"source_dir: {mnist_raw}")
    edit(dest / "conf/data/mnist.yaml", "sources: [local, cache, mirrors, pypi, npm]", "sources: [local]")
    edit(dest / "conf/experiment/tutorial.yaml", "max_steps: 100", "max_steps: 10")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, capture_output=True)
    git_commit(dest, "copy")
    return dest


def run_in(repo: Path, *cmd: str, env: dict[str, str] | None = None, timeout: float = 600):
    """`cmd` in `repo` with this venv's commands (dvc, mnist) first on PATH and no MLflow store from
    the environment; `env` adds to (or, with a None value, removes from) the environment."""
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    full.pop("MLFLOW_TRACKING_URI", None)
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout, env=full, check=False)
