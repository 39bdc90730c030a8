"""Tests of dife.viz: the fixed colour projection and the drawing helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dife.coords import square_crop
from dife.embedding import Embedding
from dife.errors import InputError, KeypointError, ShapeError
from dife.viz import (
    PALETTE,
    draw_keypoints,
    draw_matches,
    draw_parts,
    embedding_to_rgb,
    projection_matrix,
    score_color,
)


def _embedding(seed: int, w: int = 40, h: int = 30, size: int = 8, dim: int = 16, box=None) -> Embedding:
    f = torch.nn.functional.normalize(
        torch.randn(1, dim, size, size, generator=torch.Generator().manual_seed(seed)), dim=1
    )
    return Embedding(f, [square_crop(w, h, size, box)])


def _centroid(img: Image.Image, channel: int) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    w = np.clip(a[..., channel] - np.delete(a, channel, axis=-1).max(-1), 0, None)
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


# ------------------------------------------------------------ embedding_to_rgb
def test_projection_is_fixed_and_orthonormal() -> None:
    P = projection_matrix(16)
    assert P.shape == (3, 16)
    np.testing.assert_allclose(P @ P.T, np.eye(3), atol=1e-12)
    assert np.array_equal(P, projection_matrix(16))
    # the same matrix as a fresh draw from default_rng(0): no hidden state
    q, r = np.linalg.qr(np.random.default_rng(0).standard_normal((16, 3)))
    np.testing.assert_allclose(P, (q * np.sign(np.diag(r))).T, atol=1e-12)
    assert projection_matrix(32).shape == (3, 32)
    with pytest.raises(InputError):
        projection_matrix(2)


def test_same_descriptor_same_colour_across_embeddings() -> None:
    a, b = _embedding(0), _embedding(1)
    # put one descriptor of image a at another position of image b
    b.features[0, :, 5, 2] = a.features[0, :, 1, 6]
    ca, cb = embedding_to_rgb(a), embedding_to_rgb(b)
    assert ca.shape == (8, 8, 3) and ca.dtype == np.uint8
    assert np.array_equal(ca[1, 6], cb[5, 2])
    # different descriptors: (almost always) different colours; per-image
    # normalisation would make the two maps span the same range, this does not
    assert not np.array_equal(ca, cb)
    # raw, un-normalised features give the same colours (scale invariance)
    assert np.array_equal(embedding_to_rgb(a.features * 7.5), ca)
    assert np.array_equal(embedding_to_rgb(a.features[0].numpy()), ca)


def test_colour_of_a_known_descriptor() -> None:
    P = projection_matrix(16)
    e = P[0]  # unit vector along the red axis
    f = np.tile(e[:, None, None], (1, 2, 2))
    rgb = embedding_to_rgb(f)
    assert rgb[0, 0, 0] > 230 and 120 <= rgb[0, 0, 1] <= 135 and 120 <= rgb[0, 0, 2] <= 135
    rgb_neg = embedding_to_rgb(-f)
    assert rgb_neg[0, 0, 0] < 25


def test_embedding_to_rgb_at_image_resolution() -> None:
    # 40x30 image, box -> crop side 24 at left=8, top=3: 3 image px per grid px
    emb = _embedding(2, w=40, h=30, size=8, box=(8, 3, 32, 27))
    grid = embedding_to_rgb(emb)
    full = embedding_to_rgb(emb, at_image_resolution=True)
    assert full.shape == (30, 40, 3) and full.dtype == np.uint8
    # outside the crop: black
    assert not full[:, :8].any() and not full[:, 32:].any() and not full[:3].any() and not full[27:].any()
    # image pixel (3 j + 9, 3 i + 4) is the centre of grid pixel (j, i)
    j = np.arange(8)
    np.testing.assert_array_equal(full[np.ix_(3 * j + 4, 3 * j + 9)], grid)
    with pytest.raises(InputError, match="Embedding"):
        embedding_to_rgb(emb.features, at_image_resolution=True)


def test_embedding_to_rgb_index_and_errors() -> None:
    f = torch.randn(3, 16, 4, 4)
    assert np.array_equal(embedding_to_rgb(f, index=2), embedding_to_rgb(f[2]))
    with pytest.raises(InputError, match="index"):
        embedding_to_rgb(f, index=3)
    with pytest.raises(ShapeError):
        embedding_to_rgb(torch.randn(16, 4))
    bad = torch.randn(16, 4, 4)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        embedding_to_rgb(bad)


# ---------------------------------------------------------------- drawing
def test_draw_keypoints_at_pixel_centres() -> None:
    base = np.zeros((40, 50, 3), np.uint8)
    out = draw_keypoints(base, [[10, 20], [30.0, 7.0]], colors=[(255, 0, 0), (0, 0, 255)], radius=3)
    assert isinstance(out, Image.Image) and out.size == (50, 40) and out.mode == "RGB"
    np.testing.assert_allclose(_centroid(out, 0), [10, 20], atol=0.05)
    np.testing.assert_allclose(_centroid(out, 2), [30, 7], atol=0.05)
    a = np.asarray(out)
    assert tuple(a[20, 10]) == (255, 0, 0)  # the marker covers its pixel
    assert not base.any()  # input untouched
    pil = Image.fromarray(base)
    draw_keypoints(pil, {"nose": (25, 25)}, radius=2)
    assert not np.asarray(pil).any()


def test_draw_keypoints_names_colours_and_errors() -> None:
    base = np.full((60, 80, 3), 128, np.uint8)
    plain = np.asarray(draw_keypoints(base, {"nose": (20, 30)}, names=[""], radius=2))
    named = np.asarray(draw_keypoints(base, {"nose": (20, 30)}, radius=2))  # dict keys as labels
    assert (named != plain).any()
    one = np.asarray(draw_keypoints(base, [[20, 30]], colors="lime", radius=2))
    assert tuple(one[30, 20]) == (0, 255, 0)
    assert tuple(np.asarray(draw_keypoints(base, [[20, 30]], radius=2))[30, 20]) == PALETTE[0]
    with pytest.raises(ShapeError):
        draw_keypoints(base, [[1, 2, 3]])
    with pytest.raises(KeypointError):
        draw_keypoints(base, [[np.nan, 2]])
    with pytest.raises(InputError, match="names"):
        draw_keypoints(base, [[1, 2]], names=["a", "b"])
    with pytest.raises(InputError, match="colours"):
        draw_keypoints(base, [[1, 2], [3, 4]], colors=[(1, 2, 3)] * 3)
    with pytest.raises(InputError, match="radius"):
        draw_keypoints(base, [[1, 2]], radius=0)


def test_draw_matches_layout_and_scores() -> None:
    a = np.zeros((40, 30, 3), np.uint8)
    b = np.zeros((50, 20, 3), np.uint8)
    out = draw_matches(a, b, [[5, 5], [20, 30]], [[10, 40], [3, 3]], radius=2, line_width=1)
    assert out.size == (50, 50)
    arr = np.asarray(out)
    assert tuple(arr[40, 30 + 10]) == PALETTE[0]  # target point drawn at the offset
    assert tuple(arr[5, 5]) == PALETTE[0]
    assert not arr[45:, :30].any()  # padding below the shorter image stays black
    # scores colour the lines: red for 0, green for 1
    sc = np.asarray(draw_matches(a, b, [[5, 5], [20, 30]], [[10, 40], [3, 3]], scores=[0.0, 1.0], radius=2))
    r0, r1 = sc[5, 5], sc[30, 20]
    assert r0[0] > 200 and r0[1] < 80 and r1[1] > 200 and r1[0] < 80
    assert score_color(0.5)[0] > 200 and score_color(0.5)[1] > 200
    assert score_color(7) == score_color(1) and score_color(-1) == score_color(0)

    class Scores:
        confidence = np.array([0.0, 1.0])

    assert np.array_equal(
        np.asarray(draw_matches(a, b, [[5, 5], [20, 30]], [[10, 40], [3, 3]], scores=Scores(), radius=2)), sc
    )
    with pytest.raises(ShapeError, match="2 points"):
        draw_matches(a, b, [[5, 5], [20, 30]], [[1, 1]])
    with pytest.raises(InputError, match="scores"):
        draw_matches(a, b, [[5, 5]], [[1, 1]], scores=[0.1, 0.2])
    with pytest.raises(KeypointError):
        draw_matches(a, b, {"x": (1, 1)}, {"y": (1, 1)})


def test_draw_parts() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    labels = np.full((20, 30), -1, np.int32)
    labels[5:10, 5:10] = 0
    labels[12:, 20:] = 23  # beyond the palette: wraps around
    out = np.asarray(draw_parts(img, labels, alpha=1.0))
    assert out.shape == (20, 30, 3)
    assert np.array_equal(out[labels == -1], img[labels == -1])  # -1 transparent
    assert np.all(out[5:10, 5:10] == PALETTE[0])
    assert np.all(out[12:, 20:] == PALETTE[23 % len(PALETTE)])
    half = np.asarray(draw_parts(img, labels, alpha=0.5)).astype(int)
    expect = np.round(img[7, 7] * 0.5 + np.array(PALETTE[0]) * 0.5)
    np.testing.assert_allclose(half[7, 7], expect, atol=1)
    assert np.array_equal(np.asarray(draw_parts(img, labels, alpha=0.0)), img)
    assert len(set(PALETTE)) == len(PALETTE)
    with pytest.raises(ShapeError, match=r"\(20, 30\)"):
        draw_parts(img, labels[:, :10])
    with pytest.raises(InputError, match="alpha"):
        draw_parts(img, labels, alpha=2)
    with pytest.raises(InputError, match="integers"):
        draw_parts(img, labels + 0.5)
