"""The package surface: public names, light import, no warnings."""

from __future__ import annotations

import subprocess
import sys

import dife

# Names users rely on: removing one is a breaking change and must fail here.
EXPECTED_PUBLIC = {
    "DIFE",
    "DIFEConfig",
    "Embedding",
    "embed",
    "transfer_keypoints",
    "transfer_dense",
    "DenseCorrespondence",
    "KeypointScores",
    "TransferPredictor",
    "parse_face",
    "FaceParser",
    "kmeans",
    "overlay",
    "Asset",
    "load_asset",
    "load_image",
    "CropTransform",
    "square_crop",
    "get_default_model",
    "set_default_model",
    "list_models",
    "embedding_to_rgb",
    "draw_keypoints",
    "draw_matches",
    "draw_parts",
    "DIFEError",
    "InputError",
    "ShapeError",
    "ImageError",
    "KeypointError",
    "UnknownDomainError",
    "CheckpointError",
    "ModelNotFoundError",
    "__version__",
}


def test_public_names_do_not_vanish():
    missing = EXPECTED_PUBLIC - set(dife.__all__)
    assert not missing, f"public names removed from dife.__all__: {sorted(missing)}"


def test_every_public_name_resolves():
    for name in dife.__all__:
        assert getattr(dife, name) is not None, name


def test_unknown_attribute_is_attribute_error():
    try:
        dife.does_not_exist  # noqa: B018
    except AttributeError as e:
        assert "does_not_exist" in str(e)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_is_light_and_silent():
    code = (
        "import sys, time, warnings\n"
        "warnings.simplefilter('error')\n"
        "t = time.perf_counter(); import dife; dt = time.perf_counter() - t\n"
        "heavy = [m for m in ('torch', 'timm', 'matplotlib', 'numpy') if m in sys.modules]\n"
        "print(dt, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == ""
    dt, heavy = out.stdout.split(" ", 1)
    assert heavy.strip() == "[]", f"import dife pulled in {heavy}"
    assert float(dt) < 1.5


def test_all_lists_exactly_the_lazy_names():
    assert sorted(dife.__all__) == sorted([*dife._LAZY, "__version__"])
