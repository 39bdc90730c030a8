"""Pseudo pairs by latent space exploration (paper eq. 3), with a health check.

For a source image ``x^d`` of species ``d`` and a target species ``d'`` with
a frozen StyleGAN2 teacher ``G^{d'}``, DIFE finds the latent whose layer-7
feature map best matches the student's converted embedding of ``x^d``:

    w^{d'} = argmin_w  ||F^{d'}(w) - Ψ^{d'}(Φ(x^d))||_2  +  λ ||w - w̄||_2

The image ``G^{d'}(w^{d'})`` then shows species ``d'`` in the pose of
``x^d``: with ``d' = d`` it is an *intra-species* pair (another individual in
the same pose), otherwise an *inter-species* pair. The pairs are targets of
the semantic matching losses ``L_M1`` / ``L_M2``.

Conventions (the defaults are the paper's / the authors'):

* **Start points** (``start``): ``"sample"`` (default) starts every item from
  its own random latent of the target generator, truncated towards ``w̄``
  with ``start_truncation`` (0.7): ``w̄ + 0.7 (mapping(z) - w̄)``, as the
  authors' training script does (it starts from the truncated styles of the
  current batch). ``"mean"`` starts
  from ``w̄`` (the mean of 4096 mapped samples); a (B, w_dim) tensor gives
  the starts explicitly.
* **Data term** (``data_term``): ``"l2"`` (default) is eq. 3 as written, the
  Euclidean norm of the whole difference map
  ``||F - T||_2 = sqrt(sum_{c,p} (F - T)^2)`` (``T`` the student map resized
  to the feature grid, bilinear, ``align_corners=False``); ``"pixel_mean"``
  is the per-pixel norm averaged over the pixels, the distillation loss of
  [dife.train.losses][dife.train.losses] (``sqrt(R^2)`` = 64 times smaller for a 64 x 64
  map, so the prior then dominates: see below).
* **Prior** (``prior``): ``λ ||w - w̄||_2`` (not squared, eq. 3);
  ``prior="squared"`` uses its square. In ``w+`` space it is the mean over
  the ``num_ws`` layer latents of their distance to ``w̄``.
* The batch is optimised jointly but every item has its own latent and its
  own objective; the latent returned for each item is the best one seen
  (lowest objective), so ``final_loss <= initial_loss`` item by item.
* Nothing flows back into the student (its outputs are computed under
  ``torch.no_grad`` in eval mode) or the teacher (gradients are taken with
  `torch.autograd.grad` with respect to the latent only).

**Why the scales matter.** The non-squared prior is not smooth at ``w̄``:
wherever the data term's gradient is shorter than ``λ``, ``w̄`` is a local
minimiser. With the per-pixel mean data term, ``λ = 1`` and a start at
``w̄`` the search can therefore return ``w̄`` for every item -- every "pair"
is then the same mean image, and the matching losses learn correspondences
that do not exist. The defaults avoid it twice (the eq.-3 data term is
``sqrt(R^2)`` times larger; the starts are not at ``w̄``), and the **health
check** makes sure it never goes unnoticed:

* after the search, each item's relative loss drop, latent step
  ``||w - w_start||``, distance ``||w - w̄||`` and image change
  (mean absolute difference of the start and final images, in [-1, 1] units)
  are measured ([SearchHealth][dife.train.pseudo_pairs.SearchHealth], also logged);
* an item whose loss dropped by less than ``min_loss_drop`` (relative), whose
  image changed by less than ``min_image_change``, or that ended at ``w̄``
  "did not move"; it is searched again from a new sampled start, up to
  ``retries`` times;
* items still stuck then raise [PseudoPairError][dife.train.pseudo_pairs.PseudoPairError] naming them and
  their numbers (``on_failure="warn"`` logs a warning instead and returns
  them, flagged in ``SearchHealth.moved``).

Items whose start already meets ``target_loss`` count as healthy; with
``steps=0`` (no search) or ``check=False`` nothing is checked.

Memory: during the optimisation only the synthesis blocks up to the target
layer run (``teacher.features`` stops early); the start and final images are
synthesised once each, at the end, without gradients.

Example:
    >>> g = StyleGAN2.load("afhqdog.pkl")  # doctest: +SKIP
    >>> pairs = synthesize_pseudo_pairs(model, human_batch, g, "dog", source_domain="human")  # doctest: +SKIP
    >>> pairs.images.shape, pairs.health.summary()["moved"]  # doctest: +SKIP
    (torch.Size([12, 3, 96, 96]), 1.0)
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from dife.checks import check_device, check_int, is_int
from dife.errors import DIFEError, InputError, ShapeError
from dife.train.teachers.base import GeneratorTeacher

if TYPE_CHECKING:
    from dife.modeling.dife import DIFE

__all__ = [
    "PseudoPairs",
    "SearchHealth",
    "PseudoPairError",
    "PseudoPairCache",
    "synthesize_pseudo_pairs",
    "pseudo_pair_objective",
    "DEFAULT_LR",
    "MEAN_LATENT_SAMPLES",
    "START_TRUNCATION",
]

logger = logging.getLogger("dife.train.pseudo_pairs")

#: Default Adam learning rate of the latent. The authors do not state one;
#: 0.05 moves each coordinate of ``w`` (whose per-coordinate spread about
#: ``w̄`` is of order 1 for the published generators) by up to ~0.05 per
#: step, i.e. across its typical range within the default 100 steps, without
#: the overshoot of the 0.1 used by StyleGAN2's image projector (which also
#: rescales the step by the latent's spread and decays it). Adam's step does
#: not depend on the scale of the objective, so the choice of data term does
#: not change it.
DEFAULT_LR: float = 0.05

#: Samples in the mean latent ``w̄`` of the paper (seed 0).
MEAN_LATENT_SAMPLES: int = 4096

#: Truncation psi of the sampled start latents (the paper's sampling truncation).
START_TRUNCATION: float = 0.7

WSpace = Literal["w", "w+"]
Prior = Literal["l2", "squared"]
DataTerm = Literal["l2", "pixel_mean"]
Start = Literal["sample", "mean"]
OnFailure = Literal["raise", "warn"]


class PseudoPairError(DIFEError, RuntimeError):
    """The latent search did not move for some items, even from new starts (see [SearchHealth][dife.train.pseudo_pairs.SearchHealth])."""


# ----------------------------------------------------------------------- result
@dataclass
class SearchHealth:
    """How far the latent search of each item went (the health check of one call).

    Every tensor is (B,) float32 on the pairs' device.

    Attributes:
        start_loss: Objective at the (last) start point of each item.
        final_loss: Objective at the returned latent.
        loss_drop: ``(start_loss - final_loss) / start_loss`` (0 when nothing improved).
        latent_step: ``||w - w_start||`` (mean over the rows in ``w+`` space).
        mean_distance: ``||w - w̄||`` of the returned latent (mean over rows in ``w+``).
        image_change: Mean absolute difference between the images at the start
            and at the returned latent ((B, 3, H, W) in [-1, 1]).
        moved: True where the item passed the check (or was exempt).
        attempts: Searches run for each item (1 + the retries it needed).
        checked: Whether the check ran (``False`` with ``check=False`` or ``steps=0``).
    """

    start_loss: torch.Tensor
    final_loss: torch.Tensor
    loss_drop: torch.Tensor
    latent_step: torch.Tensor
    mean_distance: torch.Tensor
    image_change: torch.Tensor
    moved: torch.Tensor
    attempts: torch.Tensor
    checked: bool = True

    def __len__(self) -> int:
        return int(self.final_loss.shape[0])

    def summary(self) -> dict[str, float]:
        """Batch means (and the worst item) as plain floats, for logs and TensorBoard.

        Keys: ``loss_drop``, ``min_loss_drop``, ``latent_step``, ``mean_distance``,
        ``min_mean_distance``, ``image_change``, ``min_image_change``, ``moved``
        (fraction of items), ``retries`` (extra searches in all).
        """
        return {
            "loss_drop": float(self.loss_drop.mean()),
            "min_loss_drop": float(self.loss_drop.min()),
            "latent_step": float(self.latent_step.mean()),
            "mean_distance": float(self.mean_distance.mean()),
            "min_mean_distance": float(self.mean_distance.min()),
            "image_change": float(self.image_change.mean()),
            "min_image_change": float(self.image_change.min()),
            "moved": float(self.moved.float().mean()),
            "retries": float((self.attempts - 1).sum()),
        }

    def describe(self, index: int) -> str:
        """One line on item ``index``: its losses, steps, distance and image change."""
        i = int(index)
        return (
            f"item {i}: loss {float(self.start_loss[i]):.6g} -> {float(self.final_loss[i]):.6g} "
            f"(drop {100.0 * float(self.loss_drop[i]):.3g}%), |w - w_start| {float(self.latent_step[i]):.4g}, "
            f"|w - w_mean| {float(self.mean_distance[i]):.4g}, image change {float(self.image_change[i]):.4g}, "
            f"{int(self.attempts[i])} search(es)"
        )

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> SearchHealth:
        return replace(
            self,
            start_loss=fn(self.start_loss),
            final_loss=fn(self.final_loss),
            loss_drop=fn(self.loss_drop),
            latent_step=fn(self.latent_step),
            mean_distance=fn(self.mean_distance),
            image_change=fn(self.image_change),
            moved=fn(self.moved),
            attempts=fn(self.attempts),
        )


@dataclass
class PseudoPairs:
    """A batch of pseudo pairs: source images and their synthesised partners.

    Attributes:
        images: (B, 3, H, W) synthesised images of the target species in
            [-1, 1], resized to the source images' size (96 x 96); item ``i``
            has the pose of ``source_images[i]``.
        features: ``{layer: (B, C, R, R)}`` the teacher's feature map at the
            returned latents (the optimised layer; e.g. 512 x 64 x 64 for
            layer 7 of FFHQ-1024), usable as ``L_K2`` targets of ``images``.
        w: (B, w_dim) optimised latents (``w_space="w"``) or
            (B, num_ws, w_dim) (``"w+"``), the best per item.
        loss_history: (n_iter + 1,) batch-mean objective of the first search,
            at the starts first and then after each Adam update.
        final_loss: (B,) objective of each returned latent.
        n_iter: Number of Adam updates of the first search (``<= steps``;
            fewer after an early stop).
        source_domain: Name of the source species, or ``None`` when unknown.
        target_domain: Name of the target species.
        source_images: (B, 3, H, W) the source images in [-1, 1] (the first
            element of each pair).
        initial_loss: (B,) objective of each item at its start point (the
            last one, for items searched again).
        stopped_early: Whether the early-stopping rule ended the first search.
        w_start: (B, ...) the start latent of each item's returned search.
        health: The health check ([SearchHealth][dife.train.pseudo_pairs.SearchHealth]), or ``None``.
    """

    images: torch.Tensor
    features: dict[int, torch.Tensor]
    w: torch.Tensor
    loss_history: torch.Tensor
    final_loss: torch.Tensor
    n_iter: int
    source_domain: str | None
    target_domain: str
    source_images: torch.Tensor
    initial_loss: torch.Tensor
    stopped_early: bool = False
    w_start: torch.Tensor | None = None
    health: SearchHealth | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def intra_species(self) -> bool:
        """True when source and target species are the same (an ``L_M1`` pair)."""
        return self.source_domain == self.target_domain

    @property
    def device(self) -> torch.device:
        """Device of the images."""
        return self.images.device

    def to(self, device: torch.device | str, *, features: bool = True) -> PseudoPairs:
        """A copy with every tensor on ``device`` (``features=False`` drops the feature maps)."""
        dev = torch.device(device)
        return replace(
            self,
            images=self.images.to(dev),
            features={k: v.to(dev) for k, v in self.features.items()} if features else {},
            w=self.w.to(dev),
            loss_history=self.loss_history.to(dev),
            final_loss=self.final_loss.to(dev),
            source_images=self.source_images.to(dev),
            initial_loss=self.initial_loss.to(dev),
            w_start=None if self.w_start is None else self.w_start.to(dev),
            health=None if self.health is None else self.health._map(lambda t: t.to(dev)),
        )

    def select(self, index: torch.Tensor | Sequence[int] | slice) -> PseudoPairs:
        """The pairs at ``index`` (e.g. a random subset for one training batch).

        ``loss_history``, ``n_iter`` and the domains are those of the whole batch.

        Raises:
            InputError: an index out of range or an empty selection.
        """
        n = len(self)
        if isinstance(index, slice):
            idx = torch.arange(n)[index]
        else:
            try:
                idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu()
            except (TypeError, ValueError, RuntimeError):
                raise InputError(f"index must be a slice, a sequence of ints or a long tensor, got {index!r}") from None
        if idx.numel() == 0:
            raise InputError(f"empty selection from {n} pseudo pairs")
        if bool(((idx < -n) | (idx >= n)).any()):
            raise InputError(f"index out of range for {n} pseudo pairs: {idx.tolist()}")

        def take(t: torch.Tensor) -> torch.Tensor:
            return t[idx.to(t.device)]

        return replace(
            self,
            images=take(self.images),
            features={k: take(v) for k, v in self.features.items()},
            w=take(self.w),
            final_loss=take(self.final_loss),
            source_images=take(self.source_images),
            initial_loss=take(self.initial_loss),
            w_start=None if self.w_start is None else take(self.w_start),
            health=None if self.health is None else self.health._map(take),
        )


# -------------------------------------------------------------------- objective
def _resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # The resizing convention of dife.train.losses.distillation_loss (resize="student").
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _latent_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) ``||a - b||_2`` over the last dim, averaged over the rows of (B, num_ws, w_dim) latents."""
    dist = torch.linalg.vector_norm(a - b, dim=-1)
    return dist if dist.ndim == 1 else dist.mean(dim=1)


