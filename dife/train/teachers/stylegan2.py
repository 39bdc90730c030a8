"""Frozen StyleGAN2 generator teacher, pure PyTorch, for both published layouts.

DIFE distils the intermediate feature maps of one pretrained StyleGAN2 per
species (FFHQ human at 1024 px, AFHQ dog / cat / wild at 512 px) and optimises
latents against them. This module rebuilds the generator from a checkpoint
without the original code bases or their compiled CUDA ops:

* ``stylegan2-pytorch`` (rosinality) ``.pt``: ``{"g_ema": state_dict,
  "latent_avg": w̄, ...}`` or a bare ``g_ema`` state dict;
* NVIDIA StyleGAN2-ADA: a state dict of ``G_ema`` (``{"G_ema": state_dict}``
  or the bare state dict), or the original network ``.pkl``, read by a
  restricted unpickler (``dife.train.teachers._safe_pickle``) that never
  imports or runs the code stored in it.

Widths, resolution, ``w_dim`` / ``z_dim`` and the number of mapping layers
are read from tensor shapes. The result reproduces the reference
implementations to float32 rounding (see ``tests/train/test_stylegan2.py``).

Everything runs in float32: for NVIDIA pickles this equals their
``synthesis(ws, noise_mode='const', force_fp32=True)`` (their default GPU path
runs the highest resolutions in float16, which differs by fp16 rounding).

Feature layers are numbered as the DIFE authors number them: layer ``1`` is
the output of the 8x8 synthesis block, then ``3`` (16x16), ``5`` (32x32),
``7`` (64x64), ``9`` (128x128)... i.e. layer ``2 * log2(res) - 5``; a block's
output is the activation of its second (non-upsampling) convolution. For a
1024 px FFHQ generator layer 7 is the 512 x 64 x 64 map used by the paper.

Example:
    >>> g = StyleGAN2.load("stylegan2-ffhq-config-f.pt")  # doctest: +SKIP
    >>> w = g.mapping(torch.randn(4, g.z_dim), truncation=0.7)  # doctest: +SKIP
    >>> img, feats = g.synthesis(w, return_features=True)  # doctest: +SKIP
    >>> f7 = g.features(w, layers=(7,))[7]  # stops after the 64x64 block  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dife.errors import CheckpointError, InputError, ModelNotFoundError, ShapeError
from dife.train.teachers._stylegan2_layouts import (
    ADA_REQUIRED,
    ROSINALITY_REQUIRED,
    ConvertedCheckpoint,
    convert_ada,
    convert_rosinality,
    detect_layout,
)
from dife.train.teachers._stylegan2_ops import bias_act, make_filter, modulated_conv2d, normalize_2nd_moment, upsample2d

__all__ = [
    "StyleGAN2",
    "StyleGAN2Config",
    "MappingNetwork",
    "SynthesisNetwork",
    "CHECKPOINT_SOURCES",
    "layer_of_resolution",
    "resolution_of_layer",
]

#: Where the published checkpoints that DIFE uses come from (named in errors).
CHECKPOINT_SOURCES: dict[str, str] = {
    "ffhq (StyleGAN2-ADA .pkl, 1024 px)": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
    "afhqdog (StyleGAN2-ADA .pkl, 512 px)": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl",
    "afhqcat (StyleGAN2-ADA .pkl, 512 px)": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqcat.pkl",
    "afhqwild (StyleGAN2-ADA .pkl, 512 px)": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqwild.pkl",
    "ffhq config-f (official StyleGAN2 TF .pkl; convert with rosinality/stylegan2-pytorch "
    "convert_weight.py to stylegan2-ffhq-config-f.pt)": "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl",
    "ffhq 256 px (rosinality/stylegan2-pytorch README, 'Pretrained Checkpoints')": "https://drive.google.com/open?id=1PQutd-JboOCOZqmd95XWxWrO8gGEvRcO",
}

#: Default ``conv_clamp`` for ADA *state dicts* (the value is not stored in
#: them): NVIDIA's StyleGAN2-ADA training uses 256. ``.pkl`` files store it.
ADA_DEFAULT_CONV_CLAMP = 256.0

_NOISE_MODES = ("const", "random", "none")


def layer_of_resolution(res: int) -> int:
    """DIFE layer number of the synthesis block at ``res`` (8 -> 1, 64 -> 7, 4 -> -1)."""
    return 2 * int(round(math.log2(res))) - 5


def resolution_of_layer(layer: int) -> int:
    """Resolution of the block whose output is DIFE layer ``layer`` (odd, >= -1)."""
    return 2 ** ((layer + 5) // 2)


@dataclass
class StyleGAN2Config:
    """Architecture of a StyleGAN2 generator (all read from checkpoint shapes).

    Attributes:
        resolution: Output side in pixels (power of two >= 4).
        z_dim: Size of the input latent z.
        w_dim: Size of the intermediate latent w (style_dim).
        mapping_layers: Number of FC layers in the mapping network.
        channels: ``{res: channels}`` for res = 4, 8, ..., resolution.
        img_channels: Output image channels.
        lr_multiplier: Equalised learning-rate multiplier of the mapping (0.01).
        conv_clamp: Clamp of convolution outputs (ADA: 256; rosinality: None).
        resample_filter: 1-D taps of the FIR filter.
    """

    resolution: int
    z_dim: int
    w_dim: int
    mapping_layers: int
    channels: dict[int, int]
    img_channels: int = 3
    lr_multiplier: float = 0.01
    conv_clamp: float | None = None
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)

    def __post_init__(self) -> None:
        self.channels = {int(k): int(v) for k, v in self.channels.items()}
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if log2 < 2 or log2 != int(log2):
            raise CheckpointError(f"StyleGAN2 resolution must be a power of two >= 4, got {self.resolution}")
        want = [4 * 2**i for i in range(int(log2) - 1)]
        if sorted(self.channels) != want:
            raise CheckpointError(
                f"StyleGAN2 channels must be given for resolutions {want}, got {sorted(self.channels)}"
            )
        for name in ("z_dim", "w_dim", "mapping_layers", "img_channels"):
            if int(getattr(self, name)) <= 0:
                raise CheckpointError(f"StyleGAN2 config field {name} must be positive, got {getattr(self, name)}")

    @property
    def num_ws(self) -> int:
        """Number of per-layer w vectors the synthesis network consumes."""
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``channels`` keys as strings)."""
        d = asdict(self)
        d["channels"] = {str(k): v for k, v in self.channels.items()}
        d["resample_filter"] = list(self.resample_filter)
        return d


