"""Keypoint and dense transfer between faces: [transfer_keypoints][dife.transfer.transfer_keypoints], [transfer_dense][dife.transfer.transfer_dense].

This is the numpy / PIL layer over [dife.matching][dife.matching]. A source point is
mapped to the source grid ([dife.coords.CropTransform][dife.coords.CropTransform]), its descriptor
is sampled there (bilinear, re-normalised), its nearest neighbour by cosine
similarity is found in the target embedding, optionally refined to sub-pixel
precision with a windowed soft-argmax, and mapped back to *target image*
pixels. Points follow [dife.coords][dife.coords]: float ``(x, y)`` in the original
image, integers at pixel centres.

Either side may be given as an [Embedding][dife.embedding.Embedding] (from
[embed][dife.embedding.embed]) instead of images, so a face embedded once can
be carried to any number of targets;
[TransferPredictor][dife.transfer.TransferPredictor] holds one source face for
that, in the spirit of segment-anything's predictor.

Confidence of a transferred keypoint::

    confidence = clip(similarity, 0, 1) * (1.0 if mutual else 0.5)

where ``similarity`` is the cosine similarity at the match and ``mutual``
says whether the target point's own nearest neighbour back in the source lies
within 1.5 grid pixels of the source point.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from dife.checks import check_device, check_int, check_positive_int
from dife.config import check_spatial_prior
from dife.coords import CropTransform, check_points_inside
from dife.embedding import Embedding, embed, normalize_boxes
from dife.errors import DIFEError, InputError, ShapeError
from dife.images import load_image, split_images
from dife.matching import _check_window, match, mutual_nearest, sample_descriptors

if TYPE_CHECKING:
    from dife.modeling.dife import DIFE

__all__ = [
    "KeypointScores",
    "DenseCorrespondence",
    "TransferPredictor",
    "transfer_keypoints",
    "transfer_dense",
    "MUTUAL_RADIUS",
]

#: Radius, in source grid pixels, of the mutual nearest-neighbour check.
MUTUAL_RADIUS: float = 1.5


class KeypointScores(NamedTuple):
    """Per-keypoint match quality, shaped like the points without the last dim.

    Arrays are numpy for numpy / list points and torch tensors for torch points.

    Attributes:
        similarity: Cosine similarity of the source descriptor and the target
            pixel it matched, in [-1, 1].
        mutual: True when the match is a mutual nearest neighbour (the target
            pixel matches back to within 1.5 grid pixels of the source point).
            Always False for source points outside the square crop the network
            saw.
        confidence: ``clip(similarity, 0, 1) * (1 if mutual else 0.5)``, in [0, 1].
        src_face: The [Detection][dife.detection.Detection] whose box framed the
            source (``None`` for a given box, ``"image"`` or no face found);
            a list, one per source image, when the sources are a batch.
        tgt_face: The same for the target(s).
    """

    similarity: Any
    mutual: Any
    confidence: Any
    src_face: Any = None
    tgt_face: Any = None


# --------------------------------------------------------------------- helpers
def _resolve_model(model: Any) -> DIFE:
    from dife.modeling.dife import DIFE

    if isinstance(model, DIFE):
        return model
    from dife.defaults import resolve_model

    return resolve_model(model)


def _setup(model: Any, device: Any) -> tuple[DIFE, torch.device]:
    """Resolve the model once and move a copy of it to ``device`` if needed (once per call)."""
    net = _resolve_model(model)
    dev = check_device(device) or net.device
    if dev != net.device and not (dev.type == net.device.type and dev.index is None):
        try:
            net = copy.deepcopy(net).to(dev)
        except (RuntimeError, AssertionError) as e:  # e.g. CUDA not available / not compiled in
            raise InputError(f"cannot run on device {device!r}: {e}") from None
    return net, net.device


def _embed(
    net: DIFE,
    sources: list[Any],
    boxes: list[Any],
    what: str,
    batch_size: int,
    *,
    detector: Any = None,
    points: list[Any] | None = None,
) -> Embedding:
    """Embed ``sources`` (a list), prefixing error messages with ``what``; ``points`` pick the source faces."""
    try:
        if len(sources) == 1:
            return embed(
                sources[0],
                box=boxes[0],
                model=net,
                batch_size=batch_size,
                detector=detector,
                face_points=None if points is None else points[0],
            )
        return embed(sources, box=boxes, model=net, batch_size=batch_size, detector=detector, face_points=points)
    except DIFEError as e:
        raise type(e)(f"{what}: {e}") from None


class _Side:
    """One side of a transfer: images still to embed, or an `Embedding` already computed.

    An `Embedding` of one image counts as one image, of several as a
    batch. Its crops were chosen when it was embedded, so no box may be given
    with it.
    """

    def __init__(self, images: Any, box: Any, what: str) -> None:
        self.what = what
        self.embedding: Embedding | None = None
        if isinstance(images, Embedding):
            if box is not None:
                raise InputError(
                    f"{what}_box must be None when {what} is an Embedding (its crops were chosen when it was embedded)"
                )
            self.embedding = images
            self.count, self.batched = len(images), len(images) > 1
            self.sources: list[Any] = []
            self.boxes: list[Any] = []
        else:
            self.sources, self.batched = split_images(images)
            self.count = len(self.sources)
            self.boxes = normalize_boxes(box, self.count)

    def get(
        self,
        net: DIFE | None,
        start: int,
        stop: int,
        batch_size: int,
        *,
        detector: Any = None,
        points: list[Any] | None = None,
    ) -> Embedding:
        """The embedding of images ``start:stop`` (embedded now unless given; ``points`` pick the faces)."""
        if self.embedding is not None:
            return self.embedding[start:stop]
        assert net is not None
        name = self.what if (start, stop) == (0, self.count) else f"{self.what}[{start}:{stop}]"
        return _embed(
            net, self.sources[start:stop], self.boxes[start:stop], name, batch_size, detector=detector, points=points
        )


def _check_pair(a: Embedding, b: Embedding) -> None:
    if a.dim != b.dim:
        raise ShapeError(
            f"the source embedding has {a.dim} channels but the target's has {b.dim}: "
            "both sides must come from the same model"
        )


def _check_batch_size(batch_size: Any) -> int:
    return check_positive_int(batch_size, "batch_size")


def _check_chunk(chunk_size: Any) -> None:
    check_positive_int(chunk_size, "chunk_size", allow_none=True)


def _check_prior(spatial_prior: Any, net: DIFE | None) -> float:
    """The spatial prior weight to use: the argument, or the model's default (``net`` is given then)."""
    if spatial_prior is None:
        assert net is not None
        return float(getattr(net.config, "spatial_prior", 0.0))
    return check_spatial_prior(spatial_prior, "spatial_prior (or None)")


