"""The DIFE network: shapes, domains, input validation, gradients, size of the paper's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dife.config import DIFEConfig
from dife.errors import DIFEError, ShapeError, UnknownDomainError
from dife.modeling import DIFE


@pytest.fixture()
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1


def _n_params(config: DIFEConfig) -> int:
    with torch.device("meta"):
        model = DIFE(config)
    return sum(p.numel() for p in model.parameters())


def test_shapes(tiny_model, tiny_config, x):
    with torch.no_grad():
        e = tiny_model(x)
        assert e.shape == (2, tiny_config.embed_dim, 64, 64) and e.dtype == torch.float32
        assert torch.isfinite(e).all()
        d = tiny_model.convert(e, "dog")
        assert d.shape == (2, tiny_config.converter_dim, 64, 64)
        # a non-square input whose sides are multiples of the stride
        assert tiny_model(torch.zeros(1, 3, 32, 96)).shape == (1, 16, 32, 96)
    assert tiny_model.encoder.stride == 32
    assert tiny_model.domains == ("human", "dog")


def test_convert_by_name_and_index(tiny_model, x):
    with torch.no_grad():
        e = tiny_model(x)
        assert torch.equal(tiny_model.convert(e, "human"), tiny_model.convert(e, 0))
        assert torch.equal(tiny_model.convert(e, "dog"), tiny_model.convert(e, 1))
        assert not torch.equal(tiny_model.convert(e, 0), tiny_model.convert(e, 1))  # one converter per domain


@pytest.mark.parametrize("domain", ["cat", 2, -1, True, None])
def test_unknown_domain(tiny_model, domain):
    e = torch.zeros(1, 16, 32, 32)
    with pytest.raises(UnknownDomainError) as info:
        tiny_model.convert(e, domain)
    assert "human" in str(info.value) or "index" in str(info.value) or "name" in str(info.value)
    assert isinstance(info.value, KeyError) and isinstance(info.value, DIFEError)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.zeros(3, 64, 64), r"\(3, 64, 64\)"),
        (torch.zeros(1, 4, 64, 64), r"\(1, 4, 64, 64\)"),
        (torch.zeros(1, 1, 64, 64), r"\(1, 1, 64, 64\)"),
        (torch.zeros(1, 3, 48, 64), r"divisible by 32.*\(1, 3, 48, 64\)"),
        (torch.zeros(1, 3, 64, 40), r"divisible by 32"),
        (torch.zeros(0, 3, 64, 64), r"non-empty"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), r"dtype torch.uint8"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int64), r"dtype torch.int64"),
        (np.zeros((1, 3, 64, 64), dtype=np.float32), r"ndarray"),
    ],
)
def test_bad_inputs(tiny_model, bad, match):
    with pytest.raises(ShapeError, match=match) as info:
        tiny_model(bad)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [torch.zeros(1, 8, 32, 32), torch.zeros(16, 32, 32), "embedding"])
def test_convert_bad_embedding(tiny_model, bad):
    with pytest.raises(ShapeError, match=r"\(B, 16, H, W\)"):
        tiny_model.convert(bad, "dog")


def test_gradients_flow(tiny_config, x):
    torch.manual_seed(0)
    model = DIFE(tiny_config).train()
    e = model(x)
    loss = e.square().mean() + sum(model.convert(e, d).square().mean() for d in model.domains)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert model.encoder.conv1.weight.grad.abs().sum() > 0
    assert all(c.conv1.weight.grad.abs().sum() > 0 for c in model.converters)


def test_paper_parameter_count():
    n2 = _n_params(DIFEConfig(domains=("human", "dog")))
    assert abs(n2 / 1e6 - 13.17) <= 0.01
    n3 = _n_params(DIFEConfig(domains=("human", "dog", "cat")))
    encoder_only = _n_params(DIFEConfig(converter_dim=0))
    converter = n3 - n2
    assert n2 == encoder_only + 2 * converter
    # conv7x7 16->64, GN 64, conv7x7 64->64, GN 64, conv1x1 64->512 (all with bias)
    assert converter == (16 * 64 * 49 + 64) + 128 + (64 * 64 * 49 + 64) + 128 + (64 * 512 + 512)


def test_encoder_only_model(tiny_config, x):
    import dataclasses

    model = DIFE(dataclasses.replace(tiny_config, converter_dim=0)).eval()
    assert len(model.converters) == 0 and model.domains == ()
    with torch.no_grad():
        e = model(x)
    with pytest.raises(UnknownDomainError):
        model.convert(e, "human")


# --------------------------------------------------------------------------- the inference path
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_inference_path_matches_the_forward(tiny_model, channels_last, batch):
    from dife.modeling.inference import encode

    g = torch.Generator().manual_seed(4)
    x = torch.rand(batch, 3, 64, 96, generator=g) * 2 - 1
    before = x.clone()
    with torch.no_grad():
        ref = tiny_model(x)
    out = encode(tiny_model.encoder, x, channels_last=channels_last)
    assert out.shape == ref.shape and out.dtype == ref.dtype and out.is_contiguous()
    scale = ref.abs().max()
    assert (out - ref).abs().max() <= 1e-4 * max(1.0, float(scale))
    assert torch.equal(x, before)  # the input is not written to
    # the weights are only read: the module forward still gives the same
    with torch.no_grad():
        assert torch.equal(tiny_model(x), ref)


def test_inference_path_of_the_shipped_model_per_image():
    """dife-base: the inference path equals the forward to 1e-4, each image alone or in a batch."""
    from dife.modeling.inference import encode

    net = DIFE.from_pretrained("dife-base")
    x = torch.rand(5, 3, 96, 96, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        ref = net(x)
    batch = encode(net.encoder, x)
    single = torch.cat([encode(net.encoder, x[i : i + 1]) for i in range(5)])
    assert (batch - ref).abs().max() < 1e-4 and (single - ref).abs().max() < 1e-4
    assert (ref - ref.mean()).abs().max() > 1e-2  # not a trivial (constant) output


def test_compiled_encode_falls_back_to_the_eager_path(tiny_model, monkeypatch):
    import warnings

    from dife.modeling import inference

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler here\nmore lines")

    monkeypatch.setattr(torch, "compile", no_compiler)
    monkeypatch.setattr(inference, "_compiled", {})
    monkeypatch.setattr(inference, "_failed", set())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed on cpu \(RuntimeError: no C\+\+ compiler here\)"):
        out = inference.compiled_encode(tiny_model.encoder, x)
    torch.testing.assert_close(out, inference.encode(tiny_model.encoder, x), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        inference.compiled_encode(tiny_model.encoder, x)


def test_check_input_is_the_forwards_validation(tiny_model):
    with pytest.raises(ShapeError, match="divisible by 32"):
        tiny_model.check_input(torch.zeros(1, 3, 40, 64))
    with pytest.raises(ShapeError, match="float"):
        tiny_model.check_input(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    tiny_model.check_input(torch.zeros(1, 3, 64, 64))
