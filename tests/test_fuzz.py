"""Bad input, table-driven: nothing lost, nothing unbounded (issue 12).

Each class of bad input has its own tests; the parametrize ids name the case.

* overwrite: every output option of every command against every input, reached
  by the same path, a relative path, a symlink, a hard link and a symlinked
  folder: exit code 2, a "would overwrite" line, every input byte-identical,
  no new file;
* config: bad types and values in ``config.json``: a ``CheckpointError`` naming
  the field;
* nonfinite: NaN / inf weights and preprocessing values refused at load;
* files: FIFOs, devices, sockets, binary / huge / nested points files, truncated
  and corrupted JPEGs, int32 images;
* bounds: absurd boxes and sizes refused at once; the largest accepted box costs
  memory like its image, not like its box;
* temporaries: SIGTERM and SIGKILL in the middle of ``dife embed -o``;
* pickle: hostile network pickles: refused, with bounded memory, nothing changed.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dife.cli import main
from dife.errors import CheckpointError, DIFEWarning, ImageError, InputError

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "dife" / "assets"


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file bytes, or the link target for symlinks."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "->" + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
    return out


# =============================================================================== overwrite
ALIASES = ["same", "relative", "symlink", "hardlink", "dirlink"]
DIR_ALIASES = ["same", "relative", "dirlink"]


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("tiny")
    tiny_model.save_pretrained(d)
    return d


@pytest.fixture
def workspace(tmp_path, monkeypatch, saved_tiny):
    """tmp/in holds the inputs, tmp/work is the working directory; returns (tmp, files)."""
    inp = tmp_path / "in"
    inp.mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    files = {
        "a": _image(inp / "a.png", 1),
        "b": _image(inp / "b.png", 2),
        "ref": _image(inp / "ref.png", 3),
        "pts": inp / "pts.json",
        "refpts": inp / "ref.json",
        "asset": inp / "hat.png",
        "asset_json": inp / "hat.json",
        "parser": inp / "parser.safetensors",
        "a_parts": _image(inp / "a_parts.png", 4),
        "a_emb": _image(inp / "a_embedding.png", 5),
    }
    anchors = {"eye_left_img": [20, 20], "eye_right_img": [40, 20], "nose": [30, 30]}
    files["pts"].write_text(json.dumps(anchors))
    files["refpts"].write_text(json.dumps(anchors))
    files["asset"].write_bytes((ASSETS / "glasses.png").read_bytes())
    files["asset_json"].write_bytes((ASSETS / "glasses.json").read_bytes())
    files["parser"].write_bytes(b"not read: the output check comes first")
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors", "README.md"):
        (model / name).write_bytes((saved_tiny / name).read_bytes())
    files["model_config"] = model / "config.json"
    files["model_weights"] = model / "model.safetensors"
    files["model"] = model
    return tmp_path, files


def _alias(path: Path, how: str, tmp: Path) -> str:
    work = tmp / "work"
    if how == "same":
        return str(path)
    if how == "relative":
        return os.path.relpath(path, work)
    if how == "symlink":
        link = work / f"link_{path.parent.name}_{path.name}"
        link.symlink_to(path)
        return str(link)
    if how == "hardlink":
        link = work / f"hard_{path.parent.name}_{path.name}"
        os.link(path, link)
        return str(link)
    if how == "dirlink":
        link = work / f"dirlink_{path.parent.name}"
        if not link.exists():
            link.symlink_to(path.parent, target_is_directory=True)
        return str(link / path.name)
    raise AssertionError(how)


def _dir_alias(folder: Path, how: str, tmp: Path) -> str:
    if how == "same":
        return str(folder)
    if how == "relative":
        return os.path.relpath(folder, tmp / "work")
    link = tmp / "work" / f"dirlink_{folder.name}"
    link.symlink_to(folder, target_is_directory=True)
    return str(link)


def _m(f):
    return ["--model", str(f["model"])]


# (case id, input key, argv builder given the output path / folder)
FILE_CASES = [
    *(
        (f"transfer{opt}-{key}", key, lambda f, o, opt=opt: ["transfer", f["a"], f["b"], "--points-file", f["pts"], opt, o, *_m(f)])
        for opt in ("-o", "--json-output")
        for key in ("a", "b", "pts", "model_config")
    ),
    *(
        (f"embed-o-{key}", key, lambda f, o: ["embed", f["a"], f["b"], "-o", o, *_m(f)])
        for key in ("a", "b", "model_weights")
    ),
    *(
        (f"parse--save-parser-{key}", key, lambda f, o: ["parse", f["a"], "-o", f["a"].parent / "parts", "--parser", f["parser"], "--save-parser", o, *_m(f)])
        for key in ("a", "parser", "model_config")
    ),
    *(
        (f"overlay-points-{key}", key, lambda f, o: ["overlay", f["a"], "--asset", f["asset"], "--points-file", f["pts"], "-o", o])
        for key in ("a", "asset", "asset_json", "pts")
    ),
    *(
        (f"overlay-reference-{key}", key, lambda f, o: ["overlay", f["a"], "--asset", "glasses", "--reference", f["ref"], "--reference-points", f["refpts"], "-o", o, *_m(f)])
        for key in ("a", "ref", "refpts", "model_config")
    ),
]  # fmt: skip


@pytest.mark.parametrize("how", ALIASES)
@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_overwrite_file_outputs_refused(case, how, workspace, capsys):
    tmp, files = workspace
    _, key, build = case
    out = _alias(files[key], how, tmp)
    before = _snapshot(tmp)
    code = main([str(a) for a in build(files, out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "would overwrite the input file" in err and err.count("\n") == 1, err
    assert _snapshot(tmp) == before  # inputs byte-identical, nothing written, no temporary file


FOLDER_CASES = [
    ("embed--rgb", lambda f, d: ["embed", f["a"], f["a_emb"], "--rgb", d, *_m(f)], "a_emb"),
    ("parse-o", lambda f, d: ["parse", f["a"], f["a_parts"], "-o", d, *_m(f)], "a_parts"),
    ("convert-official", lambda f, d: ["convert-official", Path(d) / "model.safetensors", d], "model_weights"),
    ("eval-split", lambda f, d: ["eval", "--data", f["a"].parent, "--split", Path(d) / "results.json", "-o", d], None),
    ("eval-weights", lambda f, d: ["eval", "--data", f["a"].parent, "--weights", Path(d) / "report.md", "-o", d], None),
]


@pytest.mark.parametrize("how", DIR_ALIASES)
@pytest.mark.parametrize("case", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_overwrite_folder_outputs_refused(case, how, workspace, capsys):
    """Outputs named inside an output folder (``--rgb DIR``, ``parse -o DIR``, ``OUTDIR``, eval ``-o``)."""
    tmp, files = workspace
    _, build, key = case
    if key is None:  # eval: an input file named like an eval output, in the output folder
        (files["a"].parent / "results.json").write_text("{}")
        (files["a"].parent / "report.md").write_text("# mine")
        folder = files["a"].parent
    else:
        folder = files[key].parent
    d = _dir_alias(folder, how, tmp)
    before = _snapshot(tmp)
    code = main([str(a) for a in build(files, d)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "would overwrite the input file" in err, err
    assert _snapshot(tmp) == before


DUPLICATES = [
    ("transfer-o-and-json", lambda f, t: ["transfer", f["a"], f["b"], "--points", "1,1", "-o", t / "x.png", "--json-output", t / "x.png", *_m(f)]),
    ("transfer-o-and-json-via-link", lambda f, t: ["transfer", f["a"], f["b"], "--points", "1,1", "-o", t / "x.png", "--json-output", t / "dirlink_work" / "x.png", *_m(f)]),
    ("parse-two-images-one-stem", lambda f, t: ["parse", f["a"], f["ref"].rename(t / "a.png"), "-o", t / "parts", *_m(f)]),
    ("parse-save-parser-is-a-part-map", lambda f, t: ["parse", f["a"], "-o", t / "parts", "--save-parser", t / "parts" / "a_parts.png", *_m(f)]),
    ("embed-rgb-two-images-one-stem", lambda f, t: ["embed", f["a"], f["b"].rename(t / "a.png"), "--rgb", t / "rgb", *_m(f)]),
]  # fmt: skip


@pytest.mark.parametrize("case", DUPLICATES, ids=[c[0] for c in DUPLICATES])
def test_overwrite_two_outputs_to_one_file_refused(case, workspace, capsys):
    tmp, files = workspace
    (tmp / "work" / "dirlink_work").symlink_to(tmp / "work", target_is_directory=True)
    argv = [str(a) for a in case[1](files, tmp / "work")]
    before = _snapshot(tmp)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "both write to" in err, err
    assert _snapshot(tmp) == before


# =============================================================================== config
def _write_model(folder: Path, saved: Path, config: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return folder


BAD_FIELDS = [
    # (field, value): the error must name the field
    *((f, v) for f in ("embed_dim", "planes_hg", "num_blocks", "depth", "input_size", "converter_hidden")
      for v in ("16", 16.5, True, None, [16], {}, -1, 0)),
    ("embed_dim", 10**9), ("input_size", 100000), ("input_size", 10**18), ("depth", 50), ("num_blocks", 10**6),
    ("converter_dim", -1), ("converter_dim", "512"), ("converter_dim", 1e3),
    ("gn_groups", 0), ("gn_groups", 7), ("gn_groups", "8"), ("gn_groups", -16), ("gn_groups", 8.0), ("gn_groups", 10**9),
    ("mean", ["a", "b", "c"]), ("mean", [0.5, 0.5]), ("mean", "0.5"), ("mean", 0.5), ("mean", [None, 0, 0]),
    ("mean", [0.5, 0.5, 0.5, 0.5]), ("mean", [[0.5], 0.5, 0.5]), ("mean", [True, 0.5, 0.5]),
    ("std", [0, 0.5, 0.5]), ("std", [-0.5, 0.5, 0.5]), ("std", ["a", "b", "c"]), ("std", {}),
    ("domains", "human"), ("domains", [1, 2]), ("domains", ["human", "human"]), ("domains", [""]), ("domains", None),
    ("domains", [f"d{i}" for i in range(100)]), ("domains", {"human": 1}),
    ("crop", "random"), ("crop", 5), ("crop", None),
    ("spatial_prior", -1), ("spatial_prior", "0.1"), ("spatial_prior", True), ("spatial_prior", None),
    ("extra", 5), ("extra", [1, 2]), ("extra", "x"), ("extra", None),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f"{f}={v!r:.20}" for f, v in BAD_FIELDS])
def test_config_bad_field_is_named(field, value, tmp_path, saved_tiny, tiny_config):
    from dife import DIFE

    cfg = {"model_type": "dife", **tiny_config.to_dict(), field: value}
    folder = _write_model(tmp_path / "m", saved_tiny, cfg)
    with pytest.raises(CheckpointError, match=rf"config field {field}\b") as info:
        DIFE.from_pretrained(folder)
    assert "config.json" in str(info.value)


BAD_FILES = [
    ("not-json", "{"),
    ("nested-deep", "[" * 100_000 + "]" * 100_000),
    ("dict-nested-deep", '{"extra": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}"),
    ("a-list", "[1, 2]"),
    ("unknown-key", json.dumps({"model_type": "dife", "num_heads": 8})),
    ("other-model-type", json.dumps({"model_type": "bert"})),
    ("input-size-not-divisible", json.dumps({"model_type": "dife", "input_size": 100})),
    ("input-size-too-small", json.dumps({"model_type": "dife", "input_size": 32, "planes_hg": 16, "gn_groups": 16})),
    ("nan-literal-mean", '{"model_type": "dife", "mean": [NaN, 0.5, 0.5]}'),
    ("inf-literal-std", '{"model_type": "dife", "std": [Infinity, 0.5, 0.5]}'),
    ("neg-inf-spatial-prior", '{"model_type": "dife", "spatial_prior": -Infinity}'),
]


@pytest.mark.parametrize(("name", "text"), BAD_FILES, ids=[n for n, _ in BAD_FILES])
def test_config_bad_file_is_a_checkpoint_error(name, text, tmp_path, saved_tiny):
    from dife import DIFE

    folder = _write_model(tmp_path / "m", saved_tiny, text)
    with pytest.raises(CheckpointError, match="config.json"):
        DIFE.from_pretrained(folder)


def test_config_extra_must_be_json(tiny_config, tmp_path):
    import dataclasses

    for extra in ({"a": object()}, {"a": {1, 2}}, {1: "int key"}, {"a": b"bytes"}):
        with pytest.raises(CheckpointError, match="config field extra"):
            dataclasses.replace(tiny_config, extra=extra)
    ok = dataclasses.replace(tiny_config, extra={"a": [1, {"b": None}], "c": 1.5})
    from dife import DIFE

    DIFE(ok).save_pretrained(tmp_path / "ok")  # JSON-only extra always saves


# =============================================================================== nonfinite
def _poison(saved: Path, folder: Path, key_index: int, value: float, dtype=None) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(saved / "model.safetensors"))
    keys = [k for k, v in state.items() if v.is_floating_point()]
    key = keys[key_index]
    t = state[key].clone().reshape(-1)
    t[t.numel() // 2] = value
    state[key] = t.reshape(state[key].shape)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_bytes((saved / "config.json").read_bytes())
    assert not bool(torch.isfinite(state[key]).all())
    return key


NONFINITE = [(i, v) for i in (0, 7, -1) for v in (math.nan, math.inf, -math.inf)]


@pytest.mark.parametrize(("index", "value"), NONFINITE, ids=[f"tensor{i}={v}" for i, v in NONFINITE])
def test_nonfinite_weights_refused(index, value, tmp_path, saved_tiny):
    from dife import DIFE

    key = _poison(saved_tiny, tmp_path / "m", index, value)
    with pytest.raises(CheckpointError, match=rf"NaN or infinite weights in {key}"):
        DIFE.from_pretrained(tmp_path / "m")


def test_nonfinite_half_precision_weights_refused(tmp_path, saved_tiny):
    import torch

    from dife import DIFE

    _poison(saved_tiny, tmp_path / "m", 3, math.nan, dtype=torch.float16)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        DIFE.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("field", ["mean", "std"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nonfinite_preprocessing_refused(field, literal, tmp_path, saved_tiny, tiny_config):
    from dife import DIFE

    text = json.dumps({"model_type": "dife", **tiny_config.to_dict()})
    text = text.replace(f'"{field}": [0.5,', f'"{field}": [{literal},')
    assert literal in text
    folder = _write_model(tmp_path / "m", saved_tiny, text)
    with pytest.raises(CheckpointError, match=rf"config field {field}\[0\]"):
        DIFE.from_pretrained(folder)


# =============================================================================== files
def _special_files(tmp_path: Path) -> list[tuple[str, Path]]:
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.jpg"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    sock.close()
    out = [("fifo", fifo), ("socket", sock_path), ("directory", tmp_path)]
    out += [(Path(d).name, Path(d)) for d in ("/dev/zero", "/dev/null") if os.path.exists(d)]
    link = tmp_path / "link_to_fifo.jpg"
    link.symlink_to(fifo)
    return [*out, ("symlink-to-fifo", link)]


@pytest.mark.timeout(60)
def test_files_special_files_never_hang(tmp_path, capsys, saved_tiny):
    """FIFOs, sockets, devices, folders as images / points files: one error each, at once."""
    from dife import load_image

    img = _image(tmp_path / "ok.png")
    n = 0
    for name, special in _special_files(tmp_path):
        t = time.perf_counter()
        with pytest.raises(ImageError):
            load_image(special)
        for argv in (
            ["transfer", special, img, "--points", "1,1", "--model", saved_tiny],
            ["transfer", img, img, "--points-file", special, "--model", saved_tiny],
            ["overlay", img, "--points-file", special, "-o", tmp_path / "o.png"],
        ):
            assert main([str(a) for a in argv]) == 2, (name, argv)
            err = capsys.readouterr().err
            assert err.strip().splitlines()[-1].startswith("dife: error:") and "Traceback" not in err
            n += 1
        assert time.perf_counter() - t < 20, name
    assert n >= 15


def _bad_points_files(tmp_path: Path) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(0)
    cases: list[tuple[str, bytes]] = [(f"random-bytes-{i}", rng.bytes(int(rng.integers(1, 5000)))) for i in range(6)]
    cases += [
        ("jpeg-bytes", (ROOT / "examples" / "images" / "chelsea.jpg").read_bytes()),
        ("utf16-json", json.dumps([[1, 2]]).encode("utf-16")),
        ("nul-bytes", b"1,2\n\x00\x00\n3,4\n"),
        ("latin1", "1,2 # caf\xe9\n".encode("latin-1")),
        ("nested-list", b"[" * 200_000 + b"]" * 200_000),
        ("nested-dict", b'{"a": ' * 100_000 + b"1" + b"}" * 100_000),
        ("three-coordinates", b"[[1, 2, 3]]"),
        ("strings", b'[["a", "b"]]'),
        ("a-number", b"5"),
        ("null", b"null"),
        ("empty-json-list", b"[]"),
        ("keypoints-not-a-dict", b'{"keypoints": 5}'),
        ("empty-text", b""),
        ("text-garbage", b"hello world\n"),
        ("one-coordinate", b"1\n2\n"),
    ]
    out = []
    for name, data in cases:
        suffix = (
            ".json"
            if name.startswith(("utf16", "nested", "three", "strings", "a-number", "null", "empty-json", "keypoints"))
            else ".txt"
        )
        p = tmp_path / f"{name}{suffix}"
        p.write_bytes(data)
        out.append((name, p))
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: 64 MB of NUL bytes that take no disk space
    out.append(("huge-sparse", huge))
    return out  # fmt: skip


def test_files_bad_points_files_exit_2(tmp_path, capsys, saved_tiny):
    img = _image(tmp_path / "ok.png")
    cases = _bad_points_files(tmp_path)
    assert len(cases) == 22
    for name, p in cases:
        before = p.read_bytes() if p.stat().st_size < 10**6 else None
        t = time.perf_counter()
        code = main(["transfer", str(img), str(img), "--points-file", str(p), "--model", str(saved_tiny)])
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        assert err.strip().splitlines()[-1].startswith("dife: error:") and "Traceback" not in err, name
        assert time.perf_counter() - t < 10, name
        if before is not None:
            assert p.read_bytes() == before


@pytest.fixture(scope="module")
def photo_jpeg(tmp_path_factory) -> bytes:
    """A 256x256 photo-like JPEG (the astronaut example, re-encoded)."""
    buf = io.BytesIO()
    Image.open(ROOT / "examples" / "images" / "astronaut.jpg").convert("RGB").resize((256, 256)).save(
        buf, format="JPEG", quality=90
    )
    return buf.getvalue()


def _outcome(path: Path) -> str:
    from dife import load_image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            load_image(path)
        except ImageError:
            return "error"
    return "warning" if any(issubclass(w.category, DIFEWarning) for w in caught) else "silent"


def test_files_truncated_jpegs_never_silent(tmp_path, photo_jpeg):
    data = photo_jpeg
    outcomes = []
    for frac in (0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99):
        p = tmp_path / f"cut{frac}.jpg"
        p.write_bytes(data[: int(len(data) * frac)])
        outcomes.append(_outcome(p))
    p = tmp_path / "no_eoi.jpg"
    p.write_bytes(data[:-2])
    outcomes.append(_outcome(p))
    assert "silent" not in outcomes, outcomes


def test_files_truncated_jpeg_warns_even_when_pillow_is_lenient(tmp_path, photo_jpeg, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # some code bases set this globally
    p = tmp_path / "cut.jpg"
    p.write_bytes(photo_jpeg[: len(photo_jpeg) // 2])
    assert _outcome(p) == "warning"


def test_files_corrupted_jpegs_never_silent(tmp_path, photo_jpeg):
    """2 KB of random bytes written over the data at 30 random places: an ImageError or a DIFEWarning each.

    The one exception is random bytes that happen to hold an end-of-image
    marker (``FF D9``): the file then ends there like a whole JPEG followed by
    trailing data (which cameras append legitimately), and nothing can tell.
    """
    rng = np.random.default_rng(12)
    data = photo_jpeg
    counts = {"error": 0, "warning": 0, "silent": 0}
    for i in range(30):
        b = bytearray(data)
        off = int(rng.integers(700, len(data) - 2048 - 2))
        b[off : off + 2048] = rng.bytes(2048)
        p = tmp_path / f"bad{i}.jpg"
        p.write_bytes(bytes(b))
        outcome = _outcome(p)
        counts[outcome] += 1
        if outcome == "silent":
            assert b"\xff\xd9" in b[off : off + 2048]
    assert counts["error"] + counts["warning"] >= 28, counts


def test_files_intact_jpegs_do_not_warn(tmp_path, photo_jpeg):
    for name, kwargs in (("base", {}), ("progressive", {"progressive": True}), ("optimized", {"optimize": True})):
        p = tmp_path / f"{name}.jpg"
        Image.open(io.BytesIO(photo_jpeg)).save(p, format="JPEG", **kwargs)
        assert _outcome(p) == "silent", name


INT32 = [("0..255", 255, 255.0), ("0..65535", 65535, 65535.0), ("0..2**31-1", 2**31 - 1, 2**31 - 1.0)]


@pytest.mark.parametrize(("name", "top", "full"), INT32, ids=[c[0] for c in INT32])
def test_files_int32_images_scaled_by_range(name, top, full, tmp_path):
    from dife import load_image

    ramp = np.linspace(0, top, 64 * 48).reshape(48, 64).astype(np.int32)
    ramp[0, 0] = top
    for src in (Image.fromarray(ramp), _tiff(tmp_path / f"{top}.tif", ramp)):
        x = load_image(src)
        np.testing.assert_allclose(x[0].numpy(), ramp / full, atol=1e-6)
        assert float(x.max()) == pytest.approx(1.0)


def _tiff(path: Path, a: np.ndarray) -> Path:
    Image.fromarray(a).save(path)
    return path


def test_files_int32_negative_refused():
    from dife import load_image

    with pytest.raises(ImageError, match="negative"):
        load_image(Image.fromarray(np.full((8, 8), -3, np.int32)))


# =============================================================================== bounds
BAD_BOXES = [
    [0, 0, 1e9, 1e9], [0, 0, 1e5, 1e5], [-1e300, -1e300, 1e300, 1e300], [0, 0, math.inf, 10], [math.nan, 0, 10, 10],
    [10, 10, 5, 5], [0, 0, 0, 0], [1e18, 1e18, 1e18 + 1e6, 1e18 + 1e6], [-5000, -5000, 1, 1], [0, 0, 4097, 10],
    [0, 0, 1, 1, 1], [True, 0, 10, 10], ["0", 0, 10, 10], [[0, 0, 10, 10], [0, 0, 5, 5]], [0, 0, 10, -math.inf],
]  # fmt: skip


@pytest.mark.parametrize("box", BAD_BOXES, ids=[repr(b)[:40] for b in BAD_BOXES])
def test_bounds_absurd_box_refused_at_once(box, tiny_model):
    import dife

    img = np.zeros((512, 512, 3), np.uint8)
    t = time.perf_counter()
    with pytest.raises(InputError):
        dife.embed(img, box=box, model=tiny_model)
    assert time.perf_counter() - t < 2.0


def test_bounds_largest_box_is_accepted(tiny_model):
    """8x the longer side is the largest box; it runs (and its crop shows the image small, in the middle)."""
    import dife
    from dife.coords import MAX_BOX_SCALE

    img = np.full((512, 512, 3), 255, np.uint8)
    s = MAX_BOX_SCALE * 512
    e = dife.embed(img, box=[256 - s / 2, 256 - s / 2, 256 + s / 2, 256 + s / 2], model=tiny_model)
    assert e.transforms[0].side == s


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, time, torch
    from dife.coords import CropTransform, square_crop
    from dife.embedding import resample_crop
    torch.set_num_threads(1)
    W, H = int(sys.argv[1]), int(sys.argv[2])
    image = torch.rand(3, H, W)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = 8 * max(W, H)  # the largest accepted box: its zero-padded window alone would be s * s * 12 bytes
    t = square_crop(W, H, 96, [W / 2 - s / 2, H / 2 - s / 2, W / 2 + s / 2, H / 2 + s / 2])
    out = resample_crop(image, t)
    far = CropTransform(left=-s, top=-s, side=2.5 * s, size=96, width=W, height=H)  # beyond the box limit
    out2 = resample_crop(image, far)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((peak - base) / 1024, float(out.abs().sum()) > 0, tuple(out2.shape))
    """
)


