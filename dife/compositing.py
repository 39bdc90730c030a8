"""Put an RGBA asset (glasses, a hat...) on a face, anchored on its keypoints.

An [Asset][dife.compositing.Asset] is an RGBA picture plus named **anchors**: points in the
asset's own pixel coordinates (integer = pixel centre, as in
[dife.coords][dife.coords]) that must land on the face keypoints of the same name.
[overlay][dife.compositing.overlay] estimates a similarity or affine map from the anchors to the
face keypoints (least squares), warps the asset with it and alpha-composites
the result over the image. The face keypoints are either given, or transferred
from a reference face with [dife.transfer.transfer_keypoints][dife.transfer.transfer_keypoints] — which is
how one asset, anchored once, fits humans, cats and dogs alike.

Two assets are built in ([BUILTIN_ASSETS][dife.compositing.BUILTIN_ASSETS]), drawn by
``tools/make_assets.py`` and anchored on the image-side names of the
development set: ``"glasses"`` on ``eye_left_img``, ``eye_right_img`` and
``nose``; ``"party_hat"`` on the two eyes only.

Example:
    >>> from dife.compositing import overlay
    >>> out = overlay("cat.jpg", "glasses", keypoints={"eye_left_img": (100, 120),
    ...                                                 "eye_right_img": (160, 118)})  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dife.checks import check_number
from dife.coords import check_points_inside
from dife.errors import ImageError, InputError, KeypointError, ShapeError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Asset", "load_asset", "list_assets", "overlay", "estimate_transform", "BUILTIN_ASSETS"]

#: Names of the assets shipped in ``dife/assets`` (``NAME.png`` + ``NAME.json``).
BUILTIN_ASSETS: tuple[str, ...] = ("glasses", "party_hat")

_TRANSFORMS = ("similarity", "affine")
_MIN_POINTS = {"similarity": 2, "affine": 3}


@dataclass
class Asset:
    """An RGBA picture with named anchor points.

    Attributes:
        image: (h, w, 4) uint8 RGBA array (not premultiplied).
        anchors: Anchor name -> ``(x, y)`` in asset pixel coordinates
            (integer = pixel centre). Anchors may lie outside the picture
            (e.g. a hat anchored on the eyes below it). Order matters when
            keypoints are given as an array.
        name: Display name.
    """

    image: np.ndarray
    anchors: dict[str, tuple[float, float]]
    name: str = "asset"

    def __post_init__(self) -> None:
        img = np.asarray(self.image)
        if img.ndim != 3 or img.shape[2] != 4 or img.dtype != np.uint8:
            raise ShapeError(
                f"Asset.image must be an (h, w, 4) uint8 RGBA array, got shape {img.shape} dtype {img.dtype}"
            )
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ShapeError(f"Asset.image is empty: shape {img.shape}")
        self.image = np.ascontiguousarray(img)
        if not isinstance(self.anchors, Mapping) or not self.anchors:
            raise InputError(
                f"Asset {self.name!r} needs a non-empty dict of anchors name -> (x, y), got {self.anchors!r}"
            )
        anchors: dict[str, tuple[float, float]] = {}
        for k, v in self.anchors.items():
            try:
                xy = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"Asset {self.name!r}: anchor {k!r} must be (x, y), got {v!r}") from None
            if xy.shape != (2,) or not np.all(np.isfinite(xy)):
                raise InputError(f"Asset {self.name!r}: anchor {k!r} must be two finite numbers (x, y), got {v!r}")
            anchors[str(k)] = (float(xy[0]), float(xy[1]))
        self.anchors = anchors

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the picture."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def anchor_names(self) -> list[str]:
        """Anchor names, in order."""
        return list(self.anchors)

    def anchor_array(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Anchors as an (N, 2) float64 array, in ``names`` order (default: all)."""
        names = self.anchor_names if names is None else list(names)
        return np.array([self.anchors[n] for n in names], dtype=np.float64).reshape(-1, 2)

    def to_pil(self) -> Image.Image:
        """The picture as an RGBA ``PIL.Image.Image`` (a copy)."""
        from PIL import Image

        return Image.fromarray(self.image)  # (h, w, 4) uint8 -> RGBA


# --------------------------------------------------------------------- loading
def _assets_dir() -> Any:
    return resources.files("dife") / "assets"


def list_assets() -> list[str]:
    """Names of the built-in assets."""
    return list(BUILTIN_ASSETS)


