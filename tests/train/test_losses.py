"""Tests of dife.train.losses: distillation, matching, DVE exchange, total."""

from __future__ import annotations

import math

import pytest
import torch

from dife.errors import InputError, ShapeError
from dife.train.losses import (
    DEFAULT_WEIGHTS,
    distillation_loss,
    dve_exchange_loss,
    exchange_descriptors,
    matching_loss,
    soft_locations,
    total_loss,
)


def onehot_map(h: int, w: int, batch: int = 1) -> torch.Tensor:
    """(B, h*w, h, w) map whose pixel i is the i-th basis vector: perfectly peaked matching."""
    return torch.eye(h * w).reshape(1, h * w, h, w).repeat(batch, 1, 1, 1)


def randn(*shape: int, seed: int = 0, grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_(grad)


# ------------------------------------------------------------ distillation
def test_distillation_zero_for_identical_and_is_l2_norm() -> None:
    t = randn(2, 16, 12, 12)
    assert distillation_loss(t.clone(), t).item() == 0.0
    # per-pixel Euclidean norm (not squared), averaged over pixels
    s = t.clone()
    s[:, 0] += 3.0
    s[:, 1] += 4.0
    assert distillation_loss(s, t).item() == pytest.approx(5.0, rel=1e-5)
    assert distillation_loss(t[torch.tensor([1, 0])], t).item() > 1.0


def test_distillation_resizes_student_to_teacher_grid() -> None:
    teacher = randn(2, 8, 24, 24, seed=1)
    student = torch.nn.functional.interpolate(teacher, size=(12, 12), mode="bilinear", align_corners=False)
    student = student.detach().requires_grad_(True)
    up = torch.nn.functional.interpolate(student.detach(), size=(24, 24), mode="bilinear", align_corners=False)
    loss = distillation_loss(student, teacher)
    expected = torch.linalg.vector_norm(up - teacher, dim=1).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student.grad is not None and student.grad.shape == (2, 8, 12, 12) and student.grad.abs().sum() > 0
    # resize="teacher": comparison on the student's grid
    down = torch.nn.functional.interpolate(teacher, size=(12, 12), mode="bilinear", align_corners=False)
    assert distillation_loss(down, teacher, resize="teacher").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="resize"):
        distillation_loss(student, teacher, resize="both")


def test_distillation_mask() -> None:
    t = torch.zeros(1, 4, 4, 4)
    s = torch.zeros(1, 4, 4, 4)
    s[..., :2] = 1.0  # left half wrong by norm 2
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 2:] = True
    assert distillation_loss(s, t, mask=mask).item() == 0.0
    assert distillation_loss(s, t, mask=~mask).item() == pytest.approx(2.0)
    assert distillation_loss(s, t).item() == pytest.approx(1.0)
    assert distillation_loss(s, t, mask=torch.zeros(1, 4, 4)).item() == 0.0
    with pytest.raises(ShapeError, match=r"\(1, 1, 3, 3\)"):
        distillation_loss(s, t, mask=torch.ones(1, 1, 3, 3))


def test_distillation_gradient_reaches_student_not_nan_at_zero() -> None:
    t = randn(1, 4, 6, 6)
    s = t.clone().requires_grad_(True)
    distillation_loss(s, t).backward()
    assert torch.isfinite(s.grad).all()


def test_distillation_errors_name_shapes() -> None:
    with pytest.raises(ShapeError, match=r"\(2, 16, 8, 8\).*\(2, 8, 8, 8\)"):
        distillation_loss(torch.zeros(2, 16, 8, 8), torch.zeros(2, 8, 8, 8))
    with pytest.raises(ShapeError, match=r"\(16, 8, 8\)"):
        distillation_loss(torch.zeros(16, 8, 8), torch.zeros(1, 16, 8, 8))
    bad = torch.zeros(1, 2, 4, 4)
    bad[0, 0, 1, 1] = float("inf")
    with pytest.raises(ShapeError, match=r"teacher.*\(1, 2, 4, 4\).*infinite"):
        distillation_loss(torch.zeros(1, 2, 4, 4), bad)


