"""Where MLflow lives, and what every run records besides its metrics.

The store is `logger.tracking_uri` if given, else $MLFLOW_TRACKING_URI, else the project's embedded
store: `sqlite:///<abs project>/mlruns/mlflow.db` with artifacts in `<abs project>/mlruns/artifacts`
(absolute, so DVC experiments run in a temporary copy of the repo still land in it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.config import project_root

# Run-control keys: how a run is started, not what it is. MLflow refuses a param whose value
# changes within a run, so these are never logged.
RUN_CONTROL_KEYS = ("ckpt_path", "resume")


def tracking_uri(explicit: str | None = None) -> str:
    """`explicit`, else $MLFLOW_TRACKING_URI, else the repo's embedded store. A queued DVC experiment
    runs in a temporary copy of the repo; DVC_ROOT names the repo itself, where the store lives."""
    root = Path(os.environ.get("DVC_ROOT") or project_root())
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def ensure_experiment(uri: str, name: str) -> str:
    """The experiment's id, creating the store and experiment once, under a lock: several processes
    creating a fresh SQLite store at once can break its schema migration. On a server no file lock
    helps: when another process creates the experiment between our look-up and our create, the
    server answers RESOURCE_ALREADY_EXISTS, and the experiment it created is the one."""
    from filelock import FileLock
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.tracking import MlflowClient

    lock_path = artifact_location = None
    if uri.startswith("sqlite:///"):  # an embedded store: artifacts beside the database, absolute
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        lock_path = f"{db}.lock"
        artifact_location = (db.parent / "artifacts").as_uri()
    with FileLock(lock_path) if lock_path else contextlib.nullcontext():
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


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "--verify", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown"}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def process_tags() -> dict[str, str]:
    """Host, PID and process start time: enough to tell later whether a RUNNING run's process is gone."""
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "pid_start_time": f"{psutil.Process().create_time():.2f}",
    }


START_TIME_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class Verdict:
    gone: bool
    why: str


def process_state(tags: dict[str, str], host: str | None = None) -> Verdict:
    """Whether the process that owns a run (by its tags) is gone, as seen from this host."""
    import psutil

    host = host or socket.gethostname()
    run_host, pid, started = tags.get("host"), tags.get("pid"), tags.get("pid_start_time")
    if not run_host or not pid or not started:
        return Verdict(False, "no host/pid tags: cannot tell")
    if run_host != host:
        return Verdict(False, f"runs on host {run_host}, not this one ({host})")
    try:
        pid_n, started_s = int(pid), float(started)
    except ValueError:
        return Verdict(False, f"unreadable pid tags (pid={pid!r}, pid_start_time={started!r})")
    try:
        proc = psutil.Process(pid_n)
        created, status = proc.create_time(), proc.status()
    except psutil.NoSuchProcess:
        return Verdict(True, f"no process {pid_n}")
    except psutil.AccessDenied:
        return Verdict(False, f"process {pid_n} exists but cannot be inspected")
    if abs(created - started_s) > START_TIME_TOLERANCE_S:
        return Verdict(True, f"pid {pid_n} now belongs to another process")
    if status == psutil.STATUS_ZOMBIE:
        return Verdict(True, f"process {pid_n} is a zombie")
    return Verdict(False, f"process {pid_n} is alive")


def flat_params(cfg, extra: dict | None = None) -> dict[str, str]:
    """The composed config as `a.b.c` keys (run-control keys left out), plus `extra`."""
    from omegaconf import OmegaConf

    def walk(node, prefix: str):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and prefix:
                    yield prefix.rstrip("."), value
                elif not (key.startswith("_") and key.endswith("_")):
                    yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix.rstrip("."), node

    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in RUN_CONTROL_KEYS:
        plain.pop(key, None)
    params = {k: ("null" if v is None else str(v)) for k, v in walk(plain, "")}
    params.update({k: str(v) for k, v in (extra or {}).items()})
    return params


def run_name(cfg, swept_keys: list[str] = ()) -> str:
    """Readable and unique: `tfjs_cnn lr=0.15 bs=64 3f9a`, plus any other swept key's value
    (random suffix: not tied to the seed)."""
    import secrets

    from omegaconf import OmegaConf

    model = cfg.model.get("_target_", "model").rsplit(".", 1)[-1]
    model = {"TfjsCNN": "tfjs_cnn"}.get(model, model)
    parts = [model, f"lr={cfg.optimizer.lr:g}", f"bs={cfg.data.batch_size}"]
    for key in swept_keys:
        if key not in ("optimizer.lr", "data.batch_size"):
            parts.append(f"{key.rsplit('.', 1)[-1]}={OmegaConf.select(cfg, key, default=key)}")
    return " ".join([*parts, secrets.token_hex(2)])


