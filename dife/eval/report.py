"""Reports of an evaluation: markdown tables, a JSON file and PNG panels.

* [markdown_report][dife.eval.report.markdown_report]: the face-finding report when there is one, then per
  protocol one table per metric (methods x groups, ``mean [95 % interval]``),
  a per-keypoint table, the pair counts and, for data with labelled face
  boxes, how each method framed the faces.
* [json_report][dife.eval.report.json_report]: everything, including each pair's points, as plain JSON.
* [write_panels][dife.eval.report.write_panels]: for each protocol, method and group, a PNG of the best
  and worst pairs: the source image with its points, and the target image with
  the ground truth (filled discs) and the transferred points (crosses) joined
  by a line; the regions the method framed (a detected face, the true box or
  the centred square) are outlined, the labelled face box dashed.
  [pair_figure][dife.eval.report.pair_figure] draws such rows for any pairs.

All files are written atomically (``dife._io``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dife._io import atomic_path, atomic_write
from dife.eval.metrics import METRICS, Stat

if TYPE_CHECKING:
    from dife.eval.readers import Face
    from dife.eval.run import EvalResult

__all__ = [
    "METRIC_TITLES",
    "format_stat",
    "markdown_report",
    "json_report",
    "write_json",
    "write_markdown",
    "write_panels",
    "pair_figure",
]

#: Table titles of the metrics.
METRIC_TITLES: dict[str, str] = {
    "err70": "Error in pixels of a 70 x 70 image (lower is better)",
    "nerr": "Error / target inter-ocular distance (lower is better)",
    "pck05": "PCK@0.05: % of points within 0.05 x crop side (higher is better)",
    "pck10": "PCK@0.1: % of points within 0.1 x crop side (higher is better)",
}

_DIGITS = {"err70": 1, "nerr": 3, "pck05": 1, "pck10": 1}

# keypoint colours in panels (RGB)
_COLORS = (
    (230, 60, 60),
    (60, 130, 240),
    (250, 210, 40),
    (60, 200, 90),
    (200, 90, 220),
    (255, 140, 30),
    (40, 210, 210),
    (240, 120, 180),
    (150, 150, 255),
    (180, 230, 90),
    (255, 255, 255),
)


def format_stat(stat: Stat | None, digits: int = 1, *, ci: bool = True) -> str:
    """``"15.4 [14.1, 16.8]"`` (or ``"-"`` for a missing / empty stat)."""
    if stat is None or stat.n_points == 0 or math.isnan(stat.mean):
        return "-"
    if not ci:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} [{stat.lo:.{digits}f}, {stat.hi:.{digits}f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _frames_table(runs: dict[str, Any]) -> list[str]:
    """How each method framed the faces (data with labelled face boxes only)."""
    rows = []
    for m, r in runs.items():
        f = r.frames
        if not f:
            continue

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        def err(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        rows.append(
            [
                m,
                pct(f["src_found"]),
                pct(f["tgt_found"]),
                pct(f["src_right"]),
                pct(f["tgt_right"]),
                pct(f["both_right"]),
                f"{f['tgt_iou']:.3f}",
                err(f["err70_both_right"]),
                err(f["err70_other"]),
            ]
        )
    if not rows:
        return []
    iou = next(r.frames["iou"] for r in runs.values() if r.frames)
    lines = [
        "### Framing: the region each method embedded, against the labelled face box",
        "",
        f"Percent of pairs; *right* = IoU >= {iou:g} with the labelled box; *found* = framed by a detected face "
        "(else the centred square); errors in 70-px units of the face, over the pairs with both faces right / the rest.",
        "",
    ]
    lines += _table(
        [
            "method",
            "src found",
            "tgt found",
            "src right",
            "tgt right",
            "both right",
            "tgt mean IoU",
            "err70, both right",
            "err70, other pairs",
        ],
        rows,
    )
    lines.append("")
    return lines


_PROTOCOL_NOTES = {
    "aligned": "the face crops as given; errors relative to the crop",
    "jittered": "random square sub-crops of the face crops; errors relative to the crop",
    "wild": "whole photos, methods get no box; errors relative to the target's labelled face box (70 / side)",
}


def markdown_report(result: EvalResult, *, title: str | None = None) -> str:
    """The markdown tables of an evaluation.

    Args:
        result: The [EvalResult][dife.eval.run.EvalResult].
        title: First heading (default: ``"Keypoint transfer on <data>"``).

    Returns:
        Markdown text.
    """
    cfg = result.config
    lines = [f"# {title or 'Keypoint transfer on ' + str(cfg.get('data', ''))}", ""]
    species = ", ".join(f"{k} {v}" for k, v in sorted(result.species_counts.items()))
    lines += [
        f"- images: {len(result.samples)} ({species})",
        f"- pairs: {len(result.pairs)}, seed {cfg.get('seed')}, "
        f"bootstrap {cfg.get('n_boot')} resamples of pairs (95 % intervals)",
        f"- protocols: {'; '.join(f'{p} ({_PROTOCOL_NOTES.get(p, p)})' for p in result.runs)}",
        "",
    ]
    if result.detection is not None:
        lines += result.detection.markdown(heading="##").splitlines() + [""]
    groups = result.group_names()
    counts = result.pair_counts()
    lines += _table(["group", *groups], [["pairs", *[str(counts.get(g, 0)) for g in groups]]])
    lines.append("")
    for protocol, runs in result.runs.items():
        lines += [f"## {'Protocol' if protocol == 'wild' else 'Crop protocol'}: {protocol}", ""]
        timing = ", ".join(f"{m} {r.seconds:.1f} s" for m, r in runs.items())
        lines += [f"Wall time per method: {timing}.", ""]
        cols = [*groups, "all"]
        for metric in METRICS:
            lines += [f"### {METRIC_TITLES[metric]}", ""]
            rows = []
            for m, r in runs.items():
                rows.append([m, *[format_stat(_get(r.summary, g, metric), _DIGITS[metric]) for g in cols]])
            lines += _table(["method", *cols], rows)
            lines.append("")
        names = sorted(
            {k for r in runs.values() for k in (r.summary.get("all").per_keypoint if "all" in r.summary else {})}
        )
        if names:
            lines += ["### Per keypoint, error in 70-px units (all groups)", ""]
            rows = []
            for m, r in runs.items():
                per = r.summary["all"].per_keypoint if "all" in r.summary else {}
                rows.append([m, *[format_stat(per.get(k, {}).get("err70"), 1) for k in names]])
            lines += _table(["method", *names], rows)
            lines.append("")
        lines += _frames_table(runs)
    return "\n".join(lines).rstrip() + "\n"


def _get(summary: dict[str, Any], group: str, metric: str) -> Stat | None:
    gs = summary.get(group)
    return None if gs is None else gs.stats.get(metric)


def _round(a: np.ndarray, nd: int = 3) -> list[Any]:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def json_report(result: EvalResult, *, include_pairs: bool = True) -> dict[str, Any]:
    """Everything about an evaluation as a JSON-friendly dict.

    Keys: ``config``, ``n_images``, ``species``, ``pair_counts``, ``pairs``
    (source / target ids per pair), ``results[protocol][method]`` with
    ``method`` (its description), ``seconds``, ``groups`` (per group and
    ``all``: each metric's ``mean`` / ``lo`` / ``hi`` / ``n_pairs`` /
    ``n_points`` and ``per_keypoint``), ``frames`` (how the faces were framed,
    for data with face boxes; see [frame_summary][dife.eval.metrics.frame_summary])
    and, with ``include_pairs``, ``pairs`` (each pair's transferred points,
    ground truth, errors and, for methods that report them, the regions framed
    and the detections used); ``detection`` (the face-finding report, with
    each photo's best face when ``include_pairs``) when there is one.
    """
    out: dict[str, Any] = {
        "config": dict(result.config),
        "n_images": len(result.samples),
        "species": dict(sorted(result.species_counts.items())),
        "pair_counts": result.pair_counts(),
        "pairs": [
            {"group": p.group, "src": result.samples[p.src].id, "tgt": result.samples[p.tgt].id, "names": list(p.names)}
            for p in result.pairs
        ],
        "results": {},
    }
    for protocol, runs in result.runs.items():
        block: dict[str, Any] = {}
        for m, r in runs.items():
            entry: dict[str, Any] = {
                "method": r.method,
                "seconds": round(r.seconds, 3),
                "groups": {g: s.to_dict() for g, s in r.summary.items()},
            }
            if r.frames is not None:
                entry["frames"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.frames.items()}
            if include_pairs:
                entry["pairs"] = [
                    {
                        "index": pr.index,
                        "group": pr.group,
                        "src": pr.src_id,
                        "tgt": pr.tgt_id,
                        "names": list(pr.names),
                        "src_points": _round(pr.src_points),
                        "pred": _round(pr.pred),
                        "gt": _round(pr.gt),
                        "err70": _round(pr.errors["err70"]),
                        **_frame_entry(pr),
                    }
                    for pr in r.results
                ]
            block[m] = entry
        out["results"][protocol] = block
    if result.detection is not None:
        out["detection"] = result.detection.to_dict(include_photos=include_pairs)
    return out


def _frame_entry(pr: Any) -> dict[str, Any]:
    """The framing fields of a pair (only those the method reported)."""
    out: dict[str, Any] = {}
    for side in ("src", "tgt"):
        box = getattr(pr, f"{side}_box")
        if box is not None:
            out[f"{side}_box"] = [round(float(v), 1) for v in box]
        face = getattr(pr, f"{side}_face")
        if face is not None:
            out[f"{side}_face"] = {k: face[k] for k in ("box", "score", "species") if k in face}
        iou = getattr(pr, f"{side}_iou")
        if iou is not None:
            out[f"{side}_iou"] = round(float(iou), 4)
    return out


def write_json(result: EvalResult, path: str | os.PathLike[str], *, include_pairs: bool = True) -> Path:
    """Write [json_report][dife.eval.report.json_report] to ``path`` atomically; returns the path."""
    p = Path(path)
    text = json.dumps(json_report(result, include_pairs=include_pairs), indent=1, allow_nan=False)
    with atomic_write(p, "w") as f:
        f.write(text + "\n")
    return p


def write_markdown(result: EvalResult, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write [markdown_report][dife.eval.report.markdown_report] to ``path`` atomically; returns the path."""
    p = Path(path)
    with atomic_write(p, "w") as f:
        f.write(markdown_report(result, title=title))
    return p


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("->", "_to_")).strip("_") or "x"


