"""Build a pool of face crops from a keypoint dataset: the training photos of ``dife train dife_base``.

``dife data faces`` (and [build_face_pool][dife.face_pool.build_face_pool]) reads any
dataset that [dife.eval.read_dataset][dife.eval.readers.read_dataset] reads
(Animal-Pose / AP-10K, MTFL, CelebA / MAFL, WFLW, AnimalWeb, or a folder of
images with an ``annotations.json`` of keypoints), cuts every face with the
readers' crop rule and writes a folder that the trainer reads as photos and
that ``dife eval`` / validation read as labelled faces:

* ``{species}_{NNNNN}.jpg``: the crops, ``size x size`` RGB JPEG;
* ``index.csv``: ``image``, ``species``, ``source`` (``dataset:face id``),
  ``license`` (the ``license`` text given, for every row);
* ``annotations.json``: the keypoints of every crop, image-side names, in crop
  pixels (pixel-centre convention), the faces format of
  [read_faces_folder][dife.eval.readers.read_faces_folder];
* ``build.json``: how the folder was made (source, format, options, counts).

**The crop rule** is the readers' (``dife.eval.readers``): the axis-aligned box
of the face's keypoints, a square centred on it with side ``margin`` (2.5) x
its longer edge, black outside the photo; a face is left out when the square
is smaller than ``min_side`` source pixels or more than ``max_outside`` of it
lies outside the photo, and when its points contradict the image-side order
(profiles, upside-down heads). The defaults (128 px crops, ``min_side`` 64,
``max_outside`` 0.4, JPEG quality 92) are those of the pool the default model
was trained on; ``size=256, min_side=110, max_outside=0.3, quality=95`` give
crops like its labelled development set.

The output folder is written whole or not at all (a new folder is filled
beside it, then renamed); ``append=True`` adds crops to a pool written by this
module, numbering after the crops already there, and rewrites its index
atomically. Nothing else is ever overwritten.

Example:
    >>> from dife.face_pool import build_face_pool
    >>> build_face_pool("animal_pose/keypoints.json", "pool", format="animal_pose")  # doctest: +SKIP
    >>> build_face_pool("MTFL/training.txt", "pool", format="mtfl", image_dir="MTFL",
    ...                 include=["net_7876/*"], max_per_species=3000, append=True)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import io
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dife
from dife._io import atomic_path, atomic_write
from dife.errors import ImageError, InputError

__all__ = [
    "INDEX_NAME",
    "ANNOTATIONS_NAME",
    "BUILD_NAME",
    "PoolSummary",
    "build_face_pool",
]

INDEX_NAME = "index.csv"
ANNOTATIONS_NAME = "annotations.json"
BUILD_NAME = "build.json"
_INDEX_COLUMNS = ("image", "species", "source", "license")
_WRITER = "dife data faces"
_NAME = re.compile(r"^(?P<species>.+)_(?P<n>\d+)\.jpg$")


@dataclass(frozen=True)
class PoolSummary:
    """What [build_face_pool][dife.face_pool.build_face_pool] wrote.

    Attributes:
        folder: The pool folder.
        written: Crops written by this call, per species.
        total: Crops in the pool after this call, per species.
        read: Faces the dataset reader kept (after its crop-rule filters).
        left_out: Faces of those not written: ``include`` / ``exclude`` /
            ``species`` filters and ``max_per_species``.
        unreadable: Faces whose image could not be read (first few ids).
    """

    folder: Path
    written: dict[str, int]
    total: dict[str, int]
    read: int
    left_out: int
    unreadable: list[str] = field(default_factory=list)


def _check(value: Any, name: str, *, integer: bool, low: float, high: float | None = None) -> Any:
    """``value`` if it is a number (an int when ``integer``) in ``[low, high]``, else an InputError naming it."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        where = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{name} must be {'an int' if integer else 'a number'} {where}, got {value!r}")
    return value


