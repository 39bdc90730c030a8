"""Carry keypoints from the astronaut to the cat and to the dog, and draw the matches.

Run: ``python examples/transfer_keypoints.py [--model NAME_OR_PATH] [--targets chelsea.jpg dog.jpg] [-o docs/images/transfer.jpg]``.
Writes one picture with a row per target (the astronaut's face with her
points left, the target with the transferred points right, lines coloured by
confidence from red, 0, to green, 1) and prints the transferred points. The
picture shows whatever model is used (the default, ``dife-base``, unless
``--model``). Images and their hand-placed keypoints are in ``examples/images``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

import dife

HERE = Path(__file__).resolve().parent


ROW_HEIGHT = 300  # every row of the picture is drawn at this height


def _fit(img: Image.Image, points: np.ndarray, height: int) -> tuple[Image.Image, np.ndarray]:
    """Resize ``img`` to ``height`` rows and move pixel-centre points with it."""
    scale = height / img.height
    resized = img.resize((round(img.width * scale), height), Image.LANCZOS)
    return resized, (np.asarray(points, dtype=float) + 0.5) * scale - 0.5


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--targets", nargs="+", default=["chelsea.jpg", "dog.jpg"], help="images in examples/images")
    ap.add_argument("-o", "--output", default=str(HERE.parent / "docs" / "images" / "transfer.jpg"))
    args = ap.parse_args(argv)

    src = HERE / "images" / "astronaut.jpg"
    meta = json.loads((HERE / "images" / "astronaut.json").read_text())
    names = list(meta["keypoints"])
    points = np.array([meta["keypoints"][n] for n in names], dtype=float)

    # the drawing shows the source face only: the square twice the side of its box (edge coordinates)
    x0, y0, x1, y1 = meta["box"]
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
    src_img = Image.open(src).convert("RGB")
    face = (max(0, round(cx - half)), max(0, round(cy - half)), round(cx + half), round(cy + half))
    src_face, src_pts = _fit(src_img.crop(face), points - face[:2], ROW_HEIGHT)

    model = dife.DIFE.from_pretrained(args.model) if args.model else dife.get_default_model()
    rows, results = [], {}
    for target in args.targets:
        tgt = HERE / "images" / target
        pts, scores = dife.transfer_keypoints(src, tgt, points, src_box=meta["box"], model=model, return_scores=True)
        print(f"{src.name} -> {tgt.name}")
        for name, p, c in zip(names, pts, scores.confidence, strict=True):
            print(f"  {name:16s} -> ({p[0]:6.1f}, {p[1]:6.1f})  confidence {c:.2f}")
        tgt_img, tgt_pts = _fit(Image.open(tgt).convert("RGB"), pts, ROW_HEIGHT)
        rows.append(dife.draw_matches(src_face, tgt_img, src_pts, tgt_pts, scores=scores.confidence))
        results[target] = {"points": pts, "confidence": scores.confidence}

    panel = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 4 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        panel.paste(r, (0, y))
        y += r.height + 4
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    panel.save(tmp, quality=90) if out.suffix.lower() in (".jpg", ".jpeg") else panel.save(tmp)
    tmp.replace(out)  # atomic: a reader never sees half a picture
    print(f"wrote {out}")
    first = results[args.targets[0]]
    return {"names": names, "points": first["points"], "confidence": first["confidence"], "targets": results}


if __name__ == "__main__":
    main()
