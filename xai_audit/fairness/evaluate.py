"""``evaluate_subgroups``: the one entry point that ties the fairness modules together."""

from __future__ import annotations

import warnings as _warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._common import (
    GROUP_SEP,
    METRIC_INDEX,
    METRICS,
    OVERALL_ATTRIBUTE,
    OVERALL_GROUP,
    PROBABILITY_METRICS,
    SubgroupWarning,
)
from .bootstrap import bootstrap_replicates, identity_metrics, make_plan, percentile_interval
from .calibration import reliability_bins
from .count_check import count_check
from .disparity import describe_group, gap_tables, make_flags, tolerances
from .inputs import (
    Group,
    as_attribute_frame,
    as_clusters,
    as_label_matrix,
    as_specs,
    enumerate_groups,
)
from .metrics import frame_values, group_status, metric_frame
from .result import SubgroupResult
from .threshold import ThresholdChoice, choose_threshold

#: ECE is reported per group with CIs but does not raise flags by default: binned ECE is
#: biased upwards by an amount that depends on the group's size and score distribution, and
#: the bootstrap does not remove that bias, so an ECE gap between groups is not clean evidence
#: of a calibration disparity. Pass ``flag_metrics=(..., "ece")`` to flag it anyway.
DEFAULT_FLAG_METRICS = ("sensitivity", "specificity", "auroc")


def _thresholds(
    Y: np.ndarray, S: np.ndarray, labels: Sequence[str], threshold: Any, notes: list[str]
) -> dict[str, ThresholdChoice]:
    out = {}
    for li, label in enumerate(labels):
        rule = threshold.get(label) if isinstance(threshold, Mapping) else threshold
        try:
            out[label] = choose_threshold(Y[:, li], S[:, li], rule, label=label)
        except ValueError as err:
            if "both classes" not in str(err):
                raise
            notes.append(f"Label {label}: {err}; falling back to threshold 0.5.")
            out[label] = choose_threshold(Y[:, li], S[:, li], 0.5, label=label)
    return out


def _point_estimates(
    y: np.ndarray,
    s: np.ndarray,
    attrs: pd.DataFrame,
    specs: Sequence[Any],
    groups: Sequence[Group],
    threshold: float,
    n_bins: int,
) -> np.ndarray:
    """(G, M) point estimates from one fairlearn MetricFrame per attribute/intersection."""
    point = np.full((len(groups), len(METRICS)), np.nan)
    index = {(g.spec_index, g.name): gi for gi, g in enumerate(groups)}
    for k, spec in enumerate(specs):
        mf = metric_frame(y, s, attrs[list(spec.columns)], threshold, n_bins)
        if k == 0:
            point[0] = frame_values(mf.overall)
        for key, row in mf.by_group.iterrows():
            name = GROUP_SEP.join(map(str, key)) if isinstance(key, tuple) else str(key)
            gi = index.get((k, name))
            if gi is not None:
                point[gi] = frame_values(row)
    return point


