"""Validation of a DIFE model by cross-species keypoint transfer on a labelled folder.

The folder is a labelled faces folder (what ``dife data faces`` writes): images and an
``annotations.json`` list of records
``{"image": "dog_0001.jpg", "species": "dog", "keypoints": {"nose": [x, y], ...}}``
(pixel coordinates, integer = pixel centre). For each sampled pair of images
of two different species, the keypoints present in both records are carried
from the source to the target with [transfer_keypoints][dife.transfer.transfer_keypoints]
and compared with the target's annotation. Distances are scaled to a 70 x 70
image (``distance * 70 / target side``), the metric of the paper.

Two scorings (``scoring``):

* ``"dife"`` (default): [transfer_keypoints][dife.transfer.transfer_keypoints] -- the
  descriptor sampled bilinearly at the source point, nearest neighbour by
  cosine similarity, every keypoint name both species share;
* ``"authors"``: the authors' evaluation script
  (``exp_keypoint_transfer_celeba+ap10k_unrefactored.py``, ``find_descriptor``):
  the source position scaled to the 96 x 96 input (``x * 96 / side``, no
  half-pixel shift) and **rounded** to a pixel, the arg-max of the **raw dot
  product** of the (not normalised) embeddings, the match scaled back
  (``g * side / 96``), and only the **first three** shared keypoints of the
  source's annotation order (eyes and nose for every species of
  ``shared/data/faces``).

Example:
    >>> res = keypoint_transfer_error(model, "dev-faces", pairs=200)  # doctest: +SKIP
    >>> res.overall, res.per_pair["human->dog"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dife.checks import check_int, check_positive_int
from dife.errors import InputError, ModelNotFoundError, ShapeError, UnknownDomainError

__all__ = [
    "ANNOTATIONS_FILE",
    "SCALE",
    "SCORINGS",
    "Annotation",
    "TransferError",
    "read_annotations",
    "keypoint_transfer_error",
    "authors_transfer_keypoints",
]

#: Name of the annotation file of a labelled folder.
ANNOTATIONS_FILE = "annotations.json"

#: Side of the reference image the errors are scaled to (the paper's 70 x 70).
SCALE = 70.0

#: Scorings of [keypoint_transfer_error][dife.train.validate.keypoint_transfer_error] (see the module docstring).
SCORINGS = ("dife", "authors")

#: Keypoints per image compared by the authors' scoring (their ``kp_src[:3]``).
AUTHORS_KEYPOINTS = 3


@dataclass(frozen=True)
class Annotation:
    """One labelled image.

    Attributes:
        path: Image file.
        species: Species name.
        keypoints: ``{name: (x, y)}`` in image pixels (integer = pixel centre).
    """

    path: Path
    species: str
    keypoints: dict[str, tuple[float, float]]


@dataclass
class TransferError:
    """Keypoint-transfer error, in pixels of a 70 x 70 image.

    Attributes:
        overall: Mean of the per-species-pair means (each ordered pair counts once).
        per_pair: ``{"human->dog": mean error}`` of each ordered species pair that was sampled.
        counts: ``{"human->dog": number of keypoints compared}``.
        n_pairs: Image pairs evaluated.
        species: Species that were paired.
    """

    overall: float
    per_pair: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    n_pairs: int = 0
    species: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "overall": self.overall,
            "per_pair": dict(self.per_pair),
            "counts": dict(self.counts),
            "n_pairs": self.n_pairs,
            "species": list(self.species),
        }


def _point(value: Any, where: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be [x, y] numbers, got {value!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InputError(f"{where} is not finite: {value!r}")
    return x, y


def read_annotations(folder: str | os.PathLike[str]) -> list[Annotation]:
    """Read ``annotations.json`` of a labelled folder.

    Args:
        folder: The folder (images + ``annotations.json``).

    Returns:
        One [Annotation][dife.train.validate.Annotation] per record, in file order.

    Raises:
        ModelNotFoundError: the folder or its ``annotations.json`` does not exist.
        InputError: malformed JSON or records (the message names the record),
            or a record whose image file is missing.
    """
    root = Path(folder).expanduser()
    path = root / ANNOTATIONS_FILE
    if not root.is_dir():
        raise ModelNotFoundError(f"validation folder not found: '{root}'")
    if not path.is_file():
        raise ModelNotFoundError(
            f"'{root}' has no {ANNOTATIONS_FILE}: a validation folder holds images and a list of "
            '{"image": ..., "species": ..., "keypoints": {name: [x, y]}} records'
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of records, got {type(data).__name__}")
    out = []
    for i, rec in enumerate(data):
        where = f"{path} record {i}"
        if not isinstance(rec, dict) or not {"image", "species", "keypoints"} <= set(rec):
            raise InputError(f"{where}: a record needs 'image', 'species' and 'keypoints', got {rec!r:.200}")
        if not isinstance(rec["image"], str) or not isinstance(rec["species"], str) or not rec["species"]:
            raise InputError(f"{where}: 'image' and 'species' must be strings")
        kps = rec["keypoints"]
        if not isinstance(kps, dict):
            raise InputError(f"{where}: 'keypoints' must be a mapping name -> [x, y]")
        image = root / rec["image"]
        if not image.is_file():
            raise InputError(f"{where}: image file not found: '{image}'")
        points = {str(k): _point(v, f"{where} keypoint {k!r}") for k, v in kps.items()}
        out.append(Annotation(image, rec["species"], points))
    if not out:
        raise InputError(f"{path} holds no records")
    return out


def _image_side(path: Path, cache: dict[Path, float]) -> float:
    if path not in cache:
        from PIL import Image

        with Image.open(path) as im:
            cache[path] = float(max(im.size))
    return cache[path]


def keypoint_transfer_error(
    model: Any,
    folder: str | os.PathLike[str],
    *,
    pairs: int = 200,
    seed: int = 0,
    species: Sequence[str] | None = None,
    batch_size: int = 32,
    refine: bool = False,
    device: Any = None,
    spatial_prior: float = 0.0,
    scoring: str = "dife",
) -> TransferError:
    """Mean cross-species keypoint-transfer error of ``model`` on a labelled folder.

    ``pairs`` image pairs are spread evenly (round robin) over the ordered
    pairs of different species that share at least one keypoint name (e.g.
    human -> dog: both eyes and the nose); the images of each pair are drawn
    at random with ``seed``, so the same pairs are evaluated every time. For
    every pair, the shared keypoints of the source are transferred to the
    target (nearest neighbour of the embeddings; ``refine`` adds the
    soft-argmax refinement) and the distance to the target's annotation is
    scaled to a 70 x 70 image: ``d * 70 / max(W, H)`` of the target.

    Args:
        model: A [DIFE][dife.modeling.DIFE] (its train / eval mode is
            restored afterwards), a model name or a folder.
        folder: Labelled folder (``annotations.json``, see [read_annotations][dife.train.validate.read_annotations]).
        pairs: Number of image pairs (>= 1).
        seed: Seed of the pair sampling.
        species: Species to pair (default: every species of the folder).
        batch_size: Images per forward pass.
        refine: Sub-pixel soft-argmax refinement of the matches.
        device: Where to run (default: the model's device).
        spatial_prior: Weight of the spatial prior of
            [transfer_keypoints][dife.transfer.transfer_keypoints]; 0 (default) measures
            the embedding alone, ``None`` uses the model's default.
        scoring: ``"dife"`` (default) or ``"authors"`` (module docstring;
            ``refine`` and ``spatial_prior`` do not apply to it).

    Returns:
        A [TransferError][dife.train.validate.TransferError] (``overall`` and ``per_pair`` in 70-px units).

    Raises:
        ModelNotFoundError: missing folder / annotations.
        UnknownDomainError: a species in ``species`` that the folder lacks (lists them).
        InputError: fewer than two species, no shared keypoints, bad options.
    """
    from dife.transfer import transfer_keypoints

    check_positive_int(pairs, "pairs")
    check_int(seed, "seed")
    if scoring not in SCORINGS:
        raise InputError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    records = read_annotations(folder)
    by_species: dict[str, list[Annotation]] = {}
    for rec in records:
        by_species.setdefault(rec.species, []).append(rec)
    if species is None:
        chosen = sorted(by_species)
    else:
        chosen = list(dict.fromkeys(str(s) for s in species))
        missing = [s for s in chosen if s not in by_species]
        if missing:
            have = ", ".join(f"{k} ({len(v)})" for k, v in sorted(by_species.items()))
            raise UnknownDomainError(f"the validation folder has no images of species {missing}; it has: {have}")
    if len(chosen) < 2:
        raise InputError(f"cross-species validation needs at least two species, got {chosen}")

    def names(sp: str) -> set[str]:
        return set.intersection(*(set(r.keypoints) for r in by_species[sp]))

    common = {sp: names(sp) for sp in chosen}
    species_pairs = [(a, b) for a in chosen for b in chosen if a != b and common[a] & common[b]]
    if not species_pairs:
        raise InputError(f"no two species of {chosen} share a keypoint name that every image of both has")
    rng = np.random.default_rng(seed)
    jobs: dict[tuple[str, str], list[tuple[Annotation, Annotation]]] = {}
    for i in range(pairs):
        a, b = species_pairs[i % len(species_pairs)]
        src = by_species[a][int(rng.integers(len(by_species[a])))]
        tgt = by_species[b][int(rng.integers(len(by_species[b])))]
        jobs.setdefault((a, b), []).append((src, tgt))

    net = model
    restore = None
    if hasattr(model, "training") and hasattr(model, "eval"):
        restore = bool(model.training)
        model.eval()
    sides: dict[Path, float] = {}
    per_pair: dict[str, float] = {}
    counts: dict[str, int] = {}
    try:
        for (a, b), items in jobs.items():
            if scoring == "authors":
                order = list(by_species[a][0].keypoints)
                kp = [k for k in order if k in common[a] & common[b]][:AUTHORS_KEYPOINTS]
            else:
                kp = sorted(common[a] & common[b])
            pts = np.array([[r.keypoints[k] for k in kp] for r, _ in items], dtype=np.float64)  # (B, N, 2)
            gt = np.array([[t.keypoints[k] for k in kp] for _, t in items], dtype=np.float64)
            if scoring == "authors":
                pred = authors_transfer_keypoints(
                    net, [str(r.path) for r, _ in items], [str(t.path) for _, t in items], pts, device=device
                )
            else:
                pred = transfer_keypoints(
                    [str(r.path) for r, _ in items],
                    [str(t.path) for _, t in items],
                    pts,
                    model=net,
                    refine=refine,
                    batch_size=batch_size,
                    device=device,
                    spatial_prior=spatial_prior,
                    src_box="image",  # the labelled crops as given: never a face finder
                    tgt_box="image",
                )
            pred = np.asarray(pred, dtype=np.float64).reshape(gt.shape)
            scale = np.array([SCALE / _image_side(t.path, sides) for _, t in items])[:, None]
            err = np.linalg.norm(pred - gt, axis=-1) * scale  # (B, N)
            per_pair[f"{a}->{b}"] = float(err.mean())
            counts[f"{a}->{b}"] = int(err.size)
    finally:
        if restore is not None:
            model.train(restore)
    overall = float(np.mean(list(per_pair.values())))
    return TransferError(overall, per_pair, counts, pairs, tuple(chosen))


def authors_transfer_keypoints(
    model: Any, sources: Sequence[Any], targets: Sequence[Any], points: Any, *, device: Any = None
) -> np.ndarray:
    """Keypoint transfer scored as the authors' evaluation (``find_descriptor``), pair by pair.

    The source point is scaled to the model's input grid (``x * S / side``
    after the crop rule of [prepare][dife.embedding.prepare], no half-pixel
    shift) and rounded to a pixel; its raw (not normalised) embedding is
    compared with every target pixel by the dot product; the arg-max pixel is
    scaled back (``g * side / S``). No sub-pixel refinement, no spatial prior.

    Args:
        model: A [DIFE][dife.modeling.dife.DIFE], a model name or a folder.
        sources: B source images (anything [load_image][dife.images.load_image] reads).
        targets: B target images.
        points: (B, N, 2) ``(x, y)`` source pixels.
        device: Where to run (default: the model's device).

    Returns:
        (B, N, 2) float64 target pixels.

    Raises:
        ShapeError: ``points`` not (B, N, 2) for B pairs.
    """
    import torch

    from dife.embedding import prepare
    from dife.images import load_image
    from dife.transfer import _setup

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[-1] != 2 or not (len(sources) == len(targets) == pts.shape[0]):
        raise ShapeError(
            f"points must be (B, N, 2) for B = {len(sources)} sources and {len(targets)} targets, got {pts.shape}"
        )
    net, dev = _setup(model, device)
    out = np.zeros_like(pts)
    with torch.no_grad():
        for i, (src, tgt) in enumerate(zip(sources, targets, strict=True)):
            x, transforms = prepare(
                [load_image(src, what=f"sources[{i}]"), load_image(tgt, what=f"targets[{i}]")],
                "image",  # the centred square, as the authors' crops: never a face finder
                net.config,
                device=dev,
            )
            feats = net(x.to(dev, next(net.parameters()).dtype)).float()  # (2, C, S, S), not normalised
            c, size = int(feats.shape[1]), int(feats.shape[-1])
            ts, tt = transforms
            g = (pts[i] - np.array([ts.left, ts.top])) * (size / ts.side)
            g = np.clip(np.round(g), 0, size - 1).astype(np.int64)  # (N, 2) x, y
            query = feats[0][:, torch.as_tensor(g[:, 1]), torch.as_tensor(g[:, 0])].t()  # (N, C)
            best = (query @ feats[1].reshape(c, -1)).argmax(dim=1).cpu().numpy()  # (N,)
            match = np.stack([best % size, best // size], axis=-1).astype(np.float64)
            out[i] = match * (tt.side / size) + np.array([tt.left, tt.top])
    return out
