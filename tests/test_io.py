"""Atomic writes: all or nothing, and ordinary file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from dife._io import atomic_path, atomic_write


def test_atomic_write_replaces_only_on_success(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(dest, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left behind
    with atomic_write(dest, "w") as f:
        f.write("new")
    assert dest.read_text() == "new"


def test_atomic_files_get_umask_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644


def test_saved_model_files_get_umask_permissions(tmp_path, tiny_model):
    """safetensors' save_file recreates its file 0600; the saved weights must still be readable by others."""
    umask = os.umask(0o022)
    try:
        tiny_model.save_pretrained(tmp_path / "m")
    finally:
        os.umask(umask)
    for name in ("config.json", "model.safetensors", "README.md"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o644, name
