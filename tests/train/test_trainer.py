"""The DIFE trainer on tiny models and tiny random teachers (CPU, a few seconds per test)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
ROSINALITY = FIXTURES / "stylegan2_rosinality_tiny64.pt"
ADA = FIXTURES / "stylegan2_ada_tiny64_state.pt"


class ConvTeacher(nn.Module):
    """A trivial frozen dense teacher: (B, 3, H, W) in [-1, 1] -> (B, channels, H / stride, W / stride)."""

    def __init__(self, channels: int = 16, stride: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(123)
        self.conv = nn.Conv2d(3, channels, 3, stride=stride, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.zero_()
        self.out_channels = channels
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))

    @staticmethod
    def resize_to(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def tiny_config(out: Path, **top) -> dict:
    """Two synthetic species (the tiny StyleGAN2 fixtures: layer 7 is 16 x 64 x 64) and a tiny student."""
    cfg = {
        "output_dir": str(out),
        "device": "cpu",
        "steps": 6,
        "warmup_steps": 1,
        "batch_size": 2,
        "checkpoint_every": 100,
        "species": {
            "human": {"generator": {"checkpoint": str(ROSINALITY)}},
            "dog": {"generator": {"checkpoint": str(ADA)}},
        },
        "model": {
            "converter_dim": 16,
            "converter_hidden": 16,
            "planes_conv1": 16,
            "planes_block": 16,
            "planes_hg": 16,
            "num_blocks": 1,
            "depth": 3,
            "input_size": 32,
        },
        "dense_teacher": {"name": "cse", "image_size": 64},
        "pseudo_pairs": {"every": 2, "batch_size": 2, "per_step": 2, "steps": 3},
        "log": {"every": 1, "image_every": 0, "tensorboard": False, "progress": False},
    }
    cfg.update(top)
    return cfg


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def generators() -> dict:
    from dife.train.teachers.stylegan2 import StyleGAN2

    return {"human": StyleGAN2.load(ROSINALITY), "dog": StyleGAN2.load(ADA)}


def make_trainer(cfg: dict, generators: dict, **kw):
    from dife.train.trainer import Trainer

    return Trainer(cfg, dense_teacher=ConvTeacher(), generators=generators, **kw)


# --------------------------------------------------------------------------- learning
def test_every_loss_decreases(tmp_path: Path, generators: dict) -> None:
    cfg = tiny_config(
        tmp_path / "run",
        steps=30,
        warmup_steps=0,
        loss={"k1": 1.0, "k2": 1.0, "m1": 1.0, "m2": 1.0},
        optim={"lr": 2e-3},
        pseudo_pairs={"every": 1000, "batch_size": 2, "per_step": 1, "steps": 5},
    )
    tr = make_trainer(cfg, generators)
    logs = []
    for _ in range(30):
        logs.append(tr.train_step())
        tr.step += 1
    for key in ("k1", "k2", "m1", "m2", "total"):
        values = [log[key] for log in logs]
        assert all(np.isfinite(values)), key
        first, last = np.mean(values[:5]), np.mean(values[-5:])
        assert last < 0.9 * first, f"{key} did not decrease: first 5 steps {first:.4f}, last 5 steps {last:.4f}"


def test_gradients_reach_student_and_never_teachers(tmp_path: Path, generators: dict, photo_pool_dir: Path) -> None:
    cfg = tiny_config(tmp_path / "run", warmup_steps=0, augment={"tps": 0.05})
    cfg["species"]["cat"] = {"real": {"folder": str(photo_pool_dir), "index": "index.csv"}}  # photos only
    dense = ConvTeacher(channels=24, stride=4)  # 24 x 16 x 16 maps: a 1x1 projection, compared on the 32 x 32 grid
    from dife.train.trainer import Trainer

    tr = Trainer(cfg, dense_teacher=dense, generators=generators)
    log = tr.train_step()
    assert {"k1", "k2", "m1", "m2", "total", "lr", "grad_norm"} <= set(log)
    assert all(float(p.grad.abs().sum()) > 0 for p in tr.k1_head.parameters())
    model = tr.model
    enc = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in enc) and sum(float(g.abs().sum()) for g in enc) > 0
    for i, name in enumerate(model.domains):
        grads = [p.grad for p in model.converters[i].parameters()]
        if name == "cat":  # no generator teacher: its converter never gets a gradient
            assert all(g is None for g in grads)
        else:
            assert all(g is not None and float(g.abs().sum()) > 0 for g in grads), name
    for teacher in (dense, *generators.values()):
        for p in teacher.parameters():
            assert not p.requires_grad and p.grad is None


def test_matching_losses_wait_for_the_warmup(tmp_path: Path, generators: dict) -> None:
    tr = make_trainer(tiny_config(tmp_path / "run", warmup_steps=2), generators)
    before = tr.train_step()
    assert set(before) & {"m1", "m2"} == set() and {"k1", "k2"} <= set(before)
    tr.step = 2
    after = tr.train_step()
    assert {"m1", "m2"} <= set(after)
    assert len(tr._pairs) == 4  # (human, human), (human, dog), (dog, human), (dog, dog)


# --------------------------------------------------------------------------- paper options
def test_paper_matching_options_reach_the_loss(
    tmp_path: Path, generators: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop_grad_source, pair_match_stride and match_reduction as the authors: seen by every pseudo-pair loss."""
    import dife.train.losses as losses

    calls = []
    real = losses.matching_loss

    def spy(e1, e2, **kw):
        calls.append((tuple(e1.shape), tuple(e2.shape), e1.requires_grad, e2.requires_grad, kw["reduction"]))
        return real(e1, e2, **kw)

    monkeypatch.setattr(losses, "matching_loss", spy)
    paper = {"stop_grad_source": True, "pair_match_stride": 2, "match_reduction": "sum", "normalize": "cosine"}
    tr = make_trainer(tiny_config(tmp_path / "a", warmup_steps=0, loss=paper), generators)
    log = tr.train_step()
    assert len(calls) == 4 and {"m1", "m2"} <= set(log)  # 4 pseudo-pair keys
    # 2 pairs per key, the 32 x 32 embeddings pooled to 16 x 16; no gradient on the source side only
    assert all(c == ((2, 16, 16, 16), (2, 16, 16, 16), False, True, "sum") for c in calls), calls
    calls.clear()
    make_trainer(tiny_config(tmp_path / "b", warmup_steps=0), generators).train_step()
    assert all(c == ((2, 16, 32, 32), (2, 16, 32, 32), True, True, "mean") for c in calls), calls


