"""Labelled landmarks of training photos: crops with keypoints, pairs, the keypoint matching loss, the trainer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dife.coords import CropTransform
from dife.errors import InputError, ModelNotFoundError, ShapeError
from dife.train.landmarks import LandmarkCrops, sample_pairs
from dife.train.losses import keypoint_matching_loss
from dife.train.photo_crops import crop_keypoints, make_photo_crops

pytestmark = pytest.mark.usefixtures("one_thread")


def _landmark_photos(folder: Path, n: int = 3) -> Path:
    """``n`` photos per species (cat, dog), one face each with two eyes and a nose (a dark dot each)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for s in ("cat", "dog"):
        for i in range(n):
            img = rng.integers(100, 200, (80, 90, 3)).astype(np.uint8)
            x0, y0 = int(rng.integers(5, 20)), int(rng.integers(5, 15))
            kps = {"eye_left_img": [x0 + 15, y0 + 20], "eye_right_img": [x0 + 45, y0 + 20], "nose": [x0 + 30, y0 + 40]}
            for x, y in kps.values():
                img[y - 1 : y + 2, x - 1 : x + 2] = 0
            name = f"{s}{i}.png"
            Image.fromarray(img).save(folder / name)
            face = {"species": s, "face": [x0, y0, x0 + 60, y0 + 60], "keypoints": kps}
            records.append({"image": name, "faces": [face]})
    (folder / "annotations.json").write_text(json.dumps(records))
    return folder


@pytest.fixture
def landmark_folder(tmp_path: Path) -> Path:
    make_photo_crops(
        _landmark_photos(tmp_path / "lm_photos"), tmp_path / "lm", framings=2, size=40, min_side=30, keypoints=True
    )
    return tmp_path / "lm"


# ------------------------------------------------------------------ crops with keypoints
def test_crop_keypoints_maps_pixel_centres_and_drops_points_outside() -> None:
    crop = CropTransform(left=10.0, top=20.0, side=50.0, size=100, width=80, height=90)
    got = crop_keypoints({"a": [9.5, 19.5], "b": [34.5, 44.5], "c": [5, 30], "d": [59.4, 69.4]}, crop)
    # edge 10 -> -0.5; the centre of the box -> 49.5; x = 5 lies outside; 59.4 + 0.5 = 59.9 -> 99.3
    assert got == {"a": [-0.5, -0.5], "b": [49.5, 49.5], "d": [99.3, 99.3]}


