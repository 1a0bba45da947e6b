"""Vectorised, grouped, patient-clustered percentile bootstrap of all subgroup metrics.

Hand-written on purpose: no library does a grouped, patient-clustered bootstrap fast. fairlearn's
``MetricFrame(n_boot=...)`` resamples the whole frame and recomputes every metric of every group
with scikit-learn, once per resample, and keeps every resampled frame in memory.

Here a resample is a vector of non-negative integer weights, one per resampling unit (patient,
or row when no patient id is given): how often the unit was drawn in ``n_units`` draws with
replacement (a multinomial draw, exactly the classical bootstrap; all images of a patient share
the patient's weight, so they move together). A chunk of ``B`` resamples is a ``(B, n_units)``
matrix, and every metric of a group is computed for all ``B`` resamples at once from weighted
sums over the group's cases, which are sorted by score once up front:

* confusion counts: cumulative weights of positives/negatives below the threshold;
* AUROC: the Mann-Whitney statistic, ``sum_i w_i * (W_neg(s < s_i) + W_neg(s == s_i) / 2)`` over
  positives ``i`` divided by ``W_pos * W_neg`` (ties count one half, as in roc_auc_score);
* AUPRC: average precision, ``sum_i w_i * precision(s_i) / W_pos`` over positives, where
  ``precision(t)`` uses all cases with ``s >= t`` (ties grouped, as average_precision_score);
* Brier score: a weighted mean of squared errors (matrix-vector product);
* ECE: per equal-width bin ``|sum w*s - sum w*y|`` (contiguous slices of the sorted scores).

With all weights equal to one this reproduces the scikit-learn point estimates up to
floating-point rounding (checked at run time and in the tests). Resamples are processed in
chunks sized from a memory budget, so memory does not grow with the number of resamples beyond
the ``(n_boot, labels, groups, metrics)`` array of results. Each resample draws from its own
seeded generator (seed ``random_state``, resample index), so results do not depend on the chunk
size or on ``n_jobs``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._common import METRIC_INDEX, METRICS
from .calibration import bin_edges

_F = np.float64


@dataclass(frozen=True)
class GroupPlan:
    """Everything about one (label, group) that does not change between resamples.

    Positives and negatives are stored separately, each sorted by score (ascending).
    """

    pos_unit: np.ndarray  # resampling unit of each positive case
    neg_unit: np.ndarray
    s_pos: np.ndarray  # sorted scores
    s_neg: np.ndarray
    sq_pos: np.ndarray  # squared error of each case: (1 - s)^2 for positives, s^2 for negatives
    sq_neg: np.ndarray
    lo: np.ndarray  # per positive: number of negatives with a strictly lower score
    hi: np.ndarray | None  # per positive: negatives with lower or equal score; None if no ties
    lo_pos: (
        np.ndarray | None
    )  # per positive: positives with a strictly lower score; None if no ties
    k_pos: int  # positives below the threshold (predicted negative)
    k_neg: int
    bins_pos: np.ndarray  # start/stop of each calibration bin within the sorted positives
    bins_neg: np.ndarray

    @property
    def n(self) -> int:
        """Number of cases in the group."""
        return int(self.pos_unit.size + self.neg_unit.size)

    @property
    def n_pos(self) -> int:
        """Number of positive cases in the group."""
        return int(self.pos_unit.size)


def make_plan(
    y: np.ndarray,
    s: np.ndarray,
    units: np.ndarray,
    threshold: float,
    n_bins: int = 10,
) -> GroupPlan:
    """Prepare one group for the bootstrap.

    Parameters
    ----------
    y, s, units : arrays of shape (n,)
        Labels (0/1), scores and resampling unit of the group's cases.
    threshold : float
        Operating threshold (``s >= threshold`` is a positive prediction).
    n_bins : int
        Calibration bins.

    Returns
    -------
    GroupPlan
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=_F)
    units = np.asarray(units, dtype=np.int64)
    order_p = np.argsort(s[y], kind="stable")
    order_n = np.argsort(s[~y], kind="stable")
    s_pos, s_neg = s[y][order_p], s[~y][order_n]
    lo = np.searchsorted(s_neg, s_pos, side="left")
    hi = np.searchsorted(s_neg, s_pos, side="right")
    lo_pos = np.searchsorted(s_pos, s_pos, side="left")
    inner = bin_edges(n_bins)[1:-1]
    # calibration_curve puts a score on an inner edge into the lower bin: the bin of s is
    # searchsorted(inner, s, "left"), so bin b holds the sorted scores in [start_b, stop_b)
    # with start_b = searchsorted(s_sorted, inner[b-1], "right").
    bins_pos = np.concatenate(([0], np.searchsorted(s_pos, inner, side="right"), [s_pos.size]))
    bins_neg = np.concatenate(([0], np.searchsorted(s_neg, inner, side="right"), [s_neg.size]))
    return GroupPlan(
        pos_unit=units[y][order_p],
        neg_unit=units[~y][order_n],
        s_pos=s_pos,
        s_neg=s_neg,
        sq_pos=(1.0 - s_pos) ** 2,
        sq_neg=s_neg**2,
        lo=lo,
        hi=hi if np.any(hi != lo) else None,
        lo_pos=lo_pos if np.any(lo_pos != np.arange(s_pos.size)) else None,
        k_pos=int(np.searchsorted(s_pos, threshold, side="left")),
        k_neg=int(np.searchsorted(s_neg, threshold, side="left")),
        bins_pos=bins_pos,
        bins_neg=bins_neg,
    )


