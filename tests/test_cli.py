"""The `dife` command line, end to end on a tiny saved model (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dife.cli import main, parse_box, parse_points, read_points_file

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "images" / "astronaut.jpg"
CHELSEA = ROOT / "examples" / "images" / "chelsea.jpg"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("model")
    tiny_model.save_pretrained(d)
    return d


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_parse_points_and_box():
    assert parse_points("1,2;3.5,4") == [[1.0, 2.0], [3.5, 4.0]]
    assert parse_box("0,0,10,20") == [0.0, 0.0, 10.0, 20.0]


@pytest.mark.parametrize("bad", ["1,2,3", "a,b", "", ";"])
def test_parse_points_rejects(bad, capsys, model_dir):
    code, _, err = run(["transfer", ASTRONAUT, CHELSEA, "--points", bad, "--model", model_dir], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("dife: error:")


def test_points_file_formats(tmp_path):
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"keypoints": {"a": [1, 2], "b": [3, 4]}}))
    assert read_points_file(str(j)) == ([[1.0, 2.0], [3.0, 4.0]], ["a", "b"])
    t = tmp_path / "p.txt"
    t.write_text("# x y\n1 2\n3,4\n")
    assert read_points_file(str(t)) == ([[1.0, 2.0], [3.0, 4.0]], None)


def test_transfer_json_and_picture(tmp_path, capsys, model_dir):
    out = tmp_path / "panel.png"
    code, stdout, err = run(
        [
            "transfer",
            ASTRONAUT,
            CHELSEA,
            "--points",
            "203,101;246,102",
            "--src-box",
            "163,60,283,180",
            "--json",
            "-o",
            out,
            "--model",
            model_dir,
        ],
        capsys,
    )
    assert code == 0, err
    rec = json.loads(stdout)
    assert [p["source"] for p in rec["points"]] == [[203.0, 101.0], [246.0, 102.0]]
    w, h = Image.open(CHELSEA).size
    for p in rec["points"]:
        x, y = p["target"]
        assert -0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5
        assert 0.0 <= p["confidence"] <= 1.0
    assert Image.open(out).size[1] >= h
    assert "weights:" in err


def test_transfer_many_targets_and_points_file(tmp_path, capsys, model_dir):
    code, stdout, err = run(
        [
            "transfer",
            ASTRONAUT,
            CHELSEA,
            ASTRONAUT,
            "--points-file",
            ROOT / "examples/images/astronaut.json",
            "--json",
            "--model",
            model_dir,
        ],
        capsys,
    )
    assert code == 0, err
    recs = json.loads(stdout)
    assert len(recs) == 2 and [p["name"] for p in recs[0]["points"]][:2] == ["eye_left_img", "eye_right_img"]


def test_transfer_embeds_the_source_once_and_boxes_every_target(capsys, model_dir, monkeypatch):
    import dife.transfer

    embedded = []
    real = dife.transfer.embed
    monkeypatch.setattr(dife.transfer, "embed", lambda images, **k: embedded.append(k.get("box")) or real(images, **k))
    argv = ["transfer", ASTRONAUT, CHELSEA, CHELSEA, ASTRONAUT, "--points", "203,101;246,102", "--json"]
    code, stdout, err = run(
        [*argv, "--src-box", "163,60,283,180", "--tgt-box", "60,20,250,210", "--model", model_dir], capsys
    )
    assert code == 0, err
    recs = json.loads(stdout)
    assert [r["target"] for r in recs] == [str(CHELSEA), str(CHELSEA), str(ASTRONAUT)]
    assert recs[0] == recs[1]  # the same target gives the same answer
    # one embed for the source (its box), then one per target (the --tgt-box each time)
    assert embedded == [(163.0, 60.0, 283.0, 180.0)] + [(60.0, 20.0, 250.0, 210.0)] * 3
    # the same as the library call with the box given to every target
    from dife.hub import from_pretrained
    from dife.transfer import transfer_keypoints

    want = transfer_keypoints(
        str(ASTRONAUT),
        [str(CHELSEA)],
        [[203, 101], [246, 102]],
        src_box=(163, 60, 283, 180),
        tgt_box=[(60, 20, 250, 210)],
        model=from_pretrained(model_dir),
    )
    got = np.array([p["target"] for p in recs[0]["points"]])
    np.testing.assert_allclose(got, want[0], atol=1e-3)


def test_transfer_names_the_target_that_cannot_be_read(tmp_path, capsys, model_dir):
    code, _, err = run(
        ["transfer", ASTRONAUT, CHELSEA, tmp_path / "gone.jpg", "--points", "1,1", "--model", model_dir], capsys
    )
    assert code == 2 and "tgt:" in err and "gone.jpg" in err and "Traceback" not in err


def test_transfer_point_outside_image_is_one_line(capsys, model_dir):
    code, _, err = run(["transfer", ASTRONAUT, CHELSEA, "--points", "9999,1", "--model", model_dir], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("dife: error:") and "outside" in lines[-1]
    assert "Traceback" not in err


def test_missing_image_is_one_line(tmp_path, capsys, model_dir):
    code, _, err = run(["transfer", tmp_path / "nope.jpg", CHELSEA, "--points", "1,1", "--model", model_dir], capsys)
    assert code == 2 and "nope.jpg" in err and "Traceback" not in err


def test_refuses_to_overwrite_input(tmp_path, capsys, model_dir):
    src = tmp_path / "src.png"
    Image.open(ASTRONAUT).save(src)
    before = src.read_bytes()
    code, _, err = run(["transfer", src, CHELSEA, "--points", "10,10", "-o", src, "--model", model_dir], capsys)
    assert code == 2 and "overwrite" in err
    assert src.read_bytes() == before


def test_embed_npz_and_rgb(tmp_path, capsys, model_dir):
    out = tmp_path / "f.npz"
    code, _, err = run(
        ["embed", ASTRONAUT, CHELSEA, "-o", out, "--rgb", tmp_path / "rgb", "--model", model_dir], capsys
    )
    assert code == 0, err
    data = np.load(out)
    assert data["features"].shape == (2, 16, 96, 96)
    np.testing.assert_allclose(np.linalg.norm(data["features"], axis=1), 1.0, atol=1e-4)
    assert data["image_size"].tolist() == [[512, 512], [451, 300]]
    assert sorted(p.name for p in (tmp_path / "rgb").iterdir()) == ["astronaut_embedding.png", "chelsea_embedding.png"]


def test_parse(tmp_path, capsys, model_dir):
    code, _, err = run(
        [
            "parse",
            ASTRONAUT,
            CHELSEA,
            "-o",
            tmp_path / "parts",
            "--parts",
            "4",
            "--save-parser",
            tmp_path / "parser.safetensors",
            "--model",
            model_dir,
        ],
        capsys,
    )
    assert code == 0, err
    assert Image.open(tmp_path / "parts" / "chelsea_parts.png").size == (451, 300)
    assert (tmp_path / "parser.safetensors").is_file()


def test_overlay_with_points(tmp_path, capsys):
    out = tmp_path / "o.png"
    code, _, err = run(
        [
            "overlay",
            ASTRONAUT,
            "--asset",
            "glasses",
            "--points-file",
            ROOT / "examples/images/astronaut.json",
            "-o",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    a = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(ASTRONAUT).convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() > 0  # something was drawn
    assert np.abs(a - b)[:40].max() == 0  # ...but not at the top of the photo


def test_models_lists_registry(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "dife-untrained" in out and "dife-base" in out


def test_convert_official_and_push(tmp_path, capsys, fixtures_dir, monkeypatch):
    outdir = tmp_path / "converted"
    code, out, err = run(["convert-official", fixtures_dir / "dife_official_tiny_state.pt", outdir], capsys)
    assert code == 0, err
    assert (outdir / "config.json").is_file() and (outdir / "model.safetensors").is_file()

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kw):
            calls["repo"] = repo_id
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, *, folder_path, repo_id, **kw):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            return f"https://huggingface.co/{repo_id}/commit/abc"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    code, out, err = run(["push", outdir, "someone/dife-test"], capsys)
    assert code == 0, err
    assert calls["repo"] == "someone/dife-test"
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"]


def test_no_command_prints_help(capsys):
    code, out, _ = run([], capsys)
    assert code == 2 and "transfer" in out


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "dife.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("dife ")
