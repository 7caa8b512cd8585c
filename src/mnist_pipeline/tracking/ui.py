"""`mnist ui` (`make ui`): the MLflow UI over the store training uses, bound to 127.0.0.1 only.

Prints the address of the experiment's training-runs table (MLflow 3's UI otherwise opens on a
GenAI overview page) and of the newest sweep's compare page, and replaces this process with
`mlflow server`: Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import sys

from mnist_pipeline.tracking.store import add_store_args, ensure_experiment, experiment_name, tracking_uri

HOST, PORT = "127.0.0.1", 5000
UI_URL = f"http://{HOST}:{PORT}"


def compare_page(ui_url: str, experiment_id: str, run_ids: list[str]) -> str:
    """The address of the MLflow UI's page comparing `run_ids` (parallel coordinates of the params
    against a metric, scatter and contour plots, the runs side by side). The route,
    `#/compare-runs?runs=<JSON list>&experiments=<JSON list>`, is in MLflow 3.17's UI but not in its
    docs: the browser test (tests/system/test_ui_browser.py) pins it."""
    import json
    from urllib.parse import quote

    runs, experiments = json.dumps(list(run_ids)), json.dumps([str(experiment_id)])
    return f"{ui_url.rstrip('/')}/#/compare-runs?runs={quote(runs)}&experiments={quote(experiments)}"


def newest_sweep_page(uri: str, experiment_id: str, ui_url: str) -> str | None:
    """The compare page of the experiment's newest sweep, or None when it has none."""
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.runs import find_sweep, point_runs
    from mnist_pipeline.tracking.store import StoreError

    client = MlflowClient(uri)
    try:
        parent = find_sweep(client, experiment_id)
    except StoreError:
        return None
    points = point_runs(client, parent)
    return compare_page(ui_url, experiment_id, [r.info.run_id for r in points]) if points else None


def main(argv: list[str] | None = None, prog: str = "mnist ui") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_store_args(parser)
    parser.add_argument("--port", type=int, default=PORT, help=f"port on {HOST} (default: {PORT})")
    args = parser.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    experiment_id = ensure_experiment(uri, experiment_name(args.experiment))
    ui_url = f"http://{HOST}:{args.port}"
    page = newest_sweep_page(uri, experiment_id, ui_url)
    print(f"MLflow UI over {uri}\n  training runs: {ui_url}/#/experiments/{experiment_id}/runs"
          + (f"\n  the newest sweep compared: {page}" if page else "") + "\n  (Ctrl-C stops it)", flush=True)
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner: 2 processes, not 13
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--host", HOST, "--port", str(args.port), "--workers", "1"])


if __name__ == "__main__":
    main(prog="python -m mnist_pipeline.tracking.ui")
