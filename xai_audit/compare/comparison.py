"""``compare_audits``: two audits of the same cases -> a :class:`Comparison`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..audit.result import AuditResult, load_tree, save_tree
from ..fairness._common import INTERSECTION_SEP
from ..fairness.inputs import Group, as_clusters, as_specs, enumerate_groups, group_keys
from .behaviour import explanation_changes, findings_change, flips_table
from .paired import (
    COMPARE_METRICS,
    diff_interval,
    gap_change_interval,
    metric_index,
    paired_metrics,
    simultaneous_interval,
)

#: ``attribute`` and ``group`` of the whole-data rows of every comparison table.
OVERALL = "overall"
#: Columns of :attr:`Comparison.differences` (a contract: acceptance criteria read them).
DIFFERENCE_COLUMNS = [
    "metric",
    "attribute",
    "group",
    "reference",
    "new",
    "diff",
    "ci_low",
    "ci_high",
    "n",
    "n_pos",
    "status",
    "sim_low",
    "sim_high",
]
GAP_COLUMNS = [
    "metric",
    "attribute",
    "group",
    "reference_gap",
    "new_gap",
    "change",
    "ci_low",
    "ci_high",
    "n",
    "sim_low",
    "sim_high",
]
KIND = "xai_audit.comparison"
FORMAT = 1


class ComparisonError(ValueError):
    """Two audits cannot be compared (different cases, labels or attributes)."""


@dataclass
class Comparison:
    """Model-vs-model comparison of two audits on the same cases.

    Attributes
    ----------
    reference_name, new_name : str
        Titles of the two audits (and model name/version).
    settings : dict
        ``n_cases, n_units, resampling_unit, n_boot, ci, seed, min_group_size, metrics,
        attributes, intersections, thresholds`` (each model's value and rule).
    differences : pandas.DataFrame
        One row per metric and group: ``metric, attribute, group, reference, new, diff,
        ci_low, ci_high, n`` (+ ``n_pos, status, sim_low, sim_high``). ``diff = new -
        reference``, with its paired patient-level percentile interval; the whole data set is
        ``attribute == group == "overall"``. ``sim_low, sim_high``: simultaneous (max-t)
        intervals over every row, used to list group changes without chance findings.
    gap_changes : pandas.DataFrame
        Per group and metric, the gap to overall in each model and its change
        (``metric, attribute, group, reference_gap, new_gap, change, ci_low, ci_high, n``).
    flips : pandas.DataFrame
        Per group: decisions that flipped (``pos_to_neg, neg_to_pos``) and flips that became
        errors or were corrected.
    explanations : pandas.DataFrame
        Explanation behaviour per method (shortcut share, localisation, faithfulness,
        sanity) in both audits.
    findings : dict
        ``resolved`` / ``new`` / ``unchanged`` findings.
    notes : list of str
        What the reader must know (resampling unit, thresholds, skipped groups).
    reference, new : AuditResult or None
        The two results (not saved with the comparison; kept for criteria and widgets).
    """

    reference_name: str
    new_name: str
    settings: dict[str, Any]
    differences: pd.DataFrame
    gap_changes: pd.DataFrame
    flips: pd.DataFrame
    explanations: pd.DataFrame
    findings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference: AuditResult | None = field(default=None, repr=False)
    new: AuditResult | None = field(default=None, repr=False)

    _FIELDS = (
        "reference_name",
        "new_name",
        "settings",
        "differences",
        "gap_changes",
        "flips",
        "explanations",
        "findings",
        "notes",
    )

    # -------------------------------------------------------------- access
    def overall(self) -> pd.DataFrame:
        """The whole-data rows of :attr:`differences` (one per metric)."""
        d = self.differences
        return d[(d["attribute"] == OVERALL) & (d["group"] == OVERALL)].reset_index(drop=True)

    def summary(self, metrics: Sequence[str] | None = None) -> str:
        """Plain-text summary: overall differences, the largest group changes, flips."""
        from .text import summary_text

        return summary_text(self, metrics)

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the comparison (tables as CSV, the rest as JSON) to ``directory``.

        The two audits are not copied; their folders are recorded in ``settings``.
        """
        from ..audit.store import claim_folder

        root = Path(directory)
        claim_folder(root, overwrite=overwrite)
        content = {"kind": KIND, "format": FORMAT, "written_by": f"xai_audit {__version__}"}
        content.update({k: getattr(self, k) for k in self._FIELDS})
        save_tree(root, content)
        return root

    @classmethod
    def load(cls, directory: str | Path) -> Comparison:
        """Read a comparison written by :meth:`save`."""
        root = Path(directory)
        if not (root / "result.json").is_file():
            raise FileNotFoundError(f"No comparison in {str(root)!r} (missing result.json).")
        content = load_tree(root)
        if content.get("kind") != KIND:
            raise ComparisonError(
                f"{str(root)!r} holds an audit result, not a comparison; load it with "
                "AuditResult.load, or compare two audits with compare_audits."
            )
        return cls(**{k: content.get(k) for k in cls._FIELDS})

    # -------------------------------------------------------------- outputs
    def report_data(self) -> dict[str, Any]:
        """The comparison report's content as plain data (the JSON twin)."""
        from .report import build_comparison_data

        return build_comparison_data(self)

    def to_json(self, indent: int | None = 1) -> str:
        """The JSON twin of the comparison report."""
        from ..audit._io import dumps

        return dumps(self.report_data(), indent=indent)

    def report(self, path: str | Path, *, criteria: Any = None, overwrite: bool = False) -> Path:
        """Write the self-contained comparison HTML report and its JSON twin (``.json``).

        ``criteria``: the verdicts of ``evaluate_criteria(..., comparison=self)``, shown in
        the report's criteria section.
        """
        from .report import write_comparison_report

        return write_comparison_report(self, path, criteria=criteria, overwrite=overwrite)

    # -------------------------------------------------------------- widgets
    def result(self, which: str) -> AuditResult:
        """The ``"reference"`` or ``"new"`` audit result (kept in memory or reloaded)."""
        if which not in ("reference", "new"):
            raise ValueError(f"which must be 'reference' or 'new', not {which!r}")
        res = getattr(self, which)
        if res is None:
            folder = (self.settings.get("folders") or {}).get(which)
            if not folder:
                raise ValueError(f"This comparison does not know where the {which} audit lives.")
            res = AuditResult.load(folder)
            setattr(self, which, res)
        return res

    def dashboard(self, which: str = "new", **kwargs: Any) -> Any:
        """Open the subgroup dashboard on the reference or the new audit."""
        from .widgets import open_widget

        return open_widget(self, which, "dashboard", **kwargs)

    def explorer(self, which: str = "new", **kwargs: Any) -> Any:
        """Open the explanation explorer on the reference or the new audit."""
        from .widgets import open_widget

        return open_widget(self, which, "explorer", **kwargs)

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"Comparison({self.reference_name!r} -> {self.new_name!r}, cases={s.get('n_cases')}, "
            f"{s.get('resampling_unit')}-level bootstrap n_boot={s.get('n_boot')})"
        )


