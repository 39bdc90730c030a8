"""The coordinate convention of dife, written once.

**Keypoints** are float ``(x, y)`` pixel coordinates in the *original* image,
``x`` to the right, ``y`` down. An integer value is the **centre** of that
pixel: ``(0, 0)`` is the centre of the top-left pixel and ``(W - 1, H - 1)``
the centre of the bottom-right one. A point lies inside a W x H image when
``-0.5 <= x <= W - 0.5`` and ``-0.5 <= y <= H - 0.5`` (the outer edges of the
border pixels).

**Boxes** ``(x0, y0, x1, y1)`` are in *edge* coordinates, as in COCO and
torchvision: the whole W x H image is the box ``(0, 0, W, H)``. A box's edge
``x0`` is the pixel-centre coordinate ``x0 - 0.5``.

**Crop rule** (the authors'): the network sees a square crop resized to
``size x size`` (96). With a face box the square is centred on the box, side
``max(x1 - x0, y1 - y0)``; without one it is the centred square of side
``min(W, H)``. Parts of the square outside the image are black.

**Grid coordinates** are pixel-centre coordinates in that ``size x size``
crop, with the same integer-is-centre rule. The map between the two is

``x_grid = (x_img + 0.5 - left) * size / side - 0.5`` and its inverse
``x_img = (x_grid + 0.5) * side / size + left - 0.5``

(``left``/``top`` the crop's edge coordinates), i.e. the same formula the
development set uses for its crops. [grid_to_normalized][dife.coords.grid_to_normalized] converts grid
coordinates to the [-1, 1] convention of ``torch.nn.functional.grid_sample``
with ``align_corners=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from dife.errors import InputError, KeypointError, ShapeError

__all__ = [
    "MAX_BOX_SCALE",
    "CropTransform",
    "square_crop",
    "grid_to_normalized",
    "normalized_to_grid",
    "check_points_inside",
    "box_iou",
]

ArrayT = TypeVar("ArrayT")

#: Largest accepted face box, as a multiple of the image's longer side (``dife.coords.MAX_BOX_SCALE``).
#: A box 8x larger than the image leaves the whole image in 1/8 of the crop (12 of 96 pixels); larger
#: boxes are mistakes (wrong units, a box of another image), and their crops would cost memory for black.
MAX_BOX_SCALE: int = 8


def _validate_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"a box must be 4 numbers (x0, y0, x1, y1), got {box!r}") from None
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise InputError(f"box has non-finite values: {box!r}")
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box must have x1 > x0 and y1 > y0, got {box!r}")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise InputError(
            f"box {box!r} does not overlap the {width}x{height} image (edge coordinates, image = (0, 0, {width}, {height}))"
        )
    side, limit = max(x1 - x0, y1 - y0), MAX_BOX_SCALE * max(width, height)
    if side > limit:
        raise InputError(
            f"box {box!r} is {side:g} pixels across, more than MAX_BOX_SCALE = {MAX_BOX_SCALE} times the longer side "
            f"of the {width}x{height} image ({limit:g} pixels): the image would fill less than 1/{MAX_BOX_SCALE} of "
            "the crop; check the box (edge coordinates x0, y0, x1, y1 in this image's pixels)"
        )
    return x0, y0, x1, y1


@dataclass(frozen=True)
class CropTransform:
    """The square crop of one image, and the maps between its coordinates.

    Attributes:
        left: x edge coordinate of the crop's left edge in the image.
        top: y edge coordinate of the crop's top edge in the image.
        side: Side of the square crop, in image pixels.
        size: Side of the network grid the crop is resized to.
        width: Width of the original image.
        height: Height of the original image.
    """

    left: float
    top: float
    side: float
    size: int
    width: int
    height: int

    @property
    def scale(self) -> float:
        """Image pixels per grid pixel (``side / size``)."""
        return self.side / self.size

    def to_grid(self, points: ArrayT) -> ArrayT:
        """Image pixel coordinates (..., 2) -> grid pixel coordinates (..., 2).

        Works on numpy arrays and torch tensors alike.
        """
        s = self.size / self.side
        out = points * 0.0  # same type, dtype and device
        out[..., 0] = (points[..., 0] + 0.5 - self.left) * s - 0.5
        out[..., 1] = (points[..., 1] + 0.5 - self.top) * s - 0.5
        return out

    def to_image(self, points: ArrayT) -> ArrayT:
        """Grid pixel coordinates (..., 2) -> image pixel coordinates (..., 2)."""
        s = self.side / self.size
        out = points * 0.0
        out[..., 0] = (points[..., 0] + 0.5) * s + self.left - 0.5
        out[..., 1] = (points[..., 1] + 0.5) * s + self.top - 0.5
        return out

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask (...,) of image points that fall inside the crop square."""
        g = self.to_grid(np.asarray(points, dtype=np.float64))
        return np.all((g >= -0.5) & (g <= self.size - 0.5), axis=-1)