def evaluate_subgroups(
    y_true: Any,
    y_score: Any,
    sensitive_features: Any,
    *,
    threshold: Any = None,
    intersections: bool | Sequence[Sequence[str]] = True,
    patient_id: Any = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    min_group_size: int = 30,
    tolerance: float | Mapping[str, float] = 0.05,
    flag_metrics: Sequence[str] = DEFAULT_FLAG_METRICS,
    label_names: Sequence[str] | None = None,
    n_bins: int = 10,
    random_state: int | None = 0,
    n_jobs: int | None = None,
) -> SubgroupResult:
    """Subgroup and intersectional performance, disparity flags and calibration with CIs.

    Point estimates come from fairlearn's :class:`~fairlearn.metrics.MetricFrame` with
    scikit-learn metrics; confidence intervals from a vectorised percentile bootstrap
    (:mod:`xai_audit.fairness.bootstrap`), by patient when ``patient_id`` is given. The
    best-vs-worst gap's interval accounts for the choice of the two groups (simultaneous max-t
    intervals of the pairwise differences, :func:`~xai_audit.fairness.disparity.range_interval`).

    Parameters
    ----------
    y_true : array-like of shape (N,) or (N, L)
        Binary labels (one column per label for multi-label models).
    y_score : array-like of shape (N,) or (N, L)
        Scores, higher = more likely positive; probabilities in [0, 1] for Brier/ECE.
    sensitive_features : DataFrame, dict of columns, Series or array
        Attribute columns (e.g. ``sex``, ``age_group``, ``site``). Missing values (NaN/None)
        form an explicit group ``"missing"``.
    threshold : float, str, tuple, dict or None
        A number, or a rule applied on the whole data set: ``"youden"``,
        ``("sensitivity", t)``, ``("specificity", t)``, ``"max_f1"``; a dict gives one per
        label. ``None`` means ``"youden"``. Predicted positive means ``score >= threshold``.
    intersections : bool or list of tuples
        ``True``: every pair of attributes; an integer k >= 2: every combination of 2 to k
        attributes (3 adds three-way cells); a list: those intersections; ``False``: none.
    patient_id : array-like of shape (N,), optional
        Resample patients instead of images (images of a patient move together).
    n_boot : int
        Bootstrap resamples (0 disables intervals).
    ci : float
        Interval level.
    min_group_size : int
        Groups with fewer cases get no metrics (status ``"small"``).
    tolerance : float or dict
        Allowed gap per metric (absolute difference); default 0.05.
    flag_metrics : sequence of str
        Metrics whose gaps can raise flags (default sensitivity, specificity, AUROC; see
        ``DEFAULT_FLAG_METRICS`` for why ECE is not among them).
    label_names : sequence of str, optional
        Names of the labels.
    n_bins : int
        Equal-width calibration bins.
    random_state : int or None
        Bootstrap seed.
    n_jobs : int or None
        Threads for the bootstrap.

    Returns
    -------
    SubgroupResult
    """
    unknown = [m for m in flag_metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown flag_metrics {unknown}; choose from {list(METRICS)}")
    if not 0 < ci < 1:
        raise ValueError("ci must be in (0, 1)")
    tol = tolerances(tolerance)
    Y, S, labels = as_label_matrix(y_true, y_score, label_names)
    n_rows, n_labels = Y.shape
    attrs, n_missing = as_attribute_frame(sensitive_features, n_rows)
    units, n_units = as_clusters(patient_id, n_rows)
    specs = as_specs(list(attrs.columns), intersections)
    groups = [Group(-1, OVERALL_ATTRIBUTE, OVERALL_GROUP, np.arange(n_rows))] + enumerate_groups(
        attrs, specs
    )
    notes: list[str] = []
    for col, k in n_missing.items():
        if k:
            notes.append(
                f"Attribute {col}: {k} of {n_rows} values missing; kept as group 'missing'."
            )
    thresholds = _thresholds(Y, S, labels, threshold, notes)

    n_groups = len(groups)
    point = np.full((n_labels, n_groups, len(METRICS)), np.nan)
    status = np.empty((n_labels, n_groups), dtype=object)
    reason = np.empty((n_labels, n_groups), dtype=object)
    counts = np.zeros((n_labels, n_groups, 2), dtype=np.int64)
    plans: list[list[Any]] = []
    calibration = []
    eod_dpd: dict[tuple[str, str], tuple[float, float]] = {}
    for li, label in enumerate(labels):
        y, s = Y[:, li], S[:, li]
        thr = thresholds[label].value
        probabilistic = bool(s.min() >= 0.0 and s.max() <= 1.0)
        if not probabilistic:
            notes.append(
                f"Label {label}: scores are not probabilities in [0, 1]; Brier score and ECE not computed."
            )
        with _warnings.catch_warnings():
            # Undefined metrics are NaN by design; their reasons are reported per group.
            _warnings.simplefilter("ignore")
            point[li] = _point_estimates(y, s, attrs, specs, groups, thr, n_bins)
        label_plans = []
        for gi, g in enumerate(groups):
            yg, sg = y[g.rows], s[g.rows]
            n, n_pos, n_pred = yg.size, int(yg.sum()), int((sg >= thr).sum())
            counts[li, gi] = (n, n_pos)
            st, why, undefined = group_status(n, n_pos, n_pred, min_group_size)
            status[li, gi], reason[li, gi] = st, why
            for m in undefined:
                point[li, gi, METRIC_INDEX[m]] = np.nan
            if not probabilistic:
                for m in PROBABILITY_METRICS:
                    point[li, gi, METRIC_INDEX[m]] = np.nan
            if st != "ok":
                lab = f" (label {label})" if n_labels > 1 else ""
                where = (
                    "The whole data set"
                    if gi == 0
                    else f"Group {describe_group(g.attribute, g.name)}"
                )
                notes.append(f"{where}{lab}: {why}.")
            label_plans.append(
                make_plan(yg, sg, units[g.rows], thr, n_bins) if st != "small" else None
            )
            if probabilistic:
                cal = reliability_bins(yg, sg, n_bins)
                cal.insert(0, "status", st)
                cal.insert(0, "group", g.name)
                cal.insert(0, "attribute", g.attribute)
                cal.insert(0, "label", label)
                calibration.append(cal)
        plans.append(label_plans)
        eod_dpd.update(_group_disparities(point[li], specs, groups, status[li], label))

    # The vectorised bootstrap with unit weights must reproduce the MetricFrame values.
    ident = identity_metrics([[p for p in lp] for lp in plans], n_units) if n_rows else None
    _check_identity(ident, point, plans)

    replicates = None
    lo = hi = np.full_like(point, np.nan)
    if n_boot > 0:
        replicates = bootstrap_replicates(plans, n_units, n_boot, random_state, n_jobs=n_jobs)
        undefined = ~np.isfinite(point)
        replicates[:, undefined] = np.nan
        lo, hi = percentile_interval(replicates, ci)

    overall_rows, group_rows = [], []
    for li, label in enumerate(labels):
        for mi, metric in enumerate(METRICS):
            overall_rows.append((label, metric, point[li, 0, mi], lo[li, 0, mi], hi[li, 0, mi]))
        for gi in range(1, n_groups):
            g = groups[gi]
            for mi, metric in enumerate(METRICS):
                group_rows.append(
                    (
                        label,
                        g.attribute,
                        g.name,
                        counts[li, gi, 0],
                        counts[li, gi, 1],
                        metric,
                        point[li, gi, mi],
                        lo[li, gi, mi],
                        hi[li, gi, mi],
                        status[li, gi],
                        reason[li, gi],
                    )
                )
    overall = pd.DataFrame(overall_rows, columns=["label", "metric", "value", "ci_low", "ci_high"])
    by_group = pd.DataFrame(
        group_rows,
        columns=[
            "label",
            "attribute",
            "group",
            "n",
            "n_pos",
            "metric",
            "value",
            "ci_low",
            "ci_high",
            "status",
            "reason",
        ],
    )
    to_overall, best_worst = gap_tables(point, replicates, groups, status, labels, ci)
    best_worst["equalized_odds_difference"] = [
        eod_dpd.get((r.label, r.attribute), (np.nan, np.nan))[0] for r in best_worst.itertuples()
    ]
    best_worst["demographic_parity_difference"] = [
        eod_dpd.get((r.label, r.attribute), (np.nan, np.nan))[1] for r in best_worst.itertuples()
    ]
    disparities = to_overall.merge(best_worst, on=["label", "attribute", "metric"], how="left")
    flags = make_flags(to_overall, best_worst, flag_metrics, tol, ci, n_labels)
    # A second, count-based test for gaps in proportions: the bootstrap states no uncertainty
    # for a small group at 0 or 1 (see count_check).
    group_rows = {(g.attribute, g.name): g.rows for g in groups}
    flags, withheld = count_check(
        flags,
        best_worst,
        Y,
        S,
        labels,
        {lab: thresholds[lab].value for lab in labels},
        group_rows,
        units,
        ci,
    )

    for note in notes:
        _warnings.warn(note, SubgroupWarning, stacklevel=2)
    config = {
        "n_rows": n_rows,
        "n_units": n_units,
        "resampling_unit": "patient" if patient_id is not None else "row",
        "n_boot": n_boot,
        "ci": ci,
        "min_group_size": min_group_size,
        "tolerance": tol,
        "flag_metrics": list(flag_metrics),
        "n_bins": n_bins,
        "random_state": random_state,
        "attributes": list(attrs.columns),
        "intersections": [spec.name for spec in specs if len(spec.columns) > 1],
        "labels": labels,
        "thresholds": {k: v.describe() for k, v in thresholds.items()},
        "flags_withheld": withheld,
    }
    cal_frame = (
        pd.concat(calibration, ignore_index=True)
        if calibration
        else pd.DataFrame(
            columns=[
                "label",
                "attribute",
                "group",
                "status",
                "bin",
                "bin_low",
                "bin_high",
                "count",
                "mean_predicted",
                "fraction_positive",
            ]
        )
    )
    return SubgroupResult(
        threshold=thresholds[labels[0]] if n_labels == 1 else dict(thresholds),
        thresholds=thresholds,
        overall=overall,
        by_group=by_group,
        disparities=disparities,
        gaps=best_worst,
        flags=flags,
        calibration=cal_frame,
        warnings=notes,
        config=config,
        _y_true=Y,
        _y_score=S,
        _group_rows=group_rows,
    )


def _group_disparities(
    point: np.ndarray, specs: Sequence[Any], groups: Sequence[Group], status: np.ndarray, label: str
) -> dict[tuple[str, str], tuple[float, float]]:
    """Equalized-odds and demographic-parity differences per attribute, fairlearn's definitions.

    ``fairlearn.metrics.equalized_odds_difference`` (between groups, worst case) is the larger
    of the max-min ranges of TPR and FPR across groups, and
    ``demographic_parity_difference`` the max-min range of the selection rate; both are taken
    here from the MetricFrame values already computed (the tests check equality with the
    fairlearn functions). Only groups with at least ``min_group_size`` cases and both classes
    (status ok or constant_prediction) take part, so tiny or one-class groups cannot dominate.
    """
    out = {}
    tpr, fpr, sel = METRIC_INDEX["sensitivity"], METRIC_INDEX["fpr"], METRIC_INDEX["selection_rate"]
    for k, spec in enumerate(specs):
        idx = [
            gi
            for gi, g in enumerate(groups)
            if g.spec_index == k and status[gi] in ("ok", "constant_prediction")
        ]
        if len(idx) < 2:
            out[(label, spec.name)] = (np.nan, np.nan)
            continue
        vals = point[idx]
        span = vals.max(axis=0) - vals.min(axis=0)
        out[(label, spec.name)] = (float(max(span[tpr], span[fpr])), float(span[sel]))
    return out


def _check_identity(
    ident: np.ndarray | None, point: np.ndarray, plans: Sequence[Sequence[Any]]
) -> None:
    if ident is None:
        return
    live = np.array([[p is not None for p in lp] for lp in plans])
    a, b = ident[live], point[live]
    both = np.isfinite(a) & np.isfinite(b)
    if not np.allclose(a[both], b[both], rtol=1e-9, atol=1e-12) or np.any(
        np.isfinite(b) & ~np.isfinite(a)
    ):
        raise RuntimeError(
            "internal error: the vectorised bootstrap does not reproduce the point estimates"
        )
