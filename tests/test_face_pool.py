"""dife.face_pool / `dife data faces`: face crops from keypoint datasets written by the tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dife.cli import main
from dife.errors import InputError
from dife.eval.readers import face_box, read_dataset, read_faces_folder
from dife.face_pool import build_face_pool

KEYPOINTS = ["left_eye", "right_eye", "nose"]
RED, GREEN, BLUE = 0, 1, 2


def _photo(path: Path, w: int, h: int, marks: dict[tuple[int, int], int]) -> None:
    """A grey photo with a bright 5 x 5 square in one channel centred on each mark ``(x, y): channel``."""
    a = np.full((h, w, 3), 90, dtype=np.uint8)
    for (x, y), c in marks.items():
        a[y - 2 : y + 3, x - 2 : x + 3] = 0
        a[y - 2 : y + 3, x - 2 : x + 3, c] = 255
    Image.fromarray(a).save(path)


def _centroid(img: np.ndarray, c: int) -> np.ndarray:
    others = np.delete(img.astype(float), c, axis=2).max(axis=2)
    w = np.clip(img[..., c].astype(float) - others - 60, 0, None)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def _animal_pose(root: Path) -> Path:
    """Animal-Pose layout: keypoints.json (images as {id: file}, nested [x, y, v]) + images/.

    Photo 1 (400 x 300): a dog facing the camera (its own left eye on the image right), big enough;
    a cat whose eye order is wrong (dropped); a tiny dog face (crop under 64 px, dropped).
    Photo 2 (300 x 300): a cat at the top edge (22 % of the crop outside: kept, black there),
    a horse in the corner (more than 40 % outside: dropped).
    """
    (root / "images").mkdir(parents=True)
    _photo(root / "images" / "1.png", 400, 300, {(170, 120): GREEN, (130, 120): RED, (150, 150): BLUE})
    _photo(root / "images" / "2.png", 300, 300, {(170, 15): GREEN, (130, 15): RED, (150, 40): BLUE})
    names = [*KEYPOINTS, "withers"]
    cats = [{"id": i + 1, "name": n, "keypoints": names} for i, n in enumerate(["dog", "cat", "horse"])]

    def ann(i, image, cat, left_eye, right_eye, nose):
        kps = [[*left_eye, 1], [*right_eye, 1], [*nose, 1], [0, 0, 0]]
        return {"id": i, "image_id": image, "category_id": cat, "keypoints": kps}

    data = {
        "images": {"1": "1.png", "2": "2.png"},
        "categories": cats,
        "annotations": [
            ann(1, 1, 1, (170, 120), (130, 120), (150, 150)),  # dog: kept
            ann(2, 1, 2, (300, 120), (340, 120), (320, 150)),  # cat, eyes in the wrong order: dropped
            ann(3, 1, 1, (360, 250), (350, 250), (355, 255)),  # tiny dog: crop 25 px, dropped
            ann(4, 2, 2, (170, 15), (130, 15), (150, 40)),  # cat at the top edge: kept
            ann(5, 2, 3, (299, 299), (280, 299), (290, 290)),  # horse in the corner: dropped
        ],
    }
    path = root / "keypoints.json"
    path.write_text(json.dumps(data))
    return path


def _index(folder: Path) -> list[dict[str, str]]:
    with open(folder / "index.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_animal_pose_pool(tmp_path):
    src = _animal_pose(tmp_path / "ap")
    out = tmp_path / "pool"
    s = build_face_pool(src, out, format="animal_pose", image_dir=tmp_path / "ap" / "images", license="research only")
    assert s.written == {"cat": 1, "dog": 1} and s.read == 2 and s.left_out == 0 and not s.unreadable
    assert sorted(p.name for p in out.iterdir()) == [
        "annotations.json",
        "build.json",
        "cat_00001.jpg",
        "dog_00001.jpg",
        "index.csv",
    ]
    rows = _index(out)
    assert [(r["image"], r["species"], r["source"], r["license"]) for r in rows] == [
        ("cat_00001.jpg", "cat", "animal_pose:2.png#4", "research only"),
        ("dog_00001.jpg", "dog", "animal_pose:1.png#1", "research only"),
    ]
    records = {r["image"]: r for r in json.loads((out / "annotations.json").read_text())}
    for name in ("dog_00001.jpg", "cat_00001.jpg"):
        img = np.asarray(Image.open(out / name).convert("RGB"))
        assert img.shape == (128, 128, 3)
        kp = records[name]["keypoints"]
        # the animal's right eye (red) is the image-left eye; every mark lands on its keypoint in the crop
        for key, c in (("eye_left_img", RED), ("eye_right_img", GREEN), ("nose", BLUE)):
            assert np.abs(_centroid(img, c) - kp[key]).max() < 1.5, (name, key)
    # the readers' rule: square of 2.5x the points' extent, centred on them
    box = face_box([(130, 120), (170, 120), (150, 150)], margin=2.5)
    assert box == (100.5, 85.5, 100.0)
    dog = records["dog_00001.jpg"]["keypoints"]["nose"]
    assert dog == pytest.approx([(150 + 0.5 - 100.5) * 1.28 - 0.5, (150 + 0.5 - 85.5) * 1.28 - 0.5], abs=1e-3)
    cat = np.asarray(Image.open(out / "cat_00001.jpg").convert("RGB"))
    assert cat[:14].max() < 12 and cat[40:].mean() > 40  # above the photo (28 rows): black, not replicated
    build = json.loads((out / "build.json").read_text())
    assert build["written_by"] == "dife data faces" and build["builds"][0]["written"] == {"cat": 1, "dog": 1}


def test_the_crops_are_the_readers_crops(tmp_path):
    """Not a copy of the rule: the keypoints are those of read_dataset(...).load() with the same options."""
    src = _animal_pose(tmp_path / "ap")
    out = build_face_pool(src, tmp_path / "pool", format="animal_pose", size=96, min_side=10, max_outside=0.5).folder
    samples = read_dataset(src, format="animal_pose", size=96, min_side=10, max_outside=0.5)
    expected = sorted((s.species, s.load().keypoints["nose"]) for s in samples)
    got = sorted(
        (r["species"], tuple(r["keypoints"]["nose"])) for r in json.loads((out / "annotations.json").read_text())
    )
    assert len(got) == len(expected) == 3  # with these limits the tiny dog is kept too
    for (sa, a), (sb, b) in zip(got, expected, strict=True):
        assert sa == sb and a == pytest.approx(b, abs=1e-3)


def test_faces_folder_is_recropped_and_the_pool_trains_and_validates(tmp_path, faces_dir, tiny_model):
    from dife.train.config import load_config
    from dife.train.data import RealFaceFolder
    from dife.train.validate import keypoint_transfer_error

    out = build_face_pool(faces_dir, tmp_path / "pool", size=64, min_side=32).folder
    pool = RealFaceFolder(out, index_file="index.csv")
    assert pool.counts() == dict.fromkeys(["cat", "cow", "dog", "horse", "human", "sheep"], 4)
    labelled = read_faces_folder(out)
    assert len(labelled) == 24 and all(s.load().image.shape == (64, 64, 3) for s in labelled[:2])
    # the made faces' eyes are ~55 px apart in 256 px pictures: cut at 2.5x the points' extent, they are ~22 px apart
    eyes = [s.keypoints["eye_right_img"][0] - s.keypoints["eye_left_img"][0] for s in labelled]
    assert all(15 < d < 30 for d in eyes)
    res = keypoint_transfer_error(tiny_model, out, pairs=2, species=["dog", "cat"])
    assert res.n_pairs == 2 and np.isfinite(res.overall)
    cfg = load_config("dife_base", [f"data={out}", f"dev_data={out}", "landmarks.folder="])
    cfg.validate(check_teachers=False)  # the pool is both the photo folder and a labelled folder


def test_filters_draw_and_append(tmp_path, faces_dir):
    out = tmp_path / "pool"
    exclude = tmp_path / "dev.txt"
    exclude.write_text("# faces of the development set\nhuman_0001.jpg\ndog_0002.jpg\n")
    a = build_face_pool(faces_dir, out, species=["human", "dog"], exclude=exclude, max_per_species=2, seed=3)
    assert a.written == {"dog": 2, "human": 2} and a.left_out == 24 - 4
    sources = {r["source"] for r in _index(out)}
    assert not sources & {"faces:human_0001.jpg", "faces:dog_0002.jpg"}
    again = build_face_pool(
        faces_dir, tmp_path / "again", species=["human", "dog"], exclude=exclude, max_per_species=2, seed=3
    )
    assert {r["source"] for r in _index(again.folder)} == sources  # the same draw for the same seed
    b = build_face_pool(faces_dir, out, include=["cat_000[12].jpg", "*/human_0004.jpg"], append=True)
    assert b.written == {"cat": 2, "human": 1} and b.total == {"cat": 2, "dog": 2, "human": 3}
    names = [r["image"] for r in _index(out)]
    assert names[-3:] == ["cat_00001.jpg", "cat_00002.jpg", "human_00003.jpg"]  # numbered after the pool's
    assert len(json.loads((out / "annotations.json").read_text())) == 7
    assert len(json.loads((out / "build.json").read_text())["builds"]) == 2


def test_a_development_pool_holds_out_its_photos(tmp_path):
    src = _animal_pose(tmp_path / "ap")
    dev = build_face_pool(src, tmp_path / "dev", format="animal_pose", species=["cat"], size=256).folder
    assert [r["source"] for r in _index(dev)] == ["animal_pose:2.png#4"]
    pool = build_face_pool(src, tmp_path / "pool", format="animal_pose", exclude=dev, min_side=10, max_outside=0.6)
    assert {r["source"].split("#")[0] for r in _index(pool.folder)} == {"animal_pose:1.png"}  # photo 2 held out whole
    assert build_face_pool(src, tmp_path / "p2", format="animal_pose", exclude=dev / "index.csv").written == {"dog": 1}
    (tmp_path / "bad.csv").write_text("image,species\na.jpg,dog\n")
    with pytest.raises(InputError, match="'source' column"):
        build_face_pool(src, tmp_path / "p3", format="animal_pose", exclude=tmp_path / "bad.csv")


def test_never_over_a_users_files(tmp_path, faces_dir):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        build_face_pool(faces_dir, mine)
    with pytest.raises(InputError, match="not a pool written by `dife data faces`"):
        build_face_pool(faces_dir, mine, append=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="does not exist"):
        build_face_pool(faces_dir, tmp_path / "new", append=True)
    with pytest.raises(InputError, match="dataset not found"):
        build_face_pool(tmp_path / "nope", tmp_path / "p")


def test_an_interrupted_build_leaves_nothing(tmp_path, faces_dir):
    def stop(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_face_pool(faces_dir, tmp_path / "pool", progress=stop)
    assert list(tmp_path.iterdir()) == []  # no pool, no partial folder


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"size": 4}, "size must be an int in"),
        ({"size": 64.5}, "size must be an int"),
        ({"quality": 0}, "quality"),
        ({"max_outside": 1.5}, "max_outside"),
        ({"margin": float("nan")}, "margin"),
        ({"max_per_species": 0}, "max_per_species"),
        ({"species": ["wolf"]}, "no face to write.*kept 24 face"),
        ({"include": ["nothing*"]}, "no face to write"),
        ({"exclude": "missing.txt"}, "exclude list not found"),
        ({"image_dir": "x"}, "a faces folder takes no"),
    ],
)
def test_bad_options(tmp_path, faces_dir, options, match):
    with pytest.raises(InputError, match=match):
        build_face_pool(faces_dir, tmp_path / "pool", **options)
    assert not (tmp_path / "pool").exists()


def test_missing_images(tmp_path):
    from dife.errors import ImageError

    src = _animal_pose(tmp_path / "ap")
    (tmp_path / "ap" / "images" / "2.png").unlink()
    with pytest.raises(ImageError, match="2.png"):  # Animal-Pose gives no image sizes: the reader needs the file
        build_face_pool(src, tmp_path / "pool", format="animal_pose")
    assert not (tmp_path / "pool").exists()
    # with the sizes in the JSON (AP-10K / COCO), faces of missing images are skipped and reported
    data = json.loads(src.read_text())
    data["images"] = [
        {"id": 1, "file_name": "1.png", "width": 400, "height": 300},
        {"id": 2, "file_name": "2.png", "width": 300, "height": 300},
    ]
    data["annotations"] = [{**a, "keypoints": [v for p in a["keypoints"] for v in p]} for a in data["annotations"]]
    coco = tmp_path / "ap" / "ap10k.json"
    coco.write_text(json.dumps(data))
    s = build_face_pool(coco, tmp_path / "pool", format="ap10k", image_dir=tmp_path / "ap" / "images")
    assert s.written == {"dog": 1} and s.unreadable == ["2.png#4"]


def test_cli(tmp_path, capsys, faces_dir):
    out = tmp_path / "pool"
    code = main(["data", "faces", str(faces_dir), "-o", str(out), "--size", "64", "--species", "cat", "cow"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"wrote 8 face crops (cat 4, cow 4) to {out}" in captured.out
    assert [r["species"] for r in _index(out)] == ["cat"] * 4 + ["cow"] * 4
    code = main(["data", "faces", str(faces_dir), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dife: error: ") and "not empty" in err and len(err.strip().splitlines()) == 1
    assert main(["data", "faces", str(tmp_path / "ap.json"), "--format", "animal_pose", "-o", str(tmp_path / "p")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.shared_data
def test_whole_photos_give_the_development_crops(tmp_path, dev_wild_dir, dev_faces_dir):
    """Cut from the whole photos, the faces land where the development set's crops put them (same framing)."""
    s = build_face_pool(dev_wild_dir, tmp_path / "pool", size=256, min_side=0, max_outside=1, quality=95)
    faces = {r["image"]: r["keypoints"] for r in json.loads((dev_faces_dir / "annotations.json").read_text())}
    dist = [
        np.hypot(*(np.subtract(r["keypoints"][k], faces[r["source"].split(":", 1)[1]][k])))
        for r in json.loads((s.folder / "annotations.json").read_text())
        for k in r["keypoints"]
    ]
    assert sum(s.written.values()) > 800
    assert np.median(dist) < 1.5 and max(dist) < 5.0  # px at 256: the photos were resized, the points rounded