def use_store(explicit: str | None = None) -> str:
    """Point this process's MLflow calls at the store; returns its URI."""
    import mlflow

    uri = tracking_uri(explicit)
    mlflow.set_tracking_uri(uri)
    return uri


class NoStore(LookupError):
    """A command that reads runs found no store: it must not create an empty one."""


def open_store(explicit: str | None = None):
    """(client, uri) of the store training uses, for commands that read runs. A missing embedded
    store raises NoStore ("no MLflow store at <path>") instead of being created empty."""
    from mlflow.tracking import MlflowClient

    uri = use_store(explicit)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise NoStore(f"no MLflow store at {uri.removeprefix('sqlite:///')}")
    return MlflowClient(uri), uri


def start_run(cfg, *, processed_dir: Path, out_dir: Path, overrides: list[str], extra_params: dict | None = None) -> str:
    """Create the run with its tags and params; returns its id."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.processed import processed_sha256

    uri = use_store(cfg.logger.tracking_uri)
    experiment_id = ensure_experiment(uri, cfg.logger.experiment_name)
    tags = {
        **git_state(project_root()),
        **process_tags(),
        "hydra_overrides": " ".join(overrides),
        "data_sha256": processed_sha256(processed_dir),
        "output_dir": str(out_dir),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    from mnist_pipeline.sweep import PARENT_ENV, SWEEP_ENV, SWEPT_KEYS_ENV

    if os.environ.get(PARENT_ENV):  # a point of a -m sweep: a child of the sweep's run
        tags.update({"mlflow.parentRunId": os.environ[PARENT_ENV], "sweep": os.environ.get(SWEEP_ENV, "")})
    swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=run_name(cfg, swept), tags=tags)
    run_id = run.info.run_id
    params = [Param(k, v[:6000]) for k, v in flat_params(cfg, extra_params).items()]
    for i in range(0, len(params), 100):  # MLflow's limit per batch
        client.log_batch(run_id, params=params[i : i + 100])
    return run_id


def reopen_run(run_id: str, step: int) -> None:
    """A resumed run is RUNNING again, recorded by this process (for `runs cleanup`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.update_run(run_id, status="RUNNING")
    for key, value in {**process_tags(), "resumed_at_step": str(step)}.items():
        client.set_tag(run_id, key, value)


def get_tag(run_id: str, key: str) -> str | None:
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_run(run_id).data.tags.get(key)


def set_tag(run_id: str, key: str, value: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_tag(run_id, key, value)


def end_run(run_id: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_terminated(run_id, status)


def log_metrics(run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def log_outcome(run_id: str, cfg, net, files: list[Path], checkpoints: list[str]) -> None:
    """What a finished run adds: the config, reports and plots, checkpoints, and the model."""
    import tempfile

    import mlflow
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        config_yaml = Path(tmp) / "config.yaml"
        config_yaml.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifact(run_id, str(config_yaml))
    for path in files:
        client.log_artifact(run_id, str(path), "reports/plots" if path.parent.name == "plots" else "reports")
    for path in checkpoints:
        if path:
            client.log_artifact(run_id, path, "checkpoints")
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        log_model(net)
        # leaving the block ends the run FINISHED; the caller sets the final status right after


def log_model(net) -> None:
    """The net with softmax on top: float pixels in [0, 1], shape (N, 1, 28, 28) -> 10 probabilities.
    Pickled (no slow torch.export) with its requirements given (no inference subprocess)."""
    import copy

    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    served = torch.nn.Sequential(copy.deepcopy(net).cpu(), torch.nn.Softmax(dim=1)).eval()
    example = np.zeros((2, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        probs = served(torch.from_numpy(example)).numpy()
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # its pickle warning: we chose pickle
    mlflow.pytorch.log_model(
        served,
        name="model",
        serialization_format="pickle",
        signature=infer_signature(example, probs),
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )


def ui(port: int = 5000) -> None:
    """`make ui`: the MLflow UI over the project's store, bound to 127.0.0.1 only."""
    uri = tracking_uri()
    experiment_id = ensure_experiment(uri, "mnist")
    print(f"MLflow UI over {uri}\n  training runs: http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs"
          "\n  (Ctrl-C stops it)", flush=True)
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner: 2 processes, not 13
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"])


if __name__ == "__main__":
    if sys.argv[1:2] != ["ui"]:
        sys.exit("usage: python -m mnist_pipeline.tracking ui [PORT]")
    ui(int(sys.argv[2]) if len(sys.argv) > 2 else 5000)