def _read_samples(
    source: Path,
    format: str,
    *,
    image_dir: str | os.PathLike[str] | None,
    split: str | os.PathLike[str] | None,
    size: int,
    margin: float,
    min_side: float,
    max_outside: float,
) -> list[Any]:
    """The dataset's faces, each with the square crop of the readers' rule (``FaceSample.box``)."""
    from dife.eval.readers import _CropRule, read_dataset

    rule = _CropRule(size, margin, min_side, max_outside, True)
    options = {k: v for k, v in (("image_dir", image_dir), ("split", split)) if v is not None}
    if format == "faces" or (format == "auto" and (source / "annotations.json").is_file()):
        if options:
            raise InputError(f"a faces folder takes no {sorted(options)}: its images sit beside annotations.json")
        # The faces reader keeps images as they are: cut each face with the same rule as the other readers.
        out = []
        for s in read_dataset(source, "faces"):
            crop = rule.sample(
                sid=s.id, path=s.image_path, species=s.species, keypoints=dict(s.keypoints), dataset="faces"
            )
            if crop is not None:
                out.append(crop)
        return out
    return read_dataset(source, format, size=size, margin=margin, min_side=min_side, max_outside=max_outside, **options)


def _matches(sample: Any, patterns: list[str]) -> bool:
    ids = (str(sample.id), Path(sample.image_path).as_posix())
    return any(fnmatch.fnmatchcase(i, p) for p in patterns for i in ids)


def _excluded(sample: Any, entries: set[str]) -> bool:
    path = Path(sample.image_path).as_posix()
    return str(sample.id) in entries or any(path == e or path.endswith("/" + e) for e in entries)


def _read_list(path: str | os.PathLike[str]) -> set[str]:
    """Entries to leave out: lines of a text file, or the source photos of a pool (its folder or index.csv)."""
    p = Path(path)
    if p.is_dir():
        p = p / INDEX_NAME
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"exclude list not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the exclude list {p}: {e}") from None
    if p.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "source" not in rows[0]:
            raise InputError(f"exclude list {p}: a CSV needs a 'source' column (the index.csv of a pool)")
        # "dataset:photo#face" -> "photo": every face of a photo of that pool is left out
        return {r["source"].split(":", 1)[-1].split("#", 1)[0].replace("\\", "/") for r in rows} - {""}
    lines = (ln.strip() for ln in text.splitlines())
    return {ln.replace("\\", "/") for ln in lines if ln and not ln.startswith("#")}  # '#' lines are comments


