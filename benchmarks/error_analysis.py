"""Where the keypoint-transfer error of one method is: gross errors, and systematic offsets per keypoint.

Reads the ``results.json`` that ``dife eval`` writes and prints, per crop protocol:

* the mean and median 70-px error over all points, and the share of the summed error that comes
  from points more than 10 / 15 / 20 px off (gross mismatches);
* per cross-species group and keypoint: the mean error and the mean *signed* offset
  ``prediction - truth`` (dx, dy in 70-px units; dy > 0 is below the truth);
* a bound: the mean error if every (group, keypoint) offset were known and subtracted. It uses
  the labels it is scored on, so it is not a method: it bounds what any correction of systematic
  offsets (a species-aware spatial prior, say) could gain.

    python benchmarks/error_analysis.py dife-eval/results.json [--method NAME]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLDS = (10.0, 15.0, 20.0)


def points(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per transferred point of one method's run: group, keypoint, error and signed offset (70-px units)."""
    out = []
    for pair in run["pairs"]:
        pred, gt, err = (np.asarray(pair[k], dtype=np.float64) for k in ("pred", "gt", "err70"))
        dist = np.hypot(*(pred - gt).T)
        ok = dist > 1e-9
        scale = float(np.median(err[ok] / dist[ok])) if ok.any() else 0.0  # 70 / the side the error is relative to
        for name, d, e in zip(pair["names"], (pred - gt) * scale, err, strict=True):
            out.append({"group": pair["group"], "keypoint": name, "err": float(e), "offset": d})
    return out


def summary(pts: list[dict[str, Any]]) -> dict[str, Any]:
    """Gross-error shares, per (group, keypoint) offsets and the offset-free bound of a list of points."""
    err = np.array([p["err"] for p in pts])
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in pts:
        cells.setdefault((p["group"], p["keypoint"]), []).append(p)
    bias = {k: np.mean([p["offset"] for p in v], axis=0) for k, v in cells.items()}
    unbiased = np.array([np.hypot(*(p["offset"] - bias[(p["group"], p["keypoint"])])) for p in pts])
    return {
        "mean": float(err.mean()),
        "median": float(np.median(err)),
        "gross": {
            t: {"points": float((err > t).mean()), "error": float(err[err > t].sum() / err.sum())} for t in THRESHOLDS
        },
        "cells": {
            k: {
                "n": len(v),
                "err": float(np.mean([p["err"] for p in v])),
                "dx": float(bias[k][0]),
                "dy": float(bias[k][1]),
            }
            for k, v in sorted(cells.items())
        },
        "offsets_removed": float(unbiased.mean()),
    }


def report(results: dict[str, Any], method: str | None = None) -> str:
    """Markdown for every protocol of ``results`` (one method: ``method``, or the only / first one)."""
    lines = []
    for protocol, runs in results["results"].items():
        name = method if method is not None else next(iter(runs))
        if name not in runs:
            raise SystemExit(f"no method {name!r} in the {protocol} results; there are: {', '.join(runs)}")
        s = summary(points(runs[name]))
        gross = "; ".join(
            f"> {t:g} px: {100 * g['points']:.0f} % of the points, {100 * g['error']:.0f} % of the error"
            for t, g in s["gross"].items()
        )
        lines += [
            f"## {protocol}: {name}",
            "",
            f"- mean {s['mean']:.2f}, median {s['median']:.2f}; {gross}",
            f"- with every (group, keypoint) offset subtracted (a bound, from the labels): {s['offsets_removed']:.2f}",
            "",
            "| group | keypoint | points | error | offset dx | offset dy |",
            "|---|---|---:|---:|---:|---:|",
            *(
                f"| {g} | {k} | {c['n']} | {c['err']:.1f} | {c['dx']:+.1f} | {c['dy']:+.1f} |"
                for (g, k), c in s["cells"].items()
            ),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="results.json of `dife eval`")
    ap.add_argument("--method", help="method name as in the report (default: the first)")
    args = ap.parse_args()
    print(report(json.loads(args.results.read_text()), args.method))


if __name__ == "__main__":
    main()
