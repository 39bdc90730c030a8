"""Training data for DIFE: real face folders, synthetic StyleGAN2 batches, pairs.

* [RealFaceFolder][dife.train.data.RealFaceFolder] -- unlabelled real face crops (a folder of
  ``{species}_{NNNNN}.jpg`` files, or an index CSV / text file), each read,
  centre-square cropped and resized exactly as at inference
  ([dife.embedding.resample_crop][dife.embedding.resample_crop]) to ``(3, S, S)`` in ``[-1, 1]``.
* [SpeciesBalancedSampler][dife.train.data.SpeciesBalancedSampler] / [make_loader][dife.train.data.make_loader] -- batches that mix
  species evenly although the pool is not (3000 humans, ~100 horses).
* [SyntheticSource][dife.train.data.SyntheticSource] -- endless batches synthesised by a frozen
  StyleGAN2 teacher (truncation 0.7, as in the paper) with its feature maps
  (``L_K2`` targets) and latents.
* [RealSource][dife.train.data.RealSource] -- endless batches of one species from a folder.
* [MixedSource][dife.train.data.MixedSource] -- one batch per step with a sub-batch of every species,
  each drawn from one of that species' sources (synthetic or real).
* [pair_batch][dife.train.data.pair_batch] -- two random warps of each image with their dense
  correspondence (``L_M1`` / DVE) and an auxiliary image of another species.

Batches are dicts: ``"image"`` (B, 3, S, S) float32 in [-1, 1] and
``"species"`` (a list of B names) always, plus source-specific entries.
Everything runs in the main process by default (``num_workers=0``).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from dife.checks import check_int, check_positive_int, is_int
from dife.coords import square_crop
from dife.errors import ImageError, InputError, ShapeError, UnknownDomainError
from dife.train.augment import Warp, color_jitter, correspondence, inside_mask, random_warp, warp_images

__all__ = [
    "IMAGE_EXTENSIONS",
    "UNKNOWN_SPECIES",
    "RealFaceFolder",
    "SpeciesBalancedSampler",
    "make_loader",
    "RealSource",
    "SyntheticSource",
    "MixedSource",
    "pair_batch",
    "collate",
]

#: File name endings read by [RealFaceFolder][dife.train.data.RealFaceFolder] (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: Species of files whose name has no ``{species}_`` prefix and no index entry.
UNKNOWN_SPECIES = "unknown"

_PREFIX = re.compile(r"^(?P<species>.+?)_\d+$")
_PATH_COLUMNS = ("image", "path", "file", "filename")


def _positive_int(value: Any, name: str) -> int:
    return check_positive_int(value, name)


def _make_generator(generator: torch.Generator | None, seed: Any) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return generator
    return torch.Generator().manual_seed(check_int(seed, "seed"))


def _species_of_name(path: Path) -> str:
    m = _PREFIX.match(path.stem)
    return m.group("species") if m else UNKNOWN_SPECIES


# ------------------------------------------------------------------ real data
class RealFaceFolder(Dataset):
    """Real face crops without labels, from a folder or an index file.

    Listing (at construction; the files are checked to exist, not decoded):

    * ``index_file=None``: every file of ``root`` (not recursive) whose name
      ends in one of ``extensions``, sorted; the species is the file name
      prefix ``{species}_{digits}`` (``human_00012.jpg`` -> ``"human"``),
      else ``"unknown"``.
    * ``index_file`` ending in ``.csv``: a header row with an image column
      (``image``, ``path``, ``file`` or ``filename``) and optionally
      ``species`` (e.g. the ``index.csv`` of ``dife data faces``); other columns
      are ignored.
    * any other ``index_file``: one image per line, optionally followed by a
      tab or comma and the species; blank lines and ``#`` comments skipped.

    Relative image paths are resolved against ``root`` (or, without a root,
    the index file's folder); a relative ``index_file`` against ``root``.
    Entries without a species take it from the file name.

    Each item is read with [dife.images.load_image][dife.images.load_image] (EXIF applied,
    alpha on black), cropped to the centre square and resized to
    ``size x size`` with [dife.embedding.resample_crop][dife.embedding.resample_crop] (the inference
    preprocessing, block-averaged when shrinking more than 2x), and mapped
    to [-1, 1].

    Args:
        root: Folder of images (or ``None`` with an ``index_file``).
        species: Keep only this species (a name or a list of names).
        index_file: CSV / text index (see above).
        size: Side S of the returned crops.
        extensions: File endings to list in folder mode.

    Attributes:
        paths: Image paths, one per item.
        labels: Species name of each item.
        species: Sorted distinct species names.

    Raises:
        InputError: missing folder / index file, malformed index, empty dataset.
        ImageError: an indexed image file that does not exist (named with its line).
        UnknownDomainError: a ``species`` filter naming a species that has no image.
    """

    def __init__(
        self,
        root: str | Path | None,
        *,
        species: str | Sequence[str] | None = None,
        index_file: str | Path | None = None,
        size: int = 96,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.size = _positive_int(size, "size")
        if isinstance(extensions, str):
            extensions = (extensions,)
        exts = tuple(str(e).lower() if str(e).startswith(".") else "." + str(e).lower() for e in extensions)
        if not exts:
            raise InputError("extensions must name at least one file ending, e.g. ('.jpg',)")
        self.root = None if root is None else Path(root)
        if self.root is not None and not self.root.is_dir():
            raise InputError(f"image folder not found (or not a folder): '{self.root}'")
        if index_file is not None:
            entries = self._read_index(Path(index_file))
        elif self.root is None:
            raise InputError("RealFaceFolder needs a root folder, an index_file, or both")
        else:
            files = sorted(
                p
                for p in self.root.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts
            )
            if not files:
                raise InputError(f"no images ({', '.join(exts)}) in folder '{self.root}'")
            entries = [(p, _species_of_name(p)) for p in files]

        available: dict[str, int] = {}
        for _, s in entries:
            available[s] = available.get(s, 0) + 1
        if species is not None:
            wanted = [species] if isinstance(species, str) else list(species)
            if not wanted or not all(isinstance(s, str) for s in wanted):
                raise InputError(f"species must be a name or a non-empty list of names, got {species!r}")
            unknown = [s for s in wanted if s not in available]
            if unknown:
                have = ", ".join(f"{k} ({v})" for k, v in sorted(available.items()))
                raise UnknownDomainError(f"no images of species {unknown}; this dataset has: {have}")
            entries = [e for e in entries if e[1] in set(wanted)]
        self.paths: list[Path] = [p for p, _ in entries]
        self.labels: list[str] = [s for _, s in entries]
        self.species: tuple[str, ...] = tuple(sorted(set(self.labels)))

    def _read_index(self, index_file: Path) -> list[tuple[Path, str]]:
        if not index_file.is_absolute() and self.root is not None:
            index_file = self.root / index_file
        if not index_file.is_file():
            raise InputError(f"index file not found: '{index_file}'")
        base = self.root if self.root is not None else index_file.parent
        try:
            text = index_file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read index file '{index_file}': {e}") from None
        rows: list[tuple[int, str, str | None]] = []  # (line, path, species)
        if index_file.suffix.lower() == ".csv":
            reader = csv.DictReader(text.splitlines())
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            col = next((c for c in _PATH_COLUMNS if c in fields), None)
            if col is None:
                raise InputError(
                    f"index file '{index_file}' has no image column: its header is {reader.fieldnames}, "
                    f"expected one of {list(_PATH_COLUMNS)} (and optionally 'species')"
                )
            names = {f.strip().lower(): f for f in reader.fieldnames or []}
            for row in reader:
                line = reader.line_num
                value = (row.get(names[col]) or "").strip()
                if not value:
                    raise InputError(f"index file '{index_file}', line {line}: empty {col!r} entry")
                sp = (row.get(names["species"]) or "").strip() if "species" in names else ""
                rows.append((line, value, sp or None))
        else:
            for line, raw in enumerate(text.splitlines(), start=1):
                item = raw.strip()
                if not item or item.startswith("#"):
                    continue
                if "\t" in item:
                    path_s, sp = (v.strip() for v in item.split("\t", 1))
                elif "," in item:
                    path_s, sp = (v.strip() for v in item.rsplit(",", 1))
                else:
                    path_s, sp = item, ""
                if not path_s:
                    raise InputError(f"index file '{index_file}', line {line}: no image path in {raw!r}")
                rows.append((line, path_s, sp or None))
        if not rows:
            raise InputError(f"index file '{index_file}' lists no images")
        entries = []
        for line, path_s, sp in rows:
            p = Path(path_s)
            if not p.is_absolute():
                p = base / p
            if not p.is_file():
                raise ImageError(f"index file '{index_file}', line {line}: image file not found: '{p}'")
            entries.append((p, sp if sp is not None else _species_of_name(p)))
        return entries

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Number of images of each species."""
        out: dict[str, int] = {}
        for s in self.labels:
            out[s] = out.get(s, 0) + 1
        return dict(sorted(out.items()))

    def load(self, index: int) -> torch.Tensor:
        """The (3, S, S) float32 crop of item ``index`` in [-1, 1].

        Raises:
            IndexError: index out of range.
            ImageError: the file cannot be read (the message names it).
        """
        from dife.embedding import resample_crop
        from dife.images import load_image

        n = len(self)
        if not is_int(index) or not -n <= index < n:
            raise IndexError(f"index {index!r} out of range for a RealFaceFolder of {n} images")
        path = self.paths[index]
        image = load_image(path)  # ImageError names the file
        t = square_crop(int(image.shape[2]), int(image.shape[1]), self.size)
        return resample_crop(image, t).clamp(0.0, 1.0) * 2.0 - 1.0

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"image": (3, S, S) float32 in [-1, 1], "species": str, "path": str}``."""
        if hasattr(index, "__index__") and not isinstance(index, bool):
            index = int(index)  # numpy / torch integer scalars
        image = self.load(index)
        return {"image": image, "species": self.labels[index], "path": str(self.paths[index])}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"RealFaceFolder({len(self)} images, size={self.size}, {counts})"


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack dataset items: tensors along a new batch dim, everything else into lists."""
    if not items:
        raise InputError("cannot collate an empty list of items")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else list(values)
    return out


