"""Localisation against masks and boxes: known answers and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xai_audit.quality import LocalisationResult, boxes_to_masks, localisation


def _peak(size: int, at: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - at[0]) ** 2 + (xx - at[1]) ** 2) / 8.0)


def test_pointing_game_inside_and_outside():
    mask = np.zeros((2, 32, 32), dtype=bool)
    mask[:, 8:16, 8:16] = True
    maps = np.stack([_peak(32, (12, 12)), _peak(32, (26, 26))])
    lr = localisation(maps, mask)
    assert isinstance(lr, LocalisationResult)
    assert lr.per_image["pointing_game"].tolist() == [1.0, 0.0]


def test_relevance_mass_rank_accuracy_and_iou_hand_values():
    m = np.zeros((1, 4, 4))
    m[0] = [[4, 0, 0, 0], [0, 3, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, :2, :2] = True  # holds 4 and 3 (and two zeros)
    lr = localisation(m, mask, top_k=2 / 16)
    row = lr.per_image.iloc[0]
    assert row["mass_in_mask"] == pytest.approx(7 / 10)
    # K = 4 mask pixels; top-4 relevance = {4, 3, 2, 1}; 2 of them inside.
    assert row["rank_accuracy"] == pytest.approx(2 / 4)
    # Top 2 pixels {4, 3} vs mask of 4: IoU = 2 / 4.
    assert row["iou_top_k"] == pytest.approx(0.5)
    assert row["pointing_game"] == 1.0
    assert row["mask_fraction"] == pytest.approx(4 / 16)


def test_positive_vs_abs_relevance():
    m = np.array([[[2.0, -2.0], [0.0, 0.0]]])
    mask = np.array([[[True, False], [False, False]]])
    assert localisation(m, mask).per_image.loc[0, "mass_in_mask"] == pytest.approx(1.0)
    assert localisation(m, mask, normalise="abs").per_image.loc[0, "mass_in_mask"] == pytest.approx(
        0.5
    )


def test_boxes_become_masks():
    masks = boxes_to_masks([(8, 8, 16, 16), [(0, 0, 2, 2), (30, 30, 40, 40)], None], (32, 32))
    assert masks.shape == (3, 32, 32)
    assert masks[0].sum() == 64 and masks[0, 8:16, 8:16].all()
    assert masks[1].sum() == 4 + 4  # second box clipped to the image
    assert masks[2].sum() == 0
    maps = np.stack([_peak(32, (12, 12))] * 3)
    lr = localisation(maps, boxes=[(8, 8, 16, 16), (20, 20, 30, 30), (8, 8, 16, 16)])
    assert lr.per_image["pointing_game"].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="max < min"):
        boxes_to_masks([(5, 5, 1, 1)], (8, 8))


def test_empty_masks_and_zero_maps_are_nan_with_reason():
    mask = np.zeros((3, 16, 16), dtype=bool)
    mask[0, 2:6, 2:6] = mask[2, 2:6, 2:6] = True
    maps = np.stack([_peak(16, (4, 4)), _peak(16, (4, 4)), np.zeros((16, 16))])
    lr = localisation(maps, mask)
    per = lr.per_image
    assert per.loc[0, "reason"] == ""
    assert per.loc[1, "reason"].startswith("empty mask")
    assert per.loc[2, "reason"] == "all-zero attribution map"
    for col in ("pointing_game", "mass_in_mask", "rank_accuracy", "iou_top_k"):
        assert np.isfinite(per.loc[0, col])
        assert np.isnan(per.loc[1, col]) and np.isnan(per.loc[2, col])
    summary = lr.summary.set_index("metric")
    assert summary.loc["pointing_game", "n"] == 1
    d = lr.to_dict()
    json.dumps(d)
    assert d["undefined"] == {
        "empty mask (no lesion to localise)": 1,
        "all-zero attribution map": 1,
    }
    const = localisation(np.ones((1, 16, 16)), mask[:1]).per_image.loc[0]
    assert const["reason"] == "constant attribution map" and np.isnan(const["pointing_game"])


def test_wrong_mask_shape_is_a_clear_error():
    maps = np.random.default_rng(0).random((2, 16, 16))
    with pytest.raises(ValueError, match="expected one mask per image"):
        localisation(maps, np.ones((2, 8, 8), dtype=bool))
    with pytest.raises(ValueError, match="expected one mask per image"):
        localisation(maps, np.ones((3, 16, 16), dtype=bool))
    with pytest.raises(ValueError, match="exactly one"):
        localisation(maps)
    # One shared mask is broadcast.
    lr = localisation(maps, np.ones((16, 16), dtype=bool))
    assert (lr.per_image["mass_in_mask"] == 1).all()


def test_summary_ci_contains_mean():
    rng = np.random.default_rng(0)
    maps = rng.random((40, 16, 16))
    mask = np.zeros((40, 16, 16), dtype=bool)
    mask[:, :8] = True
    maps[:20, :8] += 1.0  # half the maps favour the mask
    s = localisation(maps, mask).summary.set_index("metric")
    row = s.loc["mass_in_mask"]
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    assert row["chance"] == pytest.approx(0.5)
    assert 0.5 < row["mean"] < 1.0


def test_top_n_masks_match_a_stable_argsort_with_ties():
    """The sort-based top-n selection equals ranking by a stable argsort (ties by position)."""
    from xai_audit.quality.localisation import _top_n_masks

    rng = np.random.default_rng(3)
    flat = rng.integers(0, 6, size=(40, 50)).astype(np.float32)  # many ties
    flat[5] = 0.0  # a constant row
    counts = rng.integers(0, 51, size=40)
    counts[:3] = [0, 50, 1]
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(50)[None], axis=1)
    expected = ranks < counts[:, None]
    (got,) = _top_n_masks(flat, counts)
    np.testing.assert_array_equal(got, expected)
    assert (got.sum(axis=1) == counts).all()
