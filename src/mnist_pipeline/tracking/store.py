"""Where MLflow lives: the store, its experiments, and the lock of an embedded store.

The store is `logger.tracking_uri` (training) or `--tracking-uri` (every other command) if given,
else $MLFLOW_TRACKING_URI, else the project's embedded store: `sqlite:///<abs project>/mlruns/mlflow.db`
with artifacts in `<abs project>/mlruns/artifacts` (absolute, so DVC experiments run in a
temporary copy of the repo still land in it). The experiment is `logger.experiment_name` or
`--experiment`, else $MLFLOW_EXPERIMENT_NAME, else the default written once, in
`conf/logger/mlflow.yaml`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from mnist_pipeline.config import ConfigError, project_root

LOGGER_CONFIG = Path("conf") / "logger" / "mlflow.yaml"


class StoreError(LookupError):
    """No store, no such experiment or run: a one-line message saying what to do."""


class ServerAway(StoreError):
    """No tracking server answers; `reason` says how it failed (refused, no answer within 5 s)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def embedded_uri() -> str:
    """The repo's own store. A queued DVC experiment runs in a temporary copy of the repo; DVC_ROOT
    names the repo itself, where the store lives."""
    root = Path(os.environ.get("DVC_ROOT") or project_root())
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def tracking_uri(explicit: str | None = None) -> str:
    """`explicit`, else $MLFLOW_TRACKING_URI, else the repo's embedded store."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()


def experiment_name(explicit: str | None = None) -> str:
    """`explicit`, else $MLFLOW_EXPERIMENT_NAME, else `experiment_name` of conf/logger/mlflow.yaml
    (which reads the same variable: training and the other commands always agree)."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return os.environ["MLFLOW_EXPERIMENT_NAME"]
    from omegaconf import OmegaConf

    path = project_root() / LOGGER_CONFIG
    if not path.is_file():
        raise ConfigError(f"no {LOGGER_CONFIG} under {project_root()}: run from the project, or pass --experiment")
    return str(OmegaConf.load(path).experiment_name)


def add_store_args(parser) -> None:
    """The flags of every command that is not Hydra's, naming the store as training's
    `logger.tracking_uri=` and `logger.experiment_name=` do."""
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else the repo's mlruns/)")
    parser.add_argument("--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else "
                                             f"experiment_name in {LOGGER_CONFIG})")


def use_store(explicit: str | None = None) -> str:
    """Point this process's MLflow calls at the store (failing fast: `fail_fast`); returns its URI."""
    import mlflow

    uri = tracking_uri(explicit)
    fail_fast(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def embedded_db(uri: str) -> Path | None:
    """The SQLite file of an embedded store, None for a server or another database."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def fingerprint(uri: str) -> list | None:
    """What changes whenever anything is written to an embedded store (its SQLite files' sizes and
    modification times), for caching its answers; None for a server, whose answers are not cached."""
    db = embedded_db(uri)
    if db is None:
        return None
    state = []
    for path in (db, Path(f"{db}-wal")):
        if path.exists():
            stat = path.stat()
            state.append([str(path), stat.st_mtime_ns, stat.st_size])
    return state or None


def store_lock(uri: str):
    """A lock that makes writers of an embedded store take turns where MLflow alone would race
    (creating the store, an experiment, a registered model); a server serialises them itself."""
    db = embedded_db(uri)
    if db is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{db}.lock")


# The first contact with a tracking server: short, so that a wrong address or a server that is down
# is one line within seconds, not the MLflow client's retries (~4 minutes) and a long traceback.
FIRST_CONTACT_TIMEOUT_S = 5.0


def check_reachable(uri: str, timeout_s: float = FIRST_CONTACT_TIMEOUT_S) -> None:
    """A tracking server (http/https URI) answers, and takes this client's credentials; StoreError
    in one line otherwise. Other stores (a SQLite file) are not probed."""
    import base64
    import json
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    request = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        token = base64.b64encode(f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        if e.code == 401 and not user:
            raise StoreError(f"the MLflow server {uri} requires a login (401): set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD") from None
        if e.code == 401:
            raise StoreError(f"the MLflow server {uri} refused user {user!r} (401, wrong user name or password): "
                             "fix MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD") from None
        raise StoreError(f"the MLflow server at {uri} answered {e.code} {e.reason}: is this an MLflow tracking "
                         "server? fix logger.tracking_uri (--tracking-uri) or MLFLOW_TRACKING_URI") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = f"no answer within {timeout_s:g} s"
        raise ServerAway(f"no MLflow server answers at {uri} ({reason}): start it (make server) or fix "
                         "logger.tracking_uri (--tracking-uri) or MLFLOW_TRACKING_URI", str(reason)) from None


def fail_fast(uri: str) -> None:
    """Against a server, an MLflow request fails within seconds (two quick retries, 10 s timeout)
    instead of the client's ~4 minutes of retries: training's own writer retries off the training
    thread for `logger.retry_s`, and what the server does not take is kept (`spool.py`)."""
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def open_store(explicit: str | None = None):
    """(client, uri) of the store training uses, for commands that read runs. A missing embedded
    store is a StoreError, not created empty."""
    from mlflow.tracking import MlflowClient

    uri = use_store(explicit)
    db = embedded_db(uri)
    if db is not None and not db.is_file():
        raise StoreError(f"no MLflow store at {db}: train a model first (mnist train) or pass --tracking-uri")
    check_reachable(uri)
    return MlflowClient(uri), uri


def experiment_id(client, name: str) -> str:
    """The id of the experiment called `name`; StoreError if there is none."""
    found = client.get_experiment_by_name(name)
    if found is None:
        raise StoreError(f"no experiment {name!r} in this store: train something first (mnist train) "
                         "or pass --experiment")
    return found.experiment_id


def ensure_experiment(uri: str, name: str) -> str:
    """The experiment's id, creating the store and experiment once, under a lock: several processes
    creating a fresh SQLite store at once can break its schema migration. On a server no file lock
    helps: when another process creates the experiment between our look-up and our create, the
    server answers RESOURCE_ALREADY_EXISTS, and the experiment it created is the one."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.tracking import MlflowClient

    db = embedded_db(uri)
    artifact_location = (db.parent / "artifacts").as_uri() if db is not None else None  # beside the database
    with store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id
