"""Glue between :class:`~xai_audit.audit.Audit` and the change-control settings.

``threshold_from`` (a validation split set aside for the threshold), ``performance_floor`` and
``criteria`` are checked together with the other settings, before any work; the split is set
aside before anything else sees the data, so that its rows enter no metric, explanation or
gallery of the audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .operating_point import (
    check_threshold_from,
    given_source,
    split_rows,
    threshold_on_split,
)
from .performance_findings import check_floor


@dataclass
class Prepared:
    """The audited data, the validation rows set aside (or None), criteria, problems."""

    data: Any
    validation: Any = None
    criteria: Any = None
    problems: list[str] = field(default_factory=list)


def prepare(
    data: Any, threshold: Any, threshold_from: Any, performance_floor: Any, criteria: Any
) -> Prepared:
    """Check the change-control settings and set the validation rows aside."""
    out = Prepared(data=data)
    cols = list(data.table.columns) if hasattr(data, "table") else None
    out.problems += check_threshold_from(threshold_from, threshold, cols)
    out.problems += check_floor(performance_floor)
    if criteria is not None:
        from .criteria import CriteriaError, as_criteria

        try:
            out.criteria = as_criteria(criteria)
        except (CriteriaError, TypeError) as exc:
            probs = getattr(exc, "problems", [str(exc)])
            out.problems += [f"criteria: {p}" for p in probs]
    if threshold_from is not None and not out.problems and len(data):
        audited, val, problems = split_rows(data, threshold_from)
        out.problems += problems
        if not problems:
            out.data, out.validation = data.subset(audited), data.subset(val)
    return out


def resolve_threshold(audit: Any, label: str) -> tuple[Any, dict[str, Any]]:
    """The threshold argument for the subgroup analysis and the record of its source."""
    note = getattr(audit, "threshold_note", None)
    validation = getattr(audit, "_validation", None)
    if validation is None:
        return audit.threshold, given_source(audit.threshold, note)
    value, src = threshold_on_split(
        audit.model,
        validation,
        audit.threshold_from,
        audit.threshold,
        batch_size=audit.batch_size,
        label=label,
        audited_patients=audit.data.patient_ids,
    )
    src["note"] = note
    return value, src
