"""The documentation site: API coverage, runnable code blocks, and figures that scripts produce."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES_WITH_CODE = ("index.md", "quickstart.md", "concepts.md", "conventions.md")


def _directives() -> set[str]:
    found = set()
    for page in (DOCS / "api").glob("*.md"):
        found |= set(re.findall(r"^:::\s+([\w.]+)\s*$", page.read_text(), flags=re.M))
    return found


@pytest.mark.parametrize("package", ["dife", "dife.train", "dife.eval"])
def test_every_public_name_is_in_the_api_reference(package):
    """A name is documented when its defining module has a ``:::`` block and lists it in ``__all__``."""
    directives = _directives()
    assert directives, "no ::: directives found in docs/api/*.md"
    pkg = importlib.import_module(package)
    missing = []
    for name in pkg.__all__:
        if name == "__version__":
            continue
        module = pkg._LAZY[name]
        exported = name in getattr(importlib.import_module(module), "__all__", ())
        if not ((module in directives and exported) or f"{module}.{name}" in directives):
            missing.append(f"{package}.{name} (defined in {module})")
    assert not missing, f"not in the API reference: {missing}"


def test_no_public_name_is_shadowed_by_a_submodule():
    """``import dife.<submodule>`` rebinds ``dife.<submodule>``: no public name may share a submodule's name."""
    import pkgutil

    import dife

    submodules = {m.name for m in pkgutil.iter_modules(dife.__path__)}
    assert not submodules & set(dife.__all__)


def test_overlay_name_survives_importing_every_submodule():
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, dife\n"
        "for m in pkgutil.iter_modules(dife.__path__):\n"
        "    if m.name not in ('train', 'cli'):\n"
        "        importlib.import_module('dife.' + m.name)\n"
        "assert callable(dife.overlay) and dife.overlay.__module__ == 'dife.compositing', dife.overlay\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_blocks_run(page, tmp_path, monkeypatch, tiny_model, capsys):
    """Every ``python`` block of the page runs, in order, in one namespace, from a checkout-like folder."""
    import dife

    blocks = _python_blocks((DOCS / page).read_text())
    assert blocks, f"{page} has no python block"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    dife.set_default_model(tiny_model)
    try:
        namespace: dict = {"__name__": f"docs_{page}"}
        for i, code in enumerate(blocks):
            try:
                exec(compile(code, f"{page} block {i + 1}", "exec"), namespace)
            except Exception as e:  # pragma: no cover - the message names the block
                raise AssertionError(f"{page}, python block {i + 1} failed: {e!r}\n{code}") from e
    finally:
        dife.set_default_model(None)
    capsys.readouterr()


def test_quickstart_values():
    """A few values the pages print, checked against the library."""
    import numpy as np

    import dife

    t = dife.square_crop(width=451, height=300, size=96)
    assert (t.left, t.top, t.side) == (75.5, 0.0, 300.0)
    np.testing.assert_allclose(t.to_grid(np.array([[225.0, 149.5]])), [[47.5, 47.5]])
    t = dife.square_crop(width=512, height=512, size=96, box=(163, 60, 283, 180))
    np.testing.assert_allclose(t.to_grid(np.array([[203.0, 101.0]])), [[31.9, 32.7]], atol=0.05)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def _produced_figures() -> set[Path]:
    """The files tools/make_figures.sh has the example scripts write."""
    produced: set[Path] = set()
    for line in (ROOT / "tools" / "make_figures.sh").read_text().splitlines():
        words = shlex.split(line.split("#")[0])
        scripts = [w for w in words if w.startswith("examples/") and w.endswith(".py")]
        if not scripts:
            continue
        mod = _load(ROOT / scripts[0])
        for flag in ("--out", "--figures"):
            if flag in words:
                folder = ROOT / words[words.index(flag) + 1]
                if folder.is_relative_to(DOCS):
                    produced |= {folder / f for f in mod.FIGURES}
        if "-o" in words:
            produced.add(ROOT / words[words.index("-o") + 1])
    # the Benchmarks page's chart is copied there by tools/make_benchmarks_page.py
    page_tool = _load(ROOT / "tools" / "make_benchmarks_page.py")
    produced.add(DOCS / "images" / page_tool.CHART)
    produced.add(DOCS / "images" / page_tool.WILD_CHART)
    return produced


def test_every_figure_is_made_by_a_script():
    produced = _produced_figures()
    referenced = set()
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text()):
            referenced.add((page.parent / target).resolve())
    assert referenced, "no images found in the docs"
    missing = sorted(str(p.relative_to(ROOT)) for p in referenced if not p.is_file())
    assert not missing, f"images referenced but not committed: {missing}"
    orphans = sorted(str(p.relative_to(ROOT)) for p in referenced - produced)
    assert not orphans, f"images no script in tools/make_figures.sh produces: {orphans}"
    pictures = {p.resolve() for p in (DOCS / "images").rglob("*") if p.suffix in (".png", ".jpg", ".svg")}
    unused = sorted(str(p.relative_to(ROOT)) for p in pictures - referenced)
    assert not unused, f"pictures in docs/images that no page shows: {unused}"


def test_every_tutorial_includes_its_script():
    pages = sorted((DOCS / "tutorials").glob("*.md"))
    assert len(pages) >= 8
    included = set()
    for page in pages:
        scripts = re.findall(r'--8<-- "(examples/[\w]+\.py)"', page.read_text())
        assert scripts, f"{page.name} includes no example script"
        included |= set(scripts)
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f"tutorials/{p.name}" in nav for p in pages)
    examples = {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.py")} - {"examples/transfer_keypoints.py"}
    assert examples <= included, f"example scripts without a tutorial: {sorted(examples - included)}"
