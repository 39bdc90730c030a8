"""Cross-species keypoint-transfer validation (dife.train.validate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dife.errors import InputError, ModelNotFoundError, UnknownDomainError
from dife.train.validate import SCALE, keypoint_transfer_error, read_annotations

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces(faces_dir: Path) -> Path:
    """The made faces folder of conftest.py: 4 faces of each of 6 species, 256 x 256."""
    return faces_dir


def test_error_is_the_70px_scaled_distance(faces: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fake transfer that lands (3, 4) px off the truth in 256 px images, every error is 5 * 70 / 256."""
    import dife.transfer

    truth = {str(a.path): a.keypoints for a in read_annotations(faces)}
    names = ["eye_left_img", "eye_right_img", "nose"]  # dog and cat share these, sorted

    def fake(src, tgt, points, **kw):
        pts = np.asarray(points)
        assert pts.shape == (len(src), 3, 2) and len(tgt) == len(src)
        assert kw["model"] == "sentinel"
        return np.array([[truth[t][n] for n in names] for t in tgt]) + np.array([3.0, 4.0])

    monkeypatch.setattr(dife.transfer, "transfer_keypoints", fake)
    res = keypoint_transfer_error("sentinel", faces, pairs=6, seed=1, species=["dog", "cat"])
    assert set(res.per_pair) == {"dog->cat", "cat->dog"}
    assert res.counts == {"dog->cat": 9, "cat->dog": 9}  # 3 image pairs x 3 shared keypoints each
    assert res.overall == pytest.approx(5.0 * SCALE / 256.0)
    assert all(v == pytest.approx(5.0 * SCALE / 256.0) for v in res.per_pair.values())


def test_real_model_is_deterministic_and_keeps_its_mode(faces: Path, tiny_model) -> None:
    tiny_model.train()
    a = keypoint_transfer_error(tiny_model, faces, pairs=4, seed=0, species=["human", "dog"])
    assert tiny_model.training  # restored
    b = keypoint_transfer_error(tiny_model, faces, pairs=4, seed=0, species=["human", "dog"])
    assert a.to_dict() == b.to_dict()
    assert set(a.per_pair) == {"human->dog", "dog->human"} and a.n_pairs == 4
    assert 0.0 < a.overall < 70.0 * np.sqrt(2)
    assert a.overall == pytest.approx(np.mean(list(a.per_pair.values())))
    tiny_model.eval()


def test_all_species_by_default(faces: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dife.transfer

    monkeypatch.setattr(dife.transfer, "transfer_keypoints", lambda src, tgt, points, **kw: np.asarray(points))
    res = keypoint_transfer_error("m", faces, pairs=60, seed=0)
    have = {a.species for a in read_annotations(faces)}
    assert set(res.species) == have
    assert all(a != b for a, b in (k.split("->") for k in res.per_pair))
    assert len(res.per_pair) == min(60, len(have) * (len(have) - 1))


def test_errors(faces: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        keypoint_transfer_error("m", tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="annotations.json"):
        keypoint_transfer_error("m", tmp_path)
    with pytest.raises(UnknownDomainError, match=r"no images of species \['wolf'\].*human \(\d+\)"):
        keypoint_transfer_error("m", faces, species=["human", "wolf"])
    with pytest.raises(InputError, match="at least two species"):
        keypoint_transfer_error("m", faces, species=["human"])
    with pytest.raises(InputError, match="pairs must be a positive int"):
        keypoint_transfer_error("m", faces, pairs=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "annotations.json").write_text(json.dumps([{"image": "x.jpg", "species": "dog"}]))
    with pytest.raises(InputError, match="record 0.*needs 'image', 'species' and 'keypoints'"):
        keypoint_transfer_error("m", bad)
    (bad / "annotations.json").write_text(json.dumps([{"image": "x.jpg", "species": "dog", "keypoints": {}}]))
    with pytest.raises(InputError, match="image file not found"):
        read_annotations(bad)
