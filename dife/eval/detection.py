"""Scoring a face finder on whole photos with one labelled face box each.

[detection_report][dife.eval.detection.detection_report] runs a face finder
([detect_faces][dife.detection.detect_faces]) over photos in the ``wild``
layout (records with a ``face_box``, one labelled face per photo) and
[score_detections][dife.eval.detection.score_detections] measures, per species
and over all photos:

* **found**: percent of photos whose *best-scoring* face (score >= the
  finder's ``min_score``) has IoU >= 0.5 with the labelled box. This is what
  the pipeline uses for a target with no box, so it is the number that
  matters for keypoint transfer.
* **recall**: percent of photos where *any* face with score >= ``min_score``
  has IoU >= 0.5.
* **AP**: average precision at IoU 0.5 (VOC style, all-point interpolation)
  over every detection with score >= ``ap_min_score`` (0.05), ranked by score
  across the photos of the group; the first detection of a photo that overlaps
  its labelled face by IoU >= 0.5 is a true positive, every other detection a
  false positive. A face the data does not label (a second person, an
  unannotated animal) therefore counts against the finder: AP is a lower bound.
* **species**: percent of the found faces whose species is right, and the
  confusion counts (true species -> species of the best face).
* **mean IoU**: of the best-scoring face with the labelled box (0 when no face is found).

Percentages carry a 95 % Wilson score interval.

[evaluation_finder][dife.eval.detection.evaluation_finder] gives the face finder
every evaluation uses: loaded once per name / folder, and computing its network
once per distinct view of a photo for the whole process, so that the
detection report, the ``detect`` framing of every method and every protocol
share their detections (a photo seen by several pairs and methods is looked
at once). The results are those of the finder itself: the cache is keyed on
the exact network input.

Example:
    >>> from dife.eval import detection_report, read_dataset  # doctest: +SKIP
    >>> rep = detection_report(read_dataset("path/to/wild"))  # doctest: +SKIP
    >>> print(rep.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dife.coords import box_iou
from dife.errors import InputError

if TYPE_CHECKING:
    import torch

    from dife.detection import Detection
    from dife.eval.readers import FaceSample
    from dife.modeling.face_detector import FaceDetector

__all__ = [
    "DETECTION_IOU",
    "AP_MIN_SCORE",
    "PhotoDetections",
    "DetectionStats",
    "DetectionReport",
    "average_precision",
    "wilson_interval",
    "score_detections",
    "detection_report",
    "evaluation_finder",
]

DETECTION_IOU: float = 0.5
"""IoU with the labelled face box from which a detection is right."""

AP_MIN_SCORE: float = 0.05
"""Lowest score of the detections ranked for the average precision."""

Box = tuple[float, float, float, float]


# ------------------------------------------------------------------ the finder of evaluations
_lock = threading.Lock()
_loaded: dict[tuple[str, str], FaceDetector] = {}
_cached: weakref.WeakKeyDictionary[FaceDetector, FaceDetector] = weakref.WeakKeyDictionary()


def _with_cache(base: FaceDetector, size: int) -> FaceDetector:
    """A shallow copy of ``base`` (same weights) whose forward pass remembers its outputs per distinct input view."""
    import torch

    finder = copy.copy(base)
    compute = base.forward  # the same weights (a shallow copy shares them)
    store: OrderedDict[bytes, dict[str, torch.Tensor]] = OrderedDict()

    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = [hashlib.blake2b(v.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest() for v in x]
        with _lock:
            missing = [i for i, k in enumerate(keys) if k not in store]
        if missing:
            out = compute(x[missing])
            with _lock:
                for j, i in enumerate(missing):
                    store[keys[i]] = {n: t[j : j + 1].clone() for n, t in out.items()}
        with _lock:
            rows = []
            for k in keys:
                store.move_to_end(k)
                rows.append(store[k])
            while len(store) > size:
                store.popitem(last=False)
        return {n: torch.cat([r[n] for r in rows]) for n in rows[0]}

    finder.forward = forward  # type: ignore[method-assign]
    return finder


def evaluation_finder(
    detector: Any = None, *, device: str | None = None, cache_size: int = 2048
) -> tuple[FaceDetector, str]:
    """The face finder of evaluations, and its label for reports.

    Args:
        detector: A [FaceDetector][dife.modeling.face_detector.FaceDetector]
            (label ``"given"``), a folder (loaded once per process; label: the
            folder), or ``None`` for the default face finder (the shipped
            ``dife-face-finder`` unless [set_default_detector][dife.detection.set_default_detector]
            chose another).
        device: Where a loaded finder runs (default CPU).
        cache_size: Distinct views whose network outputs are kept (about 130 kB each at the
            default 320-px input), least recently used dropped first.

    Returns:
        ``(finder, label)``: one finder per underlying detector for the whole
        process (same weights; its network runs once per distinct view), and
        the label.

    Raises:
        ModelNotFoundError: no such finder.
        InputError: a ``detector`` of another type.
    """
    from dife.detection import DEFAULT_DETECTOR, get_default_detector, load_detector
    from dife.modeling.face_detector import FaceDetector

    if isinstance(detector, FaceDetector):
        base, label = detector, "given"
    elif detector is None and device is None:
        base, label = get_default_detector(), DEFAULT_DETECTOR
    elif detector is None or isinstance(detector, (str, os.PathLike)):
        label = DEFAULT_DETECTOR if detector is None else str(detector)
        key = (label, str(device))
        with _lock:
            base = _loaded.get(key)  # type: ignore[assignment]
        if base is None:
            base = load_detector(detector, device=device)
            with _lock:
                base = _loaded.setdefault(key, base)
    else:
        raise InputError(f"detector must be a FaceDetector, a name / folder, or None, got {type(detector).__name__}")
    with _lock:
        finder = _cached.get(base)
        if finder is None:
            finder = _with_cache(base, int(cache_size))
            _cached[base] = finder
    return finder, label


@dataclass
class PhotoDetections:
    """A photo, its labelled face and the faces the finder returned.

    Attributes:
        id: Sample id (the image file name in the ``wild`` layout).
        species: Labelled species.
        true_box: Labelled face box ``(x0, y0, x1, y1)``, photo pixels, edge coordinates.
        detections: [Detection][dife.detection.Detection] objects, best first
            (every one with score >= the lowest score asked for).
    """

    id: str
    species: str
    true_box: Box
    detections: list[Detection] = field(default_factory=list)

    def ious(self) -> np.ndarray:
        """IoU of each detection with the labelled box, in detection order."""
        return np.array([box_iou(d.box, self.true_box) for d in self.detections], dtype=np.float64)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (for ``z = 1.96``) Wilson score interval of a proportion ``k / n``, in percent.

    Returns ``(nan, nan)`` for ``n == 0``.
    """
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


