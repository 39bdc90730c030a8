"""Face crops of whole photos at several framings (dife.train.photo_crops)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dife.errors import InputError
from dife.train.photo_crops import framings_for_face, make_photo_crops


def _photos(folder: Path) -> Path:
    """Two photos: a red face box, a green one near the edge, a tiny one and an unboxed animal."""
    folder.mkdir()
    a = np.full((120, 160, 3), 40, np.uint8)
    a[30:90, 50:110] = (220, 20, 20)  # face box [50, 30, 110, 90]
    Image.fromarray(a).save(folder / "p1.png")
    b = np.full((100, 100, 3), 90, np.uint8)
    b[:60, :60] = (20, 220, 20)  # face box [-20, -20, 60, 60]: 44 % outside
    Image.fromarray(b).save(folder / "p2.png")
    records = [
        {
            "image": "p1.png",
            "faces": [
                {"species": "dog", "face": [50, 30, 110, 90], "keypoints": {"eye": [60, 45], "nose": [100, 80]}},
                {"species": "cat", "face": [0, 0, 20, 20], "keypoints": None},  # side 20: too small
                {"species": "cow", "face": None, "keypoints": None},
            ],
        },
        {"image": "p2.png", "faces": [{"species": "cat", "face": [-20, -20, 60, 60], "keypoints": None}]},
    ]
    (folder / "annotations.json").write_text(json.dumps(records))
    return folder


def _rows(index: Path) -> list[dict[str, str]]:
    with open(index, newline="") as f:
        return list(csv.DictReader(f))


def test_crops_index_framings_and_filters(tmp_path: Path) -> None:
    src = _photos(tmp_path / "photos")
    index = make_photo_crops(src, tmp_path / "out", framings=3, size=32, min_side=30, max_outside=0.5, scale=(0.8, 1.5))
    rows = _rows(index)
    assert [r["species"] for r in rows] == ["dog"] * 3 + ["cat"] * 3  # tiny and unboxed faces skipped
    assert all(r["image"] == f"{r['species']}_{int(r['framing']) + 1:06d}.jpg" for r in rows)
    for r in rows:
        assert 0.8 <= float(r["scale"]) <= 1.5 and abs(float(r["dx"])) <= 0.1 and abs(float(r["dy"])) <= 0.1
        img = np.asarray(Image.open(tmp_path / "out" / r["image"]))
        assert img.shape == (32, 32, 3)
    dog = np.asarray(Image.open(tmp_path / "out" / rows[0]["image"])).astype(int)
    assert dog[16, 16, 0] > 180 and dog[16, 16, 1] < 60  # the red face is in the middle
    cat = np.asarray(Image.open(tmp_path / "out" / rows[3]["image"])).astype(int)
    assert cat[1, 1].max() < 30  # top-left lies outside the photo: black

    # the keypoints only frame the face: none is written, the crop stays on them
    assert set(rows[0]) == {"image", "species", "photo", "face", "framing", "scale", "dx", "dy"}

    again = make_photo_crops(src, tmp_path / "out2", framings=3, size=32, min_side=30, max_outside=0.5)
    assert _rows(again) == rows
    for r in rows:
        assert (tmp_path / "out" / r["image"]).read_bytes() == (tmp_path / "out2" / r["image"]).read_bytes()

    strict = _rows(make_photo_crops(src, tmp_path / "out3", framings=1, size=32, min_side=30, max_outside=0.4))
    assert [r["species"] for r in strict] == ["dog"]  # the cat box lies 44 % outside


def test_framings_keep_the_keypoints_inside() -> None:
    rng = np.random.default_rng(0)
    pts = np.array([[38.0, 38.0], [61.0, 61.0]])  # spans 24 px = side / 2.5 of the [20, 20, 80, 80] box
    for f in framings_for_face((20, 20, 80, 80), pts, rng, n=50, scale=(0.6, 1.5), shift=0.2):
        assert f.side == pytest.approx(60 * f.scale)
        for x, y in pts + 0.5:
            assert f.left <= x <= f.left + f.side and f.top <= y <= f.top + f.side
    scales = [f.scale for f in framings_for_face((0, 0, 10, 10), None, rng, n=200, scale=(0.5, 2.0), shift=0.0)]
    assert 0.5 <= min(scales) and max(scales) <= 2.0 and np.median(scales) == pytest.approx(1.0, abs=0.2)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="annotations.json"):
        make_photo_crops(tmp_path, tmp_path / "out")
    src = _photos(tmp_path / "photos")
    with pytest.raises(InputError, match="differ"):
        make_photo_crops(src, src)
    with pytest.raises(InputError, match="passed the filters"):
        make_photo_crops(src, tmp_path / "out", min_side=1000)
    with pytest.raises(InputError, match="scale"):
        framings_for_face((0, 0, 1, 1), None, np.random.default_rng(0), n=1, scale=(2.0, 1.0))


def test_crops_are_read_by_real_face_folder_and_the_cli(tmp_path: Path) -> None:
    from dife.train.data import RealFaceFolder
    from dife.train.photo_crops import main

    src = _photos(tmp_path / "photos")
    assert main([str(src), str(tmp_path / "out"), "--framings", "2", "--size", "24", "--min-side", "30"]) == 0
    ds = RealFaceFolder(tmp_path / "out", index_file="index.csv", species="dog", size=16)
    assert len(ds) == 2 and ds.load(0).shape == (3, 16, 16)
    assert main([str(tmp_path), str(tmp_path / "x")]) == 2
