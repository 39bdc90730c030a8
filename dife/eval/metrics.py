"""Keypoint-transfer metrics, per keypoint and per group, with bootstrap intervals.

For a transferred point ``p`` and the target's ground truth ``g`` in a
``W x H`` target image:

* ``err70``: the paper's metric, the distance after scaling the image to
  70 x 70: ``sqrt((dx * 70 / W)^2 + (dy * 70 / H)^2)``.
* ``nerr``: ``|p - g| / IOD``, IOD the target's inter-ocular distance
  ([interocular][dife.eval.metrics.interocular]: between the eye centres, or the outer eye corners
  for 9-point faces); NaN when the target has neither.
* ``pck05`` / ``pck10``: 100 x [``|p - g| <= a * max(W, H)``] for
  ``a`` = 0.05 / 0.1 (percent of points within a fraction of the crop side).

``W x H`` is the target crop for the crop protocols; the ``wild`` protocol
passes the side of the target's labelled face box for both
([reference_size][dife.eval.crops.reference_size]), so every metric is then
relative to the face, not to the photo.

Aggregates ([summarize][dife.eval.metrics.summarize]) are means over every (pair, keypoint) value,
with a percentile bootstrap 95 % interval that resamples *pairs* (the
keypoints of one pair are not independent), from a seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dife.checks import check_int
from dife.errors import InputError, ShapeError

__all__ = [
    "SCALE",
    "PCK_THRESHOLDS",
    "METRICS",
    "interocular",
    "point_errors",
    "PairResult",
    "Stat",
    "GroupSummary",
    "bootstrap_ci",
    "summarize",
    "aggregate",
    "frame_summary",
    "FRAME_IOU",
]

FRAME_IOU: float = 0.5
"""IoU with the labelled face box from which a frame counts as the right face."""

#: Side of the image errors are scaled to (the paper's 70 x 70).
SCALE: float = 70.0

#: PCK thresholds, as fractions of the target crop side.
PCK_THRESHOLDS: tuple[float, ...] = (0.05, 0.1)

#: Metric keys, in report order.
METRICS: tuple[str, ...] = ("err70", "nerr", "pck05", "pck10")


def interocular(keypoints: Mapping[str, Sequence[float]]) -> float | None:
    """Inter-ocular distance of a face, in its pixels.

    The distance between ``eye_left_img`` and ``eye_right_img`` when both are
    present, else between ``eye_left_img_outer`` and ``eye_right_img_outer``;
    ``None`` when neither pair is present or the distance is 0.
    """
    for a, b in (("eye_left_img", "eye_right_img"), ("eye_left_img_outer", "eye_right_img_outer")):
        if a in keypoints and b in keypoints:
            d = math.dist(tuple(map(float, keypoints[a])), tuple(map(float, keypoints[b])))
            return d if d > 0 else None
    return None


def point_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    width: float,
    height: float,
    *,
    iod: float | None = None,
    scale: float = SCALE,
    thresholds: Sequence[float] = PCK_THRESHOLDS,
) -> dict[str, np.ndarray]:
    """Per-point errors of one pair.

    Args:
        pred: (N, 2) transferred points in target pixels.
        gt: (N, 2) ground-truth target points.
        width: Target image width (or the reference size: the face box side under ``wild``).
        height: Target image height (or the same side).
        iod: Target inter-ocular distance (None: ``nerr`` is NaN).
        scale: Side of the reference image (70).
        thresholds: PCK thresholds as fractions of ``max(width, height)``.

    Returns:
        ``{"px": (N,), "err70": (N,), "nerr": (N,), "pck05": (N,), "pck10": (N,)}``
        float64 arrays; PCK keys are ``"pck" + digits of the threshold``
        (0.05 -> ``pck05``, 0.1 -> ``pck10``) with values 0 or 100.

    Raises:
        ShapeError: shapes that are not both (N, 2).
        InputError: a non-positive image size.
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape != g.shape:
        raise ShapeError(f"pred and gt must both be (N, 2), got {p.shape} and {g.shape}")
    if width <= 0 or height <= 0:
        raise InputError(f"target size must be positive, got {width}x{height}")
    d = p - g
    px = np.hypot(d[:, 0], d[:, 1])
    out = {
        "px": px,
        "err70": np.hypot(d[:, 0] * scale / width, d[:, 1] * scale / height),
        "nerr": px / iod if iod else np.full(len(px), np.nan),
    }
    side = float(max(width, height))
    for t in thresholds:
        out[_pck_key(t)] = np.where(px <= t * side, 100.0, 0.0)
    return out


