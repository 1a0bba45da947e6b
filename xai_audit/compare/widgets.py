"""Open the existing notebook widgets on either model of a comparison (a thin wrapper)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .comparison import Comparison

_KINDS = ("dashboard", "explorer", "case_review")


def open_widget(cmp: Comparison, which: str = "new", kind: str = "dashboard", **kwargs: Any) -> Any:
    """The subgroup dashboard, explanation explorer or case review of one model.

    Parameters
    ----------
    cmp : Comparison
    which : {"reference", "new"}
        Which model's audit to show.
    kind : {"dashboard", "explorer", "case_review"}
        Which widget.
    **kwargs
        Passed to the widget (e.g. ``data=manifest, model=adapter`` to compute maps the audit
        did not store).

    Returns
    -------
    The widget (its title names the model).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
    result = cmp.result(which)
    return getattr(result, kind)(**kwargs)


def model_picker(cmp: Comparison, kind: str = "dashboard", **kwargs: Any) -> Any:
    """A toggle (reference / new) above the chosen widget; switching rebuilds the widget.

    Widgets are built lazily, once per model, and kept.
    """
    import ipywidgets as w

    cache: dict[str, Any] = {}
    toggle = w.ToggleButtons(
        options=[
            (f"reference: {cmp.reference_name}", "reference"),
            (f"new: {cmp.new_name}", "new"),
        ],
        value="new",
        description="Model",
    )
    box = w.VBox([toggle, w.HTML("")])

    def show(which: str) -> None:
        if which not in cache:
            cache[which] = open_widget(cmp, which, kind, **kwargs)
        box.children = (toggle, cache[which])

    toggle.observe(lambda ch: show(ch["new"]), names="value")
    show("new")
    return box