def _cumsum0(w: np.ndarray) -> np.ndarray:
    """Cumulative sum along axis 1 with a leading zero column: ``out[:, k] = w[:, :k].sum(1)``."""
    out = np.empty((w.shape[0], w.shape[1] + 1), dtype=w.dtype)
    out[:, 0] = 0.0
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


def plan_metrics(plan: GroupPlan, weights: np.ndarray) -> np.ndarray:
    """All metrics of one group for a chunk of resamples.

    Parameters
    ----------
    plan : GroupPlan
    weights : array of shape (B, n_units)
        Resampling weight of every unit in each of ``B`` resamples; float64, or float32 for
        speed (integer counts and their sums stay exact below 2**24; the weighted sums of
        scores carry float32 rounding, about 1e-6 relative, irrelevant for intervals).

    Returns
    -------
    array of shape (len(METRICS), B)
    """
    dt = weights.dtype
    w_pos = np.take(weights, plan.pos_unit, axis=1)
    w_neg = np.take(weights, plan.neg_unit, axis=1)
    cum_pos = _cumsum0(w_pos)
    cum_neg = _cumsum0(w_neg)
    p = cum_pos[:, -1]
    q = cum_neg[:, -1]
    total = p + q
    fn = cum_pos[:, plan.k_pos]
    tn = cum_neg[:, plan.k_neg]
    tp = p - fn
    fp = q - tn

    # AUROC (Mann-Whitney with half-counted ties) and average precision share `below`.
    below = np.take(cum_neg, plan.lo, axis=1)
    auc_num = np.einsum("ij,ij->i", w_pos, below)
    if plan.hi is not None:
        auc_num += 0.5 * np.einsum("ij,ij->i", w_pos, np.take(cum_neg, plan.hi, axis=1) - below)
    # Without ties among positives, "positives strictly below positive i" is just i.
    cum_below = cum_pos[:, :-1] if plan.lo_pos is None else np.take(cum_pos, plan.lo_pos, axis=1)
    tp_at = p[:, None] - cum_below
    fp_at = q[:, None] - below
    den = tp_at + fp_at
    prec = np.divide(tp_at, den, out=np.zeros_like(den), where=den > 0)
    ap_num = np.einsum("ij,ij->i", w_pos, prec)

    s_pos, s_neg = plan.s_pos.astype(dt, copy=False), plan.s_neg.astype(dt, copy=False)
    sq = w_pos @ plan.sq_pos.astype(dt, copy=False) + w_neg @ plan.sq_neg.astype(dt, copy=False)
    gap = np.zeros_like(total)
    for b in range(plan.bins_pos.size - 1):
        a_p, z_p = plan.bins_pos[b], plan.bins_pos[b + 1]
        a_n, z_n = plan.bins_neg[b], plan.bins_neg[b + 1]
        if z_p == a_p and z_n == a_n:
            continue
        sum_ws = w_pos[:, a_p:z_p] @ s_pos[a_p:z_p] + w_neg[:, a_n:z_n] @ s_neg[a_n:z_n]
        gap += np.abs(sum_ws - (cum_pos[:, z_p] - cum_pos[:, a_p]))

    out = np.empty((len(METRICS), weights.shape[0]), dtype=_F)
    # Ratios in float64 whatever the weights' precision.
    p, q, tp, fp, tn, fn, total = (x.astype(_F) for x in (p, q, tp, fp, tn, fn, total))
    auc_num, ap_num, sq, gap = (x.astype(_F) for x in (auc_num, ap_num, sq, gap))
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / p
        spec = tn / q
        values = {
            "prevalence": p / total,
            "auroc": auc_num / (p * q),
            "auprc": ap_num / p,
            "sensitivity": sens,
            "specificity": spec,
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "fpr": fp / q,
            "fnr": fn / p,
            "accuracy": (tp + tn) / total,
            "balanced_accuracy": 0.5 * (sens + spec),
            "selection_rate": (tp + fp) / total,
            "brier": sq / total,
            "ece": gap / total,
        }
    for name, v in values.items():
        out[METRIC_INDEX[name]] = v
    return out


