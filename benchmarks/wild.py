"""Faces in whole photos: the face finder and keypoint transfer with no box, on the wild development set.

Run from the repository root (the wild folder is an argument; nothing here knows where it lives)::

    python benchmarks/wild.py WILD_DIR --faces FACES_DIR            # the full benchmark, 100 pairs / group
    python benchmarks/wild.py WILD_DIR --pairs 5 --out wild-smoke     # a smoke test

``WILD_DIR`` is a folder in the ``wild`` layout (whole photos, ``annotations.json``
records with ``face_box``); ``FACES_DIR`` (optional) the matching face crops
(the faces layout). It measures, with the face finder (``--detector``, default
the shipped ``dife-face-finder``) and the model (``--model``, default ``dife-base``):

1. **Face finding** on every wild photo ([dife.eval.detection_report][dife.eval.detection.detection_report]):
   found (the best face has IoU >= 0.5 with the labelled box), recall, AP at
   IoU 0.5, species accuracy among found faces, mean IoU, per species.
2. **Keypoint transfer on whole photos** (the ``wild`` protocol: methods get the
   photo, errors in 70-px units of the target's labelled face box) for the
   model with the face finder (``[detect]``: the default path of
   ``transfer_keypoints`` with no box), with the labelled boxes
   (``[true box]``: the bound for a perfect finder), with the centred square
   (``[image]``: dife before the face finder), and the ``identity`` baseline on
   the whole photo, inside the labelled boxes and inside the found faces.
3. With ``--faces``: the ``aligned`` and ``jittered`` protocols of the face
   crops through the default path (the finder runs on the crops) next to
   ``box="image"`` and ``identity``: what finding the face costs or gains on
   images that are already face crops.

Writes, atomically, ``<out>/<name>.json`` (everything; per-pair points and each
photo's best face only with ``--with-pairs``), ``<out>/<name>.md`` (the tables,
the command and the environment, and the development-set numbers against the
bar of the face-finding work) and ``<out>/<name>.png`` (one pair per
cross-species group, the one with the group's median error under ``[detect]``:
source and target photos with the boxes found (yellow), the labelled boxes
(dashed), the source points and, on the target, the truth (discs) and the
transferred points (crosses)). The figure shows photos of the data set: with
the development set (Animal-Pose, CUHK: non-commercial research terms) check
the terms before publishing or committing it; ``--no-figure`` skips it.

Well under an hour on 2 CPU cores with 100 pairs per group (``--pairs``): the face
finder runs once per distinct photo or crop, shared by the report and every method.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
NAME = "wild_dev"
#: Cross-species groups the bar looks at (every group but intra-species).
CROSS_GROUPS = ("human->dog", "human->cat", "dog->cat", "cat->dog", "human->livestock")
#: The bar of the face-finding work (issue 11), measured there on held-out photos.
BAR = {"found": 90.0, "species": 85.0, "err70_all": 8.0, "err70_group": 10.0}

__all__ = ["BAR", "CROSS_GROUPS", "bar_rows", "figure_rows", "main"]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for pkg in ("dife", "torch", "numpy", "pillow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def bar_rows(detection: Mapping[str, Any], wild_groups: Mapping[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """``(what, bar, measured, met)`` rows: the development-set numbers against ``BAR``.

    Args:
        detection: ``DetectionReport.to_dict()``.
        wild_groups: The ``groups`` of the ``[detect]`` run of the wild protocol (``json_report``).
    """
    rows: list[tuple[str, str, str, bool | None]] = []
    a = detection["all"]
    for key, what in (
        ("found", "face found (best face IoU >= 0.5), % of photos"),
        ("species", "right species, % of found"),
    ):
        v = a.get(key)
        rows.append((what, f">= {BAR[key]:g}", "-" if v is None else f"{v:.1f}", None if v is None else v >= BAR[key]))

    def err(group: str) -> float | None:
        st = wild_groups.get(group, {}).get("err70", {})
        return st.get("mean") if isinstance(st, Mapping) else None

    v = err("all")
    rows.append(
        (
            "mean error, all groups (70 px of the face)",
            f"<= {BAR['err70_all']:g}",
            "-" if v is None else f"{v:.2f}",
            None if v is None else v <= BAR["err70_all"],
        )
    )
    for g in CROSS_GROUPS:
        v = err(g)
        if v is None:
            continue
        rows.append((f"mean error, {g}", f"<= {BAR['err70_group']:g}", f"{v:.2f}", v <= BAR["err70_group"]))
    return rows


def figure_rows(result: Any, method: str, groups: Sequence[str] = CROSS_GROUPS) -> list[Any]:
    """One pair per group, the one with the group's median mean error under ``method`` (ties: the lower index)."""
    run = result.runs["wild"][method]
    picked = []
    for g in groups:
        prs = sorted((p for p in run.results if p.group == g), key=lambda p: (p.mean_err70, p.index))
        if prs:
            picked.append(prs[(len(prs) - 1) // 2])
    return picked


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/wild.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("wild", nargs="?", help="folder in the wild layout (whole photos with face_box)")
    ap.add_argument(
        "--faces", default=None, help="folder of the matching face crops (adds the aligned / jittered rows)"
    )
    ap.add_argument("--model", default="dife-base", help="DIFE model name or folder (default dife-base)")
    ap.add_argument("--detector", default=None, help="face finder folder (default: the shipped dife-face-finder)")
    ap.add_argument("--pairs", type=int, default=100, help="pairs per species group (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pairs, the jitter and the bootstrap (default 0)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--device", default=None, help="torch device (default cpu)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default benchmarks/results)")
    ap.add_argument("--name", default=NAME, help=f"file stem of the outputs (default {NAME})")
    ap.add_argument(
        "--with-pairs", action="store_true", help="keep every pair's points and each photo's face in the JSON"
    )
    ap.add_argument("--no-figure", action="store_true", help="do not write the figure (it shows the data set's photos)")
    ap.add_argument(
        "--chart-from",
        metavar="JSON",
        help="only redraw <out>/<name>_chart.png (the error bar chart) from a report this script wrote",
    )
    return ap


def error_chart(report: Mapping[str, Any]) -> Any:
    """Bar chart (PIL image) of the mean 70-px errors of a report written by this script: no photos in it.

    One panel for the wild protocol (whole photos) and, when the report has
    them, one per face-crop protocol; bars: the methods, whiskers: 95 % intervals.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("dife_bench_accuracy", Path(__file__).with_name("accuracy.py"))
    assert spec is not None and spec.loader is not None
    acc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(acc)
    data = dict(acc.chart_data(report["wild"]))
    if report.get("faces"):
        data.update(acc.chart_data(report["faces"]))
    return acc.bar_chart(
        data,
        title="Keypoint transfer on whole photos (wild) and on face crops, no box given: mean error (lower is better)",
    )


def _fail(msg: str) -> None:
    print(f"wild.py: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON report written to ``<out>/<name>.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    command = "python benchmarks/wild.py" + (" " + shlex.join(argv) if argv else "")
    if args.chart_from:
        from dife._io import atomic_path

        try:
            report = json.loads(Path(args.chart_from).read_text())
        except (OSError, ValueError) as e:
            _fail(f"--chart-from {args.chart_from}: {e}")
        if not isinstance(report, dict) or "wild" not in report:
            _fail(f"--chart-from {args.chart_from}: not a report of this script")
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(args.out) / f"{args.name}_chart.png") as tmp:
            error_chart(report).save(tmp, format="PNG", optimize=True)
        return report
    if args.wild is None:
        _fail("the wild folder is required (or --chart-from JSON)")
    for label, path in (("wild folder", args.wild), ("--faces", args.faces)):
        if path is not None and not Path(path).is_dir():
            _fail(f"{label} {path} not found")
    if args.pairs < 1:
        _fail("--pairs must be >= 1")

    from dife._io import atomic_path, atomic_write
    from dife.defaults import resolve_model
    from dife.detection import DEFAULT_DETECTOR, get_default_detector, load_detector
    from dife.errors import DIFEError
    from dife.eval import (
        DIFEMethod,
        IdentityMethod,
        detection_report,
        evaluate,
        json_report,
        markdown_report,
        pair_figure,
        read_dataset,
    )

    def log(line: str) -> None:
        print(f"wild.py: {line}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        model = resolve_model(args.model)
        # loaded here so that a missing finder stops the run at once; the methods load their own
        get_default_detector() if args.detector is None else load_detector(args.detector)
        finder_name = DEFAULT_DETECTOR if args.detector is None else str(args.detector)
        wild = read_dataset(args.wild)
        faces = read_dataset(args.faces) if args.faces else None
    except DIFEError as e:
        _fail(str(e))
    mname = str(args.model)

    labels = {"detect": "detect", "image": "image", "true": "true box"}

    def dife(framing: str) -> Any:
        return DIFEMethod(
            model, name=f"{mname} [{labels[framing]}]", device=args.device, framing=framing, detector=args.detector
        )

    # 1. face finding
    log(f"face finder {finder_name} on {len(wild)} photos")
    rep = detection_report(wild, args.detector, device=args.device, progress=log)

    # 2. whole photos
    ident_detect = IdentityMethod("detect", detector=args.detector, device=args.device)
    wild_methods = [dife("detect"), dife("true"), dife("image"), IdentityMethod(), IdentityMethod("true"), ident_detect]
    cfg = {"data": str(args.wild), "counts": args.pairs}
    wild_res, wild_views = evaluate(
        wild,
        wild_methods,
        protocols=["wild"],
        counts=args.pairs,
        seed=args.seed,
        n_boot=args.bootstrap,
        progress=log,
        config=cfg,
    )
    wild_res.detection = rep

    # 3. face crops, through the default path
    faces_res = None
    if faces is not None:
        cfg = {"data": str(args.faces), "counts": args.pairs}
        faces_res, _ = evaluate(
            faces,
            [dife("detect"), dife("image"), IdentityMethod()],
            protocols=["aligned", "jittered"],
            counts=args.pairs,
            seed=args.seed,
            n_boot=args.bootstrap,
            progress=log,
            config=cfg,
        )
    seconds = time.perf_counter() - t0

    wild_json = json_report(wild_res, include_pairs=args.with_pairs)
    detect_name = wild_methods[0].name
    bars = bar_rows(wild_json["detection"], wild_json["results"]["wild"][detect_name]["groups"])
    versions = _versions()
    report: dict[str, Any] = {
        "benchmark": {
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "seconds": round(seconds, 1),
            "versions": versions,
            "model": mname,
            "detector": finder_name,
            "bar": [{"what": w, "bar": b, "measured": m, "met": ok} for w, b, m, ok in bars],
        },
        "wild": wild_json,
    }
    if faces_res is not None:
        report["faces"] = json_report(faces_res, include_pairs=args.with_pairs)

    out = Path(args.out)
    with atomic_write(out / f"{args.name}.json", "w") as f:
        f.write(json.dumps(report, indent=1, allow_nan=False) + "\n")

    env = ", ".join(f"{k} {v}" for k, v in versions.items() if k not in ("python", "platform"))
    lines = [
        "# Faces in whole photos: face finding and keypoint transfer with no box",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        f"- {time.strftime('%Y-%m-%d')}; Python {versions['python']}, {env}; {versions['platform']}",
        f"- model {mname}, face finder {finder_name}; wall time {seconds:.0f} s",
        (
            f"- `{args.name}.png`: one pair per cross-species group (its median error under `{detect_name}`): "
            "boxes found in yellow, labelled boxes dashed, source points, target truth (discs) and transfers "
            "(crosses); it shows photos of the data set, whose terms apply"
            if not args.no_figure
            else "- no figure (`--no-figure`)"
        ),
        "",
        "## Development-set numbers against the bar (the bar is for held-out photos)",
        "",
        "| what | bar | measured | met |",
        "|---|---:|---:|:---:|",
    ]
    lines += [f"| {w} | {b} | {m} | {'-' if ok is None else ('yes' if ok else 'no')} |" for w, b, m, ok in bars]
    lines.append("")
    body = markdown_report(wild_res, title="x").splitlines()[1:]
    lines += ["# Whole photos (wild protocol)", *body]
    if faces_res is not None:
        body = markdown_report(faces_res, title="x").splitlines()[1:]
        lines += ["", "# Face crops through the default path (the finder runs on the crops)", *body]
    text = "\n".join(lines).rstrip() + "\n"
    with atomic_write(out / f"{args.name}.md", "w") as f:
        f.write(text)

    picked = figure_rows(wild_res, detect_name)
    rows = [
        (
            f"{pr.group}: {pr.mean_err70:.1f} px@70 (median of the group)",
            wild_views("wild", wild_res.pairs[pr.index].src),
            wild_views("wild", wild_res.pairs[pr.index].tgt),
            pr,
        )
        for pr in picked
    ]
    if rows and not args.no_figure:
        with atomic_path(out / f"{args.name}.png") as tmp:
            pair_figure(rows, side=240).save(tmp, format="PNG", optimize=True)
    with atomic_path(out / f"{args.name}_chart.png") as tmp:
        error_chart(report).save(tmp, format="PNG", optimize=True)
    print(text)
    log(f"wrote {out / args.name}.json, .md, _chart.png{'' if args.no_figure else ', .png'} ({seconds:.0f} s)")
    return report


if __name__ == "__main__":
    main()
