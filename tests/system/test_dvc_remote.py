"""Data through a DVC remote: `make repro` falls back to fetching when the remote has nothing, `dvc push`
uploads data/raw and data/processed, and a second clone pulls them and reruns neither fetch nor split.

Everything runs in copies of this repo, without the train stage (its outputs are in git, not in the
remote; test_dvc.py runs it), whose default remote is the Makefile's (a folder under
$XDG_CACHE_HOME) with XDG_CACHE_HOME and DVC's global and system config folders in tmp_path: no
test reads or writes the user's remote or DVC config."""

from __future__ import annotations

import filecmp
import json
import re
import subprocess
import time
from pathlib import Path

import yaml

from support.repo_copy import copy_repo, git_commit, run_in

DATA = ("data/raw", "data/processed")


def _ok(result) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _stages_run(result) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", _ok(result)))


def _stages_pulled(result) -> set[str]:
    return set(re.findall(r"Pulling data for stage: '(\w+)'", _ok(result)))


def _data_files(repo: Path) -> list[Path]:
    """Every file under the fetch and split outputs, relative to the repo."""
    files = sorted(p.relative_to(repo) for out in DATA for p in (repo / out).rglob("*") if p.is_file())
    assert files, f"no data in {repo}"
    return files


def _assert_same_bytes(repo: Path, reference: Path) -> None:
    files = _data_files(repo)
    assert files == _data_files(reference)
    different = [str(f) for f in files if not filecmp.cmp(repo / f, reference / f, shallow=False)]
    assert not different, different


def _mtimes(repo: Path) -> dict[Path, int]:
    return {f: (repo / f).stat().st_mtime_ns for f in _data_files(repo)}


def _clone(source: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True, capture_output=True)
    return dest


def test_a_second_clone_pulls_fetch_and_split_outputs_and_reruns_neither(tmp_path, real_mnist_raw):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
           "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
           "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
           # the caller's make variables (`make test X=y`) and job server stay out of the inner make
           "COLUMNS": "1000",  # `dvc remote list` on one line
           "MNIST_DVC_REMOTE": None, "MAKEFLAGS": None, "MFLAGS": None, "MAKELEVEL": None}
    remote = tmp_path / "xdg-cache" / "mnist-pipeline" / "dvc-remote"

    def make(repo: Path, target: str):
        # -o: the venv stamp counts as built; the copies use this venv (first on PATH), not their own.
        return run_in(repo, "make", "-o", ".venv/.installed", target, env=env)

    def dvc(repo: Path, *args: str):
        return run_in(repo, "dvc", *args, env=env)

    # The first clone: no dvc.lock, so `make repro` runs every stage; the Makefile sets the default remote.
    first = copy_repo(tmp_path / "first", real_mnist_raw)
    pipeline = yaml.safe_load((first / "dvc.yaml").read_text())
    pipeline = {"stages": {name: pipeline["stages"][name] for name in ("fetch", "split")}}
    (first / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    git_commit(first, "fetch and split only")
    started = time.monotonic()
    assert _stages_run(make(first, "repro")) == {"fetch", "split"}
    print(f"first make repro (fetch, split): {time.monotonic() - started:.1f} s")
    assert _ok(dvc(first, "remote", "default")).strip() == "user-cache"
    assert _ok(dvc(first, "remote", "list")).split() == ["user-cache", str(remote), "(default)"]
    assert not remote.exists(), "nothing pushed yet"
    git_commit(first, "dvc.lock")

    # Fresh clones, the remote not yet created, then empty: `make repro` tries to pull, falls back to
    # running fetch and split, and succeeds.
    for state in ("missing", "empty"):
        if state == "empty":
            remote.mkdir(parents=True)
        fallback = _clone(first, tmp_path / f"fallback-{state}")
        made = make(fallback, "repro")
        assert _stages_pulled(made) == {"fetch", "split"}, state
        assert "Unable to pull data for stage: 'fetch'" in made.stdout, state
        assert _stages_run(made) == {"fetch", "split"}, state
        _assert_same_bytes(fallback, first)
    assert not any(remote.iterdir())

    # `dvc push` uploads the outputs of fetch and split into the default remote.
    assert set(json.loads(_ok(dvc(first, "status", "--cloud", "--json")))) >= set(DATA)
    pushed = _ok(dvc(first, "push"))
    print(f"dvc push: {pushed.strip()}")
    assert re.search(r"\d+ files pushed", pushed) and any(p.is_file() for p in remote.rglob("*"))
    assert json.loads(_ok(dvc(first, "status", "--cloud", "--json")) or "{}") == {}

    # A second clone: `dvc pull`, then `dvc repro` runs nothing and touches no file.
    second = _clone(first, tmp_path / "second")
    assert _ok(make(second, "remote")).split()[-3:] == ["user-cache", str(remote), "(default)"]
    started = time.monotonic()
    _ok(dvc(second, "pull"))
    print(f"dvc pull: {time.monotonic() - started:.1f} s")
    _assert_same_bytes(second, first)
    before = _mtimes(second)
    assert json.loads(_ok(dvc(second, "status", "--json")) or "{}") == {}
    again = dvc(second, "repro")
    assert _stages_run(again) == set()
    assert "Stage 'fetch' didn't change" in again.stdout and "Stage 'split' didn't change" in again.stdout
    assert _mtimes(second) == before

    # A third clone: `make repro` alone pulls fetch's and split's outputs and runs nothing; run again,
    # it asks no remote.
    third = _clone(first, tmp_path / "third")
    made = make(third, "repro")
    assert _stages_pulled(made) == {"fetch", "split"} and _stages_run(made) == set()
    _assert_same_bytes(third, first)
    started = time.monotonic()
    made = make(third, "repro")
    print(f"make repro, nothing changed: {time.monotonic() - started:.1f} s")
    assert _stages_pulled(made) == set() and _stages_run(made) == set()
    assert made.stdout.count("didn't change") == 2
