"""Shortcut mass and detection: regions, known answers, flags, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from xai_audit.quality import (
    ShortcutResult,
    border_corners_mask,
    border_mask,
    corner_mask,
    detect_shortcuts,
    region_fraction,
    shortcut_mass,
)


def test_regions():
    b = border_mask((100, 100), 0.08)
    assert b[:8].all() and b[:, -8:].all() and not b[8:92, 8:92].any()
    c = corner_mask((100, 100), 0.15)
    assert c[:15, :15].all() and c[-15:, -15:].all() and c.sum() == 4 * 225
    tl = corner_mask((100, 100), 0.15, corners=("top-left",))
    assert tl.sum() == 225
    both = border_corners_mask((128, 128))
    assert both.sum() == (b := border_mask((128, 128))).sum() + (corner_mask((128, 128)) & ~b).sum()
    assert 0.3 < region_fraction((128, 128), "border_corners") < 0.4
    # Default region: the four corner squares, 19 px (15 % of 128) on a side.
    assert region_fraction((128, 128)) == pytest.approx(4 * 19 * 19 / 128**2)
    assert border_mask((4, 16, 16)).shape == (4, 16, 16)
    with pytest.raises(ValueError, match="Unknown corner"):
        corner_mask((8, 8), corners=("middle",))


def test_shortcut_mass_known_values():
    maps = np.zeros((3, 20, 20))
    maps[0, 0:2, 0:2] = 1.0  # all mass in the top-left corner
    maps[1, 8:12, 8:12] = 1.0  # all in the middle
    maps[2, 0, 0] = 1.0
    maps[2, 10, 10] = -3.0  # 1/4 of |mass| in the corner, all positive mass
    s = shortcut_mass(maps)
    np.testing.assert_allclose(s, [1.0, 0.0, 0.25])
    assert shortcut_mass(maps[2:], normalise="positive")[0] == pytest.approx(1.0)
    lung = np.zeros((20, 20), dtype=bool)
    lung[5:15, 5:15] = True
    np.testing.assert_allclose(shortcut_mass(maps, region=~lung), [1.0, 0.0, 0.25])


def test_shortcut_mass_bad_input():
    maps = np.random.default_rng(0).random((2, 16, 16))
    with pytest.raises(ValueError, match="expected one mask per image"):
        shortcut_mass(maps, region=np.ones((8, 8), dtype=bool))
    with pytest.raises(ValueError, match="Unknown region"):
        shortcut_mass(maps, region="edges")
    zero = np.zeros((2, 16, 16))
    zero[0, 0, 0] = 1
    s = shortcut_mass(zero)
    assert s[0] == 1.0 and np.isnan(s[1])  # no mass, no share


def _fake_audit(seed: int, effect: float, n: int = 600):
    rng = np.random.default_rng(seed)
    attrs = pd.DataFrame(
        {
            "site": rng.choice(["A", "B", "C"], n),
            "sex": rng.choice(["F", "M"], n),
        }
    )
    predicted = rng.integers(0, 2, n)
    shares = np.clip(rng.normal(0.08, 0.04, n), 0, 1)
    hit = (attrs["site"].to_numpy() == "C") & (predicted == 1)
    shares[hit] = np.clip(shares[hit] + effect, 0, 1)
    return shares, attrs, predicted


def test_injected_site_is_flagged_with_plain_language():
    shares, attrs, predicted = _fake_audit(0, effect=0.3)
    res = detect_shortcuts(shares, attrs, predicted, positive_class=1)
    assert isinstance(res, ShortcutResult)
    flagged = res.flagged
    assert list(zip(flagged["attribute"], flagged["group"])) == [("site", "C")]
    msg = res.flags[0]
    assert msg.startswith("Positive predictions at site=C put 3")
    assert "in the image corners vs 8% elsewhere (p<0.001" in msg
    assert msg.endswith("possible shortcut.")
    row = res.table.set_index(["attribute", "group", "predicted"]).loc[("site", "C", 1)]
    assert row["ci_low"] < row["mean_share"] < row["ci_high"]
    assert row["effect"] > 0.25 and row["p_holm"] < 1e-6
    # Negative predictions at site C look like everyone else.
    assert not res.table.set_index(["attribute", "group", "predicted"]).loc[
        ("site", "C", 0), "flagged"
    ]
    json.dumps(res.to_dict())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nothing_flagged_without_an_effect(seed):
    shares, attrs, predicted = _fake_audit(seed, effect=0.0)
    res = detect_shortcuts(shares, attrs, predicted, intersections=True)
    assert res.flags == [] and res.flagged.empty
    assert "site × sex" in set(res.table["attribute"])


def test_small_or_weak_effects_are_not_flagged():
    shares, attrs, predicted = _fake_audit(0, effect=0.03)  # significant but tiny
    assert detect_shortcuts(shares, attrs, predicted).flags == []
    shares, attrs, predicted = _fake_audit(0, effect=0.3, n=40)
    res = detect_shortcuts(shares, attrs, predicted, min_group_size=50)
    assert res.flags == []


def test_intersections_and_class_names():
    shares, attrs, predicted = _fake_audit(3, effect=0.0)
    hit = (attrs["site"].to_numpy() == "B") & (attrs["sex"].to_numpy() == "F") & (predicted == 1)
    shares[hit] += 0.4
    res = detect_shortcuts(
        shares, attrs, predicted, intersections=True, class_names=["normal", "lesion"]
    )
    flagged = set(zip(res.flagged["attribute"], res.flagged["group"]))
    assert ("site × sex", "B | F") in flagged
    assert any("site=B and sex=F" in f for f in res.flags)
    assert set(res.table["predicted_label"]) == {"normal", "lesion"}


def test_detect_bad_input():
    shares, attrs, predicted = _fake_audit(0, effect=0.0, n=30)
    with pytest.raises(ValueError, match="one entry per image"):
        detect_shortcuts(shares[:10], attrs, predicted)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detect_shortcuts(shares + 1.0, attrs, predicted)
    with pytest.raises(TypeError):
        detect_shortcuts(shares, attrs.to_numpy(), predicted)
    nan_shares = shares.copy()
    nan_shares[:5] = np.nan
    res = detect_shortcuts(nan_shares, attrs, predicted)
    assert res.params["n_undefined"] == 5
    assert res.table.groupby("attribute")["n_undefined"].sum().loc["site"] == 5


def test_plot():
    import matplotlib

    matplotlib.use("Agg")
    shares, attrs, predicted = _fake_audit(0, effect=0.3)
    res = detect_shortcuts(shares, attrs, predicted)
    fig = res.plot(reference=region_fraction((128, 128)))
    assert fig.axes
    matplotlib.pyplot.close(fig)


def test_overlap_with_the_shortcut_site_is_a_note_not_a_flag():
    shares, attrs, predicted = _fake_audit(5, effect=0.3, n=900)
    rng = np.random.default_rng(5)
    at_c = attrs["site"].to_numpy() == "C"
    # "old" patients are mostly imaged at site C, so their positives inherit its shortcut.
    attrs["age"] = np.where(
        at_c,
        rng.choice(["old", "young"], len(attrs), p=[0.8, 0.2]),
        rng.choice(["old", "young"], len(attrs), p=[0.2, 0.8]),
    )
    res = detect_shortcuts(shares, attrs, predicted)
    assert list(zip(res.flagged["attribute"], res.flagged["group"])) == [("site", "C")]
    row = res.table.set_index(["attribute", "group", "predicted"]).loc[("age", "old", 1)]
    assert row["p_holm"] < 0.05 and row["effect"] > 0.05 and not row["flagged"]
    assert row["explained_by"] == "site=C"
    assert len(res.notes) == 1 and "explained by their overlap with site=C" in res.notes[0]
