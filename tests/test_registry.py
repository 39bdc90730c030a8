"""The model registry: names, sources, resolution, the default name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dife import registry
from dife.config import DIFEConfig
from dife.errors import ModelNotFoundError
from dife.hub import from_pretrained, save_pretrained
from dife.registry import MODELS, ModelEntry, default_model_name, get_entry, is_trained, list_models, resolve

ROOT = Path(__file__).resolve().parents[1]


def test_names_and_entries():
    names = list_models()
    assert names == sorted(names)
    assert {"dife-base", "dife-untrained", "dife-official-human-dog", "dife-official-human-dog-cat"} <= set(names)
    for name in names:
        entry = MODELS[name]
        assert entry.name == name and entry.description
        assert entry.source in ("package", "hub", "random", "official")


def test_untrained_entry_says_so():
    entry = get_entry("dife-untrained")
    assert entry.source == "random" and entry.seed == 0 and not entry.trained
    assert "untrained" in entry.description and "plumbing" in entry.description
    cfg = entry.make_config()
    paper = DIFEConfig(domains=("human", "dog"))
    assert (cfg.embed_dim, cfg.planes_hg, cfg.converter_dim, cfg.domains) == (
        paper.embed_dim,
        paper.planes_hg,
        paper.converter_dim,
        paper.domains,
    )
    assert is_trained("dife-untrained") is False and is_trained("dife-base") is True


def test_unknown_name():
    with pytest.raises(ModelNotFoundError, match=r"unknown model name 'nope'.*dife-untrained"):
        get_entry("nope")
    with pytest.raises(ModelNotFoundError):
        is_trained("nope")


@pytest.mark.parametrize(
    ("name", "filename"),
    [("dife-official-human-dog", "human+dog.pth"), ("dife-official-human-dog-cat", "human+dog+cat.pth")],
)
def test_official_entries_are_hints(name, filename):
    with pytest.raises(ModelNotFoundError) as info:
        resolve(name)
    msg = str(info.value)
    assert filename in msg and "dife convert-official" in msg and "DIFE.from_official" in msg
    assert "github.com/kingsj0405/DIFE" in msg
    with pytest.raises(ModelNotFoundError, match="convert-official"):
        from_pretrained(name)


def test_base_weights_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)  # an empty package weights folder
    assert not MODELS["dife-base"].is_available()
    assert default_model_name() == "dife-untrained"
    with pytest.raises(ModelNotFoundError, match="missing from this installation"):
        resolve("dife-base")
    with pytest.raises(ModelNotFoundError, match="missing from this installation"):
        from_pretrained("dife-base")


def test_base_when_packaged(monkeypatch, tmp_path, tiny_model):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    save_pretrained(tiny_model, tmp_path / "dife-base")
    assert default_model_name() == "dife-base"
    assert resolve("dife-base").local_dir == tmp_path / "dife-base"
    model = from_pretrained(None)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), tiny_model(x))


def test_random_entry_is_deterministic_and_leaves_rng_alone():
    state = torch.random.get_rng_state()
    a = from_pretrained("dife-untrained")
    assert torch.equal(torch.random.get_rng_state(), state)
    b = from_pretrained("dife-untrained")
    assert a is not b and not a.training
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert a.config.extra["trained"] is False


def test_hub_entry_routes_to_hub(monkeypatch, tmp_path, tiny_model):
    import huggingface_hub

    folder = save_pretrained(tiny_model, tmp_path / "m")
    calls = []

    def fake(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs["revision"]))
        return str(folder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setitem(
        MODELS,
        "dife-test-hub",
        ModelEntry(name="dife-test-hub", description="test", source="hub", repo_id="someone/dife", revision="v2"),
    )
    from_pretrained("dife-test-hub")
    assert calls == [
        ("someone/dife", "config.json", "v2"),
        ("someone/dife", "model.safetensors", "v2"),
        ("someone/dife", "README.md", "v2"),
    ]
    calls.clear()
    from_pretrained("dife-test-hub", revision="v3")  # an explicit revision wins
    assert {c[2] for c in calls} == {"v3"}


def test_registry_imports_no_torch():
    code = "import sys, dife, dife.registry; dife.list_models(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
