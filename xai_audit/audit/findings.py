"""Turn flags from the fairness and quality checks into a short list of key findings.

A reviewer should read the key findings first, so they are deduplicated: a disparity of a
single-attribute group is one finding listing every flagged metric (the false negative rate
mirrors sensitivity, the false positive rate specificity, so those are folded in), and
intersections whose disparity is already explained by a flagged component group are
mentioned under it rather than repeated. Every underlying flag stays in the evidence.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

SEVERITY_ORDER = {"high": 0, "medium": 1, "info": 2, "ok": 3}
#: Metrics that restate another one (1 - x), folded into it in the key findings.
MIRRORS = {"fnr": "sensitivity", "fpr": "specificity"}
INTERSECTION_SEP = " × "
GROUP_SEP = " | "


def _components(attribute: str, group: str) -> list[tuple[str, str]]:
    names = attribute.split(INTERSECTION_SEP)
    values = group.split(GROUP_SEP) if len(names) > 1 else [group]
    return list(zip(names, values))


def _where(attribute: str, group: str) -> str:
    return " & ".join(f"{a}={g}" for a, g in _components(attribute, group))


def disparity_findings(
    flags: list[dict[str, Any]], disparities: Any = None
) -> list[dict[str, Any]]:
    """One finding per flagged group that explains a gap, named as narrowly as the data allow.

    With ``disparities`` (the subgroup ``disparities`` table: differences to overall with
    CIs), a single-attribute gap carried by one intersection (the attribute value's other
    cells are within tolerance, whole CI) becomes a finding of that intersection, with the
    other cells as evidence, and the single-attribute flags it explains are folded under it
    (:func:`xai_audit.fairness.attribution.attribute_gaps`). A main effect stays a
    single-group finding with its intersections folded under it. Without ``disparities``:
    one finding per flagged single group, intersections folded under a flagged component.
    """
    from ..fairness.attribution import attribute_gaps

    attribution = attribute_gaps(flags, disparities)
    by_group: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for f in flags:
        by_group[(f["attribute"], f["group"])].append(f)
    singles = {k for k in by_group if INTERSECTION_SEP not in k[0]}
    flagged_metrics = {
        k: {MIRRORS.get(f["metric"], f["metric"]) for f in v} for k, v in by_group.items()
    }

    def lead(key: tuple[str, str]) -> tuple[str, str]:
        seen = set()
        while key in attribution.explained_by and key not in seen:
            seen.add(key)
            key = attribution.explained_by[key]
        return key

    folded: dict[tuple[str, str], list[str]] = defaultdict(list)
    explains: dict[tuple[str, str], list[str]] = defaultdict(list)
    leaders: list[tuple[str, str]] = []
    for key in by_group:
        if key in singles:
            if key in attribution.explained_by:
                explains[lead(key)].append(_where(*key))
            else:
                leaders.append(key)
            continue
        if key in attribution.carriers:
            leaders.append(key)
            continue
        parents = [
            c
            for c in _components(*key)
            if c in singles and flagged_metrics[c] & flagged_metrics[key]
        ]
        # A component that is a finding itself (a main effect) first, then explained ones.
        parents = [lead(c) for c in sorted(parents, key=lambda c: c in attribution.explained_by)]
        if parents:
            folded[parents[0]].append(_where(*key))
        else:
            leaders.append(key)
    for key in list(explains):
        if key not in by_group:  # explained by a group that has no flag of its own
            leaders.append(key)
    findings = []
    for key in leaders:
        items = sorted(by_group.get(key, []), key=lambda f: -abs(f.get("gap") or 0.0))
        main = [
            f
            for f in items
            if f["metric"] not in MIRRORS
            or MIRRORS[f["metric"]] not in flagged_metrics[key] - {f["metric"]}
        ]
        head = main[0] if main else items[0]
        others = sorted({f["metric"] for f in main[1:]} - {head["metric"]})
        message = head["message"]
        if others:
            message += (
                " Also beyond tolerance: " + ", ".join(o.replace("_", " ") for o in others) + "."
            )
        carrier = attribution.carriers.get(key)
        if carrier:
            message += " " + _carrier_text(key, carrier, head["metric"])
        elif explains.get(key):
            message += (
                " It also explains the flagged gap of "
                + ", ".join(sorted(set(explains[key])))
                + " (confined there to cells of this group)."
            )
        if folded.get(key):
            message += " Seen too in the intersections " + ", ".join(sorted(folded[key])) + "."
        evidence = {
            "attribute": key[0],
            "group": key[1],
            "metric": head["metric"],
            "gap": head.get("gap"),
            "ci_low": head.get("ci_low"),
            "ci_high": head.get("ci_high"),
            "tolerance": head.get("tolerance"),
            "metrics": sorted({f["metric"] for f in items}),
            "n_flags": len(items),
            "intersections": sorted(folded.get(key, [])),
            "explains": sorted(set(explains.get(key, []))),
            "attribution": "intersection"
            if carrier
            else ("single_group" if INTERSECTION_SEP not in key[0] else "intersection_flag"),
        }
        if carrier:
            evidence["unaffected_cells"] = list(carrier["unaffected"])
        findings.append(
            {
                "severity": "high",
                "kind": "disparity",
                "title": f"Performance gap for {_where(*key)}",
                "message": message,
                "where": _where(*key),
                "evidence": evidence,
            }
        )
    return findings


def _carrier_text(key: tuple[str, str], carrier: dict[str, Any], metric: str) -> str:
    """Why an intersection, not its attributes, is named: the other cells are unaffected."""
    metric = MIRRORS.get(metric, metric)
    shown = [c for c in carrier["unaffected"] if c["metric"] == metric]
    cells = [
        f"{c['where']} {c['value']:.2f} ({c['diff_to_overall']:+.2f} vs overall, CI "
        f"{c['diff_ci_low']:+.2f} to {c['diff_ci_high']:+.2f})"
        for c in shown
        if c["within_tolerance"] and c["value"] is not None
    ]
    apart = any(c.get("clear_by") == "apart from the flagged cell" for c in shown)
    how = (
        "within the tolerance, or with intervals entirely above the flagged cell's,"
        if apart
        else "within the tolerance"
    )
    text = (
        f"The gap is specific to {_where(*key)}: the other cells of its groups are {how} "
        f"for {metric.replace('_', ' ')} ({'; '.join(cells)})."
    )
    untested = [c["where"] for c in shown if c["within_tolerance"] is None]
    if untested:
        text += " Too small to assess: " + ", ".join(untested) + "."
    names = ", ".join(sorted(_where(*k) for k in carrier["explains"]))
    return text + f" It explains the flagged gap of {names} (not separate findings)."


def shortcut_findings(shortcuts: dict[str, dict[str, Any]], region: str) -> list[dict[str, Any]]:
    """One finding per group with a shortcut candidate, over every method that found it.

    High when editing the region (erase or paste) moved decisions beyond the controls in at
    least one method (:mod:`xai_audit.quality.shortcut_causal`); otherwise an ``info`` note
    of kind ``shortcut_note`` ("attribution differs here but editing the region does not change
    decisions"), never high or medium. ``region`` is what was searched (for the message).
    """
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for method, sc in shortcuts.items():
        for cand in sc.get("candidates") or []:
            groups[(cand["attribute"], cand["group"])].append((method, cand))
    findings = []
    for (attribute, group), hits in groups.items():
        confirmed = [h for h in hits if h[1].get("confirmed")]
        method, cand = max(confirmed or hits, key=lambda h: h[1].get("effect") or 0.0)
        names = [m for m, _ in hits]
        causal = dict(cand.get("causal") or {})
        where = _where(attribute, group)
        # The box whose editing was tested: the discovered region, or that region grown by a
        # few patches when a CAM's evidence sits beside what the model reads.
        box = [int(v) for v in (cand.get("edit_box") or cand["box"])]
        scanned = cand.get("evidence") == "scan"  # found by the paste scan, not in the maps
        found_by = "the paste scan" if scanned else ", ".join(names)
        message = (
            f"{cand.get('message') or ''} (method {method}; searched: {region}; found by "
            f"{found_by}"
            + (f"; confirmed by {', '.join(m for m, _ in confirmed)}" if confirmed else "")
            + ")."
        )
        evidence = {
            "attribute": attribute,
            "group": group,
            "method": method,
            "methods": names,
            "box": box,
            "attribution_box": [int(v) for v in cand["box"]],
            "dilation": int(cand.get("dilation") or 0),
            "location": cand.get("location"),
            "confirmed": bool(confirmed),
            "status": cand.get("status"),
            "mean_share": cand.get("mean_share"),
            "rest_mean_share": cand.get("rest_mean_share"),
            "effect": cand.get("effect"),
            "ratio": cand.get("ratio"),
            "evidence": cand.get("evidence"),
            "off_peak": cand.get("off_peak"),
            "scan": cand.get("scan"),
            "n": int(cand.get("n") or 0),
            "erase": causal.get("erase_region"),
            "erase_control": causal.get("erase_elsewhere"),
            "paste": causal.get("paste_region"),
            "paste_control": causal.get("paste_elsewhere"),
            "excess": causal.get("excess"),
        }
        if confirmed:
            findings.append(
                {
                    "severity": "high",
                    "kind": "shortcut",
                    "title": f"Shortcut suspected at {where}",
                    "message": message + " The model may rely on something that is not the "
                    "finding (a marker, text, a device).",
                    "where": where,
                    "evidence": evidence,
                }
            )
        else:
            findings.append(
                {
                    "severity": "info",
                    "kind": "shortcut_note",
                    "title": (
                        f"Pasted content from {where} raises scores, but the edits' controls do "
                        "not confirm it"
                        if scanned
                        else f"Attribution differs at {where}, but editing the region does not "
                        "change decisions"
                    ),
                    "message": message,
                    "where": where,
                    "evidence": evidence,
                }
            )
    return findings


def trust_findings(quality: dict[str, Any]) -> list[dict[str, Any]]:
    """Sanity-check failures, unfaithful maps and poor localisation."""
    out: list[dict[str, Any]] = []

    def _plain(x: Any) -> float | None:  # JSON-friendly: NaN / missing -> None
        return None if x is None or not np.isfinite(float(x)) else float(x)

    for method, sanity in (quality.get("sanity") or {}).items():
        if sanity and not sanity.get("passed", True):
            v = dict(sanity.get("verdict") or {})
            label = dict(v.get("label") or {})
            steps = sanity.get("steps")
            metric = str(v.get("metric") or "spearman")
            curve = []
            if hasattr(steps, "iterrows") and f"{metric}_median" in steps:
                rows = steps[(steps["method"] == method) & (steps["step"] > 0)]
                curve = [
                    {"layer": str(r["layer"]), "similarity": _plain(r[f"{metric}_median"])}
                    for _, r in rows.iterrows()
                ]
            thr = v.get("threshold", 0.5)
            rule = (
                f" Rule (Adebayo et al., 2018): with the layers re-initialised from the output "
                f"down, the median {metric} similarity to the trained model's maps must be "
                f"below {thr} on average over the cascade, or fall below it within the top "
                f"{v.get('top_steps', '?')} of {v.get('n_steps', '?')} steps and stay below it "
                "with every layer random; and a random other class must not get the same map."
                if v
                else ""
            )
            out.append(
                {
                    "severity": "high",
                    "kind": "sanity",
                    "title": f"{method} failed the sanity check",
                    "message": str(sanity.get("reason", "")) + " Its maps should not be used to "
                    "explain this model's decisions." + rule,
                    "where": method,
                    "evidence": {
                        "method": method,
                        "final_similarity": sanity.get("final_similarity"),
                        "metric": metric,
                        "threshold": thr,
                        "top_similarity": _plain(v.get("top")),
                        "top_steps": v.get("top_steps"),
                        "mean_similarity": _plain(v.get("auc")),
                        "first_changed_step": v.get("first_changed_step"),
                        "first_changed_layer": v.get("first_changed_layer"),
                        "n_steps": v.get("n_steps"),
                        "label_check": label.get("status"),
                        "label_similarity": _plain(label.get("similarity")),
                        "curve": curve,
                    },
                }
            )
    for method, faith in (quality.get("faithfulness") or {}).items():
        head = (faith or {}).get("headline") or {}
        verdict = head.get("verdict")  # pass / fail / inconclusive (quality/faithfulness.py)
        if verdict not in ("fail", "inconclusive"):
            continue  # pass, or a result saved before verdicts existed
        evidence = {
            k: head.get(k)
            for k in (
                "verdict",
                "early_advantage",
                "early_ci_low",
                "early_ci_high",
                "early_fraction",
                "n_judged",
                "reference",
                "reference_score",
                "original_score",
                "reference_predicted_share",
                "rule",
            )
        }
        ref = (
            f" Reference: {head.get('reference')}, mean score {_num(head.get('reference_score'))}"
            f" vs {_num(head.get('original_score'))} on the images."
        )
        if verdict == "fail":
            out.append(
                {
                    "severity": "medium",
                    "kind": "faithfulness",
                    "title": f"{method} maps are not clearly more faithful than random",
                    "message": f"{head.get('reason', '')}{ref} Rule: {head.get('rule', '')}",
                    "where": method,
                    "evidence": evidence,
                }
            )
        else:
            out.append(
                {
                    "severity": "info",
                    "kind": "faithfulness_note",
                    "title": f"Faithfulness of {method} maps could not be judged",
                    "message": f"{head.get('reason', '')}{ref} Rule: {head.get('rule', '')}",
                    "where": method,
                    "evidence": evidence,
                }
            )
    for method, loc in (quality.get("localisation") or {}).items():
        summary = (loc or {}).get("summary")
        if summary is None or len(summary) == 0:
            continue
        row = summary[summary["metric"] == "mass_in_mask"]
        if row.empty:
            continue
        r = row.iloc[0]
        if np.isfinite(r["ci_low"]) and np.isfinite(r["chance"]) and r["ci_low"] <= r["chance"]:
            out.append(
                {
                    "severity": "medium",
                    "kind": "localisation",
                    "title": f"{method} maps do not point at the lesions",
                    "message": (
                        f"On images with an annotated lesion, {method} puts {r['mean']:.0%} of its "
                        f"relevance inside the lesion mask, no more than a random map would "
                        f"({r['chance']:.0%})."
                    ),
                    "where": method,
                    "evidence": {
                        "mean": r["mean"],
                        "ci_low": r["ci_low"],
                        "chance": r["chance"],
                        "n": int(r["n"]),
                    },
                }
            )
    return out


def data_findings(warnings: list[str], data_summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Small groups, data warnings (one-group attributes, conflicting patients, mixed value
    types, unbinned numeric attributes) and missing attributes (informational)."""
    out = []
    small = [
        w for w in warnings if "small" in w.lower() or "fewer" in w.lower() or "only" in w.lower()
    ]
    if small:
        out.append(
            {
                "severity": "info",
                "kind": "data",
                "title": f"{len(small)} small or degenerate subgroup(s)",
                "message": "Some subgroups are too small for reliable estimates (see section 5): "
                + "; ".join(w.rstrip(".") for w in small[:3])
                + (f"; and {len(small) - 3} more." if len(small) > 3 else "."),
                "where": "subgroups",
                "evidence": {"n_warnings": len(small)},
            }
        )
    checks = list(data_summary.get("warnings") or [])  # see Audit._data_warnings
    if checks:
        out.append(
            {
                "severity": "info",
                "kind": "data",
                "title": f"{len(checks)} data warning(s)",
                "message": " ".join(checks),
                "where": "data",
                "evidence": {"n_warnings": len(checks)},
            }
        )
    missing = {k: v for k, v in (data_summary.get("missing_attributes") or {}).items() if v}
    if missing:
        out.append(
            {
                "severity": "info",
                "kind": "data",
                "title": "Missing attribute values",
                "message": "Cases with a missing attribute form their own group 'missing': "
                + ", ".join(f"{k}: {v}" for k, v in missing.items())
                + ".",
                "where": "data",
                "evidence": missing,
            }
        )
    return out


def _num(v: Any) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def collect_findings(
    subgroup_flags: list[dict[str, Any]],
    subgroup_warnings: list[str],
    quality: dict[str, Any],
    data_summary: dict[str, Any],
    region_name: str,
    subgroup_disparities: Any = None,
    subgroups: Any = None,
    performance_floor: Any = None,
    slices: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """All key findings, most severe first; an "ok" finding when nothing was flagged.

    ``slices`` (the result's ``slice_discovery`` section) adds one ``info`` finding per
    significant discovered slice and replaces the "unrecorded factors: not searched" coverage
    entry with what the discovery covered; without it, unrecorded factors are listed as not
    searched.

    ``subgroup_disparities`` (the subgroup ``disparities`` table) lets a gap be attributed to
    the intersection that carries it (see :func:`disparity_findings`). ``subgroups`` (the
    whole subgroup section) adds the absolute-performance checks and the threshold's origin
    (:mod:`xai_audit.audit.performance_findings`), with ``performance_floor`` (metric ->
    lowest acceptable value); without it, absolute performance is listed as not checked.
    """
    from .performance_findings import performance_check

    perf = performance_check(subgroups, performance_floor) if subgroups is not None else None
    perf_ran = bool(perf and perf.coverage and perf.coverage[0]["ran"])
    findings = (
        disparity_findings(subgroup_flags, subgroup_disparities)
        + shortcut_findings(quality.get("shortcuts") or {}, region_name)
        + trust_findings(quality)
        + data_findings(subgroup_warnings, data_summary)
        + (perf.findings if perf else [])
        + slice_findings(slices)
    )
    coverage = check_coverage(
        quality,
        data_summary,
        subgroup_warnings,
        performance=(perf.coverage if perf else []) + slice_coverage(slices),
    )
    if not any(f["severity"] in ("high", "medium") for f in findings):
        findings.insert(
            0,
            {
                "severity": "ok",
                "kind": "summary",
                "title": "Nothing flagged in the checks that ran",
                "message": ("Overall AUROC above chance, no" if perf_ran else "No")
                + " subgroup disparity beyond the tolerance, no confirmed shortcut and "
                "no failed explanation check was found in what was checked: "
                + "; ".join(f"{c['check']}: {c['detail']}" for c in coverage if c["ran"])
                + ". Not checked: "
                + "; ".join(f"{c['check']}: {c['detail']}" for c in coverage if not c["ran"])
                + ".",
                "where": "",
                "evidence": {"checks": coverage},
            },
        )
    findings.append(coverage_finding(coverage))
    findings.sort(key=lambda f: SEVERITY_ORDER.get(f["severity"], 9))
    for i, f in enumerate(findings, start=1):
        f["id"] = f"F{i}"
    return findings


#: Questions a default audit does not answer at all; listed so that "nothing flagged" is never
#: read as covering them.
NOT_AUDITED = (
    (
        "absolute performance",
        "whether the model is good enough overall is not judged (AUROC and its CI are "
        "reported in section 4, with no pass/fail criterion)",
    ),
    (
        "calibration",
        "ECE and reliability curves are reported per group (section 6) but never flagged",
    ),
    (
        "unrecorded factors",
        "only the recorded attributes were compared; groups nobody recorded (devices, "
        "scanners, subtypes) are not searched",
    ),
)


def slice_findings(slices: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One ``info`` finding per significant discovered slice: a hypothesis to review.

    Slices are unnamed groups found in the model's own representation, so they are not
    flagged like a recorded subgroup: the finding points at the evidence (typical images,
    mean map, what stands out) for a person to name, record and audit.
    """
    if not slices or "members" not in slices:
        return []
    table = slices["table"]
    out = []
    for _, r in table[table["significant"].astype(bool)].iterrows():
        k = int(r["slice"])
        what = (slices.get("descriptions") or {}).get(str(k), "")
        label = {"1": "positives", "0": "negatives"}.get(str(r.get("label")), "cases")
        out.append(
            {
                "severity": "info",
                "kind": "slice",
                "title": f"Discovered slice {k}: {r['metric']} {r['value']:.2f} vs "
                f"{r['rest_value']:.2f} for the rest",
                "message": (
                    f"Slice discovery found a group of {int(r['n'])} {label} that no recorded "
                    f"attribute names, where {r['metric']} is {r['value']:.2f} vs "
                    f"{r['rest_value']:.2f} for the rest (gap {r['gap']:+.2f}, 95% CI "
                    f"{r['ci_low']:+.2f} to {r['ci_high']:+.2f}, Holm-adjusted p "
                    f"{r['p_adjusted']:.3g}; measured on patients that played no part in "
                    "finding it)."
                    + (f" What stands out: {what}." if what else "")
                    + " A hypothesis to review, not a verdict: look at its typical images "
                    "and mean map in 'Discovered slices'; if they share something the model "
                    "should not depend on, record it and audit it as a subgroup."
                ),
                "where": f"slice {k}",
                "evidence": {
                    c: (r[c].item() if hasattr(r[c], "item") else r[c])
                    for c in ("slice", "n", "metric", "value", "rest_value", "gap")
                    + ("ci_low", "ci_high", "p_adjusted", "label")
                },
            }
        )
    return out


def slice_coverage(slices: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The "unrecorded factors" coverage entry when slice discovery ran or was skipped."""
    if not slices:
        return []
    settings = slices.get("settings") or {}
    if "members" not in slices:
        return [
            {
                "check": "unrecorded factors",
                "ran": False,
                "detail": f"slice discovery {slices.get('status') or 'did not run'}; only "
                "the recorded attributes were compared",
            }
        ]
    n_sig = int(slices["table"]["significant"].astype(bool).sum())
    return [
        {
            "check": "unrecorded factors",
            "ran": True,
            "detail": f"slice discovery on the model's embeddings ({settings.get('n_cases', '?')}"
            f" images, {settings.get('n_components', '?')} mixture components): {n_sig} "
            "significant slice(s), listed as info hypotheses; a failure that the embeddings "
            f"do not separate, or with fewer than {settings.get('min_size', 30)} test "
            "images, is not seen",
        }
    ]


def coverage_finding(coverage: list[dict[str, Any]]) -> dict[str, Any]:
    """The info finding that lists what was checked and what was not."""
    return {
        "severity": "info",
        "kind": "coverage",
        "title": "What was checked, and what was not",
        "message": " ".join(
            f"{c['check']} ({'checked' if c['ran'] else 'not checked'}): {c['detail']}."
            for c in coverage
        ),
        "where": "audit",
        "evidence": {"checks": coverage},
    }


def check_coverage(
    quality: dict[str, Any],
    data_summary: dict[str, Any],
    subgroup_warnings: list[str],
    performance: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Which checks ran, on what, and which did not (and why).

    "Nothing flagged" may only be said of what was actually checked, so every audit carries
    this list: one entry per check with ``check``, ``ran`` (bool) and ``detail`` (plain words).
    ``performance`` (entries of :func:`~xai_audit.audit.performance_findings.performance_check`
    and :func:`slice_coverage`) replaces the entries of :data:`NOT_AUDITED` of the same name
    ("absolute performance: not judged", "unrecorded factors: not searched").
    """
    out: list[dict[str, Any]] = []
    attrs = list(data_summary.get("attributes") or [])
    n_small = sum(
        1 for w in subgroup_warnings if any(k in w.lower() for k in ("small", "fewer", "only"))
    )
    out.append(
        {
            "check": "subgroup performance",
            "ran": bool(attrs),
            "detail": (
                f"groups of {', '.join(attrs)} and their intersections against the tolerance"
                + (f"; {n_small} group(s) too small or single-class to assess" if n_small else "")
            )
            if attrs
            else "no sensitive attribute was given",
        }
    )
    shortcuts = quality.get("shortcuts") or {}
    if shortcuts:
        from ..quality.shortcut_analysis import searched_summary

        out.append(
            {"check": "shortcuts", "ran": True, "detail": searched_summary(shortcuts).rstrip(".")}
        )
    else:
        out.append({"check": "shortcuts", "ran": False, "detail": "switched off"})
    for key, name in (("sanity", "sanity check"), ("faithfulness", "faithfulness")):
        per_method = quality.get(key) or {}
        if not per_method:
            out.append({"check": name, "ran": False, "detail": "switched off or no sample"})
            continue
        parts = []
        for method, res in per_method.items():
            res = res or {}
            if key == "sanity":
                parts.append(f"{method} {'passed' if res.get('passed') else 'failed'}")
            else:
                head = res.get("headline") or {}
                parts.append(f"{method} {head.get('verdict') or 'no verdict'}")
        out.append({"check": name, "ran": True, "detail": ", ".join(parts)})
    loc = quality.get("localisation") or {}
    out.append(
        {
            "check": "localisation",
            "ran": bool(loc),
            "detail": f"{', '.join(loc)} against {data_summary.get('n_with_mask', 0)} lesion masks"
            if loc
            else "no lesion masks in the manifest",
        }
    )
    done = {c["check"] for c in performance or []}
    out += list(performance or [])
    out += [{"check": c, "ran": False, "detail": d} for c, d in NOT_AUDITED if c not in done]
    return out
