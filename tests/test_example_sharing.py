"""Importing the authors' checkpoint and the Hub round trip (examples/import_official.py, push_to_hub.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path_factory):
    """Whatever is not replaced below stays offline, on an empty cache."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------- the authors' checkpoint
def test_import_official_in_the_authors_layout(load_script, tmp_path, tiny_model):
    from dife.official import dife_to_official

    # a small checkpoint with the authors' key names (hg.*, transformer.*), as their training script saves it
    state = dife_to_official({k: v.clone() for k, v in tiny_model.state_dict().items()})
    assert any(k.startswith("hg.") for k in state) and any(k.startswith("transformer.") for k in state)
    ckpt = tmp_path / "human+dog.pth"
    torch.save({"state_dict": state}, ckpt)

    mod = load_script("examples/import_official.py")
    out, figure = tmp_path / "converted", tmp_path / "transfer.jpg"
    summary = mod.main([str(ckpt), "--out", str(out), "--figure", str(figure)])
    assert summary["files"] == ["README.md", "config.json", "model.safetensors"]
    assert summary["domains"] == ["human", "dog"] and summary["max_abs_diff"] == 0.0
    assert summary["parameters"] == sum(p.numel() for p in tiny_model.parameters())
    pts = np.array(summary["keypoints"])
    assert pts.shape == (5, 2) and np.all((pts >= -0.5) & (pts <= [450.5, 299.5]))
    # the converted folder is the same network as the one the checkpoint came from
    from dife.modeling.dife import DIFE

    x = torch.rand(1, 3, 96, 96) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(DIFE.from_pretrained(out)(x), tiny_model(x), rtol=0, atol=0)
    assert Image.open(figure).size[0] > 512


def test_import_official_reference_fixture(load_script, tmp_path, fixtures_dir):
    """The shared tiny checkpoint saved by the authors' code imports and reproduces their outputs."""
    mod = load_script("examples/import_official.py")
    summary = mod.main(
        [str(fixtures_dir / "dife_official_tiny_state.pt"), "--out", str(tmp_path / "m"), "--domains", "d0", "d1"]
    )
    assert summary["domains"] == ["d0", "d1"] and summary["max_abs_diff"] == 0.0
    from dife.modeling.dife import DIFE

    expected = torch.load(fixtures_dir / "dife_official_tiny_expected.pt", weights_only=True)
    with torch.no_grad():
        emb = DIFE.from_pretrained(tmp_path / "m")(expected["input"])
    assert (emb - expected["embedding"]).abs().max() < 1e-4


# --------------------------------------------------------------------------- the Hub, replaced by a local folder
def test_push_to_hub_round_trip(load_script, tmp_path, monkeypatch, tiny_model):
    hub = tmp_path / "hub"  # stands in for huggingface.co: one folder per repo
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create", repo_id, kwargs.get("private")))
        (hub / repo_id).mkdir(parents=True, exist_ok=True)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        shutil.copytree(folder_path, hub / repo_id, dirs_exist_ok=True)

    def hf_hub_download(repo_id, filename, **kwargs):
        path = hub / repo_id / filename
        if not path.is_file():
            raise FileNotFoundError(path)
        return str(path)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)

    model_dir = tiny_model.save_pretrained(tmp_path / "trained")
    mod = load_script("examples/push_to_hub.py")
    summary = mod.main(
        [
            str(model_dir),
            "someone/dife-tiny",
            "--folder",
            str(tmp_path / "upload"),
            "--private",
            "--training-data",
            "synthetic test faces",
        ]
    )
    assert summary["url"] == "https://huggingface.co/someone/dife-tiny"
    assert summary["identical"] is True and summary["domains"] == ["human", "dog"]
    files = ["README.md", "config.json", "model.safetensors"]
    assert calls == [("create", "someone/dife-tiny", True), ("upload", "someone/dife-tiny", files)]
    card = (hub / "someone/dife-tiny" / "README.md").read_text()
    assert "synthetic test faces" in card and 'DIFE.from_pretrained("someone/dife-tiny")' in card
    assert (tmp_path / "upload" / "README.md").read_text() == card  # what was checked locally is what went up
