"""examples/photos.py (the "Keypoints on your own photos" tutorial) with a tiny model and two made-up face finders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"


def _finder(folder: Path, *, sees_faces: bool) -> Path:
    """A saved face finder: an untrained one (finds nothing) or one that sees one big face everywhere."""
    import torch

    from dife.detection import save_detector
    from dife.modeling.face_detector import FaceDetector, FaceDetectorConfig

    torch.manual_seed(0)
    # a 4 x 4 grid of centres; no suppression of overlapping boxes, room for all 16
    cfg = FaceDetectorConfig(
        input_size=32, backbone_stages=3, feature_stages=(2,), neck_dim=8, head_dim=8, nms_iou=1.0, max_detections=16
    )
    det = FaceDetector(cfg)
    if sees_faces:
        with torch.no_grad():
            for conv in (det.heat, det.box, det.species):
                conv.weight.zero_()
            det.heat.bias.fill_(4.0)  # every cell a centre, score 0.98
            det.box.bias.copy_(torch.tensor([0.0, 0.0, float(np.log(3 * 32 / 8))]))  # side: 3x the view
            det.species.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0, 0.0]))  # "cat"
    return save_detector(det, folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model) -> Path:
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("model"))


def test_photos_without_a_face_found(load_script, tmp_path, model_dir, tiny_model):
    mod = load_script("examples/photos.py")
    out = tmp_path / "out"
    finder = _finder(tmp_path / "blind", sees_faces=False)
    from dife.detection import NoFaceWarning

    with pytest.warns(NoFaceWarning, match="no face found"):  # the box-by-hand transfer still looks for the cat
        summary = mod.main(["--model", str(model_dir), "--detector", str(finder), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {*mod.FIGURES, "summary.json"}
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["found"] == {"astronaut.jpg": [], "chelsea.jpg": []}
    assert summary["src_face"] is None and summary["tgt_face"] is None
    # both photos warned, and the pipeline fell back to the centred square: the same as box="image"
    assert len(summary["no_face_warnings"]) == 2 and all("no face" in w for w in summary["no_face_warnings"])
    assert summary["keypoints"] == summary["keypoints_centred_square"]
    assert summary["blank"]["face"] is None and "centred square" in summary["blank"]["warning"]
    # the same as the library gives directly
    import dife

    meta = json.loads((IMAGES / "astronaut.json").read_text())
    want = dife.transfer_keypoints(
        IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg", list(meta["keypoints"].values()), src_box="image",
        tgt_box="image", model=tiny_model,
    )  # fmt: skip
    np.testing.assert_allclose(np.array(list(summary["keypoints"].values())), want, atol=0.01)
    assert Image.open(out / "found.jpg").height == 300
    assert Image.open(out / "transfer.jpg").width >= 512 + 451 - 1


def test_photos_with_faces_found(load_script, tmp_path, model_dir):
    mod = load_script("examples/photos.py")
    out = tmp_path / "out"
    finder = _finder(tmp_path / "eager", sees_faces=True)
    summary = mod.main(["--model", str(model_dir), "--detector", str(finder), "--out", str(out)])
    for name in ("astronaut.jpg", "chelsea.jpg"):
        faces = summary["found"][name]
        assert faces and all(f["species"] == "cat" and f["score"] > 0.9 for f in faces)
    # the source face holds the five points; the target face is the best-scoring one
    src = summary["src_face"]
    x0, y0, x1, y1 = src["box"]
    pts = np.array(list(json.loads((IMAGES / "astronaut.json").read_text())["keypoints"].values()), float) + 0.5
    assert np.all((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1))
    assert summary["tgt_face"] == summary["found"]["chelsea.jpg"][0]
    assert summary["no_face_warnings"] == []
    kps = np.array(list(summary["keypoints"].values()))
    assert np.all((kps >= -0.5) & (kps <= [451 - 0.5, 300 - 0.5]))
    assert all(0.0 <= c <= 1.0 for c in summary["confidence"].values())