def test_paper_sums_over_pixels_and_domains(tmp_path: Path, generators: dict) -> None:
    """distill_reduction / domain_reduction 'sum' scale L_K2 by S^2 and by the number of species, exactly."""
    base = {"warmup_steps": 5}  # before the pairs: L_K1 + L_K2 only, the same random draws in every run
    logs = {}
    for name, loss in {
        "mean": {},
        "pixels": {"distill_reduction": "sum"},
        "domains": {"domain_reduction": "sum"},
    }.items():
        logs[name] = make_trainer(tiny_config(tmp_path / name, loss=loss, **base), generators).train_step()
    assert logs["pixels"]["k2"] == pytest.approx(32 * 32 * logs["mean"]["k2"], rel=1e-5)
    assert logs["pixels"]["k1"] == pytest.approx(32 * 32 * logs["mean"]["k1"], rel=1e-5)
    assert logs["domains"]["k2"] == pytest.approx(2 * logs["mean"]["k2"], rel=1e-5)  # Σ over 2 species
    # L_K1 summed over species: the per-species masked means add up to about twice the overall mean
    assert 1.7 < logs["domains"]["k1"] / logs["mean"]["k1"] < 2.3


def test_total_batch_mode_splits_the_batch_as_the_authors(
    tmp_path: Path, generators: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dife.train.trainer import Trainer

    cfg = tiny_config(tmp_path / "run", batch_size=12, batch_mode="total", warmup_steps=1)
    cfg["pseudo_pairs"] = {"every": 10, "batch_size": 3, "per_step": 3, "steps": 3}
    tr = make_trainer(cfg, generators)
    drawn = []
    real = Trainer._sample_species

    def spy(self, name, n):
        drawn.append((name, n))
        return real(self, name, n)

    monkeypatch.setattr(Trainer, "_sample_species", spy)
    assert (tr.species_batch(False), tr.species_batch(True)) == (6, 1)  # 12 // 2; 12 // (2 * 3) - 1
    tr.train_step()
    assert drawn == [("human", 6), ("dog", 6)]
    drawn.clear()
    tr.step = 1
    tr._vis = {}  # keep the step's views
    tr.train_step()
    # 1 image per species, and 1 pair of each of the 4 keys (drawn from the 3 synthesised per key)
    assert drawn[:2] == [("human", 1), ("dog", 1)] and drawn.count(("human", 3)) == 2
    assert [len(a) for _, a, _, _, _ in tr._vis["pseudo"]] == [1, 1, 1, 1]
    per = make_trainer(tiny_config(tmp_path / "per", batch_size=12), generators)
    assert (per.species_batch(False), per.species_batch(True)) == (12, 12)
    three = tiny_config(tmp_path / "three", batch_size=12, batch_mode="total")
    three["species"]["cat"] = {"generator": {"checkpoint": str(ADA)}}
    gens = {**generators, "cat": generators["dog"]}
    assert make_trainer(three, gens).species_batch(True) == 1  # max(1, 12 // 12 - 1)


def test_pseudo_pair_health_is_logged_and_a_stuck_search_stops_training(
    tmp_path: Path, generators: dict, caplog: pytest.LogCaptureFixture
) -> None:
    from dife.train.pseudo_pairs import PseudoPairError

    tr = make_trainer(tiny_config(tmp_path / "ok", warmup_steps=0), generators)
    with caplog.at_level(logging.INFO, logger="dife.train"):
        log = tr.train_step()
    assert {"pairs_loss_drop", "pairs_mean_distance", "pairs_image_change", "pairs_moved"} <= set(log)
    assert log["pairs_moved"] == 1.0 and log["pairs_loss_drop"] > 0 and log["pairs_image_change"] > 0
    lines = [r.getMessage() for r in caplog.records if "pseudo pairs" in r.getMessage()]
    assert any(m.startswith("dife.train: step 0, pseudo pairs human -> dog: objective") for m in lines), lines
    tr.step = 1
    assert "pairs_loss_drop" not in tr.train_step()  # logged at refreshes only (every 2 steps)

    stuck = tiny_config(tmp_path / "stuck", warmup_steps=0)
    stuck["pseudo_pairs"]["lr"] = 1e-12  # the latents cannot move
    with pytest.raises(PseudoPairError, match=r"training step 0: pseudo pairs human -> human: .*did not move"):
        make_trainer(stuck, generators).train_step()
    stuck["pseudo_pairs"]["check"] = False
    make_trainer(stuck, generators, overwrite=True).train_step()  # the check can be turned off


def test_authors_colour_jitter_and_validation_scoring_are_passed_on(
    tmp_path: Path, generators: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dife.train.validate as validate

    cfg = tiny_config(
        tmp_path / "run",
        augment={"brightness": 0.1, "contrast": 0.0, "saturation": 0.0, "hue": 0.1, "jitter_p": 0.7},
        validation={"folder": str(tmp_path), "scoring": "authors"},
    )
    (tmp_path / "annotations.json").write_text("[]")
    seen = {}
    monkeypatch.setattr(validate, "read_annotations", lambda folder: [])
    monkeypatch.setattr(
        validate, "keypoint_transfer_error", lambda *a, **kw: seen.update(kw) or validate.TransferError(1.5)
    )
    tr = make_trainer(cfg, generators)
    assert tr._jitter == {
        "brightness": 0.1,
        "contrast": 0.0,
        "saturation": 0.0,
        "hue": 0.1,
        "grayscale_p": 0.0,
        "p": 0.7,
    }
    assert tr.validate() == 1.5 and seen["scoring"] == "authors"


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_reproduces_a_straight_run(tmp_path: Path, generators: dict, ema: float) -> None:
    from dife.modeling.dife import DIFE
    from dife.train.trainer import TRAINING_STATE

    # warm-up 1, pseudo pairs refreshed at steps 1 and 4: the resumed run must reuse the saved pairs at step 3
    # (with optim.ema the saved model is the weight average, resumed from the state like the rest)
    pairs = {"every": 3, "batch_size": 2, "per_step": 1, "steps": 2}
    optim = {"lr": 1e-3, "ema": ema}
    tr = make_trainer(tiny_config(tmp_path / "a", steps=6, pseudo_pairs=pairs, optim=optim), generators)
    fresh = {k: v.clone() for k, v in tr.model.state_dict().items()}
    straight = tr.fit()
    part = tiny_config(tmp_path / "b", steps=3, pseudo_pairs=pairs, optim=optim)
    make_trainer(part, generators).fit()
    state = torch.load(tmp_path / "b" / "last" / TRAINING_STATE, map_location="cpu", weights_only=True)
    assert state["step"] == 3 and len(state["ranks"]) == 1 and len(state["ranks"][0]["pairs"]) == 4
    part["steps"] = 6
    resumed = make_trainer(part, generators, resume=True).fit()
    a = DIFE.from_pretrained(straight / "last").state_dict()
    b = DIFE.from_pretrained(resumed / "last").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], fresh[k]) for k in a)  # and training did change the weights


