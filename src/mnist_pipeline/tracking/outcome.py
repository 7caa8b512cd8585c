"""The end of a training run's records: the config, reports, plots and checkpoints as artifacts, its
last tags and metrics, its model (`logged_model.py`) and its final status. Sent to the run; or,
with its tracking server away, kept in the run's output folder (`spool.py`), and sent by the next
`mnist runs sync` (`sync.py`), or at once if the server is back by the time the run ends."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from mnist_pipeline.tracking.spool import Spool, TrackingLost, tracking_errors
from mnist_pipeline.tracking.store import StoreError

log = logging.getLogger(__name__)


@dataclass
class EndOfRun:
    """What a finished run adds besides its metric curves and its model."""

    files: list[Path]                      # reports and plots
    checkpoints: list[str]                 # best, last (empty strings are left out)
    metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0
    tags: dict[str, str] = field(default_factory=dict)

    def artifacts(self) -> list[tuple[Path, str]]:
        """(file, artifact folder) of every file."""
        reports = [(p, "reports/plots" if p.parent.name == "plots" else "reports") for p in self.files]
        return reports + [(Path(p), "checkpoints") for p in self.checkpoints if p]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] if text else type(e).__name__)


def send_or_keep(run_id: str, cfg, out_dir: Path, end: EndOfRun, model_logged, best_checkpoint: str | None,
                 lost: bool) -> None:
    """Send `end` and the config to the run, after the model (`model_logged`: the future of its
    logging, None when it was not tried). When the server is away (`lost`: the run's metrics could
    not all be sent; or a write here fails), all of it goes to the spool, the model as the
    checkpoint it is logged from."""
    from mlflow.entities import Metric
    from omegaconf import OmegaConf

    from mnist_pipeline.tracking.store import tracking_uri

    config = OmegaConf.to_yaml(cfg, resolve=True)
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, end.step) for k, v in end.metrics.items()]
    if not lost and model_logged is not None:
        try:
            model_logged.result()
            _send(run_id, config, end, metrics)
            return
        except tracking_errors() as e:
            log.warning("the tracking server failed at the end of run %s (%s): its records are kept", run_id,
                        _one_line(e))
    spool = Spool(out_dir)
    config_file = spool.keep_file("config.yaml", config)
    spool.keep(run_id, tracking_uri(cfg.logger.tracking_uri), metrics=metrics, tags=end.tags,
               artifacts=[(config_file, ""), *end.artifacts()],
               model_checkpoint=Path(best_checkpoint) if best_checkpoint else None)


def _send(run_id: str, config: str, end: EndOfRun, metrics: list) -> None:
    import tempfile

    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        config_yaml = Path(tmp) / "config.yaml"
        config_yaml.write_text(config)
        client.log_artifact(run_id, str(config_yaml))
    for path, folder in end.artifacts():
        client.log_artifact(run_id, str(path), folder)
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in end.tags.items()])


def tag_or_keep(run_id: str, uri: str, out_dir: Path, key: str, value: str) -> None:
    """Set a tag on the run; with its server away, keep it in the spool."""
    from mnist_pipeline.tracking import runs

    try:
        runs.set_tag(run_id, key, value)
    except tracking_errors():
        Spool(out_dir).keep(run_id, uri, tags={key: value})


def end_run(run_id: str, status: str, uri: str, out_dir: Path) -> None:
    """End the run with `status`. If anything of it is kept in the spool (or the server fails
    now), one more try sends it all (the server may be back); TrackingLost if that fails too."""
    from mnist_pipeline.tracking import runs
    from mnist_pipeline.tracking.sync import sync

    spool = Spool(out_dir)
    if not spool.exists():
        try:
            runs.end_run(run_id, status)
            return
        except tracking_errors() as e:
            log.warning("could not mark run %s %s: %s", run_id, status, _one_line(e))
    spool.keep(run_id, uri, status=status)
    try:
        sync(out_dir, uri)
    except (StoreError, *tracking_errors()) as e:
        raise TrackingLost(run_id, uri, out_dir, getattr(e, "reason", None) or _one_line(e), status) from None
