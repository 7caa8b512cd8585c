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


def test_the_runs_table_lists_the_runs(tiny_run, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "make test-ui installs Debian's chromium"
    proc, base = start_ui(tiny_run.store)
    try:
        url = f"{base}/#/experiments/{tiny_run.run.info.experiment_id}/runs"
        common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        shot = tmp_path / "runs.png"
        subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120)
        if os.environ.get("UI_SCREENSHOT"):
            shutil.copy(shot, os.environ["UI_SCREENSHOT"])
    finally:
        stop_ui(proc)
    assert tiny_run.run.info.run_name in dom
    assert shot.read_bytes().startswith(b"\x89PNG")
