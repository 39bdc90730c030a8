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

from dife.checks import check_int, check_number
from dife.errors import CheckpointError, InputError, UnknownDomainError

__all__ = ["DIFEConfig", "PAPER_DOMAINS", "MAX_INPUT_SIZE", "MAX_WIDTH", "MAX_DOMAINS"]

#: Species of the paper's released models, in the authors' converter order.
PAPER_DOMAINS = ("human", "dog", "cat")


def check_spatial_prior(value: Any, what: str = "spatial_prior", error: type[Exception] = InputError) -> float:
    """Validate a spatial-prior weight ``λ`` (see [DIFEConfig.spatial_prior][dife.config.DIFEConfig.spatial_prior]).

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


#: Largest accepted ``input_size``: the network side, in pixels (96 in the paper). The embedding of one
#: image is ``embed_dim x input_size**2`` floats and the encoder's activations grow with its square,
#: so a config (e.g. downloaded from the Hub) cannot ask for hundreds of GB.
MAX_INPUT_SIZE = 1024
#: Largest accepted channel width (``embed_dim``, ``planes_*``, ``converter_*``; 512 is the widest in the paper).
MAX_WIDTH = 4096
#: Largest accepted number of domains (converters).
MAX_DOMAINS = 64

# (field, minimum, maximum) of the integer fields.
_INT_FIELDS = (
    ("embed_dim", 1, MAX_WIDTH),
    ("converter_dim", 0, MAX_WIDTH),
    ("converter_hidden", 1, MAX_WIDTH),
    ("planes_conv1", 1, MAX_WIDTH),
    ("planes_block", 1, MAX_WIDTH),
    ("planes_hg", 1, MAX_WIDTH),
    ("num_blocks", 1, 64),
    ("depth", 1, 9),
    ("gn_groups", 1, MAX_WIDTH),
    ("input_size", 1, MAX_INPUT_SIZE),
)


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise CheckpointError(f"config field domains must be a list of species names, got {value!r:.200}")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise CheckpointError(f"config field domains[{i}] must be a non-empty string, got {v!r:.200}")
    return tuple(value)


def _triple(value: Any, name: str, *, positive: bool) -> tuple[float, float, float]:
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # a numpy array or a tensor
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 3:
        raise CheckpointError(f"config field {name} must be 3 numbers (R, G, B), got {value!r:.200}")
    return tuple(  # type: ignore[return-value]
        check_number(v, f"config field {name}[{i}]", positive=positive, error=CheckpointError)
        for i, v in enumerate(value)
    )


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
            keypoint transfer ([dife.transfer.transfer_keypoints][dife.transfer.transfer_keypoints]): a
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
        self._validate()

    def _validate(self) -> None:
        """Check every field's type and range (see the module's limits); normalise sequences to tuples.

        Raises:
            CheckpointError: naming the first bad field and its value.
        """
        err = CheckpointError
        for name, lo, hi in _INT_FIELDS:
            setattr(
                self, name, check_int(getattr(self, name), f"config field {name}", minimum=lo, maximum=hi, error=err)
            )
        self.domains = _str_tuple(self.domains)
        if len(set(self.domains)) != len(self.domains):
            raise err(f"config field domains has duplicate names: {list(self.domains)}")
        if len(self.domains) > MAX_DOMAINS:
            raise err(f"config field domains has {len(self.domains)} names; at most {MAX_DOMAINS} are supported")
        self.mean = _triple(self.mean, "mean", positive=False)  # type: ignore[assignment]
        self.std = _triple(self.std, "std", positive=True)  # type: ignore[assignment]
        widths = ["planes_conv1", "planes_block", "planes_hg"] + (["converter_hidden"] if self.converter_dim else [])
        for name in widths:
            if getattr(self, name) % self.gn_groups:
                raise err(
                    f"config field gn_groups = {self.gn_groups} does not divide {name} = {getattr(self, name)} "
                    "(every GroupNorm needs channels divisible by its groups)"
                )
        self.spatial_prior = check_spatial_prior(self.spatial_prior, "config field spatial_prior", err)
        if not isinstance(self.crop, str) or self.crop not in ("center_square",):
            raise err(f"config field crop must be a known crop rule ('center_square'), got {self.crop!r}")
        if not isinstance(self.extra, dict) or not all(isinstance(k, str) for k in self.extra):
            raise err(f"config field extra must be a JSON object (a dict with string keys), got {self.extra!r:.200}")
        try:
            json.dumps(self.extra)
        except (TypeError, ValueError, RecursionError) as e:
            raise err(f"config field extra must hold JSON values only (it is saved in config.json): {e}") from None

    def check_runnable(self) -> None:
        """Check that the network accepts its own ``input_size`` (done for every config read from a file).

        ``input_size`` must be divisible by ``2 ** (depth + 1)`` (the encoder's
        stride), and the hourglass bottom must hold more than one value per
        GroupNorm group.

        Raises:
            CheckpointError: naming ``input_size`` / ``depth``.
        """
        stride = 2 ** (self.depth + 1)
        if self.input_size % stride:
            raise CheckpointError(
                f"config field input_size = {self.input_size} is not divisible by 2 ** (depth + 1) = {stride} "
                f"(depth = {self.depth}), so the network cannot run on it"
            )
        if (self.input_size // stride) ** 2 * (self.planes_hg // self.gn_groups) < 2:
            raise CheckpointError(
                f"config field input_size = {self.input_size} is too small for depth = {self.depth}: each GroupNorm "
                "group at the hourglass bottom would hold a single value"
            )

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
        """Build a config from [to_dict][dife.config.DIFEConfig.to_dict] output; unknown keys are an error."""
        if not isinstance(d, dict):
            raise CheckpointError(f"config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in ("model_type", "dife_version")}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(f"unknown config keys {unknown}; known: {sorted(names)}")
        try:
            config = cls(**d)
        except TypeError as e:  # pragma: no cover - every field is named above
            raise CheckpointError(f"invalid config: {e}") from None
        config.check_runnable()
        return config

    def to_json(self) -> str:
        """Pretty JSON text of [to_dict][dife.config.DIFEConfig.to_dict], with a ``model_type`` tag."""
        return json.dumps({"model_type": "dife", **self.to_dict()}, indent=2, sort_keys=False) + "\n"
