"""A label selector for multi-label results: one widget, switched between labels."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ..audit.labels import label_model, label_view, labels_of

#: Widgets a selector can hold: the :class:`~xai_audit.audit.AuditResult` method that opens it.
WIDGETS = ("dashboard", "explorer", "case_review")


class LabelSelector(w.VBox):
    """A label dropdown above a widget of that label (dashboard, explorer or case review).

    Each label is shown through :func:`~xai_audit.audit.labels.label_view`: its predictions,
    threshold, subgroup tables, findings and (when it was explained) its maps; the model is
    aimed at the label's output (:func:`~xai_audit.audit.labels.label_model`).

    Parameters
    ----------
    result : AuditResult
        A multi-label result (a single-label one shows its only label).
    widget : {"dashboard", "explorer", "case_review"}, default "dashboard"
    data, model : optional
        As for the widget's ``from_result`` (default: what the result records).
    label : str, optional
        The label shown first (default: the first explained one).
    **kwargs
        Passed to the widget.

    Examples
    --------
    >>> LabelSelector(result, "dashboard")  # doctest: +SKIP
    """

    def __init__(
        self,
        result: Any,
        widget: str = "dashboard",
        data: Any = None,
        model: Any = None,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        if widget not in WIDGETS:
            raise ValueError(f"widget must be one of {WIDGETS}, got {widget!r}.")
        self.result, self.kind, self.data, self.model = result, widget, data, model
        self.kwargs = kwargs
        names = labels_of(result)
        first = label or str((result.config.get("labels") or {}).get("primary") or names[0])
        if first not in names:
            raise KeyError(f"Unknown label {first!r}; this result has the labels {names}.")
        self.selector = w.Dropdown(options=names, value=first, description="Label")
        self.selector.observe(self._on_label, names="value")
        self.view = self._open(first)
        super().__init__([self.selector, self.view])

    def _open(self, label: str) -> Any:
        view = label_view(self.result, label)
        model = label_model(self.result, label, self.model)
        return getattr(view, self.kind)(data=self.data, model=model, **self.kwargs)

    def _on_label(self, change: dict[str, Any]) -> None:
        self.view = self._open(str(change["new"]))
        self.children = (self.selector, self.view)
