"""benchmarks/gpu_train_paper.py: the prepared GPU benchmark of the paper recipe, run tiny on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/gpu_train_paper.py", "dife_bench_gpu_train_paper")


@pytest.mark.parametrize("cse", ["r50", "r101dl"])
def test_tiny_cpu_run_reports_speed_memory_and_pair_refreshes(bench, tmp_path: Path, cse: str) -> None:
    out = tmp_path / "res.json"
    res = bench.main(
        ["--tiny", "--device", "cpu", "--steps", "4", "--warmup", "2", "--every", "2", "--cse", cse, "--out", str(out)]
    )
    assert json.loads(out.read_text()) == res
    assert res["steps"] == 4 and res["warmup_steps"] == 2 and res["tiny"] and res["cse"] == cse
    assert res["steps_per_s_warmup"] > 0 and res["steps_per_s_with_pairs"] > 0
    assert res["steps_per_s_with_pairs_excluding_refresh"] >= res["steps_per_s_with_pairs"]
    assert len(res["pair_refresh_s"]) == 4  # the 4 (source, target) keys of human + dog, refreshed at step 2
    assert res["pairs_moved"] is not None and 0.0 <= res["pairs_moved"] <= 1.0
    assert 0 < res["memory_before_training_gib"] <= res["peak_memory_gib"]
    assert res["peak_memory_kind"] == "process peak RSS"


def test_teachers_have_the_published_shapes(bench, fixtures_dir: Path) -> None:
    """The random generators are the real FFHQ config-f (1024 px) and AFHQ-ADA (512 px) architectures."""
    from dife.train.teachers.stylegan2 import StyleGAN2

    cfgs = bench.generator_configs(tiny=False)
    for species, manifest, wrap in (
        (
            "human",
            "manifest_rosinality_g1024.json",
            lambda sd: {"g_ema": sd, "latent_avg": torch.empty(512, device="meta")},
        ),
        ("dog", "manifest_nvlabs_ada_g512.json", lambda sd: {"G_ema": sd}),
    ):
        path = fixtures_dir / manifest
        if not path.is_file():
            pytest.skip(f"{path} not found")
        shapes = json.loads(path.read_text())
        meta = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
        real = StyleGAN2.from_checkpoint(wrap(meta), device="meta")
        assert real.config == cfgs[species][0], species
