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
* ``winN`` / ``tempX``: soft-argmax window and temperature of the match refinement;
* ``geoaff`` / ``geosim``: an instance-level prior centre: an affine / similarity transform fitted
  (RANSAC, 3 grid px inlier threshold) to the dense mutual nearest neighbours of the two
  embeddings (every 3rd pixel, with the model's prior) replaces the source point's own relative
  position as the centre of the spatial prior;
* ``gateX``: points whose match is not mutual are matched again with prior weight X.

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


def _fit_transform(p: Any, q: Any, kind: str) -> Any:
    """Least-squares (2, 3) affine or similarity transform taking points ``p`` (N, 2) to ``q``."""
    import numpy as np

    n = len(p)
    if kind == "aff":
        return np.linalg.lstsq(np.c_[p, np.ones(n)], q, rcond=None)[0].T
    m = np.zeros((2 * n, 4))
    m[0::2] = np.c_[p[:, 0], -p[:, 1], np.ones(n), np.zeros(n)]
    m[1::2] = np.c_[p[:, 1], p[:, 0], np.zeros(n), np.ones(n)]
    a, b, tx, ty = np.linalg.lstsq(m, q.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def _global_transform(src: Any, tgt: Any, prior: float, kind: str, seed: int = 0) -> Any:
    """RANSAC transform (grid coordinates) of the dense mutual matches of two (C, S, S) maps, or None."""
    import numpy as np
    import torch

    from dife.matching import match, mutual_nearest, sample_descriptors

    size = src.shape[-1]
    ys, xs = np.mgrid[1:size:3, 1:size:3]
    p = np.c_[xs.ravel(), ys.ravel()].astype(np.float64)
    g = torch.as_tensor(p, dtype=src.dtype)
    q, sim, peaks = match(
        sample_descriptors(src, g), tgt, refine=False, prior_points=g if prior > 0 else None, prior_weight=prior
    )
    keep = mutual_nearest(src, tgt, g, peaks.to(g.dtype), radius_px=2.0).numpy()
    if keep.sum() < 12:
        return None
    p, q, w = p[keep], q.numpy().astype(np.float64)[keep], sim.numpy()[keep].clip(0, None) + 1e-3
    k = 3 if kind == "aff" else 2
    rng = np.random.default_rng(seed)
    best, best_score = None, -1.0
    for _ in range(300):
        idx = rng.choice(len(p), k, replace=False)
        t = _fit_transform(p[idx], q[idx], kind)
        inl = np.hypot(*(p @ t[:, :2].T + t[:, 2] - q).T) < 3.0
        if (w * inl).sum() > best_score:
            best, best_score = inl, float((w * inl).sum())
    if best is None or best.mean() < 0.25:
        return None
    return _fit_transform(p[best], q[best], kind)


def _transfer_variant(original: Any, option: str) -> Any:
    """A drop-in for ``dife.transfer._transfer_one`` with the ``geo*`` / ``gate*`` tokens of ``option``."""
    import numpy as np
    import torch

    import dife.transfer as transfer
    from dife.matching import match, mutual_nearest, sample_descriptors

    tokens = option.split("_")
    geo = next((t[3:] for t in tokens if t in ("geoaff", "geosim")), None)
    gate = next((float(t[4:]) for t in tokens if t.startswith("gate")), None)
    if geo is None and gate is None:
        return original

    def run(src: Any, src_t: Any, tgt: Any, tgt_t: Any, pts: Any, *, spatial_prior: float = 0.0, **kw: Any) -> Any:
        t = _global_transform(src, tgt, spatial_prior, geo) if geo is not None else None
        if t is None:
            out, sim, mutual = original(src, src_t, tgt, tgt_t, pts, spatial_prior=spatial_prior, **kw)
        else:  # as _transfer_one, the prior centred on the transformed point
            grid = np.clip(src_t.to_grid(pts), 0.0, src.shape[-1] - 1.0)
            g = torch.as_tensor(grid, dtype=src.dtype)
            centre = torch.as_tensor(grid @ t[:, :2].T + t[:, 2], dtype=src.dtype)
            found, s, peaks = match(
                sample_descriptors(src, g), tgt, prior_points=centre, prior_weight=max(spatial_prior, 1e-6), **kw
            )
            mutual = mutual_nearest(src, tgt, g, peaks.to(g.dtype), radius_px=transfer.MUTUAL_RADIUS).numpy()
            out = transfer._clip_to_image(tgt_t.to_image(found.numpy().astype(np.float64)), tgt_t)
            sim, mutual = s.numpy().astype(np.float64), mutual & src_t.contains(pts)
        if gate is not None and not mutual.all():
            again = original(src, src_t, tgt, tgt_t, pts, spatial_prior=gate, **kw)[0]
            out = np.where(mutual[:, None], out, again)
        return out, sim, mutual

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
    transfer_one = transfer._transfer_one
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
        transfer._transfer_one = _transfer_variant(transfer_one, option)
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
