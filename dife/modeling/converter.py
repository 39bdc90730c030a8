"""Domain converter Psi^d: shared embedding E -> species-specific feature map D^d."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DomainConverter"]


class DomainConverter(nn.Module):
    """conv7x7 -> GN -> ReLU -> conv7x7 -> GN -> ReLU -> conv1x1 (authors' layout).

    Used in training only: it maps the 16-d embedding to the teacher
    StyleGAN2's layer-7 feature space of one species (eq. 2 of the paper).

    Args:
        embed_dim: Input channels (16).
        out_dim: Output channels (512 for StyleGAN2 layer 7).
        hidden: Hidden channels (64).
        gn_groups: GroupNorm groups (16).

    Shape:
        (B, embed_dim, H, W) -> (B, out_dim, H, W).
    """

    def __init__(self, embed_dim: int = 16, out_dim: int = 512, hidden: int = 64, gn_groups: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(embed_dim, hidden, 7, padding=3)
        self.norm1 = nn.GroupNorm(gn_groups, hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 7, padding=3)
        self.norm2 = nn.GroupNorm(gn_groups, hidden)
        self.conv3 = nn.Conv2d(hidden, out_dim, 1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(e)), inplace=True)
        x = F.relu(self.norm2(self.conv2(x)), inplace=True)
        return self.conv3(x)
