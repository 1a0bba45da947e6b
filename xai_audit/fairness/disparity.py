"""Disparity: gaps to overall and between best and worst group, with bootstrap CIs, and flags.

Gap intervals come from the same resamples as the metrics. Group minus overall: in every
resample the group's value minus the overall value is taken and the percentile interval of those
differences is reported, so the correlation between a group and the whole is respected. Best
minus worst group: the two groups are chosen on the same data, so a plain interval of their
difference under-covers; :func:`range_interval` projects simultaneous max-t intervals of the
pairwise differences (with a moment-selection step) onto the range instead.

A flag is raised only when the whole interval of the gap lies beyond the tolerance in the harmful
direction (e.g. the upper CI bound of ``sensitivity(group) - sensitivity(overall)`` is below
``-tolerance``), never on the point value alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ._common import DIRECTION, DISPLAY, GROUP_SEP, INTERSECTION_SEP, METRICS
from .bootstrap import nan_quantiles, percentile_interval
from .inputs import Group

_F = np.float64


@dataclass(frozen=True)
class Flag:
    """A disparity whose whole confidence interval lies beyond the tolerance.

    Attributes
    ----------
    label, attribute, group, metric : str
        Where the disparity is. For ``kind="best_vs_worst"`` the group is the worst group.
    gap : float
        ``group - overall`` for ``kind="vs_overall"``; for ``"best_vs_worst"`` the (positive)
        amount by which the worst group is worse than the best.
    ci_low, ci_high : float
        Bootstrap interval of ``gap``.
    tolerance : float
        Allowed gap for this metric.
    message : str
        Plain-language description.
    kind : str
        ``"vs_overall"`` or ``"best_vs_worst"``.
    """

    label: str
    attribute: str
    group: str
    metric: str
    gap: float
    ci_low: float
    ci_high: float
    tolerance: float
    message: str
    kind: str = "vs_overall"

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            k: (float(v) if isinstance(v, (float, np.floating)) else v)
            for k, v in asdict(self).items()
        }


def describe_group(attribute: str, group: str) -> str:
    """``"age_group=65+"``, or ``"sex=F & age_group=65+"`` for an intersection."""
    names = attribute.split(INTERSECTION_SEP)
    values = group.split(GROUP_SEP) if len(names) > 1 else [group]
    return " & ".join(f"{n}={v}" for n, v in zip(names, values))


def _fmt(x: float) -> str:
    return f"{x:.2f}" if abs(x) >= 0.095 else f"{x:.3f}"


def tolerances(
    tolerance: float | Mapping[str, float], metrics: Sequence[str] = METRICS
) -> dict[str, float]:
    """Expand the ``tolerance`` argument to one value per metric (default 0.05)."""
    if isinstance(tolerance, Mapping):
        unknown = set(tolerance) - set(METRICS)
        if unknown:
            raise ValueError(f"tolerance names unknown metrics {sorted(unknown)}")
        return {m: float(tolerance.get(m, 0.05)) for m in metrics}
    return dict.fromkeys(metrics, float(tolerance))


def gap_tables(
    point: np.ndarray,
    replicates: np.ndarray | None,
    groups: Sequence[Group],
    status: np.ndarray,
    labels: Sequence[str],
    ci: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gaps of each group to overall, and best-vs-worst per attribute.

    Parameters
    ----------
    point : array (L, G, M)
        Point estimates; group 0 is overall.
    replicates : array (n_boot, L, G, M) or None
        Bootstrap replicates (None: no intervals).
    groups : list of Group
        The groups, index 0 overall.
    status : array (L, G) of str
    labels : list of str
    ci : float
        Interval level.

    Returns
    -------
    to_overall : DataFrame
        label, attribute, group, metric, value, overall, diff_to_overall, diff_ci_low,
        diff_ci_high, ratio_to_overall.
    best_worst : DataFrame
        label, attribute, metric, best_group, best_value, worst_group, worst_value, max_gap,
        max_gap_ci_low, max_gap_ci_high (max_gap >= 0 is how much worse the worst group is;
        for descriptive metrics such as prevalence it is max - min and no best/worst is named).
    """
    n_labels, n_groups, _ = point.shape
    rows = []
    if replicates is not None and replicates.shape[0]:
        diff_reps = replicates[:, :, 1:, :] - replicates[:, :, :1, :]
        d_lo, d_hi = percentile_interval(diff_reps, ci)
    else:
        d_lo = d_hi = np.full((n_labels, n_groups - 1, len(METRICS)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = point[:, 1:, :] - point[:, :1, :]
        ratio = point[:, 1:, :] / point[:, :1, :]
    for li, label in enumerate(labels):
        for gi in range(1, n_groups):
            g = groups[gi]
            for mi, metric in enumerate(METRICS):
                ok = np.isfinite(diff[li, gi - 1, mi])
                rows.append(
                    (
                        label,
                        g.attribute,
                        g.name,
                        metric,
                        point[li, gi, mi],
                        point[li, 0, mi],
                        diff[li, gi - 1, mi],
                        d_lo[li, gi - 1, mi] if ok else np.nan,
                        d_hi[li, gi - 1, mi] if ok else np.nan,
                        ratio[li, gi - 1, mi],
                    )
                )
    to_overall = pd.DataFrame(
        rows,
        columns=[
            "label",
            "attribute",
            "group",
            "metric",
            "value",
            "overall",
            "diff_to_overall",
            "diff_ci_low",
            "diff_ci_high",
            "ratio_to_overall",
        ],
    )

    by_attr: dict[str, list[int]] = {}
    for gi in range(1, n_groups):
        by_attr.setdefault(groups[gi].attribute, []).append(gi)
    bw_rows = []
    orient = np.array([DIRECTION[m] or 1 for m in METRICS], dtype=_F)
    for li, label in enumerate(labels):
        for attr, members in by_attr.items():
            gap_lo = gap_hi = np.full(len(METRICS), np.nan)
            if replicates is not None and replicates.shape[0]:
                # Selection-aware interval of the range, all metrics at once; a group takes
                # part in a metric's range only where it is a candidate (not small, defined).
                obs = orient * point[li, members, :]
                obs[np.asarray([status[li, gi] == "small" for gi in members])] = np.nan
                gap_lo, gap_hi = range_intervals(orient * replicates[:, li, members, :], obs, ci)
            for mi, metric in enumerate(METRICS):
                cand = [
                    gi
                    for gi in members
                    if status[li, gi] != "small" and np.isfinite(point[li, gi, mi])
                ]
                record = {
                    "label": label,
                    "attribute": attr,
                    "metric": metric,
                    "best_group": None,
                    "best_value": np.nan,
                    "worst_group": None,
                    "worst_value": np.nan,
                    "max_gap": np.nan,
                    "max_gap_ci_low": np.nan,
                    "max_gap_ci_high": np.nan,
                }
                if len(cand) >= 2:
                    vals = point[li, cand, mi]
                    direction = DIRECTION[metric] or 1
                    best = cand[int(np.argmax(direction * vals))]
                    worst = cand[int(np.argmin(direction * vals))]
                    record["max_gap"] = direction * (point[li, best, mi] - point[li, worst, mi])
                    if DIRECTION[metric]:
                        record.update(
                            best_group=groups[best].name,
                            best_value=point[li, best, mi],
                            worst_group=groups[worst].name,
                            worst_value=point[li, worst, mi],
                        )
                    record["max_gap_ci_low"] = gap_lo[mi]
                    record["max_gap_ci_high"] = gap_hi[mi]
                bw_rows.append(record)
    return to_overall, pd.DataFrame(bw_rows)


#: Share of the error rate spent on the first step (choosing the pairs that could be the
#: best-vs-worst pair), as recommended by Romano, Shaikh & Wolf (2014, Econometrica 82: 1979).
SELECTION_BETA_SHARE = 0.1


def range_interval(
    group_replicates: np.ndarray, observed: np.ndarray, ci: float
) -> tuple[float, float]:
    """Selection-aware interval of the best-minus-worst gap (the range) across groups.

    The true gap is ``max(mu) - min(mu)``; the best and worst groups are chosen on the same
    data, so neither the plain bootstrap of the chosen pair nor a bootstrap of the range covers
    it (the range is not smooth where groups tie, and the bootstrap of it is inconsistent
    there: measured coverage 0.83 at a nominal 0.95). Instead, simultaneous max-t intervals
    over all pairwise differences are projected onto the range, with a moment-selection step
    that drops pairs which cannot be the best-vs-worst pair (two-step method of Romano, Shaikh
    and Wolf 2014):

    1. For every pair ``p = (j, k)``: ``d_p = mu_j - mu_k``, its bootstrap standard error
       ``se_p`` and the studentised replicates ``t*_p = (d*_p - d_p) / se_p``.
    2. Selection at level ``1 - beta`` (``beta = 0.1 * alpha``): with ``c_beta`` the
       ``1 - beta`` quantile of ``max_p |t*_p|``, keep the pairs with
       ``|d_p| + c_beta se_p >= max_q (|d_q| - c_beta se_q)`` (the observed best-worst pair is
       always kept).
    3. ``c`` = the ``1 - alpha + beta`` quantile of ``max |t*_p|`` over the kept pairs; the
       interval is ``[max(0, max_p |d_p| - c se_p), max_p |d_p| + c se_p]`` over the kept pairs.

    If all the kept pairs' simultaneous intervals hold, the range lies in this interval, so its
    coverage is at least the nominal level. It is close to nominal at both extremes: with all
    groups equal every pair is kept and it is the simultaneous interval of all pairs (the
    error is the chance that some pair looks different); with one clearly best and one clearly
    worst group only that pair is kept and it is that pair's studentised interval.

    Hand-written: no library offers selection-aware intervals for a bootstrap range.

    Parameters
    ----------
    group_replicates : ndarray ``(n_resamples, n_groups)``
        Metric replicates per group, oriented so that higher is better (NaN where undefined).
    observed : ndarray ``(n_groups,)``
        Point estimates of the groups, same orientation.
    ci : float
        Interval level.

    Returns
    -------
    (low, high) : floats; NaN when fewer than two groups have enough defined replicates.

    See Also
    --------
    range_intervals : the same for several metrics at once (what :func:`gap_tables` uses).
    """
    reps = np.asarray(group_replicates, dtype=_F)
    lo, hi = range_intervals(reps[:, :, None], np.asarray(observed, dtype=_F)[:, None], ci)
    return float(lo[0]), float(hi[0])


def range_intervals(
    group_replicates: np.ndarray, observed: np.ndarray, ci: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`range_interval` for ``M`` metrics at once, vectorised over metrics and pairs.

    Parameters
    ----------
    group_replicates : ndarray ``(n_resamples, n_groups, M)``
        Replicates oriented so that higher is better.
    observed : ndarray ``(n_groups, M)``
        Point estimates; a group whose point estimate is NaN for a metric takes no part in
        that metric's range.
    ci : float

    Returns
    -------
    low, high : ndarrays ``(M,)``
    """
    reps = np.asarray(group_replicates, dtype=_F)
    obs = np.asarray(observed, dtype=_F)
    n_boot, n_groups, n_metrics = reps.shape
    # Bound the (resamples, pairs, metrics) temporaries (about 32 MiB each): with many groups
    # (50 cells: 1,225 pairs) take the metrics a few at a time.
    per_metric = max(1, n_boot * n_groups * (n_groups - 1) // 2 * 8)
    step = int(max(1, 2**25 // per_metric))
    if n_metrics > step:
        parts = [
            range_intervals(reps[:, :, m : m + step], obs[:, m : m + step], ci)
            for m in range(0, n_metrics, step)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    nan = np.full(n_metrics, np.nan)
    if n_groups < 2 or n_boot < 2:
        return nan, nan.copy()
    alpha = 1.0 - ci
    beta = SELECTION_BETA_SHARE * alpha
    member = np.isfinite(obs)  # (K, M)
    enough = np.isfinite(reps).mean(axis=0) >= 0.5
    # A metric whose candidate groups lack defined replicates gets no interval (as percentiles).
    valid = (member.sum(axis=0) >= 2) & np.all(enough | ~member, axis=0)
    j, k = np.triu_indices(n_groups, 1)
    pair_ok = member[j] & member[k]  # (P, M)
    d_hat = np.where(pair_ok, obs[j] - obs[k], np.nan)
    d_star = reps[:, j] - reps[:, k]  # (B, P, M); NaN where a group is undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dense = not np.isnan(d_star).any()  # the usual case: skip the NaN-aware (slow) paths
        se = np.std(d_star, axis=0, ddof=1) if dense else np.nanstd(d_star, axis=0, ddof=1)
        se = np.where(np.isfinite(se), se, 0.0)
        dev = np.abs(d_star - d_hat, out=d_star)  # d_star is not needed any more
        t_star = np.divide(dev, se, out=np.where(np.isnan(dev), np.nan, 0.0), where=se > 0)
        size = np.abs(d_hat)  # NaN for pairs outside the candidates

        def crit(keep: np.ndarray, level: float) -> np.ndarray:
            if dense and keep.all():
                worst = t_star.max(axis=1)  # (B, M)
            else:
                worst = np.nanmax(np.where(keep, t_star, np.nan), axis=1)
            c = nan_quantiles(worst, [level])[0]
            return np.where(np.isfinite(c), c, 0.0)

        c_beta = crit(pair_ok, 1.0 - beta)
        floor = np.nanmax(size - c_beta * se, axis=0)
        kept = pair_ok & (size + c_beta * se >= floor - 1e-12)
        c = crit(kept, 1.0 - alpha + beta)
        low = np.nanmax(np.where(kept, size - c * se, np.nan), axis=0)
        high = np.nanmax(np.where(kept, size + c * se, np.nan), axis=0)
    low = np.maximum(low, 0.0)
    return np.where(valid, low, np.nan), np.where(valid, high, np.nan)


def make_flags(
    to_overall: pd.DataFrame,
    best_worst: pd.DataFrame,
    flag_metrics: Sequence[str],
    tol: Mapping[str, float],
    ci: float,
    n_labels: int,
) -> list[Flag]:
    """Flags for every gap whose whole interval lies beyond the tolerance, harmful side.

    Parameters
    ----------
    to_overall, best_worst : DataFrame
        From :func:`gap_tables`.
    flag_metrics : sequence of str
        Metrics that can raise flags (descriptive ones, like prevalence, never do).
    tol : mapping
        Tolerance per metric.
    ci : float
        Interval level (for the messages).
    n_labels : int
        Number of labels (the label is named in messages only when there are several).
    """
    pct = f"{100 * ci:g}%"
    flags: list[Flag] = []
    for metric in flag_metrics:
        direction = DIRECTION[metric]
        if not direction:
            continue
        t = tol[metric]
        name = DISPLAY[metric]
        sub = to_overall[to_overall["metric"] == metric]
        for row in sub.itertuples(index=False):
            lo, hi = row.diff_ci_low, row.diff_ci_high
            if not (np.isfinite(lo) and np.isfinite(hi)):
                continue
            harmful = hi < -t if direction > 0 else lo > t
            if not harmful:
                continue
            where = describe_group(row.attribute, row.group)
            lab = f" ({row.label})" if n_labels > 1 else ""
            side = "below" if direction > 0 else "above"
            a, b = sorted((abs(lo), abs(hi)))
            msg = (
                f"{name}{lab} for {where} is {_fmt(abs(row.diff_to_overall))} {side} overall "
                f"({pct} CI {_fmt(a)}–{_fmt(b)}; tolerance {t:g}); "
                f"{_fmt(row.value)} vs {_fmt(row.overall)} overall."
            )
            flags.append(
                Flag(
                    row.label,
                    row.attribute,
                    row.group,
                    metric,
                    float(row.diff_to_overall),
                    float(lo),
                    float(hi),
                    t,
                    msg,
                    "vs_overall",
                )
            )
        sub = best_worst[best_worst["metric"] == metric]
        for row in sub.itertuples(index=False):
            lo = row.max_gap_ci_low
            if not (np.isfinite(lo) and lo > t):
                continue
            lab = f" ({row.label})" if n_labels > 1 else ""
            best = describe_group(row.attribute, row.best_group)
            worst = describe_group(row.attribute, row.worst_group)
            msg = (
                f"{name}{lab} differs by {_fmt(row.max_gap)} across {row.attribute}: "
                f"{_fmt(row.worst_value)} for {worst} vs {_fmt(row.best_value)} for {best} "
                f"({pct} CI {_fmt(row.max_gap_ci_low)}–{_fmt(row.max_gap_ci_high)}; tolerance {t:g})."
            )
            flags.append(
                Flag(
                    row.label,
                    row.attribute,
                    row.worst_group,
                    metric,
                    float(row.max_gap),
                    float(row.max_gap_ci_low),
                    float(row.max_gap_ci_high),
                    t,
                    msg,
                    "best_vs_worst",
                )
            )
    return flags
