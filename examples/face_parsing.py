"""Face parsing across species: one k-means on the embeddings of a human and a cat.

Run::

    python examples/face_parsing.py [--model NAME_OR_PATH] [--parts 6] [--out docs/images/face_parsing]

Because DIFE puts every species in one embedding space, clustering the pixels of
several faces *jointly* gives parts that agree across species. Writes to ``--out``:

* ``parts.jpg``: both faces with their part maps blended over them (part ``k``
  has the same colour in both);
* ``parser.safetensors``: the fitted parser (reload with ``dife.FaceParser.load``);
* ``summary.json``: the number of parts and the share of each face's pixels per part.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import dife

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
DEFAULT_OUT = HERE.parent / "docs" / "images" / "face_parsing"
#: Files this script writes into ``--out``.
FIGURES = ("parts.jpg",)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="registry name, folder or hub id (default: the default model)")
    ap.add_argument("--parts", type=int, default=6, help="number of parts (k-means clusters)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = dife.DIFE.from_pretrained(args.model) if args.model else dife.get_default_model()
    human, cat = IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg"
    human_box = json.loads((IMAGES / "astronaut.json").read_text())["box"]

    # Fit once on both faces, then predict label maps at each image's resolution.
    parser = dife.FaceParser(args.parts, model=model, seed=0)
    labels = parser.fit_predict([human, cat], box=[human_box, None])  # list of (H, W) int32, -1 outside the crop
    parser.save(out / "parser.safetensors")

    # The human is shown cropped to its face box; the cat whole.
    x0, y0, x1, y1 = human_box
    panels = [
        dife.draw_parts(human, labels[0]).crop((x0, y0, x1, y1)).resize((300, 300)),
        dife.draw_parts(cat, labels[1]),
    ]
    from PIL import Image

    figure = Image.new("RGB", (300 + 4 + panels[1].width, 300), "white")
    figure.paste(panels[0], (0, 0))
    figure.paste(panels[1], (304, 0))
    figure.save(out / "parts.jpg", quality=90)

    summary = {"n_parts": args.parts, "images": {}}
    for name, lab in zip(("human", "cat"), labels, strict=True):
        inside = lab[lab >= 0]
        share = np.bincount(inside, minlength=args.parts) / max(1, inside.size)
        summary["images"][name] = {
            "shape": list(lab.shape),
            "parts_present": sorted(int(k) for k in np.unique(inside)),
            "share": [round(float(s), 4) for s in share],
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote parts.jpg, parser.safetensors and summary.json to {out}")
    return summary


if __name__ == "__main__":
    main()
