"""Run an evaluation: read a dataset, draw pairs, transfer, measure, report.

Example:
    >>> from dife.eval import evaluate, markdown_report, read_dataset, resolve_method  # doctest: +SKIP
    >>> samples = read_dataset("dev-faces")  # doctest: +SKIP
    >>> res, views = evaluate(samples, [resolve_method("identity")], counts=100)  # doctest: +SKIP
    >>> print(markdown_report(res))  # doctest: +SKIP

For each protocol and method, every pair's shared keypoints are carried
from the source view to the target view ([dife.eval.crops][]) and compared
with the target's ground truth ([dife.eval.metrics][]). Under the ``wild``
protocol (whole photos with labelled face boxes) the errors are relative to
the target's face box; with ``detection=True``, [run_eval][dife.eval.run.run_eval]
also scores the face finder on the same photos ([dife.eval.detection][]).
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
from dife.eval.crops import CROP_PROTOCOLS, JITTER_SCALE, PROTOCOLS, WILD, make_view, reference_size
from dife.eval.methods import BaseMethod, Method, Transferred
from dife.eval.metrics import GroupSummary, PairResult, aggregate, frame_summary, interocular, point_errors
from dife.eval.pairs import GROUP_ORDER, Pair, make_pairs
from dife.eval.readers import Face, FaceSample, read_dataset

__all__ = ["MethodRun", "EvalResult", "default_protocols", "evaluate", "run_eval"]


@dataclass
class MethodRun:
    """One method under one crop protocol.

    Attributes:
        method: The method's description ([describe][dife.eval.methods.BaseMethod.describe]).
        seconds: Wall time of the transfers.
        results: One [PairResult][dife.eval.metrics.PairResult] per pair.
        summary: ``{group: GroupSummary}`` plus ``"all"``.
        frames: How well the method framed the faces, for data with labelled
            face boxes and methods that report their framing
            ([frame_summary][dife.eval.metrics.frame_summary]); ``None`` otherwise.
    """

    method: dict[str, Any]
    seconds: float
    results: list[PairResult]
    summary: dict[str, GroupSummary]
    frames: dict[str, Any] | None = None


@dataclass
class EvalResult:
    """An evaluation.

    Attributes:
        config: Options of the run (data, seed, counts, ...).
        samples: The dataset's samples.
        pairs: The pairs (indices into ``samples``).
        runs: ``{protocol: {method name: MethodRun}}``.
        detection: The face-finder report on the same data
            ([DetectionReport][dife.eval.detection.DetectionReport]), or ``None``.
    """

    config: dict[str, Any]
    samples: list[FaceSample]
    pairs: list[Pair]
    runs: dict[str, dict[str, MethodRun]] = field(default_factory=dict)
    detection: Any = None

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


def default_protocols(samples: Sequence[FaceSample]) -> tuple[str, ...]:
    """``("wild",)`` when every sample is a whole image with a labelled face box, else the crop protocols."""
    if samples and all(s.face_box is not None and s.box is None for s in samples):
        return (WILD,)
    return CROP_PROTOCOLS


def evaluate(
    samples: Sequence[FaceSample],
    methods: Sequence[Method | BaseMethod],
    *,
    protocols: Sequence[str] | None = None,
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
        samples: The dataset ([read_dataset][dife.eval.readers.read_dataset]).
        methods: Methods ([resolve_method][dife.eval.methods.resolve_method]); names must differ.
        protocols: Protocols, from [PROTOCOLS][dife.eval.crops.PROTOCOLS]
            (default: [default_protocols][dife.eval.run.default_protocols]:
            ``wild`` for whole photos with face boxes, else ``aligned`` and ``jittered``).
        pairs: Pairs to use (default: [make_pairs][dife.eval.pairs.make_pairs]
            with ``counts``, ``groups`` and ``seed``).
        counts: Pairs per group (see [make_pairs][dife.eval.pairs.make_pairs]).
        groups: Groups to draw (default: all).
        seed: Seed of the pairs, the jitter and the bootstrap.
        n_boot: Bootstrap resamples.
        jitter_scale: Side range of the ``jittered`` protocol.
        chunk: Pairs per [transfer_many][dife.eval.methods.BaseMethod.transfer_many] call.
        progress: Called with one line per finished (protocol, method).
        config: Extra entries for the ``config`` of [EvalResult][dife.eval.run.EvalResult].

    Returns:
        ``(result, view)``: the [EvalResult][dife.eval.run.EvalResult] and the
        ``(protocol, sample index) -> Face`` function of the views the methods
        saw (for [write_panels][dife.eval.report.write_panels]).

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
    if protocols is None:
        protocols = default_protocols(samples)
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise InputError(f"unknown protocol(s) {bad}; choose from {', '.join(PROTOCOLS)}")
    if WILD in protocols:
        lacking = [s.id for s in samples if s.face_box is None]
        if lacking:
            raise InputError(
                f"the {WILD} protocol needs a labelled face box per image ('face_box' in annotations.json, "
                f"as in the wild layout); {len(lacking)} of {len(samples)} have none (e.g. {lacking[0]!r})"
            )
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
                    outs = method.transfer_framed(
                        [f.image for f in srcs],
                        [f.image for f in tgts],
                        src_pts,
                        src_boxes=[f.face_box for f in srcs],
                        tgt_boxes=[f.face_box for f in tgts],
                    )
                else:
                    outs = [
                        Transferred(np.asarray(method.transfer(a.image, b.image, q), dtype=np.float64))
                        for a, b, q in zip(srcs, tgts, src_pts, strict=True)
                    ]
                for k, (p, a, b, q, o) in enumerate(zip(part, srcs, tgts, src_pts, outs, strict=True)):
                    gt = b.points(p.names)
                    pred = np.asarray(o.points, dtype=np.float64).reshape(gt.shape)
                    ref_w, ref_h = reference_size(b, protocol)
                    errs = point_errors(pred, gt, ref_w, ref_h, iod=interocular(b.keypoints))
                    prs.append(
                        PairResult(
                            p.group,
                            a.id,
                            b.id,
                            p.names,
                            q,
                            pred,
                            gt,
                            errs,
                            index=s + k,
                            src_box=o.src_box,
                            tgt_box=o.tgt_box,
                            src_face=o.src_face.to_dict() if o.src_face is not None else None,
                            tgt_face=o.tgt_face.to_dict() if o.tgt_face is not None else None,
                            src_iou=_iou(o.src_box, a.face_box),
                            tgt_iou=_iou(o.tgt_box, b.face_box),
                        )
                    )
            seconds = time.perf_counter() - t0
            summary = aggregate(prs, n_boot=n_boot, seed=seed)
            desc = method.describe() if isinstance(method, BaseMethod) else {"name": method.name}
            result.runs[protocol][method.name] = MethodRun(
                desc, seconds, prs, summary, frame_summary(prs, detects=getattr(method, "framing", None) == "detect")
            )
            if progress is not None:
                allm = summary["all"].stats["err70"].mean
                progress(f"{protocol} / {method.name}: {len(prs)} pairs, err70 {allm:.2f}, {seconds:.1f} s")
    return result, views


def _iou(a: Any, b: Any) -> float | None:
    if a is None or b is None:
        return None
    from dife.coords import box_iou

    return float(box_iou(a, b))


def run_eval(
    data: str | os.PathLike[str],
    methods: Sequence[str | BaseMethod],
    *,
    format: str = "auto",
    out: str | os.PathLike[str] | None = None,
    protocols: Sequence[str] | None = None,
    counts: int | dict[str, int] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    panels: int = 3,
    method_options: dict[str, Any] | None = None,
    reader_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    framings: Sequence[str] | None = None,
    detection: bool = False,
    detector: Any = None,
) -> EvalResult:
    """Read ``data``, evaluate ``methods`` and (with ``out``) write the reports.

    Args:
        data: Dataset path (see [read_dataset][dife.eval.readers.read_dataset]).
        methods: Method names or objects ([resolve_method][dife.eval.methods.resolve_method]).
        format: Dataset format.
        out: Folder for ``report.md``, ``results.json`` and ``panels/*.png``
            (None: write nothing).
        protocols: As in [evaluate][dife.eval.run.evaluate] (default: ``wild`` for whole photos
            with face boxes, else ``aligned`` and ``jittered``).
        counts: As in [evaluate][dife.eval.run.evaluate].
        seed: As in [evaluate][dife.eval.run.evaluate].
        n_boot: As in [evaluate][dife.eval.run.evaluate].
        panels: Best / worst pairs per panel (0: no panels).
        method_options: Keyword arguments of [resolve_method][dife.eval.methods.resolve_method].
        reader_options: Keyword arguments of the reader.
        progress: Progress callback.
        framings: Framings ([FRAMINGS][dife.eval.methods.FRAMINGS]) to run each
            method name that takes one under (DIFE models, ``identity``): one
            report row per method and framing. ``None``: each method's default.
        detection: Also score the face finder on the data
            ([detection_report][dife.eval.detection.detection_report]; needs
            whole photos with face boxes).
        detector: Face finder for the ``detect`` framing and the detection
            report (a folder, a [FaceDetector][dife.modeling.face_detector.FaceDetector],
            or ``None`` for the shipped one).

    Returns:
        The [EvalResult][dife.eval.run.EvalResult] (with ``detection`` set when asked for).
    """
    from dife.eval.methods import resolve_method, takes_framing
    from dife.eval.report import write_json, write_markdown, write_panels

    samples = read_dataset(data, format=format, **(reader_options or {}))
    opts = dict(method_options or {})
    if detector is not None:
        opts["detector"] = detector
    resolved: list[BaseMethod] = []
    for m in methods:
        if framings and not isinstance(m, BaseMethod) and takes_framing(m):
            resolved += [resolve_method(m, **opts, framing=f) for f in dict.fromkeys(framings)]
        else:
            resolved.append(resolve_method(m, **opts))
    cfg = {"data": str(data), "format": format, "counts": counts}
    report = None
    if detection:
        from dife.eval.detection import detection_report

        report = detection_report(samples, detector, device=opts.get("device"), progress=progress)
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
    result.detection = report
    if out is not None:
        o = Path(out)
        write_markdown(result, o / "report.md")
        write_json(result, o / "results.json")
        write_panels(result, views, o / "panels", k=panels)
    return result
