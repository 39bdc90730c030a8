"""Tests of dife.train.teachers.cse: detectron2 key layout, safe loading, ROIAlign, forward."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from dife.errors import CheckpointError, InputError, ModelNotFoundError, ShapeError
from dife.train.teachers.cse import (
    CSE_MODEL_ZOO,
    CSEConfig,
    CSETeacher,
    config_from_state_dict,
    load_detectron2_weights,
    roi_align,
)


# ------------------------------------------------------------------ helpers
def d2_shapes(
    blocks=(3, 4, 6, 3),
    stem=64,
    width=64,
    res2_out=256,
    fpn=256,
    dec=256,
    head_convs=8,
    head=512,
    embed=16,
    segm=2,
    head_type="v1convx",
    gn=True,
    nonlocal_block=False,
) -> dict[str, tuple[int, ...]]:
    """Key names and shapes that detectron2 gives a DensePose CSE R-CNN (FPN, decoder, V1ConvX or DeepLab head).

    Written from detectron2's naming rules (ResNet ``stem`` / ``res{k}.{i}.conv{1,2,3}`` / ``shortcut``
    with ``.norm`` FrozenBN buffers, FPN ``fpn_lateral{k}`` / ``fpn_output{k}``, DensePose ``Decoder``
    Sequentials with conv / upsample indices, ``body_conv_fcn{i}``, ``embed_lowres``; for the DeepLab
    head the ``ASPP`` Sequentials -- conv, GroupNorm, ReLU; pool, conv, GroupNorm, ReLU for the image
    branch -- ``project``, the non-local ``NLBlock`` and the ``norm`` children of the GN convs),
    independently of the module under test.
    """
    out: dict[str, tuple[int, ...]] = {}

    def conv_norm(name: str, cout: int, cin: int, k: int) -> None:
        out[f"{name}.weight"] = (cout, cin, k, k)
        for buf in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.norm.{buf}"] = (cout,)

    bu = "backbone.bottom_up"
    conv_norm(f"{bu}.stem.conv1", stem, 3, 7)
    cin, cout, b = stem, res2_out, width
    stage_out = []
    for s, n in enumerate(blocks):
        for i in range(n):
            p = f"{bu}.res{s + 2}.{i}"
            if i == 0:
                conv_norm(f"{p}.shortcut", cout, cin, 1)
            conv_norm(f"{p}.conv1", b, cin if i == 0 else cout, 1)
            conv_norm(f"{p}.conv2", b, b, 3)
            conv_norm(f"{p}.conv3", cout, b, 1)
        stage_out.append(cout)
        cin, cout, b = cout, cout * 2, b * 2
    for level, c in zip(range(2, 6), stage_out, strict=True):
        out[f"backbone.fpn_lateral{level}.weight"] = (fpn, c, 1, 1)
        out[f"backbone.fpn_lateral{level}.bias"] = (fpn,)
        out[f"backbone.fpn_output{level}.weight"] = (fpn, fpn, 3, 3)
        out[f"backbone.fpn_output{level}.bias"] = (fpn,)
    for level, idxs in ((2, [0]), (3, [0]), (4, [0, 2]), (5, [0, 2, 4])):
        for j, idx in enumerate(idxs):
            out[f"roi_heads.decoder.p{level}.{idx}.weight"] = (dec, fpn if j == 0 else dec, 3, 3)
            out[f"roi_heads.decoder.p{level}.{idx}.bias"] = (dec,)
    out["roi_heads.decoder.predictor.weight"] = (dec, dec, 1, 1)
    out["roi_heads.decoder.predictor.bias"] = (dec,)
    c = dec
    hd = "roi_heads.densepose_head"
    if head_type == "deeplab":
        for j, k in enumerate((1, 3, 3, 3)):  # 1x1 branch, three dilated 3x3 branches
            out[f"{hd}.ASPP.convs.{j}.0.weight"] = (dec, dec, k, k)
            out[f"{hd}.ASPP.convs.{j}.1.weight"] = out[f"{hd}.ASPP.convs.{j}.1.bias"] = (dec,)
        out[f"{hd}.ASPP.convs.4.1.weight"] = (dec, dec, 1, 1)  # index 0 is the (parameter-free) pooling
        out[f"{hd}.ASPP.convs.4.2.weight"] = out[f"{hd}.ASPP.convs.4.2.bias"] = (dec,)
        out[f"{hd}.ASPP.project.0.weight"] = (dec, 5 * dec, 1, 1)
        if nonlocal_block:
            inner = dec // 2
            for name in ("theta", "g.0", "phi.0"):
                out[f"{hd}.NLBlock.{name}.weight"] = (inner, dec, 1, 1)
                out[f"{hd}.NLBlock.{name}.bias"] = (inner,)
            out[f"{hd}.NLBlock.W.0.weight"] = (dec, inner, 1, 1)
            out[f"{hd}.NLBlock.W.0.bias"] = out[f"{hd}.NLBlock.W.1.weight"] = out[f"{hd}.NLBlock.W.1.bias"] = (dec,)
    for i in range(1, head_convs + 1):
        out[f"{hd}.body_conv_fcn{i}.weight"] = (head, c, 3, 3)
        if head_type == "deeplab" and gn:  # Conv2d(bias=False, norm=GroupNorm)
            out[f"{hd}.body_conv_fcn{i}.norm.weight"] = out[f"{hd}.body_conv_fcn{i}.norm.bias"] = (head,)
        else:
            out[f"{hd}.body_conv_fcn{i}.bias"] = (head,)
        c = head
    out["roi_heads.densepose_predictor.coarse_segm_lowres.weight"] = (head, segm, 4, 4)
    out["roi_heads.densepose_predictor.coarse_segm_lowres.bias"] = (segm,)
    out["roi_heads.densepose_predictor.embed_lowres.weight"] = (head, embed, 4, 4)
    out["roi_heads.densepose_predictor.embed_lowres.bias"] = (embed,)
    return out


TINY = dict(blocks=(1, 1, 1, 1), stem=8, width=4, res2_out=16, fpn=16, dec=16, head_convs=2, head=16, embed=8)

# Keys of the parts a whole-crop teacher skips, as found in real model-zoo files.
EXTRA = {
    "proposal_generator.rpn_head.conv.weight": (16, 16, 3, 3),
    "proposal_generator.rpn_head.objectness_logits.weight": (3, 16, 1, 1),
    "roi_heads.box_head.fc1.weight": (32, 16 * 49),
    "roi_heads.box_predictor.cls_score.weight": (2, 32),
    "roi_heads.embedder.embedder_cat_7466.features": (20, 6),
    "roi_heads.embedder.embedder_cat_7466.embeddings": (6, 8),
}


def tiny_config(**kw) -> CSEConfig:
    base = dict(
        blocks=(1, 1, 1, 1),
        stem_channels=8,
        width_per_group=4,
        res2_out_channels=16,
        fpn_channels=16,
        decoder_channels=16,
        decoder_out_channels=16,
        head_convs=2,
        head_channels=16,
        embed_dim=8,
        pooler_resolution=7,
        input_size=64,
    )
    base.update(kw)
    return CSEConfig(**base)


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for k, s in shapes.items():
        if k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 1.5, size=s).astype(np.float32)
        else:
            fan_in = int(np.prod(s[1:])) if len(s) > 1 else 1
            state[k] = (rng.standard_normal(s) / math.sqrt(fan_in)).astype(np.float32)
    return state


def save_d2_pickle(path, state, protocol=2) -> None:
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f, protocol=protocol)


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, np.ndarray]:
    return random_state({**d2_shapes(**TINY), **EXTRA})


@pytest.fixture()
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 48, 48, generator=g) * 2 - 1


# -------------------------------------------------------------- key layout
def test_real_r50_config_has_exactly_detectron2_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = CSETeacher(CSEConfig())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = d2_shapes()
    assert set(ours) == set(expected), (sorted(set(ours) - set(expected))[:5], sorted(set(expected) - set(ours))[:5])
    assert ours == expected
    assert len(expected) == 317
    # and the architecture is recovered from the shapes alone
    meta = {k: torch.empty(s, device="meta") for k, s in expected.items()}
    assert config_from_state_dict(meta) == CSEConfig()


def test_r101_layout_and_inference() -> None:
    expected = d2_shapes(blocks=(3, 4, 23, 3))
    with torch.device("meta"):
        model = CSETeacher(CSEConfig(depth=101))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    meta = {k: torch.empty(s, device="meta") for k, s in expected.items()}
    assert config_from_state_dict(meta).depth == 101


def test_r101_deeplab_head_has_exactly_the_authors_keys_and_shapes() -> None:
    """The authors' CSE (R101-FPN with the DeepLab head, ``..._DL_soft_animals_finetune_i2m_m2m_16k``)."""
    expected = d2_shapes(blocks=(3, 4, 23, 3), head_type="deeplab")
    with torch.device("meta"):
        model = CSETeacher(CSEConfig(depth=101, head="deeplab"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(expected), (sorted(set(ours) - set(expected))[:5], sorted(set(expected) - set(ours))[:5])
    assert ours == expected
    assert ours["roi_heads.densepose_head.ASPP.project.0.weight"] == (256, 1280, 1, 1)
    assert ours["roi_heads.densepose_head.body_conv_fcn1.weight"] == (512, 256, 3, 3)
    assert "roi_heads.densepose_head.body_conv_fcn8.norm.weight" in ours
    assert "roi_heads.densepose_head.body_conv_fcn1.bias" not in ours  # GN convs have no bias
    meta = {k: torch.empty(s, device="meta") for k, s in expected.items()}
    assert config_from_state_dict(meta) == CSEConfig(depth=101, head="deeplab")
    # the variants: no norm (biases instead), and the non-local block
    for kw, cfg in (
        ({"gn": False}, CSEConfig(depth=101, head="deeplab", deeplab_norm="")),
        ({"nonlocal_block": True}, CSEConfig(depth=101, head="deeplab", deeplab_nonlocal=True)),
    ):
        shapes = d2_shapes(blocks=(3, 4, 23, 3), head_type="deeplab", **kw)
        with torch.device("meta"):
            m = CSETeacher(cfg)
        assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == shapes
        assert config_from_state_dict({k: torch.empty(s, device="meta") for k, s in shapes.items()}) == cfg


def test_tiny_deeplab_head_loads_strictly_and_runs(tmp_path, images) -> None:
    tiny = {**TINY, "fpn": 64, "dec": 64, "head": 64}  # GroupNorm(32): widths divisible by 32, > 1 value per group
    state = random_state({**d2_shapes(**tiny, head_type="deeplab", nonlocal_block=True), **EXTRA})
    pth = tmp_path / "model_final.pth"  # the authors' DetectionCheckpointer output is a .pth
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}, "iteration": 16000}, pth)
    t = CSETeacher.load(pth, pooler_resolution=7, input_size=64)
    assert t.config.head == "deeplab" and t.config.deeplab_nonlocal and t.config.deeplab_norm == "GN"
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k])
    with torch.no_grad():
        e = t(images)
        segm = t.forward_outputs(images)["coarse_segm"]
    assert e.shape == (2, 8, 28, 28) and segm.shape == (2, 2, 28, 28)
    assert torch.isfinite(e).all() and float(e.std()) > 0
    with torch.no_grad():
        assert not torch.allclose(t(images.flip(0))[0], e[0])
    # the image-pooling branch is a broadcast of the global mean, as bilinear resizing of a 1x1 map is
    aspp = t.roi_heads.densepose_head.ASPP
    x = torch.randn(1, 64, 7, 7)
    with torch.no_grad():
        pooled = aspp.convs[4](x)
        torch.testing.assert_close(
            torch.nn.functional.interpolate(pooled, size=(7, 7), mode="bilinear", align_corners=False),
            pooled.expand(-1, -1, 7, 7),
        )
    # a missing ASPP key is named
    broken = {k: v for k, v in state.items() if "ASPP.project" not in k}
    with pytest.raises(CheckpointError):
        CSETeacher.load_detectron2_state_dict(CSETeacher(t.config), broken)
    with pytest.raises(InputError, match="multiple of 32"):
        CSEConfig(head="deeplab", fpn_channels=16, decoder_channels=16, decoder_out_channels=16)
    with pytest.raises(InputError, match="head"):
        CSEConfig(head="fcn")