# ------------------------------------------------------------------ building
def _as_result(obj: AuditResult | str | Path, which: str) -> AuditResult:
    if isinstance(obj, AuditResult):
        return obj
    if isinstance(obj, (str, Path)):
        return AuditResult.load(obj)
    raise TypeError(f"{which} must be an AuditResult or the folder of a saved one, not {obj!r}")


def _single_label(result: AuditResult, label: str | None, which: str) -> AuditResult:
    """The result itself (single label) or its view for ``label`` (multi-label audits)."""
    pred = result.predictions
    if pred is not None and "score" in pred and "label" in pred:
        own = (result.subgroups.get("threshold") or {}).get("label")
        if label is not None and own is not None and str(label) != str(own):
            raise ComparisonError(
                f"The {which} audit is single-label ({own!r}); it has no label {label!r}."
            )
        return result
    from ..audit.labels import label_view, labels_of

    names = labels_of(result)
    if label is None:
        raise ComparisonError(
            f"The {which} audit is multi-label ({names}); choose the label to compare "
            "(label=..., CLI --label)."
        )
    try:
        return label_view(result, label)
    except KeyError as exc:
        raise ComparisonError(str(exc).strip("'\"")) from None


def _case_index(result: AuditResult, which: str) -> pd.Series:
    pred = result.predictions
    if pred is None or "case_id" not in pred or "score" not in pred or "label" not in pred:
        raise ComparisonError(f"The {which} audit has no predictions table with case ids.")
    ids = pred["case_id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ComparisonError(
            f"The {which} audit has {dup.nunique()} case id(s) that occur more than once; "
            "cases are matched by id, so ids must be unique."
        )
    return pd.Series(np.arange(len(ids)), index=ids.to_numpy())


