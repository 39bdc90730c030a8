"""Finding faces and choosing the crop (dife.detection), and its use by embed / transfer."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import dife
from dife.detection import (
    Detection,
    NoFaceWarning,
    choose_faces,
    detect_faces,
    load_detector,
    save_detector,
)
from dife.errors import CheckpointError, InputError, ModelNotFoundError, UnknownDomainError
from dife.modeling.face_detector import FaceDetector, FaceDetectorConfig

pytestmark = pytest.mark.usefixtures("one_thread")


class Rigged(FaceDetector):
    """A detector whose output maps are fixed: one peak per (i, j, prob, side_px, species) on a 64-px view."""

    def __init__(self, peaks, refine=0):
        super().__init__(FaceDetectorConfig(input_size=64, feature_stages=(2, 4, 5), refine=refine))
        self.peaks = peaks
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        B, g = x.shape[0], 8
        K, P = len(self.config.species), len(self.config.keypoints)
        out = {
            "heat": torch.full((B, 1, g, g), -10.0),
            "species": torch.zeros(B, K, g, g),
            "box": torch.zeros(B, 3, g, g),  # offsets sigmoid(0) = 0.5: cell centres
            "keypoints": torch.zeros(B, 2 * P, g, g),
        }
        for i, j, p, side, sp in self.peaks:
            out["heat"][:, 0, i, j] = math.log(p / (1 - p))
            out["box"][:, 2, i, j] = math.log(side / 8)
            out["species"][:, self.config.species.index(sp), i, j] = 6.0
        return out


def _photo(w=200, h=100):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_detect_faces_maps_the_letterboxed_view_back_to_photo_pixels():
    det = Rigged([(1, 3, 0.9, 16.0, "dog")])
    faces = detect_faces(_photo(200, 100), model=det, refine=0)
    assert len(faces) == 1
    f = faces[0]
    # view: the photo's longer side (200) fills 64 px; centre (28, 12) and side 16 in view edge coordinates
    s = 200 / 64
    assert f.box == pytest.approx((28 * s - 8 * s, 12 * s - 8 * s, 28 * s + 8 * s, 12 * s + 8 * s))
    assert f.species == "dog" and f.score == pytest.approx(0.9, abs=1e-5)
    assert sum(f.species_scores.values()) == pytest.approx(1.0)
    assert f.side == pytest.approx(50.0)
    # the network saw the photo in the top-left of the square, black (normalised -1) below it
    view = det.seen[-1][0]
    assert view.shape == (3, 64, 64)
    assert torch.all(view[:, 40:, :] == -1.0) and view[:, :30, :].std() > 0.1
    # a batch gives one list per image; the species filter
    both = detect_faces([_photo(), _photo(80, 120)], model=det, refine=0)
    assert isinstance(both, list) and len(both) == 2 and all(len(x) == 1 for x in both)
    assert detect_faces(_photo(), model=det, species="cat", refine=0)[0].species == "cat"
    assert detect_faces(_photo(), model=det, min_score=0.95, refine=0) == []


def test_refinement_takes_the_face_at_the_centre_of_the_closer_view():
    class TwoPass(Rigged):
        def forward(self, x):
            # first call (whole photo): the face of the previous test; later calls: a face at the view's
            # centre cell, 10 % larger than the first box in view pixels, and a distractor in a corner
            self.peaks = (
                [(1, 3, 0.9, 16.0, "dog")]
                if not self.seen
                else [(3, 3, 0.4, 64 / 1.8 * 1.1, "cat"), (0, 0, 0.99, 8.0, "cow")]
            )
            return super().forward(x)

    from dife.detection import REFINE_ZOOM

    (first,) = detect_faces(_photo(200, 100), model=Rigged([(1, 3, 0.9, 16.0, "dog")]), refine=0)
    (f,) = detect_faces(_photo(200, 100), model=TwoPass([]), refine=1)
    cx, cy = (first.box[0] + first.box[2]) / 2, (first.box[1] + first.box[3]) / 2
    side = REFINE_ZOOM * first.side
    s = side / 64
    left, top = cx - side / 2, cy - side / 2
    expected_side = 64 / 1.8 * 1.1 * s
    ex, ey = left + 28 * s, top + 28 * s  # centre of cell (3, 3): 8 * (3 + 0.5) view pixels
    assert f.box == pytest.approx(
        (ex - expected_side / 2, ey - expected_side / 2, ex + expected_side / 2, ey + expected_side / 2)
    )
    # species of the closer look; score: geometric mean of the whole-photo and the closer look's
    assert f.species == "cat" and f.score == pytest.approx(math.sqrt(0.9 * 0.4), abs=1e-5)


class Closer(Rigged):
    """Whole photo: one face with score ``first``; closer looks: a face at the view's centre with score ``second``."""

    def __init__(self, first, second):
        super().__init__([], refine=1)
        self.first, self.second = first, second

    def forward(self, x):
        size = 64 / 1.8 * 1.0
        self.peaks = (
            [(1, 3, self.first, 16.0, "dog")]
            if not self.seen
            else ([(3, 3, self.second, size, "dog")] if self.second else [])
        )
        return super().forward(x)


