"""Where a run's time goes, logged as `perf/*` metrics: start-up (the job's start to `train()`),
set-up (to the first batch), the training loop (first batch to the last periodic validation),
data (producing batches, a share of the loop) and the end of run (full val, test, reports, model).

A job starts with its process (imports included), except the later jobs of a sweep that one
process runs one after the other: each of those starts when Hydra starts it (`sweep.JobStart`).
"""

from __future__ import annotations

import time

from pytorch_lightning.callbacks import Callback

from mnist_pipeline.training.sweep import job_start_time


class PhaseTimes(Callback):
    def __init__(self, train_called: float) -> None:
        self.train_called = train_called
        self.first_batch: float | None = None
        self.last_validation_end: float | None = None
        self.fit_end: float | None = None
        self.steps_at_start = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()
            self.steps_at_start = trainer.global_step

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.last_validation_end = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_end = time.perf_counter()

    def metrics(self, trainer, data_seconds: float, done: float) -> dict[str, float]:
        """`done`: perf_counter() when everything after fitting is finished."""
        if self.first_batch is None:
            return {}
        loop_end = self.last_validation_end or self.fit_end or done
        loop = loop_end - self.first_batch
        startup = time.time() - (time.perf_counter() - self.train_called) - job_start_time()
        steps = trainer.global_step - self.steps_at_start
        return {
            "perf/startup_s": startup,
            "perf/setup_s": self.first_batch - self.train_called,
            "perf/train_loop_s": loop,
            "perf/train_steps_per_s": steps / max(loop, 1e-9),
            "perf/data_fraction": data_seconds / max(loop, 1e-9),
            "perf/end_of_run_s": done - loop_end,
        }