def _tile(image: np.ndarray, side: int) -> tuple[Any, float, float, float, float]:
    """The image fitted into a ``side x side`` tile (aspect kept, centred on dark grey).

    Returns ``(tile, sx, sy, ox, oy)``: a point ``(x, y)`` of the image is at
    ``((x + 0.5) * sx - 0.5 + ox, (y + 0.5) * sy - 0.5 + oy)`` in the tile.
    """
    from PIL import Image

    im = Image.fromarray(image)
    s = side / max(im.width, im.height)
    w, h = max(1, round(im.width * s)), max(1, round(im.height * s))
    tile = Image.new("RGB", (side, side), (48, 48, 48))
    ox, oy = (side - w) // 2, (side - h) // 2
    tile.paste(im.resize((w, h), Image.Resampling.BILINEAR), (ox, oy))
    return tile, w / im.width, h / im.height, float(ox), float(oy)


def _scaled(p: Sequence[float], sx: float, sy: float) -> tuple[float, float]:
    return ((p[0] + 0.5) * sx - 0.5, (p[1] + 0.5) * sy - 0.5)


def _dashed_rect(draw: Any, box: Sequence[float], fill: tuple[int, int, int], dash: float = 5.0) -> None:
    x0, y0, x1, y1 = box
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = math.hypot(b[0] - a[0], b[1] - a[1])
        n = max(1, int(length // (2 * dash)))
        for i in range(n):
            t0, t1 = (2 * i) / (2 * n), (2 * i + 1) / (2 * n)
            draw.line(
                [
                    (a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                    (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1),
                ],
                fill=fill,
                width=1,
            )


_FRAME_COLOR = (255, 220, 0)
_TRUE_COLOR = (235, 235, 235)


def pair_figure(rows: Sequence[tuple[str, Face, Face, Any]], *, side: int = 160) -> Any:
    """A picture of transferred pairs: one row per pair, [source | target], a caption above each row.

    Each tile holds the whole image the method saw (aspect kept). Source points
    are discs; on the target, ground truth discs and transferred crosses of the
    same colour are joined by a line. The regions the method framed
    (``PairResult.src_box`` / ``tgt_box``) are outlined in yellow, with the
    detection's species and score when a face was found; the labelled face
    boxes (``Face.face_box``) are dashed white.

    Args:
        rows: ``(caption, source Face, target Face, PairResult)`` per pair.
        side: Side of each square tile in pixels.

    Returns:
        An RGB ``PIL.Image`` of ``2 * side + 6`` x ``len(rows) * (side + 18)`` pixels.
    """
    from PIL import Image, ImageDraw

    cap = 14
    W, H = 2 * side + 6, len(rows) * (side + cap + 4)
    canvas = Image.new("RGB", (W, max(H, 1)), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    r = max(2.0, side / 60)
    for i, (caption, src, tgt, pr) in enumerate(rows):
        y0 = i * (side + cap + 4)
        draw.text((2, y0 + 1), caption, fill=(235, 235, 235))
        tiles = []
        for k, (face, box, det) in enumerate(
            (
                (src, getattr(pr, "src_box", None), getattr(pr, "src_face", None)),
                (tgt, getattr(pr, "tgt_box", None), getattr(pr, "tgt_face", None)),
            )
        ):
            tile, sx, sy, ox, oy = _tile(face.image, side)
            dx, dy = k * (side + 6) + ox, y0 + cap + oy
            canvas.paste(tile, (k * (side + 6), y0 + cap))

            def at(
                p: Sequence[float], sx: float = sx, sy: float = sy, dx: float = dx, dy: float = dy
            ) -> tuple[float, float]:
                x, y = _scaled(p, sx, sy)
                return x + dx, y + dy

            def rect(
                b: Sequence[float], sx: float = sx, sy: float = sy, dx: float = dx, dy: float = dy
            ) -> tuple[float, ...]:
                return (b[0] * sx + dx, b[1] * sy + dy, b[2] * sx + dx, b[3] * sy + dy)

            if face.face_box is not None:
                _dashed_rect(draw, rect(face.face_box), _TRUE_COLOR)
            if box is not None:
                fb = rect(box)
                draw.rectangle([fb[0], fb[1], fb[2] - 1, fb[3] - 1], outline=_FRAME_COLOR, width=2)
                if det is not None:
                    at_xy = (max(fb[0], k * (side + 6)) + 3, max(fb[1], y0 + cap) + 2)
                    label = f"{det['species']} {det['score']:.2f}"
                    draw.rectangle(draw.textbbox(at_xy, label), fill=(0, 0, 0))
                    draw.text(at_xy, label, fill=_FRAME_COLOR)
            tiles.append(at)
        at_src, at_tgt = tiles
        for k, _name in enumerate(pr.names):
            c = _COLORS[k % len(_COLORS)]
            x, y = at_src(pr.src_points[k])
            draw.ellipse([x - r, y - r, x + r, y + r], fill=c, outline=(0, 0, 0))
            gx, gy = at_tgt(pr.gt[k])
            px, py = at_tgt(pr.pred[k])
            draw.line([(gx, gy), (px, py)], fill=c, width=1)
            draw.ellipse([gx - r, gy - r, gx + r, gy + r], fill=c, outline=(0, 0, 0))
            draw.line([(px - r, py - r), (px + r, py + r)], fill=c, width=2)
            draw.line([(px - r, py + r), (px + r, py - r)], fill=c, width=2)
    return canvas


def write_panels(
    result: EvalResult,
    view: Callable[[str, int], Face],
    out_dir: str | os.PathLike[str],
    *,
    k: int = 3,
    side: int = 160,
) -> list[Path]:
    """PNG panels of the ``k`` best and ``k`` worst pairs (by mean 70-px error).

    Args:
        result: The evaluation.
        view: ``(protocol, sample index) -> Face``: the crop each method saw.
        out_dir: Folder; files are ``<protocol>_<method>_<group>.png``.
        k: Pairs of each kind per panel.
        side: Side of each image tile.

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    written: list[Path] = []
    if k <= 0:
        return written
    for protocol, runs in result.runs.items():
        for m, run in runs.items():
            by_group: dict[str, list[Any]] = {}
            for pr in run.results:
                by_group.setdefault(pr.group, []).append(pr)
            for group, prs in by_group.items():
                ranked = sorted(prs, key=lambda p: (p.mean_err70, p.index))
                best = ranked[:k]
                best_ids = {p.index for p in best}
                worst = [p for p in reversed(ranked[-k:]) if p.index not in best_ids]
                rows = []
                for label, sel in (("best", best), ("worst", worst)):
                    for j, pr in enumerate(sel):
                        pair = result.pairs[pr.index]
                        caption = f"{label} {j + 1}: {pr.mean_err70:.1f} px@70  {pr.src_id} -> {pr.tgt_id}"
                        rows.append((caption, view(protocol, pair.src), view(protocol, pair.tgt), pr))
                if not rows:
                    continue
                img = pair_figure(rows, side=side)
                dest = out / f"{_slug(protocol)}_{_slug(m)}_{_slug(group)}.png"
                with atomic_path(dest) as tmp:
                    img.save(tmp, format="PNG")
                written.append(dest)
    return written
