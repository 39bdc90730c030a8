"""Tests of dife.parsing: k-means, FaceParser, parse_face."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dife.errors import CheckpointError, DIFEError, InputError, ModelNotFoundError, ShapeError
from dife.parsing import FaceParser, _kmeans_pp, kmeans, parse_face


def _blobs(n_per: int = 60, d: int = 5, k: int = 4, spread: float = 0.05, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 4.0
    x = torch.cat([c + spread * torch.randn(n_per, d, generator=g) for c in centres])
    truth = torch.arange(k).repeat_interleave(n_per)
    perm = torch.randperm(len(x), generator=g)
    return x[perm], truth[perm], centres


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when the labelings agree up to a permutation of cluster ids."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# ------------------------------------------------------------------- kmeans
@pytest.mark.parametrize("cosine", [False, True])
def test_kmeans_recovers_separated_clusters(cosine: bool) -> None:
    x, truth, centres = _blobs()
    c, labels = kmeans(x, 4, cosine=cosine, n_init=2)
    assert c.shape == (4, 5) and labels.shape == (240,) and labels.dtype == torch.int64
    assert _same_partition(labels, truth)
    if cosine:
        torch.testing.assert_close(c.norm(dim=1), torch.ones(4))
    else:
        # each centroid is the mean of its true blob
        for j in range(4):
            torch.testing.assert_close(c[j], x[labels == j].mean(0))
        dist = torch.cdist(c, centres).min(dim=1).values
        assert float(dist.max()) < 0.05


def test_kmeans_cosine_groups_by_direction_not_norm() -> None:
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1)
    scales = torch.rand(90, 1, generator=g) * 10 + 0.1  # norms vary wildly
    truth = torch.arange(3).repeat_interleave(30)
    x = (dirs[truth] + 0.01 * torch.randn(90, 8, generator=g)) * scales
    _, lab_cos = kmeans(x, 3, cosine=True, n_init=3)
    assert _same_partition(lab_cos, truth)


def test_kmeans_is_deterministic_and_seeded() -> None:
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(3))
    c1, l1 = kmeans(x, 7, seed=5)
    c2, l2 = kmeans(x, 7, seed=5)
    assert torch.equal(c1, c2) and torch.equal(l1, l2)
    # the k-means++ seeding itself follows the generator
    init = [_kmeans_pp(x, 7, torch.Generator().manual_seed(s), False, 1000) for s in (0, 0, 1)]
    assert torch.equal(init[0], init[1])
    assert not torch.equal(init[0], init[2])
    # the seeds are rows of x
    for row in init[0]:
        assert bool((x == row).all(dim=1).any())


def test_kmeans_chunking_does_not_change_the_result() -> None:
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(7))
    c1, l1 = kmeans(x, 5, cosine=False, chunk_size=17)
    c2, l2 = kmeans(x, 5, cosine=False, chunk_size=100000)
    torch.testing.assert_close(c1, c2)
    assert torch.equal(l1, l2)


def test_kmeans_n_init_never_worse() -> None:
    x = torch.randn(400, 3, generator=torch.Generator().manual_seed(2))

    def inertia(c, lab):
        return float(((x - c[lab]) ** 2).sum())

    one = inertia(*kmeans(x, 6, cosine=False, n_init=1))
    many = inertia(*kmeans(x, 6, cosine=False, n_init=5))
    assert many <= one + 1e-6


def test_kmeans_duplicates_and_empty_clusters() -> None:
    # only 3 distinct points but 5 clusters: no NaN, valid labels, exact fit
    base = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = base.repeat(20, 1)
    c, labels = kmeans(x, 5, cosine=False)
    assert torch.isfinite(c).all()
    assert int(labels.min()) >= 0 and int(labels.max()) < 5
    torch.testing.assert_close(c[labels], x)
    # k == N puts every point in its own cluster
    y = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    _, lab = kmeans(y, 6, cosine=False)
    assert sorted(lab.tolist()) == list(range(6))


def test_kmeans_accepts_numpy() -> None:
    x, truth, _ = _blobs(d=3)
    c, labels = kmeans(x.numpy(), 4, cosine=False)
    assert isinstance(c, torch.Tensor) and _same_partition(labels, truth)


@pytest.mark.parametrize("k", [0, -1, 11, 2.5, True])
def test_kmeans_bad_k(k) -> None:
    with pytest.raises(InputError, match="k must be"):
        kmeans(torch.randn(10, 2), k)


def test_kmeans_bad_inputs() -> None:
    with pytest.raises(ShapeError, match=r"\(N, D\)"):
        kmeans(torch.randn(10), 2)
    with pytest.raises(ShapeError):
        kmeans(torch.randn(0, 3), 1)
    bad = torch.randn(10, 2)
    bad[3, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        kmeans(bad, 2)
    with pytest.raises(InputError, match="n_iter"):
        kmeans(torch.randn(10, 2), 2, n_iter=0)
    with pytest.raises(InputError, match="tol"):
        kmeans(torch.randn(10, 2), 2, tol=-1)
    with pytest.raises(InputError):
        kmeans([[1.0, 2.0]], 1)


# --------------------------------------------------------------- FaceParser
def _face_like(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth synthetic image with structure (so the tiny model gives varied features)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.stack([np.sin(6 * xx + rng.uniform(0, 3)), np.cos(5 * yy + rng.uniform(0, 3)), np.sin(4 * (xx + yy))], -1)
    img = (img * 0.5 + 0.5) * 255
    img[h // 3 : h // 3 + h // 8, w // 4 : w // 4 + w // 8] = (20, 20, 20)
    return img.astype(np.uint8)


def test_faceparser_label_map_at_original_resolution(tiny_model) -> None:
    img = _face_like(300, 250, 0)
    box = (10, 5, 298, 293)  # side 288 = 3 x 96: grid j <-> image (3 j + 11, 3 j + 6)
    parser = FaceParser(5, model=tiny_model, seed=0, max_pixels_per_image=3000).fit(img, box=box)
    assert parser.is_fitted and parser.embed_dim == 16
    assert parser.centroids.shape == (5, 16) and parser.part_centers.shape == (5, 2)
    # parts are ordered top to bottom by their mean crop position
    ys = parser.part_centers[:, 1]
    assert torch.all(ys[1:] >= ys[:-1])
    labels = parser.predict(img, box=box)
    assert isinstance(labels, np.ndarray) and labels.shape == (250, 300) and labels.dtype == np.int32
    # the crop square has edges x 10..298, y 5..293: outside it -1, inside a part
    assert np.all(labels[:, :10] == -1) and np.all(labels[:, 298:] == -1) and np.all(labels[:5] == -1)
    inside = labels[5:, 10:298]
    assert np.all((inside >= 0) & (inside < 5))
    # at image pixels that are grid-pixel centres, the label is the nearest centroid
    from dife.embedding import embed

    emb = embed(img, box=box, model=tiny_model)
    grid = torch.einsum("chw,kc->khw", emb.features[0], parser.centroids).argmax(0).numpy()
    j = np.arange(0, 96)
    jy = j[3 * j + 6 < 250]
    expect = grid[np.ix_(jy, j)]
    got = labels[np.ix_(3 * jy + 6, 3 * j + 11)]
    assert (got == expect).mean() > 0.99  # (exact up to float ties)
    # predicting from a precomputed Embedding gives the same map (as a list)
    from_emb = parser.predict(emb)
    assert isinstance(from_emb, list) and np.array_equal(from_emb[0], labels)


def test_faceparser_no_box_centre_square(tiny_model) -> None:
    img = _face_like(70, 50, 1)  # landscape: centred 50x50 square, x edges 10..60
    labels = FaceParser(3, model=tiny_model).fit_predict(img)
    assert labels.shape == (50, 70)
    assert np.all(labels[:, :10] == -1) and np.all(labels[:, 60:] == -1)
    assert np.all(labels[:, 10:60] >= 0)


def test_faceparser_save_load_roundtrip(tiny_model, tmp_path: Path) -> None:
    imgs = [_face_like(120, 100, 2), _face_like(96, 96, 3)]
    parser = FaceParser(4, model=tiny_model, seed=3).fit(imgs)
    before = parser.predict(imgs)
    assert isinstance(before, list) and [m.shape for m in before] == [(100, 120), (96, 96)]
    path = parser.save(tmp_path / "sub" / "parser.safetensors")
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    loaded = FaceParser.load(path, model=tiny_model)
    assert loaded.n_parts == 4 and loaded.seed == 3 and loaded.embed_dim == 16
    torch.testing.assert_close(loaded.centroids, parser.centroids, rtol=0, atol=0)
    after = loaded.predict(imgs)
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a, b)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["config"])
    assert meta["n_parts"] == 4 and meta["embed_dim"] == 16 and meta["seed"] == 3


def test_faceparser_is_deterministic(tiny_model) -> None:
    imgs = [_face_like(80, 80, 4), _face_like(90, 70, 5)]
    a = FaceParser(6, model=tiny_model, seed=1).fit(imgs)
    b = FaceParser(6, model=tiny_model, seed=1).fit(imgs)
    assert torch.equal(a.centroids, b.centroids)


def test_faceparser_errors(tiny_model, tmp_path: Path) -> None:
    parser = FaceParser(3, model=tiny_model)
    with pytest.raises(InputError, match="not fitted"):
        parser.predict(_face_like(40, 40, 0))
    with pytest.raises(InputError, match="unfitted"):
        parser.save(tmp_path / "p.safetensors")
    with pytest.raises(InputError, match="n_parts"):
        FaceParser(0)
    with pytest.raises(InputError, match="n_parts = 50"):
        FaceParser(50, model=tiny_model, max_pixels_per_image=10).fit(_face_like(40, 40, 0))
    with pytest.raises(ModelNotFoundError):
        FaceParser.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        FaceParser.load(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a FaceParser"):
        FaceParser.load(other)
    # descriptors of another dimension
    parser.centroids = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    parser.part_centers = torch.zeros(3, 2)
    with pytest.raises(InputError, match="16-d"):
        parser.predict(_face_like(40, 40, 0))
    with pytest.raises(DIFEError):
        parser.predict(np.zeros((5, 5, 7), np.uint8))


# ---------------------------------------------------------------- parse_face
def test_parse_face_on_real_faces(tiny_model, faces_dir: Path) -> None:
    files = [faces_dir / "human_0001.jpg", faces_dir / "cat_0001.jpg"]
    maps = parse_face(files, n_parts=6, model=tiny_model, seed=0)
    assert isinstance(maps, list) and len(maps) == 2
    for m in maps:
        assert m.shape == (256, 256) and m.dtype == np.int32
        assert m.min() >= 0 and m.max() < 6  # square images: every pixel is in the crop
    # every part is used somewhere, jointly
    used = set(np.unique(maps[0])) | set(np.unique(maps[1]))
    assert used == set(range(6))
    again = parse_face(files, n_parts=6, model=tiny_model, seed=0)
    for a, b in zip(maps, again, strict=True):
        assert np.array_equal(a, b)
    single = parse_face(files[0], n_parts=3, model=tiny_model)
    assert isinstance(single, np.ndarray) and single.shape == (256, 256)
