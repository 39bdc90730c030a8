"""The face finder: a frozen EfficientNet-Lite0 backbone with a light centre-point head.

The network looks at a square view of a photo (``input_size`` pixels, the
photo letterboxed into it, see [dife.detection.detect_faces][dife.detection.detect_faces]) and
predicts, on a grid of stride ``stride``:

* ``heat`` (B, 1, h, w): logit that a face centre lies in the cell;
* ``species`` (B, K, h, w): species logits of that face;
* ``box`` (B, 3, h, w): the centre's offset inside the cell (x, y, in cells,
  through a sigmoid) and the log of the face box side in cells;
* ``keypoints`` (B, 2 * P, h, w): the face's landmarks relative to its
  centre, in box sides.

Faces are squares framed as the face crops of the development data: centred
on the eyes and nose (humans: and mouth corners), side 2.5x their extent.
Decoding ([FaceDetector.decode][dife.modeling.face_detector.FaceDetector.decode]) keeps the local maxima of the centre
heat map (a 3 x 3 max filter, as in CenterNet), then suppresses boxes that
overlap a better one.

Grid geometry (edge coordinates of the network view, ``[0, input_size]``):
cell ``(i, j)`` spans ``[stride * j, stride * (j + 1)]``; a face centre is
``stride * (j + sigmoid(box[0]))``, its side ``stride * exp(box[2])``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dife.checks import check_int, check_number, is_int, is_number
from dife.coords import box_iou
from dife.errors import CheckpointError, ShapeError
from dife.modeling.lite0 import LITE0_STAGES, Lite0Features

__all__ = ["FaceDetectorConfig", "FaceDetector", "RawDetection", "DETECTOR_SPECIES", "DETECTOR_KEYPOINTS"]

#: Species the shipped face finder knows, in logit order.
DETECTOR_SPECIES: tuple[str, ...] = ("human", "dog", "cat", "horse", "sheep", "cow")
#: Landmarks it predicts (the mouth corners are human-only).
DETECTOR_KEYPOINTS: tuple[str, ...] = ("eye_left_img", "eye_right_img", "nose", "mouth_left_img", "mouth_right_img")


@dataclass
class FaceDetectorConfig:
    """Architecture, preprocessing and decoding defaults of a [FaceDetector][dife.modeling.face_detector.FaceDetector].

    Attributes:
        species: Species names, one logit each.
        keypoints: Landmark names predicted per face.
        input_size: Side of the square network view, in pixels (a multiple of 32).
        backbone_stages: EfficientNet-Lite0 stages built (1..6).
        feature_stages: Stages whose outputs feed the neck (strides 8 / 16 / 32 for 2 / 4 / 5).
        neck_dim: Channels of the feature pyramid.
        head_dim: Channels of the head tower.
        head_layers: Depthwise-separable 5x5 convolutions in the head tower.
        mean: Per-channel mean subtracted from RGB in [0, 1].
        std: Per-channel std dividing RGB in [0, 1].
        min_score: Default score threshold of [FaceDetector.decode][dife.modeling.face_detector.FaceDetector.decode].
        nms_iou: Boxes overlapping a better one by more than this are dropped.
        max_detections: At most this many faces per image.
        refine: Closer looks at each face after the whole photo (see
            [detect_tensors][dife.detection.detect_tensors]); 0: the whole photo only.
        extra: Free-form metadata (training data, metrics, licence).
    """

    species: tuple[str, ...] = DETECTOR_SPECIES
    keypoints: tuple[str, ...] = DETECTOR_KEYPOINTS
    input_size: int = 320
    backbone_stages: int = 6
    feature_stages: tuple[int, ...] = (4, 5)
    neck_dim: int = 64
    head_dim: int = 64
    head_layers: int = 2
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    min_score: float = 0.3
    nms_iou: float = 0.4
    max_detections: int = 20
    refine: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise CheckpointError(f"face detector config: {msg}")

        for name in ("species", "keypoints", "feature_stages", "mean", "std"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
                fail(f"{name} must be a list, got {v!r}")
        self.species = tuple(self.species)
        self.keypoints = tuple(self.keypoints)
        if not self.species or not all(isinstance(s, str) and s for s in self.species):
            fail(f"species must be non-empty names, got {self.species!r}")
        if len(set(self.species)) != len(self.species):
            fail(f"duplicate species in {self.species!r}")
        if not all(isinstance(s, str) and s for s in self.keypoints):
            fail(f"keypoints must be names, got {self.keypoints!r}")
        ints = {
            "input_size": (32, 2048),
            "backbone_stages": (1, len(LITE0_STAGES)),
            "neck_dim": (1, 1024),
            "head_dim": (1, 1024),
            "head_layers": (0, 8),
            "max_detections": (1, 1000),
            "refine": (0, 4),
        }
        for name, (lo, hi) in ints.items():
            check_int(
                getattr(self, name), f"face detector config: {name}", minimum=lo, maximum=hi, error=CheckpointError
            )
        if self.input_size % 32:
            fail(f"input_size must be a multiple of 32, got {self.input_size}")
        fs = tuple(self.feature_stages)
        if not fs or not all(is_int(s) for s in fs) or list(fs) != sorted(set(fs)):
            fail(f"feature_stages must be increasing stage indices, got {fs!r}")
        if fs[0] < 1 or fs[-1] >= self.backbone_stages:
            fail(f"feature_stages must lie in 1..backbone_stages - 1 = {self.backbone_stages - 1}, got {fs!r}")
        self.feature_stages = fs
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) != 3 or not all(is_number(x) and math.isfinite(x) for x in v):
                fail(f"{name} must be 3 finite numbers, got {v!r}")
            setattr(self, name, tuple(float(x) for x in v))
        if min(self.std) <= 0:
            fail(f"std must be > 0, got {self.std!r}")
        for name in ("min_score", "nms_iou"):
            v = check_number(
                getattr(self, name), f"face detector config: {name}", minimum=0.0, maximum=1.0, error=CheckpointError
            )
            setattr(self, name, v)
        if not isinstance(self.extra, dict):
            fail(f"extra must be an object, got {type(self.extra).__name__}")

    @property
    def stride(self) -> int:
        """Stride of the output grid (that of the first feature stage)."""
        s = 2
        for i in range(self.feature_stages[0] + 1):
            s *= LITE0_STAGES[i][1]
        return s

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        for k in ("species", "keypoints", "feature_stages", "mean", "std"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Any) -> FaceDetectorConfig:
        """Build a config from [to_dict][dife.modeling.face_detector.FaceDetectorConfig.to_dict] output; unknown keys are an error."""
        if not isinstance(d, dict):
            raise CheckpointError(f"face detector config must be a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k not in ("model_type", "dife_version")}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(f"unknown face detector config keys {unknown}; known: {sorted(names)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise CheckpointError(f"invalid face detector config: {e}") from None

    def to_json(self) -> str:
        """Pretty JSON with a ``model_type`` tag."""
        return json.dumps({"model_type": "dife-face-detector", **self.to_dict()}, indent=2) + "\n"


def _sep_conv(cin: int, cout: int, k: int = 5) -> nn.Sequential:
    """Depthwise k x k, pointwise 1 x 1, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True)
    )


