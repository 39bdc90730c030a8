"""The composed DIFE model: encoder Phi plus one converter Psi^d per domain."""

from __future__ import annotations

import torch
from torch import nn

from dife.config import DIFEConfig
from dife.errors import ShapeError
from dife.hub import HubMixin
from dife.modeling.converter import DomainConverter
from dife.modeling.hourglass import HourglassEncoder

__all__ = ["DIFE"]


class DIFE(HubMixin, nn.Module):
    """Dense Interspecies Face Embedding network.

    Tensor-level interface (stable):

    * ``model(x)``: ``x`` (B, 3, H, W) RGB in [-1, 1] -> raw, un-normalised
      embedding (B, ``embed_dim``, H, W).
    * ``model.convert(e, d)``: embedding -> species feature map of domain
      ``d`` (name or index), (B, ``converter_dim``, H, W).

    For images, keypoints and boxes use the functions of [dife][dife]
    ([dife.embed][dife.embedding.embed], [dife.transfer_keypoints][dife.transfer.transfer_keypoints]...), which handle
    cropping, resizing and coordinates.

    Weights: ``DIFE.from_pretrained(name_or_path)``, ``DIFE.from_official(path)``,
    ``model.save_pretrained(folder)`` and ``model.push_to_hub(repo_id)`` come
    from [HubMixin][dife.hub.HubMixin].

    Args:
        config: Architecture and preprocessing; defaults to the paper's.
    """

    def __init__(self, config: DIFEConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else DIFEConfig()
        c = self.config
        self.encoder = HourglassEncoder(
            embed_dim=c.embed_dim,
            planes_conv1=c.planes_conv1,
            planes_block=c.planes_block,
            planes_hg=c.planes_hg,
            num_blocks=c.num_blocks,
            depth=c.depth,
            gn_groups=c.gn_groups,
        )
        self.converters = nn.ModuleList(
            DomainConverter(c.embed_dim, c.converter_dim, c.converter_hidden, c.gn_groups) for _ in range(c.num_domains)
        )

    @property
    def domains(self) -> tuple[str, ...]:
        """Names of the domains that have a converter, in converter order."""
        return self.config.domains[: self.config.num_domains]

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a normalised batch.

        Args:
            x: (B, 3, H, W) float RGB in [-1, 1]; H and W divisible by
                ``self.encoder.stride`` (32 for the paper's network).

        Returns:
            (B, embed_dim, H, W) raw embedding.

        Raises:
            ShapeError: for any other shape.
        """
        self.check_input(x)
        return self.encoder(x)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise `ShapeError` unless ``x`` is what [forward][dife.modeling.dife.DIFE.forward] accepts.

        Args:
            x: Candidate input: a non-empty (B, 3, H, W) float tensor with H
                and W divisible by ``self.encoder.stride``.

        Raises:
            ShapeError: naming the bad shape or dtype.
        """
        stride = self.encoder.stride
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"DIFE expects a (B, 3, H, W) tensor, got {shape}")
        if x.shape[0] == 0 or x.shape[2] % stride or x.shape[3] % stride:
            raise ShapeError(f"DIFE expects a non-empty batch with H and W divisible by {stride}, got {tuple(x.shape)}")
        c = self.config
        bottom = (x.shape[2] // stride) * (x.shape[3] // stride) * (c.planes_hg // c.gn_groups)
        if bottom * x.shape[0] < 2:  # torch's group_norm refuses to normalise a single value
            raise ShapeError(
                f"input {tuple(x.shape)} is too small for this network: each GroupNorm group at the hourglass "
                f"bottom would hold a single value; use a larger input (the API uses {c.input_size}x{c.input_size})"
            )
        if not x.is_floating_point():
            raise ShapeError(f"DIFE expects a float tensor in [-1, 1], got dtype {x.dtype}")

    def convert(self, e: torch.Tensor, domain: int | str) -> torch.Tensor:
        """Apply the converter of one domain.

        Args:
            e: (B, embed_dim, H, W) embedding from [forward][dife.modeling.dife.DIFE.forward].
            domain: Domain name (e.g. ``"dog"``) or index.

        Returns:
            (B, converter_dim, H, W) species-specific feature map.

        Raises:
            UnknownDomainError: if the model has no such domain.
            ShapeError: if ``e`` is not (B, embed_dim, H, W).
        """
        i = self.config.domain_index(domain)
        if not isinstance(e, torch.Tensor) or e.ndim != 4 or e.shape[1] != self.config.embed_dim:
            shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ShapeError(f"convert expects a (B, {self.config.embed_dim}, H, W) embedding, got {shape}")
        return self.converters[i](e)
