"""Shared test fixtures: reference fixtures, small data made on the fly, tiny models.

Everything the default suite needs is in the repository (``tests/fixtures/``,
see its README) or made by the tests themselves (``faces_dir``,
``photo_pool_dir``), so a bare clone runs the suite with no skip for a missing
folder. A few tests check properties of the large development data that sits
outside the repository (the labelled faces and the unlabelled photo pool);
they are marked ``shared_data`` and run only with ``--shared-data[=DIR]`` (or
the environment variable ``DIFE_SHARED_DATA=DIR``), ``DIR`` holding ``faces/``
and ``unlabeled/`` (default: ``shared/data`` beside the checkout).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The reference fixtures shipped with the tests (see tests/fixtures/README.md).
FIXTURES = ROOT / "tests" / "fixtures"
#: Where the development data is looked for by default when --shared-data is given without a folder.
DEFAULT_SHARED_DATA = ROOT.parent / "shared" / "data"
#: Species of the made faces folder and photo pool: human faces have 5 keypoints, the others 3.
MADE_SPECIES = ("human", "dog", "cat", "horse", "sheep", "cow")


# --------------------------------------------------------------------------- the shared_data extra
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shared-data",
        nargs="?",
        const=str(DEFAULT_SHARED_DATA),
        default=os.environ.get("DIFE_SHARED_DATA") or None,
        metavar="DIR",
        help="also run the tests marked shared_data, on the development data in DIR (faces/, unlabeled/); "
        f"default DIR: {DEFAULT_SHARED_DATA} (or $DIFE_SHARED_DATA)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shared_data: needs the large development data outside the repository; off by default "
        "(run with --shared-data[=DIR])",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--shared-data"):
        return
    extra = [item for item in items if item.get_closest_marker("shared_data")]
    if extra:
        config.hook.pytest_deselected(items=extra)
        items[:] = [item for item in items if not item.get_closest_marker("shared_data")]


def _shared_data(request: pytest.FixtureRequest, name: str, marker_file: str) -> Path:
    root = request.config.getoption("--shared-data")
    if not root:  # pragma: no cover - such tests are deselected without the option
        pytest.skip("run with --shared-data[=DIR] to use the development data")
    path = Path(root).expanduser() / name
    if not (path / marker_file).is_file():
        pytest.fail(f"--shared-data: {path / marker_file} not found (DIR must hold {name}/{marker_file})")
    return path


@pytest.fixture(scope="session")
def dev_faces_dir(request: pytest.FixtureRequest) -> Path:
    """The labelled development faces (``faces/`` of --shared-data); tests using it are marked shared_data."""
    return _shared_data(request, "faces", "annotations.json")


@pytest.fixture(scope="session")
def dev_wild_dir(request: pytest.FixtureRequest) -> Path:
    """The development faces as whole photos (``wild/`` of --shared-data); tests using it are marked shared_data."""
    return _shared_data(request, "wild", "annotations.json")


@pytest.fixture(scope="session")
def unlabeled_dir(request: pytest.FixtureRequest) -> Path:
    """The unlabelled photo pool (``unlabeled/`` of --shared-data); tests using it are marked shared_data."""
    return _shared_data(request, "unlabeled", "index.csv")


# --------------------------------------------------------------------------- no network
@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the network: the Hub client runs offline unless a test replaces it at its boundary."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# --------------------------------------------------------------------------- reference fixtures
@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures``: outputs of the published reference implementations (README there)."""
    return FIXTURES


