"""`mnist predict FILE [FILE ...]`: which digit is in each picture.

PNG or JPEG files of any size, dark on light or light on dark, become MNIST-like inputs
(`digits.py`); the model is the registered champion (`--model-name`, default mnist-cnn), a run's
(`--run RUN_ID`) or a checkpoint's (`--ckpt PATH`). With no champion yet, the experiment's best
FINISHED run is used, and a note says so. Per file it prints the digit and the top-3 probabilities:

    digit.png: 7  (7 0.981, 1 0.011, 9 0.004)

`--json` prints one JSON list instead: {file, digit, top3: [[digit, p], ...], probabilities} per
file, {file, error} for one that gave no digit. A file that gives no digit (missing, empty, not an
image, blank) gets one `error:` line on stderr; the other files are still predicted, and the exit
status is 1. A model that cannot be found or loaded: one `error:` line, exit status 2.

Fast from a cold start: the model's files are found (MLflow's client, ~1 s of imports) in a forked
process while this one imports torch and reads the pictures, and the model is built from its
weights-only state dict and architecture name, without Lightning, Hydra or `mlflow.pytorch`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def parse_args(argv: list[str] | None, prog: str = "mnist predict"):
    from mnist_pipeline.serving.registry import add_model_args

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE", help="PNG or JPEG pictures of single digits")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    add_model_args(parser)
    return parser.parse_args(argv)


def can_fork() -> bool:
    """Whether a fork is safe here: there is one, and no other thread runs (a fork copies the
    other threads' locks, held or not, into a child that has none of those threads)."""
    import threading

    return hasattr(os, "fork") and threading.active_count() == 1


class ModelLookup:
    """`registry.locate(args)`, started at once in a forked process, so that its imports (MLflow's
    client, ~1 s) and the store's answers overlap this process's own (torch, ~1 s) on another core.
    The answer comes back through a pipe as JSON: nothing is unpickled. With the store's last answer
    still valid, or where forking is not safe, it is found here when asked."""

    def __init__(self, args) -> None:
        from mnist_pipeline.serving import registry

        self.args, self.pid, self.fd = args, None, None
        self.answer = registry.cached_location(args)
        if self.answer is None and can_fork():
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: answer, then leave at once (no atexit handlers, no buffers flushed)
                os.close(read)
                with os.fdopen(write, "w") as out:
                    json.dump(self._ask(), out)
                os._exit(0)
            os.close(write)
            self.pid, self.fd = pid, read

    def _ask(self) -> dict:
        from mnist_pipeline.serving import registry

        try:
            found = registry.locate(self.args)
        except registry.StoreError as e:
            return {"error": str(e)}
        except Exception as e:  # noqa: BLE001  reported in the parent as one line
            return {"error": f"cannot find the model: {type(e).__name__}: {registry.first_line(e)}"}
        return {"weights": str(found.weights), "architecture": found.architecture, "what": found.what,
                "notes": found.notes}

    def result(self):
        """The Located model; a ModelError if there is none."""
        from mnist_pipeline.serving import registry

        if self.answer is not None:
            return self.answer
        if self.pid is None:
            return registry.locate(self.args)
        with os.fdopen(self.fd) as pipe:
            text = pipe.read()
        os.waitpid(self.pid, 0)
        self.pid = None
        answer = json.loads(text) if text else {"error": "the process that looked for the model died"}
        if "error" in answer:
            raise registry.ModelError(answer["error"])
        self.answer = registry.Located(Path(answer["weights"]), answer["architecture"], answer["what"],
                                       answer["notes"])
        return self.answer

    def abandon(self) -> None:
        """Stop looking: the answer is not needed."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
            self.pid = None


def probabilities(net, inputs) -> list[list[float]]:
    """The served module's 10 probabilities for float32 inputs (N, 28, 28) or (N, 1, 28, 28)."""
    import numpy as np
    import torch

    batch = torch.from_numpy(np.asarray(inputs, dtype=np.float32).reshape(-1, 1, 28, 28))
    with torch.inference_mode():
        return net(batch).double().tolist()


def top(probs: list[float], k: int = 3) -> list[list]:
    order = sorted(range(len(probs)), key=lambda d: -probs[d])[:k]
    return [[d, probs[d]] for d in order]


def format_line(file: str, probs: list[float]) -> str:
    best = top(probs)
    return f"{file}: {best[0][0]}  ({', '.join(f'{d} {p:.3f}' for d, p in best)})"


def main(argv: list[str] | None = None, prog: str = "mnist predict") -> int:
    args = parse_args(argv, prog)
    from mnist_pipeline.serving import registry

    lookup = None if args.ckpt else ModelLookup(args)
    from mnist_pipeline.serving.digits import DigitError, load

    # The pictures first: files that give no digit are reported whether or not there is a model.
    pictures = {}
    for file in args.files:
        try:
            pictures[file] = load(file)
        except DigitError as e:
            pictures[file] = e
    unusable = {file: p for file, p in pictures.items() if isinstance(p, DigitError)}

    def report_unusable() -> None:
        for file, error in unusable.items():
            print(f"error: {file}: {error}", file=sys.stderr)

    if len(unusable) == len(pictures):  # no picture to predict: the model is not needed
        if lookup is not None:
            lookup.abandon()
        report_unusable()
        return 1
    import torch  # noqa: F401  (while the forked process is still asking the store)

    from mnist_pipeline.model import architectures  # noqa: F401
    try:
        if lookup is None:
            net, what = registry.load_checkpoint(args.ckpt), f"checkpoint {args.ckpt}"
        else:
            found = lookup.result()
            for text in found.notes:
                print(text, file=sys.stderr)
            net, what = registry.load(found), found.what
    except registry.StoreError as e:
        report_unusable()
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model: {what}", file=sys.stderr)

    good = [f for f in pictures if f not in unusable]
    probs = dict(zip(good, probabilities(net, [pictures[f] for f in good])))
    results = []
    for file in args.files:
        if file in unusable:
            print(f"error: {file}: {unusable[file]}", file=sys.stderr)
            results.append({"file": file, "error": str(unusable[file])})
        else:
            p = probs[file]
            results.append({"file": file, "digit": top(p, 1)[0][0], "top3": top(p), "probabilities": p})
            if not args.json:
                print(format_line(file, p))
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m mnist_pipeline.serving.predict"))