def _read_anchors(json_text: str, where: str) -> tuple[dict[str, Any], str | None]:
    try:
        meta = json.loads(json_text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("anchors"), dict):
        raise InputError(
            f'{where} must be a JSON object with an "anchors" object: {{"anchors": {{"name": [x, y], ...}}}}'
        )
    name = meta.get("name")
    return meta["anchors"], (str(name) if name is not None else None)


def _read_png(data_or_path: Any, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(data_or_path) as im:
            im.load()
            return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(f"asset picture {where} cannot be read: {e}") from None


def load_asset(name_or_path: str | os.PathLike[str] | Asset) -> Asset:
    """Load a built-in asset by name, or an asset from a PNG file.

    Args:
        name_or_path: A built-in name (``"glasses"``, ``"party_hat"``), a path
            to an RGBA PNG with a sidecar JSON of the same stem
            (``hat.png`` + ``hat.json``, holding
            ``{"anchors": {"eye_left_img": [x, y], ...}}`` in the PNG's pixel
            coordinates, integer = pixel centre), or an [Asset][dife.compositing.Asset]
            (returned unchanged).

    Returns:
        The [Asset][dife.compositing.Asset].

    Raises:
        InputError: unknown built-in name (the message lists them), missing
            or malformed sidecar JSON.
        ImageError: the PNG cannot be read.
    """
    if isinstance(name_or_path, Asset):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(f"asset must be a built-in name, a PNG path or an Asset, got {type(name_or_path).__name__}")
    s = os.fspath(name_or_path)
    if s in BUILTIN_ASSETS:
        d = _assets_dir()
        try:
            png = (d / f"{s}.png").read_bytes()
            meta = (d / f"{s}.json").read_text(encoding="utf-8")
        except (FileNotFoundError, OSError) as e:  # pragma: no cover - broken installation
            raise ImageError(f"built-in asset {s!r} is missing from the installed package: {e}") from None
        anchors, _ = _read_anchors(meta, f"built-in asset {s!r} JSON")
        return Asset(_read_png(io.BytesIO(png), f"{s!r}"), anchors, s)
    path = Path(s)
    if not path.suffix and os.sep not in s and "/" not in s and not path.exists():
        raise InputError(
            f"unknown asset {s!r}; built-in assets: {list(BUILTIN_ASSETS)} (or pass a path to a PNG with a sidecar JSON)"
        )
    if not path.is_file():
        raise ImageError(f"asset file not found: '{path}' (built-in assets: {list(BUILTIN_ASSETS)})")
    side = path.with_suffix(".json")
    if not side.is_file():
        raise InputError(
            f"asset '{path}' has no sidecar anchors file '{side}' "
            '(expected {"anchors": {"eye_left_img": [x, y], ...}} in the PNG\'s pixel coordinates)'
        )
    anchors, name = _read_anchors(side.read_text(encoding="utf-8"), f"'{side}'")
    return Asset(_read_png(path, f"'{path}'"), anchors, name or path.stem)


# ------------------------------------------------------------------ transforms
def estimate_transform(src: np.ndarray, dst: np.ndarray, kind: str = "similarity") -> np.ndarray:
    """Least-squares 2-D transform mapping ``src`` points onto ``dst`` points.

    Args:
        src: (N, 2) source points.
        dst: (N, 2) destination points.
        kind: ``"similarity"`` (rotation + uniform scale + translation, no
            reflection; Umeyama's closed form, N >= 2) or ``"affine"``
            (N >= 3, not all on one line).

    Returns:
        (2, 3) float64 matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``.

    Raises:
        InputError: unknown ``kind``, too few points or a degenerate
            configuration (coincident or collinear points).
        ShapeError: ``src`` / ``dst`` not matching (N, 2) arrays.
    """
    if kind not in _TRANSFORMS:
        raise InputError(f"transform must be one of {list(_TRANSFORMS)}, got {kind!r}")
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise ShapeError(f"src and dst must both be (N, 2) arrays, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    need = _MIN_POINTS[kind]
    if n < need:
        raise InputError(f"a {kind} transform needs at least {need} point pairs, got {n}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = float((s0**2).sum() / n)
    scale_ref = max(1.0, float(np.abs(src).max()))
    if var_s <= (1e-9 * scale_ref) ** 2:
        raise InputError(f"cannot estimate a {kind} transform: the anchor points coincide")
    if kind == "similarity":
        cov = d0.T @ s0 / n
        U, S, Vt = np.linalg.svd(cov)
        D = np.eye(2)
        if np.linalg.det(U) * np.linalg.det(Vt) < 0:
            D[1, 1] = -1.0
        R = U @ D @ Vt
        c = float(np.trace(np.diag(S) @ D)) / var_s
        if c <= 0:
            raise InputError("cannot estimate a similarity transform: the target points coincide")
        A = c * R
    else:
        # Collinear sources leave the affine map undetermined.
        sv = np.linalg.svd(s0, compute_uv=False)
        if sv[1] <= 1e-9 * max(sv[0], 1.0):
            raise InputError("cannot estimate an affine transform: the anchor points are collinear (use 'similarity')")
        X, *_ = np.linalg.lstsq(s0, d0, rcond=None)  # d0 ~= s0 @ X
        A = X.T
        if abs(np.linalg.det(A)) < 1e-12:
            raise InputError("cannot estimate an affine transform: the target points are collinear or coincide")
    t = mu_d - A @ mu_s
    return np.concatenate([A, t[:, None]], axis=1)


# ---------------------------------------------------------------- keypoints
def _keypoint_pairs(asset: Asset, keypoints: Any, what: str) -> tuple[list[str], np.ndarray]:
    """Match keypoints to the asset's anchors -> (anchor names used, (N, 2) points)."""
    names = asset.anchor_names
    if isinstance(keypoints, Mapping):
        common = [n for n in names if n in keypoints]
        if not common:
            raise KeypointError(
                f"{what} names {sorted(map(str, keypoints))} share no name with the anchors of asset "
                f"{asset.name!r}: {names}"
            )
        try:
            pts = np.array([np.asarray(keypoints[n], dtype=np.float64) for n in common])
        except (TypeError, ValueError):
            raise KeypointError(f"{what} values must be (x, y) pairs, got {dict(keypoints)!r}") from None
        if pts.shape != (len(common), 2):
            raise ShapeError(f"{what} values must be (x, y) pairs; got an array of shape {pts.shape}")
        return common, pts
    try:
        pts = np.asarray(
            keypoints.detach().cpu().numpy() if hasattr(keypoints, "detach") else keypoints, dtype=np.float64
        )
    except (TypeError, ValueError):
        raise KeypointError(
            f"{what} must be a dict name -> (x, y) or an (N, 2) array, got {type(keypoints).__name__}"
        ) from None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ShapeError(f"{what} must be an (N, 2) array of (x, y) in the anchor order {names}, got shape {pts.shape}")
    if pts.shape[0] != len(names):
        raise ShapeError(
            f"{what} has {pts.shape[0]} points but asset {asset.name!r} has {len(names)} anchors {names}; "
            "give one point per anchor, in that order, or a dict name -> (x, y)"
        )
    return names, pts


# ------------------------------------------------------------------- warping
def _warp(asset: Asset, M: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Warp the RGBA asset with the pixel-centre map ``M`` into a ``size`` canvas."""
    from PIL import Image

    A, t = M[:, :2].copy(), M[:, 2].copy()
    pic = asset.to_pil()
    # Shrinking with a plain bicubic transform aliases; pre-shrink with an
    # antialiased resize so the remaining warp scales by ~1.
    scale = math.sqrt(abs(float(np.linalg.det(A))))
    if scale < 0.9:
        w, h = asset.size
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        pic = pic.resize((nw, nh), Image.Resampling.LANCZOS)  # premultiplied internally
        # new-pixel-centre u' = (u + 0.5) * r - 0.5  =>  u = (u' + 0.5) / r - 0.5
        r = np.array([nw / w, nh / h])
        t = t + A @ (0.5 / r - 0.5)
        A = A / r[None, :]
    try:
        Ainv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        raise InputError("the estimated transform is singular (degenerate keypoints)") from None
    # PIL samples output edge-coordinate (X, Y) = (x + 0.5, y + 0.5) at input
    # edge coordinate (a X + b Y + c, d X + e Y + f); with centre coordinates
    # p = Ainv (q - t):  p_e = Ainv q_e - Ainv (t + 0.5) + 0.5.
    off = -Ainv @ (t + 0.5) + 0.5
    data = (Ainv[0, 0], Ainv[0, 1], off[0], Ainv[1, 0], Ainv[1, 1], off[1])
    return pic.transform(
        size, Image.Transform.AFFINE, data=tuple(float(v) for v in data), resample=Image.Resampling.BICUBIC
    )


# ------------------------------------------------------------------ overlay
def overlay(
    image: Any,
    asset: str | os.PathLike[str] | Asset,
    *,
    keypoints: Any = None,
    reference: Any = None,
    reference_keypoints: Any = None,
    box: Any = None,
    reference_box: Any = None,
    model: Any = None,
    transform: str = "similarity",
    opacity: float = 1.0,
    detector: Any = None,
) -> Image.Image:
    """Place an asset on a face, anchored on the face's keypoints.

    Exactly one of ``keypoints`` or ``reference`` (with
    ``reference_keypoints``) must be given. Keypoints and anchors are matched
    by name; anchors without a keypoint (and keypoints without an anchor) are
    ignored, as long as enough pairs remain for ``transform``.

    Args:
        image: The face: a path, PIL image, numpy array or tensor (anything
            [dife.images.load_image][dife.images.load_image] reads). Never modified.
        asset: A built-in name (``"glasses"``, ``"party_hat"``), a PNG path
            with a sidecar JSON, or an [Asset][dife.compositing.Asset].
        keypoints: Target points in ``image`` pixels (integer = pixel
            centre): a dict name -> ``(x, y)``, or an (N, 2) array with one
            point per anchor in the asset's anchor order.
        reference: A reference face whose ``reference_keypoints`` are known;
            they are transferred to ``image`` with
            [dife.transfer.transfer_keypoints][dife.transfer.transfer_keypoints] (dense embedding nearest
            neighbours), so any species can serve as reference.
        reference_keypoints: Dict name -> ``(x, y)`` (or (N, 2) array in
            anchor order) in ``reference`` pixels.
        box: Face box ``(x0, y0, x1, y1)`` of ``image`` (edge coordinates)
            used for the transfer, ``"image"`` for the centred square, or
            ``None`` to find the face (the best-scoring one).
        reference_box: The same for ``reference`` (``None``: the detected
            face that holds ``reference_keypoints``).
        model: Model for the transfer (``None``: the default model).
        detector: Face finder for images without a box (``None``: the shipped one).
        transform: ``"similarity"`` (rotation, uniform scale, translation;
            >= 2 points; keeps the asset's proportions) or ``"affine"``
            (>= 3 points; also shears / stretches to fit).
        opacity: Multiplies the asset's alpha, in [0, 1].

    Returns:
        A new RGB ``PIL.Image.Image`` of the image's size.

    Raises:
        InputError: unknown asset or transform, both or neither of
            ``keypoints`` / ``reference``, too few or degenerate points,
            ``opacity`` outside [0, 1].
        KeypointError: keypoint names that match no anchor, points outside
            the image.
        ShapeError: keypoint arrays of the wrong shape.
        ImageError: unreadable image or asset.
    """
    from PIL import Image

    from dife.images import load_image, pil_from_tensor

    if transform not in _TRANSFORMS:
        raise InputError(f"transform must be one of {list(_TRANSFORMS)}, got {transform!r}")
    check_number(opacity, "opacity", minimum=0.0, maximum=1.0, what="a number in [0, 1]")
    asset = load_asset(asset)
    if (keypoints is None) == (reference is None):
        raise InputError("give exactly one of `keypoints` (points on the image) or `reference` + `reference_keypoints`")
    if reference is not None and reference_keypoints is None:
        raise InputError("`reference` needs `reference_keypoints` (dict name -> (x, y) on the reference image)")
    if reference is None and reference_keypoints is not None:
        raise InputError("`reference_keypoints` is given without a `reference` image")

    img = load_image(image)
    H, W = int(img.shape[1]), int(img.shape[2])
    need = _MIN_POINTS[transform]

    if keypoints is not None:
        names, pts = _keypoint_pairs(asset, keypoints, "keypoints")
        if len(names) < need:
            raise InputError(
                f"a {transform} transform needs {need} keypoints matching the anchors {asset.anchor_names} "
                f"of asset {asset.name!r}; only {names} matched"
            )
        pts = check_points_inside(pts, W, H, what="keypoints")
    else:
        names, ref_pts = _keypoint_pairs(asset, reference_keypoints, "reference_keypoints")
        if len(names) < need:
            raise InputError(
                f"a {transform} transform needs {need} reference keypoints matching the anchors "
                f"{asset.anchor_names} of asset {asset.name!r}; only {names} matched"
            )
        from dife.transfer import transfer_keypoints

        moved = transfer_keypoints(
            reference, img, ref_pts, src_box=reference_box, tgt_box=box, model=model, detector=detector
        )
        pts = np.asarray(moved.detach().cpu().numpy() if hasattr(moved, "detach") else moved, dtype=np.float64)

    M = estimate_transform(asset.anchor_array(names), pts, transform)
    warped = _warp(asset, M, (W, H))
    if float(opacity) < 1.0:
        a = np.asarray(warped.getchannel("A"), dtype=np.float32) * float(opacity)
        warped.putalpha(Image.fromarray(np.round(a).astype(np.uint8)))
    base = pil_from_tensor(img).convert("RGBA")
    return Image.alpha_composite(base, warped).convert("RGB")