def _file_prefix(species: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", species.lower()).strip("-") or "face"


def _existing_pool(folder: Path) -> tuple[list[dict[str, str]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Index rows, annotation records and build records of a pool written by this module."""
    build = folder / BUILD_NAME
    try:
        builds = json.loads(build.read_text(encoding="utf-8"))
        assert isinstance(builds, dict) and builds.get("written_by") == _WRITER
        with open(folder / INDEX_NAME, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        records = json.loads((folder / ANNOTATIONS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, AssertionError):
        raise InputError(
            f"append: {folder} is not a pool written by `dife data faces` (it needs a readable {BUILD_NAME}, "
            f"{INDEX_NAME} and {ANNOTATIONS_NAME}); write to a new folder instead"
        ) from None
    return rows, records, list(builds.get("builds", []))


def build_face_pool(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str = "auto",
    image_dir: str | os.PathLike[str] | None = None,
    split: str | os.PathLike[str] | None = None,
    species: Iterable[str] | None = None,
    size: int = 128,
    margin: float = 2.5,
    min_side: float = 64.0,
    max_outside: float = 0.4,
    quality: int = 92,
    max_per_species: int | None = None,
    seed: int = 0,
    include: Iterable[str] | None = None,
    exclude: str | os.PathLike[str] | Iterable[str] | None = None,
    license: str = "",
    append: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PoolSummary:
    """Cut the faces of a keypoint dataset into a pool of crops (see the module docstring for the layout).

    Args:
        source: The dataset: as ``path`` of [read_dataset][dife.eval.readers.read_dataset]
            (a folder, a JSON or a list file, by format).
        out: The pool folder: must not exist (or be empty), unless ``append``.
        format: One of [DATASET_FORMATS][dife.eval.readers.DATASET_FORMATS]
            (``auto``: a faces folder or an AnimalWeb folder).
        image_dir: Image folder of the ``ap10k`` / ``animal_pose`` / ``mafl`` /
            ``mtfl`` / ``wflw`` annotation files.
        split: MAFL split list (``mafl`` only).
        species: Keep only these species (default: all the dataset has).
        size: Side of the crops in pixels.
        margin: Crop side over the longer edge of the keypoints' box.
        min_side: Leave out faces whose crop is smaller, in source pixels.
        max_outside: Leave out faces with more of the crop outside the photo (0..1).
        quality: JPEG quality (1..95).
        max_per_species: Keep at most this many faces per species, drawn at
            random with ``seed`` (default: all).
        seed: Seed of that draw.
        include: Keep only faces whose id (the image path as the dataset
            names it, e.g. ``net_7876/xxx.jpg``) or full image path matches one
            of these glob patterns.
        exclude: Faces to leave out (e.g. the photos of a development set): a
            text file with one id or image path per line, another pool (its
            folder or ``index.csv``: every face of its source photos), or the
            entries themselves; an entry matches a face id, or the end of an
            image path.
        license: Terms of the source photos, written in every row of
            ``index.csv`` (say them: the pool inherits the dataset's terms).
        append: Add to an existing pool written by this function.
        progress: Called as ``progress(done, total)`` after each crop.

    Returns:
        A [PoolSummary][dife.face_pool.PoolSummary].

    Raises:
        InputError: bad options, an unreadable dataset, an output folder that
            holds other files, or no face left to write.
    """
    from PIL import Image

    src = Path(source).expanduser()
    dest = Path(out).expanduser()
    if not src.exists():
        raise InputError(f"dataset not found: {src}")
    _check(size, "size", integer=True, low=8, high=4096)
    _check(quality, "quality", integer=True, low=1, high=95)
    _check(margin, "margin", integer=False, low=1e-6)
    _check(min_side, "min_side", integer=False, low=0)
    _check(max_outside, "max_outside", integer=False, low=0, high=1)
    if max_per_species is not None:
        _check(max_per_species, "max_per_species", integer=True, low=1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an int, got {seed!r}")
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest} exists and is not a folder")
    if append and not dest.is_dir():
        raise InputError(f"append: {dest} does not exist; build the pool first (without append)")
    if not append and dest.is_dir() and any(dest.iterdir()):
        raise InputError(
            f"{dest} exists and is not empty: give a new folder, or append=True (--append) to add to a pool"
        )
    with contextlib.suppress(OSError):
        if dest.exists() and src.resolve() == dest.resolve():
            raise InputError("the pool folder must differ from the dataset")

    # 1. Read the faces (the readers' crop rule and filters), then the user's filters.
    samples = _read_samples(
        src,
        format,
        image_dir=image_dir,
        split=split,
        size=size,
        margin=margin,
        min_side=min_side,
        max_outside=max_outside,
    )
    n_read = len(samples)
    keep = None if species is None else {str(s).lower() for s in ([species] if isinstance(species, str) else species)}
    patterns = [include] if isinstance(include, str) else list(include or [])
    if exclude is None:
        entries: set[str] = set()
    elif isinstance(exclude, (str, os.PathLike)):
        entries = _read_list(exclude)
    else:
        entries = {str(e).replace("\\", "/") for e in exclude}
    chosen = [
        s
        for s in samples
        if (keep is None or s.species in keep)
        and (not patterns or _matches(s, patterns))
        and not (entries and _excluded(s, entries))
    ]
    by_species: dict[str, list[Any]] = {}
    for s in sorted(chosen, key=lambda s: (s.species, str(s.id))):
        by_species.setdefault(s.species, []).append(s)
    if max_per_species is not None:
        rng = random.Random(seed)
        for sp, items in by_species.items():
            if len(items) > max_per_species:
                picked = set(rng.sample(range(len(items)), max_per_species))
                by_species[sp] = [s for i, s in enumerate(items) if i in picked]
    todo = [s for sp in sorted(by_species) for s in by_species[sp]]
    if not todo:
        have = sorted({s.species for s in samples})
        raise InputError(
            f"no face to write: the reader kept {n_read} face(s) of {have or 'no species'} in {src} and the "
            f"filters (species, include, exclude) left none; check --format / --image-dir and the filters"
        )

    # 2. Where: a new folder is filled beside its final place, then renamed; append writes in place.
    rows: list[dict[str, str]] = []
    records: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    if append:
        rows, records, builds = _existing_pool(dest)
        work = dest
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    numbers: dict[str, int] = {}
    for r in rows:
        m = _NAME.match(r.get("image", ""))
        if m:
            numbers[m["species"]] = max(numbers.get(m["species"], 0), int(m["n"]))

    # 3. Cut and write every crop.
    written: dict[str, int] = {}
    unreadable: list[str] = []
    try:
        for done, s in enumerate(todo, 1):
            try:
                face = s.load()
            except ImageError:
                unreadable.append(str(s.id))
                continue
            prefix = _file_prefix(s.species)
            n = numbers.get(prefix, 0) + 1
            while (work / f"{prefix}_{n:05d}.jpg").exists():
                n += 1
            numbers[prefix] = n
            name = f"{prefix}_{n:05d}.jpg"
            buf = io.BytesIO()
            Image.fromarray(face.image).save(buf, format="JPEG", quality=quality)
            with atomic_write(work / name, "wb") as f:
                f.write(buf.getvalue())
            origin = f"{s.dataset or format}:{s.id}"
            rows.append({"image": name, "species": s.species, "source": origin, "license": license})
            record: dict[str, Any] = {
                "image": name,
                "species": s.species,
                "keypoints": {k: [round(x, 3), round(y, 3)] for k, (x, y) in face.keypoints.items()},
                "source": origin,
            }
            if license:
                record["license"] = license
            records.append(record)
            written[s.species] = written.get(s.species, 0) + 1
            if progress is not None:
                progress(done, len(todo))
        if not written:
            raise InputError(f"none of the {len(todo)} face images could be read (first: {unreadable[:3]})")

        # 4. The index, the annotations and the build record (index last: it marks a complete pool).
        total: dict[str, int] = {}
        for r in rows:
            total[r["species"]] = total.get(r["species"], 0) + 1
        builds.append(
            {
                "dife_version": dife.__version__,
                "source": str(src),
                "format": format,
                "image_dir": None if image_dir is None else str(image_dir),
                "options": {
                    "size": size,
                    "margin": margin,
                    "min_side": min_side,
                    "max_outside": max_outside,
                    "quality": quality,
                    "species": None if keep is None else sorted(keep),
                    "include": patterns,
                    "excluded_entries": len(entries),
                    "max_per_species": max_per_species,
                    "seed": seed,
                },
                "read": n_read,
                "written": dict(sorted(written.items())),
                "unreadable": len(unreadable),
            }
        )
        with atomic_write(work / ANNOTATIONS_NAME, "w") as f:
            json.dump(records, f, indent=1)
        with atomic_write(work / BUILD_NAME, "w") as f:
            json.dump({"written_by": _WRITER, "builds": builds}, f, indent=2)
        with atomic_path(work / INDEX_NAME) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(_INDEX_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        if not append:
            if dest.is_dir():
                dest.rmdir()  # empty (checked above): the finished folder takes its place
            os.replace(work, dest)
    except BaseException:
        if not append:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return PoolSummary(
        folder=dest,
        written=dict(sorted(written.items())),
        total=dict(sorted(total.items())),
        read=n_read,
        left_out=n_read - len(todo),
        unreadable=unreadable[:10],
    )
