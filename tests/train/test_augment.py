"""Tests of dife.train.augment: warps, joint warps, correspondence, colour jitter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dife.coords import grid_to_normalized
from dife.errors import InputError, ShapeError
from dife.train.augment import (
    TPSParams,
    Warp,
    affine_grid,
    color_jitter,
    correspondence,
    inside_mask,
    pixel_centres,
    random_affine,
    random_tps,
    random_warp,
    tps_apply,
    tps_from_points,
    tps_grid,
    warp_images,
)
from dife.train.losses import matching_loss


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp(batch: int, size: int) -> torch.Tensor:
    """(B, 2, S, S) image whose value at a pixel is its own [-1, 1] position (x, y)."""
    return pixel_centres(size).permute(2, 0, 1)[None].expand(batch, -1, -1, -1).contiguous()


def sample_at_pixels(image: torch.Tensor, grid_px: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of (B, C, S, S) at (B, h, w, 2) pixel coordinates -> (B, C, h, w)."""
    norm = grid_to_normalized(grid_px, image.shape[-1])
    return F.grid_sample(image, norm, mode="bilinear", padding_mode="zeros", align_corners=False)


def interior(warp_a: Warp, grid_ab: torch.Tensor, valid: torch.Tensor, size: int, margin: float = 2.0) -> torch.Tensor:
    """Valid pixels whose source point and target are >= margin px inside the frames."""
    lim = 1.0 - 2.0 * margin / size
    src_ok = (warp_a.grid(size).abs() <= lim).all(-1)
    tgt_ok = ((grid_ab >= margin - 0.5) & (grid_ab <= size - 0.5 - margin)).all(-1)
    return valid & src_ok & tgt_ok


# ---------------------------------------------------------------------- affine
def test_affine_grid_equals_torch_affine_grid():
    theta = random_affine(3, flip=True, generator=gen(0))
    ours = affine_grid(theta, (8, 8))
    ref = F.affine_grid(theta, (3, 1, 8, 8), align_corners=False)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_random_affine_respects_ranges():
    theta = random_affine(
        400, max_rotation_deg=10, scale=(0.9, 1.2), max_translate=0.05, generator=gen(1), dtype=torch.float64
    )
    m, b = theta[:, :, :2], theta[:, :, 2]
    zoom = 1.0 / torch.linalg.det(m).abs().sqrt()
    assert zoom.min() >= 0.9 - 1e-9 and zoom.max() <= 1.2 + 1e-9 and zoom.max() - zoom.min() > 0.2
    # M = R(-a) / zoom: angle from the rotation part
    angle = torch.atan2(m[:, 0, 1], m[:, 0, 0]) * 180 / math.pi
    assert angle.abs().max() <= 10 + 1e-6 and angle.abs().max() > 8
    assert bool((torch.linalg.det(m) > 0).all())  # no mirror without flip
    shift = -(torch.linalg.inv(m) @ b[:, :, None])[..., 0]  # forward shift of the content
    assert shift.abs().max() <= 2 * 0.05 + 1e-9 and shift.abs().max() > 0.09
    flipped = random_affine(200, flip=True, generator=gen(2))
    det = torch.linalg.det(flipped[:, :, :2])
    assert 50 < int((det < 0).sum()) < 150


