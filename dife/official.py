"""Import of the authors' released DIFE checkpoints (``hg.*`` + ``transformer.*``).

The authors' network (https://github.com/kingsj0405/DIFE) stores the hourglass
encoder under ``hg.*`` and the domain converters under
``transformer.interspecies2d{i}_layer{j}[_norm].*``. dife's modules compute
exactly the same function under other names; the table [RENAME_RULES][dife.official.RENAME_RULES]
maps one layout onto the other, in both directions:

================================================  ==============================
authors' key prefix                               dife key prefix
================================================  ==============================
``hg.hg.0.layer1_4.``                             ``encoder.hourglass.bottom.``
``hg.hg.0.layer{n}_1.``                           ``encoder.hourglass.skip{n}.``
``hg.hg.0.layer{n}_2.``                           ``encoder.hourglass.down{n}.``
``hg.hg.0.layer{n}_3.``                           ``encoder.hourglass.up{n}.``
``hg.output_layers.0.0.``                         ``encoder.head_blocks.``
``hg.output_layers.0.1.``                         ``encoder.head_conv.``
``hg.output_layers.0.2.``                         ``encoder.head_norm.``
``hg.output_layers.0.5.``                         ``encoder.out_conv.``
``hg.conv1.``                                     ``encoder.conv1.``
``hg.bn1.``                                       ``encoder.norm1.``
``hg.layer{k}.0.``                                ``encoder.layer{k}.``
``transformer.interspecies2d{i}_layer{j}_norm.``  ``converters.{i}.norm{j}.``
``transformer.interspecies2d{i}_layer{j}.``       ``converters.{i}.conv{j}.``
================================================  ==============================

and, inside residual blocks ([BLOCK_RULES][dife.official.BLOCK_RULES]), the path segments
``bn{i}`` -> ``norm{i}`` and ``downsample`` -> ``shortcut``. (The authors'
``bn*`` modules are GroupNorms, like dife's ``norm*``.)

Example:
    >>> model = load_official("checkpoints/human+dog.pth")  # doctest: +SKIP
    >>> model.save_pretrained("dife-official-human-dog")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dife.checks import check_regular_file
from dife.config import DIFEConfig
from dife.errors import CheckpointError, InputError, ModelNotFoundError

if TYPE_CHECKING:
    from dife.modeling.dife import DIFE

__all__ = [
    "RENAME_RULES",
    "BLOCK_RULES",
    "official_to_dife",
    "dife_to_official",
    "infer_config",
    "extract_state_dict",
    "read_official",
    "load_official",
    "official_key",
    "default_domain_names",
]

#: (authors' key prefix, dife key prefix); ``{name}`` stands for a decimal
#: index that is carried over. The first rule whose prefix matches wins.
RENAME_RULES: tuple[tuple[str, str], ...] = (
    ("hg.hg.0.layer1_4.", "encoder.hourglass.bottom."),
    ("hg.hg.0.layer{n}_1.", "encoder.hourglass.skip{n}."),
    ("hg.hg.0.layer{n}_2.", "encoder.hourglass.down{n}."),
    ("hg.hg.0.layer{n}_3.", "encoder.hourglass.up{n}."),
    ("hg.output_layers.0.0.", "encoder.head_blocks."),
    ("hg.output_layers.0.1.", "encoder.head_conv."),
    ("hg.output_layers.0.2.", "encoder.head_norm."),
    ("hg.output_layers.0.5.", "encoder.out_conv."),
    ("hg.conv1.", "encoder.conv1."),
    ("hg.bn1.", "encoder.norm1."),
    ("hg.layer{k}.0.", "encoder.layer{k}."),
    ("transformer.interspecies2d{i}_layer{j}_norm.", "converters.{i}.norm{j}."),
    ("transformer.interspecies2d{i}_layer{j}.", "converters.{i}.conv{j}."),
)

#: (authors' path segment, dife path segment) inside residual blocks, applied
#: to the part of the key after the matched prefix.
BLOCK_RULES: tuple[tuple[str, str], ...] = (
    ("bn{i}", "norm{i}"),
    ("downsample", "shortcut"),
)

_AUTHORS_REPO = "https://github.com/kingsj0405/DIFE"
# Domain names of the authors' released checkpoints, by number of converters.
_PAPER_DOMAIN_NAMES: dict[int, tuple[str, ...]] = {2: ("human", "dog"), 3: ("human", "dog", "cat")}

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


def _compile(template: str, *, whole: bool) -> tuple[re.Pattern[str], str]:
    """Template with ``{name}`` holes -> (regex capturing the holes, format string)."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>\d+)" for i, p in enumerate(parts))
    return re.compile(regex + ("$" if whole else "")), template


