"""`mnist runs sync <output folder>`: send what a run's server did not take (`spool.py`) into that run.

Only what the run lacks is sent: a metric point whose (key, step) the run holds, a param or tag it
holds with that value, an artifact file it holds with that size, a model when it has a READY one,
are all skipped. So a sync that stopped half-way is simply run again, and syncing twice sends
nothing the second time (the folder is removed once everything is in).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mnist_pipeline.tracking.spool import FOLDER, Spool
from mnist_pipeline.tracking.store import StoreError, check_reachable, use_store


def sync(out_dir: Path, tracking_uri: str | None = None) -> dict[str, int] | None:
    """Send the folder's kept records into their run (at `tracking_uri`, else the store the run was
    trained against); what was sent, counted, or None when nothing is kept there."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    spool = Spool(out_dir)
    if not spool.exists():
        return None
    record = spool.record()
    run_id = record.get("run_id")
    if not run_id:
        raise StoreError(f"{spool.folder} names no run: it was not written by `mnist train`")
    uri = use_store(tracking_uri or record.get("tracking_uri"))
    check_reachable(uri)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise StoreError(f"run {run_id} of {out_dir} is not in the store {uri}: pass the store it was trained "
                         "against (--tracking-uri)") from None
    sent = {"metrics": _metrics(client, run_id, spool.metrics())}
    sent["params"] = _params(client, run, record["params"])
    tags = {k: v for k, v in record["tags"].items() if run.data.tags.get(k) != v}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    sent["tags"] = len(tags)
    sent["artifacts"] = _artifacts(client, run_id, spool, record["artifacts"])
    sent["model"] = _model(client, run, spool, record.get("model_checkpoint"))
    status = record.get("status")
    sent["status"] = int(bool(status) and run.info.status != status)
    if sent["status"]:
        client.set_terminated(run_id, status)
    spool.clear()
    return sent


def _metrics(client, run_id: str, points: list[dict]) -> int:
    from mlflow.entities import Metric

    by_key: dict[str, dict[int, dict]] = defaultdict(dict)
    for point in points:  # a point kept twice (the same key and step) is sent once: the last
        by_key[point["key"]][point["step"]] = point
    missing = []
    for key, by_step in by_key.items():
        held = {m.step for m in client.get_metric_history(run_id, key)}
        missing += [Metric(key, p["value"], p["timestamp"], step) for step, p in sorted(by_step.items())
                    if step not in held]
    for i in range(0, len(missing), 1000):  # MLflow's limit per batch
        client.log_batch(run_id, metrics=missing[i : i + 1000])
    return len(missing)


def _params(client, run, params: dict[str, str]) -> int:
    from mlflow.entities import Param

    missing = [Param(k, v) for k, v in params.items() if k not in run.data.params]
    for i in range(0, len(missing), 100):
        client.log_batch(run.info.run_id, params=missing[i : i + 100])
    return len(missing)


def _artifacts(client, run_id: str, spool: Spool, artifacts: list[list[str]]) -> int:
    held: dict[str, dict[str, int | None]] = {}
    sent = 0
    for stored, folder in artifacts:
        path = spool.path(stored)
        if not path.is_file():
            raise StoreError(f"{path}, kept to be sent as an artifact of run {run_id}, is gone")
        if folder not in held:
            held[folder] = {Path(f.path).name: f.file_size for f in client.list_artifacts(run_id, folder or None)}
        if held[folder].get(path.name) == path.stat().st_size:
            continue
        client.log_artifact(run_id, str(path), folder or None)
        sent += 1
    return sent


def _model(client, run, spool: Spool, checkpoint: str | None) -> int:
    """Log the run's model from its checkpoint, unless the run has a READY model already."""
    if checkpoint is None:
        return 0
    from mnist_pipeline.tracking.logged_model import log_model, logged_model

    found = logged_model(client, run)
    if found is not None and str(found.status).endswith("READY"):
        return 0
    from mnist_pipeline.model.checkpoint import CheckpointError, architecture_of, read, rebuild

    path = spool.path(checkpoint)
    try:
        kept = read(path)
        net, architecture = rebuild(kept), architecture_of(kept)
    except CheckpointError as e:
        raise StoreError(f"the model of run {run.info.run_id} cannot be logged from {path}: {e}") from None
    log_model(run.info.run_id, net, architecture)
    return 1


def describe(sent: dict[str, int]) -> str:
    parts = [f"{sent['metrics']} metric points", f"{sent['params']} params", f"{sent['tags']} tags",
             f"{sent['artifacts']} artifacts", "the model" if sent["model"] else "no model (it had one)"]
    return ", ".join(parts) + (", and its final status" if sent["status"] else "")


NOTHING = f"nothing to send: no {FOLDER}/ in it (its run has everything)"
