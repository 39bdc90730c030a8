"""Shared test fixtures: paths to ../shared, tiny models, small images."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
FACES = SHARED / "data" / "faces"
UNLABELED = SHARED / "data" / "unlabeled"


def need(path: Path) -> Path:
    """Skip the calling test, with a reason, when a ../shared path is absent."""
    if not path.exists():
        pytest.skip(f"{path} not found (the ../shared folder beside the checkout is needed)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return need(FIXTURES)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return need(FACES)


@pytest.fixture(scope="session")
def tiny_config():
    from dife.config import DIFEConfig

    return DIFEConfig(
        embed_dim=16,
        domains=("human", "dog"),
        converter_dim=32,
        converter_hidden=32,
        planes_conv1=16,
        planes_block=16,
        planes_hg=16,
        num_blocks=1,
        depth=4,
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    import torch

    from dife.modeling import DIFE

    torch.manual_seed(0)
    return DIFE(tiny_config).eval()


@pytest.fixture(scope="session")
def load_script():
    """Import a repository script by path (``"examples/x.py"``, ``"tools/y.py"``); returns a loader."""

    def load(rel: str, name: str | None = None) -> ModuleType:
        path = ROOT / rel
        spec = importlib.util.spec_from_file_location(name or f"script_{path.parent.name}_{path.stem}", path)
        assert spec is not None and spec.loader is not None, path
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (the test machines have 2 shared cores); restored after.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny_cse_checkpoint(tmp_path: Path) -> Path:
    """A detectron2-layout (``{"model": state}``) checkpoint of a tiny random CSE teacher (8-d embedding)."""
    import torch

    from dife.train.teachers.cse import CSEConfig, CSETeacher

    cfg = CSEConfig(
        blocks=(1, 1, 1, 1),
        stem_channels=8,
        width_per_group=4,
        res2_out_channels=16,
        fpn_channels=16,
        decoder_channels=16,
        decoder_out_channels=16,
        head_convs=2,
        head_channels=16,
        embed_dim=8,
        pooler_resolution=7,
        input_size=None,
    )
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in CSETeacher(cfg).state_dict().items():
        t = torch.randn(v.shape, generator=g) * 0.1
        state[k] = t.abs() + 0.5 if k.endswith("running_var") else t  # valid BatchNorm statistics
    path = tmp_path / "tiny_cse.pth"
    torch.save({"model": state}, path)
    return path
