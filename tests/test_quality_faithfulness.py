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
    kw = dict(n_random=2, n_steps=6, modes=("deletion",), replacement="blur")
    a = deletion_insertion(adapter, x[:4], maps, random_state=3, **kw)
    b = deletion_insertion(adapter, x[:4], maps, random_state=3, **kw)
    c = deletion_insertion(adapter, x[:4], maps, random_state=4, **kw)
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


# ---------------------------------------------------------------- ROAD imputation (known answers)
def _spsolve_reference(img: np.ndarray, deleted: np.ndarray) -> np.ndarray:
    """The ROAD system built explicitly with scipy.sparse and solved directly (peer check)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    from xai_audit.quality.imputation import NEIGHBOURS_2D

    h, w = img.shape
    index = np.full((h, w), -1)
    index[deleted] = np.arange(deleted.sum())
    yy, xx = np.nonzero(deleted)
    rows, cols, vals = [], [], []
    diag = np.zeros(len(yy))
    rhs = np.zeros(len(yy))
    for (dy, dx), wt in NEIGHBOURS_2D:
        ny, nx = yy + dy, xx + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag += wt * inside
        ny, nx, k = ny[inside], nx[inside], np.flatnonzero(inside)
        unknown = deleted[ny, nx]
        rows.append(k[unknown])
        cols.append(index[ny[unknown], nx[unknown]])
        vals.append(np.full(unknown.sum(), -wt))
        np.add.at(rhs, k[~unknown], wt * img[ny[~unknown], nx[~unknown]])
    k = np.arange(len(yy))
    a = sp.csc_matrix(
        (np.concatenate([*vals, diag]), (np.concatenate([*rows, k]), np.concatenate([*cols, k])))
    )
    out = img.copy()
    out[deleted] = spsolve(a, rhs)
    return out


def test_road_imputation_matches_a_direct_sparse_solve():
    from xai_audit.quality.imputation import linear_impute

    rng = np.random.default_rng(0)
    img = rng.random((2, 1, 20, 24))
    deleted = np.zeros((2, 20, 24), dtype=bool)
    deleted[0, 4:15, 3:20] = True  # one large hole
    deleted[1] = rng.random((20, 24)) < 0.5  # scattered pixels, touching the border
    got = linear_impute(
        torch.as_tensor(img, dtype=torch.float32), torch.from_numpy(deleted), tol=1e-7
    )
    for i in range(2):
        want = _spsolve_reference(img[i, 0], deleted[i])
        np.testing.assert_allclose(got[i, 0].numpy(), want, atol=2e-5)


def test_road_reconstructs_a_linear_ramp_and_fills_with_the_neighbour_mean():
    from xai_audit.quality.imputation import _neighbour_sum, linear_impute

    yy, xx = np.mgrid[:32, :32]
    ramp = torch.as_tensor((0.3 * yy + 0.7 * xx) / 32.0, dtype=torch.float32)[None, None]
    deleted = torch.zeros(1, 32, 32, dtype=torch.bool)
    deleted[0, 8:24, 6:20] = True
    filled = linear_impute(ramp, deleted, tol=1e-7)
    # A linear function is harmonic for the symmetric stencil: the hole is filled exactly.
    np.testing.assert_allclose(filled.numpy(), ramp.numpy(), atol=1e-4)
    # Any image: every filled pixel is the weighted mean of its neighbours.
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = linear_impute(x, deleted, tol=1e-7)
    neighbour_mean = _neighbour_sum(out) / _neighbour_sum(torch.ones_like(out))
    np.testing.assert_allclose(out[0, 0][deleted[0]], neighbour_mean[0, 0][deleted[0]], atol=1e-4)
    assert torch.equal(out[0, 0][~deleted[0]], x[0, 0][~deleted[0]])  # kept pixels untouched
    # Nothing kept: the image's mean; the "road" baseline adds the seeded noise to it.
    flat = linear_impute(x, torch.ones(1, 32, 32, dtype=torch.bool))
    assert torch.allclose(flat, x.mean().expand_as(x), atol=1e-6)
    base = make_baseline(x, "road", noise=0.01, random_state=0)
    assert abs(float(base.mean() - x.mean())) < 1e-3
    assert 0.005 * float(x.std()) < float(base.std()) < 0.02 * float(x.std())


# ---------------------------------------------------------------- verdict (known answers)
class _SigmoidPatch(torch.nn.Module):
    """score = sigmoid(a * mean of one fixed patch - b), as two logits (0, z)."""

    def __init__(self, a: float = 20.0, b: float = 10.0, smooth_bonus: float = 0.0):
        super().__init__()
        self.a, self.b, self.smooth_bonus = a, b, smooth_bonus
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        z = self.a * x[:, 0, 8:16, 8:16].mean(dim=(1, 2)) - self.b + 0 * self.dummy
        if self.smooth_bonus:
            # A "blur-loving" model: a smooth image reads as positive, whatever the patch says.
            rough = (x[:, 0, :, 1:] - x[:, 0, :, :-1]).abs().mean(dim=(1, 2))
            z = z + self.smooth_bonus * (0.1 - rough)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _verdict_data(n: int = 32):
    x, mask = region_data(n)
    return x, mask


def test_a_map_pointing_at_the_patch_passes_and_random_maps_fail():
    adapter = ModelAdapter(_SigmoidPatch(), class_names=["a", "b"], device="cpu")
    x, mask = _verdict_data()
    kw = dict(targets=1, n_steps=5, early_fraction=0.2, modes=("deletion",), orders=("morf",))
    good = deletion_insertion(adapter, x, mask.astype(np.float32), **kw).headline
    assert good["verdict"] == "pass", good["reason"]
    assert good["reference"] == "road" and good["reference_valid"]
    assert good["reference_score"] < 0.1 < 0.9 < good["original_score"]
    assert good["early_advantage"] > 0.5 and good["early_ci_low"] > 0.5
    assert good["n_judged"] == len(x) and "Pass: CI above 0" in good["rule"]
    assert "up to 20% deleted" in good["rule"]
    rnd = np.random.default_rng(5).random(mask.shape)
    bad = deletion_insertion(adapter, x, rnd, **kw).headline
    assert bad["verdict"] == "fail", bad["reason"]
    assert bad["early_ci_high"] < bad["min_advantage"] and bad["reference_valid"]


@pytest.mark.parametrize("replacement", ["road", "blur"])
def test_a_blur_loving_model_is_inconclusive_never_a_flag(replacement):
    from xai_audit.audit.findings import trust_findings

    adapter = ModelAdapter(_SigmoidPatch(smooth_bonus=100.0), class_names=["a", "b"], device="cpu")
    x, mask = _verdict_data(24)
    rnd = np.random.default_rng(5).random(mask.shape)
    fr = deletion_insertion(
        adapter,
        x,
        rnd,
        targets=1,
        n_steps=5,
        early_fraction=0.2,
        modes=("deletion",),
        orders=("morf",),
        replacement=replacement,
        threshold=0.5,
    )
    head = fr.headline
    assert head["original_score"] > 0.9 and head["reference_score"] > 0.9
    assert head["verdict"] == "inconclusive" and not head["reference_valid"]
    assert "not neutral" in head["reason"]
    findings = trust_findings({"faithfulness": {"gradcam": {"headline": head}}})
    assert [f["severity"] for f in findings] == ["info"]
    assert findings[0]["kind"] == "faithfulness_note"
    assert f"{head['reference_score']:.3f}" in findings[0]["message"]


def test_verdict_rules_on_hand_made_numbers():
    from xai_audit.quality.faithfulness import faithfulness_verdict

    n = 40
    orig, ref = np.full(n, 0.9), np.full(n, 0.1)
    yes, no = np.ones(n, bool), np.zeros(n, bool)
    rng = np.random.default_rng(0)
    tight_zero = rng.normal(0, 0.01, n)
    assert faithfulness_verdict(tight_zero, orig, ref, yes, no)["verdict"] == "fail"
    wide = np.tile([-0.3, 0.36], n // 2)  # mean 0.03, CI about +-0.1
    assert faithfulness_verdict(wide, orig, ref, yes, no)["verdict"] == "inconclusive"
    assert faithfulness_verdict(tight_zero + 0.2, orig, ref, yes, no)["verdict"] == "pass"
    # Too few images predicted as the class: inconclusive, whatever the numbers.
    few = np.arange(n) < 3
    out = faithfulness_verdict(tight_zero, orig, ref, few, no)
    assert out["verdict"] == "inconclusive" and "Only 3" in out["reason"]
    # Deleting everything hardly lowers the score: the reference is not neutral.
    out = faithfulness_verdict(tight_zero, orig, np.full(n, 0.85), yes, no)
    assert out["verdict"] == "inconclusive" and "only 0.050" in out["reason"]
    # Only images predicted as the class are judged.
    mixed = np.where(np.arange(n) < 20, 0.5, -5.0)
    out = faithfulness_verdict(mixed, orig, ref, np.arange(n) < 20, no)
    assert out["n_judged"] == 20 and out["verdict"] == "pass"


def test_only_fail_is_a_medium_finding():
    from xai_audit.audit.findings import trust_findings

    base = {"reason": "why", "rule": "the rule", "reference": "road", "reference_score": 0.1}
    q = {
        "faithfulness": {
            m: {"headline": {**base, "verdict": v}}
            for m, v in (("a", "pass"), ("b", "fail"), ("c", "inconclusive"))
        }
    }
    got = {f["where"]: f for f in trust_findings(q)}
    assert set(got) == {"b", "c"}
    assert got["b"]["severity"] == "medium" and got["b"]["kind"] == "faithfulness"
    assert got["c"]["severity"] == "info" and "the rule" in got["c"]["message"]
    # A result saved before verdicts existed raises nothing.
    assert (
        trust_findings({"faithfulness": {"a": {"headline": {"better_than_random": False}}}}) == []
    )


def test_road_curves_do_not_depend_on_the_batch_size(setup):
    adapter, x, mask = setup
    maps = np.random.default_rng(1).random((4, 32, 32))
    kw = dict(n_steps=6, modes=("deletion",), orders=("morf",), replacement="road")
    a = deletion_insertion(adapter, x[:4], maps, batch_size=16, **kw)
    b = deletion_insertion(adapter, x[:4], maps, batch_size=100, **kw)
    for key in a.arrays:
        np.testing.assert_allclose(a.arrays[key], b.arrays[key], atol=2e-3)
