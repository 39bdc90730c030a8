"""Training losses of DIFE: distillation, semantic matching, DVE exchange.

Pure functions on batched tensors, no module state. Every loss returns a
0-d tensor that is differentiable with respect to its floating-point inputs.

* [distillation_loss][dife.train.losses.distillation_loss] -- ``L_K1`` (student embedding vs. the frozen CSE
  embedding) and ``L_K2`` (domain converter output vs. the StyleGAN2 feature
  map): the per-pixel Euclidean distance, averaged over pixels.
* [matching_loss][dife.train.losses.matching_loss] -- the semantic matching loss of the paper (eq. 4-5,
  ``L_M1`` / ``L_M2``): the similarity-weighted mean location of each pixel
  in the other image must land on its known correspondence.
* [dve_exchange_loss][dife.train.losses.dve_exchange_loss] -- the descriptor vector exchange of Thewlis et
  al. (ICCV 2019): descriptors of the first image are first re-expressed
  through an auxiliary image, then matched into the second.
* [keypoint_matching_loss][dife.train.losses.keypoint_matching_loss] -- the matching loss on a few
  labelled keypoints of two photos (the ``landmarks`` option of the trainer, not in the paper).
* [total_loss][dife.train.losses.total_loss] -- the weighted sum
  ``L = 1e-2 L_K1 + 1 L_K2 + 1e-2 L_M1 + 1e-2 L_M2`` with a log dict.

Coordinates follow [dife.coords][dife.coords]: ``(x, y)`` grid coordinates where an
integer is the centre of that pixel of the map. With ``reduction="mean"``
(default) matching distances are divided by the side of the target map
(``max(H, W)``) and averaged over the pixels, so a loss of ``0.1`` means "off
by a tenth of the map" whatever the resolution; ``reduction="sum"`` is eq. 5
as written: the distances in pixels of the target map, summed over the
pixels of each pair (then averaged over the pairs of the batch).

Memory: the matching losses compare every pixel of one map with every pixel
of the other (a 96 x 96 pair is 9,216 x 9,216 = 85 M similarities, 340 MB in
float32, and autograd would keep the softmax as well). They work on chunks of
query pixels and, when gradients are needed, recompute each chunk in the
backward pass (`torch.utils.checkpoint.checkpoint`), so at most one
chunk of similarities exists at a time. The value and the gradients do not
depend on ``chunk_size`` (up to float32 summation order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from dife.checks import check_positive_int
from dife.coords import grid_to_normalized
from dife.errors import InputError, ShapeError

__all__ = [
    "DEFAULT_WEIGHTS",
    "CHUNK_ELEMENTS",
    "distillation_loss",
    "matching_loss",
    "keypoint_matching_loss",
    "soft_locations",
    "dve_exchange_loss",
    "exchange_descriptors",
    "total_loss",
]

#: Loss weights of the paper: ``L = 1e-2 L_K1 + 1 L_K2 + 1e-2 L_M1 + 1e-2 L_M2``.
DEFAULT_WEIGHTS: dict[str, float] = {"k1": 1e-2, "k2": 1.0, "m1": 1e-2, "m2": 1e-2}

#: Default number of similarity values in one chunk (2**24 = 64 MiB of float32).
CHUNK_ELEMENTS: int = 2**24

Normalize = Literal["softmax", "cosine"]
Reduction = Literal["mean", "sum"]


# ------------------------------------------------------------------ validation
def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_map(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"{name} must be a (B, C, H, W) tensor, got {_shape(x)}")
    if not x.is_floating_point():
        raise ShapeError(f"{name} must be a floating-point tensor, got dtype {x.dtype} with shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ShapeError(f"{name} is empty: shape {tuple(x.shape)}")
    _check_finite(x, name)
    return x


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x.detach()).all()):
        raise ShapeError(f"{name} with shape {tuple(x.shape)} contains NaN or infinite values")


def _check_pair(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0] or a.shape[1] != b.shape[1]:
        raise ShapeError(
            f"{na} and {nb} must have the same batch size and channels: {na} {tuple(a.shape)}, {nb} {tuple(b.shape)}"
        )


def _mask(mask: object, shape: tuple[int, int, int], name: str, like: torch.Tensor) -> torch.Tensor:
    """Validate a (B, 1, H, W) / (B, H, W) mask and return it as float (B, H, W)."""
    b, h, w = shape
    if not isinstance(mask, torch.Tensor):
        raise ShapeError(f"{name} must be a tensor of shape ({b}, 1, {h}, {w}), got {_shape(mask)}")
    m = mask
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if tuple(m.shape) != (b, h, w):
        raise ShapeError(f"{name} must have shape ({b}, 1, {h}, {w}) or ({b}, {h}, {w}), got {tuple(mask.shape)}")
    m = m.to(device=like.device, dtype=like.dtype)
    _check_finite(m, name)
    if bool(((m < 0) | (m > 1)).any()):
        raise InputError(f"{name} values must lie in [0, 1] (bool or float weights)")
    return m


def _masked_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    # sum(w) == 0 gives 0 rather than NaN: no valid pixel, nothing to learn.
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- distillation
def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    resize: Literal["student", "teacher"] = "student",
) -> torch.Tensor:
    """Per-pixel L2 distance between a student and a teacher map (``L_K1``, ``L_K2``).

    ``mean_p ||student_p - teacher_p||_2``: the Euclidean norm (not squared)
    of the difference over channels at each pixel ``p``, averaged over the
    pixels of the batch (the paper writes a sum; the mean keeps the scale
    independent of the batch and map size). Maps of different resolutions
    are compared on one grid: by default the **student** is resized to the
    teacher's grid (bilinear, ``align_corners=False``, the pixel-centre
    convention of [dife.coords][dife.coords]); ``resize="teacher"`` resizes the
    teacher to the student's grid instead.

    Args:
        student: (B, C, h, w) prediction, e.g. the embedding Φ(x) or Ψ^d(E).
        teacher: (B, C, H, W) target (CSE embedding / StyleGAN2 features);
            gradients flow into it too if it requires grad, so detach a
            frozen teacher's output (or compute it under ``torch.no_grad``).
        mask: Optional (B, 1, H', W') or (B, H', W') weights in [0, 1] (bool
            or float) on the comparison grid (the teacher's with
            ``resize="student"``, the student's otherwise); the loss is the
            weighted mean, 0 when every weight is 0.
        resize: Which map is resized when the grids differ.

    Returns:
        0-d tensor >= 0.

    Raises:
        ShapeError: non-4-d inputs, different batch size or channels, a mask
            of the wrong shape, or NaN / inf values (the message names the
            shapes).
        InputError: unknown ``resize`` or mask values outside [0, 1].
    """
    _check_map(student, "student")
    _check_map(teacher, "teacher")
    _check_pair(student, teacher, "student", "teacher")
    if resize == "student":
        student = _resize(student, tuple(teacher.shape[-2:]))
    elif resize == "teacher":
        teacher = _resize(teacher, tuple(student.shape[-2:]))
    else:
        raise InputError(f"resize must be 'student' or 'teacher', got {resize!r}")
    dist = torch.linalg.vector_norm(student - teacher.to(student.dtype), dim=1)  # (B, H, W)
    weights = None if mask is None else _mask(mask, tuple(dist.shape), "mask", dist)
    return _masked_mean(dist, weights)


# ------------------------------------------------------------------- matching
def _pixel_centres(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(h * w, 2) grid coordinates (x, y) of the pixel centres, row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def _attention(q: torch.Tensor, k: torch.Tensor, scale: float, normalize: str) -> torch.Tensor:
    """Weights (B, n, N) of unit queries (B, n, C) over unit keys (B, C, N)."""
    sim = torch.bmm(q, k)
    if normalize == "softmax":
        return torch.softmax(sim * scale, dim=-1)
    pos = sim.clamp_min(0.0)
    return pos / pos.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _chunked(
    fn: Callable[[torch.Tensor], torch.Tensor],
    queries: torch.Tensor,
    chunk_size: int,
    others: tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """Apply ``fn(q_chunk, *others)`` to chunks of ``queries`` (B, N, C) along N and concatenate.

    With more than one chunk and autograd recording, each chunk is
    checkpointed: only its inputs are kept and the chunk is recomputed in the
    backward pass, so the (chunk, N) intermediates never pile up.
    """
    n = queries.shape[1]
    if n <= chunk_size:
        return fn(queries, *others)
    needs_grad = torch.is_grad_enabled() and (queries.requires_grad or any(t.requires_grad for t in others))
    outs = []
    for start in range(0, n, chunk_size):
        q = queries[:, start : start + chunk_size]
        if needs_grad:
            outs.append(checkpoint(fn, q, *others, use_reentrant=False))
        else:
            outs.append(fn(q, *others))
    return torch.cat(outs, dim=1)


def _chunk(chunk_size: int | None, batch: int, keys: int) -> int:
    if chunk_size is None:
        return max(1, CHUNK_ELEMENTS // max(1, batch * keys))
    return check_positive_int(chunk_size, "chunk_size", allow_none=True)


def _check_reduction(reduction: object) -> str:
    if reduction not in ("mean", "sum"):
        raise InputError(f"reduction must be 'mean' or 'sum' (eq. 5), got {reduction!r}")
    return str(reduction)


def _check_options(temperature: float, normalize: str) -> float:
    if normalize not in ("softmax", "cosine"):
        raise InputError(f"normalize must be 'softmax' or 'cosine', got {normalize!r}")
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise InputError(f"temperature must be a positive number, got {temperature!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise InputError(f"temperature must be a positive finite number, got {temperature!r}")
    return 1.0 / t


def soft_locations(
    e1: torch.Tensor,
    e2: torch.Tensor,
    *,
    temperature: float = 0.02,
    normalize: Normalize = "softmax",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Similarity-weighted mean location in ``e2`` of every pixel of ``e1`` (eq. 5).

    ``p_i = sum_j w_ij u_j`` where ``u_j`` are the pixel centres of ``e2``
    and the weights ``w_ij`` come from the cosine similarity
    ``cos(e1_i, e2_j)``:

    * ``normalize="softmax"`` (default, as in DVE): ``w_ij = softmax_j(cos / temperature)``;
    * ``normalize="cosine"``: eq. 5 as printed in the paper weights the
      locations by the raw cosine similarity; to make the weights a convex
      combination (so that ``p_i`` is a location) this option uses
      ``max(cos, 0)`` normalised to sum to one over ``j``.
      ``temperature`` is ignored.

    Args:
        e1: (B, C, H1, W1) query embedding map.
        e2: (B, C, H2, W2) target embedding map.
        temperature: Softmax temperature ``τ`` (> 0).
        normalize: ``"softmax"`` or ``"cosine"`` (see above).
        chunk_size: Query pixels per chunk; ``None`` picks one so that a
            chunk holds about [CHUNK_ELEMENTS][dife.train.losses.CHUNK_ELEMENTS] similarities.

    Returns:
        (B, H1, W1, 2) grid coordinates ``(x, y)`` in ``e2``'s pixels.

    Raises:
        ShapeError: bad shapes or non-finite values.
        InputError: bad ``temperature``, ``normalize`` or ``chunk_size``.
    """
    _check_map(e1, "e1")
    _check_map(e2, "e2")
    _check_pair(e1, e2, "e1", "e2")
    scale = _check_options(temperature, normalize)
    return _soft_locations(e1, e2, scale, normalize, chunk_size)


def _soft_locations(
    e1: torch.Tensor, e2: torch.Tensor, scale: float, normalize: str, chunk_size: int | None
) -> torch.Tensor:
    b, _, h1, w1 = e1.shape
    h2, w2 = e2.shape[-2:]
    q = F.normalize(e1, dim=1).flatten(2).transpose(1, 2)  # (B, N1, C)
    k = F.normalize(e2.to(e1.dtype), dim=1).flatten(2)  # (B, C, N2)
    coords = _pixel_centres(h2, w2, e1.device, e1.dtype)

    def fn(qc: torch.Tensor, kk: torch.Tensor, uu: torch.Tensor) -> torch.Tensor:
        return _attention(qc, kk, scale, normalize) @ uu  # (B, n, 2)

    p = _chunked(fn, q, _chunk(chunk_size, b, h2 * w2), (k, coords))
    return p.reshape(b, h1, w1, 2)


def matching_loss(
    e1: torch.Tensor,
    e2: torch.Tensor,
    *,
    grid1_to_2: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    temperature: float = 0.02,
    normalize: Normalize = "softmax",
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Semantic matching loss (paper eq. 4-5, ``L_M1`` / ``L_M2``).

    For each pixel ``u_i`` of ``e1`` the similarity-weighted mean location
    ``p_i`` in ``e2`` ([soft_locations][dife.train.losses.soft_locations]) should land on the known
    correspondence ``t_i``:

    * ``reduction="mean"`` (default): ``mean_i ||p_i - t_i||_2 / max(H2, W2)``,
      the distance in ``e2`` pixels divided by the side of ``e2`` and averaged
      over the (valid) pixels of the batch, so the value does not depend on
      the map resolution;
    * ``reduction="sum"``: ``mean_b sum_i ||p_i - t_i||_2``, eq. 5 as
      written: distances in ``e2`` pixels summed over the (valid, weighted)
      pixels of each pair, then averaged over the pairs.

    Args:
        e1: (B, C, H, W) embedding of the first image.
        e2: (B, C, H2, W2) embedding of the paired image.
        grid1_to_2: (B, H, W, 2) target ``(x, y)`` of every pixel of ``e1``,
            in ``e2``'s grid coordinates (integer = pixel centre). ``None``
            means the identity (``e2`` must then be H x W): pixel ``(x, y)``
            corresponds to ``(x, y)``. Targets outside ``e2``
            (``x < -0.5``, ``x > W2 - 0.5``, same for ``y``) are ignored:
            no correspondence.
        valid: Optional (B, H, W) or (B, 1, H, W) weights in [0, 1] (bool or
            float) of the pixels of ``e1`` that take part.
        temperature: Softmax temperature ``τ`` of the cosine similarity.
            Eq. 5 as printed uses the raw cosine similarity; we follow DVE
            and use a softmax with temperature (``normalize="softmax"``);
            ``normalize="cosine"`` gives the printed form (see
            [soft_locations][dife.train.losses.soft_locations]).
        normalize: ``"softmax"`` or ``"cosine"``.
        chunk_size: Pixels of ``e1`` per chunk (see [soft_locations][dife.train.losses.soft_locations]);
            it changes neither the value nor the gradients.
        reduction: ``"mean"`` or ``"sum"`` (see above).

    Returns:
        0-d tensor >= 0 (0 when no pixel is valid).

    Raises:
        ShapeError: bad shapes, or NaN / inf in any input.
        InputError: bad ``temperature``, ``normalize``, ``chunk_size`` or mask values.
    """
    _check_map(e1, "e1")
    _check_map(e2, "e2")
    _check_pair(e1, e2, "e1", "e2")
    scale = _check_options(temperature, normalize)
    return _matching_loss(e1, e2, grid1_to_2, valid, scale, normalize, chunk_size, _check_reduction(reduction))


def keypoint_matching_loss(
    e1: torch.Tensor,
    e2: torch.Tensor,
    points1: torch.Tensor,
    points2: torch.Tensor,
    *,
    temperature: float = 0.02,
    normalize: Normalize = "softmax",
) -> torch.Tensor:
    """The matching loss (eq. 4-5) on labelled keypoints: sparse, known correspondences.

    For keypoint ``k`` of pair ``b``, the descriptor of ``e1`` at ``points1[b, k]``
    (bilinear, L2-normalised) gives the similarity-weighted mean location ``p`` in
    ``e2`` (as [soft_locations][dife.train.losses.soft_locations]), which should land on
    ``points2[b, k]``. The value is ``mean ||p - points2|| / max(H2, W2)`` over the
    keypoints labelled in both images (the ``reduction="mean"`` scale of
    [matching_loss][dife.train.losses.matching_loss]).

    Args:
        e1: (B, C, H, W) embedding of the first images.
        e2: (B, C, H2, W2) embedding of their partners.
        points1: (B, K, 2) ``(x, y)`` grid coordinates in ``e1`` (integer = pixel
            centre); NaN marks a keypoint that is not labelled.
        points2: (B, K, 2) the same keypoints in ``e2``.
        temperature: Softmax temperature (> 0).
        normalize: ``"softmax"`` or ``"cosine"`` (see [soft_locations][dife.train.losses.soft_locations]).

    Returns:
        0-d tensor >= 0 (0 when no keypoint is labelled in both).

    Raises:
        ShapeError: bad shapes or non-finite embeddings.
        InputError: bad ``temperature`` or ``normalize``.
    """
    _check_map(e1, "e1")
    _check_map(e2, "e2")
    _check_pair(e1, e2, "e1", "e2")
    b, _, h, w = e1.shape
    for name, pts in (("points1", points1), ("points2", points2)):
        if not isinstance(pts, torch.Tensor) or pts.ndim != 3 or pts.shape[0] != b or pts.shape[2] != 2:
            raise ShapeError(f"{name} must be a (B={b}, K, 2) tensor of (x, y), got {_shape(pts)}")
    if points1.shape != points2.shape:
        raise ShapeError(
            f"points1 and points2 must have one shape, got {tuple(points1.shape)} and {tuple(points2.shape)}"
        )
    scale = _check_options(temperature, normalize)
    ok = ~(points1.isnan().any(-1) | points2.isnan().any(-1))  # (B, K)
    if not bool(ok.any()):
        return e1.sum() * 0.0
    p1 = torch.where(ok[..., None], points1, torch.zeros_like(points1)).to(e1.dtype)
    # bilinear descriptors at the points: grid_sample's [-1, 1] (align_corners=False) from pixel centres
    norm = torch.stack([grid_to_normalized(p1[..., 0], w), grid_to_normalized(p1[..., 1], h)], dim=-1)
    q = F.grid_sample(F.normalize(e1, dim=1), norm[:, :, None], mode="bilinear", align_corners=False)[..., 0]
    q = F.normalize(q.transpose(1, 2), dim=-1)  # (B, K, C)
    h2, w2 = int(e2.shape[-2]), int(e2.shape[-1])
    k = F.normalize(e2.to(e1.dtype), dim=1).flatten(2)  # (B, C, N2)
    p = _attention(q, k, scale, normalize) @ _pixel_centres(h2, w2, e1.device, e1.dtype)  # (B, K, 2)
    dist = torch.linalg.vector_norm(p - torch.nan_to_num(points2.to(e1.dtype)), dim=-1) / max(h2, w2)
    return dist[ok].mean()


def _matching_loss(
    e1: torch.Tensor,
    e2: torch.Tensor,
    grid1_to_2: torch.Tensor | None,
    valid: torch.Tensor | None,
    scale: float,
    normalize: str,
    chunk_size: int | None,
    reduction: str = "mean",
) -> torch.Tensor:
    b, _, h, w = e1.shape
    h2, w2 = int(e2.shape[-2]), int(e2.shape[-1])
    target = _target_grid(grid1_to_2, (b, h, w), (h2, w2), e1)
    p = _soft_locations(e1, e2, scale, normalize, chunk_size)
    dist = torch.linalg.vector_norm(p - target, dim=-1)  # (B, H, W), e2 pixels
    inside = (
        (target[..., 0] >= -0.5)
        & (target[..., 0] <= w2 - 0.5)
        & (target[..., 1] >= -0.5)
        & (target[..., 1] <= h2 - 0.5)
    ).to(dist.dtype)
    weights = inside if valid is None else inside * _mask(valid, (b, h, w), "valid", dist)
    if reduction == "sum":
        return (dist * weights).flatten(1).sum(dim=1).mean()
    return _masked_mean(dist / float(max(h2, w2)), weights)


def _target_grid(
    grid: torch.Tensor | None, shape: tuple[int, int, int], size2: tuple[int, int], like: torch.Tensor
) -> torch.Tensor:
    b, h, w = shape
    if grid is None:
        if (h, w) != size2:
            raise ShapeError(
                f"grid1_to_2=None (identity) needs maps of one size, got e1 {h}x{w} and e2 {size2[0]}x{size2[1]}"
            )
        return _pixel_centres(h, w, like.device, like.dtype).reshape(1, h, w, 2).expand(b, h, w, 2)
    if not isinstance(grid, torch.Tensor) or tuple(grid.shape) != (b, h, w, 2):
        raise ShapeError(f"grid1_to_2 must have shape ({b}, {h}, {w}, 2) (x, y per pixel of e1), got {_shape(grid)}")
    if not grid.is_floating_point():
        grid = grid.to(like.dtype)
    _check_finite(grid, "grid1_to_2")
    return grid.to(device=like.device, dtype=like.dtype)


# ------------------------------------------------------------------------ DVE
def exchange_descriptors(
    e1: torch.Tensor,
    e3: torch.Tensor,
    *,
    temperature: float = 0.02,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Re-express every descriptor of ``e1`` through the auxiliary map ``e3`` (DVE).

    ``ê1_i = sum_k softmax_k(cos(e1_i, e3_k) / τ) ē3_k`` with ``ē3`` the
    L2-normalised descriptors of ``e3``: a soft nearest neighbour of each
    pixel of ``e1`` among the pixels of another instance.

    Args:
        e1: (B, C, H, W) embedding to reconstruct.
        e3: (B, C, H3, W3) auxiliary embedding (another image / instance).
        temperature: Softmax temperature ``τ`` (> 0).
        chunk_size: Pixels of ``e1`` per chunk (does not change the result).

    Returns:
        (B, C, H, W) reconstructed descriptors (norm <= 1).

    Raises:
        ShapeError: bad shapes or non-finite values.
        InputError: bad ``temperature`` or ``chunk_size``.
    """
    _check_map(e1, "e1")
    _check_map(e3, "e3")
    _check_pair(e1, e3, "e1", "e3")
    scale = _check_options(temperature, "softmax")
    return _exchange(e1, e3, scale, chunk_size)


def _exchange(e1: torch.Tensor, e3: torch.Tensor, scale: float, chunk_size: int | None) -> torch.Tensor:
    b, c, h, w = e1.shape
    q = F.normalize(e1, dim=1).flatten(2).transpose(1, 2)  # (B, N1, C)
    k = F.normalize(e3.to(e1.dtype), dim=1).flatten(2)  # (B, C, N3)
    v = k.transpose(1, 2)  # (B, N3, C)

    def fn(qc: torch.Tensor, kk: torch.Tensor, vv: torch.Tensor) -> torch.Tensor:
        return torch.bmm(_attention(qc, kk, scale, "softmax"), vv)  # (B, n, C)

    out = _chunked(fn, q, _chunk(chunk_size, b, k.shape[-1]), (k, v))
    return out.transpose(1, 2).reshape(b, c, h, w)


def dve_exchange_loss(
    e1: torch.Tensor,
    e2: torch.Tensor,
    e3: torch.Tensor,
    *,
    grid1_to_2: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    temperature: float = 0.02,
    exchange_temperature: float | None = None,
    normalize: Normalize = "softmax",
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Descriptor vector exchange loss (Thewlis, Bilen, Vedaldi, ICCV 2019).

    ``e1`` and ``e2`` are two warps of the same image with the known
    correspondence ``grid1_to_2``; ``e3`` is an auxiliary image (another
    instance). The descriptors of ``e1`` are replaced by their soft
    reconstruction from ``e3`` ([exchange_descriptors][dife.train.losses.exchange_descriptors]) and the result
    is matched into ``e2`` with [matching_loss][dife.train.losses.matching_loss]. The loss is small only
    when corresponding parts of *different* instances have similar
    descriptors, which discourages instance-specific embeddings.

    Args:
        e1: (B, C, H, W) embedding of the first warp.
        e2: (B, C, H2, W2) embedding of the second warp.
        e3: (B, C, H3, W3) embedding of the auxiliary image.
        grid1_to_2: (B, H, W, 2) targets in ``e2`` (see [matching_loss][dife.train.losses.matching_loss]).
        valid: Optional (B, H, W) / (B, 1, H, W) weights of ``e1``'s pixels.
        temperature: Temperature of the matching step.
        exchange_temperature: Temperature of the reconstruction from ``e3``
            (defaults to ``temperature``).
        normalize: Weighting of the matching step (see [soft_locations][dife.train.losses.soft_locations]).
        chunk_size: Pixels per chunk in both steps.
        reduction: Reduction of the matching step (see [matching_loss][dife.train.losses.matching_loss]).

    Returns:
        0-d tensor >= 0.

    Raises:
        ShapeError: bad shapes or non-finite values.
        InputError: bad options.
    """
    for x, name in ((e1, "e1"), (e2, "e2"), (e3, "e3")):
        _check_map(x, name)
    _check_pair(e1, e2, "e1", "e2")
    _check_pair(e1, e3, "e1", "e3")
    scale = _check_options(temperature, normalize)
    scale_ex = _check_options(temperature if exchange_temperature is None else exchange_temperature, "softmax")
    red = _check_reduction(reduction)
    e1_hat = _exchange(e1, e3, scale_ex, chunk_size)
    return _matching_loss(e1_hat, e2, grid1_to_2, valid, scale, normalize, chunk_size, red)


# ---------------------------------------------------------------------- total
def total_loss(
    parts: Mapping[str, torch.Tensor],
    weights: Mapping[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the named loss terms, and a log of their values.

    Args:
        parts: ``{"k1": L_K1, "k2": L_K2, "m1": L_M1, "m2": L_M2}``, 0-d
            tensors; missing terms are skipped (e.g. the matching losses
            during the warm-up).
        weights: Weight of each term name; defaults to [DEFAULT_WEIGHTS][dife.train.losses.DEFAULT_WEIGHTS]
            (the paper's ``1e-2, 1, 1e-2, 1e-2``). Every name in ``parts``
            needs a weight.

    Returns:
        ``(total, log)``: the 0-d weighted sum (differentiable), and a dict
        with the unweighted value of every term under its name plus
        ``"total"`` (Python floats; a NaN term shows up as NaN).

    Raises:
        InputError: empty ``parts``, or a term without a weight / a
            non-finite weight.
        ShapeError: a term that is not a 0-d (or one-element) tensor.
    """
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    if not parts:
        raise InputError("total_loss needs at least one loss term, got none")
    total: torch.Tensor | None = None
    log: dict[str, float] = {}
    for name, value in parts.items():
        if name not in w:
            raise InputError(f"no weight for loss term {name!r}; weights are given for {sorted(w)}")
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ShapeError(f"loss term {name!r} must be a 0-d tensor, got {_shape(value)}")
        try:
            weight = float(w[name])
        except (TypeError, ValueError):
            raise InputError(f"weight of {name!r} must be a number, got {w[name]!r}") from None
        if not math.isfinite(weight):
            raise InputError(f"weight of {name!r} must be finite, got {weight}")
        term = weight * value.reshape(())
        total = term if total is None else total + term
        log[name] = float(value.detach())
    assert total is not None
    log["total"] = float(total.detach())
    return total, log