def _match_cases(ref: AuditResult, new: AuditResult) -> np.ndarray:
    """Row of each reference case in the new audit's predictions (clear error if they differ)."""
    a, b = _case_index(ref, "reference"), _case_index(new, "new")
    only_a = a.index.difference(b.index)
    only_b = b.index.difference(a.index)
    if len(only_a) or len(only_b):
        raise ComparisonError(
            f"The two audits do not cover the same cases: {len(only_a)} of the reference's "
            f"{len(a)} cases are not in the new audit and {len(only_b)} of the new audit's "
            f"{len(b)} are not in the reference. A paired comparison needs both models scored "
            "on the same cases: rerun the new audit on the reference's manifest (same case ids)."
        )
    return b.loc[a.index].to_numpy()


def _patient_units(
    patients: Any, ref: AuditResult, new: AuditResult, case_ids: np.ndarray
) -> tuple[Any, str]:
    """Patient id per case (in the reference order) or None, and where it came from."""
    if patients is None:
        for col in ("patient_id", "patient"):
            if col in ref.predictions and col in new.predictions:
                return ref.predictions[col].to_numpy(dtype=object), f"column {col!r}"
        return None, ""
    if isinstance(patients, str):
        if patients not in ref.predictions:
            raise ComparisonError(f"patients={patients!r} is not a column of the predictions.")
        return ref.predictions[patients].to_numpy(dtype=object), f"column {patients!r}"
    if hasattr(patients, "case_ids") and hasattr(patients, "patient_ids"):  # a Manifest
        pids = patients.patient_ids
        if pids is None:
            return None, ""
        patients = pd.Series(np.asarray(pids, dtype=object), index=np.asarray(patients.case_ids))
    if isinstance(patients, pd.DataFrame):
        if not {"case_id", "patient_id"} <= set(patients.columns):
            raise ComparisonError("patients: a table needs columns case_id and patient_id.")
        patients = pd.Series(
            patients["patient_id"].to_numpy(dtype=object), index=patients["case_id"].to_numpy()
        )
    if isinstance(patients, Mapping):
        patients = pd.Series(dict(patients), dtype=object)
    if isinstance(patients, pd.Series):
        s = patients.copy()
        s.index = s.index.map(str)
        s = s[~s.index.duplicated()]
        missing = pd.Index(case_ids).difference(s.index)
        if len(missing):
            raise ComparisonError(
                f"patients: {len(missing)} of the {len(case_ids)} compared cases have no "
                "patient id in what was given (match is on the case id)."
            )
        return s.loc[case_ids].to_numpy(dtype=object), "given mapping"
    arr = np.asarray(patients, dtype=object).ravel()
    if arr.size != len(case_ids):
        raise ComparisonError(
            f"patients has {arr.size} values; the audits have {len(case_ids)} cases."
        )
    return arr, "given array"


def _intersections(result: AuditResult) -> list[tuple[str, ...]]:
    names = (result.subgroups.get("settings") or {}).get("intersections") or []
    return [tuple(str(n).split(INTERSECTION_SEP)) for n in names]


def _threshold(result: AuditResult) -> dict[str, Any]:
    """Value, rule and source (given / validation split / audited data) of the threshold."""
    from ..audit.operating_point import source_of

    thr = dict(result.subgroups.get("threshold") or {})
    out = {k: v for k, v in thr.items() if isinstance(v, (str, int, float, bool, type(None)))}
    src = source_of(thr)
    out["source"] = {
        k: v for k, v in src.items() if isinstance(v, (str, int, float, bool, type(None)))
    }
    return out


def _threshold_note(tinfo: dict[str, dict[str, Any]]) -> str:
    words = {"given": "given in the settings", "validation_split": "chosen on a validation split",
             "audited_data": "chosen on the audited data"}  # fmt: skip
    parts = []
    for which in ("reference", "new"):
        t = tinfo[which]
        kind = (t.get("source") or {}).get("kind", "audited_data")
        parts.append(
            f"{which} {float(t.get('value', float('nan'))):.4g} ({words.get(kind, kind)}, "
            f"rule {t.get('rule', 'fixed')})"
        )
    text = "Each model is judged at its own audited threshold: " + "; ".join(parts) + "."
    if any((tinfo[w].get("source") or {}).get("optimistic") for w in ("reference", "new")):
        text += (
            " A threshold chosen on the audited data itself makes that model's sensitivity, "
            "specificity, PPV and NPV optimistic (AUROC, Brier score and ECE do not depend on it)."
        )
    return text


