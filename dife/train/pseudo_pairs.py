"""Pseudo pairs by latent space exploration (paper eq. 3).

For a source image ``x^d`` of species ``d`` and a target species ``d'`` with
a frozen StyleGAN2 teacher ``G^{d'}``, DIFE finds the latent whose layer-7
feature map best matches the student's converted embedding of ``x^d``:

    w^{d'} = argmin_w  ||F^{d'}(w) - Ψ^{d'}(Φ(x^d))||_2  +  λ ||w - w̄||_2

starting from the teacher's mean latent ``w̄`` (mean of 4096 mapped samples).
The image ``G^{d'}(w^{d'})`` then shows species ``d'`` in the pose of
``x^d``: with ``d' = d`` it is an *intra-species* pair (another individual in
the same pose), otherwise an *inter-species* pair. The pairs are targets of
the semantic matching losses ``L_M1`` / ``L_M2``.

Conventions:

* The data term is the distillation distance of :mod:`dife.train.losses`
  (:func:`~dife.train.losses.distillation_loss`): the student map is resized
  to the feature map's grid (bilinear, ``align_corners=False``), then the
  Euclidean norm over channels is averaged over the pixels **of each item**.
* The prior term is the (not squared) Euclidean distance ``||w - w̄||_2``
  (``prior="squared"`` uses its square instead); in ``w+`` space it is the
  mean over the ``num_ws`` layer latents of their distance to ``w̄``, so a
  ``w+`` latent whose rows are equal costs exactly what the single ``w``
  costs.
* The batch is optimised jointly but every item has its own latent and its
  own objective (the summed loss makes the items independent); the latent
  returned for each item is the best one seen (lowest objective), so
  ``final_loss <= initial_loss`` item by item.
* Nothing flows back into the student (its outputs are computed under
  ``torch.no_grad`` in eval mode) or the teacher (gradients are taken with
  :func:`torch.autograd.grad` with respect to the latent only).

Memory: during the optimisation only the synthesis blocks up to the target
layer run (``teacher.features`` stops early); the full image is synthesised
once, at the end, without gradients.

Example:
    >>> g = StyleGAN2.load("afhqdog.pkl")  # doctest: +SKIP
    >>> pairs = synthesize_pseudo_pairs(model, human_batch, g, "dog", source_domain="human")  # doctest: +SKIP
    >>> pairs.images.shape  # doctest: +SKIP
    torch.Size([12, 3, 96, 96])
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from dife.checks import check_device, check_int, is_int
from dife.errors import InputError, ShapeError
from dife.train.teachers.base import GeneratorTeacher

if TYPE_CHECKING:
    from dife.modeling.dife import DIFE

__all__ = [
    "PseudoPairs",
    "PseudoPairCache",
    "synthesize_pseudo_pairs",
    "pseudo_pair_objective",
    "DEFAULT_LR",
    "MEAN_LATENT_SAMPLES",
]

#: Default Adam learning rate of the latent. The authors do not state one;
#: 0.05 moves each coordinate of ``w`` (whose per-coordinate spread about
#: ``w̄`` is of order 1 for the published generators) by up to ~0.05 per
#: step, i.e. across its typical range within the default 100 steps, without
#: the overshoot of the 0.1 used by StyleGAN2's image projector (which also
#: rescales the step by the latent's spread and decays it).
DEFAULT_LR: float = 0.05

#: Samples in the mean latent ``w̄`` of the paper (seed 0).
MEAN_LATENT_SAMPLES: int = 4096

WSpace = Literal["w", "w+"]
Prior = Literal["l2", "squared"]


# ----------------------------------------------------------------------- result
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
        loss_history: (n_iter + 1,) batch-mean objective, at ``w̄`` first and
            then after each Adam update.
        final_loss: (B,) objective of each returned latent.
        n_iter: Number of Adam updates made (``<= steps``; fewer after an
            early stop).
        source_domain: Name of the source species, or ``None`` when unknown.
        target_domain: Name of the target species.
        source_images: (B, 3, H, W) the source images in [-1, 1] (the first
            element of each pair).
        initial_loss: (B,) objective of each item at ``w̄``.
        stopped_early: Whether the early-stopping rule ended the optimisation.
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
        )


# -------------------------------------------------------------------- objective
def _resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # The resizing convention of dife.train.losses.distillation_loss (resize="student").
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _prior(w: torch.Tensor, w_mean: torch.Tensor, prior: str) -> torch.Tensor:
    diff = w - w_mean
    dist = diff.square().sum(dim=-1) if prior == "squared" else torch.linalg.vector_norm(diff, dim=-1)
    return dist if dist.ndim == 1 else dist.mean(dim=1)  # (B,) from (B,) or (B, num_ws)


def _objective(
    features: torch.Tensor, target: torch.Tensor, w: torch.Tensor, w_mean: torch.Tensor, lam: float, prior: str
) -> torch.Tensor:
    """Per-item eq.-3 objective; ``target`` already on ``features``' grid."""
    data = torch.linalg.vector_norm(features - target, dim=1).flatten(1).mean(dim=1)  # (B,)
    if lam == 0.0:
        return data
    return data + lam * _prior(w, w_mean, prior)


