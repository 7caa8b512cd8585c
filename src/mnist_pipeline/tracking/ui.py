"""`mnist ui` (`make ui`): the MLflow UI over the store training uses, bound to 127.0.0.1 only.

Prints the address of the experiment's training-runs table (MLflow 3's UI otherwise opens on a
GenAI overview page) and replaces this process with `mlflow server`: Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import sys

from mnist_pipeline.tracking.store import add_store_args, ensure_experiment, experiment_name, tracking_uri

HOST, PORT = "127.0.0.1", 5000


def main(argv: list[str] | None = None, prog: str = "mnist ui") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_store_args(parser)
    parser.add_argument("--port", type=int, default=PORT, help=f"port on {HOST} (default: {PORT})")
    args = parser.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    experiment_id = ensure_experiment(uri, experiment_name(args.experiment))
    print(f"MLflow UI over {uri}\n  training runs: http://{HOST}:{args.port}/#/experiments/{experiment_id}/runs"
          "\n  (Ctrl-C stops it)", flush=True)
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner: 2 processes, not 13
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--host", HOST, "--port", str(args.port), "--workers", "1"])


if __name__ == "__main__":
    main(prog="python -m mnist_pipeline.tracking.ui")