def test_output_folder_guards(tmp_path: Path, generators: dict) -> None:
    from dife.errors import InputError

    with pytest.raises(InputError, match="nothing to resume"):
        make_trainer(tiny_config(tmp_path / "run"), generators, resume=True)
    make_trainer(tiny_config(tmp_path / "run", steps=1), generators).fit()
    with pytest.raises(InputError, match="already holds a training run"):
        make_trainer(tiny_config(tmp_path / "run", steps=1), generators)
    make_trainer(tiny_config(tmp_path / "run", steps=1), generators, overwrite=True)


# --------------------------------------------------------------------------- errors
def test_layer_and_width_mismatch_name_both_sides(tmp_path: Path) -> None:
    from dife.errors import InputError
    from dife.train.trainer import Trainer

    cfg = tiny_config(tmp_path / "run")
    cfg["species"]["dog"]["generator"]["layer"] = 9
    with pytest.raises(InputError, match=r"species\.dog\.generator\.layer = 9.*has no layer 9.*\(-1, 1, 3, 5, 7\)"):
        Trainer(cfg, dense_teacher=ConvTeacher())
    cfg = tiny_config(tmp_path / "run")
    cfg["model"]["converter_dim"] = 512
    with pytest.raises(InputError, match=r"converter_dim = 512.*'human'.*16 channels"):
        Trainer(cfg, dense_teacher=ConvTeacher())


