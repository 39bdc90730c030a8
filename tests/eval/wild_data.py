"""Test data of the evaluation tests: tiny whole photos with face boxes, and a face finder that really looks.

``SquareFinder`` is a [FaceDetector][dife.modeling.face_detector.FaceDetector]
whose forward pass finds the one bright square of a photo (every channel above
3/4 of full scale) and reports it as a face, its species chosen by the
square's colour (:data:`COLOURS`). The photos of :func:`write_wild` paint each
labelled face box in its species' colour over dark noise, so the finder finds
exactly the labelled faces, wherever they are, and tests can make it miss
(no square) or name the wrong species (another colour).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

#: Colour of the square painted for each species (all channels bright).
COLOURS: dict[str, tuple[int, int, int]] = {
    "human": (255, 255, 255),
    "dog": (255, 225, 225),
    "cat": (225, 255, 225),
    "horse": (225, 225, 255),
    "sheep": (255, 255, 225),
    "cow": (225, 255, 255),
}

#: Keypoints at fixed positions relative to the face box (fractions of its side, edge coordinates).
RELATIVE = {
    "eye_left_img": (0.3, 0.4),
    "eye_right_img": (0.7, 0.4),
    "nose": (0.5, 0.6),
    "mouth_left_img": (0.35, 0.78),
    "mouth_right_img": (0.65, 0.78),
}


def make_square_finder(input_size: int = 128):
    import torch

    from dife.modeling.face_detector import FaceDetector, FaceDetectorConfig

    class SquareFinder(FaceDetector):
        """Finds the bright square of each view (see the module docstring)."""

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            c = self.config
            B, S, st = x.shape[0], c.input_size, self.stride
            h = S // st
            K, P = len(c.species), len(c.keypoints)
            heat = torch.full((B, 1, h, h), -20.0)
            species = torch.zeros((B, K, h, h))
            box = torch.zeros((B, 3, h, h))
            kps = torch.zeros((B, 2 * P, h, h))
            rgb = x * torch.tensor(c.std).view(1, 3, 1, 1) + torch.tensor(c.mean).view(1, 3, 1, 1)
            palette = torch.tensor([COLOURS[s] for s in c.species], dtype=torch.float32) / 255.0
            for b in range(B):
                mask = rgb[b].min(dim=0).values > 0.75
                if mask.sum() < 4:
                    continue
                ys, xs = mask.nonzero(as_tuple=True)
                x0, x1 = xs.min().item(), xs.max().item() + 1.0
                y0, y1 = ys.min().item(), ys.max().item() + 1.0
                cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
                j, i = min(int(cx // st), h - 1), min(int(cy // st), h - 1)
                fx = min(max(cx / st - j, 1e-3), 1 - 1e-3)
                fy = min(max(cy / st - i, 1e-3), 1 - 1e-3)
                heat[b, 0, i, j] = 4.0
                box[b, 0, i, j] = math.log(fx / (1 - fx))
                box[b, 1, i, j] = math.log(fy / (1 - fy))
                box[b, 2, i, j] = math.log(side / st)
                colour = rgb[b][:, mask].mean(dim=1)
                species[b, int(torch.argmin(((palette - colour) ** 2).sum(dim=1))), i, j] = 10.0
            return {"heat": heat, "species": species, "box": box, "keypoints": kps}

    cfg = FaceDetectorConfig(
        input_size=input_size, backbone_stages=3, feature_stages=(2,), neck_dim=8, head_dim=8, head_layers=0
    )
    return SquareFinder(cfg).eval()


def write_wild(
    root: Path,
    plan: list[tuple[str, tuple[int, int], tuple[float, float, float], str | None]],
    seed: int = 0,
) -> Path:
    """Write a folder in the ``wild`` layout.

    Args:
        root: Folder to create.
        plan: Per photo ``(species, (width, height), (x0, y0, side) of the face box,
            colour species or None)``: the box is painted in that species' colour
            (None: not painted, the finder misses it).
        seed: Noise seed.
    """
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    recs = []
    counts: dict[str, int] = {}
    for species, (w, h), (x0, y0, side), paint in plan:
        counts[species] = counts.get(species, 0) + 1
        name = f"{species}_{counts[species]:04d}.png"
        img = rng.integers(0, 120, (h, w, 3)).astype(np.uint8)
        if paint is not None:
            ix0, iy0 = max(0, round(x0)), max(0, round(y0))
            ix1, iy1 = min(w, round(x0 + side)), min(h, round(y0 + side))
            img[iy0:iy1, ix0:ix1] = COLOURS[paint]
            img[iy0:iy1, ix0:ix1] -= rng.integers(0, 20, (iy1 - iy0, ix1 - ix0, 3)).astype(np.uint8)
        Image.fromarray(img).save(root / name)
        names = list(RELATIVE) if species == "human" else ["eye_left_img", "eye_right_img", "nose"]
        kps = {n: [x0 + RELATIVE[n][0] * side - 0.5, y0 + RELATIVE[n][1] * side - 0.5] for n in names}
        recs.append(
            {
                "image": name,
                "species": species,
                "keypoints": kps,
                "face_box": [x0, y0, x0 + side, y0 + side],
                "source": "test",
                "license": "test",
            }
        )
    (root / "annotations.json").write_text(json.dumps(recs))
    return root


#: A small wild set: faces at different places and scales, all found with the right species.
PLAN: list[tuple[str, tuple[int, int], tuple[float, float, float], str | None]] = [
    ("human", (96, 80), (20.0, 10.0, 48.0), "human"),
    ("human", (80, 96), (8.0, 30.0, 40.0), "human"),
    ("human", (120, 90), (60.0, 20.0, 44.0), "human"),
    ("dog", (100, 100), (30.0, 30.0, 50.0), "dog"),
    ("dog", (128, 72), (70.0, 10.0, 52.0), "dog"),
    ("dog", (90, 120), (10.0, 50.0, 60.0), "dog"),
    ("cat", (110, 80), (40.0, 16.0, 46.0), "cat"),
    ("cat", (96, 96), (10.0, 12.0, 56.0), "cat"),
    ("cat", (72, 128), (12.0, 60.0, 48.0), "cat"),
    ("horse", (128, 96), (50.0, 30.0, 50.0), "horse"),
    ("cow", (100, 100), (20.0, 36.0, 44.0), "cow"),
]
