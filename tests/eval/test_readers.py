"""Dataset readers of dife.eval: tiny files written in each format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dife.errors import ImageError, InputError
from dife.eval.readers import (
    NINE_POINTS,
    WFLW_TO_NINE,
    face_box,
    is_image_side_consistent,
    read_animal_pose,
    read_animalweb,
    read_ap10k,
    read_dataset,
    read_faces_folder,
    read_mafl,
    read_mtfl,
    read_wflw,
)


def _image(path: Path, w: int, h: int, marks: dict[tuple[int, int], int] | None = None) -> None:
    """A dark image with a bright 3 x 3 square in channel ``c`` centred on each mark ``(x, y): c``."""
    a = np.full((h, w, 3), 20, dtype=np.uint8)
    for (x, y), c in (marks or {}).items():
        a[y - 1 : y + 2, x - 1 : x + 2, c] = 255
    Image.fromarray(a).save(path)


def _centroid(img: np.ndarray, c: int) -> np.ndarray:
    """Intensity-weighted centroid (x, y) of channel ``c`` above the other channels."""
    w = np.clip(img[..., c].astype(float) - img.astype(float).max(axis=2, initial=0, where=np.arange(3) != c), 0, None)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


# ------------------------------------------------------------------ faces folder
def test_faces_folder(tmp_path):
    _image(tmp_path / "dog_0001.jpg", 64, 64)
    _image(tmp_path / "human_0001.jpg", 64, 64)
    recs = [
        {
            "image": "dog_0001.jpg",
            "species": "dog",
            "keypoints": {"eye_left_img": [20, 25], "eye_right_img": [44, 25], "nose": [32, 40]},
        },
        {"image": "human_0001.jpg", "species": "Human", "keypoints": {"eye_left_img": [22.5, 24], "nose": [32, 38]}},
    ]
    (tmp_path / "annotations.json").write_text(json.dumps(recs))
    s = read_faces_folder(tmp_path)
    assert [x.species for x in s] == ["dog", "human"]
    assert s[0].id == "dog_0001.jpg" and s[0].box is None
    assert s[1].keypoints["eye_left_img"] == (22.5, 24.0)
    face = s[0].load()
    assert face.image.shape == (64, 64, 3) and face.image.dtype == np.uint8
    assert face.keypoints["nose"] == (32.0, 40.0)
    assert face.points(["nose", "eye_left_img"]).tolist() == [[32, 40], [20, 25]]
    assert [x.id for x in read_faces_folder(tmp_path, species=["human"])] == ["human_0001.jpg"]
    assert [x.id for x in read_dataset(tmp_path)] == ["dog_0001.jpg", "human_0001.jpg"]


def test_faces_folder_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_faces_folder(tmp_path)
    (tmp_path / "annotations.json").write_text('{"image": 1}')
    with pytest.raises(InputError, match="list"):
        read_faces_folder(tmp_path)
    (tmp_path / "annotations.json").write_text(json.dumps([{"image": "a.jpg", "species": "dog"}]))
    with pytest.raises(InputError, match="keypoints"):
        read_faces_folder(tmp_path)
    (tmp_path / "annotations.json").write_text(
        json.dumps([{"image": "missing.jpg", "species": "dog", "keypoints": {"nose": [1, 2]}}])
    )
    with pytest.raises(ImageError, match="not found"):
        read_faces_folder(tmp_path)[0].load()


# ------------------------------------------------------------------ COCO / AP-10K
AP10K_NAMES = ["left_eye", "right_eye", "nose", "neck", "root_of_tail"]


def _coco(tmp_path: Path) -> Path:
    # the dog faces the camera: its own left eye is on the image right (x = 130)
    marks = {(90, 100): 0, (130, 100): 1, (110, 130): 2}
    _image(tmp_path / "a.png", 240, 200, marks)
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": 240, "height": 200}],
        "categories": [
            {"id": 1, "name": "dog", "supercategory": "Canidae", "keypoints": AP10K_NAMES},
            {"id": 2, "name": "cat", "supercategory": "Felidae", "keypoints": AP10K_NAMES},
        ],
        "annotations": [
            # good face: left_eye (animal's) at x=130, right_eye at x=90
            {
                "id": 1,
                "image_id": 7,
                "category_id": 1,
                "keypoints": [130, 100, 2, 90, 100, 2, 110, 130, 2, 0, 0, 0, 5, 5, 2],
            },
            # contradicting order (profile / bad label): dropped
            {
                "id": 2,
                "image_id": 7,
                "category_id": 1,
                "keypoints": [90, 100, 2, 130, 100, 2, 110, 130, 2, 0, 0, 0, 0, 0, 0],
            },
            # nose not labelled: dropped (all facial points required)
            {
                "id": 3,
                "image_id": 7,
                "category_id": 2,
                "keypoints": [130, 100, 2, 90, 100, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            # face mostly outside the photo: dropped
            {
                "id": 4,
                "image_id": 7,
                "category_id": 2,
                "keypoints": [239, 2, 2, 200, 2, 2, 220, 10, 2, 0, 0, 0, 0, 0, 0],
            },
        ],
    }
    path = tmp_path / "ap10k.json"
    path.write_text(json.dumps(data))
    return path


def test_ap10k_maps_subject_side_to_image_side_and_crops(tmp_path):
    s = read_ap10k(_coco(tmp_path), tmp_path, size=128)
    assert len(s) == 1
    (d,) = s
    assert d.species == "dog" and d.dataset == "ap10k" and d.id == "a.png#1"
    # the animal's right eye is the image-left one
    assert d.keypoints == {"eye_left_img": (90.0, 100.0), "eye_right_img": (130.0, 100.0), "nose": (110.0, 130.0)}
    # square crop: bbox 90..130 x 100..130, longer edge 40, side 100, centred at (110.5, 115.5) in edges
    left, top, side = d.box
    assert (left, top, side) == pytest.approx((60.5, 65.5, 100.0))
    face = d.load()
    assert face.image.shape == (128, 128, 3)
    # mapped keypoints land on the marks drawn at the source keypoints
    for name, c in (("eye_left_img", 0), ("eye_right_img", 1), ("nose", 2)):
        assert np.abs(_centroid(face.image, c) - np.array(face.keypoints[name])).max() < 0.25, name
    x, y = face.keypoints["nose"]
    assert x == pytest.approx((110 + 0.5 - 60.5) * 1.28 - 0.5)
    assert y == pytest.approx((130 + 0.5 - 65.5) * 1.28 - 0.5)


def test_coco_options_and_species_filter(tmp_path):
    path = _coco(tmp_path)
    keep_all = read_ap10k(path, tmp_path, drop_inconsistent=False, max_outside=1.0, require_all=False)
    assert [x.id for x in keep_all] == ["a.png#1", "a.png#2", "a.png#3", "a.png#4"]
    assert set(keep_all[2].keypoints) == {"eye_left_img", "eye_right_img"}
    assert read_ap10k(path, tmp_path, species=["cat"]) == []
    assert read_ap10k(path, tmp_path, min_side=150) == []
    with pytest.raises(InputError):
        read_ap10k(tmp_path / "nope.json", tmp_path)
    with pytest.raises(InputError):
        read_ap10k(path, tmp_path, size=0)


def test_animal_pose_kaggle_layout(tmp_path):
    _image(tmp_path / "2007_000063.jpg", 200, 160)
    names = ["left_eye", "right_eye", "left_ear_base", "right_ear_base", "nose"]
    data = {
        "images": {"1": "2007_000063.jpg"},
        "categories": [{"supercategory": "animal", "id": 3, "name": "horse", "keypoints": names}],
        "annotations": [
            {
                "image_id": 1,
                "bbox": [50, 40, 150, 140],
                "category_id": 3,
                "num_keypoints": 4,
                "keypoints": [[110, 70, 1], [80, 72, 1], [0, 0, 0], [70, 50, 1], [95, 110, 1]],
            }
        ],
    }
    path = tmp_path / "keypoints.json"
    path.write_text(json.dumps(data))
    (s,) = read_animal_pose(path, tmp_path)
    assert s.species == "horse" and s.dataset == "animal_pose"
    assert s.keypoints == {"eye_left_img": (80.0, 72.0), "eye_right_img": (110.0, 70.0), "nose": (95.0, 110.0)}
    # auto-located images: read_dataset with the JSON path and the images beside it
    assert read_dataset(path, format="animal_pose")[0].keypoints == s.keypoints


# ------------------------------------------------------------------ MAFL / CelebA
def test_mafl_celeba_landmarks_and_split(tmp_path):
    for n in ("000001.jpg", "000002.jpg", "000003.jpg"):
        _image(tmp_path / n, 178, 218)
    (tmp_path / "list_landmarks_align_celeba.txt").write_text(
        "3\n"
        "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
        "000001.jpg 69 109 106 113 77 142 73 152 108 154\n"
        "000002.jpg 69 110 107 112 81 135 70 151 108 153\n"
        "000003.jpg 107 111 68 111 75 134 74 152 107 151\n"  # eyes swapped: dropped
    )
    (tmp_path / "testing.txt").write_text("000002.jpg\n000003.jpg\n")
    all_ = read_mafl(tmp_path / "list_landmarks_align_celeba.txt", tmp_path)
    assert [s.id for s in all_] == ["000001.jpg", "000002.jpg"]
    s = all_[0]
    assert s.species == "human"
    assert s.keypoints == {
        "eye_left_img": (69.0, 109.0),
        "eye_right_img": (106.0, 113.0),
        "nose": (77.0, 142.0),
        "mouth_left_img": (73.0, 152.0),
        "mouth_right_img": (108.0, 154.0),
    }
    test = read_mafl(tmp_path / "list_landmarks_align_celeba.txt", tmp_path, split=tmp_path / "testing.txt")
    assert [x.id for x in test] == ["000002.jpg"]
    face = test[0].load()
    assert face.image.shape == (256, 256, 3)
    assert is_image_side_consistent(face.keypoints)
    (tmp_path / "bad.txt").write_text("000001.jpg 1 2 3\n000001.jpg 1 2 3\n000001.jpg 1 2 3\n")
    with pytest.raises(InputError, match="line 1: expected"):
        read_mafl(tmp_path / "bad.txt", tmp_path)


# ------------------------------------------------------------------ MTFL
def test_mtfl_lists_x_then_y_and_skip_profiles(tmp_path):
    (tmp_path / "net_7876").mkdir()
    (tmp_path / "lfw_5590").mkdir()
    marks = {(60, 70): 0, (100, 72): 1, (80, 95): 2}
    _image(tmp_path / "net_7876" / "a.png", 160, 180, marks)
    _image(tmp_path / "lfw_5590" / "b.jpg", 160, 180)
    (tmp_path / "training.txt").write_text(
        # path, x1..x5, y1..y5, gender, smile, glasses, head pose (3 frontal, 1 / 5 profiles)
        "net_7876\\a.png 60 100 80 66 96 70 72 95 115 116 1 2 2 3\n"
        " lfw_5590\\b.jpg 60 100 80 66 96 70 72 95 115 116 2 1 2 5\n"
        "net_7876/a.png 100 60 80 96 66 70 72 95 115 116 1 2 2 2\n"  # eyes in the wrong order: dropped
    )
    (s,) = read_mtfl(tmp_path / "training.txt", tmp_path, size=64)
    assert s.id == "net_7876/a.png" and s.species == "human" and s.dataset == "mtfl"
    assert s.keypoints == {
        "eye_left_img": (60.0, 70.0),
        "eye_right_img": (100.0, 72.0),
        "nose": (80.0, 95.0),
        "mouth_left_img": (66.0, 115.0),
        "mouth_right_img": (96.0, 116.0),
    }
    face = s.load()
    for name, c in (("eye_left_img", 0), ("eye_right_img", 1), ("nose", 2)):
        assert np.abs(_centroid(face.image, c) - face.keypoints[name]).max() < 1.0  # the marks land on the points
    both = read_dataset(tmp_path / "training.txt", format="mtfl", image_dir=tmp_path, skip_profiles=False)
    assert [x.id for x in both] == ["net_7876/a.png", "lfw_5590/b.jpg"]
    (tmp_path / "bad.txt").write_text("a.jpg 1 2 3 4 5 6 7 8 9 10\n")
    with pytest.raises(InputError, match=r"line 1: expected 'path' \+ 10 coordinates \+ 4 attribute codes"):
        read_mtfl(tmp_path / "bad.txt", tmp_path)
    (tmp_path / "bad.txt").write_text("a.jpg 1 2 3 4 5 6 7 8 9 x 1 2 2 3\n")
    with pytest.raises(InputError, match="non-numeric"):
        read_mtfl(tmp_path / "bad.txt", tmp_path)


# ------------------------------------------------------------------ WFLW
def _wflw_points() -> np.ndarray:
    pts = np.zeros((98, 2))
    pts[:, 0] = 100 + np.arange(98) * 0.5  # x grows with the index: the image-side order of WFLW
    pts[:, 1] = 120 + (np.arange(98) % 7)
    return pts


def test_wflw_98_to_9(tmp_path):
    _image(tmp_path / "face.jpg", 300, 300)
    (tmp_path / "sub").mkdir()
    _image(tmp_path / "sub" / "face2.jpg", 300, 300)
    pts = _wflw_points()
    fields = [f"{v:g}" for v in pts.reshape(-1)] + ["90", "80", "200", "210"] + ["0"] * 6
    lines = [" ".join([*fields, "face.jpg"]), " ".join([*fields, "sub/face2.jpg"])]
    (tmp_path / "list_98pt_rect_attr_test.txt").write_text("\n".join(lines) + "\n")
    s = read_wflw(tmp_path / "list_98pt_rect_attr_test.txt", tmp_path)
    assert [x.id for x in s] == ["face.jpg#1", "sub/face2.jpg#2"]
    assert tuple(s[0].keypoints) == NINE_POINTS
    for name, j in WFLW_TO_NINE.items():
        assert s[0].keypoints[name] == (pts[j, 0], pts[j, 1])
    assert s[0].keypoints["eye_left_img_outer"] == (130.0, 124.0)  # index 60
    assert s[0].keypoints["mouth_right_img"] == (141.0, 125.0)  # index 82
    assert is_image_side_consistent(s[0].keypoints)
    assert s[1].load().image.shape == (256, 256, 3)
    (tmp_path / "short.txt").write_text("1 2 3 face.jpg\n")
    with pytest.raises(InputError, match="207"):
        read_wflw(tmp_path / "short.txt", tmp_path)


# ------------------------------------------------------------------ AnimalWeb
def _pts(path: Path, pts: np.ndarray) -> None:
    body = "\n".join(f"{x:g} {y:g}" for x, y in pts)
    path.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


NINE = np.array([[40, 50], [55, 50], [75, 50], [90, 50], [65, 70], [50, 85], [80, 85], [65, 80], [65, 92]], dtype=float)


def test_animalweb_pts(tmp_path):
    (tmp_path / "felidae").mkdir()
    _image(tmp_path / "felidae" / "bengaltiger_0001.jpg", 130, 130)
    _pts(tmp_path / "felidae" / "bengaltiger_0001.pts", NINE)
    _image(tmp_path / "felidae" / "nolabel_0001.jpg", 130, 130)  # no .pts: skipped
    s = read_animalweb(tmp_path)
    assert len(s) == 1 and s[0].species == "bengaltiger" and s[0].id == "felidae/bengaltiger_0001.jpg"
    assert s[0].keypoints == {n: (float(x), float(y)) for n, (x, y) in zip(NINE_POINTS, NINE, strict=True)}
    assert read_dataset(tmp_path)[0].keypoints == s[0].keypoints  # auto: a folder of .pts files
    # a file labelled with the animal's own sides: left / right names swap
    mirrored = NINE.copy()
    mirrored[[0, 1, 2, 3]] = NINE[[3, 2, 1, 0]]
    mirrored[[5, 6]] = NINE[[6, 5]]
    _pts(tmp_path / "felidae" / "bengaltiger_0001.pts", mirrored)
    assert read_animalweb(tmp_path) == []  # read as image-side it contradicts the order: dropped
    s2 = read_animalweb(tmp_path, subject_side=True)
    assert s2[0].keypoints["eye_left_img_outer"] == (40.0, 50.0)
    assert s2[0].keypoints["mouth_left_img"] == (50.0, 85.0)
    _pts(tmp_path / "felidae" / "bengaltiger_0001.pts", NINE[:5])
    with pytest.raises(InputError, match="5 points"):
        read_animalweb(tmp_path)


# ------------------------------------------------------------------ helpers
def test_face_box_and_consistency():
    left, top, side = face_box([[10, 20], [30, 20], [20, 28]], margin=2.0)
    assert side == pytest.approx(40.0)
    assert (left + side / 2, top + side / 2) == pytest.approx((20.5, 24.5))
    assert face_box([[5, 5]], margin=2.5)[2] == pytest.approx(2.5)
    assert is_image_side_consistent({"eye_left_img": (1, 0), "eye_right_img": (2, 0)})
    assert not is_image_side_consistent({"eye_left_img": (3, 0), "eye_right_img": (2, 0)})
    assert not is_image_side_consistent({"mouth_left_img": (3, 0), "mouth_right_img": (3, 0)})
    with pytest.raises(InputError):
        read_dataset("/nonexistent/file.txt")
    with pytest.raises(InputError, match="unknown dataset format"):
        read_dataset("x", format="voc")
    with pytest.raises(InputError, match="split"):
        read_dataset("x.json", format="ap10k", split="testing.txt")


@pytest.mark.shared_data
def test_real_faces_folder_names_are_image_side(dev_faces_dir):
    s = read_faces_folder(dev_faces_dir)
    assert len(s) > 900
    assert all(is_image_side_consistent(x.keypoints) for x in s)
    assert {x.species for x in s} >= {"human", "dog", "cat", "horse", "sheep", "cow"}
