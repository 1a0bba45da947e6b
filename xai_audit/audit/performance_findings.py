"""Absolute performance in every audit: is the model better than chance, and than its floor?

Subgroup checks compare groups with each other; a model that is useless for everyone has no
gaps and would otherwise pass them all. So every audit also asks:

- **overall**: does the AUROC confidence interval exclude chance (0.5)? If not, a high finding
  (the model cannot be shown to rank a positive case above a negative one). A documented
  floor (config ``performance_floor: {auroc: 0.8, sensitivity: 0.85}``) is met when the
  lower end of the metric's CI reaches it; otherwise a high finding too.
- **groups**: a group whose AUROC interval includes 0.5 and lies wholly below the overall
  interval gets a medium finding (the model may be no better than chance there); a group
  whose interval includes 0.5 only because it is wide is listed in the coverage note. Intersections are folded under a flagged component group;
  when the overall AUROC is already at chance, the groups are listed in that finding only.

The rule is the interval, not the point estimate, so that a small group with AUROC 0.6 and a
CI of 0.45-0.75 is called "cannot be told apart from chance", and a good model is never
flagged by noise (at the 95 % level, a group whose true AUROC is above about 0.75 and that has
a few dozen cases of each class essentially never reaches 0.5).

The operating threshold's origin is reported here too (:func:`threshold_finding`): a
threshold chosen on the audited data makes sensitivity, specificity, PPV and NPV optimistic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: AUROC of a model that ranks at random.
CHANCE_AUROC = 0.5
#: Metrics a floor may be given for (higher is better for each of them).
FLOOR_METRICS = (
    "auroc",
    "auprc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "accuracy",
    "balanced_accuracy",
)
INTERSECTION_SEP = " × "
GROUP_SEP = " | "


def where(attribute: str, group: str) -> str:
    """``"age_group=65+"``; intersections ``"sex=F & age_group=65+"`` (as the findings)."""
    names = str(attribute).split(INTERSECTION_SEP)
    values = str(group).split(GROUP_SEP) if len(names) > 1 else [str(group)]
    return " & ".join(f"{a}={g}" for a, g in zip(names, values))


def check_floor(floor: Any) -> list[str]:
    """Problems with a ``performance_floor`` setting (a mapping metric -> number in [0, 1])."""
    if floor is None:
        return []
    if not isinstance(floor, Mapping):
        return [
            "performance_floor must be a mapping metric -> lowest acceptable value, e.g. "
            f"{{auroc: 0.8, sensitivity: 0.85}}; got {floor!r}"
        ]
    out = []
    for k, v in floor.items():
        if k not in FLOOR_METRICS:
            out.append(
                f"performance_floor: unknown or unsupported metric {k!r}; use one of "
                f"{list(FLOOR_METRICS)} (metrics where higher is better)"
            )
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            out.append(f"performance_floor: {k} must be a number in [0, 1], got {v!r}")
    return out


def _num(v: Any) -> str:
    return "n/a" if v is None or not np.isfinite(float(v)) else f"{float(v):.3f}"


def _plain(v: Any) -> float | None:
    return None if v is None or not np.isfinite(float(v)) else float(v)


def _ci_text(r: Mapping[str, Any], level: float) -> str:
    return f"{level:.0%} CI {_num(r.get('ci_low'))}–{_num(r.get('ci_high'))}"


@dataclass
class PerformanceCheck:
    """What :func:`performance_check` found: findings and coverage entries."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    coverage: list[dict[str, Any]] = field(default_factory=list)


