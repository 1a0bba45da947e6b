"""Behaviour shared by the three widget views: static fallback and error display."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ._static import STYLE, esc


class StaticFallbackBox(w.VBox):
    """A VBox whose notebook output also carries a static HTML rendering.

    JupyterLab shows the live widget; an exported notebook without widget state (nbconvert,
    GitHub) falls back to the ``text/html`` entry, so content remains visible.
    """

    def static_html(self) -> str:  # pragma: no cover - overridden
        """HTML rendering of the current state (inline images and tables)."""
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs) or {}
        try:
            data["text/html"] = self.static_html()
        except Exception as exc:  # a broken fallback must never hide the live widget
            data["text/html"] = f"<p>{esc(type(exc).__name__)}: {esc(exc)}</p>"
        return data

    def _guard(self, status: w.HTML, action: Callable[[], None]) -> None:
        """Run a UI update; show errors in the widget (callbacks' exceptions are otherwise
        only logged to the browser console, where nobody sees them)."""
        try:
            action()
        except Exception as exc:
            status.value = (
                f"<pre style='{STYLE};color:#a94442;white-space:pre-wrap'>"
                f"{esc(type(exc).__name__)}: {esc(exc)}\n"
                f"{esc(traceback.format_exc(limit=3))}</pre>"
            )
        else:
            status.value = ""