# ----------------------------------------------------------------------------- layers


class _FullyConnected(nn.Module):
    """Equalised-learning-rate linear layer (raw weights, run-time gain)."""

    def __init__(
        self, in_features: int, out_features: int, lr_multiplier: float = 1.0, activation: str = "linear"
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain)
        return bias_act(x, self.bias * self.bias_gain, self.activation)


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, ``mapping_layers`` leaky-ReLU FC layers; stores w̄.

    Calling it returns ``(B, w_dim)`` latents truncated about ``w_avg``.
    """

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_layers = z_dim, w_dim, num_layers
        for i in range(num_layers):
            fin = z_dim if i == 0 else w_dim
            setattr(self, f"fc{i}", _FullyConnected(fin, w_dim, lr_multiplier, "lrelu"))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self, z: torch.Tensor, truncation: float = 1.0, truncation_latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map latents.

        Args:
            z: ``(B, z_dim)`` Gaussian latents.
            truncation: psi; ``w = w̄ + psi * (w - w̄)`` (1 = no truncation).
            truncation_latent: ``(w_dim,)`` centre of the truncation; default
                the checkpoint's stored mean latent ``w_avg``.

        Returns:
            ``(B, w_dim)`` float32 latents w.
        """
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ShapeError(f"z must be a (B, {self.z_dim}) tensor, got {shape}")
        x = normalize_2nd_moment(z.to(torch.float32))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        truncation = float(truncation)
        if truncation != 1.0:
            centre = self.w_avg if truncation_latent is None else truncation_latent.reshape(-1)
            if centre.numel() != self.w_dim:
                raise ShapeError(f"truncation_latent must have {self.w_dim} values, got {tuple(centre.shape)}")
            x = centre.to(x) + truncation * (x - centre.to(x))
        return x


