"""Absolute performance in every audit: a model at chance is flagged, a working one never is.

Scores are simulated with a known AUROC (binormal model: positives ~ N(d, 1), negatives ~
N(0, 1), AUROC = Phi(d / sqrt(2))), so each scenario's truth is known; every flagging
scenario has a clean control over several seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from xai_audit.audit.aggregate import subgroup_section
from xai_audit.audit.findings import check_coverage, collect_findings
from xai_audit.audit.performance_findings import check_floor, performance_check

QUALITY = {"shortcuts": {}, "sanity": {}, "faithfulness": {}, "localisation": {}}
SUMMARY = {"attributes": ["sex", "age_group"], "n_with_mask": 0, "missing_attributes": {}}


def _data(seed: int, n: int = 600, d: float = 1.5, chance_group: str | None = None):
    """Labels, scores and attributes; ``chance_group`` (an age group) gets random scores."""
    rng = np.random.default_rng(seed)
    y = rng.binomial(1, 0.4, n)
    sex = rng.choice(["F", "M"], n)
    age = rng.choice(["18-39", "40-64", "65+"], n)
    s = rng.normal(d * y, 1.0)
    if chance_group is not None:
        m = age == chance_group
        s[m] = rng.normal(0.0, 1.0, m.sum())
    return pd.DataFrame({"label": y, "score": 1 / (1 + np.exp(-s)), "sex": sex, "age_group": age})


def _subgroups(df: pd.DataFrame, seed: int, threshold="youden") -> dict:
    return subgroup_section(
        df,
        ["sex", "age_group"],
        None,
        threshold=threshold,
        intersections=False,
        n_boot=200,
        ci=0.95,
        min_group_size=30,
        tolerance=0.05,
        seed=seed,
        label_name="lesion",
    )


def _findings(sub: dict, floor=None) -> list[dict]:
    return collect_findings(
        sub["flags"],
        sub["warnings"],
        QUALITY,
        SUMMARY,
        "the whole image",
        sub["disparities"],
        subgroups=sub,
        performance_floor=floor,
    )


def test_random_scores_get_the_high_absolute_performance_finding() -> None:
    # The rule is the interval: flagged exactly when the overall AUROC CI includes 0.5, which
    # for random scores is about 95 % of data sets (seed 0's sample AUROC is 0.577, a
    # rare draw 3 standard errors above 0.5; its groups are then listed as too uncertain).
    flagged = 0
    for seed in range(10):
        sub = _subgroups(_data(seed, d=0.0), seed)
        findings = _findings(sub)
        auroc = sub["overall"].set_index("metric").loc["auroc"]
        high = [f for f in findings if f["kind"] == "performance" and f["severity"] == "high"]
        if auroc["ci_low"] > 0.5:
            assert not high
            # Its groups' intervals include 0.5 but are not below the overall one: listed as
            # too uncertain, not flagged (a wide interval is not evidence of chance).
            coverage = " ".join(f["message"] for f in findings if f["kind"] == "coverage")
            assert "too uncertain to tell from chance" in coverage
            continue
        flagged += 1
        assert len(high) == 1 and high[0]["where"] == "overall"
        ev = high[0]["evidence"]
        assert ev["value"] == pytest.approx(auroc["value"]) and ev["ci_low"] <= 0.5
        assert f"{auroc['value']:.3f}" in high[0]["title"]  # the wording names the numbers
        assert "includes chance (0.5)" in high[0]["message"] or "below chance" in high[0]["message"]
        # no green "nothing flagged" for a useless model
        assert not [f for f in findings if f["severity"] == "ok"]
        # groups at chance are listed in the overall finding, not repeated as medium ones
        assert not [f for f in findings if f["severity"] == "medium"]
    assert flagged >= 8


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_working_model_is_not_flagged_and_the_check_is_listed_as_run(seed: int) -> None:
    # AUROC Phi(1.5 / sqrt 2) = 0.856 in every group: nothing to flag.
    findings = _findings(_subgroups(_data(seed, d=1.5), seed))
    assert not [f for f in findings if f["kind"] == "performance"]
    ok = [f for f in findings if f["severity"] == "ok"]
    assert len(ok) == 1 and ok[0]["message"].startswith("Overall AUROC above chance")
    checks = {c["check"]: c for c in findings[-1]["evidence"]["checks"]}
    assert checks["absolute performance"]["ran"]
    assert "against chance" in checks["absolute performance"]["detail"]
    assert "the AUROC of 5 group(s) against chance" in checks["absolute performance"]["detail"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_group_at_chance_is_a_medium_finding_for_that_group_only(seed: int) -> None:
    sub = _subgroups(_data(seed, n=900, d=2.0, chance_group="65+"), seed)
    perf = [f for f in _findings(sub) if f["kind"] == "performance"]
    assert [(f["severity"], f["where"]) for f in perf] == [("medium", "age_group=65+")]
    row = sub["by_group"].query("metric == 'auroc' and group == '65+'").iloc[0]
    assert perf[0]["evidence"]["ci_low"] == pytest.approx(row["ci_low"])
    assert row["ci_low"] <= 0.5
    assert f"n={int(row['n'])}" in perf[0]["message"]


def test_expected_auroc_matches_the_binormal_truth() -> None:
    # The simulation is what the tests say it is: AUROC = Phi(d / sqrt(2)).
    df = _data(0, n=20000, d=1.5)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(df["label"], df["score"]) == pytest.approx(
        norm.cdf(1.5 / 2**0.5), abs=0.01
    )


def test_documented_floor_is_judged_on_the_lower_ci() -> None:
    sub = _subgroups(_data(0, d=1.5), 0)  # AUROC about 0.86
    low, high = sub["overall"].set_index("metric").loc["auroc", ["ci_low", "ci_high"]]
    unmet = performance_check(sub, {"auroc": round(float(high) + 0.01, 2)}).findings
    floor = [f for f in unmet if f["kind"] == "performance"]
    assert len(floor) == 1 and floor[0]["severity"] == "high"
    assert "estimate itself is below the floor" in floor[0]["message"]
    # estimate above the floor, lower CI below it: "not shown", still high
    mid = float(sub["overall"].set_index("metric").loc["auroc", "value"]) - 0.001
    shown = [
        f for f in performance_check(sub, {"auroc": mid}).findings if f["kind"] == "performance"
    ]
    assert shown and "is not, so meeting the floor is not shown" in shown[0]["message"]
    met = performance_check(sub, {"auroc": round(float(low) - 0.01, 2), "sensitivity": 0.1})
    assert not [f for f in met.findings if f["kind"] == "performance"]
    assert "auroc >= " in met.coverage[0]["detail"] and "met" in met.coverage[0]["detail"]


def test_floor_setting_errors() -> None:
    assert check_floor(None) == []
    assert check_floor({"auroc": 0.8}) == []
    assert "unknown or unsupported metric 'ece'" in check_floor({"ece": 0.1})[0]
    assert "must be a number in [0, 1]" in check_floor({"auroc": 1.5})[0]
    assert "must be a mapping" in check_floor(0.8)[0]


def test_threshold_origin_is_stated_and_same_data_youden_called_optimistic() -> None:
    df = _data(0, d=1.5)
    youden = [f for f in _findings(_subgroups(df, 0)) if f["kind"] == "operating_point"]
    assert youden[0]["title"].endswith("chosen on the audited data (optimistic)")
    assert "optimistic" in youden[0]["message"] and youden[0]["evidence"]["optimistic"]
    fixed = [
        f for f in _findings(_subgroups(df, 0, threshold=0.6)) if f["kind"] == "operating_point"
    ]
    assert "set outside the audited data" in fixed[0]["title"]
    assert "given in the settings" in fixed[0]["message"] and not fixed[0]["evidence"]["optimistic"]


def test_without_the_subgroup_section_absolute_performance_stays_not_checked() -> None:
    ran = {c["check"]: c["ran"] for c in check_coverage(QUALITY, SUMMARY, [])}
    assert ran["absolute performance"] is False
