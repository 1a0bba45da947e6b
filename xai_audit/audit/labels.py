"""Multi-label audits: every label column of the manifest audited in one :class:`Audit`.

A multi-label model (one sigmoid output per finding) is audited label by label on the same
images, in one result folder:

- every label gets its operating threshold (the audit's rule applied to that label's scores),
  its subgroup tables (one table for all labels, told apart by the ``label`` column, from one
  :func:`~xai_audit.fairness.evaluate_subgroups` call on the ``N x L`` labels and scores) and
  its disparity findings, which name the label;
- explained labels (``explain_labels``) also get explanations, the explanation checks and
  galleries: each runs as a single-label audit of a *view* (the same model with that label's
  output as the positive class, the same manifest with that label column), the first in the
  result folder itself, the others in ``labels/<label>/``. Explaining is what costs, so by
  default all labels are explained when there are at most :data:`AUTO_EXPLAIN_MAX`, else the
  first label and the labels with a flagged subgroup gap (at most :data:`AUTO_EXPLAIN_MAX`).

The combined :class:`AuditResult` keeps the first explained label's explanations and checks
in its usual fields (``quality``, ``exemplars``, ``mean_maps``); the predictions table has
``label__<name>``, ``score__<name>``, ``predicted__<name>`` and ``outcome__<name>`` per
label; ``data_summary["labels"]`` lists every label (output, prevalence, threshold, whether
explained, where its explanation result lives). :func:`label_view` gives any one label's
result, on which the report and widgets work as for a single-label audit.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .result import AuditResult
    from .runner import Audit

log = logging.getLogger(__name__)

#: With at most this many labels every label is explained by default; with more, the first
#: label and the flagged ones, at most this many (each explained label costs a full pass of
#: every attribution method and the explanation checks).
AUTO_EXPLAIN_MAX = 5
#: Folder (inside the result folder) of the explained labels after the first.
LABEL_DIR = "labels"
#: Per-label columns of the combined predictions table: ``<kind>__<label>``.
LABEL_COLUMNS = ("label", "score", "predicted", "outcome")


def is_multilabel(data: Any) -> bool:
    """Whether a manifest has several label columns (a multi-label audit)."""
    return len(getattr(data, "label_cols", ())) > 1


def folder_name(label: str) -> str:
    """A file-system-safe folder name for a label (``labels/<name>``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("._") or "label"


# ---------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class LabelPlan:
    """Which model output each label column is, and which labels are explained.

    Attributes
    ----------
    labels : list of str
        The manifest's label columns, in order.
    outputs : list of int
        The model output of each label.
    explain : "auto", "all" or list of str
        The ``explain_labels`` setting.
    """

    labels: list[str]
    outputs: list[int]
    explain: Any = "auto"

    def explained(self, flags: Sequence[dict[str, Any]] = ()) -> list[str]:
        """The labels to explain, in label order (the first is the primary one).

        ``flags`` (the subgroup flags, each with its ``label``) are only needed for
        ``"auto"`` with more than :data:`AUTO_EXPLAIN_MAX` labels.
        """
        if self.explain == "all":
            return list(self.labels)
        if isinstance(self.explain, (list, tuple)):
            wanted = {str(x) for x in self.explain}
            return [lab for lab in self.labels if lab in wanted]
        if len(self.labels) <= AUTO_EXPLAIN_MAX:
            return list(self.labels)
        flagged = {str(f.get("label")) for f in flags}
        chosen = [self.labels[0]] + [lab for lab in self.labels[1:] if lab in flagged]
        return chosen[:AUTO_EXPLAIN_MAX]

    @property
    def primary(self) -> str:
        """The label whose explanations the combined result holds (the first explained)."""
        if isinstance(self.explain, (list, tuple)) and self.explain:
            return self.explained()[0]
        return self.labels[0]

    def output(self, label: str) -> int:
        """Model output index of ``label``."""
        return self.outputs[self.labels.index(label)]


def _explicit_names(model: Any) -> list[str] | None:
    return list(model._class_names) if getattr(model, "_class_names", None) else None


def label_problems(audit: Audit) -> list[str]:
    """Problems of a multi-label audit's settings (called from :meth:`Audit._validate`).

    The model's outputs must match the label columns: by name when the model has class
    names, else by position (as many outputs as labels); outputs must be independent
    (``multi_label=True``, sigmoid) unless an activation was chosen explicitly.
    """
    labels = list(audit.data.label_cols)
    model = audit.model
    problems = []
    names = _explicit_names(model)
    n_out = model.n_outputs
    if names is not None:
        missing = [lab for lab in labels if lab not in names]
        if missing:
            problems.append(
                f"labels: the label column(s) {missing} are not among the model's class names "
                f"{names}; name the model's outputs like the label columns "
                "(ModelAdapter(..., class_names=[...])) or choose the columns with label_cols="
            )
    elif n_out is not None and n_out != len(labels):
        problems.append(
            f"labels: the manifest has {len(labels)} label columns {labels} but the model has "
            f"{n_out} outputs; give one output per label (matched by position), or pass "
            "class_names= to match outputs to label columns by name"
        )
    if n_out is not None and model.activation == "softmax" and model._activation is None:
        problems.append(
            f"model: the manifest has {len(labels)} label columns, but the model's "
            f"{n_out} outputs are treated as mutually exclusive classes (softmax); for a "
            "multi-label model (one sigmoid per finding) pass ModelAdapter(..., "
            "multi_label=True), or activation='softmax' to audit each class one-vs-rest"
        )
    explain = audit.explain_labels
    if isinstance(explain, str):
        if explain not in ("auto", "all"):
            problems.append(
                f"explain_labels must be 'auto', 'all' or a list of label columns, got {explain!r}"
            )
    else:
        try:
            wanted = [str(x) for x in explain]
        except TypeError:
            wanted = None
        if wanted is None or not wanted:
            problems.append(
                "explain_labels must name at least one label column (or be 'auto' / 'all'); "
                f"the label columns are {labels}"
            )
        else:
            unknown = [x for x in wanted if x not in labels]
            if unknown:
                problems.append(
                    f"explain_labels names {unknown}, which are not label columns; the label "
                    f"columns are {labels}"
                )
    return problems


def plan_labels(audit: Audit) -> LabelPlan:
    """The :class:`LabelPlan` of a validated multi-label audit."""
    labels = [str(c) for c in audit.data.label_cols]
    names = _explicit_names(audit.model)
    outputs = (
        [names.index(lab) for lab in labels] if names is not None else list(range(len(labels)))
    )
    explain = audit.explain_labels
    explain = explain if isinstance(explain, str) else [str(x) for x in explain]
    return LabelPlan(labels, outputs, explain)


def view(audit: Audit, label: str, output_dir: Path | None) -> Audit:
    """A single-label :class:`Audit` of ``label``: same settings, model and images.

    The model is a shallow copy with ``label``'s output as the positive class; the manifest
    a shallow copy with that one label column. The manifest's mask column outlines the first
    label's finding only, so other labels are audited without localisation.
    """
    plan = plan_labels(audit)
    model = copy.copy(audit.model)
    model._positive_class = plan.output(label)
    data = copy.copy(audit.data)
    data.label_cols = [label]
    if label != plan.labels[0]:
        data.mask_col = None
    sub = copy.copy(audit)
    sub.model, sub.data = model, data
    validation = getattr(audit, "_validation", None)  # threshold_from's split, if any
    if validation is not None:
        sub._validation = copy.copy(validation)
        sub._validation.label_cols = [label]
    sub.name = audit.name if label == plan.primary else f"{audit.name}: {label}"
    sub._output_dir = Path(output_dir) if output_dir is not None else None
    sub._task = None
    return sub


def task_key(audit: Audit) -> list[Any]:
    """What the default output folder of a multi-label audit is named after."""
    plan = plan_labels(audit)
    primary = view(audit, plan.primary, None)
    return [primary.task.to_dict(), plan.labels, plan.outputs, plan.explain]


# ---------------------------------------------------------------------------- subgroups
def subgroup_section(
    audit: Audit, y: np.ndarray, scores: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Subgroup tables and flags of every label at once (``y``, ``scores``: ``N x L``).

    :func:`xai_audit.audit.aggregate.subgroup_section` on all labels, with ``threshold`` the
    first label's and ``thresholds`` one per label.
    """
    from . import aggregate

    base = pd.DataFrame({c: audit.data.table[c].to_numpy(dtype=object) for c in audit.sensitive})
    for j, label in enumerate(labels):
        base[f"label__{label}"] = y[:, j].astype(np.int64)
        base[f"score__{label}"] = scores[:, j]
    rules, sources = label_thresholds(audit, labels)
    section = aggregate.subgroup_section(
        base,
        audit.sensitive,
        audit.data.patient_ids,
        threshold=rules,
        intersections=audit.intersections,
        n_boot=audit.n_boot,
        ci=audit.ci,
        min_group_size=audit.min_group_size,
        tolerance=audit.tolerance,
        seed=audit.seed,
        label_name=list(labels),
    )
    thresholds = {
        str(k): (v.to_dict() if hasattr(v, "to_dict") else dict(v))
        for k, v in dict(section["threshold"]).items()
    }
    for label, src in sources.items():
        thresholds[label]["source"] = src
    section["threshold"] = thresholds[labels[0]]
    section["thresholds"] = thresholds
    return section


def label_thresholds(audit: Audit, labels: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Threshold (rule or value) and its recorded source per label.

    As the single-label run resolves it, for each label's view
    (:func:`~xai_audit.audit.change_control.resolve_threshold`): the rule on the audited
    data, or the value chosen on a validation split with ``threshold_from``.
    """
    try:
        from .change_control import resolve_threshold
    except ImportError:  # an xai_audit without change control: the rule, no source
        return {lab: audit.threshold for lab in labels}, {}
    rules, sources = {}, {}
    for label in labels:
        v = view(audit, label, None)
        rules[label], sources[label] = resolve_threshold(
            v, v.model.class_names[v.model.positive_index]
        )
    return rules, sources


# ---------------------------------------------------------------------------- findings
#: Finding kinds about the whole audit (said once); every other kind is about one label.
GLOBAL_KINDS = ("data", "coverage", "summary")
#: Coverage entries about explanations: merged over the explained labels only.
EXPLANATION_CHECKS = ("shortcuts", "sanity check", "faithfulness", "localisation")


def label_section(subgroups: dict[str, Any], label: str) -> dict[str, Any]:
    """One label's part of a multi-label subgroup section (tables, flags, threshold)."""
    out = {}
    for key, value in subgroups.items():
        if isinstance(value, pd.DataFrame) and "label" in value.columns:
            value = value[value["label"] == label].reset_index(drop=True)
        out[key] = value
    out["flags"] = [f for f in subgroups["flags"] if str(f.get("label")) == label]
    out["threshold"] = subgroups["thresholds"][label]
    out.pop("thresholds", None)
    return out


def label_findings(
    subgroups: dict[str, Any],
    qualities: dict[str, dict[str, Any]],
    data_summary: dict[str, Any],
    labels: list[str],
    performance_floor: Any = None,
) -> list[dict[str, Any]]:
    """Key findings of a multi-label audit, each label's naming its label.

    :func:`~xai_audit.audit.findings.collect_findings` runs once per label on that label's
    flags, disparities and (for an explained label) explanation checks; its label findings
    get the label in the title (``"Performance gap for sex=F on 'effusion'"``), the
    evidence and a ``label`` key; data findings are kept once and the coverage lists are
    merged (explanation checks per explained label).

    Parameters
    ----------
    subgroups : dict
        From :func:`subgroup_section` (flags and disparities of every label).
    qualities : dict
        Explained label -> its ``quality`` section.
    data_summary : dict
        The combined data summary.
    labels : list of str
        Every label, in order.
    performance_floor : dict, optional
        The audit's ``performance_floor``, judged per label where the installed
        :func:`~xai_audit.audit.findings.collect_findings` judges absolute performance.
    """
    from .findings import SEVERITY_ORDER, collect_findings, coverage_finding

    out: list[dict[str, Any]] = []
    coverages: dict[str, list[dict[str, Any]]] = {}
    for k, label in enumerate(labels):
        q = qualities.get(label) or {}
        section = label_section(subgroups, label)
        extra = {"subgroups": section, "performance_floor": performance_floor}
        found = collect_findings(
            section["flags"],
            subgroups["warnings"],
            q,
            {**data_summary, "n_with_mask": data_summary.get("n_with_mask") if k == 0 else 0},
            (q.get("region") or {}).get("description", ""),
            section.get("disparities"),
            **extra,
        )
        for f in found:
            if f["kind"] == "coverage":
                coverages[label] = list(f["evidence"]["checks"])
            elif f["kind"] == "data":
                if k == 0:
                    out.append(f)
            elif f["kind"] != "summary":
                f["title"] = f"{f['title']} on {label!r}"
                f["label"] = label
                f.setdefault("evidence", {})["label"] = label
                out.append(f)
    coverage = merge_coverage(coverages, list(qualities), labels)
    if not any(f["severity"] in ("high", "medium") for f in out):
        out.insert(
            0,
            {
                "severity": "ok",
                "kind": "summary",
                "title": "Nothing flagged in the checks that ran",
                "message": f"For none of the {len(labels)} labels ({', '.join(labels)}) was a "
                "subgroup disparity beyond the tolerance, a confirmed shortcut or a failed "
                "explanation check found in what was checked: "
                + "; ".join(f"{c['check']}: {c['detail']}" for c in coverage if c["ran"])
                + ". Not checked: "
                + "; ".join(f"{c['check']}: {c['detail']}" for c in coverage if not c["ran"])
                + ".",
                "where": "",
                "evidence": {"checks": coverage},
            },
        )
    out.append(coverage_finding(coverage))
    out.sort(key=lambda f: SEVERITY_ORDER.get(f["severity"], 9))
    for i, f in enumerate(out, start=1):
        f["id"] = f"F{i}"
    return out


def merge_coverage(
    coverages: dict[str, list[dict[str, Any]]], explained: list[str], labels: list[str]
) -> list[dict[str, Any]]:
    """One coverage list for every label (see :func:`label_findings`).

    An entry whose detail is the same for every label is kept once; explanation checks are
    listed per explained label; and an entry says which labels were not explained.
    """
    merged: list[dict[str, Any]] = []
    for entry in coverages[labels[0]]:
        name = entry["check"]
        use = explained if name in EXPLANATION_CHECKS else labels
        parts = [(lab, c) for lab in use for c in coverages.get(lab, []) if c["check"] == name]
        entry = dict(entry)
        entry["ran"] = any(c["ran"] for _, c in parts)
        details = [c["detail"] for _, c in parts]
        if len(set(details)) > 1 or (name in EXPLANATION_CHECKS and len(labels) > len(use)):
            # Labels with the same detail share one mention: "lesion, nodule: <detail>".
            same: dict[str, list[str]] = {}
            for lab, c in parts:
                same.setdefault(c["detail"], []).append(lab)
            entry["detail"] = "; ".join(f"{', '.join(labs)}: {d}" for d, labs in same.items())
        if name == "subgroup performance" and entry["ran"]:
            entry["detail"] += f", for each of the {len(labels)} labels ({', '.join(labels)})"
        merged.append(entry)
    skipped = [lab for lab in labels if lab not in explained]
    merged.insert(
        1,
        {
            "check": "explanations per label",
            "ran": True,
            "detail": f"explained: {', '.join(explained)}"
            + (
                f"; not explained (explain_labels): {', '.join(skipped)} (their subgroup "
                "performance is audited, their explanations are not)"
                if skipped
                else ""
            ),
        },
    )
    return merged


# ---------------------------------------------------------------------------- the run
def run_multilabel(audit: Audit) -> AuditResult:
    """Run a multi-label audit (see the module docstring).

    Called by :meth:`Audit.run` with the result folder claimed and locked: the primary
    label's run goes there, every other explained label's in ``labels/<label>/`` (claimed and
    locked in turn), then the combined result is saved over the primary one.
    """
    from . import aggregate
    from .store import FolderLock, ShardStore, claim_folder

    plan = plan_labels(audit)
    out = audit.output_dir
    main = view(audit, plan.primary, out)._run_locked()
    tables = aggregate.read_tables(ShardStore(out), len(audit.data))
    scores = tables["scores"][:, plan.outputs].astype(np.float64)
    y = audit.data.labels
    subgroups = subgroup_section(audit, y, scores, plan.labels)
    results = {plan.primary: main}
    for label in plan.explained(subgroups["flags"]):
        if label in results:
            continue
        log.info("Multi-label audit: explaining %r", label)
        folder = out / LABEL_DIR / folder_name(label)
        claim_folder(folder, overwrite=audit.overwrite)
        with FolderLock(folder):
            results[label] = view(audit, label, folder)._run_locked()
    result = combine(audit, plan, main, results, subgroups, y, scores)
    result.save(out)
    return result


def combine(
    audit: Audit,
    plan: LabelPlan,
    main: AuditResult,
    results: dict[str, AuditResult],
    subgroups: dict[str, Any],
    y: np.ndarray,
    scores: np.ndarray,
) -> AuditResult:
    """The combined result: ``main`` (the primary label's) with every label's tables."""
    pred = main.predictions.copy()
    thresholds = {lab: float(subgroups["thresholds"][lab]["value"]) for lab in plan.labels}
    from .aggregate import outcome

    for j, lab in enumerate(plan.labels):
        predicted = (scores[:, j] >= thresholds[lab]).astype(np.int64)
        pred[f"label__{lab}"] = y[:, j].astype(np.int64)
        pred[f"score__{lab}"] = scores[:, j]
        pred[f"predicted__{lab}"] = predicted
        pred[f"outcome__{lab}"] = outcome(y[:, j], predicted)
    out = audit.output_dir
    summary = dict(main.data_summary)
    summary["label_cols"] = list(plan.labels)
    summary["labels"] = [
        {
            "name": lab,
            "output": int(plan.output(lab)),
            "output_name": str(audit.model.class_names[plan.output(lab)]),
            "n_positive": int(np.nansum(y[:, j])),
            "prevalence": float(np.nanmean(y[:, j])) if len(y) else None,
            "threshold": thresholds[lab],
            "explained": lab in results,
            "result_dir": None
            if lab not in results
            else (
                "."
                if lab == plan.primary
                else Path(results[lab].result_dir).relative_to(out).as_posix()  # type: ignore[arg-type]
            ),
            "n_flags": sum(1 for f in subgroups["flags"] if str(f.get("label")) == lab),
            **headline(subgroups["overall"], lab),
        }
        for j, lab in enumerate(plan.labels)
    ]
    qualities = {lab: dict(r.quality) for lab, r in results.items()}
    findings = label_findings(
        subgroups, qualities, summary, plan.labels, getattr(audit, "performance_floor", None)
    )
    config = dict(main.config)
    config["labels"] = {
        "label_cols": list(plan.labels),
        "outputs": list(plan.outputs),
        "explain_labels": plan.explain,
        "explained": list(results),
        "primary": plan.primary,
    }
    model_info = dict(main.model_info)
    model_info["label_outputs"] = {
        lab: str(audit.model.class_names[plan.output(lab)]) for lab in plan.labels
    }
    prov = dict(main.provenance)
    prov.setdefault("hashes", {})
    prov["label_data_hash"] = audit.data.content_hash()
    result = copy.copy(main)
    result.name = audit.name
    result.config = config
    result.provenance = prov
    result.model_info = model_info
    result.data_summary = summary
    result.predictions = pred
    result.subgroups = type(main.subgroups)(subgroups)
    result.findings = findings
    return result


# ---------------------------------------------------------------------------- reading
def labels_of(result: AuditResult) -> list[str]:
    """The label columns of a result (one name for a single-label audit)."""
    cols = result.data_summary.get("label_cols")
    return [str(c) for c in cols] if cols else [str(result.data_summary.get("label", "label"))]


def label_view(result: AuditResult, label: str) -> AuditResult:
    """One label of a multi-label result, as a single-label :class:`AuditResult`.

    Predictions, subgroup tables and findings are that label's; for an explained label the
    explanations, checks and galleries too (read from its folder). A label that was not
    explained keeps no explanations: its ``quality`` is empty and its galleries too. Reports
    (:meth:`AuditResult.report`) and widgets work on the view as on any result.

    Raises
    ------
    KeyError
        ``label`` is not one of the result's labels.
    """
    from .result import AuditResult

    names = labels_of(result)
    if label not in names:
        raise KeyError(f"Unknown label {label!r}; this result has the labels {names}.")
    if not result.data_summary.get("label_cols"):
        return result
    entry = next(e for e in result.data_summary["labels"] if e["name"] == label)
    rel = entry.get("result_dir")
    if rel == ".":
        base = copy.copy(result)
    elif rel:
        if result.result_dir is None:
            raise ValueError("This result was never saved; its per-label results are on disk.")
        base = AuditResult.load(Path(result.result_dir) / rel)
    else:
        base = copy.copy(result)
        why = f"the label {label!r} was not explained (explain_labels)"
        base.quality = type(result.quality)(
            {
                "sample": {"n": 0, "sanity_n": 0, "rule": why, "seed": None, "outcomes": {}},
                "region": {"description": f"not searched: {why}"},
            }
        )
        ex = result.exemplars
        table = ex.get("table")
        base.exemplars = type(ex)({"table": table.iloc[0:0] if table is not None else table})
        base.mean_maps = type(result.mean_maps)()
        base.methods = []
        if hasattr(base, "slice_discovery"):  # slices found for the primary label, not this one
            base.slice_discovery = type(result.quality)()
    pred = result.predictions
    keep = [c for c in pred.columns if "__" not in c and c not in LABEL_COLUMNS]
    view_pred = pred[keep].copy()
    for kind in LABEL_COLUMNS:
        view_pred[kind] = pred[f"{kind}__{label}"].to_numpy()
    base.predictions = view_pred
    base.subgroups = type(result.subgroups)(label_section(result.subgroups, label))
    base.findings = [
        f for f in result.findings if f.get("label") in (None, label) and f["kind"] != "summary"
    ]
    summary = dict(result.data_summary)
    summary.pop("label_cols", None)  # a view is a single-label result (its overview stays)
    summary.update(
        label=label,
        n_positive=entry["n_positive"],
        prevalence=entry["prevalence"],
        positive_class=entry["output_name"],
    )
    base.data_summary = summary
    base.name = f"{result.name}: {label}"
    return base


# ---------------------------------------------------------------------------- reports
def report_name(path: Path, label: str) -> Path:
    """Path of one label's report next to the main one: ``<stem>_<label>.html``."""
    return path.with_name(f"{path.stem}_{folder_name(label)}{path.suffix or '.html'}")


def write_label_reports(
    result: AuditResult, path: str | Path, *, pdf: bool = False, overwrite: bool = False
) -> Path:
    """The reports of a multi-label result: a main one and one per label.

    The main report (``path``) lists every label's key findings and, in a "Labels" section,
    each label's headline numbers with a link to its report; its sections 4-8 show the
    primary label (the first explained one). Each label's report (``<stem>_<label>.html``,
    next to it) is the report of :func:`label_view`.

    Returns
    -------
    Path
        The main report.
    """
    from ..report import write_report

    path = Path(path)
    names = labels_of(result)
    links = {lab: report_name(path, lab).name for lab in names}
    primary = str(result.config.get("labels", {}).get("primary") or names[0])
    for lab in names:
        v = label_view(result, lab)
        v.data_summary = {**v.data_summary, "label_reports": links, "label_report_main": path.name}
        write_report(v, report_name(path, lab), pdf=pdf, overwrite=overwrite)
    main = label_view(result, primary)
    main.name = result.name
    main.findings = list(result.findings)
    main.data_summary = {**main.data_summary, "label_reports": links, "label_report_main": None}
    return write_report(main, path, pdf=pdf, overwrite=overwrite)


def headline(overall: pd.DataFrame, label: str) -> dict[str, Any]:
    """AUROC (with CI), sensitivity and specificity of one label (for the label overview)."""

    def get(metric: str, col: str = "value") -> float | None:
        row = overall[(overall["label"] == label) & (overall["metric"] == metric)]
        v = float(row[col].iloc[0]) if len(row) else float("nan")
        return v if np.isfinite(v) else None

    return {
        "auroc": get("auroc"),
        "auroc_ci_low": get("auroc", "ci_low"),
        "auroc_ci_high": get("auroc", "ci_high"),
        "sensitivity": get("sensitivity"),
        "specificity": get("specificity"),
    }


def label_model(result: AuditResult, label: str, model: Any) -> Any:
    """``model`` (a multi-label :class:`~xai_audit.model.ModelAdapter`) aimed at ``label``.

    A shallow copy whose positive class is ``label``'s output (as the label's audit ran),
    for widgets that explain or re-score a label's cases. None stays None.
    """
    if model is None or not result.data_summary.get("label_cols"):
        return model
    entry = next((e for e in result.data_summary["labels"] if e["name"] == label), None)
    if entry is None:
        raise KeyError(f"Unknown label {label!r}; this result has the labels {labels_of(result)}.")
    out = copy.copy(model)
    out._positive_class = int(entry["output"])
    return out
