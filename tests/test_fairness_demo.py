"""Subgroup audit on the ground-truth data with the bundled demo model.

The generator injects fainter lesions at age 65+ (the card records the size); the demo model
misses more of them. The audit must flag that sensitivity gap, and flag nothing at all on
control data generated with no injected effect, over several seeds.
"""

from __future__ import annotations

import pytest

from xai_audit.datasets import make_synthetic_cxr
from xai_audit.fairness import evaluate_subgroups
from xai_audit.model import load_demo_model

ATTRIBUTES = ["sex", "age_group", "site"]


def _audit(seed: int, control: bool):
    data = make_synthetic_cxr(1200, seed=seed, control=control)
    scores = load_demo_model(device="cpu").positive_scores(data.images, batch_size=128)
    meta = data.metadata
    return evaluate_subgroups(
        meta["label"],
        scores,
        meta[ATTRIBUTES],
        patient_id=meta["patient_id"],
        threshold="youden",
        n_boot=500,
        random_state=seed,
    ), data


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 11])
def test_injected_age_group_sensitivity_gap_is_flagged(seed):
    res, data = _audit(seed, control=False)
    assert [e["name"] for e in data.card["effects"]] == ["faint_lesions", "site_marker_shortcut"]
    flagged = {(f.attribute, f.group) for f in res.flags if f.metric == "sensitivity"}
    assert ("age_group", "65+") in flagged, [f.message for f in res.flags]
    gap = next(f for f in res.flags if f.metric == "sensitivity" and f.group == "65+")
    assert gap.ci_high < -0.05  # gap = group - overall; its whole CI lies beyond the tolerance


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_control_data_flags_nothing(seed):
    res, data = _audit(seed, control=True)
    assert data.card["effects"] == []
    assert res.flags == [], [f.message for f in res.flags]
