"""Geometric and photometric augmentation for DIFE training: pure torch, batched.

**Warps are sampling maps.** A warp ``G`` sends a point ``p`` of the *view*
to the point ``G(p)`` of the *source* it shows: ``view(p) = source(G(p))``,
exactly what ``torch.nn.functional.grid_sample`` computes from a grid
holding ``G`` at the view's pixel centres. Points are ``(x, y)`` in the
``[-1, 1]`` coordinates of [dife.coords.grid_to_normalized][dife.coords.grid_to_normalized]
(``align_corners=False``: ``-1`` / ``1`` are the outer edges of the border
pixels). These coordinates do not depend on the resolution, so one warp
evaluated at 96 x 96 (the image) and at 64 x 64 or 24 x 24 (a teacher's
feature map of that image) gives views that correspond point for point: a
*joint* warp of an image and its dense teacher targets ([Warp.grid][dife.train.augment.Warp.grid]).

* [random_affine][dife.train.augment.random_affine] -- rotation, zoom, shift (and mirror) as ``(B, 2, 3)``
  sampling matrices (the ``theta`` of ``torch.nn.functional.affine_grid``).
* [random_tps][dife.train.augment.random_tps] / [tps_grid][dife.train.augment.tps_grid] -- smooth thin-plate-spline warps
  that move a regular lattice of control points by random offsets.
* [Warp][dife.train.augment.Warp] / [random_warp][dife.train.augment.random_warp] -- ``G = affine ∘ TPS`` (the TPS is
  applied to the view point first), evaluable at any resolution.
* [warp_images][dife.train.augment.warp_images] -- resample images or feature maps with a grid or a warp.
* [correspondence][dife.train.augment.correspondence] -- for two warps of one source, where every pixel of
  view *a* is in view *b* (``grid1_to_2`` of [dife.train.losses.matching_loss][dife.train.losses.matching_loss]),
  with a validity mask. The second warp is inverted analytically when it is
  affine and by Newton's method otherwise (exact TPS for a [Warp][dife.train.augment.Warp];
  a dense grid is interpolated bilinearly, within ~0.01 px for smooth warps).
* [color_jitter][dife.train.augment.color_jitter] -- per-sample brightness, contrast, saturation, hue
  and random grayscale of images in ``[-1, 1]``.

Every random function takes an optional ``torch.Generator``; with a
seeded generator the result is reproducible (random numbers are drawn on the
generator's device, then moved to ``device``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dife.checks import check_int
from dife.coords import grid_to_normalized, normalized_to_grid
from dife.errors import InputError, ShapeError

__all__ = [
    "TPSParams",
    "Warp",
    "pixel_centres",
    "affine_grid",
    "random_affine",
    "random_tps",
    "tps_from_points",
    "tps_apply",
    "tps_grid",
    "random_warp",
    "warp_images",
    "inside_mask",
    "correspondence",
    "color_jitter",
]

Size = int | tuple[int, int]

#: ITU-R BT.601 luma weights (the grayscale of torchvision / PIL).
_LUMA = (0.299, 0.587, 0.114)


# ------------------------------------------------------------------ validation
def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    return check_int(value, name, minimum=minimum)


def _number(value: Any, name: str, lo: float = 0.0, hi: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return v


def _size(size: Any, name: str = "size") -> tuple[int, int]:
    """``int`` or ``(h, w)`` -> ``(h, w)``."""
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return _positive_int(size[0], f"{name}[0]"), _positive_int(size[1], f"{name}[1]")
    s = _positive_int(size, name)
    return s, s


def _check_generator(generator: Any) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _uniform(
    shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator | None, device: Any
) -> torch.Tensor:
    """Uniform float64 samples in ``[lo, hi)``, drawn on the generator's device and moved to ``device``."""
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=dev, dtype=torch.float64)
    return (lo + (hi - lo) * u).to(device)


def _check_points(points: Any, name: str) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or points.ndim != 3 or points.shape[-1] != 2:
        raise ShapeError(f"{name} must be a (B, N, 2) tensor of (x, y) points, got {_shape(points)}")
    if not points.is_floating_point():
        raise ShapeError(f"{name} must be floating point, got dtype {points.dtype}")
    return points


def _check_grid(grid: Any, name: str) -> torch.Tensor:
    if not isinstance(grid, torch.Tensor) or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] == 0:
        raise ShapeError(f"{name} must be a (B, H, W, 2) sampling grid in [-1, 1] coordinates, got {_shape(grid)}")
    if not grid.is_floating_point():
        raise ShapeError(f"{name} must be floating point, got dtype {grid.dtype}")
    if not bool(torch.isfinite(grid).all()):
        raise ShapeError(f"{name} with shape {tuple(grid.shape)} contains NaN or infinite values")
    return grid


