"""Paired bootstrap of the differences between two models scored on the same cases.

The resampling engine is the audit's own (:mod:`xai_audit.fairness.bootstrap`): every group of
each model gets a :class:`~xai_audit.fairness.bootstrap.GroupPlan`, and the two models are
handed to :func:`~xai_audit.fairness.bootstrap.bootstrap_replicates` as two "labels" of one
call. That function draws one matrix of resampling weights per chunk (one weight per patient,
or per image without patient ids) and applies it to every label, so in resample ``b`` both
models see exactly the same patients: the difference ``new - reference`` of resample ``b`` is a
paired replicate, and its percentile interval is the paired interval. Nothing here recomputes a
metric by hand; only the per-case means of explanation measures (shortcut share, localisation)
are weighted means written here, drawn from the same resampling stream.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..fairness._common import METRIC_INDEX, METRICS, PROBABILITY_METRICS
from ..fairness.bootstrap import (
    block_size,
    bootstrap_replicates,
    identity_metrics,
    make_plan,
    percentile_interval,
    resample_weights,
)
from ..fairness.inputs import Group
from ..fairness.metrics import group_status

#: Metrics compared by default: discrimination, the four rates at the operating point, and
#: calibration (Brier score and ECE).
COMPARE_METRICS: tuple[str, ...] = (
    "auroc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "brier",
    "ece",
)


@dataclass
class PairedMetrics:
    """Point estimates and paired replicates of every metric of every group, both models.

    Attributes
    ----------
    point : array (2, G, M)
        Index 0 reference, 1 new; metrics in :data:`~xai_audit.fairness._common.METRICS`
        order; NaN where a metric is undefined for the group (or the group is too small).
    replicates : array (n_boot, 2, G, M) or None
        Bootstrap replicates from shared resamples (None when ``n_boot == 0``).
    status : list of str
        Per group: ``ok``, ``small``, ``one_class`` or ``constant_prediction`` (the worse of
        the two models).
    counts : array (G, 2)
        Cases and positive cases per group.
    """

    point: np.ndarray
    replicates: np.ndarray | None
    status: list[str]
    counts: np.ndarray


_SEVERITY = ("ok", "constant_prediction", "one_class", "small")


def paired_metrics(
    y: np.ndarray,
    scores: Sequence[np.ndarray],
    thresholds: Sequence[float],
    units: np.ndarray,
    n_units: int,
    groups: Sequence[Group],
    *,
    min_group_size: int = 30,
    n_boot: int = 1000,
    seed: int | None = 0,
    n_bins: int = 10,
) -> PairedMetrics:
    """Every metric of every group for two models, with paired bootstrap replicates.

    Parameters
    ----------
    y : array (N,)
        Labels (0/1), the same for both models.
    scores : pair of arrays (N,)
        Reference and new scores, aligned case by case.
    thresholds : pair of float
        Each model's operating threshold (``score >= threshold`` is positive).
    units, n_units :
        Resampling unit of each case (patients; see
        :func:`xai_audit.fairness.inputs.as_clusters`) and their number.
    groups : list of Group
        Group 0 must be the whole data set.
    min_group_size : int
        Smaller groups get no metrics (as in the audit).
    n_boot, seed :
        Resamples and seed (0 resamples: no replicates).
    n_bins : int
        Calibration bins for the ECE.

    Returns
    -------
    PairedMetrics
    """
    y = np.asarray(y).astype(np.int64)
    plans: list[list[object]] = [[], []]
    undefined: list[list[frozenset[str]]] = [[], []]
    status: list[str] = []
    counts = np.zeros((len(groups), 2), dtype=np.int64)
    for gi, g in enumerate(groups):
        yg = y[g.rows]
        counts[gi] = (yg.size, int(yg.sum()))
        worst = "ok"
        for k in (0, 1):
            sg = np.asarray(scores[k], dtype=np.float64)[g.rows]
            st, _why, undef = group_status(
                yg.size, int(yg.sum()), int((sg >= thresholds[k]).sum()), min_group_size
            )
            if not (sg.size and sg.min() >= 0.0 and sg.max() <= 1.0):
                undef = undef | PROBABILITY_METRICS
            undefined[k].append(undef)
            plans[k].append(
                make_plan(yg, sg, units[g.rows], thresholds[k], n_bins) if st != "small" else None
            )
            worst = max(worst, st, key=_SEVERITY.index)
        status.append(worst)
    point = identity_metrics(plans, n_units)  # type: ignore[arg-type]
    mask = np.zeros_like(point, dtype=bool)
    for k in (0, 1):
        for gi, undef in enumerate(undefined[k]):
            for m in undef:
                mask[k, gi, METRIC_INDEX[m]] = True
    point[mask] = np.nan
    reps = None
    if n_boot > 0:
        reps = bootstrap_replicates(plans, n_units, n_boot, seed)  # type: ignore[arg-type]
        reps[:, mask] = np.nan
    return PairedMetrics(point=point, replicates=reps, status=status, counts=counts)


def diff_interval(pm: PairedMetrics, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point difference ``new - reference`` and its paired percentile interval, (G, M) each."""
    diff = pm.point[1] - pm.point[0]
    if pm.replicates is None:
        nan = np.full_like(diff, np.nan)
        return diff, nan, nan
    lo, hi = percentile_interval(pm.replicates[:, 1] - pm.replicates[:, 0], ci)
    return diff, lo, hi


