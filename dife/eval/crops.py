"""Protocols: what each method sees of a face, and the unit errors are measured in.

* ``aligned``: the face crop as the reader gives it. Landmark-based crops put
  the eyes and nose of every face at similar relative positions, so a method
  that ignores the pixels and copies relative positions (the ``identity``
  baseline) is already strong here; every table shows it.
* ``jittered``: a random square sub-crop of each face, side ``scale x`` the
  face crop's (shorter) side with ``scale ~ U(0.55, 1.0)`` and a uniform random
  offset, constrained so that every keypoint stays inside; the sub-crop is
  resampled back to the face crop's size. The jitter of an image depends only
  on ``(seed, image id)``, so it is the same for every method and every pair
  that uses the image.
* ``wild``: whole photos (the ``wild`` layout: each record has a labelled
  ``face_box``), given to the methods as they are, with no box: a method must
  find the face itself (DIFE models do, through the face finder). Errors and
  PCK are measured relative to the *target face box* side instead of the
  image side: ``err70 = |p - g| * 70 / side`` and PCK@a counts
  ``|p - g| <= a * side`` ([reference_size][dife.eval.crops.reference_size]), so the numbers read in the
  same 70-px units of the face as those of ``aligned``.

``aligned`` and ``jittered`` are measured relative to the image the method saw
(the face crop), ``wild`` relative to the labelled face.

Coordinates follow [dife.coords][] (integer = pixel centre; boxes in edge
coordinates): a point ``x`` is inside the sub-crop ``[left, left + side]``
when ``left <= x + 0.5 <= left + side``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dife.errors import InputError, KeypointError
from dife.eval.readers import Face

__all__ = [
    "CROP_PROTOCOLS",
    "WILD",
    "PROTOCOLS",
    "JITTER_SCALE",
    "SubCrop",
    "jitter_box",
    "apply_crop",
    "make_view",
    "reference_size",
]

#: The crop protocols of face crops (the default of data without face boxes).
CROP_PROTOCOLS: tuple[str, ...] = ("aligned", "jittered")

WILD = "wild"
"""The whole-photo protocol (data with a ``face_box`` per record)."""

PROTOCOLS: tuple[str, ...] = (*CROP_PROTOCOLS, WILD)
"""Every protocol: the crop protocols and ``wild``."""

#: Range of the sub-crop side over the face crop side in ``jittered``.
JITTER_SCALE: tuple[float, float] = (0.55, 1.0)


@dataclass(frozen=True)
class SubCrop:
    """A square sub-crop ``(left, top, side)`` in edge coordinates of the face image."""

    left: float
    top: float
    side: float


def jitter_box(
    points: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = JITTER_SCALE,
) -> SubCrop:
    """A random square sub-crop of a ``width x height`` image that keeps every point inside.

    The side is ``u * min(width, height)`` with ``u ~ U(lo, hi)``; when the
    points span more than the drawn side, ``u`` is drawn from
    ``U(max(lo, span / min(width, height)), hi)`` instead. The offset is
    uniform over the positions that keep the points and the sub-crop inside
    the image. (Points that span more than the shorter side of a non-square
    image get a square of side ``span``, which then extends past the image.)

    Args:
        points: (N, 2) keypoints inside the image (pixel-centre coordinates).
        width: Image width.
        height: Image height.
        rng: Random generator.
        scale: ``(lo, hi)`` with ``0 < lo <= hi <= 1``.

    Returns:
        The [SubCrop][dife.eval.crops.SubCrop].

    Raises:
        InputError: a bad ``scale`` or image size.
        KeypointError: points outside the image.
    """
    lo, hi = (float(v) for v in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise InputError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1, got {scale!r}")
    if width < 1 or height < 1:
        raise InputError(f"empty image {width}x{height}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts.size and (
        not np.all(np.isfinite(pts))
        or pts[:, 0].min() < -0.5
        or pts[:, 1].min() < -0.5
        or pts[:, 0].max() > width - 0.5
        or pts[:, 1].max() > height - 0.5
    ):
        raise KeypointError(f"points must lie inside the {width}x{height} image, got {pts.tolist()}")
    base = float(min(width, height))
    if pts.size:
        e_lo = pts.min(axis=0) + 0.5  # edge coordinates of the extreme points
        e_hi = pts.max(axis=0) + 0.5
        span = float(np.max(e_hi - e_lo))
    else:
        e_lo = np.array([width, height], dtype=np.float64)
        e_hi = np.zeros(2)
        span = 0.0
    lo = min(max(lo, span / base), hi)
    side = float(rng.uniform(lo, hi)) * base if hi > lo else lo * base
    side = max(side, span)
    # left in [max(0, e_hi - side), min(W - side, e_lo)]
    x_min, x_max = max(0.0, e_hi[0] - side), min(width - side, e_lo[0])
    y_min, y_max = max(0.0, e_hi[1] - side), min(height - side, e_lo[1])
    left = float(rng.uniform(x_min, x_max)) if x_max > x_min else x_min
    top = float(rng.uniform(y_min, y_max)) if y_max > y_min else y_min
    return SubCrop(left, top, side)


def apply_crop(face: Face, crop: SubCrop, out_size: int | None = None) -> Face:
    """Cut a sub-crop out of a face and resample it to ``out_size`` (default: the face's side).

    Keypoints are mapped with ``x' = (x + 0.5 - left) * out_size / side - 0.5``
    (a face box, in edge coordinates, with ``x' = (x - left) * out_size / side``).
    """
    from PIL import Image

    size = int(out_size if out_size is not None else min(face.width, face.height))
    ix0, iy0 = math.floor(crop.left), math.floor(crop.top)
    ix1, iy1 = math.ceil(crop.left + crop.side), math.ceil(crop.top + crop.side)
    region = Image.fromarray(face.image).crop((ix0, iy0, ix1, iy1))  # outside the image: black
    box = (crop.left - ix0, crop.top - iy0, crop.left - ix0 + crop.side, crop.top - iy0 + crop.side)
    out = region.resize((size, size), Image.Resampling.BICUBIC, box=box)
    s = size / crop.side
    kps = {
        k: (_snap((x + 0.5 - crop.left) * s - 0.5, size), _snap((y + 0.5 - crop.top) * s - 0.5, size))
        for k, (x, y) in face.keypoints.items()
    }
    fb = None
    if face.face_box is not None:
        fb = tuple((v - o) * s for v, o in zip(face.face_box, (crop.left, crop.top) * 2, strict=True))
    return Face(face.id, face.species, np.asarray(out, dtype=np.uint8).copy(), kps, fb)  # type: ignore[arg-type]


def _snap(v: float, size: int, tol: float = 1e-6) -> float:
    """Undo rounding that puts a point on the crop border a hair outside it."""
    if -0.5 - tol <= v < -0.5:
        return -0.5
    if size - 0.5 < v <= size - 0.5 + tol:
        return size - 0.5
    return float(v)


def _rng_for(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode("utf-8"))])


def make_view(
    face: Face,
    protocol: str,
    *,
    seed: int = 0,
    scale: tuple[float, float] = JITTER_SCALE,
    names: Mapping[str, object] | None = None,
) -> Face:
    """The face as a method sees it under a crop protocol.

    Args:
        face: The loaded face crop (or whole photo, for ``wild``).
        protocol: ``"aligned"`` or ``"wild"`` (returned as is), or ``"jittered"``.
        seed: Seed of the jitter; the sub-crop depends only on ``(seed, face.id)``.
        scale: Side range of ``jittered``.
        names: Keypoints that must stay inside (default: all of the face's).

    Returns:
        The [Face][dife.eval.readers.Face] of the view.

    Raises:
        InputError: an unknown protocol, or ``wild`` for a face without a face box.
    """
    if protocol == WILD:
        if face.face_box is None:
            raise InputError(
                f"the {WILD} protocol needs a labelled face box per image ('face_box' in annotations.json); "
                f"{face.id!r} has none"
            )
        return face
    if protocol == "aligned":
        return face
    if protocol != "jittered":
        raise InputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    keep = [k for k in face.keypoints if names is None or k in names]
    pts = np.array([face.keypoints[k] for k in keep], dtype=np.float64).reshape(-1, 2)
    crop = jitter_box(pts, face.width, face.height, _rng_for(seed, face.id), scale=scale)
    return apply_crop(face, crop)


def reference_size(face: Face, protocol: str) -> tuple[float, float]:
    """``(width, height)`` that errors of ``protocol`` are relative to, for a target view.

    The view's image size for ``aligned`` / ``jittered``; ``(side, side)`` of
    the labelled face box for ``wild`` (its longer side, should a box not be square).

    Raises:
        InputError: ``wild`` for a face without a face box.
    """
    if protocol != WILD:
        return float(face.width), float(face.height)
    if face.face_box is None:
        raise InputError(f"the {WILD} protocol needs a labelled face box; {face.id!r} has none")
    x0, y0, x1, y1 = face.face_box
    side = float(max(x1 - x0, y1 - y0))
    return side, side
