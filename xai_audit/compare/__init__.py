"""Model-vs-model comparison of two audits on the same cases (change control).

``compare_audits(reference, new)`` gives a :class:`Comparison`: paired patient-level bootstrap
differences (new - reference) of AUROC, sensitivity, specificity, PPV, NPV, Brier score and
ECE, overall and per (intersectional) group; gap changes; flipped decisions; explanation
behaviour per method; resolved and new findings. ``Comparison.report(path)`` writes a
self-contained HTML report and its JSON twin.
"""

from .comparison import (
    DIFFERENCE_COLUMNS,
    OVERALL,
    Comparison,
    ComparisonError,
    compare_audits,
)
from .paired import COMPARE_METRICS
from .widgets import model_picker, open_widget

__all__ = [
    "COMPARE_METRICS",
    "DIFFERENCE_COLUMNS",
    "OVERALL",
    "Comparison",
    "ComparisonError",
    "compare_audits",
    "model_picker",
    "open_widget",
]
