"""Crop protocols of dife.eval."""

from __future__ import annotations

import numpy as np
import pytest

from dife.errors import InputError, KeypointError
from dife.eval.crops import SubCrop, apply_crop, jitter_box, make_view
from dife.eval.readers import Face


def _face(fid: str = "f", size: int = 128) -> Face:
    img = np.zeros((size, size, 3), dtype=np.uint8)
    kps = {"eye_left_img": (40.0, 50.0), "eye_right_img": (88.0, 50.0), "nose": (64.0, 80.0)}
    for c, (x, y) in enumerate(kps.values()):
        img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2, c] = 255
    return Face(fid, "dog", img, kps)


def _centroid(img: np.ndarray, c: int) -> np.ndarray:
    w = np.clip(img[..., c].astype(float) - img[..., [k for k in range(3) if k != c]].max(axis=2), 0, None)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def test_aligned_is_the_face_itself():
    f = _face()
    assert make_view(f, "aligned") is f


def test_jittered_keeps_keypoints_inside_is_deterministic_and_varies():
    views = [make_view(_face(f"id{i}"), "jittered", seed=0) for i in range(40)]
    for v in views:
        assert v.image.shape == (128, 128, 3)
        pts = np.array(list(v.keypoints.values()))
        assert np.all(pts >= -0.5) and np.all(pts <= 127.5)
    again = make_view(_face("id3"), "jittered", seed=0)
    assert again.keypoints == views[3].keypoints and np.array_equal(again.image, views[3].image)
    assert make_view(_face("id3"), "jittered", seed=1).keypoints != views[3].keypoints
    # zoom factors spread over the scale range: the inter-ocular distance grows by 1 / scale
    zoom = np.array([(v.keypoints["eye_right_img"][0] - v.keypoints["eye_left_img"][0]) / 48.0 for v in views])
    assert zoom.min() >= 1.0 - 1e-9 and zoom.max() <= 1.0 / 0.55 + 1e-9
    assert zoom.max() - zoom.min() > 0.3


def test_jittered_keypoints_follow_the_pixels():
    v = make_view(_face("marks"), "jittered", seed=2)
    for c, name in enumerate(("eye_left_img", "eye_right_img", "nose")):
        assert np.abs(_centroid(v.image, c) - np.array(v.keypoints[name])).max() < 0.3


def test_jitter_box_bounds_and_wide_spans():
    rng = np.random.default_rng(0)
    pts = np.array([[0.0, 10.0], [99.0, 20.0]])  # spans the whole width of a 100 x 60 image
    for _ in range(5):
        b = jitter_box(pts, 100, 60, rng)
        assert (b.left, b.top, b.side) == pytest.approx((0.5, 0.0, 99.0))  # no square inside fits: the span
    v = apply_crop(Face("w", "cat", np.full((60, 100, 3), 200, np.uint8), {"nose": (99.0, 20.0)}), b, out_size=50)
    assert v.image.shape == (50, 50, 3) and v.image[5, 5, 0] > 150 and v.image[45, 25, 0] == 0  # black below
    assert v.keypoints["nose"] == pytest.approx((49.5, 20.5 * 50 / 99 - 0.5))
    pts = np.array([[30.0, 30.0], [40.0, 35.0]])
    for _ in range(50):
        b = jitter_box(pts, 100, 100, rng, scale=(0.2, 0.5))
        assert 20.0 <= b.side <= 50.0
        assert b.left >= 0 and b.top >= 0 and b.left + b.side <= 100 and b.top + b.side <= 100
        assert b.left <= 30.5 and b.left + b.side >= 40.5 and b.top <= 30.5 and b.top + b.side >= 35.5
    with pytest.raises(InputError):
        jitter_box(pts, 100, 100, rng, scale=(0.0, 1.0))
    with pytest.raises(KeypointError):
        jitter_box(np.array([[120.0, 3.0]]), 100, 100, rng)


def test_apply_crop_maps_points():
    f = _face()
    v = apply_crop(f, SubCrop(32.0, 40.0, 64.0), out_size=128)
    x, y = v.keypoints["nose"]
    assert (x, y) == pytest.approx(((64 + 0.5 - 32) * 2 - 0.5, (80 + 0.5 - 40) * 2 - 0.5))
    with pytest.raises(InputError, match="unknown protocol"):
        make_view(f, "rotated")
