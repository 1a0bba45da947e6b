"""Subgroup dashboard: statuses follow the audit's flags, CIs and slider at its exact threshold."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from test_widgets_common import FakeExplain

from xai_audit.fairness import evaluate_subgroups
from xai_audit.widgets import CaseSource, DashboardState, SubgroupDashboard
from xai_audit.widgets._flags import group_key
from xai_audit.widgets.dashboard import THRESHOLD_STEP, slider_range

THRESHOLD = 0.5
SETTINGS = {"n_boot": 200, "tolerance": 0.05, "min_group_size": 30, "random_state": 0}


def _cases(seed: int, effect: bool, n: int = 600) -> pd.DataFrame:
    """Groups A/B/C by sex; with ``effect`` half of B's positives score low (missed)."""
    rng = np.random.default_rng(seed)
    group = np.array(["A", "B", "C"])[np.arange(n) % 3]
    sex = rng.choice(["F", "M"], n)
    label = rng.integers(0, 2, n)
    score = np.where(label == 1, rng.uniform(0.55, 1.0, n), rng.uniform(0.0, 0.45, n))
    if effect:
        missed = (group == "B") & (label == 1) & (rng.random(n) < 0.5)
        score = np.where(missed, rng.uniform(0.05, 0.45, n), score)
    predicted = (score >= THRESHOLD).astype(int)
    outcome = np.select(
        [(label == 1) & (predicted == 1), (label == 0) & (predicted == 1), label == 1],
        ["TP", "FP", "FN"],
        "TN",
    )
    return pd.DataFrame(
        {
            "case_id": [f"c{i:04d}" for i in range(n)],
            "patient_id": [f"p{i:04d}" for i in range(n)],
            "group": group,
            "sex": sex,
            "label": label,
            "score": score,
            "predicted": predicted,
            "outcome": outcome,
        }
    )


def _source(table: pd.DataFrame) -> CaseSource:
    images = np.random.default_rng(0).random((len(table), 1, 8, 8)).astype(np.float32)
    return CaseSource(
        table,
        attributes=["group", "sex"],
        class_names=["normal", "lesion"],
        positive_index=1,
        threshold=THRESHOLD,
        methods=["bright"],
        images=images,
        model=object(),  # only handed to the fake explainer
        explain_fn=FakeExplain(),
    )


