"""Run an evaluation: read a dataset, draw pairs, transfer, measure, report.

Example:
    >>> from dife.eval import evaluate, markdown_report, read_dataset, resolve_method  # doctest: +SKIP
    >>> samples = read_dataset("dev-faces")  # doctest: +SKIP
    >>> res, views = evaluate(samples, [resolve_method("identity")], counts=100)  # doctest: +SKIP
    >>> print(markdown_report(res))  # doctest: +SKIP

For each crop protocol and method, every pair's shared keypoints are carried
from the source view to the target view (:mod:`dife.eval.crops`) and compared
with the target's ground truth (:mod:`dife.eval.metrics`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dife.errors import InputError
from dife.eval.crops import CROP_PROTOCOLS, JITTER_SCALE, make_view
from dife.eval.methods import BaseMethod, Method
from dife.eval.metrics import GroupSummary, PairResult, aggregate, interocular, point_errors
from dife.eval.pairs import GROUP_ORDER, Pair, make_pairs
from dife.eval.readers import Face, FaceSample, read_dataset

__all__ = ["MethodRun", "EvalResult", "evaluate", "run_eval"]


@dataclass
class MethodRun:
    """One method under one crop protocol.

    Attributes:
        method: The method's description (:meth:`BaseMethod.describe`).
        seconds: Wall time of the transfers.
        results: One :class:`PairResult` per pair.
        summary: ``{group: GroupSummary}`` plus ``"all"``.
    """

    method: dict[str, Any]
    seconds: float
    results: list[PairResult]
    summary: dict[str, GroupSummary]


@dataclass
class EvalResult:
    """An evaluation.

    Attributes:
        config: Options of the run (data, seed, counts, ...).
        samples: The dataset's samples.
        pairs: The pairs (indices into ``samples``).
        runs: ``{protocol: {method name: MethodRun}}``.
    """

    config: dict[str, Any]
    samples: list[FaceSample]
    pairs: list[Pair]
    runs: dict[str, dict[str, MethodRun]] = field(default_factory=dict)

    @property
    def species_counts(self) -> dict[str, int]:
        """Images per species."""
        return dict(Counter(s.species for s in self.samples))

    def pair_counts(self) -> dict[str, int]:
        """Pairs per group, in report order."""
        c = Counter(p.group for p in self.pairs)
        return {g: c[g] for g in GROUP_ORDER if c[g]}

    def group_names(self) -> list[str]:
        """Groups with pairs, in report order."""
        return list(self.pair_counts())


class _Views:
    """Loaded faces and their protocol views, each computed once."""

    def __init__(self, samples: Sequence[FaceSample], seed: int, scale: tuple[float, float]) -> None:
        self.samples = samples
        self.seed = seed
        self.scale = scale
        self._faces: dict[int, Face] = {}
        self._views: dict[tuple[str, int], Face] = {}

    def face(self, i: int) -> Face:
        if i not in self._faces:
            self._faces[i] = self.samples[i].load()
        return self._faces[i]

    def __call__(self, protocol: str, i: int) -> Face:
        key = (protocol, i)
        if key not in self._views:
            self._views[key] = make_view(self.face(i), protocol, seed=self.seed, scale=self.scale)
        return self._views[key]


def evaluate(
    samples: Sequence[FaceSample],
    methods: Sequence[Method | BaseMethod],
    *,
    protocols: Sequence[str] = CROP_PROTOCOLS,
    pairs: Sequence[Pair] | None = None,
    counts: int | dict[str, int] | None = None,
    groups: Sequence[str] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    jitter_scale: tuple[float, float] = JITTER_SCALE,
    chunk: int = 256,
    progress: Callable[[str], None] | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[EvalResult, Callable[[str, int], Face]]:
    """Evaluate methods on a dataset.

    Args:
        samples: The dataset (:func:`dife.eval.readers.read_dataset`).
        methods: Methods (:func:`dife.eval.methods.resolve_method`); names must differ.
        protocols: Crop protocols, from :data:`~dife.eval.crops.CROP_PROTOCOLS`.
        pairs: Pairs to use (default: :func:`~dife.eval.pairs.make_pairs`
            with ``counts``, ``groups`` and ``seed``).
        counts: Pairs per group (see :func:`~dife.eval.pairs.make_pairs`).
        groups: Groups to draw (default: all).
        seed: Seed of the pairs, the jitter and the bootstrap.
        n_boot: Bootstrap resamples.
        jitter_scale: Side range of the ``jittered`` protocol.
        chunk: Pairs per :meth:`~BaseMethod.transfer_many` call.
        progress: Called with one line per finished (protocol, method).
        config: Extra entries for :attr:`EvalResult.config`.

    Returns:
        ``(result, view)``: the :class:`EvalResult` and the
        ``(protocol, sample index) -> Face`` function of the views the methods
        saw (for :func:`dife.eval.report.write_panels`).

    Raises:
        InputError: no samples / methods / pairs, duplicate method names or an
            unknown protocol.
    """
    if not samples:
        raise InputError("the dataset has no samples")
    if not methods:
        raise InputError("give at least one method")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise InputError(f"method names must differ, got {names}")
    bad = [p for p in protocols if p not in CROP_PROTOCOLS]
    if bad or not protocols:
        raise InputError(f"unknown crop protocol(s) {bad}; choose from {', '.join(CROP_PROTOCOLS)}")
    pair_list = list(pairs) if pairs is not None else make_pairs(samples, counts=counts, groups=groups, seed=seed)
    if not pair_list:
        raise InputError(
            "no evaluation pairs: the data needs faces of two species of a group "
            f"({', '.join(GROUP_ORDER)}) sharing keypoint names"
        )
    cfg = {"seed": seed, "n_boot": n_boot, "protocols": list(protocols), "jitter_scale": list(jitter_scale)}
    cfg.update(config or {})
    result = EvalResult(cfg, list(samples), pair_list)
    views = _Views(samples, seed, jitter_scale)
    for protocol in protocols:
        result.runs[protocol] = {}
        for method in methods:
            t0 = time.perf_counter()
            prs: list[PairResult] = []
            for s in range(0, len(pair_list), chunk):
                part = pair_list[s : s + chunk]
                srcs = [views(protocol, p.src) for p in part]
                tgts = [views(protocol, p.tgt) for p in part]
                src_pts = [f.points(p.names) for f, p in zip(srcs, part, strict=True)]
                if isinstance(method, BaseMethod):
                    preds = method.transfer_many([f.image for f in srcs], [f.image for f in tgts], src_pts)
                else:
                    preds = [method.transfer(a.image, b.image, q) for a, b, q in zip(srcs, tgts, src_pts, strict=True)]
                for k, (p, a, b, q, pred) in enumerate(zip(part, srcs, tgts, src_pts, preds, strict=True)):
                    gt = b.points(p.names)
                    pred = np.asarray(pred, dtype=np.float64).reshape(gt.shape)
                    errs = point_errors(pred, gt, b.width, b.height, iod=interocular(b.keypoints))
                    prs.append(PairResult(p.group, a.id, b.id, p.names, q, pred, gt, errs, index=s + k))
            seconds = time.perf_counter() - t0
            summary = aggregate(prs, n_boot=n_boot, seed=seed)
            desc = method.describe() if isinstance(method, BaseMethod) else {"name": method.name}
            result.runs[protocol][method.name] = MethodRun(desc, seconds, prs, summary)
            if progress is not None:
                allm = summary["all"].stats["err70"].mean
                progress(f"{protocol} / {method.name}: {len(prs)} pairs, err70 {allm:.2f}, {seconds:.1f} s")
    return result, views


def run_eval(
    data: str | os.PathLike[str],
    methods: Sequence[str | BaseMethod],
    *,
    format: str = "auto",
    out: str | os.PathLike[str] | None = None,
    protocols: Sequence[str] = CROP_PROTOCOLS,
    counts: int | dict[str, int] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    panels: int = 3,
    method_options: dict[str, Any] | None = None,
    reader_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalResult:
    """Read ``data``, evaluate ``methods`` and (with ``out``) write the reports.

    Args:
        data: Dataset path (see :func:`~dife.eval.readers.read_dataset`).
        methods: Method names or objects (:func:`~dife.eval.methods.resolve_method`).
        format: Dataset format.
        out: Folder for ``report.md``, ``results.json`` and ``panels/*.png``
            (None: write nothing).
        protocols: As in :func:`evaluate`.
        counts: As in :func:`evaluate`.
        seed: As in :func:`evaluate`.
        n_boot: As in :func:`evaluate`.
        panels: Best / worst pairs per panel (0: no panels).
        method_options: Keyword arguments of :func:`resolve_method`.
        reader_options: Keyword arguments of the reader.
        progress: Progress callback.

    Returns:
        The :class:`EvalResult`.
    """
    from dife.eval.methods import resolve_method
    from dife.eval.report import write_json, write_markdown, write_panels

    samples = read_dataset(data, format=format, **(reader_options or {}))
    resolved = [resolve_method(m, **(method_options or {})) for m in methods]
    cfg = {"data": str(data), "format": format, "counts": counts}
    result, views = evaluate(
        samples,
        resolved,
        protocols=protocols,
        counts=counts,
        seed=seed,
        n_boot=n_boot,
        progress=progress,
        config=cfg,
    )
    if out is not None:
        o = Path(out)
        write_markdown(result, o / "report.md")
        write_json(result, o / "results.json")
        write_panels(result, views, o / "panels", k=panels)
    return result