def average_precision(scores: Sequence[float], correct: Sequence[bool], n_positives: int) -> float:
    """VOC-style average precision (all-point interpolation), in percent.

    Args:
        scores: Score of every detection.
        correct: Whether each detection is a true positive.
        n_positives: Number of labelled faces.

    Returns:
        The area under the precision-recall curve after making precision
        non-increasing, ``0..100``; ``nan`` without labelled faces.
    """
    if n_positives <= 0:
        return math.nan
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    c = np.asarray(correct, dtype=bool).reshape(-1)
    if len(s) != len(c):
        raise InputError(f"got {len(s)} scores and {len(c)} correctness flags")
    if len(s) == 0:
        return 0.0
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(c[order])
    fp = np.cumsum(~c[order])
    recall = np.concatenate([[0.0], tp / n_positives, [tp[-1] / n_positives]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return 100.0 * float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


@dataclass
class DetectionStats:
    """Face-finding metrics over a set of photos (one labelled face each).

    Attributes:
        photos: Number of photos.
        found: Percent whose best-scoring face has IoU >= 0.5.
        found_ci: Its 95 % Wilson interval.
        recall: Percent where some face (score >= ``min_score``) has IoU >= 0.5.
        recall_ci: Its interval.
        ap: Average precision at IoU 0.5, percent.
        species: Percent of the found faces with the right species (``nan`` when none is found).
        species_ci: Its interval.
        n_found: Photos with the face found.
        mean_iou: Mean IoU of the best-scoring face (0 for photos with none).
        faces_per_photo: Mean number of faces with score >= ``min_score``.
    """

    photos: int
    found: float
    found_ci: tuple[float, float]
    recall: float
    recall_ci: tuple[float, float]
    ap: float
    species: float
    species_ci: tuple[float, float]
    n_found: int
    mean_iou: float
    faces_per_photo: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN -> None, values rounded)."""

        def r(v: float) -> float | None:
            return None if math.isnan(v) else round(float(v), 4)

        return {
            "photos": self.photos,
            "found": r(self.found),
            "found_ci": [r(v) for v in self.found_ci],
            "recall": r(self.recall),
            "recall_ci": [r(v) for v in self.recall_ci],
            "ap": r(self.ap),
            "species": r(self.species),
            "species_ci": [r(v) for v in self.species_ci],
            "n_found": self.n_found,
            "mean_iou": r(self.mean_iou),
            "faces_per_photo": r(self.faces_per_photo),
        }


def _stats(photos: Sequence[PhotoDetections], min_score: float, iou: float) -> DetectionStats:
    n = len(photos)
    found = hit = right = 0
    ious_top: list[float] = []
    n_faces = 0
    all_scores: list[float] = []
    all_correct: list[bool] = []
    for ph in photos:
        ious = ph.ious()
        kept = [k for k, d in enumerate(ph.detections) if d.score >= min_score]
        n_faces += len(kept)
        top_iou = float(ious[kept[0]]) if kept else 0.0
        ious_top.append(top_iou)
        if kept and top_iou >= iou:
            found += 1
            right += int(ph.detections[kept[0]].species == ph.species)
        if any(ious[k] >= iou for k in kept):
            hit += 1
        matched = False
        for d, v in zip(ph.detections, ious, strict=True):
            ok = (not matched) and v >= iou
            matched = matched or ok
            all_scores.append(d.score)
            all_correct.append(ok)
    return DetectionStats(
        photos=n,
        found=100.0 * found / n if n else math.nan,
        found_ci=wilson_interval(found, n),
        recall=100.0 * hit / n if n else math.nan,
        recall_ci=wilson_interval(hit, n),
        ap=average_precision(all_scores, all_correct, n),
        species=100.0 * right / found if found else math.nan,
        species_ci=wilson_interval(right, found),
        n_found=found,
        mean_iou=float(np.mean(ious_top)) if n else math.nan,
        faces_per_photo=n_faces / n if n else math.nan,
    )


def score_detections(
    photos: Sequence[PhotoDetections],
    *,
    min_score: float,
    iou: float = DETECTION_IOU,
    species_order: Sequence[str] = (),
) -> tuple[dict[str, DetectionStats], DetectionStats, dict[str, dict[str, int]]]:
    """Score detections against the labelled faces (the definitions are in the module docstring).

    Args:
        photos: One [PhotoDetections][dife.eval.detection.PhotoDetections] per photo.
        min_score: Score from which a detection is a face the pipeline would use.
        iou: IoU that makes a detection right.
        species_order: Order of the species in the result (others follow, sorted).

    Returns:
        ``(per_species, overall, confusion)``: [DetectionStats][dife.eval.detection.DetectionStats]
        per labelled species and over all photos, and ``{true species: {species of
        the best face: count}}`` over the photos whose face was found.
    """
    by: dict[str, list[PhotoDetections]] = {}
    for ph in photos:
        by.setdefault(ph.species, []).append(ph)
    order = [s for s in species_order if s in by] + sorted(s for s in by if s not in species_order)
    per = {s: _stats(by[s], min_score, iou) for s in order}
    confusion: dict[str, dict[str, int]] = {}
    for s in order:
        row: dict[str, int] = {}
        for ph in by[s]:
            top = next((d for d in ph.detections if d.score >= min_score), None)
            if top is not None and box_iou(top.box, ph.true_box) >= iou:
                row[top.species] = row.get(top.species, 0) + 1
        confusion[s] = row
    return per, _stats(photos, min_score, iou), confusion


@dataclass
class DetectionReport:
    """A face finder scored on whole photos.

    Attributes:
        config: Options: ``detector`` (its label), ``min_score``, ``ap_min_score``, ``iou``.
        photos: Each photo's labelled face and detections.
        per_species: [DetectionStats][dife.eval.detection.DetectionStats] per labelled species.
        overall: The same over all photos.
        confusion: ``{true species: {species of the best face: count}}`` among found faces.
        seconds: Wall time of the detections.
    """

    config: dict[str, Any]
    photos: list[PhotoDetections]
    per_species: dict[str, DetectionStats]
    overall: DetectionStats
    confusion: dict[str, dict[str, int]]
    seconds: float = 0.0

    def to_dict(self, *, include_photos: bool = True) -> dict[str, Any]:
        """JSON-friendly dict; with ``include_photos``, each photo's best face and its IoU."""
        out: dict[str, Any] = {
            "config": dict(self.config),
            "seconds": round(self.seconds, 3),
            "per_species": {s: st.to_dict() for s, st in self.per_species.items()},
            "all": self.overall.to_dict(),
            "confusion": self.confusion,
        }
        if include_photos:
            ms = float(self.config["min_score"])
            rows = []
            for ph in self.photos:
                kept = [d for d in ph.detections if d.score >= ms]
                top = kept[0] if kept else None
                rows.append(
                    {
                        "id": ph.id,
                        "species": ph.species,
                        "true_box": [round(v, 1) for v in ph.true_box],
                        "faces": len(kept),
                        "top": top.to_dict() if top is not None else None,
                        "top_iou": round(box_iou(top.box, ph.true_box), 4) if top is not None else 0.0,
                        "best_iou": round(max((box_iou(d.box, ph.true_box) for d in kept), default=0.0), 4),
                    }
                )
            out["photos"] = rows
        return out

    def markdown(self, *, heading: str = "##") -> str:
        """Markdown tables: the metrics per species and overall, then the species confusion."""

        def pct(v: float, ci: tuple[float, float] | None = None) -> str:
            if math.isnan(v):
                return "-"
            return f"{v:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci is not None and not math.isnan(ci[0]) else "")

        c = self.config
        lines = [
            f"{heading} Face finding",
            "",
            f"- face finder: {c.get('detector')}; a face counts from score {c['min_score']:g}; "
            f"right when IoU >= {c['iou']:g} with the labelled face box",
            f"- found: the best-scoring face is right (what keypoint transfer uses); recall: any face is right; "
            f"AP over every detection with score >= {c['ap_min_score']:g} (unlabelled faces count as false "
            "positives, so AP is a lower bound); species: right species among the found faces; "
            "95 % Wilson intervals",
            f"- {len(self.photos)} photos, {self.seconds:.1f} s",
            "",
            "| species | photos | found % | recall % | AP % | species right % | mean IoU | faces / photo |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows = [*self.per_species.items(), ("all", self.overall)]
        for s, st in rows:
            lines.append(
                f"| {s} | {st.photos} | {pct(st.found, st.found_ci)} | {pct(st.recall, st.recall_ci)} | "
                f"{pct(st.ap)} | {pct(st.species, st.species_ci)} | {st.mean_iou:.3f} | {st.faces_per_photo:.2f} |"
            )
        predicted = sorted({p for row in self.confusion.values() for p in row})
        if predicted:
            lines += ["", "Species of the found faces (rows: labelled, columns: found):", ""]
            lines.append("| labelled | " + " | ".join(predicted) + " |")
            lines.append("|---|" + "---:|" * len(predicted))
            for s, row in self.confusion.items():
                lines.append(f"| {s} | " + " | ".join(str(row.get(p, 0)) for p in predicted) + " |")
        return "\n".join(lines) + "\n"


def detection_report(
    samples: Sequence[FaceSample],
    detector: Any = None,
    *,
    min_score: float | None = None,
    ap_min_score: float = AP_MIN_SCORE,
    iou: float = DETECTION_IOU,
    batch_size: int = 8,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> DetectionReport:
    """Run a face finder on whole photos with labelled face boxes and score it.

    Args:
        samples: Whole photos with one labelled face each (``face_box``, as
            [read_faces_folder][dife.eval.readers.read_faces_folder] reads the
            ``wild`` layout); no two may share an image file.
        detector: A [FaceDetector][dife.modeling.face_detector.FaceDetector], a
            folder, or ``None`` for the default one (see [evaluation_finder][dife.eval.detection.evaluation_finder]).
        min_score: Score from which a detection is a face (default: the finder's own).
        ap_min_score: Lowest score ranked for the average precision.
        iou: IoU that makes a detection right.
        batch_size: Photos per forward pass.
        device: Where to run the finder.
        progress: Called with a line now and then.

    Returns:
        The [DetectionReport][dife.eval.detection.DetectionReport].

    Raises:
        InputError: no samples, samples without a face box or cut from a larger
            photo, photos labelled twice, or bad options.
        ModelNotFoundError: no face finder.
    """
    from dife.detection import detect_faces
    from dife.modeling.face_detector import DETECTOR_SPECIES

    if not samples:
        raise InputError("the dataset has no samples")
    bad = [s.id for s in samples if s.face_box is None or s.box is not None]
    if bad:
        raise InputError(
            f"the detection report needs whole photos with a labelled face box ('face_box', the wild layout); "
            f"{len(bad)} of {len(samples)} samples are not (e.g. {bad[0]!r})"
        )
    paths = [str(s.image_path) for s in samples]
    if len(set(paths)) != len(paths):
        raise InputError("the detection report expects one labelled face per photo; some photos are labelled twice")
    if not 0.0 < iou <= 1.0:
        raise InputError(f"iou must be in (0, 1], got {iou!r}")
    if not 0.0 <= ap_min_score <= 1.0:
        raise InputError(f"ap_min_score must be in [0, 1], got {ap_min_score!r}")
    det, label = evaluation_finder(detector, device=device)
    ms = float(det.config.min_score if min_score is None else min_score)
    if not 0.0 <= ms <= 1.0:
        raise InputError(f"min_score must be in [0, 1], got {min_score!r}")
    floor = min(ms, float(ap_min_score))
    t0 = time.perf_counter()
    photos: list[PhotoDetections] = []
    for s in range(0, len(samples), batch_size):
        part = samples[s : s + batch_size]
        images = [f.image for f in (x.load() for x in part)]
        found = detect_faces(images, min_score=floor, model=det, batch_size=batch_size)
        for x, dets in zip(part, found, strict=True):
            assert x.face_box is not None
            photos.append(PhotoDetections(x.id, x.species, tuple(float(v) for v in x.face_box), list(dets)))  # type: ignore[arg-type]
        if progress is not None and (s // batch_size) % 25 == 24:
            progress(f"detection: {len(photos)} / {len(samples)} photos")
    seconds = time.perf_counter() - t0
    per, overall, confusion = score_detections(photos, min_score=ms, iou=iou, species_order=DETECTOR_SPECIES)
    config = {"detector": label, "min_score": ms, "ap_min_score": float(ap_min_score), "iou": float(iou)}
    if progress is not None:
        progress(
            f"detection: {len(photos)} photos, found {overall.found:.1f} %, species right {overall.species:.1f} %, "
            f"AP {overall.ap:.1f}, {seconds:.1f} s"
        )
    return DetectionReport(config, photos, per, overall, confusion, seconds)
