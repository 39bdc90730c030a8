"""The ``wild`` protocol: whole photos with face boxes, the framings of the methods, and ``dife eval`` on them.

The photos come from ``wild_data.write_wild`` (a labelled face box painted in a
species colour over noise) and the face finder is ``wild_data.make_square_finder``
(it finds that square): so detection is right exactly where the test says.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from wild_data import PLAN, make_square_finder, write_wild

from dife.errors import InputError, ShapeError
from dife.eval import (
    DIFEMethod,
    IdentityMethod,
    PairResult,
    default_protocols,
    evaluate,
    evaluation_finder,
    frame_summary,
    make_view,
    read_dataset,
    reference_size,
    resolve_method,
    takes_framing,
)


# ------------------------------------------------------------------ readers and views
def test_reader_keeps_the_face_box(wild_dir, tmp_path):
    samples = read_dataset(wild_dir)
    assert len(samples) == len(PLAN)
    s = samples[0]
    assert s.box is None and s.face_box == (20.0, 10.0, 68.0, 58.0)
    face = s.load()
    assert face.face_box == s.face_box and face.image.shape == (80, 96, 3)
    assert default_protocols(samples) == ("wild",)
    # a faces folder without face boxes: None, and the crop protocols
    recs = json.loads((wild_dir / "annotations.json").read_text())
    for r in recs:
        del r["face_box"]
    (wild_dir / "annotations.json").write_text(json.dumps(recs))
    plain = read_dataset(wild_dir)
    assert all(p.face_box is None for p in plain) and default_protocols(plain) == ("aligned", "jittered")
    for bad in ([1, 2, 3], [10, 10, 5, 20], ["a", 1, 2, 3]):
        recs[0]["face_box"] = bad
        (wild_dir / "annotations.json").write_text(json.dumps(recs))
        with pytest.raises(InputError, match=r"annotations.json\[0\].face_box"):
            read_dataset(wild_dir)


def test_wild_view_and_reference_size(wild_dir):
    face = read_dataset(wild_dir)[3].load()  # dog, face box side 50 in a 100 x 100 photo
    assert make_view(face, "wild") is face
    assert reference_size(face, "wild") == (50.0, 50.0)
    assert reference_size(face, "aligned") == (100.0, 100.0)
    # jittered sub-crops carry the face box along
    v = make_view(face, "jittered", seed=3)
    x0, y0, x1, y1 = v.face_box
    assert x1 - x0 == pytest.approx(y1 - y0) and x1 - x0 > 50.0 * 0.99  # a sub-crop scales the box up
    bare = type(face)(face.id, face.species, face.image, face.keypoints)
    with pytest.raises(InputError, match="face box"):
        make_view(bare, "wild")


# ------------------------------------------------------------------ methods and framings
def test_identity_framings_are_exact_copies_of_relative_positions():
    src, tgt = np.zeros((80, 100, 3), np.uint8), np.zeros((120, 60, 3), np.uint8)
    a, b = (10.0, 20.0, 50.0, 60.0), (5.0, 40.0, 45.0, 80.0)
    pts = np.array([[29.5, 39.5], [10.0 - 0.5, 60.0 - 0.5]])  # the box centre and its bottom-left corner
    (t,) = IdentityMethod("true").transfer_framed([src], [tgt], [pts], src_boxes=[a], tgt_boxes=[b])
    np.testing.assert_allclose(t.points, [[24.5, 59.5], [4.5, 79.5]])
    assert (t.src_box, t.tgt_box, t.src_face) == (a, b, None)
    # whole-image framing: the old identity
    whole = IdentityMethod()
    assert whole.name == "identity" and whole.framing == "image"
    np.testing.assert_allclose(whole.transfer(src, tgt, pts[:1]), [[(30.0 * 0.6) - 0.5, (40.0 * 1.5) - 0.5]])
    with pytest.raises(InputError, match="true.*face box"):
        IdentityMethod("true").transfer_many([src], [tgt], [pts], src_boxes=[a])
    with pytest.raises(ShapeError, match="boxes"):
        IdentityMethod("true").transfer_many([src], [tgt], [pts], src_boxes=[a, a], tgt_boxes=[b])
    with pytest.raises(InputError, match="framing"):
        IdentityMethod("box")


def test_framings_of_dife_models(wild_dir, photo_model, square_finder):
    tiny_model = photo_model
    from dife.transfer import transfer_keypoints

    faces = [s.load() for s in read_dataset(wild_dir)[:4]]
    src, tgt = faces[0], faces[3]  # human -> dog
    pts = src.points(["eye_left_img", "eye_right_img", "nose"])
    det = DIFEMethod(tiny_model, detector=square_finder)
    assert (
        det.name == "dife [detect]" and det.describe()["framing"] == "detect" and det.describe()["detector"] == "given"
    )
    (t,) = det.transfer_framed([src.image], [tgt.image], [pts])
    # the default path of the library: no box, the same finder
    want, scores = transfer_keypoints(
        src.image, tgt.image, pts, model=tiny_model, detector=square_finder, return_scores=True
    )
    np.testing.assert_allclose(t.points, want, atol=1e-4)
    assert t.src_face.box == scores.src_face.box and t.tgt_face.box == scores.tgt_face.box
    assert t.src_face.species == "human" and t.tgt_face.species == "dog"
    assert t.tgt_box == pytest.approx(tgt.face_box, abs=1.5)  # the finder found the painted square
    # the true boxes, and the centred square
    true = DIFEMethod(tiny_model, framing="true")
    (u,) = true.transfer_framed([src.image], [tgt.image], [pts], src_boxes=[src.face_box], tgt_boxes=[tgt.face_box])
    want = transfer_keypoints(src.image, tgt.image, pts, model=tiny_model, src_box=src.face_box, tgt_box=tgt.face_box)
    np.testing.assert_allclose(u.points, want, atol=1e-4)
    assert true.name == "dife [true box]" and (u.src_box, u.tgt_box) == (src.face_box, tgt.face_box)
    with pytest.raises(InputError, match="face box"):
        true.transfer_many([src.image], [tgt.image], [pts])
    # a finder that finds nothing: the centred square, no face reported
    from dife.modeling.face_detector import FaceDetector, FaceDetectorConfig

    blind = FaceDetector(
        FaceDetectorConfig(input_size=64, backbone_stages=3, feature_stages=(2,), neck_dim=8, head_dim=8)
    )
    (v,) = DIFEMethod(tiny_model, detector=blind.eval()).transfer_framed([src.image], [tgt.image], [pts])
    assert v.src_face is None and v.src_box == (8.0, 0.0, 88.0, 80.0)  # centred square of the 96 x 80 photo


def test_resolve_method_framing(tiny_model, square_finder, tmp_path):
    assert takes_framing("identity") and takes_framing("dife-base") and not takes_framing("imagenet-nn")
    assert not takes_framing("timm:resnet18") and not takes_framing("cse")
    m = resolve_method("identity", framing="detect", detector=square_finder)
    assert m.name == "identity [detect]" and m.detector is evaluation_finder(square_finder)[0]
    folder = tiny_model.save_pretrained(tmp_path / "m")
    d = resolve_method(str(folder), framing="true")
    assert d.name == f"{folder} [true box]" and d.framing == "true"
    with pytest.raises(InputError, match="whole image"):
        resolve_method("imagenet-nn", framing="true")


def test_frame_summary_counts_right_frames():
    def pr(src_iou, tgt_iou, err, face=True):
        z = np.zeros((1, 2))
        return PairResult(
            "g", "a", "b", ("nose",), z, z, z, {"err70": np.array([err])},
            src_face={"box": [0, 0, 1, 1]} if face else None, src_iou=src_iou, tgt_iou=tgt_iou,
        )  # fmt: skip

    rs = [pr(0.9, 0.8, 2.0), pr(0.9, 0.2, 20.0, face=False), pr(0.1, 0.7, 10.0), pr(0.6, 0.5, 4.0)]
    f = frame_summary(rs, detects=True)
    assert f["pairs"] == 4 and f["src_right"] == 75.0 and f["tgt_right"] == 75.0 and f["both_right"] == 50.0
    assert f["err70_both_right"] == pytest.approx(3.0) and f["err70_other"] == pytest.approx(15.0)
    assert f["src_found"] == 75.0 and f["tgt_found"] == 0.0
    assert f["tgt_iou"] == pytest.approx(0.55)
    assert frame_summary(rs, detects=False)["src_found"] is None
    assert (
        frame_summary([PairResult("g", "a", "b", (), np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)), {})]) is None
    )


# ------------------------------------------------------------------ the protocol end to end
def test_wild_protocol_measures_errors_relative_to_the_face_box(wild_dir, square_finder):
    samples = read_dataset(wild_dir)
    methods = [IdentityMethod(), IdentityMethod("true"), IdentityMethod("detect", detector=square_finder)]
    res, views = evaluate(samples, methods, counts=4, n_boot=50)
    assert list(res.runs) == ["wild"] and res.config["protocols"] == ["wild"]
    runs = res.runs["wild"]
    # every photo has its points at the same place of its face box: copying inside the true box is exact
    assert runs["identity [true box]"].summary["all"].stats["err70"].mean < 1e-9
    assert runs["identity [true box]"].summary["all"].stats["pck05"].mean == 100.0
    # the finder finds the squares to within a pixel or so: nearly exact
    assert runs["identity [detect]"].summary["all"].stats["err70"].mean < 2.0
    assert runs["identity [detect]"].frames["both_right"] == 100.0
    # the whole photo is not the face: large errors; check one pair by hand (70 / face box side)
    whole = runs["identity"]
    assert whole.summary["all"].stats["err70"].mean > 10.0
    pr = whole.results[0]
    tgt = views("wild", res.pairs[0].tgt)
    side = tgt.face_box[2] - tgt.face_box[0]
    d = np.hypot(*(pr.pred - pr.gt).T)
    np.testing.assert_allclose(pr.errors["err70"], d * 70.0 / side)
    np.testing.assert_allclose(pr.errors["pck10"], np.where(d <= 0.1 * side, 100.0, 0.0))
    assert whole.frames["src_found"] is None and whole.frames["both_right"] < 100.0


def test_wild_protocol_needs_face_boxes(tmp_path):
    data = write_wild(tmp_path / "w", PLAN[:6])
    recs = json.loads((data / "annotations.json").read_text())
    del recs[2]["face_box"]
    (data / "annotations.json").write_text(json.dumps(recs))
    samples = read_dataset(data)
    assert default_protocols(samples) == ("aligned", "jittered")
    with pytest.raises(InputError, match="1 of 6 have none"):
        evaluate(samples, [IdentityMethod()], protocols=["wild"], counts=2, n_boot=0)


# ------------------------------------------------------------------ dife eval
@pytest.fixture
def default_finder():
    """The square finder as the default face finder (what `dife eval` uses without --detector)."""
    import dife.detection as det

    det.set_default_detector(make_square_finder())
    yield
    det.set_default_detector(None)


def test_dife_eval_wild_with_framings_and_detection(wild_dir, tmp_path, capsys, default_finder):
    from dife.cli import main

    out = tmp_path / "out"
    argv = ["eval", "--data", str(wild_dir), "--method", "identity", "--framing", "image", "true", "detect"]
    argv += ["--detection", "--pairs", "3", "--bootstrap", "20", "--panels", "1", "-o", str(out)]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out
    assert "## Face finding" in text and "## Protocol: wild" in text and "Crop protocol" not in text
    assert "| all | 11 | 100.0 [74.1, 100.0] | 100.0 [74.1, 100.0] | 100.0 |" in text
    for row in ("| identity |", "| identity [true box] |", "| identity [detect] |"):
        assert row in text
    assert "### Framing" in text
    res = json.loads((out / "results.json").read_text())
    assert res["detection"]["all"]["found"] == 100.0 and res["detection"]["all"]["species"] == 100.0
    assert len(res["detection"]["photos"]) == 11 and res["detection"]["photos"][0]["top_iou"] > 0.9
    wild = res["results"]["wild"]
    assert set(wild) == {"identity", "identity [true box]", "identity [detect]"}
    assert wild["identity [detect]"]["frames"]["tgt_found"] == 100.0
    p = wild["identity [detect]"]["pairs"][0]
    assert p["tgt_face"]["species"] in ("dog", "cat", "horse", "cow", "human") and p["tgt_iou"] > 0.9
    assert wild["identity"]["method"] == {"name": "identity", "framing": "image"}
    panels = sorted(x.name for x in (out / "panels").glob("*.png"))
    assert "wild_identity_detect_human_to_dog.png" in panels


def test_dife_eval_wild_with_a_dife_model_and_a_detector_folder(wild_dir, tmp_path, capsys, tiny_model):
    """A saved (random, untrained) finder finds nothing: every pair falls back to the centred square."""
    from dife.cli import main
    from dife.detection import save_detector
    from dife.modeling.face_detector import FaceDetector, FaceDetectorConfig

    det_dir = save_detector(
        FaceDetector(FaceDetectorConfig(input_size=64, backbone_stages=3, feature_stages=(2,), neck_dim=8, head_dim=8)),
        tmp_path / "finder",
    )
    model_dir = tiny_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["eval", "--data", str(wild_dir), "--method", str(model_dir), "--detector", str(det_dir)]
    argv += ["--detection", "--pairs", "1", "--bootstrap", "0", "--panels", "0", "-o", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["detection"]["all"]["found"] == 0.0 and res["detection"]["config"]["detector"] == str(det_dir)
    run = res["results"]["wild"][f"{model_dir} [detect]"]
    assert run["method"]["detector"] == str(det_dir)
    assert run["frames"]["src_found"] == 0.0 and run["frames"]["tgt_found"] == 0.0
    assert all("tgt_face" not in p for p in run["pairs"])
    capsys.readouterr()


def test_dife_eval_wild_errors_are_one_line(wild_dir, tmp_path, capsys):
    from dife.cli import main

    recs = json.loads((wild_dir / "annotations.json").read_text())
    for r in recs:
        del r["face_box"]
    (wild_dir / "annotations.json").write_text(json.dumps(recs))
    assert main(["eval", "--data", str(wild_dir), "--protocol", "wild", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "face box" in err[-1]
    assert main(["eval", "--data", str(wild_dir), "--detection", "-o", str(tmp_path / "o")]) == 2
    assert "whole photos with a labelled face box" in capsys.readouterr().err
