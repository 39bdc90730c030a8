"""Fixtures of the evaluation tests (the data and the face finder are in ``wild_data.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from wild_data import PLAN, make_square_finder, write_wild


@pytest.fixture(scope="session")
def square_finder():
    """A face finder that finds the painted square of ``write_wild`` photos."""
    return make_square_finder()


@pytest.fixture()
def wild_dir(tmp_path) -> Path:
    """A small folder in the ``wild`` layout (``wild_data.PLAN``)."""
    return write_wild(tmp_path / "wild", PLAN)


@pytest.fixture(scope="session")
def photo_model(tiny_config):
    """A tiny DIFE with a 64-px input, smaller than the ``wild_data`` photos (72-128 px).

    The pipeline takes an image no larger than the model's input as a face crop already (no face
    finder), so tests of the face finder's framing need photos larger than the input.
    """
    import dataclasses

    import torch

    from dife.modeling import DIFE

    torch.manual_seed(0)
    return DIFE(dataclasses.replace(tiny_config, input_size=64)).eval()
