"""The `mnist` command: one entry point, one subcommand per job.

Each subcommand's module is imported only when it runs, so `mnist --help` costs no more than
Python's start. `train`, `fetch` and `split` take Hydra overrides (`key=value`, and `-m` for a
sweep); the others take flags, and every one that reads MLflow takes `--tracking-uri` and
`--experiment` (training's `logger.tracking_uri=` and `logger.experiment_name=`). All of them read
$MLFLOW_TRACKING_URI and $MLFLOW_EXPERIMENT_NAME.
"""

from __future__ import annotations

import importlib
import os
import sys

# name: (module whose main(argv, prog) runs it, one line of help)
COMMANDS = {
    "train": ("mnist_pipeline.training.command:cli", "train a model (Hydra overrides key=value; -m for a sweep)"),
    "fetch": ("mnist_pipeline.data.fetch", "DVC stage: the four MNIST files, sha256-verified, into data/raw"),
    "split": ("mnist_pipeline.data.split", "DVC stage: data/raw -> data/processed/{train,val,test}.npz"),
    "compare": ("mnist_pipeline.serving.compare", "a sweep's runs side by side: table, curves, heatmap"),
    "promote": ("mnist_pipeline.serving.promote", "register the best run's model as the champion (--relog)"),
    "predict": ("mnist_pipeline.serving.predict", "the digit in each picture (PNG or JPEG)"),
    "evaluate": ("mnist_pipeline.serving.evaluate", "test loss, accuracy and per-digit report of a model"),
    "serve": ("mnist_pipeline.serving.serve", "the champion as a REST endpoint on 127.0.0.1:5001"),
    "ui": ("mnist_pipeline.tracking.ui", "the MLflow UI on 127.0.0.1:5000, at the training runs"),
    "server": ("mnist_pipeline.tracking.server", "the team server: PostgreSQL + MLflow with logins (make server)"),
    "runs": ("mnist_pipeline.tracking.cleanup", "runs list|cleanup|sync: runs left RUNNING; records a server missed"),
    "bench": ("mnist_pipeline.training.bench", "figures: the pipeline against bare PyTorch (make bench)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return ("usage: mnist <command> [args]   (mnist <command> --help for its own)\n\n"
            "The MNIST pipeline: DVC stages, Hydra configs, Lightning training, MLflow tracking.\n\n"
            "commands:\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mnist: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = COMMANDS[name][0].partition(":")
    run = getattr(importlib.import_module(module_name), function or "main")
    try:
        code = run(rest, prog=f"mnist {name}")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`mnist predict ... | head -1`): what it wanted, it has. Point stdout
        # at /dev/null so that the flush at exit does not fail again, and end quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a program killed by the closed pipe would
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
