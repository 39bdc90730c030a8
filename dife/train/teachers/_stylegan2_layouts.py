"""Key mapping from the two published StyleGAN2 checkpoint layouts.

The project's generator ([dife.train.teachers.stylegan2][dife.train.teachers.stylegan2]) names its
tensors like NVIDIA's StyleGAN2-ADA (``mapping.fc{i}``, ``mapping.w_avg``,
``synthesis.b{res}.{conv0,conv1,torgb}``), so an ADA state dict maps onto it
one to one. A ``stylegan2-pytorch`` (rosinality) ``g_ema`` state dict is
renamed and reshaped:

=============================================  =============================================
rosinality                                     project / ADA
=============================================  =============================================
``style.{i+1}.weight|bias``                    ``mapping.fc{i}.weight|bias``
``latent_avg`` (top level of the ``.pt``)      ``mapping.w_avg``
``input.input`` (1, C, 4, 4)                   ``synthesis.b4.const`` (C, 4, 4)
``conv1.*``                                    ``synthesis.b4.conv1.*``
``convs.{2k}.*`` / ``convs.{2k+1}.*``          ``synthesis.b{8*2^k}.conv0.*`` / ``.conv1.*``
``to_rgb1.*`` / ``to_rgbs.{k}.*``              ``synthesis.b4.torgb.*`` / ``b{8*2^k}.torgb.*``
``*.conv.weight`` (1, O, I, k, k)              ``*.weight`` (O, I, k, k)
``*.conv.modulation.weight|bias``              ``*.affine.weight|bias``
``*.activate.bias``                            ``*.bias``
``*.noise.weight`` (1,)                        ``*.noise_strength`` ()
``noises.noise_{j}`` (1, 1, R, R)              ``*.noise_const`` (R, R) (0: b4.conv1, then
                                               conv0 / conv1 of each block in order)
``to_rgb*.bias`` (1, 3, 1, 1)                  ``*.torgb.bias`` (3,)
``convs.{2k}.conv.blur.kernel`` (sum 4)        ``b{res}.conv0.resample_filter`` (sum 1)
``to_rgbs.{k}.upsample.kernel`` (sum 4)        ``b{res}.resample_filter`` (sum 1)
=============================================  =============================================

Both layouts use the same equalised-learning-rate conventions (raw weights
stored, ``lr_multiplier / sqrt(fan_in)`` applied at run time, mapping
``lr_multiplier`` 0.01, affine bias initialised to 1), so no value is rescaled
except the FIR kernels, whose x2-upsampling gain rosinality bakes in.

Every function here only renames, reshapes and reads shapes, so it works on
``meta`` tensors (manifests of the 1024 px checkpoints need no memory).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from dife.errors import CheckpointError

__all__ = [
    "ConvertedCheckpoint",
    "detect_layout",
    "convert_rosinality",
    "convert_ada",
    "ROSINALITY_REQUIRED",
    "ADA_REQUIRED",
]

#: Keys whose presence identifies each layout (named in error messages).
ROSINALITY_REQUIRED = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")
ADA_REQUIRED = ("mapping.fc0.weight", "synthesis.b4.const", "synthesis.b4.conv1.weight", "synthesis.b4.torgb.weight")

#: FIR gain rosinality stores inside its x2-upsampling kernels.
_UP_GAIN = 4.0


@dataclass
class ConvertedCheckpoint:
    """A checkpoint renamed to the project's layout.

    Attributes:
        layout: ``"rosinality"`` or ``"ada"``.
        state_dict: Tensors under the project's names, in its shapes.
        resolution: Output resolution in pixels (power of two, >= 4).
        z_dim: Input latent size.
        w_dim: Intermediate latent (style) size.
        mapping_layers: Number of mapping FC layers.
        channels: ``{res: channels}`` of every synthesis block.
        has_w_avg: Whether the checkpoint stores the mean latent.
        source_keys: ``{source key: project key}`` for every consumed key.
    """

    layout: str
    state_dict: dict[str, torch.Tensor]
    resolution: int
    z_dim: int
    w_dim: int
    mapping_layers: int
    channels: dict[int, int]
    has_w_avg: bool
    source_keys: dict[str, str] = field(default_factory=dict)


def detect_layout(sd: Mapping[str, object]) -> str | None:
    """Return ``"rosinality"``, ``"ada"`` or ``None`` for a flat state dict."""
    keys = set(sd)
    if all(k in keys for k in ROSINALITY_REQUIRED):
        return "rosinality"
    if all(k in keys for k in ADA_REQUIRED):
        return "ada"
    return None


def _shape_err(key: str, got: torch.Size, want: tuple[int, ...]) -> CheckpointError:
    return CheckpointError(f"checkpoint tensor {key!r} has shape {tuple(got)}, expected {want}")


def _check_unused(layout: str, sd: Mapping[str, torch.Tensor], used: set[str]) -> None:
    extra = sorted(set(sd) - used)
    if extra:
        shown = ", ".join(extra[:8]) + (" ..." if len(extra) > 8 else "")
        raise CheckpointError(
            f"{len(extra)} tensor(s) of the {layout} StyleGAN2 checkpoint have no place in the generator "
            f"(unsupported architecture variant?): {shown}"
        )


def _count(pattern: str, keys: set[str], start: int = 0) -> int:
    """Number of consecutive indices ``start, start+1, ...`` matched by ``pattern``."""
    pat = re.compile(pattern)
    idx = {int(m.group(1)) for k in keys if (m := pat.fullmatch(k))}
    n = start
    while n in idx:
        n += 1
    return n - start


def convert_rosinality(
    g_ema: Mapping[str, torch.Tensor], latent_avg: torch.Tensor | None = None
) -> ConvertedCheckpoint:
    """Rename a ``stylegan2-pytorch`` ``g_ema`` state dict to the project's layout.

    Args:
        g_ema: The generator state dict (keys ``style.*``, ``input.input``, ``conv1.*``...).
        latent_avg: ``(w_dim,)`` mean latent stored beside it, if any.

    Returns:
        The converted checkpoint with the architecture read from tensor shapes.

    Raises:
        CheckpointError: Missing, misshapen or unplaceable tensors.
    """
    keys = set(g_ema)
    missing = [k for k in ROSINALITY_REQUIRED if k not in keys]
    if missing:
        raise CheckpointError(f"not a stylegan2-pytorch generator: missing {missing}")
    out: dict[str, torch.Tensor] = {}
    src: dict[str, str] = {}

    def put(s: str, d: str, shape: tuple[int, ...] | None = None, scale: float | None = None) -> torch.Tensor:
        if s not in g_ema:
            raise CheckpointError(f"stylegan2-pytorch checkpoint lacks {s!r} (needed for {d!r})")
        t = g_ema[s]
        if shape is not None:
            if t.numel() != _numel(shape):
                raise _shape_err(s, t.shape, shape)
            t = t.reshape(shape)
        if scale is not None:
            t = t / scale
        out[d] = t
        src[s] = d
        return t

    # Mapping network: style.0 is the PixelNorm, style.1..n the FC layers.
    n_mlp = _count(r"style\.(\d+)\.weight", keys, start=1)
    for i in range(n_mlp):
        put(f"style.{i + 1}.weight", f"mapping.fc{i}.weight")
        put(f"style.{i + 1}.bias", f"mapping.fc{i}.bias")
    z_dim = int(g_ema["style.1.weight"].shape[1])
    w_dim = int(g_ema[f"style.{n_mlp}.weight"].shape[0])
    if latent_avg is not None:
        if latent_avg.numel() != w_dim:
            raise _shape_err("latent_avg", latent_avg.shape, (w_dim,))
        out["mapping.w_avg"] = latent_avg.reshape(w_dim)
        src["latent_avg"] = "mapping.w_avg"

    c4 = int(g_ema["input.input"].shape[1])
    put("input.input", "synthesis.b4.const", (c4, 4, 4))
    channels = {4: c4}

    def styled(s: str, d: str, cin: int, cout: int, k: int, up: bool) -> None:
        put(f"{s}.conv.weight", f"{d}.weight", (cout, cin, k, k))
        put(f"{s}.conv.modulation.weight", f"{d}.affine.weight", (cin, w_dim))
        put(f"{s}.conv.modulation.bias", f"{d}.affine.bias", (cin,))
        if up:
            put(f"{s}.conv.blur.kernel", f"{d}.resample_filter", scale=_UP_GAIN)
        put(f"{s}.noise.weight", f"{d}.noise_strength", ())
        put(f"{s}.activate.bias", f"{d}.bias", (cout,))

    def to_rgb(s: str, d: str, cin: int) -> None:
        cimg = int(g_ema[f"{s}.conv.weight"].shape[1])
        put(f"{s}.conv.weight", f"{d}.torgb.weight", (cimg, cin, 1, 1))
        put(f"{s}.conv.modulation.weight", f"{d}.torgb.affine.weight", (cin, w_dim))
        put(f"{s}.conv.modulation.bias", f"{d}.torgb.affine.bias", (cin,))
        put(f"{s}.bias", f"{d}.torgb.bias", (cimg,))

    styled("conv1", "synthesis.b4.conv1", c4, c4, 3, up=False)
    to_rgb("to_rgb1", "synthesis.b4", c4)
    if "noises.noise_0" in keys:
        put("noises.noise_0", "synthesis.b4.conv1.noise_const", (4, 4))

    n_blocks = _count(r"to_rgbs\.(\d+)\.conv\.weight", keys)
    cin = c4
    for k in range(n_blocks):
        res = 8 * 2**k
        if f"convs.{2 * k}.conv.weight" not in keys:
            raise CheckpointError(f"stylegan2-pytorch checkpoint lacks 'convs.{2 * k}.conv.weight'")
        cout = int(g_ema[f"convs.{2 * k}.conv.weight"].shape[1])
        b = f"synthesis.b{res}"
        styled(f"convs.{2 * k}", f"{b}.conv0", cin, cout, 3, up=True)
        styled(f"convs.{2 * k + 1}", f"{b}.conv1", cout, cout, 3, up=False)
        to_rgb(f"to_rgbs.{k}", b, cout)
        put(f"to_rgbs.{k}.upsample.kernel", f"{b}.resample_filter", scale=_UP_GAIN)
        for j, layer in ((2 * k + 1, "conv0"), (2 * k + 2, "conv1")):
            if f"noises.noise_{j}" in keys:
                put(f"noises.noise_{j}", f"{b}.{layer}.noise_const", (res, res))
        channels[res] = cout
        cin = cout
    _check_unused("stylegan2-pytorch", g_ema, set(src))
    resolution = 4 * 2**n_blocks
    return ConvertedCheckpoint(
        layout="rosinality",
        state_dict=out,
        resolution=resolution,
        z_dim=z_dim,
        w_dim=w_dim,
        mapping_layers=n_mlp,
        channels=channels,
        has_w_avg=latent_avg is not None,
        source_keys=src,
    )


def convert_ada(sd: Mapping[str, torch.Tensor]) -> ConvertedCheckpoint:
    """Validate a StyleGAN2-ADA ``G_ema`` state dict (already in the project's names).

    Args:
        sd: Keys ``mapping.fc{i}.*``, ``mapping.w_avg``, ``synthesis.b{res}.*``.

    Returns:
        The checkpoint with the architecture read from tensor shapes.

    Raises:
        CheckpointError: Missing or unplaceable tensors; conditional
            (``mapping.embed.*``) or non-``skip`` generators are refused.
    """
    keys = set(sd)
    missing = [k for k in ADA_REQUIRED if k not in keys]
    if missing:
        raise CheckpointError(f"not a StyleGAN2-ADA generator: missing {missing}")
    if any(k.startswith("mapping.embed.") for k in keys):
        raise CheckpointError("class-conditional StyleGAN2-ADA generators (mapping.embed.*) are not supported")
    if any(re.fullmatch(r"synthesis\.b\d+\.skip\.weight", k) for k in keys):
        raise CheckpointError("StyleGAN2-ADA 'resnet' synthesis architecture is not supported (only 'skip')")
    n_map = _count(r"mapping\.fc(\d+)\.weight", keys)
    z_dim = int(sd["mapping.fc0.weight"].shape[1])
    w_dim = int(sd[f"mapping.fc{n_map - 1}.weight"].shape[0])
    resolutions = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    expected = [4 * 2**i for i in range(len(resolutions))]
    if resolutions != expected:
        raise CheckpointError(f"StyleGAN2-ADA synthesis blocks {resolutions} are not 4, 8, 16, ...")
    channels = {r: int(sd[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions}
    for r in resolutions:
        if f"synthesis.b{r}.torgb.weight" not in keys:
            raise CheckpointError(
                f"StyleGAN2-ADA block b{r} has no torgb: only the 'skip' synthesis architecture is supported"
            )
    out = {k: v for k, v in sd.items()}
    if "mapping.w_avg" in out and out["mapping.w_avg"].numel() != w_dim:
        raise _shape_err("mapping.w_avg", out["mapping.w_avg"].shape, (w_dim,))
    return ConvertedCheckpoint(
        layout="ada",
        state_dict=out,
        resolution=resolutions[-1],
        z_dim=z_dim,
        w_dim=w_dim,
        mapping_layers=n_map,
        channels=channels,
        has_w_avg="mapping.w_avg" in keys,
        source_keys={k: k for k in sd},
    )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
