"""StyleGAN2 teacher: reference equivalence, checkpoint layouts, freezing, pickle safety."""

from __future__ import annotations

import argparse
import builtins
import collections
import json
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from dife.errors import CheckpointError, InputError, ModelNotFoundError, ShapeError
from dife.train.teachers import GeneratorTeacher, StyleGAN2, _safe_pickle
from dife.train.teachers._stylegan2_layouts import convert_ada, convert_rosinality

ATOL = 1e-4

ROSI = "stylegan2_rosinality_tiny64.pt"
ROSI_EXPECTED = "stylegan2_rosinality_tiny64_expected.pt"
ADA = "stylegan2_ada_tiny64_state.pt"
ADA_EXPECTED = "stylegan2_ada_tiny64_expected.pt"


def _load(fixtures_dir, name):
    path = fixtures_dir / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def rosi(fixtures_dir):
    if not (fixtures_dir / ROSI).exists():
        pytest.skip(f"{fixtures_dir / ROSI} not found")
    return StyleGAN2.load(fixtures_dir / ROSI)


@pytest.fixture(scope="module")
def ada(fixtures_dir):
    if not (fixtures_dir / ADA).exists():
        pytest.skip(f"{fixtures_dir / ADA} not found")
    return StyleGAN2.load(fixtures_dir / ADA)


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------- reference equivalence


def test_rosinality_matches_reference(rosi, fixtures_dir):
    exp = _load(fixtures_dir, ROSI_EXPECTED)
    cfg = exp["config"]
    assert rosi.layout == "rosinality" and rosi.w_avg_source == "checkpoint"
    assert (rosi.resolution, rosi.z_dim, rosi.w_dim) == (cfg["size"], cfg["style_dim"], cfg["style_dim"])
    assert rosi.config.mapping_layers == cfg["n_mlp"]
    assert rosi.config.channels == {int(k): v for k, v in cfg["channels"].items()}
    assert torch.equal(rosi.w_avg, exp["latent_avg"])

    with torch.no_grad():
        w = rosi.mapping(exp["z"])
        assert _maxdiff(w, exp["w"]) < ATOL
        w_trunc = rosi.mapping(exp["z"], truncation=exp["truncation"])
        image, feats = rosi.synthesis(w_trunc, noise_mode="const", return_features=True)
    assert _maxdiff(image, exp["image"]) < ATOL
    assert sorted(exp["features"]) == [1, 3, 5, 7]
    for layer, ref in exp["features"].items():
        assert _maxdiff(feats[layer], ref) < ATOL, layer


