"""Subgroup point metrics recomputed live for the dashboard's threshold slider.

One ``np.bincount`` per confusion cell over precomputed group codes: all groups, all
threshold-dependent metrics in well under a millisecond for thousands of cases. The
definitions are those of :mod:`xai_audit.fairness` (``score >= threshold`` is positive;
undefined ratios are NaN); threshold-free metrics (AUROC, Brier) are computed once per
grouping. Bootstrap confidence intervals are *not* recomputed here (see
:func:`bootstrap_cis`, run on request).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xai_audit.fairness.inputs import group_keys
from xai_audit.fairness.metrics import auroc

#: Metrics offered in the dashboard, in the fairness module's naming.
THRESHOLD_METRICS = (
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "fpr",
    "fnr",
    "accuracy",
    "balanced_accuracy",
    "selection_rate",
)
FREE_METRICS = ("auroc", "prevalence", "brier")
METRICS = THRESHOLD_METRICS + FREE_METRICS
DISPLAY = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "fpr": "False positive rate",
    "fnr": "False negative rate",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "selection_rate": "Selection rate",
    "auroc": "AUROC",
    "prevalence": "Prevalence",
    "brier": "Brier score",
}
# Naming of intersections and of the overall row, as in xai_audit.fairness.
INTERSECTION_SEP = " × "
GROUP_SEP = " | "
OVERALL = ("overall", "all")
MISSING = "missing"


@dataclass(frozen=True)
class Grouping:
    """Cases assigned to the groups of one attribute or one intersection of attributes.

    Attributes
    ----------
    attribute : str
        Attribute name, or names joined by ``" × "`` for an intersection.
    columns : tuple of str
        The attribute columns involved.
    names : list of str
        Group names (values joined by ``" | "`` for intersections).
    values : list of tuple
        The attribute values of each group (for filtering the explorer).
    codes : numpy.ndarray
        Group index of every case.
    """

    attribute: str
    columns: tuple[str, ...]
    names: list[str]
    values: list[tuple[str, ...]]
    codes: np.ndarray

    @property
    def n_groups(self) -> int:
        """Number of groups."""
        return len(self.names)


def make_grouping(table: pd.DataFrame, columns: Sequence[str]) -> Grouping:
    """Group cases by one attribute or the intersection of several (missing -> "missing")."""
    columns = tuple(columns)
    if not columns:
        n = len(table)
        return Grouping(OVERALL[0], (), [OVERALL[1]], [()], np.zeros(n, dtype=np.int64))
    # Group names follow the one rule of xai_audit.fairness.inputs.normalise_attribute.
    keys = group_keys(table[columns[0]])
    for col in columns[1:]:
        keys = keys + GROUP_SEP + group_keys(table[col])
    names, codes = np.unique(keys.astype(str), return_inverse=True)
    values = [tuple(name.split(GROUP_SEP)) if len(columns) > 1 else (name,) for name in names]
    return Grouping(
        INTERSECTION_SEP.join(columns),
        columns,
        [str(n) for n in names],
        values,
        codes.astype(np.int64),
    )


class GroupMetrics:
    """Point metrics of every group of a :class:`Grouping`, at any threshold.

    Parameters
    ----------
    grouping : Grouping
    y_true, y_score : arrays of shape (N,)
        Labels (0/1; NaN rows are ignored) and positive-class probabilities.
    """

    def __init__(self, grouping: Grouping, y_true: np.ndarray, y_score: np.ndarray) -> None:
        y = np.asarray(y_true, dtype=np.float64)
        s = np.asarray(y_score, dtype=np.float64)
        known = np.isfinite(y)
        self.grouping = grouping
        self._codes = grouping.codes[known]
        self._y = y[known].astype(np.int8)
        self._s = s[known]
        g = grouping.n_groups
        self.n = np.bincount(self._codes, minlength=g).astype(np.float64)
        self.n_pos = np.bincount(self._codes, weights=self._y, minlength=g)
        sq = (self._s - self._y) ** 2
        free = {
            "prevalence": _div(self.n_pos, self.n),
            "brier": _div(np.bincount(self._codes, weights=sq, minlength=g), self.n),
            "auroc": np.array(
                [auroc(self._y[self._codes == k], self._s[self._codes == k]) for k in range(g)]
            ),
        }
        self._free = free

    def at(self, threshold: float) -> dict[str, np.ndarray]:
        """Every metric of every group at ``threshold`` (``score >= threshold`` positive)."""
        g = self.grouping.n_groups
        pred = (self._s >= threshold).astype(np.float64)
        tp = np.bincount(self._codes, weights=pred * self._y, minlength=g)
        pp = np.bincount(self._codes, weights=pred, minlength=g)
        fp = pp - tp
        fn = self.n_pos - tp
        n_neg = self.n - self.n_pos
        tn = n_neg - fp
        sens, spec = _div(tp, self.n_pos), _div(tn, n_neg)
        out = {
            "sensitivity": sens,
            "specificity": spec,
            "ppv": _div(tp, pp),
            "npv": _div(tn, tn + fn),
            "fpr": _div(fp, n_neg),
            "fnr": _div(fn, self.n_pos),
            "accuracy": _div(tp + tn, self.n),
            "balanced_accuracy": 0.5 * (sens + spec),
            "selection_rate": _div(pp, self.n),
            "n_pred_pos": pp,
        }
        out.update(self._free)
        return out


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def status(n: int, n_pos: int, n_pred_pos: int, min_group_size: int) -> tuple[str, str]:
    """``(status, reason)`` with the fairness module's categories, most severe first."""
    if n < min_group_size:
        return "small", f"only {n} cases (minimum {min_group_size}): interpret with caution"
    if n_pos == 0:
        return "one_class", "no positive cases: sensitivity, FNR and AUROC undefined"
    if n_pos == n:
        return "one_class", "no negative cases: specificity, FPR and AUROC undefined"
    if n_pred_pos == 0:
        return "constant_prediction", "every case predicted negative: PPV undefined"
    if n_pred_pos == n:
        return "constant_prediction", "every case predicted positive: NPV undefined"
    return "ok", ""


