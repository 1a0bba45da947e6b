"""Exceptions raised by :mod:`xai_audit.data`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DataWarning", "ManifestError", "describe_rows"]


class ManifestError(ValueError):
    """A manifest (or one of its images) is invalid.

    The message always says what is wrong, which rows are affected (the first five case ids
    and the total count) and how to fix it. Subclasses :class:`ValueError` so that generic
    input-validation handlers catch it too.
    """


class DataWarning(UserWarning):
    """Data that is valid but suspicious: patients whose images disagree on labels or
    attributes, attributes that cannot define useful subgroups (one group, many numeric
    values, mixed value types). The audit keeps these in its result as well as warning."""


def describe_rows(case_ids: Sequence[object], limit: int = 5) -> str:
    """Format offending rows as ``"3 rows (case ids: a, b, c)"``.

    Parameters
    ----------
    case_ids : sequence
        Case ids of the offending rows, in manifest order.
    limit : int, default 5
        How many ids to name before eliding the rest.

    Returns
    -------
    str
        A short human-readable description naming the rows and their count.
    """
    ids = [str(c) for c in case_ids]
    shown = ", ".join(ids[:limit])
    more = f", ... ({len(ids) - limit} more)" if len(ids) > limit else ""
    noun = "row" if len(ids) == 1 else "rows"
    return f"{len(ids)} {noun} (case ids: {shown}{more})"
