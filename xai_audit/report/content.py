"""The report's content as plain data, built only from an :class:`AuditResult`.

The HTML template renders this structure and the JSON twin is this structure, so every
number the report shows is in the JSON (figures are kept apart, in :func:`build_figures`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._version import __version__
from .regulatory import SCHEMA_VERSION, add_regulatory, calibration_bins, resolve_target_layer

if TYPE_CHECKING:
    from ..audit.result import AuditResult

#: Metrics of the headline performance table (section 4), in order.
HEADLINE_METRICS = ("auroc", "sensitivity", "specificity", "ppv", "npv")
#: Metrics of the subgroup table (section 5).
GROUP_METRICS = ("auroc", "sensitivity", "specificity", "ppv", "npv", "ece")
DISPLAY = {
    "prevalence": "Prevalence",
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "fpr": "FPR",
    "fnr": "FNR",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "selection_rate": "Selection rate",
    "brier": "Brier score",
    "ece": "ECE",
}
OUTCOMES = ("TP", "FP", "FN", "TN")
#: The report's sections: (id, heading). Tests look for every heading.
SECTIONS = (
    ("key-findings", "1. Key findings"),
    ("model", "2. Model"),
    ("data", "3. Data"),
    ("performance", "4. Overall performance"),
    ("subgroups", "5. Subgroup performance"),
    ("calibration", "6. Calibration"),
    ("explanations", "7. Explanations"),
    ("trust", "8. Explanation trust"),
    ("provenance", "9. Limitations and provenance"),
    ("documentation", "10. Regulatory documentation"),
    ("compliance", "11. Compliance map"),
)


def _f(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _records(df: pd.DataFrame | None, columns: list[str] | None = None) -> list[dict[str, Any]]:
    if df is None or len(df) == 0:
        return []
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    out = []
    for r in df.to_dict("records"):
        out.append(
            {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
        )
    return out


def _metric_row(metric: str, row: pd.Series | dict[str, Any]) -> dict[str, Any]:
    return {
        "metric": metric,
        "name": DISPLAY.get(metric, metric),
        "value": _f(row["value"]),
        "ci_low": _f(row["ci_low"]),
        "ci_high": _f(row["ci_high"]),
        "ci_method": row.get("ci_method"),  # bootstrap, or binomial at 0/1 (fairness.intervals)
    }


def performance(result: AuditResult) -> dict[str, Any]:
    """Section 4: headline metrics with CIs, every metric, the confusion matrix."""
    ov = result.subgroups["overall"]
    by_metric = {r["metric"]: r for r in ov.to_dict("records")}
    pred = result.predictions
    counts = pred["outcome"].value_counts()
    return {
        "headline": [_metric_row(m, by_metric[m]) for m in HEADLINE_METRICS if m in by_metric],
        "all": [_metric_row(m, r) for m, r in by_metric.items()],
        "confusion": {o: int(counts.get(o, 0)) for o in OUTCOMES},
        "threshold": {
            k: (_f(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in dict(result.subgroups["threshold"]).items()
        },
    }


def subgroup_tables(result: AuditResult) -> dict[str, Any]:
    """Section 5: per attribute (and intersection) one row per group with CIs; gaps; flags."""
    bg = result.subgroups["by_group"]
    bg = bg[bg["attribute"] != "overall"]
    attributes = []
    for attribute in dict.fromkeys(bg["attribute"]):
        sub = bg[bg["attribute"] == attribute]
        rows = []
        for group in dict.fromkeys(sub["group"]):
            g = sub[sub["group"] == group]
            first = g.iloc[0]
            metrics = {
                m: _metric_row(m, g[g["metric"] == m].iloc[0])
                for m in GROUP_METRICS
                if (g["metric"] == m).any()
            }
            rows.append(
                {
                    "group": str(group),
                    "n": int(first["n"]),
                    "n_pos": int(first["n_pos"]),
                    "status": str(first["status"]),
                    "reason": "" if pd.isna(first["reason"]) else str(first["reason"]),
                    "metrics": metrics,
                }
            )
        attributes.append(
            {"attribute": str(attribute), "intersection": " × " in str(attribute), "rows": rows}
        )
    gaps = result.subgroups.get("gaps")
    gap_rows = []
    if gaps is not None and len(gaps):
        g = gaps[gaps["metric"].isin(GROUP_METRICS)]
        gap_rows = _records(
            g,
            [
                "attribute",
                "metric",
                "best_group",
                "best_value",
                "worst_group",
                "worst_value",
                "max_gap",
                "max_gap_ci_low",
                "max_gap_ci_high",
            ],
        )
    settings = dict(result.subgroups.get("settings") or {})
    return {
        "metrics": [{"metric": m, "name": DISPLAY[m]} for m in GROUP_METRICS],
        "attributes": attributes,
        "gaps": gap_rows,
        "flags": [dict(f) for f in result.subgroups.get("flags", [])],
        "warnings": list(result.subgroups.get("warnings", [])),
        "tolerance": result.config.get("tolerance", settings.get("tolerance")),
        "min_group_size": result.config.get("min_group_size"),
        "n_boot": result.config.get("n_boot"),
        "ci": result.config.get("ci"),
        "patient_level": bool(result.data_summary.get("patient_level_bootstrap")),
    }


def calibration(result: AuditResult) -> dict[str, Any]:
    """Section 6: ECE per group (with CI) and the overall ECE."""
    bg = result.subgroups["by_group"]
    ece = bg[bg["metric"] == "ece"]
    ov = result.subgroups["overall"]
    ov_ece = ov[ov["metric"] == "ece"]
    brier = ov[ov["metric"] == "brier"]
    return {
        "overall_ece": _metric_row("ece", ov_ece.iloc[0]) if len(ov_ece) else None,
        "overall_brier": _metric_row("brier", brier.iloc[0]) if len(brier) else None,
        "by_group": [
            {
                "attribute": str(r["attribute"]),
                "group": str(r["group"]),
                "n": int(r["n"]),
                "value": _f(r["value"]),
                "ci_low": _f(r["ci_low"]),
                "ci_high": _f(r["ci_high"]),
            }
            for r in ece.to_dict("records")
            if " × " not in str(r["attribute"]) and r["attribute"] != "overall"
        ],
        "bins": calibration_bins(result.subgroups["calibration"]),  # overall, with counts/CIs
    }


def explanations(result: AuditResult) -> dict[str, Any]:
    """Section 7: methods, the bounded galleries (case metadata), mean-map counts."""
    ex = result.exemplars.get("table")
    galleries = []
    if ex is not None and len(ex):
        for attribute in dict.fromkeys(ex["attribute"]):
            sub = ex[ex["attribute"] == attribute]
            groups = []
            for group in dict.fromkeys(sub["group"]):
                cells = {}
                for o in OUTCOMES:
                    c = sub[(sub["group"] == group) & (sub["outcome"] == o)]
                    cells[o] = [
                        {
                            "case_id": str(r["case_id"]),
                            "row": int(r["row"]),
                            "label": int(r["label"]),
                            "score": _f(r["score"]),
                        }
                        for r in c.to_dict("records")
                    ]
                groups.append({"group": str(group), "cells": cells})
            galleries.append({"attribute": str(attribute), "groups": groups})
    counts = {m: dict(v.get("counts", {})) for m, v in result.mean_maps.items()}
    n_ex = result.exemplars.get("rows")
    return {
        "methods": resolve_target_layer(
            [dict(m) for m in result.methods], result.model_info.get("target_layer")
        ),
        "galleries": galleries,
        "per_cell": result.config.get("exemplars_per_cell"),
        "n_exemplars": int(len(n_ex)) if n_ex is not None else 0,
        "mean_map_counts": counts,
    }


def trust(result: AuditResult) -> dict[str, Any]:
    """Section 8: faithfulness, localisation, sanity checks, shortcut analysis."""
    q = result.quality
    sample = dict(q.get("sample") or {})
    sample.pop("rows", None)
    for v in (sample.get("per_method") or {}).values():
        v.pop("rows", None)
    out: dict[str, Any] = {"sample": sample, "region": dict(q.get("region") or {}), "methods": []}
    for m in result.method_names:
        faith = (q.get("faithfulness") or {}).get(m)
        loc = (q.get("localisation") or {}).get(m)
        san = (q.get("sanity") or {}).get(m)
        sc = (q.get("shortcuts") or {}).get(m)
        entry: dict[str, Any] = {
            "method": m,
            "faithfulness": None,
            "localisation": None,
            "sanity": None,
            "shortcuts": None,
        }
        if faith:
            entry["faithfulness"] = {
                "summary": _records(
                    faith["summary"],
                    [
                        "mode",
                        "order",
                        "n",
                        "method_auc",
                        "random_auc",
                        "advantage",
                        "ci_low",
                        "ci_high",
                        "better_than_random",
                        "early_advantage",
                        "early_ci_low",
                        "early_ci_high",
                    ],
                ),
                "headline": {
                    k: (_f(v) if isinstance(v, float) else v)
                    for k, v in dict(faith.get("headline") or {}).items()
                },
            }
        if loc:
            entry["localisation"] = _records(loc["summary"])
        if san:
            verdict = dict(san.get("verdict") or {})
            label = dict(verdict.get("label") or {})
            entry["sanity"] = {
                "passed": bool(san["passed"]),
                "reason": str(san["reason"]),
                "rule": str(san.get("rule") or ""),
                "final_similarity": _f(san.get("final_similarity")),
                "top_similarity": _f(verdict.get("top")),
                "top_steps": verdict.get("top_steps"),
                "mean_similarity": _f(verdict.get("auc")),
                "threshold": _f(verdict.get("threshold")),
                "label_status": label.get("status"),
                "label_similarity": _f(label.get("similarity")),
                "steps": _records(
                    san["steps"],
                    ["step", "layer", "spearman_median", "spearman_abs_median", "ssim_median"],
                ),
            }
        if sc:
            entry["shortcuts"] = _shortcut_entry(sc)
        out["methods"].append(entry)
    return out


def _shortcut_entry(sc: dict[str, Any]) -> dict[str, Any]:
    """Section 8's shortcut part: what was searched, candidates with their edits, the table."""
    table = sc.get("table")
    rows: list[dict[str, Any]] = []
    named = table is not None and len(table) and "predicted" in table
    if table is not None and len(table):
        if named:
            t = table[(table["predicted"] == 1)]
            cols = ["attribute", "group", "n", "mean_share", "ci_low", "ci_high",
                    "rest_mean_share", "effect", "p_holm", "flagged"]  # fmt: skip
        else:
            t = table
            cols = ["attribute", "group", "n", "n_patches", "where", "mean_share",
                    "rest_mean_share", "effect", "ratio", "candidate", "reason"]  # fmt: skip
        rows = _records(t, [c for c in cols if c in t])
    candidates = []
    for c in sc.get("candidates") or []:
        conf = c.get("confirmation")
        candidates.append(
            {
                "where": c.get("where"),
                "location": c.get("location"),
                "box": [int(v) for v in c.get("box") or []],
                "status": c.get("status"),
                "confirmed": bool(c.get("confirmed")),
                "message": c.get("message"),
                "edits": _records(conf) if conf is not None and len(conf) else [],
            }
        )
    scan = sc.get("scan")
    scan_cols = ["attribute", "group", "n_pairs", "x0", "y0", "x1", "y1", "n_exceed",
                 "median_excess", "p_value", "candidate", "reason"]  # fmt: skip
    return {
        "mode": sc.get("mode", "region"),
        "scan_rows": _records(scan, scan_cols),
        "searched": sc.get("searched", ""),
        "not_searched": list(sc.get("not_searched") or []),
        "flags": list(sc.get("flags") or []),
        "notes": list(sc.get("notes") or []),
        "rows": rows,
        "candidates": candidates,
        "rule": (sc.get("params") or {}).get("test", ""),
    }


