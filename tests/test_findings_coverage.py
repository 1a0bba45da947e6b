"""'Nothing flagged' is only said of what was checked: every audit lists what ran and what not."""

from __future__ import annotations

from xai_audit.audit.findings import check_coverage, collect_findings


def _quality(**over):
    q = {
        "shortcuts": {
            "gradcam": {
                "searched": "the whole image (16 x 16 patches) for sex, site",
                "not_searched": ["site=C (4 positive predictions)"],
                "candidates": [],
            }
        },
        "sanity": {"gradcam": {"passed": True}},
        "faithfulness": {"gradcam": {"headline": {"verdict": "pass"}}},
        "localisation": {},
    }
    q.update(over)
    return q


SUMMARY = {"attributes": ["sex", "site"], "n_with_mask": 0, "missing_attributes": {}}


def test_nothing_flagged_names_what_ran_and_what_did_not() -> None:
    findings = collect_findings([], [], _quality(), SUMMARY, "the whole image")
    ok = [f for f in findings if f["severity"] == "ok"]
    assert len(ok) == 1 and ok[0]["title"] == "Nothing flagged in the checks that ran"
    msg = ok[0]["message"]
    assert "groups of sex, site" in msg
    assert "site=C (4 positive predictions)" in msg  # what the shortcut search left out
    assert "gradcam passed" in msg and "gradcam pass" in msg
    assert "Not checked: localisation: no lesion masks" in msg
    assert "unrecorded factors" in msg and "absolute performance" in msg
    coverage = [f for f in findings if f["kind"] == "coverage"]
    assert len(coverage) == 1 and coverage[0]["severity"] == "info"


def test_coverage_is_listed_when_something_is_flagged_too() -> None:
    q = _quality(sanity={"gradcam": {"passed": False, "reason": "similar after randomising"}})
    findings = collect_findings([], [], q, SUMMARY, "the whole image")
    assert not [f for f in findings if f["severity"] == "ok"]
    assert findings[0]["severity"] == "high" and findings[0]["kind"] == "sanity"
    checks = {c["check"]: c for c in findings[-1]["evidence"]["checks"]}
    assert checks["sanity check"]["detail"] == "gradcam failed"


def test_switched_off_checks_are_not_called_checked() -> None:
    checks = check_coverage({"shortcuts": {}, "sanity": {}, "faithfulness": {}}, SUMMARY, [])
    ran = {c["check"]: c["ran"] for c in checks}
    assert ran == {
        "subgroup performance": True,
        "shortcuts": False,
        "sanity check": False,
        "faithfulness": False,
        "localisation": False,
        "absolute performance": False,
        "calibration": False,
        "unrecorded factors": False,
    }
    small = check_coverage({}, SUMMARY, ["Group site=C has only 12 cases (fewer than 30)."])
    assert "1 group(s) too small" in small[0]["detail"]
