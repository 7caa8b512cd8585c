"""CNNs that fail on purpose, at their Nth training forward pass: to prove what survives a fault."""

import os
import signal

import torch

from mnist_pipeline.model.architectures.tfjs_cnn import TfjsCNN


class _FailsAtCall(TfjsCNN):
    at_call = 0

    def __init__(self, name: str | None = None) -> None:  # `name`: conf/model's, which `_target_=` keeps
        super().__init__()
        self.calls = 0

    def fail(self) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == self.at_call:
                self.fail()
        return super().forward(x)


class FailsOnRank1(_FailsAtCall):
    """Raises in DDP rank 1 at its 3rd step: a failed rank must fail the whole run."""

    at_call = 3

    def fail(self) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
            raise RuntimeError("injected failure in rank 1")


class KillsItself(_FailsAtCall):
    """SIGKILLs its own process at training forward pass number $KILL_AT_CALL: a crash that leaves
    nothing a chance to clean up (the MLflow run stays RUNNING)."""

    at_call = int(os.environ.get("KILL_AT_CALL", 0))

    def fail(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class DiskFullAtStep8(_FailsAtCall):
    """Its 8th training step fails as a write to a full disk does: a failure during a run."""

    at_call = 8

    def fail(self) -> None:
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/checkpoints")
