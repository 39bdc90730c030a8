"""Draw the RGBA overlay assets shipped in ``dife/assets/`` (glasses, party hat).

Each asset is a PNG plus a sidecar JSON with its anchor points, in the asset's
own pixel-centre coordinates (an integer is the centre of that pixel, as in
``dife.coords``). Anchor names are the image-side keypoint names of the
development set: the glasses use ``eye_left_img``, ``eye_right_img`` and
``nose``, the party hat only the two eyes. Both assets
are laid out for an inter-ocular distance of 100 asset pixels, with the nose
tip 0.6 inter-ocular distances below the eyes' midpoint (the median of the
human, dog and cat faces of ``../shared/data/faces``).

Shapes are drawn at 4x and reduced with a box filter (on premultiplied alpha),
which anti-aliases every edge. The output is deterministic for a given Pillow
version; run it from the repository root::

    python tools/make_assets.py            # writes dife/assets/*.png, *.json
    python tools/make_assets.py --out DIR  # somewhere else
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

SS = 4  # super-sampling factor
IOD = 100.0  # inter-ocular distance in asset pixels
NOSE_DROP = 0.6 * IOD  # nose tip below the eyes' midpoint


class Canvas:
    """A 4x RGBA drawing surface addressed in final pixel-centre coordinates."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.image = Image.new("RGBA", (width * SS, height * SS), (0, 0, 0, 0))

    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        """A fresh transparent layer to draw on (composited with ``paste``)."""
        im = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        return im, ImageDraw.Draw(im)

    def paste(self, layer: Image.Image) -> None:
        self.image = Image.alpha_composite(self.image, layer)

    @staticmethod
    def p(x: float, y: float) -> tuple[float, float]:
        """Final pixel-centre coordinates -> 4x pixel-centre coordinates."""
        return (x + 0.5) * SS - 0.5, (y + 0.5) * SS - 0.5

    def box(self, cx: float, cy: float, rx: float, ry: float | None = None) -> list[float]:
        """Ellipse bounding box around a final-coordinate centre."""
        ry = rx if ry is None else ry
        X, Y = self.p(cx, cy)
        return [X - rx * SS, Y - ry * SS, X + rx * SS, Y + ry * SS]

    def poly(self, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [self.p(x, y) for x, y in pts]

    def finish(self) -> Image.Image:
        # Box-filter reduction on premultiplied alpha: no dark fringes.
        return self.image.resize((self.width, self.height), Image.Resampling.BOX)


def glasses() -> tuple[Image.Image, dict[str, list[float]]]:
    """Round sunglasses with the lens centres on the eyes."""
    w, h = 256, 120
    cx = (w - 1) / 2.0
    ey = 52.0
    el, er = cx - IOD / 2, cx + IOD / 2
    r_lens, frame = 41.0, 5.0
    c = Canvas(w, h)
    frame_rgba = (24, 24, 32, 255)

    # temples (the arms' stubs, going out and slightly up)
    im, d = c.layer()
    for sgn, ex in ((-1, el), (1, er)):
        x0 = ex + sgn * (r_lens - 2)
        pts = [(x0, ey - 12), (x0 + sgn * 34, ey - 18), (x0 + sgn * 34, ey - 12), (x0, ey - 4)]
        d.polygon(c.poly(pts), fill=frame_rgba)
    c.paste(im)

    # tinted lenses with a soft highlight
    im, d = c.layer()
    for ex in (el, er):
        d.ellipse(c.box(ex, ey, r_lens), fill=(32, 44, 78, 190))
    c.paste(im)
    im, d = c.layer()
    for ex in (el, er):
        d.arc(c.box(ex, ey, r_lens - 11), start=200, end=250, fill=(255, 255, 255, 150), width=int(4 * SS))
        d.ellipse(c.box(ex + 18, ey + 16, 4), fill=(255, 255, 255, 90))
    c.paste(im)

    # frame rings and bridge
    im, d = c.layer()
    for ex in (el, er):
        d.ellipse(c.box(ex, ey, r_lens + frame / 2), outline=frame_rgba, width=int(frame * SS))
    bridge = c.box(cx, ey + 2, IOD / 2 - r_lens + 4, 10)
    d.arc(bridge, start=195, end=345, fill=frame_rgba, width=int(4 * SS))
    c.paste(im)

    anchors = {"eye_left_img": [el, ey], "eye_right_img": [er, ey], "nose": [cx, ey + NOSE_DROP]}
    return c.finish(), anchors


def party_hat() -> tuple[Image.Image, dict[str, list[float]]]:
    """A striped cone hat with a pompom, sitting 0.85 inter-ocular distances above the eyes (on the forehead)."""
    w, h = 200, 310
    cx = (w - 1) / 2.0
    ey = 296.0
    el, er = cx - IOD / 2, cx + IOD / 2
    base_y = ey - 0.85 * IOD
    apex_y = 30.0
    half = 68.0
    c = Canvas(w, h)

    # cone with diagonal stripes, clipped to the cone by a mask
    cone = [(cx - half, base_y), (cx + half, base_y), (cx, apex_y)]
    body, d = c.layer()
    d.polygon(c.poly(cone), fill=(233, 62, 98, 255))
    stripes, ds = c.layer()
    step = 34.0
    for k in range(-6, 8):
        x0 = cx - half + k * step
        band = [(x0, base_y + 10), (x0 + 14, base_y + 10), (x0 + 14 + 150, base_y - 240), (x0 + 150, base_y - 240)]
        ds.polygon(c.poly(band), fill=(255, 207, 64, 255))
    mask = Image.new("L", body.size, 0)
    ImageDraw.Draw(mask).polygon(c.poly(cone), fill=255)
    body.paste(stripes, (0, 0), Image.composite(stripes.getchannel("A"), Image.new("L", body.size, 0), mask))
    c.paste(body)

    # confetti dots inside the cone
    im, d = c.layer()
    for i, (dx, dy, col) in enumerate(
        [(-30, -20, (64, 180, 255)), (20, -45, (120, 220, 120)), (-5, -85, (64, 180, 255)), (28, -10, (250, 250, 250))]
    ):
        d.ellipse(c.box(cx + dx, base_y + dy, 4.5 - 0.3 * i), fill=(*col, 255))
    c.paste(im)

    # scalloped trim along the base
    im, d = c.layer()
    n = 7
    for i in range(n):
        x = cx - half + (i + 0.5) * (2 * half / n)
        d.ellipse(c.box(x, base_y, 2 * half / n / 2 + 1.5, 7), fill=(250, 250, 250, 255))
    c.paste(im)

    # pompom: a ring of small puffs around a core
    im, d = c.layer()
    for k in range(10):
        a = 2 * math.pi * k / 10
        d.ellipse(c.box(cx + 11 * math.cos(a), apex_y + 11 * math.sin(a), 8), fill=(255, 236, 120, 255))
    d.ellipse(c.box(cx, apex_y, 13), fill=(255, 246, 170, 255))
    c.paste(im)

    # Eyes only: a hat should follow the eye line, not a (possibly profile) nose.
    anchors = {"eye_left_img": [el, ey], "eye_right_img": [er, ey]}
    return c.finish(), anchors


ASSETS = {"glasses": glasses, "party_hat": party_hat}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "dife" / "assets")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in ASSETS.items():
        image, anchors = draw()
        image.save(args.out / f"{name}.png", optimize=True)
        meta = {
            "name": name,
            "size": list(image.size),
            "coordinates": "asset pixels, (x, y), integer = pixel centre",
            "anchors": {k: [round(float(v), 3) for v in xy] for k, xy in anchors.items()},
        }
        (args.out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
