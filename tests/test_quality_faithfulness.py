"""Deletion/insertion: known answers, random reference, replacements, batching, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_quality_helpers import RegionModel, region_data

from xai_audit.model import ModelAdapter
from xai_audit.quality import FaithfulnessResult, deletion_insertion, make_baseline


@pytest.fixture
def setup():
    x, mask = region_data(16)
    adapter = ModelAdapter(RegionModel(), class_names=["a", "b"], device="cpu")
    return adapter, x, mask


def test_oracle_map_has_far_lower_deletion_area_than_random(setup):
    adapter, x, mask = setup
    oracle = mask.astype(np.float32)
    fr = deletion_insertion(adapter, x, oracle, replacement="zeros", n_steps=20)
    assert isinstance(fr, FaithfulnessResult)
    per = fr.per_image.query("mode == 'deletion' and order == 'morf'")
    # The region is 64 of 1024 pixels: deleting it (first 5 % step) kills the score.
    assert (per["method_auc"] < 0.06).all()
    assert (per["random_auc"] > 0.3).all()
    curve = fr.arrays[("deletion", "morf", "method")]
    assert (curve[:, 0] > 0.99).all() and (curve[:, 2] < 0.01).all()
    row = fr.summary.set_index(["mode", "order"]).loc[("deletion", "morf")]
    assert row["advantage"] > 0.4 and row["ci_low"] > 0.4 and row["better_than_random"]
    assert fr.headline["mode"] == "deletion" and fr.headline["order"] == "morf"
    # Insertion of the oracle region first restores the score at once.
    ins = fr.arrays[("insertion", "morf", "method")]
    assert (ins[:, 0] < 0.01).all() and (ins[:, 2] > 0.99).all()


def test_anti_oracle_is_worse_than_random(setup):
    adapter, x, mask = setup
    fr = deletion_insertion(
        adapter,
        x,
        (~mask).astype(np.float32),
        replacement="zeros",
        modes=("deletion",),
        orders=("morf",),
        n_steps=10,
    )
    assert fr.summary.loc[0, "advantage"] < -0.3
    assert not fr.summary.loc[0, "better_than_random"]


def test_curves_are_tidy_and_endpoints_shared(setup):
    adapter, x, mask = setup
    fr = deletion_insertion(adapter, x[:4], mask[:4].astype(float), replacement="mean", n_steps=5)
    curves = fr.curves
    assert set(curves.columns) == {
        "image",
        "mode",
        "order",
        "reference",
        "step",
        "fraction",
        "score",
    }
    assert len(curves) == 4 * 6 * 2 * 2 * 2
    assert np.allclose(fr.fractions, np.linspace(0, 1, 6), atol=1e-3)
    # 0 % deletion = original image = 100 % insertion, for method and random alike.
    a = fr.arrays
    assert np.allclose(
        a[("deletion", "morf", "method")][:, 0], a[("insertion", "lerf", "random")][:, -1]
    )
    # Cost accounting: 2 endpoint passes + (n_steps - 1) per curve and image.
    assert fr.params["forward_images"] == 4 * (2 + 8 * 4)
    wide = fr.wide()
    assert len(wide) == 4 and "deletion_morf_advantage" in wide.columns
    json.dumps(fr.to_dict())


def test_batch_size_does_not_change_results(setup):
    adapter, x, mask = setup
    maps = np.random.default_rng(1).random((6, 32, 32))
    a = deletion_insertion(adapter, x[:6], maps, batch_size=7, n_steps=8, replacement="blur")
    b = deletion_insertion(adapter, x[:6], maps, batch_size=1000, n_steps=8, replacement="blur")
    for key in a.arrays:
        np.testing.assert_allclose(a.arrays[key], b.arrays[key], atol=1e-6)


def test_random_reference_is_seeded_and_averaged(setup):
    adapter, x, mask = setup
    maps = mask[:4].astype(float)
    a = deletion_insertion(
        adapter, x[:4], maps, random_state=3, n_random=2, n_steps=6, modes=("deletion",)
    )
    b = deletion_insertion(
        adapter, x[:4], maps, random_state=3, n_random=2, n_steps=6, modes=("deletion",)
    )
    c = deletion_insertion(
        adapter, x[:4], maps, random_state=4, n_random=2, n_steps=6, modes=("deletion",)
    )
    key = ("deletion", "morf", "random")
    np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    assert not np.array_equal(a.arrays[key], c.arrays[key])


def test_baselines():
    x = torch.rand(2, 1, 16, 16)
    assert torch.all(make_baseline(x, "zeros") == 0)
    mean = make_baseline(x, "mean")
    assert torch.allclose(mean[0, 0, 0, 0], x[0].mean())
    blur = make_baseline(x, "blur", blur_sigma=2.0)
    assert blur.shape == x.shape and blur.std() < x.std()
    assert torch.all(make_baseline(x, 0.25) == 0.25)
    with pytest.raises(ValueError, match="replacement"):
        make_baseline(x, "noise")
    with pytest.raises(ValueError, match="shape"):
        make_baseline(x, np.zeros((2, 1, 8, 8)))


def test_volumes_are_supported():
    class VolumeModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            z = 10 * (x[:, 0, :2, :4, :4].mean(dim=(1, 2, 3)) - 0.5) + self.w
            return torch.stack([-z, z], 1)

    x = torch.full((3, 1, 4, 8, 8), 0.2)
    x[:, :, :2, :4, :4] = 1.0
    oracle = np.zeros((3, 4, 8, 8))
    oracle[:, :2, :4, :4] = 1
    fr = deletion_insertion(
        ModelAdapter(VolumeModel(), device="cpu"),
        x,
        oracle,
        replacement="zeros",
        n_steps=8,
        modes=("deletion",),
        orders=("morf",),
    )
    assert fr.summary.loc[0, "advantage"] > 0.3


def test_bad_input(setup):
    adapter, x, mask = setup
    with pytest.raises(ValueError, match="spatial shape"):
        deletion_insertion(adapter, x, np.zeros((16, 8, 8)))
    with pytest.raises(ValueError, match="maps for"):
        deletion_insertion(adapter, x, np.zeros((3, 32, 32)))
    nan_maps = mask.astype(float)
    nan_maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        deletion_insertion(adapter, x, nan_maps)
    with pytest.raises(ValueError, match="mode"):
        deletion_insertion(adapter, x, mask.astype(float), modes=("erase",))


def test_all_zero_maps_give_nan_with_reason(setup):
    adapter, x, mask = setup
    maps = mask[:4].astype(float)
    maps[1] = 0.0
    fr = deletion_insertion(adapter, x[:4], maps, n_steps=4, modes=("deletion",), orders=("morf",))
    per = fr.per_image
    assert np.isnan(per.loc[1, "advantage"]) and per.loc[1, "reason"] == "all-zero attribution map"
    assert np.isfinite(per.loc[0, "advantage"])
    assert fr.summary.loc[0, "n"] == 3
