"""The scripts in examples/ run and produce what they claim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_transfer_keypoints_example(load_script, tmp_path, tiny_model):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    out = tmp_path / "panel.jpg"
    result = load_script("examples/transfer_keypoints.py").main(["--model", str(model_dir), "-o", str(out)])
    assert set(result["targets"]) == {"chelsea.jpg", "dog.jpg"}  # the default targets
    for name, got in result["targets"].items():
        w, h = Image.open(ROOT / "examples" / "images" / name).size
        pts = np.asarray(got["points"])
        assert pts.shape == (5, 2) and np.asarray(got["confidence"]).shape == (5,)
        assert np.all((pts >= -0.5) & (pts <= [w - 0.5, h - 0.5])), name
    assert np.array_equal(result["points"], result["targets"]["chelsea.jpg"]["points"])
    panel = Image.open(out)
    assert panel.height == 2 * 300 + 4  # one 300-px row per target
    assert not list(tmp_path.glob(".*.tmp*"))  # the atomic write left nothing behind


def test_every_example_documents_itself(load_script, capsys):
    """Each script has a module docstring, a main(argv) with --help, and lists the site figures it writes."""
    import pytest

    scripts = sorted((ROOT / "examples").glob("*.py"))
    assert len(scripts) >= 9
    for path in scripts:
        mod = load_script(f"examples/{path.stem}.py")
        assert mod.__doc__ and "Run" in mod.__doc__, path.name
        with pytest.raises(SystemExit) as info:
            mod.main(["--help"])
        assert info.value.code == 0
        assert capsys.readouterr().out.startswith("usage:")
        if path.stem != "transfer_keypoints":
            assert isinstance(mod.FIGURES, tuple), path.name
