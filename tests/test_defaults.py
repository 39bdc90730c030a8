"""The lazily loaded, thread-safe default model."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from dife import defaults, registry
from dife.errors import InputError, ModelNotFoundError
from dife.hub import save_pretrained
from dife.modeling import DIFE

ROOT = Path(__file__).resolve().parents[1]
REAL_WEIGHTS_DIR = registry.WEIGHTS_DIR


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch, tmp_path):
    """Every test starts with nothing loaded, no warning given, and no packaged trained weights."""
    monkeypatch.setattr(defaults, "_default", None)
    monkeypatch.setattr(defaults, "_default_label", None)
    monkeypatch.setattr(defaults, "_by_device", {})
    monkeypatch.setattr(defaults, "_by_name", {})
    monkeypatch.setattr(defaults, "_warned_untrained", False)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")


@pytest.fixture()
def counting_loader(monkeypatch, tiny_model):
    calls = []

    def load():
        calls.append(threading.get_ident())
        time.sleep(0.05)  # widen the window in which other threads could race
        return tiny_model, "dife-base"

    monkeypatch.setattr(defaults, "_load_default", load)
    return calls


def test_nothing_loaded_at_import():
    code = "import sys, warnings; warnings.simplefilter('error'); import dife.defaults; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_concurrent_first_calls_build_once(counting_loader, tiny_model):
    barrier = threading.Barrier(8)
    results = [None] * 8

    def worker(i):
        barrier.wait()
        results[i] = defaults.get_default_model()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counting_loader) == 1
    assert all(r is tiny_model for r in results)
    assert defaults.get_default_model() is tiny_model and len(counting_loader) == 1


def test_untrained_default_warns_once(monkeypatch, tiny_model):
    monkeypatch.setattr(defaults, "_load_default", lambda: (tiny_model, "dife-untrained"))
    with pytest.warns(UserWarning, match=r"dife-untrained \(random initialisation, seed 0"):
        assert defaults.get_default_model() is tiny_model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defaults.get_default_model()


def test_trained_default_does_not_warn(counting_loader):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defaults.get_default_model()


def test_real_default_is_the_shipped_dife_base(monkeypatch):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", REAL_WEIGHTS_DIR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = defaults.get_default_model()
    assert isinstance(model, DIFE) and not model.training and model.device == torch.device("cpu")
    assert model.config.num_domains == 0 and model.config.spatial_prior == 0.0
    assert defaults.default_model_info().startswith("dife-base (")


def test_default_without_packaged_weights_is_untrained_paper_model():
    with pytest.warns(UserWarning, match="meaningless"):
        model = defaults.get_default_model()
    assert isinstance(model, DIFE) and not model.training and model.config.extra["trained"] is False
    assert model.domains == ("human", "dog") and model.device == torch.device("cpu")
    assert "dife-untrained" in defaults.default_model_info()


def test_default_model_info_without_loading(counting_loader):
    info = defaults.default_model_info()
    assert info == "dife-untrained (random initialisation, seed 0 — the packaged dife-base weights are missing)"
    assert counting_loader == []


def test_device_argument(counting_loader, tiny_model):
    assert defaults.get_default_model(device="cpu") is tiny_model
    assert defaults.get_default_model(device=torch.device("cpu")) is tiny_model
    with pytest.raises(InputError, match="invalid device"):
        defaults.get_default_model(device="not-a-device")


def test_set_default_model_instance(counting_loader, tiny_model, tiny_config):
    other = DIFE(tiny_config).eval()
    defaults.set_default_model(other)
    assert defaults.get_default_model() is other
    assert "set_default_model" in defaults.default_model_info()
    assert counting_loader == []
    defaults.set_default_model(None)  # back to the lazily loaded registry default
    assert defaults.get_default_model() is tiny_model and len(counting_loader) == 1


def test_set_default_model_by_path(tmp_path, tiny_model, counting_loader):
    folder = save_pretrained(tiny_model, tmp_path / "mine")
    defaults.set_default_model(folder)
    model = defaults.get_default_model()
    assert model is not tiny_model and model.config == tiny_model.config
    assert str(folder) in defaults.default_model_info()
    assert counting_loader == []


def test_set_default_model_errors():
    with pytest.raises(InputError, match="got int"):
        defaults.set_default_model(3)
    with pytest.raises(ModelNotFoundError):
        defaults.set_default_model("dife-official-human-dog")


def test_resolve_model(tmp_path, tiny_model, counting_loader):
    assert defaults.resolve_model(None) is tiny_model
    assert defaults.resolve_model(tiny_model) is tiny_model
    folder = save_pretrained(tiny_model, tmp_path / "m")
    a = defaults.resolve_model(str(folder))
    assert isinstance(a, DIFE) and a is not tiny_model
    assert defaults.resolve_model(str(folder)) is a  # cached per name
    with pytest.raises(InputError, match="got float"):
        defaults.resolve_model(1.5)
    with pytest.raises(ModelNotFoundError):
        defaults.resolve_model("dife-base")  # the fixture hides the packaged weights
