"""Saving, loading and sharing DIFE models: local folders, registry names, the Hugging Face Hub.

A saved model is a folder with three files:

* ``config.json``: [DIFEConfig][dife.config.DIFEConfig] (architecture and
  preprocessing: ``input_size``, ``mean``, ``std``, ``crop``) plus
  ``model_type`` and ``dife_version``;
* ``model.safetensors``: the weights (never pickle);
* ``README.md``: the model card.

Loading is always strict: every tensor must have a place in the model, with
its shape, and every parameter must be in the file.

**Cards, licences and provenance travel with the weights.** A model loaded
from a folder, the registry or the Hub keeps the card it came with
([HubMixin.model_card][dife.hub.HubMixin.model_card]); saving or pushing it
again writes that card unchanged. Passing card fields (``description=``,
``training_data=`` ...) writes a new card that keeps the original licence and
quotes the original card; only an explicit ``license=`` changes the licence.
The licence may also be recorded in the config (``config.extra["license"]``),
so it survives even without the card.

**Hub I/O** follows the ecosystem's conventions: ``revision``, ``token``,
``cache_dir``, ``force_download`` and ``local_files_only`` are passed to
`huggingface_hub.hf_hub_download`, and files come from (and go to) the
standard cache. Without a network connection, loading fails at once with a
[ModelNotFoundError][dife.errors.ModelNotFoundError] (or takes the files from
the cache) instead of retrying for half a minute.

[HubMixin][dife.hub.HubMixin] gives [dife.DIFE][dife.modeling.dife.DIFE]
its ``from_pretrained``, ``from_official``, ``save_pretrained`` and
``push_to_hub`` methods. It plays the role of
`huggingface_hub.PyTorchModelHubMixin` but keeps dife's rules: registry
names, safetensors only (no pickle fallback), strict loading, typed errors,
atomic writes that never replace a file dife did not write. This module does
not import [dife.modeling][dife.modeling]: the model class is the one the
mixin is called on (the functions of this module use ``dife.DIFE``).

Example:
    >>> model = DIFE.from_pretrained("dife-untrained")  # doctest: +SKIP
    >>> model.save_pretrained("my-dife")  # doctest: +SKIP
    >>> same = DIFE.from_pretrained("my-dife")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

import dife
from dife._io import atomic_path, atomic_write
from dife.checks import check_device, check_finite_tensors
from dife.config import DIFEConfig
from dife.errors import CheckpointError, DIFEError, InputError, ModelNotFoundError
from dife.official import official_key, read_official
from dife.registry import MODELS, default_model_name, list_models, resolve

if TYPE_CHECKING:
    from dife.modeling.dife import DIFE

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "HubMixin",
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "build_model",
    "check_state_dict",
    "read_config",
    "read_card",
    "model_card",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"

_CARD_KEYS = ("title", "description", "license", "terms", "tags", "teachers", "training_data", "metrics", "repo_id")
#: Card fields that only say where the model is published, not what it is (they keep a loaded card as is).
_WHERE_KEYS = ("repo_id",)
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Seconds to wait for a TCP connection to the Hub (or the HTTPS proxy) before calling the network absent.
_PROBE_TIMEOUT = 3.0
_CITATION = """@inproceedings{yang2022dife,
  title     = {Dense Interspecies Face Embedding},
  author    = {Yang, Sejong and Jeon, Subin and Nam, Seonghyeon and Kim, Seon Joo},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2022}
}"""

M = TypeVar("M", bound="HubMixin")


def _model_class() -> type[DIFE]:
    """The public model class, ``dife.DIFE`` (resolved through the package at call time)."""
    return dife.DIFE


# --------------------------------------------------------------------------- state dicts
def _few(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def check_state_dict(
    model: torch.nn.Module,
    state_dict: Mapping[str, Any],
    *,
    source: str = "checkpoint",
    display_key: Callable[[str], str] | None = None,
) -> None:
    """Check that ``state_dict`` fits ``model`` exactly: same keys, same shapes.

    Works on meta tensors (nothing is copied).

    Args:
        model: The module to fill.
        state_dict: ``{key: tensor}``.
        source: Name of the file, for messages.
        display_key: Maps a model key to the name shown in messages (e.g. the
            authors' name of a key).

    Raises:
        CheckpointError: naming the missing and unexpected keys (first few and
            the count) and every shape mismatch.
    """
    show = display_key or (lambda k: k)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    missing = [show(k) for k in expected if k not in state_dict]
    unexpected = [show(k) for k in state_dict if k not in expected]
    mismatched = [
        f"{show(k)}: file {tuple(v.shape)} vs model {expected[k]}"
        for k, v in state_dict.items()
        if k in expected and isinstance(v, torch.Tensor) and tuple(v.shape) != expected[k]
    ]
    problems = []
    if not_tensors:
        problems.append(f"{len(not_tensors)} entries are not tensors ({_few(not_tensors)})")
    if missing:
        problems.append(f"{len(missing)} missing keys ({_few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_few(mismatched)})")
    if problems:
        raise CheckpointError(f"{source} does not fit the DIFE architecture: " + "; ".join(problems))


def _build(
    cls: type[M],
    config: DIFEConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    display_key: Callable[[str], str] | None = None,
) -> M:
    with torch.device("meta"):
        model = cls(config)  # type: ignore[call-arg]
    check_state_dict(model, state_dict, source=source, display_key=display_key)  # type: ignore[arg-type]
    check_finite_tensors(state_dict, source)  # NaN / inf weights would give NaN keypoints with no error
    tensors = {
        k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v).contiguous()
        for k, v in state_dict.items()
    }
    try:
        model.load_state_dict(tensors, strict=True, assign=True)  # type: ignore[attr-defined]
    except RuntimeError as e:  # pragma: no cover - check_state_dict catches what torch would
        raise CheckpointError(f"{source} does not fit the DIFE architecture: {e}") from None
    return model.eval()  # type: ignore[attr-defined, no-any-return]


def build_model(
    config: DIFEConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
    display_key: Callable[[str], str] | None = None,
) -> DIFE:
    """Build ``DIFE(config)`` and load ``state_dict`` into it strictly.

    The module is created on the meta device and takes the given tensors
    (converted to float32), so no time is spent on a random initialisation.

    Returns:
        The model in eval mode, on the device of the tensors (CPU for files).

    Raises:
        CheckpointError: if the weights do not fit (see [check_state_dict][dife.hub.check_state_dict]).
    """
    return _build(_model_class(), config, state_dict, source=source, display_key=display_key)


# --------------------------------------------------------------------------- config
def _config_json(config: DIFEConfig) -> str:
    d = json.loads(config.to_json())
    d = {"model_type": d.pop("model_type", "dife"), "dife_version": dife.__version__, **d}
    return json.dumps(d, indent=2) + "\n"


def read_config(path: str | os.PathLike[str]) -> DIFEConfig:
    """Read a ``config.json`` written by [save_pretrained][dife.hub.save_pretrained].

    Raises:
        ModelNotFoundError: if the file does not exist.
        CheckpointError: naming the file, if it is not valid JSON, is not a
            dife config, or has unknown / invalid fields.
    """
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelNotFoundError(f"{p} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{p}: not a readable JSON config ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{p}: a DIFE config must be a JSON object, got {type(d).__name__}")
    if d.get("model_type", "dife") != "dife":
        raise CheckpointError(f"{p}: model_type is {d.get('model_type')!r}, not 'dife'")
    try:
        return DIFEConfig.from_dict(d)
    except CheckpointError as e:
        raise CheckpointError(f"{p}: {e}") from None


# --------------------------------------------------------------------------- model card
def read_card(path: str | os.PathLike[str]) -> str | None:
    """The text of a model card file, or ``None`` when there is none (or it is not UTF-8 text).

    Args:
        path: A ``README.md``.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _card_metadata(text: str | None) -> dict[str, Any]:
    """The YAML front matter of a card (``{}`` without one, or when it is malformed)."""
    if not text or not text.startswith("---"):
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard(text, ignore_metadata_errors=True).data.to_dict()
    except Exception:  # malformed YAML: the card is kept as text, its metadata is unknown
        return {}
    return data if isinstance(data, dict) else {}


def _card_body(text: str) -> str:
    """A card without its YAML front matter."""
    if text.startswith("---"):
        parts = text.split("\n---", 1)
        if len(parts) == 2:
            return parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
    return text


def _bullets(value: Any, empty: str = "not recorded") -> list[str]:
    if value is None or value == "" or value == [] or value == {}:
        return [f"- {empty}"]
    if isinstance(value, Mapping):
        return [f"- {k}: {v}" for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [f"- {v}" for v in value]
    return [f"- {value}"]


def _inherited_license(model: Any) -> str | None:
    """The licence recorded with the model: its loaded card's, else ``config.extra["license"]``."""
    lic = _card_metadata(getattr(model, "model_card", None)).get("license")
    if not lic:
        lic = model.config.extra.get("license")
    return str(lic) if lic else None


def model_card(model: DIFE, **card: Any) -> str:
    """The ``README.md`` model card of ``model`` (YAML front matter + Markdown).

    A model loaded with a card ([HubMixin.model_card][dife.hub.HubMixin.model_card])
    keeps it: without fields other than ``repo_id`` that card is returned
    unchanged. With fields, a new card is written from them; it keeps the
    original licence unless ``license`` is given, and quotes the original card
    in full under "Provenance". Set ``model.model_card = None`` first to write
    a card without the original.

    Values come from ``card`` first, then ``model.config.extra``.

    Args:
        model: The model described.
        **card: ``title``, ``description``, ``license`` (default: the
            licence recorded with the model, else ``"mit"``), ``terms`` (the
            terms of use of the weights, in words), ``tags`` (added to the
            standard ones), ``teachers``, ``training_data``, ``metrics``
            (mapping name -> value) and ``repo_id`` (used in the loading
            snippet).

    Raises:
        InputError: for an unknown keyword.
    """
    from huggingface_hub import ModelCardData

    unknown = sorted(set(card) - set(_CARD_KEYS))
    if unknown:
        raise InputError(f"unknown model card fields {unknown}; known: {list(_CARD_KEYS)}")
    original = getattr(model, "model_card", None)
    if original and not set(card) - set(_WHERE_KEYS):
        return str(original)
    c = model.config
    info = {**{k: v for k, v in c.extra.items() if k in _CARD_KEYS}, **card}
    licence = str(card.get("license") or _inherited_license(model) or "mit")
    trained = c.extra.get("trained")
    tags = ["dife", "pytorch", "dense-correspondence", "face", "keypoint-transfer", *c.domains[: c.num_domains]]
    tags += [str(t) for t in info.get("tags") or [] if str(t) not in tags]
    n_params = sum(p.numel() for p in model.parameters())
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    title = info.get("title") or info.get("repo_id") or "DIFE model"
    load_from = info.get("repo_id") or "path/to/this/folder"
    none = "none (untrained)" if trained is False else "not recorded"
    metadata = ModelCardData(library_name="dife", license=licence, tags=tags).to_yaml()
    lines = ["---", metadata, "---", "", f"# {title}", ""]
    if info.get("description"):
        lines += [str(info["description"]), ""]
    if trained is False:
        lines += [
            "> **Untrained weights.** This model is a random initialisation, for plumbing and tests only; "
            "its embeddings carry no meaning.",
            "",
        ]
    if c.extra.get("source"):
        lines += [f"Weights: {c.extra['source']}.", ""]
    if info.get("terms"):
        lines += [f"**Terms.** {info['terms']}", ""]
    lines += [
        "## Architecture",
        "",
        "DIFE (Dense Interspecies Face Embedding, Yang et al., NeurIPS 2022): an hourglass encoder maps every "
        f"pixel of a face crop to a {c.embed_dim}-d embedding shared by all species.",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| parameters | {n_params / 1e6:.2f} M (encoder {n_enc / 1e6:.2f} M) |",
        f"| embedding | {c.embed_dim} channels, same resolution as the input |",
        f"| encoder | stem {c.planes_conv1}/{c.planes_block}, hourglass planes {c.planes_hg}, depth {c.depth}, "
        f"{c.num_blocks} blocks per stage, GroupNorm({c.gn_groups}) |",
        f"| domain converters | {c.num_domains}"
        + (
            f" (conv7x7-{c.converter_hidden}, conv7x7-{c.converter_hidden}, conv1x1-{c.converter_dim})"
            if c.num_domains
            else ""
        )
        + " |",
        f"| domains | {', '.join(c.domains[: c.num_domains]) or 'none (encoder only)'} |",
        f"| input | {c.input_size}x{c.input_size} RGB, crop rule `{c.crop}`, normalised with mean {list(c.mean)}, std {list(c.std)} |",
        "",
        "## Training",
        "",
        "Teachers:",
        *_bullets(info.get("teachers"), none),
        "",
        "Data:",
        *_bullets(info.get("training_data"), none),
        "",
        "## Evaluation",
        "",
        *_bullets(info.get("metrics"), none),
        "",
        "## How to load",
        "",
        "```python",
        "from dife import DIFE",
        "",
        f"model = DIFE.from_pretrained({json.dumps(str(load_from))})",
        "```",
        "",
        f"Written by dife {dife.__version__} (`pip install dife`).",
        "",
    ]
    if original:
        lines += [
            "## Provenance",
            "",
            f"These weights come from a model with its own card (licence: `{_inherited_license(model) or 'not stated'}`), "
            "quoted in full:",
            "",
            "<details><summary>Original model card</summary>",
            "",
            _card_body(str(original)).strip(),
            "",
            "</details>",
            "",
        ]
    lines += ["## Citation", "", "```bibtex", _CITATION, "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- save
def _is_dife_file(path: Path) -> bool:
    """Whether an existing file in a save folder was written by dife (so it may be replaced)."""
    try:
        if path.name == CONFIG_NAME:
            return json.loads(path.read_text(encoding="utf-8")).get("model_type") == "dife"
        if path.name == CARD_NAME:
            head = path.read_text(encoding="utf-8")[:400]
            return head.startswith("---") and "library_name: dife" in head
        if path.name == WEIGHTS_NAME:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return "dife_version" in (f.metadata() or {})
    except Exception:
        return False
    return False


def save_pretrained(model: DIFE, directory: str | os.PathLike[str], **card: Any) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a ``README.md`` model card.

    Every file is written atomically. Existing files of an earlier dife save
    are replaced; a file of the same name that dife did not write is never
    overwritten, and nothing else in the folder is touched. A model loaded
    with a card keeps it (see [model_card][dife.hub.model_card]).

    Args:
        model: The model to save.
        directory: Destination folder (created if needed).
        **card: Model card fields, see [model_card][dife.hub.model_card].

    Returns:
        The folder.

    Raises:
        InputError: if ``model`` is not a DIFE, ``directory`` is a file, a
            file of the same name was not written by dife, or a card field is
            unknown.
    """
    from safetensors.torch import save_file

    if not isinstance(model, HubMixin) or not isinstance(model, torch.nn.Module):
        raise InputError(f"save_pretrained expects a dife.DIFE model, got {type(model).__name__}")
    out = Path(directory).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    for name in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
        if (out / name).exists() and not _is_dife_file(out / name):
            raise InputError(f"refusing to overwrite {out / name}: it was not written by dife; choose another folder")
    text = model_card(model, **card)  # type: ignore[arg-type]
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "dife_version": dife.__version__})
    with atomic_write(out / CARD_NAME, "wb") as f:
        f.write(text.encode("utf-8"))
    with atomic_write(out / CONFIG_NAME, "wb") as f:  # last: a config marks a complete save
        f.write(_config_json(model.config).encode("utf-8"))
    return out


# --------------------------------------------------------------------------- load
def _device(device: str | torch.device | None) -> torch.device | None:
    return check_device(device)


def _load_folder_files(cls: type[M], config_path: Path, weights_path: Path, card_path: Path | None) -> M:
    from safetensors.torch import load_file

    config = read_config(config_path)
    try:
        state = load_file(str(weights_path), device="cpu")
    except FileNotFoundError:
        raise ModelNotFoundError(f"{weights_path} does not exist") from None
    except Exception as e:  # SafetensorError, OSError, ...
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    model = _build(cls, config, state, source=str(weights_path))
    model.model_card = read_card(card_path) if card_path is not None else None
    return model


def _from_local(cls: type[M], path: Path) -> M:
    if path.is_dir():
        cfg, w = path / CONFIG_NAME, path / WEIGHTS_NAME
        if cfg.is_file() and w.is_file():
            return _load_folder_files(cls, cfg, w, path / CARD_NAME)
        ckpts = sorted(p.name for p in path.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES)
        hint = (
            f"; it holds PyTorch checkpoints {ckpts[:3]}: for the authors' checkpoints use "
            f"DIFE.from_official(path) or `dife convert-official PATH OUTDIR`"
            if ckpts
            else ""
        )
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
        raise ModelNotFoundError(f"{path} is not a dife model folder: missing {missing}{hint}")
    if path.suffix == ".safetensors":
        cfg = path.parent / CONFIG_NAME
        if not cfg.is_file():
            raise ModelNotFoundError(f"{path} needs its {CONFIG_NAME} beside it ({cfg} does not exist)")
        return _load_folder_files(cls, cfg, path, path.parent / CARD_NAME)
    if path.name == CONFIG_NAME:
        return _from_local(cls, path.parent)
    if path.suffix in _CHECKPOINT_SUFFIXES:
        raise CheckpointError(
            f"{path} is a PyTorch checkpoint, not a dife model: if it is the authors' checkpoint "
            f"(human+dog.pth...), load it with DIFE.from_official({str(path)!r}) or convert it once with "
            f"`dife convert-official {path} OUTDIR`"
        )
    raise CheckpointError(f"{path}: unrecognised file; expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")


def _hub_reason(e: Exception, filename: str, revision: str | None) -> str:
    from huggingface_hub import errors as hf

    if isinstance(e, hf.RevisionNotFoundError):
        return f"revision {revision!r} does not exist"
    if isinstance(e, hf.RepositoryNotFoundError):
        return "the repository does not exist, or is private / gated and no valid token was given"
    if isinstance(e, hf.LocalEntryNotFoundError) or isinstance(e, hf.OfflineModeIsEnabled):
        return (
            f"{filename} is not in the local cache and downloading is disabled or impossible "
            "(offline: HF_HUB_OFFLINE=1, local_files_only=True, or no network)"
        )
    if isinstance(e, hf.EntryNotFoundError):
        return f"the repository has no file {filename}"
    if isinstance(e, hf.HFValidationError):
        return f"invalid repository id or revision ({e})"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be reached now (``None`` when it can), without any HTTP request.

    Opens (and closes) one TCP connection to the Hub endpoint, or to the HTTPS
    proxy when one is configured, with a short timeout; the Hub client itself
    retries a failing connection for about half a minute before giving up.
    """
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    target = endpoint
    proxy = getproxies().get("https")
    if proxy and endpoint.hostname and not proxy_bypass(endpoint.hostname):
        target = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = target.hostname
    if not host:
        return None  # nothing to probe: let the client decide
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            return None
    except OSError as e:
        return f"no network connection to {host}:{port} ({e.strerror or type(e).__name__})"


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _from_hub(
    cls: type[M],
    repo_id: str,
    *,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    force_download: bool,
    local_files_only: bool,
) -> M:
    import huggingface_hub

    no_network = None if (local_files_only or _hub_offline()) else _hub_unreachable()
    cache_only = local_files_only or no_network is not None

    def fetch(filename: str) -> Path:
        return Path(
            huggingface_hub.hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                force_download=force_download and not cache_only,
                local_files_only=cache_only,
                library_name="dife",
                library_version=dife.__version__,
            )
        )

    paths = {}
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            if no_network is not None and force_download:
                raise ConnectionError(f"force_download needs the network: {no_network}")
            paths[filename] = fetch(filename)
        except Exception as e:  # every failure at the network boundary becomes one clear error
            reason = _hub_reason(e, filename, revision)
            if no_network is not None and not isinstance(e, ConnectionError):
                reason = f"{no_network}, and {filename} is not in the local cache"
            raise ModelNotFoundError(
                f"could not get {filename} from the Hugging Face Hub repo {repo_id!r} "
                f"(revision {revision or 'main'}; dife needs {CONFIG_NAME} and {WEIGHTS_NAME}): "
                f"{reason}. To load a model without the Hub, pass a local folder "
                f"holding {CONFIG_NAME} and {WEIGHTS_NAME} (written by DIFE.save_pretrained), e.g. "
                f"DIFE.from_pretrained('/path/to/folder'), or a registered name: {list_models()}"
            ) from None
    try:
        card: Path | None = fetch(CARD_NAME)
    except Exception:  # the card is optional: a repository without one still loads
        card = None
    return _load_folder_files(cls, paths[CONFIG_NAME], paths[WEIGHTS_NAME], card)


def _from_registry(cls: type[M], name: str, hub_kwargs: dict[str, Any]) -> M:
    entry = resolve(name)
    if entry.source == "package":
        assert entry.local_dir is not None
        return _from_local(cls, entry.local_dir)
    if entry.source == "hub":
        assert entry.repo_id is not None
        kwargs = {**hub_kwargs, "revision": hub_kwargs["revision"] or entry.revision}
        return _from_hub(cls, entry.repo_id, **kwargs)
    # "random": deterministic initialisation that leaves the global RNG alone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.seed or 0)
        return cls(entry.make_config()).eval()  # type: ignore[call-arg, attr-defined, no-any-return]


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.endswith((".safetensors", ".json", *_CHECKPOINT_SUFFIXES))
    )


def _load(
    cls: type[M],
    name_or_path: str | os.PathLike[str] | None,
    *,
    device: str | torch.device | None,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    force_download: bool,
    local_files_only: bool,
) -> M:
    dev = _device(device)
    hub_kwargs = {
        "revision": revision,
        "token": token,
        "cache_dir": cache_dir,
        "force_download": bool(force_download),
        "local_files_only": bool(local_files_only),
    }
    if name_or_path is None:
        name_or_path = default_model_name()
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(f"from_pretrained expects a name, path or repo id, got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and name in MODELS:
        model = _from_registry(cls, name, hub_kwargs)
    else:
        path = Path(name).expanduser()
        if path.exists():
            model = _from_local(cls, path)
        elif not isinstance(name_or_path, str) or _looks_like_path(name):
            raise ModelNotFoundError(f"{name}: no such file or directory")
        elif _REPO_ID.match(name):
            model = _from_hub(cls, name, **hub_kwargs)
        else:
            raise ModelNotFoundError(
                f"{name!r} is not a registered model ({list_models()}), an existing local path, "
                "or a Hugging Face Hub repo id of the form 'owner/name'"
            )
    if dev is not None:
        model = model.to(dev)  # type: ignore[attr-defined]
    return model.eval()  # type: ignore[attr-defined, no-any-return]


def from_pretrained(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
) -> DIFE:
    """Load a DIFE model.

    ``name_or_path`` is resolved in this order:

    1. ``None``: the registry's default ([default_model_name][dife.registry.default_model_name]);
    2. a registered short name ([list_models][dife.registry.list_models]);
    3. a local folder with ``config.json`` and ``model.safetensors``;
    4. a local ``.safetensors`` file with ``config.json`` beside it
       (a local ``.pth``/``.pt`` file gives a hint to use
       ``DIFE.from_official``);
    5. otherwise a Hugging Face Hub repo id ``owner/name``, whose
       ``config.json``, ``model.safetensors`` and (if present) ``README.md``
       are downloaded (or taken from the cache).

    Weights are loaded strictly (every key, every shape). The ``README.md``
    beside the weights is kept on the model
    ([HubMixin.model_card][dife.hub.HubMixin.model_card]).

    Args:
        name_or_path: Name, path or repo id.
        device: Where to put the model (default: CPU).
        revision: Hub branch, tag or commit.
        token: Hub token for private or gated repositories (default: the
            logged-in user's; ``False``: none).
        cache_dir: Hub cache folder (default: the standard Hugging Face cache).
        force_download: Download the Hub files again even if they are cached.
        local_files_only: Hub: use the local cache only, never the network.

    Returns:
        The model, in eval mode.

    Raises:
        ModelNotFoundError: if nothing is found (says what was looked for and
            how to pass a local path instead); at once when there is no network
            and the files are not cached.
        CheckpointError: if the files are corrupt or do not fit.
        InputError: for an argument of the wrong type or a bad device.
    """
    return _load(
        _model_class(),
        name_or_path,
        device=device,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        force_download=force_download,
        local_files_only=local_files_only,
    )


# --------------------------------------------------------------------------- push
def push_to_hub(
    model: DIFE,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload DIFE model",
    revision: str | None = None,
    create_pr: bool = False,
    **card: Any,
) -> str:
    """Upload ``model`` to a Hugging Face Hub repository (created if needed).

    Writes the three files of [save_pretrained][dife.hub.save_pretrained] into a
    temporary folder and uploads it in one commit. A model loaded with a card
    uploads that card (see [model_card][dife.hub.model_card]).

    Args:
        model: The model.
        repo_id: ``owner/name``.
        private: Create the repository as private (if it does not exist).
        token: Hub token (default: the logged-in user's).
        commit_message: Message of the commit.
        revision: Branch to push to (default: the main branch).
        create_pr: Open a pull request instead of committing to the branch.
        **card: Model card fields, see [model_card][dife.hub.model_card].

    Returns:
        The URL of the repository.

    Raises:
        InputError: for an invalid ``repo_id`` or model.
        DIFEError: if the Hub refuses (authentication, network...).
    """
    import huggingface_hub

    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise InputError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    card.setdefault("repo_id", repo_id)
    with tempfile.TemporaryDirectory(prefix="dife-push-") as tmp:
        folder = save_pretrained(model, tmp, **card)
        try:  # without a network the client fails at once here (no retries for uploads)
            api = huggingface_hub.HfApi(token=token)
            url = api.create_repo(repo_id, exist_ok=True, private=private)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message=commit_message,
                revision=revision,
                create_pr=create_pr,
            )
        except Exception as e:
            raise DIFEError(
                f"pushing to the Hugging Face Hub repo {repo_id!r} failed: {_hub_reason(e, 'the model files', revision)}"
            ) from None
    return str(url)


# --------------------------------------------------------------------------- the mixin
class HubMixin:
    """Loading, saving and sharing, mixed into [dife.DIFE][dife.modeling.dife.DIFE].

    The counterpart of `huggingface_hub.PyTorchModelHubMixin` for dife: the
    same method names and Hub arguments, with dife's registry names,
    safetensors-only strict loading, typed errors and atomic writes. The
    class it is mixed into must take a [DIFEConfig][dife.config.DIFEConfig] as
    its only constructor argument and have a ``config`` attribute.

    Attributes:
        model_card: The ``README.md`` text the model was loaded with (``None``
            for a model built in Python or without a card). Saving and pushing
            keep it; set it to ``None`` to write a fresh card.
    """

    model_card: str | None = None
    config: DIFEConfig

    @classmethod
    def from_pretrained(
        cls: type[M],
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
    ) -> M:
        """Load a model by registry name, local folder / file, or hub repo id.

        See [dife.hub.from_pretrained][dife.hub.from_pretrained] for the order in
        which ``name_or_path`` is resolved and for the arguments.
        """
        return _load(
            cls,
            name_or_path,
            device=device,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
        )

    @classmethod
    def from_official(cls: type[M], path: str | os.PathLike[str], *, domains: Iterable[str] | None = None) -> M:
        """Import the authors' released checkpoint; see [dife.official.load_official][dife.official.load_official]."""
        config, state, source = read_official(path, domains=domains)
        return _build(cls, config, state, source=source, display_key=official_key)

    def save_pretrained(self, save_directory: str | os.PathLike[str], **card: Any) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md``; see [dife.hub.save_pretrained][dife.hub.save_pretrained]."""
        return save_pretrained(self, save_directory, **card)  # type: ignore[arg-type]

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload the model to the Hugging Face Hub; see [dife.hub.push_to_hub][dife.hub.push_to_hub]."""
        return push_to_hub(self, repo_id, **kwargs)  # type: ignore[arg-type]
