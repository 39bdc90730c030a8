"""Pseudo pairs by latent optimisation (eq. 3) with tiny StyleGAN2 teachers, on the CPU."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dife.errors import InputError, ShapeError, UnknownDomainError
from dife.modeling import DIFE
from dife.train.losses import distillation_loss
from dife.train.pseudo_pairs import PseudoPairCache, PseudoPairs, pseudo_pair_objective, synthesize_pseudo_pairs
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
    # The objective uses the distillation loss's data term (per-pixel L2, bilinear resize to the feature grid).
    target = _target(student, sources, "dog")  # (B, 16, 96, 96)
    feats = rosi.features(inter.w, layers=(7,))[7]  # (B, 16, 64, 64)
    data = pseudo_pair_objective(feats, target, inter.w, rosi_mean, lam=0.0)
    assert float(data.mean()) == pytest.approx(float(distillation_loss(target, feats)), rel=1e-5)
    full = pseudo_pair_objective(feats, target, inter.w, rosi_mean, lam=1.0)
    torch.testing.assert_close(full, data + torch.linalg.vector_norm(inter.w - rosi_mean, dim=-1))
    # final_loss is the objective at the returned latents; the features are the teacher's there.
    torch.testing.assert_close(inter.final_loss, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inter.features[7], feats)
    # The latents moved away from w̄ and the images are the teacher's at those latents.
    assert bool((torch.linalg.vector_norm(inter.w - rosi_mean, dim=-1) > 1e-2).all())
    with torch.no_grad():
        img = rosi.synthesis(inter.w, noise_mode="const")
    expected = F.interpolate(img, size=(96, 96), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)
    torch.testing.assert_close(inter.images, expected)


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
    tight = synthesize_pseudo_pairs(
        student, sources, rosi, "dog", lam=50.0, steps=10, early_stop_tol=None, w_mean=rosi_mean
    )
    d_tight = torch.linalg.vector_norm(tight.w - rosi_mean, dim=-1)
    d_loose = torch.linalg.vector_norm(inter.w - rosi_mean, dim=-1)  # lam = 1
    assert bool((d_tight < 0.2 * d_loose).all()), (d_tight, d_loose)
    assert bool((tight.final_loss <= tight.initial_loss).all())


def test_intra_species_pairs_with_ada_teacher(student, sources, ada):
    pairs = synthesize_pseudo_pairs(
        student, sources, ada, "human", source_domain=0, lam=0.1, steps=10, early_stop_tol=None
    )  # default w̄: mean of 4096 samples
    assert pairs.intra_species and pairs.source_domain == pairs.target_domain == "human"
    assert bool((pairs.final_loss < pairs.initial_loss).all()), (pairs.initial_loss, pairs.final_loss)
    assert pairs.images.shape == (B, 3, 96, 96)


def test_l2_prior_sticks_at_mean_when_data_gradient_is_short(student, sources, ada):
    # This tiny teacher's data-term gradient at w̄ is shorter than λ = 1, so w̄ minimises
    # λ||w - w̄||_2 + data (subgradient condition): the result is w̄. The squared prior moves.
    w_bar = ada.mean_latent()
    target = _target(student, sources, "human")
    w = w_bar.expand(B, -1).clone().requires_grad_(True)
    data = pseudo_pair_objective(ada.features(w)[7], target, w, w_bar, lam=0.0)
    (grad,) = torch.autograd.grad(data.sum(), [w])
    assert bool((torch.linalg.vector_norm(grad, dim=-1) < 1.0).all())
    kw = {"lam": 1.0, "steps": 6, "early_stop_tol": None, "w_mean": w_bar}
    stuck = synthesize_pseudo_pairs(student, sources, ada, "human", **kw)
    torch.testing.assert_close(stuck.w, w_bar.expand(B, -1))
    torch.testing.assert_close(stuck.final_loss, stuck.initial_loss)
    smooth = synthesize_pseudo_pairs(student, sources, ada, "human", prior="squared", **kw)
    assert bool((smooth.final_loss < smooth.initial_loss).all())


def test_w_plus_space(student, sources, rosi, rosi_mean):
    pairs = synthesize_pseudo_pairs(
        student, sources, rosi, 1, w_space="w+", steps=4, early_stop_tol=None, w_mean=rosi_mean
    )
    assert pairs.w.shape == (B, rosi.num_ws, rosi.w_dim)
    assert pairs.target_domain == "dog"
    assert bool((pairs.final_loss < pairs.initial_loss).all())
    # w+ rows equal to w̄ cost the same as a single w̄: same initial objective as the w-space run.
    single = synthesize_pseudo_pairs(student, sources, rosi, 1, steps=0, w_mean=rosi_mean)
    torch.testing.assert_close(pairs.initial_loss, single.initial_loss)


# -------------------------------------------------------------- early stopping
def test_early_stop_on_flat_objective(student, sources, rosi, rosi_mean):
    pairs = synthesize_pseudo_pairs(
        student, sources, rosi, "dog", lr=1e-12, steps=50, patience=3, early_stop_tol=1e-4, w_mean=rosi_mean
    )
    assert pairs.stopped_early and pairs.n_iter == 3
    assert pairs.loss_history.shape == (4,)


def test_no_early_stop_when_disabled(student, sources, rosi, rosi_mean):
    pairs = synthesize_pseudo_pairs(
        student, sources, rosi, "dog", lr=1e-12, steps=4, patience=1, early_stop_tol=None, w_mean=rosi_mean
    )
    assert not pairs.stopped_early and pairs.n_iter == 4 and pairs.loss_history.shape == (5,)


def test_absolute_threshold_and_zero_steps_return_mean(student, sources, rosi, rosi_mean):
    reached = synthesize_pseudo_pairs(student, sources, rosi, "dog", target_loss=1e9, w_mean=rosi_mean)
    assert reached.stopped_early and reached.n_iter == 0
    none = synthesize_pseudo_pairs(student, sources, rosi, "dog", steps=0, w_mean=rosi_mean)
    assert none.n_iter == 0 and not none.stopped_early
    for p in (reached, none):
        torch.testing.assert_close(p.w, rosi_mean.expand(B, -1))
        torch.testing.assert_close(p.final_loss, p.initial_loss)


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
