"""Hardware use on every run: MLflow's own `SystemMetricsMonitor`, started by us for the run's id.

MLflow starts it only for runs made by `mlflow.start_run`; ours are made by the client
(`runs.start_run`), so it would never run (Lightning #20563 is the same trap). It samples CPU %,
memory, disk and network (and GPU utilisation, memory and power where `pynvml` finds a GPU) every
`logger.system_metrics_interval` seconds, in a thread of its own, as `system/*` metrics. One more
sample is taken when it stops, so a run of two seconds has one too. A resumed run continues its
steps (`resume_logging`).
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)


@contextlib.contextmanager
def system_metrics(run_id: str | None, cfg, uri: str, resumed: bool = False, node_id: str | None = None):
    """Record the machine's use into `run_id` while the block runs (not when
    `logger.system_metrics` is false, or without a run)."""
    if not run_id or not cfg.logger.get("system_metrics", True):
        yield
        return
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its "started/stopped" notes
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=cfg.logger.get("system_metrics_interval", 5),
                                   resume_logging=resumed, node_id=node_id, tracking_uri=uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        try:  # the last sample: every run has one, however short
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as e:  # the server away: the run's own records matter more
            log.warning("the last system metrics sample of run %s was not sent: %s", run_id, e)
