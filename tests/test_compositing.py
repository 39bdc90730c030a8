"""Tests of dife.compositing (dife.overlay): assets, transform estimation, anchor placement, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dife
from dife.compositing import BUILTIN_ASSETS, Asset, estimate_transform, list_assets, load_asset, overlay
from dife.errors import ImageError, InputError, KeypointError, ShapeError

ASSETS_DIR = Path(dife.__file__).resolve().parent / "assets"
# distinctive anchor dot colours: one pure channel each
DOTS = {"a": (255, 0, 0), "b": (0, 0, 255), "c": (0, 255, 0)}


def _dot_asset(anchors: dict[str, tuple[float, float]] | None = None, size=(61, 41)) -> Asset:
    """Transparent asset with a solid disc of a pure colour at each anchor."""
    anchors = anchors or {"a": (10.0, 20.0), "b": (50.0, 20.0), "c": (30.0, 35.0)}
    w, h = size
    img = np.zeros((h, w, 4), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for name, (x, y) in anchors.items():
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 2.5**2] = (*DOTS[name], 255)
    return Asset(img, dict(anchors), "dots")


def _centroid(out: Image.Image, name: str) -> np.ndarray:
    """Intensity-weighted centre of one dot colour in an image composited on black."""
    a = np.asarray(out, dtype=np.float64)
    ch = {"a": 0, "b": 2, "c": 1}[name]
    others = [i for i in range(3) if i != ch]
    w = np.clip(a[..., ch] - a[..., others].max(-1), 0, None)
    assert w.sum() > 0, f"dot {name} not visible"
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


def _annotations(faces_dir: Path) -> dict[str, dict]:
    return {r["image"]: r["keypoints"] for r in json.loads((faces_dir / "annotations.json").read_text())}


# -------------------------------------------------------------------- assets
@pytest.mark.parametrize("name", BUILTIN_ASSETS)
def test_builtin_assets(name: str) -> None:
    asset = load_asset(name)
    assert asset.name == name
    assert asset.image.dtype == np.uint8 and asset.image.ndim == 3 and asset.image.shape[2] == 4
    assert {"eye_left_img", "eye_right_img"} <= set(asset.anchors)
    (xl, yl), (xr, yr) = asset.anchors["eye_left_img"], asset.anchors["eye_right_img"]
    assert xl < xr and abs(yl - yr) < 1e-6
    alpha = asset.image[..., 3]
    assert 0 < (alpha > 0).mean() < 0.9  # something drawn, transparent around it
    assert len(np.unique(alpha)) > 10  # anti-aliased edges
    assert (ASSETS_DIR / f"{name}.png").stat().st_size < 50_000
    assert name in list_assets()
    assert load_asset(asset) is asset


def test_party_hat_is_above_the_eyes() -> None:
    hat = load_asset("party_hat")
    rows = np.nonzero(hat.image[..., 3].max(axis=1) > 0)[0]
    assert rows.max() < hat.anchors["eye_left_img"][1] - 50


def test_assets_are_reproducible(tmp_path: Path) -> None:
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[1] / "tools" / "make_assets.py"
    if not script.is_file():
        pytest.skip("tools/make_assets.py is not in this checkout")
    spec = importlib.util.spec_from_file_location("make_assets", script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_assets"] = mod
    spec.loader.exec_module(mod)
    mod.main(["--out", str(tmp_path)])
    for name in BUILTIN_ASSETS:
        new = np.asarray(Image.open(tmp_path / f"{name}.png"))
        old = np.asarray(Image.open(ASSETS_DIR / f"{name}.png"))
        assert np.array_equal(new, old)
        assert json.loads((tmp_path / f"{name}.json").read_text()) == json.loads(
            (ASSETS_DIR / f"{name}.json").read_text()
        )


def test_load_asset_from_path(tmp_path: Path) -> None:
    a = _dot_asset()
    Image.fromarray(a.image).save(tmp_path / "dots.png")
    (tmp_path / "dots.json").write_text(json.dumps({"anchors": {k: list(v) for k, v in a.anchors.items()}}))
    b = load_asset(tmp_path / "dots.png")
    assert np.array_equal(a.image, b.image) and b.anchors == a.anchors and b.name == "dots"
    assert load_asset(str(tmp_path / "dots.png")).anchor_names == ["a", "b", "c"]


def test_load_asset_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="glasses"):  # lists the built-in names
        load_asset("sunhat")
    with pytest.raises(ImageError, match="not found"):
        load_asset(tmp_path / "missing.png")
    Image.new("RGBA", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(InputError, match="sidecar"):
        load_asset(tmp_path / "x.png")
    (tmp_path / "x.json").write_text('{"points": {}}')
    with pytest.raises(InputError, match="anchors"):
        load_asset(tmp_path / "x.png")
    (tmp_path / "x.json").write_text('{"anchors": {"a": [1, "q"]}}')
    with pytest.raises(InputError, match="anchor 'a'"):
        load_asset(tmp_path / "x.png")
    (tmp_path / "y.png").write_bytes(b"not a png")
    (tmp_path / "y.json").write_text('{"anchors": {"a": [1, 2]}}')
    with pytest.raises(ImageError):
        load_asset(tmp_path / "y.png")
    with pytest.raises(ShapeError):
        Asset(np.zeros((4, 4, 3), np.uint8), {"a": (0, 0)})
    with pytest.raises(InputError):
        load_asset(3)


# --------------------------------------------------------------- transforms
def test_estimate_similarity_recovers_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -4.0])
    R = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    M = estimate_transform(src, src @ R.T + t, "similarity")
    np.testing.assert_allclose(M[:, :2], R, atol=1e-9)
    np.testing.assert_allclose(M[:, 2], t, atol=1e-9)
    # two points determine it exactly
    M2 = estimate_transform(src[:2], src[:2] @ R.T + t)
    np.testing.assert_allclose(M2, M, atol=1e-9)


def test_estimate_similarity_has_no_reflection_and_affine_fits_shear() -> None:
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    mirrored = src * np.array([-1.0, 1.0])
    M = estimate_transform(src, mirrored, "similarity")
    assert np.linalg.det(M[:, :2]) > 0
    A = np.array([[1.0, 0.5], [0.2, 2.0]])
    Ma = estimate_transform(src, src @ A.T + 3.0, "affine")
    np.testing.assert_allclose(Ma[:, :2], A, atol=1e-9)


def test_estimate_transform_errors() -> None:
    pts = np.array([[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(InputError, match="at least 3"):
        estimate_transform(pts, pts, "affine")
    with pytest.raises(InputError, match="at least 2"):
        estimate_transform(pts[:1], pts[:1])
    with pytest.raises(InputError, match="coincide"):
        estimate_transform(np.zeros((2, 2)), pts)
    line = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    with pytest.raises(InputError, match="collinear"):
        estimate_transform(line, line, "affine")
    with pytest.raises(InputError, match="transform must be"):
        estimate_transform(pts, pts, "projective")
    with pytest.raises(ShapeError):
        estimate_transform(pts, np.zeros((3, 2)))


# -------------------------------------------------------------------- overlay
@pytest.mark.parametrize(
    "targets",
    [
        {"a": (100.0, 80.0), "b": (180.0, 95.0)},  # upscale x2, slight rotation
        {"a": (100.3, 80.6), "b": (111.9, 84.2)},  # strong downscale (antialiased path)
        {"a": (40.0, 150.0), "b": (40.0, 60.0)},  # rotated by -90 degrees
    ],
)
def test_similarity_puts_anchors_on_keypoints(targets) -> None:
    base = np.zeros((200, 300, 3), np.uint8)
    asset = _dot_asset({"a": (10.0, 20.0), "b": (50.0, 20.0)})
    out = overlay(base, asset, keypoints=targets)
    assert isinstance(out, Image.Image) and out.size == (300, 200) and out.mode == "RGB"
    for name, xy in targets.items():
        np.testing.assert_allclose(_centroid(out, name), xy, atol=0.5)


def test_affine_fits_three_points_similarity_does_not() -> None:
    base = np.zeros((200, 300, 3), np.uint8)
    asset = _dot_asset()
    # stretched vertically: not reachable by a similarity
    targets = {"a": (100.0, 80.0), "b": (180.0, 80.0), "c": (140.0, 150.0)}
    aff = overlay(base, asset, keypoints=targets, transform="affine")
    for name, xy in targets.items():
        np.testing.assert_allclose(_centroid(aff, name), xy, atol=0.5)
    sim = overlay(base, asset, keypoints=targets, transform="similarity")
    err = max(np.linalg.norm(_centroid(sim, n) - np.array(xy)) for n, xy in targets.items())
    assert err > 5
    # the similarity keeps the asset's proportions: dot a->b vs a->c distance ratio unchanged
    ca, cb, cc = (_centroid(sim, n) for n in "abc")
    src = asset.anchor_array()
    ratio_src = np.linalg.norm(src[1] - src[0]) / np.linalg.norm(src[2] - src[0])
    assert np.linalg.norm(cb - ca) / np.linalg.norm(cc - ca) == pytest.approx(ratio_src, rel=0.03)


def test_keypoints_as_array_in_anchor_order_and_extra_names_ignored() -> None:
    base = np.zeros((120, 160, 3), np.uint8)
    asset = _dot_asset()
    arr = np.array([[40.0, 50.0], [100.0, 52.0], [70.0, 80.0]])
    out_arr = overlay(base, asset, keypoints=arr, transform="affine")
    out_dict = overlay(
        base, asset, keypoints={"c": arr[2], "mouth": (1, 1), "a": arr[0], "b": arr[1]}, transform="affine"
    )
    assert np.array_equal(np.asarray(out_arr), np.asarray(out_dict))
    np.testing.assert_allclose(_centroid(out_arr, "c"), arr[2], atol=0.5)


def test_input_not_modified_and_opacity() -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    arr_copy = arr.copy()
    pil = Image.fromarray(arr)
    kp = {"eye_left_img": (40.0, 45.0), "eye_right_img": (80.0, 45.0)}
    out = overlay(arr, "glasses", keypoints=kp)
    out_pil = overlay(pil, "glasses", keypoints=kp)
    assert np.array_equal(arr, arr_copy) and np.array_equal(np.asarray(pil), arr_copy)
    assert out is not pil and np.array_equal(np.asarray(out), np.asarray(out_pil))
    changed = np.any(np.asarray(out) != arr, axis=-1)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    assert 40 - 40 < xs.min() and xs.max() < 80 + 40 and ys.min() > 45 - 30 and ys.max() < 45 + 30
    # lens tint: darker than the random background at the eye
    assert np.asarray(out)[45, 40].mean() < 110
    assert np.array_equal(np.asarray(overlay(arr, "glasses", keypoints=kp, opacity=0.0)), arr)
    half = np.asarray(overlay(arr, "glasses", keypoints=kp, opacity=0.5)).astype(int)
    full = np.asarray(out).astype(int)
    assert np.abs(half - arr).sum() < np.abs(full - arr).sum()


def test_overlay_errors() -> None:
    base = np.zeros((100, 100, 3), np.uint8)
    kp = {"eye_left_img": (30.0, 40.0), "eye_right_img": (70.0, 40.0)}
    with pytest.raises(InputError, match="party_hat"):
        overlay(base, "monocle", keypoints=kp)
    with pytest.raises(InputError, match="exactly one"):
        overlay(base, "glasses")
    with pytest.raises(InputError, match="exactly one"):
        overlay(base, "glasses", keypoints=kp, reference=base, reference_keypoints=kp)
    with pytest.raises(InputError, match="reference_keypoints"):
        overlay(base, "glasses", reference=base)
    with pytest.raises(KeypointError, match="share no name"):
        overlay(base, "glasses", keypoints={"left_eye": (30, 40), "right_eye": (70, 40)})
    with pytest.raises(InputError, match="needs 3"):
        overlay(base, "glasses", keypoints=kp, transform="affine")
    with pytest.raises(InputError, match="needs 2"):
        overlay(base, "glasses", keypoints={"nose": (50, 50)})
    with pytest.raises(KeypointError, match="outside"):
        overlay(base, "glasses", keypoints={"eye_left_img": (30.0, 40.0), "eye_right_img": (170.0, 40.0)})
    with pytest.raises(ShapeError, match="3 anchors"):
        overlay(base, "glasses", keypoints=np.array([[30.0, 40.0], [70.0, 40.0]]))
    with pytest.raises(InputError, match="coincide"):
        overlay(base, "glasses", keypoints={"eye_left_img": (30, 40), "eye_right_img": (30, 40)})
    with pytest.raises(InputError, match="opacity"):
        overlay(base, "glasses", keypoints=kp, opacity=1.5)
    with pytest.raises(InputError, match="transform"):
        overlay(base, "glasses", keypoints=kp, transform="perspective")


# ----------------------------------------------------------------- real faces
def test_glasses_on_a_real_face(faces_dir: Path) -> None:
    ann = _annotations(faces_dir)["human_0001.jpg"]
    path = faces_dir / "human_0001.jpg"
    src = np.asarray(Image.open(path).convert("RGB"))
    out = np.asarray(overlay(path, "glasses", keypoints=ann, transform="affine"))
    assert out.shape == src.shape
    for eye in ("eye_left_img", "eye_right_img"):
        x, y = (int(round(v)) for v in ann[eye])
        assert not np.array_equal(out[y, x], src[y, x])
    # the mouth corners are far below the glasses: untouched
    x, y = (int(round(v)) for v in ann["mouth_left_img"])
    assert np.array_equal(out[y, x], src[y, x])


def test_overlay_via_reference_transfer(tiny_model, faces_dir: Path) -> None:
    from dife.transfer import transfer_keypoints

    ann = _annotations(faces_dir)
    human, cat = faces_dir / "human_0001.jpg", faces_dir / "cat_0001.jpg"
    src = np.asarray(Image.open(cat).convert("RGB"))
    ref_kp = ann["human_0001.jpg"]
    out = overlay(cat, "glasses", reference=human, reference_keypoints=ref_kp, model=tiny_model)
    assert out.size == (256, 256)
    # the same as placing the asset on the transferred anchor points directly
    names = ["eye_left_img", "eye_right_img", "nose"]
    moved = transfer_keypoints(human, cat, np.array([ref_kp[n] for n in names]), model=tiny_model)
    direct = overlay(cat, "glasses", keypoints=dict(zip(names, moved, strict=True)))
    assert np.array_equal(np.asarray(out), np.asarray(direct))
    # self-transfer: the reference is the image itself, so the keypoints come
    # back where they were (to about one grid cell) and so does the asset
    kp = ann["cat_0001.jpg"]
    placed = np.asarray(overlay(cat, "glasses", keypoints=kp)).astype(int)
    via = np.asarray(overlay(cat, "glasses", reference=cat, reference_keypoints=kp, model=tiny_model)).astype(int)
    changed_placed = np.any(placed != src, -1)
    changed_via = np.any(via != src, -1)
    iou = (changed_placed & changed_via).sum() / (changed_placed | changed_via).sum()
    assert iou > 0.8
