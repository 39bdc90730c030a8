"""Dense embeddings of face images: [embed][dife.embedding.embed] and the [Embedding][dife.embedding.Embedding] result.

[embed][dife.embedding.embed] is the numpy / PIL layer over the batched torch core: it reads
images of any accepted type ([dife.images][dife.images]), applies the crop rule of
[dife.coords.square_crop][dife.coords.square_crop] ([prepare][dife.embedding.prepare]), runs the network in chunks
and L2-normalises the per-pixel descriptors.

Resampling is exactly consistent with [dife.coords.CropTransform][dife.coords.CropTransform]: grid
pixel ``j`` holds the image bilinearly sampled at
``x_img = (j + 0.5) * side / size + left - 0.5``, black where the crop square
leaves the image. When the crop is shrunk by more than 2x, the image is first
averaged over ``k x k`` blocks (``k = floor(side / size)``), with the sampling
positions adjusted analytically so that the same formula still holds. See
[resample_crop][dife.embedding.resample_crop].
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from dife.checks import check_device, check_positive_int, is_int
from dife.config import DIFEConfig
from dife.coords import CropTransform, check_points_inside, grid_to_normalized, square_crop
from dife.detection import IMAGE_BOX, Detection, choose_faces
from dife.errors import InputError, KeypointError, ShapeError
from dife.images import load_image, split_images

if TYPE_CHECKING:
    from dife.modeling.dife import DIFE

__all__ = [
    "BACKENDS",
    "CPU_MICRO_BATCH_BYTES",
    "Embedding",
    "embed",
    "micro_batch_size",
    "normalize_boxes",
    "prepare",
    "resample_crop",
]


# ---------------------------------------------------------------- preprocessing
def _is_box(box: Any) -> bool:
    """True for one box: 4 numbers (list, tuple, 1-d array or tensor)."""
    if isinstance(box, (torch.Tensor, np.ndarray)):
        return box.ndim == 1 and box.shape[0] == 4
    if isinstance(box, (list, tuple)) and len(box) == 4:
        return all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in box)
    return False


def normalize_boxes(boxes: Any, n: int) -> list[Any]:
    """One box choice per image.

    Args:
        boxes: ``None`` (find the face in every image); ``"image"`` (the
            centred square of every image); one box ``(x0, y0, x1, y1)`` when
            ``n == 1``; or a sequence (list, (n, 4) array / tensor) with one
            box, ``"image"`` or ``None`` per image.
        n: Number of images.

    Returns:
        A list of ``n`` entries, each a box (4 floats), ``"image"`` or ``None``.

    Raises:
        InputError: when the number of boxes does not match the images, or
            an entry is not a box.
        ShapeError: for a box array of the wrong shape.
    """
    if boxes is None:
        return [None] * n
    if isinstance(boxes, str):
        if boxes != IMAGE_BOX:
            raise InputError(f"box must be None, {IMAGE_BOX!r}, (x0, y0, x1, y1) or a list of them, got {boxes!r}")
        return [IMAGE_BOX] * n
    if _is_box(boxes):
        if n != 1:
            raise InputError(
                f"got one box {_fmt_box(boxes)} for {n} images; pass a list with one box (or None) per image"
            )
        return [_to_box(boxes, "box")]
    if isinstance(boxes, (torch.Tensor, np.ndarray)):
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ShapeError(f"boxes must have shape (4,) or (N, 4) as (x0, y0, x1, y1), got {tuple(boxes.shape)}")
        boxes = list(boxes)
    if not isinstance(boxes, (list, tuple)):
        raise InputError(f"box must be None, 'image', (x0, y0, x1, y1) or a list of them, got {type(boxes).__name__}")
    if len(boxes) != n:
        raise InputError(f"got {len(boxes)} boxes for {n} images; pass one box (or None) per image")
    return [
        b if b is None or (isinstance(b, str) and b == IMAGE_BOX) else _to_box(b, f"boxes[{i}]")
        for i, b in enumerate(boxes)
    ]


def _fmt_box(box: Any) -> str:
    try:
        return "(" + ", ".join(f"{float(v):g}" for v in box) + ")"
    except (TypeError, ValueError):
        return repr(box)


def _to_box(box: Any, what: str) -> tuple[float, float, float, float]:
    if not _is_box(box):
        shape = f"shape {tuple(box.shape)}" if isinstance(box, (torch.Tensor, np.ndarray)) else repr(box)
        raise InputError(f"{what} must be None or 4 numbers (x0, y0, x1, y1) in edge coordinates, got {shape}")
    vals = box.tolist() if isinstance(box, (torch.Tensor, np.ndarray)) else box
    return tuple(float(v) for v in vals)  # type: ignore[return-value]


def _antialias_factor(scale: float) -> int:
    """Integer block size used to pre-average before bilinear sampling (1 = none)."""
    return int(math.floor(scale)) if scale > 2.0 else 1


def _block_mean(image: torch.Tensor, x0: int, y0: int, k: int, nx: int, ny: int) -> torch.Tensor:
    """Means of ``ny x nx`` blocks of ``k x k`` pixels of (C, H, W) ``image``, zero (black) outside it.

    Block ``(i, j)`` covers pixels ``[y0 + i*k, y0 + (i+1)*k) x [x0 + j*k, x0 + (j+1)*k)``.
    Equal to ``avg_pool2d`` of the zero-padded window, but the window is never
    built: memory is the (C, ny, nx) result plus one pass over the pixels that
    the blocks cover, however far the crop reaches outside the image.
    """
    C, H, W = image.shape
    if x0 >= 0 and y0 >= 0 and x0 + nx * k <= W and y0 + ny * k <= H:  # inside the image: a view
        return F.avg_pool2d(image[None, :, y0 : y0 + ny * k, x0 : x0 + nx * k], k, stride=k)[0]
    out = image.new_zeros((C, ny, nx))
    # Blocks that overlap the image: start < W (H) and end > 0.
    jx0, jx1 = max(0, (-x0) // k), min(nx, -((x0 - W) // k))
    jy0, jy1 = max(0, (-y0) // k), min(ny, -((y0 - H) // k))
    if jx1 <= jx0 or jy1 <= jy0:
        return out
    px0, px1 = max(x0 + jx0 * k, 0), min(x0 + jx1 * k, W)
    py0, py1 = max(y0 + jy0 * k, 0), min(y0 + jy1 * k, H)
    dev = image.device
    bx = torch.div(torch.arange(px0, px1, device=dev) - x0, k, rounding_mode="floor") - jx0
    by = torch.div(torch.arange(py0, py1, device=dev) - y0, k, rounding_mode="floor") - jy0
    cols = image.new_zeros((C, py1 - py0, jx1 - jx0)).index_add_(2, bx, image[:, py0:py1, px0:px1])
    blocks = image.new_zeros((C, jy1 - jy0, jx1 - jx0)).index_add_(1, by, cols)
    out[:, jy0:jy1, jx0:jx1] = blocks / (k * k)
    return out


def _inside_fraction(start: int, k: int, n_blocks: int, size: int, device: torch.device) -> torch.Tensor:
    """Fraction of each of ``n_blocks`` 1-d blocks ``[start + j*k, start + (j+1)*k)`` inside ``[0, size)``."""
    lo = torch.arange(n_blocks, device=device, dtype=torch.float64) * k + start
    return ((lo + k).clamp(max=size) - lo.clamp(min=0)).clamp(min=0) / k


def _coverage(c: torch.Tensor, scale: float, n: int) -> torch.Tensor:
    """Fraction of the grid-pixel footprint ``[c - scale/2, c + scale/2]`` inside the image ``[-0.5, n - 0.5]``."""
    lo = torch.clamp(c - scale / 2, min=-0.5)
    hi = torch.clamp(c + scale / 2, max=n - 0.5)
    frac = (hi - lo) / scale
    return torch.where(frac > 1 - 1e-9, torch.ones_like(frac), frac.clamp_min(0.0))  # exact 1 despite rounding


def _interp1d(values: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of a 1-d signal at pixel-centre coordinates ``c`` (zero outside)."""
    padded = torch.cat([values.new_zeros(1), values, values.new_zeros(1)])
    c = c.clamp(-1.0, float(values.numel()))
    i0 = torch.floor(c)
    f = c - i0
    i0 = i0.long() + 1  # index into padded
    i1 = (i0 + 1).clamp(max=padded.numel() - 1)
    return padded[i0] * (1 - f) + padded[i1] * f


