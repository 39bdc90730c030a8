"""Pre-activation bottleneck residual block of the DIFE hourglass."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Bottleneck"]


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: (GN, ReLU, conv1x1) -> (GN, ReLU, conv3x3) -> (GN, ReLU, conv1x1).

    The output has ``2 * planes`` channels. Where the input has a different
    number of channels a 1x1 convolution (``shortcut``) projects the identity
    path; otherwise the identity is added unchanged. All convolutions carry a
    bias, as in the authors' network.

    Args:
        in_channels: Channels of the input.
        planes: Bottleneck width; the output has ``2 * planes`` channels.
        gn_groups: Groups of every GroupNorm.

    Shape:
        (B, in_channels, H, W) -> (B, 2 * planes, H, W).
    """

    expansion = 2

    def __init__(self, in_channels: int, planes: int, gn_groups: int = 16) -> None:
        super().__init__()
        out = planes * self.expansion
        self.norm1 = nn.GroupNorm(gn_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 1)
        self.norm2 = nn.GroupNorm(gn_groups, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.norm3 = nn.GroupNorm(gn_groups, planes)
        self.conv3 = nn.Conv2d(planes, out, 1)
        self.shortcut = nn.Conv2d(in_channels, out, 1) if in_channels != out else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        out = self.conv1(self.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        out = self.conv3(self.relu(self.norm3(out)))
        return out + residual
