"""Subgroup performance and bias: "does the model work equally well for everyone?".

Intersectional metrics per group (fairlearn MetricFrame + scikit-learn point estimates), fast
vectorised bootstrap confidence intervals (by patient when a patient id is given), operating
threshold rules, disparity gaps and flags against a tolerance, calibration by group and plots.
Works on labels, scores and attributes alone; no model needed.

Example::

    from xai_audit.fairness import evaluate_subgroups
    res = evaluate_subgroups(y_true, y_score, df[["sex", "age_group"]], patient_id=df.patient_id)
    res.flags, res.by_group, res.plot_forest("sensitivity")
"""

from __future__ import annotations

from ._common import METRICS, SubgroupWarning
from .attribution import attribute_gaps
from .bootstrap import bootstrap_replicates, make_plan, percentile_interval
from .calibration import expected_calibration_error, reliability_bins
from .disparity import Flag
from .evaluate import evaluate_subgroups
from .result import SubgroupResult
from .threshold import ThresholdChoice, choose_threshold

__all__ = [
    "METRICS",
    "Flag",
    "SubgroupResult",
    "SubgroupWarning",
    "ThresholdChoice",
    "attribute_gaps",
    "bootstrap_replicates",
    "choose_threshold",
    "evaluate_subgroups",
    "expected_calibration_error",
    "make_plan",
    "percentile_interval",
    "reliability_bins",
]
