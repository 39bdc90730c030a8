"""save_pretrained / from_pretrained / push_to_hub, with the Hub replaced at its boundary (no network)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dife.errors import CheckpointError, DIFEError, InputError, ModelNotFoundError
from dife.hub import from_pretrained, model_card, push_to_hub, save_pretrained
from dife.modeling import DIFE
from dife.official import dife_to_official

FILES = {"config.json", "model.safetensors", "README.md"}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path_factory):
    """Any Hub call that a test forgets to replace stays offline, on an empty cache."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.rand(1, 3, 64, 64, generator=g) * 2 - 1


@pytest.fixture()
def saved(tmp_path, tiny_model) -> Path:
    return save_pretrained(tiny_model, tmp_path / "model")


def _http_error(cls, message: str, status: int = 404):
    response_cls = hf_errors.Response
    request_cls = sys.modules[response_cls.__module__.split(".")[0]].Request
    response = response_cls(status, request=request_cls("GET", "https://huggingface.co/api/models/someone/dife"))
    return cls(message, response=response)


# --------------------------------------------------------------------------- save / load
def test_round_trip(saved, tiny_model, x):
    assert {p.name for p in saved.iterdir()} == FILES
    model = from_pretrained(saved)
    assert isinstance(model, DIFE) and not model.training
    assert model.config == tiny_model.config
    with torch.no_grad():
        e = tiny_model(x)
        assert torch.equal(model(x), e)
        assert torch.equal(model.convert(e, "dog"), tiny_model.convert(e, "dog"))


def test_config_json_has_preprocessing(saved, tiny_model):
    cfg = json.loads((saved / "config.json").read_text())
    assert cfg["model_type"] == "dife"
    import dife

    assert cfg["dife_version"] == dife.__version__
    assert cfg["input_size"] == tiny_model.config.input_size
    assert cfg["mean"] == list(tiny_model.config.mean) and cfg["std"] == list(tiny_model.config.std)
    assert cfg["crop"] == "center_square" and cfg["domains"] == ["human", "dog"]


def test_safetensors_file(saved, tiny_model):
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == "pt"
    tensors = load_file(str(saved / "model.safetensors"))
    ours = tiny_model.state_dict()
    assert tensors.keys() == ours.keys()
    assert all(torch.equal(tensors[k], ours[k]) for k in ours)


def test_model_card(tmp_path, tiny_model):
    out = save_pretrained(
        tiny_model,
        tmp_path / "card",
        teachers=["DensePose CSE", "StyleGAN2 FFHQ"],
        training_data="synthetic StyleGAN2 faces",
        metrics={"keypoint error (70 px)": 4.2},
        tags=["animals"],
        repo_id="someone/dife-test",
    )
    text = (out / "README.md").read_text()
    front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "dife" and meta["license"] == "mit"  # nothing else recorded: the code's
    assert {"animals", "dog"} <= set(meta["tags"])
    assert "DensePose CSE" in body and "synthetic StyleGAN2 faces" in body and "keypoint error (70 px): 4.2" in body
    assert 'DIFE.from_pretrained("someone/dife-test")' in body
    assert "human, dog" in body
    with pytest.raises(InputError, match="unknown model card fields"):
        save_pretrained(tiny_model, tmp_path / "bad", teacher="typo")
    assert not (tmp_path / "bad").exists()


def test_untrained_card_says_so(tmp_path, tiny_config):
    import dataclasses

    model = DIFE(dataclasses.replace(tiny_config, extra={"trained": False}))
    text = (save_pretrained(model, tmp_path / "u") / "README.md").read_text()
    assert "Untrained weights" in text


def test_load_from_safetensors_file_and_config_path(saved, tiny_model, x):
    for target in (saved / "model.safetensors", saved / "config.json"):
        with torch.no_grad():
            assert torch.equal(from_pretrained(target)(x), tiny_model(x))


def test_device_and_string_path(saved):
    model = from_pretrained(str(saved), device="cpu")
    assert model.device == torch.device("cpu")
    with pytest.raises(InputError, match="invalid device"):
        from_pretrained(saved, device="nonsense-device")


def test_resave_same_folder_keeps_user_files(saved, tiny_model):
    (saved / "notes.txt").write_text("mine")
    save_pretrained(tiny_model, saved)
    assert (saved / "notes.txt").read_text() == "mine"
    assert {p.name for p in saved.iterdir()} == FILES | {"notes.txt"}


