"""dife.eval.detection: the face finder scored on whole photos (hand-made detections, then a real run)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from wild_data import PLAN, write_wild

from dife.detection import Detection
from dife.errors import InputError
from dife.eval import (
    PhotoDetections,
    average_precision,
    detection_report,
    evaluation_finder,
    read_dataset,
    score_detections,
    wilson_interval,
)


def _d(box, score, species):
    return Detection(tuple(float(v) for v in box), score, species)


BOX = (0.0, 0.0, 100.0, 100.0)


def test_average_precision_by_hand():
    assert average_precision([0.9, 0.8], [True, True], 2) == pytest.approx(100.0)
    # a false positive ranked first: precision 1/2 at full recall
    assert average_precision([0.9, 0.8], [False, True], 1) == pytest.approx(50.0)
    # half the faces never found: the curve stops at recall 1/2
    assert average_precision([0.9], [True], 2) == pytest.approx(50.0)
    assert average_precision([], [], 3) == 0.0
    assert math.isnan(average_precision([0.5], [False], 0))
    with pytest.raises(InputError):
        average_precision([0.5, 0.4], [True], 2)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((49.02, 94.33), abs=0.01)  # the textbook example for 8 / 10
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(100.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_score_detections_by_hand():
    photos = [
        # found, right species
        PhotoDetections("a", "dog", BOX, [_d(BOX, 0.9, "dog")]),
        # the best face is elsewhere: not found, but recalled by the second face
        PhotoDetections("b", "cat", BOX, [_d((200, 200, 300, 300), 0.8, "cat"), _d((5, 5, 100, 100), 0.5, "dog")]),
        # right place, score under min_score: neither found nor recalled; still ranked for the AP
        PhotoDetections("c", "cat", BOX, [_d(BOX, 0.2, "cat")]),
        # nothing
        PhotoDetections("d", "human", BOX, []),
        # found, wrong species; a duplicate of the face counts as a false positive
        PhotoDetections("e", "human", BOX, [_d((0, 0, 90, 90), 0.7, "dog"), _d((0, 0, 95, 95), 0.6, "human")]),
    ]
    per, overall, confusion = score_detections(photos, min_score=0.3, species_order=("human", "dog", "cat"))
    assert list(per) == ["human", "dog", "cat"]
    assert overall.photos == 5 and overall.n_found == 2
    assert overall.found == pytest.approx(40.0) and overall.recall == pytest.approx(60.0)
    assert overall.species == pytest.approx(50.0)
    assert overall.mean_iou == pytest.approx((1.0 + 0.0 + 0.0 + 0.0 + 0.81) / 5)
    assert overall.faces_per_photo == pytest.approx(5 / 5)
    # AP by hand: ranked .9 TP, .8 FP, .7 TP, .6 FP (duplicate), .5 TP, .2 TP over 5 faces
    tp = np.array([1, 0, 1, 0, 1, 1])
    rec = np.cumsum(tp) / 5
    prec = np.cumsum(tp) / np.arange(1, 7)
    env = np.maximum.accumulate(prec[::-1])[::-1]
    want = 100 * np.sum(np.diff(np.concatenate([[0], rec])) * env)
    assert overall.ap == pytest.approx(want)
    assert per["cat"].found == 0.0 and per["cat"].recall == 50.0 and math.isnan(per["cat"].species)
    assert per["dog"].found == 100.0 and per["dog"].species == 100.0 and per["dog"].ap == pytest.approx(100.0)
    assert confusion == {"human": {"dog": 1}, "dog": {"dog": 1}, "cat": {}}
    d = overall.to_dict()
    assert d["found"] == 40.0 and len(d["found_ci"]) == 2 and json.dumps(d)
    assert per["cat"].to_dict()["species"] is None


def test_detection_report_on_photos(tmp_path, square_finder):
    plan = list(PLAN)
    plan[1] = ("human", (80, 96), (8.0, 30.0, 40.0), None)  # not painted: missed
    plan[4] = ("dog", (128, 72), (70.0, 10.0, 52.0), "cat")  # painted as a cat: found, wrong species
    samples = read_dataset(write_wild(tmp_path / "w", plan))
    lines = []
    rep = detection_report(samples, square_finder, batch_size=4, progress=lines.append)
    assert rep.overall.photos == 11 and rep.overall.n_found == 10
    assert rep.overall.found == pytest.approx(100 * 10 / 11) and rep.overall.recall == rep.overall.found
    assert rep.overall.species == pytest.approx(90.0)
    assert rep.per_species["human"].found == pytest.approx(200 / 3)
    assert rep.per_species["dog"].species == pytest.approx(200 / 3)
    assert rep.confusion["dog"] == {"dog": 2, "cat": 1}
    assert rep.config == {"detector": "given", "min_score": 0.3, "ap_min_score": 0.05, "iou": 0.5}
    assert "found" in lines[-1]
    text = rep.markdown()
    assert "| human | 3 | 66.7 [" in text and "| all | 11 |" in text
    d = rep.to_dict()
    missed = next(p for p in d["photos"] if p["id"] == "human_0002.png")
    assert missed["top"] is None and missed["faces"] == 0 and missed["top_iou"] == 0.0
    assert json.loads(json.dumps(d))["all"]["n_found"] == 10
    # a stricter min_score drops every face of this finder (its scores are 0.98)
    strict = detection_report(samples, square_finder, min_score=0.99)
    assert strict.overall.found == 0.0 and strict.overall.ap > 90.0  # AP still ranks them


def test_detection_report_input_checks(tmp_path, wild_dir, square_finder):
    samples = read_dataset(wild_dir)
    with pytest.raises(InputError, match="no samples"):
        detection_report([], square_finder)
    with pytest.raises(InputError, match="labelled twice"):
        detection_report([samples[0], samples[0]], square_finder)
    with pytest.raises(InputError, match="min_score"):
        detection_report(samples[:1], square_finder, min_score=1.5)
    recs = json.loads((wild_dir / "annotations.json").read_text())
    del recs[0]["face_box"]
    (wild_dir / "annotations.json").write_text(json.dumps(recs))
    with pytest.raises(InputError, match="1 of 11"):
        detection_report(read_dataset(wild_dir), square_finder)


def test_evaluation_finder_runs_its_network_once_per_view(wild_dir, tmp_path):
    from wild_data import make_square_finder

    from dife.detection import detect_faces, save_detector

    base = make_square_finder()
    calls = []
    forward = type(base).forward

    def counting(self, x):
        calls.append(len(x))
        return forward(self, x)

    base.forward = counting.__get__(base)  # type: ignore[method-assign]
    finder, label = evaluation_finder(base)
    assert label == "given" and evaluation_finder(base)[0] is finder and finder is not base
    samples = read_dataset(wild_dir)
    photos = [s.load().image for s in samples[:4]]
    first = detect_faces(photos, model=finder)
    assert sum(calls) == 8  # four photos, then a closer look at each one's face
    again = detect_faces([photos[2], photos[0], photos[0]], model=finder)
    assert sum(calls) == 8  # nothing new to compute
    assert again[0] == first[2] and again[1] == first[0] == again[2]
    assert detect_faces(photos[:1], model=finder) == detect_faces(photos[:1], model=base)[:1]  # as the finder itself
    # a folder is loaded once per process
    folder = save_detector(make_square_finder(), tmp_path / "finder")
    a, label = evaluation_finder(str(folder))
    assert label == str(folder) and evaluation_finder(str(folder))[0] is a
    with pytest.raises(InputError, match="detector"):
        evaluation_finder(3)
