"""Evaluation of keypoint transfer across species: readers, pairs, crops, metrics, methods, reports.

The pieces (each a small module, imported lazily: ``import dife.eval`` pulls in
neither torch nor timm):

* :mod:`dife.eval.readers`: datasets (faces folder, AP-10K, Animal-Pose, MAFL / CelebA,
  WFLW, AnimalWeb) -> face crops with image-side keypoint names;
* :mod:`dife.eval.pairs`: fixed-seed cross-species pairs per group;
* :mod:`dife.eval.crops`: the ``aligned`` and ``jittered`` crop protocols;
* :mod:`dife.eval.metrics`: 70-px error, inter-ocular-normalised error, PCK, bootstrap intervals;
* :mod:`dife.eval.methods`: DIFE models and the baselines (``identity``, ``imagenet-nn``,
  ``timm:<name>``, ``cse``) behind one interface;
* :mod:`dife.eval.report`: markdown, JSON and PNG panels;
* :mod:`dife.eval.run`: :func:`evaluate` / :func:`run_eval` (the ``dife eval`` command).

Example:
    >>> from dife.eval import run_eval  # doctest: +SKIP
    >>> res = run_eval("../shared/data/faces", ["identity", "imagenet-nn"], counts=100, out="eval")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "KEYPOINT_NAMES": "dife.eval.readers",
    "NINE_POINTS": "dife.eval.readers",
    "PAIRED_NAMES": "dife.eval.readers",
    "SUBJECT_SIDE_EYES_NOSE": "dife.eval.readers",
    "WFLW_TO_NINE": "dife.eval.readers",
    "CELEBA_NAMES": "dife.eval.readers",
    "FaceSample": "dife.eval.readers",
    "Face": "dife.eval.readers",
    "face_box": "dife.eval.readers",
    "is_image_side_consistent": "dife.eval.readers",
    "read_faces_folder": "dife.eval.readers",
    "read_coco_keypoints": "dife.eval.readers",
    "read_ap10k": "dife.eval.readers",
    "read_animal_pose": "dife.eval.readers",
    "read_mafl": "dife.eval.readers",
    "read_wflw": "dife.eval.readers",
    "read_animalweb": "dife.eval.readers",
    "read_dataset": "dife.eval.readers",
    "DATASET_FORMATS": "dife.eval.readers",
    "LIVESTOCK": "dife.eval.pairs",
    "OTHER": "dife.eval.pairs",
    "INTRA": "dife.eval.pairs",
    "GROUPS": "dife.eval.pairs",
    "GROUP_ORDER": "dife.eval.pairs",
    "PAPER_COUNTS": "dife.eval.pairs",
    "Pair": "dife.eval.pairs",
    "species_group": "dife.eval.pairs",
    "make_pairs": "dife.eval.pairs",
    "CROP_PROTOCOLS": "dife.eval.crops",
    "JITTER_SCALE": "dife.eval.crops",
    "SubCrop": "dife.eval.crops",
    "jitter_box": "dife.eval.crops",
    "apply_crop": "dife.eval.crops",
    "make_view": "dife.eval.crops",
    "SCALE": "dife.eval.metrics",
    "PCK_THRESHOLDS": "dife.eval.metrics",
    "METRICS": "dife.eval.metrics",
    "interocular": "dife.eval.metrics",
    "point_errors": "dife.eval.metrics",
    "PairResult": "dife.eval.metrics",
    "Stat": "dife.eval.metrics",
    "GroupSummary": "dife.eval.metrics",
    "bootstrap_ci": "dife.eval.metrics",
    "summarize": "dife.eval.metrics",
    "aggregate": "dife.eval.metrics",
    "Method": "dife.eval.methods",
    "BaseMethod": "dife.eval.methods",
    "IdentityMethod": "dife.eval.methods",
    "DIFEMethod": "dife.eval.methods",
    "FeatureNNMethod": "dife.eval.methods",
    "BASELINES": "dife.eval.methods",
    "LITE0_PACKAGE": "dife.eval.methods",
    "TimmNotInstalledError": "dife.eval.methods",
    "lite0_weights_path": "dife.eval.methods",
    "load_lite0_state_dict": "dife.eval.methods",
    "imagenet_nn": "dife.eval.methods",
    "timm_nn": "dife.eval.methods",
    "cse_nn": "dife.eval.methods",
    "resolve_method": "dife.eval.methods",
    "METRIC_TITLES": "dife.eval.report",
    "format_stat": "dife.eval.report",
    "markdown_report": "dife.eval.report",
    "json_report": "dife.eval.report",
    "write_json": "dife.eval.report",
    "write_markdown": "dife.eval.report",
    "write_panels": "dife.eval.report",
    "MethodRun": "dife.eval.run",
    "EvalResult": "dife.eval.run",
    "evaluate": "dife.eval.run",
    "run_eval": "dife.eval.run",
}

__all__ = [
    "BASELINES",
    "BaseMethod",
    "CELEBA_NAMES",
    "CROP_PROTOCOLS",
    "DATASET_FORMATS",
    "DIFEMethod",
    "EvalResult",
    "Face",
    "FaceSample",
    "FeatureNNMethod",
    "GROUPS",
    "GROUP_ORDER",
    "GroupSummary",
    "INTRA",
    "IdentityMethod",
    "JITTER_SCALE",
    "KEYPOINT_NAMES",
    "LITE0_PACKAGE",
    "LIVESTOCK",
    "METRICS",
    "METRIC_TITLES",
    "Method",
    "MethodRun",
    "NINE_POINTS",
    "OTHER",
    "PAIRED_NAMES",
    "PAPER_COUNTS",
    "PCK_THRESHOLDS",
    "Pair",
    "PairResult",
    "SCALE",
    "SUBJECT_SIDE_EYES_NOSE",
    "Stat",
    "SubCrop",
    "TimmNotInstalledError",
    "WFLW_TO_NINE",
    "aggregate",
    "apply_crop",
    "bootstrap_ci",
    "cse_nn",
    "evaluate",
    "face_box",
    "format_stat",
    "imagenet_nn",
    "interocular",
    "is_image_side_consistent",
    "jitter_box",
    "json_report",
    "lite0_weights_path",
    "load_lite0_state_dict",
    "make_pairs",
    "make_view",
    "markdown_report",
    "point_errors",
    "read_animal_pose",
    "read_animalweb",
    "read_ap10k",
    "read_coco_keypoints",
    "read_dataset",
    "read_faces_folder",
    "read_mafl",
    "read_wflw",
    "resolve_method",
    "run_eval",
    "species_group",
    "summarize",
    "timm_nn",
    "write_json",
    "write_markdown",
    "write_panels",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dife.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
