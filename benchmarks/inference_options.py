"""Inference-time options of a DIFE model on the development set, through the default path.

Evaluates one model with `dife.eval` (both crop protocols, the face finder framing every crop,
100 pairs per group, seed 0), once per option set, and writes the mean 70-px error per group:

    python benchmarks/inference_options.py --data FACES --model dife-base \\
        --options none shift2 scale10 prior4 prior8 win9 win15_temp0.05 \\
        --json benchmarks/results/inference_options_dife_base.json

An option set is ``none`` or tokens joined by ``_``:

* ``shiftN``: test-time augmentation, the embedding averaged over the crop and four copies
  shifted by N pixels (of the 96-px input) left, right, up and down, each mapped back;
* ``scaleN``: the same over two zooms of the crop, by 1 +- N/100 about its centre;
* ``priorX``: spatial-prior weight X instead of the model's own;
* ``winN`` / ``tempX``: soft-argmax window and temperature of the match refinement.

Test-time augmentation embeds every face ``1 + views`` times, so it multiplies the cost
per face (``dife-base``: 0.74 GFLOP per view). It is implemented here by wrapping the
network call of [dife.embedding][] (a study, not a library feature).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
import warnings
from pathlib import Path
from typing import Any


def _views(option: str) -> list[tuple[float, float, float]]:
    """(zoom, dx, dy) of every view, dx / dy in normalised [-1, 1] units; the crop itself first."""
    views = [(1.0, 0.0, 0.0)]
    for tok in option.split("_"):
        if tok.startswith("shift"):
            d = float(tok[5:]) / 48.0  # 96 px span 2 normalised units
            views += [(1.0, d, 0.0), (1.0, -d, 0.0), (1.0, 0.0, d), (1.0, 0.0, -d)]
        elif tok.startswith("scale"):
            s = float(tok[5:]) / 100.0
            views += [(1.0 + s, 0.0, 0.0), (1.0 - s, 0.0, 0.0)]
    return views


def _averaging_network(original: Any, views: list[tuple[float, float, float]]) -> Any:
    """A drop-in for ``dife.embedding._run_network`` that averages the embeddings of warped views."""
    import torch
    import torch.nn.functional as F

    def run(net: Any, x: torch.Tensor, out: torch.Tensor, backend: str) -> None:
        n = x.shape[0]
        acc = torch.zeros_like(out)
        weight = torch.zeros(n, 1, *out.shape[-2:], dtype=out.dtype)
        one = torch.empty_like(out)
        for s, dx, dy in views:
            if (s, dx, dy) == (1.0, 0.0, 0.0):
                original(net, x, one, backend)
                acc += one
                weight += 1
                continue
            theta = torch.tensor([[s, 0.0, dx], [0.0, s, dy]], dtype=x.dtype).expand(n, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            original(net, F.grid_sample(x, grid, padding_mode="border", align_corners=False), one, backend)
            back = torch.tensor([[1 / s, 0.0, -dx / s], [0.0, 1 / s, -dy / s]], dtype=x.dtype).expand(n, 2, 3)
            grid = F.affine_grid(back, list(out.shape), align_corners=False)
            seen = F.grid_sample(torch.ones_like(weight), grid, align_corners=False) > 0.999
            acc += F.grid_sample(one, grid, align_corners=False) * seen
            weight += seen
        out.copy_(F.normalize(acc / weight, dim=1))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="development faces folder")
    ap.add_argument("--model", default="dife-base")
    ap.add_argument("--options", nargs="+", default=["none"])
    ap.add_argument("--json", required=True, help="results file to update (one entry per option set)")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import dife.embedding as embedding
    import dife.transfer as transfer
    from dife.eval import evaluate, read_dataset
    from dife.eval.methods import DIFEMethod

    network, transfer_keypoints = embedding._run_network, transfer.transfer_keypoints
    samples = read_dataset(args.data)
    path = Path(args.json)
    data = json.loads(path.read_text()) if path.is_file() else {"model": args.model, "options": {}}
    for option in args.options:
        tokens = option.split("_")
        prior = next((float(t[5:]) for t in tokens if t.startswith("prior")), None)
        match: dict[str, Any] = {}
        for t in tokens:
            if t.startswith("win"):
                match["window"] = int(t[3:])
            elif t.startswith("temp"):
                match["temperature"] = float(t[4:])
        views = _views(option)
        embedding._run_network = _averaging_network(network, views) if len(views) > 1 else network
        transfer.transfer_keypoints = functools.partial(transfer_keypoints, **match)
        t0 = time.perf_counter()
        method = DIFEMethod(args.model, name=option, framing="detect", spatial_prior=prior)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res, _ = evaluate(
                samples, [method], protocols=("aligned", "jittered"), counts=args.pairs, seed=args.seed, n_boot=50
            )
        rows = {
            protocol: {g: round(float(r.summary[g].stats["err70"].mean), 3) for g in r.summary}
            for protocol, runs in res.runs.items()
            for r in runs.values()
        }
        data["options"][option] = {"views": len(views), "seconds": round(time.perf_counter() - t0), "err70": rows}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)
        print(option, json.dumps(rows), flush=True)


if __name__ == "__main__":
    main()
