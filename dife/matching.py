"""Matching kernels: pure torch functions on L2-normalised descriptor maps.

Everything here works in **grid coordinates** of [dife.coords][dife.coords]: points
are ``(x, y)`` pairs, ``x`` the column and ``y`` the row, and an integer value
is the centre of that grid pixel. Feature maps are (C, H, W) and descriptors
(N, C); both are assumed to have unit L2 norm along C, so a dot product is the
cosine similarity.

The nearest-neighbour search is chunked over the queries so that no more than
about [CHUNK_BYTES][dife.matching.CHUNK_BYTES] of similarities exist at once, whatever the number of
queries (e.g. all 9,216 pixels of a 96 x 96 map against another 96 x 96 map);
on the CPU the automatic chunk is smaller (`CPU_CHUNK_BYTES`), so that a
chunk of similarities stays in the cache between the matrix product that
writes it and the arg-max that reads it.
Results do not depend on the chunk size (up to the last-bit rounding of the
matrix products, which BLAS may order differently for other chunk shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dife.checks import check_number, check_positive_int, is_int
from dife.config import check_spatial_prior
from dife.errors import InputError, ShapeError

__all__ = [
    "CHUNK_BYTES",
    "CPU_CHUNK_BYTES",
    "auto_chunk_size",
    "cosine_similarity_maps",
    "sample_descriptors",
    "nearest_neighbors",
    "refine_soft_argmax",
    "match",
    "mutual_nearest",
]

#: Memory budget of one chunk of similarity maps, in bytes (64 MiB).
CHUNK_BYTES: int = 64 * 2**20
#: Budget of one automatic chunk when the target map is on the CPU (cache-sized, 4 MiB).
CPU_CHUNK_BYTES: int = 4 * 2**20


# ------------------------------------------------------------------ validation
def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_query_target(query: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(query, torch.Tensor) or query.ndim != 2:
        raise ShapeError(f"query must be an (N, C) tensor of descriptors, got {_shape(query)}")
    if not isinstance(target, torch.Tensor) or target.ndim != 3:
        raise ShapeError(f"target must be a (C, H, W) feature map, got {_shape(target)}")
    if query.shape[1] != target.shape[0]:
        raise ShapeError(
            f"query descriptors have {query.shape[1]} channels but the target map has {target.shape[0]}: "
            f"query {tuple(query.shape)}, target {tuple(target.shape)}"
        )
    if target.shape[1] == 0 or target.shape[2] == 0:
        raise ShapeError(f"target map is empty: {tuple(target.shape)}")


def _check_points(points: torch.Tensor, what: str, n: int | None = None) -> None:
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != 2:
        raise ShapeError(f"{what} must be an (N, 2) tensor of (x, y) grid coordinates, got {_shape(points)}")
    if n is not None and points.shape[0] != n:
        raise ShapeError(f"{what} has {points.shape[0]} points, expected {n}: shape {tuple(points.shape)}")


def auto_chunk_size(num_targets: int, element_size: int = 4, budget_bytes: int = CHUNK_BYTES) -> int:
    """Queries per chunk so that a chunk of similarities fits in ``budget_bytes``.

    Args:
        num_targets: Pixels of the target map (``H * W``).
        element_size: Bytes per similarity value (4 for float32).
        budget_bytes: Memory budget of one (chunk, H * W) similarity block.

    Returns:
        A chunk size >= 1.
    """
    return max(1, int(budget_bytes) // (int(element_size) * max(1, int(num_targets))))


def _chunk_size(chunk_size: int | None, target: torch.Tensor) -> int:
    if chunk_size is None:
        budget = CPU_CHUNK_BYTES if target.device.type == "cpu" else CHUNK_BYTES
        return auto_chunk_size(target.shape[1] * target.shape[2], target.element_size(), budget)
    return check_positive_int(chunk_size, "chunk_size", allow_none=True)


# --------------------------------------------------------------------- kernels
def _row_max(scores: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores.max(dim=1)`` of an (M, h * w) block: (M,) values and the first index of each in row-major order.

    In two levels, because ``amax`` is vectorised and ``max`` with indices is
    not: the largest value of each map row, the first map row that holds the
    maximum, then the first column of that row that does (ties resolve as in
    ``torch.argmax``: the first occurrence).
    """
    m = scores.shape[0]
    s3 = scores.view(m, h, w)
    val, row = s3.amax(dim=2).max(dim=1)
    line = s3[torch.arange(m, device=scores.device), row]  # (M, w)
    col = (line == val[:, None]).to(torch.uint8).argmax(dim=1)
    return val, row * w + col


