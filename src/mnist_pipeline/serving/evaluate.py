"""`mnist evaluate [--run RUN_ID | --ckpt PATH]`: test metrics of any model.

The model is the registered champion by default (`--model-name`; with no champion yet, the best
FINISHED run, with a note), a run's logged model (`--run`) or a Lightning checkpoint (`--ckpt`,
read weights-only). Prints test loss and accuracy (as training computes `test/*`) and precision,
recall, F1 and support per digit on the test split (`--processed-dir`, default from the config).
`--out DIR` also writes the confusion matrix and most confident mistakes there (as training does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None, prog: str = "mnist evaluate"):
    from mnist_pipeline.serving.registry import add_model_args

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.add_argument("--processed-dir", help="folder of {train,val,test}.npz (default: the config's "
                                                "data.processed_dir)")
    parser.add_argument("--batch-size", type=int, default=1000, help="images per forward pass (default: 1000)")
    parser.add_argument("--out", metavar="DIR", help="also write plots/confusion_matrix.png, confusion.csv and "
                                                     "most_confident_errors.png under DIR")
    return parser.parse_args(argv)


def processed_dir(explicit: str | None) -> Path:
    from mnist_pipeline.config import compose, resolve_path

    return resolve_path(explicit if explicit else compose().data.processed_dir)


def test_split(folder: Path):
    from mnist_pipeline.data.processed import read_split, split_files
    from mnist_pipeline.serving.registry import ModelError

    path = split_files(folder)["test"]
    if not path.is_file():
        raise ModelError(f"{path}: no test split: run `dvc repro split` first (or pass --processed-dir)")
    return *read_split(path), path


def evaluate(model, images, labels, batch_size: int = 1000) -> dict:
    """loss, acc, the confusion matrix and per-class figures of a served module (softmax on top)."""
    import torch
    from torch.nn import functional as F

    from mnist_pipeline.serving.registry import logits_net as logits_of
    from mnist_pipeline.training import diagnostics

    logits_net = logits_of(model)
    if logits_net is not None:
        logits = diagnostics.outputs(logits_net, images, batch_size)
        loss, probs = F.cross_entropy(logits, labels).item(), torch.softmax(logits, dim=1)
    else:
        probs = diagnostics.outputs(model, images, batch_size)
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    predicted = probs.argmax(dim=1)
    matrix = diagnostics.confusion(labels.numpy(), predicted.numpy())
    return {"loss": loss, "acc": (predicted == labels).float().mean().item(), "confusion": matrix,
            "per_class": diagnostics.per_class(matrix), "probs": probs}


def format_report(result: dict) -> str:
    from mnist_pipeline.training.diagnostics import most_confused

    per = result["per_class"]
    lines = [f"test/loss {result['loss']:.4f}   test/acc {result['acc']:.4f}", "",
             f"{'digit':>5}  {'precision':>9}  {'recall':>6}  {'f1':>6}  {'support':>7}"]
    for d in range(len(per["support"])):
        lines.append(f"{d:>5}  {per['precision'][d]:>9.4f}  {per['recall'][d]:>6.4f}  {per['f1'][d]:>6.4f}  "
                     f"{int(per['support'][d]):>7}")
    lines.append(f"{'macro':>5}  {per['precision'].mean():>9.4f}  {per['recall'].mean():>6.4f}  "
                 f"{per['f1'].mean():>6.4f}  {int(per['support'].sum()):>7}")
    pairs = most_confused(result["confusion"], 5)
    if pairs:
        lines += ["", "most confused (true -> predicted: images): "
                  + ", ".join(f"{t} -> {p}: {n}" for t, p, n in pairs)]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "mnist evaluate") -> None:
    args = parse_args(argv, prog)
    from mnist_pipeline.serving.registry import StoreError, find_and_load

    if args.batch_size <= 0:
        sys.exit(f"error: --batch-size must be > 0, got {args.batch_size}")
    try:
        images, labels, path = test_split(processed_dir(args.processed_dir))
        model, what = find_and_load(args)
    except StoreError as e:
        sys.exit(f"error: {e}")
    result = evaluate(model, images, labels, args.batch_size)
    print(f"model: {what}\ntest split: {len(labels)} images ({path})\n")
    print(format_report(result))
    if args.out:
        from mnist_pipeline.training.diagnostics import write_from_probs

        for file in write_from_probs(Path(args.out), images, labels, result["probs"]):
            print(f"wrote {file}")


if __name__ == "__main__":
    main(prog="python -m mnist_pipeline.serving.evaluate")
