"""Tests of dife.embedding: crop rule, pixel-exact resampling, Embedding, embed()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dife
from dife.config import DIFEConfig
from dife.coords import square_crop
from dife.embedding import Embedding, embed, normalize_boxes, prepare, resample_crop
from dife.errors import ImageError, InputError, KeypointError, ShapeError


def _centres(t) -> tuple[torch.Tensor, torch.Tensor]:
    """Image pixel-centre coordinates (x of columns, y of rows) of the grid samples, via CropTransform."""
    j = np.arange(t.size, dtype=np.float64)
    pts = np.stack([j, j], axis=-1)
    img = t.to_image(pts)
    return torch.from_numpy(img[:, 0]), torch.from_numpy(img[:, 1])


def _coverage(c: torch.Tensor, scale: float, n: int) -> torch.Tensor:
    # Fraction of the footprint [c - scale/2, c + scale/2] inside [-0.5, n - 0.5], written out.
    out = torch.empty_like(c)
    for i, v in enumerate(c.tolist()):
        out[i] = max(0.0, min(v + scale / 2, n - 0.5) - max(v - scale / 2, -0.5)) / scale
    return out


def _ramp(w: int, h: int) -> tuple[torch.Tensor, callable]:
    """(3, h, w) image whose channels are linear in x and y, and its formula."""

    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([x / (w - 1), y / (h - 1), 0.25 + 0.5 * (0.6 * x / (w - 1) + 0.4 * y / (h - 1))])

    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return f(xs, ys).float(), f


# ------------------------------------------------------------------------ boxes
def test_normalize_boxes() -> None:
    assert normalize_boxes(None, 3) == [None, None, None]
    assert normalize_boxes((1, 2, 3, 4), 1) == [(1.0, 2.0, 3.0, 4.0)]
    assert normalize_boxes(np.array([1, 2, 3, 4]), 1) == [(1.0, 2.0, 3.0, 4.0)]
    assert normalize_boxes([None, [0, 0, 5, 5]], 2) == [None, (0.0, 0.0, 5.0, 5.0)]
    assert normalize_boxes(torch.tensor([[0, 0, 5, 5], [1, 1, 4, 4]]), 2)[1] == (1.0, 1.0, 4.0, 4.0)
    with pytest.raises(InputError, match="one box .* for 2 images"):
        normalize_boxes((1, 2, 3, 4), 2)
    with pytest.raises(InputError, match="3 boxes for 2 images"):
        normalize_boxes([None, None, None], 2)
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        normalize_boxes(np.zeros((2, 3)), 2)
    with pytest.raises(InputError, match=r"boxes\[1\]"):
        normalize_boxes([None, (1, 2, 3)], 2)


# ---------------------------------------------------------------- crop rule
def test_prepare_shapes_and_normalisation() -> None:
    cfg = DIFEConfig(input_size=32)
    ims = [torch.full((3, 20, 50), 0.75), torch.zeros(3, 60, 30), torch.ones(3, 40, 40)]
    x, ts = prepare(ims, None, cfg)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    # Without a box: the centred square of side min(W, H), fully inside, so no black.
    assert torch.allclose(x[0], torch.full_like(x[0], 0.5), atol=1e-6)  # (0.75 - 0.5) / 0.5
    assert torch.allclose(x[1], torch.full_like(x[1], -1.0))
    assert torch.allclose(x[2], torch.ones_like(x[2]), atol=1e-6)
    assert ts[0] == square_crop(50, 20, 32) and ts[0].left == 15 and ts[0].side == 20
    assert ts[1].top == 15 and ts[1].side == 30
    # Custom mean / std.
    cfg2 = DIFEConfig(input_size=32, mean=(0.5, 0.25, 0.0), std=(0.25, 0.5, 1.0))
    x2, _ = prepare([torch.full((3, 20, 20), 0.75)], None, cfg2)
    assert torch.allclose(x2[0, :, 5, 5], torch.tensor([1.0, 1.0, 0.75]), atol=1e-6)


@pytest.mark.parametrize("size", [96, 16])  # bilinear path, anti-aliased path (scale 2.5)
@pytest.mark.parametrize(
    "box",
    [(-20.0, 0.0, 20.0, 40.0), (25.0, 30.0, 45.0, 50.0), (-7.3, -11.1, 30.2, 33.3), (0.0, 0.0, 40.0, 40.0)],
)
def test_black_outside_image(size: int, box: tuple[float, ...]) -> None:
    """A white image: every grid pixel equals the fraction of its footprint inside the image."""
    w = h = 40
    x, (t,) = prepare([torch.ones(3, h, w)], box, DIFEConfig(input_size=size))
    cx, cy = _centres(t)
    expected = (_coverage(cy, t.scale, h)[:, None] * _coverage(cx, t.scale, w)[None, :]) * 2 - 1
    torch.testing.assert_close(x[0], expected.float().expand(3, -1, -1), atol=2e-5, rtol=0)
    if box[0] <= -1 - t.scale:  # the first column's footprint lies wholly left of the image: black = -1
        assert float(x[0, :, :, 0].max()) == -1.0
    if box == (0.0, 0.0, 40.0, 40.0):  # the crop is the image: no black anywhere
        assert float(x.min()) > 1.0 - 1e-6


def test_box_partly_outside_non_square() -> None:
    img = torch.rand(3, 30, 70)
    x, (t,) = prepare([img], (60, 5, 90, 25), DIFEConfig(input_size=32))
    assert t.left == 60 and t.top == 0 and t.side == 30
    cx, _ = _centres(t)
    outside = cx - t.scale / 2 >= 69.5  # grid pixels wholly right of the image
    assert outside.any() and torch.all(x[0][:, :, outside] == -1.0)
    inside = cx + t.scale / 2 <= 69.5
    assert torch.all(x[0][:, :, inside] > -1.0 - 1e-6)


@pytest.mark.parametrize(
    ("box", "size", "k"),
    [
        ((40.0, 30.0, 150.0, 140.0), 96, 1),  # scale 1.15: bilinear only
        ((31.3, 22.7, 118.1, 109.5), 20, 4),  # scale 4.34, fractional offsets
        ((40.0, 20.0, 140.0, 120.0), 20, 5),  # scale exactly 5
        ((50.5, 40.25, 90.5, 80.25), 16, 2),  # scale 2.5
        ((20.0, 25.0, 60.0, 65.0), 96, 1),  # upsampling (scale 0.42)
    ],
)
def test_pixel_exact_ramp(box: tuple[float, ...], size: int, k: int) -> None:
    """Grid pixel j holds the ramp evaluated at CropTransform.to_image(j), with and without anti-aliasing."""
    from dife.embedding import _antialias_factor

    w, h = 200, 150
    img, f = _ramp(w, h)
    cfg = DIFEConfig(input_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x, (t,) = prepare([img], box, cfg)
    assert _antialias_factor(t.scale) == k
    cx, cy = _centres(t)
    yy, xx = torch.meshgrid(cy, cx, indexing="ij")
    torch.testing.assert_close(x[0], f(xx, yy).float(), atol=2e-5, rtol=0)
    # Spot-check one pixel against the convention's formula written out.
    gi, gj = size // 3, size - 2
    px = (gj + 0.5) * t.side / size + t.left - 0.5
    py = (gi + 0.5) * t.side / size + t.top - 0.5
    torch.testing.assert_close(
        x[0, :, gi, gj],
        f(torch.tensor(px, dtype=torch.float64), torch.tensor(py, dtype=torch.float64)).float(),
        atol=2e-5,
        rtol=0,
    )


def test_antialiasing_removes_aliasing() -> None:
    """A one-pixel checkerboard shrunk 5x averages to grey instead of aliasing."""
    yy, xx = torch.meshgrid(torch.arange(200), torch.arange(200), indexing="ij")
    board = ((xx + yy) % 2).float().expand(3, -1, -1).contiguous()
    cfg = DIFEConfig(input_size=40, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x, _ = prepare([board], None, cfg)
    # Away from the image border every value is close to 0.5.
    assert float((x[0, :, 2:-2, 2:-2] - 0.5).abs().max()) < 0.05
    # Plain bilinear sampling of the same points would alias strongly.
    t = square_crop(200, 200, 40)
    cx, cy = _centres(t)
    gx = (cx + 0.5) * 2 / 200 - 1
    gy = (cy + 0.5) * 2 / 200 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1).float()[None]
    naive = torch.nn.functional.grid_sample(board[None], grid, align_corners=False)[0]
    assert float((naive[:, 2:-2, 2:-2] - 0.5).abs().max()) > 0.2


def test_large_image() -> None:
    img = torch.full((3, 3000, 4000), 0.25)
    cfg = DIFEConfig()
    x, (t,) = prepare([img], None, cfg)
    assert x.shape == (1, 3, 96, 96) and t.side == 3000
    torch.testing.assert_close(x, torch.full_like(x, -0.5), atol=1e-5, rtol=0)
    x, _ = prepare([img], (3500, 100, 3700, 300), cfg)
    torch.testing.assert_close(x, torch.full_like(x, -0.5), atol=1e-5, rtol=0)


def test_prepare_errors() -> None:
    cfg = DIFEConfig(input_size=16)
    with pytest.raises(InputError, match="box.*does not overlap"):
        prepare([torch.zeros(3, 10, 10)], (20, 20, 30, 30), cfg)
    with pytest.raises(InputError, match=r"boxes\[1\].*x1 > x0"):
        prepare([torch.zeros(3, 10, 10)] * 2, [None, (5, 5, 5, 8)], cfg)
    with pytest.raises(ShapeError, match=r"images\[0\].*\(10, 10, 3\)"):
        prepare([torch.zeros(10, 10, 3), torch.zeros(3, 4, 4)], None, cfg)
    with pytest.raises(InputError, match="at least one"):
        prepare([], None, cfg)
    with pytest.raises(ShapeError, match="10x10 but the crop transform is for 12x10"):
        resample_crop(torch.zeros(3, 10, 10), square_crop(12, 10, 16))


# ------------------------------------------------------------------- Embedding
def _random_embedding(n: int = 2, c: int = 8, s: int = 12) -> Embedding:
    g = torch.Generator().manual_seed(1)
    feats = torch.nn.functional.normalize(torch.randn(n, c, s, s, generator=g), dim=1)
    ts = [square_crop(40, 30, s), square_crop(25, 25, s, (2, 3, 20, 21))][:n]
    return Embedding(feats, ts)


def test_embedding_container() -> None:
    e = _random_embedding()
    assert len(e) == 2 and e.grid_size == 12 and e.dim == 8
    assert e.image_sizes == [(40, 30), (25, 25)]
    one = e[1]
    assert len(one) == 1 and one.image_sizes == [(25, 25)]
    assert torch.equal(one.features[0], e.features[1])
    assert torch.equal(e[-1].features, one.features)
    assert len(e[0:2]) == 2 and len(e[1:]) == 1
    assert [len(x) for x in e] == [1, 1]  # iteration stops on IndexError
    with pytest.raises(IndexError):
        e[2]
    with pytest.raises(InputError):
        e["a"]  # type: ignore[index]
    arr = e.numpy()
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 8, 12, 12) and arr.dtype == np.float32
    moved = e.to("cpu")
    assert torch.equal(moved.features, e.features) and moved.transforms == e.transforms
    with pytest.raises(InputError, match="2 feature maps but 1 transforms"):
        Embedding(e.features, e.transforms[:1])
    with pytest.raises(ShapeError):
        Embedding(e.features[0], e.transforms[:1])


def test_embedding_coordinates() -> None:
    e = _random_embedding()
    pts = np.array([[3.0, 4.0], [20.5, 10.25]])
    g = e.to_grid(pts, 0)
    np.testing.assert_allclose(g, e.transforms[0].to_grid(pts))
    np.testing.assert_allclose(e.to_image(g, 0), pts)
    np.testing.assert_allclose(e.to_image(e.to_grid(pts, 1), 1), pts)
    tg = e.to_grid(torch.tensor(pts), 1)
    assert isinstance(tg, torch.Tensor)
    np.testing.assert_allclose(tg.numpy(), e.transforms[1].to_grid(pts))
    np.testing.assert_allclose(e.to_grid([[3, 4]], 0), e.transforms[0].to_grid(np.array([[3.0, 4.0]])))
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        e.to_grid(np.zeros((2, 3)))
    with pytest.raises(InputError, match="out of range"):
        e.to_image(pts, 5)


def test_sample_at_grid_centres_and_between() -> None:
    e = _random_embedding()
    for i in range(2):
        t = e.transforms[i]
        grid_pts = np.array([[0, 0], [5, 7], [11, 3], [11, 11]], dtype=np.float64)
        img_pts = t.to_image(grid_pts)
        d = e.sample(img_pts, i)
        assert d.shape == (4, 8)
        for (gx, gy), v in zip(grid_pts.astype(int), d, strict=True):
            torch.testing.assert_close(v, e.features[i, :, gy, gx], atol=1e-5, rtol=0)
    # Half-way between two grid pixels: the normalised mean of their features.
    t = e.transforms[0]
    mid = t.to_image(np.array([[4.5, 6.0]]))
    expect = torch.nn.functional.normalize(e.features[0, :, 6, 4] + e.features[0, :, 6, 5], dim=0)
    torch.testing.assert_close(e.sample(mid, 0)[0], expect, atol=1e-5, rtol=0)
    # Arbitrary leading dims, tensor input, unit norm.
    pts = torch.tensor([[[10.0, 10.0], [20.0, 15.0]]])
    out = e.sample(pts, 0)
    assert out.shape == (1, 2, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(1, 2))


def test_sample_errors() -> None:
    e = _random_embedding()
    with pytest.raises(KeypointError, match="outside the 40x30 image"):
        e.sample([[40.0, 3.0]], 0)
    # Inside the 40x30 image but left of its centred 30x30 crop.
    with pytest.raises(KeypointError, match="outside the square crop"):
        e.sample([[1.0, 3.0]], 0)
    with pytest.raises(ShapeError):
        e.sample(np.zeros((3, 3)), 0)
    with pytest.raises(KeypointError, match="NaN"):
        e.sample([[np.nan, 3.0]], 0)


# ------------------------------------------------------------------------ embed
def test_embed_single_and_batch(tiny_model, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    p = tmp_path / "b.png"
    Image.fromarray(b).save(p)
    e = embed(a, model=tiny_model)
    S, C = tiny_model.config.input_size, tiny_model.config.embed_dim
    assert isinstance(e, Embedding) and len(e) == 1
    assert e.features.shape == (1, C, S, S) and e.features.dtype == torch.float32
    torch.testing.assert_close(e.features.norm(dim=1), torch.ones(1, S, S))
    assert e.image_sizes == [(90, 70)]
    # Same result through the torch core by hand.
    x, _ = prepare([dife.load_image(a)], None, tiny_model.config)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(tiny_model(x), dim=1)
    torch.testing.assert_close(e.features, ref, atol=1e-5, rtol=1e-4)
    # A list mixing types; each entry equals its single-image embedding.
    eb = embed([a, p, Image.fromarray(b), torch.from_numpy(b).permute(2, 0, 1).float() / 255], model=tiny_model)
    assert len(eb) == 4 and eb.image_sizes == [(90, 70), (64, 64), (64, 64), (64, 64)]
    torch.testing.assert_close(eb.features[0], e.features[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eb.features[1], eb.features[2], atol=1e-6, rtol=0)
    torch.testing.assert_close(eb.features[1], eb.features[3], atol=1e-5, rtol=1e-4)
    # Features work with autograd afterwards (not inference tensors).
    w = torch.ones(1, requires_grad=True)
    (eb.features * w).sum().backward()
    assert w.grad is not None


def test_embed_chunking_and_boxes(tiny_model) -> None:
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(5, 3, 48, 64, generator=g)
    boxes = [None, (0, 0, 30, 30), None, (-10, 5, 40, 45), (10, 10, 60, 40)]
    full = embed(batch, box=boxes, model=tiny_model, batch_size=32)
    chunked = embed(batch, box=boxes, model=tiny_model, batch_size=2)
    assert len(full) == 5
    torch.testing.assert_close(chunked.features, full.features, atol=1e-5, rtol=1e-4)
    assert chunked.transforms == full.transforms
    assert full.transforms[1] == square_crop(64, 48, 96, (0, 0, 30, 30))
    nb = embed((batch.permute(0, 2, 3, 1) * 255).round().byte().numpy(), model=tiny_model, batch_size=3)
    assert nb.features.shape[0] == 5
    # Model is left untouched.
    assert not tiny_model.training and tiny_model.device.type == "cpu"


def test_embed_errors(tiny_model, tmp_path: Path) -> None:
    ok = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(InputError, match="batch_size"):
        embed(ok, model=tiny_model, batch_size=0)
    with pytest.raises(InputError, match="model must be"):
        embed(ok, model=42)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="2 boxes for 3 images"):
        embed([ok, ok, ok], box=[None, None], model=tiny_model)
    with pytest.raises(InputError, match=r"boxes\[2\].*does not overlap"):
        embed([ok, ok, ok], box=[None, None, (50, 50, 60, 60)], model=tiny_model, batch_size=2)
    with pytest.raises(ImageError, match=r"images\[3\].*NaN"):
        embed([ok, ok, ok, np.full((5, 5, 3), np.nan)], model=tiny_model, batch_size=2)
    with pytest.raises(ImageError, match="not found"):
        embed(tmp_path / "missing.png", model=tiny_model)


def test_embed_progress_and_device(tiny_model, capsys: pytest.CaptureFixture[str]) -> None:
    x = torch.rand(2, 3, 32, 32)
    e = embed(x, model=tiny_model, progress=True, device="cpu")
    assert e.device.type == "cpu" and len(e) == 2
    assert "2/2" in capsys.readouterr().err


def test_lazy_public_names() -> None:
    assert dife.embed is embed and dife.Embedding is Embedding


def test_embed_real_faces(tiny_model, faces_dir: Path) -> None:
    records = {r["image"]: r for r in json.loads((faces_dir / "annotations.json").read_text())}
    names = [n for n in ("human_0001.jpg", "dog_0001.jpg", "cat_0001.jpg") if n in records]
    assert names, "expected human/dog/cat images in the development set"
    e = embed([faces_dir / n for n in names], model=tiny_model)
    assert len(e) == len(names) and e.image_sizes == [(256, 256)] * len(names)
    torch.testing.assert_close(e.features.norm(dim=1), torch.ones(len(names), 96, 96))
    for i, n in enumerate(names):
        kps = np.array(list(records[n]["keypoints"].values()), dtype=np.float64)
        d = e.sample(kps, i)
        assert d.shape == (len(kps), e.dim) and torch.isfinite(d).all()


def test_block_mean_equals_avg_pool_of_the_zero_padded_window():
    """The anti-aliasing block means never build the zero-padded window, yet equal avg_pool2d of it."""
    import torch.nn.functional as F

    from dife.embedding import _block_mean

    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        H, W, k = (int(v) for v in rng.integers(1, 40, 3))
        nx, ny = (int(v) for v in rng.integers(1, 8, 2))
        x0, y0 = (int(v) for v in rng.integers(-3 * k * nx, W + k, 2))
        image = torch.rand(3, H, W, generator=g)
        window = torch.zeros(3, ny * k, nx * k)
        for i in range(ny * k):
            for j in range(nx * k):
                if 0 <= y0 + i < H and 0 <= x0 + j < W:
                    window[:, i, j] = image[:, y0 + i, x0 + j]
        expected = F.avg_pool2d(window[None], k, stride=k)[0]
        torch.testing.assert_close(_block_mean(image, x0, y0, k, nx, ny), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ backends
def test_default_backend_matches_the_reference_to_1e4() -> None:
    """dife.embed with the default model: the fast path's features within 1e-4 of the eager fp32 reference."""
    net = dife.DIFE.from_pretrained("dife-base")
    g = torch.Generator().manual_seed(7)
    imgs = torch.rand(9, 3, 96, 96, generator=g)
    boxes = ["image"] * 8 + [(10.0, 5.0, 80.0, 75.0)]
    ref = embed(imgs, box=boxes, model=net, backend="reference")
    for bs in (1, 4, 32):  # micro-batches of 1, 4, 8 and a remainder
        fast = embed(imgs, box=boxes, model=net, batch_size=bs)
        assert (fast.features - ref.features).abs().max() < 1e-4
        assert fast.transforms == ref.transforms
        assert fast.features.is_contiguous() and not fast.features.is_inference()


