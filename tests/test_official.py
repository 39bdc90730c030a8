"""Import of the authors' checkpoints: key renaming, config inference, safe and strict loading."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from dife.config import DIFEConfig
from dife.errors import CheckpointError, DIFEError, InputError, ModelNotFoundError
from dife.hub import check_state_dict
from dife.modeling import DIFE
from dife.official import (
    default_domain_names,
    dife_to_official,
    extract_state_dict,
    infer_config,
    load_official,
    official_to_dife,
)

ARCH_FIELDS = (
    "embed_dim",
    "converter_dim",
    "converter_hidden",
    "planes_conv1",
    "planes_block",
    "planes_hg",
    "num_blocks",
    "depth",
    "gn_groups",
)


def _official_state(model: DIFE) -> dict[str, torch.Tensor]:
    return dife_to_official({k: v.clone() for k, v in model.state_dict().items()})


def _manifest_state(path: Path) -> dict[str, torch.Tensor]:
    shapes = json.loads(path.read_text())
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}


@pytest.fixture()
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 32, 32, generator=g) * 2 - 1


# --------------------------------------------------------------------------- the authors' tiny reference
def test_fixture_equivalence(fixtures_dir):
    model = load_official(fixtures_dir / "dife_official_tiny_state.pt", domains=("d0", "d1"))
    expected = torch.load(fixtures_dir / "dife_official_tiny_expected.pt", weights_only=True)
    assert not model.training
    assert model.domains == ("d0", "d1")
    with torch.no_grad():
        emb = model(expected["input"])
        assert emb.shape == expected["embedding"].shape
        assert (emb - expected["embedding"]).abs().max() < 1e-4
        s = expected["converted_stride"]  # the fixture keeps every s-th output pixel (tests/fixtures/README.md)
        for name in ("d0", "d1"):
            out = model.convert(expected["embedding"], name)[..., ::s, ::s]
            assert out.shape == expected["converted"][name].shape
            assert (out - expected["converted"][name]).abs().max() < 1e-4


def test_fixture_config_inferred(fixtures_dir):
    state = torch.load(fixtures_dir / "dife_official_tiny_state.pt", weights_only=True)["state_dict"]
    cfg = infer_config(state)
    assert (cfg.embed_dim, cfg.planes_conv1, cfg.planes_block, cfg.planes_hg) == (16, 16, 32, 32)
    assert (cfg.num_blocks, cfg.depth, cfg.converter_dim, cfg.converter_hidden) == (4, 4, 32, 64)
    assert cfg.domains == ("human", "dog")  # the paper's order for two converters


# --------------------------------------------------------------------------- published layouts (shapes only)
@pytest.mark.parametrize(
    ("manifest", "domains"),
    [
        ("manifest_dife_official_2domains.json", ("human", "dog")),
        ("manifest_dife_official_3domains.json", ("human", "dog", "cat")),
    ],
)
def test_manifest_maps_onto_modules(fixtures_dir, manifest, domains):
    state = _manifest_state(fixtures_dir / manifest)
    cfg = infer_config(state)
    assert cfg.domains == domains
    assert cfg == DIFEConfig(domains=domains)  # the paper's architecture, recovered from shapes
    with torch.device("meta"):
        model = DIFE(cfg)
    renamed = official_to_dife(state)
    ours = model.state_dict()
    assert set(renamed) == set(ours)
    for key, value in renamed.items():
        assert tuple(value.shape) == tuple(ours[key].shape), key
    check_state_dict(model, renamed, source=manifest)  # must not raise
    n = sum(p.numel() for p in model.parameters())
    if len(domains) == 2:
        assert abs(n / 1e6 - 13.17) <= 0.01
    assert dife_to_official(renamed).keys() == state.keys()


def test_round_trip_official_dife_official(fixtures_dir):
    state = _manifest_state(fixtures_dir / "manifest_dife_official_3domains.json")
    back = dife_to_official(official_to_dife(state))
    assert list(back) == list(state)
    assert all(back[k] is state[k] for k in state)  # values pass through untouched


def test_round_trip_dife_official_dife(tiny_model):
    ours = tiny_model.state_dict()
    official = dife_to_official(ours)
    assert all(k.startswith(("hg.", "transformer.")) for k in official)
    assert list(official_to_dife(official)) == list(ours)


def test_renaming_examples():
    table = {
        "hg.hg.0.layer1_4.2.bn3.bias": "encoder.hourglass.bottom.2.norm3.bias",
        "hg.hg.0.layer3_1.0.conv2.weight": "encoder.hourglass.skip3.0.conv2.weight",
        "hg.hg.0.layer2_2.1.bn1.weight": "encoder.hourglass.down2.1.norm1.weight",
        "hg.hg.0.layer4_3.3.conv1.bias": "encoder.hourglass.up4.3.conv1.bias",
        "hg.output_layers.0.0.1.bn2.weight": "encoder.head_blocks.1.norm2.weight",
        "hg.output_layers.0.1.weight": "encoder.head_conv.weight",
        "hg.output_layers.0.2.bias": "encoder.head_norm.bias",
        "hg.output_layers.0.5.weight": "encoder.out_conv.weight",
        "hg.bn1.weight": "encoder.norm1.weight",
        "hg.conv1.bias": "encoder.conv1.bias",
        "hg.layer2.0.downsample.weight": "encoder.layer2.shortcut.weight",
        "hg.layer3.0.bn2.bias": "encoder.layer3.norm2.bias",
        "transformer.interspecies2d1_layer2_norm.weight": "converters.1.norm2.weight",
        "transformer.interspecies2d12_layer3.bias": "converters.12.conv3.bias",
        "something.else": "something.else",  # no rule: kept, so a strict load reports it
    }
    assert official_to_dife(dict.fromkeys(table)) == dict.fromkeys(table.values())
    assert dife_to_official(dict.fromkeys(table.values())) == dict.fromkeys(table)


# --------------------------------------------------------------------------- load_official on files the tests write
@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module"])
def test_load_official_wrappers(tmp_path, tiny_model, x, wrap):
    state = _official_state(tiny_model)
    obj = {
        "raw": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state},
        "module": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(obj, tmp_path / "human+dog.pth")
    model = load_official(tmp_path / "human+dog.pth")
    for f in ARCH_FIELDS:
        assert getattr(model.config, f) == getattr(tiny_model.config, f), f
    assert model.domains == ("human", "dog")
    with torch.no_grad():
        assert torch.equal(model(x), tiny_model(x))
        e = tiny_model(x)
        assert torch.equal(model.convert(e, "dog"), tiny_model.convert(e, "dog"))


def test_from_official_classmethod(tmp_path, tiny_model):
    torch.save(_official_state(tiny_model), tmp_path / "ckpt.pt")
    model = DIFE.from_official(tmp_path / "ckpt.pt", domains=("cat", "horse"))
    assert isinstance(model, DIFE) and model.domains == ("cat", "horse")


def test_load_official_three_domains_names(tmp_path):
    cfg = DIFEConfig(
        domains=("a", "b", "c"),
        converter_dim=16,
        converter_hidden=16,
        planes_conv1=16,
        planes_block=16,
        planes_hg=16,
        num_blocks=1,
    )
    torch.manual_seed(0)
    torch.save(_official_state(DIFE(cfg)), tmp_path / "three.pth")
    assert load_official(tmp_path / "three.pth").domains == ("human", "dog", "cat")
    assert default_domain_names(4) == ("d0", "d1", "d2", "d3")


def test_hourglass_only_checkpoint(tmp_path, tiny_model, x):
    state = {k: v for k, v in _official_state(tiny_model).items() if k.startswith("hg.")}
    torch.save(state, tmp_path / "hg.pth")
    model = load_official(tmp_path / "hg.pth")
    assert model.config.converter_dim == 0 and len(model.converters) == 0 and model.domains == ()
    with torch.no_grad():
        assert torch.equal(model(x), tiny_model(x))


def test_half_precision_checkpoint_loads_as_float32(tmp_path, tiny_model):
    torch.save({k: v.half() for k, v in _official_state(tiny_model).items()}, tmp_path / "half.pth")
    model = load_official(tmp_path / "half.pth")
    assert all(p.dtype == torch.float32 for p in model.parameters())


# --------------------------------------------------------------------------- errors
def test_missing_file():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_official("/nonexistent/human+dog.pth")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="directory"):
        load_official(tmp_path)


def test_truncated_file(tmp_path, tiny_model):
    full = tmp_path / "full.pth"
    torch.save(_official_state(tiny_model), full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth") as info:
        load_official(cut)
    assert "corrupt or truncated" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_garbage_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_official(bad)


class _Payload:
    """Pickles to a call of os.system: loading it unsafely would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("container", ["pickle", "torch_zip"])
