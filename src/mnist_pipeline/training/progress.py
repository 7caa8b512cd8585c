"""Progress over optimizer steps (not epochs): step, loss and the latest val accuracy, as a bar on
a terminal and as plain log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time

from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm


class StepProgressBar(TQDMProgressBar):
    """Lightning's bar restarts every epoch and counts batches; a step-based run (`max_steps`,
    validation every N steps) reads better as one bar from step 1 to `max_steps`."""

    _last_draw = 0.0

    def on_train_epoch_start(self, trainer, *_) -> None:
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:
            bar.reset(total=trainer.max_steps)
            bar.initial = trainer.global_step
            bar.n = trainer.global_step
            bar.set_description("step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Redraw at most 10 times a second: a redraw (and reading the metrics) costs more than a step.
        now = time.monotonic()
        if now - self._last_draw >= 0.1 or trainer.global_step == trainer.max_steps:
            self._last_draw = now
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._train_progress_bar is not None:
            self.train_progress_bar.close()

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)  # one 1000-image batch every few steps: its bar would only flicker

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if "train/loss" in getattr(pl_module, "last_train", {}):  # logged outside self.log (module.py)
            metrics = {"train/loss": f"{pl_module.last_train['train/loss']:.3g}", **metrics}
        return metrics


class StepLines(Callback):
    """Off a terminal (a log file, CI, a sweep's jobs, SLURM), a bar's carriage-return frames are
    noise: one plain log line every `every` steps instead, with the step, loss and latest val/acc.
    Logged, so Hydra's job log file gets them too."""

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))
        self.lines = logging.getLogger("mnist_pipeline.training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every and step != trainer.max_steps:
            return
        loss = getattr(pl_module, "last_train", {}).get("train/loss")
        val = trainer.callback_metrics.get("val/acc")
        parts = [f"step {step}/{trainer.max_steps}"]
        if loss is not None:
            parts.append(f"train/loss {loss:.4f}")
        if val is not None:
            parts.append(f"val/acc {float(val):.4f}")
        self.lines.info("  ".join(parts))


def progress_callback(every: int | None, max_steps: int) -> tuple[Callback, bool]:
    """(the progress callback, whether Lightning's own bars stay on): a bar over steps on a
    terminal, plain lines every `every` steps (default: ten in a run) elsewhere."""
    if sys.stderr.isatty():
        return StepProgressBar(), True
    return StepLines(every or max(1, max_steps // 10)), False
