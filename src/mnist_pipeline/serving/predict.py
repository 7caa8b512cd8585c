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
import sys


def parse_args(argv: list[str] | None, prog: str = "mnist predict"):
    from mnist_pipeline.serving.registry import add_model_args

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE", help="PNG or JPEG pictures of single digits")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    add_model_args(parser)
    return parser.parse_args(argv)


def done(value):
    """`value` as a finished future."""
    from concurrent.futures import Future

    future = Future()
    future.set_result(value)
    return future


def in_background(fn, *args):
    """`fn(*args)` in a forked process, as a future: its imports and the store's answers overlap this
    process's own imports on another core. Where there is no fork, or this process already runs
    other threads (a fork copies their locks, held or not), it runs here, now."""
    import multiprocessing
    import threading

    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        from concurrent.futures import Future

        future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # noqa: BLE001  re-raised by .result(), as from the forked process
            future.set_exception(e)
        return future
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


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

    located = None
    if not args.ckpt:  # the store's answer: kept from the last call if nothing was written since, else asked
        cached = registry.cached_location(args)
        located = in_background(registry.locate, args) if cached is None else done(cached)
    from mnist_pipeline.serving.digits import DigitError, load

    # Pictures first (cheap): a file that gives no digit is reported even if the model is missing.
    # Then torch, while the forked process is still asking the store.
    pictures = {}
    for file in args.files:
        try:
            pictures[file] = load(file)
        except DigitError as e:
            pictures[file] = e
    import torch  # noqa: F401

    from mnist_pipeline.model import architectures  # noqa: F401
    try:
        if located is None:
            net, what = registry.load_checkpoint(args.ckpt), f"checkpoint {args.ckpt}"
        else:
            found = located.result()
            for text in found.notes:
                print(text, file=sys.stderr)
            net, what = registry.load(found), found.what
    except registry.StoreError as e:
        for file, picture in pictures.items():
            if isinstance(picture, DigitError):
                print(f"error: {file}: {picture}", file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model: {what}", file=sys.stderr)

    good = [f for f, p in pictures.items() if not isinstance(p, DigitError)]
    probs = dict(zip(good, probabilities(net, [pictures[f] for f in good]))) if good else {}
    results = []
    for file in args.files:
        picture = pictures[file]
        if isinstance(picture, DigitError):
            print(f"error: {file}: {picture}", file=sys.stderr)
            results.append({"file": file, "error": str(picture)})
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
