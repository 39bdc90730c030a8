"""The interface every generator teacher offers to DIFE training.

DIFE uses a pretrained generator per species in three ways: it samples
training images (z -> w with truncation 0.7 about the mean latent w̄ -> image),
distils one intermediate feature map (``L_K2``, "layer 7"), and optimises a
latent w so that the generator's feature map matches a converted embedding
(pseudo pairs, regularised towards w̄). [GeneratorTeacher][dife.train.teachers.base.GeneratorTeacher] is that
contract; [dife.train.teachers.StyleGAN2][dife.train.teachers.stylegan2.StyleGAN2] implements it.

A dense teacher (``L_K1``) maps an image to a per-pixel embedding:
[DenseTeacher][dife.train.teachers.base.DenseTeacher], implemented by [dife.train.teachers.CSETeacher][dife.train.teachers.cse.CSETeacher]
(DensePose CSE) and [dife.train.teachers.TimmTeacher][dife.train.teachers.timm_teacher.TimmTeacher] (any timm
backbone stage). Every teacher takes ``(B, 3, H, W)`` float RGB in [-1, 1] (the
range of DIFE's input and of StyleGAN2's output) and does its own
normalisation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch

__all__ = ["GeneratorTeacher", "DenseTeacher"]


@runtime_checkable
class GeneratorTeacher(Protocol):
    """A frozen latent-variable image generator with addressable feature layers.

    Implementations keep every parameter frozen (``requires_grad=False``,
    eval mode) while staying differentiable with respect to ``w``.

    Attributes:
        z_dim: Size of the Gaussian input latent z.
        w_dim: Size of the intermediate latent w.
        num_ws: Number of per-layer w vectors the synthesis consumes.
        resolution: Output image side in pixels.
        feature_layers: Layer numbers accepted by [features][dife.train.teachers.base.GeneratorTeacher.features].
        w_avg: ``(w_dim,)`` mean latent w̄ (truncation centre).
    """

    z_dim: int
    w_dim: int
    num_ws: int
    resolution: int
    feature_layers: tuple[int, ...]
    w_avg: torch.Tensor

    def mapping(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """Map ``(B, z_dim)`` latents to ``(B, w_dim)``, truncated about w̄ with psi = ``truncation``."""
        ...

    def mean_latent(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """``(w_dim,)`` mean of ``n`` mapped samples (reproducible from ``seed``)."""
        ...

    def sample_w(self, n: int, truncation: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, w_dim)`` latents of random z (no grad)."""
        ...

    def synthesis(
        self,
        w: torch.Tensor,
        noise_mode: str = "const",
        return_features: bool = False,
        layers: int | Iterable[int] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Images ``(B, 3, R, R)`` in about [-1, 1] from ``(B, w_dim)`` or ``(B, num_ws, w_dim)``,
        optionally with ``{layer: (B, C, r, r)}`` feature maps."""
        ...

    def features(
        self, w: torch.Tensor, layers: int | Iterable[int] = (7,), noise_mode: str = "const"
    ) -> dict[int, torch.Tensor]:
        """Feature maps of ``layers`` only, computing no more of the network than needed."""
        ...

    def feature_shape(self, layer: int) -> tuple[int, int, int]:
        """``(C, H, W)`` of a feature layer."""
        ...


@runtime_checkable
class DenseTeacher(Protocol):
    """A frozen image -> per-pixel embedding network (the ``L_K1`` teacher).

    Implementations keep every parameter frozen and stay in eval mode; call
    them under ``torch.no_grad()`` during training.

    Attributes:
        out_channels: Channels ``C`` of the embedding.
    """

    out_channels: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [-1, 1] -> ``(B, C, h, w)`` embedding at the teacher's own resolution."""
        ...

    def resize_to(self, x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """Resize a ``(B, C, h, w)`` map to ``size`` (bilinear, ``align_corners=False``)."""
        ...
