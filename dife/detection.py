"""Finding faces in whole photos: [detect_faces][dife.detection.detect_faces] and the crop choice of the pipeline.

The face finder (`dife-face-finder`, shipped in the package) is a frozen
EfficientNet-Lite0 backbone with a light centre-point head
([FaceDetector][dife.modeling.face_detector.FaceDetector]). It sees each
photo letterboxed into a square of ``input_size`` (320) pixels: the photo in
the top-left corner, scaled so that its longer side fills the square, black
elsewhere. It returns square face boxes framed as the face crops dife is
trained and evaluated on: centred on the eyes and nose (humans: and mouth
corners), side 2.5x their extent, in photo pixels (edge coordinates, see
[dife.coords][]); a box may reach past the photo's edges.

Where a function of dife takes an optional face box (``box``, ``src_box``,
``tgt_box``), the box is chosen here, once, by [choose_faces][dife.detection.choose_faces]:

* a box ``(x0, y0, x1, y1)``: used as given;
* ``"image"``: the centred square of the image (dife's behaviour before the
  face finder existed; right for images that are already face crops);
* ``None`` (the default): find the face. For the source of a keypoint
  transfer, the detected face whose box holds the given points (the best
  scoring of those); elsewhere the best-scoring face. When no face is found
  (or none holds the points), a [NoFaceWarning][dife.detection.NoFaceWarning]
  is issued and the centred square is used, so a face crop that the finder
  misses still works as before.

The detection used for each image is reported: ``Embedding.faces``,
``KeypointScores.src_face`` / ``tgt_face``, and the command line prints it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dife.checks import check_device, check_int, check_number, check_positive_int
from dife.coords import CropTransform, box_iou
from dife.errors import CheckpointError, InputError, ModelNotFoundError, UnknownDomainError
from dife.images import load_image, split_images
from dife.modeling.face_detector import FaceDetector, FaceDetectorConfig

__all__ = [
    "DEFAULT_DETECTOR",
    "Detection",
    "NoFaceWarning",
    "detect_faces",
    "load_detector",
    "save_detector",
    "get_default_detector",
    "set_default_detector",
    "choose_faces",
    "IMAGE_BOX",
    "REFINE_ZOOM",
    "REFINE_CANDIDATE_SCORE",
]

#: Name of the shipped face finder.
DEFAULT_DETECTOR = "dife-face-finder"
#: The ``box`` value that asks for the centred square of the image instead of the face finder.
IMAGE_BOX = "image"

_WEIGHTS = Path(__file__).resolve().parent / "weights"
_lock = threading.RLock()
_default: FaceDetector | None = None


class NoFaceWarning(UserWarning):
    """The face finder found no face where one was needed; the centred square was used instead."""


@dataclass(frozen=True)
class Detection:
    """One face found in a photo.

    Attributes:
        box: Square face box ``(x0, y0, x1, y1)`` in photo pixels, edge
            coordinates (it may reach outside the photo).
        score: Confidence in [0, 1] that a face is centred there.
        species: Most likely species (one of the finder's species).
        species_scores: Probability of each species, summing to 1.
        keypoints: Rough landmark estimates ``name -> (x, y)`` (pixel-centre
            coordinates): eyes and nose, and mouth corners for humans.
    """

    box: tuple[float, float, float, float]
    score: float
    species: str
    species_scores: dict[str, float] = field(default_factory=dict, compare=False)
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict, compare=False)

    @property
    def side(self) -> float:
        """Side of the square box, in photo pixels."""
        return self.box[2] - self.box[0]

    def contains(self, points: np.ndarray) -> bool:
        """Whether every ``(x, y)`` point (pixel-centre coordinates) lies inside the box."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5
        x0, y0, x1, y1 = self.box
        return bool(np.all((p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (box rounded to 0.1 px, scores to 1e-4)."""
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "species": self.species,
            "species_scores": {k: round(v, 4) for k, v in self.species_scores.items()},
            "keypoints": {k: [round(x, 1), round(y, 1)] for k, (x, y) in self.keypoints.items()},
        }

    def __str__(self) -> str:
        b = ", ".join(f"{v:.0f}" for v in self.box)
        return f"{self.species} face ({b}) score {self.score:.2f}"


# ------------------------------------------------------------------ weights
def save_detector(detector: FaceDetector, folder: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (float16 tensors) atomically.

    Args:
        detector: The face finder.
        folder: Output folder (created).

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    from dife._io import atomic_path, atomic_write

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in detector.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "model_type": "dife-face-detector"})
    with atomic_write(out / "config.json", "w") as f:
        f.write(detector.config.to_json())
    return out


def load_detector(
    name_or_path: str | os.PathLike[str] | None = None, *, device: str | torch.device | None = None
) -> FaceDetector:
    """Load a face finder from a folder (``config.json`` + ``model.safetensors``) or by name.

    Args:
        name_or_path: ``None`` or ``"dife-face-finder"`` for the shipped one, or a folder.
        device: Where to put it (default CPU).

    Returns:
        The detector in eval mode, float32, gradients off.

    Raises:
        ModelNotFoundError: no such folder / name.
        CheckpointError: unreadable, incomplete or non-finite weights; a bad config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if name_or_path is None or str(name_or_path) == DEFAULT_DETECTOR:
        folder = _WEIGHTS / DEFAULT_DETECTOR
        if not (folder / "model.safetensors").is_file():
            raise ModelNotFoundError(f"the shipped face finder is missing from the package ({folder})")
    else:
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"face finder {str(name_or_path)!r} not found: pass {DEFAULT_DETECTOR!r} or a folder with "
                "config.json and model.safetensors"
            )
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: cannot be read ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("model_type", "dife-face-detector") != "dife-face-detector":
        raise CheckpointError(f"{folder / 'config.json'} is not a dife face detector config")
    config = FaceDetectorConfig.from_dict(cfg)
    try:
        state = load_file(str(folder / "model.safetensors"))
    except (OSError, SafetensorError, ValueError) as e:
        raise CheckpointError(f"{folder / 'model.safetensors'}: cannot be read ({e})") from None
    det = FaceDetector(config)
    own = det.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}: weights do not fit the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{folder}: {k} has shape {tuple(v.shape)}, the config needs {tuple(own[k].shape)}")
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{folder}: {k} holds non-finite values")
    det.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    det.requires_grad_(False).eval()
    if device is not None:
        det = det.to(_device(device))
    return det


def _device(device: Any) -> torch.device:
    dev = check_device(device, allow_none=False)
    assert dev is not None
    return dev


def get_default_detector() -> FaceDetector:
    """The shipped face finder (or the one given to [set_default_detector][dife.detection.set_default_detector]), loaded once."""
    global _default
    with _lock:
        if _default is None:
            _default = load_detector(None)
        return _default


def set_default_detector(detector: FaceDetector | str | os.PathLike[str] | None) -> None:
    """Use another face finder wherever ``detector=None`` (``None`` restores the shipped one)."""
    global _default
    with _lock:
        _default = detector if isinstance(detector, FaceDetector) or detector is None else load_detector(detector)


def _resolve(detector: Any) -> FaceDetector:
    if isinstance(detector, FaceDetector):
        return detector
    if detector is None:
        return get_default_detector()
    if isinstance(detector, (str, os.PathLike)):
        return load_detector(detector)
    raise InputError(f"detector must be a FaceDetector, a name / folder, or None, got {type(detector).__name__}")


# ------------------------------------------------------------------ detection
def _species_mask(det: FaceDetector, species: Any) -> torch.Tensor | None:
    if species is None:
        return None
    names = [species] if isinstance(species, str) else list(species)
    known = det.config.species
    bad = [s for s in names if s not in known]
    if bad or not names:
        raise UnknownDomainError(f"unknown species {bad or names!r} for the face finder; it knows {list(known)}")
    return torch.tensor([s in names for s in known])


def _check_score(min_score: Any) -> float | None:
    return check_number(min_score, "min_score", minimum=0.0, maximum=1.0, allow_none=True)


#: A refinement pass looks at a square of this many face-box sides around each face.
REFINE_ZOOM = 1.8
#: Whole-photo score from which a face gets a closer look (when ``refine`` > 0).
REFINE_CANDIDATE_SCORE = 0.05


def _views(images: Sequence[torch.Tensor], transforms: Sequence[CropTransform], detector: FaceDetector) -> torch.Tensor:
    """Resample each image to its view and normalise: (B, 3, S, S)."""
    from dife.embedding import resample_crop

    c = detector.config
    dev = detector.device
    mean = torch.tensor(c.mean, device=dev).view(3, 1, 1)
    std = torch.tensor(c.std, device=dev).view(3, 1, 1)
    return torch.stack(
        [(resample_crop(img.to(dev, torch.float32), t) - mean) / std for img, t in zip(images, transforms, strict=True)]
    )


def _to_photo(d: Any, t: CropTransform, detector: FaceDetector) -> Detection:
    """A decoded face (view edge coordinates) in photo pixels."""
    c = detector.config
    s = t.side / t.size
    box = tuple(
        float(v) for v in (t.left + d.box[0] * s, t.top + d.box[1] * s, t.left + d.box[2] * s, t.top + d.box[3] * s)
    )
    kps = {}
    for name, (x, y) in zip(c.keypoints, d.keypoints.cpu().tolist(), strict=True):
        if name.startswith("mouth") and c.species[d.species] != "human":
            continue
        kps[name] = (t.left + x * s - 0.5, t.top + y * s - 0.5)
    probs = d.species_probs.cpu().tolist()
    return Detection(
        box,  # type: ignore[arg-type]
        float(d.score),
        c.species[d.species],
        {n: float(p) for n, p in zip(c.species, probs, strict=True)},
        kps,
    )


def detect_tensors(
    images: Sequence[torch.Tensor],
    detector: FaceDetector,
    *,
    species: Any = None,
    min_score: float | None = None,
    max_detections: int | None = None,
    refine: int | None = None,
    max_refined: int = 5,
) -> list[list[Detection]]:
    """Detect faces in loaded (3, H, W) images in [0, 1], batched (the torch core of [detect_faces][dife.detection.detect_faces]).

    First the whole photo, letterboxed; then ``refine`` times, a closer look
    at each of the ``max_refined`` best faces: a square view of
    [REFINE_ZOOM][dife.detection.REFINE_ZOOM] box sides centred on the face
    (black outside the photo), where the face fills far more of the view. The
    face found nearest the view's centre that overlaps the first box (IoU >
    0.3) gives the refined box, landmarks and species, and the score becomes
    the geometric mean of the whole-photo score and the closer look's (0 when
    the closer look finds nothing there). So that a face scored low in the
    whole photo (a small face) can still pass ``min_score`` after a closer
    look, faces from [REFINE_CANDIDATE_SCORE][dife.detection.REFINE_CANDIDATE_SCORE]
    up are refined; the faces returned are those with a final score >=
    ``min_score``, best first, without duplicates (IoU > 0.5 with a better face).
    """
    c = detector.config
    size = c.input_size
    mask = _species_mask(detector, species)
    final_score = float(c.min_score if min_score is None else min_score)
    refine = c.refine if refine is None else max(0, int(refine))
    first_score = min(final_score, REFINE_CANDIDATE_SCORE) if refine else final_score
    transforms = [
        CropTransform(0.0, 0.0, float(max(img.shape[1], img.shape[2])), size, int(img.shape[2]), int(img.shape[1]))
        for img in images
    ]
    with torch.inference_mode():
        raw = detector.decode(
            detector(_views(images, transforms, detector)),
            min_score=first_score,
            max_detections=None if refine else max_detections,
            species_mask=mask,
        )
    out: list[list[Detection]] = []
    for dets, t in zip(raw, transforms, strict=True):
        faces = []
        for d in dets:
            f = _to_photo(d, t, detector)
            cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
            if 0 <= cx <= t.width and 0 <= cy <= t.height:  # a centre in the letterbox padding is no face
                faces.append(f)
        out.append(faces)
    if not refine:
        return out
    photo_scores = [[f.score for f in faces] for faces in out]
    for _ in range(refine):
        jobs = [(i, k) for i, faces in enumerate(out) for k in range(min(len(faces), max_refined))]
        if not jobs:
            break
        views = []
        for i, k in jobs:
            f = out[i][k]
            side = REFINE_ZOOM * f.side
            cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
            views.append(
                CropTransform(cx - side / 2, cy - side / 2, side, size, transforms[i].width, transforms[i].height)
            )
        with torch.inference_mode():
            found = detector.decode(
                detector(_views([images[i] for i, _ in jobs], views, detector)), min_score=0.0, species_mask=mask
            )
        for (i, k), v, dets in zip(jobs, views, found, strict=True):
            old = out[i][k]
            centre = size / 2
            best = None
            for d in dets:
                f = _to_photo(d, v, detector)
                if box_iou(f.box, old.box) <= 0.3:
                    continue
                dist = ((d.box[0] + d.box[2]) / 2 - centre) ** 2 + ((d.box[1] + d.box[3]) / 2 - centre) ** 2
                if best is None or dist < best[0]:
                    best = (dist, f)
            if best is not None:
                f = best[1]
                score = math.sqrt(photo_scores[i][k] * f.score)
                out[i][k] = Detection(f.box, score, f.species, f.species_scores, f.keypoints)
            else:
                out[i][k] = dataclasses.replace(old, score=0.0)
    limit = c.max_detections if max_detections is None else int(max_detections)
    result = []
    for faces in out:
        kept: list[Detection] = []
        for f in sorted((f for f in faces if f.score >= final_score), key=lambda f: -f.score):
            if all(box_iou(f.box, g.box) <= 0.5 for g in kept):
                kept.append(f)
        result.append(kept[:limit])
    return result


def detect_faces(
    images: Any,
    *,
    species: str | Sequence[str] | None = None,
    min_score: float | None = None,
    model: FaceDetector | str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    refine: int | None = None,
) -> list[Detection] | list[list[Detection]]:
    """Find the faces of humans and animals in photos.

    Args:
        images: One image or a batch, any type [load_image][dife.images.load_image]
            accepts (path, PIL image, numpy array, torch tensor; a list of them,
            a (B, 3, H, W) tensor or a (B, H, W, 3) array).
        species: Only report faces of this species (or these species): the
            species of each face is then the most likely allowed one.
        min_score: Smallest score kept, in [0, 1] (default: the finder's, 0.3).
        model: A [FaceDetector][dife.modeling.face_detector.FaceDetector], a
            folder, or ``None`` for the shipped ``dife-face-finder``.
        batch_size: Images per forward pass.
        device: Where to run (default: the detector's device, the CPU).
        refine: Closer looks at each face (see [detect_tensors][dife.detection.detect_tensors]);
            0 keeps the boxes and scores of the whole-photo pass; default: the
            finder's ``config.refine`` (1 for ``dife-face-finder``).

    Returns:
        For one image, a list of [Detection][dife.detection.Detection], best
        first; for a batch, one such list per image.

    Raises:
        ImageError, ShapeError: unreadable images.
        UnknownDomainError: a species the finder does not know.
        InputError: bad options.
    """
    det = _resolve(model)
    if device is not None and _device(device) != det.device:
        import copy

        det = copy.deepcopy(det).to(_device(device))
    ms = _check_score(min_score)
    check_positive_int(batch_size, "batch_size")
    _species_mask(det, species)
    rf = None if refine is None else check_int(refine, "refine", minimum=0)
    sources, batched = split_images(images)
    out: list[list[Detection]] = []
    for s in range(0, len(sources), batch_size):
        chunk = [
            load_image(src, what=f"images[{s + k}]" if batched else "image")
            for k, src in enumerate(sources[s : s + batch_size])
        ]
        out.extend(detect_tensors(chunk, det, species=species, min_score=ms, refine=rf))
    return out if batched else out[0]


# ------------------------------------------------------------------ crop choice
def _is_image_box(box: Any) -> bool:
    return isinstance(box, str) and box == IMAGE_BOX


def choose_faces(
    images: Sequence[torch.Tensor],
    boxes: Sequence[Any],
    points: Sequence[np.ndarray | None] | None = None,
    *,
    detector: Any = None,
    what: Sequence[str] | None = None,
    crop_size: int | None = None,
) -> tuple[list[Any], list[Detection | None]]:
    """The crop choice of the pipeline: a box (or ``None`` = centred square) for every image.

    Args:
        images: Loaded (3, H, W) images in [0, 1].
        boxes: Per image: a box ``(x0, y0, x1, y1)`` (kept), ``"image"``
            (centred square), or ``None`` (find the face).
        points: Per image, optional (N, 2) points the chosen face must hold
            (the source keypoints of a transfer).
        detector: Face finder (``None``: the shipped one).
        what: Names of the images for warnings.
        crop_size: The model's input side: an image with no box whose sides
            are both at most this is taken as a face crop already (the centred
            square, no face finder): at the network's own resolution there is
            no photo around a face to find it in.

    Returns:
        ``(boxes, faces)``: per image the box to crop (``None`` for the
        centred square) and the [Detection][dife.detection.Detection] used (or ``None``).
    """
    n = len(images)
    pts = list(points) if points is not None else [None] * n
    names = list(what) if what is not None else [f"images[{i}]" for i in range(n)]
    small = crop_size is not None and crop_size > 0
    need = [
        i
        for i, b in enumerate(boxes)
        if b is None and not (small and max(int(images[i].shape[-1]), int(images[i].shape[-2])) <= int(crop_size))  # type: ignore[arg-type]
    ]
    out_boxes: list[Any] = [None if (b is None or _is_image_box(b)) else b for b in boxes]
    faces: list[Detection | None] = [None] * n
    if not need:
        return out_boxes, faces
    det = _resolve(detector)
    found = detect_tensors([images[i] for i in need], det)
    for i, dets in zip(need, found, strict=True):
        chosen = None
        if pts[i] is not None and len(np.asarray(pts[i]).reshape(-1, 2)):
            holding = [d for d in dets if d.contains(np.asarray(pts[i]))]
            chosen = holding[0] if holding else None
            if chosen is None:
                msg = (
                    f"{names[i]}: no face found that holds the given points"
                    + (f" ({len(dets)} other face{'s' if len(dets) != 1 else ''} found)" if dets else "")
                    + "; using the centred square of the image (pass a box, or box='image', to choose yourself)"
                )
                warnings.warn(msg, NoFaceWarning, stacklevel=3)
        elif dets:
            chosen = dets[0]
        else:
            warnings.warn(
                f"{names[i]}: no face found; using the centred square of the image "
                "(pass a box, or box='image', to choose yourself)",
                NoFaceWarning,
                stacklevel=3,
            )
        faces[i] = chosen
        out_boxes[i] = chosen.box if chosen is not None else None
    return out_boxes, faces
