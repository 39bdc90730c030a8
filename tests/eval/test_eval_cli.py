"""``dife eval`` end to end on a small faces-format folder (identity baseline, fast)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dife.cli import main


def _faces_folder(root: Path) -> Path:
    """A tiny faces folder: 4 humans (5 points), 4 dogs, 3 cats, 2 horses (3 points), 1 quokka."""
    rng = np.random.default_rng(0)
    recs = []
    counts = {"human": 4, "dog": 4, "cat": 3, "horse": 2, "quokka": 1}
    for sp, n in counts.items():
        for i in range(n):
            name = f"{sp}_{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / name)
            jit = rng.uniform(-3, 3, size=(5, 2))
            kps = {
                "eye_left_img": [15 + jit[0, 0], 18 + jit[0, 1]],
                "eye_right_img": [33 + jit[1, 0], 18 + jit[1, 1]],
                "nose": [24 + jit[2, 0], 28 + jit[2, 1]],
            }
            if sp == "human":
                kps["mouth_left_img"] = [17 + jit[3, 0], 36 + jit[3, 1]]
                kps["mouth_right_img"] = [31 + jit[4, 0], 36 + jit[4, 1]]
            recs.append({"image": name, "species": sp, "keypoints": kps})
    (root / "annotations.json").write_text(json.dumps(recs))
    return root


def test_eval_identity_end_to_end(tmp_path, capsys):
    (tmp_path / "faces").mkdir()
    data = _faces_folder(tmp_path / "faces")
    out = tmp_path / "out"
    code = main(
        ["eval", "--data", str(data), "--method", "identity", "--pairs", "6", "--bootstrap", "50", "-o", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out
    assert "## Crop protocol: aligned" in text and "## Crop protocol: jittered" in text
    assert "| method | human->dog | human->cat | dog->cat | cat->dog | human->livestock | intra-species | all |" in text
    assert text.count("| identity |") >= 8  # 4 metrics x 2 protocols (+ per keypoint tables)
    assert (out / "report.md").read_text() == text
    res = json.loads((out / "results.json").read_text())
    assert res["pair_counts"] == {
        "human->dog": 6,
        "human->cat": 6,
        "dog->cat": 6,
        "cat->dog": 6,
        "human->livestock": 6,
        "intra-species": 6,
    }
    assert all("quokka" not in p["src"] + p["tgt"] for p in res["pairs"])
    aligned = res["results"]["aligned"]["identity"]
    assert aligned["method"] == {"name": "identity", "framing": "image"}
    assert len(aligned["pairs"]) == 36
    err = aligned["groups"]["all"]["err70"]
    assert err["lo"] <= err["mean"] <= err["hi"] and err["n_pairs"] == 36
    # the identity baseline is exact relative-position copying: check one pair by hand
    p0 = aligned["pairs"][0]
    np.testing.assert_allclose(p0["pred"], p0["src_points"], atol=1e-3)  # same 48 x 48 size
    d = np.hypot(*(np.array(p0["pred"]) - np.array(p0["gt"])).T) * 70 / 48
    np.testing.assert_allclose(p0["err70"], d, atol=2e-3)
    # jittered crops are harder for identity than aligned ones
    jit = res["results"]["jittered"]["identity"]["groups"]["all"]["err70"]["mean"]
    assert jit > err["mean"]
    panels = sorted(p.name for p in (out / "panels").glob("*.png"))
    assert len(panels) == 12 and "aligned_identity_human_to_dog.png" in panels
    with Image.open(out / "panels" / "jittered_identity_intra-species.png") as im:
        assert im.width == 2 * 160 + 6 and im.height > 160


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
    data = _faces_folder(tmp_path)
    assert main(["eval", "--data", str(data), "--method", "cse", "-o", str(tmp_path / "o")]) == 2
    assert "weights" in capsys.readouterr().err
    try:
        import timm  # noqa: F401
    except ImportError:
        assert main(["eval", "--data", str(data), "--method", "imagenet-nn", "-o", str(tmp_path / "o")]) == 2
        assert "timm" in capsys.readouterr().err


@pytest.mark.shared_data
def test_eval_on_the_real_faces_folder(dev_faces_dir, tmp_path, capsys):
    code = main(
        ["eval", "--data", str(dev_faces_dir), "--protocol", "aligned", "--pairs", "10", "--bootstrap", "20"]
        + ["--panels", "0", "-o", str(tmp_path / "o")]
    )
    assert code == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    means = {g: v["err70"]["mean"] for g, v in res["results"]["aligned"]["identity"]["groups"].items()}
    # landmark-aligned crops: copying relative positions is already within ~4-12 px at 70 x 70
    assert all(3.0 < m < 12.0 for m in means.values()), means
    assert not (tmp_path / "o" / "panels").exists()
    capsys.readouterr()


@pytest.mark.parametrize("bad", [["--pairs", "-1"], ["--protocol", "rotated"]])
def test_eval_bad_options(tmp_path, capsys, bad):
    data = _faces_folder(tmp_path)
    with pytest.raises(SystemExit) if bad[0] == "--protocol" else contextlib.nullcontext():
        code = main(["eval", "--data", str(data), "-o", str(tmp_path / "o"), *bad])
        assert code == 2
    capsys.readouterr()
