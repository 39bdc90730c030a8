"""Data-parallel training: two CPU processes (gloo) launched with torch.distributed.run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
ROSINALITY = FIXTURES / "stylegan2_rosinality_tiny64.pt"
ADA = FIXTURES / "stylegan2_ada_tiny64_state.pt"


def test_torchrun_two_cpu_processes(tmp_path: Path, tiny_cse_checkpoint: Path) -> None:
    if not torch.distributed.is_available():
        pytest.skip("this PyTorch build has no torch.distributed")
    out = tmp_path / "out"
    cfg = {
        "output_dir": str(out),
        "device": "cpu",
        "steps": 3,
        "warmup_steps": 1,
        "batch_size": 2,
        "species": {
            "human": {"generator": {"checkpoint": str(ROSINALITY)}},
            "dog": {"generator": {"checkpoint": str(ADA)}},
        },
        "model": {
            "converter_dim": 16,
            "converter_hidden": 16,
            "planes_conv1": 16,
            "planes_block": 16,
            "planes_hg": 16,
            "num_blocks": 1,
            "depth": 3,
            "input_size": 32,
        },
        "dense_teacher": {
            "name": "cse",
            "checkpoint": str(tiny_cse_checkpoint),
            "image_size": 64,
            "input_size": 64,
        },
        "pseudo_pairs": {"every": 10, "batch_size": 2, "per_step": 1, "steps": 2},
        "log": {"every": 1, "image_every": 2, "tensorboard": False, "progress": False},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "dife.cli",
        "train",
        str(path),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("trained model written") == 1  # rank 0 only

    state = torch.load(out / "last" / "training_state.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3 and state["world_size"] == 2 and len(state["ranks"]) == 2
    r0, r1 = (r["rng"]["generator"] for r in state["ranks"])
    assert not torch.equal(r0, r1)  # every process draws its own batches
    assert all(len(r["pairs"]) == 4 for r in state["ranks"])
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_0000000.png", "step_0000002.png"]

    from dife.modeling.dife import DIFE

    model = DIFE.from_pretrained(out)
    assert model.domains == ("human", "dog")
    saved = state["model"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