def _as_points(points: Any) -> np.ndarray:
    if isinstance(points, torch.Tensor):
        if points.is_complex():
            raise InputError(f"points must be real numbers, got dtype {points.dtype}")
        return points.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"points must be an (N, 2) or (B, N, 2) array of (x, y) numbers, got {type(points).__name__}"
        ) from None


def _clip_to_image(pts: np.ndarray, t: CropTransform) -> np.ndarray:
    out = pts.copy()
    out[..., 0] = np.clip(out[..., 0], -0.5, t.width - 0.5)
    out[..., 1] = np.clip(out[..., 1], -0.5, t.height - 0.5)
    return out


def _transfer_one(
    src_feats: torch.Tensor,
    src_t: CropTransform,
    tgt_feats: torch.Tensor,
    tgt_t: CropTransform,
    pts: np.ndarray,
    *,
    refine: bool,
    window: int,
    temperature: float,
    chunk_size: int | None,
    spatial_prior: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 2) source image points -> (target image points, similarity, mutual), all numpy."""
    size = src_feats.shape[-1]
    grid = src_t.to_grid(pts)
    inside = src_t.contains(pts)
    grid = np.clip(grid, 0.0, size - 1.0)  # points outside the crop: nearest border pixel
    g = torch.as_tensor(grid, dtype=src_feats.dtype, device=src_feats.device)
    desc = sample_descriptors(src_feats, g)
    # the prior expects the match at the source point's relative position in the crop
    prior = g * (tgt_feats.shape[-1] / size) if spatial_prior > 0 else None
    tgt_grid, sim, peaks = match(
        desc,
        tgt_feats,
        refine=refine,
        window=window,
        temperature=temperature,
        chunk_size=chunk_size,
        prior_points=prior,
        prior_weight=spatial_prior,
    )
    mutual = mutual_nearest(src_feats, tgt_feats, g, peaks.to(g.dtype), radius_px=MUTUAL_RADIUS, chunk_size=chunk_size)
    out = _clip_to_image(tgt_t.to_image(tgt_grid.detach().to("cpu", torch.float64).numpy()), tgt_t)
    return out, sim.detach().to("cpu", torch.float64).numpy(), mutual.cpu().numpy() & inside


def _restore(arr: np.ndarray, like: Any, *, boolean: bool = False) -> Any:
    """numpy result -> the array type of the input points."""
    if isinstance(like, torch.Tensor):
        if boolean:
            return torch.as_tensor(arr, dtype=torch.bool, device=like.device)
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return torch.as_tensor(arr, dtype=dtype, device=like.device)
    return arr.astype(bool) if boolean else arr.astype(np.float64)


# ----------------------------------------------------------------- keypoints
def transfer_keypoints(
    src: Any,
    tgt: Any,
    points: Any,
    *,
    src_box: Any = None,
    tgt_box: Any = None,
    return_scores: bool = False,
    model: DIFE | str | None = None,
    refine: bool = True,
    window: int = 5,
    temperature: float = 0.02,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    spatial_prior: float | None = None,
    detector: Any = None,
) -> Any:
    """Carry keypoints from source face(s) to target face(s).

    Shapes (``N`` points; a "batch" is a list / tuple of images, a torch
    (B, 3, H, W) tensor or a numpy (B, H, W, 3) array):

    ============================  ===================  ==========================
    ``src``                       ``tgt``              ``points`` -> result
    ============================  ===================  ==========================
    one image                     one image            (N, 2) -> (N, 2)
    one image                     batch of T           (N, 2) -> (T, N, 2), the
                                                       source is embedded once
    batch of B                    batch of B           (B, N, 2) -> (B, N, 2),
                                                       pairwise ``src[b] -> tgt[b]``
    batch of B                    one image            (B, N, 2) -> (B, N, 2),
                                                       every source to that target
    ============================  ===================  ==========================

    A single source image with (1, N, 2) points counts as a batch of one.
    Images are embedded ``batch_size`` at a time, so thousands of targets
    never sit in memory together.

    Either side may be an [Embedding][dife.embedding.Embedding] instead (from
    [embed][dife.embedding.embed], with the same model): one of one image
    counts as one image, one of several images as a batch. A source embedded
    once can so be carried to targets given later without embedding it again
    (see [TransferPredictor][dife.transfer.TransferPredictor]).

    Source points inside the image but outside the square crop the network saw
    (e.g. the sides of a landscape image without a box) are matched with the
    descriptor of the nearest crop border pixel and always get
    ``mutual=False``; pass a face box that covers them for real matches.
    Transferred points are clipped to the target image
    (``-0.5 <= x <= W - 0.5``), since the target crop may extend beyond it.

    Args:
        src: Source image(s), any type [dife.images.load_image][dife.images.load_image] accepts,
            or their [Embedding][dife.embedding.Embedding].
        tgt: Target image(s), or their [Embedding][dife.embedding.Embedding].
        points: (N, 2) or (B, N, 2) ``(x, y)`` pixel coordinates in the
            original source image(s) (numpy, list or torch).
        src_box: Face box ``(x0, y0, x1, y1)`` (edge coordinates) of the
            source, ``"image"`` for the centred square, or ``None`` (default)
            to find the face: the best-scoring detected face whose box holds
            all the source points (see [choose_faces][dife.detection.choose_faces]);
            for a batch, one such value per source image. Must be ``None`` for
            an Embedding (its crop was chosen when it was embedded).
        tgt_box: The same for the target(s); ``None`` takes the best-scoring face.
        return_scores: Also return [KeypointScores][dife.transfer.KeypointScores].
        model: A [DIFE][dife.modeling.dife.DIFE], a model name / path, or ``None``
            (the default model, [dife.defaults.resolve_model][dife.defaults.resolve_model]). Not
            loaded when both sides are Embeddings and ``spatial_prior`` is
            given.
        refine: Refine the nearest neighbour to sub-pixel precision with a
            soft-argmax ([dife.matching.refine_soft_argmax][dife.matching.refine_soft_argmax]).
        window: Odd side of the soft-argmax window, in grid pixels.
        temperature: Soft-argmax temperature (> 0, cosine-similarity units).
        batch_size: Images per forward pass.
        device: Where to run (default: the model's device).
        chunk_size: Queries per chunk of the nearest-neighbour search
            (``None``: automatic, `dife.matching.CPU_CHUNK_BYTES` of
            similarities at a time on the CPU, `dife.matching.CHUNK_BYTES`
            elsewhere).
        spatial_prior: Weight ``λ >= 0`` of a broad spatial prior: a target
            pixel scores ``cos - λ * d**2``, ``d`` the distance between its
            relative position in the target crop and the source point's in
            the source crop, in crop sides (see [dife.matching.match][dife.matching.match]).
            ``None`` uses the model's ``config.spatial_prior`` (0 for the
            paper's models; see the model card of the default model); ``0``
            is pure appearance matching. Scores report the cosine similarity
            without the prior.
        detector: Face finder for images without a box (``None``: the
            shipped ``dife-face-finder``; see [detect_faces][dife.detection.detect_faces]).

    Returns:
        The transferred points, shaped as in the table, in target image pixel
        coordinates: a float64 numpy array for numpy / list points, a torch
        tensor (the points' float dtype, or float32, on their device) for
        torch points. With ``return_scores=True``, ``(points, scores)`` with
        ``scores`` a [KeypointScores][dife.transfer.KeypointScores] of arrays shaped like the points
        without the last dimension, and the faces used (``src_face``, ``tgt_face``).

    Raises:
        ShapeError: points not (N, 2) / (B, N, 2), or image / point counts
            that do not fit together (the message names the shapes).
        KeypointError: non-finite points or points outside their source image.
        ImageError, InputError: unreadable images, bad boxes or options.
    """
    _check_window(window, temperature)
    _check_chunk(chunk_size)
    batch_size = _check_batch_size(batch_size)
    pts = _as_points(points)
    if pts.ndim not in (2, 3) or pts.shape[-1] != 2:
        raise ShapeError(f"points must have shape (N, 2) or (B, N, 2) as (x, y) pairs, got {pts.shape}")
    src_side = _Side(src, src_box, "src")
    tgt_side = _Side(tgt, tgt_box, "tgt")
    src_batched, tgt_batched = src_side.batched, tgt_side.batched
    B, T = src_side.count, tgt_side.count
    if pts.ndim == 2:
        if B != 1:
            raise ShapeError(
                f"points of shape {pts.shape} (N, 2) go with one source image, but {B} source images were given; "
                f"pass (B, N, 2) = ({B}, {pts.shape[0]}, 2) points, one set per source"
            )
        pairs = [(0, t) for t in range(T)]
        out_shape: tuple[int, ...] = (T, pts.shape[0]) if tgt_batched else (pts.shape[0],)
        sets = [pts]
    else:
        if pts.shape[0] != B:
            kind = f"a batch of {B} source images" if src_batched else "one source image"
            raise ShapeError(
                f"points of shape {pts.shape} (B, N, 2) need B source images, but got {kind}"
                + ("" if src_batched else "; use (N, 2) points for a single source")
            )
        if T not in (1, B):
            raise ShapeError(
                f"points of shape {pts.shape} with {B} source images need {B} target images (pairwise) "
                f"or a single target, got {T} targets"
            )
        pairs = [(b, b if T == B else 0) for b in range(B)]
        out_shape = (B, pts.shape[1])
        sets = list(pts)

    need_net = spatial_prior is None or src_side.embedding is None or tgt_side.embedding is None
    net = _setup(model, device)[0] if need_net else None
    prior = _check_prior(spatial_prior, net)
    P, N = len(pairs), pts.shape[-2]
    res = np.zeros((P, N, 2))
    sim = np.zeros((P, N))
    mut = np.zeros((P, N), dtype=bool)
    opts = dict(refine=bool(refine), window=window, temperature=temperature, chunk_size=chunk_size, spatial_prior=prior)

    def validate(b: int, t: CropTransform) -> None:
        sets[b] = check_points_inside(sets[b], t.width, t.height, what=f"points[{b}]" if pts.ndim == 3 else "points")

    def run(p: int, src_emb: Embedding, i: int, tgt_emb: Embedding, j: int) -> None:
        _check_pair(src_emb, tgt_emb)
        res[p], sim[p], mut[p] = _transfer_one(
            src_emb.features[i],
            src_emb.transforms[i],
            tgt_emb.features[j],
            tgt_emb.transforms[j],
            sets[pairs[p][0]],
            **opts,
        )

    src_faces: list[Any] = [None] * B
    tgt_faces: list[Any] = [None] * T
    emb_opts = dict(detector=detector)

    def src_points(s: int, e: int) -> list[Any]:
        return [sets[b] for b in range(s, e)]

    with torch.no_grad():
        if B == 1:  # one source, embedded once; targets in chunks
            src_emb = src_side.get(net, 0, 1, batch_size, points=src_points(0, 1), **emb_opts)
            src_faces[0] = src_emb.faces[0]
            validate(0, src_emb.transforms[0])
            for s in range(0, T, batch_size):
                e = min(s + batch_size, T)
                tgt_emb = tgt_side.get(net, s, e, batch_size, **emb_opts)
                tgt_faces[s:e] = tgt_emb.faces
                for k in range(e - s):
                    run(s + k, src_emb, 0, tgt_emb, k)
        elif T == 1:  # many sources to one target, embedded once
            tgt_emb = tgt_side.get(net, 0, 1, batch_size, **emb_opts)
            tgt_faces[0] = tgt_emb.faces[0]
            for s in range(0, B, batch_size):
                e = min(s + batch_size, B)
                src_emb = src_side.get(net, s, e, batch_size, points=src_points(s, e), **emb_opts)
                src_faces[s:e] = src_emb.faces
                for k in range(e - s):
                    validate(s + k, src_emb.transforms[k])
                    run(s + k, src_emb, k, tgt_emb, 0)
        else:  # pairwise, both sides in chunks
            for s in range(0, B, batch_size):
                e = min(s + batch_size, B)
                src_emb = src_side.get(net, s, e, batch_size, points=src_points(s, e), **emb_opts)
                src_faces[s:e] = src_emb.faces
                for k in range(e - s):
                    validate(s + k, src_emb.transforms[k])
                tgt_emb = tgt_side.get(net, s, e, batch_size, **emb_opts)
                tgt_faces[s:e] = tgt_emb.faces
                for k in range(e - s):
                    run(s + k, src_emb, k, tgt_emb, k)

    conf = np.clip(sim, 0.0, 1.0) * np.where(mut, 1.0, 0.5)
    result = _restore(res.reshape(*out_shape, 2), points)
    if not return_scores:
        return result
    scores = KeypointScores(
        similarity=_restore(sim.reshape(out_shape), points),
        mutual=_restore(mut.reshape(out_shape), points, boolean=True),
        confidence=_restore(conf.reshape(out_shape), points),
        src_face=src_faces if src_batched else src_faces[0],
        tgt_face=tgt_faces if tgt_batched else tgt_faces[0],
    )
    return result, scores


# --------------------------------------------------------------------- dense
@dataclass
class DenseCorrespondence:
    """Dense source -> target correspondence on the network grid.

    Attributes:
        src_points: (M, 2) float64 ``(x, y)`` source image pixels: the centres
            of every ``stride``-th grid pixel of the source crop, row-major.
        tgt_points: (M, 2) float64 target image pixels they match (clipped to
            the target image).
        similarity: (M,) float64 cosine similarity at the match, in [-1, 1].
        mutual: (M,) bool mutual nearest-neighbour flags (False for source grid
            pixels whose centre lies outside the source image).
        grid_shape: ``(h, w)``: rows and columns of source grid points
            (``M = h * w``).
        src_transform: Crop of the source image.
        tgt_transform: Crop of the target image.
        inverse_field: (S, S, 2) float64 source image ``(x, y)`` matched by
            every target grid pixel (target -> source nearest neighbours, the
            backward map used by [warp][dife.transfer.DenseCorrespondence.warp]).
        src_face: The detection that framed the source (``None`` for a given box).
        tgt_face: The detection that framed the target.
    """

    src_points: np.ndarray
    tgt_points: np.ndarray
    similarity: np.ndarray
    mutual: np.ndarray
    grid_shape: tuple[int, int]
    src_transform: CropTransform
    tgt_transform: CropTransform
    inverse_field: np.ndarray = dataclass_field(repr=False)
    src_face: Any = None
    tgt_face: Any = None

    def __len__(self) -> int:
        return int(self.src_points.shape[0])

    @property
    def field(self) -> np.ndarray:
        """(h, w, 2) target image ``(x, y)`` of each source grid point."""
        h, w = self.grid_shape
        return self.tgt_points.reshape(h, w, 2)

    def warp(self, src_image: Any, *, output_size: Sequence[int] | None = None) -> np.ndarray:
        """Warp the source image onto the target image's frame.

        Backward warp: each target pixel looks up the source position its
        nearest neighbour points to ([inverse_field][dife.transfer.DenseCorrespondence.inverse_field], computed at grid
        resolution and bilinearly upsampled) and takes the bilinearly sampled
        source colour there. Target pixels outside the target crop, or
        mapping outside the source image, are black.

        Args:
            src_image: The source image used for the correspondence (any type
                [dife.images.load_image][dife.images.load_image] accepts), same size as the source.
            output_size: ``(width, height)`` of the result; default the
                target image size. The whole target image is resampled to it.

        Returns:
            (height, width, 3) uint8 numpy array.

        Raises:
            ShapeError: an image of a different size than the source.
            InputError: a bad ``output_size``.
        """
        from dife.images import to_uint8

        img = load_image(src_image, what="src_image")
        st, tt = self.src_transform, self.tgt_transform
        if (img.shape[2], img.shape[1]) != (st.width, st.height):
            raise ShapeError(
                f"src_image is {img.shape[2]}x{img.shape[1]} but the correspondence was computed for a "
                f"{st.width}x{st.height} source image"
            )
        if output_size is None:
            out_w, out_h = tt.width, tt.height
        else:
            try:
                out_w, out_h = (int(v) for v in output_size)
                ok = all(float(v) == int(v) for v in output_size)
            except (TypeError, ValueError):
                ok = False
            if not ok or out_w < 1 or out_h < 1:
                raise InputError(f"output_size must be (width, height) positive integers, got {output_size!r}")
        # target image coordinates of the output pixel centres
        xs = (torch.arange(out_w, dtype=torch.float64) + 0.5) * (tt.width / out_w) - 0.5
        ys = (torch.arange(out_h, dtype=torch.float64) + 0.5) * (tt.height / out_h) - 0.5
        tgt_pts = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)  # (h, w, 2)
        g = tt.to_grid(tgt_pts)
        S = tt.size
        inside = ((g >= -0.5) & (g <= S - 0.5)).all(dim=-1)
        inv = torch.as_tensor(self.inverse_field, dtype=torch.float64).permute(2, 0, 1)[None]  # (1, 2, S, S)
        norm = (g + 0.5) * (2.0 / S) - 1.0
        src_xy = F.grid_sample(inv, norm[None], mode="bilinear", padding_mode="border", align_corners=False)[0]
        size = torch.tensor([st.width, st.height], dtype=torch.float64).view(2, 1, 1)
        src_norm = ((src_xy + 0.5) * (2.0 / size) - 1.0).permute(1, 2, 0)  # (h, w, 2)
        out = F.grid_sample(
            img[None], src_norm[None].float(), mode="bilinear", padding_mode="zeros", align_corners=False
        )[0]
        out = out * inside[None].to(out.dtype)
        return to_uint8(out)


def transfer_dense(
    src: Any,
    tgt: Any,
    *,
    src_box: Any = None,
    tgt_box: Any = None,
    model: DIFE | str | None = None,
    stride: int = 1,
    refine: bool = False,
    window: int = 5,
    temperature: float = 0.02,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    detector: Any = None,
) -> DenseCorrespondence:
    """Dense keypoint transfer: where every source grid pixel lands in the target.

    The source points are the centres of every ``stride``-th pixel of the
    ``S x S`` source grid (``S`` = the model's input size, 96), mapped to
    source image pixels. Each is matched by nearest neighbour (cosine
    similarity) in the target embedding, as in [transfer_keypoints][dife.transfer.transfer_keypoints].
    The backward map (every target grid pixel -> its nearest source position)
    is computed too, for [DenseCorrespondence.warp][dife.transfer.DenseCorrespondence.warp].

    Args:
        src: One source image (any type [dife.images.load_image][dife.images.load_image] accepts),
            or its [Embedding][dife.embedding.Embedding] (of one image).
        tgt: One target image, or its Embedding.
        src_box: Face box ``(x0, y0, x1, y1)`` of the source, ``"image"``
            (centred square), or ``None`` to find the face (the best-scoring
            one); must be ``None`` for an Embedding.
        tgt_box: The same for the target.
        model: A [DIFE][dife.modeling.dife.DIFE], a model name / path, or ``None``
            (the default model); not loaded when both sides are Embeddings.
        stride: Take every ``stride``-th grid pixel along each axis (>= 1).
        refine: Soft-argmax sub-pixel refinement (both directions).
        window: Odd soft-argmax window side.
        temperature: Soft-argmax temperature (> 0).
        device: Where to run (default: the model's device).
        chunk_size: Queries per chunk of the nearest-neighbour search
            (``None``: automatic, see `dife.matching.match`).
        detector: Face finder for images without a box (``None``: the shipped one).

    Returns:
        A [DenseCorrespondence][dife.transfer.DenseCorrespondence] with ``M = ceil(S / stride) ** 2`` points.

    Raises:
        InputError: more than one source or target image, bad options or boxes.
        ImageError, ShapeError: unreadable images.
    """
    _check_window(window, temperature)
    _check_chunk(chunk_size)
    src_side = _Side(src, src_box, "src")
    tgt_side = _Side(tgt, tgt_box, "tgt")
    if src_side.count != 1 or tgt_side.count != 1:
        raise InputError(
            f"transfer_dense takes one source and one target image, got {src_side.count} and {tgt_side.count}"
        )
    need_net = src_side.embedding is None or tgt_side.embedding is None
    net = _setup(model, device)[0] if need_net else None
    stride = check_int(stride, "stride", minimum=1, maximum=int(net.config.input_size) if net is not None else None)
    with torch.no_grad():
        se = src_side.get(net, 0, 1, 1, detector=detector)
        te = tgt_side.get(net, 0, 1, 1, detector=detector)
        _check_pair(se, te)
        sf, tf = se.features[0], te.features[0].to(se.device)
        st, tt = se.transforms[0], te.transforms[0]
        S = sf.shape[-1]
        if stride > S:
            raise InputError(f"stride must be an integer in 1..{S}, got {stride!r}")
        idx = torch.arange(0, S, stride, device=sf.device)
        h = w = int(idx.numel())
        gy, gx = torch.meshgrid(idx, idx, indexing="ij")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # (M, 2) long (x, y)
        desc = sf[:, gy, gx].reshape(sf.shape[0], -1).t()  # (M, C), already unit norm
        opts = dict(refine=bool(refine), window=window, temperature=temperature, chunk_size=chunk_size)
        tgt_grid, sim, peaks = match(desc, tf, **opts)
        # backward map: every target grid pixel -> source grid
        tdesc = tf.reshape(tf.shape[0], -1).t()
        inv_grid, _, inv_peaks = match(tdesc, sf, **opts)
        # mutual check from the backward map: the target pixel each source point matched, matched back
        # (what dife.matching.mutual_nearest computes, without searching the source a second time)
        back = inv_peaks[peaks[:, 1] * tf.shape[-1] + peaks[:, 0]]
        d = (back - grid).to(torch.float64)
        mutual = (d * d).sum(dim=1) <= MUTUAL_RADIUS**2

    src_points = st.to_image(grid.cpu().numpy().astype(np.float64))
    src_inside = (
        (src_points[:, 0] >= -0.5)
        & (src_points[:, 0] <= st.width - 0.5)
        & (src_points[:, 1] >= -0.5)
        & (src_points[:, 1] <= st.height - 0.5)
    )
    tgt_points = _clip_to_image(tt.to_image(tgt_grid.cpu().numpy().astype(np.float64)), tt)
    inverse = st.to_image(inv_grid.cpu().numpy().astype(np.float64)).reshape(tf.shape[-2], tf.shape[-1], 2)
    return DenseCorrespondence(
        src_points=src_points,
        tgt_points=tgt_points,
        similarity=sim.cpu().numpy().astype(np.float64),
        mutual=mutual.cpu().numpy() & src_inside,
        grid_shape=(h, w),
        src_transform=st,
        tgt_transform=tt,
        inverse_field=inverse,
        src_face=se.faces[0],
        tgt_face=te.faces[0],
    )


# ----------------------------------------------------------------- predictor
class TransferPredictor:
    """One source face, embedded once, carried to any number of targets.

    In the spirit of segment-anything's ``SamPredictor``: resolve the model
    once, [set_source][dife.transfer.TransferPredictor.set_source] embeds the
    labelled face, and every later call only embeds its targets::

        predictor = dife.TransferPredictor()          # the default model and face finder
        predictor.set_source("human.jpg", points=landmarks)   # the face that holds the landmarks
        for path in cat_photos:
            pts = predictor.transfer_keypoints(path, landmarks)

    The results are those of [transfer_keypoints][dife.transfer.transfer_keypoints]
    and [transfer_dense][dife.transfer.transfer_dense] called with the same
    source, model and options.

    Args:
        model: A [DIFE][dife.modeling.dife.DIFE], a model name / path, or
            ``None`` (the default model).
        device: Where to run (default: the model's device; a copy of the
            model is moved there if it lives elsewhere).
        detector: Face finder for images without a box (``None``: the
            shipped ``dife-face-finder``).
    """

    def __init__(
        self, model: DIFE | str | None = None, *, device: str | torch.device | None = None, detector: Any = None
    ) -> None:
        self.model, self.device = _setup(model, device)
        self.detector = detector
        self._source: Embedding | None = None

    def set_source(self, image: Any, *, box: Any = None, points: Any = None) -> Embedding:
        """Embed the source face (replacing any earlier one).

        Args:
            image: One image (any type [dife.images.load_image][dife.images.load_image]
                accepts), or an [Embedding][dife.embedding.Embedding] of one
                image made with this predictor's model (then ``box`` must be
                ``None``).
            box: Face box ``(x0, y0, x1, y1)`` in edge coordinates,
                ``"image"`` (centred square), or ``None`` to find the face.
            points: With ``box=None``: the (N, 2) keypoints that will be
                carried; the face found is the best one holding them (without
                them, the best-scoring face).

        Returns:
            The source's embedding (also [source][dife.transfer.TransferPredictor.source]);
            its ``faces[0]`` is the detection used.

        Raises:
            InputError: more than one image, or a box with an Embedding.
            ImageError, ShapeError: an unreadable image.
        """
        side = _Side(image, box, "src")
        if side.count != 1:
            raise InputError(f"set_source takes one image, got {side.count}")
        pts = None if points is None else [_as_points(points).reshape(-1, 2)]
        with torch.no_grad():
            emb = side.get(self.model, 0, 1, 1, detector=self.detector, points=pts)
        if emb.dim != int(self.model.config.embed_dim):
            raise ShapeError(
                f"the source embedding has {emb.dim} channels but the model's embedding has "
                f"{int(self.model.config.embed_dim)}"
            )
        self._source = emb.to(self.device)
        return self._source

    @property
    def source(self) -> Embedding:
        """The source's embedding (one image).

        Raises:
            InputError: before [set_source][dife.transfer.TransferPredictor.set_source].
        """
        if self._source is None:
            raise InputError("no source face yet: call set_source(image, box=...) first")
        return self._source

    def embed(self, images: Any, *, box: Any = None, batch_size: int = 32) -> Embedding:
        """[embed][dife.embedding.embed] with this predictor's model and device (e.g. targets used twice)."""
        return embed(
            images, box=box, model=self.model, batch_size=batch_size, device=self.device, detector=self.detector
        )

    def transfer_keypoints(self, tgt: Any, points: Any, *, tgt_box: Any = None, **options: Any) -> Any:
        """Carry source keypoints to target face(s).

        Args:
            tgt: One target image, a batch of them (results gain a leading
                ``T`` dimension), or their [Embedding][dife.embedding.Embedding].
            points: (N, 2) ``(x, y)`` pixel coordinates in the source image.
            tgt_box: Face box of the target, or one box / ``None`` per target.
            **options: Any other keyword of
                [transfer_keypoints][dife.transfer.transfer_keypoints]
                (``return_scores``, ``refine``, ``window``, ``temperature``,
                ``batch_size``, ``chunk_size``, ``spatial_prior``).

        Returns:
            What [transfer_keypoints][dife.transfer.transfer_keypoints] returns.
        """
        for key in ("src_box", "model", "device"):
            if key in options:
                raise InputError(f"{key} is fixed by the predictor; pass it to TransferPredictor / set_source")
        options.setdefault("detector", self.detector)
        return transfer_keypoints(self.source, tgt, points, tgt_box=tgt_box, model=self.model, **options)

    def transfer_dense(self, tgt: Any, *, tgt_box: Any = None, **options: Any) -> DenseCorrespondence:
        """Dense transfer from the source to one target.

        Args:
            tgt: One target image, or its [Embedding][dife.embedding.Embedding].
            tgt_box: Face box of the target, or ``None``.
            **options: Any other keyword of
                [transfer_dense][dife.transfer.transfer_dense] (``stride``,
                ``refine``, ``window``, ``temperature``, ``chunk_size``).

        Returns:
            A [DenseCorrespondence][dife.transfer.DenseCorrespondence].
        """
        for key in ("src_box", "model", "device"):
            if key in options:
                raise InputError(f"{key} is fixed by the predictor; pass it to TransferPredictor / set_source")
        options.setdefault("detector", self.detector)
        return transfer_dense(self.source, tgt, tgt_box=tgt_box, model=self.model, **options)
