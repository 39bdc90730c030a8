"""Keypoint transfer across species, sparse and dense: a human's landmarks on a cat.

Run::

    python examples/transfer_species.py [--model NAME_OR_PATH] [--out docs/images/transfer_species]

Writes to ``--out``:

* ``sparse.jpg``: the astronaut's five landmarks (left) and where they land on
  the cat (right); lines coloured by confidence, red (0) to green (1);
* ``dense.jpg``: the source face, the target, and the source warped onto the
  target through the dense correspondence (every target pixel takes the colour
  of its nearest source pixel in embedding space);
* ``embeddings.jpg``: both faces beside the colour picture of their
  embeddings (one fixed projection of the 16-d vectors to RGB, so the same
  colour means the same descriptor in both images);
* ``summary.json``: the transferred points, their scores and dense statistics.

The pictures show whatever model is used: with an untrained model the points
land at random places.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

import dife

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
DEFAULT_OUT = HERE.parent / "docs" / "images" / "transfer_species"
#: Files this script writes into ``--out``.
FIGURES = ("sparse.jpg", "dense.jpg", "embeddings.jpg")


def side_by_side(images: list[Image.Image], height: int = 256, pad: int = 4) -> Image.Image:
    """Resize images to one height and paste them left to right on white."""
    scaled = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    out = Image.new("RGB", (sum(im.width for im in scaled) + pad * (len(scaled) - 1), height), "white")
    x = 0
    for im in scaled:
        out.paste(im, (x, 0))
        x += im.width + pad
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="registry name, folder or hub id (default: the default model)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    ap.add_argument("--stride", type=int, default=1, help="dense transfer: every stride-th grid pixel")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = dife.DIFE.from_pretrained(args.model) if args.model else dife.get_default_model()
    human, cat = IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg"
    meta = json.loads((IMAGES / "astronaut.json").read_text())
    names = list(meta["keypoints"])
    src_pts = np.array([meta["keypoints"][n] for n in names], dtype=float)  # (5, 2) (x, y) astronaut pixels

    # --- sparse: five named landmarks, with confidence scores
    pts, scores = dife.transfer_keypoints(human, cat, src_pts, src_box=meta["box"], model=model, return_scores=True)
    dife.draw_matches(human, cat, src_pts, pts, scores=scores).convert("RGB").save(out / "sparse.jpg", quality=90)

    # --- dense: where every source grid pixel lands, and the warp it defines
    dense = dife.transfer_dense(human, cat, src_box=meta["box"], model=model, stride=args.stride)
    warped = Image.fromarray(dense.warp(human))  # the astronaut in the cat's frame
    src_crop = Image.open(human).crop(tuple(meta["box"]))
    side_by_side([src_crop, Image.open(cat), warped]).save(out / "dense.jpg", quality=90)

    # --- the embeddings themselves, coloured with one fixed projection
    emb = dife.embed([human, cat], box=[meta["box"], None], model=model)
    rgb = [Image.fromarray(dife.embedding_to_rgb(emb, index=i)).resize((192, 192), Image.NEAREST) for i in (0, 1)]
    crops = [Image.fromarray(np.asarray(src_crop)), Image.open(cat).crop((75, 0, 375, 300))]
    side_by_side([crops[0], rgb[0], crops[1], rgb[1]], height=192).save(out / "embeddings.jpg", quality=90)

    summary = {
        "model": args.model or "default",
        "target_size": list(Image.open(cat).size),
        "keypoints": {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(names, pts, strict=True)},
        "confidence": {n: round(float(c), 4) for n, c in zip(names, scores.confidence, strict=True)},
        "dense": {
            "points": len(dense),
            "grid_shape": list(dense.grid_shape),
            "mean_similarity": round(float(dense.similarity.mean()), 4),
            "mutual_fraction": round(float(dense.mutual.mean()), 4),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for n in names:
        x, y = summary["keypoints"][n]
        print(f"{n:16s} -> ({x:6.1f}, {y:6.1f})  confidence {summary['confidence'][n]:.2f}")
    print(f"wrote {', '.join(FIGURES)} and summary.json to {out}")
    return summary


if __name__ == "__main__":
    main()
