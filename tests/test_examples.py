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
    w, h = Image.open(ROOT / "examples" / "images" / "chelsea.jpg").size
    pts = np.asarray(result["points"])
    assert pts.shape == (5, 2)
    assert np.all((pts >= -0.5) & (pts <= [w - 0.5, h - 0.5]))
    assert Image.open(out).size[0] > w


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
