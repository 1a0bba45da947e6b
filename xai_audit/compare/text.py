"""Plain-text summary of a :class:`~xai_audit.compare.Comparison` (CLI and notebooks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..fairness._common import DIRECTION
from ..fairness.disparity import describe_group
from ..report.content import DISPLAY

if TYPE_CHECKING:
    from .comparison import Comparison


def _n(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.{digits}f}"


def _v(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def verdict(metric: str, ci_low: float, ci_high: float) -> str:
    """``better`` / ``worse`` when the whole interval lies on one side of 0, else ``unclear``.

    Direction from the metric (higher AUROC is better, lower ECE is better).
    """
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "n/a"
    sign = DIRECTION.get(metric, 0)
    if sign == 0 or (ci_low <= 0 <= ci_high):
        return "no clear change" if sign else "changed" if ci_low > 0 or ci_high < 0 else "-"
    up = ci_low > 0
    return "better" if (up == (sign > 0)) else "worse"


def largest_changes(differences: pd.DataFrame, k: int = 6) -> pd.DataFrame:
    """Group rows that changed beyond chance, largest first (worse before better).

    A row counts when its simultaneous interval (``sim_low``/``sim_high``: max-t over every
    group and metric of the comparison) excludes 0; per-row intervals would list about 5% of
    the rows of two equally good models.
    """
    lo_col, hi_col = ("sim_low", "sim_high") if "sim_low" in differences else ("ci_low", "ci_high")
    d = differences[differences["attribute"] != "overall"].copy()
    d = d[np.isfinite(d[lo_col]) & np.isfinite(d[hi_col])]
    d = d[(d[lo_col] > 0) | (d[hi_col] < 0)]
    if d.empty:
        return d
    d["verdict"] = [verdict(m, a, b) for m, a, b in zip(d["metric"], d[lo_col], d[hi_col])]
    d["size"] = d["diff"].abs()
    return d.sort_values(["verdict", "size"], ascending=[False, False]).head(k)


def summary_text(cmp: Comparison, metrics: Sequence[str] | None = None) -> str:
    """The main differences as a few lines of text (no case or patient ids)."""
    s = cmp.settings
    lines = [
        f"Comparison: {cmp.reference_name} (reference) -> {cmp.new_name} (new)",
        f"{s['n_cases']} cases, {s['resampling_unit']}-level paired bootstrap "
        f"({s['n_units']} units, {s['n_boot']} resamples, {100 * s['ci']:.0f}% intervals)",
    ]
    th = s.get("thresholds") or {}
    parts = []
    for which in ("reference", "new"):
        t = th.get(which) or {}
        kind = str((t.get("source") or {}).get("kind") or "source not recorded")
        value = float(t.get("value", np.nan))
        parts.append(f"{which} {value:.4g} ({t.get('rule', 'fixed')}, {kind.replace('_', ' ')})")
    lines.append("Thresholds: " + ", ".join(parts))
    lines.append("")
    lines.append(f"{'metric':<13}{'reference':>10}{'new':>9}{'diff':>9}  {'CI':<19}verdict")
    ov = cmp.overall()
    if metrics:
        ov = ov[ov["metric"].isin(metrics)]
    for r in ov.itertuples():
        ci = f"{_n(r.ci_low)} to {_n(r.ci_high)}"
        lines.append(
            f"{DISPLAY.get(r.metric, r.metric):<13}{_v(r.reference):>10}{_v(r.new):>9}"
            f"{_n(r.diff):>9}  {ci:<19}{verdict(r.metric, r.ci_low, r.ci_high)}"
        )
    changed = largest_changes(cmp.differences, k=len(cmp.differences))
    if changed.empty:
        changed = changed.assign(verdict=pd.Series(dtype=str))
    big = pd.concat(
        [
            changed[changed["verdict"] == "worse"].head(5),
            changed[changed["verdict"] == "better"].head(3),
        ]
    )
    if len(big):
        lines += [
            "",
            "Group changes beyond chance (simultaneous intervals over all groups and metrics):",
        ]
        for r in big.itertuples():
            lines.append(
                f"  {DISPLAY.get(r.metric, r.metric)} {describe_group(r.attribute, r.group)}: "
                f"{_v(r.reference)} -> {_v(r.new)} ({_n(r.diff)}, CI {_n(r.ci_low)} to "
                f"{_n(r.ci_high)}; {r.verdict})"
            )
    f = cmp.flips
    ov_f = f[f["attribute"] == "overall"]
    if len(ov_f):
        r = ov_f.iloc[0]
        lines += [
            "",
            f"Decisions flipped: {int(r.flipped)} of {int(r.n)} (positive->negative "
            f"{int(r.pos_to_neg)}, negative->positive {int(r.neg_to_pos)}); became errors "
            f"{int(r.became_error)}, corrected {int(r.became_correct)}.",
        ]
    fd = cmp.findings or {}
    if fd.get("resolved") or fd.get("new"):
        lines.append(
            f"Findings: {len(fd.get('resolved') or [])} resolved, {len(fd.get('new') or [])} new, "
            f"{len(fd.get('unchanged') or [])} unchanged."
        )
    for note in cmp.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)
