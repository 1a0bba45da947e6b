"""Point estimates per group, from scikit-learn's metrics inside fairlearn's MetricFrame.

Every metric is a function ``f(y_true, y_score)`` with the operating threshold bound in, so one
MetricFrame (``y_pred`` = scores) computes threshold-free (AUROC, AUPRC, Brier, ECE) and
threshold-based metrics (from scikit-learn's confusion matrix) together. Metrics that are undefined for a group
(one class only, no predicted positives, ...) return NaN instead of raising or warning; the
reason is attached separately by :func:`group_status`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
)

from ._common import METRICS
from .calibration import expected_calibration_error


def _both_classes(y_true: np.ndarray) -> bool:
    y = np.asarray(y_true)
    return bool(y.size) and bool(y.min() != y.max())


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC via scikit-learn, NaN when a group has only one class."""
    return float(roc_auc_score(y_true, y_score)) if _both_classes(y_true) else float("nan")


def _auprc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    # AP is trivially 1 without negatives and undefined without positives: NaN for both.
    return (
        float(average_precision_score(y_true, y_score)) if _both_classes(y_true) else float("nan")
    )


def _brier(y_true: np.ndarray, y_score: np.ndarray) -> float:
    if not len(y_true) or not (np.min(y_score) >= 0.0 and np.max(y_score) <= 1.0):
        return float("nan")
    return float(brier_score_loss(y_true, y_score, labels=[0, 1]))


def _confusion(y_true: np.ndarray, y_score: np.ndarray, *, threshold: float) -> np.ndarray:
    # labels fixed to (0, 1) so that one-class groups still give a 2 x 2 matrix.
    return confusion_matrix(y_true, np.asarray(y_score) >= threshold, labels=[0, 1])


def all_metrics(
    y_true: np.ndarray, y_score: np.ndarray, *, threshold: float, n_bins: int = 10
) -> np.ndarray:
    """Every metric of ``METRICS`` for one set of cases, as one vector.

    Threshold-free metrics come straight from scikit-learn (``roc_auc_score``,
    ``average_precision_score``, ``brier_score_loss``) plus the ECE; all threshold-based ones
    are derived from one scikit-learn ``confusion_matrix`` (see :func:`rates_from_confusion`),
    which gives the same numbers as ``recall_score``, ``precision_score``, ... at a fraction of
    the cost. One vector-valued metric keeps fairlearn's per-call overhead to one call per group.

    Parameters
    ----------
    y_true, y_score : arrays (n,)
    threshold : float
        Operating threshold; a case is predicted positive when ``score >= threshold``.
    n_bins : int
        Number of equal-width bins for the expected calibration error.

    Returns
    -------
    array (len(METRICS),)
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    values = rates_from_confusion(_confusion(y_true, y_score, threshold=threshold))
    values["auroc"] = auroc(y_true, y_score)
    values["auprc"] = _auprc(y_true, y_score)
    values["brier"] = _brier(y_true, y_score)
    values["ece"] = (
        expected_calibration_error(y_true, y_score, n_bins) if len(y_true) else float("nan")
    )
    return np.array([values[m] for m in METRICS], dtype=np.float64)


def metric_functions(threshold: float, n_bins: int = 10) -> dict[str, Callable[..., np.ndarray]]:
    """The metric callables handed to :class:`fairlearn.metrics.MetricFrame`.

    A single vector-valued metric ``"values"`` (see :func:`all_metrics`).
    """
    return {"values": partial(all_metrics, threshold=threshold, n_bins=n_bins)}


def _div(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def rates_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Confusion-matrix based metrics; NaN where the denominator is zero.

    Parameters
    ----------
    cm : array (2, 2)
        ``[[tn, fp], [fn, tp]]`` as returned by ``sklearn.metrics.confusion_matrix``.

    Returns
    -------
    dict
        prevalence, sensitivity (TPR, = recall_score), specificity (TNR), ppv
        (= precision_score), npv, fpr, fnr, accuracy (= accuracy_score), balanced_accuracy
        (= balanced_accuracy_score when both classes are present), selection_rate.
    """
    (tn, fp), (fn, tp) = np.asarray(cm, dtype=np.float64)
    n = tn + fp + fn + tp
    sens, spec = _div(tp, tp + fn), _div(tn, tn + fp)
    return {
        "prevalence": _div(tp + fn, n),
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "fpr": _div(fp, fp + tn),
        "fnr": _div(fn, fn + tp),
        "accuracy": _div(tp + tn, n),
        "balanced_accuracy": 0.5 * (sens + spec),
        "selection_rate": _div(tp + fp, n),
    }


def metric_frame(
    y_true: np.ndarray,
    y_score: np.ndarray,
    sensitive_features: pd.DataFrame,
    threshold: float,
    n_bins: int = 10,
) -> MetricFrame:
    """Build the MetricFrame for one label and one attribute (or intersection)."""
    return MetricFrame(
        metrics=metric_functions(threshold, n_bins),
        y_true=np.asarray(y_true),
        y_pred=np.asarray(y_score),
        sensitive_features=sensitive_features,
    )


def frame_values(row: pd.Series) -> np.ndarray:
    """All of ``METRICS`` (in order) from one row of a MetricFrame (overall or one group)."""
    return np.asarray(row["values"], dtype=np.float64)


def group_status(
    n: int, n_pos: int, n_pred_pos: int, min_group_size: int
) -> tuple[str, str, frozenset[str]]:
    """Classify a group and say which metrics are undefined for it and why.

    Parameters
    ----------
    n, n_pos, n_pred_pos : int
        Group size, number of positive cases, number predicted positive.
    min_group_size : int
        Groups smaller than this get no metrics at all.

    Returns
    -------
    status : str
        ``"small"``, ``"one_class"``, ``"constant_prediction"`` or ``"ok"`` (most severe first).
    reason : str
        Plain-language explanation; empty for ``"ok"``.
    undefined : frozenset of str
        Metrics set to NaN for this group.
    """
    if n < min_group_size:
        return (
            "small",
            f"only {n} cases (minimum {min_group_size}): metrics not computed",
            frozenset(METRICS),
        )
    reasons: list[str] = []
    undefined: set[str] = set()
    status = "ok"
    if n_pos == 0 or n_pos == n:
        status = "one_class"
        if n_pos == 0:
            reasons.append("no positive cases: AUROC, AUPRC, sensitivity, FNR undefined")
            undefined |= {"auroc", "auprc", "sensitivity", "fnr", "balanced_accuracy"}
        else:
            reasons.append("no negative cases: AUROC, AUPRC, specificity, FPR undefined")
            undefined |= {"auroc", "auprc", "specificity", "fpr", "balanced_accuracy"}
    if n_pred_pos == 0 or n_pred_pos == n:
        if status == "ok":
            status = "constant_prediction"
        if n_pred_pos == 0:
            reasons.append("every case predicted negative: PPV undefined")
            undefined.add("ppv")
        else:
            reasons.append("every case predicted positive: NPV undefined")
            undefined.add("npv")
    return status, "; ".join(reasons), frozenset(undefined)