def resample_crop(image: torch.Tensor, transform: CropTransform) -> torch.Tensor:
    """Resample the square crop of one image to the network grid.

    Grid pixel ``(i, j)`` (row, column) shows the image around the point
    ``p = transform.to_image((j, i))``:

    * colour: for ``scale = side / size <= 2`` bilinear interpolation at
      ``p``; for ``scale > 2`` (anti-aliasing) the image is first averaged over
      ``k x k`` blocks, ``k = floor(scale)``, and then interpolated bilinearly
      at the point of the averaged image that corresponds to ``p`` exactly.
      At the image border the filter uses only in-image pixels (edge
      renormalisation, like ``PIL`` / ``F.interpolate``), so borders are not
      darkened;
    * black outside: the colour is multiplied by the fraction of the grid
      pixel's footprint (a square of side ``scale`` centred on ``p``) that lies
      inside the image. A crop inside the image has no black at all; a grid
      pixel whose footprint lies wholly outside the image is exactly 0.

    For a linear image (a ramp) the result equals the ramp at ``p`` (up to
    float error) wherever the filter stays inside the image, with and without
    anti-aliasing.

    Args:
        image: (C, H, W) float tensor, ``W == transform.width`` and
            ``H == transform.height``.
        transform: The crop, from [dife.coords.square_crop][dife.coords.square_crop].

    Returns:
        (C, size, size) tensor on the image's device and dtype.
    """
    _, H, W = image.shape
    if (W, H) != (transform.width, transform.height):
        raise ShapeError(f"image is {W}x{H} but the crop transform is for {transform.width}x{transform.height}")
    S = transform.size
    dev = image.device
    j = torch.arange(S, dtype=torch.float64, device=dev) + 0.5
    px = j * transform.scale + transform.left - 0.5  # image pixel-centre coordinates of the samples
    py = j * transform.scale + transform.top - 0.5
    k = _antialias_factor(transform.scale)
    if k == 1:
        src, xs, ys = image, px, py
    else:
        # Only the part of the image the crop touches (plus a k-pixel margin),
        # cut so that blocks of k x k pixels can be averaged; zero outside.
        x0 = math.floor(transform.left) - k
        y0 = math.floor(transform.top) - k
        w = math.ceil((math.ceil(transform.left + transform.side) + k - x0) / k) * k
        h = math.ceil((math.ceil(transform.top + transform.side) + k - y0) / k) * k
        src = _block_mean(image, x0, y0, k, w // k, h // k)
        # Window pixel-centre c <-> averaged pixel-centre (c + 0.5) / k - 0.5.
        xs = (px - x0 + 0.5) / k - 0.5
        ys = (py - y0 + 0.5) / k - 0.5
    Hs, Ws = src.shape[-2:]
    gx = grid_to_normalized(xs, Ws)
    gy = grid_to_normalized(ys, Hs)
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1).to(src.dtype)
    padding = "border" if k == 1 else "zeros"
    out = F.grid_sample(src[None], grid[None], mode="bilinear", padding_mode=padding, align_corners=False)[0]
    fx = _coverage(px, transform.scale, W)
    fy = _coverage(py, transform.scale, H)
    if k > 1:
        # Renormalise by the in-image weight of each (averaged, interpolated)
        # sample; separable, so computed in 1-d.
        mx = _interp1d(_inside_fraction(x0, k, w // k, W, dev), xs)
        my = _interp1d(_inside_fraction(y0, k, h // k, H, dev), ys)
        fx = torch.where(mx > 0, fx / mx.clamp_min(1e-12), torch.zeros_like(fx))
        fy = torch.where(my > 0, fy / my.clamp_min(1e-12), torch.zeros_like(fy))
    if not (bool((fx == 1).all()) and bool((fy == 1).all())):
        out = out * (fy[:, None] * fx[None, :]).to(out.dtype)
    return out


def _crop_one(
    image: Any, box: Any, size: int, device: str | torch.device | None, what: str
) -> tuple[torch.Tensor, CropTransform]:
    """Crop rule + resampling for one (3, H, W) image; errors name ``what``."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ShapeError(f"{what} must be a (3, H, W) tensor (use dife.images.load_image), got {shape}")
    H, W = int(image.shape[1]), int(image.shape[2])
    try:
        t = square_crop(W, H, size, box)
    except InputError as e:
        raise type(e)(f"{what}: {e}") from None
    image = image.to(device=device if device is not None else image.device, dtype=torch.float32)
    return resample_crop(image, t), t


def _normalize(x: torch.Tensor, config: DIFEConfig) -> torch.Tensor:
    mean = x.new_tensor(config.mean).view(1, 3, 1, 1)
    std = x.new_tensor(config.std).view(1, 3, 1, 1)
    return (x - mean) / std


def prepare(
    images: Sequence[torch.Tensor],
    boxes: Any,
    config: DIFEConfig,
    *,
    device: str | torch.device | None = None,
    detector: Any = None,
    face_points: Sequence[Any] | None = None,
) -> tuple[torch.Tensor, list[CropTransform]]:
    """Choose the crops, then crop, resize and normalise images into a network batch.

    Args:
        images: (3, H, W) float tensors in [0, 1] (from [load_images][dife.images.load_images]).
        boxes: ``None`` (find the face in every image), ``"image"`` (centred
            square), one face box ``(x0, y0, x1, y1)`` (edge coordinates) for
            a single image, or one box / ``"image"`` / ``None`` per image
            (see [choose_faces][dife.detection.choose_faces]).
        config: Model config: ``input_size`` (S), ``mean``, ``std``.
        device: Where to resample (each image is moved there one at a time);
            default: each image's own device.
        detector: Face finder for images without a box (``None``: the shipped one).
        face_points: Per image, ``None`` or (N, 2) points the chosen face must hold.

    Returns:
        ``(x, transforms)``: ``x`` is (B, 3, S, S) float32, ``(rgb - mean) / std``
        ([-1, 1] for the default mean/std), black (0) outside the image before
        normalisation; ``transforms`` has one [CropTransform][dife.coords.CropTransform] per image.

    Raises:
        InputError: wrong number of boxes, degenerate or non-overlapping box.
        ShapeError: an image that is not (3, H, W).
    """
    x, transforms, _ = _prepare(images, boxes, config, device=device, detector=detector, face_points=face_points)
    return x, transforms


def _prepare(
    images: Sequence[torch.Tensor],
    boxes: Any,
    config: DIFEConfig,
    *,
    device: str | torch.device | None = None,
    detector: Any = None,
    face_points: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
    box_names: Sequence[str] | None = None,
) -> tuple[torch.Tensor, list[CropTransform], list[Detection | None]]:
    """[prepare][dife.embedding.prepare] that also returns the detection used for each image.

    ``names`` / ``box_names`` name each image and its box in error messages
    (default: ``image`` / ``box`` for one image, ``images[i]`` / ``boxes[i]``).
    """
    images = list(images)
    if not images:
        raise InputError("prepare needs at least one image")
    box_list = normalize_boxes(boxes, len(images))
    single = len(images) == 1
    if names is None:
        names = ["image"] if single else [f"images[{i}]" for i in range(len(images))]
    for img, name in zip(images, names, strict=True):
        if not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ShapeError(f"{name} must be a (3, H, W) tensor (use dife.images.load_image), got {shape}")
    chosen, faces = choose_faces(
        images, box_list, face_points, detector=detector, what=names, crop_size=int(config.input_size)
    )
    crops, transforms = [], []
    for i, (img, box) in enumerate(zip(images, chosen, strict=True)):
        if box_list[i] is None or isinstance(box_list[i], str):
            what = names[i]
        elif box_names is not None:
            what = box_names[i]
        else:
            what = "box" if single else f"boxes[{i}]"
        crop, t = _crop_one(img, box, int(config.input_size), device, what)
        crops.append(crop)
        transforms.append(t)
    return _normalize(torch.stack(crops), config), transforms, faces


# -------------------------------------------------------------------- result
@dataclass
class Embedding:
    """Dense, L2-normalised embeddings of a batch of images, with their crops.

    Attributes:
        features: (B, C, S, S) float32, unit L2 norm along C (``C`` is the
            model's ``embed_dim``, ``S`` its ``input_size``).
        transforms: One [CropTransform][dife.coords.CropTransform] per image, mapping image pixel
            coordinates to grid coordinates and back.
        faces: One entry per image: the [Detection][dife.detection.Detection]
            whose box was cropped, or ``None`` when the crop came from a
            given box, ``"image"``, or no face was found.
    """

    features: torch.Tensor
    transforms: list[CropTransform]
    faces: list[Detection | None] | None = None

    def __post_init__(self) -> None:
        f = self.features
        if not isinstance(f, torch.Tensor) or f.ndim != 4:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ShapeError(f"Embedding.features must be (B, C, S, S), got {shape}")
        self.transforms = list(self.transforms)
        if len(self.transforms) != f.shape[0]:
            raise InputError(f"Embedding has {f.shape[0]} feature maps but {len(self.transforms)} transforms")
        self.faces = [None] * len(self.transforms) if self.faces is None else list(self.faces)
        if len(self.faces) != len(self.transforms):
            raise InputError(f"Embedding has {len(self.transforms)} transforms but {len(self.faces)} faces")

    # -- container
    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: int | slice) -> Embedding:
        """The embedding of image ``index`` (a batch of 1) or of a slice of images."""
        faces = self.faces if self.faces is not None else [None] * len(self)
        if isinstance(index, slice):
            return Embedding(self.features[index], self.transforms[index], faces[index])
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index)
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"image index {i} out of range for an Embedding of {n} images")
            i %= n
            return Embedding(self.features[i : i + 1], [self.transforms[i]], [faces[i]])
        raise InputError(f"Embedding indices must be int or slice, got {type(index).__name__}")

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """``(width, height)`` of each original image."""
        return [(t.width, t.height) for t in self.transforms]

    @property
    def grid_size(self) -> int:
        """Side ``S`` of the square feature grid."""
        return int(self.features.shape[-1])

    @property
    def dim(self) -> int:
        """Descriptor dimension ``C``."""
        return int(self.features.shape[1])

    @property
    def device(self) -> torch.device:
        """Device of [features][dife.embedding.Embedding.features]."""
        return self.features.device

    def to(self, device: str | torch.device) -> Embedding:
        """A copy with [features][dife.embedding.Embedding.features] on ``device``."""
        return Embedding(self.features.to(device), list(self.transforms), self.faces)

    def numpy(self) -> np.ndarray:
        """[features][dife.embedding.Embedding.features] as a (B, C, S, S) float32 numpy array."""
        return self.features.detach().to("cpu", torch.float32).numpy()

    # -- coordinates
    def _index(self, i: int) -> int:
        if not is_int(i) or not -len(self) <= int(i) < len(self):
            raise InputError(f"image index {i!r} out of range for an Embedding of {len(self)} images")
        return int(i) % len(self)

    def _transform(self, i: int) -> CropTransform:
        return self.transforms[self._index(i)]

    @staticmethod
    def _points(points: Any) -> Any:
        if isinstance(points, torch.Tensor):
            pts = points if points.is_floating_point() else points.double()
        else:
            pts = np.asarray(points, dtype=np.float64)
        if pts.ndim < 1 or pts.shape[-1] != 2:
            raise ShapeError(f"points must have shape (..., 2) as (x, y) pairs, got {tuple(pts.shape)}")
        return pts

    def to_grid(self, points: Any, i: int = 0) -> Any:
        """Image pixel coordinates (..., 2) of image ``i`` -> grid coordinates (..., 2)."""
        return self._transform(i).to_grid(self._points(points))

    def to_image(self, points: Any, i: int = 0) -> Any:
        """Grid pixel coordinates (..., 2) -> image pixel coordinates (..., 2) of image ``i``."""
        return self._transform(i).to_image(self._points(points))

    def sample(self, points: Any, i: int = 0) -> torch.Tensor:
        """Descriptors at image pixel points of image ``i``.

        Bilinear interpolation of the feature grid at ``to_grid(points)``,
        re-normalised to unit length. At a grid-pixel centre it returns that
        pixel's feature.

        Args:
            points: (..., 2) ``(x, y)`` pixel coordinates in the original image
                (numpy, list or tensor).
            i: Index of the image in the batch.

        Returns:
            (..., C) float32 tensor on [device][dife.embedding.Embedding.device], unit L2 norm.

        Raises:
            ShapeError: points not of shape (..., 2).
            KeypointError: points outside the image, or outside the square
                crop the network saw (use a face box that covers them).
        """
        i = self._index(i)
        t = self.transforms[i]
        pts_in = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else points
        pts = check_points_inside(pts_in, t.width, t.height, what="points")
        inside = t.contains(pts)
        if not np.all(inside):
            idx = tuple(int(v) for v in np.argwhere(~inside)[0])
            x, y = pts[idx]
            raise KeypointError(
                f"points[{', '.join(map(str, idx))}] = ({x:g}, {y:g}) lies outside the square crop the network saw "
                f"(edges x {t.left:g}..{t.left + t.side:g}, y {t.top:g}..{t.top + t.side:g}); pass a face box that covers it"
            )
        lead = pts.shape[:-1]
        g = grid_to_normalized(t.to_grid(pts.reshape(-1, 2)), t.size)
        grid = torch.as_tensor(g, dtype=self.features.dtype, device=self.features.device).view(1, 1, -1, 2)
        fmap = self.features[i : i + 1]
        out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = F.normalize(out[0, :, 0].t(), dim=-1)
        return out.reshape(*lead, self.dim)


# ------------------------------------------------------------------------ network core
#: How [embed][dife.embedding.embed] runs the network: ``"auto"`` (the inference path of
#: `dife.modeling.inference.encode` in cache-sized micro-batches where the
#: model allows it, else the model's forward), ``"reference"`` (the model's
#: own forward on whole ``batch_size`` chunks, in the standard layout: the path
#: of dife <= 0.1, kept as the reference) and ``"compile"`` (``"auto"`` through
#: ``torch.compile``, falling back to ``"auto"`` where compilation fails).
BACKENDS: tuple[str, ...] = ("auto", "reference", "compile")
#: Bytes of the widest activation of one micro-batch on the CPU, about the
#: size of the L3 cache share that keeps a layer's input and output cached
#: (dife-base runs 8 images at a time, the paper's network 3).
CPU_MICRO_BATCH_BYTES: int = 7 * 2**20


def _has_fast_path(net: DIFE) -> bool:
    """True when ``net`` computes exactly ``net.encoder(x)`` with the stock encoder (no overridden forward)."""
    from dife.modeling.dife import DIFE as _DIFE
    from dife.modeling.hourglass import HourglassEncoder

    return (
        type(net).forward is _DIFE.forward
        and type(net.encoder) is HourglassEncoder
        and not net._forward_hooks
        and not net._forward_pre_hooks
        and not net.encoder._forward_hooks
        and not net.encoder._forward_pre_hooks
    )


def micro_batch_size(net: DIFE, device: torch.device, chunk: int) -> int:
    """Images per network call inside a chunk of ``chunk`` images.

    On the CPU the largest activation of one call is kept within
    `CPU_MICRO_BATCH_BYTES`, so that each layer's input and output stay in the
    caches (a 64-image batch of dife-base is ~56 MiB per activation, far more
    than the caches; per image it then runs slower than 8 images at a time).
    Elsewhere (GPUs) the whole chunk runs at once.

    Args:
        net: The model.
        device: Where it runs.
        chunk: Images available.

    Returns:
        A size in ``1..chunk``.
    """
    if device.type != "cpu":
        return chunk
    c = net.config
    side = int(c.input_size) // 2
    widest = max(int(c.planes_hg), int(c.planes_block), int(c.planes_conv1)) * 2 * side * side * 4
    return max(1, min(chunk, CPU_MICRO_BATCH_BYTES // max(1, widest)))


def _l2_normalize(x: torch.Tensor, out: torch.Tensor) -> None:
    """``out = F.normalize(x, dim=1)`` (up to rounding), ~20x faster on the CPU for (B, C, H, W) maps.

    ``torch.linalg.vector_norm`` (inside ``F.normalize``) reduces a strided
    channel dimension slowly on the CPU; a sum of squares over it is
    vectorised along the pixels.
    """
    norm = x.square().sum(dim=1, keepdim=True).sqrt_().clamp_min_(1e-12)
    torch.div(x, norm, out=out)


def _run_network(net: DIFE, x: torch.Tensor, out: torch.Tensor, backend: str) -> None:
    """Embed the normalised batch ``x`` and write the L2-normalised result into ``out`` (same batch)."""
    n, S = x.shape[0], out.shape[-1]
    expected = (n, out.shape[1], S, S)
    if backend == "reference" or not _has_fast_path(net):
        res = net(x)
        if res.shape != expected:
            raise ShapeError(
                f"the model returned {tuple(res.shape)} for input {tuple(x.shape)}; "
                f"expected {expected} (config.embed_dim x input_size)"
            )
        out.copy_(F.normalize(res.float(), dim=1))
        return
    from dife.modeling.inference import compiled_encode, encode

    net.check_input(x)
    c = net.config
    stride = net.encoder.stride
    bottom = (x.shape[2] // stride) * (x.shape[3] // stride) * (c.planes_hg // c.gn_groups)
    step = micro_batch_size(net, x.device, n) if bottom >= 2 else n
    run = compiled_encode if backend == "compile" else encode
    for s in range(0, n, step):
        res = run(net.encoder, x[s : s + step])
        if res.shape != (min(step, n - s), *expected[1:]):
            raise ShapeError(
                f"the encoder returned {tuple(res.shape)} for input {tuple(x[s : s + step].shape)}; "
                f"expected {expected[1:]} per image (config.embed_dim x input_size)"
            )
        _l2_normalize(res.float(), out[s : s + step])


# ------------------------------------------------------------------------ embed
def _resolve(model: Any) -> DIFE:
    from dife.modeling.dife import DIFE

    if isinstance(model, DIFE):
        return model
    if model is None or isinstance(model, (str, os.PathLike)):
        from dife.defaults import resolve_model

        return resolve_model(model)
    raise InputError(f"model must be a DIFE instance, a model name / path, or None, got {type(model).__name__}")


def embed(
    images: Any,
    *,
    box: Any = None,
    model: DIFE | str | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool = False,
    detector: Any = None,
    face_points: Any = None,
    backend: str = "auto",
) -> Embedding:
    """Dense, L2-normalised embeddings of one or more face images.

    Images are read ([load_image][dife.images.load_image]), the face is found
    when no box is given ([choose_faces][dife.detection.choose_faces]), the
    square around it is cropped ([square_crop][dife.coords.square_crop]) and
    resized to the model's input size one chunk of ``batch_size`` at a time,
    so long lists of large images never sit in memory at full resolution all
    together.

    Args:
        images: One image (path, PIL image, numpy (H, W[, 3]) array, torch
            (3, H, W) tensor), a list / tuple of them, a torch (B, 3, H, W)
            tensor or a numpy (B, H, W, 3) array.
        box: Face box ``(x0, y0, x1, y1)`` in edge coordinates (one image),
            ``"image"`` for the centred square of side ``min(W, H)``, or
            ``None`` (default) to find the face with the face finder (the
            best-scoring face; the centred square, with a
            [NoFaceWarning][dife.detection.NoFaceWarning], when none is found).
            An image no larger than the model's input (96x96) is a face crop
            already: with ``None`` it is embedded whole, without the face finder.
            For several images, one such value per image.
        model: A [DIFE][dife.modeling.dife.DIFE], a registry name / path, or
            ``None`` for the default model.
        batch_size: Images per forward pass (>= 1).
        device: Where to run; default the model's device. If the model lives
            elsewhere a copy of it is moved there (the given model is not changed).
        progress: Show a tqdm progress bar.
        detector: Face finder used where ``box`` is ``None`` (a
            [FaceDetector][dife.modeling.face_detector.FaceDetector], a folder,
            or ``None`` for the shipped ``dife-face-finder``).
        face_points: With ``box=None``: (N, 2) points (one image) or one
            such array / ``None`` per image; the chosen face is then the best
            one whose box holds all the points.
        backend: How the network runs (results agree to about 1e-5):
            ``"auto"`` (default): the inference path
            (`dife.modeling.inference.encode`: channels-last on the
            CPU, in cache-sized micro-batches) for a stock model, the model's
            own forward otherwise; ``"reference"``: the model's forward on
            whole ``batch_size`` chunks; ``"compile"``: ``"auto"`` through
            ``torch.compile`` (slow first call; falls back to ``"auto"``
            with a warning where compilation fails).

    Returns:
        An [Embedding][dife.embedding.Embedding] with one entry per image (length 1 for a single
        image), ``features`` (B, embed_dim, S, S) on ``device``, and in
        ``faces`` the detection used for each image.

    Raises:
        ImageError, ShapeError, InputError: for unreadable images, bad boxes
            or arguments (messages name the image index and the bad value).
    """
    check_positive_int(batch_size, "batch_size")
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    net = _resolve(model)
    sources, batched = split_images(images)
    n = len(sources)
    boxes = normalize_boxes(box, n)
    points = _face_points(face_points, n)
    dev = check_device(device) or net.device
    if dev != net.device and not (dev.type == net.device.type and dev.index is None):
        net = copy.deepcopy(net).to(dev)
    dtype = next(net.parameters()).dtype
    config = net.config

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="img", desc="dife.embed")
    S = int(config.input_size)
    # Allocated outside inference mode so that callers may use it with autograd.
    features = torch.empty((n, int(config.embed_dim), S, S), dtype=torch.float32, device=dev)
    transforms: list[CropTransform] = []
    faces: list[Detection | None] = []
    try:
        with torch.inference_mode():
            for start in range(0, n, int(batch_size)):
                stop = min(start + int(batch_size), n)
                crops = []
                for j in range(start, stop):
                    name = f"images[{j}]" if batched else "image"
                    img = load_image(sources[j], what=name)
                    # one image at a time: at most one full-resolution image alive
                    x1, t1, f1 = _prepare(
                        [img],
                        [boxes[j]],
                        config,
                        device=dev,
                        detector=detector,
                        face_points=[points[j]],
                        names=[name],
                        box_names=[f"boxes[{j}]" if batched else "box"],
                    )
                    del img
                    crops.append(x1[0])
                    transforms.append(t1[0])
                    faces.append(f1[0])
                x = torch.stack(crops).to(dtype)
                _run_network(net, x, features[start:stop], backend)
                if bar is not None:
                    bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    return Embedding(features, transforms, faces)


def _face_points(face_points: Any, n: int) -> list[np.ndarray | None]:
    """One (N, 2) float array or ``None`` per image."""
    if face_points is None:
        return [None] * n

    def one(p: Any, what: str) -> np.ndarray | None:
        if p is None:
            return None
        arr = p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else p
        try:
            arr = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{what} must be (N, 2) (x, y) numbers") from None
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ShapeError(f"{what} must have shape (N, 2), got {arr.shape}")
        return arr

    if n == 1 and not (
        isinstance(face_points, (list, tuple))
        and len(face_points) == 1
        and (face_points[0] is None or np.asarray(face_points[0], dtype=object).ndim == 2)
    ):
        return [one(face_points, "face_points")]
    if not isinstance(face_points, (list, tuple)) or len(face_points) != n:
        raise InputError(f"face_points must be (N, 2) points for one image or one entry per image ({n})")
    return [one(p, f"face_points[{i}]") for i, p in enumerate(face_points)]
