"""A progress bar over optimizer steps (not epochs): step, loss and the latest val accuracy."""

from __future__ import annotations

import time

from pytorch_lightning.callbacks import TQDMProgressBar
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
