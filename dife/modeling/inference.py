"""Inference path of the hourglass encoder: the same modules and weights, run lean.

`encode` computes what ``encoder(x)`` computes (the reference `HourglassEncoder`,
used for training) up to float rounding (about 1e-5), faster:

* channels-last memory on the CPU (oneDNN convolves NHWC tensors without the
  reorders an NCHW tensor costs at each of the ~60 convolutions);
* functional calls instead of module calls, and in-place ReLU / residual adds
  (no autograd graph is recorded, so nothing needs the intermediate tensors);
* the nearest x2 upsampling of each hourglass level added into the skip branch
  through a broadcast view instead of being materialised;
* the final 1x1 convolution applied *before* the bilinear x2 upsampling
  (both are linear and the bilinear weights sum to one, so the order does not
  change the result) on 4x fewer pixels, and on 16 instead of
  ``2 * planes_hg`` channels for the upsampling.

GroupNorm is kept as is: its statistics depend on the input, so it does not
fold into the neighbouring convolutions.

`compiled_encode` wraps `encode` in ``torch.compile`` when asked
for (never at import, never by default) and falls back to `encode` with
a warning when compilation is not available.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from torch import nn

    from dife.modeling.blocks import Bottleneck
    from dife.modeling.hourglass import Hourglass, HourglassEncoder

__all__ = ["encode", "compiled_encode", "use_channels_last"]


def use_channels_last(device: torch.device) -> bool:
    """Whether `encode` runs in channels-last memory on ``device`` by default (the CPU: yes)."""
    return device.type == "cpu"


def _conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _norm_relu(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    return F.relu_(F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps))


def _block(b: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    residual = x if b.shortcut is None else _conv(x, b.shortcut)
    out = _conv(_norm_relu(x, b.norm1), b.conv1)
    out = _conv(_norm_relu(out, b.norm2), b.conv2)
    out = _conv(_norm_relu(out, b.norm3), b.conv3)
    return out.add_(residual)


def _stage(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for b in stage:
        x = _block(b, x)  # type: ignore[arg-type]
    return x


def _level(hg: Hourglass, n: int, x: torch.Tensor) -> torch.Tensor:
    skip = _stage(getattr(hg, f"skip{n}"), x)
    low = _stage(getattr(hg, f"down{n}"), F.max_pool2d(skip, 2, stride=2))
    low = _level(hg, n - 1, low) if n > 1 else _stage(hg.bottom, low)
    low = _stage(getattr(hg, f"up{n}"), low)
    # skip + nearest x2 upsampling of low, without materialising the upsampled map
    b, c, h, w = low.shape
    skip.view(b, c, h, 2, w, 2).add_(low.view(b, c, h, 1, w, 1))
    return skip


def encode(encoder: HourglassEncoder, x: torch.Tensor, *, channels_last: bool | None = None) -> torch.Tensor:
    """Inference forward of a `HourglassEncoder`, without autograd.

    Args:
        encoder: The encoder (its modules and weights are only read).
        x: (B, 3, H, W) float input in [-1, 1], H and W divisible by
            ``encoder.stride``, on the encoder's device and dtype. Not modified.
        channels_last: Run in channels-last memory; ``None``:
            [use_channels_last][dife.modeling.inference.use_channels_last].

    Returns:
        (B, embed_dim, H, W) raw embedding in the standard (contiguous)
        layout: ``encoder(x)`` up to float rounding. An inference tensor
        (created under ``torch.inference_mode``).
    """
    if channels_last is None:
        channels_last = use_channels_last(x.device)
    with torch.inference_mode():
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        e = encoder
        x = _norm_relu(_conv(x, e.conv1), e.norm1)
        x = _block(e.layer3, _block(e.layer2, _block(e.layer1, x)))  # type: ignore[arg-type]
        x = _stage(e.head_blocks, _level(e.hourglass, e.hourglass.depth, x))
        x = _norm_relu(_conv(x, e.head_conv), e.head_norm)
        x = _conv(x, e.out_conv)  # 1x1 before the (linear, weights summing to 1) bilinear upsampling
        x = x.contiguous()  # the standard layout on the small map: the upsampled result is contiguous too
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


# ------------------------------------------------------------------ torch.compile (optional)
_compiled: dict[tuple[tuple[str, object], ...], Callable[..., torch.Tensor]] = {}
_failed: set[str] = set()
_lock = threading.Lock()


def compiled_encode(
    encoder: HourglassEncoder, x: torch.Tensor, *, channels_last: bool | None = None, **compile_kwargs: object
) -> torch.Tensor:
    """`encode` through ``torch.compile``; falls back cleanly.

    The first call for an encoder (and for each new input shape) compiles,
    which takes from seconds to minutes (inductor on the CPU needs a C++
    compiler). Where compilation or the compiled call fails, a
    ``RuntimeWarning`` is issued once per device type and `encode` is
    used from then on, so the result is always computed.

    Args:
        encoder: The encoder.
        x: (B, 3, H, W) input, as for `encode`.
        channels_last: As for `encode`.
        **compile_kwargs: Passed to ``torch.compile`` (e.g.
            ``mode="max-autotune"``); ``dynamic=False`` unless given.

    Returns:
        What `encode` returns, up to float rounding.
    """
    if channels_last is None:
        channels_last = use_channels_last(x.device)
    if x.device.type not in _failed:
        kwargs = {"dynamic": False, **compile_kwargs}
        key = tuple(sorted(kwargs.items()))
        try:
            with _lock:
                fn = _compiled.get(key)
                if fn is None:
                    fn = _compiled[key] = torch.compile(encode, **kwargs)  # type: ignore[call-overload]
            with torch.inference_mode():
                return fn(encoder, x, channels_last=channels_last)
        except Exception as err:  # no compiler, unsupported platform or torch: fall back
            _failed.add(x.device.type)
            first = (str(err).splitlines() or [""])[0][:200]
            warnings.warn(
                f"torch.compile failed on {x.device.type} ({type(err).__name__}: {first}); "
                "using the eager inference path from now on",
                RuntimeWarning,
                stacklevel=2,
            )
    return encode(encoder, x, channels_last=channels_last)
