"""Where the operating threshold comes from: given, a validation split, or the audited data.

Choosing the threshold on the very cases that are then scored with it (Youden's index on the
test set) fits it to their noise, so sensitivity, specificity, PPV and NPV come out
optimistic. Three sources, recorded in the result (``result.subgroups["threshold"]["source"]``)
and stated in the report:

- ``given``: a number in the config (``threshold: 0.342``), e.g. the model card's threshold
  chosen on its validation set; ``threshold_note`` says where it comes from.
- ``validation_split``: chosen by a rule on rows of the manifest that are then left out of
  the audit (``threshold_from: {split_column: split, split: validation, rule: youden}``).
- ``audited_data``: a rule (``youden``, ``max_f1``, ``{sensitivity: 0.9}``) applied to the
  audited data itself (the default; flagged as optimistic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

THRESHOLD_FROM_KEYS = ("split_column", "split", "rule")


def check_threshold_from(
    spec: Any, threshold: Any = "youden", columns: list[str] | None = None
) -> list[str]:
    """Problems with a ``threshold_from`` setting (empty when valid or absent).

    Parameters
    ----------
    spec : mapping or None
        ``{split_column: str, split: value, rule: youden}`` (``rule`` optional: default the
        ``threshold`` setting when it is a rule, else ``youden``).
    threshold : Any
        The ``threshold`` setting (a number there conflicts with ``threshold_from``).
    columns : list of str, optional
        Manifest columns, when known.
    """
    from .config import check_threshold, normalise_threshold

    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        return [
            "threshold_from must be a mapping such as {split_column: split, split: validation, "
            f"rule: youden}}; got {spec!r}"
        ]
    out = []
    unknown = sorted(set(spec) - set(THRESHOLD_FROM_KEYS))
    if unknown:
        out.append(f"threshold_from: unknown key(s) {unknown}; known: {list(THRESHOLD_FROM_KEYS)}")
    col = spec.get("split_column")
    if not isinstance(col, str) or not col:
        out.append("threshold_from.split_column: give the manifest column that names the split")
    elif columns is not None and col not in columns:
        out.append(
            f"threshold_from.split_column: column {col!r} is not in the manifest; available "
            f"columns: {columns}"
        )
    if spec.get("split") is None:
        out.append(
            "threshold_from.split: give the value of the split column that marks the validation "
            "rows (e.g. validation)"
        )
    rule = spec.get("rule")
    if rule is not None:
        rule = normalise_threshold(rule)
        msg = check_threshold(rule)
        if msg:
            out.append("threshold_from.rule: " + msg.removeprefix("threshold: "))
        elif isinstance(rule, (int, float)):
            out.append(
                "threshold_from.rule must be a rule (youden, max_f1, {sensitivity: 0.9}), "
                "not a number"
            )
    th = normalise_threshold(threshold)
    if isinstance(th, (int, float)) and not isinstance(th, bool):
        out.append(
            f"threshold is a number ({th}) and threshold_from is given too: give one of them "
            "(a number from the model card, or a split to choose it on)"
        )
    return out


def rule_of(spec: Mapping[str, Any], threshold: Any) -> Any:
    """The rule applied on the validation split (its own, else ``threshold``, else Youden)."""
    from .config import normalise_threshold

    rule = spec.get("rule")
    if rule is not None:
        return normalise_threshold(rule)
    th = normalise_threshold(threshold)
    return th if th is not None and not isinstance(th, (int, float)) else "youden"


def split_rows(data: Any, spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Row positions of the audited and of the validation part of a manifest, and problems."""
    col = spec["split_column"]
    if col not in data.table.columns:
        return (
            np.arange(len(data)),
            np.zeros(0, np.int64),
            [
                f"threshold_from.split_column: column {col!r} is not in the manifest; available "
                f"columns: {list(data.table.columns)}"
            ],
        )
    values = data.table[col].astype(str).to_numpy()
    is_val = values == str(spec["split"])
    problems = []
    val, audited = np.flatnonzero(is_val), np.flatnonzero(~is_val)
    if len(val) == 0:
        seen = sorted(set(values))[:10]
        problems.append(
            f"threshold_from: no row has {col} == {spec['split']!r}; values found: {seen}"
        )
    else:
        # One threshold per label column (a multi-label audit chooses one for each).
        cols = list(getattr(data, "label_cols", []) or [])
        table = data.table.iloc[val]
        for c in cols or [None]:
            y = data.label[val] if c is None else table[c].to_numpy(np.float64)
            y = y[~np.isnan(y)]
            if np.unique(y).size < 2:
                which = f" for label {c!r}" if c is not None and len(cols) > 1 else ""
                problems.append(
                    f"threshold_from: the {spec['split']!r} rows ({len(val)}) hold one class "
                    f"only{which}; a threshold rule needs positive and negative cases"
                )
    if len(audited) == 0:
        problems.append(
            f"threshold_from: every row has {col} == {spec['split']!r}; nothing is left to audit"
        )
    return audited, val, problems


