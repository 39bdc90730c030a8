"""Training the face finder (dife.train.detector): views, targets, losses, a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dife.coords import CropTransform
from dife.errors import InputError
from dife.train.detector import (
    DetectorTrainConfig,
    FaceRecord,
    PhotoRecord,
    flipped_faces,
    heat_focal_loss,
    load_detector_config,
    read_photo_boxes,
    sample_views,
    train_detector,
    view_targets,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _face(box, species="dog", kps=None):
    return FaceRecord(species, box, kps or {}, box)


def test_view_targets_geometry():
    kps = {"eye_left_img": (109.5, 99.5), "nose": (119.5, 119.5)}
    f = _face((100.0, 80.0, 140.0, 120.0), "cat", kps)  # centre (120, 100), side 40
    t = CropTransform(0.0, 0.0, 200.0, 80, 200, 150)  # 0.4 view pixels per photo pixel
    tg = view_targets([f], t, 8)
    # view edge coordinates: centre (48, 40), side 16
    assert tg["centers"].tolist() == [[5, 6]]
    assert tg["offset"][0].tolist() == pytest.approx([0.0, 0.0])
    assert tg["log_side"][0] == pytest.approx(math.log(2.0))
    assert tg["species"].tolist() == [2]
    assert tg["heat"][5, 6] == 1.0 and tg["heat"].max() == 1.0 and 0 < tg["heat"][5, 5] < 1
    # landmarks relative to the centre in box sides (edge coordinates: pixel centre + 0.5)
    assert tg["kps"][0, 0].tolist() == pytest.approx([(110 - 120) / 40, (100 - 100) / 40])
    assert tg["kps_mask"][0].tolist() == [True, False, True, False, False]
    assert not tg["ignore"].any()


def test_view_targets_ignore_regions():
    t = CropTransform(0.0, 0.0, 100.0, 64, 100, 100)
    outside = _face((80.0, 80.0, 140.0, 140.0))  # centre (110, 110) outside the view
    tiny = _face((10.0, 10.0, 14.0, 14.0))  # 2.6 view pixels
    hidden = FaceRecord("cow", None, {}, (0.0, 0.0, 30.0, 30.0))
    tg = view_targets([outside, tiny, hidden], t, 8, min_face=12.0)
    assert len(tg["centers"]) == 0 and tg["heat"].max() == 0
    assert tg["ignore"][7, 7] and tg["ignore"][1, 1] and tg["ignore"][0, 0]
    assert not tg["ignore"][4, 0]


def test_flip_swaps_image_side_names_and_mirrors_boxes():
    kps = {"eye_left_img": (10.0, 5.0), "eye_right_img": (30.0, 5.0), "nose": (20.0, 9.0)}
    photo = PhotoRecord(None, 100, 50, (_face((0.0, 0.0, 40.0, 40.0), "human", kps),))  # type: ignore[arg-type]
    (f,) = flipped_faces(photo)
    assert f.box == (60.0, 0.0, 100.0, 40.0)
    assert f.keypoints["eye_left_img"] == (69.0, 5.0) and f.keypoints["eye_right_img"] == (89.0, 5.0)
    assert f.keypoints["eye_left_img"][0] < f.keypoints["eye_right_img"][0]


def test_sample_views_keep_the_landmarks_inside():
    kps = {"eye_left_img": (60.0, 60.0), "eye_right_img": (80.0, 60.0), "nose": (70.0, 75.0)}
    photo = PhotoRecord(None, 200, 160, (_face((45.0, 42.5, 95.0, 92.5), "dog", kps),))  # type: ignore[arg-type]
    views = sample_views(photo, 40, np.random.default_rng(0))
    assert len(views) == 40 and views[0].side == 200 and views[1].flip
    framed = [v for v in views[2::2]]
    for v in framed:
        faces = flipped_faces(photo) if v.flip else photo.faces
        pts = np.array(list(faces[0].keypoints.values())) + 0.5
        assert np.all(pts >= [v.left, v.top]) and np.all(pts <= [v.left + v.side, v.top + v.side])
    sides = [v.side / 50 for v in framed]
    assert min(sides) < 1.0 < max(sides)  # tighter and looser than the face box


def test_mined_faces_become_ignored_regions():
    """A confident detection away from every annotation is added as an ignored region; one on a label is not."""
    from dife.modeling.face_detector import FaceDetectorConfig
    from dife.train.detector import mine_unlabelled_faces

    class Cache:
        n = 1
        transforms = np.array([[0.0, 0.0, 128.0, 0.0]])
        photo = np.array([0])

        def batch(self, idx):
            return [torch.zeros(1)], {}

    class Head:
        config = FaceDetectorConfig(input_size=64)

        def eval(self):
            return self

        def head(self, feats):
            return {}

        def decode(self, out, min_score):
            from dife.modeling.face_detector import RawDetection

            p = torch.full((6,), 1 / 6)
            return [
                [
                    RawDetection((8.0, 8.0, 24.0, 24.0), 0.9, 0, p, torch.zeros(5, 2)),  # the labelled face (x2)
                    RawDetection((40.0, 40.0, 56.0, 56.0), 0.8, 1, p, torch.zeros(5, 2)),  # nobody's
                ]
            ]

    photo = PhotoRecord(None, 128, 100, (_face((16.0, 16.0, 48.0, 48.0), "human"),))  # type: ignore[arg-type]
    (out,), n = mine_unlabelled_faces(Head(), Cache(), [photo])  # type: ignore[arg-type]
    assert n == 1 and len(out.faces) == 2
    added = out.faces[1]
    assert added.box is None and added.body == (80.0, 80.0, 112.0, 112.0) and added.species == "dog"


def test_heat_focal_loss_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = 0.5 at a centre, 0.75 elsewhere
    target = torch.tensor([[[1.0, 0.5]]])
    ignore = torch.zeros(1, 1, 2, dtype=torch.bool)
    pos = -math.log(0.5) * 0.25
    neg = -math.log(0.25) * 0.75**2 * 0.5**4
    assert float(heat_focal_loss(logits, target, ignore)) == pytest.approx(pos + neg, rel=1e-4)
    ignore[0, 0, 1] = True
    assert float(heat_focal_loss(logits, target, ignore)) == pytest.approx(pos, rel=1e-4)


def _tiny_photos(root, n=6, size=96):
    """Photos with one bright square 'face' each, and their annotations."""
    rng = np.random.default_rng(0)
    root.mkdir()
    recs = []
    for k in range(n):
        arr = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        s = int(rng.integers(24, 40))
        x0, y0 = (int(v) for v in rng.integers(4, size - s - 4, 2))
        arr[y0 : y0 + s, x0 : x0 + s] = (230, 180, 120) if k % 2 else (120, 200, 230)
        Image.fromarray(arr).save(root / f"p{k}.png")
        cx, cy = x0 + s / 2, y0 + s / 2
        kps = {"eye_left_img": [cx - s / 6, cy - s / 8], "eye_right_img": [cx + s / 6, cy - s / 8], "nose": [cx, cy]}
        recs.append(
            {
                "image": f"p{k}.png",
                "size": [size, size],
                "species": "dog" if k % 2 else "cat",
                "keypoints": kps,
                "face_box": [x0, y0, x0 + s, y0 + s],
                "faces": [
                    {
                        "species": "dog" if k % 2 else "cat",
                        "face": [x0, y0, x0 + s, y0 + s],
                        "keypoints": kps,
                        "body": None,
                    }
                ],
            }
        )
    (root / "annotations.json").write_text(json.dumps(recs))
    return root


def test_train_detector_end_to_end(tmp_path):
    from dife.detection import detect_faces, load_detector
    from dife.modeling.face_detector import FaceDetector, FaceDetectorConfig

    data = _tiny_photos(tmp_path / "photos")
    assert len(read_photo_boxes(data)) == 6
    cfg = DetectorTrainConfig(
        data=str(data),
        val_data=str(data),  # the wild layout reads the same file (face_box, species)
        output_dir=str(tmp_path / "out"),
        views_per_photo=3,
        input_size=64,
        neck_dim=16,
        head_dim=16,
        head_layers=1,
        steps=12,
        batch_size=6,
        val_every=6,
        min_face=4.0,
        mine_steps=6,
        mine_score=0.01,
    )
    torch.manual_seed(0)
    backbone = FaceDetector(FaceDetectorConfig(input_size=64)).backbone.state_dict()
    lines: list[str] = []
    out = train_detector(cfg, backbone_state=backbone, progress=lines.append)
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["step"] for h in hist] == [6, 12, 18]
    det = load_detector(out)
    assert det.config.input_size == 64 and det.config.extra["training"]["steps"] == 18
    assert det.config.extra["training"]["best_step"] in (6, 12, 18)
    assert isinstance(detect_faces(data / "p0.png", model=det, min_score=0.0), list)
    # a trained folder is not replaced unless asked; the cache is reused by a second run with the same settings
    with pytest.raises(InputError, match="already holds"):
        train_detector(cfg, backbone_state=backbone, progress=None)
    cached = (out / "cache" / "train" / "feat0.npy").stat().st_mtime_ns
    train_detector(cfg, backbone_state=backbone, progress=None, overwrite=True)
    assert (out / "cache" / "train" / "feat0.npy").stat().st_mtime_ns == cached


def test_config_data_from_environment_and_errors(tmp_path, monkeypatch):
    pytest.importorskip("yaml")
    data = _tiny_photos(tmp_path / "photos", n=1)
    monkeypatch.setenv("DIFE_DETECTOR_DATA", str(data))
    cfg = load_detector_config("face_finder", ["steps=7"])
    assert cfg.data == str(data) and cfg.steps == 7
    cfg.validate()
    monkeypatch.delenv("DIFE_DETECTOR_DATA")
    with pytest.raises(InputError, match="data=PATH"):
        load_detector_config("face_finder").validate()
    with pytest.raises(InputError, match="unknown face-finder config key"):
        load_detector_config("face_finder", ["stepz=1"])
    with pytest.raises(InputError, match="no annotations.json"):
        load_detector_config("face_finder", [f"data={tmp_path}"]).validate()
