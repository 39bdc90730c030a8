"""Pseudo pairs by latent optimisation (eq. 3) with tiny StyleGAN2 teachers, on the CPU.

The two teachers are the tiny 64 px fixtures of both checkpoint layouts (rosinality and NVIDIA ADA),
loaded through the ``fixtures_dir`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dife.errors import InputError, ShapeError, UnknownDomainError
from dife.modeling import DIFE
from dife.train.losses import distillation_loss
from dife.train.pseudo_pairs import (
    PseudoPairCache,
    PseudoPairError,
    PseudoPairs,
    SearchHealth,
    pseudo_pair_objective,
    synthesize_pseudo_pairs,
)
from dife.train.teachers import StyleGAN2

ROSI = "stylegan2_rosinality_tiny64.pt"
ADA = "stylegan2_ada_tiny64_state.pt"
B = 2


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny ops on a small shared CPU: a second intra-op thread only adds waiting (10x slower here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _teacher(fixtures_dir, name):
    path = fixtures_dir / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    return StyleGAN2.load(path)


@pytest.fixture(scope="module")
def rosi(fixtures_dir):
    return _teacher(fixtures_dir, ROSI)


@pytest.fixture(scope="module")
def ada(fixtures_dir):
    return _teacher(fixtures_dir, ADA)


@pytest.fixture(scope="module")
def rosi_mean(rosi):
    return rosi.mean_latent(4096, seed=0)


@pytest.fixture(scope="module")
def student(tiny_config, rosi):
    # The tiny generators' layer 7 (64 x 64) has 16 channels: converters to 16.
    width = rosi.feature_shape(7)[0]
    cfg = dataclasses.replace(tiny_config, converter_dim=width, converter_hidden=16)
    torch.manual_seed(0)
    return DIFE(cfg).eval()


@pytest.fixture(scope="module")
def sources():
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, 3, 96, 96, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def inter(student, sources, rosi, rosi_mean):
    """human -> dog pairs, 25 Adam steps, no early stop."""
    return synthesize_pseudo_pairs(
        student, sources, rosi, "dog", source_domain="human", steps=25, early_stop_tol=None, w_mean=rosi_mean
    )


def _target(student, x, domain):
    with torch.no_grad():
        return student.convert(student(x), domain)


# ------------------------------------------------------------------ objective
def test_objective_decreases_for_every_item(inter):
    assert inter.n_iter == 25 and not inter.stopped_early
    assert inter.loss_history.shape == (26,)
    assert inter.initial_loss.shape == inter.final_loss.shape == (B,)
    assert bool((inter.final_loss < inter.initial_loss - 1e-3).all()), (inter.initial_loss, inter.final_loss)
    assert float(inter.loss_history[-1]) < float(inter.loss_history[0])
    assert float(inter.loss_history[0]) == pytest.approx(float(inter.initial_loss.mean()), rel=1e-5)


def test_result_is_consistent_with_eq3(inter, student, sources, rosi, rosi_mean):
    # eq. 3: the norm of the whole difference map (bilinear resize to the feature grid) + λ ||w - w̄||.
    target = _target(student, sources, "dog")  # (B, 16, 96, 96)
    feats = rosi.features(inter.w, layers=(7,))[7]  # (B, 16, 64, 64)
    resized = F.interpolate(target, size=(64, 64), mode="bilinear", align_corners=False)
    data = pseudo_pair_objective(feats, target, inter.w, rosi_mean, lam=0.0)
    torch.testing.assert_close(data, (feats - resized).flatten(1).norm(dim=1))
    full = pseudo_pair_objective(feats, target, inter.w, rosi_mean, lam=1.0)
    torch.testing.assert_close(full, data + torch.linalg.vector_norm(inter.w - rosi_mean, dim=-1))
    # the per-pixel mean data term is the distillation loss's
    pix = pseudo_pair_objective(feats, target, inter.w, rosi_mean, lam=0.0, data_term="pixel_mean")
    assert float(pix.mean()) == pytest.approx(float(distillation_loss(target, feats)), rel=1e-5)
    # final_loss is the objective at the returned latents; the features are the teacher's there.
    torch.testing.assert_close(inter.final_loss, full, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(inter.features[7], feats)
    # The latents are away from w̄ and the images are the teacher's at those latents.
    assert bool((torch.linalg.vector_norm(inter.w - rosi_mean, dim=-1) > 1e-2).all())
    with torch.no_grad():
        img = rosi.synthesis(inter.w, noise_mode="const")
    expected = F.interpolate(img, size=(96, 96), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)
    torch.testing.assert_close(inter.images, expected)


def test_starts_are_sampled_truncated_latents_of_the_target(inter, student, sources, rosi, rosi_mean):
    # the authors' starts: truncated (psi 0.7) samples of the target generator, one per item
    z_mapped = rosi.sample_w(B, truncation=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(inter.w_start, rosi_mean + 0.7 * (z_mapped - rosi_mean))
    assert not torch.allclose(inter.w_start[0], inter.w_start[1])
    # the objective at the start is the initial loss; the search moved every item from there
    feats = rosi.features(inter.w_start, layers=(7,))[7]
    start_obj = pseudo_pair_objective(feats, _target(student, sources, "dog"), inter.w_start, rosi_mean)
    torch.testing.assert_close(inter.initial_loss, start_obj, atol=1e-4, rtol=1e-5)
    assert bool((inter.health.latent_step > 0.1).all())
    # another generator gives other starts; psi 0 starts at w̄ exactly
    other = synthesize_pseudo_pairs(
        student,
        sources,
        rosi,
        "dog",
        steps=1,
        check=False,
        generator=torch.Generator().manual_seed(5),
        w_mean=rosi_mean,
    )
    assert not torch.allclose(other.w_start, inter.w_start)
    at_mean = synthesize_pseudo_pairs(student, sources, rosi, "dog", steps=0, start_truncation=0.0, w_mean=rosi_mean)
    torch.testing.assert_close(at_mean.w_start, rosi_mean.expand(B, -1))


@pytest.mark.parametrize("name", [ROSI, ADA])
def test_defaults_improve_every_item_and_move_away_from_mean(fixtures_dir, name, student, sources):
    """The bar of the paper pipeline: with default settings every search moves, on both checkpoint layouts."""
    teacher = _teacher(fixtures_dir, name)
    w_bar = teacher.mean_latent(4096, seed=0)
    for domain in ("human", "dog"):
        pairs = synthesize_pseudo_pairs(student, sources, teacher, domain, source_domain="human")
        h = pairs.health
        assert h.checked and bool(h.moved.all()) and int(h.attempts.max()) == 1, h.summary()
        assert bool((pairs.final_loss < pairs.initial_loss * 0.95).all()), (pairs.initial_loss, pairs.final_loss)
        dist = torch.linalg.vector_norm(pairs.w - w_bar, dim=-1)
        assert bool((dist > 0.5).all()), dist
        # ... and every item ends below its objective at w̄ (the mean image is not the answer)
        w_mean = w_bar.expand(B, -1)
        at_mean = pseudo_pair_objective(
            teacher.features(w_mean, layers=(7,))[7], _target(student, sources, domain), w_mean, w_bar
        )
        assert bool((pairs.final_loss < at_mean).all()), (pairs.final_loss, at_mean)
        assert bool((h.image_change > 0.05).all()) and not torch.allclose(pairs.images[0], pairs.images[1])


def test_outputs_shapes_ranges_and_metadata(inter, sources, rosi):
    assert isinstance(inter, PseudoPairs) and len(inter) == B
    assert inter.images.shape == (B, 3, 96, 96) and inter.images.dtype == torch.float32
    assert float(inter.images.min()) >= -1 and float(inter.images.max()) <= 1
    assert float(inter.images.std()) > 0.01  # a real image, not a constant
    assert set(inter.features) == {7} and inter.features[7].shape == (B, 16, 64, 64)
    assert inter.w.shape == (B, rosi.w_dim)
    assert (inter.source_domain, inter.target_domain, inter.intra_species) == ("human", "dog", False)
    assert torch.equal(inter.source_images, sources)
    for t in (inter.images, inter.w, inter.final_loss, inter.features[7]):
        assert not t.requires_grad


def test_objective_and_image_differ_between_sources(inter):
    # Each item has its own latent: different sources give different latents and images.
    assert not torch.allclose(inter.w[0], inter.w[1])
    assert not torch.allclose(inter.images[0], inter.images[1])


def test_large_lambda_keeps_w_near_mean(inter, student, sources, rosi, rosi_mean):
    # the same sampled starts (default generator), 25 steps: a strong prior pulls towards w̄
    tight = synthesize_pseudo_pairs(
        student, sources, rosi, "dog", lam=200.0, steps=25, early_stop_tol=None, w_mean=rosi_mean
    )
    torch.testing.assert_close(tight.w_start, inter.w_start)
    d_tight = torch.linalg.vector_norm(tight.w - rosi_mean, dim=-1)
    d_loose = torch.linalg.vector_norm(inter.w - rosi_mean, dim=-1)  # lam = 1
    d_start = torch.linalg.vector_norm(inter.w_start - rosi_mean, dim=-1)
    assert bool((d_tight < d_loose).all()) and bool((d_tight < d_start).all()), (d_tight, d_loose, d_start)
    assert bool((tight.final_loss <= tight.initial_loss).all())


def test_intra_species_pairs_with_ada_teacher(student, sources, ada):
    pairs = synthesize_pseudo_pairs(
        student, sources, ada, "human", source_domain=0, lam=0.1, steps=10, early_stop_tol=None
    )  # default w̄: mean of 4096 samples
    assert pairs.intra_species and pairs.source_domain == pairs.target_domain == "human"
    assert bool((pairs.final_loss < pairs.initial_loss).all()), (pairs.initial_loss, pairs.final_loss)
    assert pairs.images.shape == (B, 3, 96, 96)


# -------------------------------------------------------------- health check
def test_health_check_fires_on_a_search_stuck_at_the_mean(student, sources, ada, caplog):
    # The failure of the old defaults: start at w̄, per-pixel mean data term, λ = 1. This tiny
    # teacher's data-term gradient at w̄ is shorter than λ, so w̄ minimises λ||w - w̄||_2 + data
    # (subgradient condition): Adam never leaves it and every "pair" is the mean image.
    w_bar = ada.mean_latent()
    target = _target(student, sources, "human")
    w = w_bar.expand(B, -1).clone().requires_grad_(True)
    data = pseudo_pair_objective(ada.features(w)[7], target, w, w_bar, lam=0.0, data_term="pixel_mean")
    (grad,) = torch.autograd.grad(data.sum(), [w])
    assert bool((torch.linalg.vector_norm(grad, dim=-1) < 1.0).all())
    old = {"start": "mean", "data_term": "pixel_mean", "lam": 1.0, "steps": 6, "early_stop_tol": None, "w_mean": w_bar}

    # 1. no retries: it fails loudly, naming the items and their numbers
    with pytest.raises(PseudoPairError, match=r"did not move for 2 of 2 items") as ei:
        synthesize_pseudo_pairs(student, sources, ada, "human", source_domain="dog", retries=0, **old)
    msg = str(ei.value)
    assert "dog -> human" in msg and "item 0: loss" in msg and "drop 0%" in msg and "|w - w_mean| 0," in msg

    # 2. on_failure="warn": returned, flagged and logged; the pairs are the mean image
    with caplog.at_level("WARNING", logger="dife.train.pseudo_pairs"):
        stuck = synthesize_pseudo_pairs(student, sources, ada, "human", retries=0, on_failure="warn", **old)
    assert "did not move" in caplog.text
    torch.testing.assert_close(stuck.w, w_bar.expand(B, -1))
    torch.testing.assert_close(stuck.final_loss, stuck.initial_loss)
    h = stuck.health
    assert h.checked and not bool(h.moved.any()) and h.summary()["moved"] == 0.0
    assert float(h.image_change.max()) == 0.0 and float(h.mean_distance.max()) == 0.0
    torch.testing.assert_close(stuck.images[0], stuck.images[1])

    # 3. with retries (default 2): the stuck items are searched again from sampled starts and move
    caplog.clear()
    with caplog.at_level("WARNING", logger="dife.train.pseudo_pairs"):
        fixed = synthesize_pseudo_pairs(student, sources, ada, "human", **{**old, "steps": 15})
    assert "searching them again from new sampled starts" in caplog.text
    assert bool(fixed.health.moved.all()) and bool((fixed.health.attempts == 2).all())
    assert bool((torch.linalg.vector_norm(fixed.w - w_bar, dim=-1) > 0.1).all())
    assert fixed.health.summary()["retries"] == 2.0

    # 4. the eq.-3 data term moves even from w̄ (its gradient is sqrt(64 * 64) times larger)
    moved = synthesize_pseudo_pairs(student, sources, ada, "human", **{**old, "data_term": "l2", "retries": 0})
    assert bool(moved.health.moved.all()) and bool((moved.final_loss < moved.initial_loss).all())


def test_health_check_fires_when_the_search_cannot_move(student, sources, rosi, rosi_mean):
    # a step too small to change anything: every retry fails too, then a loud error
    with pytest.raises(PseudoPairError, match=r"even after 2 search\(es\) from new starts"):
        synthesize_pseudo_pairs(student, sources, rosi, "dog", lr=1e-12, steps=3, w_mean=rosi_mean)
    # check=False: no check, the unmoved pairs come back
    quiet = synthesize_pseudo_pairs(student, sources, rosi, "dog", lr=1e-12, steps=3, check=False, w_mean=rosi_mean)
    assert not quiet.health.checked and bool(quiet.health.moved.all())
    assert float(quiet.health.loss_drop.max()) < 1e-6


def test_health_select_to_and_summary(inter):
    h = inter.health
    assert isinstance(h, SearchHealth) and len(h) == B
    assert set(h.summary()) == {
        "loss_drop",
        "min_loss_drop",
        "latent_step",
        "mean_distance",
        "min_mean_distance",
        "image_change",
        "min_image_change",
        "moved",
        "retries",
    }
    torch.testing.assert_close(h.final_loss, inter.final_loss)
    torch.testing.assert_close(h.loss_drop, (inter.initial_loss - inter.final_loss) / inter.initial_loss)
    one = inter.select([1])
    assert len(one.health) == 1 and float(one.health.image_change[0]) == float(h.image_change[1])
    assert torch.equal(one.w_start[0], inter.w_start[1])
    assert "item 1: loss" in h.describe(1)
    assert inter.to("cpu").health.moved.device.type == "cpu"


def test_explicit_start_latents(student, sources, rosi, rosi_mean):
    start = rosi_mean + 0.3 * torch.randn(B, rosi.w_dim, generator=torch.Generator().manual_seed(2))
    pairs = synthesize_pseudo_pairs(student, sources, rosi, "dog", start=start, steps=4, w_mean=rosi_mean)
    torch.testing.assert_close(pairs.w_start, start)
    plus = synthesize_pseudo_pairs(
        student, sources, rosi, "dog", start=start, w_space="w+", steps=0, w_mean=rosi_mean
    )  # (B, w_dim) starts are copied to every row in w+ space
    torch.testing.assert_close(plus.w, start[:, None].expand(-1, rosi.num_ws, -1))
    with pytest.raises(ShapeError, match=r"\(2, 32\)"):
        synthesize_pseudo_pairs(student, sources, rosi, "dog", start=start[:1], w_mean=rosi_mean)
    bad = start.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN or infinite"):
        synthesize_pseudo_pairs(student, sources, rosi, "dog", start=bad, w_mean=rosi_mean)


def test_w_plus_space(student, sources, rosi, rosi_mean):
    pairs = synthesize_pseudo_pairs(
        student, sources, rosi, 1, w_space="w+", steps=4, early_stop_tol=None, w_mean=rosi_mean
    )
    assert pairs.w.shape == (B, rosi.num_ws, rosi.w_dim)
    assert pairs.target_domain == "dog"
    assert bool((pairs.final_loss < pairs.initial_loss).all())
    # w+ rows equal to one w cost the same as that w: same starts, same initial objective in w space.
    single = synthesize_pseudo_pairs(student, sources, rosi, 1, steps=0, w_mean=rosi_mean)
    torch.testing.assert_close(pairs.initial_loss, single.initial_loss)
    torch.testing.assert_close(pairs.w_start, single.w_start[:, None].expand(-1, rosi.num_ws, -1))


# -------------------------------------------------------------- early stopping
def test_early_stop_on_flat_objective(student, sources, rosi, rosi_mean):
    pairs = synthesize_pseudo_pairs(
        student,
        sources,
        rosi,
        "dog",
        lr=1e-12,
        steps=50,
        patience=3,
        early_stop_tol=1e-4,
        w_mean=rosi_mean,
        check=False,
    )
    assert pairs.stopped_early and pairs.n_iter == 3
    assert pairs.loss_history.shape == (4,)


def test_no_early_stop_when_disabled(student, sources, rosi, rosi_mean):
    pairs = synthesize_pseudo_pairs(
        student, sources, rosi, "dog", lr=1e-12, steps=4, patience=1, early_stop_tol=None, w_mean=rosi_mean, check=False
    )
    assert not pairs.stopped_early and pairs.n_iter == 4 and pairs.loss_history.shape == (5,)


def test_absolute_threshold_and_zero_steps_return_the_starts(student, sources, rosi, rosi_mean):
    # a start that already meets target_loss is healthy: nothing to search
    reached = synthesize_pseudo_pairs(student, sources, rosi, "dog", target_loss=1e9, w_mean=rosi_mean)
    assert reached.stopped_early and reached.n_iter == 0 and bool(reached.health.moved.all())
    none = synthesize_pseudo_pairs(student, sources, rosi, "dog", steps=0, w_mean=rosi_mean)
    assert none.n_iter == 0 and not none.stopped_early and not none.health.checked
    for p in (reached, none):
        torch.testing.assert_close(p.w, p.w_start)
        torch.testing.assert_close(p.final_loss, p.initial_loss)
    mean = synthesize_pseudo_pairs(student, sources, rosi, "dog", steps=0, start="mean", w_mean=rosi_mean)
    torch.testing.assert_close(mean.w, rosi_mean.expand(B, -1))


# ----------------------------------------------------------- no grad, modes
def test_no_gradient_reaches_teacher_or_student(tiny_config, sources, rosi, rosi_mean):
    cfg = dataclasses.replace(tiny_config, converter_dim=16, converter_hidden=16)
    torch.manual_seed(0)
    model = DIFE(cfg).train()
    model.encoder.eval()  # mixed modes must be restored as they were
    teacher = copy.deepcopy(rosi)
    for p in teacher.parameters():  # even a teacher whose parameters require grad gets none
        p.requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    synthesize_pseudo_pairs(model, sources, teacher, "dog", steps=3, w_mean=rosi_mean)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(p.grad is None and p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None and not p.requires_grad for p in rosi.parameters())
    assert {name: m.training for name, m in model.named_modules()} == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_deterministic(student, sources, rosi, rosi_mean):
    a = synthesize_pseudo_pairs(student, sources, rosi, "dog", steps=3, w_mean=rosi_mean)
    b = synthesize_pseudo_pairs(student, sources, rosi, "dog", steps=3, w_mean=rosi_mean)
    assert torch.equal(a.w, b.w) and torch.equal(a.images, b.images) and torch.equal(a.loss_history, b.loss_history)


def test_works_under_inference_mode(student, sources, rosi, rosi_mean):
    with torch.inference_mode():
        pairs = synthesize_pseudo_pairs(student, sources, rosi, "dog", steps=2, early_stop_tol=None, w_mean=rosi_mean)
    assert pairs.n_iter == 2 and pairs.images.shape == (B, 3, 96, 96)


# ------------------------------------------------------------------- errors
def test_converter_width_mismatch_names_both(tiny_model, sources, rosi):
    assert tiny_model.config.converter_dim == 32
    with pytest.raises(ShapeError, match=r"32.*16"):
        synthesize_pseudo_pairs(tiny_model, sources, rosi, "dog", steps=1)


def test_unknown_domain(student, sources, rosi):
    with pytest.raises(UnknownDomainError, match="horse"):
        synthesize_pseudo_pairs(student, sources, rosi, "horse")
    with pytest.raises(UnknownDomainError):
        synthesize_pseudo_pairs(student, sources, rosi, 7)
    with pytest.raises(UnknownDomainError, match="cow"):
        synthesize_pseudo_pairs(student, sources, rosi, "dog", source_domain="cow")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"w_space": "z"}, "w_space"),
        ({"prior": "l1"}, "prior"),
        ({"layer": 6}, "layer"),
        ({"layer": 5}, "24"),  # layer 5 is 24 channels wide: width mismatch (ShapeError is an InputError)
        ({"steps": -1}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"lam": -1.0}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"patience": 0}, "patience"),
        ({"noise_mode": "loud"}, "noise_mode"),
        ({"w_mean": torch.zeros(5)}, r"\(32,\)"),
        ({"data_term": "l1"}, "data_term"),
        ({"start": "zero"}, "start"),
        ({"start_truncation": 1.5}, "start_truncation"),
        ({"retries": -1}, "retries"),
        ({"min_loss_drop": -0.1}, "min_loss_drop"),
        ({"min_image_change": float("nan")}, "min_image_change"),
        ({"on_failure": "ignore"}, "on_failure"),
        ({"check": "yes"}, "check"),
    ],
)
def test_bad_options(student, sources, rosi, rosi_mean, kwargs, match):
    kw = {"w_mean": rosi_mean, "steps": 1, **kwargs}
    with pytest.raises(InputError, match=match):
        synthesize_pseudo_pairs(student, sources, rosi, "dog", **kw)


def test_bad_sources(student, sources, rosi, rosi_mean):
    with pytest.raises(ShapeError, match=r"\(2, 1, 96, 96\)"):
        synthesize_pseudo_pairs(student, sources[:, :1], rosi, "dog", w_mean=rosi_mean)
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        synthesize_pseudo_pairs(student, (sources + 1) * 127.5, rosi, "dog", w_mean=rosi_mean)
    bad = sources.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        synthesize_pseudo_pairs(student, bad, rosi, "dog", w_mean=rosi_mean)


def test_wrong_types_and_device_mismatch(student, sources, rosi, fixtures_dir):
    with pytest.raises(InputError, match="student"):
        synthesize_pseudo_pairs(torch.nn.Linear(2, 2), sources, rosi, "dog")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="target_teacher"):
        synthesize_pseudo_pairs(student, sources, object(), "dog")  # type: ignore[arg-type]
    on_meta = StyleGAN2.from_checkpoint(torch.load(fixtures_dir / ROSI, weights_only=True), device="meta")
    with pytest.raises(InputError, match="meta"):
        synthesize_pseudo_pairs(student, sources, on_meta, "dog")


def test_objective_function_validates():
    f = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ShapeError, match=r"\(2, 5, 8, 8\)"):
        pseudo_pair_objective(f, torch.zeros(2, 5, 8, 8), torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ShapeError, match="w_mean"):
        pseudo_pair_objective(f, torch.zeros(2, 4, 16, 16), torch.zeros(2, 3), torch.zeros(4))


# -------------------------------------------------------------- containers
def test_select_and_to(inter):
    one = inter.select([1])
    assert len(one) == 1 and one.target_domain == "dog"
    assert torch.equal(one.images[0], inter.images[1]) and torch.equal(one.w[0], inter.w[1])
    assert torch.equal(one.features[7][0], inter.features[7][1])
    assert torch.equal(inter.select(slice(0, 1)).source_images[0], inter.source_images[0])
    with pytest.raises(InputError, match="out of range"):
        inter.select([2])
    with pytest.raises(InputError, match="empty"):
        inter.select([])
    light = inter.to("cpu", features=False)
    assert light.features == {} and torch.equal(light.images, inter.images)


def test_cache_refreshes_every_n_steps(student, sources, rosi, monkeypatch):
    calls = {"mean": 0, "sources": 0}
    mean_latent = rosi.mean_latent

    def counting_mean(*args, **kwargs):
        calls["mean"] += 1
        return mean_latent(*args, **kwargs)

    def draw():
        calls["sources"] += 1
        return sources + 0.0

    monkeypatch.setattr(rosi, "mean_latent", counting_mean)
    cache = PseudoPairCache(every=10, steps=2, early_stop_tol=None)
    assert cache.needs_refresh(0, ("human", "dog"))
    p0 = cache.maybe_refresh(0, student, draw, rosi, "dog", source_domain="human")
    assert calls == {"mean": 1, "sources": 1} and cache.refreshes == 1
    assert p0.device.type == "cpu" and p0.n_iter == 2 and ("human", "dog") in cache
    p5 = cache.maybe_refresh(5, student, draw, rosi, "dog", source_domain="human")
    assert calls["sources"] == 1 and p5 is p0 and cache.last_refresh(("human", "dog")) == 0
    cache.maybe_refresh(10, student, draw, rosi, "dog", source_domain="human")
    assert calls == {"mean": 1, "sources": 2} and cache.last_refresh(("human", "dog")) == 10
    # another key is independent; w̄ of the same teacher is reused
    cache.maybe_refresh(11, student, sources, rosi, "human", source_domain="human")
    assert calls["mean"] == 1 and len(cache) == 2 and cache.refreshes == 3
    assert cache.get(("human", "human")).intra_species
    cache.clear()
    assert len(cache) == 0 and cache.get(("human", "dog")) is None


def test_cache_validates():
    with pytest.raises(InputError, match="every"):
        PseudoPairCache(every=0)
    with pytest.raises(InputError, match="stepz"):
        PseudoPairCache(stepz=3)
    cache = PseudoPairCache(data_term="l2", start="sample", retries=1, on_failure="warn", check=True)
    assert cache.options["retries"] == 1
