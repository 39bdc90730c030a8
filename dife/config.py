"""Configuration of a DIFE model: architecture widths and preprocessing.

The config travels with the weights (``config.json`` next to
``model.safetensors``), so a saved model always knows how to rebuild itself and
how its inputs must be prepared.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from dife.checks import check_number
from dife.errors import CheckpointError, InputError, UnknownDomainError

__all__ = ["DIFEConfig", "PAPER_DOMAINS"]

#: Species of the paper's released models, in the authors' converter order.
PAPER_DOMAINS = ("human", "dog", "cat")


def check_spatial_prior(value: Any, what: str = "spatial_prior", error: type[Exception] = InputError) -> float:
    """Validate a spatial-prior weight ``λ`` (see :attr:`DIFEConfig.spatial_prior`).

    Args:
        value: The weight; must be a finite real number ``>= 0`` (not a bool).
        what: How the error message names the value.
        error: Exception class raised for a bad value.

    Returns:
        The weight as a float.

    Raises:
        InputError: (or ``error``) when the value is not a finite number >= 0.
    """
    return check_number(value, what, minimum=0, error=error)


@dataclass
class DIFEConfig:
    """Architecture and preprocessing of a DIFE model.

    The defaults are the authors' published architecture (13.17 M parameters
    for two domains): hourglass encoder with a 64-channel stem, 128-plane
    bottlenecks, one stack of depth 4 with 4 blocks per stage, 16-d output;
    one converter per domain (conv7x7-64, GN, ReLU, conv7x7-64, GN, ReLU,
    conv1x1-512).

    Attributes:
        embed_dim: Channels of the embedding E (16 in the paper).
        domains: Species names, one converter each, in converter order.
        converter_dim: Output channels of each converter (512 = StyleGAN2
            layer-7 width). 0 builds no converters (encoder only).
        converter_hidden: Hidden width of the converters (64).
        planes_conv1: Output channels of the 7x7 stride-2 stem.
        planes_block: Planes of the second stem bottleneck (output 2x).
        planes_hg: Planes of the hourglass bottlenecks (features are 2x).
        num_blocks: Residual blocks per hourglass stage.
        depth: Number of max-pool levels in the hourglass.
        gn_groups: Groups of every GroupNorm.
        input_size: Side of the square network input, in pixels.
        mean: Per-channel mean subtracted from RGB in [0, 1].
        std: Per-channel std dividing RGB in [0, 1] (0.5/0.5 maps to [-1, 1]).
        crop: Crop rule: ``"center_square"`` (square around the face box, or
            the centre square of the image without a box, resized to
            ``input_size``).
        spatial_prior: Default weight ``λ`` of the optional spatial prior of
            keypoint transfer (:func:`dife.transfer.transfer_keypoints`): a
            target pixel's score is its cosine similarity minus
            ``λ * d**2``, with ``d`` the distance between its relative position
            in the target crop and the source point's in the source crop (in
            crop sides). 0 (the paper) is pure appearance; a model may ship a
            positive value measured on a development set. Callers override it
            with ``spatial_prior=``.
        extra: Free-form metadata (teachers, training data, metrics...).
    """

    embed_dim: int = 16
    domains: tuple[str, ...] = ("human", "dog")
    converter_dim: int = 512
    converter_hidden: int = 64
    planes_conv1: int = 64
    planes_block: int = 128
    planes_hg: int = 128
    num_blocks: int = 4
    depth: int = 4
    gn_groups: int = 16
    input_size: int = 96
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop: str = "center_square"
    spatial_prior: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.domains = tuple(str(d) for d in self.domains)
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]
        if len(set(self.domains)) != len(self.domains):
            raise CheckpointError(f"duplicate domain names in config: {self.domains}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise CheckpointError(f"mean/std must be 3 values with std > 0, got {self.mean}/{self.std}")
        for name in ("embed_dim", "planes_conv1", "planes_block", "planes_hg", "num_blocks", "depth", "input_size"):
            if int(getattr(self, name)) <= 0:
                raise CheckpointError(f"config field {name} must be positive, got {getattr(self, name)}")
        self.spatial_prior = check_spatial_prior(self.spatial_prior, "config field spatial_prior", CheckpointError)
        if self.crop not in ("center_square",):
            raise CheckpointError(f"unknown crop rule {self.crop!r}; known: 'center_square'")

    @property
    def num_domains(self) -> int:
        """Number of domain converters."""
        return len(self.domains) if self.converter_dim > 0 else 0

    def domain_index(self, domain: int | str) -> int:
        """Index of a domain given by name or index.

        Raises:
            UnknownDomainError: if the name or index is not one of ``domains``.
        """
        if isinstance(domain, bool):
            raise UnknownDomainError(f"domain must be a name or an index, got {domain!r}")
        if isinstance(domain, int):
            if 0 <= domain < self.num_domains:
                return domain
            raise UnknownDomainError(
                f"domain index {domain} out of range: this model has {self.num_domains} domains {list(self.domains)}"
            )
        if isinstance(domain, str) and domain in self.domains and self.num_domains:
            return self.domains.index(domain)
        raise UnknownDomainError(
            f"unknown domain {domain!r}; this model knows {list(self.domains[: self.num_domains])}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["domains"] = list(self.domains)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DIFEConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(d, dict):
            raise CheckpointError(f"config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in ("model_type", "dife_version")}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(f"unknown config keys {unknown}; known: {sorted(names)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise CheckpointError(f"invalid config: {e}") from None

    def to_json(self) -> str:
        """Pretty JSON text of :meth:`to_dict`, with a ``model_type`` tag."""
        return json.dumps({"model_type": "dife", **self.to_dict()}, indent=2, sort_keys=False) + "\n"
