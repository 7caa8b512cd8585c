"""May this user write to this experiment on this MLflow server? Asked before any work, so that a
wrong password or a READ-only permission is one line at the start, not a failure after training.

Only for http(s) stores (a server, possibly with basic-auth logins); a local store needs no check.
The credentials are MLflow's own: $MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD.
Writing is probed with a request the auth layer checks as an experiment edit (what creating a run
needs) but which the server then rejects, changing nothing: setting an experiment tag without a key
(403 for a READ user, 400 for one who may write). Deleting a tag is no probe: it needs more than
EDIT (an EDIT user gets 403 there too).
"""

from __future__ import annotations

import os

from mnist_pipeline.tracking.store import StoreError, check_reachable

TIMEOUT_S = 15


def _user() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or None


def _auth() -> tuple[str, str] | None:
    user = _user()
    return (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None


def _refused(status: int, uri: str) -> StoreError | None:
    """The one-line error for a 401 (no or wrong credentials), None otherwise."""
    if status != 401:
        return None
    user = _user()
    if user is None:
        return StoreError(f"the MLflow server {uri} requires a login (401): set MLFLOW_TRACKING_USERNAME and "
                          "MLFLOW_TRACKING_PASSWORD")
    return StoreError(f"the MLflow server {uri} refused user {user!r} (401, wrong user name or password): fix "
                      "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")


def check_write_access(uri: str, experiment: str) -> None:
    """StoreError (one line naming the user and the experiment) unless this user can write runs into
    `experiment` on the server at `uri`; a missing experiment passes (it is created, as anyone may)."""
    if not uri.startswith(("http://", "https://")):
        return
    check_reachable(uri)  # answers within seconds, and takes these credentials
    import requests

    base = uri.rstrip("/")
    try:
        found = requests.get(f"{base}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": experiment},
                             auth=_auth(), timeout=TIMEOUT_S)
    except requests.RequestException as e:
        raise StoreError(f"no MLflow server answers at {uri} ({type(e).__name__}): start it (make server) or fix "
                         "MLFLOW_TRACKING_URI / logger.tracking_uri") from None
    if (error := _refused(found.status_code, uri)) is not None:
        raise error
    if found.status_code == 404:
        return
    if found.status_code == 403:
        raise StoreError(f"user {_user()!r} may not read experiment {experiment!r} on {uri} (403): ask an admin "
                         "for permission, or use another experiment (logger.experiment_name=...)")
    if found.status_code != 200:
        raise StoreError(f"the MLflow server {uri} answered {found.status_code} looking up experiment "
                         f"{experiment!r}: check the server's log")
    experiment_id = found.json()["experiment"]["experiment_id"]
    probe = requests.post(f"{base}/api/2.0/mlflow/experiments/set-experiment-tag", auth=_auth(), timeout=TIMEOUT_S,
                          json={"experiment_id": experiment_id})  # no key: refused after the permission check
    if probe.status_code == 403:
        raise StoreError(f"user {_user()!r} may only read experiment {experiment!r} on {uri} (403): ask its owner "
                         "or an admin for EDIT permission, or use another experiment (logger.experiment_name=...)")
    if (error := _refused(probe.status_code, uri)) is not None:
        raise error
