"""The coordinate convention: pixel centres, boxes, crop rule, grid maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dife.coords import (
    CropTransform,
    check_points_inside,
    grid_to_normalized,
    normalized_to_grid,
    square_crop,
)
from dife.errors import InputError, KeypointError, ShapeError


def test_center_square_without_box_on_landscape_image():
    t = square_crop(300, 200, 96)
    assert (t.left, t.top, t.side) == (50.0, 0.0, 200.0)


def test_center_square_without_box_on_portrait_image():
    t = square_crop(200, 301, 96)
    assert (t.left, t.top, t.side) == (0.0, 50.5, 200.0)


def test_box_gives_square_on_longer_side_centred_on_box():
    t = square_crop(640, 480, 96, box=(100, 50, 200, 250))
    assert t.side == 200.0
    assert (t.left + t.side / 2, t.top + t.side / 2) == (150.0, 150.0)


def test_grid_edges_map_to_crop_edges():
    # The left edge of grid pixel 0 (grid x = -0.5) is the crop's left edge (image x = left - 0.5).
    t = square_crop(256, 256, 96)
    edges = t.to_image(np.array([[-0.5, -0.5], [95.5, 95.5]]))
    np.testing.assert_allclose(edges, [[-0.5, -0.5], [255.5, 255.5]])


def test_identity_scale_maps_pixel_centres_to_pixel_centres():
    t = square_crop(96, 96, 96)
    p = np.array([[0.0, 0.0], [95.0, 95.0], [10.25, 3.5]])
    np.testing.assert_allclose(t.to_grid(p), p)


def test_round_trip_numpy_and_torch():
    t = square_crop(451, 300, 96, box=(10.5, 20.25, 110.0, 70.0))
    p = np.random.default_rng(0).uniform(0, 300, size=(50, 2))
    np.testing.assert_allclose(t.to_image(t.to_grid(p)), p, atol=1e-9)
    pt = torch.tensor(p, dtype=torch.float64)
    torch.testing.assert_close(t.to_image(t.to_grid(pt)), pt)
    assert isinstance(t.to_grid(pt), torch.Tensor)


def test_dev_set_formula():
    # x_crop = (x_src + 0.5 - crop_x0) * 256 / crop_side - 0.5 (../shared/data/faces/README.md)
    t = CropTransform(left=40.0, top=12.0, side=300.0, size=256, width=500, height=400)
    x_src, y_src = 123.0, 77.0
    g = t.to_grid(np.array([x_src, y_src]))
    assert g[0] == pytest.approx((x_src + 0.5 - 40) * 256 / 300 - 0.5)
    assert g[1] == pytest.approx((y_src + 0.5 - 12) * 256 / 300 - 0.5)


def test_normalized_matches_grid_sample_align_corners_false():
    size = 8
    img = torch.arange(size * size, dtype=torch.float32).reshape(1, 1, size, size)
    p = torch.tensor([[3.0, 5.0]])  # grid pixel centre (x=3, y=5)
    n = grid_to_normalized(p, size).reshape(1, 1, 1, 2)
    v = torch.nn.functional.grid_sample(img, n, align_corners=False)
    assert v.item() == pytest.approx(5 * size + 3)
    torch.testing.assert_close(normalized_to_grid(grid_to_normalized(p, size), size), p)


def test_contains():
    t = square_crop(300, 200, 96)
    inside = t.contains(np.array([[100.0, 100.0], [10.0, 100.0]]))
    assert inside.tolist() == [True, False]


@pytest.mark.parametrize(
    "box",
    [(10, 10, 10, 20), (10, 20, 30, 5), (1000, 0, 1100, 10), (0, 0, float("nan"), 10), (1, 2, 3)],
)
def test_bad_boxes(box):
    with pytest.raises(InputError):
        square_crop(200, 100, 96, box=box)


def test_empty_image():
    with pytest.raises(InputError, match="empty image"):
        square_crop(0, 10, 96)


def test_points_at_borders_are_inside():
    pts = check_points_inside([[-0.5, -0.5], [99.5, 49.5], [0, 0]], width=100, height=50)
    assert pts.shape == (3, 2)


def test_points_outside_name_the_point():
    with pytest.raises(KeypointError, match=r"keypoints\[1\] = \(100, 3\)"):
        check_points_inside([[1, 1], [100, 3]], width=100, height=50)
    with pytest.raises(KeypointError):
        check_points_inside([[1, np.nan]], width=100, height=50)


def test_points_wrong_shape():
    with pytest.raises(ShapeError, match=r"\(3, 3\)"):
        check_points_inside(np.zeros((3, 3)), width=10, height=10)


def test_box_iou():
    from dife.coords import box_iou

    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0  # disjoint
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty union