def block_size(n_units: int) -> int:
    """Resamples drawn together from one generator: at most about 4M draws at a time."""
    return int(max(1, min(64, 2**22 // max(n_units, 1))))


def resample_weights(
    n_units: int, block: int, n_boot: int, seed: int, dtype: type = np.float64
) -> np.ndarray:
    """Multinomial resampling weights of one block of resamples.

    Block ``k`` holds resamples ``k * block_size(n_units)`` onwards (fewer in the last block);
    it draws ``n_units`` units with replacement per resample from its own generator, seeded by
    ``(seed, k)``; the weight of a unit is how often it was drawn. Blocks, not chunks, fix the
    random stream, so results do not depend on the memory budget or on ``n_jobs``.

    Returns
    -------
    array of shape (resamples in the block, n_units)
    """
    size = block_size(n_units)
    start = block * size
    n = min(size, n_boot - start)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
    draws = rng.integers(0, n_units, size=(n, n_units))
    draws += (np.arange(n, dtype=np.int64) * n_units)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n * n_units)
    return counts.reshape(n, n_units).astype(dtype)


def chunk_size(
    plans: Sequence[Sequence[GroupPlan]], n_units: int, n_boot: int, max_bytes: float
) -> int:
    """Resamples per chunk so that one chunk's temporaries stay within ``max_bytes``.

    Rounded to whole blocks of :func:`block_size` (at least one block).
    """
    per_resample = 2 * n_units  # weights, draws
    for label_plans in plans:
        for plan in label_plans:
            # gathered and cumulated weights of all cases, plus a few positive-sized temporaries
            per_resample = max(per_resample, n_units + 2 * plan.n + 6 * plan.n_pos)
    block = block_size(n_units)
    fits = int(max_bytes // (8 * per_resample))
    return int(max(block, min(n_boot, fits) // block * block))


def identity_metrics(plans: Sequence[Sequence[GroupPlan | None]], n_units: int) -> np.ndarray:
    """Metrics with every unit weighted once (the original sample): shape (L, G, M).

    This is "resample 0": it must equal the scikit-learn point estimates.
    """
    ones = np.ones((1, n_units), dtype=_F)
    nan = np.full(len(METRICS), np.nan)
    return np.array(
        [
            [nan if p is None else plan_metrics(p, ones)[:, 0] for p in label_plans]
            for label_plans in plans
        ]
    )


def bootstrap_replicates(
    plans: Sequence[Sequence[GroupPlan]],
    n_units: int,
    n_boot: int = 1000,
    random_state: int | None = 0,
    *,
    max_bytes: float = 96 * 2**20,
    n_jobs: int | None = None,
    dtype: type = np.float32,
) -> np.ndarray:
    """Bootstrap replicates of every metric of every group of every label.

    Parameters
    ----------
    plans : list (labels) of list (groups) of GroupPlan
        Plans whose units index ``range(n_units)``. Groups that should not be bootstrapped are
        passed as ``None`` and come back as NaN.
    n_units : int
        Number of resampling units (patients, or rows).
    n_boot : int
        Number of resamples.
    random_state : int or None
        Seed; ``None`` draws fresh entropy.
    max_bytes : float
        Memory budget for one chunk's temporaries (per worker).
    n_jobs : int or None
        Worker threads over chunks (numpy releases the GIL in the heavy kernels).
    dtype : type
        Precision of the weights: float32 (default; half the memory traffic) or float64.
        float32 is used only while the counts stay exact (fewer than 2**24 units).

    Returns
    -------
    array of shape (n_boot, L, G, len(METRICS))
    """
    seed = (
        int(np.random.SeedSequence().entropy % 2**63) if random_state is None else int(random_state)
    )
    n_labels = len(plans)
    n_groups = max((len(lp) for lp in plans), default=0)
    reps = np.full((n_boot, n_labels, n_groups, len(METRICS)), np.nan, dtype=_F)
    live = [[p for p in lp if p is not None] for lp in plans]
    dtype = np.float64 if n_units >= 2**24 else dtype
    itemsize = np.dtype(dtype).itemsize
    size = chunk_size(live, n_units, n_boot, max_bytes * 8 / itemsize)
    block = block_size(n_units)
    starts = list(range(0, n_boot, size))

    def run(start: int) -> None:
        stop = min(start + size, n_boot)
        weights = np.concatenate(
            [
                resample_weights(n_units, k, n_boot, seed, dtype)
                for k in range(start // block, -(-stop // block))
            ]
        )
        for li, label_plans in enumerate(plans):
            for gi, plan in enumerate(label_plans):
                if plan is not None:
                    reps[start:stop, li, gi, :] = plan_metrics(plan, weights).T

    workers = (
        1
        if n_jobs is None
        else (n_jobs if n_jobs > 0 else max(1, ((os.cpu_count() or 1) + 1 + n_jobs)))
    )
    if workers <= 1 or len(starts) == 1:
        for start in starts:
            run(start)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, starts))
    return reps


def nan_quantiles(x: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Quantiles along axis 0 ignoring NaN, numpy's default ("linear") definition.

    Equal to ``np.nanquantile(x, q, axis=0)`` but vectorised: numpy falls back to a Python
    loop over columns (``apply_along_axis``) as soon as one NaN is present, which made the
    interval step slower than the bootstrap itself.

    Returns
    -------
    array of shape ``(len(q),) + x.shape[1:]``; NaN where a column has no finite value.
    """
    x = np.asarray(x, dtype=_F)
    srt = np.sort(x, axis=0)  # NaN sort to the end
    n = (~np.isnan(x)).sum(axis=0)
    out = np.full((len(q),) + x.shape[1:], np.nan)
    has = n > 0
    top = np.maximum(n - 1, 0)
    for i, qi in enumerate(q):
        pos = qi * top
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, top)
        frac = pos - lo
        a = np.take_along_axis(srt, lo[None], axis=0)[0]
        b = np.take_along_axis(srt, hi[None], axis=0)[0]
        # numpy's lerp: a + (b - a) * frac, computed from the nearer end
        val = np.where(frac >= 0.5, b - (b - a) * (1 - frac), a + (b - a) * frac)
        out[i] = np.where(has, val, np.nan)
    return out


def percentile_interval(replicates: np.ndarray, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along axis 0, ignoring NaN replicates.

    A replicate is NaN when the metric is undefined in that resample (e.g. no positives drawn).
    Where more than half of the replicates are NaN the interval is NaN.
    """
    alpha = (1.0 - ci) / 2.0
    finite = np.isfinite(replicates)
    lo, hi = nan_quantiles(replicates, [alpha, 1.0 - alpha])
    enough = (
        finite.mean(axis=0) >= 0.5 if replicates.shape[0] else np.zeros(replicates.shape[1:], bool)
    )
    return np.where(enough, lo, np.nan), np.where(enough, hi, np.nan)
