"""What every run records besides its metrics, and finding runs: tags, params, names, status,
the sweep a run belongs to.

A training run is created here (`start_run`) with its tags and params, written to by the Lightning
logger (`lightning_logger.py`), and ended here with the status its process knows (`end_run`). A
sweep's points find their parent run through the environment (the `*_ENV` names below), which the
sweep callback sets in the launching process and every job inherits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.config import project_root
from mnist_pipeline.tracking.store import StoreError, ensure_experiment, use_store

# Run-control keys: how a run is started or shown, not what it is. MLflow refuses a param whose
# value changes within a run (a resumed run may change them), so these are never logged.
RUN_CONTROL_KEYS = ("ckpt_path", "resume", "progress_every_n_steps", "sweep", "logger.system_metrics",
                    "logger.system_metrics_interval")
# How runs are ranked: the model selection metric of every run (the whole val split, end of run).
SELECTION = "val_full/acc"
# Set by the sweep callback for every job of a -m sweep: the parent run, the sweep's name, its keys.
PARENT_ENV = "MNIST_PIPELINE_PARENT_RUN_ID"
SWEEP_ENV = "MNIST_PIPELINE_SWEEP"
SWEPT_KEYS_ENV = "MNIST_PIPELINE_SWEPT_KEYS"
# The SLURM job a run was started in (`slurm_job_id()`): a requeued job finds its run by it.
SLURM_JOB_TAG = "slurm_job_id"
# Short names of the keys people sweep most, in run names and tables.
SHORT_NAMES = {"optimizer.lr": "lr", "data.batch_size": "bs"}


def short_name(key: str) -> str:
    """`lr` for optimizer.lr, `bs` for data.batch_size, else the key's last part."""
    return SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])


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


def slurm_job_id() -> str | None:
    """This process's SLURM job as `scontrol` names it (`<array job>_<task>` in a job array), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


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
    """The composed config as `a.b.c` keys (run-control keys left out), plus `extra`. A group's
    `_target_` is logged as the group (`optimizer=torch.optim.SGD`), except where the group names
    itself (`model.name=tfjs_cnn`: its `_target_` is the architectures' builder, the same for all)."""
    from omegaconf import OmegaConf

    def walk(node, prefix: str):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and prefix and "name" not in node:
                    yield prefix.rstrip("."), value
                elif not (key.startswith("_") and key.endswith("_")):
                    yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix.rstrip("."), node

    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in RUN_CONTROL_KEYS:
        *parents, last = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    params = {k: ("null" if v is None else str(v)) for k, v in walk(plain, "")}
    params.update({k: str(v) for k, v in (extra or {}).items()})
    return params


def run_name(cfg, swept_keys: list[str] = ()) -> str:
    """Readable and unique: `tfjs_cnn lr=0.15 bs=64 3f9a`, plus any other swept key's value
    (random suffix: not tied to the seed)."""
    import secrets

    from omegaconf import OmegaConf

    parts = [str(cfg.model.get("name", "model")), f"lr={cfg.optimizer.lr:g}", f"bs={cfg.data.batch_size}"]
    for key in swept_keys:
        if key not in SHORT_NAMES:
            parts.append(f"{short_name(key)}={OmegaConf.select(cfg, key, default=key)}")
    return " ".join([*parts, secrets.token_hex(2)])


def sweep_tags(cfg) -> dict[str, str]:
    """The set `sweep.*` keys (the pruning ones only with pruning on), as tags of their own name."""
    control = dict(cfg.get("sweep") or {})
    if control.get("prune") is None:
        control = {k: v for k, v in control.items() if not k.startswith("prune")}
    return {k: str(v) for k, v in control.items() if v is not None}


def start_run(cfg, *, processed_dir: Path, out_dir: Path, overrides: list[str],
              extra_params: dict | None = None, tags: dict[str, str] | None = None) -> str:
    """Create the run with its tags (and `tags`), params and dataset inputs; returns its id."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.data.processed import processed_sha256, split_sha256s
    from mnist_pipeline.tracking.datasets import dataset_inputs

    uri = use_store(cfg.logger.tracking_uri)
    digests = split_sha256s(processed_dir)
    experiment_id = ensure_experiment(uri, cfg.logger.experiment_name)
    tags = {
        **(tags or {}),
        **git_state(project_root()),
        **process_tags(),
        "hydra_overrides": " ".join(overrides),
        "data_sha256": processed_sha256(processed_dir, digests),
        "output_dir": str(out_dir),
    }
    # The sweep's control of this point (conf/config.yaml `sweep:`), as tags of its own name.
    tags.update(sweep_tags(cfg))
    if slurm_job_id():
        tags[SLURM_JOB_TAG] = slurm_job_id()
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get(PARENT_ENV):  # a point of a -m sweep: a child of the sweep's run
        tags.update({"mlflow.parentRunId": os.environ[PARENT_ENV], "sweep": os.environ.get(SWEEP_ENV, "")})
    swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=run_name(cfg, swept), tags=tags)
    run_id = run.info.run_id
    params = [Param(k, v[:6000]) for k, v in flat_params(cfg, extra_params).items()]
    for i in range(0, len(params), 100):  # MLflow's limit per batch
        client.log_batch(run_id, params=params[i : i + 100])
    log_dataset_inputs(client, run_id, dataset_inputs(processed_dir, digests))
    return run_id


def log_dataset_inputs(client, run_id: str, inputs: list, attempts: int = 5) -> None:
    """Link the run to its dataset inputs. Runs started at once on the same data race to create the
    same dataset rows, and MLflow's store answers the loser with a unique-constraint error (SQLite
    and PostgreSQL alike): tried again, it finds the rows and only links them."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as e:
            text = str(e).lower()
            if attempt == attempts - 1 or not ("unique" in text or "integrity" in text or "duplicate" in text):
                raise
            time.sleep(0.1 * (attempt + 1))


def reopen_run(run_id: str, step: int, tags: dict[str, str] | None = None) -> None:
    """A resumed run is RUNNING again, recorded by this process (for `runs cleanup`), with `tags`."""
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.update_run(run_id, status="RUNNING")
    added = {**process_tags(), "resumed_at_step": str(step), **(tags or {})}
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in added.items()])


def get_tag(run_id: str, key: str) -> str | None:
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_run(run_id).data.tags.get(key)


def set_tag(run_id: str, key: str, value: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_tag(run_id, key, value)


def end_run(run_id: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_terminated(run_id, status)


def find_sweep(client, experiment_id: str, name: str | None = None):
    """The parent run of the sweep called `name`, or of the newest sweep; StoreError if none."""
    query = ("tags.sweep != ''" if name is None else f"tags.sweep = '{name}'")
    query += " and tags.`mlflow.parentRunId` IS NULL"
    parents = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise StoreError(f"no sweep named {name!r}" if name else "no sweep in this experiment yet: run "
                         "`mnist train -m optimizer.lr=0.05,0.15` first")
    return parents[0]


def point_runs(client, parent, filter_string: str = "", order_by: list[str] | None = None,
                 max_results: int = 10000) -> list:
    """The runs of a sweep (children of its parent run `parent`), optionally filtered and ordered."""
    query = f"tags.mlflow.parentRunId = '{parent.info.run_id}'" + (f" and {filter_string}" if filter_string else "")
    return client.search_runs([parent.info.experiment_id], query, order_by=order_by, max_results=max_results)
