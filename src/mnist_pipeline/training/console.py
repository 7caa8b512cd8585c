"""What a training prints for people: a summary when it ends, and one line when it fails.

A failure (a full disk, a tracking store that keeps refusing writes, a bug of ours) prints one
line naming what failed; its traceback goes to the run's log file, where whoever debugs it looks,
not onto the terminal.
"""

from __future__ import annotations

import traceback
from pathlib import Path

UI = "http://127.0.0.1:5000"  # `mnist ui`'s address


def log_file() -> Path | None:
    """The Hydra job's log file (`<output folder>/<job name>.log`), or None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return Path(hydra.runtime.output_dir) / f"{hydra.job.name}.log"


def failure_line(error: BaseException) -> str:
    """`error: training failed: ...`, after appending the traceback to the job's log file."""
    text = " ".join(str(error).split()) or "no message"
    where = ""
    log = log_file()
    if log is not None:
        try:
            with open(log, "a") as f:
                f.write("".join(traceback.format_exception(error)))
            where = f" (the traceback is in {log})"
        except OSError:  # the disk that failed may hold the log too
            where = " (its traceback could not be written to the log either)"
    return f"error: training failed: {type(error).__name__}: {text[:300]}{where}"


def run_address(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where the run is in the MLflow UI: the team server's page, or the one `mnist ui` serves."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else UI
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def summary(metrics: dict, out_dir: Path | None, run=None, tracking_uri: str | None = None) -> str:
    """The end-of-run lines: the selection and test metrics, the run, its folder, its UI address."""
    lines = [f"done: val_full/acc {metrics.get('val_full/acc', float('nan')):.4f}, "
             f"test/acc {metrics.get('test/acc', float('nan')):.4f}"]
    if run is not None:
        lines.append(f"  run:     {run.info.run_name} ({run.info.run_id})")
    if out_dir is not None:
        lines.append(f"  folder:  {out_dir}")
    if run is not None and tracking_uri:
        from mnist_pipeline.tracking.store import embedded_uri

        ui = run_address(tracking_uri, run.info.experiment_id, run.info.run_id)
        if not tracking_uri.startswith(("http://", "https://")):
            ui += "   (`mnist ui` serves it)" if tracking_uri == embedded_uri() else \
                  f"   (`mnist ui --tracking-uri {tracking_uri}` serves it)"
        lines.append(f"  MLflow:  {ui}")
    return "\n".join(lines)
