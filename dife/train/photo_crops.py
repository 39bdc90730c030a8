"""Face crops of whole photos at several framings, as extra unlabelled training data.

The whole photos (a folder with an ``annotations.json`` of face boxes, the
layout of ``shared/data/photos``) hold the faces of the unlabelled pool with
their surroundings. [make_photo_crops][dife.train.photo_crops.make_photo_crops]
cuts each annotated face box several times, each time scaled by a random
factor and shifted a little, so that the crops frame the face loosely or
tightly and off-centre (what a face finder or a user's box gives), with the
real surroundings instead of black padding where the photo has them::

    python -m dife.train.photo_crops PHOTOS_FOLDER OUT_FOLDER --framings 4

writes ``OUT_FOLDER/{species}_{NNNNNN}.jpg`` (square, ``size`` pixels) and
``OUT_FOLDER/index.csv`` (``image``, ``species``, ``photo``, ``face``,
``scale``, ``dx``, ``dy``), readable by
[RealFaceFolder][dife.train.data.RealFaceFolder] and usable as a species'
``extra_real`` source in a training config. The keypoints of the
annotations place the boxes and keep them on the face; with ``--keypoints``
(``keypoints=True``) they are also written, in the crop's pixels, as a
``keypoints`` column for the landmark loss of [dife.train.landmarks][dife.train.landmarks].

Framing of crop ``k`` of a face box (centre ``c``, side ``w``): side
``s w`` with ``log s ~ U(log lo, log hi)``, centre ``c + (dx, dy) s w`` with
``dx, dy ~ U(-shift, shift)``, redrawn (up to 20 times, then centred) until
every annotated keypoint of the face lies inside the crop. Parts outside the
photo are black, as in the pool. Faces whose box side is under ``min_side``
photo pixels, or whose unscaled box lies more than ``max_outside`` outside
the photo, are skipped. The draws depend only on ``seed`` and the face's
position in the annotations, so the output is reproducible.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dife.coords import CropTransform
from dife.errors import InputError

__all__ = ["Framing", "framings_for_face", "crop_keypoints", "make_photo_crops", "main"]


@dataclass(frozen=True)
class Framing:
    """One crop of a face box: square ``(left, top, side)`` in photo edge coordinates, and how it was drawn."""

    left: float
    top: float
    side: float
    scale: float
    dx: float
    dy: float


def _outside_fraction(left: float, top: float, side: float, width: int, height: int) -> float:
    ix = max(0.0, min(left + side, width) - max(left, 0.0))
    iy = max(0.0, min(top + side, height) - max(top, 0.0))
    return 1.0 - ix * iy / (side * side)


def framings_for_face(
    box: Sequence[float],
    points: np.ndarray | None,
    rng: np.random.Generator,
    *,
    n: int,
    scale: tuple[float, float] = (0.8, 1.5),
    shift: float = 0.1,
) -> list[Framing]:
    """``n`` random framings of one square face box.

    Args:
        box: ``(x0, y0, x1, y1)`` face box, edge coordinates (square).
        points: (K, 2) keypoints (pixel-centre coordinates) that must stay
            inside each crop, or ``None``.
        rng: Random generator.
        n: Number of framings.
        scale: ``(lo, hi)`` range of the side factor (log-uniform), ``0 < lo <= hi``.
        shift: Largest shift of the centre, as a fraction of the crop side.

    Returns:
        ``n`` [Framing][dife.train.photo_crops.Framing] objects.
    """
    lo, hi = (float(v) for v in scale)
    if not (0 < lo <= hi) or shift < 0:
        raise InputError(f"scale must be (lo, hi) with 0 < lo <= hi and shift >= 0, got {scale!r}, {shift!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
    out = []
    for _ in range(n):
        s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        side = s * w
        for attempt in range(21):
            dx, dy = rng.uniform(-shift, shift, size=2) if attempt < 20 else (0.0, 0.0)
            left, top = cx + dx * side - side / 2, cy + dy * side - side / 2
            if points is None or len(points) == 0:
                break
            px, py = points[:, 0] + 0.5, points[:, 1] + 0.5
            if (px >= left).all() and (px <= left + side).all() and (py >= top).all() and (py <= top + side).all():
                break
        out.append(Framing(left, top, side, s, float(dx), float(dy)))
    return out


def _crop(img: Any, f: Framing, size: int) -> Any:
    from PIL import Image

    ix0, iy0 = math.floor(f.left), math.floor(f.top)
    ix1, iy1 = math.ceil(f.left + f.side), math.ceil(f.top + f.side)
    region = img.crop((ix0, iy0, ix1, iy1))  # outside the photo: black
    box = (f.left - ix0, f.top - iy0, f.left - ix0 + f.side, f.top - iy0 + f.side)
    return region.resize((size, size), Image.Resampling.LANCZOS, box=box)


def crop_keypoints(points: dict[str, Any], crop: CropTransform) -> dict[str, list[float]]:
    """Photo keypoints ``{name: [x, y]}`` (pixel centres) in pixels of the written crop ``crop``
    ([CropTransform.to_grid][dife.coords.CropTransform.to_grid], the crop's side being ``crop.size``);
    points outside the crop are left out.
    """
    out = {}
    for name, xy in points.items():
        x, y = (float(v) for v in crop.to_grid(np.asarray(xy, dtype=np.float64)))
        if -0.5 <= x <= crop.size - 0.5 and -0.5 <= y <= crop.size - 0.5:
            out[name] = [round(x, 2), round(y, 2)]
    return out


def make_photo_crops(
    photos: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    framings: int = 4,
    scale: tuple[float, float] = (0.8, 1.5),
    shift: float = 0.1,
    size: int = 128,
    min_side: float = 64.0,
    max_outside: float = 0.4,
    species: Sequence[str] | None = None,
    seed: int = 0,
    quality: int = 92,
    keypoints: bool = False,
) -> Path:
    """Write ``framings`` crops of every usable face box of ``photos`` into ``out``, with ``index.csv``.

    Args:
        photos: Folder with ``annotations.json`` (records ``{"image", "faces":
            [{"species", "face": [x0, y0, x1, y1] or null, "keypoints": {...} or null}]}``)
            and the photos.
        out: Output folder (created; must not be ``photos``); existing crops
            of the same names are replaced.
        framings: Crops per face.
        scale: Range of the crop side over the face box side (log-uniform).
        shift: Largest shift of the crop centre, fraction of the crop side.
        size: Side of the written crops.
        min_side: Skip faces whose box side is below this (photo pixels).
        max_outside: Skip faces whose box lies more than this fraction outside the photo.
        species: Keep only these species (default: all).
        seed: Seed of the framings.
        quality: JPEG quality.
        keypoints: Also write each face's annotated keypoints as a ``keypoints``
            column: JSON ``{name: [x, y]}`` in pixels of the written crop
            (integer = pixel centre), ``{}`` for a face without keypoints.

    Returns:
        The path of ``index.csv``.

    Raises:
        InputError: no ``annotations.json``, ``out`` equal to ``photos``, bad options.
    """
    from PIL import Image, ImageOps

    from dife._io import atomic_write

    src, dst = Path(photos), Path(out)
    ann = src / "annotations.json"
    if not ann.is_file():
        raise InputError(f"'{src}' has no annotations.json (face boxes of whole photos)")
    if dst.resolve() == src.resolve():
        raise InputError("the output folder must differ from the photo folder")
    if framings < 1 or size < 8:
        raise InputError(f"framings must be >= 1 and size >= 8, got {framings}, {size}")
    records = json.loads(ann.read_text(encoding="utf-8"))
    dst.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for r_i, rec in enumerate(records):
        faces = [
            (f_i, f)
            for f_i, f in enumerate(rec.get("faces") or [])
            if f.get("face") is not None and (species is None or f.get("species") in species)
        ]
        if not faces:
            continue
        with Image.open(src / rec["image"]) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        for f_i, f in faces:
            x0, y0, x1, y1 = (float(v) for v in f["face"])
            side = max(x1 - x0, y1 - y0)
            if side < min_side or _outside_fraction(x0, y0, side, img.width, img.height) > max_outside:
                continue
            kps = f.get("keypoints") or {}
            pts = np.array(list(kps.values()), dtype=np.float64).reshape(-1, 2) if kps else None
            rng = np.random.default_rng([seed, r_i, f_i])
            for k, fr in enumerate(framings_for_face((x0, y0, x1, y1), pts, rng, n=framings, scale=scale, shift=shift)):
                sp = str(f["species"])
                counts[sp] = counts.get(sp, 0) + 1
                name = f"{sp}_{counts[sp]:06d}.jpg"
                buf = io.BytesIO()
                _crop(img, fr, size).save(buf, format="JPEG", quality=quality)
                with atomic_write(dst / name, "wb") as fh:
                    fh.write(buf.getvalue())
                row = {
                    "image": name,
                    "species": sp,
                    "photo": rec["image"],
                    "face": f_i,
                    "framing": k,
                    "scale": round(fr.scale, 4),
                    "dx": round(fr.dx, 4),
                    "dy": round(fr.dy, 4),
                }
                if keypoints:
                    crop = CropTransform(fr.left, fr.top, fr.side, size, img.width, img.height)
                    row["keypoints"] = json.dumps(crop_keypoints(kps, crop), separators=(",", ":"))
                rows.append(row)
    if not rows:
        raise InputError(f"no face box of '{src}' passed the filters (min_side={min_side}, max_outside={max_outside})")
    index = dst / "index.csv"
    with atomic_write(index, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return index


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dife.train.photo_crops PHOTOS OUT [options]``."""
    ap = argparse.ArgumentParser(prog="python -m dife.train.photo_crops", description=__doc__.splitlines()[0])
    ap.add_argument("photos", help="folder of whole photos with annotations.json")
    ap.add_argument("out", help="output folder (crops + index.csv)")
    ap.add_argument("--framings", type=int, default=4)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.8, 1.5))
    ap.add_argument("--shift", type=float, default=0.1)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--min-side", type=float, default=64.0)
    ap.add_argument("--max-outside", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keypoints", action="store_true", help="write the faces' keypoints (a landmark-loss source)")
    args = ap.parse_args(argv)
    try:
        index = make_photo_crops(
            args.photos,
            args.out,
            framings=args.framings,
            scale=tuple(args.scale),
            shift=args.shift,
            size=args.size,
            min_side=args.min_side,
            max_outside=args.max_outside,
            seed=args.seed,
            keypoints=args.keypoints,
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(index, encoding="utf-8") as fh:
        n = sum(1 for _ in fh) - 1
    print(f"{n} crops, index {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