def test_tiny_config_inferred_from_state(tiny_state) -> None:
    cfg = config_from_state_dict(tiny_state, pooler_resolution=7, input_size=64)
    assert cfg == tiny_config()


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_pickle_and_pth_agree(tmp_path, tiny_state, images, protocol) -> None:
    pkl = tmp_path / "model_final.pkl"
    save_d2_pickle(pkl, tiny_state, protocol=protocol)
    pth = tmp_path / "model_final.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in tiny_state.items()}, "iteration": 5}, pth)

    a = CSETeacher.load(pkl, pooler_resolution=7, input_size=64)
    b = CSETeacher.load(pth, tiny_config())
    assert a.config == b.config == tiny_config()
    sd = a.state_dict()
    for k, v in sd.items():
        np.testing.assert_array_equal(v.numpy(), tiny_state[k])
    with torch.no_grad():
        ea, eb = a(images), b(images)
    assert ea.shape == (2, 8, 28, 28)
    assert a.output_size == 28 and a.out_channels == 8
    torch.testing.assert_close(ea, eb, rtol=0, atol=0)
    assert torch.isfinite(ea).all() and ea.abs().sum() > 0


def test_frozen_deterministic_and_stays_eval(tmp_path, tiny_state, images) -> None:
    pkl = tmp_path / "m.pkl"
    save_d2_pickle(pkl, tiny_state)
    t = CSETeacher.load(pkl, pooler_resolution=7, input_size=64)
    assert all(not p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training
    with torch.no_grad():
        e1 = t(images)
        e2 = t(images)
        e_single = t(images[1:])
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    torch.testing.assert_close(e1[1:], e_single, rtol=1e-5, atol=1e-5)  # batch items are independent
    out = t.forward_outputs(images)
    assert out["coarse_segm"].shape == (2, 2, 28, 28)
    torch.testing.assert_close(out["embedding"], e1)
    # different images give different embeddings
    with torch.no_grad():
        assert not torch.allclose(t(images.flip(0))[0], e1[0])


def test_resize_to() -> None:
    e = torch.randn(2, 8, 28, 28)
    r = CSETeacher.resize_to(e, 96)
    assert r.shape == (2, 8, 96, 96)
    assert CSETeacher.resize_to(e, (28, 28)) is e
    const = torch.ones(1, 3, 28, 28)
    torch.testing.assert_close(CSETeacher.resize_to(const, (10, 7)), torch.ones(1, 3, 10, 7))
    with pytest.raises(ShapeError, match=r"\(28, 28\)"):
        CSETeacher.resize_to(torch.zeros(28, 28), 4)


def test_missing_file_says_where_to_get_models(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError) as ei:
        CSETeacher.load(tmp_path / "nope.pkl")
    msg = str(ei.value)
    assert "nope.pkl" in msg and "dl.fbaipublicfiles.com/densepose/cse" in msg and "DENSEPOSE_CSE.md" in msg
    assert all(u.startswith("https://dl.fbaipublicfiles.com/densepose/cse/") for u in CSE_MODEL_ZOO.values())


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"model": {"x": _Evil(str(marker))}, "__author__": "x"}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing to load global"):
        load_detectron2_weights(bad)
    assert not marker.exists()


