"""Pictures of embeddings, keypoints, matches and part maps (numpy + PIL only).

[embedding_to_rgb][dife.viz.embedding_to_rgb] colours descriptors with **one fixed projection** (a
seeded orthonormal 3 x C matrix and a fixed squashing to [0, 255]), never a
per-image PCA: the same descriptor gets the same colour in every image, so the
colours of a human's and a cat's embedding can be compared directly — matching
parts have matching colours.

Drawing helpers use the pixel-centre convention of [dife.coords][dife.coords]: a point
``(x, y)`` with integer coordinates is drawn centred on that pixel.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dife.checks import check_int, check_number, is_int
from dife.errors import InputError, KeypointError, ShapeError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "embedding_to_rgb",
    "projection_matrix",
    "draw_keypoints",
    "draw_matches",
    "draw_parts",
    "draw_boxes",
    "PALETTE",
    "score_color",
]

#: Gain of the fixed colour mapping ``rgb = 0.5 + 0.5 * tanh(GAIN * P @ e)``.
#: Unit 16-d descriptors project to about +-0.25 per channel, which this maps
#: to roughly 0.2 .. 0.8.
GAIN = 2.5


def _make_palette(n: int = 20) -> tuple[tuple[int, int, int], ...]:
    # Golden-angle hues with alternating lightness: neighbours stay distinct.
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        light = (0.55, 0.42, 0.68)[i % 3]
        r, g, b = colorsys.hls_to_rgb(h, light, 0.85)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(out)


#: Fixed colour palette (RGB) for parts, keypoints and matches; index ``i`` uses
#: ``PALETTE[i % len(PALETTE)]``.
PALETTE: tuple[tuple[int, int, int], ...] = _make_palette()

_PROJECTIONS: dict[int, np.ndarray] = {}


def projection_matrix(dim: int = 16) -> np.ndarray:
    """The fixed (3, dim) projection used by [embedding_to_rgb][dife.viz.embedding_to_rgb].

    Rows are orthonormal, drawn once from ``numpy.random.default_rng(0)``
    (Gaussian matrix, QR decomposition, signs fixed by the diagonal of R), so
    the result is the same on every machine and in every process.
    """
    dim = check_int(dim, "the descriptor dimension", minimum=3)
    P = _PROJECTIONS.get(dim)
    if P is None:
        g = np.random.default_rng(0).standard_normal((dim, 3))
        q, r = np.linalg.qr(g)
        q = q * np.sign(np.diag(r))[None, :]
        P = np.ascontiguousarray(q.T)
        P.setflags(write=False)
        _PROJECTIONS[dim] = P
    return P


def _features_numpy(x: Any, index: int) -> tuple[np.ndarray, Any]:
    """(C, S, S) float64 descriptors of image ``index`` and its CropTransform (or None)."""
    transform = None
    if hasattr(x, "features") and hasattr(x, "transforms"):  # an Embedding
        n = len(x.transforms)
        if not is_int(index) or not -n <= index < n:
            raise InputError(f"index {index!r} out of range for an Embedding of {n} images")
        transform = x.transforms[int(index)]
        x = x.features[int(index)]
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().to("cpu").float().numpy()
    f = np.asarray(x, dtype=np.float64)
    if f.ndim == 4:
        if not -f.shape[0] <= index < f.shape[0]:
            raise InputError(f"index {index!r} out of range for a batch of {f.shape[0]} feature maps")
        f = f[int(index)]
    if f.ndim != 3:
        raise ShapeError(f"features must be (B, C, S, S) or (C, S, S), got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise InputError("features contain NaN or infinite values")
    return f, transform


def _bilinear_axis(n_out: int, coords: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights for 1-d linear interpolation at pixel-centre ``coords`` (clamped)."""
    c = np.clip(coords, 0.0, n_in - 1.0)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = c - i0
    return i0, i1, w


