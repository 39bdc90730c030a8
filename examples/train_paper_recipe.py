"""Train DIFE with the paper's recipe: one StyleGAN2 per species plus a dense teacher (DensePose CSE).

Run (real teachers; a GPU is strongly advised)::

    python examples/train_paper_recipe.py --config paper_human_dog \\
        --generator human=checkpoints/stylegan2-ffhq-config-f.pt \\
        --generator dog=checkpoints/afhqdog.pkl \\
        --dense-teacher checkpoints/densepose_rcnn_R_50_FPN_soft_animals_I0_finetune_16k.pkl \\
        --out runs/paper_human_dog [key=value ...]

or a demo that runs in about a minute on a CPU, with the tiny random
StyleGAN2 fixtures of the repository's ``tests/fixtures`` (no dense teacher, a tiny student)::

    python examples/train_paper_recipe.py --demo --figures docs/images/train_paper_recipe

``--config`` is a shipped config name (``paper_human_dog``, ``paper_human_cat``,
``paper_dog_cat``, ``paper_human_dog_cat``) or a YAML file; trailing
``key=value`` arguments override any of its keys (``steps=2000``,
``optim.lr=3e-4``, ``pseudo_pairs.every=250``...). The output folder is a
``save_pretrained`` folder: ``dife.DIFE.from_pretrained(out)`` loads the model.
With ``--figures DIR`` the last sample grid the trainer wrote (one row per
species: the generated image, the teacher map and the student's embedding;
then the pseudo pairs) is copied to ``DIR/samples.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import dife
from dife.train import load_config, train

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"  # the tiny StyleGAN2 fixtures of the test suite
DEFAULT_FIGURES = HERE.parent / "docs" / "images" / "train_paper_recipe"
#: Files this script writes into ``--figures``.
FIGURES = ("samples.png",)


def demo_overrides(fixtures: Path) -> dict:
    """Overrides that turn a paper config into a one-minute CPU run on the tiny StyleGAN2 fixtures.

    The fixtures are random 64 px generators whose "layer 7" has 16 channels, so
    the converters are 16 wide; without a DensePose checkpoint the dense teacher
    is off (``L_K1`` is skipped) and the student is tiny.
    """
    return {
        "species": {
            "human": {"generator": {"checkpoint": str(fixtures / "stylegan2_rosinality_tiny64.pt")}},
            "dog": {"generator": {"checkpoint": str(fixtures / "stylegan2_ada_tiny64_state.pt")}},
        },
        "device": "cpu",
        "steps": 20,
        "warmup_steps": 5,
        "batch_size": 2,
        "checkpoint_every": 1000,
        "model.converter_dim": 16,
        "model.converter_hidden": 16,
        "model.planes_conv1": 16,
        "model.planes_block": 16,
        "model.planes_hg": 16,
        "model.num_blocks": 1,
        "model.depth": 3,
        "model.input_size": 32,
        "dense_teacher.name": "none",
        "pseudo_pairs.every": 10,
        "pseudo_pairs.batch_size": 2,
        "pseudo_pairs.per_step": 2,
        "pseudo_pairs.steps": 5,
        "validation.folder": "",
        "log.every": 5,
        "log.tensorboard": False,
        "log.progress": False,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper_human_dog", help="shipped config name or YAML file")
    ap.add_argument("--generator", action="append", default=[], metavar="SPECIES=PATH", help="StyleGAN2 checkpoint")
    ap.add_argument("--dense-teacher", default=None, help="DensePose CSE checkpoint (.pkl / .pth)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the config's)")
    ap.add_argument("--out", default=None, help="output folder (default: the config's output_dir)")
    ap.add_argument("--figures", default=None, help="copy the last sample grid to FIGURES/samples.png")
    ap.add_argument("--overwrite", action="store_true", help="start afresh over a previous run in --out")
    ap.add_argument("--demo", action="store_true", help="tiny run on the tests/fixtures StyleGAN2s")
    ap.add_argument("--fixtures", default=str(FIXTURES), help="folder of the tiny StyleGAN2 fixtures (--demo)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = ap.parse_args(argv)

    # 1. The config: a shipped recipe, then our options, then the user's key=value overrides.
    config = load_config(args.config)
    if args.demo:
        config = load_config(config, demo_overrides(Path(args.fixtures)))
    mine: dict = {}
    for item in args.generator:
        species, _, path = item.partition("=")
        mine[f"species.{species}.generator.checkpoint"] = path
    if args.dense_teacher:
        mine["dense_teacher.checkpoint"] = args.dense_teacher
    if args.steps is not None:
        mine["steps"] = args.steps
    if args.out:
        mine["output_dir"] = args.out
    if args.figures:
        mine["log.image_every"] = config.steps if args.steps is None else args.steps  # at least one grid
    config = load_config(load_config(config, mine), args.overrides)
    print(f"training {list(config.species)} for {config.steps} steps into {config.output_dir}")

    # 2. Train. The result is a save_pretrained folder (the best validated model, or the last one).
    out = train(config, overwrite=args.overwrite)

    # 3. Use it like any other model.
    model = dife.DIFE.from_pretrained(out)
    print(f"{out}: {model.domains}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    samples = sorted((out / "samples").glob("step_*.png"))
    if args.figures and samples:
        figures = Path(args.figures)
        figures.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(samples[-1], figures / "samples.png")
    summary = {
        "output_dir": str(out),
        "domains": list(model.domains),
        "steps": config.steps,
        "input_size": model.config.input_size,
        "samples": [p.name for p in samples],
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
