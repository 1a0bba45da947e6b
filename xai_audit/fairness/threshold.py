"""Operating threshold: given, or chosen on the whole data set by a named rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

RULES = ("fixed", "youden", "sensitivity", "specificity", "max_f1")


@dataclass(frozen=True)
class ThresholdChoice:
    """The operating threshold of one label and how it was chosen.

    A case is predicted positive when ``score >= value``.

    Attributes
    ----------
    rule : str
        ``"fixed"`` (given by the caller), ``"youden"``, ``"sensitivity"``, ``"specificity"``
        or ``"max_f1"``.
    value : float
        The threshold.
    target : float or None
        The target of the ``"sensitivity"``/``"specificity"`` rules.
    label : str
        The label it applies to.
    sensitivity, specificity : float
        What the threshold achieves on the whole data set (NaN when undefined).
    """

    rule: str
    value: float
    target: float | None = None
    label: str = "y"
    sensitivity: float = float("nan")
    specificity: float = float("nan")

    def describe(self) -> str:
        """Plain-language description, e.g. ``"youden: 0.42"``."""
        what = self.rule if self.target is None else f"{self.rule} >= {self.target:g}"
        return f"{what}: threshold {self.value:.4g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN -> None)."""
        out = asdict(self)
        for key in ("value", "sensitivity", "specificity", "target"):
            v = out[key]
            out[key] = None if v is None or not np.isfinite(v) else float(v)
        return out


def parse_rule(threshold: Any) -> tuple[str, float | None]:
    """Normalise the ``threshold`` argument to ``(rule, target_or_value)``."""
    if threshold is None:
        return "youden", None
    if isinstance(threshold, (int, float, np.floating, np.integer)) and not isinstance(
        threshold, bool
    ):
        return "fixed", float(threshold)
    if isinstance(threshold, str):
        rule = threshold.lower().replace("-", "_")
        if rule in ("youden", "max_f1"):
            return rule, None
        raise ValueError(
            f"unknown threshold rule {threshold!r}; use 'youden', 'max_f1', "
            "('sensitivity', t), ('specificity', t) or a number"
        )
    if isinstance(threshold, (tuple, list)) and len(threshold) == 2:
        rule, target = str(threshold[0]).lower(), float(threshold[1])
        if rule in ("sensitivity", "specificity"):
            if not 0.0 <= target <= 1.0:
                raise ValueError(f"target {rule} must be in [0, 1]; got {target}")
            return rule, target
    raise ValueError(f"cannot interpret threshold={threshold!r}")


def _rates(y: np.ndarray, s: np.ndarray, value: float) -> tuple[float, float]:
    pred = s >= value
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    sens = float((pred & (y == 1)).sum() / n_pos) if n_pos else float("nan")
    spec = float((~pred & (y == 0)).sum() / n_neg) if n_neg else float("nan")
    return sens, spec


def choose_threshold(
    y_true: Any, y_score: Any, threshold: Any = None, *, label: str = "y"
) -> ThresholdChoice:
    """Choose the operating threshold of one label.

    Parameters
    ----------
    y_true : array of shape (N,)
        Binary labels.
    y_score : array of shape (N,)
        Scores; higher means more likely positive.
    threshold : float, str, tuple or None
        A number (used as is), ``"youden"`` (max sensitivity + specificity - 1),
        ``("sensitivity", t)`` (highest threshold reaching sensitivity >= t, i.e. the best
        specificity subject to it), ``("specificity", t)`` (lowest threshold keeping specificity
        >= t), ``"max_f1"`` (max F1 over the precision-recall curve). ``None`` means ``"youden"``.
    label : str
        Label name stored in the result.

    Returns
    -------
    ThresholdChoice

    Raises
    ------
    ValueError
        For an unknown rule, or a rule that needs both classes when only one is present.
    """
    rule, arg = parse_rule(threshold)
    y = np.asarray(y_true).astype(np.int8).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if rule == "fixed":
        value = float(arg)  # type: ignore[arg-type]
    else:
        if y.min(initial=1) == y.max(initial=0):
            raise ValueError(f"threshold rule {rule!r} needs both classes in y_true")
        if rule == "max_f1":
            precision, recall, thr = precision_recall_curve(y, s)
            with np.errstate(invalid="ignore", divide="ignore"):
                f1 = np.where(
                    precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0
                )
            value = float(thr[int(np.argmax(f1[:-1]))])
        else:
            # drop_intermediate=False: every distinct score is a candidate, so targets are exact.
            fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
            # thr[0] is +inf (nothing predicted positive); the finite candidates follow it.
            if rule == "youden":
                idx = 1 + int(np.argmax((tpr - fpr)[1:]))
            elif rule == "sensitivity":
                idx = max(1, int(np.argmax(tpr >= arg - 1e-12)))
            else:  # specificity: thresholds decrease, fpr grows -> last index still within target
                ok = np.flatnonzero(1.0 - fpr >= arg - 1e-12)
                idx = int(ok[-1])
            value = (
                float(thr[idx]) if np.isfinite(thr[idx]) else float(np.nextafter(s.max(), np.inf))
            )
    sens, spec = _rates(y, s, value)
    return ThresholdChoice(
        rule=rule,
        value=value,
        target=arg if rule in ("sensitivity", "specificity") else None,
        label=label,
        sensitivity=sens,
        specificity=spec,
    )