# ------------------------------------------------------------------- sampling
def _labels_of(dataset: Any) -> list[str]:
    labels = getattr(dataset, "labels", None)
    if labels is None and isinstance(dataset, Sequence) and all(isinstance(v, str) for v in dataset):
        labels = dataset
    if labels is None:
        raise InputError(
            f"the sampler needs the species of each item: a dataset with a .labels list, or a list of names; "
            f"got {type(dataset).__name__}"
        )
    labels = [str(v) for v in labels]
    if not labels:
        raise InputError("cannot sample from an empty dataset")
    return labels


def _species_probabilities(species: Sequence[str], weights: Mapping[str, float] | None) -> torch.Tensor:
    if weights is None:
        return torch.full((len(species),), 1.0 / len(species), dtype=torch.float64)
    if not isinstance(weights, Mapping):
        raise InputError(f"species_weights must be a dict {{species: weight}}, got {type(weights).__name__}")
    unknown = sorted(set(weights) - set(species))
    if unknown:
        raise UnknownDomainError(f"species_weights names species without images: {unknown}; known: {list(species)}")
    vals = []
    for s in species:
        try:
            v = float(weights.get(s, 0.0))
        except (TypeError, ValueError):
            raise InputError(f"weight of species {s!r} must be a number, got {weights[s]!r}") from None
        if not math.isfinite(v) or v < 0:
            raise InputError(f"weight of species {s!r} must be finite and >= 0, got {weights[s]!r}")
        vals.append(v)
    p = torch.tensor(vals, dtype=torch.float64)
    if float(p.sum()) <= 0:
        raise InputError(f"species_weights must give a positive weight to at least one species, got {dict(weights)}")
    return p / p.sum()


