"""Servers the tests start on 127.0.0.1: a free port, waiting until one answers, and the MLflow UI
(`mlflow server`) over a store, started in its own session and stopped with every process it started."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(proc: subprocess.Popen, port: int, path: str = "/health", timeout: float = 60) -> None:
    """Until GET `path` on 127.0.0.1:`port` answers 200; fails if `proc` exits or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server on port {port} exited (code {proc.returncode})"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.3)
    raise AssertionError(f"the server on port {port} did not answer within {timeout} s")


def start_ui(store: Path):
    """`mlflow server` over the store on a free loopback port; returns (process, base url)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_up(proc, port)
    except BaseException:
        if proc.poll() is None:
            stop_ui(proc)
        else:  # the server exited: what it started may still run in its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc, f"http://127.0.0.1:{port}"


def stop_ui(proc) -> None:
    """Stop the server and every process it started, by PID."""
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    deadline = time.monotonic() + 15
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in family):
        if time.monotonic() > deadline:
            for p in family:
                if psutil.pid_exists(p):
                    os.kill(p, signal.SIGKILL)
            break
        time.sleep(0.2)
