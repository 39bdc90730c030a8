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
by an inert ``PersistentObject`` / ``StandIn`` that only records its
state. Any other global (``os.system``, ``builtins.eval``, ``subprocess.*``...)
is refused with [CheckpointError][dife.errors.CheckpointError] before it can be called.

The unpickler is also bounded, so that a small hostile file cannot make it
allocate much more memory than the file's own size, nor change objects of the
running process:

* no allowed call allocates from a number in the pickle (``bytearray(10**9)``,
  ``numpy.ndarray((10**9,))``...): byte arrays are built from bytes only,
  numpy arrays from their data, and a length field (``BYTEARRAY8``) may not
  exceed the bytes left in the file;
* a torch storage record may not declare more bytes than it holds;
* object state (the ``BUILD`` opcode) is applied only to numpy arrays and to
  the inert stand-ins; items are added only to lists, dicts and sets. Any
  other target (a function's ``__defaults__``, a class...) is refused.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
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


class _NDArrayType:
    """What the pickle gets for the global ``numpy.ndarray``: a marker for ``_reconstruct``, never callable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise CheckpointError("refusing to build a numpy.ndarray from a shape in the pickle (only from its data)")


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


#: Bytes per element of the legacy torch storage classes named in ``torch.save`` files.
_STORAGE_ELEMENT_SIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "UntypedStorage": 1,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.element_size = _STORAGE_ELEMENT_SIZE[name]


class _StorageHeaderReader(pickle._Unpickler):  # type: ignore[name-defined]
    """Reads the pickles of a legacy ``torch.save`` file without building any storage; records their sizes."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.declared: dict[str, int] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.storage") and name in _STORAGE_ELEMENT_SIZE:
            return _StorageType(name)
        if (module, name) in (("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2")):
            return lambda *args, **kwargs: None
        raise CheckpointError(f"torch storage record in the pickle refers to {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError("torch storage record in the pickle has a malformed storage id")
        key, numel = str(pid[2]), pid[4]
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise CheckpointError(f"torch storage record in the pickle has a bad size {numel!r}")
        self.declared[key] = 8 + numel * pid[1].element_size  # int64 count + data
        return None


def _check_storage_bytes(data: bytes) -> None:
    """Refuse a legacy ``torch.save`` byte string whose storages declare more bytes than it holds.

    ``torch.load`` allocates each storage at its declared size before reading
    its data, so a few bytes could otherwise ask for any amount of memory.
    """
    f = io.BytesIO(data)
    try:
        reader = _StorageHeaderReader(f)
        if reader.load() != _LEGACY_TORCH_MAGIC:
            raise CheckpointError("torch storage record in the pickle is not in the torch.save format of storages")
        for _ in range(4):  # protocol version, sys info, the object, the storage keys
            reader.load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt record raises many kinds
        raise CheckpointError(f"torch storage record in the pickle is corrupt ({type(exc).__name__}: {exc})") from None
    declared, held = sum(reader.declared.values()), len(data) - f.tell()
    if declared > held:
        raise CheckpointError(
            f"torch storage record in the pickle declares {declared} bytes of data but holds {held}; refusing it"
        )


def _load_from_bytes(data: Any) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError("torch storage record in pickle does not hold bytes")
    _check_storage_bytes(bytes(data))
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
    dt = np.dtype(spec, align=bool(align), copy=True)  # a copy: its state (BUILD) must not touch numpy's own
    if dt.hasobject:
        raise CheckpointError("numpy object arrays in the pickle are refused (they can hold arbitrary objects)")
    if dt.kind not in "biufcSUV" or dt.subdtype is not None or dt.names is not None:
        raise CheckpointError(f"numpy dtype {dt} in the pickle is not a plain number / bytes type")
    return dt


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NDArrayType:
        raise CheckpointError("only plain numpy.ndarray objects may be rebuilt from the pickle")
    if shape != (0,):  # numpy pickles an empty array here; the data comes with its state (BUILD)
        raise CheckpointError(f"numpy array record in the pickle starts with shape {shape!r}, not (0,)")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    """``bytearray`` from bytes (protocol 3+) or latin-1 text (protocol 2) only, never from a length."""
    if isinstance(data, (bytes, bytearray)) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return bytearray(data.encode("latin1"))
    raise CheckpointError("refusing a bytearray record that is not built from bytes (a size would allocate memory)")


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
    ("builtins", "bytearray"): _bytearray,
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
_SAFE[("numpy", "ndarray")] = _NDArrayType
_SAFE[("numpy", "dtype")] = _np_dtype

_STANDIN_CLASSES: dict[tuple[str, str], type] = {}


def _standin_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STANDIN_CLASSES:
        _STANDIN_CLASSES[key] = type(name, (StandIn,), {"_standin_module": module, "_standin_name": name})
    return _STANDIN_CLASSES[key]


class _BoundedReader:
    """File wrapper whose reads never ask for more than the bytes left (so no length field over-allocates)."""

    def __init__(self, file: Any, size: int) -> None:
        self._file = file
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self._file.read(n)
        self.left -= len(data)
        return data

    def readinto(self, buf: Any) -> int:  # pragma: no cover - BYTEARRAY8 is handled without it
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readline(self) -> bytes:
        data = self._file.readline(max(self.left, 0))
        self.left -= len(data)
        return data


def _target(inst: Any) -> str:
    return f"class {inst.__qualname__}" if isinstance(inst, type) else type(inst).__name__


class SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickler that resolves only an allow-list of globals and bounds what a pickle can do.

    A pure-Python unpickler (``pickle._Unpickler``) whose ``BUILD``,
    ``NEWOBJ``, container and ``BYTEARRAY8`` opcodes are checked: see the
    module docstring.

    Args:
        file: A binary file object.
        size: Bytes that may be read from ``file`` (default: all that is left
            of a seekable file).
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: Any, size: int | None = None, **kwargs: Any) -> None:
        if size is None:
            pos = file.tell()
            size = file.seek(0, io.SEEK_END) - pos
            file.seek(pos)
        self._reader = _BoundedReader(file, size)
        super().__init__(self._reader, **kwargs)

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray or (
            isinstance(inst, (StandIn, _EasyDict, np.dtype)) and not isinstance(inst, type)
        ):
            inst.__setstate__(state)  # numpy checks the data against the shape; stand-ins only record it
            return
        raise CheckpointError(
            f"refusing to set the state of {_target(inst)} from the pickle (only numpy arrays and records of "
            "NVIDIA's network classes take state)"
        )

    def _checked_new(self, cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, (StandIn, _EasyDict, dict, set, frozenset))):
            raise CheckpointError(f"refusing to create an instance of {cls!r} from the pickle")

    def _load_newobj(self) -> None:
        self._checked_new(self.stack[-2])
        pickle._Unpickler.load_newobj(self)  # type: ignore[attr-defined]

    def _load_newobj_ex(self) -> None:
        self._checked_new(self.stack[-3])
        pickle._Unpickler.load_newobj_ex(self)  # type: ignore[attr-defined]

    def _container(self, kinds: tuple[type, ...], what: str, depth: int) -> None:
        target = self.stack[-depth] if depth else self.metastack[-1][-1]
        if not isinstance(target, kinds) or isinstance(target, type):
            raise CheckpointError(
                f"refusing to add {what} to {_target(target)} in the pickle (only to plain containers)"
            )

    def _load_append(self) -> None:
        self._container((list,), "items", 2)
        pickle._Unpickler.load_append(self)  # type: ignore[attr-defined]

    def _load_appends(self) -> None:
        self._container((list,), "items", 0)
        pickle._Unpickler.load_appends(self)  # type: ignore[attr-defined]

    def _load_setitem(self) -> None:
        self._container((dict,), "keys", 3)
        pickle._Unpickler.load_setitem(self)  # type: ignore[attr-defined]

    def _load_setitems(self) -> None:
        self._container((dict,), "keys", 0)
        pickle._Unpickler.load_setitems(self)  # type: ignore[attr-defined]

    def _load_additems(self) -> None:
        self._container((set,), "items", 0)
        pickle._Unpickler.load_additems(self)  # type: ignore[attr-defined]

    def _load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        data = self.read(n)
        if len(data) != n:
            raise CheckpointError(f"a byte array in the pickle declares {n} bytes but the file ends first")
        self.append(bytearray(data))

    for _op, _fn in (
        (pickle.BUILD, _load_build),
        (pickle.NEWOBJ, _load_newobj),
        (pickle.NEWOBJ_EX, _load_newobj_ex),
        (pickle.APPEND, _load_append),
        (pickle.APPENDS, _load_appends),
        (pickle.SETITEM, _load_setitem),
        (pickle.SETITEMS, _load_setitems),
        (pickle.ADDITEMS, _load_additems),
        (pickle.BYTEARRAY8, _load_bytearray8),
    ):
        dispatch[_op[0]] = _fn
    del _op, _fn

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocols 0-2 name Python 2's module
            module = "builtins"
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
    """Safely unpickle ``data`` (see ``SafeUnpickler``).

    Raises:
        CheckpointError: Refused global, or corrupt pickle.
    """
    return _run(lambda: SafeUnpickler(io.BytesIO(data)).load(), "<bytes>")


def load_pickle(path: str | os.PathLike[str]) -> Any:
    """Safely unpickle the file at ``path`` (see ``SafeUnpickler``).

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
        obj: ``PersistentObject`` / ``StandIn`` of an ``nn.Module``.
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
