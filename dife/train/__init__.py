"""Training of DIFE: frozen teachers, losses, pseudo pairs and the trainer.

Kept import-light: ``import dife.train`` imports neither torch nor timm;
submodules (``dife.train.teachers``...) and the names below are imported on use.

Example:
    >>> from dife.train import train
    >>> out = train("paper_human_dog", output_dir="runs/human_dog")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dife._lazy import attach

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "train": "dife.train.trainer",
    "Trainer": "dife.train.trainer",
    "TrainConfig": "dife.train.config",
    "load_config": "dife.train.config",
    "keypoint_transfer_error": "dife.train.validate",
}

__all__ = ["TrainConfig", "Trainer", "keypoint_transfer_error", "load_config", "train"]


__getattr__, __dir__ = attach(__name__, _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from dife.train.config import TrainConfig, load_config
    from dife.train.trainer import Trainer, train
    from dife.train.validate import keypoint_transfer_error
