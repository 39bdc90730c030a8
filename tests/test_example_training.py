"""The training tutorials' scripts: the paper recipe on the tiny StyleGAN2 fixtures, and photos only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_recipe_demo(load_script, tmp_path, fixtures_dir):
    from dife.modeling.dife import DIFE
    from dife.train import load_config

    mod = load_script("examples/train_paper_recipe.py")
    out, figures = tmp_path / "run", tmp_path / "figures"
    summary = mod.main(
        [
            "--demo",
            "--fixtures",
            str(fixtures_dir),
            "--steps",
            "3",
            "--out",
            str(out),
            "--figures",
            str(figures),
            "pseudo_pairs.steps=2",
            "warmup_steps=1",
        ]
    )
    assert summary["domains"] == ["human", "dog"] and summary["steps"] == 3 and summary["input_size"] == 32
    model = DIFE.from_pretrained(out)
    assert model.domains == ("human", "dog") and model.config.converter_dim == 16
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 32, 32)
    # the resolved config: the paper's loss weights, our demo sizes, the command-line overrides last
    cfg = load_config(out / "train_config.yaml")
    assert (cfg.loss.k1, cfg.loss.k2, cfg.loss.m1, cfg.loss.m2) == (0.01, 1.0, 0.01, 0.01)
    assert cfg.steps == 3 and cfg.warmup_steps == 1 and cfg.pseudo_pairs.steps == 2
    assert cfg.species["dog"].generator.checkpoint.endswith("stylegan2_ada_tiny64_state.pt")
    # a sample grid per image_every = steps: step 0 (and the last), copied as the figure
    assert summary["samples"][0] == "step_0000000.png"
    with Image.open(figures / "samples.png") as im:
        assert im.size[1] >= 2 * 32


class TinyTeacher(nn.Module):
    """A frozen random conv: (B, 3, H, W) in [-1, 1] -> (B, 8, H / 2, W / 2)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
        self.out_channels = 8
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


def _photos(folder: Path) -> Path:
    """Synthetic 'faces' named {species}_*.png: a bright disc on noise."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for s in ("cat", "dog"):
        for i in range(3):
            img = rng.integers(0, 80, (48, 48, 3)).astype(np.uint8)
            cx, cy = rng.integers(14, 34, 2)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 80] = rng.integers(150, 255, 3)
            Image.fromarray(img).save(folder / f"{s}_{i:05d}.png")
    return folder


TINY = [
    "model.planes_conv1=16",
    "model.planes_block=16",
    "model.planes_hg=16",
    "model.num_blocks=1",
    "model.depth=3",
    "model.input_size=32",
    "model.gn_groups=8",
    "dense_teacher.image_size=32",
    "loss.match_size=8",
    "batch_size=2",
    "warmup_steps=1",
    "validation.folder=",
    "log.tensorboard=false",
    "log.progress=false",
]


def test_train_from_photos(load_script, tmp_path):
    from dife.modeling.dife import DIFE
    from dife.train import load_config

    mod = load_script("examples/train_from_photos.py")
    out, figures = tmp_path / "run", tmp_path / "figures"
    teacher = TinyTeacher()
    summary = mod.main(
        [
            "--photos",
            str(_photos(tmp_path / "photos")),
            "--species",
            "cat",
            "dog",
            "--steps",
            "3",
            "--out",
            str(out),
            "--figures",
            str(figures),
            *TINY,
        ],
        dense_teacher=teacher,
    )
    assert summary["species"] == ["cat", "dog"] and summary["steps"] == 3
    model = DIFE.from_pretrained(out)
    assert model.config.embed_dim == 16 and model.config.input_size == 32
    cfg = load_config(out / "train_config.yaml")
    assert list(cfg.species) == ["cat", "dog"] and cfg.species["dog"].real.label == "dog"
    assert cfg.loss.warp_matching and cfg.loss.dve  # the dife_base recipe's losses
    assert len(summary["parts_found"]) == 2 and all(1 <= n <= 4 for n in summary["parts_found"])
    assert all(not p.requires_grad for p in teacher.parameters())
    with Image.open(figures / "warps.jpg") as im:
        assert im.size == (2 * (4 * 128 + 3 * 4), 256)


def test_warps_figure_only(load_script, tmp_path):
    mod = load_script("examples/train_from_photos.py")
    summary = mod.main(["--warps-only", "--figures", str(tmp_path)])
    assert summary == {"figure": str(tmp_path / "warps.jpg")}
    img = np.asarray(Image.open(tmp_path / "warps.jpg").convert("RGB")).astype(int)
    tiles = [img[:, i * 264 : i * 264 + 256] for i in range(4)]
    # the first tile is the unwarped face; every warp changes the picture
    assert all(np.abs(t - tiles[0]).mean() > 3 for t in tiles[1:])
