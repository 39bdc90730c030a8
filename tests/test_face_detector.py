"""The face finder network: config, decoding geometry (dife.modeling.face_detector)."""

from __future__ import annotations

import math

import pytest
import torch

from dife.errors import CheckpointError, ShapeError
from dife.modeling.face_detector import FaceDetector, FaceDetectorConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _maps(det: FaceDetector, g: int, peaks: list[tuple[int, int, float, float, float, float, int]]) -> dict:
    """Output maps with given peaks: (i, j, heat prob, offset x, offset y, side in px, species)."""
    K, P = len(det.config.species), len(det.config.keypoints)
    out = {
        "heat": torch.full((1, 1, g, g), -10.0),
        "species": torch.zeros(1, K, g, g),
        "box": torch.zeros(1, 3, g, g),
        "keypoints": torch.zeros(1, 2 * P, g, g),
    }
    for i, j, p, ox, oy, side, sp in peaks:
        out["heat"][0, 0, i, j] = math.log(p / (1 - p))
        out["box"][0, 0, i, j] = math.log(ox / (1 - ox))
        out["box"][0, 1, i, j] = math.log(oy / (1 - oy))
        out["box"][0, 2, i, j] = math.log(side / det.stride)
        out["species"][0, sp, i, j] = 5.0
        out["keypoints"][0, 0:2, i, j] = torch.tensor([-0.2, -0.1])  # first landmark up-left of the centre
    return out


def test_decode_geometry_scores_and_species():
    det = FaceDetector(FaceDetectorConfig(input_size=64, feature_stages=(2, 4, 5)))
    assert det.stride == 8
    out = _maps(det, 8, [(2, 3, 0.9, 0.25, 0.5, 16.0, 2), (6, 1, 0.6, 0.5, 0.5, 8.0, 0)])
    (faces,) = det.decode(out)
    assert len(faces) == 2
    a, b = faces
    # centre = stride * (cell + offset); edges = centre -+ side / 2 (view edge coordinates)
    cx, cy = 8 * (3 + 0.25), 8 * (2 + 0.5)
    assert a.box == pytest.approx((cx - 8, cy - 8, cx + 8, cy + 8), abs=1e-4)
    assert a.score == pytest.approx(0.9, abs=1e-5)
    assert det.config.species[a.species] == "cat"
    assert float(a.species_probs.sum()) == pytest.approx(1.0)
    assert a.keypoints[0].tolist() == pytest.approx([cx - 0.2 * 16, cy - 0.1 * 16], abs=1e-4)
    assert b.score == pytest.approx(0.6, abs=1e-5) and det.config.species[b.species] == "human"
    # thresholds, max detections and the species mask
    assert len(det.decode(out, min_score=0.7)[0]) == 1
    assert len(det.decode(out, max_detections=1)[0]) == 1
    mask = torch.tensor([s == "dog" for s in det.config.species])
    assert {det.config.species[f.species] for f in det.decode(out, species_mask=mask)[0]} == {"dog"}


def test_decode_suppresses_overlaps_and_non_maxima():
    det = FaceDetector(FaceDetectorConfig(input_size=64, feature_stages=(2, 4, 5)))
    # two strong neighbouring cells (not a local max each) and two distinct overlapping peaks
    out = _maps(det, 8, [(4, 4, 0.9, 0.5, 0.5, 40.0, 1), (4, 5, 0.8, 0.5, 0.5, 40.0, 1), (1, 1, 0.5, 0.5, 0.5, 8.0, 1)])
    faces = det.decode(out)[0]
    assert [round(f.score, 2) for f in faces] == [0.9, 0.5]  # (4, 5) is no local maximum
    out = _maps(det, 8, [(2, 2, 0.9, 0.5, 0.5, 40.0, 1), (2, 4, 0.8, 0.5, 0.5, 40.0, 1)])
    assert len(det.decode(out, nms_iou=0.4)[0]) == 1
    assert len(det.decode(out, nms_iou=0.9)[0]) == 2


def test_forward_shapes_and_errors():
    det = FaceDetector(FaceDetectorConfig(input_size=64, feature_stages=(2, 4, 5))).eval()
    with torch.no_grad():
        out = det(torch.zeros(2, 3, 64, 96))
    assert out["heat"].shape == (2, 1, 8, 12)
    assert out["species"].shape == (2, 6, 8, 12)
    assert out["box"].shape == (2, 3, 8, 12)
    assert out["keypoints"].shape == (2, 10, 8, 12)
    with pytest.raises(ShapeError, match="divisible by 32"):
        det(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ShapeError):
        det(torch.zeros(3, 64, 64))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_size", 100),
        ("input_size", "320"),
        ("input_size", True),
        ("species", "dog"),
        ("species", ["dog", "dog"]),
        ("feature_stages", [2, 5, 4]),
        ("feature_stages", [0, 2]),
        ("backbone_stages", 9),
        ("mean", ["a", "b", "c"]),
        ("std", [0.5, 0.0, 0.5]),
        ("min_score", 1.5),
        ("nms_iou", float("nan")),
        ("max_detections", 0),
        ("extra", 5),
    ],
)
def test_config_rejects_bad_values(field, value):
    d = FaceDetectorConfig().to_dict()
    d[field] = value
    with pytest.raises(CheckpointError, match=field):
        FaceDetectorConfig.from_dict(d)


def test_config_round_trip_and_unknown_keys():
    c = FaceDetectorConfig(input_size=256, species=("dog", "cat"), extra={"note": 1})
    again = FaceDetectorConfig.from_dict(c.to_dict())
    assert again == c and again.stride == 16
    with pytest.raises(CheckpointError, match="unknown face detector config keys"):
        FaceDetectorConfig.from_dict({**c.to_dict(), "depth": 3})
    with pytest.raises(CheckpointError):
        FaceDetectorConfig.from_dict([1, 2])
