"""Ctrl-C and SIGTERM end a run as KILLED, with a checkpoint, and a non-zero exit code.

Lightning 2.6 turns SIGTERM into a `SystemExit` with code 0 (so DVC would record a killed run as
done) and Ctrl-C into a plain `sys.exit(1)`. Here both stop training at the next step boundary,
where everything of the last step is logged; the `last` checkpoint callback saves on that exception,
so `resume` continues exactly from there. Outside of fitting (evaluation, logging the model) a
signal stops the process at once.
"""

from __future__ import annotations

import contextlib
import signal

from pytorch_lightning.callbacks import Callback


class RunKilled(BaseException):
    """SIGINT or SIGTERM. A BaseException, so no `except Exception` swallows it; not a
    KeyboardInterrupt, which Lightning turns into a plain `sys.exit(1)`."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"killed by {signal.Signals(signum).name}")
        self.signum = signum


class StopAtStepBoundary(Callback):
    """Raises `RunKilled` before the next training step once a signal arrived during fitting."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.fitting = False

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fitting = True

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fitting = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.fitting = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.signum is not None:
            raise self.exception(self.signum)

    def exception(self, signum: int) -> BaseException:
        """What stops the run for this signal (training/slurm.py stops SIGUSR2 differently)."""
        return RunKilled(signum)


@contextlib.contextmanager
def signals_end_runs(stop: StopAtStepBoundary):
    """While inside: SIGINT/SIGTERM ask `stop` to stop at the next step boundary when fitting (a
    second signal, or one outside fitting, raises `RunKilled` at once)."""

    def handler(signum, _frame) -> None:
        if stop.fitting and stop.signum is None:
            stop.signum = signum
            return
        raise RunKilled(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