def _pck_key(t: float) -> str:
    return "pck" + f"{t:.2f}".split(".")[1].rstrip("0").ljust(2, "0")


@dataclass(eq=False)
class PairResult:
    """Everything measured on one pair.

    Attributes:
        group: Pair group.
        src_id: Source sample id.
        tgt_id: Target sample id.
        names: Keypoint names, in the order of the arrays.
        src_points: (N, 2) source points (as the method saw them).
        pred: (N, 2) transferred points.
        gt: (N, 2) target ground truth.
        errors: [point_errors][dife.eval.metrics.point_errors] of the pair.
        index: Index of the pair in the run's pair list.
        src_box: The region ``(x0, y0, x1, y1)`` the method framed the source
            with (a detected face, the true box, the centred square or the
            whole image, by its framing), or ``None`` when the method does not say.
        tgt_box: The same for the target.
        src_face: The detection that framed the source ([Detection.to_dict][dife.detection.Detection]),
            or ``None`` (no detection asked for, or none found).
        tgt_face: The same for the target.
        src_iou: IoU of ``src_box`` with the source's labelled face box (``None``
            when either is unknown).
        tgt_iou: The same for the target.
    """

    group: str
    src_id: str
    tgt_id: str
    names: tuple[str, ...]
    src_points: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    errors: dict[str, np.ndarray]
    index: int = 0
    src_box: tuple[float, float, float, float] | None = None
    tgt_box: tuple[float, float, float, float] | None = None
    src_face: dict[str, Any] | None = None
    tgt_face: dict[str, Any] | None = None
    src_iou: float | None = None
    tgt_iou: float | None = None

    @property
    def mean_err70(self) -> float:
        """Mean 70-px error of the pair's points."""
        return float(np.mean(self.errors["err70"]))


@dataclass
class Stat:
    """A mean with its bootstrap interval.

    Attributes:
        mean: Mean over every (pair, keypoint) value (NaN if none).
        lo: Lower end of the interval.
        hi: Upper end.
        n_pairs: Pairs with at least one value.
        n_points: Values averaged.
    """

    mean: float
    lo: float
    hi: float
    n_pairs: int
    n_points: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN -> None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def bootstrap_ci(
    values: Sequence[Sequence[float]] | np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Stat:
    """Mean of ragged per-pair values and its percentile bootstrap interval over pairs.

    Args:
        values: One sequence of values per pair (NaN values are ignored;
            pairs with no value left are dropped), or a (P, K) array with NaN
            for missing entries.
        n_boot: Bootstrap resamples (0: no interval, ``lo = hi = mean``).
        alpha: 1 - confidence level (0.05 for 95 %).
        seed: Seed of the resampling.

    Returns:
        [Stat][dife.eval.metrics.Stat] with the mean over every value, ``lo`` / ``hi`` the
        ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the means of the
        resamples (each resample draws as many pairs as there are, with
        replacement, and averages all their values).

    Raises:
        InputError: ``n_boot`` < 0 or ``alpha`` outside (0, 1).
    """
    check_int(n_boot, "n_boot", minimum=0)
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha!r}")
    rows = [np.asarray(v, dtype=np.float64).reshape(-1) for v in values]
    sums = np.array([np.nansum(r) for r in rows], dtype=np.float64)
    counts = np.array([np.count_nonzero(~np.isnan(r)) for r in rows], dtype=np.float64)
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    P = len(sums)
    if P == 0:
        return Stat(math.nan, math.nan, math.nan, 0, 0)
    mean = float(sums.sum() / counts.sum())
    if n_boot == 0 or P == 1:
        return Stat(mean, mean, mean, P, int(counts.sum()))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // P)  # bound the index matrix to ~16 MB
    for s in range(0, n_boot, step):
        e = min(n_boot, s + step)
        idx = rng.integers(0, P, size=(e - s, P))
        means[s:e] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Stat(mean, float(lo), float(hi), P, int(counts.sum()))


