"""Generic frozen dense teacher: one feature stage of any timm model.

Use it to distil an ImageNet backbone's feature map (or any timm model's)
instead of, or besides, the DensePose CSE embedding::

    teacher = TimmTeacher("convnext_tiny", stage=1, weights="convnext_tiny.safetensors")
    feats = teacher(images)  # (B, C, H / r, W / r), r = teacher.reduction

The network is ``timm.create_model(name, features_only=True,
out_indices=(stage,))``; ``stage`` indexes ``model.feature_info`` (for a
ResNet: 0 = stem activation at stride 2, 1..4 = ``layer1..4`` at strides
4..32).

**Input convention of dense teachers** (shared with
[CSETeacher][dife.train.teachers.cse.CSETeacher]): images are ``(B, 3, H, W)``
float RGB in ``[-1, 1]`` -- the DIFE encoder's input and the StyleGAN2 output
range. This teacher maps them to ``[0, 1]`` and normalises with the model's
``pretrained_cfg`` mean / std (ImageNet's when the model has none).

**Weights**, one of:

* ``weights=path``: a timm-format state dict (``.safetensors``, or
  ``.pth`` / ``.pt`` / ``.bin`` read with ``torch.load(weights_only=True)``;
  ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and ``module.``
  prefixes are accepted), e.g. the ``model.safetensors`` of a ``timm/...``
  Hugging Face repository. Loading is strict: the file must match the full
  architecture (classifier weights aside) and provide every weight the
  feature extractor uses.
* ``pretrained=True``: timm's own download (Hugging Face hub / URL), when
  the network and the weights are available.
* neither: random initialisation (tests).

timm is an optional dependency (``pip install "dife[train]"``); it is
imported only when a [TimmTeacher][dife.train.teachers.timm_teacher.TimmTeacher] is built, so ``import dife.train``
does not import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dife._timm import TimmNotInstalledError, import_timm
from dife.checks import check_int, check_positive_int
from dife.errors import CheckpointError, InputError, ModelNotFoundError, ShapeError

__all__ = ["TimmTeacher", "TimmNotInstalledError", "load_timm_state_dict"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def load_timm_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a timm-format state dict safely.

    Args:
        path: ``.safetensors`` file, or a ``torch.save`` file read with
            ``weights_only=True`` (a state dict, possibly wrapped in
            ``state_dict`` / ``model`` / ``state_dict_ema`` / ``model_ema``).

    Returns:
        ``{name: tensor}`` with any ``module.`` prefix removed.

    Raises:
        ModelNotFoundError: ``path`` does not exist.
        CheckpointError: unreadable / unsafe file, or no tensor dict in it.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(
            f"timm weights {str(p)!r} not found; pass the path of a .safetensors / .pth state dict "
            "(e.g. model.safetensors from the model's timm/... Hugging Face repository) or use pretrained=True"
        )
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(p), device="cpu")
        else:
            data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - many failure types for corrupt / unsafe files
        raise CheckpointError(f"{p}: cannot be read as a safetensors / weights_only torch file ({exc})") from None
    if isinstance(data, Mapping):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                data = inner
                break
    if (
        not isinstance(data, Mapping)
        or not data
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())
    ):
        raise CheckpointError(f"{p}: expected a state dict of named tensors, got {type(data).__name__}")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in data.items()}


def _flat_candidates(key: str) -> list[str]:
    """Names a key of the full model can take in a timm feature wrapper (``stages.0.x`` -> ``stages_0.x``)."""
    parts = key.split(".")
    out = [key, "model." + key]
    for k in range(2, len(parts)):
        out.append("_".join(parts[:k]) + "." + ".".join(parts[k:]))
    return out


class TimmTeacher(nn.Module):
    """Frozen feature map of one stage of a timm model.

    Args:
        model_name: timm architecture name (``"resnet50"``, ``"convnext_tiny"``...).
        stage: Index into the model's ``feature_info`` (``out_indices=(stage,)``).
        weights: Path of a timm-format state dict (see the module docstring),
            or the state dict itself.
        pretrained: Download timm's pretrained weights instead.
        input_size: Optional square side the images are resized to (bilinear,
            antialiased when shrinking) before the network; None keeps them.
        mean: Per-channel mean of the normalisation of [0, 1] RGB (default:
            the model's ``pretrained_cfg``, else ImageNet's).
        std: Per-channel std (same default rule).
        **model_kwargs: Extra keyword arguments of ``timm.create_model``.

    Attributes:
        model: The timm feature extractor.
        out_channels: Channels of the feature map.
        reduction: Stride of the feature map w.r.t. the network input.
        mean, std: Normalisation applied to [0, 1] RGB.

    Raises:
        TimmNotInstalledError: timm is missing (a [DIFEError][dife.errors.DIFEError]).
        ModelNotFoundError: unknown architecture, missing weights file, or a
            failed download.
        InputError: bad ``stage`` / options.
        CheckpointError: weights that do not fit the architecture.
    """

    def __init__(
        self,
        model_name: str,
        stage: int,
        *,
        weights: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None,
        pretrained: bool = False,
        input_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **model_kwargs: Any,
    ) -> None:
        super().__init__()
        if weights is not None and pretrained:
            raise InputError("give either weights=<path> or pretrained=True, not both")
        check_int(stage, "stage", what="an int index into the model's feature_info")
        check_positive_int(input_size, "input_size", allow_none=True)
        timm = import_timm()
        if not isinstance(model_name, str) or not timm.is_model(model_name.split(".")[0]):
            raise ModelNotFoundError(f"timm has no model named {model_name!r} (see timm.list_models())")
        if isinstance(weights, Mapping):
            state: Mapping[str, torch.Tensor] | None = dict(weights)
            source = "the given state dict"
        else:
            state = load_timm_state_dict(weights) if weights is not None else None
            source = str(weights)
        try:
            model = timm.create_model(
                model_name, pretrained=pretrained, features_only=True, out_indices=(stage,), **model_kwargs
            )
        except (IndexError, AssertionError) as exc:
            raise InputError(f"stage {stage} is not a feature stage of {model_name!r} ({exc})") from None
        except (OSError, RuntimeError) as exc:
            if pretrained:
                raise ModelNotFoundError(f"cannot get the pretrained weights of {model_name!r}: {exc}") from None
            raise
        if state is not None:
            self._check_full_architecture(timm, model_name, state, model_kwargs, source=source)
            _load_features(model, state, source=source)
        self.model = model
        self.model_name = model_name
        self.stage = stage
        self.input_size = input_size
        info = model.feature_info
        self.out_channels = int(info.channels()[-1])
        self.reduction = int(info.reduction()[-1])
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean = tuple(mean if mean is not None else (cfg.get("mean") or _IMAGENET_MEAN))
        std = tuple(std if std is not None else (cfg.get("std") or _IMAGENET_STD))
        if len(mean) != 3 or len(std) != 3:
            raise InputError(f"{model_name!r} is not an RGB model (mean {mean}, std {std})")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _check_full_architecture(
        timm: Any, model_name: str, state: Mapping[str, torch.Tensor], model_kwargs: Mapping[str, Any], source: str
    ) -> None:
        """The file must be a state dict of the whole architecture (classifier aside)."""
        full = timm.create_model(model_name, pretrained=False, num_classes=0, **model_kwargs)
        classifiers = (getattr(full, "pretrained_cfg", None) or {}).get("classifier") or ()
        if isinstance(classifiers, str):
            classifiers = (classifiers,)
        drop = {f"{c}.{p}" for c in classifiers for p in ("weight", "bias")}
        own = full.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own and k not in drop]
        if missing or unexpected:
            raise CheckpointError(
                f"{source} does not match timm model {model_name!r}: "
                f"{len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}"
            )
        for k, v in own.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise CheckpointError(
                    f"{source}: {k} has shape {tuple(state[k].shape)}, {model_name!r} expects {tuple(v.shape)}"
                )

    def train(self, mode: bool = True) -> TimmTeacher:
        """A teacher stays in eval mode (it is frozen); ``train()`` is a no-op."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [-1, 1] (B, 3, H, W) -> the model's normalised input."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ShapeError(f"images must be a (B, 3, H, W) tensor of RGB in [-1, 1], got {shape}")
        if not images.is_floating_point():
            raise ShapeError(
                f"images must be float RGB in [-1, 1], got dtype {images.dtype} with shape {tuple(images.shape)}"
            )
        if not bool(torch.isfinite(images).all()):
            raise ShapeError(f"images with shape {tuple(images.shape)} contain NaN or infinite values")
        x = (images.to(self.mean.dtype) + 1.0) * 0.5
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            shrink = self.input_size < min(x.shape[-2:])
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False, antialias=shrink)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map of the chosen stage.

        Args:
            images: (B, 3, H, W) float RGB in [-1, 1].

        Returns:
            (B, out_channels, H' / reduction, W' / reduction) features (H', W'
            the network input size), NCHW.

        Raises:
            ShapeError: images that are not (B, 3, H, W) floats, or non-finite.
        """
        x = self.preprocess(images)
        param = next(self.model.parameters(), None)
        if param is not None:
            x = x.to(param.dtype)
        out = self.model(x)
        feat = out[-1] if isinstance(out, (list, tuple)) else out
        if isinstance(feat, Mapping):
            feat = list(feat.values())[-1]
        if feat.ndim == 4 and feat.shape[1] != self.out_channels and feat.shape[-1] == self.out_channels:
            feat = feat.permute(0, 3, 1, 2)  # NHWC feature extractors
        return feat

    @staticmethod
    def resize_to(features: torch.Tensor, size: tuple[int, int] | int) -> torch.Tensor:
        """Resample a (B, C, h, w) feature map to another grid over the same image.

        Bilinear, ``align_corners=False`` (the pixel-centre convention of
        [dife.coords][dife.coords]).

        Args:
            features: (B, C, h, w) output of [forward][dife.train.teachers.timm_teacher.TimmTeacher.forward].
            size: Target ``(H, W)`` or side.

        Returns:
            (B, C, H, W).
        """
        if not isinstance(features, torch.Tensor) or features.ndim != 4:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ShapeError(f"features must be a (B, C, H, W) tensor, got {shape}")
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(hw) < 1:
            raise InputError(f"size must be positive, got {size!r}")
        if tuple(features.shape[-2:]) == hw:
            return features
        return F.interpolate(features, size=hw, mode="bilinear", align_corners=False)


def _load_features(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load a full-model state dict into a timm feature wrapper (renamed / pruned modules)."""
    lookup: dict[str, str] = {}
    for key in state:
        for cand in _flat_candidates(key):
            lookup.setdefault(cand, key)
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    missing = []
    for k, v in own.items():
        src = lookup.get(k)
        if src is None:
            missing.append(k)
            continue
        t = state[src]
        if tuple(t.shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: {src} has shape {tuple(t.shape)}, the feature model expects {tuple(v.shape)} for {k}"
            )
        mapped[k] = t.to(v.dtype)
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} weight(s) of the feature model, e.g. {missing[:3]}")
    model.load_state_dict(mapped, strict=True)
