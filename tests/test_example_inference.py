"""The inference tutorials' scripts (transfer, parsing, overlays) run on a tiny model and write what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"
CAT_W, CAT_H = 451, 300


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model) -> Path:
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("model"))


def _inside(points, w: int, h: int) -> bool:
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    return bool(np.all((p >= -0.5) & (p <= [w - 0.5, h - 0.5])))


def test_transfer_species(load_script, tmp_path, model_dir, tiny_model):
    mod = load_script("examples/transfer_species.py")
    out = tmp_path / "out"
    summary = mod.main(["--model", str(model_dir), "--out", str(out), "--stride", "6"])
    assert {p.name for p in out.iterdir()} == {*mod.FIGURES, "summary.json"}
    assert json.loads((out / "summary.json").read_text()) == summary
    # five named points, inside the cat image, confidences in [0, 1]
    names = list(json.loads((IMAGES / "astronaut.json").read_text())["keypoints"])
    assert list(summary["keypoints"]) == names
    assert _inside(list(summary["keypoints"].values()), CAT_W, CAT_H)
    assert all(0.0 <= c <= 1.0 for c in summary["confidence"].values())
    # the same points as the library gives directly
    import dife

    meta = json.loads((IMAGES / "astronaut.json").read_text())
    want = dife.transfer_keypoints(
        IMAGES / "astronaut.jpg",
        IMAGES / "chelsea.jpg",
        list(meta["keypoints"].values()),
        src_box=meta["box"],
        model=tiny_model,
    )
    np.testing.assert_allclose(np.array(list(summary["keypoints"].values())), want, atol=0.01)
    # dense: a 16 x 16 grid at stride 6 on the 96 grid; the warp is the cat's size
    assert summary["dense"]["grid_shape"] == [16, 16] and summary["dense"]["points"] == 256
    assert -1.0 <= summary["dense"]["mean_similarity"] <= 1.0 and 0.0 <= summary["dense"]["mutual_fraction"] <= 1.0
    dense = Image.open(out / "dense.jpg")
    assert dense.height == 256 and dense.width > 256 + 4 + round(CAT_W * 256 / CAT_H)
    sparse = Image.open(out / "sparse.jpg")
    assert sparse.width >= 512 + CAT_W - 1
    assert Image.open(out / "embeddings.jpg").size[1] == 192


def test_face_parsing(load_script, tmp_path, model_dir):
    mod = load_script("examples/face_parsing.py")
    out = tmp_path / "out"
    summary = mod.main(["--model", str(model_dir), "--parts", "3", "--out", str(out)])
    assert summary["n_parts"] == 3
    assert summary["images"]["human"]["shape"] == [512, 512] and summary["images"]["cat"]["shape"] == [CAT_H, CAT_W]
    for info in summary["images"].values():
        assert set(info["parts_present"]) <= {0, 1, 2} and len(info["share"]) == 3
        assert sum(info["share"]) == pytest.approx(1.0, abs=1e-3)
    # parts are shared: all three appear across the two faces
    assert set(summary["images"]["human"]["parts_present"]) | set(summary["images"]["cat"]["parts_present"]) == {
        0,
        1,
        2,
    }
    import dife

    parser = dife.FaceParser.load(out / "parser.safetensors")
    assert parser.n_parts == 3 and parser.is_fitted
    assert Image.open(out / "parts.jpg").size == (300 + 4 + CAT_W, 300)


def test_overlay_assets(load_script, tmp_path, model_dir):
    mod = load_script("examples/overlay_assets.py")
    out = tmp_path / "out"
    summary = mod.main(["--model", str(model_dir), "--out", str(out)])
    assert set(summary["cat_keypoints"]) == {"eye_left_img", "eye_right_img", "nose"}
    assert _inside(list(summary["cat_keypoints"].values()), CAT_W, CAT_H)
    assert all(summary[a] == "ok" or summary[a].startswith("failed: ") for a in ("glasses", "party_hat"))
    given = np.asarray(Image.open(out / "given_keypoints.jpg").convert("RGB"))
    assert given.shape[0] == 300
    # the glasses really are drawn: the left tile (astronaut's face) differs from the plain crop
    meta = json.loads((IMAGES / "astronaut.json").read_text())
    plain = np.asarray(Image.open(IMAGES / "astronaut.jpg").convert("RGB").crop(tuple(meta["box"])).resize((300, 300)))
    assert np.abs(given[:, :300].astype(int) - plain.astype(int)).mean() > 5
    assert Image.open(out / "from_reference.jpg").size[1] == 300
