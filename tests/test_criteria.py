"""Acceptance criteria: file errors with their line, verdicts against hand-made tables."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from xai_audit.audit.criteria import (
    COLUMNS,
    CriteriaError,
    evaluate_criteria,
    exit_code,
    load_criteria,
    overall_verdict,
    parse_criteria,
    summarise,
)

ISSUE_EXAMPLE = """\
criteria:
  - metric: sensitivity
    groups: age_group            # every group of this attribute
    lower_ci_at_least: 0.85
  - metric: auroc
    groups: overall
    lower_ci_at_least: 0.90
  - compare_to: reference        # only in a comparison
    metric: sensitivity
    groups: all
    non_inferiority_margin: 0.02
  - no_findings: high
"""


def _row(attribute, group, metric, value, lo, hi, n=100, status="ok", reason=""):
    return dict(
        label="y", attribute=attribute, group=group, n=n, n_pos=n // 2, metric=metric,
        value=value, ci_low=lo, ci_high=hi, status=status, reason=reason,
    )  # fmt: skip


def _result(findings=()) -> SimpleNamespace:
    """A result with known numbers (what the criteria read: subgroups and findings)."""
    overall = pd.DataFrame(
        [
            {"label": "y", "metric": "auroc", "value": 0.95, "ci_low": 0.93, "ci_high": 0.97},
            {"label": "y", "metric": "sensitivity", "value": 0.9, "ci_low": 0.86, "ci_high": 0.94},
            {"label": "y", "metric": "ece", "value": 0.04, "ci_low": 0.02, "ci_high": 0.06},
        ]
    )
    by = pd.DataFrame(
        [
            _row("age_group", "18-39", "sensitivity", 1.0, 1.0, 1.0),
            _row("age_group", "40-64", "sensitivity", 0.95, 0.9, 0.99),
            _row("age_group", "65+", "sensitivity", 0.66, 0.56, 0.75),
            _row("sex", "F", "sensitivity", 0.88, 0.8, 0.95),
            _row("sex", "M", "sensitivity", 0.9, 0.84, 0.96),
            _row(
                "site",
                "A",
                "sensitivity",
                np.nan,
                np.nan,
                np.nan,
                n=12,
                status="small",
                reason="only 12 cases (minimum 30): metrics not computed",
            ),
            _row("site", "B", "sensitivity", 0.9, 0.85, 0.95),
            _row("scanner", "X", "sensitivity", 0.9, 0.87, 0.93),
            _row("sex × age_group", "F | 65+", "sensitivity", 0.68, 0.56, 0.8),
        ]
    )
    return SimpleNamespace(subgroups={"overall": overall, "by_group": by}, findings=list(findings))


def _criteria(tmp_path: Path, text: str, name: str = "c.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return load_criteria(p)


def test_issue_example_verdicts(tmp_path: Path) -> None:
    crit = _criteria(tmp_path, ISSUE_EXAMPLE)
    assert [c.line for c in crit] == [2, 5, 8, 12]
    t = evaluate_criteria(_result(), crit)
    assert list(t.columns) == COLUMNS
    sens = t[t["metric"] == "sensitivity"].iloc[:3]
    assert list(sens["group"]) == ["age_group=18-39", "age_group=40-64", "age_group=65+"]
    assert list(sens["verdict"]) == ["pass", "pass", "fail"]
    fail = sens.iloc[2]
    assert (fail["value"], fail["ci_low"], fail["ci_high"]) == (0.66, 0.56, 0.75)
    assert fail["required"] == "lower CI >= 0.85" and "lower CI 0.560 < 0.85" in fail["reason"]
    auroc = t[t["metric"] == "auroc"]
    assert list(auroc["verdict"]) == ["pass"] and auroc["group"].iloc[0] == "overall"
    cmp = t[t["criterion"].str.contains("vs reference")]
    assert (
        list(cmp["verdict"]) == ["inconclusive"] and "needs a comparison" in cmp["reason"].iloc[0]
    )
    assert t[t["metric"] == "findings"]["verdict"].tolist() == ["pass"]
    assert overall_verdict(t) == "fail" and exit_code(t) == 1
    s = summarise(t)
    assert list(s["verdict"]) == ["fail", "pass", "inconclusive", "pass"]
    assert s.iloc[0][["n_pass", "n_fail", "n_inconclusive"]].tolist() == [2, 1, 0]


def test_exit_codes_pass_fail_inconclusive() -> None:
    r = _result()
    ok = parse_criteria([{"metric": "auroc", "lower_ci_at_least": 0.9}])
    assert exit_code(evaluate_criteria(r, ok)) == 0
    bad = parse_criteria([{"metric": "auroc", "lower_ci_at_least": 0.95}])
    assert exit_code(evaluate_criteria(r, bad)) == 1
    open_ = parse_criteria([{"metric": "sensitivity", "groups": "site", "lower_ci_at_least": 0.8}])
    t = evaluate_criteria(r, open_)
    assert list(t["verdict"]) == ["inconclusive", "pass"] and exit_code(t) == 2
    assert "group too small (n=12)" in t["reason"].iloc[0]
    # fail wins over inconclusive
    both = parse_criteria(
        [
            {"metric": "sensitivity", "groups": "site", "lower_ci_at_least": 0.8},
            {"metric": "auroc", "lower_ci_at_least": 0.99},
        ]
    )
    assert exit_code(evaluate_criteria(r, both)) == 1
    assert overall_verdict(pd.DataFrame(columns=COLUMNS)) == "inconclusive"


def test_group_specs() -> None:
    r = _result()

    def groups(spec):
        c = parse_criteria([{"metric": "sensitivity", "groups": spec, "lower_ci_at_least": 0.5}])
        t = evaluate_criteria(r, c)
        return list(zip(t["group"], t["verdict"], t["reason"]))

    assert [g for g, *_ in groups("age_group=65+")] == ["age_group=65+"]
    # intersections in any order, with or without spaces, named like the findings
    for spec in ("sex=F & age_group=65+", "age_group=65+&sex=F"):
        assert [g for g, *_ in groups(spec)] == ["sex=F & age_group=65+"]
    assert [g for g, *_ in groups("sex&age_group")] == ["sex=F & age_group=65+"]
    allg = groups("all")
    assert allg[0][0] == "overall" and len(allg) == 10
    (g, v, why), = groups("scanner")  # fmt: skip
    assert v == "inconclusive" and "single group" in why
    (g, v, why), = groups("race")  # fmt: skip
    assert v == "inconclusive" and "'race' was not audited" in why
    (g, v, why), = groups("age_group=90+")  # fmt: skip
    assert g == "age_group=90+" and v == "inconclusive" and "no group age_group=90+" in why
    assert "age_group=65+" in why  # names the groups that exist
    ordered = groups(["age_group=65+", "race", "overall"])
    assert [g for g, *_ in ordered] == ["age_group=65+", "race", "overall"]


def test_upper_bound_and_no_findings_severity() -> None:
    findings = [{"severity": "medium", "title": "maps unfaithful"}, {"severity": "info"}]
    r = _result(findings)
    c = parse_criteria(
        [
            {"metric": "ece", "upper_ci_at_most": 0.05},
            {"no_findings": "high"},
            {"no_findings": "medium", "name": "nothing medium"},
        ]
    )
    t = evaluate_criteria(r, c)
    assert list(t["verdict"]) == ["fail", "pass", "fail"]
    assert "upper CI 0.060 > 0.05" in t["reason"].iloc[0]
    assert t["criterion"].iloc[2] == "nothing medium" and "maps unfaithful" in t["reason"].iloc[2]
    assert t["value"].iloc[2] == 1.0


def _comparison() -> SimpleNamespace:
    rows = [
        ("sensitivity", "overall", "overall", 0.88, 0.90, 0.02, -0.01, 0.05),
        ("sensitivity", "age_group", "65+", 0.62, 0.72, 0.10, 0.04, 0.16),
        ("sensitivity", "age_group", "18-39", 1.0, 0.97, -0.03, -0.06, -0.01),
        ("sensitivity", "sex × age_group", "F | 65+", 0.6, 0.7, 0.1, -0.01, 0.2),
        ("ece", "overall", "overall", 0.05, 0.06, 0.01, -0.01, 0.015),
    ]
    d = pd.DataFrame(
        rows,
        columns=["metric", "attribute", "group", "reference", "new", "diff", "ci_low", "ci_high"],
    )
    d["n"] = 100
    return SimpleNamespace(differences=d)


def test_comparison_criteria_read_the_paired_differences() -> None:
    c = parse_criteria(
        [
            {
                "compare_to": "reference",
                "metric": "sensitivity",
                "groups": "all",
                "non_inferiority_margin": 0.02,
            },
            {
                "compare_to": "reference",
                "metric": "sensitivity",
                "groups": "age_group=65+",
                "lower_ci_at_least": 0.0,
                "name": "65+ gap closed",
            },
            {"compare_to": "reference", "metric": "ece", "non_inferiority_margin": 0.02},
            {
                "compare_to": "reference",
                "metric": "sensitivity",
                "groups": "sex=F & age_group=65+",
                "lower_ci_at_least": 0.0,
            },
        ]
    )
    t = evaluate_criteria(_result(), c, comparison=_comparison())
    ni = t[t["criterion"] == c.items[0].name]
    assert list(zip(ni["group"], ni["verdict"])) == [
        ("overall", "pass"),  # -0.01 >= -0.02
        ("age_group=65+", "pass"),
        ("age_group=18-39", "fail"),  # -0.06 < -0.02: worse by more than the margin
        ("sex=F & age_group=65+", "pass"),
    ]
    assert ni["required"].iloc[0] == "lower CI of new - reference >= -0.02"
    assert t[t["criterion"] == "65+ gap closed"]["verdict"].tolist() == ["pass"]
    ece = t[t["metric"] == "ece"]  # lower is better: the upper end of the diff is bounded
    assert ece["required"].iloc[0] == "upper CI of new - reference <= 0.02"
    assert ece["verdict"].tolist() == ["pass"]
    assert t["verdict"].iloc[-1] == "fail"  # the intersection's CI reaches -0.01 < 0


def test_self_comparison_has_zero_differences_and_passes() -> None:
    d = _comparison().differences.copy()
    d[["new", "diff", "ci_low", "ci_high"]] = d[["reference"]].to_numpy() * [1, 0, 0, 0]
    c = parse_criteria(
        [
            {
                "compare_to": "reference",
                "metric": "sensitivity",
                "groups": "all",
                "non_inferiority_margin": 0.0,
            }
        ]
    )
    t = evaluate_criteria(_result(), c, comparison=SimpleNamespace(differences=d))
    assert (t["verdict"] == "pass").all() and (t["value"] == 0).all()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "criteria:\n  - metric: sensitivty\n    lower_ci_at_least: 0.8\n",
            "line 2 (criterion 1): unknown metric 'sensitivty'",
        ),
        (
            "criteria:\n  - metric: auroc\n    groups: overall\n",
            "line 2 (criterion 1): give exactly one bound",
        ),
        (
            "criteria:\n  - metric: auroc\n    lower_ci_at_least: 0.8\n  - metric: auroc\n"
            "    lower_ci_at_least: 0.9\n    upper_ci_at_most: 1\n",
            "line 4 (criterion 2): give exactly one bound (lower_ci_at_least or upper_ci_at_most); "
            "got lower_ci_at_least, upper_ci_at_most",
        ),
        (
            "criteria:\n  - metric: auroc\n    lower_ci_at_least: high\n",
            "lower_ci_at_least must be a number, got 'high'",
        ),
        (
            "criteria:\n  - metric: auroc\n    lower_ci_at_least: 90\n",
            "lower_ci_at_least must be in [0, 1]",
        ),
        (
            "criteria:\n  - metric: auroc\n    non_inferiority_margin: 0.02\n",
            "non_inferiority_margin needs compare_to: reference",
        ),
        (
            "criteria:\n  - metric: auroc\n    group: overall\n    lower_ci_at_least: 0.8\n",
            "unknown key(s) ['group']",
        ),
        ("criteria:\n  - no_findings: critical\n", "no_findings must be one of"),
        (
            "criteria:\n  - compare_to: model_a\n    metric: auroc\n    lower_ci_at_least: 0\n",
            "compare_to must be 'reference'",
        ),
        ("criteria:\n  - auroc >= 0.9\n", "line 2 (criterion 1): expected a mapping"),
        ("criteria: []\n", "'criteria' is empty"),
        ("rules:\n  - metric: auroc\n", "no 'criteria' list"),
        ("criteria:\n  - metric: auroc\n   lower_ci_at_least: 0.9\n", "cannot parse the file"),
        (
            "criteria:\n  - metric: auroc\n    groups: 3\n    lower_ci_at_least: 0.9\n",
            "groups must be 'overall', 'all'",
        ),
    ],
)
def test_bad_files_name_the_line_and_what_is_expected(tmp_path: Path, text: str, expected) -> None:
    with pytest.raises(CriteriaError) as err:
        _criteria(tmp_path, text)
    assert expected in str(err.value)
    assert str(tmp_path / "c.yaml") in str(err.value)


def test_toml_file_and_its_lines(tmp_path: Path) -> None:
    text = (
        'name = "gate"\n\n[[criteria]]\nmetric = "auroc"\nlower_ci_at_least = 0.9\n\n'
        '[[criteria]]\nmetric = "sensitivity"\ngroups = "age_group"\nlower_ci_at_leest = 0.85\n'
    )
    with pytest.raises(CriteriaError, match=r"line 7 \(criterion 2\): unknown key\(s\) "):
        _criteria(tmp_path, text, "c.toml")
    crit = _criteria(tmp_path, text.replace("leest", "least"), "c.toml")
    assert crit.name == "gate" and [c.line for c in crit] == [3, 7]
    assert crit.sha256 and len(crit.sha256) == 64


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(CriteriaError, match="criteria file not found"):
        load_criteria(tmp_path / "nope.yaml")
    (tmp_path / "c.txt").write_text("criteria: []")
    with pytest.raises(CriteriaError, match=r"unknown file type '\.txt'"):
        load_criteria(tmp_path / "c.txt")