def _check_theta(theta: Any, name: str = "theta") -> torch.Tensor:
    if not isinstance(theta, torch.Tensor) or theta.ndim != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ShapeError(f"{name} must be a (B, 2, 3) affine matrix, got {_shape(theta)}")
    if not theta.is_floating_point() or not bool(torch.isfinite(theta).all()):
        raise ShapeError(f"{name} must be a finite floating-point tensor, got dtype {theta.dtype}")
    return theta


# ---------------------------------------------------------------- coordinates
def pixel_centres(
    size: Size, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[-1, 1]`` coordinates of the pixel centres of an ``h x w`` map.

    Args:
        size: ``S`` (square) or ``(h, w)``.
        device: Device of the result.
        dtype: Floating dtype of the result.

    Returns:
        (h, w, 2) tensor of ``(x, y)``: entry ``[i, j]`` is
        ``grid_to_normalized((j, i))`` (see [dife.coords][dife.coords]).
    """
    h, w = _size(size)
    xs = grid_to_normalized(torch.arange(w, device=device, dtype=dtype), w)
    ys = grid_to_normalized(torch.arange(h, device=device, dtype=dtype), h)
    return torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)


def _apply_affine(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``theta`` (B, 2, 3) applied to (B, N, 2) points."""
    theta = theta.to(points.dtype)
    return points @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]


def affine_grid(theta: torch.Tensor, size: Size) -> torch.Tensor:
    """Sampling grid of affine matrices at the pixel centres of an ``h x w`` view.

    Equal to ``F.affine_grid(theta, (B, C, h, w), align_corners=False)``.

    Args:
        theta: (B, 2, 3) view -> source matrices in ``[-1, 1]`` coordinates.
        size: ``S`` or ``(h, w)`` of the view.

    Returns:
        (B, h, w, 2) grid, dtype of ``theta``.
    """
    theta = _check_theta(theta)
    h, w = _size(size)
    p = pixel_centres((h, w), device=theta.device, dtype=theta.dtype).reshape(1, -1, 2)
    return _apply_affine(theta, p.expand(theta.shape[0], -1, -1)).reshape(-1, h, w, 2)


