"""Argument checks shared by the whole package, written once.

Every public function of dife validates its arguments at the boundary and
raises a [DIFEError][dife.errors.DIFEError] subclass whose message names the
argument and the bad value. The small checks here are those guards: call them
instead of repeating ``isinstance(x, bool) or not isinstance(x, int) ...``.

Conventions:

* ``bool`` is never a number here (``True`` is not a batch size);
* numpy integer / floating scalars are accepted and returned as ``int`` /
  ``float``;
* ``error`` picks the exception class (default
  [InputError][dife.errors.InputError]); messages read
  ``"<name> must be <what>, got <value>"``.

Example:
    >>> from dife.checks import check_int
    >>> check_int(8, "batch_size", minimum=1)
    8
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dife.errors import CheckpointError, InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "is_int",
    "is_number",
    "check_int",
    "check_positive_int",
    "check_number",
    "check_device",
    "check_regular_file",
    "check_finite_tensors",
]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``int`` or a numpy integer), never a ``bool``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    np = _numpy()
    return np is not None and isinstance(value, np.integer)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (int, float or a numpy scalar of those), never a ``bool``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    np = _numpy()
    return np is not None and isinstance(value, (np.integer, np.floating)) and not isinstance(value, np.bool_)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is a dependency
        return None
    return numpy


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer in {minimum}..{maximum}"
    if minimum == 1:
        return "a positive integer"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


def check_int(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
    what: str | None = None,
    error: type[Exception] = InputError,
) -> Any:
    """Check an integer argument and return it as ``int``.

    Args:
        value: The value to check.
        name: How the message names it (``"batch_size"``, ``"config field depth"``).
        minimum: Smallest allowed value (inclusive), or ``None``.
        maximum: Largest allowed value (inclusive), or ``None``.
        allow_none: Accept (and return) ``None``.
        what: Text after "must be" in the message (default: built from the range).
        error: Exception class raised.

    Returns:
        ``int(value)``, or ``None`` when ``allow_none`` and ``value is None``.

    Raises:
        InputError: (or ``error``) for a bool, a non-integer (``"16"``,
            ``16.5``) or a value out of range.
    """
    if value is None and allow_none:
        return None
    ok = is_int(value)
    if ok:
        v = int(value)
        ok = (minimum is None or v >= minimum) and (maximum is None or v <= maximum)
    if not ok:
        text = what or _int_range(minimum, maximum)
        raise error(f"{name} must be {text}{' or None' if allow_none and what is None else ''}, got {value!r}")
    return v


def check_positive_int(value: Any, name: str, *, allow_none: bool = False, error: type[Exception] = InputError) -> Any:
    """[check_int][dife.checks.check_int] with ``minimum=1``."""
    return check_int(value, name, minimum=1, allow_none=allow_none, error=error)


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    allow_none: bool = False,
    what: str | None = None,
    error: type[Exception] = InputError,
) -> Any:
    """Check a finite real number and return it as ``float``.

    Args:
        value: The value to check.
        name: How the message names it.
        minimum: Smallest allowed value (inclusive), or ``None``.
        maximum: Largest allowed value (inclusive), or ``None``.
        positive: Require ``value > 0`` (strict).
        allow_none: Accept (and return) ``None``.
        what: Text after "must be" in the message (default: built from the range).
        error: Exception class raised.

    Returns:
        ``float(value)``, or ``None`` when ``allow_none`` and ``value is None``.

    Raises:
        InputError: (or ``error``) for a bool, a non-number, NaN, an infinity
            or a value out of range.
    """
    if value is None and allow_none:
        return None
    ok = is_number(value)
    if ok:
        v = float(value)
        ok = (
            math.isfinite(v)
            and (minimum is None or v >= minimum)
            and (maximum is None or v <= maximum)
            and (not positive or v > 0)
        )
    if not ok:
        if what is None:
            if minimum is not None and maximum is not None:
                what = f"a finite number in [{minimum:g}, {maximum:g}]"
            elif positive:
                what = "a finite number > 0"
            elif minimum is not None:
                what = f"a finite number >= {minimum:g}"
            elif maximum is not None:
                what = f"a finite number <= {maximum:g}"
            else:
                what = "a finite number"
            if allow_none:
                what += " or None"
        raise error(f"{name} must be {what}, got {value!r}")
    return v


def check_device(device: Any, name: str = "device", *, allow_none: bool = True) -> torch.device | None:
    """Parse a torch device (``"cpu"``, ``"cuda:1"``, a ``torch.device``).

    Only the spelling is checked; whether the device exists shows when
    something is moved there.

    Returns:
        The ``torch.device``, or ``None`` for ``None`` (when ``allow_none``).

    Raises:
        InputError: ``invalid <name> ...`` for anything torch does not parse.
    """
    if device is None and allow_none:
        return None
    import torch

    if isinstance(device, torch.device):
        return device
    if not isinstance(device, (str, int)) or isinstance(device, bool):
        raise InputError(f"invalid {name} {device!r}: expected a string such as 'cpu' or 'cuda:0', or a torch.device")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise InputError(f"invalid {name} {device!r}: {e}") from None


def check_regular_file(
    path: str | os.PathLike[str],
    what: str = "file",
    *,
    max_bytes: int | None = None,
    error: type[Exception] = InputError,
    missing: type[Exception] | None = None,
) -> Path:
    """Check that ``path`` is an existing regular file (after symlinks) before opening it.

    A FIFO, a socket or a device (``/dev/zero``, ``/dev/stdin``) would make a
    reader block forever or never reach the end: they are refused here,
    before anything is opened.

    Args:
        path: The path.
        what: How the message names the file (``"image"``, ``"points file"``).
        max_bytes: Largest accepted size, or ``None``.
        error: Exception class for a file of the wrong kind or size.
        missing: Exception class for a missing file (default: ``error``).

    Returns:
        The path as a ``Path``.

    Raises:
        InputError: (or ``error``) for a directory, a non-regular file or a
            file larger than ``max_bytes``; ``missing`` when it does not exist.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise (missing or error)(f"{what} not found: '{p}'") from None
    except OSError as e:
        raise error(f"{what} '{p}' cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} '{p}' is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        kind = "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else kind
        kind = "a socket" if stat.S_ISSOCK(st.st_mode) else kind
        raise error(f"{what} '{p}' is {kind}; dife reads only regular files")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} '{p}' is too large: {st.st_size} bytes > {max_bytes} bytes")
    return p


def check_finite_tensors(tensors: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Refuse weights holding NaN or infinite values.

    A model loaded from such weights would return NaN keypoints with NaN
    confidence and no error; refuse it when the file is read instead.

    Args:
        tensors: ``{name: tensor}`` (a state dict); non-float entries are skipped.
        source: Name of the file, for the message.

    Raises:
        CheckpointError: naming the first tensor with a non-finite value and
            how many tensors are affected.
    """
    import torch

    bad = []
    for key, t in tensors.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.device.type != "meta":
            if not bool(torch.isfinite(t).all()):
                bad.append(key)
    if bad:
        more = f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{source} holds NaN or infinite weights in {bad[0]}{more}; refusing to load them (the model would "
            "return NaN keypoints)"
        )
