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


# ------------------------------------------------------------ the authors' scoring
def _position_code_model(tiny_config, bright: bool):
    """A DIFE whose embedding ignores the image: a unit code of each pixel's position (so cosine
    nearest neighbours are the identity), and with ``bright`` one pixel (0, 0) of norm 100 that wins
    every raw dot product."""
    import math

    import torch

    from dife.modeling import DIFE

    class PositionCode(DIFE):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            b, s = x.shape[0], x.shape[-1]
            ys, xs = torch.meshgrid(torch.arange(s * 1.0), torch.arange(s * 1.0), indexing="ij")
            a = math.pi / (2 * s)  # angles below 90 degrees: every pair of codes has a positive dot product
            code = torch.zeros(self.config.embed_dim, s, s)
            code[:4] = torch.stack([(a * xs).cos(), (a * xs).sin(), (a * ys).cos(), (a * ys).sin()]) / math.sqrt(2)
            if bright:
                code[:, 0, 0] *= 100.0
            return code.expand(b, -1, -1, -1).to(x.dtype)

    return PositionCode(tiny_config).eval()


def _two_species_folder(tmp_path: Path) -> tuple[Path, dict[str, dict[str, list[float]]]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    kps = {
        "cat": {"a": [40.2, 60.7], "b": [200.0, 61.3], "c": [120.4, 150.6], "d": [128.0, 220.1]},
        "dog": {"d": [130.0, 210.0], "c": [118.0, 160.2], "a": [50.5, 70.0], "b": [190.9, 66.6]},
    }
    records = []
    for sp in kps:
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(tmp_path / f"{sp}.png")
        records.append({"image": f"{sp}.png", "species": sp, "keypoints": kps[sp]})
    (tmp_path / "annotations.json").write_text(json.dumps(records))
    return tmp_path, kps


def test_authors_scoring_rounds_uses_raw_dot_products_and_three_keypoints(tmp_path: Path, tiny_config) -> None:
    folder, kps = _two_species_folder(tmp_path)
    s, side = 96, 256.0
    ident = _position_code_model(tiny_config, bright=False)

    def expected(src: str, tgt: str, names: list[str], predict) -> float:
        errs = [np.hypot(*(predict(np.array(kps[src][n])) - np.array(kps[tgt][n]))) * SCALE / side for n in names]
        return float(np.mean(errs))

    # identity codes: the match is the source pixel, rounded on the 96 grid (x * 96 / 256, no half-pixel shift)
    res = keypoint_transfer_error(ident, folder, pairs=2, seed=0, scoring="authors")
    assert res.counts == {"cat->dog": 3, "dog->cat": 3}  # the first three of the source's order
    rounded = lambda p: np.round(p * s / side) * side / s  # noqa: E731
    assert res.per_pair["cat->dog"] == pytest.approx(expected("cat", "dog", ["a", "b", "c"], rounded))
    assert res.per_pair["dog->cat"] == pytest.approx(expected("dog", "cat", ["d", "c", "a"], rounded))
    # our scoring: every shared keypoint, pixel-centre convention, bilinear descriptor, cosine
    ours = keypoint_transfer_error(ident, folder, pairs=2, seed=0)
    assert ours.counts == {"cat->dog": 4, "dog->cat": 4}

    # a pixel of large norm wins every raw dot product (never a cosine nearest neighbour)
    bright = _position_code_model(tiny_config, bright=True)
    res = keypoint_transfer_error(bright, folder, pairs=2, seed=0, scoring="authors")
    corner = lambda p: np.zeros(2)  # noqa: E731 - the centre of pixel (0, 0) of the grid is at image (0, 0)
    assert res.per_pair["cat->dog"] == pytest.approx(expected("cat", "dog", ["a", "b", "c"], corner))
    # our scoring normalises the embeddings: the bright pixel changes nothing
    assert keypoint_transfer_error(bright, folder, pairs=2, seed=0).to_dict() == ours.to_dict()
    with pytest.raises(InputError, match="scoring"):
        keypoint_transfer_error(ident, folder, pairs=2, scoring="paper")


def test_authors_transfer_keypoints_and_the_eval_method(tmp_path: Path, tiny_config) -> None:
    """The same scoring from Python and through `dife eval`'s DIFEMethod (non-square images: the crop rule)."""
    from dife.errors import ShapeError
    from dife.eval.methods import DIFEMethod
    from dife.train.validate import authors_transfer_keypoints

    ident = _position_code_model(tiny_config, bright=False)
    rng = np.random.default_rng(1)
    src = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)  # centred square crop: x 50..250
    tgt = rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)
    pts = np.array([[60.3, 20.0], [149.6, 100.2], [249.0, 199.0]])
    # identity codes: the rounded grid pixel of the source, mapped into the target's crop
    g = np.clip(np.round((pts - [50.0, 0.0]) * 96 / 200), 0, 95)  # the last point rounds to 96: clamped
    expected = g * 120 / 96
    got = authors_transfer_keypoints(ident, [src], [tgt], pts[None])
    np.testing.assert_allclose(got[0], expected)
    method = DIFEMethod(ident, scoring="authors", name="ident")
    np.testing.assert_allclose(method.transfer(src, tgt, pts), expected)
    assert method.describe()["scoring"] == "authors" and "scoring" not in DIFEMethod(ident).describe()
    with pytest.raises(ShapeError, match=r"\(B, N, 2\)"):
        authors_transfer_keypoints(ident, [src], [tgt], pts)
    with pytest.raises(InputError, match="scoring"):
        DIFEMethod(ident, scoring="paper")


@pytest.mark.parametrize("scoring", ["dife", "authors"])
def test_validation_never_calls_the_face_finder(
    faces: Path, tiny_model, monkeypatch: pytest.MonkeyPatch, scoring: str
) -> None:
    """The labelled crops are used as given (the centred square), whatever face finder exists."""
    import dife.detection

    def no_finder(*a, **k):
        raise AssertionError("validation called the face finder")

    monkeypatch.setattr(dife.detection, "_resolve", no_finder)
    res = keypoint_transfer_error(tiny_model, faces, pairs=2, seed=0, species=["human", "dog"], scoring=scoring)
    assert np.isfinite(res.overall)
