"""Readers: each dataset's own format -> face crops with named, image-side keypoints.

Every reader returns a list of [FaceSample][dife.eval.readers.FaceSample] (cheap records; pixels are
read on [FaceSample.load][dife.eval.readers.FaceSample.load]). A sample names its source image, its
species, its keypoints in *source* pixels and the square face crop that
[load][dife.eval.readers.FaceSample.load] cuts out and resamples to ``size x size``.

**Keypoint names are image-side**: ``eye_left_img`` is the eye that appears on
the left of the image, whatever the subject's own left / right. Sources that
name points by the subject's own side (AP-10K, Animal-Pose) are mapped with
left and right swapped; sources that already use image sides (CelebA / MAFL,
WFLW) are mapped one to one. With ``drop_inconsistent=True`` (the default) a
face whose mapped points contradict the image-side order
(``x(*_left_img) > x(*_right_img)``: profiles, upside-down heads, doubtful
labels) is dropped, as in the project's development faces.

Names used ([KEYPOINT_NAMES][dife.eval.readers.KEYPOINT_NAMES])::

    eye_left_img, eye_right_img, nose, mouth_left_img, mouth_right_img
    eye_left_img_outer, eye_left_img_inner, eye_right_img_inner, eye_right_img_outer,
    lip_top, lip_bottom

The 9-point set of WFLW and AnimalWeb ([NINE_POINTS][dife.eval.readers.NINE_POINTS]) is the four eye
corners, the nose tip, the two mouth corners and the top / bottom centre of
the lips.

**Coordinates** follow [dife.coords][dife.coords]: ``(x, y)`` pixels, an integer is the
centre of that pixel. **Face crops** ([face_box][dife.eval.readers.face_box]) follow the paper and
the faces set: the axis-aligned box of the facial keypoints, a square centred
on it with side ``margin`` (2.5) x its longer edge; parts outside the photo
are black. Faces with more than ``max_outside`` (30 %) of the square outside
the photo, or a square smaller than ``min_side`` source pixels, are skipped.

Formats:

* [read_faces_folder][dife.eval.readers.read_faces_folder]: ``annotations.json`` + images (what ``dife data faces`` writes);
  the images are the crops (no re-cropping).
* [read_coco_keypoints][dife.eval.readers.read_coco_keypoints] / [read_ap10k][dife.eval.readers.read_ap10k] / [read_animal_pose][dife.eval.readers.read_animal_pose]:
  COCO keypoint JSON (AP-10K), and the Animal-Pose ``keypoints.json`` layout
  (``images`` as an ``{id: file}`` dict, nested ``[[x, y, v], ...]`` points).
* [read_mafl][dife.eval.readers.read_mafl]: CelebA ``list_landmarks*_celeba.txt`` + MAFL split lists.
* [read_mtfl][dife.eval.readers.read_mtfl]: MTFL / CUHK face alignment lists (``training.txt``, ``testing.txt``).
* [read_wflw][dife.eval.readers.read_wflw]: WFLW ``list_98pt_rect_attr_*.txt`` lines (98 points -> 9).
* [read_animalweb][dife.eval.readers.read_animalweb]: AnimalWeb images with iBUG ``.pts`` files (9 points).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dife.checks import check_int
from dife.errors import ImageError, InputError, KeypointError

__all__ = [
    "KEYPOINT_NAMES",
    "NINE_POINTS",
    "PAIRED_NAMES",
    "SUBJECT_SIDE_EYES_NOSE",
    "WFLW_TO_NINE",
    "CELEBA_NAMES",
    "MTFL_PROFILE_POSES",
    "FaceSample",
    "Face",
    "face_box",
    "is_image_side_consistent",
    "read_faces_folder",
    "read_coco_keypoints",
    "read_ap10k",
    "read_animal_pose",
    "read_mafl",
    "read_mtfl",
    "read_wflw",
    "read_animalweb",
    "read_dataset",
    "DATASET_FORMATS",
]

#: The 9 points of WFLW / AnimalWeb, image-side, in this order.
NINE_POINTS: tuple[str, ...] = (
    "eye_left_img_outer",
    "eye_left_img_inner",
    "eye_right_img_inner",
    "eye_right_img_outer",
    "nose",
    "mouth_left_img",
    "mouth_right_img",
    "lip_top",
    "lip_bottom",
)

#: Every keypoint name a reader may produce.
KEYPOINT_NAMES: tuple[str, ...] = (
    "eye_left_img",
    "eye_right_img",
    "nose",
    "mouth_left_img",
    "mouth_right_img",
    "eye_left_img_outer",
    "eye_left_img_inner",
    "eye_right_img_inner",
    "eye_right_img_outer",
    "lip_top",
    "lip_bottom",
)

#: (image-left name, image-right name) pairs whose x order is checked.
PAIRED_NAMES: tuple[tuple[str, str], ...] = (
    ("eye_left_img", "eye_right_img"),
    ("mouth_left_img", "mouth_right_img"),
    ("eye_left_img_outer", "eye_right_img_outer"),
    ("eye_left_img_inner", "eye_right_img_inner"),
    ("eye_left_img_outer", "eye_left_img_inner"),
    ("eye_right_img_inner", "eye_right_img_outer"),
)

#: AP-10K / Animal-Pose names (the animal's own sides) -> image-side names.
SUBJECT_SIDE_EYES_NOSE: dict[str, str] = {"right_eye": "eye_left_img", "left_eye": "eye_right_img", "nose": "nose"}

#: WFLW 98-point indices of [NINE_POINTS][dife.eval.readers.NINE_POINTS] (WFLW indices are image-side:
#: 60 / 64 outer / inner corner of the image-left eye, 68 / 72 inner / outer
#: corner of the image-right eye, 54 nose tip, 76 / 82 mouth corners,
#: 79 / 85 outer lip top / bottom centre).
WFLW_TO_NINE: dict[str, int] = {
    "eye_left_img_outer": 60,
    "eye_left_img_inner": 64,
    "eye_right_img_inner": 68,
    "eye_right_img_outer": 72,
    "nose": 54,
    "mouth_left_img": 76,
    "mouth_right_img": 82,
    "lip_top": 79,
    "lip_bottom": 85,
}

#: CelebA landmark columns (``lefteye`` is the image-left eye) -> names.
CELEBA_NAMES: tuple[str, ...] = ("eye_left_img", "eye_right_img", "nose", "mouth_left_img", "mouth_right_img")

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# ----------------------------------------------------------------- records
@dataclass(frozen=True, eq=False)
class Face:
    """A loaded face crop.

    Attributes:
        id: Sample id (unique within a dataset).
        species: Species name (``"human"``, ``"dog"`` ...).
        image: (S, S, 3) uint8 RGB crop (or the image as given, for the faces folder).
        keypoints: ``{name: (x, y)}`` in crop pixels (integer = pixel centre).
        face_box: The labelled face box ``(x0, y0, x1, y1)`` in the pixels of
            ``image`` (edge coordinates; it may reach outside the image), or
            ``None`` when the dataset labels none (see [FaceSample][dife.eval.readers.FaceSample]).
    """

    id: str
    species: str
    image: np.ndarray
    keypoints: dict[str, tuple[float, float]]
    face_box: tuple[float, float, float, float] | None = None

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])

    def points(self, names: Sequence[str]) -> np.ndarray:
        """(N, 2) float64 array of the named keypoints, in ``names`` order.

        Raises:
            KeypointError: a name that this face does not have.
        """
        missing = [n for n in names if n not in self.keypoints]
        if missing:
            raise KeypointError(f"face {self.id!r} has no keypoint(s) {missing}; it has {sorted(self.keypoints)}")
        return np.array([self.keypoints[n] for n in names], dtype=np.float64).reshape(-1, 2)


@dataclass(frozen=True)
class FaceSample:
    """One annotated face of a dataset, not yet loaded.

    Attributes:
        id: Unique id within the dataset (e.g. the image file name plus an index).
        image_path: The source image file.
        species: Species name, lower case.
        keypoints: ``{name: (x, y)}`` image-side keypoints in *source* pixels.
        box: The square face crop ``(left, top, side)`` in source edge
            coordinates (see [dife.coords][]), or ``None`` for the image as given.
        size: Side of the crop after resampling (``None``: the crop's own pixels,
            only valid with ``box=None``).
        dataset: Name of the reader that made the sample.
        extra: Other fields of the record (``source``, ``license``).
        face_box: The labelled face box ``(x0, y0, x1, y1)`` in *source*
            pixels (edge coordinates; it may reach outside the image), or
            ``None``. Whole photos of the ``wild`` layout carry one: it scores
            a face finder and sets the error unit of the ``wild`` protocol
            (see [dife.eval.crops][]); it is never given to a method unless the
            method's framing asks for the true box.
    """

    id: str
    image_path: Path
    species: str
    keypoints: Mapping[str, tuple[float, float]]
    box: tuple[float, float, float] | None = None
    size: int | None = 256
    dataset: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    face_box: tuple[float, float, float, float] | None = None

    @property
    def names(self) -> frozenset[str]:
        """The keypoint names of the sample."""
        return frozenset(self.keypoints)

    def load(self) -> Face:
        """Read the image, cut the face crop and map the keypoints into it.

        Returns:
            A [Face][dife.eval.readers.Face] with a ``(size, size, 3)`` uint8 crop (or the image
            as given when ``box`` is ``None``) and keypoints in its pixels.

        Raises:
            ImageError: unreadable image file.
        """
        img = _open_rgb(self.image_path)
        if self.box is None:
            arr = np.asarray(img, dtype=np.uint8).copy()
            kps = {k: (float(x), float(y)) for k, (x, y) in self.keypoints.items()}
            return Face(self.id, self.species, arr, kps, self.face_box)
        from PIL import Image

        left, top, side = self.box
        size = int(self.size or round(side))
        ix0, iy0 = math.floor(left), math.floor(top)
        ix1, iy1 = math.ceil(left + side), math.ceil(top + side)
        region = img.crop((ix0, iy0, ix1, iy1))  # outside the photo: black
        box = (left - ix0, top - iy0, left - ix0 + side, top - iy0 + side)
        crop = region.resize((size, size), Image.Resampling.LANCZOS, box=box)
        s = size / side
        kps = {k: ((x + 0.5 - left) * s - 0.5, (y + 0.5 - top) * s - 0.5) for k, (x, y) in self.keypoints.items()}
        fb = None
        if self.face_box is not None:
            x0, y0, x1, y1 = self.face_box
            fb = ((x0 - left) * s, (y0 - top) * s, (x1 - left) * s, (y1 - top) * s)
        return Face(self.id, self.species, np.asarray(crop, dtype=np.uint8).copy(), kps, fb)


def _open_rgb(path: Path) -> Any:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# ---------------------------------------------------------------- geometry
def face_box(
    points: np.ndarray | Sequence[Sequence[float]],
    *,
    margin: float = 2.5,
    min_extent: float = 1.0,
) -> tuple[float, float, float]:
    """The square face crop of a set of facial keypoints.

    Args:
        points: (N, 2) keypoints ``(x, y)`` in pixel-centre coordinates, N >= 1.
        margin: Side of the square over the longer edge of the points'
            bounding box (the paper's landmark crop; 2.5 in the faces set).
        min_extent: Lower bound of that longer edge, in pixels (a single point
            or coincident points still give a non-empty box).

    Returns:
        ``(left, top, side)`` of the square in edge coordinates, centred on
        the points' bounding box.

    Raises:
        KeypointError: no points or non-finite points.
        InputError: ``margin`` not positive.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise KeypointError(f"face_box needs finite (N, 2) points with N >= 1, got {pts.tolist()}")
    if not margin > 0:
        raise InputError(f"margin must be positive, got {margin!r}")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = max(float(np.max(hi - lo)), float(min_extent))
    side = margin * extent
    cx, cy = (lo + hi) / 2.0 + 0.5  # pixel centres -> edge coordinates
    return (float(cx - side / 2.0), float(cy - side / 2.0), float(side))


def _outside_fraction(box: tuple[float, float, float], width: int, height: int) -> float:
    left, top, side = box
    ix = max(0.0, min(left + side, width) - max(left, 0.0))
    iy = max(0.0, min(top + side, height) - max(top, 0.0))
    return 1.0 - (ix * iy) / (side * side)


def is_image_side_consistent(keypoints: Mapping[str, Sequence[float]]) -> bool:
    """True when every present (left, right) pair of [PAIRED_NAMES][dife.eval.readers.PAIRED_NAMES] has ``x(left) < x(right)``."""
    for a, b in PAIRED_NAMES:
        if a in keypoints and b in keypoints and not float(keypoints[a][0]) < float(keypoints[b][0]):
            return False
    return True


@dataclass(frozen=True)
class _CropRule:
    """The crop rule and filters shared by the cropping readers (validated on construction)."""

    size: int
    margin: float
    min_side: float
    max_outside: float
    drop_inconsistent: bool

    def __post_init__(self) -> None:
        size = self.size
        check_int(size, "size", minimum=8, what="an integer >= 8 (the crop side in pixels)")
        if not self.margin > 0:
            raise InputError(f"margin must be positive, got {self.margin!r}")
        if not self.min_side >= 0:
            raise InputError(f"min_side must be >= 0, got {self.min_side!r}")
        if not 0.0 <= self.max_outside <= 1.0:
            raise InputError(f"max_outside must be in [0, 1], got {self.max_outside!r}")

    def sample(
        self,
        *,
        sid: str,
        path: Path,
        species: str,
        keypoints: dict[str, tuple[float, float]],
        dataset: str,
        image_size: tuple[int, int] | None = None,
        box_names: Iterable[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> FaceSample | None:
        """The face's sample, or None when the rule skips it."""
        if not keypoints:
            return None
        if self.drop_inconsistent and not is_image_side_consistent(keypoints):
            return None
        names = [n for n in (box_names or keypoints) if n in keypoints] or list(keypoints)
        box = face_box([keypoints[n] for n in names], margin=self.margin)
        if box[2] < self.min_side:
            return None
        if self.max_outside < 1.0:
            w, h = image_size if image_size is not None else _image_size(path)
            if _outside_fraction(box, w, h) > self.max_outside:
                return None
        return FaceSample(
            id=sid,
            image_path=path,
            species=species.lower(),
            keypoints=keypoints,
            box=box,
            size=self.size,
            dataset=dataset,
            extra=dict(extra or {}),
        )


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {path} is not valid JSON: {e}") from None


def _box4(value: Any, where: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: a face box must be [x0, y0, x1, y1] numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise InputError(f"{where}: a face box needs finite x0 < x1 and y0 < y1, got {value!r}")
    return x0, y0, x1, y1


def _xy(value: Any, where: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        raise KeypointError(f"{where}: a keypoint must be [x, y] numbers, got {value!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise KeypointError(f"{where}: non-finite keypoint {value!r}")
    return x, y


# --------------------------------------------------------------- faces folder
def read_faces_folder(root: str | os.PathLike[str], *, species: Iterable[str] | None = None) -> list[FaceSample]:
    """Read a labelled faces folder (the format ``dife data faces`` writes).

    ``root/annotations.json`` is a list of
    ``{"image": "dog_0001.jpg", "species": "dog", "keypoints": {"eye_left_img": [x, y], ...}}``
    with image-side names and pixel-centre coordinates in the image as stored
    (nothing is re-cropped). In the faces set the images are the face crops;
    in the ``wild`` layout (whole photos, ``shared/data/wild``) each record
    also has ``"face_box": [x0, y0, x1, y1]``, the labelled face in photo
    pixels (edge coordinates), kept as [FaceSample.face_box][dife.eval.readers.FaceSample].

    Args:
        root: The folder.
        species: Keep only these species (default: all).

    Returns:
        One [FaceSample][dife.eval.readers.FaceSample] per record, ``box=None`` (the image as given),
        ``id`` = the image file name, ``face_box`` from the record (or ``None``).

    Raises:
        InputError: missing / malformed ``annotations.json`` (or a malformed ``face_box``).
        KeypointError: a keypoint that is not two finite numbers.
    """
    root = Path(root)
    data = _read_json(root / "annotations.json", "annotations file")
    if not isinstance(data, list):
        raise InputError(f"{root / 'annotations.json'} must hold a list of records, got {type(data).__name__}")
    keep = {s.lower() for s in species} if species is not None else None
    out: list[FaceSample] = []
    for i, rec in enumerate(data):
        where = f"{root / 'annotations.json'}[{i}]"
        if not isinstance(rec, dict) or not {"image", "species", "keypoints"} <= set(rec):
            raise InputError(f"{where}: a record needs 'image', 'species' and 'keypoints'")
        if not isinstance(rec["keypoints"], dict):
            raise InputError(f"{where}: 'keypoints' must be a dict name -> [x, y]")
        sp = str(rec["species"]).lower()
        if keep is not None and sp not in keep:
            continue
        kps = {str(k): _xy(v, f"{where}.keypoints.{k}") for k, v in rec["keypoints"].items()}
        fb = rec.get("face_box")
        out.append(
            FaceSample(
                id=str(rec["image"]),
                image_path=root / str(rec["image"]),
                species=sp,
                keypoints=kps,
                box=None,
                size=None,
                dataset="faces",
                extra={k: rec[k] for k in ("source", "license") if k in rec},
                face_box=None if fb is None else _box4(fb, f"{where}.face_box"),
            )
        )
    return out


# ------------------------------------------------------------------ COCO JSON
def read_coco_keypoints(
    annotations: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    *,
    name_map: Mapping[str, str] = SUBJECT_SIDE_EYES_NOSE,
    dataset: str = "coco",
    species: Iterable[str] | None = None,
    size: int = 256,
    margin: float = 2.5,
    min_side: float = 0.0,
    max_outside: float = 0.3,
    drop_inconsistent: bool = True,
    require_all: bool = True,
) -> list[FaceSample]:
    """Read faces from a COCO keypoint JSON (AP-10K) or the Animal-Pose ``keypoints.json``.

    Accepted layouts: ``images`` a COCO list of ``{"id", "file_name", "width", "height"}``
    or an ``{id: file_name}`` dict (Animal-Pose); ``keypoints`` per annotation
    flat ``[x, y, v, ...]`` or nested ``[[x, y, v], ...]``; point names from
    the annotation's category (``categories[*].keypoints``). Points with
    visibility 0 are missing. The species is the category name.

    Args:
        annotations: The JSON file.
        image_dir: Folder of the image files.
        name_map: Source keypoint name -> image-side name; the default maps the
            animal's own ``right_eye`` to ``eye_left_img`` and ``left_eye`` to
            ``eye_right_img`` (AP-10K and Animal-Pose label the animal's sides).
        dataset: Name stored in the samples.
        species: Keep only these category names (default: all).
        size: Side of the loaded crops.
        margin: Crop side over the longer edge of the facial points' box.
        min_side: Skip faces whose crop is smaller, in source pixels.
        max_outside: Skip faces with more of the crop outside the photo.
        drop_inconsistent: Skip faces whose mapped points break the image-side order.
        require_all: Skip faces missing any of the mapped points (else keep
            faces with at least two).

    Returns:
        One [FaceSample][dife.eval.readers.FaceSample] per kept annotation, ``id`` = ``"<file>#<annotation id>"``.

    Raises:
        InputError: a file that is not such a JSON, or bad options.
    """
    rule = _CropRule(size, margin, min_side, max_outside, drop_inconsistent)
    path = Path(annotations)
    data = _read_json(path, "annotation file")
    if not isinstance(data, dict) or "annotations" not in data or "categories" not in data:
        raise InputError(f"{path} is not a COCO keypoint file (needs 'images', 'annotations', 'categories')")
    images: dict[Any, tuple[str, tuple[int, int] | None]] = {}
    raw_images = data.get("images", [])
    if isinstance(raw_images, dict):
        for k, v in raw_images.items():
            images[str(k)] = (str(v), None)
    else:
        for im in raw_images:
            wh = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None
            images[str(im["id"])] = (str(im["file_name"]), wh)
    cats = {str(c["id"]): c for c in data["categories"]}
    keep = {s.lower() for s in species} if species is not None else None
    root = Path(image_dir)
    out: list[FaceSample] = []
    for n, ann in enumerate(data["annotations"]):
        cat = cats.get(str(ann.get("category_id")))
        if cat is None:
            raise InputError(f"{path}: annotation {n} has an unknown category_id {ann.get('category_id')!r}")
        sp = str(cat.get("name", "")).lower()
        if keep is not None and sp not in keep:
            continue
        names = list(cat.get("keypoints") or [])
        kp = np.asarray(ann.get("keypoints") or [], dtype=np.float64).reshape(-1)
        if kp.size != 3 * len(names):
            raise InputError(
                f"{path}: annotation {n} has {kp.size} keypoint numbers, its category {sp!r} names {len(names)} points"
            )
        kp = kp.reshape(-1, 3)
        mapped: dict[str, tuple[float, float]] = {}
        for src_name, (x, y, v) in zip(names, kp, strict=True):
            if src_name in name_map and v > 0 and math.isfinite(x) and math.isfinite(y):
                mapped[name_map[src_name]] = (float(x), float(y))
        if require_all and len(mapped) < len(set(name_map.values())):
            continue
        if len(mapped) < 2:
            continue
        image_id = str(ann.get("image_id"))
        if image_id not in images:
            raise InputError(f"{path}: annotation {n} refers to an unknown image_id {image_id!r}")
        file_name, wh = images[image_id]
        sample = rule.sample(
            sid=f"{file_name}#{ann.get('id', n)}",
            path=root / file_name,
            species=sp,
            keypoints=mapped,
            dataset=dataset,
            image_size=wh,
        )
        if sample is not None:
            out.append(sample)
    return out


def read_ap10k(
    annotations: str | os.PathLike[str], image_dir: str | os.PathLike[str], **kwargs: Any
) -> list[FaceSample]:
    """AP-10K (COCO JSON, ``left_eye`` / ``right_eye`` the animal's own sides); see [read_coco_keypoints][dife.eval.readers.read_coco_keypoints]."""
    kwargs.setdefault("dataset", "ap10k")
    return read_coco_keypoints(annotations, image_dir, **kwargs)


def read_animal_pose(
    annotations: str | os.PathLike[str], image_dir: str | os.PathLike[str], **kwargs: Any
) -> list[FaceSample]:
    """Animal-Pose (``keypoints.json``, animal's own sides); see [read_coco_keypoints][dife.eval.readers.read_coco_keypoints]."""
    kwargs.setdefault("dataset", "animal_pose")
    return read_coco_keypoints(annotations, image_dir, **kwargs)


# ------------------------------------------------------------------ MAFL / CelebA
def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def read_mafl(
    landmarks: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    *,
    split: str | os.PathLike[str] | None = None,
    size: int = 256,
    margin: float = 2.5,
    min_side: float = 0.0,
    max_outside: float = 0.3,
    drop_inconsistent: bool = True,
) -> list[FaceSample]:
    """MAFL / CelebA human faces with 5 landmarks.

    ``landmarks`` is CelebA's ``list_landmarks_align_celeba.txt`` (or the
    in-the-wild ``list_landmarks_celeba.txt``): an optional count line, an
    optional header line (``lefteye_x lefteye_y ...``), then
    ``name x1 y1 x2 y2 ... x5 y5`` per image in the order left eye, right eye,
    nose, left mouth corner, right mouth corner. CelebA's ``left`` is the
    image's left (``lefteye_x < righteye_x``), so the names map one to one
    ([CELEBA_NAMES][dife.eval.readers.CELEBA_NAMES]). ``split`` is a MAFL list (``training.txt`` /
    ``testing.txt``, one image name per line) selecting the images.

    Returns:
        One [FaceSample][dife.eval.readers.FaceSample] per kept image, species ``"human"``, ``id`` = the file name.

    Raises:
        InputError: missing files or a malformed line (the message names it).
    """
    rule = _CropRule(size, margin, min_side, max_outside, drop_inconsistent)
    path = Path(landmarks)
    lines = _read_lines(path, "landmark file")
    wanted = None
    if split is not None:
        wanted = {ln.split()[0] for ln in _read_lines(Path(split), "split list")}
    out: list[FaceSample] = []
    root = Path(image_dir)
    for i, ln in enumerate(lines):
        parts = ln.split()
        if i < 2 and (len(parts) == 1 or not _is_number(parts[-1]) or parts[0].endswith("_x")):
            continue  # count line / header
        if len(parts) != 11:
            raise InputError(f"{path} line {i + 1}: expected 'name' + 10 numbers, got {len(parts)} fields")
        name = parts[0]
        if wanted is not None and name not in wanted:
            continue
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise InputError(f"{path} line {i + 1}: non-numeric landmark in {ln!r}") from None
        kps = {n: (vals[2 * k], vals[2 * k + 1]) for k, n in enumerate(CELEBA_NAMES)}
        s = rule.sample(
            sid=name,
            path=root / name,
            species="human",
            keypoints=kps,
            dataset="mafl",
        )
        if s is not None:
            out.append(s)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------ MTFL
#: MTFL head-pose codes (last column) of profiles: left and right profile.
MTFL_PROFILE_POSES = (1, 5)


def read_mtfl(
    annotations: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    *,
    skip_profiles: bool = True,
    size: int = 256,
    margin: float = 2.5,
    min_side: float = 0.0,
    max_outside: float = 0.3,
    drop_inconsistent: bool = True,
) -> list[FaceSample]:
    """MTFL human faces (Zhang et al., ECCV 2014): the CUHK face alignment photos with 5 landmarks.

    Each line of ``training.txt`` / ``testing.txt`` is the image path relative
    to the MTFL folder (``net_7876\\xxx.jpg``, ``lfw_5590\\xxx.jpg``, ``AFLW\\xxx.jpg``;
    either slash), the x of the 5 points, then their y (left eye, right eye,
    nose, left and right mouth corner, left / right being image sides, as in
    [CELEBA_NAMES][dife.eval.readers.CELEBA_NAMES]), then the gender, smile,
    glasses and head-pose codes.

    Args:
        annotations: The list file.
        image_dir: The MTFL folder the paths are relative to.
        skip_profiles: Skip faces whose head pose is a left or right profile
            ([MTFL_PROFILE_POSES][dife.eval.readers.MTFL_PROFILE_POSES]).
        size: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].
        margin: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].
        min_side: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].
        max_outside: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].
        drop_inconsistent: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].

    Returns:
        One [FaceSample][dife.eval.readers.FaceSample] per kept line, species ``"human"``,
        ``id`` = the image path (``/`` separated).

    Raises:
        InputError: missing file or a malformed line (the message names it).
    """
    rule = _CropRule(size, margin, min_side, max_outside, drop_inconsistent)
    path = Path(annotations)
    root = Path(image_dir)
    out: list[FaceSample] = []
    for i, ln in enumerate(_read_lines(path, "MTFL list")):
        parts = ln.split()
        if len(parts) != 15:
            raise InputError(
                f"{path} line {i + 1}: expected 'path' + 10 coordinates + 4 attribute codes, got {len(parts)} fields"
            )
        try:
            vals = [float(v) for v in parts[1:11]]
            pose = int(float(parts[14]))
        except ValueError:
            raise InputError(f"{path} line {i + 1}: non-numeric landmark or attribute in {ln!r}") from None
        if skip_profiles and pose in MTFL_PROFILE_POSES:
            continue
        rel = parts[0].replace("\\", "/")
        kps = {n: (vals[k], vals[5 + k]) for k, n in enumerate(CELEBA_NAMES)}
        s = rule.sample(sid=rel, path=root / rel, species="human", keypoints=kps, dataset="mtfl")
        if s is not None:
            out.append(s)
    return out


# ------------------------------------------------------------------ WFLW
def read_wflw(
    annotations: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    *,
    size: int = 256,
    margin: float = 2.5,
    min_side: float = 0.0,
    max_outside: float = 0.3,
    drop_inconsistent: bool = True,
) -> list[FaceSample]:
    """WFLW human faces, 98 points reduced to the 9 of [NINE_POINTS][dife.eval.readers.NINE_POINTS].

    Each line of ``list_98pt_rect_attr_{train,test}.txt`` is 196 numbers
    (``x0 y0 ... x97 y97``), the face rectangle (4), six attribute flags and
    the image path relative to ``WFLW_images/``. WFLW indices are image-side;
    [WFLW_TO_NINE][dife.eval.readers.WFLW_TO_NINE] picks the 9 points.

    Returns:
        One [FaceSample][dife.eval.readers.FaceSample] per kept line, species ``"human"``,
        ``id`` = ``"<path>#<line number>"``.

    Raises:
        InputError: missing file or a malformed line.
    """
    rule = _CropRule(size, margin, min_side, max_outside, drop_inconsistent)
    path = Path(annotations)
    root = Path(image_dir)
    out: list[FaceSample] = []
    for i, ln in enumerate(_read_lines(path, "WFLW annotation file")):
        parts = ln.split()
        if len(parts) != 196 + 4 + 6 + 1:
            raise InputError(f"{path} line {i + 1}: expected 207 fields (196 + 4 + 6 + path), got {len(parts)}")
        try:
            pts = np.array([float(v) for v in parts[:196]]).reshape(98, 2)
        except ValueError:
            raise InputError(f"{path} line {i + 1}: non-numeric landmark") from None
        kps = {n: (float(pts[j, 0]), float(pts[j, 1])) for n, j in WFLW_TO_NINE.items()}
        s = rule.sample(
            sid=f"{parts[-1]}#{i + 1}",
            path=root / parts[-1],
            species="human",
            keypoints=kps,
            dataset="wflw",
        )
        if s is not None:
            out.append(s)
    return out


# ------------------------------------------------------------------ AnimalWeb
def _read_pts(path: Path) -> np.ndarray:
    """iBUG ``.pts``: ``version: 1``, ``n_points: N``, ``{``, N lines ``x y``, ``}``."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"\{(.*)\}", text, re.S)
    if m is None:
        raise InputError(f"{path} is not an iBUG .pts file (no '{{ ... }}' block)")
    rows = [ln.split() for ln in m.group(1).splitlines() if ln.strip()]
    try:
        pts = np.array([[float(a), float(b)] for a, b in rows], dtype=np.float64).reshape(-1, 2)
    except ValueError:
        raise InputError(f"{path}: every point line must be 'x y'") from None
    n = re.search(r"n_points\s*:\s*(\d+)", text)
    if n is not None and int(n.group(1)) != len(pts):
        raise InputError(f"{path}: n_points says {n.group(1)} but {len(pts)} points are listed")
    return pts


def _animalweb_species(stem: str) -> str:
    """``"africanelephant_0001"`` -> ``"africanelephant"`` (the part before the last ``_``)."""
    return stem.rsplit("_", 1)[0].lower() if "_" in stem else stem.lower()


def read_animalweb(
    root: str | os.PathLike[str],
    *,
    order: Sequence[str] = NINE_POINTS,
    subject_side: bool = False,
    species_of: Callable[[str], str] = _animalweb_species,
    size: int = 256,
    margin: float = 2.5,
    min_side: float = 0.0,
    max_outside: float = 0.3,
    drop_inconsistent: bool = True,
) -> list[FaceSample]:
    """AnimalWeb faces: images with an iBUG ``.pts`` file of 9 points beside each.

    Args:
        root: Folder searched recursively for images that have a ``.pts``
            file with the same stem.
        order: Names of the 9 points in file order (default [NINE_POINTS][dife.eval.readers.NINE_POINTS]:
            the four eye corners from image-left to image-right, nose tip,
            left / right mouth corner, top / bottom lip centre).
        subject_side: The file's left / right are the animal's own sides
            (swap to image-side); default False (already image-side).
        species_of: Image stem -> species (default: the part before the last ``_``).
        size: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].
        margin: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].
        min_side: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].
        max_outside: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].
        drop_inconsistent: As in [read_coco_keypoints][dife.eval.readers.read_coco_keypoints].

    Returns:
        One [FaceSample][dife.eval.readers.FaceSample] per image, ``id`` = the path relative to ``root``.

    Raises:
        InputError: missing folder or malformed ``.pts``.
    """
    rule = _CropRule(size, margin, min_side, max_outside, drop_inconsistent)
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"AnimalWeb folder not found: {base}")
    names = list(order)
    if subject_side:
        names = [_swap_side(n) for n in names]
    out: list[FaceSample] = []
    for img in sorted(p for p in base.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES):
        pts_file = img.with_suffix(".pts")
        if not pts_file.is_file():
            continue
        pts = _read_pts(pts_file)
        if len(pts) != len(names):
            raise InputError(f"{pts_file}: {len(pts)} points, expected {len(names)} ({', '.join(names)})")
        kps = {n: (float(x), float(y)) for n, (x, y) in zip(names, pts, strict=True) if x >= 0 and y >= 0}
        s = rule.sample(
            sid=str(img.relative_to(base)),
            path=img,
            species=species_of(img.stem),
            keypoints=kps,
            dataset="animalweb",
        )
        if s is not None:
            out.append(s)
    return out


def _swap_side(name: str) -> str:
    if "_left_img" in name:
        return name.replace("_left_img", "_right_img")
    if "_right_img" in name:
        return name.replace("_right_img", "_left_img")
    return name


# ------------------------------------------------------------------ dispatch
#: Format names accepted by [read_dataset][dife.eval.readers.read_dataset].
DATASET_FORMATS: tuple[str, ...] = ("auto", "faces", "ap10k", "animal_pose", "mafl", "mtfl", "wflw", "animalweb")


def read_dataset(path: str | os.PathLike[str], format: str = "auto", **kwargs: Any) -> list[FaceSample]:
    """Read a dataset by format name.

    Args:
        path: ``faces``: the folder. ``ap10k`` / ``animal_pose``: the JSON file
            (images in ``image_dir=`` or beside it, in ``images/`` if that
            exists). ``mafl``: the landmark file (``image_dir=``, ``split=``).
            ``mtfl``: the list file (``image_dir=``: the MTFL folder).
            ``wflw``: the annotation file (``image_dir=``). ``animalweb``: the folder.
        format: One of [DATASET_FORMATS][dife.eval.readers.DATASET_FORMATS]; ``auto`` recognises a folder
            with ``annotations.json`` (faces) or a folder of ``.pts`` files (AnimalWeb).
        **kwargs: Passed to the reader.

    Raises:
        InputError: unknown format, or a path that ``auto`` cannot recognise.
    """
    p = Path(path)
    if format not in DATASET_FORMATS:
        raise InputError(f"unknown dataset format {format!r}; choose one of {', '.join(DATASET_FORMATS)}")
    if format == "auto":
        if p.is_dir() and (p / "annotations.json").is_file():
            format = "faces"
        elif p.is_dir() and any(p.rglob("*.pts")):
            format = "animalweb"
        else:
            raise InputError(
                f"cannot tell the format of {p}: give --format ({', '.join(DATASET_FORMATS[1:])}); "
                "auto recognises a folder with annotations.json or with .pts files"
            )
    readers: dict[str, Callable[..., list[FaceSample]]] = {
        "faces": read_faces_folder,
        "animalweb": read_animalweb,
        "ap10k": read_coco_keypoints,
        "animal_pose": read_coco_keypoints,
        "mafl": read_mafl,
        "mtfl": read_mtfl,
        "wflw": read_wflw,
    }
    reader = readers[format]
    allowed = set(inspect.signature(reader).parameters) - {"root", "annotations", "landmarks"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InputError(f"the {format} reader takes no option(s) {unknown}; it takes {sorted(allowed)}")
    if format in ("faces", "animalweb"):
        return reader(p, **kwargs)
    image_dir = kwargs.pop("image_dir", None)
    if image_dir is None:
        image_dir = p.parent / "images" if (p.parent / "images").is_dir() else p.parent
    if format in ("ap10k", "animal_pose"):
        kwargs.setdefault("dataset", format)
    return reader(p, image_dir, **kwargs)
