"""Key findings name the smallest group that explains a gap (main effect vs intersection).

Known answers on simulated labels/scores: each case's sensitivity is set by its cell, so the
true pattern (a main effect, an intersection-only gap, both, or nothing) is known exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from xai_audit.audit.findings import collect_findings, disparity_findings
from xai_audit.fairness import evaluate_subgroups
from xai_audit.fairness.attribution import attribute_gaps

AGES = ("18-39", "40-64", "65+")
SITES = ("A", "B", "C")


def _simulate(seed: int, sens_of: callable, n: int = 3600) -> pd.DataFrame:
    """Sex, age group, site uniform; prevalence 0.5; sensitivity per case from ``sens_of``."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n),
            "age_group": rng.choice(AGES, n),
            "site": rng.choice(SITES, n),
        }
    )
    y = rng.random(n) < 0.5
    sens = sens_of(df)
    hit = rng.random(n) < np.where(y, sens, 0.9)  # specificity 0.9 everywhere
    pred = np.where(y, hit, ~hit)
    df["y"] = y.astype(int)
    df["score"] = np.where(pred, 0.5 + 0.5 * rng.random(n), 0.5 * rng.random(n))
    return df


def _findings(df: pd.DataFrame, attrs: list[str], seed: int) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate_subgroups(
            df["y"], df["score"], df[attrs], threshold=0.5, n_boot=400, random_state=seed
        )
    flags = [f.to_dict() for f in res.flags]
    return disparity_findings(flags, res.disparities)


def _high(findings: list[dict]) -> dict[str, dict]:
    return {f["where"]: f for f in findings if f["kind"] == "disparity" and f["severity"] == "high"}


