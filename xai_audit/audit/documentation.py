"""Regulatory documentation fields: model/data card items, deployment, life cycle, document control.

An audit measures; a reviewer also needs what only the manufacturer can state (how the labels
were established, whether the training data are independent of the audited data, how the
device is monitored after release...). These fields are given in the config (key
``documentation:``) or to ``Audit(..., documentation={...})`` and shown in the report's
documentation section, where each one that is not given reads "not provided" in a visible
checklist instead of being left out. Document-control fields (id, revision, author, reviewer
sign-off) sit under ``documentation.document_control`` and may also be given when the report
is (re)built: ``result.report(path, documentation={...})``.

Every value is free text: a string, a list of strings, or a mapping of short labels to
strings (e.g. demographics ``{sex: "F 51%, M 49%"}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DocField:
    """One documentation field: config key, label shown, checklist group, what to write."""

    key: str
    label: str
    group: str
    help: str


#: The documentation fields, in the order of the report's checklist.
FIELDS: tuple[DocField, ...] = (
    DocField("manufacturer", "Manufacturer / provider", "Identity",
             "Legal name and address of the manufacturer (provider) of the device."),
    DocField("intended_use_environment", "Intended use environment", "Intended use",
             "Clinical setting, user role and place in the workflow (e.g. second reader in a "
             "radiology reading room)."),
    DocField("instructions_for_use", "Instructions for use", "Intended use",
             "Reference to the instructions for use / user interface description."),
    DocField("human_oversight", "Human oversight and human-AI team use", "Intended use",
             "Who reviews the output, what they do with it, and any evidence on the "
             "performance of the clinician together with the model."),
    DocField("training_data", "Training data summary", "Data",
             "Source, size, period, sites and selection of the training (and tuning) data."),
    DocField("training_data_demographics", "Training data demographics", "Data",
             "Distribution of sex, age, ethnicity, sites or devices in the training data."),
    DocField("independence_statement", "Independence of training and audited data", "Data",
             "Whether the audited cases (patients, sites, time period) were kept apart from "
             "training and tuning, and how."),
    DocField("reference_standard", "Reference standard", "Data",
             "How the labels were established (e.g. biopsy, consensus of two radiologists)."),
    DocField("acquisition", "Acquisition devices and protocols", "Data",
             "Scanner manufacturers/models, modality, protocols of the training and audited "
             "data."),
    DocField("data_preparation", "Data selection, labelling and cleaning", "Data",
             "Inclusion/exclusion criteria, labelling procedure, outlier handling."),
    DocField("development_team", "Development team expertise", "Development",
             "Clinical and technical expertise involved across the life cycle."),
    DocField("model_design", "Model design rationale", "Development",
             "Key design choices and why they suit the data and the intended use."),
    DocField("quality_management", "Quality management and software life cycle", "Development",
             "Quality management system and software engineering practices followed."),
    DocField("robustness_cybersecurity", "Robustness and cybersecurity measures", "Development",
             "Measures against input perturbations, failures and attacks."),
    DocField("risk_management", "Risk management", "Life cycle",
             "Risk notes or the reference of the risk management file."),
    DocField("monitoring_plan", "Post-market monitoring plan", "Life cycle",
             "How performance (overall and per subgroup) is monitored after deployment."),
    DocField("change_control", "Change control", "Life cycle",
             "Reference of the change-control procedure / predetermined change control plan."),
    DocField("standards_applied", "Standards applied", "Life cycle",
             "Harmonised and other standards applied (e.g. ISO 13485, ISO 14971, IEC 62304)."),
    DocField("declaration_of_conformity", "Declaration of conformity", "Life cycle",
             "Reference of the EU declaration of conformity, where one exists."),
)  # fmt: skip
FIELD_KEYS = tuple(f.key for f in FIELDS)

#: Model-card fields (``model_card:``) that the checklist also lists.
CARD_FIELDS: tuple[DocField, ...] = (
    DocField("intended_use", "Intended use", "Intended use", "Model card: intended use."),
    DocField("intended_users", "Intended users", "Intended use", "Model card: intended users."),
    DocField("out_of_scope_use", "Out-of-scope use", "Intended use",
             "Model card: uses the model is not meant for."),
    DocField("limitations", "Known limitations", "Intended use", "Model card: limitations."),
)  # fmt: skip

#: Document-control fields (``documentation.document_control``).
DOCUMENT_CONTROL: tuple[tuple[str, str], ...] = (
    ("document_id", "Document id"),
    ("revision", "Revision"),
    ("date", "Issue date"),
    ("author", "Author"),
    ("reviewer", "Reviewer"),
    ("review_date", "Review date"),
    ("approved_by", "Approved by"),
    ("approval_date", "Approval date"),
)
DOCUMENT_CONTROL_KEYS = tuple(k for k, _ in DOCUMENT_CONTROL)


def _text(value: Any, where: str, problems: list[str]) -> Any:
    """A value as a string, a list of strings or a mapping of strings; None when empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        problems.append(f"{where}: give text, not {value!r}")
        return None
    if isinstance(value, (str, int, float)):
        text = str(value).strip()
        return text or None
    if isinstance(value, (list, tuple)):
        items = [_text(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        items = [str(v) for v in items if v is not None]
        return items or None
    if isinstance(value, Mapping):
        out = {str(k): _text(v, f"{where}.{k}", problems) for k, v in value.items()}
        out = {k: (v if isinstance(v, str) else "; ".join(map(str, v))) for k, v in out.items()
               if v is not None}  # fmt: skip
        return out or None
    problems.append(f"{where}: give text, a list of texts or a mapping, not {type(value).__name__}")
    return None


def check_documentation(doc: Any) -> list[str]:
    """Problems with a ``documentation`` mapping (empty list when valid)."""
    problems: list[str] = []
    normalise_documentation(doc, problems)
    return problems


def normalise_documentation(doc: Any, problems: list[str] | None = None) -> dict[str, Any]:
    """The documentation as plain data: known keys only, values stripped, empties dropped.

    Parameters
    ----------
    doc : mapping or None
        Field key -> text; ``document_control`` -> mapping of its keys.
    problems : list, optional
        Problems are appended here; when omitted, they raise.

    Raises
    ------
    ConfigError
        Unknown keys or values that are not text (only when ``problems`` is None).
    """
    own = problems is None
    problems = [] if problems is None else problems
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        problems.append(f"documentation must be a mapping of fields, got {type(doc).__name__}")
        doc = {}
    known = set(FIELD_KEYS) | {"document_control"}
    unknown = sorted(set(map(str, doc)) - known)
    if unknown:
        problems.append(
            f"documentation: unknown field(s) {unknown}; known: {list(FIELD_KEYS)} and "
            "document_control"
        )
    out: dict[str, Any] = {}
    for key in FIELD_KEYS:
        v = _text(doc.get(key), f"documentation.{key}", problems)
        if v is not None:
            out[key] = v
    dc = doc.get("document_control")
    if dc is not None:
        if not isinstance(dc, Mapping):
            problems.append("documentation.document_control must be a mapping")
        else:
            bad = sorted(set(map(str, dc)) - set(DOCUMENT_CONTROL_KEYS))
            if bad:
                problems.append(
                    f"documentation.document_control: unknown field(s) {bad}; known: "
                    f"{list(DOCUMENT_CONTROL_KEYS)}"
                )
            ctl = {}
            for key in DOCUMENT_CONTROL_KEYS:
                v = _text(dc.get(key), f"documentation.document_control.{key}", problems)
                if isinstance(v, (list, dict)):
                    problems.append(f"documentation.document_control.{key}: give one line of text")
                elif v is not None:
                    ctl[key] = v
            if ctl:
                out["document_control"] = ctl
    if own and problems:
        from .config import ConfigError

        raise ConfigError(problems, "documentation")
    return out


def merge_documentation(base: Mapping[str, Any] | None, override: Any) -> dict[str, Any]:
    """``base`` with the fields of ``override`` (validated) on top; document control merged."""
    out = dict(base or {})
    new = normalise_documentation(override)
    dc = {**dict(out.get("document_control") or {}), **new.pop("document_control", {})}
    out.update(new)
    if dc:
        out["document_control"] = dc
    return out
