"""Keypoint and dense transfer.

Exactness tests use :class:`PositionalDIFE`, a model whose embedding is a
Fourier code of the red and green channels; the test images carry linear
ramps in those channels, so every pixel's descriptor encodes its position in
a larger "canvas" and the right answer of any transfer is known. The blue
channel is noise the model ignores (it makes warps checkable). Plumbing tests
use the random ``tiny_model`` where a real network matters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dife.config import DIFEConfig
from dife.errors import InputError, KeypointError, ShapeError
from dife.modeling import DIFE
from dife.transfer import DenseCorrespondence, KeypointScores, transfer_dense, transfer_keypoints

SLOPE = 0.005  # ramp value per canvas pixel


class PositionalDIFE(DIFE):
    """DIFE whose embedding is [cos, sin](2 pi f v) of the R and G values v, 16 channels."""

    def __init__(self, freqs: tuple[float, ...] = (0.5, 2.0, 8.0, 24.0)) -> None:
        config = DIFEConfig(
            embed_dim=4 * len(freqs),
            domains=(),
            converter_dim=0,
            planes_conv1=16,
            planes_block=16,
            planes_hg=16,
            num_blocks=1,
            depth=1,
        )
        super().__init__(config)
        self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x[:, :2] + 1.0) / 2.0  # undo the (rgb - 0.5) / 0.5 normalisation
        ang = 2 * math.pi * v[:, :, None] * self.freqs.view(1, 1, -1, 1, 1)
        return torch.cat([ang.cos(), ang.sin()], dim=2).flatten(1, 2)


@pytest.fixture(scope="module")
def pos_model() -> PositionalDIFE:
    return PositionalDIFE().eval()


def canvas(width: int = 200, height: int = 200, seed: int = 0) -> torch.Tensor:
    """(3, H, W) float image: R = 0.1 + SLOPE * x, G = 0.1 + SLOPE * y, B = noise."""
    x = torch.arange(width, dtype=torch.float32)
    y = torch.arange(height, dtype=torch.float32)
    r = (0.1 + SLOPE * x)[None].expand(height, width)
    g = (0.1 + SLOPE * y)[:, None].expand(height, width)
    b = torch.rand(height, width, generator=torch.Generator().manual_seed(seed))
    return torch.stack([r, g, b]).contiguous()


def crop(img: torch.Tensor, x0: int, y0: int, w: int, h: int) -> torch.Tensor:
    return img[:, y0 : y0 + h, x0 : x0 + w].contiguous()


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


# ------------------------------------------------------------- exactness
def test_round_trip_square_image_interior_and_border(pos_model):
    img = crop(canvas(), 20, 10, 96, 96)
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(2, 93, (40, 2)), [[0, 0], [95, 95], [0, 95], [95, 0], [47.3, 0]]])
    out, scores = transfer_keypoints(img, img, pts, model=pos_model, return_scores=True)
    assert out.shape == pts.shape and out.dtype == np.float64
    assert _err(out, pts) < 0.5
    assert _err(out[:40], pts[:40]) < 0.2  # refinement is sub-pixel away from the border
    assert scores.mutual.all()
    assert scores.similarity.min() > 0.97
    # the points on the outer pixel edges are still within a pixel
    edge = np.array([[-0.5, -0.5], [95.5, 95.5], [40.0, -0.5]])
    assert _err(transfer_keypoints(img, img, edge, model=pos_model), edge) < 1.0
    # without refinement: nearest pixel centre
    hard = transfer_keypoints(img, img, pts, model=pos_model, refine=False)
    np.testing.assert_allclose(hard, np.clip(np.round(pts), 0, 95), atol=1e-4)


def test_round_trip_non_square_image_with_box(pos_model):
    img = crop(canvas(), 5, 30, 150, 110)  # 150 x 110
    box = (20, 8, 120, 104)  # square side 100 -> scale 100 / 96
    rng = np.random.default_rng(1)
    pts = np.stack([rng.uniform(22, 118, 30), rng.uniform(10, 102, 30)], 1)
    out, scores = transfer_keypoints(img, img, pts, src_box=box, tgt_box=box, model=pos_model, return_scores=True)
    assert _err(out, pts) < 0.5
    assert scores.mutual.all()


def test_points_outside_the_crop_are_allowed_but_not_mutual(pos_model):
    img = crop(canvas(), 0, 0, 128, 96)  # no box: crop is x in [16, 112)
    pts = np.array([[3.0, 40.0], [60.0, 40.0], [125.0, 10.0]])
    out, scores = transfer_keypoints(img, img, pts, model=pos_model, return_scores=True)
    assert scores.mutual.tolist() == [False, True, False]
    assert abs(out[1] - pts[1]).max() < 0.5
    # outside points are matched from the nearest crop border pixel
    assert abs(out[0, 0] - 16.0) < 0.5 and abs(out[2, 0] - 111.0) < 0.5
    np.testing.assert_allclose(scores.confidence, np.clip(scores.similarity, 0, 1) * np.where(scores.mutual, 1, 0.5))


def test_known_shift_moves_points_by_the_shift(pos_model):
    big = canvas()
    src = crop(big, 20, 10, 96, 96)
    tgt = crop(big, 15, 13, 96, 96)  # content at src (x, y) sits at tgt (x + 5, y - 3)
    rng = np.random.default_rng(2)
    pts = np.stack([rng.uniform(3, 88, 30), rng.uniform(6, 92, 30)], 1)
    out = transfer_keypoints(src, tgt, pts, model=pos_model)
    assert _err(out, pts + [5.0, -3.0]) < 0.5


def test_known_scale_and_shift_in_the_target(pos_model):
    src = crop(canvas(), 20, 10, 96, 96)
    # target: the source upsampled 1.5x (a linear ramp stays exact) inside a bigger frame, with a box
    up = F.interpolate(src[None], scale_factor=1.5, mode="bilinear", align_corners=False)[0]
    tgt = torch.zeros(3, 170, 160)
    tgt[:, 20:164, 10:154] = up
    box = (10, 20, 154, 164)
    rng = np.random.default_rng(3)
    pts = rng.uniform(3, 92, (30, 2))
    out = transfer_keypoints(src, tgt, pts, tgt_box=box, model=pos_model)
    expected = (pts + 0.5) * 1.5 - 0.5 + [10.0, 20.0]
    assert _err(out, expected) < 0.5 * 1.5


def test_one_source_to_many_targets(pos_model):
    big = canvas()
    src = crop(big, 20, 10, 96, 96)
    shifts = [(0, 0), (4, 2), (-3, 5)]
    tgts = [crop(big, 20 + dx, 10 + dy, 96, 96) for dx, dy in shifts]
    pts = np.array([[30.0, 40.0], [50.5, 60.25], [70.0, 20.0]])
    out, scores = transfer_keypoints(src, tgts, pts, model=pos_model, return_scores=True, batch_size=2)
    assert out.shape == (3, 3, 2)
    assert scores.similarity.shape == scores.mutual.shape == scores.confidence.shape == (3, 3)
    for t, (dx, dy) in enumerate(shifts):
        assert _err(out[t], pts - [dx, dy]) < 0.5
        np.testing.assert_allclose(out[t], transfer_keypoints(src, tgts[t], pts, model=pos_model), atol=1e-5)
    # a (T, 3, H, W) tensor of targets is a batch too
    assert transfer_keypoints(src, torch.stack(tgts), pts, model=pos_model).shape == (3, 3, 2)


def test_pairwise_and_many_to_one(pos_model):
    big = canvas()
    srcs = [crop(big, 20, 10, 96, 96), crop(big, 30, 40, 96, 96)]
    tgts = [crop(big, 22, 12, 96, 96), crop(big, 25, 45, 96, 96)]
    pts = np.array([[[30.0, 40.0], [60.0, 50.0]], [[20.0, 20.0], [80.0, 70.0]]])
    out = transfer_keypoints(srcs, tgts, pts, model=pos_model, batch_size=1)
    assert out.shape == (2, 2, 2)
    assert _err(out[0], pts[0] - [2, 2]) < 0.5
    assert _err(out[1], pts[1] + [5, -5]) < 0.5
    # many sources to one target
    one = transfer_keypoints(srcs, tgts[0], pts, model=pos_model)
    assert one.shape == (2, 2, 2)
    assert _err(one[0], pts[0] - [2, 2]) < 0.5
    assert _err(one[1, 0], pts[1, 0] + [30 - 22, 40 - 12]) < 0.5  # (pts[1, 1] has no match in tgts[0])
    # a single source with (1, N, 2) points
    assert transfer_keypoints(srcs[0], tgts[0], pts[:1], model=pos_model).shape == (1, 2, 2)


def test_chunk_size_does_not_change_results(pos_model):
    img = crop(canvas(), 20, 10, 96, 96)
    pts = np.random.default_rng(4).uniform(0, 95, (25, 2))
    a = transfer_keypoints(img, img, pts, model=pos_model, chunk_size=3)
    b = transfer_keypoints(img, img, pts, model=pos_model)
    np.testing.assert_allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------- plumbing
def test_output_types_follow_the_points(tiny_model, pos_model):
    img = (np.random.default_rng(5).uniform(0, 255, (70, 90, 3))).astype(np.uint8)
    pts = [[10, 20], [45.5, 35.0]]
    out = transfer_keypoints(img, img, pts, model=tiny_model)  # a real (random) DIFE network
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (2, 2)
    t_out, sc = transfer_keypoints(
        img, img, torch.tensor(pts, dtype=torch.float32), model=tiny_model, return_scores=True
    )
    assert isinstance(t_out, torch.Tensor) and t_out.dtype == torch.float32
    assert isinstance(sc, KeypointScores) and sc.mutual.dtype == torch.bool and sc.similarity.shape == (2,)
    np.testing.assert_allclose(t_out.numpy(), out, atol=1e-4)
    t64 = transfer_keypoints(img, img, torch.tensor(pts, dtype=torch.float64), model=pos_model)
    assert t64.dtype == torch.float64
    t_int = transfer_keypoints(img, img, torch.tensor([[10, 20]]), model=pos_model)
    assert t_int.dtype == torch.float32 and t_int.shape == (1, 2)


def test_scores_are_in_range_and_points_inside_target(pos_model):
    rng = np.random.default_rng(6)
    src = rng.uniform(0, 1, (64, 64, 3)).astype(np.float32)
    tgt = rng.uniform(0, 1, (80, 50, 3)).astype(np.float32)
    pts = rng.uniform(0, 63, (30, 2))
    out, sc = transfer_keypoints(src, tgt, pts, tgt_box=(-20, -10, 60, 90), model=pos_model, return_scores=True)
    assert np.all((sc.similarity >= -1 - 1e-6) & (sc.similarity <= 1 + 1e-6))
    assert np.all((sc.confidence >= 0) & (sc.confidence <= 1))
    assert sc.mutual.dtype == bool
    np.testing.assert_allclose(sc.confidence, np.clip(sc.similarity, 0, 1) * np.where(sc.mutual, 1.0, 0.5))
    assert np.all((out[:, 0] >= -0.5) & (out[:, 0] <= 49.5) & (out[:, 1] >= -0.5) & (out[:, 1] <= 79.5))


def test_shape_errors_name_the_shapes(pos_model):
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ShapeError, match=r"\(3, 3\)"):
        transfer_keypoints(img, img, np.zeros((3, 3)), model=pos_model)
    with pytest.raises(ShapeError, match=r"\(2, 3, 2\).*one source image"):
        transfer_keypoints(img, img, np.zeros((2, 3, 2)), model=pos_model)
    with pytest.raises(ShapeError, match=r"\(3, 2\).*2 source images"):
        transfer_keypoints([img, img], img, np.zeros((3, 2)), model=pos_model)
    with pytest.raises(ShapeError, match=r"3 targets"):
        transfer_keypoints([img, img], [img, img, img], np.zeros((2, 3, 2)), model=pos_model)
    with pytest.raises(ShapeError, match=r"\(3, 2, 2\).*2 source images"):
        transfer_keypoints([img, img], [img, img], np.zeros((3, 2, 2)), model=pos_model)
    with pytest.raises(InputError, match="3 boxes for 2 images"):
        transfer_keypoints([img, img], img, np.zeros((2, 1, 2)), src_box=[None] * 3, model=pos_model)
    with pytest.raises(InputError, match="window"):
        transfer_keypoints(img, img, [[1, 1]], window=4, model=pos_model)


def test_points_outside_the_image_raise_keypoint_error(pos_model):
    img = np.zeros((60, 80, 3), np.uint8)
    with pytest.raises(KeypointError, match=r"points\[1\] = \(80, 5\)"):
        transfer_keypoints(img, img, [[1, 1], [80, 5]], model=pos_model)
    with pytest.raises(KeypointError, match=r"points\[1\]"):
        transfer_keypoints([img, img], img, [[[1, 1]], [[2, -0.6]]], model=pos_model)
    with pytest.raises(KeypointError, match="NaN"):
        transfer_keypoints(img, img, [[np.nan, 1]], model=pos_model)
    # the outer pixel edges are inside
    transfer_keypoints(img, img, [[-0.5, -0.5], [79.5, 59.5]], model=pos_model)


# ------------------------------------------------------------------ dense
def test_dense_identity_field_and_warp(pos_model):
    img = crop(canvas(seed=7), 20, 10, 96, 96)
    dc = transfer_dense(img, img, model=pos_model)
    assert isinstance(dc, DenseCorrespondence) and len(dc) == 96 * 96
    assert dc.grid_shape == (96, 96) and dc.field.shape == (96, 96, 2)
    np.testing.assert_allclose(dc.tgt_points, dc.src_points, atol=1e-4)
    assert dc.mutual.all() and dc.similarity.min() > 0.99
    assert dc.field[5, 7].tolist() == pytest.approx([7.0, 5.0], abs=1e-4)  # row 5, column 7 -> (x=7, y=5)
    warped = dc.warp(img)
    expected = (img.permute(1, 2, 0).numpy() * 255).round()
    assert warped.shape == (96, 96, 3) and warped.dtype == np.uint8
    assert np.abs(warped.astype(float) - expected).max() <= 1.0  # the noise channel too
    assert dc.warp(img, output_size=(48, 40)).shape == (40, 48, 3)


def test_dense_stride_and_known_shift_warp(pos_model):
    big = canvas(seed=8)
    src = crop(big, 20, 10, 96, 96)
    tgt = crop(big, 15, 13, 96, 96)  # src (x, y) -> tgt (x + 5, y - 3)
    dc = transfer_dense(src, tgt, model=pos_model, stride=4, refine=True)
    assert dc.grid_shape == (24, 24) and dc.src_points.shape == (576, 2)
    np.testing.assert_allclose(dc.src_points[1], [4.0, 0.0])
    inner = (dc.src_points[:, 0] < 88) & (dc.src_points[:, 1] > 5)
    assert _err(dc.tgt_points[inner], dc.src_points[inner] + [5, -3]) < 0.5
    warped = dc.warp(src).astype(float)
    expected = (tgt.permute(1, 2, 0).numpy() * 255).round()
    # where the target content exists in the source: tgt x >= 5... and y < 93
    assert np.abs(warped[:92, 6:] - expected[:92, 6:]).max() <= 2.0


def test_dense_black_outside_target_crop_and_chunking(pos_model):
    src = crop(canvas(), 20, 10, 96, 96)
    tgt = crop(canvas(), 0, 0, 128, 96)  # crop x in [16, 112): the sides are black in the warp
    a = transfer_dense(src, tgt, model=pos_model, stride=3, chunk_size=500)
    b = transfer_dense(src, tgt, model=pos_model, stride=3)
    np.testing.assert_allclose(a.tgt_points, b.tgt_points, atol=1e-4)
    np.testing.assert_allclose(a.similarity, b.similarity, atol=1e-6)
    assert np.array_equal(a.mutual, b.mutual)
    np.testing.assert_allclose(a.inverse_field, b.inverse_field, atol=1e-4)
    w = a.warp(src)
    assert w.shape == (96, 128, 3)
    assert w[:, :16].max() == 0 and w[:, 112:].max() == 0 and w[:, 16:112].max() > 0


def test_dense_errors(pos_model):
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="one source and one target"):
        transfer_dense([img, img], img, model=pos_model)
    with pytest.raises(InputError, match="stride"):
        transfer_dense(img, img, model=pos_model, stride=0)
    dc = transfer_dense(img, img, model=pos_model, stride=8)
    assert dc.field.shape == (12, 12, 2)
    with pytest.raises(ShapeError, match="32x64"):
        dc.warp(np.zeros((64, 32, 3), np.uint8))
    with pytest.raises(InputError, match="output_size"):
        dc.warp(img, output_size=(0, 5))


# ------------------------------------------------------------- spatial prior
class FlatDIFE(DIFE):
    """DIFE whose embedding is the same vector everywhere: appearance cannot decide."""

    def __init__(self, spatial_prior: float = 0.0) -> None:
        config = DIFEConfig(
            embed_dim=4,
            domains=(),
            converter_dim=0,
            planes_conv1=16,
            planes_block=16,
            planes_hg=16,
            num_blocks=1,
            depth=1,
            spatial_prior=spatial_prior,
        )
        super().__init__(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 4, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)


def test_spatial_prior_decides_where_appearance_cannot():
    src = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(1))
    tgt = torch.rand(3, 192, 192, generator=torch.Generator().manual_seed(2))
    pts = np.array([[30.0, 60.0], [80.0, 10.0]])
    flat = FlatDIFE().eval()
    # without a prior every target pixel ties and the first (top-left) wins
    plain = transfer_keypoints(src, tgt, pts, model=flat, refine=False)
    assert _err(plain, [[0.5, 0.5], [0.5, 0.5]]) < 1e-6
    # with one, the match is the source point's relative position in the target crop
    want = (pts + 0.5) * 2 - 0.5
    got, scores = transfer_keypoints(src, tgt, pts, model=flat, spatial_prior=1.0, return_scores=True)
    assert _err(got, want) < 1e-4  # soft-argmax refinement of a symmetric peak: float32 rounding only
    np.testing.assert_allclose(scores.similarity, 1.0, atol=1e-6)  # the cosine, not the prior-penalised score
    # the model's config supplies the default; an explicit 0 switches it off
    assert _err(transfer_keypoints(src, tgt, pts, model=FlatDIFE(0.5).eval(), refine=False), want) < 1e-6
    assert (
        _err(transfer_keypoints(src, tgt, pts, model=FlatDIFE(0.5).eval(), spatial_prior=0, refine=False), plain) < 1e-6
    )


def test_spatial_prior_does_not_override_clear_appearance(pos_model):
    img = canvas(96, 96)
    shifted = crop(canvas(200, 200), 40, 10, 96, 96)  # the same ramp, seen 40 px left / 10 px up
    pts = np.array([[60.0, 70.0]])
    base = transfer_keypoints(img, shifted, pts, model=pos_model, spatial_prior=0.0)
    assert _err(base, pts - np.array([[40.0, 10.0]])) < 1.0
    weak = transfer_keypoints(img, shifted, pts, model=pos_model, spatial_prior=0.05)
    assert _err(weak, base) < 0.5


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "1", True])
def test_bad_spatial_prior_is_an_input_error(bad):
    with pytest.raises(InputError, match="spatial_prior"):
        transfer_keypoints(
            torch.rand(3, 32, 32), torch.rand(3, 32, 32), [[3.0, 4.0]], model=FlatDIFE(), spatial_prior=bad
        )
    with pytest.raises(Exception, match="spatial_prior"):
        DIFEConfig(spatial_prior=bad)


# ------------------------------------------------------- embed once, transfer many
class _Counting:
    """Counts the images each forward of a model receives."""

    def __init__(self, model: DIFE) -> None:
        self.calls: list[int] = []
        self.handle = model.register_forward_pre_hook(lambda m, args: self.calls.append(int(args[0].shape[0])))

    def close(self) -> None:
        self.handle.remove()


def test_embeddings_in_place_of_images(pos_model):
    from dife.embedding import embed

    big = canvas()
    src = crop(big, 20, 10, 96, 96)
    tgts = [crop(big, 24, 12, 96, 96), crop(big, 17, 15, 96, 96)]
    pts = np.array([[30.0, 40.0], [50.5, 60.25], [70.0, 20.0]])
    want, want_sc = transfer_keypoints(src, tgts, pts, model=pos_model, return_scores=True)
    src_e, tgt_e = embed(src, model=pos_model), embed(tgts, model=pos_model)
    for s, t in ((src_e, tgts), (src, tgt_e), (src_e, tgt_e)):
        got, sc = transfer_keypoints(s, t, pts, model=pos_model, return_scores=True)
        assert got.shape == (2, 3, 2)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(sc.similarity, want_sc.similarity, atol=1e-6)
        assert np.array_equal(sc.mutual, want_sc.mutual)
    # an Embedding of one image is one image: (N, 2) results
    assert transfer_keypoints(src_e, tgt_e[1], pts, model=pos_model).shape == (3, 2)
    np.testing.assert_allclose(transfer_keypoints(src_e, tgt_e[1], pts, model=pos_model), want[1], atol=1e-5)
    # both sides embedded and the prior given: the model is not even resolved
    got = transfer_keypoints(src_e, tgt_e, pts, model="no-such-model", spatial_prior=0.0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # pairwise and many-to-one with an Embedding of sources
    two = embed([src, tgts[0]], model=pos_model)
    pair = transfer_keypoints(two, tgt_e, np.stack([pts, pts]), model=pos_model)
    np.testing.assert_allclose(pair[0], want[0], atol=1e-5)
    # crops are chosen when embedding: no box with an Embedding
    with pytest.raises(InputError, match="src_box must be None when src is an Embedding"):
        transfer_keypoints(src_e, tgts[0], pts, src_box=(0, 0, 50, 50), model=pos_model)
    with pytest.raises(InputError, match="tgt_box must be None"):
        transfer_dense(src, tgt_e[0], tgt_box=(0, 0, 50, 50), model=pos_model)
    # points are checked against the embedded image
    with pytest.raises(KeypointError):
        transfer_keypoints(src_e, tgts[0], [[200.0, 10.0]], model=pos_model)


def test_embeddings_of_other_models_do_not_mix(pos_model, tiny_model):
    from dife.embedding import embed

    img = crop(canvas(), 20, 10, 96, 96)
    a = embed(img, model=pos_model)
    b = embed(
        img,
        model=DIFE(
            DIFEConfig(
                embed_dim=8,
                converter_dim=0,
                planes_conv1=8,
                planes_block=8,
                planes_hg=8,
                num_blocks=1,
                depth=1,
                gn_groups=4,
            )
        ).eval(),
    )
    with pytest.raises(ShapeError, match="16 channels but the target's has 8"):
        transfer_keypoints(a, b, [[3.0, 4.0]], model=pos_model)
    with pytest.raises(ShapeError, match="same model"):
        transfer_dense(a, b, model=pos_model)


def test_predictor_embeds_the_source_once(pos_model):
    from dife.transfer import TransferPredictor

    big = canvas()
    src = crop(big, 20, 10, 96, 96)
    shifts = [(0, 0), (4, 2), (-3, 5), (2, -2)]
    tgts = [crop(big, 20 + dx, 10 + dy, 96, 96) for dx, dy in shifts]
    pts = np.array([[30.0, 40.0], [50.5, 60.25]])
    p = TransferPredictor(pos_model)
    with pytest.raises(InputError, match="set_source"):
        p.transfer_keypoints(tgts[0], pts)
    count = _Counting(pos_model)
    try:
        p.set_source(src)
        outs = [p.transfer_keypoints(t, pts) for t in tgts]
        assert count.calls == [1, 1, 1, 1, 1]  # the source once, then each target
        both = p.transfer_keypoints(tgts[:2], pts)
        dense = p.transfer_dense(tgts[1], stride=8)
    finally:
        count.close()
    for out, (dx, dy), t in zip(outs, shifts, tgts, strict=True):
        assert _err(out, pts - [dx, dy]) < 0.5
        np.testing.assert_allclose(out, transfer_keypoints(src, t, pts, model=pos_model), atol=1e-6)
    assert both.shape == (2, 2, 2)
    want = transfer_dense(src, tgts[1], model=pos_model, stride=8)
    np.testing.assert_allclose(dense.tgt_points, want.tgt_points, atol=1e-6)
    assert np.array_equal(dense.mutual, want.mutual)
    assert p.source.features.shape == (1, 16, 96, 96) and len(p.source) == 1
    # options fixed by the predictor, and one source image only
    with pytest.raises(InputError, match="src_box is fixed by the predictor"):
        p.transfer_keypoints(tgts[0], pts, src_box=(0, 0, 9, 9))
    with pytest.raises(InputError, match="one image, got 2"):
        p.set_source([src, src])
    # a source given as an Embedding, with a face box chosen when it was embedded
    e = p.embed(crop(big, 0, 0, 150, 150), box=(20, 10, 116, 106))
    p.set_source(e)
    np.testing.assert_allclose(p.transfer_keypoints(tgts[1], pts + [20, 10]), outs[1], atol=1e-4)


def test_dense_mutual_is_the_mutual_nearest_check(tiny_model):
    """transfer_dense reads the mutual check off its backward map: the same as mutual_nearest."""
    from dife.embedding import embed
    from dife.matching import match, mutual_nearest

    rng = np.random.default_rng(11)
    a, b = (rng.integers(0, 256, (80, 90, 3), dtype=np.uint8) for _ in range(2))
    dc = transfer_dense(a, b, model=tiny_model, stride=2)
    sf, tf = embed(a, model=tiny_model).features[0], embed(b, model=tiny_model).features[0]
    idx = torch.arange(0, 96, 2)
    gy, gx = torch.meshgrid(idx, idx, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    _, _, peaks = match(sf[:, gy, gx].reshape(16, -1).t(), tf, refine=False)
    want = mutual_nearest(sf, tf, grid.float(), peaks.float()).numpy()
    inside = (dc.src_points >= -0.5).all(1) & (dc.src_points[:, 0] <= 89.5) & (dc.src_points[:, 1] <= 79.5)
    assert np.array_equal(dc.mutual, want & inside)
    assert 0 < dc.mutual.sum() < len(dc)
    # with Embeddings on both sides the model is not needed
    e = transfer_dense(embed(a, model=tiny_model), embed(b, model=tiny_model), model="no-such-model", stride=2)
    assert np.array_equal(e.mutual, dc.mutual)
    np.testing.assert_allclose(e.tgt_points, dc.tgt_points, atol=1e-6)
