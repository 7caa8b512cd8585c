"""`mnist serve` (`make serve`): the champion as a REST endpoint, `mlflow models serve` on 127.0.0.1:5001.

    mnist serve [--port 5001] [--model-name mnist-cnn] [--tracking-uri URI]

Serves `models:/<model name>@champion` from the store training uses, in this environment
(`--env-manager local`), on the loopback interface only. POST /invocations with
{"inputs": <float pixels in [0, 1], shape (N, 1, 28, 28)>} answers {"predictions": N x 10
probabilities}. `mnist promote` makes a champion. `mnist serve --example [FILE]` writes such a
request (default `request.json`) of two test digits instead of serving:

    mnist serve --example && curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d @request.json
"""

from __future__ import annotations

import argparse
import os
import sys

HOST, PORT = "127.0.0.1", 5001


def command(model_uri: str, port: int = PORT, host: str = HOST) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "--host", host, "--port", str(port)]


EXAMPLE_IMAGES = 2


def write_example(path: str, processed_dir: str | None) -> str:
    """A request of the first test digits, as /invocations takes it; what was written, in words."""
    import json

    from mnist_pipeline.atomic import write_text
    from mnist_pipeline.data.processed import as_input
    from mnist_pipeline.serving.evaluate import processed_dir as find_processed_dir
    from mnist_pipeline.serving.evaluate import test_split

    images, labels, _ = test_split(find_processed_dir(processed_dir))
    inputs = as_input(images[:EXAMPLE_IMAGES]).numpy().round(4)
    write_text(path, json.dumps({"inputs": inputs.tolist()}))
    return f"wrote {path}: {EXAMPLE_IMAGES} test digits ({', '.join(map(str, labels[:EXAMPLE_IMAGES].tolist()))})"


def main(argv: list[str] | None = None, prog: str = "mnist serve") -> None:
    from mnist_pipeline.serving.registry import CHAMPION, DEFAULT_MODEL_NAME, StoreError, locate, registered
    from mnist_pipeline.tracking.store import add_store_args, open_store

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_store_args(parser)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--example", nargs="?", const="request.json", metavar="FILE",
                        help="write a request of two test digits to FILE (default: request.json) and exit")
    parser.add_argument("--processed-dir", help="with --example: folder of test.npz (default: the config's)")
    args = parser.parse_args(argv)
    if args.example:
        try:
            print(write_example(args.example, args.processed_dir))
        except (StoreError, OSError) as e:
            sys.exit(f"error: {e}")
        return
    try:
        client, uri = open_store(args.tracking_uri)
        model = registered(client, args.model_name)
        if model is None or CHAMPION not in model.aliases:
            raise StoreError(f"{args.model_name!r} has no {CHAMPION} yet: run `mnist promote` first")
        # A pickled champion (an older version's) is refused here, in one line, before MLflow starts.
        locate(argparse.Namespace(tracking_uri=uri, experiment=args.experiment, run=None, model_name=args.model_name))
    except StoreError as e:
        sys.exit(f"error: {e}")
    model_uri = f"models:/{args.model_name}@{CHAMPION}"
    print(f"serving {model_uri} (version {model.aliases[CHAMPION]}) from {uri}\n"
          f"  POST http://{HOST}:{args.port}/invocations  {{\"inputs\": <(N, 1, 28, 28) pixels in [0, 1]>}}"
          "\n  (Ctrl-C stops it)", flush=True)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # The pt2 model loads without unpickling anything; MLflow refuses pickles and checks the archive.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    # mlflow starts `uvicorn` by name: this environment's, even when its bin/ is not on PATH
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    cmd = command(model_uri, args.port)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main(prog="python -m mnist_pipeline.serving.serve")