def _audit(table: pd.DataFrame, threshold: float = THRESHOLD):
    """What the audit computes: the fairness module's own result (flags, CIs, settings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small intersections are expected
        return evaluate_subgroups(
            table["label"].to_numpy(),
            table["score"].to_numpy(),
            table[["group", "sex"]],
            threshold=threshold,
            intersections=True,
            patient_id=table["patient_id"].to_numpy(),
            **SETTINGS,
        )


def _flagged(res, attributes: set[str] | None = None) -> set:
    keys = {group_key(f.attribute, f.group) for f in res.flags}
    if attributes is None:
        return keys
    return {k for k in keys if {c for c, _ in k} <= attributes}


def _high(table: pd.DataFrame) -> set:
    rows = table[table["status"] == "high"]
    return {group_key(a, g) for a, g in rows[["attribute", "group"]].itertuples(index=False)}


def test_status_high_is_the_audits_flag_at_its_threshold() -> None:
    cases = _cases(0, effect=True)
    res = _audit(cases)
    assert group_key("group", "B") in _flagged(res)  # the injected gap is found
    d = DashboardState(_source(cases), res, attributes=["group"])
    t = d.table().set_index("group")
    assert t.loc["B", "status"] == "high"
    assert t.loc["B", "reason"].startswith("Sensitivity for group=B is")
    assert t.loc["A", "status"] == "ok" and t.loc["C", "status"] == "ok"
    assert _high(d.table()) == _flagged(res, {"group"})
    assert d.warnings()[0].startswith("group = B (flagged): Sensitivity")
    assert d.min_group_size == 30 and d.ci == pytest.approx(0.95)  # the audit's settings


def test_intersections_match_the_audit_whatever_the_order_chosen() -> None:
    cases = _cases(1, effect=True)
    res = _audit(cases)  # the audit names the cell "group × sex"
    d = DashboardState(_source(cases), res, attributes=["sex", "group"])  # "sex × group"
    t = d.table()
    inter = t[t["attribute"] == "sex × group"]
    assert len(inter) == 6
    assert (inter["ci_source"] == "audit").all()  # CIs available at the audit's threshold
    audit_rows = res.by_group[
        (res.by_group["attribute"] == "group × sex") & (res.by_group["metric"] == "sensitivity")
    ].set_index("group")
    row = inter.set_index("group").loc["F | B"]
    assert row["ci_low"] == pytest.approx(audit_rows.loc["B | F", "ci_low"])
    assert _high(t) == _flagged(res)
    assert not any("not available" in w for w in d.warnings())


def test_other_thresholds_use_the_audits_function_once_cis_are_computed() -> None:
    cases = _cases(2, effect=True)
    d = DashboardState(_source(cases), _audit(cases), attributes=["group", "sex"], n_boot=200)
    d.set_threshold(0.4)
    t = d.table()
    assert (t.loc[t["attribute"] != "overall", "status"] == "not_assessed").all()
    assert any("Compute CIs" in w and "flags" in w for w in d.warnings())
    d.compute_cis()
    expected = _audit(cases, threshold=0.4)
    assert _high(d.table()) == _flagged(expected)
    assert group_key("group", "B") in _high(d.table())
    d.set_threshold(THRESHOLD)  # back at the audit's threshold: its own flags again
    assert d.at_audit_threshold and _high(d.table()) == _flagged(_audit(cases))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_effect_no_flag(seed: int) -> None:
    cases = _cases(seed, effect=False)
    d = DashboardState(_source(cases), _audit(cases), attributes=["group", "sex"])
    assert not (d.table()["status"] == "high").any()
    d.set_threshold(0.45)
    d.compute_cis()
    assert not (d.table()["status"] == "high").any()


def test_direct_mode_flags_without_an_audit() -> None:
    cases = _cases(3, effect=True)
    d = DashboardState(_source(cases), attributes=["group"], n_boot=200)  # auto CIs
    t = d.table().set_index("group")
    assert t.loc["B", "status"] == "high" and t.loc["A", "status"] == "ok"


# ---------------------------------------------------------------------- the widget
def test_slider_grid_passes_through_the_audit_threshold() -> None:
    for anchor in (0.3795899450778961, 0.5, 0.0123, 0.999):
        low, high = slider_range(anchor, THRESHOLD_STEP)
        k = (anchor - low) / THRESHOLD_STEP
        assert abs(k - round(k)) < 1e-9 and 0.0 <= low < THRESHOLD_STEP
        assert 1.0 - THRESHOLD_STEP < high <= 1.0 + 1e-12


def test_widget_starts_at_the_exact_threshold_and_returns_to_it() -> None:
    exact = 0.3795899450778961
    cases = _cases(4, effect=True)
    cases["predicted"] = (cases["score"] >= exact).astype(int)
    src = CaseSource(
        cases,
        attributes=["group", "sex"],
        class_names=["normal", "lesion"],
        positive_index=1,
        threshold=exact,
        methods=["bright"],
    )
    res = _audit(cases, threshold=exact)
    d = SubgroupDashboard(source=src, subgroups=res, attributes=["group"])
    assert d.threshold.value == exact and d.state.threshold == exact
    assert "audit" in d.table_html.value and "high" in d.table_html.value
    # the front end moves one step up and back: float noise lands on the exact value again
    d.threshold.value = d.threshold.min + 38 * THRESHOLD_STEP
    assert not d.state.at_audit_threshold
    d.threshold.value = d.threshold.min + 37 * THRESHOLD_STEP
    assert d.state.threshold == exact and "not available" not in d.warnings_html.value
    d.threshold.value = 0.6
    d.reset_button.click()
    assert d.state.threshold == exact and d.threshold.value == exact


def test_picking_a_group_opens_its_cases_at_once() -> None:
    cases = _cases(5, effect=True)
    d = SubgroupDashboard(source=_source(cases), subgroups=_audit(cases), attributes=["group"])
    assert d.group.value is None and d.explorer is None  # nothing picked yet
    assert any("flagged" in label for label, _ in d.group.options)
    d.group.value = ("group", "B")
    assert d.explorer is not None and d.error.value == ""
    shown = cases.set_index("case_id").loc[d.explorer.state.cases, "group"]
    assert set(shown) == {"B"}
    d.threshold.value = 0.45  # a refresh keeps the picked group
    assert d.group.value == ("group", "B")