class _Neck(nn.Module):
    """Top-down feature pyramid: every stage projected to ``dim`` channels and summed at the finest stride."""

    def __init__(self, channels: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels)
        self.smooth = _sep_conv(dim, dim)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        p = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1]), strict=True):
            p = lat(f) + F.interpolate(p, size=f.shape[-2:], mode="nearest")
        return self.smooth(p)


@dataclass
class RawDetection:
    """One decoded face in the coordinates of the network view (edge coordinates, pixels).

    Attributes:
        box: ``(x0, y0, x1, y1)`` square box.
        score: Centre heat in [0, 1].
        species: Index of the most likely species.
        species_probs: (K,) softmax over species.
        keypoints: (P, 2) landmark estimates (edge coordinates of the view).
    """

    box: tuple[float, float, float, float]
    score: float
    species: int
    species_probs: torch.Tensor
    keypoints: torch.Tensor


class FaceDetector(nn.Module):
    """Backbone (frozen EfficientNet-Lite0 stages) + neck + centre-point head.

    Args:
        config: Architecture and decoding defaults.
    """

    def __init__(self, config: FaceDetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else FaceDetectorConfig()
        c = self.config
        self.backbone = Lite0Features(c.backbone_stages, out_stages=c.feature_stages)
        self.neck = _Neck(self.backbone.channels, c.neck_dim)
        layers = [_sep_conv(c.neck_dim if i == 0 else c.head_dim, c.head_dim) for i in range(c.head_layers)]
        self.tower = nn.Sequential(*layers)
        dim = c.head_dim if c.head_layers else c.neck_dim
        self.heat = nn.Conv2d(dim, 1, 1)
        self.species = nn.Conv2d(dim, len(c.species), 1)
        self.box = nn.Conv2d(dim, 3, 1)
        self.keypoints = nn.Conv2d(dim, 2 * len(c.keypoints), 1)
        nn.init.constant_(self.heat.bias, -4.0)  # CenterNet's prior: few cells hold a centre

    @property
    def stride(self) -> int:
        """Stride of the output grid in view pixels."""
        return self.config.stride

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    def head(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Neck and head on backbone stage outputs (for training on cached features)."""
        h = self.tower(self.neck(feats))
        return {"heat": self.heat(h), "species": self.species(h), "box": self.box(h), "keypoints": self.keypoints(h)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw output maps for a normalised batch.

        Args:
            x: (B, 3, S, S) RGB normalised with ``config.mean`` / ``config.std``,
                S divisible by 32.

        Returns:
            ``{"heat": (B, 1, h, w), "species": (B, K, h, w), "box": (B, 3, h, w),
            "keypoints": (B, 2P, h, w)}`` with ``h = H / stride``.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % 32 or x.shape[-2] % 32:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"FaceDetector expects a (B, 3, H, W) tensor with H, W divisible by 32, got {shape}")
        return self.head(self.backbone(x))

    @torch.no_grad()
    def decode(
        self,
        out: dict[str, torch.Tensor],
        *,
        min_score: float | None = None,
        nms_iou: float | None = None,
        max_detections: int | None = None,
        species_mask: torch.Tensor | None = None,
    ) -> list[list[RawDetection]]:
        """Turn output maps into faces, best first, per image.

        Args:
            out: [forward][dife.modeling.face_detector.FaceDetector.forward] output.
            min_score: Keep centres with heat >= this (default ``config.min_score``).
            nms_iou: Drop boxes overlapping a kept one by more than this IoU.
            max_detections: At most this many per image.
            species_mask: Optional (K,) bool: only these species may be reported
                (the species of a face is the most likely allowed one).

        Returns:
            For each image of the batch, a list of [RawDetection][dife.modeling.face_detector.RawDetection] in
            view edge coordinates, sorted by score.
        """
        c = self.config
        min_score = c.min_score if min_score is None else float(min_score)
        nms_iou = c.nms_iou if nms_iou is None else float(nms_iou)
        max_det = c.max_detections if max_detections is None else int(max_detections)
        s = float(self.stride)
        heat = torch.sigmoid(out["heat"].float())[:, 0]  # (B, h, w)
        peaks = heat == F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0]
        probs = torch.softmax(out["species"].float(), dim=1)
        if species_mask is not None:
            probs = probs * species_mask.to(probs).view(1, -1, 1, 1)
            probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
        box = out["box"].float()
        kps = out["keypoints"].float()
        B, h, w = heat.shape
        results: list[list[RawDetection]] = []
        for b in range(B):
            cand = (peaks[b] & (heat[b] >= min_score)).nonzero()
            scores = heat[b][cand[:, 0], cand[:, 1]]
            order = torch.argsort(scores, descending=True)[: 4 * max_det]
            dets: list[RawDetection] = []
            for k in order.tolist():
                i, j = (int(v) for v in cand[k])
                cx = s * (j + torch.sigmoid(box[b, 0, i, j]).item())
                cy = s * (i + torch.sigmoid(box[b, 1, i, j]).item())
                side = s * math.exp(min(box[b, 2, i, j].item(), 12.0))
                bx = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
                if any(box_iou(bx, d.box) > nms_iou for d in dets):
                    continue
                rel = kps[b, :, i, j].view(-1, 2)
                pts = torch.stack([cx + rel[:, 0] * side, cy + rel[:, 1] * side], dim=1)
                p = probs[b, :, i, j]
                dets.append(RawDetection(bx, float(scores[k]), int(torch.argmax(p)), p.clone(), pts))
                if len(dets) >= max_det:
                    break
            results.append(dets)
        return results