def test_missing_checkpoint_and_unknown_species(
    tmp_path: Path, generators: dict, faces_dir: Path, photo_pool_dir: Path
) -> None:
    from dife.errors import ModelNotFoundError, UnknownDomainError
    from dife.train.trainer import train

    cfg = tiny_config(tmp_path / "run")
    cfg["dense_teacher"]["checkpoint"] = str(tmp_path / "cse.pkl")
    cfg["species"]["dog"]["generator"]["checkpoint"] = str(tmp_path / "afhqdog.pkl")
    with pytest.raises(ModelNotFoundError, match=r"species\.dog\.generator\.checkpoint.*afhqdog\.pkl"):
        train(cfg)
    with pytest.raises(UnknownDomainError, match="unknown species 'wolf'"):
        train(cfg, **{"species.wolf.generator.checkpoint": "x.pt"})
    cfg = tiny_config(tmp_path / "run", validation={"folder": str(faces_dir), "species": ["human", "wolf"]})
    with pytest.raises(UnknownDomainError, match=r"validation.species \['wolf'\].*has no such images"):
        make_trainer(cfg, generators)
    cfg = tiny_config(tmp_path / "run")
    cfg["species"]["cat"] = {"real": {"folder": str(photo_pool_dir), "index": "index.csv", "label": "wolf"}}
    with pytest.raises(UnknownDomainError, match=r"no images of species \['wolf'\]"):
        make_trainer(cfg, generators)