def square_crop(width: int, height: int, size: int, box: Sequence[float] | None = None) -> CropTransform:
    """The authors' crop rule for one image.

    Args:
        width: Image width in pixels (> 0).
        height: Image height in pixels (> 0).
        size: Network input side (96).
        box: Optional face box ``(x0, y0, x1, y1)`` in edge coordinates.

    Returns:
        The [CropTransform][dife.coords.CropTransform] of the square crop: centred on the box with
        side ``max(box width, box height)``, or the centred square of side
        ``min(width, height)`` without a box.

    Raises:
        InputError: for an empty image, a degenerate / non-overlapping box, or
            a box wider or taller than `dife.coords.MAX_BOX_SCALE`
            times the image's longer side.
    """
    if width <= 0 or height <= 0:
        raise InputError(f"empty image: {width}x{height}")
    if box is None:
        side = float(min(width, height))
        return CropTransform((width - side) / 2.0, (height - side) / 2.0, side, size, width, height)
    x0, y0, x1, y1 = _validate_box(box, width, height)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return CropTransform(cx - side / 2.0, cy - side / 2.0, side, size, width, height)


def grid_to_normalized(points: ArrayT, size: int) -> ArrayT:
    """Grid pixel coordinates -> [-1, 1] (``grid_sample``, ``align_corners=False``)."""
    return (points + 0.5) * (2.0 / size) - 1.0


def normalized_to_grid(points: ArrayT, size: int) -> ArrayT:
    """[-1, 1] coordinates (``align_corners=False``) -> grid pixel coordinates."""
    return (points + 1.0) * (size / 2.0) - 0.5


def check_points_inside(points: np.ndarray, width: int, height: int, *, what: str = "keypoints") -> np.ndarray:
    """Validate keypoints against an image and return them as float64 (..., 2).

    Raises:
        ShapeError: if the last dimension is not 2.
        KeypointError: for non-finite points or points outside the image
            (``-0.5 <= x <= W - 0.5``, ``-0.5 <= y <= H - 0.5``); the message
            names the first offending point.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim < 1 or pts.shape[-1] != 2:
        raise ShapeError(f"{what} must have shape (..., 2) as (x, y) pairs, got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise KeypointError(f"{what} contain NaN or infinite values")
    bad = (pts[..., 0] < -0.5) | (pts[..., 0] > width - 0.5) | (pts[..., 1] < -0.5) | (pts[..., 1] > height - 0.5)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        x, y = pts[idx]
        raise KeypointError(
            f"{what}[{', '.join(map(str, idx))}] = ({x:g}, {y:g}) lies outside the {width}x{height} image "
            f"(valid: -0.5 <= x <= {width - 0.5:g}, -0.5 <= y <= {height - 0.5:g}; pixel centres are integers)"
        )
    return pts


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes ``(x0, y0, x1, y1)`` in edge coordinates.

    Returns:
        A float in [0, 1]; 0 for disjoint boxes or an empty union.
    """
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
