"""Glasses and a party hat on a human and a cat, placed from keypoints or carried from a reference face.

Run::

    python examples/overlay_assets.py [--model NAME_OR_PATH] [--out docs/images/overlay_assets]

An asset (an RGBA picture with named anchors) is fitted to a face's keypoints
by a similarity transform. Writes to ``--out``:

* ``given_keypoints.jpg``: glasses on the astronaut and a hat on the cat, from
  their own hand-placed keypoints (``examples/images/*.json``);
* ``from_reference.jpg``: the same assets on the cat, with its keypoints carried
  over from the astronaut by DIFE (``overlay(..., reference=...)``); this one
  depends on the model;
* ``summary.json``: the cat keypoints DIFE found and whether each overlay worked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

import dife
from dife import overlay

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
DEFAULT_OUT = HERE.parent / "docs" / "images" / "overlay_assets"
#: Files this script writes into ``--out``.
FIGURES = ("given_keypoints.jpg", "from_reference.jpg")


def row(images: list[Image.Image], height: int = 300) -> Image.Image:
    """Resize to one height and paste left to right."""
    scaled = [im.resize((round(im.width * height / im.height), height)) for im in images]
    out = Image.new("RGB", (sum(im.width for im in scaled) + 4 * (len(scaled) - 1), height), "white")
    x = 0
    for im in scaled:
        out.paste(im, (x, 0))
        x += im.width + 4
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="registry name, folder or hub id (default: the default model)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = dife.DIFE.from_pretrained(args.model) if args.model else dife.get_default_model()
    human, cat = IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg"
    human_meta = json.loads((IMAGES / "astronaut.json").read_text())
    cat_meta = json.loads((IMAGES / "chelsea.json").read_text())
    box = human_meta["box"]

    # 1. Keypoints known on the face itself: no model involved.
    glasses_on_human = overlay(human, "glasses", keypoints=human_meta["keypoints"]).crop(tuple(box))
    hat_on_cat = overlay(cat, "party_hat", keypoints=cat_meta["keypoints"])
    row([glasses_on_human, hat_on_cat]).save(out / "given_keypoints.jpg", quality=90)

    # 2. Keypoints known on a reference face of another species: DIFE carries them over.
    #    (Done by hand here to report the points; overlay(..., reference=...) does the same in one call.)
    names = ["eye_left_img", "eye_right_img", "nose"]
    ref_pts = [human_meta["keypoints"][n] for n in names]
    pts = dife.transfer_keypoints(human, cat, ref_pts, src_box=box, model=model)
    summary: dict = {
        "cat_keypoints": {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(names, pts, strict=True)}
    }
    panels = []
    for asset in ("glasses", "party_hat"):
        try:
            img = overlay(
                cat, asset, reference=human, reference_keypoints=human_meta["keypoints"], reference_box=box, model=model
            )
            summary[asset] = "ok"
        except dife.DIFEError as e:  # e.g. both eyes carried to one pixel by an untrained model
            img = Image.open(cat).convert("RGB")
            ImageDraw.Draw(img).text((8, 8), f"{asset}: {e}"[:70], fill="red")
            summary[asset] = f"failed: {e}"
        panels.append(img)
    row(panels).save(out / "from_reference.jpg", quality=90)

    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {', '.join(FIGURES)} and summary.json to {out}")
    return summary


if __name__ == "__main__":
    main()
