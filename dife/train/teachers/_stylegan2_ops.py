"""Pure-PyTorch reference operators of the StyleGAN2 generator.

These are the few non-standard operations StyleGAN2 is built from, written
with ``torch.nn.functional`` only (no compiled extension), in float32, so that
they run unchanged on the CPU, on a GPU and on the ``meta`` device:

* ``upfirdn2d``: upsample by zero insertion, pad, apply a 2-D FIR filter
  (a true convolution: the filter is flipped), downsample by striding.
* ``bias_act``: bias, leaky ReLU (slope 0.2) with its ``sqrt(2)`` gain,
  optional symmetric clamp.
* ``modulated_conv2d``: the style-modulated, optionally demodulated
  convolution, evaluated as one grouped convolution over the batch, with the
  x2 transposed-convolution + FIR-blur upsampling path.
* ``normalize_2nd_moment``: the pixel norm applied to ``z``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "LRELU_GAIN",
    "make_filter",
    "upfirdn2d",
    "upsample2d",
    "bias_act",
    "modulated_conv2d",
    "normalize_2nd_moment",
]

#: Gain applied after the leaky ReLU so that activations keep unit variance.
LRELU_GAIN = math.sqrt(2.0)
#: Negative slope of the leaky ReLU used everywhere in StyleGAN2.
LRELU_SLOPE = 0.2


def make_filter(taps: Sequence[float] = (1, 3, 3, 1), device: torch.device | str | None = None) -> torch.Tensor:
    """Separable 2-D FIR filter from 1-D taps, normalised to sum to 1.

    Args:
        taps: 1-D filter taps; ``(1, 3, 3, 1)`` is StyleGAN2's binomial filter.
        device: Device of the returned tensor.

    Returns:
        ``(len(taps), len(taps))`` float32 tensor, the outer product of the taps,
        divided by its sum.
    """
    t = torch.as_tensor([float(v) for v in taps], dtype=torch.float32, device=device)
    f = t[:, None] * t[None, :]
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images.

    Args:
        x: ``(B, C, H, W)`` input.
        f: ``(fh, fw)`` filter; applied as a true convolution (flipped).
        up: Integer upsampling factor (zeros inserted between samples).
        down: Integer downsampling factor (keep every ``down``-th sample).
        pad: ``(left, right, top, bottom)`` padding after upsampling; negative
            values crop.
        gain: Overall gain; the 2-D filter is multiplied by ``gain`` (so an x2
            upsampling that should preserve the mean uses ``gain=4``).

    Returns:
        ``(B, C, H', W')`` with ``H' = (H * up + top + bottom - fh) // down + 1``.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    left, right, top, bottom = pad
    x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
    if min(left, right, top, bottom) < 0:
        x = x[:, :, max(-top, 0) : x.shape[2] - max(-bottom, 0), max(-left, 0) : x.shape[3] - max(-right, 0)]
    kernel = (f * gain).to(x.dtype).flip([0, 1])
    kernel = kernel[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, kernel, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Upsample by ``factor`` with FIR interpolation, keeping the mean.

    Args:
        x: ``(B, C, H, W)`` input (the RGB skip image in StyleGAN2).
        f: ``(k, k)`` filter normalised to sum 1.
        factor: Upsampling factor.

    Returns:
        ``(B, C, H * factor, W * factor)``.
    """
    k = f.shape[-1]
    p0 = (k + factor - 1) // 2
    p1 = (k - factor) // 2
    return upfirdn2d(x, f, up=factor, pad=(p0, p1, p0, p1), gain=factor * factor)


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    act: str = "lrelu",
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias, apply the activation with its gain, clamp.

    Args:
        x: ``(B, C, ...)`` input.
        bias: ``(C,)`` bias or ``None``.
        act: ``"lrelu"`` (leaky ReLU, slope 0.2, times ``sqrt(2)``) or ``"linear"``.
        clamp: If given, clamp the result to ``[-clamp, clamp]``.

    Returns:
        Tensor of the shape of ``x``.
    """
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2))).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Style-modulated convolution (one grouped convolution over the batch).

    The weight is scaled per sample by ``styles`` along its input channels and,
    with ``demodulate``, renormalised per output channel to unit L2 norm
    (``rsqrt(sum w^2 + 1e-8)``). With ``up=2`` the convolution is a stride-2
    transposed convolution followed by the FIR blur ``resample_filter``
    (gain 4), which together form StyleGAN2's upsampling convolution.

    Args:
        x: ``(B, I, H, W)`` input.
        weight: ``(O, I, k, k)`` convolution weight.
        styles: ``(B, I)`` per-sample input-channel scales.
        demodulate: Normalise the modulated weight per output channel.
        up: 1 or 2.
        resample_filter: ``(f, f)`` filter normalised to sum 1 (needed for ``up=2``).
        noise: Optional tensor broadcastable to the output, added at the end.

    Returns:
        ``(B, O, H * up, W * up)``.
    """
    b, in_ch, h, w = x.shape
    out_ch, _, kh, kw = weight.shape
    wgt = weight.unsqueeze(0) * styles.reshape(b, 1, in_ch, 1, 1)
    if demodulate:
        wgt = wgt * (wgt.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(b, out_ch, 1, 1, 1)
    x = x.reshape(1, b * in_ch, h, w)
    if up == 1:
        out = F.conv2d(x, wgt.reshape(b * out_ch, in_ch, kh, kw), padding=kh // 2, groups=b)
    else:
        if resample_filter is None:
            raise ValueError("modulated_conv2d with up > 1 needs resample_filter")
        wt = wgt.transpose(1, 2).reshape(b * in_ch, out_ch, kh, kw)
        out = F.conv_transpose2d(x, wt, stride=up, groups=b)
        # The transposed conv gives (H - 1) * up + k rows; the blur's padding
        # brings that to exactly H * up, split evenly (extra row in front).
        total = resample_filter.shape[-1] + up - kh - 1
        p0, p1 = (total + 1) // 2, total // 2
        out = upfirdn2d(out, resample_filter, pad=(p0, p1, p0, p1), gain=up * up)
    out = out.reshape(b, out_ch, out.shape[2], out.shape[3])
    if noise is not None:
        out = out + noise
    return out


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row of ``x`` (``(B, D)``) to unit mean square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()