def limitations(result: AuditResult) -> list[str]:
    """Plain-language limitations: the model card's plus what the audit cannot tell."""
    items = []
    card = result.model_info.get("card") or {}
    if card.get("limitations"):
        lim = card["limitations"]
        items += [str(x) for x in lim] if isinstance(lim, list) else [str(lim)]
    ds = result.data_summary
    items.append(
        f"The audit covers {ds.get('n_images')} images; confidence intervals are "
        f"{'patient-level' if ds.get('patient_level_bootstrap') else 'image-level'} bootstrap "
        "intervals and say nothing about populations the data do not represent."
    )
    items.append(
        "Subgroups are defined by the recorded attributes only; groups smaller than the "
        "minimum size get no metrics, and absence of a flag is not proof of equal performance."
    )
    items.append(
        "Attribution maps are approximations of what the model uses; the trust checks in "
        "section 8 ran on a bounded sample and their results are estimates."
    )
    for m in result.methods:
        if m.get("max_images"):
            items.append(
                f"{m['name']} explained a stratified sample of at most {m['max_images']} images, "
                "not every image."
            )
    return items


def provenance(result: AuditResult) -> dict[str, Any]:
    """Section 9: versions, hardware, seeds, hashes, timings, dates, config."""
    p = dict(result.provenance)
    return {**p, "config": result.config}