class _SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ optional x2 upsampling), noise, bias, lrelu, clamp."""

    def __init__(
        self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: int, conv_clamp: float | None, taps: tuple
    ) -> None:
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = _FullyConnected(w_dim, in_ch)
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.zeros(resolution, resolution))
        self.register_buffer("resample_filter", make_filter(taps))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode == "random":
            shape = (x.shape[0], 1, self.resolution, self.resolution)
            rnd = torch.randn(shape, generator=generator, device=generator.device if generator else x.device)
            noise = rnd.to(x.device, x.dtype) * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, True, self.up, self.resample_filter, noise)
        return bias_act(x, self.bias, "lrelu", self.conv_clamp)


class _ToRGB(nn.Module):
    """Modulated (not demodulated) 1x1 conv to RGB, bias, clamp."""

    def __init__(self, in_ch: int, img_ch: int, w_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = _FullyConnected(w_dim, in_ch)
        self.weight = nn.Parameter(torch.zeros(img_ch, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_ch))
        self.weight_gain = 1.0 / math.sqrt(in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, "linear", self.conv_clamp)


class _SynthesisBlock(nn.Module):
    """One resolution: [const | up-conv0], conv1, toRGB added to the upsampled skip image."""

    def __init__(
        self, in_ch: int, out_ch: int, w_dim: int, resolution: int, img_ch: int, conv_clamp: float | None, taps: tuple
    ) -> None:
        super().__init__()
        self.resolution = resolution
        if in_ch == 0:
            self.const = nn.Parameter(torch.zeros(out_ch, resolution, resolution))
        else:
            self.conv0 = _SynthesisLayer(in_ch, out_ch, w_dim, resolution, 2, conv_clamp, taps)
        self.conv1 = _SynthesisLayer(out_ch, out_ch, w_dim, resolution, 1, conv_clamp, taps)
        self.torgb = _ToRGB(out_ch, img_ch, w_dim, conv_clamp)
        self.register_buffer("resample_filter", make_filter(taps))
        self.num_conv = 1 if in_ch == 0 else 2

    def features(
        self, x: torch.Tensor | None, ws: torch.Tensor, noise_mode: str, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Block output (second conv's activation); ``ws`` is ``(B, num_conv, w_dim)``."""
        if x is None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
            return self.conv1(x, ws[:, 0], noise_mode, generator)
        x = self.conv0(x, ws[:, 0], noise_mode, generator)
        return self.conv1(x, ws[:, 1], noise_mode, generator)

    def rgb(self, x: torch.Tensor, img: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        """Add this block's toRGB to the x2-upsampled running image."""
        y = self.torgb(x, w)
        return y if img is None else upsample2d(img, self.resample_filter) + y


class SynthesisNetwork(nn.Module):
    """w -> image with the 'skip' toRGB architecture; exposes block outputs.

    Calling it: ``synthesis(w, noise_mode="const", return_features=False,
    layers=None, generator=None)``, see [forward][dife.train.teachers.stylegan2.SynthesisNetwork.forward].
    """

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.w_dim = config.w_dim
        self.resolution = config.resolution
        self.img_channels = config.img_channels
        self.block_resolutions = sorted(config.channels)
        self.num_ws = config.num_ws
        taps = tuple(config.resample_filter)
        for res in self.block_resolutions:
            in_ch = 0 if res == 4 else config.channels[res // 2]
            block = _SynthesisBlock(
                in_ch, config.channels[res], config.w_dim, res, config.img_channels, config.conv_clamp, taps
            )
            setattr(self, f"b{res}", block)

    @property
    def layers(self) -> tuple[int, ...]:
        """DIFE layer numbers available: -1 (4x4), 1 (8x8), 3, 5, 7, ..."""
        return tuple(layer_of_resolution(r) for r in self.block_resolutions)

    def _check_ws(self, ws: torch.Tensor) -> torch.Tensor:
        if not isinstance(ws, torch.Tensor):
            raise ShapeError(f"w must be a tensor, got {type(ws).__name__}")
        if ws.ndim == 2 and ws.shape[1] == self.w_dim:
            return ws.to(torch.float32).unsqueeze(1).expand(-1, self.num_ws, -1)
        if ws.ndim == 3 and ws.shape[1] == self.num_ws and ws.shape[2] == self.w_dim:
            return ws.to(torch.float32)
        raise ShapeError(f"w must be (B, {self.w_dim}) or (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")

    def _check_layers(self, layers: int | Iterable[int] | None) -> list[int]:
        if layers is None:
            return list(self.layers)
        items = [layers] if isinstance(layers, int) else list(layers)
        bad = [v for v in items if not isinstance(v, int) or v not in self.layers]
        if bad or not items:
            raise InputError(f"feature layers must be among {self.layers}, got {items}")
        return sorted(set(items))

    def forward(
        self,
        w: torch.Tensor,
        noise_mode: str = "const",
        return_features: bool = False,
        layers: int | Iterable[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Synthesise images (and feature maps).

        Args:
            w: ``(B, w_dim)`` (broadcast to every layer) or ``(B, num_ws, w_dim)``.
            noise_mode: ``"const"`` (the checkpoint's stored noise, deterministic),
                ``"random"`` (fresh Gaussian noise) or ``"none"``.
            return_features: Also return ``{layer: (B, C, R, R) block output}``.
            layers: Layers to return (default all of [layers][dife.train.teachers.stylegan2.SynthesisNetwork.layers]).
            generator: Random generator for ``noise_mode="random"``.

        Returns:
            ``(B, img_channels, resolution, resolution)`` images, nominally in
            [-1, 1] (not clamped), or ``(image, features)``.
        """
        ws = self._check_ws(w)
        if noise_mode not in _NOISE_MODES:
            raise InputError(f"noise_mode must be one of {_NOISE_MODES}, got {noise_mode!r}")
        wanted = set(self._check_layers(layers)) if return_features else set()
        feats: dict[int, torch.Tensor] = {}
        x = img = None
        idx = 0
        for res in self.block_resolutions:
            block: _SynthesisBlock = getattr(self, f"b{res}")
            x = block.features(x, ws[:, idx : idx + block.num_conv], noise_mode, generator)
            idx += block.num_conv
            img = block.rgb(x, img, ws[:, idx])
            if layer_of_resolution(res) in wanted:
                feats[layer_of_resolution(res)] = x
        assert img is not None
        return (img, feats) if return_features else img

    def features(
        self,
        w: torch.Tensor,
        layers: int | Iterable[int] = (7,),
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
    ) -> dict[int, torch.Tensor]:
        """Block outputs of ``layers`` only, stopping after the last one (no image, no toRGB).

        Args and shapes as in [forward][dife.train.teachers.stylegan2.SynthesisNetwork.forward]. Returns ``{layer: (B, C, R, R)}``.
        """
        ws = self._check_ws(w)
        if noise_mode not in _NOISE_MODES:
            raise InputError(f"noise_mode must be one of {_NOISE_MODES}, got {noise_mode!r}")
        wanted = self._check_layers(layers)
        last = max(wanted)
        feats: dict[int, torch.Tensor] = {}
        x = None
        idx = 0
        for res in self.block_resolutions:
            block: _SynthesisBlock = getattr(self, f"b{res}")
            x = block.features(x, ws[:, idx : idx + block.num_conv], noise_mode, generator)
            idx += block.num_conv
            layer = layer_of_resolution(res)
            if layer in wanted:
                feats[layer] = x
            if layer == last:
                break
        return feats


# ----------------------------------------------------------------------------- generator


class StyleGAN2(nn.Module):
    """A frozen StyleGAN2 generator: ``mapping`` (z -> w) and ``synthesis`` (w -> image, features).

    Parameters never require grad and the module stays in eval mode, but
    every output is differentiable with respect to ``w`` (for latent
    optimisation). Build it with [load][dife.train.teachers.stylegan2.StyleGAN2.load] (or [from_checkpoint][dife.train.teachers.stylegan2.StyleGAN2.from_checkpoint]).

    Attributes:
        config: The architecture.
        mapping: [MappingNetwork][dife.train.teachers.stylegan2.MappingNetwork]; ``g.mapping(z, truncation=0.7)`` -> ``(B, w_dim)``.
        synthesis: [SynthesisNetwork][dife.train.teachers.stylegan2.SynthesisNetwork]; ``g.synthesis(w, noise_mode="const",
            return_features=True)`` -> ``(image, {layer: map})``.
        layout: Layout of the source checkpoint (``"rosinality"`` / ``"ada"``).
        w_avg_source: ``"checkpoint"`` or ``"estimated"`` (mean of 4096 mapped
            samples, seed 0, when the checkpoint stores no mean latent).
    """

    def __init__(self, config: StyleGAN2Config, layout: str = "ada") -> None:
        super().__init__()
        self.config = config
        self.layout = layout
        self.w_avg_source = "checkpoint"
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers, config.lr_multiplier)
        self.synthesis = SynthesisNetwork(config)
        self.freeze()

    # -- basic properties -----------------------------------------------------------------

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def feature_layers(self) -> tuple[int, ...]:
        """DIFE layer numbers: -1 (4x4 block), 1 (8x8), 3, 5, 7, ..."""
        return self.synthesis.layers

    @property
    def w_avg(self) -> torch.Tensor:
        """``(w_dim,)`` mean latent w̄ used as truncation centre."""
        return self.mapping.w_avg

    @property
    def device(self) -> torch.device:
        return self.mapping.w_avg.device

    def feature_shape(self, layer: int) -> tuple[int, int, int]:
        """``(C, H, W)`` of a feature layer (e.g. layer 7 of FFHQ-1024: (512, 64, 64))."""
        self.synthesis._check_layers(layer)
        res = resolution_of_layer(layer)
        return (self.config.channels[res], res, res)

    def freeze(self) -> StyleGAN2:
        """Disable grad on every parameter and switch to eval mode (done at construction)."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> StyleGAN2:
        """A teacher never trains: always stays in eval mode, whatever ``mode``."""
        return super().train(False)

    # -- sampling ------------------------------------------------------------------------

    def sample_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, z_dim)`` standard normal latents on the generator's device."""
        if int(n) <= 0:
            raise InputError(f"n must be positive, got {n}")
        dev = generator.device if generator is not None else self.device
        return torch.randn(int(n), self.z_dim, generator=generator, device=dev).to(self.device)

    def sample_w(self, n: int, truncation: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, w_dim)`` latents ``mapping(sample_z(n), truncation)`` (no grad)."""
        with torch.no_grad():
            return self.mapping(self.sample_z(n, generator), truncation=truncation)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
        """Mean of ``n`` mapped latents (w̄, as in the DIFE paper's pseudo-pair objective).

        Args:
            n: Number of z samples.
            seed: Seed of the CPU generator drawing z (reproducible on every device).
            batch_size: Samples per mapping call.

        Returns:
            ``(w_dim,)`` float32 tensor on the generator's device.
        """
        if int(n) <= 0:
            raise InputError(f"n must be positive, got {n}")
        gen = torch.Generator().manual_seed(int(seed))
        total = torch.zeros(self.w_dim, dtype=torch.float64, device=self.device)
        done = 0
        while done < n:
            m = min(batch_size, n - done)
            z = torch.randn(m, self.z_dim, generator=gen).to(self.device)
            total += self.mapping(z).to(torch.float64).sum(0)
            done += m
        return (total / n).to(torch.float32)

    # -- synthesis helpers ----------------------------------------------------------------

    def features(
        self,
        w: torch.Tensor,
        layers: int | Iterable[int] = (7,),
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
    ) -> dict[int, torch.Tensor]:
        """Feature maps ``{layer: (B, C, R, R)}``, stopping synthesis after the last layer asked for."""
        return self.synthesis.features(w, layers, noise_mode, generator)

    def feature(self, w: torch.Tensor, layer: int = 7, noise_mode: str = "const") -> torch.Tensor:
        """One feature map ``(B, C, R, R)``, differentiable w.r.t. ``w``."""
        return self.synthesis.features(w, (layer,), noise_mode)[layer]

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        """``synthesis(mapping(z, truncation), noise_mode)``: ``(B, 3, R, R)`` images."""
        return self.synthesis(self.mapping(z, truncation=truncation), noise_mode=noise_mode)

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def from_converted(
        cls, ckpt: ConvertedCheckpoint, conv_clamp: float | None = None, device: torch.device | str | None = None
    ) -> StyleGAN2:
        """Build and fill a generator from a ``ConvertedCheckpoint``."""
        config = StyleGAN2Config(
            resolution=ckpt.resolution,
            z_dim=ckpt.z_dim,
            w_dim=ckpt.w_dim,
            mapping_layers=ckpt.mapping_layers,
            channels=ckpt.channels,
            conv_clamp=conv_clamp,
        )
        with torch.device(device or "cpu"):
            g = cls(config, layout=ckpt.layout)
        own = g.state_dict()
        bad = [
            f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
            for k, v in ckpt.state_dict.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        unknown = sorted(set(ckpt.state_dict) - set(own))
        if bad or unknown:
            raise CheckpointError(f"StyleGAN2 checkpoint does not fit the generator: shapes {bad}, unknown {unknown}")
        optional = {
            k for k in own if k.endswith("resample_filter") or k.endswith("noise_const") or k == "mapping.w_avg"
        }
        missing = sorted(set(own) - set(ckpt.state_dict) - optional)
        if missing:
            raise CheckpointError(f"StyleGAN2 checkpoint lacks {len(missing)} tensor(s): {missing[:8]}")
        on_meta = g.device.type == "meta"
        for k, v in ckpt.state_dict.items():
            if k.endswith("resample_filter") and not on_meta and v.device.type != "meta":
                if not torch.allclose(v.float().cpu(), own[k].cpu(), atol=1e-6):
                    raise CheckpointError(f"unsupported FIR filter in {k!r}: only [1, 3, 3, 1] is supported")
        with torch.no_grad():
            for k, v in ckpt.state_dict.items():
                if not on_meta:
                    own[k].copy_(v.reshape(own[k].shape))
        if not ckpt.has_w_avg:
            if on_meta:
                g.w_avg_source = "missing"
            else:
                g.mapping.w_avg.copy_(g.mean_latent())
                g.w_avg_source = "estimated"
        return g.freeze()

    @classmethod
    def from_checkpoint(
        cls, obj: Any, conv_clamp: float | str | None = "auto", device: torch.device | str | None = None
    ) -> StyleGAN2:
        """Build from an already loaded checkpoint object (see [load][dife.train.teachers.stylegan2.StyleGAN2.load] for the accepted forms)."""
        sd, latent_avg, clamp_found = _unwrap(obj)
        layout = detect_layout(sd)
        if layout == "rosinality":
            ckpt = convert_rosinality(sd, latent_avg)
            clamp = None
        elif layout == "ada":
            ckpt = convert_ada(sd)
            clamp = clamp_found if clamp_found != "missing" else ADA_DEFAULT_CONV_CLAMP
        else:
            raise CheckpointError(
                "unrecognised StyleGAN2 checkpoint: expected a stylegan2-pytorch generator "
                f"({{'g_ema': state_dict, 'latent_avg': ...}} with keys {list(ROSINALITY_REQUIRED)}) "
                f"or a StyleGAN2-ADA G_ema ({{'G_ema': ...}} with keys {list(ADA_REQUIRED)}); "
                f"got keys {sorted(sd)[:10]}"
            )
        if conv_clamp != "auto":
            clamp = None if conv_clamp is None else float(conv_clamp)
        return cls.from_converted(ckpt, conv_clamp=clamp, device=device)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: torch.device | str | None = None,
        conv_clamp: float | str | None = "auto",
    ) -> StyleGAN2:
        """Load a published StyleGAN2 checkpoint of either layout.

        Accepted files:

        * ``stylegan2-pytorch`` ``.pt`` (``torch.save``): ``{"g_ema": sd,
          "latent_avg": w̄, ...}`` (training checkpoints with ``g``, ``d``,
          optimisers and ``args`` too) or a bare ``g_ema`` state dict;
        * StyleGAN2-ADA state dict: ``{"G_ema": sd}`` or the bare ``sd``;
        * StyleGAN2-ADA network pickle ``.pkl`` (``ffhq.pkl``, ``afhqdog.pkl``...),
          read without NVIDIA's code and without running any code it contains.

        Args:
            path: Checkpoint file.
            device: Where to put the generator (default CPU).
            conv_clamp: ``"auto"`` (ADA ``.pkl``: the stored value; ADA state
                dict: 256; rosinality: none), a number, or ``None``.

        Returns:
            The frozen generator in eval mode.

        Raises:
            ModelNotFoundError: ``path`` does not exist (the message lists the
                published checkpoints' URLs).
            CheckpointError: Unreadable, unsafe or unrecognised checkpoint.
        """
        p = Path(path)
        if not p.is_file():
            sources = "\n".join(f"  - {name}: {url}" for name, url in CHECKPOINT_SOURCES.items())
            raise ModelNotFoundError(
                f"StyleGAN2 checkpoint not found: {str(p)!r}. DIFE's teachers are the published generators:\n"
                f"{sources}\nDownload one and pass its path (.pkl files are read safely, without NVIDIA's code)."
            )
        return cls.from_checkpoint(_read_checkpoint(p), conv_clamp=conv_clamp, device=device)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"layout={self.layout}, resolution={c.resolution}, z_dim={c.z_dim}, w_dim={c.w_dim}, num_ws={self.num_ws}"
        )


# ----------------------------------------------------------------------------- file reading


def _read_checkpoint(path: Path) -> Any:
    """torch.save files via ``torch.load(weights_only=True)``, raw pickles via the safe unpickler."""
    from dife.checks import check_regular_file
    from dife.train.teachers import _safe_pickle

    check_regular_file(path, error=CheckpointError)  # a FIFO would block is_zipfile
    if zipfile.is_zipfile(path) or _safe_pickle.is_legacy_torch_file(path):
        try:
            import argparse

            # rosinality training checkpoints also store their argparse Namespace.
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure is a bad checkpoint
            raise CheckpointError(f"cannot read StyleGAN2 checkpoint {str(path)!r} with torch.load: {exc}") from exc
    return _safe_pickle.load_pickle(path)


def _unwrap(obj: Any) -> tuple[Mapping[str, torch.Tensor], torch.Tensor | None, Any]:
    """Return ``(flat generator state dict, latent_avg or None, conv_clamp or "missing")``."""
    from dife.train.teachers import _safe_pickle

    if isinstance(obj, tuple) and any(isinstance(o, _safe_pickle.StandIn) for o in obj):
        raise CheckpointError(
            "this is a TensorFlow StyleGAN2 pickle (G, D, Gs); convert it first with NVIDIA's "
            "stylegan2-ada-pytorch legacy.py or rosinality/stylegan2-pytorch convert_weight.py"
        )
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"StyleGAN2 checkpoint must hold a dict, got {type(obj).__name__}")
    latent_avg = obj.get("latent_avg") if isinstance(obj.get("latent_avg"), torch.Tensor) else None
    clamp: Any = "missing"
    if "g_ema" in obj:
        sd = obj["g_ema"]
    elif "G_ema" in obj:
        sd = obj["G_ema"]
        if isinstance(sd, (_safe_pickle.PersistentObject, _safe_pickle.StandIn)):
            clamp = _safe_pickle.find_attribute(sd, "conv_clamp", under="synthesis")
            if clamp == "missing":
                kwargs = _safe_pickle.find_attribute(sd, "_init_kwargs")
                if isinstance(kwargs, Mapping) and isinstance(kwargs.get("synthesis_kwargs"), Mapping):
                    clamp = kwargs["synthesis_kwargs"].get("conv_clamp", None)
            if clamp is not None and clamp != "missing":
                try:
                    clamp = float(clamp)
                except (TypeError, ValueError):
                    raise CheckpointError(f"pickled conv_clamp is not a number: {clamp!r}") from None
            sd = _safe_pickle.module_state_dict(sd)
    else:
        sd = obj
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            "StyleGAN2 checkpoint generator entry is not a state dict of tensors "
            f"(expected 'g_ema' with keys {list(ROSINALITY_REQUIRED)} or 'G_ema' with keys {list(ADA_REQUIRED)})"
        )
    return {str(k): v for k, v in sd.items()}, latent_avg, clamp