def test_a_closer_look_rescues_a_low_whole_photo_score_and_drops_a_face_it_cannot_see():
    # 0.2 in the whole photo (under min_score 0.3), 0.8 on a closer look: sqrt(0.16) = 0.4, kept
    (f,) = detect_faces(_photo(200, 100), model=Closer(0.2, 0.8))
    assert f.score == pytest.approx(0.4, abs=1e-5)
    # without the closer look it is not a face; under the candidate floor it is never looked at
    assert detect_faces(_photo(200, 100), model=Closer(0.2, 0.8), refine=0) == []
    assert detect_faces(_photo(200, 100), model=Closer(0.04, 0.99)) == []
    # a face the closer look does not confirm is dropped, however high its first score
    assert detect_faces(_photo(200, 100), model=Closer(0.95, None)) == []
    # min_score applies to the final score
    assert detect_faces(_photo(200, 100), model=Closer(0.2, 0.8), min_score=0.45) == []


def test_detect_faces_drops_centres_in_the_letterbox_padding():
    det = Rigged([(6, 3, 0.9, 16.0, "cat")])  # centre at view y = 52 px, below a 200 x 100 photo (view y < 32)
    assert detect_faces(_photo(200, 100), model=det) == []


def test_detect_faces_bad_arguments():
    det = Rigged([])
    with pytest.raises(UnknownDomainError, match="unicorn"):
        detect_faces(_photo(), model=det, species="unicorn")
    with pytest.raises(InputError, match="min_score"):
        detect_faces(_photo(), model=det, min_score=2)
    with pytest.raises(InputError, match="batch_size"):
        detect_faces(_photo(), model=det, batch_size=0)
    with pytest.raises(InputError, match="detector"):
        detect_faces(_photo(), model=3)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    det = FaceDetector(FaceDetectorConfig(input_size=64, feature_stages=(2, 4, 5), extra={"licence": "test"})).eval()
    folder = save_detector(det, tmp_path / "ff")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    again = load_detector(folder)
    assert again.config == det.config
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = det(x), again(x)
    # stored as float16: outputs agree to float16 precision of the weights
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-2, rtol=2e-2), k
    assert not any(p.requires_grad for p in again.parameters())


def test_load_refuses_bad_folders(tmp_path):
    with pytest.raises(ModelNotFoundError):
        load_detector(tmp_path / "missing")
    det = FaceDetector(FaceDetectorConfig(input_size=64, feature_stages=(2, 4, 5)))
    folder = save_detector(det, tmp_path / "ff")
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_detector(folder)
    folder = save_detector(det, tmp_path / "nan")
    with torch.no_grad():
        det.heat.bias.fill_(float("nan"))
    save_detector(det, folder)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_detector(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["input_size"] = 100
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="input_size"):
        load_detector(folder)


def _img_t(w=200, h=100):
    return torch.from_numpy(_photo(w, h)).permute(2, 0, 1).float() / 255