def _table(rules: Iterable[tuple[str, str]], *, reverse: bool, whole: bool) -> list[tuple[re.Pattern[str], str]]:
    out = []
    for src, dst in rules:
        if reverse:
            src, dst = dst, src
        out.append((_compile(src, whole=whole)[0], dst))
    return out


_TO_DIFE = _table(RENAME_RULES, reverse=False, whole=False)
_TO_OFFICIAL = _table(RENAME_RULES, reverse=True, whole=False)
_BLOCK_TO_DIFE = _table(BLOCK_RULES, reverse=False, whole=True)
_BLOCK_TO_OFFICIAL = _table(BLOCK_RULES, reverse=True, whole=True)


def _rename_key(
    key: str, prefixes: list[tuple[re.Pattern[str], str]], segments: list[tuple[re.Pattern[str], str]]
) -> str:
    for pattern, template in prefixes:
        m = pattern.match(key)
        if m is None:
            continue
        rest = key[m.end() :].split(".")
        for i, seg in enumerate(rest[:-1]):  # the last segment is the tensor name (weight/bias)
            for seg_pattern, seg_template in segments:
                sm = seg_pattern.match(seg)
                if sm:
                    rest[i] = seg_template.format(**sm.groupdict())
                    break
        return template.format(**m.groupdict()) + ".".join(rest)
    return key