def embedding_to_rgb(embedding_or_features: Any, *, index: int = 0, at_image_resolution: bool = False) -> np.ndarray:
    """Colour dense descriptors with the fixed projection.

    Args:
        embedding_or_features: A [dife.embedding.Embedding][dife.embedding.Embedding], or features
            as a torch tensor / numpy array, (B, C, S, S) or (C, S, S).
            Descriptors are L2-normalised here, so raw network output works too.
        index: Which image of a batch.
        at_image_resolution: Return the colours in the original image frame
            (H, W, 3), bilinearly interpolated through the embedding's
            [CropTransform][dife.coords.CropTransform]; pixels outside the square
            crop are black. Needs an ``Embedding``.

    Returns:
        (S, S, 3) uint8 array, or (H, W, 3) with ``at_image_resolution``.

    Raises:
        ShapeError: features of another rank.
        InputError: bad ``index``; ``at_image_resolution`` without an Embedding.
    """
    f, t = _features_numpy(embedding_or_features, index)
    C, S1, S2 = f.shape
    P = projection_matrix(C)
    norm = np.linalg.norm(f, axis=0, keepdims=True)
    f = f / np.maximum(norm, 1e-12)
    proj = np.einsum("kc,chw->hwk", P, f)
    rgb = 0.5 + 0.5 * np.tanh(GAIN * proj)  # (S, S, 3) in (0, 1)
    if not at_image_resolution:
        return np.round(rgb * 255.0).astype(np.uint8)
    if t is None:
        raise InputError("at_image_resolution=True needs an Embedding (features alone carry no crop transform)")
    W, H = int(t.width), int(t.height)
    xs = np.arange(W, dtype=np.float64)
    ys = np.arange(H, dtype=np.float64)
    gx = t.to_grid(np.stack([xs, np.zeros_like(xs)], -1))[:, 0]
    gy = t.to_grid(np.stack([np.zeros_like(ys), ys], -1))[:, 1]
    x0, x1, wx = _bilinear_axis(W, gx, S2)
    y0, y1, wy = _bilinear_axis(H, gy, S1)
    out = np.empty((H, W, 3), dtype=np.uint8)
    inside_x = (gx >= -0.5) & (gx <= S2 - 0.5)
    step = max(1, 4_000_000 // max(W, 1))  # rows per chunk: bounded memory
    for r0 in range(0, H, step):
        sl = slice(r0, min(H, r0 + step))
        top = rgb[y0[sl]]  # (h, S, 3)
        bot = rgb[y1[sl]]
        rows = top + (bot - top) * wy[sl, None, None]
        left, right = rows[:, x0], rows[:, x1]
        v = left + (right - left) * wx[None, :, None]
        inside = ((gy[sl] >= -0.5) & (gy[sl] <= S1 - 0.5))[:, None] & inside_x[None, :]
        v = np.where(inside[..., None], v, 0.0)
        out[sl] = np.round(v * 255.0).astype(np.uint8)
    return out


# ------------------------------------------------------------------- drawing
def _to_pil(image: Any) -> Image.Image:
    """Any accepted image -> a new RGB PIL image (the input is never modified)."""
    from PIL import Image

    if isinstance(image, Image.Image) and image.mode == "RGB":
        return image.copy()
    from dife.images import load_image, pil_from_tensor

    return pil_from_tensor(load_image(image))


def _points_names(
    points: Any, names: Sequence[str] | None, what: str = "points"
) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(points, Mapping):
        keys = [str(k) for k in points]
        try:
            pts = np.array([np.asarray(v, dtype=np.float64) for v in points.values()], dtype=np.float64)
        except (TypeError, ValueError):
            raise KeypointError(f"{what} values must be (x, y) pairs") from None
        pts = pts.reshape(-1, 2) if pts.size == 0 else pts
        if names is None:
            names = keys
    else:
        if hasattr(points, "detach"):
            points = points.detach().cpu().numpy()
        try:
            pts = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise KeypointError(f"{what} must be an (N, 2) array or a dict name -> (x, y)") from None
        if pts.size == 0:
            pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ShapeError(f"{what} must have shape (N, 2) as (x, y) pairs, got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise KeypointError(f"{what} contain NaN or infinite values")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(pts):
            raise InputError(f"got {len(names)} names for {len(pts)} {what}")
    return pts, names


def _colors(colors: Any, n: int) -> list[tuple[int, int, int]]:
    if colors is None:
        return [PALETTE[i % len(PALETTE)] for i in range(n)]
    arr = np.asarray(colors)
    if arr.ndim == 1 and arr.shape[0] in (3, 4) and not isinstance(colors, str):
        return [tuple(int(v) for v in arr[:3])] * n  # type: ignore[misc]
    if isinstance(colors, str):
        from PIL import ImageColor

        try:
            c = ImageColor.getrgb(colors)
        except ValueError:
            raise InputError(f"unknown colour {colors!r}") from None
        return [tuple(c[:3])] * n  # type: ignore[misc]
    cols = list(colors)
    if len(cols) != n:
        raise InputError(f"got {len(cols)} colours for {n} points (give one colour, or one per point)")
    return [_colors(c, 1)[0] for c in cols]


def _default_radius(width: int, height: int) -> float:
    return max(2.0, round(min(width, height) / 90.0))


def _draw_points(
    draw: Any,
    pts: np.ndarray,
    cols: list[tuple[int, int, int]],
    radius: float,
    offset: tuple[float, float] = (0.0, 0.0),
) -> None:
    for (x, y), c in zip(pts, cols, strict=True):
        x, y = x + offset[0], y + offset[1]
        # ImageDraw's ellipse box uses pixel-index (centre) coordinates:
        # the box [x - r, y - r, x + r, y + r] is centred on pixel (x, y).
        outline = (0, 0, 0) if sum(c) > 200 else (255, 255, 255)
        draw.ellipse(
            [x - radius, y - radius, x + radius, y + radius], fill=c, outline=outline, width=max(1, round(radius / 4))
        )


def draw_keypoints(
    image: Any,
    points: Any,
    *,
    names: Sequence[str] | None = None,
    colors: Any = None,
    radius: float | None = None,
) -> Image.Image:
    """Draw keypoints (and optional labels) on a copy of an image.

    Args:
        image: Path, PIL image, numpy array or tensor (not modified).
        points: (N, 2) ``(x, y)`` pixel coordinates (integer = pixel centre),
            or a dict name -> ``(x, y)`` (its keys become the labels).
            Points outside the image are clipped by the drawing.
        names: Optional labels, one per point, drawn beside the markers.
        colors: One colour (RGB tuple or name) or one per point; default
            [PALETTE][dife.viz.PALETTE].
        radius: Marker radius in pixels; default about 1 % of the image side.

    Returns:
        A new RGB ``PIL.Image.Image`` of the image's size.

    Raises:
        ShapeError: points not (N, 2).
        KeypointError: non-finite points.
        InputError: names / colours of the wrong length.
    """
    from PIL import ImageDraw

    out = _to_pil(image)
    pts, names = _points_names(points, names)
    r = _default_radius(*out.size) if radius is None else float(radius)
    if not r > 0:
        raise InputError(f"radius must be > 0, got {radius!r}")
    cols = _colors(colors, len(pts))
    draw = ImageDraw.Draw(out)
    _draw_points(draw, pts, cols, r)
    if names:
        for (x, y), n, c in zip(pts, names, cols, strict=True):
            tx, ty = x + r + 2, y - r - 2
            for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                draw.text((tx + dx, ty + dy), n, fill=(0, 0, 0))
            draw.text((tx, ty), n, fill=c)
    return out


def score_color(score: float) -> tuple[int, int, int]:
    """Colour of a score in [0, 1] (clipped): red (0) -> yellow (0.5) -> green (1)."""
    s = float(np.clip(score, 0.0, 1.0)) if np.isfinite(score) else 0.0
    if s < 0.5:
        return (230, round(40 + 2 * s * 180), 40)
    return (round(230 - 2 * (s - 0.5) * 190), 220, 40 + round(2 * (s - 0.5) * 40))


def draw_matches(
    src: Any,
    tgt: Any,
    src_points: Any,
    tgt_points: Any,
    *,
    scores: Any = None,
    radius: float | None = None,
    line_width: int | None = None,
) -> Image.Image:
    """Draw two images side by side with lines between matching points.

    Args:
        src: Left image (any accepted type).
        tgt: Right image.
        src_points: (N, 2) points in ``src`` pixels (or a dict name -> (x, y)).
        tgt_points: (N, 2) matching points in ``tgt`` pixels (or a dict with
            the same keys).
        scores: Optional (N,) match confidences in [0, 1] (clipped), or an
            object with a ``confidence`` attribute (e.g.
            [dife.transfer.KeypointScores][dife.transfer.KeypointScores]). Lines are then coloured
            red (0) -> yellow -> green (1); without scores each match gets a
            [PALETTE][dife.viz.PALETTE] colour.
        radius: Marker radius; default about 1 % of the smaller image side.
        line_width: Line width; default from the image size.

    Returns:
        RGB ``PIL.Image.Image`` of size ``(W_src + W_tgt, max(H_src, H_tgt))``,
        images top-aligned on black.

    Raises:
        ShapeError: point arrays not (N, 2) or of different lengths.
        KeypointError: non-finite points.
        InputError: scores of the wrong length.
    """
    from PIL import Image, ImageDraw

    a, b = _to_pil(src), _to_pil(tgt)
    if isinstance(src_points, Mapping) and isinstance(tgt_points, Mapping):
        if set(map(str, src_points)) != set(map(str, tgt_points)):
            raise KeypointError(
                f"src_points and tgt_points name different keypoints: {sorted(src_points)} vs {sorted(tgt_points)}"
            )
        tgt_points = {k: tgt_points[k] for k in src_points}
    ps, _ = _points_names(src_points, None, "src_points")
    pt, _ = _points_names(tgt_points, None, "tgt_points")
    if len(ps) != len(pt):
        raise ShapeError(f"src_points has {len(ps)} points but tgt_points has {len(pt)}")
    if scores is not None:
        if hasattr(scores, "confidence"):
            scores = scores.confidence
        if hasattr(scores, "detach"):
            scores = scores.detach().cpu().numpy()
        sc = np.asarray(scores, dtype=np.float64).reshape(-1)
        if sc.shape[0] != len(ps):
            raise InputError(f"got {sc.shape[0]} scores for {len(ps)} matches")
        cols = [score_color(s) for s in sc]
    else:
        cols = _colors(None, len(ps))
    W = a.width + b.width
    H = max(a.height, b.height)
    out = Image.new("RGB", (W, H), (0, 0, 0))
    out.paste(a, (0, 0))
    out.paste(b, (a.width, 0))
    r = _default_radius(min(a.width, b.width), min(a.height, b.height)) if radius is None else float(radius)
    lw = max(1, round(r / 2)) if line_width is None else int(line_width)
    draw = ImageDraw.Draw(out)
    for (x0, y0), (x1, y1), c in zip(ps, pt, cols, strict=True):
        draw.line([(x0, y0), (x1 + a.width, y1)], fill=c, width=lw)
    _draw_points(draw, ps, cols, r)
    _draw_points(draw, pt, cols, r, offset=(float(a.width), 0.0))
    return out


def draw_parts(image: Any, labels: Any, *, alpha: float = 0.5) -> Image.Image:
    """Blend a part label map over an image with the fixed [PALETTE][dife.viz.PALETTE].

    Args:
        image: Any accepted image (not modified), H x W.
        labels: (H, W) integer label map (e.g. from [dife.parse_face][dife.parsing.parse_face]);
            part ``k`` gets ``PALETTE[k % len(PALETTE)]``, negative labels
            (-1: outside the crop) stay transparent.
        alpha: Opacity of the colours, in [0, 1].

    Returns:
        A new RGB ``PIL.Image.Image``.

    Raises:
        ShapeError: labels not (H, W) matching the image.
        InputError: non-integer labels or ``alpha`` outside [0, 1].
    """
    from PIL import Image

    check_number(alpha, "alpha", minimum=0.0, maximum=1.0)
    base = _to_pil(image)
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    lab = np.asarray(labels)
    if lab.shape != (base.height, base.width):
        raise ShapeError(f"labels must be (H, W) = {(base.height, base.width)} like the image, got {lab.shape}")
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise InputError(f"labels must be integers, got dtype {lab.dtype}")
    pal = np.array(PALETTE, dtype=np.float32)
    img = np.asarray(base, dtype=np.float32)
    valid = lab >= 0
    colour = pal[np.where(valid, lab, 0) % len(PALETTE)]
    a = float(alpha) * valid[..., None].astype(np.float32)
    out = img * (1.0 - a) + colour * a
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


def draw_boxes(image: Any, faces: Sequence[Any], *, width: int | None = None) -> Image.Image:
    """Draw face detections (box, species and score, landmarks) on a copy of an image.

    Args:
        image: Path, PIL image, numpy array or tensor (not modified).
        faces: [Detection][dife.detection.Detection] objects (anything with
            ``box``, ``species``, ``score`` and ``keypoints``).
        width: Line width in pixels; default about 0.5 % of the image side.

    Returns:
        A new RGB `PIL.Image.Image` of the image's size.
    """
    from PIL import ImageDraw

    out = _to_pil(image)
    w = max(1, round(0.005 * max(out.size))) if width is None else int(width)
    if w < 1:
        raise InputError(f"width must be >= 1, got {width!r}")
    draw = ImageDraw.Draw(out)
    r = _default_radius(*out.size)
    for k, f in enumerate(faces):
        col = PALETTE[k % len(PALETTE)]
        x0, y0, x1, y1 = (float(v) for v in f.box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=col, width=w)
        draw.text((x0 + w + 2, max(y0, 0) + w + 1), f"{f.species} {f.score:.2f}", fill=col)
        pts = np.asarray(list(f.keypoints.values()), dtype=np.float64).reshape(-1, 2)
        if len(pts):
            _draw_points(draw, pts, [col] * len(pts), r)
    return out