def compare_audits(
    reference: AuditResult | str | Path,
    new: AuditResult | str | Path,
    *,
    patients: Any = None,
    metrics: Sequence[str] = COMPARE_METRICS,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int | None = 0,
    min_group_size: int | None = None,
    label: str | None = None,
) -> Comparison:
    """Compare two audits of the same cases: paired differences ``new - reference``.

    Each model is judged at its own audited operating threshold (``result.threshold``; the
    rule that chose it is stated in ``settings["thresholds"]``). Patients (or images, without
    patient ids) are resampled once per bootstrap replicate and the same resample is applied
    to both models, so every interval is for the paired difference.

    Parameters
    ----------
    reference, new : AuditResult or path
        The two audits (objects, or folders written by ``AuditResult.save`` / ``xai-audit
        run``). They must hold the same case ids, with the same labels and attributes.
    patients : optional
        Patient id per case for a patient-level bootstrap: a
        :class:`~xai_audit.data.Manifest` (its ``patient_ids``), a mapping or Series
        ``case_id -> patient id``, a DataFrame with ``case_id`` and ``patient_id`` columns, or
        the name of a predictions column. Audit results keep no patient ids, so without this
        argument the bootstrap resamples images (a warning says so when the audits had
        patient ids). Patient ids are only used to group cases; they are not stored.
    metrics : sequence of str
        Metrics compared (default AUROC, sensitivity, specificity, PPV, NPV, Brier, ECE).
    n_boot, ci, seed :
        Bootstrap resamples, interval level and seed.
    min_group_size : int, optional
        Groups with fewer cases get no metrics; default the reference audit's setting.
    label : str, optional
        For multi-label audits: the label to compare (required there).

    Returns
    -------
    Comparison

    Raises
    ------
    ComparisonError
        The audits cover different cases (the message says how many differ), labels or
        attributes of a case differ, or ``patients`` does not cover the cases.
    """
    ref = _single_label(_as_result(reference, "reference"), label, "reference")
    nw = _single_label(_as_result(new, "new"), label, "new")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, not {ci}")
    idx_m = metric_index(metrics)
    rows_new = _match_cases(ref, nw)
    pa = ref.predictions.reset_index(drop=True)
    pb = nw.predictions.iloc[rows_new].reset_index(drop=True)
    case_ids = pa["case_id"].astype(str).to_numpy()
    y = pa["label"].to_numpy(dtype=np.int64)
    bad = int((y != pb["label"].to_numpy(dtype=np.int64)).sum())
    if bad:
        raise ComparisonError(
            f"{bad} of the {len(y)} cases have a different label in the two audits; compare "
            "audits of the same manifest and label."
        )
    settings_a = ref.subgroups.get("settings") or {}
    attributes = [str(a) for a in (settings_a.get("attributes") or [])]
    attributes = [a for a in attributes if a in pa.columns]
    missing_b = [a for a in attributes if a not in pb.columns]
    if missing_b:
        raise ComparisonError(
            f"The new audit has no attribute(s) {missing_b} that the reference audited; audit "
            "both models with the same sensitive attributes."
        )
    attrs = pd.DataFrame({a: group_keys(pa[a]) for a in attributes})
    for a in attributes:
        diff_attr = int((attrs[a].to_numpy() != group_keys(pb[a])).sum())
        if diff_attr:
            raise ComparisonError(
                f"Attribute {a!r} differs for {diff_attr} cases between the two audits; "
                "compare audits of the same manifest."
            )
    inter = [c for c in _intersections(ref) if all(x in attributes for x in c)]
    specs = as_specs(attributes, inter)
    groups = [Group(-1, OVERALL, OVERALL, np.arange(len(y)))] + enumerate_groups(attrs, specs)

    notes: list[str] = []
    pids, source = _patient_units(patients, ref, nw, case_ids)
    units, n_units = as_clusters(pids, len(y))
    unit = "patient" if pids is not None else "image"
    patient_level = [bool((r.data_summary or {}).get("patient_level_bootstrap")) for r in (ref, nw)]
    if pids is None and any(patient_level):
        msg = (
            "The audits resampled patients, but audit results keep no patient ids: this "
            "comparison resamples images, so its intervals are too narrow when patients have "
            "several images. Pass patients=<the manifest> (CLI: --manifest) for patient-level "
            "intervals."
        )
        notes.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    elif pids is not None:
        notes.append(
            f"Patient-level paired bootstrap: {n_units} patients for {len(y)} cases (ids from "
            f"the {source}; used only to group cases, not stored)."
        )
    thr = [ref.threshold, nw.threshold]
    tinfo = {"reference": _threshold(ref), "new": _threshold(nw)}
    notes.append(_threshold_note(tinfo))
    mgs = int(
        min_group_size if min_group_size is not None else settings_a.get("min_group_size", 30)
    )
    n_bins = int(settings_a.get("n_bins", 10))
    s_ref = pa["score"].to_numpy(dtype=np.float64)
    s_new = pb["score"].to_numpy(dtype=np.float64)
    pm = paired_metrics(y, (s_ref, s_new), thr, units, n_units, groups, min_group_size=mgs,
                        n_boot=n_boot, seed=seed, n_bins=n_bins)  # fmt: skip
    diff, lo, hi = diff_interval(pm, ci)
    sim_lo, sim_hi, crit = simultaneous_interval(pm, idx_m, ci)
    ref_gap, new_gap, change, glo, ghi = gap_change_interval(pm, ci)
    gsim_lo, gsim_hi, _ = simultaneous_interval(pm, idx_m, ci, gaps=True)

    drows, grows = [], []
    for gi, g in enumerate(groups):
        for k, (mi, metric) in enumerate(zip(idx_m, metrics)):
            drows.append((metric, g.attribute, g.name, pm.point[0, gi, mi], pm.point[1, gi, mi],
                          diff[gi, mi], lo[gi, mi], hi[gi, mi], int(pm.counts[gi, 0]),
                          int(pm.counts[gi, 1]), pm.status[gi], sim_lo[gi, k],
                          sim_hi[gi, k]))  # fmt: skip
            if gi:
                grows.append((metric, g.attribute, g.name, ref_gap[gi, mi], new_gap[gi, mi],
                              change[gi, mi], glo[gi, mi], ghi[gi, mi], int(pm.counts[gi, 0]),
                              gsim_lo[gi, k], gsim_hi[gi, k]))  # fmt: skip
    differences = pd.DataFrame(drows, columns=DIFFERENCE_COLUMNS)
    gap_changes = pd.DataFrame(grows, columns=GAP_COLUMNS)
    small = [g for g, st in zip(groups, pm.status) if st == "small"]
    if small:
        notes.append(
            f"{len(small)} group(s) have fewer than {mgs} cases and get no comparison "
            "(their rows are n/a)."
        )
    flips = flips_table(y, s_ref >= thr[0], s_new >= thr[1], groups)
    expl = explanation_changes(
        ref, nw, case_ids, units, n_units, n_boot=n_boot, seed=seed, ci=ci, attrs=attrs
    )
    folders = {
        k: (str(r.result_dir) if r.result_dir is not None else None)
        for k, r in (("reference", ref), ("new", nw))
    }
    settings = {
        "n_cases": int(len(y)),
        "n_units": int(n_units),
        "resampling_unit": unit,
        "n_boot": int(n_boot),
        "ci": float(ci),
        "simultaneous_critical_value": crit,
        "seed": seed,
        "min_group_size": mgs,
        "metrics": list(metrics),
        "attributes": attributes,
        "intersections": [s.name for s in specs if len(s.columns) > 1],
        "thresholds": tinfo,
        "models": {"reference": _model_name(ref), "new": _model_name(nw)},
        "folders": folders,
    }
    return Comparison(
        reference_name=str(ref.name),
        new_name=str(nw.name),
        settings=settings,
        differences=differences,
        gap_changes=gap_changes,
        flips=flips,
        explanations=expl,
        findings=findings_change(ref, nw),
        notes=notes,
        reference=ref,
        new=nw,
    )


def _model_name(result: AuditResult) -> str:
    mi = result.model_info or {}
    card = mi.get("card") or {}
    name = card.get("name") or mi.get("name") or "model"
    version = card.get("version") or mi.get("version")
    return f"{name} {version}" if version else str(name)
