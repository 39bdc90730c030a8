"""dife.checks: the shared argument guards."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from dife.checks import (
    check_device,
    check_finite_tensors,
    check_int,
    check_number,
    check_positive_int,
    check_regular_file,
    is_int,
    is_number,
)
from dife.errors import CheckpointError, InputError

NOT_INTS = [True, False, "16", 16.5, 16.0, None, [1], float("nan"), np.float32(2.0), b"3"]


@pytest.mark.parametrize("value", NOT_INTS)
def test_check_int_refuses_non_integers(value):
    assert not is_int(value)
    with pytest.raises(InputError, match=r"batch_size must be a positive integer, got"):
        check_positive_int(value, "batch_size")


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(200)])
def test_check_int_accepts_ints_and_numpy_ints(value):
    out = check_positive_int(value, "n")
    assert out == int(value) and type(out) is int


def test_check_int_range_and_none():
    assert check_int(None, "k", allow_none=True) is None
    with pytest.raises(InputError, match=r"k must be an integer in 1\.\.5, got 6"):
        check_int(6, "k", minimum=1, maximum=5)
    with pytest.raises(InputError, match=r"k must be an integer >= 0 or None, got -1"):
        check_int(-1, "k", minimum=0, allow_none=True)
    with pytest.raises(CheckpointError, match="config field depth"):
        check_int(0, "config field depth", minimum=1, error=CheckpointError)


@pytest.mark.parametrize("value", [True, "1", None, float("nan"), math.inf, -math.inf, complex(1, 0), np.bool_(True)])
def test_check_number_refuses(value):
    assert not is_number(value) or not math.isfinite(float(value))
    with pytest.raises(InputError, match="alpha must be"):
        check_number(value, "alpha")


def test_check_number_ranges():
    assert check_number(np.float32(0.5), "a", minimum=0, maximum=1) == 0.5
    assert check_number(3, "a", positive=True) == 3.0
    with pytest.raises(InputError, match=r"a must be a finite number > 0, got 0"):
        check_number(0, "a", positive=True)
    with pytest.raises(InputError, match=r"a must be a finite number in \[0, 1\], got 1.5"):
        check_number(1.5, "a", minimum=0, maximum=1)


def test_check_device():
    import torch

    assert check_device(None) is None
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "cuda:x", 3.5, True, ["cpu"]):
        with pytest.raises(InputError, match="invalid device"):
            check_device(bad)
    with pytest.raises(InputError, match="invalid storage_device"):
        check_device(None, "storage_device", allow_none=False)


def test_check_regular_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello")
    assert check_regular_file(f, "points file") == f
    with pytest.raises(InputError, match="points file not found"):
        check_regular_file(tmp_path / "missing", "points file")
    with pytest.raises(InputError, match="is a directory"):
        check_regular_file(tmp_path, "points file")
    with pytest.raises(InputError, match="too large: 5 bytes > 4 bytes"):
        check_regular_file(f, "points file", max_bytes=4)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        check_regular_file(fifo, "image")
    if os.path.exists("/dev/zero"):
        with pytest.raises(InputError, match="device"):
            check_regular_file("/dev/zero", "image")


def test_check_finite_tensors():
    import torch

    ok = {"a": torch.ones(3), "i": torch.arange(3)}
    check_finite_tensors(ok)
    for bad_value in (float("nan"), float("inf"), -float("inf")):
        w = torch.ones(4)
        w[2] = bad_value
        with pytest.raises(CheckpointError, match=r"x.safetensors holds NaN or infinite weights in b\.weight"):
            check_finite_tensors({"a": torch.ones(2), "b.weight": w}, "x.safetensors")