def test_ada_state_dict_matches_reference(ada, fixtures_dir):
    exp = _load(fixtures_dir, ADA_EXPECTED)
    cfg = exp["config"]
    assert ada.layout == "ada" and ada.config.conv_clamp == cfg["conv_clamp"]
    assert (ada.resolution, ada.z_dim, ada.w_dim) == (cfg["img_resolution"], cfg["z_dim"], cfg["w_dim"])
    assert ada.config.mapping_layers == cfg["mapping_layers"]
    assert ada.config.channels == {r: min(cfg["channel_base"] // r, cfg["channel_max"]) for r in (4, 8, 16, 32, 64)}
    assert ada.num_ws == exp["ws"].shape[1]

    with torch.no_grad():
        w = ada.mapping(exp["z"], truncation=exp["truncation_psi"])
        assert _maxdiff(w.unsqueeze(1).expand_as(exp["ws"]), exp["ws"]) < ATOL
        image, feats = ada.synthesis(exp["ws"], noise_mode=exp["noise_mode"], return_features=True)
    assert _maxdiff(image, exp["image"]) < ATOL
    for res, ref in exp["block_outputs"].items():
        layer = {4: -1, 8: 1, 16: 3, 32: 5, 64: 7}[res]
        assert ada.feature_shape(layer) == tuple(ref.shape[1:])
        assert _maxdiff(feats[layer], ref) < ATOL, res


def test_w_broadcast_equals_per_layer_w(rosi):
    w = rosi.sample_w(2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = rosi.synthesis(w)
        b = rosi.synthesis(w.unsqueeze(1).repeat(1, rosi.num_ws, 1))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- manifests


@pytest.mark.parametrize(
    "name, layout, resolution",
    [
        ("manifest_rosinality_g1024.json", "rosinality", 1024),
        ("manifest_rosinality_g512.json", "rosinality", 512),
        ("manifest_nvlabs_ada_g1024.json", "ada", 1024),
        ("manifest_nvlabs_ada_g512.json", "ada", 512),
    ],
)
def test_manifest_maps_every_key(fixtures_dir, name, layout, resolution):
    path = fixtures_dir / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    shapes = json.loads(path.read_text())
    sd = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    ckpt = convert_rosinality(sd) if layout == "rosinality" else convert_ada(sd)
    assert set(ckpt.source_keys) == set(shapes), "every manifest key must be placed"
    assert (ckpt.resolution, ckpt.w_dim, ckpt.z_dim, ckpt.mapping_layers) == (resolution, 512, 512, 8)
    expected_ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    assert ckpt.channels == {r: c for r, c in expected_ch.items() if r <= resolution}

    g = StyleGAN2.from_checkpoint(sd, device="meta")  # the real loading path, no allocation
    own = g.state_dict()
    for src, dst in ckpt.source_keys.items():
        assert dst in own, (src, dst)
        assert own[dst].numel() == int(np.prod(shapes[src])), (src, dst)
        assert tuple(own[dst].shape) == tuple(ckpt.state_dict[dst].shape), (src, dst)
    unfilled = set(own) - set(ckpt.source_keys.values())
    # rosinality stores no FIR kernel where the ADA layout keeps an unused copy, nor w_avg (kept beside g_ema).
    assert all(k.endswith("resample_filter") or k == "mapping.w_avg" for k in unfilled), sorted(unfilled)
    if layout == "ada":
        assert not unfilled
    assert g.feature_shape(7) == (512, 64, 64)
    assert g.feature_shape(5) == (512, 32, 32)
    assert g.num_ws == 2 * int(np.log2(resolution)) - 2


# ----------------------------------------------------------------------------- latents


def test_truncation_math(rosi):
    z = rosi.sample_z(4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = rosi.mapping(z)
        w07 = rosi.mapping(z, truncation=0.7)
        w0 = rosi.mapping(z, truncation=0.0)
        centre = torch.randn(rosi.w_dim)
        wc = rosi.mapping(z, truncation=0.5, truncation_latent=centre)
    assert torch.allclose(w07, rosi.w_avg + 0.7 * (w - rosi.w_avg), atol=1e-5)
    assert torch.allclose(w0, rosi.w_avg.expand_as(w0), atol=1e-6)
    assert torch.allclose(wc, centre + 0.5 * (w - centre), atol=1e-5)
    assert not torch.allclose(w07, w)


def test_mean_latent(rosi):
    m1 = rosi.mean_latent(n=300, seed=3, batch_size=128)
    m2 = rosi.mean_latent(n=300, seed=3, batch_size=300)
    assert m1.shape == (rosi.w_dim,)
    assert torch.allclose(m1, m2, atol=1e-5)
    z = torch.randn(300, rosi.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(m1, rosi.mapping(z).mean(0), atol=1e-5)
    assert not torch.allclose(m1, rosi.mean_latent(n=300, seed=4))


def test_bare_g_ema_estimates_w_avg(fixtures_dir, tmp_path):
    ckpt = _load(fixtures_dir, ROSI)
    torch.save(ckpt["g_ema"], tmp_path / "bare.pt")
    g = StyleGAN2.load(tmp_path / "bare.pt")
    assert g.w_avg_source == "estimated"
    assert torch.allclose(g.w_avg, g.mean_latent(4096, seed=0))


def test_training_checkpoint_with_args_loads(fixtures_dir, tmp_path):
    ckpt = _load(fixtures_dir, ROSI)
    ckpt = {**ckpt, "args": argparse.Namespace(size=64, n_mlp=2)}
    torch.save(ckpt, tmp_path / "train.pt")
    g = StyleGAN2.load(tmp_path / "train.pt")
    assert torch.equal(g.w_avg, ckpt["latent_avg"])


# ----------------------------------------------------------------------------- frozen but differentiable


def test_frozen_but_differentiable_in_w(rosi):
    assert all(not p.requires_grad for p in rosi.parameters())
    rosi.train()
    assert not rosi.training and not any(m.training for m in rosi.modules())
    assert isinstance(rosi, GeneratorTeacher)

    w = rosi.sample_w(2, truncation=0.7).requires_grad_(True)
    f7 = rosi.feature(w, 7)
    assert f7.shape == (2, *rosi.feature_shape(7))
    f7.square().mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert all(p.grad is None for p in rosi.parameters())

    ws = rosi.sample_w(1).unsqueeze(1).repeat(1, rosi.num_ws, 1).requires_grad_(True)
    img = rosi.synthesis(ws)
    img.mean().backward()
    assert ws.grad is not None and ws.grad[:, -1].abs().sum() > 0  # last w drives the last toRGB


def test_noise_modes(rosi):
    w = rosi.sample_w(2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        const_a = rosi.synthesis(w, noise_mode="const")
        const_b = rosi.synthesis(w, noise_mode="const")
        rand_a = rosi.synthesis(w, noise_mode="random", generator=torch.Generator().manual_seed(5))
        rand_b = rosi.synthesis(w, noise_mode="random", generator=torch.Generator().manual_seed(5))
        rand_c = rosi.synthesis(w, noise_mode="random", generator=torch.Generator().manual_seed(6))
        none = rosi.synthesis(w, noise_mode="none")
    assert torch.equal(const_a, const_b)
    assert torch.equal(rand_a, rand_b)
    assert _maxdiff(rand_a, const_a) > 1e-3
    assert _maxdiff(rand_a, rand_c) > 1e-3
    assert _maxdiff(none, const_a) > 1e-3


def test_early_stop_features(rosi):
    calls: list[str] = []
    hooks = [
        getattr(rosi.synthesis, f"b{r}").register_forward_hook(lambda *a, r=r: calls.append(f"b{r}"))
        for r in (4, 8, 16, 32, 64)
    ]
    hooks += [
        getattr(rosi.synthesis, f"b{r}").torgb.register_forward_hook(lambda *a, r=r: calls.append(f"rgb{r}"))
        for r in (4, 8, 16, 32, 64)
    ]
    hooks += [
        getattr(rosi.synthesis, f"b{r}").conv1.register_forward_hook(lambda *a, r=r: calls.append(f"conv{r}"))
        for r in (4, 8, 16, 32, 64)
    ]
    try:
        w = rosi.sample_w(2, truncation=0.7, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            _, full = rosi.synthesis(w, return_features=True)
            calls.clear()
            only7 = rosi.features(w, layers=(7,))
            assert not any(c.startswith("rgb") for c in calls), calls
            calls.clear()
            only3 = rosi.features(w, layers=3)
            assert calls == ["conv4", "conv8", "conv16"], calls
    finally:
        for h in hooks:
            h.remove()
    assert list(only7) == [7] and torch.equal(only7[7], full[7])
    assert list(only3) == [3] and torch.equal(only3[3], full[3])


def test_bad_inputs(rosi):
    with pytest.raises(ShapeError, match=r"\(B, 32\)"):
        rosi.mapping(torch.zeros(2, 7))
    with pytest.raises(ShapeError, match="num_ws|10"):
        rosi.synthesis(torch.zeros(2, 3, 32))
    with pytest.raises(InputError, match="noise_mode"):
        rosi.synthesis(torch.zeros(1, 32), noise_mode="fresh")
    with pytest.raises(InputError, match="layers"):
        rosi.features(torch.zeros(1, 32), layers=(9,))
    with pytest.raises(InputError, match="layers"):
        rosi.features(torch.zeros(1, 32), layers=(2,))


# ----------------------------------------------------------------------------- errors


def test_missing_checkpoint_names_sources(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        StyleGAN2.load(tmp_path / "nope.pkl")
    msg = str(info.value)
    assert "nope.pkl" in msg
    for name in ("afhqdog.pkl", "afhqcat.pkl", "afhqwild.pkl", "stylegan2-ffhq-config-f"):
        assert name in msg


def test_unrecognised_checkpoint_names_expected_keys(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as info:
        StyleGAN2.load(tmp_path / "other.pt")
    assert "style.1.weight" in str(info.value) and "synthesis.b4.const" in str(info.value)
    (tmp_path / "garbage.pkl").write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(CheckpointError):
        StyleGAN2.load(tmp_path / "garbage.pkl")


def test_truncated_rosinality_checkpoint_is_refused(fixtures_dir):
    ckpt = _load(fixtures_dir, ROSI)
    sd = dict(ckpt["g_ema"])
    del sd["convs.3.conv.weight"]
    with pytest.raises(CheckpointError, match="convs.3.conv.weight"):
        StyleGAN2.from_checkpoint({"g_ema": sd, "latent_avg": ckpt["latent_avg"]})
    sd = dict(ckpt["g_ema"])
    sd["convs.0.conv.weight"] = torch.zeros(1, 32, 31, 3, 3)
    with pytest.raises(CheckpointError, match="shape"):
        StyleGAN2.from_checkpoint({"g_ema": sd, "latent_avg": ckpt["latent_avg"]})


# ----------------------------------------------------------------------------- pickle safety


class _Evil:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: _Evil(os.system, f"touch {m}"),
        lambda m: _Evil(builtins.eval, f"open({str(m)!r}, 'w').close()"),
        lambda m: _Evil(builtins.exec, f"open({str(m)!r}, 'w').close()"),
        lambda m: _Evil(subprocess.call, ["touch", str(m)]),
        lambda m: {"G_ema": {"synthesis.b4.const": _Evil(os.system, f"touch {m}")}},
    ],
    ids=["os.system", "eval", "exec", "subprocess", "nested"],
)
def test_malicious_pickle_is_refused(tmp_path, make):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(make(marker)))
    with pytest.raises(CheckpointError, match="refusing"):
        StyleGAN2.load(path)
    assert not marker.exists()


def test_malicious_torch_save_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"g_ema": _Evil(os.system, f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        StyleGAN2.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_nvidia_helper_names_are_inert(tmp_path):
    marker = tmp_path / "pwned"
    # dnnlib.util.call_func_by_name('os.system', ...) would run a command in NVIDIA's code.
    data = f"cdnnlib.util\ncall_func_by_name\n(S'os.system'\nS'touch {marker}'\ntR.".encode()
    obj = _safe_pickle.loads_pickle(data)
    assert isinstance(obj, _safe_pickle.StandIn)
    (tmp_path / "x.pkl").write_bytes(data)
    with pytest.raises(CheckpointError):
        StyleGAN2.load(tmp_path / "x.pkl")
    assert not marker.exists()


def test_tensorflow_pickle_gets_a_conversion_hint(tmp_path):
    # (G, D, Gs) of dnnlib.tflib.network.Network objects, as in NVIDIA's TF StyleGAN2 pickles.
    net = b"cdnnlib.tflib.network\nNetwork\n)\x81}b"
    data = b"(" + net * 3 + b"t."
    (tmp_path / "tf.pkl").write_bytes(data)
    with pytest.raises(CheckpointError, match="TensorFlow"):
        StyleGAN2.load(tmp_path / "tf.pkl")


_BUFFERS = ("w_avg", "resample_filter", "noise_const")


def _ada_like_pickle(state_dict, monkeypatch, marker, conv_clamp=256.0) -> bytes:
    """Pickle a {'G', 'D', 'G_ema', ...} snapshot whose networks reduce like torch_utils.persistence objects."""

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never be called
        raise AssertionError("the loader must not call NVIDIA's reconstruct function")

    persistence = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.persistence = persistence
    dnnlib_util = types.ModuleType("dnnlib.util")
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    dnnlib_util.EasyDict = easy
    dnnlib = types.ModuleType("dnnlib")
    dnnlib.util = dnnlib_util
    for name, mod in [
        ("torch_utils", torch_utils),
        ("torch_utils.persistence", persistence),
        ("dnnlib", dnnlib),
        ("dnnlib.util", dnnlib_util),
    ]:
        monkeypatch.setitem(sys.modules, name, mod)

    module_src = f"import os\nos.system('touch {marker}')\nclass Generator: pass\n"

    class Persistent:
        def __init__(self, class_name, state):
            self.class_name, self.state = class_name, state

        def __reduce__(self):
            meta = dict(type="class", version=6, module_src=module_src, class_name=self.class_name, state=self.state)
            return (_reconstruct_persistent_obj, (meta,))

    def node(class_name):
        return {
            "training": False,
            "_parameters": collections.OrderedDict(),
            "_buffers": collections.OrderedDict(),
            "_non_persistent_buffers_set": set(),
            "_forward_hooks": collections.OrderedDict(),
            "_modules": collections.OrderedDict(),
            "_init_args": (),
            "_init_kwargs": easy(),
            "class_name": class_name,
        }

    root = node("Generator")
    root["_init_kwargs"] = easy(
        z_dim=32,
        w_dim=32,
        c_dim=0,
        img_resolution=64,
        img_channels=3,
        mapping_kwargs=easy(num_layers=2),
        synthesis_kwargs=easy(channel_base=1024, channel_max=32, conv_clamp=conv_clamp),
    )
    root["z_dim"] = 32
    for key, tensor in state_dict.items():
        *path, leaf = key.split(".")
        cur = root
        for part in path:
            if part not in cur["_modules"]:
                child = node(part)
                if part in ("conv0", "conv1", "torgb"):
                    child["conv_clamp"] = conv_clamp
                    child["weight_gain"] = np.float64(1 / np.sqrt(32))  # numpy scalar, as in NVIDIA's code
                cur["_modules"][part] = child
            cur = cur["_modules"][part]
        if leaf in _BUFFERS:
            cur["_buffers"][leaf] = tensor.clone()
        else:
            cur["_parameters"][leaf] = torch.nn.Parameter(tensor.clone(), requires_grad=False)
    root["_modules"]["synthesis"]["block_resolutions"] = np.array([4, 8, 16, 32, 64])  # numpy array

    def wrap(n):
        n = dict(n)
        n["_modules"] = collections.OrderedDict((k, wrap(v)) for k, v in n["_modules"].items())
        return Persistent(n.pop("class_name"), n)

    d = node("Discriminator")
    d["_parameters"]["w"] = torch.nn.Parameter(torch.ones(2))
    snapshot = {
        "training_set_kwargs": easy(class_name="training.dataset.ImageFolderDataset", path="afhqdog.zip"),
        "G": wrap(root),
        "D": wrap(d),
        "G_ema": wrap(root),
        "augment_pipe": None,
    }
    return pickle.dumps(snapshot, protocol=3)


def test_ada_pickle_without_nvidia_code(fixtures_dir, tmp_path, monkeypatch):
    state = _load(fixtures_dir, ADA)["G_ema"]
    exp = _load(fixtures_dir, ADA_EXPECTED)
    marker = tmp_path / "module_src_ran"
    path = tmp_path / "afhq_like.pkl"
    path.write_bytes(_ada_like_pickle(state, monkeypatch, marker))
    monkeypatch.undo()  # NVIDIA's modules are gone again while loading
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules

    raw = _safe_pickle.load_pickle(path)
    g_ema = raw["G_ema"]
    assert isinstance(g_ema, _safe_pickle.PersistentObject) and g_ema.class_name == "Generator"
    assert "os.system" in g_ema.module_src  # kept as text ...
    assert not marker.exists()  # ... never executed
    assert set(_safe_pickle.module_state_dict(g_ema)) == set(state)

    g = StyleGAN2.load(path)
    assert not marker.exists()
    assert "torch_utils" not in sys.modules
    assert g.layout == "ada" and g.config.conv_clamp == 256
    with torch.no_grad():
        image, feats = g.synthesis(exp["ws"], return_features=True)
    assert _maxdiff(image, exp["image"]) < ATOL
    assert _maxdiff(feats[7], exp["block_outputs"][64]) < ATOL


def test_ada_pickle_conv_clamp_is_read(fixtures_dir, tmp_path, monkeypatch):
    state = _load(fixtures_dir, ADA)["G_ema"]
    path = tmp_path / "clamped.pkl"
    path.write_bytes(_ada_like_pickle(state, monkeypatch, tmp_path / "m", conv_clamp=0.25))
    monkeypatch.undo()
    g = StyleGAN2.load(path)
    assert g.config.conv_clamp == 0.25
    with torch.no_grad():
        feats = g.features(g.sample_w(2), layers=(1, 7))
    assert max(f.abs().max().item() for f in feats.values()) <= 0.25 + 1e-6
    assert StyleGAN2.load(path, conv_clamp=None).config.conv_clamp is None
