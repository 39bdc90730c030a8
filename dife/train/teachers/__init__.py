"""Frozen teacher networks used to train DIFE (StyleGAN2 generators, ...).

Names are imported lazily so that ``import dife.train.teachers`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "GeneratorTeacher": "dife.train.teachers.base",
    "DenseTeacher": "dife.train.teachers.base",
    "CSETeacher": "dife.train.teachers.cse",
    "CSEConfig": "dife.train.teachers.cse",
    "TimmTeacher": "dife.train.teachers.timm_teacher",
    "StyleGAN2": "dife.train.teachers.stylegan2",
    "StyleGAN2Config": "dife.train.teachers.stylegan2",
}

__all__ = [
    "CSEConfig",
    "CSETeacher",
    "DenseTeacher",
    "GeneratorTeacher",
    "StyleGAN2",
    "StyleGAN2Config",
    "TimmTeacher",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dife.train.teachers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from dife.train.teachers.base import DenseTeacher, GeneratorTeacher
    from dife.train.teachers.cse import CSEConfig, CSETeacher
    from dife.train.teachers.stylegan2 import StyleGAN2, StyleGAN2Config
    from dife.train.teachers.timm_teacher import TimmTeacher
