"""`mnist server` (what `make server` runs) for the tests: a throwaway PostgreSQL cluster + basic-auth
MLflow on a free port, in a folder the `postgres` user can enter; started, stopped, restarted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from support.runs import MNIST, ROOT
from support.servers import free_port

ADMIN_PASSWORD = "team-server-test-admin-password"
ADMIN = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}


def open_folder() -> Path:
    """A folder the postgres user can enter (pytest's tmp folders are closed to others)."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-team-server-"))
    folder.chmod(0o755)
    return folder


def start_server(folder: Path, port: int, env: dict) -> tuple[subprocess.Popen, list[str]]:
    """`mnist server` until it prints the clients' settings; returns (process, its lines so far)."""
    proc = subprocess.Popen([*MNIST, "server", "--folder", str(folder), "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"mnist server exited ({proc.wait()}): {''.join(lines)}")
        lines.append(line)
        if "Ctrl-C or SIGTERM" in line:
            return proc, lines
    proc.kill()
    raise AssertionError(f"mnist server did not get ready: {''.join(lines)}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


class TeamServer:
    """A running `mnist server` whose admin password came from the environment."""

    def __init__(self) -> None:
        self.root, self.port = open_folder(), free_port()
        self.folder = self.root / "server"
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
        self.proc, self.lines = start_server(self.folder, self.port, self.env)

    def stop(self) -> None:
        stop(self.proc)

    def start(self) -> None:
        """Start it again on the same folder and port (the same database, users and artifacts)."""
        self.proc, self.lines = start_server(self.folder, self.port, self.env)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def as_admin(self):
        """An MlflowClient of this server, logged in as admin (the credentials are read from the
        environment, which is restored after)."""
        from mlflow.tracking import MlflowClient

        saved = {k: os.environ.get(k) for k in ADMIN}
        os.environ.update(ADMIN)
        try:
            yield MlflowClient(self.url)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def client_env(self, experiment: str) -> dict:
        """What a client sets to use this server, as `mnist server` prints it, plus the experiment."""
        return {"MLFLOW_TRACKING_URI": self.url, **ADMIN, "MLFLOW_EXPERIMENT_NAME": experiment}