def test_malicious_pickle_is_refused(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = _Payload(f"touch '{marker}'")
    path = tmp_path / "evil.pth"
    if container == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": payload}, protocol=2))
    else:
        torch.save({"state_dict": payload}, path)
    assert b"system" in path.read_bytes()  # the file really carries the call
    with pytest.raises(CheckpointError, match="refused"):
        load_official(path)
    assert not marker.exists()


def _saved(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    return path


def test_missing_keys_named(tmp_path, tiny_model):
    state = _official_state(tiny_model)
    del state["hg.output_layers.0.2.weight"]
    with pytest.raises(CheckpointError, match="1 missing keys") as info:
        load_official(_saved(tmp_path, state))
    assert "hg.output_layers.0.2.weight" in str(info.value)  # reported under the authors' name


def test_many_missing_keys_counted(tmp_path, tiny_model):
    state = {k: v for k, v in _official_state(tiny_model).items() if "layer2_3" not in k}
    with pytest.raises(CheckpointError, match=r"12 missing keys .*\(\+7 more\)"):
        load_official(_saved(tmp_path, state))


def test_unexpected_keys_named(tmp_path, tiny_model):
    state = _official_state(tiny_model)
    state["hg.extra_head.weight"] = torch.zeros(3)
    state["discriminator.fc.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="2 unexpected keys") as info:
        load_official(_saved(tmp_path, state))
    assert "hg.extra_head.weight" in str(info.value) and "discriminator.fc.weight" in str(info.value)


def test_shape_mismatch_named(tmp_path, tiny_model):
    state = _official_state(tiny_model)
    key = "hg.hg.0.layer2_1.0.conv2.weight"
    state[key] = torch.zeros(16, 16, 5, 5)
    with pytest.raises(CheckpointError, match="1 shape mismatches") as info:
        load_official(_saved(tmp_path, state))
    msg = str(info.value)
    assert key in msg and "(16, 16, 5, 5)" in msg and "(16, 16, 3, 3)" in msg


def test_not_a_dife_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no 'hg"):
        load_official(_saved(tmp_path, {"fc.weight": torch.zeros(2, 2)}))


def test_non_tensor_entries(tmp_path, tiny_model):
    state = _official_state(tiny_model)
    state["hg.conv1.weight"] = [1, 2, 3]
    with pytest.raises(CheckpointError, match="not tensors"):
        load_official(_saved(tmp_path, state))


def test_wrong_number_of_domain_names(tmp_path, tiny_model):
    path = _saved(tmp_path, _official_state(tiny_model))
    with pytest.raises(InputError, match="2 converters"):
        load_official(path, domains=("human", "dog", "cat"))
    with pytest.raises(InputError, match="string"):
        load_official(path, domains="human")


def test_extract_state_dict_rejects_non_mappings():
    with pytest.raises(CheckpointError, match="no state dict"):
        extract_state_dict([1, 2])
    with pytest.raises(CheckpointError, match="no state dict"):
        extract_state_dict({})


def test_errors_are_dife_errors():
    assert issubclass(CheckpointError, DIFEError) and issubclass(ModelNotFoundError, FileNotFoundError)


def test_fixture_equivalence_of_the_inference_path(fixtures_dir):
    """The fast inference path (dife.embed's) reproduces the authors' network too."""
    from dife.modeling.inference import encode

    model = load_official(fixtures_dir / "dife_official_tiny_state.pt", domains=("d0", "d1"))
    expected = torch.load(fixtures_dir / "dife_official_tiny_expected.pt", weights_only=True)
    for channels_last in (True, False):
        emb = encode(model.encoder, expected["input"], channels_last=channels_last)
        assert emb.shape == expected["embedding"].shape
        assert (emb - expected["embedding"]).abs().max() < 1e-4
