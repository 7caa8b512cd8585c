"""Continue an unfinished run: `resume=last` (the experiment's newest resumable run) or
`resume=<run id>`, in the same output folder and the same MLflow run, from its `last` checkpoint.

Resumable: RUNNING with its process gone (a crash or SIGKILL), KILLED, or FAILED by an exception,
and with a checkpoint; never a diverged run, never a finished one. The config must be the run's
own (its logged params): a resumed run is the same run, not a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.config import ConfigError

RESUMABLE = ("RUNNING", "KILLED", "FAILED")


@dataclass(frozen=True)
class Resumable:
    run_id: str
    out_dir: Path
    checkpoint: Path
    step: int


def _why_not(run) -> str | None:
    from mnist_pipeline.tracking.runs import process_state

    tags = run.data.tags
    if run.info.status not in RESUMABLE:
        return f"it is {run.info.status}"
    if "diverged_at_step" in tags:
        return f"it diverged at step {tags['diverged_at_step']}"
    if "sweep" in tags and "mlflow.parentRunId" not in tags:
        return "it is a sweep's parent run"
    if run.info.status == "RUNNING" and not (verdict := process_state(tags)).gone:
        return f"it may still be running ({verdict.why})"
    if not (Path(tags.get("output_dir", "/nonexistent")) / "checkpoints" / "last.ckpt").is_file():
        return "it has no checkpoint yet"
    return None


def find(cfg) -> Resumable:
    """The run `cfg.resume` names, checked; a ConfigError saying why when there is none."""
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.store import StoreError, experiment_id, use_store

    uri = use_store(cfg.logger.tracking_uri)
    client = MlflowClient(uri)
    if cfg.resume == "last":
        try:
            runs = client.search_runs([experiment_id(client, cfg.logger.experiment_name)],
                                      order_by=["attributes.start_time DESC"], max_results=200)
        except StoreError:
            runs = []
        run = next((r for r in runs if _why_not(r) is None), None)
        if run is None:
            raise ConfigError(f"resume=last: no resumable run in experiment {cfg.logger.experiment_name!r} "
                              "(RUNNING with its process gone, KILLED, or FAILED, with a checkpoint)")
    else:
        try:
            run = client.get_run(str(cfg.resume))
        except Exception as e:  # MlflowException: unknown id
            raise ConfigError(f"resume={cfg.resume}: no such MLflow run in {uri}") from e
        reason = _why_not(run)
        if reason:
            raise ConfigError(f"resume={cfg.resume}: cannot resume this run: {reason}")
    return load(cfg, run)


def load(cfg, run) -> Resumable:
    """`run` as a Resumable: its config checked against `cfg`, its `last` checkpoint's step read."""
    import torch

    check_same_config(cfg, run)
    out_dir = Path(run.data.tags["output_dir"])
    checkpoint = out_dir / "checkpoints" / "last.ckpt"
    try:
        step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])
    except Exception as e:
        raise ConfigError(f"resume: the checkpoint {checkpoint} is unreadable ({type(e).__name__}): "
                          "it cannot be resumed") from e
    return Resumable(run.info.run_id, out_dir, checkpoint, step)


def check_same_config(cfg, run) -> None:
    from mnist_pipeline.tracking.runs import flat_params

    logged = run.data.params
    layout = ("threads", "world_size")  # the machine's share, logged as used: may differ on resume
    now = flat_params(cfg)
    differ = sorted(k for k, v in now.items() if k in logged and logged[k] != v and k not in layout)
    if differ:
        shown = ", ".join(f"{k}={logged[k]} (now {now[k]})" for k in differ[:5])
        raise ConfigError(f"resume with the run's own settings: {shown}")
