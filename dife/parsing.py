"""Unsupervised face parsing: k-means on dense embeddings.

Because DIFE embeds every species into one space, clustering the per-pixel
descriptors of several faces *jointly* gives parts that agree across species:
the cluster that covers a human's eyes also covers a cat's. [kmeans][dife.parsing.kmeans] is
a small, deterministic torch k-means (k-means++ seeding from a seeded
``torch.Generator``, optional spherical / cosine variant for unit-norm
descriptors, chunked distances, empty-cluster re-seeding); [FaceParser][dife.parsing.FaceParser]
fits it on embeddings and predicts label maps at the original image
resolution; [parse_face][dife.parsing.parse_face] does both in one call.

Part ``0`` is the part whose fitting pixels lie highest in the face crop
(smallest mean grid ``y``, then ``x``), so labels do not depend on the order
in which k-means happened to find the clusters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from dife._io import atomic_write
from dife.checks import check_int, check_number
from dife.coords import grid_to_normalized
from dife.errors import CheckpointError, InputError, ModelNotFoundError, ShapeError

if TYPE_CHECKING:
    from dife.embedding import Embedding
    from dife.modeling.dife import DIFE

__all__ = ["kmeans", "FaceParser", "parse_face"]

_FORMAT = "dife.FaceParser"
_FORMAT_VERSION = "1"


# ---------------------------------------------------------------------- k-means
def _check_int(value: Any, name: str, minimum: int) -> int:
    return check_int(value, name, minimum=minimum)


def _as_matrix(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x must be an (N, D) torch tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"x must be a non-empty (N, D) matrix, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise InputError(f"x must be real-valued, got dtype {x.dtype}")
    x = x.detach()
    x = x.float() if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16) else x
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or infinite values")
    return x


def _nearest(x: torch.Tensor, c: torch.Tensor, cosine: bool, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every row -> (labels (N,) int64, distance (N,)).

    Cosine: distance ``1 - <x, c>`` (rows unit norm). Euclidean: squared distance.
    """
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=x.dtype, device=x.device)
    c_sq = (c * c).sum(1)
    for s in range(0, n, chunk):
        xs = x[s : s + chunk]
        dots = xs @ c.T
        if cosine:
            best, idx = dots.max(dim=1)
            d = (1.0 - best).clamp_min_(0.0)
        else:
            d2 = ((xs * xs).sum(1, keepdim=True) - 2.0 * dots + c_sq[None]).clamp_min_(0.0)
            d, idx = d2.min(dim=1)
        labels[s : s + chunk] = idx
        dist[s : s + chunk] = d
    return labels, dist


def _dist_to(x: torch.Tensor, c: torch.Tensor, cosine: bool, chunk: int) -> torch.Tensor:
    """Distance of every row to one centroid (D, ) -> (N,)."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk):
        xs = x[s : s + chunk]
        if cosine:
            out[s : s + chunk] = (1.0 - xs @ c).clamp_min_(0.0)
        else:
            out[s : s + chunk] = ((xs - c) ** 2).sum(1)
    return out


def _kmeans_pp(x: torch.Tensor, k: int, g: torch.Generator, cosine: bool, chunk: int) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling) driven by the CPU generator ``g``."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=g))
    idx = [first]
    dmin = _dist_to(x, x[first], cosine, chunk)
    for _ in range(1, k):
        # Cosine distance 1 - cos is half the squared chord distance: already "D^2".
        w = dmin.double().cpu()
        w[idx] = 0.0
        if float(w.sum()) <= 0.0:  # every point coincides with a chosen one
            w = torch.ones(n, dtype=torch.float64)
            w[idx] = 0.0
        j = int(torch.multinomial(w, 1, generator=g))
        idx.append(j)
        dmin = torch.minimum(dmin, _dist_to(x, x[j], cosine, chunk))
    return x[idx].clone()


def _update(x: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor, c: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Mean step; empty clusters are re-seeded on the points farthest from their centroid."""
    k, d = c.shape
    sums = torch.zeros(k, d, dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k)
    new = c.clone()
    full = counts > 0
    new[full] = sums[full] / counts[full, None].to(x.dtype)
    empty = torch.nonzero(~full).flatten()
    if empty.numel():
        far = torch.topk(dist, int(empty.numel()), largest=True, sorted=True).indices
        new[empty] = x[far]
    if cosine:
        norm = new.norm(dim=1, keepdim=True)
        ok = norm[:, 0] > 1e-12
        new[ok] = new[ok] / norm[ok]
        new[~ok] = c[~ok]
    return new


