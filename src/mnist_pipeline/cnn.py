"""Network architectures, chosen by `model=` (conf/model/)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def as_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> the networks' input, float (N, 1, 28, 28) in [0, 1], as the
    tutorial scales pixels. Training, evaluation and the reports all scale through here."""
    return images.unsqueeze(1).float().div_(255.0)


def variance_scaling_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """TF.js's default VarianceScaling (scale 1, fan_in, 'normal'): a normal of std sqrt(1/fan_in)
    truncated at two std, without Keras's re-scaling, so the sample std is ~0.88 sqrt(1/fan_in)."""
    std = math.sqrt(1.0 / fan_in)
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


class TfjsCNN(nn.Module):
    """The tutorial's CNN: conv 5x5x8, maxpool 2, conv 5x5x16, maxpool 2, flatten, dense 10.

    Returns logits; softmax lives in the loss (cross-entropy) and in the served model.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=5)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=5)
        self.dense = nn.Linear(16 * 4 * 4, 10)
        for layer in (self.conv1, self.conv2, self.dense):
            fan_in = layer.weight[0].numel()  # 5*5*1, 5*5*8, 256
            variance_scaling_(layer.weight, fan_in)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.dense(x.flatten(1))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(x))
