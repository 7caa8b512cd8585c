"""A wider CNN with batch norm (`model=fast_cnn`, used by `experiment=fast99`)."""

from __future__ import annotations

import torch
from torch import nn


class FastCNN(nn.Module):
    """The tutorial's layout, a little wider and with batch norm: trains to 99% test accuracy in
    two epochs (experiment=fast99). Each block pools before normalising and rectifying: the same
    kind of network, with batch norm and ReLU on a quarter of the values (~10% faster on a CPU)."""

    def __init__(self, channels1: int = 16, channels2: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels1, kernel_size=5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(channels1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels1, channels2, kernel_size=5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(channels2),
            nn.ReLU(inplace=True), nn.Flatten(),
        )
        self.dense = nn.Linear(channels2 * 4 * 4, 10)

    @staticmethod
    def settings_from(weights: dict[str, torch.Tensor]) -> dict:
        """The settings a state dict of this architecture was made with (for checkpoints that do
        not record them): the filter counts are the convolutions' output channels."""
        return {"channels1": weights["features.0.weight"].shape[0], "channels2": weights["features.4.weight"].shape[0]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(x))


Net = FastCNN  # what the registry builds for `fast_cnn`
