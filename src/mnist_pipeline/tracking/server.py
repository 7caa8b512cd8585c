"""`mnist server` (`make server`): the team setup the README recommends, on this machine, in the
foreground: PostgreSQL (postgres.py) for runs, `mlflow server --app-name basic-auth` on 127.0.0.1
with artifacts proxied into a folder, users and permissions in a SQLite file beside them.

Everything lives in one ignored folder (`server/` in the repo by default). The admin password is
$MLFLOW_AUTH_ADMIN_PASSWORD, else the one generated on first start into `admin_password` (mode
600); it is never printed. Ctrl-C or SIGTERM stops MLflow (its whole process group) and then
PostgreSQL, leaving nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mnist_pipeline.atomic import write_secret, write_text
from mnist_pipeline.config import project_root
from mnist_pipeline.tracking.postgres import Cluster, PostgresError

HOST, PORT = "127.0.0.1", 5000
ADMIN = "admin"
PASSWORD_FILE = "admin_password"
SECRET_KEY_FILE = "flask_secret_key"
AUTH_DB = "basic_auth.db"  # users, password hashes, permissions
READY_TIMEOUT = 90


class ServerError(RuntimeError):
    """The team server cannot start: a one-line message naming the cause and the fix."""


def default_folder() -> Path:
    return project_root() / "server"


def check_port_free(port: int) -> None:
    """Refuse early, before PostgreSQL starts, when something already listens on the port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise ServerError(f"port {port} on {HOST} is taken ({e.strerror}): stop what uses it, or pass "
                              "--port N (make server PORT=N)") from None


def check_driver() -> None:
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URIs)
    except ImportError:
        raise ServerError("the PostgreSQL driver is not installed: pip install -e '.[server]' "
                          "(make server does)") from None


def admin_password(folder: Path) -> tuple[str | None, str]:
    """(password, where a client finds it). MLflow reads it only to create the admin user on the first
    start: then it is $MLFLOW_AUTH_ADMIN_PASSWORD, else a new one stored with mode 600. Later the
    admin exists and keeps the password it was created with, whatever the variable says now."""
    path = folder / PASSWORD_FILE
    if path.is_file():
        return path.read_text().strip(), f"see {path}"
    env = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    if (folder / AUTH_DB).exists():  # created on an earlier start, from the variable
        return env, "the value $MLFLOW_AUTH_ADMIN_PASSWORD had on the first start"
    if env:
        return env, "the value of $MLFLOW_AUTH_ADMIN_PASSWORD"
    write_secret(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip(), f"see {path}"


def flask_secret_key(folder: Path) -> str:
    """basic-auth's CSRF key: $MLFLOW_FLASK_SERVER_SECRET_KEY, else one kept in the folder (mode 600)."""
    if os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        return os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    path = folder / SECRET_KEY_FILE
    if not path.is_file():
        write_secret(path, secrets.token_hex(32) + "\n")
    return path.read_text().strip()


def write_auth_config(folder: Path) -> Path:
    """basic_auth.ini: users and permissions in a SQLite file of the folder; READ for others by default."""
    path = folder / "basic_auth.ini"
    write_text(path, "[mlflow]\n"
                     "default_permission = READ\n"
                     f"database_uri = sqlite:///{folder / AUTH_DB}\n"
                     f"admin_username = {ADMIN}\n"
                     "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


class TeamServer:
    """PostgreSQL + basic-auth MLflow in `folder`, on 127.0.0.1:`port`. start() then stop(), or `with`."""

    def __init__(self, folder: Path | None = None, port: int = PORT):
        self.folder = Path(folder or default_folder()).resolve()
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.artifacts = self.folder / "artifacts"
        self.log = self.folder / "mlflow.log"
        self.mlflow: subprocess.Popen | None = None
        self.cluster: Cluster | None = None
        self.password_hint = ""

    def start(self) -> None:
        """Checks first (port, driver, folder), then PostgreSQL, then MLflow; ServerError on failure,
        with whatever was started already stopped."""
        check_port_free(self.port)
        check_driver()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.artifacts.mkdir(exist_ok=True)
            password, self.password_hint = admin_password(self.folder)
            env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(self.folder)),
                   "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
                   "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_secret_key(self.folder),
                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: 2 processes, not 13
            env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
            if password:
                env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
        except OSError as e:
            raise ServerError(f"cannot write the server folder {self.folder}: {e.strerror}: choose another "
                              "with --folder") from None
        try:
            self.cluster = Cluster(self.folder)
            self.cluster.initialise()
            self.cluster.start()
            with open(self.log, "ab") as log:
                self.mlflow = subprocess.Popen(
                    [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                     "--backend-store-uri", self.cluster.uri, "--serve-artifacts",
                     "--artifacts-destination", str(self.artifacts),
                     "--host", HOST, "--port", str(self.port), "--workers", "1"],
                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)  # its own group: stop() ends every process it starts
            self._wait_until_up()
            with contextlib.suppress(OSError):  # password hashes: for the server's user only
                (self.folder / AUTH_DB).chmod(0o600)
        except BaseException as e:
            self.stop()
            if isinstance(e, PostgresError):
                raise ServerError(str(e)) from None
            raise

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.mlflow.poll() is not None:
                raise ServerError(f"mlflow server exited (code {self.mlflow.returncode}): {self._log_tail()} "
                                  f"(log: {self.log})")
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            with contextlib.suppress(OSError):
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            conn.close()
            time.sleep(0.3)
        raise ServerError(f"mlflow server did not answer on {self.url} within {READY_TIMEOUT} s (log: {self.log})")

    def _log_tail(self) -> str:
        lines = [ln.strip() for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln]
        return (errors or lines or ["(no output)"])[-1]

    def stop(self) -> None:
        """SIGTERM to MLflow's process group (SIGKILL after 15 s), then PostgreSQL's fast shutdown."""
        if self.mlflow is not None and self.mlflow.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.mlflow.pid, signal.SIGTERM)
            try:
                self.mlflow.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.mlflow.kill()
                self.mlflow.wait()
        if self.mlflow is not None:  # uvicorn workers can outlive their parent: end the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.mlflow.pid, signal.SIGKILL)
        if self.cluster is not None:
            self.cluster.stop()

    def __enter__(self) -> TeamServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def client_settings(server: TeamServer) -> str:
    return (f"MLflow team server on {server.url} (PostgreSQL and artifacts in {server.folder})\n"
            "  clients set:\n"
            f"    export MLFLOW_TRACKING_URI={server.url}\n"
            f"    export MLFLOW_TRACKING_USERNAME={ADMIN}\n"
            f"    export MLFLOW_TRACKING_PASSWORD=...   # {server.password_hint}\n"
            "  (Ctrl-C or SIGTERM stops MLflow and PostgreSQL)")


def main(argv: list[str] | None = None, prog: str = "mnist server") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=PORT, help=f"port on {HOST} (default: {PORT})")
    parser.add_argument("--folder", type=Path, help="where PostgreSQL, artifacts and users live "
                                                    "(default: server/ in the repo)")
    args = parser.parse_args(argv)
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    server = TeamServer(args.folder, args.port)
    try:
        server.start()
    except ServerError as e:
        sys.exit(f"error: {' '.join(str(e).split())}")
    except KeyboardInterrupt:
        return 128 + (stopping[0] if stopping else signal.SIGINT)
    print(client_settings(server), flush=True)
    try:
        code = server.mlflow.wait()
        print(f"error: mlflow server exited (code {code}); see {server.log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping MLflow and PostgreSQL ...", flush=True)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(prog="python -m mnist_pipeline.tracking.server"))