def bootstrap_cis(
    grouping: Grouping,
    y_true: np.ndarray,
    y_score: np.ndarray,
    threshold: float,
    *,
    patient_ids: np.ndarray | None = None,
    n_boot: int = 200,
    ci: float = 0.95,
    random_state: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Percentile bootstrap CIs of every metric of every group, at one threshold.

    Uses the fairness module's vectorised, patient-clustered bootstrap, so the intervals
    match the audit's when the settings match.

    Returns
    -------
    dict
        Metric -> ``(low, high)`` arrays, one entry per group.
    """
    from xai_audit.fairness import METRICS as FAIRNESS_METRICS
    from xai_audit.fairness import bootstrap_replicates, make_plan, percentile_interval

    index = {m: i for i, m in enumerate(FAIRNESS_METRICS)}

    y = np.asarray(y_true, dtype=np.float64)
    known = np.isfinite(y)
    y, s = y[known].astype(np.int8), np.asarray(y_score, np.float64)[known]
    codes = grouping.codes[known]
    if patient_ids is not None:
        pids = pd.Series(np.asarray(patient_ids, dtype=object)[known])
        # Images without a patient id are their own unit.
        pids = pids.where(pids.notna(), pd.Series([f"__row{i}" for i in range(len(pids))]))
        _, units = np.unique(pids.astype(str).to_numpy(), return_inverse=True)
    else:
        units = np.arange(len(y))
    plans = [
        make_plan(y[codes == k], s[codes == k], units[codes == k], threshold)
        if (codes == k).any()
        else None
        for k in range(grouping.n_groups)
    ]
    reps = bootstrap_replicates(
        [plans], int(units.max()) + 1, n_boot=n_boot, random_state=random_state
    )
    lo, hi = percentile_interval(reps, ci)
    return {m: (lo[0, :, index[m]], hi[0, :, index[m]]) for m in METRICS if m in index}