# ---------------------------------------------------------------- matching
def test_matching_zero_for_identity_with_peaked_embeddings() -> None:
    e = onehot_map(8, 8, batch=2)
    assert matching_loss(e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert matching_loss(e, e, normalize="cosine").item() == pytest.approx(0.0, abs=1e-6)
    p = soft_locations(e, e)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    torch.testing.assert_close(p[0], torch.stack([xs, ys], -1), atol=1e-5, rtol=0)


def test_matching_large_for_shuffled() -> None:
    e = onehot_map(8, 8)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = e[:, perm]  # channel permutation = pixels matched to random places
    loss = matching_loss(e, shuffled).item()
    assert loss > 0.2  # mean distance to a random pixel of an 8x8 map, / side


def test_matching_known_shift() -> None:
    # e2 is e1 shifted right by 3 pixels: pixel (x, y) of e1 is at (x + 3, y) in e2.
    h, w, s = 6, 10, 3
    e1 = torch.zeros(1, h * w, h, w)
    e2 = torch.zeros(1, h * w, h, w)
    for y in range(h):
        for x in range(w):
            e1[0, y * w + x, y, x] = 1.0
            if x + s < w:
                e2[0, y * w + x, y, x + s] = 1.0
    ys, xs = torch.meshgrid(torch.arange(h * 1.0), torch.arange(w * 1.0), indexing="ij")
    grid = torch.stack([xs + s, ys], -1)[None]
    valid = (xs + s < w)[None]
    assert matching_loss(e1, e2, grid1_to_2=grid, valid=valid).item() == pytest.approx(0.0, abs=1e-6)
    # targets outside e2 are ignored automatically
    assert matching_loss(e1, e2, grid1_to_2=grid).item() == pytest.approx(
        matching_loss(e1, e2, grid1_to_2=grid, valid=valid).item(), abs=1e-6
    )
    # the identity target is wrong for a shifted pair
    assert matching_loss(e1, e2, valid=valid).item() > 0.25


def test_matching_is_resolution_independent() -> None:
    # uniform weights put every pixel at the centre: mean distance to the centre / side
    for n in (8, 16):
        e = torch.ones(1, 3, n, n)
        loss = matching_loss(e, e).item()
        ys, xs = torch.meshgrid(torch.arange(n * 1.0), torch.arange(n * 1.0), indexing="ij")
        c = (n - 1) / 2
        expected = (((xs - c) ** 2 + (ys - c) ** 2).sqrt().mean() / n).item()
        assert loss == pytest.approx(expected, rel=1e-4)
    assert 0.35 < expected < 0.4


def test_matching_sum_reduction_is_eq5_in_pixels() -> None:
    # eq. 5 as written: distances in pixels of e2, summed over the (valid) pixels of each pair, mean over pairs
    e1, e2 = randn(2, 6, 8, 8, seed=3), randn(2, 6, 8, 8, seed=4)
    valid = torch.ones(2, 8, 8)
    valid[1, :, :3] = 0.0  # pair 1: 40 valid pixels
    p = soft_locations(e1, e2, temperature=0.1)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    dist = (p - torch.stack([xs, ys], -1)).norm(dim=-1)  # (2, 8, 8) pixels
    total = matching_loss(e1, e2, valid=valid, temperature=0.1, reduction="sum")
    torch.testing.assert_close(total, (dist * valid).flatten(1).sum(1).mean())
    mean = matching_loss(e1, e2, valid=valid, temperature=0.1)
    torch.testing.assert_close(mean, (dist * valid).sum() / valid.sum() / 8)
    # the two differ by the side and the number of valid pixels (here 64 and 40 per pair)
    torch.testing.assert_close(total, mean * 8 * valid.sum() / 2)
    # the DVE loss passes the reduction to its matching step
    e3 = randn(2, 6, 8, 8, seed=5)
    ratio = dve_exchange_loss(e1, e2, e3, reduction="sum") / dve_exchange_loss(e1, e2, e3)
    assert float(ratio) == pytest.approx(8 * 64, rel=1e-4)
    with pytest.raises(InputError, match="reduction"):
        matching_loss(e1, e2, reduction="max")
    with pytest.raises(InputError, match="reduction"):
        dve_exchange_loss(e1, e2, e3, reduction="none")


def test_matching_chunk_size_invariance_of_value_and_gradients() -> None:
    results = []
    for chunk in (37, 100, None, 256):
        e1 = randn(2, 8, 16, 16, seed=3, grad=True)
        e2 = randn(2, 8, 16, 16, seed=4, grad=True)
        loss = matching_loss(e1, e2, temperature=0.1, chunk_size=chunk)
        loss.backward()
        results.append((loss.detach(), e1.grad.clone(), e2.grad.clone()))
    ref = results[0]
    assert ref[1].abs().sum() > 0 and ref[2].abs().sum() > 0
    for other in results[1:]:
        torch.testing.assert_close(other[0], ref[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(other[1], ref[1], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(other[2], ref[2], rtol=1e-4, atol=1e-7)


def test_matching_gradient_matches_float64_finite_differences() -> None:
    e1 = randn(1, 3, 3, 4, seed=5).double().requires_grad_(True)
    e2 = randn(1, 3, 3, 4, seed=6).double().requires_grad_(True)

    def f(a, b):
        return matching_loss(a, b, temperature=0.5, chunk_size=3)

    assert torch.autograd.gradcheck(f, (e1, e2), eps=1e-6, atol=1e-5)


def test_matching_96x96_runs_on_cpu_and_identity_is_small() -> None:
    e = randn(1, 16, 96, 96, seed=7)
    with torch.no_grad():
        loss = matching_loss(e, e + 0.01 * randn(1, 16, 96, 96, seed=8))
    assert 0.0 <= loss.item() < 0.01


def test_matching_48x48_with_gradients() -> None:
    e1 = randn(1, 16, 48, 48, seed=9, grad=True)
    e2 = randn(1, 16, 48, 48, seed=10, grad=True)
    loss = matching_loss(e1, e2, chunk_size=512)
    loss.backward()
    assert loss.item() > 0.1
    assert torch.isfinite(e1.grad).all() and e1.grad.abs().sum() > 0 and e2.grad.abs().sum() > 0


def test_matching_different_target_size() -> None:
    e1 = onehot_map(4, 4)
    e2 = torch.nn.functional.interpolate(e1, size=(8, 8), mode="nearest")
    with pytest.raises(ShapeError, match="identity"):
        matching_loss(e1, e2)
    # pixel (x, y) of the 4x4 map covers 2x2 pixels of the 8x8 one, centred at 2x + 0.5
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    grid = torch.stack([2 * xs + 0.5, 2 * ys + 0.5], -1)[None]
    assert matching_loss(e1, e2, grid1_to_2=grid, temperature=1e-3).item() == pytest.approx(0.0, abs=1e-5)


def test_matching_errors() -> None:
    e = torch.zeros(1, 4, 6, 6)
    with pytest.raises(ShapeError, match=r"\(1, 6, 6, 3\)"):
        matching_loss(e, e, grid1_to_2=torch.zeros(1, 6, 6, 3))
    with pytest.raises(ShapeError, match=r"\(1, 4, 6, 6\).*\(1, 5, 6, 6\)"):
        matching_loss(e, torch.zeros(1, 5, 6, 6))
    g = torch.zeros(1, 6, 6, 2)
    g[0, 0, 0, 0] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        matching_loss(e, e, grid1_to_2=g)
    with pytest.raises(InputError, match="temperature"):
        matching_loss(e, e, temperature=0.0)
    with pytest.raises(InputError, match="normalize"):
        matching_loss(e, e, normalize="l2")
    with pytest.raises(InputError, match="chunk_size"):
        matching_loss(e, e, chunk_size=0)
    with pytest.raises(ShapeError, match=r"valid.*\(1, 1, 6, 6\)"):
        matching_loss(e, e, valid=torch.ones(1, 5, 5))


# --------------------------------------------------------------------- DVE
def test_exchange_reconstructs_from_auxiliary() -> None:
    e1 = onehot_map(5, 5)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(1))
    e3 = e1[:, :, :, :].flatten(2)[:, :, perm].reshape(1, 25, 5, 5)  # same descriptors, other places
    rec = exchange_descriptors(e1, e3, temperature=1e-3)
    torch.testing.assert_close(rec, e1, atol=1e-5, rtol=0)


def test_dve_zero_when_auxiliary_shares_descriptors() -> None:
    e = onehot_map(6, 6)
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(2))
    aux = e.flatten(2)[:, :, perm].reshape(1, 36, 6, 6)
    assert dve_exchange_loss(e, e, aux, temperature=1e-3).item() == pytest.approx(0.0, abs=1e-5)
    # an auxiliary image with unrelated descriptors makes the exchange fail
    other = torch.zeros(1, 36, 6, 6)
    other[:, :3] = 1.0
    assert dve_exchange_loss(e, e, other, temperature=1e-3).item() > 0.2


def test_dve_chunk_invariance_and_gradients() -> None:
    out = []
    for chunk in (5, 64):
        e1 = randn(2, 6, 8, 8, seed=11, grad=True)
        e2 = randn(2, 6, 8, 8, seed=12, grad=True)
        e3 = randn(2, 6, 7, 9, seed=13, grad=True)
        loss = dve_exchange_loss(e1, e2, e3, temperature=0.1, chunk_size=chunk)
        loss.backward()
        out.append((loss.detach(), e1.grad, e2.grad, e3.grad))
    for a, b in zip(out[0], out[1], strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_dve_errors() -> None:
    e = torch.zeros(1, 4, 6, 6)
    with pytest.raises(ShapeError, match=r"e3.*\(1, 3, 6, 6\)"):
        dve_exchange_loss(e, e, torch.zeros(1, 3, 6, 6))


# ------------------------------------------------------------------- total
def test_total_loss_weights_and_log() -> None:
    parts = {"k1": torch.tensor(2.0, requires_grad=True), "k2": torch.tensor(0.5, requires_grad=True)}
    total, log = total_loss(parts)
    assert total.item() == pytest.approx(1e-2 * 2.0 + 1.0 * 0.5)
    assert log == {"k1": 2.0, "k2": 0.5, "total": pytest.approx(0.52)}
    total.backward()
    assert parts["k1"].grad.item() == pytest.approx(1e-2)
    full = {k: torch.tensor(1.0) for k in ("k1", "k2", "m1", "m2")}
    total, log = total_loss(full, DEFAULT_WEIGHTS)
    assert total.item() == pytest.approx(1.03)
    total, _ = total_loss({"m1": torch.tensor(3.0)}, {"m1": 0.5, "k1": 9.0})
    assert total.item() == pytest.approx(1.5)


def test_total_loss_errors() -> None:
    with pytest.raises(InputError):
        total_loss({})
    with pytest.raises(InputError, match="'zz'"):
        total_loss({"zz": torch.tensor(1.0)})
    with pytest.raises(ShapeError, match=r"\(3,\)"):
        total_loss({"k1": torch.ones(3)})
    with pytest.raises(InputError, match="finite"):
        total_loss({"k1": torch.tensor(1.0)}, {"k1": math.inf})