def blob(size: int, x: float, y: float, sigma: float = 1.5) -> torch.Tensor:
    """(1, 1, S, S) Gaussian blob centred at pixel coordinates (x, y)."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    return torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))[None, None].float()


def centroid_px(img: torch.Tensor) -> torch.Tensor:
    h, w = img.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    m = img[0, 0]
    return torch.stack([(m * xs).sum() / m.sum(), (m * ys).sum() / m.sum()])


def test_affine_content_moves_as_documented():
    theta = random_affine(1, max_rotation_deg=0, scale=(1, 1), max_translate=0.0)
    torch.testing.assert_close(theta, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    size = 40
    # zoom 2 about the centre: the blob at pixel (25, 19.5) (x = +0.275) appears at x = 0.55, pixel 30.5
    zoom = random_affine(1, max_rotation_deg=0, scale=(2.0, 2.0), max_translate=0.0)
    out = warp_images(blob(size, 25.0, 19.5), zoom)  # a (B, 2, 3) matrix is accepted as a warp
    torch.testing.assert_close(centroid_px(out), torch.tensor([30.5, 19.5]), atol=0.05, rtol=0)
    # shift: content moves by +t (t as a fraction of the side)
    shift = random_affine(1, max_rotation_deg=0, scale=(1, 1), max_translate=0.1, generator=gen(0), dtype=torch.float64)
    t = -shift[0, :, 2] * size / 2  # in pixels
    out = warp_images(blob(size, 19.5, 19.5), shift.float())
    torch.testing.assert_close(centroid_px(out), torch.tensor([19.5, 19.5]) + t.float(), atol=0.05, rtol=0)
    # rotation by a > 0: clockwise on screen (y down): (r, 0) from the centre -> (r cos a, r sin a)
    rot = random_affine(1, max_rotation_deg=60, scale=(1, 1), max_translate=0, generator=gen(1), dtype=torch.float64)
    a = torch.atan2(rot[0, 0, 1], rot[0, 0, 0])
    out = warp_images(blob(size, 29.5, 19.5), rot.float())
    want = torch.tensor([19.5 + 10 * math.cos(a), 19.5 + 10 * math.sin(a)])
    assert abs(float(a)) > 0.1
    torch.testing.assert_close(centroid_px(out), want, atol=0.05, rtol=0)


# ------------------------------------------------------------------------- TPS
def test_tps_interpolates_control_points_and_zero_offset_is_identity():
    params = random_tps(2, n_ctrl=3, max_offset=0.1, generator=gen(3))
    assert isinstance(params, TPSParams) and params.ctrl.shape == (2, 9, 2)
    torch.testing.assert_close(tps_apply(params, params.ctrl.double()), params.target.double(), atol=1e-9, rtol=0)
    assert (params.target - params.ctrl).abs().max() > 0.1  # really moved (offsets up to 0.2 in [-1, 1] units)
    ident = random_tps(2, max_offset=0.0, generator=gen(3))
    torch.testing.assert_close(tps_grid(ident, 12), pixel_centres(12)[None].expand(2, -1, -1, -1), atol=1e-6, rtol=0)


def test_tps_errors():
    c = torch.tensor([[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]])
    with pytest.raises(InputError, match="collinear"):
        tps_from_points(c, c)
    with pytest.raises(ShapeError):
        tps_from_points(c[:, :2], c[:, :2])
    with pytest.raises(InputError, match="n_ctrl"):
        random_tps(1, n_ctrl=1)
    with pytest.raises(InputError, match="max_offset"):
        random_tps(1, max_offset=-0.1)


# ----------------------------------------------------------------- determinism
def test_seeded_generator_is_deterministic():
    a = random_warp(3, affine={"flip": True}, generator=gen(7)).grid(16)
    b = random_warp(3, affine={"flip": True}, generator=gen(7)).grid(16)
    c = random_warp(3, affine={"flip": True}, generator=gen(8)).grid(16)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    x = torch.rand(2, 3, 8, 8, generator=gen(0)) * 2 - 1
    kw = {"hue": 0.1, "grayscale_p": 0.5}
    assert torch.equal(color_jitter(x, generator=gen(1), **kw), color_jitter(x, generator=gen(1), **kw))
    assert not torch.equal(color_jitter(x, generator=gen(1), **kw), color_jitter(x, generator=gen(2), **kw))


def test_random_warp_parts_can_be_switched_off():
    w = random_warp(2, affine=False, tps=False)
    assert w.is_affine and torch.equal(w.grid(8), pixel_centres(8)[None].expand(2, -1, -1, -1))
    assert random_warp(2, tps=False, generator=gen(0)).is_affine
    assert not random_warp(2, generator=gen(0)).is_affine
    with pytest.raises(InputError, match="bad warp options"):
        random_warp(2, affine={"rotation": 3})
    with pytest.raises(InputError, match="generator"):
        random_warp(2, affine={"generator": gen(0)})


# -------------------------------------------------------------- correspondence
@pytest.mark.parametrize("kind", ["affine", "tps", "dense"])
def test_correspondence_maps_ramp_values_onto_each_other(kind):
    size, b = 40, 3
    g = gen(11)
    tps = False if kind == "affine" else {"max_offset": 0.1}
    warp_a = random_warp(b, affine={"flip": True}, tps=tps, generator=g)
    warp_b = random_warp(b, affine={"flip": True}, tps=tps, generator=g)
    src = ramp(b, size)
    view_a, view_b = warp_images(src, warp_a), warp_images(src, warp_b)
    if kind == "dense":
        grid_ab, valid = correspondence(warp_a.grid(size), warp_b.grid(size), size)
    else:
        grid_ab, valid = correspondence(warp_a, warp_b, size)
    assert grid_ab.shape == (b, size, size, 2) and grid_ab.dtype == torch.float32
    assert valid.shape == (b, size, size) and valid.dtype == torch.bool
    keep = interior(warp_a, grid_ab, valid, size)
    assert keep.float().mean() > 0.5
    # view b sampled at the correspondence shows the same source point as view a
    err_px = (sample_at_pixels(view_b, grid_ab) - view_a).norm(dim=1) * size / 2
    assert err_px[keep].max() < 0.1 and err_px[keep].mean() < 0.01  # spec: < 0.5 px
    # ... which the identity does not (the test can fail)
    ident = pixel_centres(size).expand(b, -1, -1, -1)
    ident_px = (ident + 1) * size / 2 - 0.5
    assert ((sample_at_pixels(view_b, ident_px) - view_a).norm(dim=1) * size / 2)[keep].mean() > 1.0


def test_correspondence_is_exact_for_warps():
    size = 32
    g = gen(5)
    warp_a, warp_b = random_warp(2, generator=g), random_warp(2, generator=g)
    grid_ab, valid = correspondence(warp_a, warp_b, size)
    q = grid_to_normalized(grid_ab.double(), size).reshape(2, -1, 2)
    p = pixel_centres(size, dtype=torch.float64).reshape(1, -1, 2).expand(2, -1, -1)
    err_px = (warp_b.apply(q) - warp_a.apply(p)).norm(dim=-1).reshape(2, size, size) * size / 2
    assert err_px[valid].max() < 1e-3
    # invalid exactly where the source point leaves the source or the target leaves view b
    src_in = inside_mask(warp_a.grid(size))
    assert not bool((valid & ~src_in).any())
    tgt = grid_ab[valid]
    assert bool(((tgt >= -0.5) & (tgt <= size - 0.5)).all())
    assert bool((grid_ab[~valid] == -1).all())
    assert 0.3 < valid.float().mean() < 1.0  # some pixels leave the frame


def test_correspondence_of_identical_warps_is_identity():
    w = random_warp(2, generator=gen(4))
    grid_ab, valid = correspondence(w, w, 24)
    centres = torch.stack(torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="xy"), -1)
    torch.testing.assert_close(grid_ab[valid], centres.expand(2, -1, -1, -1)[valid], atol=1e-4, rtol=0)
    assert torch.equal(valid, inside_mask(w.grid(24)))


def test_correspondence_between_resolutions():
    g = gen(9)
    warp_a, warp_b = random_warp(2, generator=g), random_warp(2, generator=g)
    same, valid = correspondence(warp_a, warp_b, 48)
    low, valid_low = correspondence(warp_a, warp_b, (48, 24))
    assert low.shape == (2, 48, 48, 2)
    both = valid & valid_low
    assert both.float().mean() > 0.5
    # pixel coordinates of a 24-px map: x24 = (x48 + 0.5) / 2 - 0.5
    torch.testing.assert_close(low[both], (same[both] + 0.5) / 2 - 0.5, atol=1e-4, rtol=0)


def test_correspondence_feeds_matching_loss():
    # descriptors = smooth functions of the source position, warped like the images
    size = 16
    g = gen(0)
    warp_a, warp_b = random_warp(2, generator=g), random_warp(2, generator=g)
    lin = torch.linspace(-1, 1, 8)
    cy, cx = torch.meshgrid(lin, lin, indexing="ij")
    centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], -1)
    p = pixel_centres(size)
    e = torch.exp(-((p[:, :, None, :] - centres) ** 2).sum(-1) / (2 * 0.15**2)).permute(2, 0, 1)
    e = e[None].expand(2, -1, -1, -1).contiguous()
    ea = warp_images(e, warp_a, padding_mode="border")
    eb = warp_images(e, warp_b, padding_mode="border")
    grid_ab, valid = correspondence(warp_a, warp_b, size)
    right = matching_loss(ea, eb, grid1_to_2=grid_ab, valid=valid, temperature=0.05)
    identity = matching_loss(ea, eb, valid=valid, temperature=0.05)
    swapped = matching_loss(eb, ea, grid1_to_2=grid_ab, valid=valid, temperature=0.05)
    assert right < 0.03 and right < identity / 4 and right < swapped / 4


def test_correspondence_errors():
    w2, w3 = random_warp(2), random_warp(3)
    with pytest.raises(ShapeError, match="batch sizes"):
        correspondence(w2, w3, 8)
    with pytest.raises(ShapeError, match="grid_b"):
        correspondence(w2, torch.zeros(2, 8, 8), 8)
    with pytest.raises(InputError, match="size"):
        correspondence(w2, w2, 0)
    singular = torch.zeros(2, 2, 3)
    with pytest.raises(InputError, match="degenerate"):
        correspondence(w2, singular, 8)


# ------------------------------------------------------------------ joint warp
def test_joint_warp_is_consistent_across_resolutions():
    # an image at 96 and its "teacher map" at 24 (and 64): one warp, views that agree point for point
    g = gen(3)
    warp = random_warp(2, tps={"max_offset": 0.1}, generator=g)
    img = ramp(2, 96)
    for low_size in (24, 64):
        low = ramp(2, low_size)
        view_hi, view_lo = warp_images(img, warp), warp_images(low, warp)
        assert view_lo.shape == (2, 2, low_size, low_size)
        # the high-res view sampled at the low-res pixel centres
        at_lo = F.grid_sample(view_hi, pixel_centres(low_size).expand(2, -1, -1, -1), align_corners=False)
        keep = (warp.grid(low_size).abs() <= 1 - 4 / low_size).all(-1)
        err = (at_lo - view_lo).norm(dim=1)[keep]
        assert keep.float().mean() > 0.5 and err.max() * 96 / 2 < 0.05
    # and a wrong pairing (the warp's grid of another size, reinterpreted) is far off
    wrong = warp_images(ramp(2, 24), warp.grid(96)[:, ::4, ::4])
    right = warp_images(ramp(2, 24), warp)
    assert (wrong - right).abs().max() > 0.01


def test_warp_images_shapes_and_errors():
    x = torch.rand(2, 5, 12, 12)
    w = random_warp(2, generator=gen(0))
    assert warp_images(x, w).shape == (2, 5, 12, 12)
    assert warp_images(x, w.grid(7)).shape == (2, 5, 7, 7)
    ident = warp_images(x, Warp.identity(2))
    torch.testing.assert_close(ident, x, atol=1e-5, rtol=0)
    with pytest.raises(ShapeError, match="batch"):
        warp_images(x, random_warp(3))
    with pytest.raises(ShapeError, match="images"):
        warp_images(x[0], w)
    with pytest.raises(ShapeError, match="grid"):
        warp_images(x, torch.zeros(2, 4, 4, 3))
    with pytest.raises(InputError, match="padding_mode"):
        warp_images(x, w, padding_mode="reflect")
    with pytest.raises(ShapeError, match="NaN"):
        warp_images(x, torch.full((2, 4, 4, 2), float("nan")))


# ---------------------------------------------------------------- colour jitter
def test_color_jitter_identity_at_zero_strength():
    x = torch.rand(3, 3, 9, 9, generator=gen(0)) * 2 - 1
    out = color_jitter(x, brightness=0, contrast=0, saturation=0, hue=0, grayscale_p=0)
    assert torch.equal(out, x) and out is not x


def test_color_jitter_range_and_per_sample_factors():
    x = torch.rand(6, 3, 10, 10, generator=gen(1)) * 2 - 1
    x[:, :, 0, 0] = 1.0  # extremes stay in range
    x[:, :, 0, 1] = -1.0
    out = color_jitter(x, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.5, grayscale_p=0.5, generator=gen(2))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.allclose(out, x)
    # brightness only: (out + 1) / (x + 1) is one factor per sample, different across samples
    x2 = torch.rand(4, 3, 6, 6, generator=gen(3)) * 0.8 - 0.9  # dark enough not to clip
    b = color_jitter(x2, brightness=0.5, contrast=0, saturation=0, generator=gen(4))
    ratio = ((b + 1) / (x2 + 1)).flatten(1)
    torch.testing.assert_close(ratio.min(1).values, ratio.max(1).values, atol=1e-5, rtol=0)
    factors = ratio[:, 0]
    assert bool(((factors >= 0.5 - 1e-6) & (factors <= 1.5 + 1e-6)).all()) and factors.std() > 0.01


def test_color_jitter_grayscale_and_hue():
    x = torch.rand(2, 3, 8, 8, generator=gen(5)) * 2 - 1
    gray = color_jitter(x, brightness=0, contrast=0, saturation=0, grayscale_p=1.0, generator=gen(0))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    luma = (x + 1) / 2 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((gray[:, 0] + 1) / 2, luma.sum(1), atol=1e-5, rtol=0)
    # hue rotation leaves grey pixels grey and changes coloured ones
    grey_img = torch.full((2, 3, 4, 4), 0.2)
    torch.testing.assert_close(
        color_jitter(grey_img, brightness=0, contrast=0, saturation=0, hue=0.5, generator=gen(1)),
        grey_img, atol=1e-5, rtol=0,
    )  # fmt: skip
    red = torch.tensor([0.6, -0.6, -0.6]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert not torch.allclose(color_jitter(red, brightness=0, contrast=0, saturation=0, hue=0.4, generator=gen(1)), red)


def test_color_jitter_probability():
    x = torch.rand(400, 3, 4, 4, generator=gen(6)) * 1.6 - 0.8
    # the authors' augmentation: RandomApply(ColorJitter(brightness 0.1, hue 0.1), p=0.7)
    out = color_jitter(x, brightness=0.1, contrast=0, saturation=0, hue=0.1, p=0.7, generator=gen(7))
    changed = (out - x).flatten(1).abs().amax(1) > 1e-6
    assert 0.6 < float(changed.float().mean()) < 0.8  # ~70 % of the samples
    torch.testing.assert_close(out[~changed], x[~changed], rtol=0, atol=0)  # the others untouched
    assert float(((out[changed] + 1) / (x[changed] + 1)).flatten(1).std(1).max()) > 1e-3  # hue changed colours
    assert torch.equal(color_jitter(x, brightness=0.5, p=0.0, generator=gen(8)), x)
    # p = 1 draws no extra random numbers: the same result as before the option existed
    g1, g2 = gen(9), gen(9)
    torch.testing.assert_close(color_jitter(x, p=1.0, generator=g1), color_jitter(x, generator=g2), rtol=0, atol=0)
    assert torch.equal(g1.get_state(), g2.get_state())
    with pytest.raises(InputError, match="p must"):
        color_jitter(x, p=1.5)


def test_color_jitter_errors():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ShapeError):
        color_jitter(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ShapeError):
        color_jitter(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(InputError, match="hue"):
        color_jitter(x, hue=0.7)
    with pytest.raises(InputError, match="brightness"):
        color_jitter(x, brightness=-1)
    with pytest.raises(InputError, match="generator"):
        color_jitter(x, generator=0)
