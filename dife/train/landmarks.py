"""Labelled landmarks of training photos: face crops with keypoints, paired across species.

A *landmark folder* is what ``python -m dife.train.photo_crops PHOTOS OUT --keypoints`` writes:
face crops and an ``index.csv`` whose ``keypoints`` column holds JSON ``{name: [x, y]}`` in
pixels of each crop (integer = pixel centre). [LandmarkCrops][dife.train.landmarks.LandmarkCrops]
reads it (the images through [RealFaceFolder][dife.train.data.RealFaceFolder], so the
preprocessing is the training photos'), with the keypoints mapped to the crop's grid, and
[sample_pairs][dife.train.landmarks.sample_pairs] draws pairs of crops of two species that share
labelled keypoints. The trainer matches them with
[keypoint_matching_loss][dife.train.losses.keypoint_matching_loss] (``landmarks`` section of the
config): a few labelled points per face (eyes and nose) as a sparse correspondence signal
next to the dense teachers, which the paper's method does not use.

These keypoints come from the *training* photos (``shared/data/photos``), never from a
development or evaluation set.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dife.coords import square_crop
from dife.errors import InputError
from dife.train.data import RealFaceFolder

__all__ = ["LandmarkCrops", "sample_pairs"]


class LandmarkCrops:
    """Face crops with labelled keypoints (a landmark folder), loaded at the student's input size.

    Args:
        folder: The landmark folder.
        names: Keypoint names, in the order of the returned arrays.
        index: Index file name inside ``folder``.
        size: Side S of the returned crops (the student's input size).

    Attributes:
        images: The crops, as a [RealFaceFolder][dife.train.data.RealFaceFolder].
        labels: Species of each crop.
        points: (N, K, 2) float32 keypoints in crop pixels (NaN where not labelled).

    Raises:
        InputError: a missing folder / index, an index without a ``keypoints`` column,
            malformed keypoints, or no crop with two of ``names`` labelled.
    """

    def __init__(self, folder: str | Path, names: Sequence[str], *, index: str = "index.csv", size: int = 96) -> None:
        self.names = tuple(str(n) for n in names)
        if not self.names:
            raise InputError("landmarks.names must name at least one keypoint")
        root = Path(folder)
        path = root / index
        if not path.is_file():
            raise InputError(f"landmark folder '{root}' has no {index} (write one with photo_crops --keypoints)")
        self.images = RealFaceFolder(root, index_file=path, size=size)
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "keypoints" not in rows[0]:
            raise InputError(f"'{path}' has no keypoints column (write it with photo_crops --keypoints)")
        if len(rows) != len(self.images):
            raise InputError(f"'{path}': {len(rows)} rows but {len(self.images)} images")
        pts = np.full((len(rows), len(self.names), 2), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            try:
                kps = json.loads(row["keypoints"] or "{}")
                for k, name in enumerate(self.names):
                    if name in kps:
                        pts[i, k] = [float(v) for v in kps[name]]
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                raise InputError(f"'{path}', row {i + 2}: malformed keypoints {row['keypoints']!r} ({e})") from None
        self.points = pts
        self.labels = list(self.images.labels)
        usable = (~np.isnan(pts[..., 0])).sum(axis=1) >= 2
        if not usable.any():
            raise InputError(f"'{path}': no crop has two of the keypoints {list(self.names)} labelled")
        self.usable = np.flatnonzero(usable)
        self.size = int(size)
        self._sides: dict[int, tuple[int, int]] = {}  # (width, height) of each crop file, read once

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop ``index``: ``(image (3, S, S) in [-1, 1], points (K, 2) in S-grid pixels, NaN if unlabelled)``."""
        image = self.images.load(index)
        if index not in self._sides:
            from PIL import Image

            with Image.open(self.images.paths[index]) as im:  # the header only
                self._sides[index] = im.size
        t = square_crop(*self._sides[index], self.size)
        grid = t.to_grid(self.points[index].astype(np.float64))
        return image, torch.as_tensor(grid, dtype=torch.float32)


def sample_pairs(
    data: LandmarkCrops, n: int, generator: torch.Generator, *, cross_species: bool = True
) -> list[tuple[int, int]]:
    """``n`` pairs of crops ``(i, j)`` with at least two keypoints labelled in both.

    With ``cross_species`` (and at least two species present) the two crops are of different species,
    the species drawn uniformly (not by how many crops each has); else both are drawn among all usable crops.
    """
    usable = data.usable
    labels = np.asarray(data.labels)[usable]
    species = sorted(set(labels.tolist()))
    by = {s: usable[labels == s] for s in species}
    both = ~np.isnan(data.points[..., 0])
    out: list[tuple[int, int]] = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        if cross_species and len(species) > 1:
            a, b = torch.randperm(len(species), generator=generator)[:2].tolist()
            pool_i, pool_j = by[species[a]], by[species[b]]
        else:
            pool_i = pool_j = usable
        i = int(pool_i[int(torch.randint(len(pool_i), (), generator=generator))])
        j = int(pool_j[int(torch.randint(len(pool_j), (), generator=generator))])
        if i != j and (both[i] & both[j]).sum() >= 2:
            out.append((i, j))
    if len(out) < n:
        raise InputError(f"could not draw {n} landmark pairs sharing two keypoints")
    return out