def kmeans(
    x: torch.Tensor | np.ndarray,
    k: int,
    *,
    n_iter: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
    n_init: int = 1,
    cosine: bool = True,
    chunk_size: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of ``x`` with Lloyd's k-means and k-means++ seeding.

    Deterministic for a given ``seed`` on the CPU: all random choices come
    from a ``torch.Generator`` seeded with ``seed`` (on CUDA the mean
    step's ``index_add_`` may differ in the last bits).

    Args:
        x: (N, D) float data (torch or numpy).
        k: Number of clusters, 1 <= k <= N.
        n_iter: Maximum Lloyd iterations per run (>= 1).
        tol: Stop when no centroid moves by more than ``tol`` (L2).
        seed: Seed of the k-means++ sampling.
        n_init: Independent runs (consecutive draws of the same generator);
            the one with the lowest total distance is kept.
        cosine: Spherical k-means: rows are L2-normalised, points go to the
            centroid of highest cosine similarity and centroids are
            re-normalised means (right for DIFE's unit descriptors). Otherwise
            plain squared-Euclidean k-means.
        chunk_size: Rows per distance block (bounds memory to chunk x k).

    Returns:
        ``(centroids, labels)``: (k, D) float centroids (unit norm when
        ``cosine``) on ``x``'s device and (N,) int64 labels in [0, k).

    Raises:
        InputError: ``k`` < 1 or > N, bad ``n_iter`` / ``n_init`` / ``tol``,
            non-finite data.
        ShapeError: ``x`` not a non-empty (N, D) matrix.
    """
    x = _as_matrix(x)
    n = int(x.shape[0])
    k = check_int(k, "k", minimum=1, maximum=n, what=f"an integer with 1 <= k <= N = {n} (number of points)")
    n_iter = _check_int(n_iter, "n_iter", 1)
    n_init = _check_int(n_init, "n_init", 1)
    chunk = _check_int(chunk_size, "chunk_size", 1)
    seed = _check_int(seed, "seed", 0)
    check_number(tol, "tol", minimum=0, what="a number >= 0")
    if cosine:
        x = F.normalize(x, dim=1)
    g = torch.Generator(device="cpu").manual_seed(seed)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for _ in range(n_init):
        c = _kmeans_pp(x, k, g, cosine, chunk)
        for _ in range(n_iter):
            labels, dist = _nearest(x, c, cosine, chunk)
            new = _update(x, labels, dist, c, cosine)
            shift = float((new - c).norm(dim=1).max())
            c = new
            if shift <= tol:
                break
        labels, dist = _nearest(x, c, cosine, chunk)
        inertia = float(dist.double().sum())
        if best is None or inertia < best[0]:
            best = (inertia, c, labels)
    assert best is not None
    return best[1], best[2]


# ------------------------------------------------------------------- parser
def _model_name(model: Any) -> str | None:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    cfg = getattr(model, "config", None)
    extra = getattr(cfg, "extra", None)
    if isinstance(extra, dict) and isinstance(extra.get("name"), str):
        return extra["name"]
    return None


def _is_embedding(x: Any) -> bool:
    from dife.embedding import Embedding

    return isinstance(x, Embedding)


class FaceParser:
    """Face parts by k-means on DIFE embeddings, fitted on a few faces.

    Fit on faces of several species at once so that the parts agree across
    species, then predict label maps for any face.

    Args:
        n_parts: Number of parts (k-means clusters), >= 1.
        model: A [DIFE][dife.modeling.dife.DIFE], a model name / path, or
            ``None`` for the default model.
        seed: Seed of the k-means++ initialisation and of the pixel subsampling.
        max_pixels_per_image: At most this many grid pixels per image (chosen
            at random among those inside the image) enter the clustering.
        n_iter: Maximum k-means iterations.
        n_init: k-means restarts (the best one is kept).

    Attributes:
        centroids: (n_parts, C) unit-norm part descriptors after [fit][dife.parsing.FaceParser.fit]
            (``None`` before).
        part_centers: (n_parts, 2) mean ``(x, y)`` position of each part's
            fitting pixels, in crop coordinates scaled to [0, 1]; parts are
            sorted by ``y`` then ``x``.

    Example:
        >>> parser = FaceParser(6).fit(["human.jpg", "cat.jpg"])  # doctest: +SKIP
        >>> labels = parser.predict("dog.jpg")  # (H, W) int32, -1 outside the crop  # doctest: +SKIP
    """

    def __init__(
        self,
        n_parts: int = 8,
        *,
        model: DIFE | str | None = None,
        seed: int = 0,
        max_pixels_per_image: int = 2048,
        n_iter: int = 50,
        n_init: int = 3,
    ) -> None:
        self.n_parts = _check_int(n_parts, "n_parts", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.max_pixels_per_image = _check_int(max_pixels_per_image, "max_pixels_per_image", 1)
        self.n_iter = _check_int(n_iter, "n_iter", 1)
        self.n_init = _check_int(n_init, "n_init", 1)
        self.model = model
        self.model_name: str | None = _model_name(model)
        self.centroids: torch.Tensor | None = None
        self.part_centers: torch.Tensor | None = None

    def __repr__(self) -> str:
        state = f"fitted, embed_dim={self.embed_dim}" if self.is_fitted else "not fitted"
        return f"FaceParser(n_parts={self.n_parts}, seed={self.seed}, {state})"

    @property
    def is_fitted(self) -> bool:
        """Whether [fit][dife.parsing.FaceParser.fit] (or [load][dife.parsing.FaceParser.load]) has set the centroids."""
        return self.centroids is not None

    @property
    def embed_dim(self) -> int | None:
        """Descriptor dimension of the centroids (``None`` before fitting)."""
        return None if self.centroids is None else int(self.centroids.shape[1])

    # -- embedding
    def _embed(self, images: Any, box: Any) -> tuple[Embedding, bool]:
        if _is_embedding(images):
            if box is not None:
                raise InputError("box cannot be combined with a precomputed Embedding (its crops are fixed)")
            return images, True
        from dife.embedding import embed
        from dife.images import split_images

        _, batched = split_images(images)
        return embed(images, box=box, model=self.model), batched

    # -- fit
    def _fit_embedding(self, emb: Embedding) -> None:
        feats = emb.features.detach()
        B, C, S, _ = feats.shape
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        j = torch.arange(S, dtype=torch.float64)
        rows, pos = [], []
        for i, t in enumerate(emb.transforms):
            # Grid pixels whose centre falls inside the image (not the black padding).
            xy = t.to_image(torch.stack(torch.broadcast_tensors(j[None, :], j[:, None]), -1).reshape(-1, 2))
            inside = (
                (xy[:, 0] >= -0.5) & (xy[:, 0] <= t.width - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= t.height - 0.5)
            )
            idx = torch.nonzero(inside).flatten()
            if idx.numel() > self.max_pixels_per_image:
                pick = torch.randperm(idx.numel(), generator=g)[: self.max_pixels_per_image]
                idx = idx[pick.sort().values]
            f = feats[i].reshape(C, -1)[:, idx.to(feats.device)].T
            rows.append(f)
            pos.append(torch.stack([(idx % S).double(), (idx // S).double()], -1) / max(S - 1, 1))
        x = torch.cat(rows)
        p = torch.cat(pos)
        if x.shape[0] < self.n_parts:
            raise InputError(
                f"only {x.shape[0]} pixels to cluster into n_parts = {self.n_parts} parts; "
                "give more images or raise max_pixels_per_image"
            )
        centroids, labels = kmeans(x, self.n_parts, n_iter=self.n_iter, seed=self.seed, n_init=self.n_init)
        labels = labels.cpu()
        centers = torch.full((self.n_parts, 2), float("inf"), dtype=torch.float64)
        for c in range(self.n_parts):
            m = labels == c
            if bool(m.any()):
                centers[c] = p[m].mean(0)
        order = sorted(range(self.n_parts), key=lambda c: (float(centers[c, 1]), float(centers[c, 0]), c))
        self.centroids = centroids[order].float().cpu().contiguous()
        self.part_centers = centers[order].float().contiguous()

    def fit(self, images: Any, *, box: Any = None) -> FaceParser:
        """Fit the parts on one or more faces (jointly).

        Args:
            images: One image or a list of images (any type
                [dife.embed][dife.embedding.embed] accepts), or a precomputed
                [Embedding][dife.embedding.Embedding].
            box: Face box(es) ``(x0, y0, x1, y1)`` in edge coordinates, as in
                [dife.embed][dife.embedding.embed].

        Returns:
            ``self``, fitted.

        Raises:
            InputError: fewer usable pixels than parts; errors of [dife.embed][dife.embedding.embed].
        """
        emb, _ = self._embed(images, box)
        self._fit_embedding(emb)
        return self

    # -- predict
    def _check_fitted(self, emb: Embedding) -> torch.Tensor:
        if self.centroids is None:
            raise InputError("this FaceParser is not fitted yet: call fit() (or FaceParser.load()) first")
        if emb.features.shape[1] != self.centroids.shape[1]:
            raise InputError(
                f"the embedding has {emb.features.shape[1]}-d descriptors but the parser was fitted on "
                f"{self.centroids.shape[1]}-d ones (use the model it was fitted with)"
            )
        return self.centroids.to(emb.features.device, emb.features.dtype)

    def _predict_embedding(self, emb: Embedding) -> list[np.ndarray]:
        cent = self._check_fitted(emb)
        out = []
        for i, t in enumerate(emb.transforms):
            f = emb.features[i].detach()
            S = int(f.shape[-1])
            sims = torch.einsum("chw,kc->khw", f, cent)[None]  # (1, k, S, S)
            W, H = int(t.width), int(t.height)
            xs = torch.arange(W, dtype=torch.float64)
            ys = torch.arange(H, dtype=torch.float64)
            gx = t.to_grid(torch.stack([xs, torch.zeros_like(xs)], -1))[:, 0]
            gy = t.to_grid(torch.stack([torch.zeros_like(ys), ys], -1))[:, 1]
            in_x = (gx >= -0.5) & (gx <= S - 0.5)
            in_y = (gy >= -0.5) & (gy <= S - 0.5)
            nx = grid_to_normalized(gx, S).to(sims.dtype).to(sims.device)
            ny = grid_to_normalized(gy, S).to(sims.dtype).to(sims.device)
            labels = np.full((H, W), -1, dtype=np.int32)
            cols = torch.nonzero(in_x).flatten()
            rows = torch.nonzero(in_y).flatten()
            if cols.numel() and rows.numel():
                c0, c1 = int(cols[0]), int(cols[-1]) + 1  # crop columns are contiguous
                r0, r1 = int(rows[0]), int(rows[-1]) + 1
                w = c1 - c0
                step = max(1, 8_000_000 // max(w * self.n_parts, 1))
                for a in range(r0, r1, step):
                    b = min(r1, a + step)
                    grid = torch.stack(torch.broadcast_tensors(nx[None, c0:c1], ny[a:b, None]), -1)[None]
                    s = F.grid_sample(sims, grid, mode="bilinear", padding_mode="border", align_corners=False)
                    labels[a:b, c0:c1] = s[0].argmax(0).to(torch.int32).cpu().numpy()
            out.append(labels)
        return out

    def predict(self, images: Any, *, box: Any = None) -> np.ndarray | list[np.ndarray]:
        """Part label maps at the original image resolution.

        The similarity of each grid descriptor to each part is bilinearly
        upsampled to the image pixels (through the crop transform) and the
        most similar part wins, which gives smooth part boundaries. At a pixel
        that maps exactly onto a grid-pixel centre the label is that grid
        descriptor's nearest centroid.

        Args:
            images: One image, a list of images, or an
                [Embedding][dife.embedding.Embedding] (gives a list).
            box: Face box(es), as in [dife.embed][dife.embedding.embed].

        Returns:
            One (H, W) int32 array for a single image, or a list of them:
            labels in ``[0, n_parts)``, ``-1`` for pixels outside the square
            crop the network saw.

        Raises:
            InputError: not fitted, or descriptors of another dimension.
        """
        emb, batched = self._embed(images, box)
        maps = self._predict_embedding(emb)
        return maps if batched else maps[0]

    def fit_predict(self, images: Any, *, box: Any = None) -> np.ndarray | list[np.ndarray]:
        """[fit][dife.parsing.FaceParser.fit] then [predict][dife.parsing.FaceParser.predict] on the same images (embedded once)."""
        emb, batched = self._embed(images, box)
        self._fit_embedding(emb)
        maps = self._predict_embedding(emb)
        return maps if batched else maps[0]

    # -- persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted parser to a ``.safetensors`` file (atomically).

        The file holds ``centroids`` (n_parts, C) and ``part_centers``
        (n_parts, 2), with ``n_parts``, ``seed``, ``embed_dim`` and the model
        name (when known) as JSON metadata.

        Returns:
            The path written.

        Raises:
            InputError: if the parser is not fitted.
        """
        from safetensors.torch import save as st_save

        if self.centroids is None or self.part_centers is None:
            raise InputError("cannot save an unfitted FaceParser: call fit() first")
        meta = {
            "n_parts": self.n_parts,
            "seed": self.seed,
            "embed_dim": int(self.centroids.shape[1]),
            "model": self.model_name,
            "max_pixels_per_image": self.max_pixels_per_image,
            "n_iter": self.n_iter,
            "n_init": self.n_init,
        }
        data = st_save(
            {"centroids": self.centroids.contiguous(), "part_centers": self.part_centers.contiguous()},
            metadata={"format": _FORMAT, "format_version": _FORMAT_VERSION, "config": json.dumps(meta)},
        )
        dest = Path(path)
        with atomic_write(dest, "wb") as f:
            f.write(data)
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, model: DIFE | str | None = None) -> FaceParser:
        """Read a parser written by [save][dife.parsing.FaceParser.save].

        Args:
            path: The ``.safetensors`` file.
            model: Model for later predictions; default the model name stored
                in the file, else the default model.

        Raises:
            ModelNotFoundError: the file does not exist.
            CheckpointError: not a FaceParser file, or inconsistent content.
        """
        from safetensors import SafetensorError, safe_open

        p = Path(path)
        if not p.is_file():
            raise ModelNotFoundError(f"FaceParser file not found: '{p}'")
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                keys = set(f.keys())
                if meta.get("format") != _FORMAT:
                    raise CheckpointError(f"'{p}' is not a FaceParser file (metadata format {meta.get('format')!r})")
                if not {"centroids", "part_centers"} <= keys:
                    raise CheckpointError(f"'{p}' lacks tensors {sorted({'centroids', 'part_centers'} - keys)}")
                centroids = f.get_tensor("centroids")
                centers = f.get_tensor("part_centers")
        except SafetensorError as e:
            raise CheckpointError(f"'{p}' is not a readable safetensors file: {e}") from None
        except (OSError, ValueError) as e:
            raise CheckpointError(f"'{p}' cannot be read: {e}") from None
        try:
            cfg = json.loads(meta.get("config", ""))
            n_parts = int(cfg["n_parts"])
            seed = int(cfg["seed"])
            embed_dim = int(cfg["embed_dim"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise CheckpointError(f"'{p}' has malformed FaceParser metadata: {meta.get('config')!r}") from None
        if centroids.ndim != 2 or tuple(centroids.shape) != (n_parts, embed_dim):
            raise CheckpointError(
                f"'{p}': centroids have shape {tuple(centroids.shape)}, expected {(n_parts, embed_dim)}"
            )
        if tuple(centers.shape) != (n_parts, 2):
            raise CheckpointError(f"'{p}': part_centers have shape {tuple(centers.shape)}, expected {(n_parts, 2)}")
        if not torch.isfinite(centroids).all():
            raise CheckpointError(f"'{p}': centroids contain NaN or infinite values")
        name = cfg.get("model")
        parser = cls(
            n_parts,
            model=model if model is not None else name,
            seed=seed,
            max_pixels_per_image=int(cfg.get("max_pixels_per_image", 2048)),
            n_iter=int(cfg.get("n_iter", 50)),
            n_init=int(cfg.get("n_init", 3)),
        )
        if model is not None and parser.model_name is None:
            parser.model_name = name
        parser.centroids = centroids.float().contiguous()
        parser.part_centers = centers.float().contiguous()
        return parser


def parse_face(
    images: Any,
    n_parts: int = 8,
    *,
    box: Any = None,
    model: DIFE | str | None = None,
    seed: int = 0,
) -> np.ndarray | list[np.ndarray]:
    """Split faces into ``n_parts`` parts that agree across the given faces.

    Fits one [FaceParser][dife.parsing.FaceParser] on all the images jointly (so a human's and
    a cat's parts correspond) and predicts their label maps.

    Args:
        images: One image or a list of images (any species).
        n_parts: Number of parts.
        box: Face box(es) ``(x0, y0, x1, y1)`` in edge coordinates.
        model: Model, name or ``None`` (default model).
        seed: Seed of the clustering.

    Returns:
        (H, W) int32 label map(s) at each image's resolution, values in
        ``[0, n_parts)`` and ``-1`` outside the crop; a list for a list input.
    """
    return FaceParser(n_parts, model=model, seed=seed).fit_predict(images, box=box)
