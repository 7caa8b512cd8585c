"""The tutorial's CNN (`model=tfjs_cnn`, the default)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


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


Net = TfjsCNN  # what the registry builds for `tfjs_cnn`
