"""Where a model fails, on the test split: a confusion matrix and its most confident mistakes.

`write_diagnostics` writes into `<reports_dir>/plots/`:
- `confusion_matrix.png`: counts (log colour scale, so single mistakes show) and row-normalised
  (each true digit's row sums to 100%: the diagonal is the per-class recall);
- `confusion.csv`: one row per test image, `actual,predicted`, what DVC's `confusion` template
  counts (`dvc plots show`);
- `most_confident_errors.png`: the wrongly classified test images the model was surest about, with
  true and predicted labels, like the tutorial's page of test images with their predictions.
Every write is atomic. `evaluate.py` computes its per-class table from the same functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mnist_pipeline.atomic import write_png, write_text
from mnist_pipeline.data.processed import as_input

CLASSES = 10
GRID_ROWS, GRID_COLS = 4, 8
FILES = ("confusion_matrix.png", "confusion.csv", "most_confident_errors.png")


def outputs(net: torch.nn.Module, images_uint8: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """`net` on uint8 images (N, 28, 28), scaled as in training, in batches; float32 on the CPU.
    The net's own device and train/eval mode are left as they were."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            chunks = [net(as_input(images_uint8[i : i + batch_size].to(device))).float().cpu()
                      for i in range(0, len(images_uint8), batch_size)]
    finally:
        net.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, CLASSES)


def confusion(labels, predictions, classes: int = CLASSES) -> np.ndarray:
    """(classes, classes) counts: row = true digit, column = predicted digit."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """precision, recall, f1 and support of each class from a confusion matrix (0 where undefined)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def most_confused(matrix: np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The `k` largest off-diagonal cells: (true, predicted, count), largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    return [(int(i // matrix.shape[1]), int(i % matrix.shape[1]), int(off.flat[i])) for i in order if off.flat[i] > 0]


def confident_errors(probs: torch.Tensor, labels: torch.Tensor, k: int) -> list[int]:
    """Indices of the `k` wrong predictions with the highest predicted probability, surest first."""
    confidence, predicted = probs.max(dim=1)
    wrong = torch.nonzero(predicted != labels).flatten()
    order = torch.argsort(confidence[wrong], descending=True, stable=True)
    return wrong[order][:k].tolist()


def plot_confusion(matrix: np.ndarray, title: str = "test set"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2))
    panels = ((axes[0], matrix, "counts", LogNorm(vmin=1, vmax=max(2, matrix.max()))),
              (axes[1], normalised * 100, "row-normalised (% of each true digit)", None))
    for ax, values, name, norm in panels:
        shown = np.ma.masked_equal(values, 0)
        image = ax.imshow(shown, cmap="Blues", norm=norm, vmin=None if norm else 0, vmax=None if norm else 100)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        top = values.max() or 1
        for (i, j), v in np.ndenumerate(values):
            if v:
                text = f"{int(v)}" if name == "counts" else (f"{v:.1f}" if v >= 0.05 else "")
                dark = (np.log(v) / np.log(top) if norm and top > 1 else v / top) > 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set(xticks=range(CLASSES), yticks=range(CLASSES), xlabel="predicted digit", ylabel="true digit",
               title=f"Confusion matrix, {name}")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    fig.suptitle(f"{title}: {matrix.sum()} images, accuracy {accuracy:.4f}")
    return fig


def plot_errors(images_uint8, labels, probs: torch.Tensor, indices: list[int], n_wrong: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(GRID_ROWS, GRID_COLS, figsize=(1.5 * GRID_COLS, 1.75 * GRID_ROWS + 0.6))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        confidence, predicted = probs[i].max(dim=0)
        ax.imshow(np.asarray(images_uint8[i]), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {int(labels[i])}\npred {int(predicted)} ({float(confidence):.2f})", fontsize=9,
                     color="crimson")
    shown = f"the {len(indices)} most confident" if indices else "no"
    fig.suptitle(f"Test images classified wrongly: {shown} of {n_wrong} mistakes in {len(labels)} images")
    return fig


def write_from_probs(reports_dir: Path, images_uint8, labels, probs: torch.Tensor) -> list[Path]:
    """The three files of `write_diagnostics` from already computed probabilities (N, 10)."""
    plots = Path(reports_dir) / "plots"
    labels = torch.as_tensor(labels).long()
    predicted = probs.argmax(dim=1)
    matrix = confusion(labels.numpy(), predicted.numpy())
    rows = "".join(f"{a},{p}\n" for a, p in zip(labels.tolist(), predicted.tolist()))
    n_wrong = int((predicted != labels).sum())
    errors = confident_errors(probs, labels, GRID_ROWS * GRID_COLS)
    write_png(plots / FILES[0], plot_confusion(matrix))
    write_text(plots / FILES[1], "actual,predicted\n" + rows)
    write_png(plots / FILES[2], plot_errors(images_uint8, labels, probs, errors, n_wrong))
    return [plots / name for name in FILES]


def write_diagnostics(reports_dir: Path, net: torch.nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 1000) -> list[Path]:
    """Confusion matrix (PNG, CSV) and most confident mistakes (PNG) of `net` (logits out) on the
    given uint8 images (N, 28, 28); returns the paths written under `reports_dir/plots`."""
    probs = torch.softmax(outputs(net, images_uint8, batch_size), dim=1)
    return write_from_probs(reports_dir, images_uint8, labels, probs)
