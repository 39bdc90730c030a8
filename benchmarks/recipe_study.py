"""Evaluate training runs of a recipe study on the development set, crop as given (no face finder).

Each model is evaluated with `dife.eval` on both crop protocols (aligned, jittered), appearance only
(spatial prior 0) and with a spatial prior (default 2), every image framed by its centred square
(``box="image"``: the face crops of the development set are square, so that is the whole crop).
The face finder is never called: a ``NoFaceWarning`` or a missing-detector error aborts the run.

    python benchmarks/recipe_study.py eval --data FACES --name base_v1 --model dife-base \
        --json benchmarks/results/experiments_dife_base_v2.json
    python benchmarks/recipe_study.py table --json benchmarks/results/experiments_dife_base_v2.json

``eval`` adds (or replaces) one entry per ``--name`` in the JSON file; ``table`` prints the markdown
table of every entry (mean 70-px error per group).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

GROUPS = ("human->dog", "human->cat", "dog->cat", "cat->dog", "human->livestock", "intra-species", "all")


def _boxed_method(model: str, prior: float, name: str) -> Any:
    """The model through ``dife.eval`` with every image framed by its centred square (``box="image"``)."""
    from dife.eval.methods import DIFEMethod

    return DIFEMethod(model, name=name, spatial_prior=prior, framing="image")


def cmd_eval(args: argparse.Namespace) -> None:
    from dife.eval import evaluate, read_dataset

    try:
        from dife.detection import NoFaceWarning

        warnings.simplefilter("error", NoFaceWarning)
    except ImportError:  # a dife without a face finder
        pass
    samples = read_dataset(args.data)
    methods = [_boxed_method(args.model, p, f"prior {p:g}") for p in args.priors]
    t0 = time.perf_counter()
    res, _ = evaluate(samples, methods, counts=args.pairs, seed=args.seed, n_boot=args.bootstrap)
    rows: dict[str, Any] = {}
    for protocol, runs in res.runs.items():
        for mname, run in runs.items():
            rows[f"{protocol} / {mname}"] = {
                g: round(float(run.summary[g].stats["err70"].mean), 3) for g in run.summary if g in GROUPS
            }
    entry = {
        "name": args.name,
        "model": args.model,
        "note": args.note,
        "eval": {"pairs_per_group": args.pairs, "seed": args.seed, "bootstrap": args.bootstrap, "box": "image"},
        "eval_seconds": round(time.perf_counter() - t0, 1),
        "err70": rows,
    }
    if args.train_info:
        entry["train"] = json.loads(Path(args.train_info).read_text())
    path = Path(args.json)
    data = json.loads(path.read_text()) if path.is_file() else {"experiments": []}
    data["experiments"] = [e for e in data["experiments"] if e["name"] != args.name] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    for k, v in rows.items():
        print(k, " ".join(f"{g} {v.get(g, float('nan')):.2f}" for g in GROUPS))


def cmd_table(args: argparse.Namespace) -> None:
    data = json.loads(Path(args.json).read_text())
    exps = data["experiments"]
    print("| experiment | steps | wall (min) | s/step | protocol | λ | " + " | ".join(GROUPS) + " |")
    print("|---|---:|---:|---:|---|---:|" + "---:|" * len(GROUPS))
    for e in exps:
        t = e.get("train") or {}
        facts = f"{t['steps']} | {t['wall_s'] / 60:.0f} | {t['s_per_step']:.2f}" if t else "– | – | –"
        for key, v in e["err70"].items():
            protocol, prior = key.split(" / prior ")
            print(
                f"| {e['name']} | {facts} | {protocol} | {prior} | " + " | ".join(f"{v[g]:.2f}" for g in GROUPS) + " |"
            )
    if args.reference:
        ref = next(e for e in exps if e["name"] == args.reference)["err70"]
        keys = list(ref)
        print()
        print("| experiment | " + " | ".join(f"Δ all, {k.replace(' / prior ', ', λ ')}" for k in keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for e in exps:
            print(f"| {e['name']} | " + " | ".join(f"{e['err70'][k]['all'] - ref[k]['all']:+.2f}" for k in keys) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--data", required=True, help="development set folder (faces format)")
    e.add_argument("--model", required=True, help="DIFE model name or folder")
    e.add_argument("--name", required=True, help="experiment name (key in the JSON file)")
    e.add_argument("--json", required=True, help="results file to update")
    e.add_argument("--note", default="")
    e.add_argument("--train-info", default=None, help="JSON file with the run's training facts")
    e.add_argument("--pairs", type=int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--bootstrap", type=int, default=200)
    e.add_argument("--priors", type=float, nargs="+", default=[0.0, 2.0])
    t = sub.add_parser("table")
    t.add_argument("--json", required=True)
    t.add_argument("--reference", default=None, help="experiment the Δ table compares with")
    args = ap.parse_args()
    {"eval": cmd_eval, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
