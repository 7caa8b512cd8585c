"""The MLflow UI page itself, in headless Chromium: the experiment's run table lists the runs.
Run by `make test-ui` (which installs Debian's chromium if it is missing)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from support.servers import start_ui, stop_ui

pytestmark = pytest.mark.system_packages

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--virtual-time-budget=15000",
                  "--window-size=1400,900"]


def _open(chromium: str, url: str, tmp_path, name: str, copy_to_env: str):
    """(the page's DOM once its scripts ran, a screenshot of it), in headless Chromium; the
    screenshot is also copied where $`copy_to_env` says, if set."""
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / name
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    if os.environ.get(copy_to_env):
        shutil.copy(shot, os.environ[copy_to_env])
    return dom, shot


def test_the_runs_table_lists_the_runs(tiny_run, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "make test-ui installs Debian's chromium"
    proc, base = start_ui(tiny_run.store)
    try:
        url = f"{base}/#/experiments/{tiny_run.run.info.experiment_id}/runs"
        dom, shot = _open(chromium, url, tmp_path, "runs.png", "UI_SCREENSHOT")
    finally:
        stop_ui(proc)
    assert tiny_run.run.info.run_name in dom
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_the_compare_page_that_compare_prints_shows_every_point_and_the_swept_params(processed, tmp_path):
    """MLflow 3.17's UI has the route `#/compare-runs?runs=...&experiments=...` but its docs do not:
    this pins it. The page lists every point's run name and draws the parallel-coordinates plot of
    the params that differ between the runs: the swept ones."""
    from support import mnist

    chromium = shutil.which("chromium")
    assert chromium, "make test-ui installs Debian's chromium"
    store = tmp_path / "mlruns"
    uri = f"sqlite:///{store}/mlflow.db"
    sweep = mnist("train", "-m", f"paths.processed_dir={processed}", f"logger.tracking_uri={uri}",
                  "data.val_subset_size=100", "data.eval_batch_size=100", "trainer.max_steps=10",
                  "optimizer.lr=0.05,0.15", "data.batch_size=32,64", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  timeout=300)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    proc, base = start_ui(store)
    try:
        compared = mnist("compare", "--tracking-uri", uri, "--out", str(tmp_path / "c"), "--ui-url", base)
        assert compared.returncode == 0, compared.stderr[-3000:]
        url = compared.stdout.strip().splitlines()[-1].split(": ", 1)[1]
        dom, shot = _open(chromium, url, tmp_path, "compare.png", "UI_COMPARE_SCREENSHOT")
    finally:
        stop_ui(proc)
    names = [line.split()[0:4] for line in compared.stdout.splitlines() if line.startswith("tfjs_cnn lr=")]
    assert len(names) == 4
    for words in names:
        assert " ".join(words) in dom, words
    assert "parallel" in dom.lower(), "the parallel-coordinates plot"
    assert "optimizer.lr" in dom and "data.batch_size" in dom, "the swept params are on the page"
    assert shot.read_bytes().startswith(b"\x89PNG")