# --------------------------------------------------------------------- affine
def random_affine(
    batch_size: int,
    *,
    max_rotation_deg: float = 15.0,
    scale: tuple[float, float] = (0.85, 1.15),
    max_translate: float = 0.08,
    flip: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random similarity transforms (optionally mirrored) as sampling matrices.

    The content of the view is the source rotated by ``a ~ U(-max_rotation_deg,
    max_rotation_deg)`` degrees about the centre (positive: clockwise on
    screen, since y points down), magnified by ``s ~ U(*scale)`` (``s > 1``
    zooms in), mirrored left-right with probability 1/2 when ``flip``, then
    shifted by ``t ~ U(-max_translate, max_translate)`` of the image side in
    x and y. The returned matrix is the inverse map (view -> source), the
    ``theta`` of ``torch.nn.functional.affine_grid`` with
    ``align_corners=False``; it is isotropic for square images.

    Args:
        batch_size: Number of matrices B (>= 1).
        max_rotation_deg: Largest rotation, degrees (>= 0).
        scale: ``(lo, hi)`` range of the zoom factor, ``0 < lo <= hi``.
        max_translate: Largest shift, as a fraction of the image side (>= 0).
        flip: Mirror half of the samples left-right.
        generator: Source of randomness (reproducible when seeded).
        device: Device of the result (default CPU).
        dtype: Floating dtype of the result.

    Returns:
        (B, 2, 3) tensor ``[M | b]``: a view point ``p`` shows the source point
        ``M p + b``.

    Raises:
        InputError: bad ranges or batch size.
    """
    b = _positive_int(batch_size, "batch_size")
    rot = _number(max_rotation_deg, "max_rotation_deg", 0.0, 180.0)
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise InputError(f"scale must be a (lo, hi) pair of numbers, got {scale!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= hi):
        raise InputError(f"scale must satisfy 0 < lo <= hi, got {scale!r}")
    shift = _number(max_translate, "max_translate", 0.0, 1.0)
    generator = _check_generator(generator)

    angle = _uniform((b,), -rot, rot, generator, "cpu") * (math.pi / 180.0)
    zoom = _uniform((b,), lo, hi, generator, "cpu")
    t = _uniform((b, 2), -2.0 * shift, 2.0 * shift, generator, "cpu")  # [-1, 1] spans 2
    mirror = torch.ones(b, dtype=torch.float64)
    if flip:
        mirror = torch.where(_uniform((b,), 0.0, 1.0, generator, "cpu") < 0.5, -1.0, 1.0).to(torch.float64)
    # forward (source -> view): v = zoom * R(angle) @ diag(mirror, 1) @ u + t
    # inverse (view -> source): u = diag(mirror, 1) @ R(-angle) @ (v - t) / zoom
    c, s = torch.cos(angle), torch.sin(angle)
    m = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2) / zoom[:, None, None]
    m[:, 0, :] *= mirror[:, None]
    off = -(m @ t[:, :, None])
    return torch.cat([m, off], dim=2).to(device=device, dtype=dtype)


# ------------------------------------------------------------------------ TPS
@dataclass(frozen=True)
class TPSParams:
    """A batch of thin-plate-spline maps ``f: view -> source`` in ``[-1, 1]`` coordinates.

    ``f(p) = a_0 + A p + sum_k w_k U(|p - c_k|^2)`` with ``U(r2) = r2 log r2``,
    interpolating ``f(ctrl_k) = target_k``.

    Attributes:
        ctrl: (B, K, 2) control points in the view.
        target: (B, K, 2) the source points they show.
        coef: (B, K + 3, 2) float64 solution: ``K`` kernel weights, then the
            affine part ``[a_0; A^T]``.
    """

    ctrl: torch.Tensor
    target: torch.Tensor
    coef: torch.Tensor

    def __len__(self) -> int:
        return int(self.ctrl.shape[0])

    def index(self, idx: torch.Tensor | Sequence[int] | slice) -> TPSParams:
        """The maps of samples ``idx`` (a batch)."""
        return TPSParams(self.ctrl[idx], self.target[idx], self.coef[idx])

    def to(self, device: torch.device | str) -> TPSParams:
        """A copy on ``device``."""
        return TPSParams(self.ctrl.to(device), self.target.to(device), self.coef.to(device))


def _tps_kernel(p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """U(|p_n - c_k|^2) for (B, N, 2) points and (B, K, 2) centres -> (B, N, K)."""
    dx = p[:, :, None, 0] - c[:, None, :, 0]
    dy = p[:, :, None, 1] - c[:, None, :, 1]
    r2 = dx * dx + dy * dy
    return r2 * torch.log(r2.clamp_min(1e-300))


def tps_from_points(ctrl: torch.Tensor, target: torch.Tensor) -> TPSParams:
    """Solve the thin-plate spline that sends ``ctrl`` to ``target``.

    Args:
        ctrl: (B, K, 2) control points in the view (K >= 3, not collinear).
        target: (B, K, 2) source points they must show.

    Returns:
        [TPSParams][dife.train.augment.TPSParams].

    Raises:
        ShapeError: mismatched shapes, fewer than 3 points, non-finite values.
        InputError: degenerate (e.g. collinear or repeated) control points.
    """
    _check_points(ctrl, "ctrl")
    _check_points(target, "target")
    if ctrl.shape != target.shape or ctrl.shape[1] < 3:
        raise ShapeError(
            f"ctrl and target must both be (B, K, 2) with K >= 3, got {tuple(ctrl.shape)} and {tuple(target.shape)}"
        )
    if not (bool(torch.isfinite(ctrl).all()) and bool(torch.isfinite(target).all())):
        raise ShapeError("ctrl / target contain NaN or infinite values")
    c = ctrl.to(torch.float64)
    b, k, _ = c.shape
    p = torch.cat([torch.ones(b, k, 1, dtype=c.dtype, device=c.device), c], dim=2)  # (B, K, 3)
    top = torch.cat([_tps_kernel(c, c), p], dim=2)
    bottom = torch.cat([p.transpose(1, 2), torch.zeros(b, 3, 3, dtype=c.dtype, device=c.device)], dim=2)
    system = torch.cat([top, bottom], dim=1)  # (B, K + 3, K + 3)
    rhs = torch.cat([target.to(torch.float64), torch.zeros(b, 3, 2, dtype=c.dtype, device=c.device)], dim=1)
    coef, info = torch.linalg.solve_ex(system, rhs)
    if bool((info != 0).any()) or not bool(torch.isfinite(coef).all()):
        raise InputError("thin-plate spline system is singular: control points are repeated or collinear")
    return TPSParams(ctrl, target, coef)


def tps_apply(params: TPSParams, points: torch.Tensor) -> torch.Tensor:
    """Evaluate the splines at (B, N, 2) view points -> (B, N, 2) source points (dtype of ``points``)."""
    _check_points(points, "points")
    if points.shape[0] != len(params):
        raise ShapeError(f"points have batch size {points.shape[0]} but the TPS batch has {len(params)}")
    p = points.to(torch.float64)
    c = params.ctrl.to(device=p.device, dtype=torch.float64)
    coef = params.coef.to(p.device)
    k = c.shape[1]
    out = _tps_kernel(p, c) @ coef[:, :k] + coef[:, k : k + 1] + p @ coef[:, k + 1 :]
    return out.to(points.dtype)


def random_tps(
    batch_size: int,
    *,
    n_ctrl: int = 3,
    max_offset: float = 0.08,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> TPSParams:
    """Random smooth warps: an ``n_ctrl x n_ctrl`` lattice of control points, each moved at random.

    The control points are the lattice ``linspace(-1, 1, n_ctrl)^2`` of the
    view; each shows the source point displaced by ``U(-max_offset,
    max_offset)`` of the image side in x and y (``max_offset = 0`` is the identity).

    Args:
        batch_size: Number of warps B (>= 1).
        n_ctrl: Control points per side (>= 2; 3 gives a 3 x 3 lattice).
        max_offset: Largest displacement, as a fraction of the image side.
        generator: Source of randomness.
        device: Device of the parameters.

    Returns:
        [TPSParams][dife.train.augment.TPSParams] with K = ``n_ctrl**2`` control points.
    """
    b = _positive_int(batch_size, "batch_size")
    n = _positive_int(n_ctrl, "n_ctrl", 2)
    off = _number(max_offset, "max_offset", 0.0, 1.0)
    generator = _check_generator(generator)
    lin = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    ys, xs = torch.meshgrid(lin, lin, indexing="ij")
    ctrl = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)[None].expand(b, -1, -1)
    d = _uniform((b, n * n, 2), -2.0 * off, 2.0 * off, generator, "cpu")
    return tps_from_points(ctrl.to(device), (ctrl + d).to(device))


def tps_grid(params: TPSParams, size: Size, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sampling grid of thin-plate splines at the pixel centres of an ``h x w`` view.

    Args:
        params: From [random_tps][dife.train.augment.random_tps] or [tps_from_points][dife.train.augment.tps_from_points].
        size: ``S`` or ``(h, w)``.
        dtype: Floating dtype of the grid.

    Returns:
        (B, h, w, 2) grid for [warp_images][dife.train.augment.warp_images].
    """
    if not isinstance(params, TPSParams):
        raise InputError(f"params must be TPSParams (from random_tps), got {type(params).__name__}")
    h, w = _size(size)
    p = pixel_centres((h, w), device=params.coef.device, dtype=torch.float64).reshape(1, -1, 2)
    return tps_apply(params, p.expand(len(params), -1, -1)).reshape(-1, h, w, 2).to(dtype)


# ----------------------------------------------------------------------- warp
@dataclass(frozen=True)
class Warp:
    """A batch of warps ``G = affine ∘ TPS`` (view -> source), evaluable at any resolution.

    ``G(p) = theta @ [T(p); 1]`` where ``T`` is the TPS (identity when
    ``tps`` is ``None``): the spline bends the view first, the affine map
    then rotates / zooms / shifts it.

    Attributes:
        theta: (B, 2, 3) affine sampling matrices ([random_affine][dife.train.augment.random_affine]).
        tps: Optional [TPSParams][dife.train.augment.TPSParams] of the same batch size.
    """

    theta: torch.Tensor
    tps: TPSParams | None = None

    def __post_init__(self) -> None:
        _check_theta(self.theta)
        if self.tps is not None:
            if not isinstance(self.tps, TPSParams):
                raise InputError(f"tps must be TPSParams or None, got {type(self.tps).__name__}")
            if len(self.tps) != self.theta.shape[0]:
                raise ShapeError(f"theta has batch size {self.theta.shape[0]} but tps has {len(self.tps)}")

    @staticmethod
    def identity(batch_size: int, *, device: torch.device | str | None = None) -> Warp:
        """B identity warps."""
        b = _positive_int(batch_size, "batch_size")
        eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device)
        return Warp(eye.expand(b, 2, 3).clone())

    def __len__(self) -> int:
        return int(self.theta.shape[0])

    @property
    def is_affine(self) -> bool:
        """True when there is no TPS part (the warp is inverted analytically)."""
        return self.tps is None

    def index(self, idx: torch.Tensor | Sequence[int] | slice) -> Warp:
        """The warps of samples ``idx``."""
        return Warp(self.theta[idx], None if self.tps is None else self.tps.index(idx))

    def to(self, device: torch.device | str) -> Warp:
        """A copy on ``device``."""
        return Warp(self.theta.to(device), None if self.tps is None else self.tps.to(device))

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Source points ``G(p)`` of (B, N, 2) view points, same dtype."""
        _check_points(points, "points")
        if points.shape[0] != len(self):
            raise ShapeError(f"points have batch size {points.shape[0]} but the warp batch has {len(self)}")
        p = points.to(torch.float64)
        if self.tps is not None:
            p = tps_apply(self.tps, p)
        return _apply_affine(self.theta.to(p.device), p).to(points.dtype)

    def grid(self, size: Size, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, h, w, 2) sampling grid of the warps at an ``h x w`` view's pixel centres."""
        h, w = _size(size)
        p = pixel_centres((h, w), device=self.theta.device, dtype=torch.float64).reshape(1, -1, 2)
        return self.apply(p.expand(len(self), -1, -1)).reshape(-1, h, w, 2).to(dtype)


