"""What changed besides the metrics: flipped decisions, explanation behaviour, findings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..fairness._common import GROUP_SEP, INTERSECTION_SEP
from ..fairness.disparity import describe_group
from ..fairness.inputs import Group, group_keys
from .paired import paired_mean_difference

if TYPE_CHECKING:
    from ..audit.result import AuditResult

FLIP_COLUMNS = [
    "attribute",
    "group",
    "n",
    "pos_to_neg",
    "neg_to_pos",
    "flipped",
    "became_error",
    "became_correct",
    "errors_reference",
    "errors_new",
]

EXPLANATION_COLUMNS = [
    "method",
    "check",
    "measure",
    "reference",
    "new",
    "diff",
    "ci_low",
    "ci_high",
    "n",
    "paired",
    "reference_verdict",
    "new_verdict",
]


def flips_table(
    y: np.ndarray, pred_ref: np.ndarray, pred_new: np.ndarray, groups: Sequence[Group]
) -> pd.DataFrame:
    """Decisions that changed between the models, per group (counts, no case ids).

    ``pos_to_neg``: positive for the reference, negative for the new model; ``became_error``:
    right for the reference, wrong for the new model (a flip on a case whose label the new
    model now misses); ``became_correct`` the reverse.
    """
    y = np.asarray(y).astype(bool)
    a, b = np.asarray(pred_ref).astype(bool), np.asarray(pred_new).astype(bool)
    err_a, err_b = a != y, b != y
    per_case = np.stack(
        [a & ~b, ~a & b, a != b, ~err_a & err_b, err_a & ~err_b, err_a, err_b], axis=1
    ).astype(np.int64)
    rows = []
    for g in groups:
        c = per_case[g.rows].sum(axis=0)
        rows.append([g.attribute, g.name, int(g.rows.size), *map(int, c)])
    return pd.DataFrame(rows, columns=FLIP_COLUMNS)


def _headline(section: Any, method: str) -> dict[str, Any]:
    entry = (section or {}).get(method) if hasattr(section, "get") else None
    return dict(entry or {})


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _per_image(result: AuditResult, order: np.ndarray) -> pd.DataFrame | None:
    """The quality per-image table aligned to the comparison's case order (or None)."""
    per = (result.quality or {}).get("per_image")
    if per is None or "case_id" not in per:
        return None
    per = per.drop_duplicates("case_id").set_index(per["case_id"].astype(str).to_numpy())
    return per.reindex(order)


