"""What a run's tracking server did not take, kept in the run's output folder until it is back.

Training never stops because tracking failed: metrics the background writer could not send within
`logger.retry_s`, and the end of the run (reports, checkpoints, config and model as artifacts, the
last tags and metrics, the final status) go to `<output folder>/mlflow-unsent/`:
- `run.json`: the run's id and store, tags, params, artifacts (file, artifact folder), the model's
  checkpoint and the status to set;
- `metrics.jsonl`: one point per line.
`mnist runs sync <output folder>` (`tracking.sync`) sends them into the same run, skipping what the
run already holds, and then removes the folder. The checkpoints themselves never leave the output
folder: tracking failing loses nothing.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

FOLDER = "mlflow-unsent"
RECORD, METRICS = "run.json", "metrics.jsonl"


def tracking_errors() -> tuple[type[BaseException], ...]:
    """What a tracking server (or its database) that is away raises in the MLflow client."""
    import requests
    from mlflow.exceptions import MlflowException

    return MlflowException, requests.RequestException, OSError


class TrackingLost(Exception):
    """Training ended, but its tracking server did not take the run's records: they are kept."""

    def __init__(self, run_id: str, uri: str, out_dir: Path, why: str, status: str = "FINISHED") -> None:
        self.run_id, self.out_dir = run_id, out_dir
        ended = "finished" if status == "FINISHED" else f"ended {status}"
        super().__init__(f"training {ended} (checkpoints in {out_dir / 'checkpoints'}), but the tracking server "
                         f"{uri} is away ({why}): run {run_id}'s records are kept in {out_dir / FOLDER}; once the "
                         f"server is back, send them with: mnist runs sync {out_dir}")


class Spool:
    """The records of the run whose output folder is `out_dir` that its server did not take."""

    _lock = threading.Lock()  # the writer's thread and the training thread both add metrics

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / FOLDER

    def exists(self) -> bool:
        return (self.folder / RECORD).is_file() or (self.folder / METRICS).is_file()

    def record(self) -> dict:
        path = self.folder / RECORD
        record = json.loads(path.read_text()) if path.is_file() else {}
        for key in ("tags", "params"):
            record.setdefault(key, {})
        record.setdefault("artifacts", [])
        return record

    def metrics(self) -> list[dict]:
        path = self.folder / METRICS
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []

    def keep(self, run_id: str, uri: str, *, metrics=(), tags: dict | None = None, params: dict | None = None,
             artifacts: list[tuple[Path, str]] = (), model_checkpoint: Path | None = None,
             status: str | None = None) -> None:
        """Add to what is kept: MLflow `Metric`s, tags, params, (file, artifact folder) pairs, the
        checkpoint the model is logged from, the final status. Each file is rewritten atomically."""
        from mnist_pipeline.atomic import write_text

        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            if metrics:
                path = self.folder / METRICS
                old = path.read_text() if path.is_file() else ""
                new = "".join(json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step})
                              + "\n" for m in metrics)
                write_text(path, old + new)
            record = self.record()
            record.update(run_id=run_id, tracking_uri=uri)
            record["tags"].update(tags or {})
            record["params"].update(params or {})
            for path, folder in artifacts:
                entry = [self._relative(path), folder]
                if entry not in record["artifacts"]:
                    record["artifacts"].append(entry)
            if model_checkpoint is not None:
                record["model_checkpoint"] = self._relative(model_checkpoint)
            if status is not None:
                record["status"] = status
            write_text(self.folder / RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")

    def keep_file(self, name: str, text: str) -> Path:
        """A file made for the run (its config.yaml), kept here to be sent as an artifact."""
        from mnist_pipeline.atomic import write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        write_text(self.folder / name, text)
        return self.folder / name

    def path(self, stored: str) -> Path:
        """A file named in run.json: relative to the output folder, or absolute."""
        return self.out_dir / stored

    def _relative(self, path) -> str:
        path, base = Path(path).resolve(), self.out_dir.resolve()
        return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
