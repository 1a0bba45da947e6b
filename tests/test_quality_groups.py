"""Subgroup definitions, by_subgroup breakdowns and the small statistics helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xai_audit.quality import bootstrap_ci, by_subgroup, holm, iter_groups
from xai_audit.quality.stats import spearman_rows, ssim_rows


@pytest.fixture
def attrs():
    return pd.DataFrame(
        {
            "sex": ["F", "M", "F", None, "M", "F"],
            "age_group": ["65+", "18-39", "65+", "65+", "40-64", "18-39"],
        },
        index=[10, 11, 12, 13, 14, 15],  # the index is ignored: row order counts
    )


def test_group_naming_convention(attrs):
    groups = list(iter_groups(attrs))
    labels = [(g.attribute, g.group, g.n) for g in groups]
    assert ("sex", "F", 3) in labels and ("sex", "missing", 1) in labels
    assert ("sex × age_group", "F | 65+", 2) in labels
    assert ("sex × age_group", "missing | 65+", 1) in labels
    assert [g.group for g in groups if g.attribute == "sex"] == ["F", "M", "missing"]
    assert not any(g.n == 0 for g in groups)
    assert not any("×" in g.attribute for g in iter_groups(attrs, intersections=False))


def test_by_subgroup(attrs):
    per = pd.DataFrame({"score": [1.0, 2.0, 3.0, 4.0, np.nan, 5.0]})
    out = by_subgroup(per, attrs, ["score"])
    assert list(out.columns) == [
        "attribute",
        "group",
        "n",
        "metric",
        "mean",
        "ci_low",
        "ci_high",
        "n_missing",
    ]
    row = out.set_index(["attribute", "group"]).loc[("sex", "F")]
    assert row["mean"] == pytest.approx(3.0) and row["n"] == 3
    assert row["ci_low"] <= 3.0 <= row["ci_high"]
    m = out.set_index(["attribute", "group"]).loc[("sex", "M")]
    assert m["n"] == 1 and m["n_missing"] == 1 and np.isnan(m["ci_low"])
    overall = out.iloc[0]
    assert (overall["attribute"], overall["group"]) == ("overall", "all")
    with pytest.raises(ValueError, match="rows"):
        by_subgroup(per.iloc[:3], attrs, ["score"])
    with pytest.raises(KeyError):
        by_subgroup(per, attrs, ["nope"])


def test_bootstrap_ci_covers_truth():
    rng = np.random.default_rng(1)
    est, low, high = bootstrap_ci(rng.normal(2.0, 1.0, 400), random_state=0)
    assert low < 2.0 < high and high - low < 0.3
    assert np.isnan(bootstrap_ci([np.nan])[0])
    assert np.isnan(bootstrap_ci([1.0])[1])


def test_holm():
    p = np.array([0.01, 0.04, np.nan, 0.03])
    np.testing.assert_allclose(holm(p), [0.03, 0.06, np.nan, 0.06])


def test_spearman_and_ssim():
    rng = np.random.default_rng(0)
    a = rng.random((3, 16, 16))
    assert np.allclose(spearman_rows(a, a), 1.0)
    assert np.allclose(spearman_rows(a, -a), -1.0)
    assert np.isnan(spearman_rows(a[:1], np.ones((1, 16, 16)))[0])
    from scipy.stats import spearmanr

    b = rng.random((1, 16, 16))
    assert spearman_rows(a[:1], b)[0] == pytest.approx(spearmanr(a[0].ravel(), b[0].ravel())[0])
    assert np.allclose(ssim_rows(a, a), 1.0)
    assert ssim_rows(a[:1], b)[0] < 0.3