def build_report_data(result: AuditResult) -> dict[str, Any]:
    """Everything the report shows, as plain data (the JSON twin)."""
    from ..audit.criteria import report_data as criteria_report
    from ..slices.report import report_data as slices_report

    ds = dict(result.data_summary)
    mi = dict(result.model_info)
    data = {
        "schema_version": SCHEMA_VERSION,
        "meta": {
            "title": result.name,
            "generator": f"xai_audit {__version__}",
            "date_utc": result.provenance.get("date_utc"),
            "sections": [list(s) for s in SECTIONS],
        },
        "findings": [dict(f) for f in result.findings],
        "model": mi,
        "data": ds,
        "performance": performance(result),
        "subgroups": subgroup_tables(result),
        "calibration": calibration(result),
        "explanations": explanations(result),
        "trust": trust(result),
        "limitations": limitations(result),
        "provenance": provenance(result),
        "criteria": criteria_report(result),  # acceptance criteria checked in the run
        "slices": slices_report(result),  # discovered slices (hypotheses; xai_audit.slices)
    }
    return add_regulatory(data, result)  # documentation, compliance map, integrity


def strip_images(data: dict[str, Any]) -> dict[str, Any]:
    """The data without figures (the report data never holds images; kept for safety)."""
    return {k: v for k, v in data.items() if k != "figures"}


