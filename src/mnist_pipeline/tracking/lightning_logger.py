"""The Lightning logger of a run's MLflow metrics: buffered, and exact across a crash and resume.

The only module of `tracking/` that imports Lightning: the commands that only read runs (compare,
runs, promote, predict) never pay for its import.
"""

from __future__ import annotations

import time

from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from mnist_pipeline.tracking.store import fail_fast, tracking_uri


class BufferedMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, but per-step metrics are kept and sent in one `log_batch` every
    `flush_every_n_steps` steps and at the end (one SQLite transaction costs ~5 ms: one per step
    would cost more than the step). Points lost by a crash are not lost: every checkpoint holds the
    whole history (reports.HistoryInCheckpoint), and a resumed run sends what MLflow lacks
    (`backfill`) and skips what it has. The run's final status is left to the caller, which knows
    why the run ended.

    Sending is a background writer's job (`writer.py`): the server going away never stalls
    training. What it does not take within `retry_s` goes to the run's output folder (`spool`); from
    the end of a fit whose points could not all be sent (`lost`), the rest goes there directly."""

    def __init__(self, *, flush_every_n_steps: int = 200, retry_s: float = 120.0, spool=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.flush_every_n_steps = flush_every_n_steps
        self.retry_s, self.spool = retry_s, spool
        self.lost = False
        self._pending: list = []
        self._last_flush_step = 0
        self._writer = None
        self.logged_until: dict[str, int] = {}  # a resumed run: the last step MLflow holds, per curve

    @rank_zero_only
    def backfill(self, history: dict[str, list[tuple[int, float]]]) -> None:
        """A resumed run: send the checkpoint's points that MLflow lacks (logged, not yet flushed,
        when the process died), and from now on skip the steps it already holds (those after the
        checkpoint, flushed before the process died, are trained again)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, points in history.items():
            held = {m.step for m in self.experiment.get_metric_history(self.run_id, key)}
            missing = [(step, value) for step, value in points if step not in held]
            self._pending += [Metric(key=key, value=value, timestamp=now, step=step) for step, value in missing]
            self.logged_until[key] = max([*held, *(step for step, _ in missing)], default=-1)

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if key == "epoch" or (step is not None and step <= self.logged_until.get(key, -1)):
                continue
            self._pending.append(Metric(key=key, value=float(value), timestamp=now, step=step or 0))
        if step is not None and step - self._last_flush_step >= self.flush_every_n_steps:
            self.flush()
            self._last_flush_step = step

    @rank_zero_only
    def flush(self) -> None:
        """Hand what is pending to the background writer: training never waits on the server."""
        pending, self._pending = self._pending, []
        if self.lost and self.spool is not None:
            self._keep([pending])
            return
        if self._writer is None:
            from mnist_pipeline.tracking.writer import BackgroundWriter

            self._writer = BackgroundWriter(self._send, retry_s=self.retry_s,
                                            set_aside=self._keep if self.spool is not None else None)
        for i in range(0, len(pending), 1000):  # MLflow's limit per batch
            self._writer.submit(pending[i : i + 1000])

    def _send(self, batch: list) -> None:
        self.experiment.log_batch(self.run_id, metrics=batch)

    def _keep(self, batches: list[list]) -> None:
        points = [m for batch in batches for m in batch]
        if points:
            self.spool.keep(self.run_id, self._tracking_uri, metrics=points)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Send everything, waiting at most `retry_s` for a server that is away; what it did not
        take is in the spool, and so will be what follows (`lost`)."""
        self.flush()
        writer, self._writer = self._writer, None
        if writer is None:
            return
        unsent = writer.close()
        if unsent and self.spool is not None:
            self._keep(unsent)
        self.lost = self.lost or writer.gave_up or bool(unsent)


def attach_logger(cfg, run_id: str, out_dir=None) -> BufferedMLFlowLogger:
    """A Lightning logger writing into an existing run, whose points the server does not take go
    to `out_dir`'s spool. Against a server, each request fails fast (`store.fail_fast`): the
    logger's own writer retries, off the training thread, for `logger.retry_s`."""
    from mnist_pipeline.tracking.spool import Spool

    uri = tracking_uri(cfg.logger.tracking_uri)
    fail_fast(uri)
    return BufferedMLFlowLogger(tracking_uri=uri, run_id=run_id, flush_every_n_steps=cfg.logger.flush_every_n_steps,
                                retry_s=cfg.logger.get("retry_s", 120), spool=out_dir and Spool(out_dir))
