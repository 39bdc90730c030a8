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
