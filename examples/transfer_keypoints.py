"""Carry keypoints from the astronaut to the cat and draw the matches.

Run: ``python examples/transfer_keypoints.py [--model NAME_OR_PATH] [-o docs/images/transfer.jpg]``.
Writes a side-by-side picture (source points left, transferred points right,
lines coloured by confidence) and prints the transferred points. The picture
shows whatever model is used (the default, ``dife-base``, unless ``--model``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import dife

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("-o", "--output", default=str(HERE.parent / "docs" / "images" / "transfer.jpg"))
    args = ap.parse_args(argv)

    src = HERE / "images" / "astronaut.jpg"
    tgt = HERE / "images" / "chelsea.jpg"
    meta = json.loads((HERE / "images" / "astronaut.json").read_text())
    names = list(meta["keypoints"])
    points = [meta["keypoints"][n] for n in names]

    model = dife.DIFE.from_pretrained(args.model) if args.model else dife.get_default_model()
    pts, scores = dife.transfer_keypoints(src, tgt, points, src_box=meta["box"], model=model, return_scores=True)
    for name, p, c in zip(names, pts, scores.confidence, strict=True):
        print(f"{name:16s} -> ({p[0]:6.1f}, {p[1]:6.1f})  confidence {c:.2f}")

    panel = dife.draw_matches(src, tgt, points, pts, scores=scores.confidence)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    panel.convert("RGB").save(out, quality=90) if out.suffix.lower() in (".jpg", ".jpeg") else panel.save(out)
    print(f"wrote {out}")
    return {"names": names, "points": pts, "confidence": scores.confidence}


if __name__ == "__main__":
    main()