@pytest.mark.parametrize("size", [(512, 512), (4000, 300)], ids=["512x512", "4000x300"])
def test_bounds_crop_memory_follows_the_image_not_the_box(size):
    """Peak RSS growth of resampling the largest box (and one 20x the image) stays far below the box's window."""
    res = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, *map(str, size)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    grown_mb, nonzero, shape = res.stdout.split(maxsplit=2)
    W, H = size
    bound = 50 + W * H * 12 / 2**20  # 50 MB plus one float32 copy of the image
    window_mb = (2.5 * 8 * max(W, H)) ** 2 * 12 / 2**20  # the far crop's zero-padded window (the old code's cost)
    assert float(grown_mb) < bound, (grown_mb, bound)
    assert window_mb > 10 * bound  # the bound is meaningful
    assert nonzero == "True" and shape.strip() == "(3, 96, 96)"


def test_bounds_input_size_refused_before_allocating(tmp_path, saved_tiny, tiny_config):
    from dife import DIFE

    for size in (100_000, 1056, 2048):
        folder = _write_model(tmp_path / str(size), saved_tiny, {**tiny_config.to_dict(), "input_size": size})
        t = time.perf_counter()
        with pytest.raises(CheckpointError, match="config field input_size must be an integer in 1..1024"):
            DIFE.from_pretrained(folder)
        assert time.perf_counter() - t < 2.0