def test_bf16_request_runs_in_float32_on_cpu(tmp_path: Path, generators: dict) -> None:
    tr = make_trainer(tiny_config(tmp_path / "run", precision="bf16", channels_last=True), generators)
    assert not tr.bf16 and not tr.channels_last
    log = tr.train_step()
    assert np.isfinite(log["total"])


# --------------------------------------------------------------------------- logging
def test_without_tensorboard_training_goes_on_with_one_notice(
    tmp_path: Path, generators: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    cfg = tiny_config(tmp_path / "run", steps=2)
    cfg["log"] = {"every": 1, "image_every": 1, "tensorboard": True, "progress": False}
    with caplog.at_level(logging.WARNING, logger="dife.train"):
        out = make_trainer(cfg, generators).fit()
    notices = [r for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    assert len(notices) == 1 and "\n" not in notices[0].getMessage()
    assert not (out / "tb").exists()
    from PIL import Image

    pngs = sorted((out / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["step_0000000.png", "step_0000001.png"]
    with Image.open(pngs[1]) as im:
        # 2 species rows + 4 pseudo-pair rows of tiles, at least 64 px each
        assert im.size[1] >= 6 * 64


def test_tensorboard_scalars_are_written(tmp_path: Path, generators: dict) -> None:
    pytest.importorskip("tensorboard")
    cfg = tiny_config(tmp_path / "run", steps=2)
    cfg["log"]["tensorboard"] = True
    out = make_trainer(cfg, generators).fit()
    assert list((out / "tb").glob("events.out.tfevents.*"))


# --------------------------------------------------------------------------- validation
def test_validation_keeps_the_best_and_stops_early(tmp_path: Path, generators: dict, faces_dir: Path) -> None:
    cfg = tiny_config(
        tmp_path / "run",
        steps=10,
        validation={"folder": str(faces_dir), "every": 1, "pairs": 2, "patience": 1, "min_delta": 1e6},
    )
    tr = make_trainer(cfg, generators)
    out = tr.fit()
    assert tr.step == 2 and len(tr.history) == 2  # the second validation cannot beat the first by 1e6
    assert tr.best == tr.history[0][1]
    from dife.modeling.dife import DIFE

    best = DIFE.from_pretrained(out / "best").state_dict()
    final = DIFE.from_pretrained(out).state_dict()
    assert all(torch.equal(best[k], final[k]) for k in best)  # the exported model is the best one
    assert "val_keypoint_error_70px" in (out / "README.md").read_text()


# --------------------------------------------------------------------------- command line
def test_cli_train_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_cse_checkpoint: Path) -> None:
    from dife.cli import main
    from dife.modeling.dife import DIFE
    from dife.train.config import load_config

    cfg = tiny_config(tmp_path / "unused", steps=50)
    cfg["dense_teacher"] = {
        "name": "cse",
        "checkpoint": str(tiny_cse_checkpoint),
        "image_size": 64,
        "input_size": 64,
    }  # an 8-d CSE: trained through a 1x1 projection
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))  # species order = converter order
    out = tmp_path / "out"
    argv = ["train", str(path), "steps=3", f"output_dir={out}", "log.image_every=2", "precision=bf16"]
    assert main(argv) == 0
    assert f"trained model written to {out}" in capsys.readouterr().out
    model = DIFE.from_pretrained(out)
    assert model.domains == ("human", "dog") and model.config.converter_dim == 16 and model.config.input_size == 32
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 32, 32)
    resolved = load_config(out / "train_config.yaml")
    assert resolved == load_config(path, ["steps=3", f"output_dir={out}", "log.image_every=2", "precision=bf16"])
    assert (out / "last" / "training_state.pt").is_file() and (out / "last" / "config.json").is_file()
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_0000000.png", "step_0000002.png"]
    assert not (out / "best").exists()  # no validation folder
    state = torch.load(out / "last" / "training_state.pt", weights_only=True)
    assert state["k1_head"]["weight"].shape == (8, 16, 1, 1)
    # a second run into the same folder is refused with one line, resuming is fine
    assert main(argv) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(["train", str(path), "steps=4", f"output_dir={out}", "--resume"]) == 0
    assert torch.load(out / "last" / "training_state.pt", weights_only=True)["step"] == 4
