"""Keypoints on your own photos: find the faces, then carry points from one photo to another with no box.

Run::

    python examples/photos.py [--model NAME_OR_PATH] [--detector FOLDER] [--out docs/images/photos]

Uses two whole photos of ``examples/images`` (the astronaut, 512x512, and
Chelsea the cat, 451x300; nothing is cropped by hand) and writes to ``--out``:

* ``found.jpg``: the faces the face finder found in each photo (box, species
  and score, rough landmarks);
* ``transfer.jpg``: the astronaut's five landmarks (left) carried to the cat
  (right) with no box at all: the source face is the found face that holds
  the points, the target face the best-scoring one; lines coloured by
  confidence, red (0) to green (1);
* ``summary.json``: the faces found, the faces the transfer used, the points
  and their confidences, the same points with the centred square
  (``box="image"``) and with the hand-placed face box, and the warning of a
  photo without a face.

The pictures show whatever face finder and model are used: an untrained
finder finds no face (the pipeline then warns and uses the centred square).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

import dife
from dife.detection import load_detector

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
DEFAULT_OUT = HERE.parent / "docs" / "images" / "photos"
#: Files this script writes into ``--out``.
FIGURES = ("found.jpg", "transfer.jpg")


def side_by_side(images: list[Image.Image], height: int = 300, pad: int = 4) -> Image.Image:
    """Resize images to one height and paste them left to right on white."""
    scaled = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    out = Image.new("RGB", (sum(im.width for im in scaled) + pad * (len(scaled) - 1), height), "white")
    x = 0
    for im in scaled:
        out.paste(im, (x, 0))
        x += im.width + pad
    return out


def _face(face: dife.Detection | None) -> dict | None:
    return None if face is None else face.to_dict()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="registry name, folder or hub id (default: the default model)")
    ap.add_argument("--detector", default=None, help="face finder folder (default: the shipped dife-face-finder)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = dife.DIFE.from_pretrained(args.model) if args.model else dife.get_default_model()
    # None: the face finder shipped with dife; a folder: another one (every call below takes it)
    finder = load_detector(args.detector) if args.detector else None
    human, cat = IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg"
    meta = json.loads((IMAGES / "astronaut.json").read_text())
    names = list(meta["keypoints"])
    src_pts = np.array([meta["keypoints"][n] for n in names], dtype=float)  # (5, 2) astronaut pixels

    # --- 1. find the faces: a list of Detection per photo, best first
    found = dife.detect_faces([human, cat], model=finder)
    for path, faces in zip((human, cat), found, strict=True):
        print(f"{path.name}: {len(faces)} face(s)")
        for f in faces:
            print(f"  {f}")  # e.g. "cat face (120, 10, 380, 270) score 0.93"
    pictures = [dife.draw_boxes(p, faces) for p, faces in zip((human, cat), found, strict=True)]
    side_by_side(pictures).save(out / "found.jpg", quality=90)

    # --- 2. transfer with no box: the pipeline finds both faces itself, and says which it used
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", dife.NoFaceWarning)
        pts, scores = dife.transfer_keypoints(human, cat, src_pts, model=model, detector=finder, return_scores=True)
    no_face = [str(w.message) for w in caught if issubclass(w.category, dife.NoFaceWarning)]
    print(f"source face used: {scores.src_face}")
    print(f"target face used: {scores.tgt_face}")
    for n, (x, y), c in zip(names, pts, scores.confidence, strict=True):
        print(f"{n:16s} -> ({x:6.1f}, {y:6.1f})  confidence {c:.2f}")
    dife.draw_matches(human, cat, src_pts, pts, scores=scores).convert("RGB").save(out / "transfer.jpg", quality=90)

    # --- 3. the other framings: the centred square (dife before the face finder) and a box by hand
    square = dife.transfer_keypoints(human, cat, src_pts, src_box="image", tgt_box="image", model=model)
    by_hand = dife.transfer_keypoints(human, cat, src_pts, src_box=meta["box"], model=model, detector=finder)

    # --- 4. a photo without a face: a warning, and the centred square
    blank = np.full((240, 320, 3), 128, dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", dife.NoFaceWarning)
        emb = dife.embed(blank, model=model, detector=finder)
    blank_warning = next((str(w.message) for w in caught if issubclass(w.category, dife.NoFaceWarning)), None)
    print(f"a grey picture: face {emb.faces[0]}, warning: {blank_warning}")

    def rounded(a: np.ndarray) -> dict:
        return {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(names, a, strict=True)}

    summary = {
        "model": args.model or "default",
        "detector": args.detector or "dife-face-finder",
        "found": {p.name: [f.to_dict() for f in faces] for p, faces in zip((human, cat), found, strict=True)},
        "src_face": _face(scores.src_face),
        "tgt_face": _face(scores.tgt_face),
        "no_face_warnings": no_face,
        "keypoints": rounded(pts),
        "confidence": {n: round(float(c), 4) for n, c in zip(names, scores.confidence, strict=True)},
        "keypoints_centred_square": rounded(square),
        "keypoints_box_by_hand": rounded(by_hand),
        "blank": {"face": _face(emb.faces[0]), "warning": blank_warning},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {', '.join(FIGURES)} and summary.json to {out}")
    return summary


if __name__ == "__main__":
    main()
