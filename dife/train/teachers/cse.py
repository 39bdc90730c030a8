"""DensePose CSE dense teacher, in pure PyTorch (no detectron2, no torchvision).

DIFE distils the 16-d per-pixel embedding of DensePose "continuous surface
embeddings" (CSE, Neverova et al., NeurIPS 2020) into its encoder (``L_K1``).
This module rebuilds the CSE network of detectron2's DensePose project and
applies it to a whole face crop: there is no detector, the full crop is the
one instance box.

Pipeline (detectron2 names in brackets; defaults are those of
``configs/cse/Base-DensePose-RCNN-FPN.yaml`` + ``densepose/config.py``)::

    image (B, 3, H, W) RGB in [-1, 1]
      -> 0..255 BGR, minus PIXEL_MEAN (103.530, 116.280, 123.675), / PIXEL_STD (1, 1, 1)
      -> resize, shortest edge = input_size (800 = INPUT.MIN_SIZE_TEST, longest <= 1333)
      -> zero-pad to a multiple of 32 (size_divisibility of the FPN)
      -> ResNet-50/101 [backbone.bottom_up], FrozenBN, stride in the 1x1 conv
         (RESNETS.STRIDE_IN_1X1 = True, the MSRA weights every CSE model starts from)
      -> FPN p2..p5, 256 channels [backbone.fpn_lateral*, backbone.fpn_output*]
      -> panoptic-FPN style decoder to one stride-4 map (DECODER_ON = True)
         [roi_heads.decoder]
      -> ROIAlignV2 (aligned=True, sampling ratio 2) of the whole-image box to
         28 x 28 [roi_heads.densepose_pooler]
      -> 8 x (conv 3x3, 512, ReLU) [roi_heads.densepose_head.body_conv_fcn1..8]
         or, for the DeepLab-head models (``_DL_``), ASPP + (optional non-local
         block) + 8 x (conv 3x3, 512, GroupNorm 32, ReLU) [roi_heads.densepose_head.*]
      -> ConvTranspose 4x4 stride 2 -> 16 x 56 x 56, bilinear x2 -> 16 x 112 x 112
         [roi_heads.densepose_predictor.embed_lowres] (and the 2-channel
         coarse segmentation [coarse_segm_lowres])

The output is the raw (not normalised) embedding in *box* coordinates: the
112 x 112 grid spans the whole input image (pixel-centre convention of
[dife.coords][dife.coords], as detectron2's ``ROIAlign(aligned=True)`` + bilinear
``align_corners=False`` resampling). [CSETeacher.resize_to][dife.train.teachers.cse.CSETeacher.resize_to] maps it to
any other grid, e.g. the student's 96 x 96.

**ROIAlign.** torchvision is not a dependency, so the pooler is written with
`torch.nn.functional.grid_sample`: the ``(R * s)^2`` bilinear samples
of ``ROIAlignV2`` (``R`` the output size, ``s`` the sampling ratio) are taken
with ``padding_mode="border"`` (detectron2 clamps samples in ``[-1, 0]`` to
the border pixel), zeroed beyond one pixel outside the map, and averaged
over each ``s x s`` bin. For the whole-image box this is exactly
detectron2's result, not an approximation.

**Input convention of dense teachers** (shared with the timm teacher):
images are ``(B, 3, H, W)`` float RGB in ``[-1, 1]`` -- the DIFE encoder's
input and the StyleGAN2 output range -- and each teacher applies its own
normalisation.

**Checkpoints.** The detectron2 model zoo ``.pkl`` files are plain pickles
of ``{"model": {name: numpy array}, "__author__": "Detectron2 Model Zoo"}``
and are read by a restricted unpickler that rebuilds only numpy arrays /
scalars / dtypes and builtin containers (anything else raises
[CheckpointError][dife.errors.CheckpointError] before it can run). ``.pth`` files
(``DetectionCheckpointer`` output, ``{"model": state_dict, ...}``) are read
with ``torch.load(weights_only=True)``. The key names are detectron2's own
(the module tree below reproduces them), so the mapping is the identity on
the used keys; loading is strict on every used key and shape. Keys of the
parts that a whole-crop teacher does not run (RPN, box head, vertex
embedders) are ignored; any other key is an error.

Key mapping (R50-FPN CSE; ``B`` = bottleneck width, ``O`` = block output,
``C_k`` = output channels of res2..res5):

| detectron2 key | shape | role |
| --- | --- | --- |
| `backbone.bottom_up.stem.conv1.weight` | 64 x 3 x 7 x 7 | stem conv, stride 2 (then max-pool 3x3 / 2) |
| `backbone.bottom_up.stem.conv1.norm.{weight,bias,running_mean,running_var}` | 64 | FrozenBN of the stem |
| `backbone.bottom_up.res{2..5}.{i}.conv1.weight` | B x in x 1 x 1 | bottleneck 1x1 (carries the stride) |
| `backbone.bottom_up.res{2..5}.{i}.conv2.weight` | B x B x 3 x 3 | bottleneck 3x3 |
| `backbone.bottom_up.res{2..5}.{i}.conv3.weight` | O x B x 1 x 1 | bottleneck 1x1 expansion |
| `backbone.bottom_up.res{2..5}.{i}.conv{1,2,3}.norm.*` | B or O | FrozenBN after each conv |
| `backbone.bottom_up.res{2..5}.0.shortcut.weight`, `.norm.*` | O x in x 1 x 1 | projection shortcut of block 0 |
| `backbone.fpn_lateral{2..5}.{weight,bias}` | 256 x C_k x 1 x 1 | FPN lateral convs |
| `backbone.fpn_output{2..5}.{weight,bias}` | 256 x 256 x 3 x 3 | FPN output convs |
| `roi_heads.decoder.p2.0`, `p3.0`, `p4.{0,2}`, `p5.{0,2,4}` `.{weight,bias}` | 256 x 256 x 3 x 3 | decoder conv + ReLU (+ bilinear x2) |
| `roi_heads.decoder.predictor.{weight,bias}` | 256 x 256 x 1 x 1 | decoder output conv |
| `roi_heads.densepose_head.body_conv_fcn{1..8}.{weight,bias}` | 512 x (256 or 512) x 3 x 3 | head convs + ReLU |
| `roi_heads.densepose_predictor.embed_lowres.{weight,bias}` | 512 x 16 x 4 x 4 | transposed conv to the embedding |
| `roi_heads.densepose_predictor.coarse_segm_lowres.{weight,bias}` | 512 x 2 x 4 x 4 | transposed conv to fg / bg |
| `proposal_generator.*`, `roi_heads.box_head.*`, `roi_heads.box_predictor.*`, `roi_heads.embedder.*`, `roi_heads.mask_head.*`, `pixel_mean`, `pixel_std` | -- | ignored (detection and mesh-vertex parts) |

R50 has 3, 4, 6, 3 blocks in res2..res5 (``O`` = 256, 512, 1024, 2048,
``B`` = 64, 128, 256, 512), R101 has 3, 4, 23, 3.

**DeepLab head** (``ROI_DENSEPOSE_HEAD.NAME: DensePoseDeepLabHead``, the
``_DL_`` models, e.g. ``densepose_rcnn_R_101_FPN_DL_soft_s1x`` and the DIFE
authors' own ``densepose_rcnn_R_101_FPN_DL_soft_animals_finetune_i2m_m2m_16k``
``model_final.pth``, the CSE baseline of their keypoint-transfer table):
the same backbone, FPN, decoder and predictor; the head is an ASPP (atrous
rates 6, 12, 56, every branch as wide as its input, GroupNorm with 32
groups), an optional non-local block (``DEEPLAB.NONLOCAL_ON``, off by
default) and the stacked convs with GroupNorm (``DEEPLAB.NORM: GN``, no bias):

| detectron2 key (``roi_heads.densepose_head.``) | shape | role |
| --- | --- | --- |
| `ASPP.convs.0.0.weight`, `ASPP.convs.0.1.{weight,bias}` | 256 x 256 x 1 x 1, 256 | 1x1 branch + GN + ReLU |
| `ASPP.convs.{1,2,3}.0.weight`, `ASPP.convs.{1,2,3}.1.{weight,bias}` | 256 x 256 x 3 x 3, 256 | 3x3 branches, dilation 6, 12, 56 + GN + ReLU |
| `ASPP.convs.4.1.weight`, `ASPP.convs.4.2.{weight,bias}` | 256 x 256 x 1 x 1, 256 | image pooling branch: global mean, 1x1 + GN + ReLU, broadcast |
| `ASPP.project.0.weight` | 256 x 1280 x 1 x 1 | 1x1 over the 5 concatenated branches + ReLU |
| `NLBlock.{theta,g.0,phi.0,W.0}.{weight,bias}`, `NLBlock.W.1.{weight,bias}` | 128 x 256 / 256 x 128 x 1 x 1, 256 | non-local block (only with ``NONLOCAL_ON``) |
| `body_conv_fcn{1..8}.weight`, `body_conv_fcn{1..8}.norm.{weight,bias}` | 512 x (256 or 512) x 3 x 3, 512 | head convs + GN + ReLU |

Models (detectron2 DensePose model zoo, ``projects/DensePose/doc/DENSEPOSE_CSE.md``):
the animal CSE model ``densepose_rcnn_R_50_FPN_soft_animals_I0_finetune_16k``
(https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_50_FPN_soft_animals_I0_finetune_16k/270727112/model_final_421d28.pkl),
``densepose_rcnn_R_50_FPN_soft_animals_CA_finetune_4k``
(https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_50_FPN_soft_animals_CA_finetune_4k/253498611/model_final_6d69b7.pkl),
and the human ``densepose_rcnn_R_50_FPN_soft_s1x``
(https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_50_FPN_soft_s1x/250533982/model_final_2c4512.pkl).

Example:
    >>> teacher = CSETeacher.load("model_final_421d28.pkl")  # doctest: +SKIP
    >>> with torch.no_grad():
    ...     c = teacher(images)  # (B, 16, 112, 112)  # doctest: +SKIP
    >>> c96 = CSETeacher.resize_to(c, (96, 96))  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dife.errors import CheckpointError, InputError, ModelNotFoundError, ShapeError

__all__ = [
    "CSEConfig",
    "CSETeacher",
    "CSE_MODEL_ZOO",
    "ASPP_RATES",
    "IGNORED_PREFIXES",
    "load_detectron2_weights",
    "config_from_state_dict",
    "roi_align",
    "FrozenBatchNorm2d",
]

#: Known CSE checkpoints of the detectron2 DensePose model zoo (name -> URL).
CSE_MODEL_ZOO: dict[str, str] = {
    "densepose_rcnn_R_50_FPN_soft_animals_I0_finetune_16k": (
        "https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_50_FPN_soft_animals_I0_finetune_16k/"
        "270727112/model_final_421d28.pkl"
    ),
    "densepose_rcnn_R_50_FPN_soft_animals_CA_finetune_4k": (
        "https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_50_FPN_soft_animals_CA_finetune_4k/"
        "253498611/model_final_6d69b7.pkl"
    ),
    "densepose_rcnn_R_50_FPN_soft_s1x": (
        "https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_50_FPN_soft_s1x/250533982/model_final_2c4512.pkl"
    ),
    "densepose_rcnn_R_101_FPN_soft_s1x": (
        "https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_101_FPN_soft_s1x/250712522/model_final_4637da.pkl"
    ),
    "densepose_rcnn_R_50_FPN_DL_soft_s1x": (
        "https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_50_FPN_DL_soft_s1x/250713703/model_final_9199f5.pkl"
    ),
    "densepose_rcnn_R_101_FPN_DL_soft_s1x": (
        "https://dl.fbaipublicfiles.com/densepose/cse/densepose_rcnn_R_101_FPN_DL_soft_s1x/250713061/"
        "model_final_1d3314.pkl"
    ),
}

#: Atrous rates of the DeepLab head's ASPP (fixed in detectron2's ``DensePoseDeepLabHead``).
ASPP_RATES: tuple[int, int, int] = (6, 12, 56)

#: GroupNorm groups of the DeepLab head (fixed in detectron2).
DEEPLAB_GN_GROUPS: int = 32

_MODEL_ZOO_PAGE = "https://github.com/facebookresearch/detectron2/blob/main/projects/DensePose/doc/DENSEPOSE_CSE.md"

#: Checkpoint keys of detectron2 parts a whole-crop teacher does not run.
IGNORED_PREFIXES: tuple[str, ...] = (
    "proposal_generator.",
    "roi_heads.box_head.",
    "roi_heads.box_predictor.",
    "roi_heads.embedder.",
    "roi_heads.mask_head.",
    "roi_heads.keypoint_head.",
    "pixel_mean",
    "pixel_std",
)

_BLOCKS_PER_DEPTH: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


# ----------------------------------------------------------------------- config
@dataclass(frozen=True)
class CSEConfig:
    """Architecture and preprocessing of a DensePose CSE R-CNN (FPN, V1ConvX or DeepLab head).

    The defaults are the R50-FPN CSE models of the detectron2 model zoo.

    Attributes:
        depth: ResNet depth (50, 101 or 152); sets ``blocks`` when it is None.
        blocks: Bottleneck blocks in res2..res5 (overrides ``depth``).
        stem_channels: ``RESNETS.STEM_OUT_CHANNELS``.
        num_groups: ``RESNETS.NUM_GROUPS`` (1 = ResNet, > 1 = ResNeXt).
        width_per_group: ``RESNETS.WIDTH_PER_GROUP``; res2 bottleneck width
            is ``num_groups * width_per_group``, doubling per stage.
        res2_out_channels: ``RESNETS.RES2_OUT_CHANNELS``, doubling per stage.
        stride_in_1x1: ``RESNETS.STRIDE_IN_1X1`` (True for MSRA weights).
        fpn_channels: ``FPN.OUT_CHANNELS``.
        decoder: ``ROI_DENSEPOSE_HEAD.DECODER_ON``: merge p2..p5 into one map
            before pooling. Without it the box is pooled from the FPN level
            detectron2 assigns to it (canonical box 224 at level 4).
        decoder_channels: ``DECODER_CONV_DIMS``.
        decoder_out_channels: ``DECODER_NUM_CLASSES``.
        decoder_common_stride: ``DECODER_COMMON_STRIDE``.
        head: ``"v1convx"`` (``DensePoseV1ConvXHead``) or ``"deeplab"``
            (``DensePoseDeepLabHead``: ASPP, optional non-local block, GroupNorm convs).
        deeplab_norm: ``DEEPLAB.NORM`` of the DeepLab head's convs, ``"GN"`` or ``""`` (none).
        deeplab_nonlocal: ``DEEPLAB.NONLOCAL_ON``.
        head_convs: ``NUM_STACKED_CONVS``.
        head_channels: ``CONV_HEAD_DIM``.
        head_kernel: ``CONV_HEAD_KERNEL``.
        deconv_kernel: ``DECONV_KERNEL``.
        up_scale: ``UP_SCALE`` of the final bilinear upsampling.
        embed_dim: ``CSE.EMBED_SIZE``.
        coarse_segm_channels: ``NUM_COARSE_SEGM_CHANNELS``.
        pooler_resolution: ``POOLER_RESOLUTION``.
        sampling_ratio: ``POOLER_SAMPLING_RATIO`` (> 0).
        input_size: Shortest image edge after resizing (``INPUT.MIN_SIZE_TEST``);
            None keeps the input size.
        max_size: Longest edge limit (``INPUT.MAX_SIZE_TEST``).
        pixel_mean: ``MODEL.PIXEL_MEAN`` in 0..255, in ``input_format`` order.
        pixel_std: ``MODEL.PIXEL_STD``.
        input_format: ``INPUT.FORMAT``, ``"BGR"`` or ``"RGB"``.
    """

    depth: int = 50
    blocks: tuple[int, int, int, int] | None = None
    stem_channels: int = 64
    num_groups: int = 1
    width_per_group: int = 64
    res2_out_channels: int = 256
    stride_in_1x1: bool = True
    fpn_channels: int = 256
    decoder: bool = True
    decoder_channels: int = 256
    decoder_out_channels: int = 256
    decoder_common_stride: int = 4
    head: str = "v1convx"
    deeplab_norm: str = "GN"
    deeplab_nonlocal: bool = False
    head_convs: int = 8
    head_channels: int = 512
    head_kernel: int = 3
    deconv_kernel: int = 4
    up_scale: int = 2
    embed_dim: int = 16
    coarse_segm_channels: int = 2
    pooler_resolution: int = 28
    sampling_ratio: int = 2
    input_size: int | None = 800
    max_size: int = 1333
    pixel_mean: tuple[float, float, float] = (103.530, 116.280, 123.675)
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input_format: str = "BGR"

    def __post_init__(self) -> None:
        if self.blocks is None and self.depth not in _BLOCKS_PER_DEPTH:
            raise InputError(
                f"CSEConfig.depth must be one of {sorted(_BLOCKS_PER_DEPTH)} (or give blocks), got {self.depth}"
            )
        if self.blocks is not None and (len(self.blocks) != 4 or any(int(b) < 1 for b in self.blocks)):
            raise InputError(f"CSEConfig.blocks must be 4 positive ints (res2..res5), got {self.blocks!r}")
        if self.input_format not in ("BGR", "RGB"):
            raise InputError(f"CSEConfig.input_format must be 'BGR' or 'RGB', got {self.input_format!r}")
        if self.sampling_ratio < 1:
            raise InputError(
                f"CSEConfig.sampling_ratio must be >= 1 (adaptive 0 is not supported), got {self.sampling_ratio}"
            )
        if self.decoder_common_stride not in (4, 8, 16, 32):
            raise InputError(
                f"CSEConfig.decoder_common_stride must be 4, 8, 16 or 32, got {self.decoder_common_stride}"
            )
        if self.input_size is not None and self.input_size < 32:
            raise InputError(f"CSEConfig.input_size must be >= 32 or None, got {self.input_size}")
        if self.head not in ("v1convx", "deeplab"):
            raise InputError(f"CSEConfig.head must be 'v1convx' or 'deeplab', got {self.head!r}")
        if self.deeplab_norm not in ("GN", ""):
            raise InputError(f"CSEConfig.deeplab_norm must be 'GN' or '' (none), got {self.deeplab_norm!r}")
        if self.head == "deeplab":
            cin = self.decoder_out_channels if self.decoder else self.fpn_channels
            widths = {"head input (decoder_out_channels / fpn_channels)": cin}
            if self.deeplab_norm == "GN":
                widths["head_channels"] = self.head_channels
            for name, width in widths.items():
                if width % DEEPLAB_GN_GROUPS:
                    raise InputError(
                        f"the DeepLab head's GroupNorm has {DEEPLAB_GN_GROUPS} groups: {name} = {width} must be a "
                        f"multiple of {DEEPLAB_GN_GROUPS}"
                    )

    @property
    def stage_blocks(self) -> tuple[int, int, int, int]:
        """Blocks in res2..res5."""
        b = self.blocks if self.blocks is not None else _BLOCKS_PER_DEPTH[self.depth]
        return tuple(int(v) for v in b)  # type: ignore[return-value]

    @property
    def output_size(self) -> int:
        """Side of the embedding grid (``pooler_resolution * 2 * up_scale``, 112)."""
        return self.pooler_resolution * 2 * self.up_scale

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)


# ----------------------------------------------------------------- layers
class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all four are buffers).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, as
    detectron2's ``FrozenBatchNorm2d`` (eps 1e-5).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)


class _ConvNorm(nn.Conv2d):
    """detectron2 ``Conv2d`` with a ``norm`` child (keys ``<name>.weight``, ``<name>.norm.*``)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False)
        self.norm = FrozenBatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class _Stem(nn.Module):
    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _ConvNorm(3, out_channels, 7, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, width: int, stride: int, groups: int, stride_in_1x1: bool) -> None:
        super().__init__()
        self.shortcut = _ConvNorm(cin, cout, 1, stride=stride) if cin != cout else None
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _ConvNorm(cin, width, 1, stride=s1)
        self.conv2 = _ConvNorm(width, width, 3, stride=s3, padding=1, groups=groups)
        self.conv3 = _ConvNorm(width, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class _ResNet(nn.Module):
    """detectron2 ``ResNet`` (bottleneck blocks), returning res2..res5."""

    def __init__(self, cfg: CSEConfig) -> None:
        super().__init__()
        self.stem = _Stem(cfg.stem_channels)
        cin = cfg.stem_channels
        cout = cfg.res2_out_channels
        width = cfg.num_groups * cfg.width_per_group
        self.out_channels: list[int] = []
        for idx, n in enumerate(cfg.stage_blocks):
            first_stride = 1 if idx == 0 else 2
            blocks = []
            for i in range(n):
                blocks.append(
                    _Bottleneck(cin, cout, width, first_stride if i == 0 else 1, cfg.num_groups, cfg.stride_in_1x1)
                )
                cin = cout
            self.add_module(f"res{idx + 2}", nn.Sequential(*blocks))
            self.out_channels.append(cout)
            cout *= 2
            width *= 2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for k in range(2, 6):
            x = getattr(self, f"res{k}")(x)
            outs.append(x)
        return outs


class _FPNBackbone(nn.Module):
    """detectron2 ``FPN`` over the ResNet (``bottom_up``), top-down sum, nearest x2, p2..p5."""

    def __init__(self, cfg: CSEConfig) -> None:
        super().__init__()
        self.bottom_up = _ResNet(cfg)
        for level, cin in zip(range(2, 6), self.bottom_up.out_channels, strict=True):
            self.add_module(f"fpn_lateral{level}", nn.Conv2d(cin, cfg.fpn_channels, 1))
            self.add_module(f"fpn_output{level}", nn.Conv2d(cfg.fpn_channels, cfg.fpn_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.bottom_up(x)
        prev = self.fpn_lateral5(feats[3])
        outs = [self.fpn_output5(prev)]
        for level in (4, 3, 2):
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = getattr(self, f"fpn_lateral{level}")(feats[level - 2]) + top_down
            outs.insert(0, getattr(self, f"fpn_output{level}")(prev))
        return outs  # p2, p3, p4, p5


class _Decoder(nn.Module):
    """DensePose ``Decoder``: per level conv3x3+ReLU (+ bilinear x2) down to the common stride, summed."""

    def __init__(self, cfg: CSEConfig) -> None:
        super().__init__()
        log_common = int(math.log2(cfg.decoder_common_stride))
        for level in range(2, 6):
            ops: list[nn.Module] = []
            n = max(1, level - log_common)
            for k in range(n):
                ops.append(
                    nn.Conv2d(cfg.fpn_channels if k == 0 else cfg.decoder_channels, cfg.decoder_channels, 3, padding=1)
                )
                ops.append(nn.ReLU())
                if level != log_common:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            # detectron2's Conv2d applies the activation inside the conv module, so its
            # Sequential indices are conv, upsample, conv...; keep those indices.
            self.add_module(f"p{level}", _D2Sequential(ops))
        self.predictor = nn.Conv2d(cfg.decoder_channels, cfg.decoder_out_channels, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.p2(feats[0])
        for level in (3, 4, 5):
            x = x + getattr(self, f"p{level}")(feats[level - 2])
        return self.predictor(x)


class _D2Sequential(nn.Module):
    """Sequential whose ReLUs carry no index, so the conv keys match detectron2 (``p4.0``, ``p4.2``)."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self._order: list[tuple[str, str | None]] = []
        index = 0
        for op in ops:
            if isinstance(op, nn.ReLU):
                self._order.append(("relu", None))
                continue
            self.add_module(str(index), op)
            self._order.append(("module", str(index)))
            index += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, name in self._order:
            x = F.relu(x) if kind == "relu" else getattr(self, name)(x)  # type: ignore[arg-type]
        return x


class _V1ConvXHead(nn.Module):
    def __init__(self, cfg: CSEConfig, cin: int) -> None:
        super().__init__()
        self.n = cfg.head_convs
        for i in range(cfg.head_convs):
            self.add_module(
                f"body_conv_fcn{i + 1}",
                nn.Conv2d(cin, cfg.head_channels, cfg.head_kernel, padding=cfg.head_kernel // 2),
            )
            cin = cfg.head_channels
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x


class _ConvGN(nn.Conv2d):
    """detectron2 ``Conv2d(bias=False, norm=GroupNorm(32, cout))`` (keys ``<name>.weight``, ``<name>.norm.*``)."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(cin, cout, k, padding=k // 2, bias=False)
        self.norm = nn.GroupNorm(DEEPLAB_GN_GROUPS, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


def _branch(cin: int, cout: int, k: int, dilation: int = 1, pooled: bool = False) -> nn.Sequential:
    """conv (no bias) + GroupNorm(32) + ReLU, after a global mean when ``pooled`` (keys ``0``/``1`` or ``1``/``2``)."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if pooled else []
    pad = dilation * (k // 2)
    layers += [
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.GroupNorm(DEEPLAB_GN_GROUPS, cout),
        nn.ReLU(),
    ]
    return nn.Sequential(*layers)


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling of the DensePose DeepLab head (keys ``ASPP.convs.*``, ``ASPP.project.0``)."""

    def __init__(self, channels: int, rates: tuple[int, int, int] = ASPP_RATES) -> None:
        super().__init__()
        branches = [_branch(channels, channels, 1)]
        branches += [_branch(channels, channels, 3, dilation=r) for r in rates]
        branches.append(_branch(channels, channels, 1, pooled=True))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * channels, channels, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [conv(x) for conv in self.convs[:-1]]
        pooled = self.convs[-1](x)  # (B, C, 1, 1): bilinear resizing of one value is a broadcast
        outs.append(pooled.expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, dim=1))


class _NonLocal(nn.Module):
    """Embedded-Gaussian non-local block with 2x2 max-pooled keys and a GroupNorm output (keys ``NLBlock.*``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(1, channels // 2)
        self.inner = inner
        self.g = nn.Sequential(nn.Conv2d(channels, inner, 1), nn.MaxPool2d(2))
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Sequential(nn.Conv2d(channels, inner, 1), nn.MaxPool2d(2))
        self.W = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.GroupNorm(DEEPLAB_GN_GROUPS, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        values = self.g(x).flatten(2).transpose(1, 2)  # (B, N', inner)
        queries = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, inner)
        keys = self.phi(x).flatten(2)  # (B, inner, N')
        attn = torch.softmax(queries @ keys, dim=-1)  # (B, N, N')
        y = (attn @ values).transpose(1, 2).reshape(b, self.inner, h, w)
        return self.W(y) + x


class _DeepLabHead(nn.Module):
    """DensePose ``DensePoseDeepLabHead``: ASPP, optional non-local block, stacked convs (+ GN) with ReLU."""

    def __init__(self, cfg: CSEConfig, cin: int) -> None:
        super().__init__()
        self.ASPP = _ASPP(cin)
        self.NLBlock = _NonLocal(cin) if cfg.deeplab_nonlocal else None
        self.n = cfg.head_convs
        for i in range(cfg.head_convs):
            if cfg.deeplab_norm == "GN":
                conv: nn.Module = _ConvGN(cin, cfg.head_channels, cfg.head_kernel)
            else:
                conv = nn.Conv2d(cin, cfg.head_channels, cfg.head_kernel, padding=cfg.head_kernel // 2)
            self.add_module(f"body_conv_fcn{i + 1}", conv)
            cin = cfg.head_channels
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ASPP(x)
        if self.NLBlock is not None:
            x = self.NLBlock(x)
        for i in range(self.n):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x


class _EmbeddingPredictor(nn.Module):
    def __init__(self, cfg: CSEConfig, cin: int) -> None:
        super().__init__()
        k = cfg.deconv_kernel
        pad = int(k / 2 - 1)
        self.coarse_segm_lowres = nn.ConvTranspose2d(cin, cfg.coarse_segm_channels, k, stride=2, padding=pad)
        self.embed_lowres = nn.ConvTranspose2d(cin, cfg.embed_dim, k, stride=2, padding=pad)
        self.up_scale = cfg.up_scale

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, segm: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        embed = self._up(self.embed_lowres(x))
        return embed, (self._up(self.coarse_segm_lowres(x)) if segm else None)


class _ROIHeads(nn.Module):
    def __init__(self, cfg: CSEConfig) -> None:
        super().__init__()
        cin = cfg.fpn_channels
        if cfg.decoder:
            self.decoder = _Decoder(cfg)
            cin = cfg.decoder_out_channels
        self.densepose_head: nn.Module = _DeepLabHead(cfg, cin) if cfg.head == "deeplab" else _V1ConvXHead(cfg, cin)
        self.densepose_predictor = _EmbeddingPredictor(cfg, self.densepose_head.out_channels)


# ----------------------------------------------------------------- ROIAlign
def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
) -> torch.Tensor:
    """ROIAlign with ``aligned=True`` (detectron2 ``ROIAlignV2``), one box per image.

    Args:
        features: (B, C, h, w) feature map.
        boxes: (B, 4) boxes ``(x0, y0, x1, y1)`` in input-image edge
            coordinates ([dife.coords][dife.coords]), one per batch item.
        output_size: Side ``R`` of the pooled map.
        spatial_scale: Feature pixels per image pixel (1/4 for p2).
        sampling_ratio: Samples per bin and axis (> 0).

    Returns:
        (B, C, R, R) pooled features: the mean of ``sampling_ratio^2``
        bilinear samples per bin; samples more than one pixel outside the map
        count as 0, those within one pixel are clamped to the border, as in
        the reference kernel.
    """
    b, _, h, w = features.shape
    n = output_size * sampling_ratio
    steps = (torch.arange(n, device=features.device, dtype=features.dtype) + 0.5) / n  # (n,)
    bx = boxes.to(features.dtype) * spatial_scale - 0.5  # aligned: shift by half a pixel
    xs = bx[:, 0:1] + steps[None] * (bx[:, 2:3] - bx[:, 0:1])  # (B, n) feature pixel-centre coords
    ys = bx[:, 1:2] + steps[None] * (bx[:, 3:4] - bx[:, 1:2])
    gx = (xs + 0.5) * (2.0 / w) - 1.0
    gy = (ys + 0.5) * (2.0 / h) - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, n, n, 2)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = ((xs >= -1.0) & (xs <= w))[:, None, :] & ((ys >= -1.0) & (ys <= h))[:, :, None]  # (B, n, n)
    sampled = sampled * inside[:, None].to(sampled.dtype)
    return F.avg_pool2d(sampled, sampling_ratio)


# ----------------------------------------------------------------- teacher
class CSETeacher(nn.Module):
    """Frozen DensePose CSE network applied to whole face crops.

    Args:
        config: Architecture / preprocessing (defaults: R50-FPN CSE).

    Attributes:
        backbone: ResNet + FPN (``backbone.*`` keys).
        roi_heads: decoder, DensePose head and predictor (``roi_heads.*`` keys).
        out_channels: Embedding channels (16).
    """

    def __init__(self, config: CSEConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else CSEConfig()
        self.backbone = _FPNBackbone(self.config)
        self.roi_heads = _ROIHeads(self.config)
        c = self.config
        self.register_buffer("pixel_mean", torch.tensor(c.pixel_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(c.pixel_std, dtype=torch.float32), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def out_channels(self) -> int:
        """Channels of the embedding."""
        return self.config.embed_dim

    @property
    def output_size(self) -> int:
        """Side of the embedding grid (112 by default)."""
        return self.config.output_size

    def train(self, mode: bool = True) -> CSETeacher:
        """A teacher stays in eval mode (it is frozen); ``train()`` is a no-op."""
        return super().train(False)

    # -------------------------------------------------------------- forward
    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """RGB [-1, 1] images -> normalised, resized, zero-padded detectron2 input.

        Returns:
            ``(x, (h, w))``: the padded (B, 3, H', W') batch (H', W' multiples
            of 32) and the size of the image inside it (the box).
        """
        _check_images(images)
        c = self.config
        x = (images.to(self.pixel_mean.dtype) + 1.0) * 127.5  # RGB 0..255
        if c.input_format == "BGR":
            x = x.flip(1)
        x = (x - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if c.input_size is not None:
            scale = c.input_size / min(h, w)
            if max(h, w) * scale > c.max_size:
                scale = c.max_size / max(h, w)
            nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
            if (nh, nw) != (h, w):
                x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)
            h, w = nh, nw
        ph, pw = -h % 32, -w % 32
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return x, (h, w)

    def forward_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embedding and coarse segmentation of whole-crop boxes.

        Args:
            images: (B, 3, H, W) RGB in [-1, 1].

        Returns:
            ``{"embedding": (B, embed_dim, S, S), "coarse_segm": (B, 2, S, S)}``
            with ``S = output_size`` (112), both spanning the whole image.
        """
        embed, segm = self._run(images, segm=True)
        assert segm is not None
        return {"embedding": embed, "coarse_segm": segm}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel CSE embedding of whole face crops.

        Args:
            images: (B, 3, H, W) float RGB in [-1, 1].

        Returns:
            (B, embed_dim, S, S) raw embedding, ``S = output_size`` (112),
            on a grid spanning the whole image (resize with [resize_to][dife.train.teachers.cse.CSETeacher.resize_to]).

        Raises:
            ShapeError: images not (B, 3, H, W) floats, or non-finite.
        """
        return self._run(images, segm=False)[0]

    def _run(self, images: torch.Tensor, segm: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        c = self.config
        x, (h, w) = self.preprocess(images)
        x = x.to(next(self.parameters()).dtype)
        feats = self.backbone(x)
        box = torch.tensor([0.0, 0.0, float(w), float(h)], device=x.device, dtype=x.dtype).expand(x.shape[0], 4)
        if c.decoder:
            fmap = self.roi_heads.decoder(feats)
            level_stride = c.decoder_common_stride
        else:
            # detectron2's assign_boxes_to_levels: floor(4 + log2(sqrt(area) / 224)), clamped to [2, 5]
            level = int(math.floor(4 + math.log2(math.sqrt(h * w) / 224 + 1e-8)))
            level = min(max(level, 2), 5)
            fmap, level_stride = feats[level - 2], 2**level
        pooled = roi_align(fmap, box, c.pooler_resolution, 1.0 / level_stride, c.sampling_ratio)
        head = self.roi_heads.densepose_head(pooled)
        return self.roi_heads.densepose_predictor(head, segm=segm)

    @staticmethod
    def resize_to(embedding: torch.Tensor, size: tuple[int, int] | int) -> torch.Tensor:
        """Resample a (B, C, S, S) whole-crop embedding to another grid over the same crop.

        Bilinear, ``align_corners=False`` (pixel-centre convention), like
        detectron2's resizing of DensePose outputs to the box.

        Args:
            embedding: (B, C, h, w) output of [forward][dife.train.teachers.cse.CSETeacher.forward].
            size: Target ``(H, W)`` or side.

        Returns:
            (B, C, H, W).
        """
        if not isinstance(embedding, torch.Tensor) or embedding.ndim != 4:
            raise ShapeError(f"embedding must be a (B, C, H, W) tensor, got {_shape(embedding)}")
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(hw) < 1:
            raise InputError(f"size must be positive, got {size!r}")
        if tuple(embedding.shape[-2:]) == hw:
            return embedding
        return F.interpolate(embedding, size=hw, mode="bilinear", align_corners=False)

    # -------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        config: CSEConfig | None = None,
        *,
        map_location: str | torch.device = "cpu",
        **overrides: Any,
    ) -> CSETeacher:
        """Build the teacher from a detectron2 DensePose CSE checkpoint.

        Args:
            path: Model zoo ``.pkl`` (e.g. ``model_final_421d28.pkl``) or a
                ``.pth`` written by detectron2's checkpointer.
            config: Architecture; default: read from the tensor shapes and key
                names ([config_from_state_dict][dife.train.teachers.cse.config_from_state_dict]), the preprocessing fields
                keep their detectron2 defaults.
            map_location: Device of the returned module.
            **overrides: Fields of [CSEConfig][dife.train.teachers.cse.CSEConfig] to change on the
                inferred config (e.g. ``input_size=512``).

        Returns:
            The frozen teacher in eval mode.

        Raises:
            ModelNotFoundError: ``path`` does not exist (the message says where
                to download the models).
            CheckpointError: unsafe / corrupt file, or weights that do not
                match the architecture (names the key and shapes).
        """
        state = load_detectron2_weights(path)
        if config is None:
            config = config_from_state_dict(state)
        if overrides:
            try:
                config = replace(config, **overrides)
            except TypeError as exc:
                raise InputError(f"unknown CSEConfig field in {sorted(overrides)}: {exc}") from None
        model = cls(config)
        model.load_detectron2_state_dict(state, source=str(path))
        return model.to(map_location)

    def load_detectron2_state_dict(self, state: Mapping[str, Any], *, source: str = "state dict") -> None:
        """Strictly copy detectron2-named weights into this module.

        Every key of this module must be present with its exact shape; keys
        under [IGNORED_PREFIXES][dife.train.teachers.cse.IGNORED_PREFIXES] are skipped; any other key is an error.

        Raises:
            CheckpointError: naming the first missing / unexpected key or shape mismatch.
        """
        own = self.state_dict()
        used: dict[str, torch.Tensor] = {}
        unexpected = []
        for key, value in state.items():
            if key in own:
                used[key] = _as_tensor(value, key, source)
            elif not key.startswith(IGNORED_PREFIXES):
                unexpected.append(key)
        missing = [k for k in own if k not in used]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
            raise CheckpointError(
                f"{source} does not match the CSE architecture ({'; '.join(parts)}); config: {self.config}"
            )
        for key, t in used.items():
            if tuple(t.shape) != tuple(own[key].shape):
                raise CheckpointError(
                    f"{source}: {key} has shape {tuple(t.shape)}, the CSE architecture expects {tuple(own[key].shape)}"
                )
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in used.items()}, strict=True)


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_images(images: object) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ShapeError(f"images must be a (B, 3, H, W) tensor of RGB in [-1, 1], got {_shape(images)}")
    if not images.is_floating_point():
        raise ShapeError(
            f"images must be float RGB in [-1, 1], got dtype {images.dtype} with shape {tuple(images.shape)}"
        )
    if images.shape[0] == 0 or images.shape[2] < 1 or images.shape[3] < 1:
        raise ShapeError(f"images batch is empty: {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ShapeError(f"images with shape {tuple(images.shape)} contain NaN or infinite values")


def _as_tensor(value: Any, key: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise CheckpointError(f"{source}: {key} is a numpy array of dtype {value.dtype}, not numbers")
        t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))  # also fixes byte order
    else:
        raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, not an array / tensor")
    return t.float()


# ------------------------------------------------------------ config inference
_BLOCK_RE = re.compile(r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.")
_FCN_RE = re.compile(r"^roi_heads\.densepose_head\.body_conv_fcn(\d+)\.weight$")
_DEC_RE = re.compile(r"^roi_heads\.decoder\.p5\.(\d+)\.weight$")


def config_from_state_dict(state: Mapping[str, Any], **overrides: Any) -> CSEConfig:
    """Architecture of a detectron2 CSE checkpoint, read from its key names and shapes.

    Reads the blocks per stage, stem / bottleneck / output widths, groups,
    FPN and decoder widths, the head (V1ConvX, or DeepLab with its norm and
    non-local block), the number, width and kernel of the head convs, the
    embedding size and the deconvolution kernel. Not stored in the
    weights and left at detectron2's defaults: ``stride_in_1x1`` (True),
    the pooler, ``up_scale`` and the preprocessing.

    Args:
        state: ``{detectron2 key: array / tensor}`` (only ``.shape`` is read).
        **overrides: Fields to set on the result.

    Raises:
        CheckpointError: the keys do not describe a DensePose CSE R-CNN with FPN.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"not a DensePose CSE R-CNN (FPN) checkpoint: key {key!r} is missing")
        return tuple(int(s) for s in state[key].shape)

    blocks = [0, 0, 0, 0]
    head_convs = 0
    dec_p5 = []
    for key in state:
        m = _BLOCK_RE.match(key)
        if m:
            k = int(m.group(1)) - 2
            blocks[k] = max(blocks[k], int(m.group(2)) + 1)
        m = _FCN_RE.match(key)
        if m:
            head_convs = max(head_convs, int(m.group(1)))
        m = _DEC_RE.match(key)
        if m:
            dec_p5.append(int(m.group(1)))
    if min(blocks) < 1 or head_convs < 1:
        raise CheckpointError(
            f"not a DensePose CSE R-CNN (FPN) checkpoint: found res2..res5 blocks {blocks} and {head_convs} "
            "densepose_head.body_conv_fcn convs"
        )
    width = shape("backbone.bottom_up.res2.0.conv1.weight")[0]
    groups = width // shape("backbone.bottom_up.res2.0.conv2.weight")[1]
    decoder = "roi_heads.decoder.predictor.weight" in state
    fcn1 = shape("roi_heads.densepose_head.body_conv_fcn1.weight")
    deeplab = "roi_heads.densepose_head.ASPP.project.0.weight" in state
    embed = shape("roi_heads.densepose_predictor.embed_lowres.weight")
    segm = shape("roi_heads.densepose_predictor.coarse_segm_lowres.weight")
    kw: dict[str, Any] = dict(
        blocks=tuple(blocks),
        stem_channels=shape("backbone.bottom_up.stem.conv1.weight")[0],
        num_groups=groups,
        width_per_group=width // groups,
        res2_out_channels=shape("backbone.bottom_up.res2.0.conv3.weight")[0],
        fpn_channels=shape("backbone.fpn_lateral2.weight")[0],
        decoder=decoder,
        head="deeplab" if deeplab else "v1convx",
        deeplab_norm="GN" if not deeplab or "roi_heads.densepose_head.body_conv_fcn1.norm.weight" in state else "",
        deeplab_nonlocal="roi_heads.densepose_head.NLBlock.theta.weight" in state,
        head_convs=head_convs,
        head_channels=fcn1[0],
        head_kernel=fcn1[-1],
        embed_dim=embed[1],
        deconv_kernel=embed[-1],
        coarse_segm_channels=segm[1],
    )
    depth = next((d for d, b in _BLOCKS_PER_DEPTH.items() if b == tuple(blocks)), None)
    if depth is not None:
        kw["depth"], kw["blocks"] = depth, None
    if decoder:
        kw["decoder_channels"] = shape("roi_heads.decoder.p2.0.weight")[0]
        kw["decoder_out_channels"] = shape("roi_heads.decoder.predictor.weight")[0]
        n5 = len(dec_p5)
        kw["decoder_common_stride"] = 2 ** (5 - n5) if 1 < n5 <= 3 else 4
    kw.update(overrides)
    try:
        return CSEConfig(**kw)
    except (TypeError, InputError) as exc:
        raise CheckpointError(f"cannot build a CSE config from the checkpoint: {exc}") from None


# ------------------------------------------------------------------ file I/O
def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise CheckpointError(f"refusing to rebuild numpy subtype {subtype!r}: only plain numpy.ndarray is allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise CheckpointError(f"numpy dtype record is not a string: {type(spec).__name__}")
    dt = np.dtype(spec)
    if dt.hasobject:
        raise CheckpointError("refusing numpy object dtype (it can hold arbitrary objects)")
    return dt


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise CheckpointError("numpy scalar record is not a plain number")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    if isinstance(buf, pickle.PickleBuffer):
        buf = buf.raw()
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise CheckpointError(f"numpy buffer record holds {type(buf).__name__}, not bytes")
    if not isinstance(dtype, np.dtype) or dtype.hasobject or order not in ("C", "F"):
        raise CheckpointError("numpy buffer record has an object dtype or an unknown memory order")
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise CheckpointError(f"numpy buffer record has a bad shape {shape!r}") from None
    return np.frombuffer(buf, dtype=dtype).reshape(dims, order=order).copy(order="C")


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("refusing a _codecs.encode call other than pickle protocol 2's latin1 bytes")
    return text.encode("latin1")


def _safe_globals() -> dict[tuple[str, str], Any]:
    """The globals a detectron2 model-zoo pickle may name: numpy arrays and plain containers only.

    The array, dtype, scalar and bytearray builders are those of the restricted
    unpickler of [dife.train.teachers._safe_pickle][] (no allocation from a size
    written in the pickle, arrays rebuilt only from their data).
    """
    from dife.train.teachers import _safe_pickle as sp

    out: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): sp._bytearray,
        ("__builtin__", "set"): set,
        ("_codecs", "encode"): sp._codecs_encode,
        ("numpy", "ndarray"): sp._NDArrayType,
        ("numpy", "dtype"): sp._np_dtype,
    }
    for m in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(m, "_reconstruct")] = sp._np_reconstruct
        out[(m, "scalar")] = sp._np_scalar
    for m in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(m, "_frombuffer")] = _np_frombuffer
    return out