def _check_prior(prior: object) -> str:
    if prior not in ("l2", "squared"):
        raise InputError(f"prior must be 'l2' (eq. 3) or 'squared', got {prior!r}")
    return str(prior)


def pseudo_pair_objective(
    features: torch.Tensor,
    target: torch.Tensor,
    w: torch.Tensor,
    w_mean: torch.Tensor,
    lam: float = 1.0,
    prior: Prior = "l2",
) -> torch.Tensor:
    """The eq.-3 objective of each item: ``mean_p ||F_p - T_p||_2 + λ ||w - w̄||_2``.

    Args:
        features: (B, C, R, R) teacher feature map ``F(w)``.
        target: (B, C, h, w) converted student map ``Ψ(Φ(x))``; resized to
            ``R x R`` as :func:`dife.train.losses.distillation_loss` does.
        w: (B, w_dim) or (B, num_ws, w_dim) latents.
        w_mean: (w_dim,) mean latent ``w̄``.
        lam: Weight ``λ`` of the prior (>= 0).
        prior: ``"l2"`` (``||w - w̄||_2``, eq. 3) or ``"squared"`` (``||w - w̄||_2^2``);
            for (B, num_ws, w_dim) latents, averaged over the ``num_ws`` rows.

    Returns:
        (B,) objective values (differentiable w.r.t. ``features`` and ``w``).
        Their mean over the batch with ``lam=0`` equals
        ``distillation_loss(target, features)``.

    Raises:
        ShapeError: inconsistent shapes.
        InputError: a negative or non-finite ``lam``, or an unknown ``prior``.
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
    target = _resize_to(target.to(features.dtype), tuple(features.shape[-2:]))
    return _objective(features, target, w, w_mean.to(w), lam_f, prior_s)


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
) -> PseudoPairs:
    """Synthesise the partners of ``source_images`` in the target species (eq. 3).

    Optimises one latent per source image with Adam, from ``w̄``, so that the
    teacher's ``layer`` feature map matches the student's converted
    embedding ``Ψ^{d'}(Φ(x))`` (see the module docstring for the exact
    objective), then synthesises the images of the best latents.

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
            :class:`dife.train.teachers.StyleGAN2`), on the student's device.
        target_domain: Target species (name or converter index of the student).
        source_domain: Species of the source images (metadata of the result;
            validated against the student's domains when given).
        lam: Weight ``λ`` of the prior ``||w - w̄||_2`` (the paper uses 1;
            larger keeps the latents closer to ``w̄``). Note that the
            (not squared) norm is not smooth at ``w̄``: when the data term's
            gradient at ``w̄`` is shorter than ``λ``, ``w̄`` itself is the
            minimiser and the pairs come back at ``w̄`` (``final_loss ==
            initial_loss``); lower ``λ`` or use ``prior="squared"`` then.
        prior: ``"l2"``: ``λ ||w - w̄||_2`` (eq. 3, default); ``"squared"``:
            ``λ ||w - w̄||_2^2`` (smooth, never sticks at ``w̄``).
        steps: Maximum number of Adam updates (0 returns ``w̄``).
        lr: Adam learning rate of the latents (:data:`DEFAULT_LR`).
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
            recomputing it, as :class:`PseudoPairCache` does).
        generator: Random generator of the noise with ``noise_mode="random"``.

    Returns:
        :class:`PseudoPairs` on the student's device, all tensors detached.

    Raises:
        InputError: a wrong student / teacher type, teacher and student on
            different devices, a bad option value, or source values outside
            [-1, 1] or non-finite.
        ShapeError: badly shaped ``source_images`` / ``w_mean``, or a student
            converter width that differs from the teacher's feature width.
        UnknownDomainError: a domain the student does not know.
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
    lam_f = _nonneg_float(lam, "lam")
    prior_s = _check_prior(prior)
    n_steps = _int(steps, "steps", 0)
    lr_f = _nonneg_float(lr, "lr")
    if lr_f == 0:
        raise InputError(f"lr must be > 0, got {lr!r}")
    tol = None if early_stop_tol is None else _nonneg_float(early_stop_tol, "early_stop_tol")
    pat = _int(patience, "patience", 1)
    stop_at = None if target_loss is None else _nonneg_float(target_loss, "target_loss")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

    device = student.device
    t_device = _teacher_device(target_teacher)
    if device != t_device:
        raise InputError(
            f"the student is on {device} but the target teacher is on {t_device}; move both to one device "
            "(e.g. student.to(dev) and teacher.to(dev))"
        )

    w_dim, num_ws = int(target_teacher.w_dim), int(target_teacher.num_ws)
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

        target = _student_target(student, x.to(device), target_name, (r_h, r_w))
        w, history, final, initial, n_iter, early = _optimise(
            target_teacher,
            target,
            w_bar,
            num_ws=num_ws if w_space == "w+" else 0,
            lam=lam_f,
            prior=prior_s,
            steps=n_steps,
            lr=lr_f,
            tol=tol,
            patience=pat,
            stop_at=stop_at,
            layer=layer,
            noise_mode=noise_mode,
            generator=generator,
        )
        with torch.no_grad():
            image, feats = target_teacher.synthesis(
                w, noise_mode=noise_mode, return_features=True, layers=(layer,), **_noise_kw(noise_mode, generator)
            )
            size = tuple(x.shape[-2:])
            images = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
            images = images.clamp(-1.0, 1.0)
        return PseudoPairs(
            images=images.detach(),
            features={layer: feats[layer].detach()},
            w=w.detach(),
            loss_history=history,
            final_loss=final,
            n_iter=n_iter,
            source_domain=source_name,
            target_domain=target_name,
            source_images=x.detach().to(device).clone(),
            initial_loss=initial,
            stopped_early=early,
        )


