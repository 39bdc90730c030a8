"""Small file helpers: atomic writes that never leave a half-written file.

Every file dife writes goes through [atomic_path][dife._io.atomic_path]: the
data goes to a temporary file in the destination's folder, named
``.<name>.dife-<pid>-<random>.tmp``, which is renamed onto the destination
only when the write succeeded. An exception, Ctrl-C or (in the ``dife``
command) SIGTERM removes the temporary file. A process killed outright
(SIGKILL, power loss) cannot clean up: the first write of a later process
into the same folder removes the temporary files of ours whose process is
gone ([sweep_stale_temporaries][dife._io.sweep_stale_temporaries]).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_path", "sweep_stale_temporaries"]

#: Our temporary files: ``.<destination name>.dife-<pid>-<tempfile's random part>.tmp``.
_TEMP_NAME = re.compile(r"^\..+\.dife-(\d+)-[A-Za-z0-9_]+\.tmp$")

#: Seconds before a folder is swept again by the same process (a sweep lists the whole folder).
_SWEEP_EVERY = 5.0
_swept: dict[str, float] = {}
_swept_lock = threading.Lock()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists (another user's), or cannot tell: keep its files
        return True
    return True


def sweep_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that dife processes which no longer run left in ``folder``.

    Only names of our own pattern (``.<name>.dife-<pid>-<random>.tmp``) whose
    process id is not a running process are removed; files of a live writer
    (this process included) are kept. POSIX only (elsewhere nothing is removed).

    Args:
        folder: The folder to sweep.

    Returns:
        The removed files.
    """
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) is not a probe on Windows
        return []
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None or _process_alive(int(m.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _sweep_once(folder: Path) -> None:
    """Sweep ``folder`` when this process writes into it (at most once every few seconds)."""
    key = os.path.abspath(folder)
    now = time.monotonic()
    with _swept_lock:
        if now - _swept.get(key, -math.inf) < _SWEEP_EVERY:
            return
        _swept[key] = now
    sweep_stale_temporaries(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; rename it onto ``path`` on success.

    On any exception (``KeyboardInterrupt`` included) the temporary file is
    removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.dife-{os.getpid()}-", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would (0666 minus umask).
        # Set again after the block: writers such as safetensors' save_file recreate the file 0600.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing and atomically move it to ``path`` when the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
