"""Tests of dife.images: every accepted input type, batches, and every rejected input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dife
from dife import images as dimages
from dife.errors import DIFEError, ImageError, InputError, ShapeError
from dife.images import load_image, load_images, pil_from_tensor, split_images, to_uint8


@pytest.fixture()
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)


def _expect(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1) / 255.0


def _check(t: torch.Tensor, h: int, w: int) -> None:
    assert isinstance(t, torch.Tensor)
    assert t.shape == (3, h, w)
    assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


# ----------------------------------------------------------------- accepted inputs
@pytest.mark.parametrize("as_str", [True, False])
def test_path_png(tmp_path: Path, rgb: np.ndarray, as_str: bool) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(rgb).save(p)
    t = load_image(str(p) if as_str else p)
    _check(t, 12, 17)
    torch.testing.assert_close(t, _expect(rgb))


def test_path_exif_orientation(tmp_path: Path) -> None:
    a = np.zeros((10, 30, 3), np.uint8)
    a[:, :5] = 255  # white band on the left
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=100)
    t = load_image(p)
    _check(t, 30, 10)  # displayed upright: width and height swapped
    assert float(t[:, :5].mean()) > 0.9  # the left band is now at the top
    assert float(t[:, -5:].mean()) < 0.1
    # A PIL image is taken as stored (no rotation).
    with Image.open(p) as im2:
        _check(load_image(im2), 10, 30)


def test_pil_modes(rgb: np.ndarray) -> None:
    torch.testing.assert_close(load_image(Image.fromarray(rgb)), _expect(rgb))
    gray = rgb[:, :, 0]
    t = load_image(Image.fromarray(gray, mode="L"))
    _check(t, 12, 17)
    torch.testing.assert_close(t, _expect(np.repeat(gray[:, :, None], 3, axis=2)))
    pal = Image.fromarray(rgb).convert("P")
    torch.testing.assert_close(load_image(pal), _expect(np.asarray(pal.convert("RGB"))))
    g16 = np.full((4, 5), 65535 // 2, dtype=np.uint16)
    t16 = load_image(Image.fromarray(g16))
    _check(t16, 4, 5)
    assert torch.allclose(t16, torch.full_like(t16, 0.5), atol=1e-4)


def test_pil_rgba_composited_on_black(rgb: np.ndarray) -> None:
    alpha = np.zeros((12, 17, 1), np.uint8)
    alpha[:, :8] = 255
    alpha[:, 8:12] = 128
    t = load_image(Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA"))
    ref = _expect(rgb)
    torch.testing.assert_close(t[:, :, :8], ref[:, :, :8])
    torch.testing.assert_close(t[:, :, 8:12], ref[:, :, 8:12] * (128 / 255))
    assert float(t[:, :, 12:].abs().max()) == 0.0
    # numpy RGBA follows the same rule
    t2 = load_image(np.concatenate([rgb, alpha], axis=2))
    torch.testing.assert_close(t, t2)


def test_numpy_inputs(rgb: np.ndarray) -> None:
    torch.testing.assert_close(load_image(rgb), _expect(rgb))
    gray = rgb[:, :, 1]
    g = load_image(gray)
    _check(g, 12, 17)
    assert torch.equal(g[0], g[2]) and torch.allclose(g[1], torch.from_numpy(gray).float() / 255)
    torch.testing.assert_close(load_image(gray[:, :, None]), g)
    f = rgb.astype(np.float64) / 255.0
    torch.testing.assert_close(load_image(f), _expect(rgb))
    torch.testing.assert_close(load_image(f.astype(np.float16)), _expect(rgb), atol=1e-3, rtol=0)
    # Non-contiguous views work too.
    torch.testing.assert_close(load_image(rgb[:, ::-1]), _expect(np.ascontiguousarray(rgb[:, ::-1])))


def test_torch_inputs(rgb: np.ndarray) -> None:
    ref = _expect(rgb)
    out = load_image(ref.clone())
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(load_image(torch.from_numpy(rgb).permute(2, 0, 1)), ref)  # uint8 CHW
    torch.testing.assert_close(load_image(ref.double()), ref)
    g = load_image(ref[:1])
    assert g.shape == (3, 12, 17) and torch.equal(g[0], g[2])
    # Values within the 1e-3 tolerance are clamped.
    t = ref.clone()
    t[0, 0, 0] = 1.0005
    t[0, 0, 1] = -0.0005
    out = load_image(t)
    assert float(out.max()) <= 1.0 and float(out.min()) >= 0.0
    # The caller's tensor is not modified.
    assert float(t[0, 0, 0]) == pytest.approx(1.0005)


def test_load_images_single_and_batches(tmp_path: Path, rgb: np.ndarray) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(rgb).save(p)
    ref = _expect(rgb)
    for single in (p, str(p), Image.fromarray(rgb), rgb, rgb[:, :, 0], ref):
        ims, batched = load_images(single)
        assert batched is False and len(ims) == 1 and ims[0].shape == (3, 12, 17)
    mixed = [p, Image.fromarray(rgb), rgb, ref, np.zeros((5, 7), np.uint8)]
    ims, batched = load_images(mixed)
    assert batched is True and len(ims) == 5
    for t in ims[:4]:
        torch.testing.assert_close(t, ref)
    assert ims[4].shape == (3, 5, 7)
    ims, batched = load_images(tuple(mixed[:2]))
    assert batched and len(ims) == 2
    tb = torch.stack([ref, 1 - ref, ref * 0.5])
    ims, batched = load_images(tb)
    assert batched and len(ims) == 3
    torch.testing.assert_close(ims[1], 1 - ref)
    nb = np.stack([rgb, 255 - rgb])
    ims, batched = load_images(nb)
    assert batched and len(ims) == 2
    torch.testing.assert_close(ims[1], _expect(255 - rgb))
    srcs, batched = split_images(tb)
    assert batched and len(srcs) == 3 and srcs[0].data_ptr() == tb.data_ptr()  # views, not copies


def test_lazy_public_name() -> None:
    assert dife.load_image is load_image


def test_to_uint8_and_pil_roundtrip(rgb: np.ndarray) -> None:
    t = load_image(rgb)
    assert np.array_equal(to_uint8(t), rgb)
    im = pil_from_tensor(t)
    assert im.mode == "RGB" and im.size == (17, 12)
    assert np.array_equal(np.asarray(im), rgb)
    with pytest.raises(ShapeError, match=r"\(12, 17, 3\)"):
        to_uint8(torch.zeros(12, 17, 3))


# ----------------------------------------------------------------- rejected inputs
def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="not found") as e:
        load_image(p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, DIFEError) and isinstance(e.value, ValueError)
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_corrupt_and_non_image_files(tmp_path: Path, rgb: np.ndarray) -> None:
    p = tmp_path / "text.jpg"
    p.write_text("this is not an image")
    with pytest.raises(ImageError, match="not an image file") as e:
        load_image(p)
    assert "text.jpg" in str(e.value)
    buf = io.BytesIO()
    Image.fromarray(np.tile(rgb, (20, 20, 1))).save(buf, format="PNG")
    q = tmp_path / "trunc.png"
    q.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(q)


def test_empty_images() -> None:
    with pytest.raises(ImageError, match="empty: 5x0"):
        load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ImageError, match="empty"):
        load_image(torch.zeros(3, 4, 0))
    with pytest.raises(ImageError, match="empty"):
        load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(InputError, match="empty list"):
        load_images([])
    with pytest.raises(InputError, match="empty batch"):
        load_images(torch.zeros(0, 3, 4, 4))


def test_wrong_shapes() -> None:
    with pytest.raises(ShapeError, match=r"\(3, 10, 12\).*transpose"):
        load_image(np.zeros((3, 10, 12), np.uint8))
    with pytest.raises(ShapeError, match=r"\(10, 12, 5\)"):
        load_image(np.zeros((10, 12, 5), np.uint8))
    with pytest.raises(ShapeError, match=r"\(10, 12, 3\).*permute"):
        load_image(torch.zeros(10, 12, 3))
    with pytest.raises(ShapeError, match=r"\(2, 10, 12\)"):
        load_image(torch.zeros(2, 10, 12))
    with pytest.raises(ShapeError, match=r"\(10,\)"):
        load_images(np.zeros(10, np.uint8))
    with pytest.raises(ShapeError, match=r"\(1, 2, 3, 4, 5\)"):
        load_images(torch.zeros(1, 2, 3, 4, 5))
    with pytest.raises(ShapeError, match=r"\(B, 3, H, W\), got \(2, 4, 5, 3\).*permute"):
        load_images(torch.zeros(2, 4, 5, 3))
    with pytest.raises(ShapeError, match=r"\(B, H, W, 3\), got \(2, 3, 4, 5\).*transpose"):
        load_images(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ShapeError, match=r"images\[1\].*\(4, 5\)"):
        load_images([np.zeros((4, 5), np.uint8), torch.zeros(4, 5)])


def test_wrong_dtypes_and_types() -> None:
    with pytest.raises(ImageError, match="uint16"):
        load_image(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ImageError, match="int64"):
        load_image(torch.zeros(3, 4, 4, dtype=torch.int64))
    with pytest.raises(InputError, match="int"):
        load_image(5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"images\[1\]"):
        load_images([np.zeros((4, 4, 3), np.uint8), {"not": "an image"}])


def test_nan_and_out_of_range() -> None:
    t = torch.rand(3, 5, 6)
    t[1, 2, 3] = float("nan")
    with pytest.raises(ImageError, match="NaN"):
        load_image(t)
    with pytest.raises(ImageError, match="NaN"):
        load_image(t.permute(1, 2, 0).numpy())
    with pytest.raises(ImageError, match=r"\[0, 255\].*uint8"):
        load_image(torch.linspace(0, 255, 3 * 5 * 6).view(3, 5, 6))
    with pytest.raises(ImageError, match=r"-0\.2"):
        load_image(np.full((4, 4, 3), -0.2))
    with pytest.raises(ImageError, match="inf"):
        load_image(torch.full((3, 4, 4), float("inf")))


def test_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dimages, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="too large: 11x10 = 110 pixels > MAX_PIXELS = 100"):
        load_image(np.zeros((10, 11), np.uint8))
    with pytest.raises(ImageError, match="too large"):
        load_image(torch.zeros(3, 10, 11))
    with pytest.raises(ImageError, match="too large"):
        load_image(Image.new("RGB", (11, 10)))
    load_image(np.zeros((10, 10), np.uint8))  # exactly at the limit is fine
    # The header size is checked before decoding: a truncated file that claims
    # to be big is rejected as too large, not as corrupt.
    buf = io.BytesIO()
    Image.new("RGB", (50, 50), (10, 20, 30)).save(buf, format="PNG")
    p = tmp_path / "big.png"
    p.write_bytes(buf.getvalue()[:60])
    with pytest.raises(ImageError, match="too large") as e:
        load_image(p)
    assert "big.png" in str(e.value)


def test_pil_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "bomb.png"
    Image.new("RGB", (50, 50)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(p)