def test_backends_on_a_small_model_and_bad_backend(tiny_model) -> None:
    x = torch.rand(5, 3, 40, 50, generator=torch.Generator().manual_seed(8))
    ref = embed(x, model=tiny_model, backend="reference", batch_size=2)
    fast = embed(x, model=tiny_model, batch_size=5)
    torch.testing.assert_close(fast.features, ref.features, atol=1e-4, rtol=0)
    with pytest.raises(InputError, match="backend must be one of 'auto', 'reference', 'compile', got 'fast'"):
        embed(x, model=tiny_model, backend="fast")


def test_compile_backend_falls_back(tiny_model, monkeypatch) -> None:
    from dife.modeling import inference

    def no_compiler(*args, **kwargs):
        raise RuntimeError("inductor unavailable")

    monkeypatch.setattr(torch, "compile", no_compiler)
    monkeypatch.setattr(inference, "_compiled", {})
    monkeypatch.setattr(inference, "_failed", set())
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with pytest.warns(RuntimeWarning, match="inductor unavailable"):
        e = embed(x, model=tiny_model, backend="compile")
    torch.testing.assert_close(e.features, embed(x, model=tiny_model).features, atol=0, rtol=0)


def test_a_model_with_its_own_forward_is_run_by_its_forward(tiny_config) -> None:
    from dife.modeling import DIFE

    class Constant(DIFE):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], self.config.embed_dim, x.shape[2], x.shape[3])
            out[:, 3] = 2.0
            return out

    net = Constant(tiny_config).eval()
    e = embed(torch.rand(2, 3, 32, 32), model=net)
    assert torch.equal(e.features[:, 3], torch.ones(2, 96, 96)) and e.features.sum() == 2 * 96 * 96
    # a forward hook is respected too: the fast path is not taken
    base = dife.DIFE(tiny_config).eval()
    calls = []
    handle = base.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        embed(torch.rand(3, 3, 32, 32), model=base, batch_size=2)
    finally:
        handle.remove()
    assert calls == [2, 1]


def test_micro_batch_size_fits_the_cache() -> None:
    from dife.embedding import CPU_MICRO_BATCH_BYTES, micro_batch_size
    from dife.modeling import DIFE

    with torch.device("meta"):
        base = DIFE(DIFEConfig(converter_dim=0, planes_conv1=16, planes_block=32, planes_hg=48, num_blocks=1))
        paper = DIFE(DIFEConfig(converter_dim=0))
    cpu = torch.device("cpu")
    # dife-base: 96 channels x 48 x 48 floats = 0.84 MiB per image at the widest
    assert micro_batch_size(base, cpu, 64) == CPU_MICRO_BATCH_BYTES // (96 * 48 * 48 * 4) == 8
    assert micro_batch_size(base, cpu, 3) == 3
    assert micro_batch_size(paper, cpu, 64) == 3  # 256 channels: 2.25 MiB per image
    assert micro_batch_size(base, torch.device("cuda"), 64) == 64  # GPUs take the whole chunk
