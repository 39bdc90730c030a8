"""Exception hierarchy raised at dife's public boundary.

Every error that dife raises on purpose derives from [DIFEError][dife.errors.DIFEError], so
``except dife.DIFEError`` catches all of them. Each subclass also derives from
the closest built-in exception (``ValueError``, ``KeyError``, ``FileNotFoundError``
...) so that generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "DIFEError",
    "InputError",
    "ShapeError",
    "ImageError",
    "KeypointError",
    "UnknownDomainError",
    "CheckpointError",
    "ModelNotFoundError",
    "DIFEWarning",
]


class DIFEError(Exception):
    """Base class of every error raised on purpose by dife."""


class InputError(DIFEError, ValueError):
    """An argument has the wrong type, value or range."""


class ShapeError(InputError):
    """An array or tensor has the wrong shape; the message names the shape."""


class ImageError(InputError):
    """An image cannot be read or is unusable (empty, corrupt, too large)."""


class KeypointError(InputError):
    """Keypoints are malformed or fall outside the image they belong to."""


class UnknownDomainError(DIFEError, KeyError):
    """A species / domain name or index that the model does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class CheckpointError(DIFEError, ValueError):
    """A checkpoint is corrupt, unsafe, or does not match the architecture."""


class ModelNotFoundError(DIFEError, FileNotFoundError):
    """A model name, path or hub repository could not be resolved."""


class DIFEWarning(UserWarning):
    """A warning issued on purpose by dife (e.g. an image that decoded but looks corrupt)."""
