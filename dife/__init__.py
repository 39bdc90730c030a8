"""dife: Dense Interspecies Face Embedding (Yang et al., NeurIPS 2022).

A small encoder maps every pixel of a face photo (human, dog, cat, ...) to a
16-d vector shared across species. The public API is re-exported here and
imported lazily, so ``import dife`` stays fast and pulls in no torch until a
name that needs it is used.

Example:
    >>> import dife
    >>> pts = dife.transfer_keypoints("human.jpg", "cat.jpg", [[120, 140]])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dife._lazy import attach

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # model and configuration
    "DIFE": "dife.modeling.dife",
    "DIFEConfig": "dife.config",
    # errors
    "DIFEError": "dife.errors",
    "InputError": "dife.errors",
    "ShapeError": "dife.errors",
    "ImageError": "dife.errors",
    "KeypointError": "dife.errors",
    "UnknownDomainError": "dife.errors",
    "CheckpointError": "dife.errors",
    "ModelNotFoundError": "dife.errors",
    "DIFEWarning": "dife.errors",
    # coordinates and images
    "CropTransform": "dife.coords",
    "square_crop": "dife.coords",
    "load_image": "dife.images",
    # finding faces
    "detect_faces": "dife.detection",
    "Detection": "dife.detection",
    "NoFaceWarning": "dife.detection",
    "FaceDetector": "dife.modeling.face_detector",
    # inference
    "Embedding": "dife.embedding",
    "embed": "dife.embedding",
    "transfer_keypoints": "dife.transfer",
    "transfer_dense": "dife.transfer",
    "DenseCorrespondence": "dife.transfer",
    "KeypointScores": "dife.transfer",
    "TransferPredictor": "dife.transfer",
    "parse_face": "dife.parsing",
    "FaceParser": "dife.parsing",
    "kmeans": "dife.parsing",
    "overlay": "dife.compositing",
    "Asset": "dife.compositing",
    "load_asset": "dife.compositing",
    # models
    "get_default_model": "dife.defaults",
    "set_default_model": "dife.defaults",
    "list_models": "dife.registry",
    # visual helpers
    "embedding_to_rgb": "dife.viz",
    "draw_keypoints": "dife.viz",
    "draw_matches": "dife.viz",
    "draw_parts": "dife.viz",
    "draw_boxes": "dife.viz",
}

__all__ = [
    "Asset",
    "CheckpointError",
    "CropTransform",
    "DIFE",
    "DIFEConfig",
    "DIFEError",
    "DIFEWarning",
    "DenseCorrespondence",
    "Detection",
    "Embedding",
    "FaceDetector",
    "FaceParser",
    "ImageError",
    "InputError",
    "KeypointError",
    "KeypointScores",
    "ModelNotFoundError",
    "NoFaceWarning",
    "ShapeError",
    "TransferPredictor",
    "UnknownDomainError",
    "__version__",
    "detect_faces",
    "draw_boxes",
    "draw_keypoints",
    "draw_matches",
    "draw_parts",
    "embed",
    "embedding_to_rgb",
    "get_default_model",
    "kmeans",
    "list_models",
    "load_asset",
    "load_image",
    "overlay",
    "parse_face",
    "set_default_model",
    "square_crop",
    "transfer_dense",
    "transfer_keypoints",
]


__getattr__, __dir__ = attach(__name__, _LAZY)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dife.compositing import Asset, load_asset, overlay
    from dife.config import DIFEConfig
    from dife.coords import CropTransform, square_crop
    from dife.defaults import get_default_model, set_default_model
    from dife.detection import Detection, NoFaceWarning, detect_faces
    from dife.embedding import Embedding, embed
    from dife.errors import (
        CheckpointError,
        DIFEError,
        DIFEWarning,
        ImageError,
        InputError,
        KeypointError,
        ModelNotFoundError,
        ShapeError,
        UnknownDomainError,
    )
    from dife.images import load_image
    from dife.modeling.dife import DIFE
    from dife.modeling.face_detector import FaceDetector
    from dife.parsing import FaceParser, kmeans, parse_face
    from dife.registry import list_models
    from dife.transfer import (
        DenseCorrespondence,
        KeypointScores,
        TransferPredictor,
        transfer_dense,
        transfer_keypoints,
    )
    from dife.viz import draw_boxes, draw_keypoints, draw_matches, draw_parts, embedding_to_rgb
