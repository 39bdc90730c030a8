"""Training speed and peak memory of the ``paper_human_dog`` recipe, with random teachers of the real shapes.

Run on a GPU (a few minutes)::

    python benchmarks/gpu_train_paper.py --steps 300 --warmup 100 --every 100 --precision bf16 \\
        --out benchmarks/results/gpu_train_paper.json

or the CPU smoke test that the tests run (tiny teachers and student, seconds)::

    python benchmarks/gpu_train_paper.py --tiny --device cpu --steps 4 --warmup 2 --every 2

The config is the shipped ``paper_human_dog`` (batch 12 in all, pseudo pairs on
48x48 maps, ...) with only the schedule shortened (``--steps``, ``--warmup``:
the steps before the pseudo pairs, ``--every``: their refresh period) and
validation off. The teachers have random weights but the published
architectures, so time and memory are those of a real run:

* human: StyleGAN2 FFHQ config-f (1024 px, w 512, 8 mapping layers, channels
  512 up to 64 px, then 256, 128, 64, 32; the rosinality layout, no conv clamp);
* dog: StyleGAN2-ADA AFHQ (512 px, channels ``min(32768 / res, 512)``, conv
  clamp 256);
* dense: DensePose CSE R50-FPN (``--cse r50``, the configs' teacher) or
  R101-FPN with the DeepLab head (``--cse r101dl``, the authors' evaluation
  CSE), 800 px input.

Random teachers make the pseudo-pair health check meaningless, so it only
warns here (``pseudo_pairs.on_failure=warn``); the fraction of pairs that
moved is reported anyway. Printed and written to ``--out`` (JSON): steps/s
before and after the pseudo pairs start, the time of each pseudo-pair
refresh, the peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the
process's peak resident set) and the memory the teachers and the student
take before training.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

GIB = 2**30

#: Channels per resolution of the published generators.
FFHQ_CONFIG_F = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
AFHQ_512_ADA = {r: min(32768 // r, 512) for r in (4, 8, 16, 32, 64, 128, 256, 512)}
#: Tiny stand-ins (64 px; layer 7 is 16 channels wide) for the CPU smoke test.
TINY = {4: 32, 8: 32, 16: 32, 32: 24, 64: 16}


def generator_configs(tiny: bool) -> dict[str, Any]:
    """``{species: (StyleGAN2Config, layout)}`` of the two teachers."""
    from dife.train.teachers.stylegan2 import StyleGAN2Config

    if tiny:
        return {
            "human": (StyleGAN2Config(64, 32, 32, 2, dict(TINY)), "rosinality"),
            "dog": (StyleGAN2Config(64, 32, 32, 2, dict(TINY), conv_clamp=256.0), "ada"),
        }
    return {
        "human": (StyleGAN2Config(1024, 512, 512, 8, dict(FFHQ_CONFIG_F)), "rosinality"),
        "dog": (StyleGAN2Config(512, 512, 512, 8, dict(AFHQ_512_ADA), conv_clamp=256.0), "ada"),
    }


def random_generator(config: Any, layout: str, seed: int, device: torch.device) -> Any:
    """A StyleGAN2 of ``config`` with N(0, 1) weights (the layers scale them at run time), small biases."""
    from dife.train.teachers.stylegan2 import StyleGAN2

    g = StyleGAN2(config, layout=layout)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in g.named_parameters():
            scale = 0.1 if name.endswith(("bias", "noise_strength")) else 1.0
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        for name, b in g.named_buffers():
            if name.endswith("noise_const"):
                b.copy_(torch.randn(b.shape, generator=gen))
    g = g.to(device)
    with torch.no_grad():
        g.mapping.w_avg.copy_(g.mean_latent(4096, seed=seed))
    return g.freeze()


def random_cse(kind: str, tiny: bool, device: torch.device) -> Any:
    """A DensePose CSE teacher with PyTorch's default (random) initialisation."""
    from dife.train.teachers.cse import CSEConfig, CSETeacher

    if tiny:
        head = {"head": "deeplab", "deeplab_nonlocal": False} if kind == "r101dl" else {}
        width = 64 if kind == "r101dl" else 16
        cfg = CSEConfig(
            blocks=(1, 1, 1, 1),
            stem_channels=8,
            width_per_group=4,
            res2_out_channels=16,
            fpn_channels=width,
            decoder_channels=width,
            decoder_out_channels=width,
            head_convs=2,
            head_channels=width,
            pooler_resolution=7,
            input_size=64,
            **head,
        )
    elif kind == "r101dl":
        cfg = CSEConfig(depth=101, head="deeplab")
    else:
        cfg = CSEConfig(depth=50)
    torch.manual_seed(0)
    return CSETeacher(cfg).to(device)