def official_to_dife(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename the authors' keys to dife's (values are passed through untouched).

    Keys that match no rule of [RENAME_RULES][dife.official.RENAME_RULES] are kept unchanged, so that
    a strict load reports them as unexpected under their original name.

    Args:
        state_dict: ``{authors' key: tensor}`` (a ``module.`` prefix must
            already be stripped; see [extract_state_dict][dife.official.extract_state_dict]).

    Returns:
        ``{dife key: tensor}`` in the same order.
    """
    return {_rename_key(k, _TO_DIFE, _BLOCK_TO_DIFE): v for k, v in state_dict.items()}


def dife_to_official(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of [official_to_dife][dife.official.official_to_dife]: dife keys -> the authors' keys.

    Useful to export a dife model for the authors' code, and to test the
    renaming. Keys that match no rule are kept unchanged.
    """
    return {_rename_key(k, _TO_OFFICIAL, _BLOCK_TO_OFFICIAL): v for k, v in state_dict.items()}


def default_domain_names(num_domains: int) -> tuple[str, ...]:
    """Domain names for a checkpoint with ``num_domains`` converters.

    The authors' converters are ordered human, dog (, cat); any other count
    gets ``d0 .. d{N-1}``.
    """
    return _PAPER_DOMAIN_NAMES.get(num_domains, tuple(f"d{i}" for i in range(num_domains)))


def _shape(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
    value = state_dict.get(key)
    if value is None:
        hint = ", ".join(list(state_dict)[:5])
        raise CheckpointError(
            f"cannot infer the architecture: key {key!r} is missing "
            f"(is this the authors' DIFE checkpoint? its first keys are: {hint})"
        )
    return tuple(getattr(value, "shape", ()))


def _indices(keys: Iterable[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _consecutive(found: list[int], what: str, *, start: int) -> int:
    if found != list(range(start, start + len(found))):
        raise CheckpointError(f"cannot infer the architecture: {what} are numbered {found}, expected {start}..")
    return len(found)


def infer_config(state_dict: Mapping[str, Any], domains: Iterable[str] | None = None) -> DIFEConfig:
    """Infer the architecture of an authors'-layout state dict from its shapes.

    Reads ``embed_dim``, ``planes_conv1``, ``planes_block``, ``planes_hg``,
    ``num_blocks``, ``depth``, and (when ``transformer.*`` keys are present)
    ``converter_hidden``, ``converter_dim`` and the number of domains.
    ``gn_groups`` cannot be seen in the shapes and stays 16. An encoder-only
    (``hg.*`` only) state dict gives ``converter_dim=0``.

    Args:
        state_dict: ``{authors' key: tensor}``; anything with ``.shape`` works
            (meta tensors included).
        domains: Names of the converters' domains, in converter order.
            Defaults to [default_domain_names][dife.official.default_domain_names].

    Returns:
        The matching [DIFEConfig][dife.config.DIFEConfig] (paper preprocessing).

    Raises:
        CheckpointError: if a key the architecture needs is missing or the
            numbering of stages / converters has holes.
        InputError: if ``domains`` does not name one domain per converter.
    """
    keys = list(state_dict)
    if not any(k.startswith("hg.") for k in keys):
        raise CheckpointError(
            f"not an authors' DIFE checkpoint: no 'hg.*' (hourglass encoder) keys among {len(keys)} keys "
            f"(first: {keys[:5]})"
        )
    depth = _consecutive(_indices(keys, r"hg\.hg\.0\.layer(\d+)_1\."), "hourglass levels (hg.hg.0.layer{n}_1)", start=1)
    if depth == 0:
        raise CheckpointError("cannot infer the architecture: no hourglass keys 'hg.hg.0.layer{n}_1.*'")
    num_blocks = _consecutive(
        _indices(keys, rf"hg\.hg\.0\.layer{depth}_1\.(\d+)\."), f"blocks of hg.hg.0.layer{depth}_1", start=0
    )
    n_conv = _consecutive(
        _indices(keys, r"transformer\.interspecies2d(\d+)_"), "converters (interspecies2d{i})", start=0
    )

    kwargs: dict[str, Any] = {
        "embed_dim": _shape(state_dict, "hg.output_layers.0.5.weight")[0],
        "planes_conv1": _shape(state_dict, "hg.conv1.weight")[0],
        "planes_block": _shape(state_dict, "hg.layer2.0.conv1.weight")[0],
        "planes_hg": _shape(state_dict, "hg.layer3.0.conv1.weight")[0],
        "num_blocks": num_blocks,
        "depth": depth,
    }
    if n_conv:
        kwargs["converter_hidden"] = _shape(state_dict, "transformer.interspecies2d0_layer1.weight")[0]
        kwargs["converter_dim"] = _shape(state_dict, "transformer.interspecies2d0_layer3.weight")[0]
    else:
        kwargs["converter_dim"] = 0

    if domains is None:
        names = default_domain_names(n_conv)
    else:
        if isinstance(domains, str):
            raise InputError(f"domains must be a sequence of names, got the string {domains!r}")
        names = tuple(str(d) for d in domains)
        if n_conv and len(names) != n_conv:
            raise InputError(
                f"domains lists {len(names)} names {list(names)} but the checkpoint has {n_conv} converters"
            )
    kwargs["domains"] = names
    return DIFEConfig(**kwargs)


def extract_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the ``{key: tensor}`` state dict inside a loaded checkpoint object.

    Accepts a raw state dict, one wrapped as ``{"state_dict": ...}``,
    ``{"model": ...}``, ``{"model_state_dict": ...}`` or ``{"net": ...}``, and
    strips the ``module.`` prefix of ``nn.DataParallel`` checkpoints.

    Raises:
        CheckpointError: if no mapping of names to tensors is found.
    """
    for _ in range(3):  # unwrap at most a few levels
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source} holds no state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{source} is not a state dict of tensors: {len(bad)} entries are not tensors (first: {bad[:5]})"
        )
    if all(k.startswith("module.") for k in obj):
        return {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor checkpoint (torch.load(weights_only=True) "
            f"rejected it: {reason}). Only load checkpoints from sources you trust."
        ) from None
    except Exception as e:  # truncated zip, bad magic number, EOF, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot read {path}: corrupt or truncated checkpoint ({type(e).__name__}: {reason})"
        ) from None


def read_official(
    path: str | os.PathLike[str], *, domains: Iterable[str] | None = None
) -> tuple[DIFEConfig, dict[str, torch.Tensor], str]:
    """Read one of the authors' checkpoints as a dife config and a dife-named state dict.

    The file is read with ``torch.load(weights_only=True)`` (never executing
    pickled code), its keys are renamed with [RENAME_RULES][dife.official.RENAME_RULES]
    and the architecture is inferred from the shapes ([infer_config][dife.official.infer_config]).
    The config records where the weights come from (``extra["source"]``) and
    that their licence is not dife's (``extra["license"]`` = ``"other"``,
    ``extra["terms"]``). Nothing is loaded into a model: see
    [load_official][dife.official.load_official].

    Args:
        path: The ``.pth`` / ``.pt`` file.
        domains: Converter domain names in order (default: [default_domain_names][dife.official.default_domain_names]).

    Returns:
        ``(config, state_dict, source)``: the inferred config, ``{dife key: tensor}``
        and the file name used in messages.

    Raises:
        ModelNotFoundError: if ``path`` does not exist or is a directory.
        CheckpointError: for a corrupt, truncated or unsafe file, or one that
            is not an authors' DIFE checkpoint.
        InputError: if ``domains`` does not name one domain per converter.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotFoundError(f"checkpoint {p} does not exist")
    if p.is_dir():
        raise ModelNotFoundError(f"{p} is a directory; pass the authors' .pth file (e.g. human+dog.pth)")
    check_regular_file(p, "checkpoint", error=CheckpointError)  # a FIFO would block torch.load forever
    state = extract_state_dict(_torch_load(p), source=str(p))
    config = infer_config(state, domains)
    config.extra = {
        "source": f"authors' checkpoint {p.name}",
        "trained": True,
        "license": "other",
        "terms": f"the terms of the authors' release ({_AUTHORS_REPO}); dife's MIT licence does not cover these weights",
    }
    return config, official_to_dife(state), str(p)


def load_official(path: str | os.PathLike[str], *, domains: Iterable[str] | None = None) -> DIFE:
    """Load one of the authors' released checkpoints (``human+dog.pth``...) into a [DIFE][dife.modeling.dife.DIFE].

    The file is read with ``torch.load(weights_only=True)`` (never executing
    pickled code), its keys are renamed with [RENAME_RULES][dife.official.RENAME_RULES], the
    architecture is inferred from the shapes ([infer_config][dife.official.infer_config]) and the
    weights are loaded strictly. Encoder-only (``hg.*``) checkpoints give a
    model without converters. The same as ``DIFE.from_official(path)``.

    Args:
        path: The ``.pth`` / ``.pt`` file.
        domains: Converter domain names in order; defaults to
            ``("human", "dog")`` for 2 converters, ``("human", "dog", "cat")``
            for 3, else ``d0..dN``.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        ModelNotFoundError: if ``path`` does not exist.
        CheckpointError: for a corrupt, truncated or unsafe file, or weights
            that do not fit (names the missing / unexpected keys and the
            shape mismatches).
    """
    import dife

    return dife.DIFE.from_official(path, domains=domains)


def official_key(key: str) -> str:
    """A dife key as the authors name it (used in error messages): ``encoder.norm1.weight`` -> ``hg.bn1.weight``."""
    return _rename_key(key, _TO_OFFICIAL, _BLOCK_TO_OFFICIAL)
