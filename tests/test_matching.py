"""Matching kernels on hand-made tensors: NN search, soft-argmax, mutual check, chunking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dife.errors import InputError, ShapeError
from dife.matching import (
    CHUNK_BYTES,
    auto_chunk_size,
    cosine_similarity_maps,
    match,
    mutual_nearest,
    nearest_neighbors,
    refine_soft_argmax,
    sample_descriptors,
)


def _random_map(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(c, h, w, generator=g), dim=0)


def _gaussian_map(h: int, w: int, mx: float, my: float, a: float = 0.02) -> torch.Tensor:
    """Similarity 1 - a * d^2 around (mx, my): softmax(sim / T) is a Gaussian with var T / (2a)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return 1.0 - a * ((x - mx) ** 2 + (y - my) ** 2)


# ------------------------------------------------------------ similarity / NN
def test_cosine_similarity_maps_matches_explicit_dot_products():
    t = _random_map(8, 5, 7)
    q = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    s = cosine_similarity_maps(q, t)
    assert s.shape == (4, 5, 7)
    torch.testing.assert_close(s[2, 3, 6], (q[2] * t[:, 3, 6]).sum())
    assert float(s.abs().max()) <= 1.0 + 1e-6


def test_nearest_neighbors_returns_xy_order_on_non_square_map():
    t = _random_map(16, 6, 11, seed=2)
    # query = the descriptor at column x=9, row y=4 -> peak (9, 4)
    q = torch.stack([t[:, 4, 9], t[:, 0, 0], t[:, 5, 10]])
    peaks, sim = nearest_neighbors(q, t)
    assert peaks.dtype == torch.long
    assert peaks.tolist() == [[9, 4], [0, 0], [10, 5]]
    torch.testing.assert_close(sim, torch.ones(3))


def test_nearest_neighbors_chunking_gives_identical_results():
    t = _random_map(16, 12, 9, seed=3)
    q = F.normalize(torch.randn(53, 16, generator=torch.Generator().manual_seed(4)), dim=1)
    ref_p, ref_s = nearest_neighbors(q, t, chunk_size=10_000)
    for cs in (1, 7, None):
        p, s = nearest_neighbors(q, t, chunk_size=cs)
        # BLAS may round differently for other batch sizes: same peaks, same sims to float precision
        assert torch.equal(p, ref_p)
        torch.testing.assert_close(s, ref_s, atol=1e-6, rtol=0)
    # and agrees with the full argmax
    full = cosine_similarity_maps(q, t).reshape(53, -1).argmax(1)
    assert torch.equal(ref_p[:, 1] * 9 + ref_p[:, 0], full)


def test_auto_chunk_size_respects_the_memory_budget():
    n = auto_chunk_size(96 * 96)
    assert n >= 1 and n * 96 * 96 * 4 <= CHUNK_BYTES
    assert auto_chunk_size(10**12) == 1


def test_bad_shapes_and_options_raise_dife_errors():
    t = _random_map(8, 4, 4)
    with pytest.raises(ShapeError, match=r"\(5, 3\)"):
        nearest_neighbors(torch.zeros(5, 3), t)
    with pytest.raises(ShapeError, match="C, H, W"):
        cosine_similarity_maps(torch.zeros(5, 8), torch.zeros(8, 16))
    with pytest.raises(InputError, match="chunk_size"):
        nearest_neighbors(torch.zeros(5, 8), t, chunk_size=0)
    maps, peaks = torch.zeros(2, 4, 4), torch.zeros(2, 2, dtype=torch.long)
    with pytest.raises(InputError, match="odd"):
        refine_soft_argmax(maps, peaks, window=4)
    with pytest.raises(InputError, match="temperature"):
        refine_soft_argmax(maps, peaks, temperature=0.0)
    with pytest.raises(InputError, match="inside"):
        refine_soft_argmax(maps, torch.tensor([[0, 0], [4, 1]]))
    with pytest.raises(ShapeError, match="peaks"):
        refine_soft_argmax(maps, torch.zeros(3, 2, dtype=torch.long))