def _noise_kw(noise_mode: str, generator: torch.Generator | None) -> dict[str, object]:
    # Only StyleGAN2-like teachers take a generator; pass it only when it matters.
    return {"generator": generator} if noise_mode == "random" and generator is not None else {}


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


def _optimise(
    teacher: GeneratorTeacher,
    target: torch.Tensor,
    w_bar: torch.Tensor,
    *,
    num_ws: int,
    lam: float,
    prior: str,
    steps: int,
    lr: float,
    tol: float | None,
    patience: int,
    stop_at: float | None,
    layer: int,
    noise_mode: str,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, bool]:
    """Adam on the latents; returns (best w, history, best loss, initial loss, updates, stopped early)."""
    b = target.shape[0]
    shape = (b, num_ws, w_bar.numel()) if num_ws else (b, w_bar.numel())
    w = w_bar.expand(shape).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    kw = _noise_kw(noise_mode, generator)

    history: list[float] = []
    best_w = w.detach().clone()
    best_loss = torch.full((b,), float("inf"), device=w.device)
    initial = best_loss
    best_mean = float("inf")
    stalled = 0
    n_iter = 0
    early = False
    for it in range(steps + 1):
        last = it == steps
        with torch.set_grad_enabled(not last):
            feats = teacher.features(w, layers=(layer,), noise_mode=noise_mode, **kw)[layer]
            per_item = _objective(feats, target, w, w_bar, lam, prior)
        values = per_item.detach()
        if it == 0:
            initial = values.clone()
        better = values < best_loss  # NaN never counts as better
        best_loss = torch.where(better, values, best_loss)
        best_w = torch.where(better.reshape((b,) + (1,) * (w.ndim - 1)), w.detach(), best_w)
        mean = float(values.mean())
        history.append(mean)

        if stop_at is not None and mean <= stop_at:
            early = True
        elif tol is not None:
            if math.isfinite(best_mean):
                improved = mean < best_mean - tol * abs(best_mean)
            else:
                improved = math.isfinite(mean)
            stalled = 0 if improved else stalled + 1
            if math.isfinite(mean):
                best_mean = min(best_mean, mean)
            early = stalled >= patience
        if last or early:
            break
        (grad,) = torch.autograd.grad(per_item.sum(), [w])
        w.grad = grad
        opt.step()
        w.grad = None
        n_iter += 1
    hist = torch.tensor(history, dtype=torch.float32, device=w.device)
    return best_w, hist, best_loss, initial, n_iter, early


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
        **options: Keyword options of :func:`synthesize_pseudo_pairs`
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
        """Drop every stored pair (the next :meth:`maybe_refresh` re-synthesises)."""
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
