"""benchmarks/wild.py on tiny data written here (a tiny model, the square-finding face finder)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from wild_data import PLAN, make_square_finder


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/wild.py", "dife_bench_wild")


@pytest.fixture
def default_finder():
    import dife.detection as det

    det.set_default_detector(make_square_finder())
    yield
    det.set_default_detector(None)


def _faces_from(wild: Path, root: Path, size: int = 64) -> Path:
    """The face crops of the wild photos (the faces layout), keypoints mapped into them."""
    root.mkdir()
    recs = []
    for r in json.loads((wild / "annotations.json").read_text()):
        x0, y0, x1, y1 = r["face_box"]
        s = size / (x1 - x0)
        with Image.open(wild / r["image"]) as im:
            im.crop((round(x0), round(y0), round(x1), round(y1))).resize((size, size)).save(root / r["image"])
        kps = {k: [(x + 0.5 - x0) * s - 0.5, (y + 0.5 - y0) * s - 0.5] for k, (x, y) in r["keypoints"].items()}
        recs.append({"image": r["image"], "species": r["species"], "keypoints": kps})
    (root / "annotations.json").write_text(json.dumps(recs))
    return root


def test_wild_benchmark_end_to_end(bench, wild_dir, tmp_path, photo_model, default_finder, capsys):
    tiny_model = photo_model
    model_dir = tiny_model.save_pretrained(tmp_path / "model")
    faces = _faces_from(wild_dir, tmp_path / "faces")
    out = tmp_path / "out"
    argv = [str(wild_dir), "--faces", str(faces), "--model", str(model_dir), "--pairs", "1", "--bootstrap", "10"]
    report = bench.main([*argv, "--out", str(out), "--with-pairs"])
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"wild_dev.json", "wild_dev.md", "wild_dev.png", "wild_dev_chart.png"}
    assert json.loads((out / "wild_dev.json").read_text()) == report
    # the chart (no photos in it) can be redrawn from the JSON alone
    chart = (out / "wild_dev_chart.png").read_bytes()
    (out / "wild_dev_chart.png").unlink()
    bench.main(["--chart-from", str(out / "wild_dev.json"), "--out", str(out)])
    assert (out / "wild_dev_chart.png").read_bytes() == chart
    b = report["benchmark"]
    assert b["command"].startswith("python benchmarks/wild.py ") and b["detector"] == "dife-face-finder"
    # the square finder finds every painted face with its species
    det = report["wild"]["detection"]
    assert det["all"]["photos"] == len(PLAN) and det["all"]["found"] == 100.0 and det["all"]["species"] == 100.0
    assert len(det["photos"]) == len(PLAN)
    bar = {r["what"]: r for r in b["bar"]}
    assert bar["face found (best face IoU >= 0.5), % of photos"]["met"] is True
    assert len(bar) == 2 + 1 + 5
    # the six whole-photo rows, with their framings
    wild = report["wild"]["results"]["wild"]
    name = str(model_dir)
    assert list(wild) == [
        f"{name} [detect]",
        f"{name} [true box]",
        f"{name} [image]",
        "identity",
        "identity [true box]",
        "identity [detect]",
    ]
    assert wild[f"{name} [detect]"]["method"]["framing"] == "detect"
    assert wild[f"{name} [detect]"]["frames"]["both_right"] == 100.0
    assert wild[f"{name} [image]"]["frames"]["src_found"] is None
    assert wild["identity [true box]"]["groups"]["all"]["err70"]["mean"] < 1e-6
    assert wild["identity [detect]"]["groups"]["all"]["err70"]["mean"] < 2.0
    assert wild["identity"]["groups"]["all"]["err70"]["mean"] > 10.0
    # the face crops through the default path and with box="image"
    crops = report["faces"]["results"]
    assert list(crops) == ["aligned", "jittered"]
    assert list(crops["aligned"]) == [f"{name} [detect]", f"{name} [image]", "identity"]
    # identity on aligned crops of boxes that hold the points at fixed places: near exact
    assert crops["aligned"]["identity"]["groups"]["all"]["err70"]["mean"] < 1.0
    text = (out / "wild_dev.md").read_text()
    assert text in printed and "| face found (best face IoU >= 0.5), % of photos | >= 90 | 100.0 | yes |" in text
    assert "## Face finding" in text and "## Protocol: wild" in text and "## Crop protocol: jittered" in text
    with Image.open(out / "wild_dev.png") as im:
        assert im.size == (2 * 240 + 6, 5 * (240 + 14 + 4))
    # without the figure (it shows the data set's photos); the chart has no photos and stays
    bench.main(
        [str(wild_dir), "--model", str(model_dir), "--pairs", "1", "--bootstrap", "0", "--no-figure"]
        + ["--out", str(tmp_path / "nofig")]
    )
    assert {p.name for p in (tmp_path / "nofig").iterdir()} == {"wild_dev.json", "wild_dev.md", "wild_dev_chart.png"}
    assert "no figure" in (tmp_path / "nofig" / "wild_dev.md").read_text()


def test_figure_rows_pick_the_median_pair(bench):
    def pr(group, err, index):
        return SimpleNamespace(group=group, mean_err70=err, index=index)

    results = [pr("human->dog", e, i) for i, e in enumerate([5.0, 1.0, 9.0, 3.0])] + [pr("dog->cat", 2.0, 4)]
    res = SimpleNamespace(runs={"wild": {"m": SimpleNamespace(results=results)}})
    picked = bench.figure_rows(res, "m")
    assert [(p.group, p.mean_err70) for p in picked] == [("human->dog", 3.0), ("dog->cat", 2.0)]


def test_bar_rows(bench):
    detection = {"all": {"found": 91.0, "species": 80.0}}
    groups = {"all": {"err70": {"mean": 7.5}}, "human->dog": {"err70": {"mean": 12.0}}}
    rows = bench.bar_rows(detection, groups)
    assert [r[3] for r in rows] == [True, False, True, False]
    assert rows[3][0] == "mean error, human->dog"


def test_wild_benchmark_refuses_missing_inputs(bench, tmp_path, wild_dir, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main([str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.main([str(wild_dir), "--detector", str(tmp_path / "no-finder"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "face finder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
