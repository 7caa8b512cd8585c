"""What people look at after a run: metrics.json, the curves as CSV (for `dvc plots`) and as PNG
(the tutorial's two charts: loss vs training step, accuracy vs validation step)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from mnist_pipeline.atomic import write_png, write_text

History = dict[str, list[tuple[int, float]]]


class HistoryLogger(Logger):
    """Keeps every logged point in memory, with or without MLflow, for the reports below."""

    def __init__(self) -> None:
        super().__init__()
        self.history: History = defaultdict(list)

    name = "history"
    version = 0

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                self.history[key].append((step, float(value)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class HistoryInCheckpoint(Callback):
    """Keeps the history in every checkpoint, so a resumed run's reports show all of its curves."""

    def __init__(self, logger: HistoryLogger) -> None:
        self.logger = logger

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["history"] = {key: list(points) for key, points in self.logger.history.items()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.state.fn != "fit" or "history" not in checkpoint:
            return  # evaluating a checkpoint must not rewind the history
        self.logger.history.clear()
        self.logger.history.update({key: [tuple(p) for p in points] for key, points in checkpoint["history"].items()})
        for logger in trainer.loggers:  # MLflow: send what the killed process had not sent yet
            if hasattr(logger, "backfill"):
                logger.backfill(self.logger.history)


def _curve_table(history: History, prefix: str) -> list[dict]:
    """Rows of {step, loss, acc} from `<prefix>/loss` and `<prefix>/acc`, in step order."""
    rows: dict[int, dict] = {}
    for name in ("loss", "acc"):
        for step, value in history.get(f"{prefix}/{name}", []):
            rows.setdefault(step, {"step": step})[name] = value
    return [rows[s] for s in sorted(rows)]


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", "loss", "acc"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def plot_curves(train: list[dict], val: list[dict], plots_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, ylabel, title in (("loss", "loss", "Loss"), ("acc", "accuracy", "Accuracy")):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        if name == "loss":
            ax.plot([r["step"] for r in train], [r.get("loss") for r in train], label="train (batch)", lw=1)
        else:
            ax.plot([r["step"] for r in train], [r.get("acc") for r in train], label="train (batch)", lw=0.8, alpha=0.5)
        ax.plot([r["step"] for r in val], [r.get(name) for r in val], "o-", ms=3, label="validation")
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} vs training step")
        ax.grid(alpha=0.3)
        ax.legend()
        path = plots_dir / f"{'loss' if name == 'loss' else 'accuracy'}.png"
        write_png(path, fig)
        paths.append(path)
    return paths


def write_reports(reports_dir: Path, metrics: dict[str, float], history: History) -> list[Path]:
    """metrics.json, plots/{train,val}.csv and plots/{loss,accuracy}.png; returns their paths."""
    plots_dir = reports_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    write_text(reports_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    train, val = _curve_table(history, "train"), _curve_table(history, "val")
    _write_csv(plots_dir / "train.csv", train)
    _write_csv(plots_dir / "val.csv", val)
    pngs = plot_curves(train, val, plots_dir)
    return [reports_dir / "metrics.json", plots_dir / "train.csv", plots_dir / "val.csv", *pngs]