# ------------------------------------------------------------------ soft-argmax
@pytest.mark.parametrize("mx,my", [(10.3, 7.6), (9.5, 8.0), (10.0, 7.0), (8.8, 8.45)])
def test_soft_argmax_recovers_fractional_gaussian_peak(mx, my):
    # sigma^2 = T / (2a) = 0.5: a well-sampled Gaussian; a 7-wide window holds > 4 sigma.
    maps = _gaussian_map(16, 20, mx, my)[None]
    peaks = torch.tensor([[round(mx), round(my)]])
    out = refine_soft_argmax(maps, peaks, window=7, temperature=0.02)
    assert out.shape == (1, 2)
    torch.testing.assert_close(out[0], torch.tensor([mx, my], dtype=torch.float64), atol=0.02, rtol=0)
    # the default 5-wide window truncates the tails a little: still well within a pixel
    out5 = refine_soft_argmax(maps, peaks)
    assert float((out5[0] - torch.tensor([mx, my], dtype=torch.float64)).abs().max()) < 0.1
    # hard argmax would be off by the fractional part
    assert float((out5[0] - peaks[0]).abs().max()) > 0.0 or (mx, my) == (10.0, 7.0)


def test_soft_argmax_single_spike_returns_exact_peak_and_stays_in_window():
    maps = torch.zeros(3, 9, 9)
    maps[0, 4, 6] = 1.0
    maps[1, 0, 0] = 1.0
    maps[2, 8, 3] = 1.0
    peaks = torch.tensor([[6, 4], [0, 0], [3, 8]])
    out = refine_soft_argmax(maps, peaks)
    torch.testing.assert_close(out, peaks.float())
    # a flat map: the expected location is the window centre, cut at the border
    flat = torch.zeros(3, 9, 9)
    out = refine_soft_argmax(flat, torch.tensor([[4, 4], [0, 0], [8, 7]]), window=5)
    torch.testing.assert_close(out, torch.tensor([[4.0, 4.0], [1.0, 1.0], [7.0, 6.5]]))


def test_soft_argmax_result_inside_window_and_map():
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(200, 10, 13, generator=g)
    peaks = torch.stack([torch.randint(0, 13, (200,), generator=g), torch.randint(0, 10, (200,), generator=g)], 1)
    for window in (1, 3, 5):
        out = refine_soft_argmax(maps, peaks, window=window, temperature=1.0)
        r = window // 2
        assert float((out - peaks).abs().max()) <= r + 1e-6
        assert float(out[:, 0].min()) >= 0 and float(out[:, 0].max()) <= 12
        assert float(out[:, 1].min()) >= 0 and float(out[:, 1].max()) <= 9
    torch.testing.assert_close(refine_soft_argmax(maps, peaks, window=1), peaks.float())


# ------------------------------------------------------------------- match
def test_match_equals_nn_plus_refinement_and_is_chunk_invariant():
    t = _random_map(16, 9, 14, seed=6)
    q = F.normalize(torch.randn(37, 16, generator=torch.Generator().manual_seed(7)), dim=1)
    peaks, sim = nearest_neighbors(q, t)
    ref = refine_soft_argmax(cosine_similarity_maps(q, t), peaks, window=5, temperature=0.1)
    pts, s, pk = match(q, t, window=5, temperature=0.1, chunk_size=4)
    assert torch.equal(pk, peaks)
    torch.testing.assert_close(s, sim, atol=1e-6, rtol=0)
    torch.testing.assert_close(pts, ref)
    pts2, _, pk2 = match(q, t, window=5, temperature=0.1, chunk_size=None)
    assert torch.equal(pk2, pk)
    torch.testing.assert_close(pts, pts2, atol=1e-5, rtol=0)
    hard, _, _ = match(q, t, refine=False)
    assert torch.equal(hard, peaks.float())


def test_match_empty_query():
    pts, s, pk = match(torch.zeros(0, 16), _random_map(16, 4, 4))
    assert pts.shape == (0, 2) and s.shape == (0,) and pk.shape == (0, 2)


