"""Training-step speed of `dife.train` on a tiny configuration.

Run: ``python benchmarks/train_speed.py [--steps 30] [--threads 1]``. Two
synthetic species from the tiny 64-px StyleGAN2 fixtures in ``tests/fixtures``
(one rosinality, one NVIDIA-ADA layout), a frozen one-conv dense teacher, a tiny
student (32 px input, 16-plane hourglass of depth 3), batch 2 per species,
pseudo pairs refreshed every 4 steps. Prints steps/s after two warm-up steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


class ConvTeacher(nn.Module):
    """A frozen 3 -> 16 conv with tanh: a stand-in dense teacher."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, channels, 5, padding=2)
        self.out_channels = channels
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))

    @staticmethod
    def resize_to(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from dife.train.teachers.stylegan2 import StyleGAN2
    from dife.train.trainer import Trainer

    ros, ada = FIXTURES / "stylegan2_rosinality_tiny64.pt", FIXTURES / "stylegan2_ada_tiny64_state.pt"
    gens = {"human": StyleGAN2.load(ros), "dog": StyleGAN2.load(ada)}
    with tempfile.TemporaryDirectory() as out:
        cfg = {
            "output_dir": out,
            "device": "cpu",
            "steps": args.steps + 2,
            "warmup_steps": 1,
            "batch_size": 2,
            "checkpoint_every": 10_000,
            "species": {
                "human": {"generator": {"checkpoint": str(ros)}},
                "dog": {"generator": {"checkpoint": str(ada)}},
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
            "dense_teacher": {"name": "cse", "image_size": 64},
            "pseudo_pairs": {"every": 4, "batch_size": 2, "per_step": 2, "steps": 3},
            "log": {"every": 1, "image_every": 0, "tensorboard": False, "progress": False},
        }
        trainer = Trainer(cfg, dense_teacher=ConvTeacher(), generators=gens)
        for _ in range(2):
            trainer.train_step()
        t = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        dt = time.perf_counter() - t
    print(
        f"tiny config, CPU, {args.threads} thread(s): {args.steps / dt:.2f} steps/s ({dt / args.steps * 1000:.0f} ms/step)"
    )


if __name__ == "__main__":
    main()