def _allocate(batch_size: int, p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Split ``batch_size`` slots over species ∝ ``p``: floors, then the rest by the fractional parts."""
    exact = p * batch_size
    counts = torch.floor(exact + 1e-9).long()
    rest = batch_size - int(counts.sum())
    if rest > 0:
        frac = (exact - counts.to(exact.dtype)).clamp_min(0.0)
        frac = torch.where(p > 0, frac + 1e-12, frac)  # every used species stays eligible
        pick = torch.multinomial(frac, rest, replacement=False, generator=generator)
        counts[pick] += 1
    return counts


class SpeciesBalancedSampler(Sampler[int]):
    """Indices whose consecutive groups of ``batch_size`` mix species evenly.

    Each batch gives every species ``floor(batch_size * p_s)`` slots (``p``
    from ``species_weights``, uniform by default); the remaining slots go to
    species drawn at random in proportion to the fractional parts, so the
    expected share is exactly ``p_s``. Within a species the images are drawn
    without replacement from a reshuffled pool (a small species is cycled
    through more often); each batch is shuffled. Use with
    ``DataLoader(dataset, batch_size=batch_size, sampler=sampler)`` (see
    [make_loader][dife.train.data.make_loader]).

    Args:
        dataset: A dataset with a ``labels`` list ([RealFaceFolder][dife.train.data.RealFaceFolder]),
            or the list of species names itself.
        batch_size: Batch size of the loader.
        species_weights: ``{species: weight >= 0}``; species left out get 0.
        num_batches: Batches per pass (default ``len(dataset) // batch_size``, at least 1).
        generator: Random generator (its state advances across passes).
        seed: Seed when no generator is given: pass ``e`` uses ``seed + e``
            ([set_epoch][dife.train.data.SpeciesBalancedSampler.set_epoch]), so a pass is reproducible.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int,
        species_weights: Mapping[str, float] | None = None,
        num_batches: int | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        self.labels = _labels_of(dataset)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.species: tuple[str, ...] = tuple(sorted(set(self.labels)))
        self.probabilities = _species_probabilities(self.species, species_weights)
        self.num_batches = (
            max(1, len(self.labels) // self.batch_size)
            if num_batches is None
            else _positive_int(num_batches, "num_batches")
        )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        check_int(seed, "seed")
        self.generator = generator
        self.seed = seed
        self.epoch = 0
        self._pools = [
            torch.tensor([i for i, s in enumerate(self.labels) if s == sp], dtype=torch.long) for sp in self.species
        ]

    def set_epoch(self, epoch: int) -> None:
        """Select the pass (only used without an explicit generator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def batches(self) -> Iterator[list[int]]:
        """One pass as lists of ``batch_size`` indices."""
        g = self.generator if self.generator is not None else torch.Generator().manual_seed(self.seed + self.epoch)
        order = [pool[torch.randperm(len(pool), generator=g)] for pool in self._pools]
        pos = [0] * len(self._pools)
        for _ in range(self.num_batches):
            counts = _allocate(self.batch_size, self.probabilities, g)
            batch: list[int] = []
            for k, c in enumerate(counts.tolist()):
                for _ in range(c):
                    if pos[k] == len(order[k]):
                        order[k] = self._pools[k][torch.randperm(len(self._pools[k]), generator=g)]
                        pos[k] = 0
                    batch.append(int(order[k][pos[k]]))
                    pos[k] += 1
            perm = torch.randperm(len(batch), generator=g).tolist()
            yield [batch[i] for i in perm]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    balanced: bool = True,
    species_weights: Mapping[str, float] | None = None,
    num_batches: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` of full batches (dict items collated by [collate][dife.train.data.collate]).

    Args:
        dataset: E.g. a [RealFaceFolder][dife.train.data.RealFaceFolder].
        batch_size: Images per batch.
        balanced: Mix species with a [SpeciesBalancedSampler][dife.train.data.SpeciesBalancedSampler]
            (otherwise plain shuffling, seeded).
        species_weights: See [SpeciesBalancedSampler][dife.train.data.SpeciesBalancedSampler].
        num_batches: Batches per pass (balanced mode).
        seed: Seed of the sampling.
        num_workers: Loader processes (0: the main process; the default suits 2-core machines).
        pin_memory: Pin batches for faster host-to-GPU copies.

    Returns:
        The loader; each batch is ``{"image": (B, 3, S, S), "species": [...], "path": [...]}``.
    """
    bs = _positive_int(batch_size, "batch_size")
    check_int(num_workers, "num_workers", minimum=0)
    if balanced:
        sampler: Sampler[int] = SpeciesBalancedSampler(
            dataset, batch_size=bs, species_weights=species_weights, num_batches=num_batches, seed=seed
        )
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=_make_generator(None, seed))
    return DataLoader(
        dataset,
        batch_size=bs,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate,
    )


# -------------------------------------------------------------------- sources
class RealSource:
    """Endless batches of real images (optionally of one species) from a [RealFaceFolder][dife.train.data.RealFaceFolder].

    Images are drawn without replacement from a pool reshuffled every time it
    is used up. Iterating gives ``{"image": (B, 3, S, S), "species": [...],
    "path": [...]}`` on the CPU.

    Args:
        dataset: The folder.
        batch_size: Images per batch.
        species: Restrict to this species (``None``: all images).
        generator: Random generator; default one seeded with ``seed``.
        seed: Seed when no generator is given.
    """

    def __init__(
        self,
        dataset: RealFaceFolder,
        *,
        batch_size: int,
        species: str | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        labels = _labels_of(dataset)
        self.dataset = dataset
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.species = species
        if species is None:
            idx = list(range(len(labels)))
        else:
            idx = [i for i, s in enumerate(labels) if s == species]
            if not idx:
                raise UnknownDomainError(f"no images of species {species!r}; the dataset has {sorted(set(labels))}")
        self._pool = torch.tensor(idx, dtype=torch.long)
        self._gen = _make_generator(generator, seed)
        self._order = self._pool[torch.randperm(len(self._pool), generator=self._gen)]
        self._pos = 0

    def __iter__(self) -> RealSource:
        return self

    def __next__(self) -> dict[str, Any]:
        items = []
        for _ in range(self.batch_size):
            if self._pos == len(self._order):
                self._order = self._pool[torch.randperm(len(self._pool), generator=self._gen)]
                self._pos = 0
            items.append(self.dataset[int(self._order[self._pos])])
            self._pos += 1
        return collate(items)


class SyntheticSource:
    """Endless batches synthesised by a frozen generator teacher (StyleGAN2).

    Each batch samples ``z ~ N(0, I)``, maps it to ``w`` truncated towards w̄
    (``truncation`` = psi, 0.7 in the paper), synthesises the images and the
    feature maps of ``layers`` in one pass (no grad), and resizes the
    images to ``size`` (bilinear with anti-aliasing, ``align_corners=False``,
    so pixel centres keep the [dife.coords][dife.coords] convention) clamped to
    [-1, 1]. Feature maps keep their own resolution and cover the same field
    of view as the image.

    Args:
        generator_teacher: A [GeneratorTeacher][dife.train.teachers.base.GeneratorTeacher]
            (e.g. ``StyleGAN2.load(path)``).
        species: Species name of the generator's images.
        truncation: Truncation psi in [0, 1].
        batch_size: Images per batch.
        size: Side S of the returned images.
        layers: Feature layers to return (DIFE numbering, 7 = the 64 x 64 block).
        noise_mode: ``"const"`` (stored noise, default), ``"random"`` or ``"none"``.
        generator: Random generator of the latents; default a CPU generator
            seeded with ``seed`` (reproducible on every device).
        seed: Seed when no generator is given.

    Each batch (from iteration or [sample][dife.train.data.SyntheticSource.sample]) is a dict
    ``{"image": (B, 3, S, S) float32 in [-1, 1], "features": {layer: (B, C, r, r)},
    "w": (B, w_dim), "species": [species] * B}`` on the teacher's device.
    """

    def __init__(
        self,
        generator_teacher: Any,
        species: str,
        *,
        truncation: float = 0.7,
        batch_size: int,
        size: int = 96,
        layers: Iterable[int] = (7,),
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        for attr in ("mapping", "synthesis", "sample_w", "feature_layers"):
            if not hasattr(generator_teacher, attr):
                raise InputError(
                    f"generator_teacher must be a generator teacher (e.g. dife.train.teachers.StyleGAN2); "
                    f"{type(generator_teacher).__name__} has no {attr!r}"
                )
        if not isinstance(species, str) or not species:
            raise InputError(f"species must be a non-empty name, got {species!r}")
        try:
            psi = float(truncation)
        except (TypeError, ValueError):
            raise InputError(f"truncation must be a number in [0, 1], got {truncation!r}") from None
        if not 0.0 <= psi <= 1.0:
            raise InputError(f"truncation must be in [0, 1], got {truncation!r}")
        layer_list = [layers] if isinstance(layers, int) else list(layers)
        known = tuple(generator_teacher.feature_layers)
        if not layer_list or any(isinstance(v, bool) or v not in known for v in layer_list):
            raise InputError(f"layers must be among the teacher's feature layers {known}, got {layer_list}")
        if noise_mode not in ("const", "random", "none"):
            raise InputError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        self.teacher = generator_teacher
        self.species = species
        self.truncation = psi
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.size = _positive_int(size, "size")
        self.layers = tuple(sorted(set(layer_list)))
        self.noise_mode = noise_mode
        self.generator = _make_generator(generator, seed)

    def __iter__(self) -> SyntheticSource:
        return self

    def __next__(self) -> dict[str, Any]:
        return self.sample()

    @torch.no_grad()
    def sample(self, n: int | None = None) -> dict[str, Any]:
        """One batch of ``n`` (default ``batch_size``) samples; see the class docstring."""
        n = self.batch_size if n is None else _positive_int(n, "n")
        g = self.teacher
        w = g.sample_w(n, truncation=self.truncation, generator=self.generator)
        image, feats = g.synthesis(w, noise_mode=self.noise_mode, return_features=True, layers=self.layers)
        image = image.to(torch.float32)
        if tuple(image.shape[-2:]) != (self.size, self.size):
            image = F.interpolate(
                image, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )
        return {
            "image": image.clamp(-1.0, 1.0),
            "features": {k: feats[k] for k in self.layers},
            "w": w,
            "species": [self.species] * n,
        }


class MixedSource:
    """Batches mixing every species, each part drawn from one of that species' sources.

    At each step, for every species (in the order of ``sources``) one of its
    sources is chosen at random (probabilities ``weights[species]``, uniform
    by default) and a batch is taken from it. The parts are merged into one
    batch:

    * ``"image"``: (B, 3, S, S), the parts concatenated (on ``device``, default
      the first part's device);
    * ``"species"``: list of B names (the keys of ``sources``);
    * ``"synthetic"``: (B,) bool, True for parts that carry teacher ``"features"``;
    * ``"source_index"``: (B,) long, index of the source within its species;
    * ``"parts"``: list of ``{"species", "source_index", "start", "stop",
      "batch"}``, the raw part batches (teacher features, latents, paths...)
      with their slice of the merged batch.

    Args:
        sources: ``{species: [source, ...]}``; a source is an iterable of batch
            dicts with ``"image"`` ([SyntheticSource][dife.train.data.SyntheticSource], [RealSource][dife.train.data.RealSource],
            or a finite iterable such as a DataLoader, restarted when exhausted).
        weights: ``{species: [p, ...]}`` choice probabilities of each species'
            sources (normalised; default uniform).
        generator: Random generator of the choices; default seeded with ``seed``.
        seed: Seed when no generator is given.
        device: Device of the merged tensors.
    """

    def __init__(
        self,
        sources: Mapping[str, Sequence[Iterable[Mapping[str, Any]]]],
        weights: Mapping[str, Sequence[float]] | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(sources, Mapping) or not sources:
            raise InputError("sources must be a non-empty dict {species: [source, ...]}")
        self.sources: dict[str, list[Any]] = {}
        self._iters: dict[str, list[Iterator[Any]]] = {}
        self.probabilities: dict[str, torch.Tensor] = {}
        weights = {} if weights is None else weights
        if not isinstance(weights, Mapping):
            raise InputError(f"weights must be a dict {{species: [weight per source]}}, got {type(weights).__name__}")
        unknown = sorted(set(weights) - set(sources))
        if unknown:
            raise UnknownDomainError(f"weights given for species without sources: {unknown}; species: {list(sources)}")
        for sp, srcs in sources.items():
            if not isinstance(sp, str) or not sp:
                raise InputError(f"species names must be non-empty strings, got {sp!r}")
            srcs = [srcs] if not isinstance(srcs, Sequence) else list(srcs)
            if not srcs:
                raise InputError(f"species {sp!r} has no source")
            self.sources[sp] = srcs
            self._iters[sp] = [iter(s) for s in srcs]
            w = weights.get(sp)
            if w is None:
                p = torch.ones(len(srcs), dtype=torch.float64)
            else:
                try:
                    p = torch.tensor([float(v) for v in w], dtype=torch.float64)
                except (TypeError, ValueError):
                    raise InputError(f"weights[{sp!r}] must be a list of numbers, got {w!r}") from None
                if p.numel() != len(srcs) or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or p.sum() <= 0:
                    raise InputError(
                        f"weights[{sp!r}] must be {len(srcs)} finite numbers >= 0 with a positive sum, got {list(w)}"
                    )
            self.probabilities[sp] = p / p.sum()
        self.generator = _make_generator(generator, seed)
        self.device = device

    def __iter__(self) -> MixedSource:
        return self

    def __next__(self) -> dict[str, Any]:
        parts = []
        for sp, its in self._iters.items():
            k = int(torch.multinomial(self.probabilities[sp], 1, generator=self.generator)) if len(its) > 1 else 0
            try:
                batch = next(its[k])
            except StopIteration:  # a finite source (e.g. a DataLoader): start it again
                its[k] = iter(self.sources[sp][k])
                try:
                    batch = next(its[k])
                except StopIteration:
                    raise InputError(f"source {k} of species {sp!r} yields no batch") from None
            image = batch.get("image") if isinstance(batch, Mapping) else None
            if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
                shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ShapeError(
                    f"source {k} of species {sp!r} must yield dicts with a (B, 3, S, S) 'image', got {shape}"
                )
            parts.append((sp, k, batch))
        device = self.device if self.device is not None else parts[0][2]["image"].device
        sizes = {tuple(b["image"].shape[-2:]) for _, _, b in parts}
        if len(sizes) != 1:
            raise ShapeError(
                f"sources yield images of different sizes {sorted(sizes)}; give every source the same size"
            )
        images, species, synthetic, index, out_parts = [], [], [], [], []
        start = 0
        for sp, k, batch in parts:
            n = int(batch["image"].shape[0])
            images.append(batch["image"].to(device))
            species += [sp] * n
            synthetic += [isinstance(batch, Mapping) and "features" in batch] * n
            index += [k] * n
            out_parts.append({"species": sp, "source_index": k, "start": start, "stop": start + n, "batch": batch})
            start += n
        return {
            "image": torch.cat(images),
            "species": species,
            "synthetic": torch.tensor(synthetic, dtype=torch.bool, device=device),
            "source_index": torch.tensor(index, dtype=torch.long, device=device),
            "parts": out_parts,
        }


# ---------------------------------------------------------------------- pairs
def _check_batch(batch: Any) -> tuple[torch.Tensor, list[str]]:
    if not isinstance(batch, Mapping) or "image" not in batch:
        raise InputError(f"batch must be a dict with 'image' and 'species', got {type(batch).__name__}")
    image = batch["image"]
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3 or image.shape[0] == 0:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ShapeError(f"batch['image'] must be a (B, 3, S, S) tensor, got {shape}")
    if image.shape[2] != image.shape[3]:
        raise ShapeError(f"batch['image'] must be square (B, 3, S, S), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ShapeError(f"batch['image'] must be floating point in [-1, 1], got dtype {image.dtype}")
    species = batch.get("species")
    if isinstance(species, str) or not isinstance(species, Sequence) or len(species) != image.shape[0]:
        raise InputError(
            f"batch['species'] must be a list of {image.shape[0]} species names (one per image), got {species!r}"
        )
    return image, [str(s) for s in species]


def _pick_aux(species: list[str], generator: torch.Generator | None) -> tuple[list[int], list[bool]]:
    """For each sample, a random other sample of a different species (else of any other sample)."""
    b = len(species)
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(b, generator=generator, device=dev, dtype=torch.float64).tolist()
    index, cross = [], []
    for i, sp in enumerate(species):
        cands = [j for j in range(b) if species[j] != sp]
        is_cross = bool(cands)
        if not cands:
            cands = [j for j in range(b) if j != i] or [i]
        index.append(cands[min(int(u[i] * len(cands)), len(cands) - 1)])
        cross.append(is_cross)
    return index, cross


def _warp_maps(value: Any, warp: Warp, key: str) -> Any:
    if isinstance(value, torch.Tensor):
        if value.ndim != 4 or value.shape[0] != len(warp):
            raise ShapeError(f"batch[{key!r}] must be (B, C, h, w) with B = {len(warp)}, got {tuple(value.shape)}")
        return warp_images(value.float() if not value.is_floating_point() else value, warp)
    if isinstance(value, Mapping):
        return {k: _warp_maps(v, warp, f"{key}[{k!r}]") for k, v in value.items()}
    raise InputError(f"batch[{key!r}] must be a (B, C, h, w) tensor or a dict of them, got {type(value).__name__}")


def pair_batch(
    batch: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
    affine: Mapping[str, Any] | bool | None = None,
    tps: Mapping[str, Any] | bool | None = None,
    jitter: Mapping[str, Any] | None = None,
    maps: Sequence[str] = (),
    match_size: int | None = None,
) -> dict[str, Any]:
    """Training views of a batch: two warps with dense correspondence, and a cross-species auxiliary.

    For every image ``x_i`` two random warps ``G_a``, ``G_b`` (``affine ∘
    TPS``, [dife.train.augment.random_warp][dife.train.augment.random_warp]) give the views ``a`` and
    ``b``; [dife.train.augment.correspondence][dife.train.augment.correspondence] gives, for each pixel of
    ``a``, its location in ``b`` (the ``grid1_to_2`` of
    [dife.train.losses.matching_loss][dife.train.losses.matching_loss]). The auxiliary image of sample
    ``i`` (for [dife.train.losses.dve_exchange_loss][dife.train.losses.dve_exchange_loss]) is another image
    of the batch of a **different** species, under a third random warp; when
    the batch holds a single species it falls back to another image of that
    species and ``aux_cross`` is False.

    Args:
        batch: ``{"image": (B, 3, S, S) in [-1, 1], "species": [B names], ...}``.
        generator: Source of randomness (reproducible when seeded).
        affine: Options of [dife.train.augment.random_affine][dife.train.augment.random_affine]
            (``None``: defaults, ``False``: none).
        tps: Options of [dife.train.augment.random_tps][dife.train.augment.random_tps] (``None``: defaults, ``False``: none).
        jitter: Options of [dife.train.augment.color_jitter][dife.train.augment.color_jitter], applied
            independently to ``a``, ``b`` and the auxiliary views; ``None``: no jitter.
        maps: Keys of ``batch`` holding dense maps of the images
            ((B, C, h, w) tensors, or dicts of them, e.g. teacher features) to
            warp jointly, each at its own resolution.
        match_size: Side of the maps that are matched (default S, the
            embedding of a 96 x 96 input is 96 x 96).

    Returns:
        A dict with

        * ``image_a``, ``image_b``: (B, 3, S, S) views; ``aux``: (B, 3, S, S);
        * ``grid_ab``: (B, M, M, 2) float32 pixel coordinates in ``b``'s
            M x M map of each pixel of ``a``'s map (``-1`` where invalid);
            ``valid_ab``: (B, M, M) bool;
        * ``mask_a``, ``mask_b``: (B, M, M) bool, pixels that show the source
            (not the black padding);
        * ``aux_index``: (B,) long, the sample used as auxiliary; ``aux_cross``:
            (B,) bool, whether its species differs;
        * ``warp_a``, ``warp_b``, ``warp_aux``: the [Warp][dife.train.augment.Warp] objects
            (e.g. ``correspondence(warp_a, warp_b, (96, 64))`` for other map sizes);
        * ``species``, ``aux_species``: lists of names;
        * ``{key}_a``, ``{key}_b`` for every key of ``maps``.

    Raises:
        InputError / ShapeError: malformed batch or options.
    """
    image, species = _check_batch(batch)
    b, _, s, _ = image.shape
    m = s if match_size is None else _positive_int(match_size, "match_size")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if jitter is not None and not isinstance(jitter, Mapping):
        raise InputError(f"jitter must be a dict of color_jitter options or None, got {type(jitter).__name__}")
    for key in maps:
        if key not in batch:
            raise InputError(f"maps names {key!r}, which is not in the batch (keys: {sorted(batch)})")
    dev = image.device
    warp_a = random_warp(b, affine=affine, tps=tps, generator=generator, device=dev)
    warp_b = random_warp(b, affine=affine, tps=tps, generator=generator, device=dev)
    warp_c = random_warp(b, affine=affine, tps=tps, generator=generator, device=dev)
    aux_index, aux_cross = _pick_aux(species, generator)
    idx = torch.tensor(aux_index, dtype=torch.long, device=dev)

    image_a = warp_images(image, warp_a)
    image_b = warp_images(image, warp_b)
    aux = warp_images(image[idx], warp_c)
    if jitter is not None:
        try:
            image_a = color_jitter(image_a, generator=generator, **jitter)
            image_b = color_jitter(image_b, generator=generator, **jitter)
            aux = color_jitter(aux, generator=generator, **jitter)
        except TypeError as e:
            raise InputError(f"bad jitter options: {e}") from None
    grid_ab, valid_ab = correspondence(warp_a, warp_b, m)
    out: dict[str, Any] = {
        "image_a": image_a,
        "image_b": image_b,
        "aux": aux,
        "grid_ab": grid_ab,
        "valid_ab": valid_ab,
        "mask_a": inside_mask(warp_a.grid(m)),
        "mask_b": inside_mask(warp_b.grid(m)),
        "aux_index": idx,
        "aux_cross": torch.tensor(aux_cross, dtype=torch.bool, device=dev),
        "warp_a": warp_a,
        "warp_b": warp_b,
        "warp_aux": warp_c,
        "species": species,
        "aux_species": [species[j] for j in aux_index],
    }
    for key in maps:
        out[f"{key}_a"] = _warp_maps(batch[key], warp_a, key)
        out[f"{key}_b"] = _warp_maps(batch[key], warp_b, key)
    return out