# --------------------------------------------------------------------------- small data made by the tests
def _textured(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour texture, (size, size, 3) float in [0, 255]."""
    coarse = rng.uniform(40, 215, size=(size // 16 + 2, size // 16 + 2, 3))
    from PIL import Image

    up = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float64) + rng.normal(0, 12, size=(size, size, 3))


def draw_face(species: str, seed: int, size: int = 256) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """A made face: a textured head on a textured background, with dark eyes, a nose and (humans) a mouth.

    Args:
        species: Species name; ``"human"`` gets the two mouth corners as well.
        seed: Seed of the picture (position, size, colours and texture).
        size: Side of the square picture.

    Returns:
        ``(image, keypoints)``: (size, size, 3) uint8 RGB, and ``{name: (x, y)}``
        image-side keypoints in pixel-centre coordinates.
    """
    rng = np.random.default_rng([seed, MADE_SPECIES.index(species) if species in MADE_SPECIES else 99])
    img = _textured(rng, size)
    s = size / 256.0
    cx, cy = 128 * s + rng.uniform(-8, 8) * s, 128 * s + rng.uniform(-8, 8) * s
    half = rng.uniform(24, 30) * s  # half the distance between the eyes
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    head = ((xx - cx) / (2.4 * half)) ** 2 + ((yy - cy - 0.3 * half) / (2.8 * half)) ** 2 <= 1.0
    skin = rng.uniform(90, 230, size=3)
    img[head] = 0.35 * img[head] + 0.65 * skin
    kps = {
        "eye_left_img": (cx - half + rng.uniform(-2, 2) * s, cy - 0.6 * half + rng.uniform(-2, 2) * s),
        "eye_right_img": (cx + half + rng.uniform(-2, 2) * s, cy - 0.6 * half + rng.uniform(-2, 2) * s),
        "nose": (cx + rng.uniform(-2, 2) * s, cy + 0.5 * half + rng.uniform(-2, 2) * s),
    }
    if species == "human":
        kps["mouth_left_img"] = (cx - 0.7 * half, cy + 1.3 * half + rng.uniform(-2, 2) * s)
        kps["mouth_right_img"] = (cx + 0.7 * half, cy + 1.3 * half + rng.uniform(-2, 2) * s)
    radius = {
        "eye_left_img": 0.28,
        "eye_right_img": 0.28,
        "nose": 0.22,
        "mouth_left_img": 0.15,
        "mouth_right_img": 0.15,
    }
    for name, (x, y) in kps.items():
        dot = (xx - x) ** 2 + (yy - y) ** 2 <= (radius[name] * half) ** 2
        img[dot] = (20, 20, 20) if name.startswith("eye") else (150, 40, 40)
    return np.clip(img, 0, 255).astype(np.uint8), {k: (float(x), float(y)) for k, (x, y) in kps.items()}


def make_faces_folder(root: Path, counts: dict[str, int] | None = None, size: int = 256) -> Path:
    """Write a labelled folder in the faces format: ``{species}_{NNNN}.jpg`` + ``annotations.json``.

    Args:
        root: Folder to write (created).
        counts: Images per species (default: 4 of each of :data:`MADE_SPECIES`).
        size: Side of the images.

    Returns:
        ``root``.
    """
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    records = []
    for species, n in (counts or dict.fromkeys(MADE_SPECIES, 4)).items():
        for i in range(1, n + 1):
            image, kps = draw_face(species, i, size)
            name = f"{species}_{i:04d}.jpg"
            Image.fromarray(image).save(root / name, quality=95)
            records.append(
                {
                    "image": name,
                    "species": species,
                    "keypoints": {k: list(v) for k, v in kps.items()},
                    "source": "made by tests/conftest.py",
                    "license": "CC0",
                }
            )
    (root / "annotations.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    return root


def make_photo_pool(root: Path, counts: dict[str, int] | None = None, size: int = 128) -> Path:
    """Write an unlabelled photo pool: ``{species}_{NNNNN}.jpg`` + ``index.csv`` (image, species, source, license).

    Args:
        root: Folder to write (created).
        counts: Images per species (default: 3 of each of :data:`MADE_SPECIES`).
        size: Side of the images.

    Returns:
        ``root``.
    """
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for species, n in (counts or dict.fromkeys(MADE_SPECIES, 3)).items():
        for i in range(1, n + 1):
            image, _ = draw_face(species, 1000 + i, size)
            name = f"{species}_{i:05d}.jpg"
            Image.fromarray(image).save(root / name, quality=92)
            rows.append({"image": name, "species": species, "source": "made by tests/conftest.py", "license": "CC0"})
    with open(root / "index.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "species", "source", "license"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labelled faces folder made for the session: 4 made faces of each of 6 species, 256 x 256."""
    return make_faces_folder(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="session")
def photo_pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small unlabelled photo pool made for the session: 3 made faces of each of 6 species, 128 x 128."""
    return make_photo_pool(tmp_path_factory.mktemp("photo_pool"))


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
