"""A second, count-based test for disparity flags on proportions (sensitivity, specificity).

The percentile bootstrap under-states the uncertainty of a small group's proportion, and at
0 or 1 it states none: every resample of 18 positives that were all detected detects all of
them, so the group contributes no variance to the interval of its gap. On null data (a random
5 % or 10 % of 900 images named as a group, true gap 0) the bootstrap flagged such a group in
7-8 of 60 simulated audits, most often as "1.00 for the small group vs 0.80 for a site"; the
findings benchmark with coded attributes and 5 % missing sites flagged the random
``site=missing`` group in 4 of 40 runs.

So a flag on a proportion must also hold under a binomial interval that behaves at the
boundary: the difference of two independent proportions by the method of variance estimates
recovery (MOVER) with Wilson intervals, i.e. Newcombe's hybrid score interval (Newcombe 1998,
method 10; Zou and Donner 2008). The bootstrap still decides for groups of any size; the
count check only withholds flags it cannot confirm, so it can never add one.

* ``vs_overall``: the group is compared with the rest of the data (independent of it) and the
  interval scaled by the rest's share, ``p_g - p_all = (1 - w) (p_g - p_rest)``.
* ``best_vs_worst``: the worst group against the best, at the Bonferroni level over the pairs
  of the attribute's groups (the pair was chosen on the same data).

Images of a patient are not independent: as in :mod:`.intervals`, the binomial count is the
number of distinct patients among the denominator's images, successes scaled in proportion.

Hand-written: statsmodels' ``confint_proportions_2indep`` gives Newcombe's interval for one
pair of counts at a time; the formula is a few lines of numpy here, checked against the
published example in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .disparity import Flag, describe_group
from .intervals import cell_counts, wilson_interval

#: Metrics the check applies to: success and denominator per image.
PROPORTIONS = ("sensitivity", "specificity")


def newcombe_interval(
    k1: float, n1: float, k2: float, n2: float, ci: float = 0.95
) -> tuple[float, float]:
    """Interval of ``k1/n1 - k2/n2`` for independent proportions (Newcombe's method 10).

    Parameters
    ----------
    k1, n1, k2, n2 : float
        Successes and trials of each proportion (fractional counts allowed).
    ci : float
        Confidence level.

    Returns
    -------
    (low, high) : floats; NaN when a proportion has no trials.
    """
    if not (n1 > 0 and n2 > 0):
        return float("nan"), float("nan")
    p1, p2 = k1 / n1, k2 / n2
    (l1, l2), (u1, u2) = wilson_interval([k1, k2], [n1, n2], ci)
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return float(low), float(high)


def _counts(
    rows: np.ndarray, y: np.ndarray, predicted: np.ndarray, units: np.ndarray, metric: str
) -> tuple[float, float, int]:
    """Patient-effective successes and trials of ``metric`` among ``rows``, and the images."""
    k_eff, n_eff, _k, n = cell_counts(y[rows], predicted[rows], units[rows])[metric]
    return k_eff, n_eff, n


def count_check(
    flags: Sequence[Flag],
    best_worst: pd.DataFrame,
    y_true: np.ndarray,
    y_score: np.ndarray,
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    group_rows: Mapping[tuple[str, str], np.ndarray],
    units: np.ndarray,
    ci: float,
) -> tuple[list[Flag], list[dict[str, Any]]]:
    """Keep the flags on proportions that a count-based interval confirms.

    Parameters
    ----------
    flags : list of Flag
        From :func:`~xai_audit.fairness.disparity.make_flags`.
    best_worst : DataFrame
        The attribute-level table (for each range flag's best group).
    y_true, y_score : ndarray ``(N, L)``
    labels : list of str
    thresholds : mapping label -> float
    group_rows : mapping ``(attribute, group) -> rows``
    units : ndarray ``(N,)``
        Patient (or image) index of every row.
    ci : float

    Returns
    -------
    kept : list of Flag
        Flags on other metrics unchanged; flags on proportions that the check confirms.
    withheld : list of dict
        The flags it did not confirm, with the count-based interval and why.
    """
    kept: list[Flag] = []
    withheld: list[dict[str, Any]] = []
    n_rows = y_true.shape[0]
    for flag in flags:
        if flag.metric not in PROPORTIONS:
            kept.append(flag)
            continue
        li = list(labels).index(flag.label)
        y = y_true[:, li]
        predicted = y_score[:, li] >= thresholds[flag.label]
        rows = group_rows[(flag.attribute, flag.group)]
        k_g, n_g, img_g = _counts(rows, y, predicted, units, flag.metric)
        t = flag.tolerance
        if flag.kind == "best_vs_worst":
            row = best_worst[
                (best_worst["label"] == flag.label)
                & (best_worst["attribute"] == flag.attribute)
                & (best_worst["metric"] == flag.metric)
            ].iloc[0]
            best = group_rows[(flag.attribute, row["best_group"])]
            k_b, n_b, _ = _counts(best, y, predicted, units, flag.metric)
            n_pairs = _n_pairs(group_rows, flag.attribute)
            level = 1.0 - (1.0 - ci) / max(1, n_pairs)
            low, high = newcombe_interval(k_b, n_b, k_g, n_g, level)
            confirmed = np.isfinite(low) and low > t
            against = f"{describe_group(flag.attribute, row['best_group'])}"
        else:
            rest = np.setdiff1d(np.arange(n_rows), rows, assume_unique=True)
            k_r, n_r, img_r = _counts(rest, y, predicted, units, flag.metric)
            low, high = newcombe_interval(k_g, n_g, k_r, n_r, ci)
            share = img_r / max(1, img_g + img_r)  # p_g - p_all = share_rest (p_g - p_rest)
            low, high = low * share, high * share
            confirmed = np.isfinite(high) and high < -t
            level, against = ci, "the rest"
        if confirmed:
            kept.append(flag)
            continue
        withheld.append(
            {
                **flag.to_dict(),
                "count_ci_low": low,
                "count_ci_high": high,
                "count_level": level,
                "count_trials": n_g,
                "reason": (
                    f"{flag.metric} of {describe_group(flag.attribute, flag.group)} from "
                    f"{n_g:g} independent cases: Newcombe's interval against {against} "
                    f"({100 * level:.3g}%: {low:+.2f} to {high:+.2f}) reaches within the "
                    f"tolerance {t:g}; the bootstrap interval alone would have flagged it"
                ),
            }
        )
    return kept, withheld


def _n_pairs(group_rows: Mapping[tuple[str, str], np.ndarray], attribute: str) -> int:
    k = sum(1 for a, _ in group_rows if a == attribute)
    return k * (k - 1) // 2