def gap_change_interval(
    pm: PairedMetrics, ci: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Change of each group's gap to overall, ``(new_g - new_all) - (ref_g - ref_all)``.

    Returns
    -------
    ref_gap, new_gap, change, ci_low, ci_high : arrays (G, M)
        Group 0 (overall) has gap 0 by definition.
    """
    gaps = pm.point - pm.point[:, :1, :]
    change = gaps[1] - gaps[0]
    if pm.replicates is None:
        nan = np.full_like(change, np.nan)
        return gaps[0], gaps[1], change, nan, nan
    r = pm.replicates
    rg = r - r[:, :, :1, :]
    lo, hi = percentile_interval(rg[:, 1] - rg[:, 0], ci)
    return gaps[0], gaps[1], change, lo, hi


def paired_mean_difference(
    reference: np.ndarray,
    new: np.ndarray,
    units: np.ndarray,
    n_units: int,
    *,
    n_boot: int = 1000,
    seed: int | None = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Mean of a per-case measure for both models and the paired interval of their difference.

    Only cases with a finite value for both models count. Resamples are the same multinomial
    patient weights as the metric bootstrap (:func:`~xai_audit.fairness.bootstrap.resample_weights`
    with the same seed), so this interval is paired with the metric intervals too.
    Hand-written: a weighted mean per resample is one matrix-vector product.

    Returns
    -------
    dict
        ``reference, new, diff, ci_low, ci_high, n`` (NaN where no case has both values).
    """
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(new, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    n = int(both.sum())
    out = {"reference": np.nan, "new": np.nan, "diff": np.nan, "ci_low": np.nan,
           "ci_high": np.nan, "n": n}  # fmt: skip
    if n == 0:
        return out
    a, b, u = a[both], b[both], np.asarray(units)[both]
    out.update(reference=float(a.mean()), new=float(b.mean()), diff=float((b - a).mean()))
    if n_boot <= 0:
        return out
    seed = 0 if seed is None else int(seed)
    d = b - a
    reps = np.empty(n_boot)
    size = block_size(n_units)
    for k in range(-(-n_boot // size)):
        w = resample_weights(n_units, k, n_boot, seed)[:, u]
        tot = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[k * size : k * size + w.shape[0]] = (w @ d) / np.where(tot > 0, tot, np.nan)
    lo, hi = percentile_interval(reps[:, None], ci)
    out.update(ci_low=float(lo[0]), ci_high=float(hi[0]))
    return out


def metric_index(metrics: Sequence[str]) -> list[int]:
    """Positions of ``metrics`` in the bootstrap arrays (clear error for unknown names)."""
    unknown = [m for m in metrics if m not in METRIC_INDEX]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {list(METRICS)}.")
    return [METRIC_INDEX[m] for m in metrics]


def simultaneous_interval(
    pm: PairedMetrics, metric_idx: Sequence[int], ci: float = 0.95, *, gaps: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """Simultaneous (max-t) intervals of the differences over every group and given metric.

    With dozens of groups and several metrics, some per-row 95% intervals exclude 0 by chance
    alone; listing those as "changes" would be false flags. Here the differences are
    studentised by their bootstrap standard deviation and the ``ci`` quantile of the largest
    ``|t|`` over all rows in each resample gives one critical value ``c``, so that all rows'
    intervals ``diff +- c * sd`` hold together with probability about ``ci``. Hand-written:
    the same max-t construction the audit uses for its best-vs-worst gap, on paired replicates.
    ``gaps=True``: the same for the change of each group's gap to overall.

    Returns
    -------
    low, high : arrays (G, len(metric_idx))
        NaN where a row has too few defined replicates.
    critical : float
        The critical value ``c`` (NaN without replicates).
    """
    idx = list(metric_idx)
    point = pm.point[:, :, idx]
    if gaps:
        point = point - point[:, :1, :]
    point = point[1] - point[0]
    nan = np.full(point.shape, np.nan)
    if pm.replicates is None or pm.replicates.shape[0] < 2:
        return nan, nan.copy(), float("nan")
    r = pm.replicates[:, :, :, idx]
    if gaps:
        r = r - r[:, :, :1, :]
    return _max_t(r[:, 1] - r[:, 0], point, ci)


def _max_t(d: np.ndarray, point: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray, float]:
    finite = np.isfinite(d)
    enough = (finite.mean(axis=0) >= 0.5) & np.isfinite(point)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        sd = np.nanstd(d, axis=0)
        live = enough & (sd > 0)
        t = np.abs(d - point) / np.where(live, sd, np.nan)
        t[:, ~live] = np.nan
        maxt = np.nanmax(t.reshape(t.shape[0], -1), axis=1) if live.any() else np.zeros(0)
    maxt = maxt[np.isfinite(maxt)]
    crit = float(np.quantile(maxt, ci)) if maxt.size else 0.0
    low = np.where(enough, point - crit * np.where(live, sd, 0.0), np.nan)
    high = np.where(enough, point + crit * np.where(live, sd, 0.0), np.nan)
    return low, high, crit
