"""Disparity flags for the subgroup dashboard, by the audit's own rule.

A group is flagged ("high", as in the audit's key findings) when the whole confidence
interval of its gap lies beyond the tolerance on the harmful side
(:func:`xai_audit.fairness.disparity.make_flags`). At the audit's threshold the audit's stored
flags are used as they are; at any other threshold (or for a grouping the audit did not
compute) the same function the audit ran, :func:`xai_audit.fairness.evaluate_subgroups`,
computes them with the audit's tolerance, flagged metrics, interval level and minimum group
size. Nothing here re-implements the rule.

Groups are matched by their attribute values, whatever the order in which the attributes of
an intersection were chosen (``sex × age_group = F | 65+`` is ``age_group × sex = 65+ | F``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._metrics import GROUP_SEP, INTERSECTION_SEP

GroupKey = tuple[tuple[str, str], ...]


def group_key(attribute: str, group: str) -> GroupKey:
    """Order-free key of a group: sorted ``(column, value)`` pairs."""
    names = str(attribute).split(INTERSECTION_SEP)
    values = str(group).split(GROUP_SEP) if len(names) > 1 else [str(group)]
    return tuple(sorted(zip(names, values)))


def _as_dict(flag: Any) -> dict[str, Any]:
    if isinstance(flag, Mapping):
        return dict(flag)
    if hasattr(flag, "to_dict"):
        return dict(flag.to_dict())
    return dict(vars(flag))


def index_flags(flags: Iterable[Any] | None) -> dict[GroupKey, list[dict[str, Any]]]:
    """Flags grouped by the group they name (the worst group for best-vs-worst flags)."""
    out: dict[GroupKey, list[dict[str, Any]]] = {}
    for f in flags or []:
        d = _as_dict(f)
        if "attribute" in d and "group" in d:
            out.setdefault(group_key(d["attribute"], d["group"]), []).append(d)
    return out


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def stored_flags(subgroups: Any) -> list[dict[str, Any]] | None:
    """The audit's flags (a SubgroupResult's or an AuditResult's subgroup section), if any."""
    if subgroups is None or isinstance(subgroups, pd.DataFrame):
        return None
    flags = _get(subgroups, "flags")
    return None if flags is None else [_as_dict(f) for f in flags]


def audit_settings(subgroups: Any) -> dict[str, Any]:
    """Tolerance, flagged metrics, interval level and minimum group size the audit used."""
    if subgroups is None or isinstance(subgroups, pd.DataFrame):
        return {}
    settings = _get(subgroups, "settings") or _get(subgroups, "config") or {}
    if not isinstance(settings, Mapping):
        return {}
    keys = ("tolerance", "flag_metrics", "ci", "min_group_size", "random_state")
    return {k: settings[k] for k in keys if settings.get(k) is not None}


def covered_groups(table: pd.DataFrame | None) -> set[GroupKey]:
    """Groups of a precomputed ``by_group`` table (those the audit's flags speak for)."""
    if table is None or not {"attribute", "group"} <= set(table.columns):
        return set()
    pairs = table[["attribute", "group"]].drop_duplicates().itertuples(index=False)
    return {group_key(a, g) for a, g in pairs}


def compute_flags(
    table: pd.DataFrame,
    attributes: Sequence[str],
    intersection: Sequence[str] | None,
    threshold: float,
    *,
    patient_ids: np.ndarray | None,
    settings: Mapping[str, Any],
    n_boot: int,
) -> tuple[dict[GroupKey, list[dict[str, Any]]], set[GroupKey]]:
    """Flags of the chosen groupings at ``threshold``, by the audit's own function.

    Returns
    -------
    flags : dict
        Group key -> flags (see :func:`index_flags`).
    covered : set
        Groups that were assessed (a group not flagged here is within tolerance or has too
        wide an interval to tell).
    """
    from ..fairness import evaluate_subgroups

    attrs = list(dict.fromkeys(attributes))
    if not attrs:
        return {}, set()
    kwargs: dict[str, Any] = {
        k: settings[k]
        for k in ("tolerance", "flag_metrics", "ci", "min_group_size")
        if k in settings
    }
    inter = [tuple(intersection)] if intersection and len(intersection) > 1 else False
    y = table["label"].to_numpy(np.float64)
    keep = np.isfinite(y)
    pids = None if patient_ids is None else np.asarray(patient_ids, dtype=object)[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small/degenerate groups: the table says so already
        res = evaluate_subgroups(
            y[keep].astype(np.int64),
            table["score"].to_numpy(np.float64)[keep],
            table.loc[keep, attrs].reset_index(drop=True),
            threshold=float(threshold),
            intersections=inter,
            patient_id=pids,
            n_boot=int(n_boot),
            random_state=int(settings.get("random_state", 0) or 0),
            **kwargs,
        )
    return index_flags(res.flags), covered_groups(res.by_group)


def flag_reason(flags: list[dict[str, Any]], metric: str) -> str:
    """The flag messages of the shown metric (its mirror too), then the other flagged metrics.

    With no flag on the shown metric, the first flag's message stands for the group.
    """
    mirror = {"fnr": "sensitivity", "fpr": "specificity"}

    def base(m: Any) -> Any:
        return mirror.get(m, m)

    shown = [f for f in flags if base(f.get("metric")) == base(metric)] or flags[:1]
    texts = list(
        dict.fromkeys(str(f.get("message") or f"{f.get('metric')} beyond tolerance") for f in shown)
    )
    others = sorted({base(f.get("metric")) for f in flags} - {base(shown[0].get("metric"))})
    if others:
        texts.append("Also flagged: " + ", ".join(str(o).replace("_", " ") for o in others) + ".")
    return " ".join(texts)