def build_figures(result: AuditResult, data: dict[str, Any], thumb: int = 72) -> dict[str, Any]:
    """Every figure of the report as ``data:`` URIs, keyed for the template."""
    from . import figures as F

    pred = result.predictions
    thr = result.threshold
    attrs = list(result.data_summary.get("attributes") or [])
    figs: dict[str, Any] = {
        "roc": {},
        "reliability": {},
        "forest": {},
        "faithfulness": {},
        "sanity": {},
        "shortcut": {},
        "shortcut_regions": {},
        "mean_maps": {},
        "cases": {},
    }
    figs["roc"]["overall"] = F.roc_figure(pred, None, thr)
    figs["reliability"]["overall"] = F.reliability_figure(result.subgroups["calibration"], None)
    for a in attrs:
        figs["roc"][a] = F.roc_figure(pred, a, thr)
        figs["reliability"][a] = F.reliability_figure(result.subgroups["calibration"], a)
    for m in ("sensitivity", "specificity", "auroc"):
        figs["forest"][m] = F.forest_figure(
            result.subgroups["by_group"], result.subgroups["overall"], m
        )
    q = result.quality
    region = (q.get("region") or {}).get("area_share")
    pos_label = result.model_info.get("positive_class", "positive")
    for m in result.method_names:
        faith = (q.get("faithfulness") or {}).get(m)
        if faith:
            figs["faithfulness"][m] = F.faithfulness_figure(faith["curves"], m)
        san = (q.get("sanity") or {}).get(m)
        if san is not None and san.get("maps") is not None and len(san["maps"]):
            figs["sanity"][m] = F.sanity_strip(
                np.asarray(san["maps"]), list(san.get("layers") or [])
            )
        sc = (q.get("shortcuts") or {}).get(m)
        if sc:
            figs["shortcut"][m] = F.shortcut_figure(sc.get("table"), region, pos_label)
            figs["shortcut_regions"][m] = [
                F.shortcut_region_tiles(c["exemplars"], c["exemplar_box"])
                if c.get("exemplars") is not None and c.get("exemplar_box") is not None
                else None
                for c in sc.get("candidates") or []
            ]
        mm = result.mean_maps.get(m) or {}
        figs["mean_maps"][m] = {o: F.mean_map_tile(np.asarray(mm[o])) for o in OUTCOMES if o in mm}
    ex = result.exemplars
    rows = ex.get("rows")
    if rows is not None and len(rows) and ex.get("images") is not None:
        images = np.asarray(ex["images"], dtype=np.float32)
        maps = {
            m: np.asarray(ex["maps"][m], dtype=np.float32)
            for m in result.method_names
            if m in ex["maps"]
        }
        for i, r in enumerate(np.asarray(rows)):
            img = _shrink(images[i], thumb)
            figs["cases"][int(r)] = F.case_strip(img, [_shrink(maps[m][i], thumb) for m in maps])
    from ..slices.report import figures as slice_figures

    figs["slices"] = slice_figures(result, thumb)
    return figs


def _shrink(a: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = a.shape
    if max(h, w) <= size:
        return a
    scale = size / max(h, w)
    im = Image.fromarray(a.astype(np.float32), mode="F").resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR
    )
    return np.asarray(im)
