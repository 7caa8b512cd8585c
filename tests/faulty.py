"""A CNN that raises in one DDP rank: to prove a failed rank fails the whole run."""

import os
import signal

import torch

from mnist_pipeline.cnn import TfjsCNN


class FailsOnRank1(TfjsCNN):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == 3 and torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
                raise RuntimeError("injected failure in rank 1")
        return super().forward(x)


class KillsItself(TfjsCNN):
    """SIGKILLs its own process at the training forward pass number $KILL_AT_CALL: a crash that
    leaves nothing a chance to clean up (the MLflow run stays RUNNING)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == int(os.environ.get("KILL_AT_CALL", 0)):
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)
