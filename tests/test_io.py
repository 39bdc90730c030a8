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


def test_sweep_removes_only_our_temporaries_of_dead_processes(tmp_path):
    import subprocess
    import sys

    from dife._io import sweep_stale_temporaries

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # reaped: no process has this id (unless reused, which would only keep the file)
    stale = tmp_path / f".out.npz.dife-{dead}-k2j4h5g6.tmp"
    live = tmp_path / f".out.npz.dife-{os.getpid()}-a1b2c3d4.tmp"
    foreign = [tmp_path / ".out.npz.x7y8z9w0.tmp", tmp_path / f"out.npz.dife-{dead}-k2j4h5g6.tmp", tmp_path / "a.tmp"]
    for p in (stale, live, *foreign):
        p.write_bytes(b"x")
    assert sweep_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, *foreign))


def test_temporary_name_carries_the_process_id(tmp_path):
    with atomic_path(tmp_path / "a.bin") as tmp:
        assert tmp.name.startswith(f".a.bin.dife-{os.getpid()}-") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
