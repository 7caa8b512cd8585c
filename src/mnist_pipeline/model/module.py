"""The LightningModule: cross-entropy loss, torchmetrics accuracy, the optimizer from the config.

Every logged value carries an explicit `step`: optimizer steps completed, so the first training
batch is step 1 and the validation after the 5th batch is step 5 (Lightning's own axis is 0-based
for training). Values are reduced across processes, so they mean the same whatever the scale.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

# test_dataloader order (see MNISTDataModule.test_dataloader) -> metric prefix
EVAL_SETS = ("val_full", "test")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged at step {step} (loss {loss}): lower optimizer.lr")
        self.step = step


class MNISTClassifier(pl.LightningModule):
    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable | None = None, architecture: dict | None = None) -> None:
        super().__init__()
        self.net = net
        self.architecture = architecture  # {"name", "settings"}: checkpoints record what to rebuild
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler  # stepped every optimizer step (e.g. OneCycleLR)
        self.last_train: dict[str, float] = {}
        self.val_loss, self.val_acc = MeanMetric(), MulticlassAccuracy(num_classes=10, average="micro")
        self.eval_loss = nn.ModuleList(MeanMetric() for _ in EVAL_SETS)
        self.eval_acc = nn.ModuleList(MulticlassAccuracy(num_classes=10, average="micro") for _ in EVAL_SETS)

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets `_current_fx_name` around every hook call, ~40 times a step; nn.Module's
        # __setattr__ (parameter and buffer bookkeeping, 1.3 us) is not needed for a plain name.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # A resumed run draws the same random numbers an uninterrupted one would: the checkpoint holds
    # every generator's state, as plain tensors and tuples (loadable with weights_only=True).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.architecture is not None:
            checkpoint["architecture"] = self.architecture
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng" not in checkpoint:
            return
        rng = checkpoint["rng"]
        torch.set_rng_state(rng["torch"])
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(rng["python"])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        step = self.global_step + 1
        values = torch.stack([loss.detach(), (logits.argmax(1) == y).float().mean()])
        if self.trainer.world_size > 1:
            # Equal slices of the global batch on every process: the mean of the means is the global
            # mean, and every process sees the same value, so all stop together on a divergence.
            values = self.trainer.strategy.reduce(values)
        train_loss, train_acc = values.tolist()
        if not math.isfinite(train_loss):
            raise DivergedError(step, train_loss)
        self.last_train = {"train/loss": train_loss, "train/acc": train_acc}
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Send this step's train metrics straight to the loggers, once the step is done. Lightning's
        `self.log` result collections cost ~2 ms a step, more than the step itself; a per-step
        value needs none of their epoch reductions."""
        for logger in self.loggers:
            logger.log_metrics(self.last_train, step=self.global_step)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_loss.update(F.cross_entropy(logits, y, reduction="none"))
        self.val_acc.update(logits, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("step", float(self.global_step), on_step=False, on_epoch=True)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        logits = self(x)
        name = EVAL_SETS[dataloader_idx]
        self.eval_loss[dataloader_idx].update(F.cross_entropy(logits, y, reduction="none"))
        self.eval_acc[dataloader_idx].update(logits, y)
        self.log(f"{name}/loss", self.eval_loss[dataloader_idx], on_epoch=True, add_dataloader_idx=False)
        self.log(f"{name}/acc", self.eval_acc[dataloader_idx], on_epoch=True, add_dataloader_idx=False)
        if dataloader_idx == 0:  # one `step` for the whole end-of-run evaluation
            self.log("step", float(self.global_step), on_epoch=True, add_dataloader_idx=False)
