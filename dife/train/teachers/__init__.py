"""Frozen teacher networks used to train DIFE (StyleGAN2 generators, ...).

Names are imported lazily so that ``import dife.train.teachers`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dife._lazy import attach

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


__getattr__, __dir__ = attach(__name__, _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from dife.train.teachers.base import DenseTeacher, GeneratorTeacher
    from dife.train.teachers.cse import CSEConfig, CSETeacher
    from dife.train.teachers.stylegan2 import StyleGAN2, StyleGAN2Config
    from dife.train.teachers.timm_teacher import TimmTeacher