def train_config(args: argparse.Namespace, out: str) -> Any:
    from dife.train import load_config

    overrides: dict[str, Any] = {
        "output_dir": out,
        "device": args.device,
        "precision": args.precision,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "checkpoint_every": 10**9,
        "pseudo_pairs.every": args.every,
        "pseudo_pairs.on_failure": "warn",
        "validation.folder": "",
        "log.tensorboard": False,
        "log.progress": False,
        "log.image_every": 0,
    }
    if args.tiny:
        overrides.update(
            {
                "model.converter_dim": 16,
                "model.converter_hidden": 16,
                "model.planes_conv1": 16,
                "model.planes_block": 16,
                "model.planes_hg": 16,
                "model.num_blocks": 1,
                "model.depth": 3,
                "model.input_size": 32,
                "dense_teacher.image_size": 64,
                "pseudo_pairs.steps": 3,
            }
        )
    return load_config("paper_human_dog", {**overrides, **dict(kv.split("=", 1) for kv in args.set)})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory(device: torch.device, peak: bool) -> float:
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: KiB


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the teachers and the trainer, train ``args.steps`` steps, return the measurements."""
    from dife.train.trainer import Trainer

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gens = {
        name: random_generator(cfg, layout, seed, device)
        for seed, (name, (cfg, layout)) in enumerate(generator_configs(args.tiny).items())
    }
    cse = random_cse(args.cse, args.tiny, device)
    with tempfile.TemporaryDirectory() as out:
        cfg = train_config(args, out)
        trainer = Trainer(cfg, dense_teacher=cse, generators=gens)
        _sync(device)
        before = _memory(device, peak=False)
        refresh: list[float] = []
        moved: list[float] = []
        inner = trainer._refresh_pairs

        def timed_refresh(key: tuple[str, str]) -> dict[str, Any]:
            _sync(device)
            t = time.perf_counter()
            entry = inner(key)
            _sync(device)
            refresh.append(time.perf_counter() - t)
            moved.extend(trainer._pair_log.get("pairs_moved", [])[-1:])
            return entry

        trainer._refresh_pairs = timed_refresh  # type: ignore[method-assign]
        times: list[float] = []
        for _ in range(args.steps):
            _sync(device)
            t = time.perf_counter()
            log = trainer.train_step()
            _sync(device)
            times.append(time.perf_counter() - t)
            trainer.step += 1
            if not all(math.isfinite(v) for v in log.values()):
                raise RuntimeError(f"non-finite training log at step {trainer.step - 1}: {log}")
        peak = _memory(device, peak=True)

    warm, pairs = times[: args.warmup], times[args.warmup :]
    skip = min(2, len(warm) - 1) if len(warm) > 1 else 0  # first steps: allocation, cuDNN autotuning

    def rate(ts: list[float]) -> float | None:
        return len(ts) / sum(ts) if ts else None

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "precision": args.precision,
        "tiny": args.tiny,
        "cse": args.cse,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "pair_refresh_every": args.every,
        "steps_per_s_warmup": rate(warm[skip:]),
        "steps_per_s_with_pairs": rate(pairs),
        "steps_per_s_with_pairs_excluding_refresh": rate(pairs) and len(pairs) / max(sum(pairs) - sum(refresh), 1e-9),
        "pair_refresh_s": [round(r, 3) for r in refresh],
        "pairs_moved": sum(moved) / len(moved) if moved else None,
        "memory_before_training_gib": round(before, 3),
        "peak_memory_gib": round(peak, 3),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps in all")
    ap.add_argument("--warmup", type=int, default=100, help="steps before the pseudo pairs (warmup_steps)")
    ap.add_argument("--every", type=int, default=100, help="pseudo-pair refresh period (pseudo_pairs.every)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    ap.add_argument("--cse", default="r50", choices=("r50", "r101dl"), help="dense-teacher architecture")
    ap.add_argument("--tiny", action="store_true", help="tiny teachers and student (the CPU smoke test)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="further config overrides")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if not 0 <= args.warmup <= args.steps or args.steps < 1 or args.every < 1:
        ap.error("need steps >= 1, 0 <= warmup <= steps and every >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