def _prior(w: torch.Tensor, w_mean: torch.Tensor, prior: str) -> torch.Tensor:
    diff = w - w_mean
    dist = diff.square().sum(dim=-1) if prior == "squared" else torch.linalg.vector_norm(diff, dim=-1)
    return dist if dist.ndim == 1 else dist.mean(dim=1)  # (B,) from (B,) or (B, num_ws)


def _data(features: torch.Tensor, target: torch.Tensor, data_term: str) -> torch.Tensor:
    diff = features - target
    if data_term == "l2":
        return torch.linalg.vector_norm(diff.flatten(1), dim=1)  # (B,) norm of the whole map
    return torch.linalg.vector_norm(diff, dim=1).flatten(1).mean(dim=1)  # (B,) mean per-pixel norm


def _objective(
    features: torch.Tensor,
    target: torch.Tensor,
    w: torch.Tensor,
    w_mean: torch.Tensor,
    lam: float,
    prior: str,
    data_term: str,
) -> torch.Tensor:
    """Per-item eq.-3 objective; ``target`` already on ``features``' grid."""
    data = _data(features, target, data_term)
    if lam == 0.0:
        return data
    return data + lam * _prior(w, w_mean, prior)


def _check_choice(value: object, name: str, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be {' or '.join(repr(c) for c in choices)} ({what}), got {value!r}")
    return value


def _check_prior(prior: object) -> str:
    return _check_choice(prior, "prior", ("l2", "squared"), "'l2' is eq. 3")


def _check_data_term(data_term: object) -> str:
    return _check_choice(data_term, "data_term", ("l2", "pixel_mean"), "'l2' is eq. 3")


def pseudo_pair_objective(
    features: torch.Tensor,
    target: torch.Tensor,
    w: torch.Tensor,
    w_mean: torch.Tensor,
    lam: float = 1.0,
    prior: Prior = "l2",
    data_term: DataTerm = "l2",
) -> torch.Tensor:
    """The eq.-3 objective of each item: ``||F - T||_2 + λ ||w - w̄||_2``.

    Args:
        features: (B, C, R, R) teacher feature map ``F(w)``.
        target: (B, C, h, w) converted student map ``Ψ(Φ(x))``; resized to
            ``R x R`` as [distillation_loss][dife.train.losses.distillation_loss] does.
        w: (B, w_dim) or (B, num_ws, w_dim) latents.
        w_mean: (w_dim,) mean latent ``w̄``.
        lam: Weight ``λ`` of the prior (>= 0).
        prior: ``"l2"`` (``||w - w̄||_2``, eq. 3) or ``"squared"`` (``||w - w̄||_2^2``);
            for (B, num_ws, w_dim) latents, averaged over the ``num_ws`` rows.
        data_term: ``"l2"``: the norm of the whole (C, R, R) difference (eq. 3);
            ``"pixel_mean"``: the per-pixel norm averaged over the pixels.

    Returns:
        (B,) objective values (differentiable w.r.t. ``features`` and ``w``).
        With ``data_term="pixel_mean"`` and ``lam=0`` their mean over the
        batch equals ``distillation_loss(target, features)``.

    Raises:
        ShapeError: inconsistent shapes.
        InputError: a negative or non-finite ``lam``, or an unknown ``prior`` / ``data_term``.
    """
    for t, name in ((features, "features"), (target, "target")):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or not t.is_floating_point():
            raise ShapeError(f"{name} must be a float (B, C, H, W) tensor, got {_describe(t)}")
    if target.shape[:2] != features.shape[:2]:
        raise ShapeError(
            f"target {tuple(target.shape)} and features {tuple(features.shape)} must have the same batch and channels"
        )
    if not isinstance(w, torch.Tensor) or w.ndim not in (2, 3) or w.shape[0] != features.shape[0]:
        raise ShapeError(f"w must be (B, w_dim) or (B, num_ws, w_dim) with B={features.shape[0]}, got {_describe(w)}")
    if not isinstance(w_mean, torch.Tensor) or tuple(w_mean.shape) != (w.shape[-1],):
        raise ShapeError(f"w_mean must have shape ({w.shape[-1]},), got {_describe(w_mean)}")
    lam_f = _nonneg_float(lam, "lam")
    prior_s = _check_prior(prior)
    data_s = _check_data_term(data_term)
    target = _resize_to(target.to(features.dtype), tuple(features.shape[-2:]))
    return _objective(features, target, w, w_mean.to(w), lam_f, prior_s, data_s)


# ------------------------------------------------------------------- validation
def _describe(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _nonneg_float(v: object, name: str) -> float:
    if isinstance(v, bool):
        raise InputError(f"{name} must be a number, got {v!r}")
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
    return f


def _int(v: object, name: str, minimum: int) -> int:
    return check_int(v, name, minimum=minimum)


def _check_student(student: object) -> None:
    from dife.modeling.dife import DIFE

    if not isinstance(student, DIFE):
        raise InputError(f"student must be a dife.modeling.DIFE model, got {type(student).__name__}")


def _check_teacher(teacher: object) -> None:
    if not isinstance(teacher, GeneratorTeacher):
        raise InputError(
            "target_teacher must be a generator teacher (e.g. dife.train.teachers.StyleGAN2) with "
            f"features / synthesis / feature_shape / w_avg, got {type(teacher).__name__}"
        )


def _teacher_device(teacher: GeneratorTeacher) -> torch.device:
    dev = getattr(teacher, "device", None)
    return torch.device(dev) if dev is not None else teacher.w_avg.device


def _check_sources(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        raise ShapeError(f"source_images must be a (B, 3, H, W) tensor in [-1, 1], got {_describe(x)}")
    if not x.is_floating_point():
        raise ShapeError(f"source_images must be a float tensor in [-1, 1], got dtype {x.dtype} {tuple(x.shape)}")
    if x.numel() == 0:
        raise ShapeError(f"source_images is empty: shape {tuple(x.shape)}")
    d = x.detach()
    if not bool(torch.isfinite(d).all()):
        raise InputError(f"source_images {tuple(x.shape)} contain NaN or infinite values")
    lo, hi = float(d.min()), float(d.max())
    if lo < -1.5 or hi > 1.5:
        raise InputError(
            f"source_images must be normalised to [-1, 1], got values in [{lo:.4g}, {hi:.4g}] "
            "(0-255 or unnormalised input?)"
        )
    return x


# ---------------------------------------------------------------- main function
def synthesize_pseudo_pairs(
    student: DIFE,
    source_images: torch.Tensor,
    target_teacher: GeneratorTeacher,
    target_domain: str | int,
    *,
    source_domain: str | int | None = None,
    lam: float = 1.0,
    prior: Prior = "l2",
    data_term: DataTerm = "l2",
    start: Start | torch.Tensor = "sample",
    start_truncation: float = START_TRUNCATION,
    steps: int = 100,
    lr: float = DEFAULT_LR,
    early_stop_tol: float | None = 1e-4,
    patience: int = 5,
    target_loss: float | None = None,
    w_space: WSpace = "w",
    layer: int = 7,
    noise_mode: str = "const",
    w_mean: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    check: bool = True,
    retries: int = 2,
    min_loss_drop: float = 1e-3,
    min_image_change: float = 1e-3,
    on_failure: OnFailure = "raise",
) -> PseudoPairs:
    """Synthesise the partners of ``source_images`` in the target species (eq. 3).

    Optimises one latent per source image with Adam, from its start point,
    so that the teacher's ``layer`` feature map matches the student's
    converted embedding ``Ψ^{d'}(Φ(x))`` (see the module docstring for the
    exact objective), synthesises the images of the best latents, and checks
    that every search moved (retrying stuck items from new starts).

    Early stopping (on the batch-mean objective ``m``): the optimisation ends
    when ``m`` has not dropped below ``best * (1 - early_stop_tol)`` for
    ``patience`` consecutive updates (``best`` = lowest ``m`` so far), or as
    soon as ``m <= target_loss``; ``early_stop_tol=None`` and
    ``target_loss=None`` disable the two rules.

    Args:
        student: The DIFE model (its converter of ``target_domain`` is used).
            Put temporarily in eval mode (each submodule's mode is restored)
            and never receives gradients; its outputs are detached targets.
        source_images: (B, 3, H, W) float images in [-1, 1] (96 x 96 for the
            paper's model); moved to the student's device.
        target_teacher: Frozen generator of the target species (e.g.
            [StyleGAN2][dife.train.teachers.StyleGAN2]), on the student's device.
        target_domain: Target species (name or converter index of the student).
        source_domain: Species of the source images (metadata of the result;
            validated against the student's domains when given).
        lam: Weight ``λ`` of the prior (the paper uses 1; larger keeps the
            latents closer to ``w̄``).
        prior: ``"l2"``: ``λ ||w - w̄||_2`` (eq. 3, default); ``"squared"``:
            ``λ ||w - w̄||_2^2`` (smooth at ``w̄``).
        data_term: ``"l2"``: ``||F - T||_2`` over the whole map (eq. 3,
            default); ``"pixel_mean"``: the per-pixel norm averaged over the
            pixels (the distillation loss's scale).
        start: ``"sample"`` (default): a random truncated latent of the
            target generator per item (the authors'); ``"mean"``: ``w̄``; or a
            (B, w_dim) / (B, num_ws, w_dim) tensor of start latents.
        start_truncation: Truncation psi of the sampled starts (0.7) and of
            the new starts of retries, in [0, 1].
        steps: Maximum number of Adam updates (0 returns the starts unchecked).
        lr: Adam learning rate of the latents (``DEFAULT_LR``).
        early_stop_tol: Relative improvement below which an update counts as
            stalled, or ``None``.
        patience: Stalled updates in a row that stop the optimisation.
        target_loss: Absolute batch-mean objective that stops it, or ``None``.
        w_space: ``"w"``: one latent per image broadcast to every layer (the
            paper); ``"w+"``: one latent per synthesis layer, shape
            (B, num_ws, w_dim).
        layer: Teacher feature layer matched (7 = the 64 x 64 block output).
        noise_mode: Teacher noise, ``"const"`` (deterministic, default),
            ``"random"`` (fresh noise at every step: a stochastic objective)
            or ``"none"``.
        w_mean: (w_dim,) mean latent ``w̄``; default
            ``target_teacher.mean_latent(4096, seed=0)`` (pass it to avoid
            recomputing it, as [PseudoPairCache][dife.train.pseudo_pairs.PseudoPairCache] does).
        generator: Random generator of the sampled starts (and of the noise
            with ``noise_mode="random"``); default a CPU generator seeded 0,
            so a call is deterministic.
        check: Run the health check (module docstring).
        retries: Searches from new sampled starts for items that did not move (>= 0).
        min_loss_drop: Smallest relative drop of the objective that counts as moving.
        min_image_change: Smallest mean absolute image change (in [-1, 1]
            units) that counts as moving.
        on_failure: ``"raise"`` (default): raise
            [PseudoPairError][dife.train.pseudo_pairs.PseudoPairError] when
            items are still stuck after the retries; ``"warn"``: log a warning
            and return them (``health.moved`` is False for them).

    Returns:
        [PseudoPairs][dife.train.pseudo_pairs.PseudoPairs] on the student's
        device, all tensors detached, with its ``health``.

    Raises:
        InputError: a wrong student / teacher type, teacher and student on
            different devices, a bad option value, or source values outside
            [-1, 1] or non-finite.
        ShapeError: badly shaped ``source_images`` / ``w_mean`` / ``start``,
            or a student converter width that differs from the teacher's
            feature width.
        UnknownDomainError: a domain the student does not know.
        PseudoPairError: the search did not move for some items even after
            ``retries`` new starts (with ``on_failure="raise"``).
    """
    _check_student(student)
    _check_teacher(target_teacher)
    cfg = student.config
    target_name = cfg.domains[cfg.domain_index(target_domain)]
    source_name = None if source_domain is None else cfg.domains[cfg.domain_index(source_domain)]
    x = _check_sources(source_images)

    if not is_int(layer) or layer not in tuple(target_teacher.feature_layers):
        raise InputError(
            f"layer must be one of the teacher's feature layers {tuple(target_teacher.feature_layers)}, got {layer!r}"
        )
    c_feat, r_h, r_w = target_teacher.feature_shape(layer)
    if cfg.converter_dim != c_feat:
        raise ShapeError(
            f"the student's converter width ({cfg.converter_dim} channels, DIFEConfig.converter_dim) does not match "
            f"the teacher's layer-{layer} feature width ({c_feat} channels, map {c_feat}x{r_h}x{r_w})"
        )
    if w_space not in ("w", "w+"):
        raise InputError(f"w_space must be 'w' or 'w+', got {w_space!r}")
    if noise_mode not in ("const", "random", "none"):
        raise InputError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
    opts = _SearchOptions(
        lam=_nonneg_float(lam, "lam"),
        prior=_check_prior(prior),
        data_term=_check_data_term(data_term),
        steps=_int(steps, "steps", 0),
        lr=_nonneg_float(lr, "lr"),
        tol=None if early_stop_tol is None else _nonneg_float(early_stop_tol, "early_stop_tol"),
        patience=_int(patience, "patience", 1),
        stop_at=None if target_loss is None else _nonneg_float(target_loss, "target_loss"),
        layer=layer,
        noise_mode=noise_mode,
        generator=generator,
    )
    if opts.lr == 0:
        raise InputError(f"lr must be > 0, got {lr!r}")
    psi = _nonneg_float(start_truncation, "start_truncation")
    if psi > 1.0:
        raise InputError(f"start_truncation must be in [0, 1], got {start_truncation!r}")
    if not isinstance(check, bool):
        raise InputError(f"check must be True or False, got {check!r}")
    n_retries = _int(retries, "retries", 0)
    min_drop = _nonneg_float(min_loss_drop, "min_loss_drop")
    min_change = _nonneg_float(min_image_change, "min_image_change")
    on_failure = _check_choice(on_failure, "on_failure", ("raise", "warn"), "what a failed check does")  # type: ignore[assignment]
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not (isinstance(start, torch.Tensor) or start in ("sample", "mean")):
        raise InputError(f"start must be 'sample', 'mean' or a tensor of start latents, got {start!r}")

    device = student.device
    t_device = _teacher_device(target_teacher)
    if device != t_device:
        raise InputError(
            f"the student is on {device} but the target teacher is on {t_device}; move both to one device "
            "(e.g. student.to(dev) and teacher.to(dev))"
        )

    w_dim, num_ws = int(target_teacher.w_dim), int(target_teacher.num_ws)
    rows = num_ws if w_space == "w+" else 0
    b = int(x.shape[0])
    sample_gen = generator if generator is not None else torch.Generator().manual_seed(0)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    # inference_mode(False): usable from a caller's inference / no_grad context.
    with torch.inference_mode(False):
        if w_mean is None:
            w_bar = target_teacher.mean_latent(MEAN_LATENT_SAMPLES, seed=0)
        else:
            w_bar = w_mean
        if not isinstance(w_bar, torch.Tensor) or tuple(w_bar.shape) != (w_dim,):
            raise ShapeError(f"w_mean must be a ({w_dim},) tensor (the teacher's w_dim), got {_describe(w_bar)}")
        w_bar = w_bar.detach().to(device=device, dtype=torch.float32).clone()
        if not bool(torch.isfinite(w_bar).all()):
            raise InputError("w_mean contains NaN or infinite values")

        def sampled(n: int) -> torch.Tensor:
            # truncated about w̄ (the authors truncate about the 4096-sample mean, not the stored w_avg)
            with torch.no_grad():
                w = target_teacher.sample_w(n, truncation=1.0, generator=sample_gen)
            w = w_bar + psi * (w.detach().to(device=device, dtype=torch.float32) - w_bar)
            return _as_rows(w, rows)

        if isinstance(start, torch.Tensor):
            w0 = _explicit_start(start, b, w_dim, rows).to(device=device, dtype=torch.float32)
        elif start == "mean":
            w0 = _as_rows(w_bar.expand(b, w_dim).clone(), rows)
        else:
            w0 = sampled(b)

        target = _student_target(student, x.to(device), target_name, (r_h, r_w))
        res = _search(target_teacher, target, w_bar, w0, opts)
        history, n_iter, early = res.history, res.n_iter, res.early
        images, feats = _render(target_teacher, res.w, opts, size, features=True)
        start_images, _ = _render(target_teacher, w0, opts, size, features=False)
        attempts = torch.ones(b, dtype=torch.long, device=device)
        checked = check and opts.steps > 0

        def health() -> SearchHealth:
            return _health(
                res.w,
                w0,
                w_bar,
                res.initial,
                res.final,
                images,
                start_images,
                attempts,
                opts,
                min_drop,
                min_change,
                checked,
            )

        state = health()
        for _ in range(n_retries if checked else 0):
            stuck = (~state.moved).nonzero().flatten()
            if stuck.numel() == 0:
                break
            logger.warning(
                "pseudo pairs -> %s: the latent search did not move for %d of %d items (%s); searching them "
                "again from new sampled starts",
                target_name,
                stuck.numel(),
                b,
                "; ".join(state.describe(int(i)) for i in stuck[:3]),
            )
            w_new = sampled(int(stuck.numel()))
            sub = _search(target_teacher, target[stuck], w_bar, w_new, opts)
            res.w[stuck], res.final[stuck], res.initial[stuck] = sub.w, sub.final, sub.initial
            w0[stuck] = w_new
            attempts[stuck] += 1
            sub_images, sub_feats = _render(target_teacher, sub.w, opts, size, features=True)
            images[stuck], feats[stuck] = sub_images, sub_feats
            start_images[stuck] = _render(target_teacher, w_new, opts, size, features=False)[0]
            state = health()

        stuck = (~state.moved).nonzero().flatten()
        if stuck.numel():
            msg = (
                f"pseudo pairs {source_name or '?'} -> {target_name}: the latent search did not move for "
                f"{stuck.numel()} of {b} items, even after {n_retries} search(es) from new starts: "
                + "; ".join(state.describe(int(i)) for i in stuck[:5])
                + f". (Moving means a relative loss drop >= {min_drop:g} and an image change >= {min_change:g}, "
                "away from w_mean.) Pairs at their start teach the matching losses correspondences that do not "
                "exist. Try a larger lr or more steps, a smaller lam, prior='squared', or data_term='l2' "
                "(eq. 3); check=False turns the check off."
            )
            if on_failure == "raise":
                raise PseudoPairError(msg)
            logger.warning("%s", msg)
        s = state.summary()
        logger.info(
            "pseudo pairs %s -> %s: objective %.4g -> %.4g (drop %.3g%%), |w - w_start| %.4g, |w - w_mean| %.4g, "
            "image change %.4g, %d retries",
            source_name or "?",
            target_name,
            float(res.initial.mean()),
            float(res.final.mean()),
            100.0 * s["loss_drop"],
            s["latent_step"],
            s["mean_distance"],
            s["image_change"],
            int(s["retries"]),
        )
        return PseudoPairs(
            images=images.detach(),
            features={layer: feats.detach()},
            w=res.w.detach(),
            loss_history=history,
            final_loss=res.final,
            n_iter=n_iter,
            source_domain=source_name,
            target_domain=target_name,
            source_images=x.detach().to(device).clone(),
            initial_loss=res.initial,
            stopped_early=early,
            w_start=w0.detach(),
            health=state,
        )


@dataclass
class _SearchOptions:
    lam: float
    prior: str
    data_term: str
    steps: int
    lr: float
    tol: float | None
    patience: int
    stop_at: float | None
    layer: int
    noise_mode: str
    generator: torch.Generator | None


@dataclass
class _SearchResult:
    w: torch.Tensor  # best latents
    history: torch.Tensor
    final: torch.Tensor  # (B,) best objective
    initial: torch.Tensor  # (B,) objective at the start
    n_iter: int
    early: bool


def _as_rows(w: torch.Tensor, rows: int) -> torch.Tensor:
    """(B, w_dim) -> (B, rows, w_dim) when ``rows`` (w+ space), else unchanged."""
    return w[:, None].expand(-1, rows, -1).clone() if rows else w


def _explicit_start(start: torch.Tensor, b: int, w_dim: int, rows: int) -> torch.Tensor:
    shapes = [(b, w_dim)] + ([(b, rows, w_dim)] if rows else [])
    if tuple(start.shape) not in shapes or not start.is_floating_point():
        raise ShapeError(
            f"start latents must be a float tensor of shape {' or '.join(str(s) for s in shapes)} (one per source "
            f"image), got {tuple(start.shape)} {start.dtype}"
        )
    w = start.detach().float()
    if not bool(torch.isfinite(w).all()):
        raise InputError("start latents contain NaN or infinite values")
    return _as_rows(w, rows) if rows and w.ndim == 2 else w.clone()


def _noise_kw(noise_mode: str, generator: torch.Generator | None) -> dict[str, object]:
    # Only StyleGAN2-like teachers take a generator; pass it only when it matters.
    return {"generator": generator} if noise_mode == "random" and generator is not None else {}


def _render(
    teacher: GeneratorTeacher, w: torch.Tensor, opts: _SearchOptions, size: tuple[int, int], *, features: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (B, 3, *size) in [-1, 1] at ``w`` (and the ``opts.layer`` feature map), without grad."""
    kw = _noise_kw(opts.noise_mode, opts.generator)
    with torch.no_grad():
        if features:
            image, feats = teacher.synthesis(
                w, noise_mode=opts.noise_mode, return_features=True, layers=(opts.layer,), **kw
            )
            fmap: torch.Tensor | None = feats[opts.layer].detach()
        else:
            image, fmap = teacher.synthesis(w, noise_mode=opts.noise_mode, **kw), None
        images = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return images.clamp(-1.0, 1.0), fmap


def _health(
    w: torch.Tensor,
    w0: torch.Tensor,
    w_bar: torch.Tensor,
    initial: torch.Tensor,
    final: torch.Tensor,
    images: torch.Tensor,
    start_images: torch.Tensor,
    attempts: torch.Tensor,
    opts: _SearchOptions,
    min_drop: float,
    min_change: float,
    checked: bool,
) -> SearchHealth:
    drop = torch.where(
        torch.isfinite(initial) & torch.isfinite(final),
        (initial - final) / initial.abs().clamp_min(1e-12),
        torch.zeros_like(final),
    ).clamp_min(0.0)
    step = _latent_distance(w, w0)
    dist = _latent_distance(w, w_bar)
    change = (images - start_images).abs().flatten(1).mean(dim=1)
    at_mean = dist <= 1e-6 * max(1.0, float(torch.linalg.vector_norm(w_bar)))
    moved = (drop >= min_drop) & (change >= min_change) & ~at_mean
    if opts.stop_at is not None:
        moved = moved | (initial <= opts.stop_at)
    if not checked:
        moved = torch.ones_like(moved)
    return SearchHealth(
        start_loss=initial.clone(),
        final_loss=final.clone(),
        loss_drop=drop,
        latent_step=step,
        mean_distance=dist,
        image_change=change,
        moved=moved,
        attempts=attempts.clone(),
        checked=checked,
    )


def _student_target(student: DIFE, x: torch.Tensor, domain: str, size: tuple[int, int]) -> torch.Tensor:
    """``Ψ^{d'}(Φ(x))`` in eval mode without grad, resized to the feature grid (float32)."""
    modes = [(m, m.training) for m in student.modules()]
    student.eval()
    try:
        with torch.no_grad():
            param = next(student.parameters())
            target = student.convert(student(x.to(param.dtype)), domain).float()
    finally:
        for m, mode in modes:
            m.training = mode
    if not bool(torch.isfinite(target).all()):
        raise InputError(f"the student's converted map for domain {domain!r} contains NaN or infinite values")
    return _resize_to(target, size).detach()


def _search(
    teacher: GeneratorTeacher,
    target: torch.Tensor,
    w_bar: torch.Tensor,
    w_start: torch.Tensor,
    opts: _SearchOptions,
) -> _SearchResult:
    """Adam on the latents from ``w_start``; the best latent and objective of every item."""
    b = target.shape[0]
    w = w_start.detach().clone().requires_grad_(True)
    optim = torch.optim.Adam([w], lr=opts.lr)
    kw = _noise_kw(opts.noise_mode, opts.generator)
    layer = opts.layer

    history: list[float] = []
    best_w = w.detach().clone()
    best_loss = torch.full((b,), float("inf"), device=w.device)
    initial = best_loss
    best_mean = float("inf")
    stalled = 0
    n_iter = 0
    early = False
    for it in range(opts.steps + 1):
        last = it == opts.steps
        with torch.set_grad_enabled(not last):
            feats = teacher.features(w, layers=(layer,), noise_mode=opts.noise_mode, **kw)[layer]
            per_item = _objective(feats, target, w, w_bar, opts.lam, opts.prior, opts.data_term)
        values = per_item.detach()
        if it == 0:
            initial = values.clone()
        better = values < best_loss  # NaN never counts as better
        best_loss = torch.where(better, values, best_loss)
        best_w = torch.where(better.reshape((b,) + (1,) * (w.ndim - 1)), w.detach(), best_w)
        mean = float(values.mean())
        history.append(mean)

        if opts.stop_at is not None and mean <= opts.stop_at:
            early = True
        elif opts.tol is not None:
            if math.isfinite(best_mean):
                improved = mean < best_mean - opts.tol * abs(best_mean)
            else:
                improved = math.isfinite(mean)
            stalled = 0 if improved else stalled + 1
            if math.isfinite(mean):
                best_mean = min(best_mean, mean)
            early = stalled >= opts.patience
        if last or early:
            break
        (grad,) = torch.autograd.grad(per_item.sum(), [w])
        w.grad = grad
        optim.step()
        w.grad = None
        n_iter += 1
    hist = torch.tensor(history, dtype=torch.float32, device=w.device)
    return _SearchResult(best_w, hist, best_loss, initial, n_iter, early)


# ------------------------------------------------------------------------ cache
@dataclass
class _Entry:
    pairs: PseudoPairs
    step: int


class PseudoPairCache:
    """Pseudo pairs kept between training steps and re-synthesised every ``every`` steps.

    Latent optimisation costs ``steps`` teacher passes, so the trainer reuses
    a batch of pairs for ``every`` steps (the student changes slowly). Pairs
    are stored on ``storage_device`` (CPU by default) to spare GPU memory,
    one entry per key (by default ``(source_domain, target_domain)``).
    The teachers' mean latents ``w̄`` are computed once per teacher and device.

    Example:
        >>> cache = PseudoPairCache(every=500, steps=100)  # doctest: +SKIP
        >>> pairs = cache.maybe_refresh(step, model, lambda: sample_humans(12), g_dog, "dog",
        ...                             source_domain="human", device="cuda")  # doctest: +SKIP

    Args:
        every: Refresh period in training steps (>= 1).
        storage_device: Where the pairs are kept.
        **options: Keyword options of [synthesize_pseudo_pairs][dife.train.pseudo_pairs.synthesize_pseudo_pairs]
            (``lam``, ``steps``, ``lr``, ``w_space``, ...).

    Raises:
        InputError: a bad ``every`` or an unknown option name.
    """

    _OPTIONS = frozenset(
        {
            "lam",
            "prior",
            "steps",
            "lr",
            "early_stop_tol",
            "patience",
            "target_loss",
            "w_space",
            "layer",
            "noise_mode",
            "generator",
            "data_term",
            "start",
            "start_truncation",
            "check",
            "retries",
            "min_loss_drop",
            "min_image_change",
            "on_failure",
        }
    )

    def __init__(self, every: int = 1000, *, storage_device: torch.device | str = "cpu", **options: object) -> None:
        self.every = _int(every, "every", 1)
        unknown = sorted(set(options) - self._OPTIONS)
        if unknown:
            raise InputError(f"unknown pseudo-pair option(s) {unknown}; known: {sorted(self._OPTIONS)}")
        self.storage_device = check_device(storage_device, "storage_device", allow_none=False)
        self.options = dict(options)
        self._entries: dict[Hashable, _Entry] = {}
        self._means: weakref.WeakKeyDictionary[object, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()
        self.refreshes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[Hashable]:
        """Keys of the stored entries."""
        return list(self._entries)

    def clear(self) -> None:
        """Drop every stored pair (the next [maybe_refresh][dife.train.pseudo_pairs.PseudoPairCache.maybe_refresh] re-synthesises)."""
        self._entries.clear()

    def last_refresh(self, key: Hashable) -> int | None:
        """Training step of the last synthesis of ``key``, or ``None``."""
        entry = self._entries.get(key)
        return None if entry is None else entry.step

    def needs_refresh(self, step: int, key: Hashable) -> bool:
        """True when ``key`` has no pairs, or they are ``every`` or more steps old (or from a later step)."""
        step = _int(step, "step", 0)
        entry = self._entries.get(key)
        return entry is None or step < entry.step or step - entry.step >= self.every

    def get(self, key: Hashable, device: torch.device | str | None = None) -> PseudoPairs | None:
        """The stored pairs of ``key`` (on ``device`` if given), or ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        return entry.pairs if device is None else entry.pairs.to(device)

    def mean_latent(self, teacher: GeneratorTeacher) -> torch.Tensor:
        """The teacher's ``w̄`` (4096 samples, seed 0) on its device, computed once."""
        dev = str(_teacher_device(teacher))
        per_teacher = self._means.setdefault(teacher, {})
        if dev not in per_teacher:
            with torch.inference_mode(False):
                per_teacher[dev] = teacher.mean_latent(MEAN_LATENT_SAMPLES, seed=0).detach().clone()
        return per_teacher[dev]

    def maybe_refresh(
        self,
        step: int,
        student: DIFE,
        source_images: torch.Tensor | Callable[[], torch.Tensor],
        target_teacher: GeneratorTeacher,
        target_domain: str | int,
        *,
        source_domain: str | int | None = None,
        key: Hashable | None = None,
        device: torch.device | str | None = None,
    ) -> PseudoPairs:
        """Re-synthesise the pairs of ``key`` if due, and return the current ones.

        Args:
            step: Current training step (>= 0).
            student: The DIFE model being trained.
            source_images: (B, 3, H, W) images in [-1, 1], or a callable
                returning them, called only when a refresh is due (so no
                source batch is drawn otherwise).
            target_teacher: Generator of the target species.
            target_domain: Target species (name or index).
            source_domain: Source species (name or index), if known.
            key: Cache key; default ``(source name, target name)``.
            device: Device of the returned copy; default the storage device.

        Returns:
            The pairs of ``key``: freshly synthesised or cached. Their
            ``source_images`` are the images they were synthesised from.
        """
        _check_student(student)
        cfg = student.config
        target_name = cfg.domains[cfg.domain_index(target_domain)]
        source_name = None if source_domain is None else cfg.domains[cfg.domain_index(source_domain)]
        k = (source_name, target_name) if key is None else key
        if self.needs_refresh(step, k):
            images = source_images() if callable(source_images) else source_images
            _check_teacher(target_teacher)
            pairs = synthesize_pseudo_pairs(
                student,
                images,
                target_teacher,
                target_name,
                source_domain=source_name,
                w_mean=self.mean_latent(target_teacher),
                **self.options,  # type: ignore[arg-type]
            )
            self._entries[k] = _Entry(pairs.to(self.storage_device), int(step))
            self.refreshes += 1
        return self.get(k, device)  # type: ignore[return-value]