def _intersection_only(df: pd.DataFrame) -> np.ndarray:
    bad = (df["sex"] == "F") & (df["age_group"] == "65+")
    return np.where(bad, 0.06, 0.98)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gap_carried_by_one_intersection_is_named_there(seed: int) -> None:
    df = _simulate(seed, _intersection_only)
    high = _high(_findings(df, ["sex", "age_group"], seed))
    assert set(high) == {"sex=F & age_group=65+"}, {k: v["message"] for k, v in high.items()}
    f = high["sex=F & age_group=65+"]
    ev = f["evidence"]
    # The encoding bench/findings.py scores on.
    assert ev["attribute"] == "sex × age_group" and ev["group"] == "F | 65+"
    assert ev["metric"] == "sensitivity" and ev["attribution"] == "intersection"
    # The single-attribute gaps it explains are folded under it, not separate findings.
    assert set(ev["explains"]) == {"sex=F", "age_group=65+"}
    # Evidence that the other cells are unaffected: values and CIs of the difference.
    cells = {c["where"]: c for c in ev["unaffected_cells"]}
    assert set(cells) == {
        "sex=F & age_group=18-39",
        "sex=F & age_group=40-64",
        "sex=M & age_group=65+",
    }
    for c in cells.values():
        assert c["within_tolerance"] is True and c["value"] > 0.9
        assert c["diff_ci_low"] >= -0.05 and c["diff_ci_low"] <= c["diff_ci_high"]
    assert "specific to sex=F & age_group=65+" in f["message"]
    assert "sex=F & age_group=18-39 0.9" in f["message"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_main_effect_stays_a_single_group_finding(seed: int) -> None:
    df = _simulate(seed, lambda d: np.where(d["sex"] == "F", 0.2, 0.98))
    high = _high(_findings(df, ["sex", "age_group"], seed))
    assert set(high) == {"sex=F"}, {k: v["message"] for k, v in high.items()}
    ev = high["sex=F"]["evidence"]
    assert ev["attribute"] == "sex" and ev["group"] == "F"
    assert ev["attribution"] == "single_group" and ev["explains"] == []
    # Every sex=F cell is affected, and folded under the main effect as before.
    assert {"sex=F & age_group=18-39", "sex=F & age_group=40-64"} <= set(ev["intersections"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixed_main_effect_and_intersection_only_gap(seed: int) -> None:
    def sens(d: pd.DataFrame) -> np.ndarray:
        old = d["age_group"] == "65+"  # main effect of age: every 65+ cell
        f_b = (d["sex"] == "F") & (d["site"] == "B")  # intersection-only gap
        return np.where(f_b, 0.1, np.where(old, 0.45, 0.98))

    df = _simulate(seed, sens, n=5400)
    high = _high(_findings(df, ["sex", "age_group", "site"], seed))
    assert set(high) == {"age_group=65+", "sex=F & site=B"}, {
        k: v["message"] for k, v in high.items()
    }
    assert high["age_group=65+"]["evidence"]["attribution"] == "single_group"
    inter = high["sex=F & site=B"]["evidence"]
    assert inter["attribute"] == "sex × site" and inter["group"] == "F | B"
    assert inter["attribution"] == "intersection"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_effect_gives_no_disparity_finding(seed: int) -> None:
    df = _simulate(seed, lambda d: np.full(len(d), 0.85))
    findings = _findings(df, ["sex", "age_group", "site"], seed)
    assert [f for f in findings if f["kind"] == "disparity"] == []


def test_without_the_table_the_old_folding_applies() -> None:
    df = _simulate(0, _intersection_only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate_subgroups(
            df["y"], df["score"], df[["sex", "age_group"]], threshold=0.5, n_boot=200
        )
    flags = [f.to_dict() for f in res.flags]
    assert attribute_gaps(flags, None).explained_by == {}
    assert set(_high(disparity_findings(flags))) == {"sex=F", "age_group=65+"}
    # collect_findings passes the table through.
    out = collect_findings(flags, [], {}, {}, "corners", res.disparities)
    assert set(_high(out)) == {"sex=F & age_group=65+"}
    assert out[0]["id"] == "F1" and out[0]["kind"] == "disparity"


@pytest.mark.parametrize("seed", [3, 4])
def test_moderate_intersection_gap_with_a_third_attribute(seed: int) -> None:
    bad = lambda d: (d["sex"] == "F") & (d["age_group"] == "65+")  # noqa: E731
    df = _simulate(seed, lambda d: np.where(bad(d), 0.6, 0.95))
    high = _high(_findings(df, ["sex", "age_group", "site"], seed))
    assert set(high) == {"sex=F & age_group=65+"}, {k: v["message"] for k, v in high.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_confounded_attribute_is_folded_under_the_main_effect(seed: int) -> None:
    # Every 65+ case is affected; women are 70% of the 65+ group and 35% elsewhere, so sex=F
    # is flagged too, but its other age cells are fine: it is explained by age_group=65+.
    rng = np.random.default_rng(100 + seed)
    df = _simulate(seed, lambda d: np.where(d["age_group"] == "65+", 0.4, 0.97))
    old, female = df["age_group"] == "65+", df["sex"] == "F"
    p = np.where(old, np.where(female, 0.7, 0.3), np.where(female, 0.35, 0.65))
    df = df[rng.random(len(df)) < p / p.max()].reset_index(drop=True)
    high = _high(_findings(df, ["sex", "age_group", "site"], seed))
    assert set(high) == {"age_group=65+"}, {k: v["message"] for k, v in high.items()}
    assert high["age_group=65+"]["evidence"]["explains"] == ["sex=F"]


def _row(attribute: str, group: str, metric: str, diff: float, half: float) -> dict:
    return {
        "label": "y",
        "attribute": attribute,
        "group": group,
        "metric": metric,
        "value": 0.8 + diff,
        "diff_to_overall": diff,
        "diff_ci_low": diff - half,
        "diff_ci_high": diff + half,
    }


def _flag(attribute: str, group: str, metric: str, gap: float) -> dict:
    return {
        "label": "y",
        "attribute": attribute,
        "group": group,
        "metric": metric,
        "gap": gap,
        "ci_low": gap - 0.05,
        "ci_high": gap + 0.05,
        "tolerance": 0.05,
        "message": f"{metric} gap for {group}.",
        "kind": "vs_overall",
    }


def test_main_effect_on_one_metric_credits_no_intersection_with_another() -> None:
    """Hand-built tables: 65+ is a main effect for sensitivity (both sex cells flagged) but
    only sex=F & 65+ is flagged for AUROC. The group stays the finding; no intersection is
    named because of the AUROC pattern alone."""
    inter = "sex × age_group"
    rows = [_row("age_group", "65+", m, -0.3, 0.05) for m in ("sensitivity", "auroc")]
    rows += [
        _row("age_group", a, m, 0.1, 0.03)
        for a in ("18-39", "40-64")
        for m in ("sensitivity", "auroc")
    ]
    rows += [_row("sex", s, m, 0.0, 0.03) for s in ("F", "M") for m in ("sensitivity", "auroc")]
    for sex in ("F", "M"):
        for age in ("18-39", "40-64", "65+"):
            for m in ("sensitivity", "auroc"):
                bad = age == "65+" and (m == "sensitivity" or sex == "F")
                rows.append(_row(inter, f"{sex} | {age}", m, -0.3 if bad else 0.1, 0.04))
    flags = [
        _flag("age_group", "65+", "sensitivity", -0.3),
        _flag("age_group", "65+", "auroc", -0.3),
        _flag(inter, "F | 65+", "sensitivity", -0.3),
        _flag(inter, "M | 65+", "sensitivity", -0.3),
        _flag(inter, "F | 65+", "auroc", -0.3),
    ]
    table = pd.DataFrame(rows)
    att = attribute_gaps(flags, table)
    assert att.carriers == {} and att.explained_by == {}
    assert att.main_effects == {("age_group", "65+")}
    high = _high(disparity_findings(flags, table))
    assert set(high) == {"age_group=65+"}
    assert high["age_group=65+"]["evidence"]["intersections"] == [
        "sex=F & age_group=65+",
        "sex=M & age_group=65+",
    ]
    # Same tables, but the sensitivity gap confined to sex=F & 65+ too: now it is named.
    flags = [f for f in flags if f["group"] != "M | 65+"]
    table.loc[(table["group"] == "M | 65+"), ["diff_ci_low", "diff_ci_high"]] = [0.06, 0.14]
    att = attribute_gaps(flags, table)
    assert att.explained_by == {("age_group", "65+"): (inter, "F | 65+")}
    assert set(_high(disparity_findings(flags, table))) == {"sex=F & age_group=65+"}


def _small_cells(seed: int, sens_of: callable) -> pd.DataFrame:
    """About 60 positives per sex x site cell: intervals often too wide to fit a 0.05
    tolerance."""
    return _simulate(seed, sens_of, n=700)


@pytest.mark.parametrize("seed", [0, 1, 3])  # seeds where some neighbour is too wide to fit
def test_one_cell_gap_with_small_neighbours_is_still_named_there(seed: int) -> None:
    # As in the findings benchmark's two misattributed runs: the neighbouring cells are fine
    # but small, so their intervals cannot fit the tolerance; they lie above the flagged
    # cell's beyond doubt, which is evidence enough that the gap is the cell's.
    df = _small_cells(seed, lambda d: np.where((d["sex"] == "M") & (d["site"] == "A"), 0.3, 0.8))
    high = _high(_findings(df, ["sex", "site"], seed))
    assert set(high) == {"sex=M & site=A"}, {k: v["message"] for k, v in high.items()}
    cells = high["sex=M & site=A"]["evidence"]["unaffected_cells"]
    assert any(c["clear_by"] == "apart from the flagged cell" for c in cells)
    apart = [c for c in cells if c["clear_by"] == "apart from the flagged cell"]
    said = "entirely above the flagged cell's" in high["sex=M & site=A"]["message"]
    assert said == any(c["metric"] == "sensitivity" for c in apart)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_main_effect_with_small_cells_stays_a_main_effect(seed: int) -> None:
    # Every sex=M cell is affected: the cells' intervals overlap the flagged cell's, so no
    # single cell is named.
    df = _small_cells(seed, lambda d: np.where(d["sex"] == "M", 0.4, 0.9))
    high = _high(_findings(df, ["sex", "site"], seed))
    assert set(high) == {"sex=M"}, {k: v["message"] for k, v in high.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graded_main_effect_is_not_pinned_on_its_worst_cell(seed: int) -> None:
    # Every sex=M cell is worse (0.6), one much worse (0.15): the other M cells lie above the
    # worst one beyond doubt, but are themselves beyond tolerance, so sex=M stays a finding.
    def sens(d: pd.DataFrame) -> np.ndarray:
        m = d["sex"] == "M"
        return np.where(m & (d["site"] == "A"), 0.15, np.where(m, 0.6, 0.9))

    high = _high(_findings(_simulate(seed, sens, n=1800), ["sex", "site"], seed))
    assert "sex=M" in high, {k: v["message"] for k, v in high.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_group_worse_in_every_cell_stays_a_main_effect_though_one_cell_is_near_overall(
    seed: int,
) -> None:
    # As in a findings-benchmark hold-out (a blurrier site, seed 18): site A is worse for both
    # sexes (0.88 and 0.72 vs 0.96 at the other sites). Site A is a third of the data, so it
    # pulls the overall down to ~0.91 and its better cell sits within the tolerance of that
    # overall and apart from the worse cell; it is still 0.08 below the other sites, so the
    # gap is not the worse cell's alone.
    def sens(d: pd.DataFrame) -> np.ndarray:
        a = d["site"] == "A"
        return np.where(a & (d["sex"] == "M"), 0.72, np.where(a, 0.88, 0.96))

    high = _high(_findings(_simulate(seed, sens, n=3600), ["sex", "site"], seed))
    assert "site=A" in high, {k: v["message"] for k, v in high.items()}
    assert "sex=M & site=A" not in high
