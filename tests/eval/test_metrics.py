"""Metrics of dife.eval: hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dife.errors import InputError, ShapeError
from dife.eval.metrics import PairResult, aggregate, bootstrap_ci, interocular, point_errors, summarize


def test_err70_scales_to_a_70_pixel_image():
    # 140 x 140 target: a 10 px error is 5 px at 70 x 70
    e = point_errors(np.array([[10.0, 20.0]]), np.array([[4.0, 12.0]]), 140, 140)
    assert e["px"][0] == pytest.approx(10.0)
    assert e["err70"][0] == pytest.approx(5.0)


def test_err70_scales_each_axis_for_non_square_targets():
    # 280 wide, 70 high: dx = 8 -> 2, dy = 3 -> 3 => sqrt(4 + 9)
    e = point_errors(np.array([[8.0, 3.0]]), np.zeros((1, 2)), 280, 70)
    assert e["err70"][0] == pytest.approx(math.sqrt(13.0))


def test_interocular_normalisation():
    kps = {"eye_left_img": (10.0, 50.0), "eye_right_img": (30.0, 50.0), "nose": (20.0, 60.0)}
    iod = interocular(kps)
    assert iod == pytest.approx(20.0)
    e = point_errors(np.array([[20.0, 64.0]]), np.array([[20.0, 60.0]]), 100, 100, iod=iod)
    assert e["nerr"][0] == pytest.approx(0.2)


def test_interocular_falls_back_to_outer_corners_and_none():
    assert interocular({"eye_left_img_outer": (0, 0), "eye_right_img_outer": (3, 4)}) == pytest.approx(5.0)
    assert interocular({"nose": (1, 1)}) is None
    assert interocular({"eye_left_img": (2, 2), "eye_right_img": (2, 2)}) is None
    e = point_errors(np.ones((2, 2)), np.zeros((2, 2)), 10, 10, iod=None)
    assert np.all(np.isnan(e["nerr"]))


def test_pck_thresholds_are_fractions_of_the_crop_side():
    # side 200: 0.05 -> 10 px, 0.1 -> 20 px; errors 10 (on the threshold), 10.5, 20, 25
    gt = np.zeros((4, 2))
    pred = np.array([[10.0, 0.0], [10.5, 0.0], [0.0, 20.0], [15.0, 20.0]])
    e = point_errors(pred, gt, 200, 200)
    assert e["pck05"].tolist() == [100.0, 0.0, 0.0, 0.0]
    assert e["pck10"].tolist() == [100.0, 100.0, 100.0, 0.0]


def test_point_errors_rejects_bad_shapes():
    with pytest.raises(ShapeError):
        point_errors(np.zeros((3, 2)), np.zeros((2, 2)), 10, 10)
    with pytest.raises(InputError):
        point_errors(np.zeros((1, 2)), np.zeros((1, 2)), 0, 10)


def test_bootstrap_mean_pools_all_values_and_ci_covers_it():
    rows = [[1.0, 3.0], [2.0], [10.0, np.nan, 6.0]]  # values 1, 3, 2, 10, 6 -> mean 4.4
    s = bootstrap_ci(rows, n_boot=2000, seed=0)
    assert s.mean == pytest.approx(4.4)
    assert s.n_pairs == 3 and s.n_points == 5
    assert s.lo <= s.mean <= s.hi
    assert s.lo >= 1.0 and s.hi <= 10.0  # bounded by the extreme per-pair means
    assert s.hi > s.lo


def test_bootstrap_is_deterministic_with_a_seed_and_changes_with_it():
    rng = np.random.default_rng(1)
    rows = [rng.normal(5, 2, size=3) for _ in range(40)]
    a = bootstrap_ci(rows, n_boot=500, seed=7)
    b = bootstrap_ci(rows, n_boot=500, seed=7)
    c = bootstrap_ci(rows, n_boot=500, seed=8)
    assert (a.lo, a.hi) == (b.lo, b.hi)
    assert (a.lo, a.hi) != (c.lo, c.hi)
    # a 95 % interval of a mean of 120 N(5, 2) values is roughly +-0.36 wide around it
    assert 0.15 < (a.hi - a.lo) / 2 < 0.8


def test_bootstrap_edge_cases():
    assert math.isnan(bootstrap_ci([], n_boot=10).mean)
    one = bootstrap_ci([[3.0, 5.0]], n_boot=100)
    assert (one.mean, one.lo, one.hi) == (4.0, 4.0, 4.0)
    none = bootstrap_ci([[1.0, 2.0], [4.0]], n_boot=0)
    assert none.lo == none.hi == none.mean == pytest.approx(7.0 / 3.0)
    with pytest.raises(InputError):
        bootstrap_ci([[1.0]], n_boot=-1)
    with pytest.raises(InputError):
        bootstrap_ci([[1.0]], alpha=1.5)


def _pr(group: str, names: tuple[str, ...], err: list[float], index: int) -> PairResult:
    n = len(names)
    e = {"err70": np.array(err), "nerr": np.array(err) / 10, "pck05": np.zeros(n), "pck10": np.full(n, 100.0)}
    return PairResult(
        group, f"s{index}", f"t{index}", names, np.zeros((n, 2)), np.zeros((n, 2)), np.zeros((n, 2)), e, index
    )


def test_aggregate_per_group_per_keypoint_and_all():
    res = [
        _pr("human->dog", ("eye_left_img", "nose"), [2.0, 4.0], 0),
        _pr("human->dog", ("eye_left_img", "nose"), [6.0, 8.0], 1),
        _pr("dog->cat", ("nose",), [10.0], 2),
    ]
    out = aggregate(res, n_boot=100, seed=0)
    assert list(out) == ["human->dog", "dog->cat", "all"]
    assert out["human->dog"].stats["err70"].mean == pytest.approx(5.0)
    assert out["human->dog"].per_keypoint["nose"]["err70"].mean == pytest.approx(6.0)
    assert out["human->dog"].per_keypoint["eye_left_img"]["err70"].mean == pytest.approx(4.0)
    assert out["all"].stats["err70"].mean == pytest.approx(30.0 / 5.0)
    assert out["all"].per_keypoint["nose"]["err70"].mean == pytest.approx(22.0 / 3.0)
    assert out["all"].stats["pck10"].mean == 100.0
    assert summarize(res, "nerr", keypoint="nose", n_boot=0).mean == pytest.approx(0.22 / 3 * 10)
    d = out["all"].to_dict()
    assert d["err70"]["n_points"] == 5 and "per_keypoint" in d