def cosine_similarity_maps(query: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Similarity of each query descriptor to every pixel of a target map.

    This materialises the full (N, H, W) result: for many queries use
    [nearest_neighbors][dife.matching.nearest_neighbors] / [match][dife.matching.match], which work in chunks.

    Args:
        query: (N, C) descriptors, unit L2 norm along C.
        target: (C, H, W) feature map, unit L2 norm along C.

    Returns:
        (N, H, W) cosine similarities in [-1, 1] (dtype of the inputs).

    Raises:
        ShapeError: for inputs of the wrong rank or mismatched channels.
    """
    _check_query_target(query, target)
    c, h, w = target.shape
    return (query @ target.reshape(c, h * w)).reshape(query.shape[0], h, w)


def sample_descriptors(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sampled, re-normalised descriptors at grid points.

    Points outside the map take the value of the nearest border position
    (``padding_mode="border"``). At a pixel centre the result is that pixel's
    descriptor.

    Args:
        features: (C, H, W) feature map.
        points: (N, 2) ``(x, y)`` grid coordinates (float).

    Returns:
        (N, C) descriptors with unit L2 norm, dtype of ``features``.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 3:
        raise ShapeError(f"features must be a (C, H, W) feature map, got {_shape(features)}")
    _check_points(points, "points")
    c, h, w = features.shape
    if points.shape[0] == 0:
        return features.new_zeros((0, c))
    p = points.to(device=features.device, dtype=features.dtype)
    size = p.new_tensor([w, h])
    g = (p + 0.5) * (2.0 / size) - 1.0  # align_corners=False convention (dife.coords)
    out = F.grid_sample(
        features[None], g.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False
    )
    d = out[0, :, 0].t()
    # F.normalize(d, dim=-1), without torch.linalg.vector_norm (slow on this strided view on the CPU)
    return d / d.square().sum(dim=-1, keepdim=True).sqrt_().clamp_min_(1e-12)


def nearest_neighbors(
    query: torch.Tensor, target: torch.Tensor, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest target pixel (highest cosine similarity) of each query.

    Args:
        query: (N, C) descriptors, unit L2 norm.
        target: (C, H, W) feature map, unit L2 norm.
        chunk_size: Queries per chunk; ``None`` picks the largest chunk whose
            (chunk, H * W) similarities fit in `CHUNK_BYTES`
            (`CPU_CHUNK_BYTES` for a target on the CPU).

    Returns:
        ``(peaks, similarity)``: ``peaks`` (N, 2) long ``(x, y)`` integer grid
        coordinates of the best pixel (the first one in row-major order on
        ties); ``similarity`` (N,) its cosine similarity.
    """
    _check_query_target(query, target)
    _, h, w = target.shape
    step = _chunk_size(chunk_size, target)
    flat_t = target.reshape(target.shape[0], h * w)
    n = query.shape[0]
    peaks = torch.empty((n, 2), dtype=torch.long, device=target.device)
    sims = torch.empty((n,), dtype=torch.result_type(query, target), device=target.device)
    for s in range(0, n, step):
        sim, idx = _row_max(query[s : s + step].to(target.device) @ flat_t, h, w)
        peaks[s : s + step, 0] = idx % w
        peaks[s : s + step, 1] = idx // w
        sims[s : s + step] = sim
    return peaks, sims


def refine_soft_argmax(
    sim_maps: torch.Tensor, peaks: torch.Tensor, *, window: int = 5, temperature: float = 0.02
) -> torch.Tensor:
    """Sub-pixel refinement of integer peaks by a windowed soft-argmax.

    Around each peak, the similarities in a ``window x window`` neighbourhood
    are turned into weights ``softmax(similarity / temperature)`` and the
    expected ``(x, y)`` location is returned. Where the window sticks out of
    the map it is cut at the border (the missing pixels get no weight), which
    pulls estimates next to the border slightly inwards (by about 0.15 px for
    a match on a border pixel centre, with a sharp peak). The result always
    lies inside the window and inside the map; a single spike on a flat
    background returns the spike's location.

    Args:
        sim_maps: (N, H, W) similarity maps (e.g. cosine similarities).
        peaks: (N, 2) integer ``(x, y)`` grid coordinates of the peaks, inside
            the maps (usually from [nearest_neighbors][dife.matching.nearest_neighbors]).
        window: Odd window side, >= 1 (1 returns the peaks unchanged).
        temperature: Softmax temperature > 0, in similarity units; smaller is
            closer to the hard argmax.

    Returns:
        (N, 2) float ``(x, y)`` grid coordinates, dtype of ``sim_maps``.

    Raises:
        ShapeError: maps not (N, H, W) or peaks not (N, 2).
        InputError: even / non-positive window, non-positive temperature, or
            peaks outside the maps.
    """
    if not isinstance(sim_maps, torch.Tensor) or sim_maps.ndim != 3:
        raise ShapeError(f"sim_maps must be an (N, H, W) tensor, got {_shape(sim_maps)}")
    _check_points(peaks, "peaks", sim_maps.shape[0])
    _check_window(window, temperature)
    n, h, w = sim_maps.shape
    if not sim_maps.is_floating_point():
        sim_maps = sim_maps.float()
    pk = peaks.to(sim_maps.device).round().long()
    if n == 0:
        return sim_maps.new_zeros((0, 2))
    px, py = pk[:, 0], pk[:, 1]
    if bool(((px < 0) | (px >= w) | (py < 0) | (py >= h)).any()):
        raise InputError(f"peaks must lie inside the {w}x{h} maps (0 <= x < {w}, 0 <= y < {h})")
    return _refine(sim_maps, pk, window, temperature)


def _refine(sim_maps: torch.Tensor, pk: torch.Tensor, window: int, temperature: float) -> torch.Tensor:
    """`refine_soft_argmax` without the checks: (N, H, W) float maps, (N, 2) long peaks inside them."""
    n, h, w = sim_maps.shape
    px, py = pk[:, 0], pk[:, 1]
    r = window // 2
    off = torch.arange(-r, r + 1, device=sim_maps.device)
    dy, dx = (t.reshape(-1) for t in torch.meshgrid(off, off, indexing="ij"))  # (K,)
    xs = px[:, None] + dx[None]  # (N, K)
    ys = py[:, None] + dy[None]
    valid = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs, ys = xs.clamp(0, w - 1), ys.clamp(0, h - 1)
    vals = sim_maps.reshape(n, h * w).gather(1, ys * w + xs)
    weights = torch.softmax((vals / temperature).masked_fill(~valid, float("-inf")), dim=1)
    x = (weights * xs.to(weights.dtype)).sum(dim=1)
    y = (weights * ys.to(weights.dtype)).sum(dim=1)
    return torch.stack([x, y], dim=1)


def _check_window(window: int, temperature: float) -> None:
    if not is_int(window) or window < 1 or window % 2 == 0:
        raise InputError(f"window must be an odd positive integer, got {window!r}")
    check_number(temperature, "temperature", positive=True, what="a positive number")


def match(
    query: torch.Tensor,
    target: torch.Tensor,
    *,
    refine: bool = True,
    window: int = 5,
    temperature: float = 0.02,
    chunk_size: int | None = None,
    prior_points: torch.Tensor | None = None,
    prior_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest neighbours with optional soft-argmax refinement, in chunks.

    Equivalent to [nearest_neighbors][dife.matching.nearest_neighbors] followed by
    [refine_soft_argmax][dife.matching.refine_soft_argmax] on [cosine_similarity_maps][dife.matching.cosine_similarity_maps], without ever
    holding more than one chunk of similarity maps.

    Args:
        query: (N, C) descriptors, unit L2 norm.
        target: (C, H, W) feature map, unit L2 norm.
        refine: Refine the integer peaks to sub-pixel positions.
        window: Odd soft-argmax window side (see [refine_soft_argmax][dife.matching.refine_soft_argmax]).
        temperature: Soft-argmax temperature > 0.
        chunk_size: Queries per chunk; ``None``: automatic (`CHUNK_BYTES`,
            `CPU_CHUNK_BYTES` on the CPU).
        prior_points: Optional (N, 2) ``(x, y)`` expected location of each
            match, in grid coordinates of a map of the same size as
            ``target`` (usually the query's own position in its map).
        prior_weight: Weight ``λ >= 0`` of the spatial prior: the score of
            target pixel ``u`` is ``cos(q, t_u) - λ * |u - prior|² / S²``
            (``S`` the larger map side), i.e. a Gaussian log-prior on the
            relative position; 0 (default) is plain nearest neighbour.

    Returns:
        ``(points, similarity, peaks)``: ``points`` (N, 2) float ``(x, y)``
        grid coordinates of the matches (the peaks themselves when
        ``refine=False``); ``similarity`` (N,) the cosine similarity at the
        integer peak, in [-1, 1] (without the prior); ``peaks`` (N, 2) long
        integer peaks.

    Raises:
        ShapeError: bad shapes.
        InputError: bad window / temperature / prior weight, or a positive
            prior weight without ``prior_points``.
    """
    _check_query_target(query, target)
    _check_window(window, temperature)
    prior_weight = check_spatial_prior(prior_weight, "prior_weight")
    use_prior = prior_weight > 0
    if use_prior:
        if prior_points is None:
            raise InputError("prior_weight > 0 needs prior_points")
        _check_points(prior_points, "prior_points", query.shape[0])
    c, h, w = target.shape
    step = _chunk_size(chunk_size, target)
    flat_t = target.reshape(c, h * w)
    n = query.shape[0]
    dtype = torch.result_type(query, target)
    if not dtype.is_floating_point:
        dtype = torch.float32
    points = torch.empty((n, 2), dtype=dtype, device=target.device)
    peaks = torch.empty((n, 2), dtype=torch.long, device=target.device)
    sims = torch.empty((n,), dtype=dtype, device=target.device)
    flat_t = flat_t.to(dtype)
    if use_prior:
        assert prior_points is not None
        scale = prior_weight / float(max(h, w)) ** 2
        gx = torch.arange(w, device=target.device, dtype=dtype)
        gy = torch.arange(h, device=target.device, dtype=dtype)
        pp = prior_points.to(target.device, dtype)
    for s in range(0, n, step):
        q = query[s : s + step].to(target.device, dtype)
        m = q.shape[0]
        if use_prior:
            # scores = cos - prior_weight * |u - prior|^2 / side^2, the squared distance separable in x and y:
            # one broadcast sum, then the matrix product accumulated onto it
            dx2 = (gx[None] - pp[s : s + step, :1]).square_()  # (m, w)
            dy2 = (gy[None] - pp[s : s + step, 1:]).square_()  # (m, h)
            scores = (dy2[:, :, None] + dx2[:, None, :]).view(m, h * w)
            scores.addmm_(q, flat_t, beta=-scale)
            idx = _row_max(scores, h, w)[1]
            sim = (q * flat_t[:, idx].t()).sum(dim=1)  # the cosine at the peak, reported without the prior
        else:
            scores = q @ flat_t  # what the peak and the refinement follow: the cosine
            sim, idx = _row_max(scores, h, w)
        pk = torch.stack([idx % w, idx // w], dim=1)
        peaks[s : s + step] = pk
        sims[s : s + step] = sim
        if refine and window > 1:
            points[s : s + step] = _refine(scores.view(m, h, w), pk, window, temperature)
        else:
            points[s : s + step] = pk.to(dtype)
        del scores
    return points, sims, peaks


def mutual_nearest(
    src_feats: torch.Tensor,
    tgt_feats: torch.Tensor,
    src_pts_grid: torch.Tensor,
    tgt_pts_grid: torch.Tensor,
    *,
    radius_px: float = 1.5,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cycle-consistency check of matches.

    The descriptor at each matched target point (bilinear, re-normalised) is
    matched back into the source map; a match is *mutual* when that backward
    nearest neighbour lies within ``radius_px`` grid pixels (Euclidean) of the
    source point.

    Args:
        src_feats: (C, H, W) source feature map, unit L2 norm.
        tgt_feats: (C, H', W') target feature map, unit L2 norm.
        src_pts_grid: (N, 2) ``(x, y)`` source grid coordinates.
        tgt_pts_grid: (N, 2) ``(x, y)`` target grid coordinates of their matches.
        radius_px: Tolerance in source grid pixels (>= 0).
        chunk_size: Queries per chunk of the backward search (``None``: automatic).

    Returns:
        (N,) bool tensor.
    """
    if not isinstance(src_feats, torch.Tensor) or src_feats.ndim != 3:
        raise ShapeError(f"src_feats must be a (C, H, W) feature map, got {_shape(src_feats)}")
    _check_points(src_pts_grid, "src_pts_grid")
    _check_points(tgt_pts_grid, "tgt_pts_grid", src_pts_grid.shape[0])
    check_number(radius_px, "radius_px", minimum=0)
    pts = tgt_pts_grid
    inverse = None
    integer = not pts.is_floating_point() or bool((pts == pts.round()).all())
    if pts.shape[0] > 1 and integer:
        # integer points (e.g. the peaks of a dense match) repeat: search each distinct one once
        ip = pts.long()
        lo = ip.amin(dim=0)
        span = int(ip[:, 0].max() - lo[0]) + 1
        uniq, inverse = torch.unique((ip[:, 1] - lo[1]) * span + (ip[:, 0] - lo[0]), return_inverse=True)
        if uniq.shape[0] < pts.shape[0]:
            pts = torch.stack([uniq % span + lo[0], uniq // span + lo[1]], dim=1)
            pts = pts.to(tgt_pts_grid.dtype if tgt_pts_grid.is_floating_point() else torch.float32)
        else:
            inverse = None
    desc = sample_descriptors(tgt_feats, pts)
    back, _ = nearest_neighbors(desc.to(src_feats.device), src_feats, chunk_size=chunk_size)
    if inverse is not None:
        back = back[inverse.to(back.device)]
    d = back.to(torch.float64) - src_pts_grid.to(device=back.device, dtype=torch.float64)
    return (d * d).sum(dim=1) <= float(radius_px) ** 2