def test_photo_crops_write_keypoints_only_when_asked(tmp_path: Path) -> None:
    from dife.train.photo_crops import main

    src = _landmark_photos(tmp_path / "photos", n=1)
    make_photo_crops(src, tmp_path / "plain", framings=1, size=40, min_side=30)
    with open(tmp_path / "plain" / "index.csv", newline="") as fh:
        assert "keypoints" not in next(csv.DictReader(fh))
    assert (
        main([str(src), str(tmp_path / "kp"), "--framings", "2", "--size", "40", "--min-side", "30", "--keypoints"])
        == 0
    )
    with open(tmp_path / "kp" / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    for row in rows:  # every dark dot is where its keypoint says
        img = np.asarray(Image.open(tmp_path / "kp" / row["image"]).convert("L"), dtype=np.float64)
        kps = json.loads(row["keypoints"])
        assert set(kps) == {"eye_left_img", "eye_right_img", "nose"}
        for x, y in kps.values():
            xi, yi = round(x), round(y)
            assert img[yi, xi] < img.mean() - 40, (row["image"], x, y)


def test_landmark_crops_give_grid_points_of_the_resized_crop(landmark_folder: Path) -> None:
    data = LandmarkCrops(landmark_folder, ["nose", "eye_left_img", "ear"], size=20)
    assert len(data) == 12 and set(data.labels) == {"cat", "dog"} and len(data.usable) == 12
    with open(landmark_folder / "index.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    want = np.array(json.loads(row["keypoints"])["nose"])
    image, pts = data.load(0)
    assert image.shape == (3, 20, 20) and -1 <= float(image.min()) and float(image.max()) <= 1
    np.testing.assert_allclose(pts[0].numpy(), (want + 0.5) * 20 / 40 - 0.5, atol=1e-5)  # 40-px crop -> 20 grid
    assert torch.isnan(pts[2]).all()  # no 'ear' labelled


def test_landmark_crops_errors(tmp_path: Path, landmark_folder: Path) -> None:
    with pytest.raises(InputError, match="has no index.csv"):
        LandmarkCrops(tmp_path, ["nose"])
    make_photo_crops(_landmark_photos(tmp_path / "p2", n=1), tmp_path / "plain", framings=1, size=40, min_side=30)
    with pytest.raises(InputError, match="no keypoints column"):
        LandmarkCrops(tmp_path / "plain", ["nose"])
    with pytest.raises(InputError, match="no crop has two"):
        LandmarkCrops(landmark_folder, ["nose", "ear"])
    with pytest.raises(InputError, match="at least one keypoint"):
        LandmarkCrops(landmark_folder, [])


def test_sample_pairs_pair_two_species_sharing_keypoints(landmark_folder: Path) -> None:
    data = LandmarkCrops(landmark_folder, ["eye_left_img", "eye_right_img", "nose"], size=20)
    g = torch.Generator().manual_seed(0)
    pairs = sample_pairs(data, 50, g)
    assert len(pairs) == 50 and all(data.labels[i] != data.labels[j] for i, j in pairs)
    assert {data.labels[i] for i, _ in pairs} == {"cat", "dog"}
    same = sample_pairs(data, 50, g, cross_species=False)
    assert any(data.labels[i] == data.labels[j] for i, j in same) and all(i != j for i, j in same)
    data.points[:, 1:] = np.nan  # one keypoint left: no pair shares two
    with pytest.raises(InputError, match="could not draw"):
        sample_pairs(data, 2, g)


# ------------------------------------------------------------------ the loss
def _features(size: int = 16, shift: int = 0, seed: int = 0) -> torch.Tensor:
    """(1, 8, S, S) random unit features; ``shift``: the same content moved right by that many pixels."""
    g = torch.Generator().manual_seed(seed)
    e = torch.nn.functional.normalize(torch.randn(1, 8, size, size, generator=g), dim=1)
    if shift:
        e = torch.cat([torch.randn(1, 8, size, shift, generator=g), e[..., :-shift]], dim=-1)
    return e


def test_keypoint_matching_loss_scores_the_known_correspondence() -> None:
    e1, e2 = _features(), _features(shift=3)
    p1 = torch.tensor([[[4.0, 5.0], [8.0, 9.0], [2.0, 12.0]]])
    right = keypoint_matching_loss(e1, e2, p1, p1 + torch.tensor([3.0, 0.0]), temperature=0.01)
    wrong = keypoint_matching_loss(e1, e2, p1, p1, temperature=0.01)
    assert float(right) < 0.01
    assert float(wrong) == pytest.approx(3 / 16, abs=0.01)  # off by 3 pixels of a 16-pixel map


def test_keypoint_matching_loss_skips_unlabelled_points_and_has_gradients() -> None:
    e1 = _features().requires_grad_(True)
    e2 = _features(seed=1)
    p1 = torch.tensor([[[4.0, 5.0], [float("nan"), 1.0]]])
    p2 = torch.tensor([[[7.0, 5.0], [3.0, 3.0]]])
    one = keypoint_matching_loss(e1, e2, p1[:, :1], p2[:, :1])
    both = keypoint_matching_loss(e1, e2, p1, p2)
    torch.testing.assert_close(one, both)
    both.backward()
    assert e1.grad is not None and float(e1.grad.abs().sum()) > 0
    none = keypoint_matching_loss(e1, e2, torch.full_like(p1, float("nan")), p2)
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_keypoint_matching_loss_names_bad_shapes() -> None:
    e = _features()
    with pytest.raises(ShapeError, match=r"points1 must be a \(B=1, K, 2\)"):
        keypoint_matching_loss(e, e, torch.zeros(2, 3), torch.zeros(1, 3, 2))
    with pytest.raises(ShapeError, match="one shape"):
        keypoint_matching_loss(e, e, torch.zeros(1, 3, 2), torch.zeros(1, 2, 2))
    with pytest.raises(InputError, match="temperature"):
        keypoint_matching_loss(e, e, torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), temperature=0)


# ------------------------------------------------------------------ the trainer
def _config(tmp_path: Path, landmark_folder: Path, **landmarks) -> dict:
    from test_trainer_photos import _config as photos_config  # tests/train is on sys.path (rootdir mode)

    cfg = photos_config(tmp_path)
    cfg["landmarks"] = {"folder": str(landmark_folder), "pairs": 3, **landmarks}
    return cfg


def test_trainer_adds_the_landmark_term_after_the_warm_up(tmp_path: Path, landmark_folder: Path) -> None:
    from test_trainer_photos import CountingTeacher

    from dife.train.trainer import Trainer

    cfg = _config(tmp_path, landmark_folder)
    cfg["warmup_steps"] = 1
    tr = Trainer(cfg, dense_teacher=CountingTeacher())
    assert "kp" not in tr.train_step()  # the warm-up: distillation only
    tr.step = 1
    log = tr.train_step()
    assert 0 < log["kp"] < 1
    batch = tr._landmark_batch()
    assert batch is not None and batch["a"].shape == (3, 3, 32, 32) and batch["pa"].shape == (3, 3, 2)
    assert any("landmarks: 3 crop pairs per step" in n for n in tr.model.config.extra["training_data"])
    (tmp_path / "off").mkdir()
    off = Trainer(_config(tmp_path / "off", landmark_folder, weight=0.0), dense_teacher=CountingTeacher())
    assert off._landmark_batch() is None


@pytest.mark.parametrize(
    "landmarks, error, message",
    [
        ({"pairs": 0}, InputError, "landmarks.pairs"),
        ({"weight": -1.0}, InputError, "landmarks.weight"),
        ({"names": []}, InputError, "landmarks.names"),
        ({"index": "missing.csv"}, ModelNotFoundError, "photo_crops"),
    ],
)
def test_bad_landmark_options_are_named(tmp_path: Path, landmark_folder: Path, landmarks, error, message) -> None:
    from dife.train.config import config_from_dict

    with pytest.raises(error, match=message):
        config_from_dict(_config(tmp_path, landmark_folder, **landmarks)).validate(check_teachers=False)


def test_landmark_data_fills_its_placeholder(tmp_path: Path, landmark_folder: Path) -> None:
    from dife.train.config import config_from_dict, load_config

    cfg = _config(tmp_path, landmark_folder)
    cfg["landmarks"]["folder"] = "${landmark_data}"
    with pytest.raises(InputError, match="'landmark_data' is not set: pass landmark_data=DIR.*photo_crops"):
        config_from_dict(cfg).validate(check_teachers=False)
    got = load_config(cfg, overrides=[f"landmark_data={landmark_folder}"])
    assert got.landmarks.folder == str(landmark_folder)
    got.validate(check_teachers=False)
