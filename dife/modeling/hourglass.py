"""Hourglass encoder Phi: RGB face crop -> dense embedding E."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dife.modeling.blocks import Bottleneck

__all__ = ["Hourglass", "HourglassEncoder"]


def _stage(channels: int, planes: int, num_blocks: int, gn_groups: int) -> nn.Sequential:
    return nn.Sequential(*[Bottleneck(channels, planes, gn_groups) for _ in range(num_blocks)])


class Hourglass(nn.Module):
    """One recursive hourglass stack (Newell et al.), unrolled level by level.

    Level ``n`` (``depth`` down to 1) computes ``s = skip_n(x)`` and returns
    ``s + upsample(up_n(inner))`` where ``inner`` is level ``n-1`` applied to
    ``down_n(maxpool(s))`` (or the ``bottom`` stage at level 1). Note that, as
    in the authors' network, the pooled branch continues from the *output* of
    the skip stage, not from ``x``. Max-pool 2x2 on the way down, nearest x2
    upsampling on the way up, so the input side must be divisible by
    ``2 ** depth``.

    Args:
        channels: Channels in and out (``2 * planes``).
        planes: Bottleneck width.
        depth: Number of pooling levels.
        num_blocks: Bottlenecks per stage.
        gn_groups: GroupNorm groups.

    Shape:
        (B, channels, H, W) -> (B, channels, H, W).
    """

    def __init__(self, channels: int, planes: int, depth: int = 4, num_blocks: int = 4, gn_groups: int = 16) -> None:
        super().__init__()
        self.depth = depth
        for n in range(depth, 0, -1):
            self.add_module(f"skip{n}", _stage(channels, planes, num_blocks, gn_groups))
            self.add_module(f"down{n}", _stage(channels, planes, num_blocks, gn_groups))
            if n == 1:
                self.bottom = _stage(channels, planes, num_blocks, gn_groups)
        for n in range(1, depth + 1):
            self.add_module(f"up{n}", _stage(channels, planes, num_blocks, gn_groups))

    def _level(self, n: int, x: torch.Tensor) -> torch.Tensor:
        skip = getattr(self, f"skip{n}")(x)
        low = getattr(self, f"down{n}")(F.max_pool2d(skip, 2, stride=2))
        low = self._level(n - 1, low) if n > 1 else self.bottom(low)
        low = getattr(self, f"up{n}")(low)
        return skip + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class HourglassEncoder(nn.Module):
    """The DIFE encoder Phi (authors' architecture, widths as parameters).

    Stem: conv7x7 stride 2 -> GN -> ReLU -> bottleneck (``planes_conv1``) ->
    bottleneck (``planes_block``) -> bottleneck (``planes_hg``), at half
    resolution. Then one [Hourglass][dife.modeling.hourglass.Hourglass], a head of ``num_blocks``
    bottlenecks, conv1x1 -> GN -> ReLU, bilinear x2 upsampling
    (``align_corners=True``) and a final conv1x1 to ``embed_dim`` channels.

    Args:
        embed_dim: Output channels (16).
        planes_conv1: Stem width (64 in the paper).
        planes_block: Planes of the second stem block (128).
        planes_hg: Hourglass planes (128; features are ``2 * planes_hg``).
        num_blocks: Bottlenecks per hourglass stage and in the head (4).
        depth: Hourglass depth (4).
        gn_groups: GroupNorm groups (16).

    Shape:
        (B, 3, H, W) in [-1, 1] -> (B, embed_dim, H, W), raw (not normalised).
        H and W must be divisible by ``2 ** (depth + 1)`` (32 for the paper's
        network; 96 works).
    """

    def __init__(
        self,
        embed_dim: int = 16,
        planes_conv1: int = 64,
        planes_block: int = 128,
        planes_hg: int = 128,
        num_blocks: int = 4,
        depth: int = 4,
        gn_groups: int = 16,
    ) -> None:
        super().__init__()
        e = Bottleneck.expansion
        self.depth = depth
        self.conv1 = nn.Conv2d(3, planes_conv1, 7, stride=2, padding=3)
        self.norm1 = nn.GroupNorm(gn_groups, planes_conv1)
        self.layer1 = Bottleneck(planes_conv1, planes_conv1, gn_groups)
        self.layer2 = Bottleneck(planes_conv1 * e, planes_block, gn_groups)
        self.layer3 = Bottleneck(planes_block * e, planes_hg, gn_groups)
        channels = planes_hg * e
        self.hourglass = Hourglass(channels, planes_hg, depth, num_blocks, gn_groups)
        self.head_blocks = _stage(channels, planes_hg, num_blocks, gn_groups)
        self.head_conv = nn.Conv2d(channels, channels, 1)
        self.head_norm = nn.GroupNorm(gn_groups, channels)
        self.out_conv = nn.Conv2d(channels, embed_dim, 1)

    @property
    def stride(self) -> int:
        """Side divisibility required of the input (``2 ** (depth + 1)``)."""
        return 2 ** (self.depth + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)), inplace=True)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.head_blocks(self.hourglass(x))
        x = F.relu(self.head_norm(self.head_conv(x)), inplace=True)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)
