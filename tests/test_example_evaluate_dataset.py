"""examples/evaluate_dataset.py on tiny datasets written here, in two of the supported layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _face(path: Path, rng: np.random.Generator, size: int = 64) -> None:
    Image.fromarray(rng.integers(0, 255, (size, size, 3)).astype(np.uint8)).save(path)


def _faces_folder(root: Path) -> Path:
    """Two humans, two dogs, two cats with three image-side keypoints each."""
    root.mkdir()
    rng = np.random.default_rng(0)
    recs = []
    for species in ("human", "dog", "cat"):
        for i in range(2):
            name = f"{species}_{i}.png"
            _face(root / name, rng)
            dx = 2 * i
            kp = {"eye_left_img": [20 + dx, 24], "eye_right_img": [44 - dx, 24], "nose": [32, 40 + dx]}
            recs.append({"image": name, "species": species, "keypoints": kp})
    (root / "annotations.json").write_text(json.dumps(recs))
    return root


def _animalweb(root: Path) -> Path:
    """AnimalWeb layout: images with 9-point .pts files beside them."""
    (root / "felidae").mkdir(parents=True)
    (root / "canidae").mkdir(parents=True)
    rng = np.random.default_rng(1)
    nine = np.array([[40, 50], [55, 50], [75, 50], [90, 50], [65, 70], [50, 85], [80, 85], [65, 80], [65, 92]], float)
    for stem in ("felidae/cat_0001", "felidae/cat_0002", "canidae/dog_0001", "canidae/dog_0002"):
        _face(root / f"{stem}.jpg", rng, 130)
        body = "\n".join(f"{x:g} {y:g}" for x, y in nine + rng.uniform(-2, 2, nine.shape))
        (root / f"{stem}.pts").write_text(f"version: 1\nn_points: 9\n{{\n{body}\n}}\n")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model) -> Path:
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("model"))


def test_faces_folder(load_script, tmp_path, model_dir):
    mod = load_script("examples/evaluate_dataset.py")
    data = _faces_folder(tmp_path / "faces")
    out = tmp_path / "out"
    summary = mod.main(
        [
            "--data",
            str(data),
            "--model",
            str(model_dir),
            "--pairs",
            "2",
            "--bootstrap",
            "20",
            "--panels",
            "1",
            "--out",
            str(out),
        ]
    )
    assert summary["faces"] == 6 and summary["species"] == ["cat", "dog", "human"]
    assert summary["pairs"]["human->dog"] == 2 and summary["pairs"]["human->cat"] == 2
    errs = summary["err70"]["aligned"]
    assert set(errs) == {"dife", "identity"}
    # errors in pixels of a 70 x 70 image: non-negative, at most the diagonal
    assert all(0.0 <= e <= 70 * 2**0.5 for e in errs.values())
    # identity copies relative positions: the keypoints above differ by at most 4 px of 64 -> small error
    assert errs["identity"] < 10
    report = (out / "report.md").read_text()
    assert "| dife |" in report and "| identity |" in report and "70 x 70" in report
    assert json.loads((out / "results.json").read_text())
    assert sorted(p.name for p in (out / "panels").glob("aligned_dife_*.png"))


def test_animalweb_layout_without_results_json(load_script, tmp_path, model_dir):
    mod = load_script("examples/evaluate_dataset.py")
    data = _animalweb(tmp_path / "animalweb")
    out = tmp_path / "out"
    summary = mod.main(
        [
            "--data",
            str(data),
            "--format",
            "animalweb",
            "--model",
            str(model_dir),
            "--pairs",
            "2",
            "--bootstrap",
            "10",
            "--no-results-json",
            "--out",
            str(out),
        ]
    )
    assert summary["faces"] == 4 and summary["species"] == ["cat", "dog"]
    assert summary["pairs"]["dog->cat"] == 2 and summary["pairs"]["cat->dog"] == 2
    assert (out / "report.md").is_file() and not (out / "results.json").exists() and not (out / "panels").exists()
