"""Late imports of the sibling sub-packages the widgets read from.

Imported on first use, not at module import, so that ``import xai_audit.widgets`` stays
fast and a missing optional piece fails with a message that says what to pass instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def resolve_explain() -> Callable[..., Any]:
    """:func:`xai_audit.explain.explain`, or a clear error when it is unavailable."""
    try:
        from xai_audit.explain import explain
    except ImportError as exc:  # pragma: no cover - depends on the installed pieces
        raise ImportError(
            "xai_audit.explain is not available; pass explain_fn=... to the widget, or use "
            "an audit result that stores the maps."
        ) from exc
    return explain


def available_methods() -> list[str]:
    """Names of the explanation methods the installed ``xai_audit.explain`` offers."""
    try:
        from xai_audit.explain import available_methods as methods
    except ImportError:
        return []
    return list(methods())


def localisation_fn() -> Callable[..., Any] | None:
    """``xai_audit.quality`` localisation scorer, or None when that piece is absent."""
    try:
        from xai_audit.quality.localisation import localisation
    except ImportError:  # pragma: no cover
        return None
    return localisation


def shortcut_mass_fn() -> Callable[..., Any] | None:
    """``xai_audit.quality`` shortcut-mass scorer, or None when that piece is absent."""
    try:
        from xai_audit.quality.shortcut import shortcut_mass
    except ImportError:  # pragma: no cover
        return None
    return shortcut_mass


def deletion_fn() -> Callable[..., Any] | None:
    """``xai_audit.quality`` deletion/insertion scorer, or None when that piece is absent."""
    try:
        from xai_audit.quality.faithfulness import deletion_insertion
    except ImportError:  # pragma: no cover
        return None
    return deletion_insertion