def _overall_rows(overall: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    if overall is None or len(overall) == 0:
        return {}
    return {str(r["metric"]): r for r in overall.to_dict("records")}


def performance_check(
    subgroups: Mapping[str, Any], floor: Mapping[str, float] | None = None
) -> PerformanceCheck:
    """Absolute-performance findings and coverage entries of one audit's subgroup section.

    Parameters
    ----------
    subgroups : mapping
        The result's ``subgroups`` section (``overall``, ``by_group``, ``settings``,
        ``threshold``).
    floor : mapping of str to float, optional
        Lowest acceptable value per metric (``performance_floor`` in the config); met when
        the lower end of the overall CI reaches it.

    Returns
    -------
    PerformanceCheck
        ``findings``: high for an overall AUROC at chance or an unmet floor, medium per group
        at chance, info for the operating threshold's origin; ``coverage``: the
        "absolute performance" entry of the coverage list.
    """
    level = float((subgroups.get("settings") or {}).get("ci", 0.95))
    rows = _overall_rows(subgroups.get("overall"))
    out = PerformanceCheck()
    auroc = rows.get("auroc")
    ok_auroc = auroc is not None and all(
        _plain(auroc.get(k)) is not None for k in ("value", "ci_low", "ci_high")
    )
    at_chance_groups, no_auroc, uncertain = _groups_at_chance(
        subgroups.get("by_group"),
        float(auroc["ci_low"]) if ok_auroc else None,  # type: ignore[index]
    )
    overall_at_chance = bool(ok_auroc and float(auroc["ci_low"]) <= CHANCE_AUROC)  # type: ignore[index]
    if overall_at_chance:
        out.findings.append(_overall_finding(auroc, level, at_chance_groups))  # type: ignore[arg-type]
    else:
        out.findings += _group_findings(at_chance_groups, level)
    floors_text = []
    for metric, value in (floor or {}).items():
        r = rows.get(metric)
        if r is None or _plain(r.get("ci_low")) is None:
            floors_text.append(f"{metric} >= {value:g}: not assessable (metric undefined)")
            continue
        met = float(r["ci_low"]) >= float(value)
        floors_text.append(f"{metric} >= {value:g}: {'met' if met else 'NOT met'}")
        if not met and not (metric == "auroc" and overall_at_chance):
            out.findings.append(_floor_finding(metric, float(value), r, level))
    # coverage
    if ok_auroc:
        detail = (
            f"overall AUROC {_num(auroc['value'])} ({_ci_text(auroc, level)}) against chance "  # type: ignore[index]
            f"({CHANCE_AUROC})"
        )
    else:
        why = "no AUROC (one class only in the data?)" if auroc is None else "AUROC undefined"
        detail = f"overall {why}: absolute performance could not be judged"
    if floors_text:
        detail += "; documented floor(s) on the lower CI: " + ", ".join(floors_text)
    n_groups = _n_groups_with_auroc(subgroups.get("by_group"))
    if n_groups:
        detail += f"; the AUROC of {n_groups} group(s) against chance"
    if uncertain:
        detail += (
            f"; {len(uncertain)} group(s) too uncertain to tell from chance but not shown worse "
            "than overall (not flagged): "
            + ", ".join(uncertain[:5])
            + (f" and {len(uncertain) - 5} more" if len(uncertain) > 5 else "")
        )
    if no_auroc:
        shown = ", ".join(no_auroc[:5]) + (
            f" and {len(no_auroc) - 5} more" if len(no_auroc) > 5 else ""
        )
        detail += f"; {len(no_auroc)} group(s) without an AUROC (too small or one class): {shown}"
    out.coverage.append({"check": "absolute performance", "ran": ok_auroc, "detail": detail})
    thr = subgroups.get("threshold")
    if thr:
        out.findings.append(threshold_finding(thr))
    return out


def _groups_at_chance(
    by_group: pd.DataFrame | None, overall_ci_low: float | None = None
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Groups at chance, groups without an AUROC (names), groups too uncertain (names).

    A group is at chance when its AUROC CI includes 0.5 and, while the overall AUROC is
    above chance, its whole CI also lies below the overall CI (it is worse than overall beyond
    doubt). An interval that merely includes 0.5 is uncertainty, not evidence: in the findings
    benchmark a cell of ~40 cases with AUROC 0.69 (CI 0.49-0.91) in a model with AUROC 0.91
    was otherwise flagged "at chance". Such groups are listed, not flagged.
    """
    if by_group is None or len(by_group) == 0:
        return [], [], []
    rows = by_group[by_group["metric"] == "auroc"]
    val = rows[["value", "ci_low", "ci_high"]].to_numpy(dtype=float)
    defined = np.isfinite(val).all(axis=1)
    includes = defined & (val[:, 1] <= CHANCE_AUROC)
    worse = np.ones(len(val), bool)
    if overall_ci_low is not None and overall_ci_low > CHANCE_AUROC:
        worse = val[:, 2] < overall_ci_low
    at_chance = includes & worse
    uncertain = [
        where(a, g)
        for a, g in zip(rows["attribute"][includes & ~worse], rows["group"][includes & ~worse])
    ]
    groups = [
        {
            "attribute": str(r["attribute"]),
            "group": str(r["group"]),
            "where": where(r["attribute"], r["group"]),
            "value": float(r["value"]),
            "ci_low": float(r["ci_low"]),
            "ci_high": float(r["ci_high"]),
            "n": int(r["n"]),
            "n_pos": int(r["n_pos"]),
        }
        for r in rows[at_chance].to_dict("records")
    ]
    missing = [where(a, g) for a, g in zip(rows["attribute"][~defined], rows["group"][~defined])]
    return groups, missing, uncertain


def _n_groups_with_auroc(by_group: pd.DataFrame | None) -> int:
    if by_group is None or len(by_group) == 0:
        return 0
    rows = by_group[by_group["metric"] == "auroc"]
    return int(np.isfinite(rows[["value", "ci_low", "ci_high"]].to_numpy(dtype=float)).all(1).sum())


def _group_text(g: Mapping[str, Any], level: float) -> str:
    return (
        f"{g['where']} {_num(g['value'])} ({_ci_text(g, level)}, n={g['n']}, {g['n_pos']} positive)"
    )


def _overall_finding(
    auroc: Mapping[str, Any], level: float, groups: list[dict[str, Any]]
) -> dict[str, Any]:
    below = float(auroc["ci_high"]) < CHANCE_AUROC
    message = (
        f"Overall AUROC {_num(auroc['value'])} ({_ci_text(auroc, level)}): "
        + (
            "the whole interval lies below chance (0.5); the scores may be inverted (check the "
            "positive class and the output activation)."
            if below
            else "the interval includes chance (0.5), so the model cannot be shown to rank a "
            "positive case above a negative one better than a coin toss."
        )
        + " Subgroup comparisons of such a model say little; no gap does not mean it works."
    )
    if groups:
        message += (
            f" {len(groups)} group(s) are at chance too: "
            + "; ".join(_group_text(g, level) for g in groups[:4])
            + (f"; and {len(groups) - 4} more." if len(groups) > 4 else ".")
        )
    return {
        "severity": "high",
        "kind": "performance",
        "title": "Overall AUROC "
        + ("below" if below else "not distinguishable from")
        + f" chance ({_num(auroc['value'])}, CI {_num(auroc['ci_low'])}–{_num(auroc['ci_high'])})",
        "message": message,
        "where": "overall",
        "evidence": {
            "metric": "auroc",
            "value": _plain(auroc["value"]),
            "ci_low": _plain(auroc["ci_low"]),
            "ci_high": _plain(auroc["ci_high"]),
            "chance": CHANCE_AUROC,
            "groups_at_chance": [g["where"] for g in groups],
        },
    }


def _floor_finding(metric: str, floor: float, r: Mapping[str, Any], level: float) -> dict[str, Any]:
    name = "AUROC" if metric == "auroc" else metric.replace("_", " ")
    below = _plain(r.get("value")) is not None and float(r["value"]) < floor
    return {
        "severity": "high",
        "kind": "performance",
        "title": f"Overall {name} does not meet the documented floor {floor:g}",
        "message": (
            f"Overall {name} {_num(r['value'])} ({_ci_text(r, level)}) against the documented "
            f"floor {floor:g} (performance_floor): "
            + (
                "the estimate itself is below the floor."
                if below
                else f"the estimate is above it but the lower end of the interval "
                f"({_num(r['ci_low'])}) is not, so meeting the floor is not shown."
            )
        ),
        "where": "overall",
        "evidence": {
            "metric": metric,
            "value": _plain(r.get("value")),
            "ci_low": _plain(r.get("ci_low")),
            "ci_high": _plain(r.get("ci_high")),
            "floor": floor,
        },
    }


def _group_findings(groups: list[dict[str, Any]], level: float) -> list[dict[str, Any]]:
    """One medium finding per group at chance; intersections under a flagged component."""
    singles = {g["where"]: g for g in groups if INTERSECTION_SEP not in g["attribute"]}
    folded: dict[str, list[dict[str, Any]]] = {k: [] for k in singles}
    leaders = list(singles.values())
    for g in groups:
        if g["where"] in singles:
            continue
        parents = [p for p in g["where"].split(" & ") if p in singles]
        if parents:
            folded[parents[0]].append(g)
        else:
            leaders.append(g)
    out = []
    for g in leaders:
        message = (
            f"AUROC in {_group_text(g, level)}: the interval includes chance (0.5), so in this "
            "group the model cannot be shown to rank cases better than a coin toss."
        )
        inner = folded.get(g["where"]) or []
        if inner:
            message += (
                " At chance too in the intersections "
                + "; ".join(_group_text(x, level) for x in inner)
                + "."
            )
        out.append(
            {
                "severity": "medium",
                "kind": "performance",
                "title": f"AUROC at chance for {g['where']} ({_num(g['value'])}, CI "
                f"{_num(g['ci_low'])}–{_num(g['ci_high'])})",
                "message": message,
                "where": g["where"],
                "evidence": {
                    **{k: g[k] for k in ("attribute", "group", "value", "ci_low", "ci_high")},
                    "metric": "auroc",
                    "n": g["n"],
                    "n_pos": g["n_pos"],
                    "chance": CHANCE_AUROC,
                    "intersections": [x["where"] for x in inner],
                },
            }
        )
    return out


# ------------------------------------------------------------------------------ threshold
def threshold_finding(threshold: Mapping[str, Any]) -> dict[str, Any]:
    """An info finding saying where the operating threshold came from.

    ``threshold`` is the result's ``subgroups["threshold"]``; its ``source`` (see
    :mod:`xai_audit.audit.operating_point`) says whether it was given, chosen on a validation
    split or chosen on the audited data. Results without a ``source`` predate it: a rule
    there was applied to the audited data, a number was given.
    """
    from .operating_point import describe_source, source_of

    src = source_of(threshold)
    optimistic = bool(src.get("optimistic"))
    title = (
        f"Operating threshold {_num(threshold.get('value'))} chosen on the audited data "
        "(optimistic)"
        if optimistic
        else f"Operating threshold {_num(threshold.get('value'))} set outside the audited data"
    )
    message = describe_source(src, threshold)
    return {
        "severity": "info",
        "kind": "operating_point",
        "title": title,
        "message": message,
        "where": "threshold",
        "evidence": {"threshold": _plain(threshold.get("value")), **src},
    }