def random_warp(
    batch_size: int,
    *,
    affine: Mapping[str, Any] | bool | None = None,
    tps: Mapping[str, Any] | bool | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Warp:
    """Random ``affine ∘ TPS`` warps.

    Args:
        batch_size: Number of warps B.
        affine: Keyword arguments of [random_affine][dife.train.augment.random_affine] (``None`` / ``True``:
            its defaults; ``False``: no affine part).
        tps: Keyword arguments of [random_tps][dife.train.augment.random_tps] (``None`` / ``True``: its
            defaults; ``False``: no TPS part).
        generator: Source of randomness.
        device: Device of the parameters.

    Returns:
        A [Warp][dife.train.augment.Warp].
    """
    b = _positive_int(batch_size, "batch_size")

    def kwargs(v: Any, name: str) -> dict[str, Any] | None:
        if v is False:
            return None
        if v is None or v is True:
            return {}
        if not isinstance(v, Mapping):
            raise InputError(f"{name} must be a dict of keyword arguments, True/None (defaults) or False, got {v!r}")
        bad = {"batch_size", "generator", "device"} & set(v)
        if bad:
            raise InputError(f"{name} must not set {sorted(bad)}: pass them to random_warp")
        return dict(v)

    ka, kt = kwargs(affine, "affine"), kwargs(tps, "tps")
    try:
        theta = (
            random_affine(b, generator=generator, device=device, **ka)
            if ka is not None
            else Warp.identity(b, device=device).theta
        )
        params = random_tps(b, generator=generator, device=device, **kt) if kt is not None else None
    except TypeError as e:
        raise InputError(f"bad warp options: {e}") from None
    return Warp(theta, params)


def warp_images(
    images: torch.Tensor,
    grid: torch.Tensor | Warp,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Resample images or feature maps: ``out[b, :, i, j] = images[b](grid[b, i, j])``.

    Works for any channel count, so an image and its teacher map are warped
    alike; pass a [Warp][dife.train.augment.Warp] to evaluate it at the input's own resolution.

    Args:
        images: (B, C, H, W) float tensor (images in [-1, 1] or feature maps).
        grid: (B, h, w, 2) sampling grid in ``[-1, 1]`` coordinates
            (``align_corners=False``), or a [Warp][dife.train.augment.Warp] / (B, 2, 3) affine
            matrices (evaluated at the input's ``H x W``).
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"zeros"`` (black outside the source) or ``"border"``.

    Returns:
        (B, C, h, w) tensor, dtype of ``images``.

    Raises:
        ShapeError: bad shapes or batch sizes.
        InputError: bad ``mode`` / ``padding_mode``.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.numel() == 0:
        raise ShapeError(f"images must be a non-empty (B, C, H, W) tensor, got {_shape(images)}")
    if not images.is_floating_point():
        raise ShapeError(f"images must be floating point, got dtype {images.dtype}")
    if mode not in ("bilinear", "nearest"):
        raise InputError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if padding_mode not in ("zeros", "border"):
        raise InputError(f"padding_mode must be 'zeros' or 'border', got {padding_mode!r}")
    if isinstance(grid, torch.Tensor) and grid.ndim == 3:
        grid = Warp(grid)  # (B, 2, 3) affine matrices
    if isinstance(grid, Warp):
        if len(grid) != images.shape[0]:
            raise ShapeError(f"images have batch size {images.shape[0]} but the warp batch has {len(grid)}")
        grid = grid.to(images.device).grid(tuple(images.shape[-2:]), dtype=images.dtype)
    grid = _check_grid(grid, "grid")
    if grid.shape[0] != images.shape[0]:
        raise ShapeError(f"images {tuple(images.shape)} and grid {tuple(grid.shape)} have different batch sizes")
    grid = grid.to(device=images.device, dtype=images.dtype)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def inside_mask(grid: torch.Tensor) -> torch.Tensor:
    """(B, h, w) bool: the grid samples lie inside the source (``|x|, |y| <= 1``)."""
    grid = _check_grid(grid, "grid")
    return (grid.abs() <= 1.0).all(dim=-1)


# ------------------------------------------------------------ correspondence
Points = Callable[[torch.Tensor], torch.Tensor]


def _fit_affine(points: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Least-squares (B, 2, 3) matrix with ``values ≈ M points + b`` ((B, N, 2) float64 each)."""
    x = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)  # (B, N, 3)
    sol = torch.linalg.lstsq(x, values).solution  # (B, 3, 2)
    return sol.transpose(1, 2)


def _invert_affine(theta: torch.Tensor) -> torch.Tensor:
    m = theta[:, :, :2]
    det = torch.linalg.det(m)
    if bool((det.abs() < 1e-12).any()):
        raise InputError("a warp is degenerate (its affine part is singular) and cannot be inverted")
    mi = torch.linalg.inv(m)
    return torch.cat([mi, -(mi @ theta[:, :, 2:])], dim=2)


def _dense_map(grid: torch.Tensor) -> tuple[Points, torch.Tensor]:
    """Continuous map of a dense grid: best affine fit + bilinearly interpolated residual.

    Exact at the pixel centres; beyond the border the residual is held
    constant, so the map extends affinely (smoothly) outside the view.
    Returns the map on (B, N, 2) float64 points and the affine fit.
    """
    b, h, w, _ = grid.shape
    g = grid.to(torch.float64)
    centres = pixel_centres((h, w), device=g.device, dtype=torch.float64).reshape(1, -1, 2).expand(b, -1, -1)
    theta = _fit_affine(centres, g.reshape(b, -1, 2))
    residual = (g.reshape(b, -1, 2) - _apply_affine(theta, centres)).reshape(b, h, w, 2).permute(0, 3, 1, 2)
    # One extra pixel on each side, extrapolated linearly, so that the half
    # pixel between the outer pixel centres and the frame is not held flat.
    if h > 1:
        residual = torch.cat([2 * residual[:, :, :1] - residual[:, :, 1:2], residual,
                              2 * residual[:, :, -1:] - residual[:, :, -2:-1]], dim=2)  # fmt: skip
    else:
        residual = torch.cat([residual, residual, residual], dim=2)
    if w > 1:
        residual = torch.cat([2 * residual[..., :1] - residual[..., 1:2], residual,
                              2 * residual[..., -1:] - residual[..., -2:-1]], dim=3)  # fmt: skip
    else:
        residual = torch.cat([residual, residual, residual], dim=3)
    # [-1, 1] coordinates of the h x w map -> those of the padded (h + 2) x (w + 2) map
    shrink = torch.tensor([w / (w + 2.0), h / (h + 2.0)], dtype=torch.float64, device=g.device)

    def fn(p: torch.Tensor) -> torch.Tensor:
        r = F.grid_sample(residual, (p * shrink)[:, None], mode="bilinear", padding_mode="border", align_corners=False)
        return _apply_affine(theta, p) + r[:, :, 0].transpose(1, 2)

    return fn, theta


def _as_map(warp: Warp | torch.Tensor, name: str) -> tuple[Points, torch.Tensor | None, int]:
    """(map on float64 points, inverse affine if the map is affine else None, batch size)."""
    if isinstance(warp, Warp):
        fn = warp.apply
        inv = _invert_affine(warp.theta.to(torch.float64)) if warp.is_affine else None
        return fn, inv, len(warp)
    if isinstance(warp, torch.Tensor) and warp.ndim == 3:
        theta = _check_theta(warp, name).to(torch.float64)
        return (lambda p: _apply_affine(theta, p)), _invert_affine(theta), int(theta.shape[0])
    if isinstance(warp, torch.Tensor) and warp.ndim == 4:
        fn, _ = _dense_map(_check_grid(warp, name))
        return fn, None, int(warp.shape[0])
    raise ShapeError(
        f"{name} must be a Warp, a (B, 2, 3) affine matrix or a (B, H, W, 2) sampling grid, got {_shape(warp)}"
    )


ValueJac = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _finite_difference(fn: Points, eps: float = 1e-4) -> ValueJac:
    """``q -> (fn(q), d fn / dx, d fn / dy)`` by central differences (one call of ``fn``)."""

    def value_jac(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = q.shape[1]
        ex = torch.tensor([eps, 0.0], dtype=q.dtype, device=q.device)
        ey = torch.tensor([0.0, eps], dtype=q.dtype, device=q.device)
        f = fn(torch.cat([q, q + ex, q - ex, q + ey, q - ey], dim=1))
        jx = (f[:, n : 2 * n] - f[:, 2 * n : 3 * n]) / (2 * eps)
        jy = (f[:, 3 * n : 4 * n] - f[:, 4 * n :]) / (2 * eps)
        return f[:, :n], jx, jy

    return value_jac


def _warp_value_jac(warp: Warp) -> ValueJac:
    """``q -> (G(q), dG/dx, dG/dy)`` of a warp, analytically (float64)."""
    theta = warp.theta.to(torch.float64)
    m = theta[:, :, :2]

    def value_jac(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = q.to(torch.float64)
        if warp.tps is None:
            ones = torch.ones_like(q)
            return _apply_affine(theta.to(q.device), q), ones * m[:, None, :, 0], ones * m[:, None, :, 1]
        c = warp.tps.ctrl.to(device=q.device, dtype=torch.float64)
        coef = warp.tps.coef.to(q.device)
        k = c.shape[1]
        dx = q[:, :, None, 0] - c[:, None, :, 0]
        dy = q[:, :, None, 1] - c[:, None, :, 1]
        r2 = dx * dx + dy * dy
        log_r2 = torch.log(r2.clamp_min(1e-300))
        # d/dp [r2 log r2] = 2 (p - c) (log r2 + 1), 0 at the centre itself
        g = torch.where(r2 > 0, 2.0 * (log_r2 + 1.0), torch.zeros_like(r2))
        wk, lin = coef[:, :k], coef[:, k + 1 :]  # (B, K, 2), (B, 2, 2): rows = d/dx, d/dy
        t = (r2 * log_r2) @ wk + coef[:, k : k + 1] + q @ lin
        tx = (g * dx) @ wk + lin[:, None, 0]  # d T / dx, (B, N, 2)
        ty = (g * dy) @ wk + lin[:, None, 1]
        mt = m.transpose(1, 2).to(q.device)
        return _apply_affine(theta.to(q.device), t), tx @ mt, ty @ mt

    return value_jac


def _newton_inverse(value_jac: ValueJac, targets: torch.Tensor, init: torch.Tensor, iterations: int) -> torch.Tensor:
    """Solve ``f(q) = targets`` for q by (damped) Newton steps."""
    q = init.clone()
    for _ in range(iterations):
        f, jx, jy = value_jac(q)
        r = f - targets
        det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        # step = J^{-1} r with J = [jx jy] (columns)
        sx = (jy[..., 1] * r[..., 0] - jy[..., 0] * r[..., 1]) / det
        sy = (-jx[..., 1] * r[..., 0] + jx[..., 0] * r[..., 1]) / det
        step = torch.stack([sx, sy], dim=-1)
        norm = torch.linalg.vector_norm(step, dim=-1, keepdim=True)
        step = step * (0.5 / norm.clamp_min(0.5))  # damp wild steps (folds, far outside)
        step = torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
        q = q - step
        if float(step.abs().max()) < 1e-10:
            break
    return q


def correspondence(
    grid_a: Warp | torch.Tensor,
    grid_b: Warp | torch.Tensor,
    size: Size,
    *,
    iterations: int = 30,
    tolerance_px: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where every pixel of view *a* lies in view *b* (two warps of one source).

    View *a* is the source sampled by ``grid_a`` (``a(p) = src(G_a(p))``),
    view *b* by ``grid_b``. Pixel ``p`` of *a* shows the source point
    ``s = G_a(p)``; its correspondence is the point ``q`` of *b* with
    ``G_b(q) = s``. Inverting ``G_b`` is analytic for affine warps and
    otherwise done by Newton's method on the exact TPS ([Warp][dife.train.augment.Warp]) or on
    the bilinear interpolation of a dense grid; ``q`` is kept only when
    ``|G_b(q) - s|`` is below ``tolerance_px``.

    Args:
        grid_a: Warp of view *a*: a [Warp][dife.train.augment.Warp] (preferred: exact at any
            resolution), a (B, 2, 3) affine matrix, or a (B, H, W, 2)
            sampling grid (resampled to ``size`` if needed).
        grid_b: Warp of view *b*, same forms.
        size: ``S`` (both views S x S) or ``(S_a, S_b)``: the side of the map
            of view *a* whose pixels are matched, and of the map of view *b*
            whose pixel coordinates are returned (e.g. 96 and 64).
        iterations: Most Newton iterations.
        tolerance_px: Largest accepted residual ``|G_b(q) - s|``, in pixels of view *b*.

    Returns:
        ``(grid1_to_2, valid)``:

        * ``grid1_to_2``: (B, S_a, S_a, 2) float32 ``(x, y)`` grid coordinates
            of view *b* (integer = pixel centre, [dife.coords][dife.coords]), the
            format of [dife.train.losses.matching_loss][dife.train.losses.matching_loss]; ``-1`` (outside,
            hence ignored by the loss) where not valid.
        * ``valid``: (B, S_a, S_a) bool, True where ``s`` lies inside the
            source (the pixel is not padding), ``q`` inside view *b*
            (``-0.5 <= x, y <= S_b - 0.5``) and the inversion converged.

    Raises:
        ShapeError: bad warps or different batch sizes.
        InputError: bad ``size`` / options, singular affine warps.
    """
    if isinstance(size, (tuple, list)):
        sa, sb = _size(size, "size")
    else:
        sa = sb = _positive_int(size, "size")
    iterations = _positive_int(iterations, "iterations")
    tol = _number(tolerance_px, "tolerance_px", 0.0) * 2.0 / sb  # pixels of b -> [-1, 1] units
    fa, _, ba = _as_map(grid_a, "grid_a")
    fb, inv_b, bb = _as_map(grid_b, "grid_b")
    if ba != bb:
        raise ShapeError(f"grid_a and grid_b have different batch sizes: {ba} and {bb}")
    device = grid_a.theta.device if isinstance(grid_a, Warp) else grid_a.device

    p = pixel_centres(sa, device=device, dtype=torch.float64).reshape(1, -1, 2).expand(ba, -1, -1)
    s = fa(p)  # source points of view a's pixels
    if inv_b is not None:
        q = _apply_affine(inv_b, s)
    else:
        lattice = pixel_centres(16, device=device, dtype=torch.float64).reshape(1, -1, 2).expand(bb, -1, -1)
        init = _apply_affine(_invert_affine(_fit_affine(lattice, fb(lattice))), s)
        value_jac = _warp_value_jac(grid_b) if isinstance(grid_b, Warp) else _finite_difference(fb)
        q = _newton_inverse(value_jac, s, init, iterations)
    residual = torch.linalg.vector_norm(fb(q) - s, dim=-1)
    valid = (
        (s.abs() <= 1.0).all(-1) & (q.abs() <= 1.0).all(-1) & torch.isfinite(q).all(-1) & (residual <= max(tol, 1e-9))
    )
    target = normalized_to_grid(q, sb)
    target = torch.where(valid[..., None], target, torch.full_like(target, -1.0))
    return target.reshape(ba, sa, sa, 2).to(torch.float32), valid.reshape(ba, sa, sa)


# ----------------------------------------------------------------- photometric
def _gray(x: torch.Tensor) -> torch.Tensor:
    w = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def color_jitter(
    images: torch.Tensor,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.0,
    grayscale_p: float = 0.0,
    generator: torch.Generator | None = None,
    p: float = 1.0,
) -> torch.Tensor:
    """Per-sample random colour changes of RGB images in ``[-1, 1]``.

    Applied in this order on RGB in [0, 1], clamping after each step (factors
    drawn independently per sample):

    1. brightness: ``x * b``, ``b ~ U(max(0, 1 - brightness), 1 + brightness)``;
    2. contrast: blend with the mean grey level, ``c ~ U(max(0, 1 - contrast), 1 + contrast)``;
    3. saturation: blend with the per-pixel grey, ``s ~ U(max(0, 1 - saturation), 1 + saturation)``;
    4. hue: rotation of the chroma (YIQ) by ``h * 360`` degrees, ``h ~ U(-hue, hue)``, ``hue <= 0.5``;
    5. grayscale with probability ``grayscale_p``.

    Grey is the BT.601 luma. A zero strength skips its step, so all-zero
    strengths return the input unchanged. With ``p < 1`` each sample is
    changed with probability ``p`` and otherwise returned as it is (the
    authors' ``RandomApply(ColorJitter(brightness=0.1, hue=0.1), p=0.7)`` is
    ``brightness=0.1, hue=0.1, contrast=0, saturation=0, p=0.7``, drawn per
    sample here); ``p = 1`` draws no extra random numbers.

    Args:
        images: (B, 3, H, W) float RGB in [-1, 1].
        brightness: Strength of the brightness change (>= 0).
        contrast: Strength of the contrast change (>= 0).
        saturation: Strength of the saturation change (>= 0).
        hue: Largest hue rotation, as a fraction of a full turn (0 .. 0.5).
        grayscale_p: Probability of turning a sample grey (0 .. 1).
        generator: Source of randomness.
        p: Probability that a sample is jittered at all (0 .. 1).

    Returns:
        (B, 3, H, W) tensor in [-1, 1], dtype and device of ``images``.

    Raises:
        ShapeError: not a (B, 3, H, W) float tensor.
        InputError: strengths out of range.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or images.numel() == 0:
        raise ShapeError(f"images must be a (B, 3, H, W) RGB tensor, got {_shape(images)}")
    if not images.is_floating_point():
        raise ShapeError(f"images must be floating point in [-1, 1], got dtype {images.dtype}")
    br = _number(brightness, "brightness")
    co = _number(contrast, "contrast")
    sa = _number(saturation, "saturation")
    hu = _number(hue, "hue", 0.0, 0.5)
    gp = _number(grayscale_p, "grayscale_p", 0.0, 1.0)
    prob = _number(p, "p", 0.0, 1.0)
    generator = _check_generator(generator)
    b = images.shape[0]
    dev, dt = images.device, images.dtype
    if prob < 1.0 and not br == co == sa == hu == gp == 0.0:
        keep = _uniform((b,), 0.0, 1.0, generator, dev) >= prob
        jittered = color_jitter(
            images,
            brightness=br,
            contrast=co,
            saturation=sa,
            hue=hu,
            grayscale_p=gp,
            generator=generator,
        )
        return torch.where(keep.view(b, 1, 1, 1), images, jittered)

    def factor(strength: float) -> torch.Tensor:
        return _uniform((b,), max(0.0, 1.0 - strength), 1.0 + strength, generator, dev).to(dt).view(b, 1, 1, 1)

    x = images
    if br == co == sa == hu == gp == 0.0:
        return x.clone()
    x = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
    if br > 0:
        x = (x * factor(br)).clamp(0.0, 1.0)
    if co > 0:
        m = _gray(x).mean(dim=(2, 3), keepdim=True)
        x = ((x - m) * factor(co) + m).clamp(0.0, 1.0)
    if sa > 0:
        g = _gray(x)
        x = ((x - g) * factor(sa) + g).clamp(0.0, 1.0)
    if hu > 0:
        angle = _uniform((b,), -hu, hu, generator, dev) * (2.0 * math.pi)
        to_yiq = torch.tensor(
            [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
            dtype=torch.float64,
            device=dev,
        )
        c, s = torch.cos(angle), torch.sin(angle)
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        rot = torch.stack(
            [torch.stack([one, zero, zero], -1), torch.stack([zero, c, -s], -1), torch.stack([zero, s, c], -1)], -2
        )
        mat = (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(dt)  # (B, 3, 3)
        x = torch.einsum("bij,bjhw->bihw", mat, x).clamp(0.0, 1.0)
    if gp > 0:
        flip = _uniform((b,), 0.0, 1.0, generator, dev) < gp
        x = torch.where(flip.view(b, 1, 1, 1), _gray(x).expand_as(x), x)
    return x * 2.0 - 1.0