def explanation_changes(
    reference: AuditResult,
    new: AuditResult,
    case_ids: np.ndarray,
    units: np.ndarray,
    n_units: int,
    *,
    n_boot: int,
    seed: int | None,
    ci: float,
    attrs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Explanation behaviour per method in both audits, with paired intervals where possible.

    * shortcut share (``quality.per_image['shortcut__<method>']``: the share of attribution
      in the audit's shortcut region) and each localisation measure
      (``loc__<method>__<measure>``): per-case values, so the mean difference over the cases
      both audits measured gets a paired patient-level interval;
    * faithfulness (deletion advantage over random patches, early advantage) and the sanity
      check: each audit measured its own sample, so both values are shown with each audit's
      verdict and the difference has no paired interval;
    * confirmed shortcut findings: how many each audit has; and for every group in which
      either audit found a shortcut candidate, the shortcut share within that group (paired),
      so that "does v2 still rely on the marker at site C?" has a number. ``attrs``: the
      group names of every case, in ``case_ids`` order.
    """
    rows: list[dict[str, Any]] = []
    methods = [m for m in reference.method_names if m in new.method_names]
    per_a, per_b = _per_image(reference, case_ids), _per_image(new, case_ids)
    for m in methods:
        if per_a is not None and per_b is not None:
            cols = [c for c in per_a.columns if c in per_b.columns]
            region = _region_text(reference)
            measures = [(f"shortcut__{m}", "shortcut", f"mean attribution share in {region}")]
            measures += [
                (c, "localisation", c.split("__", 2)[2])
                for c in cols
                if c.startswith(f"loc__{m}__")
            ]
            for col, check, measure in measures:
                if col not in per_a or col not in per_b:
                    continue
                res = paired_mean_difference(
                    per_a[col].to_numpy(dtype=float),
                    per_b[col].to_numpy(dtype=float),
                    units,
                    n_units,
                    n_boot=n_boot,
                    seed=seed,
                    ci=ci,
                )
                if res["n"]:
                    rows.append({"method": m, "check": check, "measure": measure, **res,
                                 "paired": True})  # fmt: skip
            col = f"shortcut__{m}"
            if attrs is not None and col in per_a and col in per_b:
                for attribute, group in _candidate_groups(reference, new, m):
                    mask = _group_mask(attrs, attribute, group)
                    if mask is None or not mask.any():
                        continue
                    res = paired_mean_difference(
                        np.where(mask, per_a[col].to_numpy(dtype=float), np.nan),
                        np.where(mask, per_b[col].to_numpy(dtype=float), np.nan),
                        units, n_units, n_boot=n_boot, seed=seed, ci=ci,
                    )  # fmt: skip
                    if res["n"]:
                        where = describe_group(attribute, group)
                        rows.append({"method": m, "check": "shortcut",
                                     "measure": f"mean attribution share in {region}, {where}",
                                     **res, "paired": True})  # fmt: skip
        fa = _headline((reference.quality or {}).get("faithfulness"), m).get("headline") or {}
        fb = _headline((new.quality or {}).get("faithfulness"), m).get("headline") or {}
        if fa or fb:
            for key, measure in (
                ("advantage", "deletion advantage over random"),
                ("early_advantage", "early deletion advantage"),
            ):
                va, vb = _f(fa.get(key)), _f(fb.get(key))
                rows.append(
                    {
                        "method": m,
                        "check": "faithfulness",
                        "measure": measure,
                        "reference": va,
                        "new": vb,
                        "diff": vb - va,
                        "ci_low": np.nan,
                        "ci_high": np.nan,
                        "n": int(min(_f(fa.get("n")), _f(fb.get("n"))))
                        if np.isfinite(_f(fa.get("n"))) and np.isfinite(_f(fb.get("n")))
                        else 0,
                        "paired": False,
                        "reference_verdict": str(
                            fa.get("verdict", fa.get("better_than_random", ""))
                        ),
                        "new_verdict": str(fb.get("verdict", fb.get("better_than_random", ""))),
                    }
                )
        sa = _headline((reference.quality or {}).get("sanity"), m)
        sb = _headline((new.quality or {}).get("sanity"), m)
        if sa or sb:
            va, vb = _f(sa.get("final_similarity")), _f(sb.get("final_similarity"))
            rows.append(
                {"method": m, "check": "sanity", "measure": "similarity with every layer random",
                 "reference": va, "new": vb, "diff": vb - va, "ci_low": np.nan, "ci_high": np.nan,
                 "n": 0, "paired": False,
                 "reference_verdict": "pass" if sa.get("passed") else ("fail" if sa else ""),
                 "new_verdict": "pass" if sb.get("passed") else ("fail" if sb else "")}
            )  # fmt: skip
        ca = _confirmed(reference, m)
        cb = _confirmed(new, m)
        if ca is not None or cb is not None:
            rows.append(
                {"method": m, "check": "shortcut", "measure": "confirmed shortcut regions",
                 "reference": _f(ca), "new": _f(cb), "diff": _f(cb) - _f(ca), "ci_low": np.nan,
                 "ci_high": np.nan, "n": 0, "paired": False, "reference_verdict": "",
                 "new_verdict": ""}
            )  # fmt: skip
    df = pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)
    df["reference_verdict"] = df["reference_verdict"].fillna("").astype(str)
    df["new_verdict"] = df["new_verdict"].fillna("").astype(str)
    df["paired"] = df["paired"].astype(bool)
    df["n"] = df["n"].astype(np.int64)
    return df


def _region_text(result: AuditResult) -> str:
    """What ``shortcut__<method>`` measures: the named region, or the corners for "auto"."""
    name = str(((result.quality or {}).get("region") or {}).get("name") or "auto")
    return "the corners" if name == "auto" else f"region {name}"


def _candidate_groups(
    reference: AuditResult, new: AuditResult, method: str
) -> list[tuple[str, str]]:
    """(attribute, group) of every shortcut candidate either audit found for ``method``."""
    out: list[tuple[str, str]] = []
    for result in (reference, new):
        sc = (result.quality or {}).get("shortcuts")
        entry = sc.get(method) if hasattr(sc, "get") else None
        for c in (entry or {}).get("candidates") or []:
            if c.get("attribute") and c.get("group") is not None:
                out.append((str(c["attribute"]), str(c["group"])))
    return list(dict.fromkeys(out))


def _group_mask(attrs: pd.DataFrame, attribute: str, group: str) -> np.ndarray | None:
    names = attribute.split(INTERSECTION_SEP)
    values = group.split(GROUP_SEP) if len(names) > 1 else [group]
    if any(n not in attrs for n in names) or len(values) != len(names):
        return None
    mask = np.ones(len(attrs), dtype=bool)
    for n, v in zip(names, values):
        mask &= group_keys(attrs[n]) == v  # names as the audit's tables write them
    return mask


def _confirmed(result: AuditResult, method: str) -> int | None:
    sc = (result.quality or {}).get("shortcuts")
    entry = sc.get(method) if hasattr(sc, "get") else None
    if not entry:
        return None
    return int(sum(bool(c.get("confirmed")) for c in entry.get("candidates") or []))


def findings_change(reference: AuditResult, new: AuditResult) -> dict[str, list[dict[str, Any]]]:
    """Findings (severity, kind, title) only in the reference, only in the new audit, in both.

    Two findings are the same when severity, kind and title agree; titles carry the group
    and the effect, so a finding whose numbers changed shows as resolved + new.
    """

    def key(f: dict[str, Any]) -> tuple[str, str, str]:
        return (str(f.get("severity", "")), str(f.get("kind", "")), str(f.get("title", "")))

    ka = {key(f): f for f in reference.findings or []}
    kb = {key(f): f for f in new.findings or []}

    def slim(k: tuple[str, str, str]) -> dict[str, Any]:
        return {"severity": k[0], "kind": k[1], "title": k[2]}

    return {
        "resolved": [slim(k) for k in ka if k not in kb],
        "new": [slim(k) for k in kb if k not in ka],
        "unchanged": [slim(k) for k in ka if k in kb],
    }