# -------------------------------------------------------- sampling / mutual
def test_sample_descriptors_at_centres_and_between():
    f = _random_map(8, 5, 6, seed=8)
    d = sample_descriptors(f, torch.tensor([[2.0, 3.0], [2.5, 3.0], [-3.0, 0.0]]))
    torch.testing.assert_close(d[0], f[:, 3, 2])
    torch.testing.assert_close(d[1], F.normalize(f[:, 3, 2] + f[:, 3, 3], dim=0))
    torch.testing.assert_close(d[2], f[:, 0, 0])  # border padding
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3))


def test_mutual_nearest_accepts_consistent_and_rejects_wrong_matches():
    f = _random_map(16, 10, 10, seed=9)
    src = torch.tensor([[1.0, 2.0], [7.0, 7.0], [4.3, 5.6], [9.0, 0.0]])
    assert mutual_nearest(f, f, src, src.round()).all()
    wrong = (src.round() + torch.tensor([4.0, 0.0])) % 10
    assert not mutual_nearest(f, f, src, wrong).any()
    # radius: the backward NN of the point (4, 5) is 0.3/0.6 px away from (4.3, 5.6)
    assert not mutual_nearest(f, f, src[2:3], torch.tensor([[4.0, 6.0]]), radius_px=0.1).any()
    with pytest.raises(ShapeError, match="tgt_pts_grid"):
        mutual_nearest(f, f, src, src[:2])


def test_cpu_chunks_are_cache_sized():
    from dife.matching import CPU_CHUNK_BYTES, _chunk_size

    t = _random_map(16, 96, 96)
    n = _chunk_size(None, t)
    assert n == auto_chunk_size(96 * 96, 4, CPU_CHUNK_BYTES) and n * 96 * 96 * 4 <= CPU_CHUNK_BYTES < CHUNK_BYTES
    assert _chunk_size(7, t) == 7


def _mutual_one_by_one(src, tgt, src_pts, tgt_pts, radius):
    """mutual_nearest written out point by point (no chunking, no de-duplication)."""
    out = []
    for p, q in zip(src_pts, tgt_pts, strict=True):
        d = sample_descriptors(tgt, q[None].double().float())
        back, _ = nearest_neighbors(d, src, chunk_size=1)
        out.append(bool(((back[0].double() - p.double()) ** 2).sum() <= radius**2))
    return torch.tensor(out)


@pytest.mark.parametrize("integer", [True, False])
def test_mutual_nearest_searches_repeated_points_once(integer, monkeypatch):
    import dife.matching as matching

    src, tgt = _random_map(8, 12, 10, seed=1), _random_map(8, 9, 11, seed=2)
    g = torch.Generator().manual_seed(3)
    n = 60
    src_pts = torch.stack([torch.randint(0, 10, (n,), generator=g), torch.randint(0, 12, (n,), generator=g)], 1)
    tgt_pts = torch.stack([torch.randint(0, 11, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)], 1)
    tgt_pts = tgt_pts.float() if integer else tgt_pts.float() + torch.rand(n, 2, generator=g) * 0.9
    searched = []
    real_nn = matching.nearest_neighbors
    monkeypatch.setattr(matching, "nearest_neighbors", lambda q, t, **k: searched.append(len(q)) or real_nn(q, t, **k))
    got = mutual_nearest(src, tgt, src_pts.float(), tgt_pts, radius_px=1.5)
    want = _mutual_one_by_one(src, tgt, src_pts, tgt_pts, 1.5)
    assert torch.equal(got, want)
    distinct = len({tuple(p) for p in tgt_pts.tolist()})
    assert searched == [distinct if integer else n] and (not integer or distinct < n)
    assert got.any() and not got.all()  # both outcomes occur, so the comparison means something


def test_row_max_matches_torch_max_with_ties():
    from dife.matching import _row_max

    g = torch.Generator().manual_seed(6)
    s = torch.randn(7, 6 * 5, generator=g)
    s[2, 4] = s[2, 17] = s[2].max() + 1  # a tie across map rows
    s[3, 11] = s[3, 12] = s[3].max() + 1  # within a map row
    val, idx = _row_max(s, 6, 5)
    want_val, want_idx = s.max(dim=1)
    assert torch.equal(val, want_val) and torch.equal(idx, want_idx) and idx[2] == 4 and idx[3] == 11
