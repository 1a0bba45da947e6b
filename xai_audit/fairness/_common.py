"""Names, directions and the warning class shared by the fairness modules."""

from __future__ import annotations

#: Order of the metrics in every table and in the bootstrap replicate arrays.
METRICS: tuple[str, ...] = (
    "prevalence",
    "auroc",
    "auprc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "fpr",
    "fnr",
    "accuracy",
    "balanced_accuracy",
    "selection_rate",
    "brier",
    "ece",
)
METRIC_INDEX: dict[str, int] = {m: i for i, m in enumerate(METRICS)}

#: +1: higher is better, -1: lower is better, 0: descriptive (no better/worse).
DIRECTION: dict[str, int] = {
    "prevalence": 0,
    "auroc": 1,
    "auprc": 1,
    "sensitivity": 1,
    "specificity": 1,
    "ppv": 1,
    "npv": 1,
    "fpr": -1,
    "fnr": -1,
    "accuracy": 1,
    "balanced_accuracy": 1,
    "selection_rate": 0,
    "brier": -1,
    "ece": -1,
}

#: Human-readable names used in flag messages and plots.
DISPLAY: dict[str, str] = {
    "prevalence": "Prevalence",
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "fpr": "False positive rate",
    "fnr": "False negative rate",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "selection_rate": "Selection rate",
    "brier": "Brier score",
    "ece": "ECE",
}

#: Metrics that need scores in [0, 1] (probabilities).
PROBABILITY_METRICS: frozenset[str] = frozenset({"brier", "ece"})

OVERALL_ATTRIBUTE = "overall"
OVERALL_GROUP = "all"
MISSING_GROUP = "missing"
INTERSECTION_SEP = " × "
GROUP_SEP = " | "

STATUSES: tuple[str, ...] = ("ok", "small", "one_class", "constant_prediction")


class SubgroupWarning(UserWarning):
    """Emitted for small or degenerate groups, missing attributes and similar findings."""
