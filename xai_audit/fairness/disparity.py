"""Disparity: gaps to overall and between best and worst group, with bootstrap CIs, and flags.

Gap intervals come from the same resamples as the metrics: in every resample the group's value
minus the overall value (or best minus worst group) is taken, and the percentile interval of
those differences is reported, so the correlation between a group and the whole is respected.

A flag is raised only when the whole interval of the gap lies beyond the tolerance in the harmful
direction (e.g. the upper CI bound of ``sensitivity(group) - sensitivity(overall)`` is below
``-tolerance``), never on the point value alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ._common import DIRECTION, DISPLAY, GROUP_SEP, INTERSECTION_SEP, METRICS
from .bootstrap import percentile_interval
from .inputs import Group


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
    for li, label in enumerate(labels):
        for attr, members in by_attr.items():
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
                    if replicates is not None and replicates.shape[0]:
                        record.update(
                            zip(
                                ("max_gap_ci_low", "max_gap_ci_high"),
                                range_interval(
                                    direction * replicates[:, li, cand, mi],
                                    record["max_gap"],
                                    ci,
                                ),
                            )
                        )
                bw_rows.append(record)
    return to_overall, pd.DataFrame(bw_rows)


def range_interval(group_replicates: np.ndarray, observed: float, ci: float) -> tuple[float, float]:
    """Bias-corrected bootstrap interval of the best-minus-worst gap across groups.

    The best and worst groups are chosen by the data, so the observed range is biased
    upwards (with several equal groups it is still > 0). Re-selecting them inside every
    resample gives the bootstrap distribution of the range itself, and the basic bootstrap
    interval ``[2 * observed - q_high, 2 * observed - q_low]`` removes the extra upward
    shift that the selection puts into the resampled ranges. Holding the groups fixed and
    taking the percentile interval instead flagged equal groups on control data.

    Parameters
    ----------
    group_replicates : ndarray ``(n_resamples, n_groups)``
        Metric replicates per group, oriented so that higher is better.
    observed : float
        The point estimate of best minus worst.
    ci : float
        Interval level.
    """
    reps = np.nanmax(group_replicates, axis=1) - np.nanmin(group_replicates, axis=1)
    q_lo, q_hi = percentile_interval(reps[:, None], ci)
    return float(2 * observed - q_hi[0]), float(2 * observed - q_lo[0])


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