def threshold_on_split(
    model: Any,
    validation: Any,
    spec: Mapping[str, Any],
    threshold: Any,
    *,
    batch_size: int,
    label: str,
    audited_patients: Any = None,
) -> tuple[float, dict[str, Any]]:
    """Predict the validation rows, choose the threshold there; return it and its source."""
    from ..fairness.threshold import choose_threshold

    rule = rule_of(spec, threshold)
    scores = np.concatenate(
        [
            model.positive_scores(images, batch_size=batch_size)
            for _, images in validation.iter_batches(batch_size)
        ]
    ).astype(np.float64)
    y = validation.label.astype(np.int64)
    choice = choose_threshold(y, scores, rule, label=label)
    overlap = None
    pids = validation.patient_ids
    if pids is not None and audited_patients is not None:
        both = set(map(str, pids[~_isna(pids)])) & set(
            map(str, np.asarray(audited_patients)[~_isna(audited_patients)])
        )
        overlap = len(both)
    src = {
        "kind": "validation_split",
        "optimistic": False,
        "rule": choice.rule,
        "target": choice.target,
        "split_column": str(spec["split_column"]),
        "split": str(spec["split"]),
        "n_validation": int(len(y)),
        "n_validation_positive": int(y.sum()),
        "validation_sensitivity": _plain(choice.sensitivity),
        "validation_specificity": _plain(choice.specificity),
        "patients_in_both": overlap,
    }
    return float(choice.value), src


def _isna(a: Any) -> np.ndarray:
    import pandas as pd

    return pd.isna(np.asarray(a, dtype=object))


def _plain(v: Any) -> float | None:
    return None if v is None or not np.isfinite(float(v)) else float(v)


def given_source(threshold: Any, note: str | None = None) -> dict[str, Any]:
    """The source of a threshold setting that is applied without a split."""
    from ..fairness.threshold import parse_rule

    rule, target = parse_rule(threshold)
    if rule == "fixed":
        return {"kind": "given", "optimistic": False, "rule": "fixed", "note": note}
    return {
        "kind": "audited_data",
        "optimistic": True,
        "rule": rule,
        "target": target,
        "note": note,
    }


def source_of(threshold: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded source of a result's threshold (inferred for results without one)."""
    src = threshold.get("source")
    if src:
        return dict(src)
    if threshold.get("rule") == "fixed":
        return {"kind": "given", "optimistic": False, "rule": "fixed", "note": None}
    return {
        "kind": "audited_data",
        "optimistic": True,
        "rule": threshold.get("rule"),
        "target": threshold.get("target"),
        "note": None,
    }


def _rule_text(rule: Any, target: Any) -> str:
    names = {"youden": "Youden's index", "max_f1": "the highest F1"}
    if rule in ("sensitivity", "specificity"):
        return f"the rule {rule} >= {target:g}" if target is not None else f"the rule {rule}"
    return names.get(str(rule), f"the rule {rule}")


def describe_source(src: Mapping[str, Any], threshold: Mapping[str, Any] | None = None) -> str:
    """One or two sentences: where the threshold came from, and whether that is optimistic."""
    value = (threshold or {}).get("value")
    v = f"{float(value):.4g}" if value is not None else "?"
    note = f" ({src['note']})" if src.get("note") else ""
    kind = src.get("kind")
    if kind == "given":
        return (
            f"The operating threshold {v} was given in the settings{note}; it was not chosen on "
            "the audited data, so the sensitivity, specificity, PPV and NPV reported here are "
            "not inflated by the choice."
        )
    if kind == "validation_split":
        text = (
            f"The operating threshold {v} was chosen by {_rule_text(src.get('rule'), src.get('target'))} "
            f"on the {src.get('n_validation')} rows with {src.get('split_column')} = "
            f"{src.get('split')} ({src.get('n_validation_positive')} positive){note}; those rows "
            "are left out of every metric of this audit."
        )
        if src.get("patients_in_both"):
            text += (
                f" {src['patients_in_both']} patient(s) have images in both the validation rows "
                "and the audited rows, so the two are not fully independent."
            )
        return text
    return (
        f"The operating threshold {v} was chosen by {_rule_text(src.get('rule'), src.get('target'))} "
        f"on the audited data itself{note}. Choosing it on the same cases it is then judged on "
        "is optimistic: sensitivity, specificity, PPV and NPV at this threshold overstate what "
        "a threshold fixed in advance would achieve on new data (AUROC does not depend on it). "
        "Give a threshold fixed in advance (threshold: a number, e.g. the model card's) or a "
        "validation split (threshold_from: {split_column: ..., split: ...}) to avoid this."
    )
