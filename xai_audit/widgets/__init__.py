"""Notebook widgets: explanation explorer, subgroup dashboard and case review.

Each widget works on an audit result (``ExplanationExplorer.from_result(result)``) or
directly on a model and images for quick exploration
(``ExplanationExplorer(model, images, metadata)``), renders a static HTML fallback for
exported notebooks, and keeps its logic in a plain-Python state class
(:class:`ExplorerState`, :class:`DashboardState`, :class:`CaseReviewState`) that is tested
without a browser.

The helpers :func:`explorer`, :func:`dashboard` and :func:`case_review` accept either an
audit result or a model followed by images.
"""

from __future__ import annotations

from typing import Any

from ._source import CaseSource
from .case_review import CaseReview
from .case_review_state import CaseReviewState
from .dashboard import SubgroupDashboard
from .dashboard_state import DashboardState
from .explorer import ExplanationExplorer
from .explorer_state import ExplorerState

__all__ = [
    "CaseReview",
    "CaseReviewState",
    "CaseSource",
    "DashboardState",
    "ExplanationExplorer",
    "ExplorerState",
    "SubgroupDashboard",
    "case_review",
    "dashboard",
    "explorer",
]


def _is_result(obj: Any) -> bool:
    return hasattr(obj, "predictions") and not hasattr(obj, "predict_proba")


def explorer(
    result_or_model: Any, images: Any = None, *args: Any, **kwargs: Any
) -> ExplanationExplorer:
    """An :class:`ExplanationExplorer` over an audit result, or over a model and images.

    Examples
    --------
    >>> explorer(result)                                   # doctest: +SKIP
    >>> explorer(model, data.images, data.metadata)        # doctest: +SKIP
    """
    if _is_result(result_or_model):
        return ExplanationExplorer.from_result(result_or_model, data=images, **kwargs)
    return ExplanationExplorer(result_or_model, images, *args, **kwargs)


def dashboard(
    result_or_model: Any, images: Any = None, *args: Any, **kwargs: Any
) -> SubgroupDashboard:
    """A :class:`SubgroupDashboard` over an audit result, or over a model and images."""
    if _is_result(result_or_model):
        return SubgroupDashboard.from_result(result_or_model, data=images, **kwargs)
    return SubgroupDashboard(result_or_model, images, *args, **kwargs)


def case_review(result_or_model: Any, images: Any = None, *args: Any, **kwargs: Any) -> CaseReview:
    """A :class:`CaseReview` over an audit result, or over a model and images."""
    if _is_result(result_or_model):
        return CaseReview.from_result(result_or_model, data=images, **kwargs)
    return CaseReview(result_or_model, images, *args, **kwargs)