# =============================================================================== temporaries
_SLOW_EMBED = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from dife import cli

    def slow_savez(f, **arrays):  # stands for a long write: half a file, then wait to be killed
        f.write(b"PK partial")
        f.flush()
        print("writing", flush=True)
        time.sleep(120)

    np.savez_compressed = slow_savez
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def _start_slow_embed(tmp_path: Path, saved: Path, out: Path) -> subprocess.Popen:
    img = _image(tmp_path / "face.png")
    p = subprocess.Popen(
        [sys.executable, "-c", _SLOW_EMBED, "embed", str(img), "-o", str(out), "--model", str(saved)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()  # blocks until the temporary file is being written
    assert line.strip() == "writing", p.stderr.read() if p.stderr else ""
    return p


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.timeout(120)
def test_temporaries_removed_on_sigterm(tmp_path, saved_tiny):
    out = tmp_path / "out" / "emb.npz"
    p = _start_slow_embed(tmp_path, saved_tiny, out)
    assert len(_temporaries(out.parent)) == 1
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 128 + signal.SIGTERM
    assert "dife: terminated" in p.stderr.read()
    assert list(out.parent.iterdir()) == []  # no temporary, no half-written output


@pytest.mark.timeout(120)
def test_temporaries_of_killed_process_swept_on_next_write(tmp_path, saved_tiny, capsys):
    out = tmp_path / "out" / "emb.npz"
    p = _start_slow_embed(tmp_path, saved_tiny, out)
    p.kill()
    p.wait(timeout=60)
    stale = _temporaries(out.parent)
    assert len(stale) == 1  # SIGKILL cannot clean up ...
    # ... a live writer's temporary (this process's, and its parent's) must survive the sweep
    keep = [out.parent / f".x.npz.dife-{pid}-abcdefgh.tmp" for pid in (os.getpid(), os.getppid())]
    for k in keep:
        k.write_bytes(b"live")
    other = out.parent / ".x.npz.12345678.tmp"  # not our pattern: never touched
    other.write_bytes(b"foreign")
    img = _image(tmp_path / "face2.png")
    assert main(["embed", str(img), "-o", str(out), "--model", str(saved_tiny)]) == 0, capsys.readouterr().err
    left = _temporaries(out.parent)
    assert stale[0] not in left
    assert sorted(left) == sorted([k.name for k in keep] + [other.name])
    assert np.load(out)["features"].shape[0] == 1


# =============================================================================== pickle
def _legit_pickle(protocol: int = 2) -> bytes:
    import collections

    import torch

    obj = {
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "scalar": np.float64(0.5),
        "tensor": torch.arange(4.0),
        "ordered": collections.OrderedDict(a=1, b=[1, 2]),
        "set": {1, 2},
        "bytes": bytearray(b"abc"),
    }
    return pickle.dumps(obj, protocol=protocol)


def _storage_bytes(numel: int) -> bytes:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good = torch.ones(3).storage().__reduce__()[1][0]
    return good.replace(b"K\x03N", b"J" + numel.to_bytes(4, "little") + b"N")


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _hostile_pickles() -> list[tuple[str, bytes]]:
    import torch

    big = (10**9).to_bytes(8, "little")
    return [
        ("bytearray-1e9-proto0", b"c__builtin__\nbytearray\n(I1000000000\ntR."),  # the 38-byte kind
        ("bytearray-1e9-builtins", b"cbuiltins\nbytearray\n(J\x00\xca\x9a\x3btR."),
        ("bytearray-latin1-wrong-encoding", b"cbuiltins\nbytearray\n(Vab\nVutf-16\ntR."),
        ("BYTEARRAY8-1e9", b"\x80\x05\x96" + big + b"."),
        ("BINBYTES8-1e9", b"\x80\x04\x8e" + big + b"."),
        ("BINUNICODE8-1e9", b"\x80\x04\x8d" + big + b"."),
        ("ndarray-call-with-shape", b"cnumpy\nndarray\n((J\x00\xca\x9a\x3btR."),
        ("ndarray-newobj-with-shape", b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85\x81."),
        ("reconstruct-shape-1e9", pickle.dumps(np.arange(3.0), protocol=2).replace(b"K\x00\x85", b"J\x00\xca\x9a\x3b\x85", 1)),
        ("setstate-shape-1e9", pickle.dumps(np.arange(5.0), protocol=2).replace(b"K\x05\x85", b"J\x00\xca\x9a\x3b\x85", 1)),
        ("object-dtype", pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)),
        ("structured-dtype", b"cnumpy\ndtype\n(V(1000000000,)f8\nI00\nI01\ntR."),
        ("storage-declares-1e9", pickle.dumps(_Call(torch.storage._load_from_bytes, _storage_bytes(10**9)), protocol=2)),
        ("storage-not-torch-save", pickle.dumps(_Call(torch.storage._load_from_bytes, b"\x80\x02K\x01."), protocol=2)),
        ("BUILD-function-defaults", b"c_codecs\nencode\n(N}V__defaults__\n(Vutf-16\ntstb."),
        ("BUILD-function-dict", b"ctorch._utils\n_rebuild_parameter\n}Vx\nI1\nsb."),
        ("BUILD-class-attribute", b"cdnnlib.util\nEasyDict\n(N}V__getattr__\nNstb."),
        ("BUILD-standin-class", b"ctorch_utils.persistence\nPersistentObject\n(N}Vx\nI1\nstb."),
        ("BUILD-tensor", pickle.dumps(torch.ones(2), protocol=2)[:-1] + b"(I1\nI2\nI3\nI4\ntb."),
        ("BUILD-torch-device", b"ctorch\ndevice\n(Vcpu\ntR}Vtype\nVcuda\nsb."),
        ("SETITEM-into-tensor", pickle.dumps(torch.ones(2), protocol=2)[:-1] + b"I0\nF5.0\ns."),
        ("SETITEMS-into-Size", b"ctorch\nSize\n(tR(I0\nI1\nu."),
        ("APPENDS-into-bytearray", b"\x80\x03cbuiltins\nbytearray\nC\x01a\x85R(K\x01K\x02e."),
        ("ADDITEMS-into-frozenset", b"\x80\x04cbuiltins\nfrozenset\n)R(K\x01\x90."),
        ("NEWOBJ-object", b"\x80\x02cbuiltins\nobject\n)\x81."),
        ("os.system", b"cos\nsystem\n(Vtrue\ntR."),
        ("builtins.eval", b"cbuiltins\neval\n(V1+1\ntR."),
        ("persistent-id", b"\x80\x02K\x01Q."),
        ("out-of-band-buffer", b"\x80\x05\x97."),
    ]  # fmt: skip


HOSTILE = _hostile_pickles()


@pytest.mark.parametrize(("name", "data"), HOSTILE, ids=[n for n, _ in HOSTILE])
def test_pickle_hostile_refused_with_bounded_memory(name, data, tmp_path):
    from dife.train.teachers import _safe_pickle as sp

    defaults = sp._codecs_encode.__defaults__
    easy_attrs = dict(vars(sp._EasyDict))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError):
            sp.loads_pickle(data)
        path = tmp_path / "x.pkl"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="x.pkl"):
            sp.load_pickle(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20 + 20 * len(data), peak  # a few MB, whatever the pickle asks for
    assert sp._codecs_encode.__defaults__ == defaults and dict(vars(sp._EasyDict)) == easy_attrs


def test_pickle_legit_records_still_load():
    import torch

    from dife.train.teachers import _safe_pickle as sp

    for protocol in (0, 1, 2, 3, 4):
        obj = sp.loads_pickle(_legit_pickle(protocol))
        np.testing.assert_array_equal(obj["array"], np.arange(6, dtype=np.float32).reshape(2, 3))
        assert obj["scalar"] == 0.5 and obj["set"] == {1, 2} and obj["bytes"] == bytearray(b"abc")
        assert torch.equal(obj["tensor"], torch.arange(4.0)) and obj["ordered"] == {"a": 1, "b": [1, 2]}
    storage = sp.loads_pickle(pickle.dumps(_Call(torch.storage._load_from_bytes, _storage_bytes(3)), protocol=2))
    assert list(storage) == [1.0, 1.0, 1.0]


def test_pickle_random_mutations_only_raise_checkpoint_errors():
    """300 seeded byte mutations of a legitimate pickle: loaded or CheckpointError, never another error, small memory."""
    from dife.train.teachers import _safe_pickle as sp

    rng = np.random.default_rng(3)
    base = _legit_pickle(2)
    outcomes = {"loaded": 0, "refused": 0}
    tracemalloc.start()
    try:
        for _ in range(300):
            b = bytearray(base)
            for _ in range(int(rng.integers(1, 4))):
                i = int(rng.integers(0, len(b)))
                kind = rng.integers(0, 3)
                if kind == 0:
                    b[i] = int(rng.integers(0, 256))
                elif kind == 1:
                    del b[i : i + int(rng.integers(1, 8))]
                else:
                    b[i:i] = rng.bytes(int(rng.integers(1, 8)))
            try:
                sp.loads_pickle(bytes(b))
                outcomes["loaded"] += 1
            except CheckpointError:
                outcomes["refused"] += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcomes["refused"] > 100, outcomes
    assert peak < 8 * 2**20, peak
