"""The default model: loaded lazily, once, shared by every function that takes ``model=None``.

Nothing is loaded at import. The first call of [get_default_model][dife.defaults.get_default_model] loads
the registry's default ([dife.registry.default_model_name][dife.registry.default_model_name]); when that is
the untrained random initialisation, one ``UserWarning`` says so. Loading
is thread-safe: concurrent first calls build the model once.

Example:
    >>> import dife
    >>> dife.set_default_model("path/to/my-dife")  # doctest: +SKIP
    >>> model = dife.get_default_model()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import TYPE_CHECKING, Any

from dife.checks import check_device
from dife.errors import InputError

if TYPE_CHECKING:
    import torch

    from dife.modeling.dife import DIFE

__all__ = ["get_default_model", "set_default_model", "resolve_model", "default_model_info"]

_lock = threading.RLock()
_default: DIFE | None = None  # the model in use when model=None (CPU copy or the user's)
_default_label: str | None = None  # what _default is, for default_model_info()
_by_device: dict[str, DIFE] = {}  # default model moved to other devices
_by_name: dict[str, DIFE] = {}  # resolve_model("name or path") cache
_warned_untrained = False


def _load_default() -> tuple[DIFE, str]:
    """Load the registry default; returns (model, registry name)."""
    from dife.hub import from_pretrained
    from dife.registry import default_model_name

    name = default_model_name()
    return from_pretrained(name), name


def _describe(name: str) -> str:
    from dife.registry import get_entry

    entry = get_entry(name)
    if entry.source == "random":
        return f"{name} (random initialisation, seed {entry.seed} — the packaged dife-base weights are missing)"
    return f"{name} ({entry.description})"


def _device_key(device: str | torch.device | None) -> str | None:
    dev = check_device(device)
    return None if dev is None else str(dev)


def get_default_model(device: str | torch.device | None = None) -> DIFE:
    """The default model, loaded on first use and cached.

    Args:
        device: Device to return the model on. ``None`` returns the cached
            model where it is (the CPU unless [set_default_model][dife.defaults.set_default_model] gave
            one elsewhere); another device returns a cached copy there.

    Returns:
        The shared model in eval mode. Do not modify it in place.
    """
    global _default, _default_label, _warned_untrained
    model = _default
    if model is None:
        with _lock:
            if _default is None:  # double-checked: only the first thread loads
                loaded, name = _load_default()
                _default, _default_label = loaded, _describe(name)
                from dife.registry import is_trained

                if not is_trained(name) and not _warned_untrained:
                    _warned_untrained = True
                    warnings.warn(
                        f"dife is using {_default_label}: its embeddings are meaningless. Load trained weights "
                        "with dife.set_default_model(PATH_OR_REPO) or DIFE.from_official('human+dog.pth').",
                        UserWarning,
                        stacklevel=2,
                    )
            model = _default
    key = _device_key(device)
    if key is None or str(model.device) == key:
        return model
    with _lock:
        if key not in _by_device:
            import copy

            _by_device[key] = copy.deepcopy(model).to(key).eval()
        return _by_device[key]


def set_default_model(model_or_name: DIFE | str | os.PathLike[str] | None) -> None:
    """Replace the default model.

    Args:
        model_or_name: A [DIFE][dife.modeling.dife.DIFE], a registered name, a
            local path or a hub repo id (loaded now, so errors show here), or
            ``None`` to go back to the lazily loaded registry default.

    Raises:
        InputError: for any other type.
        ModelNotFoundError, CheckpointError: if a name / path cannot be loaded.
    """
    global _default, _default_label
    from dife.modeling.dife import DIFE

    if model_or_name is None:
        model, label = None, None
    elif isinstance(model_or_name, DIFE):
        model, label = model_or_name, "a model set with dife.set_default_model"
    elif isinstance(model_or_name, (str, os.PathLike)):
        model, label = _from_pretrained_cached(model_or_name), _label_for(model_or_name)
    else:
        raise InputError(
            f"set_default_model expects a DIFE model, a name or a path, got {type(model_or_name).__name__}"
        )
    with _lock:
        _default, _default_label = model, label
        _by_device.clear()


def _label_for(name: str | os.PathLike[str]) -> str:
    from dife.registry import MODELS

    key = os.fspath(name)
    return _describe(key) if isinstance(name, str) and key in MODELS else key


def _from_pretrained_cached(name: str | os.PathLike[str]) -> DIFE:
    from dife.hub import from_pretrained

    key = os.fspath(name)
    with _lock:
        if key not in _by_name:
            _by_name[key] = from_pretrained(name)
        return _by_name[key]


def resolve_model(model: Any = None) -> DIFE:
    """The model a public function should use.

    Args:
        model: ``None`` (the default model), a [DIFE][dife.modeling.dife.DIFE]
            (returned as is), or a name / path / repo id (loaded with
            [dife.hub.from_pretrained][dife.hub.from_pretrained], cached per name).

    Raises:
        InputError: for any other type.
        ModelNotFoundError, CheckpointError: if a name / path cannot be loaded.
    """
    from dife.modeling.dife import DIFE

    if model is None:
        return get_default_model()
    if isinstance(model, DIFE):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _from_pretrained_cached(model)
    raise InputError(f"model must be None, a DIFE model, a name or a path, got {type(model).__name__}")


def default_model_info() -> str:
    """One line saying which weights the default model uses (loaded or not yet).

    Example: ``"dife-base (The default: a 0.49 M-parameter DIFE encoder ...)"``.
    """
    with _lock:
        if _default_label is not None:
            return _default_label
    from dife.registry import default_model_name

    return _describe(default_model_name())