def test_restricted_unpickler_refuses_object_arrays_and_junk(tmp_path) -> None:
    objarr = tmp_path / "obj.pkl"
    with open(objarr, "wb") as f:
        pickle.dump({"model": {"x": np.array([1, "a"], dtype=object)}, "__author__": "x"}, f, protocol=2)
    with pytest.raises(CheckpointError):
        load_detectron2_weights(objarr)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(CheckpointError, match="junk.pkl"):
        load_detectron2_weights(junk)
    nomodel = tmp_path / "nomodel.pkl"
    with open(nomodel, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(CheckpointError, match="'model'"):
        load_detectron2_weights(nomodel)


def test_strict_mapping(tmp_path, tiny_state) -> None:
    cfg = tiny_config()
    missing = dict(tiny_state)
    del missing["roi_heads.densepose_head.body_conv_fcn2.bias"]
    with pytest.raises(CheckpointError, match="body_conv_fcn2.bias"):
        CSETeacher(cfg).load_detectron2_state_dict(missing)
    extra = dict(tiny_state)
    extra["roi_heads.something_new.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match="something_new"):
        CSETeacher(cfg).load_detectron2_state_dict(extra)
    wrong = dict(tiny_state)
    wrong["backbone.fpn_output3.weight"] = np.zeros((16, 16, 1, 1), np.float32)
    with pytest.raises(CheckpointError, match=r"fpn_output3.weight.*\(16, 16, 1, 1\).*\(16, 16, 3, 3\)"):
        CSETeacher(cfg).load_detectron2_state_dict(wrong)
    # a config that disagrees with the file
    pkl = tmp_path / "m.pkl"
    save_d2_pickle(pkl, tiny_state)
    with pytest.raises(CheckpointError):
        CSETeacher.load(pkl, tiny_config(head_convs=3))


# ---------------------------------------------------------------- forward
def test_preprocess_matches_detectron2_convention() -> None:
    t = CSETeacher(tiny_config(input_size=None))
    img = torch.empty(1, 3, 40, 56)
    img[:, 0], img[:, 1], img[:, 2] = 1.0, 0.0, -1.0  # RGB = (255, 127.5, 0)
    x, (h, w) = t.preprocess(img)
    assert (h, w) == (40, 56) and x.shape == (1, 3, 64, 64)  # zero-padded to multiples of 32
    # BGR order, minus the BGR pixel mean, std 1
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([0 - 103.530, 127.5 - 116.280, 255 - 123.675]))
    assert x[:, :, 40:].abs().max() == 0 and x[:, :, :, 56:].abs().max() == 0
    # shortest edge resized to input_size
    t2 = CSETeacher(tiny_config(input_size=80))
    x2, hw2 = t2.preprocess(img)
    assert hw2 == (80, 112) and x2.shape == (1, 3, 96, 128)


def test_non_square_and_no_decoder_variants(images) -> None:
    torch.manual_seed(0)
    t = CSETeacher(tiny_config(decoder=False))
    assert not any("decoder" in k for k in t.state_dict())
    with torch.no_grad():
        assert t(images).shape == (2, 8, 28, 28)
        assert t(torch.zeros(1, 3, 30, 50)).shape == (1, 8, 28, 28)


def test_bad_images() -> None:
    t = CSETeacher(tiny_config())
    with pytest.raises(ShapeError, match=r"\(2, 1, 8, 8\)"):
        t(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ShapeError, match="dtype"):
        t(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    bad = torch.zeros(1, 3, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        t(bad)
    with pytest.raises(InputError):
        CSEConfig(depth=34)


# --------------------------------------------------------------- ROIAlign
def _roi_align_reference(feat: np.ndarray, box, out: int, scale: float, ratio: int) -> np.ndarray:
    """Loop version of the ROIAlign(aligned=True) kernel (detectron2 / torchvision CPU code path)."""
    c, h, w = feat.shape
    x0, y0, x1, y1 = (v * scale - 0.5 for v in box)
    bw, bh = (x1 - x0) / out, (y1 - y0) / out

    def bilinear(y: float, x: float) -> np.ndarray:
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return np.zeros(c)
        y, x = max(y, 0.0), max(x, 0.0)
        yl, xl = int(y), int(x)
        if yl >= h - 1:
            yh = yl = h - 1
            y = float(yl)
        else:
            yh = yl + 1
        if xl >= w - 1:
            xh = xl = w - 1
            x = float(xl)
        else:
            xh = xl + 1
        ly, lx = y - yl, x - xl
        hy, hx = 1 - ly, 1 - lx
        return (
            hy * hx * feat[:, yl, xl]
            + hy * lx * feat[:, yl, xh]
            + ly * hx * feat[:, yh, xl]
            + ly * lx * feat[:, yh, xh]
        )

    res = np.zeros((c, out, out))
    for ph in range(out):
        for pw in range(out):
            acc = np.zeros(c)
            for iy in range(ratio):
                y = y0 + ph * bh + (iy + 0.5) * bh / ratio
                for ix in range(ratio):
                    x = x0 + pw * bw + (ix + 0.5) * bw / ratio
                    acc += bilinear(y, x)
            res[:, ph, pw] = acc / (ratio * ratio)
    return res


@pytest.mark.parametrize(
    "box",
    [(0.0, 0.0, 48.0, 40.0), (5.3, 2.1, 30.7, 33.9), (-10.0, -6.0, 20.0, 52.0), (30.0, 20.0, 60.0, 47.0)],
)
def test_roi_align_matches_reference_kernel(box) -> None:
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 3, 10, 12, generator=g, dtype=torch.float64)
    got = roi_align(feat, torch.tensor([box], dtype=torch.float64), 5, 0.25, 2)[0].numpy()
    ref = _roi_align_reference(feat[0].numpy(), box, 5, 0.25, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