def test_choose_faces_rules():
    det = Rigged([(1, 3, 0.9, 16.0, "dog"), (1, 6, 0.7, 16.0, "human")])
    img = _img_t()
    s = 200 / 64
    dog_box = (20 * s, 4 * s, 36 * s, 20 * s)
    # no points: the best-scoring face; given boxes and "image" untouched
    boxes, faces = choose_faces([img, img, img], [None, (1.0, 2.0, 50.0, 60.0), "image"], detector=det)
    assert boxes[0] == pytest.approx(dog_box) and faces[0].species == "dog"
    assert boxes[1] == (1.0, 2.0, 50.0, 60.0) and faces[1] is None
    assert boxes[2] is None and faces[2] is None
    # points inside the second face pick it even though it scores lower
    human_pts = np.array([[52 * s - 0.5, 12 * s - 0.5]])
    boxes, faces = choose_faces([img], [None], [human_pts], detector=det)
    assert faces[0].species == "human"
    # points held by no face: a warning and the centred square
    with pytest.warns(NoFaceWarning, match="holds the given points"):
        boxes, faces = choose_faces([img], [None], [np.array([[1.0, 95.0]])], detector=det)
    assert boxes == [None] and faces == [None]
    with pytest.warns(NoFaceWarning, match="no face found"):
        boxes, faces = choose_faces([img], [None], detector=Rigged([]))
    assert boxes == [None] and faces == [None]


def test_embed_and_transfer_report_the_faces(tiny_model):
    det = Rigged([(1, 3, 0.9, 16.0, "dog")])
    img = _photo()
    emb = dife.embed(img, model=tiny_model, detector=det)
    assert emb.faces[0] is not None and emb.faces[0].species == "dog"
    t = emb.transforms[0]
    assert (t.left, t.top, t.side) == pytest.approx((20 * 200 / 64, 4 * 200 / 64, 50.0))
    centred = dife.embed(img, model=tiny_model, box="image")
    assert centred.faces == [None] and centred.transforms[0].side == 100
    old = dife.embed(img, model=tiny_model, box=(0, 0, 100, 100), detector=det)
    assert old.faces == [None]
    pts = np.array([[80.0, 35.0]])
    out, scores = dife.transfer_keypoints(img, img, pts, model=tiny_model, detector=det, return_scores=True)
    assert isinstance(scores.src_face, Detection) and isinstance(scores.tgt_face, Detection)
    assert out.shape == (1, 2)
    dense = dife.transfer_dense(img, img, model=tiny_model, detector=det, stride=8)
    assert dense.src_face is not None and dense.tgt_face is not None


def test_embed_without_a_face_warns_and_uses_the_centred_square(tiny_model):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        emb = dife.embed(_photo(), model=tiny_model, detector=Rigged([]))
    assert any(issubclass(x.category, NoFaceWarning) for x in w)
    assert emb.faces == [None] and emb.transforms[0].side == 100


def test_detection_helpers():
    d = Detection((10.0, 20.0, 30.0, 40.0), 0.5, "cat", {"cat": 1.0}, {"nose": (20.0, 30.0)})
    assert d.contains(np.array([[10.0, 20.0], [29.0, 39.0]]))
    assert not d.contains(np.array([[9.0, 20.0]]))
    assert d.to_dict()["box"] == [10.0, 20.0, 30.0, 40.0]
    assert "cat face" in str(d)


def test_images_at_the_model_input_size_are_face_crops_already(tiny_model):
    """With no box, an image no larger than the model's input is embedded whole, without the face finder."""
    det = Rigged([(1, 3, 0.9, 16.0, "dog")])
    size = tiny_model.config.input_size
    small = np.random.default_rng(1).integers(0, 256, (size, size - 10, 3), dtype=np.uint8)
    emb = dife.embed(small, model=tiny_model, detector=det)
    assert det.seen == [] and emb.faces == [None]
    assert emb.transforms[0].side == size - 10  # the centred square
    big = np.random.default_rng(1).integers(0, 256, (size + 1, size + 1, 3), dtype=np.uint8)
    assert dife.embed(big, model=tiny_model, detector=det).faces[0] is not None and len(det.seen) == 1