def _array_unpickler(f: Any) -> Any:
    """A bounded unpickler ([SafeUnpickler][dife.train.teachers._safe_pickle.SafeUnpickler]) for numpy-only pickles."""
    from dife.train.teachers import _safe_pickle as sp

    allowed = _safe_globals()

    class _ArrayUnpickler(sp.SafeUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            obj = allowed.get((module, name))
            if obj is None:
                raise CheckpointError(
                    f"refusing to load global {module}.{name}: a detectron2 model-zoo pickle holds only numpy "
                    "arrays and plain containers, and unpickling other objects could run arbitrary code"
                )
            return obj

        def persistent_load(self, pid: Any) -> Any:
            raise CheckpointError("the pickle uses persistent ids (a legacy torch.save file?); name it .pth")

    return _ArrayUnpickler(f, encoding="latin1")


def _read_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _array_unpickler(f).load()
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - corrupt pickles raise many kinds
        raise CheckpointError(f"{path}: not a readable detectron2 pickle ({type(exc).__name__}: {exc})") from None


def _is_torch_file(path: Path) -> bool:
    """A ``torch.save`` file: a zip archive, or a legacy one named ``.pth`` / ``.pt``."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or path.suffix.lower() in (".pth", ".pt")


def load_detectron2_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the ``{name: array}`` weights of a detectron2 checkpoint, safely.

    Args:
        path: ``.pkl`` in the detectron2 model zoo format (``{"model": {...},
            "__author__": ...}``), or a ``torch.save`` file (``.pth``) holding
            ``{"model": state_dict, ...}`` or a bare state dict.

    Returns:
        ``{key: numpy array | tensor}``.

    Raises:
        ModelNotFoundError: ``path`` does not exist.
        CheckpointError: refused global, corrupt file, or no ``model`` dict.
    """
    p = Path(path)
    if not p.is_file():
        names = ", ".join(CSE_MODEL_ZOO)
        raise ModelNotFoundError(
            f"CSE checkpoint {str(p)!r} not found. Download a DensePose CSE model from the detectron2 model zoo "
            f"({_MODEL_ZOO_PAGE}), e.g. {CSE_MODEL_ZOO['densepose_rcnn_R_50_FPN_soft_animals_I0_finetune_16k']} "
            f"(known models: {names})"
        )
    if _is_torch_file(p):
        try:
            data = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{p}: cannot be read with torch.load(weights_only=True): {exc}") from None
    else:
        data = _read_pickle(p)
    if isinstance(data, Mapping) and "model" in data and isinstance(data["model"], Mapping):
        state = data["model"]
    elif isinstance(data, Mapping) and "blobs" in data:
        raise CheckpointError(f"{p}: a Caffe2 / Detectron1 'blobs' pickle, not a detectron2 DensePose CSE model")
    elif isinstance(data, Mapping) and data and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in data.values()):
        state = data
    else:
        raise CheckpointError(
            f"{p}: expected a detectron2 checkpoint dict with a 'model' entry, got {type(data).__name__}"
        )
    out: dict[str, Any] = {}
    for k, v in state.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{p}: state dict key {k!r} is not a string")
        out[k] = v
    return out
