"""`make serve`: the champion as a REST endpoint, `mlflow models serve` on 127.0.0.1:5001.

    python -m mnist_pipeline.serve [--port 5001] [--model-name mnist-cnn] [--tracking-uri URI]

Serves `models:/<model name>@champion` from the store training uses, in this environment
(`--env-manager local`), on the loopback interface only. POST /invocations with
{"inputs": <float pixels in [0, 1], shape (N, 1, 28, 28)>} answers {"predictions": N x 10
probabilities}. `python -m mnist_pipeline.promote` makes a champion.
"""

from __future__ import annotations

import argparse
import os
import sys

HOST, PORT = "127.0.0.1", 5001


def command(model_uri: str, port: int = PORT, host: str = HOST) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "--host", host, "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    from mnist_pipeline.models import store_args
    from mnist_pipeline.models import CHAMPION, DEFAULT_MODEL_NAME, ModelError, open_store, registered

    parser = argparse.ArgumentParser(prog="python -m mnist_pipeline.serve", description=__doc__.split("\n")[0])
    store_args(parser)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args(argv)
    try:
        client, uri = open_store(args.tracking_uri)
    except ModelError as e:
        sys.exit(f"error: {e}")
    model = registered(client, args.model_name)
    if model is None or CHAMPION not in model.aliases:
        sys.exit(f"error: {args.model_name!r} has no {CHAMPION} yet: run `python -m mnist_pipeline.promote` first")
    model_uri = f"models:/{args.model_name}@{CHAMPION}"
    print(f"serving {model_uri} (version {model.aliases[CHAMPION]}) from {uri}\n"
          f"  POST http://{HOST}:{args.port}/invocations  {{\"inputs\": <(N, 1, 28, 28) pixels in [0, 1]>}}"
          "\n  (Ctrl-C stops it)", flush=True)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # mlflow starts `uvicorn` by name: this environment's, even when its bin/ is not on PATH
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    cmd = command(model_uri, args.port)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