def test_never_overwrites_foreign_files(tmp_path, tiny_model):
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "README.md").write_text("# my own notes\n")
    with pytest.raises(InputError, match="not written by dife"):
        save_pretrained(tiny_model, folder)
    assert (folder / "README.md").read_text() == "# my own notes\n"
    assert not (folder / "model.safetensors").exists() and not (folder / "config.json").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        save_pretrained(tiny_model, tmp_path / "afile")
    with pytest.raises(InputError, match="DIFE model"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path / "lin")


# --------------------------------------------------------------------------- strict loading and corrupt files
def _rewrite_weights(folder: Path, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_strict_rejects_extra_key(saved):
    _rewrite_weights(saved, lambda t: t.__setitem__("encoder.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \(encoder.extra.weight\)"):
        from_pretrained(saved)


def test_strict_rejects_missing_key(saved):
    _rewrite_weights(saved, lambda t: t.pop("converters.1.conv3.bias"))
    with pytest.raises(CheckpointError, match=r"1 missing keys \(converters.1.conv3.bias\)"):
        from_pretrained(saved)


def test_strict_rejects_wrong_shape(saved):
    _rewrite_weights(saved, lambda t: t.__setitem__("encoder.out_conv.bias", torch.zeros(8)))
    with pytest.raises(CheckpointError, match=r"encoder.out_conv.bias: file \(8,\) vs model \(16,\)"):
        from_pretrained(saved)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(saved, damage):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(b"\x00\x01garbage" * 10 if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="model.safetensors") as info:
        from_pretrained(saved)
    assert info.value.__cause__ is None


def test_config_unknown_keys(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["num_heads"] = 8
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config.json.*unknown config keys \['num_heads'\]"):
        from_pretrained(saved)


@pytest.mark.parametrize(
    ("text", "match"),
    [("{not json", "not a readable JSON"), ("[1, 2]", "JSON object"), ('{"model_type": "bert"}', "not 'dife'")],
)
def test_bad_config(saved, text, match):
    (saved / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=match):
        from_pretrained(saved)


def test_folder_without_model_files(tmp_path):
    (tmp_path / "human+dog.pth").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="missing.*from_official"):
        from_pretrained(tmp_path)


def test_safetensors_without_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        from_pretrained(saved / "model.safetensors")


def test_official_pth_gives_hint(tmp_path):
    path = tmp_path / "human+dog.pth"
    path.write_bytes(b"whatever")
    with pytest.raises(CheckpointError, match=r"from_official.*convert-official"):
        from_pretrained(path)


def test_missing_local_path_and_bad_names(monkeypatch):
    def fail(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("the Hub must not be asked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(ModelNotFoundError, match="no such file"):
        from_pretrained("./does/not/exist")
    with pytest.raises(ModelNotFoundError, match="no such file"):
        from_pretrained(Path("nowhere"))
    with pytest.raises(ModelNotFoundError, match=r"not a registered model \(\[.*dife-untrained"):
        from_pretrained("dife-bas")
    with pytest.raises(InputError, match="got int"):
        from_pretrained(3)


# --------------------------------------------------------------------------- the Hub (replaced at the boundary)
def test_hub_download_serves_files(monkeypatch, saved, tiny_model, x):
    calls = []

    def fake(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs["revision"], kwargs["local_files_only"]))
        return str(saved / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    model = from_pretrained("someone/dife-test", revision="v1", local_files_only=True)
    assert calls == [
        ("someone/dife-test", "config.json", "v1", True),
        ("someone/dife-test", "model.safetensors", "v1", True),
        ("someone/dife-test", "README.md", "v1", True),  # the card travels with the weights
    ]
    with torch.no_grad():
        assert torch.equal(model(x), tiny_model(x))
    assert model.model_card == (saved / "README.md").read_text()


@pytest.mark.parametrize("entry", ["function", "method"])
def test_hub_arguments_are_passed_through(monkeypatch, saved, entry):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("dife.hub._hub_unreachable", lambda: None)  # the network is there
    seen = []

    def fake(repo_id, filename, **kwargs):
        seen.append((filename, kwargs))
        return str(saved / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    load = from_pretrained if entry == "function" else DIFE.from_pretrained
    model = load("someone/dife-test", revision="abc123", token="hf_x", cache_dir="/c", force_download=True)
    assert isinstance(model, DIFE)
    assert [f for f, _ in seen] == ["config.json", "model.safetensors", "README.md"]
    for _, kwargs in seen:
        assert kwargs["revision"] == "abc123" and kwargs["token"] == "hf_x" and kwargs["cache_dir"] == "/c"
        assert kwargs["force_download"] is True and kwargs["local_files_only"] is False
        assert kwargs["library_name"] == "dife"


def test_a_repository_without_a_card_still_loads(monkeypatch, saved):
    def fake(repo_id, filename, **kwargs):
        if filename == "README.md":
            raise hf_errors.LocalEntryNotFoundError("no card")
        return str(saved / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    assert from_pretrained("someone/dife-test", local_files_only=True).model_card is None


def _refuse_connections(monkeypatch) -> list:
    """No network: every TCP connection fails at once (as without a route); returns the attempts."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_without_network_loading_fails_fast(monkeypatch, caplog):
    attempts = _refuse_connections(monkeypatch)
    asked = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kwargs):
        asked.append((filename, kwargs["local_files_only"]))
        return real(repo_id, filename, **kwargs)  # the real client, on an empty cache

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="no network connection to huggingface.co:443") as info:
        from_pretrained("someone/dife-test")
    assert time.perf_counter() - t0 < 5.0  # not ~25 s of retries
    assert attempts and asked == [("config.json", True)]  # the cache is tried, the network is not
    assert "Retry" not in caplog.text
    msg = str(info.value)
    assert "config.json is not in the local cache" in msg and "DIFE.from_pretrained('/path/to/folder')" in msg
    with pytest.raises(ModelNotFoundError, match="force_download needs the network"):
        from_pretrained("someone/dife-test", force_download=True)


def test_without_network_cached_files_load(monkeypatch, saved, tiny_model, x):
    _refuse_connections(monkeypatch)

    def cached(repo_id, filename, **kwargs):
        assert kwargs["local_files_only"] is True
        return str(saved / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cached)
    with torch.no_grad():
        assert torch.equal(from_pretrained("someone/dife-test")(x), tiny_model(x))


def test_probe_goes_through_the_https_proxy(monkeypatch):
    from dife import hub

    seen = []

    def connect(address, timeout=None):
        seen.append(address)
        raise OSError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert "proxy.example:3128" in hub._hub_unreachable()
    assert seen == [("proxy.example", 3128)]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: _http_error(hf_errors.RepositoryNotFoundError, "401 Repository Not Found", 401),
            "does not exist, or is private",
        ),
        (
            lambda: _http_error(hf_errors.RevisionNotFoundError, "404 Revision Not Found"),
            "revision 'v9' does not exist",
        ),
        (lambda: _http_error(hf_errors.RemoteEntryNotFoundError, "404 Entry Not Found"), "has no file config.json"),
        (lambda: hf_errors.LocalEntryNotFoundError("not cached"), "not in the local cache"),
        (lambda: hf_errors.OfflineModeIsEnabled("offline"), "not in the local cache"),
        (lambda: _http_error(hf_errors.HfHubHTTPError, "500 Server Error", 500), "HfHubHTTPError: 500 Server Error"),
        (lambda: OSError("disk full"), "OSError: disk full"),
    ],
)
def test_hub_errors_become_model_not_found(monkeypatch, make, match):
    def fake(repo_id, filename, **kwargs):
        raise make()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    with pytest.raises(ModelNotFoundError, match=match) as info:
        from_pretrained("someone/dife-test", revision="v9")
    msg = str(info.value)
    assert "'someone/dife-test'" in msg and "revision v9" in msg and "config.json" in msg
    assert "local folder" in msg and "DIFE.from_pretrained('/path/to/folder')" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no HTTP traceback chain


@pytest.mark.parametrize("local_files_only", [True, False])
def test_offline_mode_real_client(local_files_only):
    # The autouse fixture turns HF_HUB_OFFLINE on with an empty cache: the real client refuses without a request.
    with pytest.raises(ModelNotFoundError, match="offline") as info:
        from_pretrained("someone/dife-test", local_files_only=local_files_only)
    assert "revision main" in str(info.value)


# --------------------------------------------------------------------------- push
def test_push_to_hub(monkeypatch, tiny_model):
    seen = {}

    def create_repo(self, repo_id, **kwargs):
        seen["create"] = (repo_id, kwargs)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        seen["upload"] = (repo_id, kwargs)
        seen["files"] = {p.name for p in folder.iterdir()}
        seen["config"] = json.loads((folder / "config.json").read_text())
        seen["tensors"] = load_file(str(folder / "model.safetensors"))
        seen["card"] = (folder / "README.md").read_text()
        seen["folder"] = folder

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = tiny_model.push_to_hub("someone/dife-test", private=True, commit_message="first", revision="dev")
    assert url == "https://huggingface.co/someone/dife-test"
    assert seen["create"] == ("someone/dife-test", {"exist_ok": True, "private": True})
    assert seen["upload"] == ("someone/dife-test", {"commit_message": "first", "revision": "dev", "create_pr": False})
    assert seen["files"] == FILES
    assert seen["config"]["model_type"] == "dife" and seen["config"]["domains"] == ["human", "dog"]
    ours = tiny_model.state_dict()
    assert seen["tensors"].keys() == ours.keys() and all(torch.equal(seen["tensors"][k], ours[k]) for k in ours)
    assert "library_name: dife" in seen["card"] and 'DIFE.from_pretrained("someone/dife-test")' in seen["card"]
    assert not seen["folder"].exists()  # the temporary folder is cleaned up


def test_push_errors(monkeypatch, tiny_model):
    def create_repo(self, repo_id, **kwargs):
        raise _http_error(hf_errors.HfHubHTTPError, "401 Unauthorized", 401)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    with pytest.raises(DIFEError, match=r"someone/dife-test.*401 Unauthorized") as info:
        push_to_hub(tiny_model, "someone/dife-test")
    assert info.value.__cause__ is None
    with pytest.raises(InputError, match="owner/name"):
        push_to_hub(tiny_model, "not a repo id")


# --------------------------------------------------------------------------- licences, cards and provenance
def _meta(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_resaving_the_packaged_model_keeps_its_card_and_licence(tmp_path):
    import dife
    from dife.registry import MODELS

    packaged = (MODELS["dife-base"].local_dir / "README.md").read_text()
    model = DIFE.from_pretrained("dife-base")
    assert model.model_card == packaged and _meta(packaged)["license"] == "other"
    out = model.save_pretrained(tmp_path / "copy")
    assert (out / "README.md").read_text() == packaged  # the card, unchanged: licence, terms, provenance
    again = dife.DIFE.from_pretrained(out)
    assert again.model_card == packaged
    assert again.save_pretrained(tmp_path / "copy2") and (tmp_path / "copy2" / "README.md").read_text() == packaged
    assert again.config.extra["license"] == "other"  # also in config.json, without the card


def test_new_card_fields_keep_the_licence_and_quote_the_original(tmp_path):
    model = DIFE.from_pretrained("dife-base")
    text = model_card(model, description="fine-tuned on my cats", training_data="my cat photos")
    assert _meta(text)["license"] == "other"  # not silently MIT
    assert "fine-tuned on my cats" in text and "## Provenance" in text
    assert "non-commercial research" in text  # the original terms are quoted
    assert _meta(model_card(model, license="cc-by-nc-4.0", description="x"))["license"] == "cc-by-nc-4.0"
    assert model_card(model, repo_id="someone/x") == model.model_card  # where it goes is not what it is
    model.model_card = None  # on purpose: a fresh card (the licence in config.extra still holds)
    fresh = model_card(model, description="y")
    assert "## Provenance" not in fresh and _meta(fresh)["license"] == "other"


def test_licence_recorded_in_the_config_is_kept(tmp_path, tiny_config):
    import dataclasses

    model = DIFE(dataclasses.replace(tiny_config, extra={"license": "cc-by-nc-4.0", "terms": "research only"}))
    text = (save_pretrained(model, tmp_path / "m") / "README.md").read_text()
    assert _meta(text)["license"] == "cc-by-nc-4.0" and "**Terms.** research only" in text


def test_pushing_a_loaded_model_uploads_its_card(monkeypatch, tmp_path):
    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded["card"] = (Path(folder_path) / "README.md").read_text()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model = DIFE.from_pretrained("dife-base")
    model.push_to_hub("someone/dife-base-copy")
    assert uploaded["card"] == model.model_card
    model.push_to_hub("someone/dife-base-copy", training_data="more photos")
    assert _meta(uploaded["card"])["license"] == "other" and "## Provenance" in uploaded["card"]


def test_authors_weights_are_not_saved_as_mit(tmp_path, tiny_model):
    path = tmp_path / "human+dog.pth"
    torch.save({"state_dict": dife_to_official(tiny_model.state_dict())}, path)
    model = DIFE.from_official(path)
    text = (model.save_pretrained(tmp_path / "converted") / "README.md").read_text()
    assert _meta(text)["license"] == "other" and "github.com/kingsj0405/DIFE" in text
    assert "authors' checkpoint human+dog.pth" in text


# --------------------------------------------------------------------------- layering
@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("dife.hub", ["dife.modeling", "dife.modeling.dife"]),
        ("dife.official", ["dife.hub", "dife.modeling", "dife.modeling.dife"]),
        ("dife.registry", ["dife.hub", "dife.official", "dife.modeling", "torch"]),
    ],
)
def test_no_import_cycle(module, absent):
    """modeling -> hub -> official / registry: the lower modules never import the higher ones."""
    code = f"import sys, {module}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