def summarize(
    results: Iterable[PairResult],
    metric: str,
    *,
    keypoint: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Stat:
    """[bootstrap_ci][dife.eval.metrics.bootstrap_ci] of one metric over pairs (optionally one keypoint only)."""
    rows = []
    for r in results:
        vals = r.errors[metric]
        if keypoint is not None:
            vals = vals[[i for i, n in enumerate(r.names) if n == keypoint]]
        rows.append(vals)
    return bootstrap_ci(rows, n_boot=n_boot, seed=seed)


@dataclass
class GroupSummary:
    """Metrics of one group (or of all pairs).

    Attributes:
        stats: ``{metric: Stat}`` over every keypoint.
        per_keypoint: ``{keypoint: {metric: Stat}}``.
    """

    stats: dict[str, Stat] = field(default_factory=dict)
    per_keypoint: dict[str, dict[str, Stat]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            **{m: s.to_dict() for m, s in self.stats.items()},
            "per_keypoint": {k: {m: s.to_dict() for m, s in v.items()} for k, v in self.per_keypoint.items()},
        }


def aggregate(
    results: Sequence[PairResult],
    *,
    metrics: Sequence[str] = METRICS,
    n_boot: int = 1000,
    seed: int = 0,
    all_label: str = "all",
) -> dict[str, GroupSummary]:
    """Per-group (and pooled) metrics with bootstrap intervals.

    Args:
        results: Pair results of one method under one protocol.
        metrics: Metric keys of [point_errors][dife.eval.metrics.point_errors].
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling (the same for every group).
        all_label: Key of the summary over every pair of every group.

    Returns:
        ``{group: GroupSummary}`` in first-seen group order, then ``all_label``.
    """
    groups: dict[str, list[PairResult]] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r)
    if results:
        groups[all_label] = list(results)
    out: dict[str, GroupSummary] = {}
    for g, rs in groups.items():
        gs = GroupSummary()
        for m in metrics:
            gs.stats[m] = summarize(rs, m, n_boot=n_boot, seed=seed)
        names = sorted({n for r in rs for n in r.names})
        for k in names:
            gs.per_keypoint[k] = {m: summarize(rs, m, keypoint=k, n_boot=n_boot, seed=seed) for m in metrics}
        out[g] = gs
    return out


def frame_summary(
    results: Sequence[PairResult], *, iou: float = FRAME_IOU, detects: bool | None = None
) -> dict[str, Any] | None:
    """How a method framed the faces of its pairs, against the labelled face boxes.

    Needs pairs whose ``src_iou`` and ``tgt_iou`` are known (a method that
    reports its frames, on data with face boxes); ``None`` otherwise.

    Args:
        results: Pair results of one method under one protocol.
        iou: IoU with the labelled box that counts as the right face.
        detects: Whether the method frames with detections (its framing is
            ``detect``); ``None``: whether any pair holds a detection.

    Returns:
        ``{"pairs", "src_right", "tgt_right", "both_right"}`` (percent of pairs
        whose source / target / both frames have IoU >= ``iou``),
        ``"src_iou"`` / ``"tgt_iou"`` (mean IoU), ``"src_found"`` /
        ``"tgt_found"`` (percent of pairs framed by a detection, the rest by
        the centred square; ``None`` when the method does not detect), and ``"err70_both_right"`` /
        ``"err70_other"`` (mean 70-px error over the points of the pairs with
        both frames right / the rest; ``None`` when there are none).
    """
    known = [r for r in results if r.src_iou is not None and r.tgt_iou is not None]
    if not known:
        return None
    n = len(known)
    src_ok = np.array([r.src_iou >= iou for r in known])  # type: ignore[operator]
    tgt_ok = np.array([r.tgt_iou >= iou for r in known])  # type: ignore[operator]
    both = src_ok & tgt_ok

    def mean_err(sel: np.ndarray) -> float | None:
        vals = [r.errors["err70"] for r, k in zip(known, sel, strict=True) if k]
        return float(np.mean(np.concatenate(vals))) if vals else None

    if detects is None:
        detects = any(r.src_face is not None or r.tgt_face is not None for r in known)
    return {
        "pairs": n,
        "iou": iou,
        "src_right": 100.0 * float(src_ok.mean()),
        "tgt_right": 100.0 * float(tgt_ok.mean()),
        "both_right": 100.0 * float(both.mean()),
        "src_iou": float(np.mean([r.src_iou for r in known])),
        "tgt_iou": float(np.mean([r.tgt_iou for r in known])),
        "src_found": 100.0 * float(np.mean([r.src_face is not None for r in known])) if detects else None,
        "tgt_found": 100.0 * float(np.mean([r.tgt_face is not None for r in known])) if detects else None,
        "err70_both_right": mean_err(both),
        "err70_other": mean_err(~both),
    }
