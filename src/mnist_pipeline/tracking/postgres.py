"""A private PostgreSQL cluster for the team server (`mnist server`), from Debian's `postgresql`.

The cluster lives in a folder of ours (`<server folder>/postgres`), is created on first start and
listens on a Unix socket in `<server folder>/socket` only: no TCP port to collide with or expose.
PostgreSQL refuses to run as root, so as root (this machine, CI) initdb and pg_ctl run as the
`postgres` system user, on folders it owns; as any other user they run as that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

DATABASE = "mlflow"        # MLflow's runs, params, metrics
SUPERUSER = "mlflow"       # the cluster's superuser; trust on the private socket only
SOCKET_PORT = 5432         # names the socket file (.s.PGSQL.5432); nothing listens on TCP
SYSTEM_USER = "postgres"   # who runs PostgreSQL when we are root


class PostgresError(RuntimeError):
    """PostgreSQL cannot be set up or started: a one-line message naming the cause and the fix."""


def binaries() -> Path:
    """The folder of initdb, pg_ctl and psql: Debian's newest /usr/lib/postgresql/<n>/bin, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).resolve().parent
    raise PostgresError("PostgreSQL is not installed: install Debian's package (apt-get install postgresql); "
                        "`make server` does")


def _as_owner(command: list[str]) -> list[str]:
    """`command` as the user PostgreSQL runs as: `postgres` when we are root, else ourselves."""
    return ["runuser", "-u", SYSTEM_USER, "--", *command] if os.geteuid() == 0 else command


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


class Cluster:
    """The cluster in `folder`: its data, socket and log."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.data = self.folder / "postgres"
        self.socket = self.folder / "socket"
        self.log = self.folder / "postgres.log"
        self.bin = binaries()

    @property
    def uri(self) -> str:
        """SQLAlchemy's URL of the MLflow database, over the private socket."""
        return f"postgresql://{SUPERUSER}@/{DATABASE}?host={self.socket}&port={SOCKET_PORT}"

    def _run(self, *command: str, what: str) -> str:
        done = subprocess.run(_as_owner([str(self.bin / command[0]), *command[1:]]), capture_output=True,
                              text=True, cwd="/")
        if done.returncode != 0:
            raise PostgresError(f"PostgreSQL: {what} failed: {_last_line(done.stderr or done.stdout)}")
        return done.stdout

    def _hand_over(self, path: Path) -> None:
        """As root, give `path` to the postgres user, who must own the data and socket folders."""
        if os.geteuid() == 0:
            shutil.chown(path, SYSTEM_USER, SYSTEM_USER)

    def _check_reachable(self) -> None:
        """The postgres user must be able to walk to the folder (a 700 home or tmp folder stops it)."""
        if os.geteuid() != 0:
            return
        if subprocess.run(["runuser", "-u", SYSTEM_USER, "--", "test", "-x", str(self.folder)]).returncode:
            raise PostgresError(f"the {SYSTEM_USER} user cannot enter {self.folder} (a parent folder is closed to "
                                "others): choose a server folder under an open path, or chmod o+x its parents")

    def initialise(self) -> bool:
        """Create the cluster on first start; True if it was created now."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise PostgresError(f"no `{SYSTEM_USER}` system user: install Debian's postgresql package "
                                    "(apt-get install postgresql), which creates it") from None
        self._check_reachable()
        for path in (self.data, self.socket):
            path.mkdir(mode=0o700, exist_ok=True)
            self._hand_over(path)
        if (self.data / "PG_VERSION").is_file():
            return False
        if any(self.data.iterdir()):
            raise PostgresError(f"{self.data} is neither empty nor a PostgreSQL cluster: move it away")
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--no-instructions", what="initdb")
        return True

    def start(self) -> None:
        """Start the server (pg_ctl waits until it accepts connections) and make the database once."""
        if not self.log.exists():
            self.log.touch()
        self._hand_over(self.log)
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.socket}' -c port={SOCKET_PORT}"
        done = subprocess.run(_as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                                         "-w", "-t", "60", "-o", options, "start"]),
                              capture_output=True, text=True, cwd="/")
        if done.returncode != 0:
            raise PostgresError(f"PostgreSQL did not start: {_last_line(self.log.read_text(errors='replace'))} "
                                f"(log: {self.log})")
        exists = self._run("psql", "-h", str(self.socket), "-p", str(SOCKET_PORT), "-U", SUPERUSER, "-d",
                           "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
                           what="looking up the database")
        if exists.strip() != "1":
            self._run("createdb", "-h", str(self.socket), "-p", str(SOCKET_PORT), "-U", SUPERUSER, DATABASE,
                      what="createdb")

    def pid(self) -> int | None:
        """The postmaster's PID while it runs (first line of postmaster.pid), else None."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError, PermissionError):
            return None

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, committed data kept; waits until it is down."""
        if self.pid() is None:
            return
        subprocess.run(_as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60",
                                  "stop"]), capture_output=True, cwd="/")
