"""Restricted unpickler for NVIDIA StyleGAN2-ADA network pickles.

NVIDIA's ``.pkl`` files (``ffhq.pkl``, ``afhqdog.pkl``...) are plain
``pickle.dump`` output of ``{"G": ..., "D": ..., "G_ema": ...,
"augment_pipe": ..., "training_set_kwargs": ...}``. Every network object in
them was made by a class decorated with ``torch_utils.persistence.persistent_class``,
whose ``__reduce__`` turns the object into the call::

    torch_utils.persistence._reconstruct_persistent_obj(meta)
    meta = {"type": "class", "version": 6,
            "module_src": <full source text of training/networks.py>,
            "class_name": "Generator" | "MappingNetwork" | "SynthesisBlock" | ...,
            "state": <the nn.Module __dict__>}

and ``state`` holds the usual ``nn.Module`` fields: ``_parameters`` /
``_buffers`` / ``_modules`` (``OrderedDict``; sub-networks are again
persistent objects), ``_non_persistent_buffers_set``, hook dicts, ``training``,
the constructor arguments ``_init_args`` / ``_init_kwargs``
(``dnnlib.util.EasyDict``) and plain attributes such as ``conv_clamp``,
``w_dim``, ``img_resolution``. Tensors are pickled the usual way:
``torch._utils._rebuild_parameter(_rebuild_tensor_v2(storage, ...))`` where
each storage is ``torch.storage._load_from_bytes(<legacy torch.save bytes>)``;
numbers may be numpy scalars.

The reference loader ``exec``-utes ``module_src``. This one never does: it
rebuilds tensors (through ``torch.load(weights_only=True)`` for the storage
bytes) and numpy arrays / scalars of plain dtypes, and replaces every object
of NVIDIA's packages (``torch_utils``, ``dnnlib``, ``training``, ``metrics``)
by an inert :class:`PersistentObject` / :class:`StandIn` that only records its
state. Any other global (``os.system``, ``builtins.eval``, ``subprocess.*``...)
is refused with :class:`~dife.errors.CheckpointError` before it can be called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dife.errors import CheckpointError

__all__ = [
    "PersistentObject",
    "StandIn",
    "SafeUnpickler",
    "load_pickle",
    "loads_pickle",
    "module_state_dict",
    "find_attribute",
    "is_legacy_torch_file",
]

#: Packages of NVIDIA's code bases whose objects are replaced by inert stand-ins.
STANDIN_PACKAGES = ("torch_utils", "dnnlib", "training", "metrics", "torch.nn.modules")


class StandIn:
    """Inert replacement for an object of a class from NVIDIA's packages.

    Construction and ``__setstate__`` only record their arguments; no method of
    the original class exists or runs.
    """

    _standin_module = "?"
    _standin_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = object.__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in {self._standin_module}.{self._standin_name}>"


class PersistentObject:
    """Stand-in for an object saved through ``torch_utils.persistence``.

    Attributes:
        class_name: Original class name (``"Generator"``, ``"SynthesisLayer"``...).
        state: The pickled ``__dict__`` (tensors already rebuilt).
        module_src: Source text of the defining module, kept as text, never run.
        version: Persistence format version.
    """

    def __init__(self, class_name: str, state: dict, module_src: str, version: Any) -> None:
        self.class_name = class_name
        self.state = state
        self.module_src = module_src
        self.version = version

    def __repr__(self) -> str:
        return f"<persistent {self.class_name} (not executed)>"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict, attribute access only for reading."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:  # EasyDict pickles no extra state
        return None


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise CheckpointError("malformed torch_utils.persistence record in pickle (expected a 'class' meta dict)")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise CheckpointError(f"persistence record for {meta['class_name']} has non-dict state")
    src = meta.get("module_src", "")
    return PersistentObject(meta["class_name"], state, src if isinstance(src, str) else "", meta.get("version"))


def _load_from_bytes(data: Any) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError("torch storage record in pickle does not hold bytes")
    try:
        return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot rebuild a torch storage from the pickle: {exc}") from exc


def _rebuild_tensor_v2(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, *rest: Any
) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise CheckpointError(f"tensor record in pickle has storage of type {type(storage).__name__}")
    from torch._utils import _rebuild_tensor_v2 as rebuild

    return rebuild(storage, int(offset), tuple(size), tuple(stride), False, collections.OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"parameter record in pickle holds {type(data).__name__}, not a tensor")
    return data.detach()


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise CheckpointError(f"numpy dtype record in pickle is not a string: {type(spec).__name__}")
    dt = np.dtype(spec)
    if dt.hasobject:
        raise CheckpointError("numpy object arrays in the pickle are refused (they can hold arbitrary objects)")
    return dt


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise CheckpointError("only plain numpy.ndarray objects may be rebuilt from the pickle")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise CheckpointError("numpy scalar record in pickle is not a plain number")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("refusing _codecs.encode call other than the latin1 bytes encoding of pickle protocol 2")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if base is object and isinstance(cls, type) and issubclass(cls, (StandIn, _EasyDict)):
        return cls.__new__(cls)
    if base is dict and isinstance(cls, type) and issubclass(cls, _EasyDict):
        return cls(state or {})
    raise CheckpointError(f"refusing copyreg._reconstructor for {cls!r}")


_SAFE: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("__builtin__", "set"): set,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _SAFE[(_mod, "_reconstruct")] = _np_reconstruct
    _SAFE[(_mod, "scalar")] = _np_scalar
_SAFE[("numpy", "ndarray")] = np.ndarray
_SAFE[("numpy", "dtype")] = _np_dtype

_STANDIN_CLASSES: dict[tuple[str, str], type] = {}


def _standin_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STANDIN_CLASSES:
        _STANDIN_CLASSES[key] = type(name, (StandIn,), {"_standin_module": module, "_standin_name": name})
    return _STANDIN_CLASSES[key]


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only an allow-list of globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _SAFE.get((module, name))
        if obj is not None:
            return obj
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if any(module == p or module.startswith(p + ".") for p in STANDIN_PACKAGES):
            return _standin_class(module, name)
        raise CheckpointError(
            f"refusing to load global {module}.{name} from the pickle: it is not a tensor, numpy array or "
            "StyleGAN2-ADA network record, and unpickling it could run arbitrary code"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("pickle uses persistent ids (torch.save file?); load it with torch.load instead")


def loads_pickle(data: bytes) -> Any:
    """Safely unpickle ``data`` (see :class:`SafeUnpickler`).

    Raises:
        CheckpointError: Refused global, or corrupt pickle.
    """
    return _run(lambda: SafeUnpickler(io.BytesIO(data)).load(), "<bytes>")


def load_pickle(path: str | os.PathLike[str]) -> Any:
    """Safely unpickle the file at ``path`` (see :class:`SafeUnpickler`).

    Raises:
        CheckpointError: Refused global, or corrupt / truncated pickle.
    """

    def read() -> Any:
        with open(path, "rb") as f:
            return SafeUnpickler(f).load()

    return _run(read, str(path))


def _run(fn: Callable[[], Any], where: str) -> Any:
    try:
        return fn()
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - corrupt pickles raise many kinds
        raise CheckpointError(f"{where}: not a readable network pickle ({type(exc).__name__}: {exc})") from exc


def _state(obj: Any) -> dict:
    if isinstance(obj, PersistentObject):
        return obj.state
    if isinstance(obj, StandIn) and isinstance(obj.state, dict):
        return obj.state
    return {}


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flat ``state_dict()`` of a pickled ``nn.Module`` stand-in (parameters and persistent buffers).

    Args:
        obj: :class:`PersistentObject` / :class:`StandIn` of an ``nn.Module``.
        prefix: Prefix of every key (used in the recursion).

    Returns:
        ``{dotted name: tensor}`` in module order.
    """
    state = _state(obj)
    out: dict[str, torch.Tensor] = {}
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for field in ("_parameters", "_buffers"):
        for name, t in (state.get(field) or {}).items():
            if t is None or (field == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise CheckpointError(f"pickled module entry {prefix}{name} is {type(t).__name__}, not a tensor")
            out[prefix + str(name)] = t
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def find_attribute(obj: Any, name: str, under: str | None = None) -> Any:
    """First value of attribute ``name`` found in a pickled module tree (depth first).

    Args:
        obj: Root stand-in.
        name: Attribute to look for (e.g. ``"conv_clamp"``).
        under: Only search below this child module (e.g. ``"synthesis"``).

    Returns:
        The value, or the string ``"missing"`` when no module has it.
    """
    state = _state(obj)
    if under is not None:
        child = (state.get("_modules") or {}).get(under)
        return "missing" if child is None else find_attribute(child, name)
    if name in state:
        return state[name]
    for child in (state.get("_modules") or {}).values():
        found = find_attribute(child, name)
        if found != "missing":
            return found
    return "missing"


_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError("globals not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids not allowed")


def is_legacy_torch_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a pre-1.6 (non-zip) ``torch.save`` file (it starts with torch's magic number)."""
    try:
        with open(path, "rb") as f:
            return _NoGlobals(f).load() == _LEGACY_TORCH_MAGIC
    except Exception:  # noqa: BLE001
        return False
