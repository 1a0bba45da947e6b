"""Report content for a regulatory reviewer: documentation checklist, compliance map, integrity.

* :func:`documentation_section`: every documentation field (model card, data card,
  deployment, life cycle) with its value or "not provided", and the document-control block.
* :func:`compliance_section`: each EU AI Act Annex IV item and each of the ten Good Machine
  Learning Practice principles (FDA, Health Canada, MHRA, October 2021) mapped to the report
  sections that answer it. The status is computed from what the report data actually contain:
  ``covered`` when every piece of evidence listed for the item is present, ``partly`` when some
  is, ``not provided`` when none is. Item texts are short paraphrases, not the legal text.
  "Covered" means the report holds the information (or the manufacturer's reference to it); it
  is not an assessment of conformity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..audit.documentation import (
    CARD_FIELDS,
    DOCUMENT_CONTROL,
    FIELDS,
    merge_documentation,
    normalise_documentation,
)
from .integrity import HASHED_CONTENT

if TYPE_CHECKING:
    from ..audit.result import AuditResult

#: Version of the JSON twin's layout (``schema_version``; schema in ``report/schema/``).
SCHEMA_VERSION = "1.0"
NOT_PROVIDED = "not provided"
STATUSES = ("covered", "partly", "not provided")


# ------------------------------------------------------------------------------ documentation
def stored_documentation(result: AuditResult) -> dict[str, Any]:
    """The documentation recorded with the result (config key or ``Audit(documentation=)``)."""
    cfg = result.config or {}
    doc = cfg.get("documentation") or (cfg.get("settings") or {}).get("documentation") or {}
    return normalise_documentation(doc)


def documentation_section(
    result: AuditResult, documentation: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The documentation checklist and document control (``documentation`` overrides fields)."""
    doc = stored_documentation(result)
    if documentation:
        doc = merge_documentation(doc, documentation)
    card = dict(result.model_info.get("card") or {})
    rows = []
    for f in CARD_FIELDS + FIELDS:
        value, source = doc.get(f.key), "documentation"
        if f.key in {c.key for c in CARD_FIELDS} or (value is None and f.key == "training_data"):
            value, source = card.get(f.key), "model_card"
        if isinstance(value, str):
            value = value.strip() or None
        if isinstance(value, (list, dict)) and not value:
            value = None
        rows.append(
            {
                "key": f.key,
                "label": f.label,
                "group": f.group,
                "help": f.help,
                "value": value,
                "provided": value is not None,
                "source": source if value is not None else None,
            }
        )
    dc = dict(doc.get("document_control") or {})
    control = [{"key": k, "label": lab, "value": dc.get(k)} for k, lab in DOCUMENT_CONTROL]
    return {
        "fields": rows,
        "n_provided": sum(r["provided"] for r in rows),
        "n_fields": len(rows),
        "document_control": {
            "fields": control,
            "signed_off": bool(dc.get("reviewer") and dc.get("review_date")),
            "approved": bool(dc.get("approved_by") and dc.get("approval_date")),
        },
    }


# ------------------------------------------------------------------------------ evidence
Evidence = tuple[str, Callable[[dict[str, Any]], bool]]


def _get(d: Mapping[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(p)  # type: ignore[assignment]
    return d


def _doc(key: str) -> Evidence:
    def check(d: dict[str, Any]) -> bool:
        rows = _get(d, "documentation", "fields") or []
        return any(r["key"] == key and r["provided"] for r in rows)

    label = next(f.label for f in CARD_FIELDS + FIELDS if f.key == key)
    where = "model card" if key in {f.key for f in CARD_FIELDS} else "documentation"
    return f"{label} ({where})", check


def _has(label: str, *path: str) -> Evidence:
    def check(d: dict[str, Any]) -> bool:
        v = _get(d, *path)
        return v is not None and v != "" and v != [] and v != {}

    return label, check


def _find_key(obj: Any, key: str) -> bool:
    """Whether ``key`` holds a non-empty value anywhere in nested data."""
    if isinstance(obj, Mapping):
        if obj.get(key) not in (None, "", [], {}):
            return True
        return any(_find_key(v, key) for v in obj.values())
    if isinstance(obj, list):
        return any(_find_key(v, key) for v in obj)
    return False


def _threshold_source() -> Evidence:
    # Recorded by the acceptance-criteria work: where the operating threshold came from
    # (``performance.threshold.source``, or a ``threshold_source`` key wherever it sits).
    def check(d: dict[str, Any]) -> bool:
        if _get(d, "performance", "threshold", "source") not in (None, "", {}):
            return True
        return _find_key({k: v for k, v in d.items() if k != "compliance"}, "threshold_source")

    return "Source of the operating threshold stated", check


def _cis(d: dict[str, Any]) -> bool:
    rows = _get(d, "performance", "headline") or []
    return bool(rows) and all(
        r.get("ci_low") is not None for r in rows if r.get("value") is not None
    )


def _trust(d: dict[str, Any]) -> bool:
    return any(m.get("faithfulness") or m.get("sanity") for m in _get(d, "trust", "methods") or [])


def _signed(d: dict[str, Any]) -> bool:
    dc = {
        f["key"]: f["value"] for f in _get(d, "documentation", "document_control", "fields") or []
    }
    return bool(dc.get("author") and dc.get("reviewer") and dc.get("review_date"))


PERF: Evidence = ("Overall performance with confidence intervals", _cis)
GROUPS: Evidence = _has("Subgroup performance with intervals", "subgroups", "attributes")
DISPARITY: Evidence = _has(
    "Disparities judged against a stated tolerance", "subgroups", "tolerance"
)
TEST_DATA: Evidence = _has("Audited data described (size, subgroups, hash)", "data", "data_hash")
TRUST: Evidence = ("Explanation trust checks (faithfulness, sanity)", _trust)
EXPLAIN: Evidence = _has("Explanations of individual outputs", "explanations", "methods")
CALIB: Evidence = _has("Calibration with intervals", "calibration", "overall_ece")
SIGNED: Evidence = ("Report dated and signed (author, reviewer, review date)", _signed)
LIMITS: Evidence = _has("Limitations listed", "limitations")
FINDINGS: Evidence = ("Key findings computed", lambda d: isinstance(d.get("findings"), list))
VERSIONS: Evidence = _has("Software versions, hardware, seeds and hashes", "provenance", "packages")

#: (id, short paraphrase, report sections, evidence). Annex IV of Regulation (EU) 2024/1689.
ANNEX_IV: tuple[tuple[str, str, tuple[str, ...], tuple[Evidence, ...]], ...] = (
    ("1(a)", "Intended purpose, provider, and version of the system", ("model", "documentation"),
     (_doc("intended_use"), _doc("manufacturer"), _has("Model version", "model", "version"),
      _has("Model weights hash", "model", "sha256"))),
    ("1(b)-(h)", "Interaction with other hardware and software, software versions, hardware "
     "it runs on, user interface and instructions for use", ("provenance", "documentation"),
     (VERSIONS, _doc("intended_use_environment"), _doc("instructions_for_use"))),
    ("2(a)", "Methods and steps of development, including third-party pre-trained systems or "
     "tools", ("documentation",), (_doc("model_design"), _doc("quality_management"))),
    ("2(b)", "Design specifications: general logic, key design choices and assumptions, what "
     "the system optimises, expected output", ("model", "performance", "documentation"),
     (_has("Architecture and classes", "model", "architecture"),
      _has("Operating threshold and its rule", "performance", "threshold", "rule"),
      _doc("model_design"))),
    ("2(c)", "System architecture and computational resources for development and testing",
     ("model", "provenance", "documentation"),
     (_has("Architecture and parameter count", "model", "n_parameters"),
      _has("Hardware of this audit", "provenance", "hardware"), _doc("model_design"))),
    ("2(d)", "Data requirements: training data description, provenance, scope, selection, "
     "labelling and cleaning", ("documentation",),
     (_doc("training_data"), _doc("training_data_demographics"), _doc("reference_standard"),
      _doc("acquisition"), _doc("data_preparation"))),
    ("2(e)", "Human oversight measures, including technical means that help deployers "
     "interpret outputs", ("documentation", "explanations", "trust"),
     (_doc("human_oversight"), EXPLAIN, TRUST)),
    ("2(f)", "Pre-determined changes and how continued compliance is ensured",
     ("documentation",), (_doc("change_control"),)),
    ("2(g)", "Validation and testing: procedures, test data and their characteristics, "
     "metrics for accuracy, robustness and discriminatory impact; dated and signed test "
     "reports", ("data", "performance", "subgroups", "documentation"),
     (TEST_DATA, _doc("independence_statement"), PERF, GROUPS, DISPARITY, SIGNED)),
    ("2(h)", "Cybersecurity measures", ("documentation",), (_doc("robustness_cybersecurity"),)),
    ("3", "Monitoring, functioning and control: capabilities and limitations, accuracy for "
     "the groups it is used on, foreseeable unintended outcomes and risks, human oversight, "
     "input data specifications", ("key-findings", "performance", "subgroups", "provenance",
                                   "documentation"),
     (PERF, GROUPS, FINDINGS, LIMITS, _has("Input specification (image shape)", "data",
                                           "image_shape"),
      _doc("human_oversight"), _doc("risk_management"))),
    ("4", "Appropriateness of the performance metrics", ("performance", "subgroups"),
     (PERF, DISPARITY, _has("Threshold rule stated", "performance", "threshold", "rule"),
      _threshold_source())),
    ("5", "Risk management system", ("documentation",), (_doc("risk_management"),)),
    ("6", "Relevant changes through the life cycle", ("documentation",),
     (_doc("change_control"), ("Document revision stated", lambda d: any(
         f["key"] == "revision" and f["value"]
         for f in _get(d, "documentation", "document_control", "fields") or [])))),
    ("7", "Harmonised or other standards and specifications applied", ("documentation",),
     (_doc("standards_applied"),)),
    ("8", "Copy of the EU declaration of conformity", ("documentation",),
     (_doc("declaration_of_conformity"),)),
    ("9", "Post-market performance evaluation system, including the monitoring plan",
     ("documentation",), (_doc("monitoring_plan"),)),
)  # fmt: skip

#: Good Machine Learning Practice for Medical Device Development: Guiding Principles (2021).
GMLP: tuple[tuple[str, str, tuple[str, ...], tuple[Evidence, ...]], ...] = (
    ("1", "Multi-disciplinary expertise is leveraged throughout the product life cycle",
     ("documentation",), (_doc("development_team"),)),
    ("2", "Good software engineering and security practices are implemented",
     ("provenance", "documentation"),
     (VERSIONS, _doc("quality_management"), _doc("robustness_cybersecurity"))),
    ("3", "Clinical study participants and data sets are representative of the intended "
     "patient population", ("data", "subgroups", "documentation"),
     (_has("Audited subgroup sizes", "data", "subgroup_sizes"), GROUPS,
      _doc("training_data_demographics"), _doc("acquisition"))),
    ("4", "Training data sets are independent of test sets", ("documentation",),
     (_doc("independence_statement"),)),
    ("5", "Selected reference datasets are based upon best available methods",
     ("documentation",), (_doc("reference_standard"),)),
    ("6", "Model design is tailored to the available data and reflects the intended use",
     ("model", "documentation"),
     (_doc("intended_use"), _has("Architecture", "model", "architecture"),
      _doc("model_design"))),
    ("7", "Focus is placed on the performance of the human-AI team", ("documentation",),
     (_doc("human_oversight"),)),
    ("8", "Testing demonstrates device performance during clinically relevant conditions",
     ("performance", "subgroups", "calibration", "trust", "documentation"),
     (PERF, GROUPS, CALIB, TRUST, _doc("intended_use_environment"), _doc("acquisition"),
      _threshold_source())),
    ("9", "Users are provided clear, essential information",
     ("model", "provenance", "documentation"),
     (_doc("intended_use"), _doc("intended_users"), _doc("out_of_scope_use"),
      _doc("instructions_for_use"), LIMITS)),
    ("10", "Deployed models are monitored for performance and re-training risks are managed",
     ("documentation",), (_doc("monitoring_plan"), _doc("change_control"))),
)  # fmt: skip

FRAMEWORKS = (
    ("annex_iv", "EU AI Act, Annex IV (technical documentation)", ANNEX_IV),
    ("gmlp", "Good Machine Learning Practice, 10 guiding principles (FDA, Health Canada, "
     "MHRA, 2021)", GMLP),
)  # fmt: skip


def _status(present: list[bool]) -> str:
    if present and all(present):
        return "covered"
    return "partly" if any(present) else "not provided"


def compliance_section(data: dict[str, Any]) -> dict[str, Any]:
    """The compliance map, judged on the report data (``data`` as built so far)."""
    headings = {sid: h for sid, h in _get(data, "meta", "sections") or []}
    frameworks = []
    for fid, name, items in FRAMEWORKS:
        rows = []
        for iid, text, sections, evidence in items:
            ev = [{"what": label, "present": bool(check(data))} for label, check in evidence]
            rows.append(
                {
                    "id": iid,
                    "text": text,
                    "sections": [
                        {"id": s, "heading": headings.get(s, s)} for s in sections if s in headings
                    ],
                    "evidence": ev,
                    "status": _status([e["present"] for e in ev]),
                }
            )
        counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
        frameworks.append({"id": fid, "name": name, "items": rows, "counts": counts})
    return {
        "frameworks": frameworks,
        "note": (
            "Covered: the report holds every piece of evidence listed for the item (measured "
            "by this audit, or stated by the manufacturer in the documentation fields); "
            "partly: some of it; not provided: none. Item texts are short paraphrases. This "
            "map shows where a reviewer finds the information; it is not an assessment of "
            "conformity."
        ),
    }


# ------------------------------------------------------------------------------ assembly
def resolve_target_layer(methods: list[dict[str, Any]], layer: str | None) -> list[dict[str, Any]]:
    """Method rows with ``target_layer=None`` (found automatically) named by the actual layer."""
    out = []
    for m in methods:
        m = dict(m)
        params = dict(m.get("params") or {})
        if "target_layer" in params and params["target_layer"] is None and layer:
            params["target_layer"] = layer
        m["params"] = params
        out.append(m)
    return out


def add_regulatory(
    data: dict[str, Any], result: AuditResult, documentation: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Add ``schema_version``, ``documentation``, ``compliance`` and ``integrity`` to the data."""
    data["schema_version"] = SCHEMA_VERSION
    data["documentation"] = documentation_section(result, documentation)
    data["integrity"] = {
        "algorithm": "SHA-256",
        "hashed_content": HASHED_CONTENT,
        "report_sha256": None,
        "verify": "xai-audit verify-report REPORT.html",
    }
    data["compliance"] = compliance_section(data)
    return data


def calibration_bins(calibration: Any) -> list[dict[str, Any]]:
    """The overall reliability bins: range, count, mean score, fraction positive and its CI."""
    if calibration is None or not len(calibration):
        return []
    rows = calibration[calibration["attribute"] == "overall"]

    def f(r: dict[str, Any], k: str) -> float | None:
        v = r.get(k)
        return None if v is None or v != v else float(v)

    out = []
    for r in rows.to_dict("records"):
        out.append(
            {
                "bin_low": f(r, "bin_low"),
                "bin_high": f(r, "bin_high"),
                "count": int(r["count"]),
                "mean_predicted": f(r, "mean_predicted"),
                "fraction_positive": f(r, "fraction_positive"),
                "ci_low": f(r, "ci_low"),
                "ci_high": f(r, "ci_high"),
                "ci_method": r.get("ci_method"),
            }
        )
    return out


def report_schema(version: str = SCHEMA_VERSION) -> dict[str, Any]:
    """The published JSON Schema of the report's JSON twin (package data).

    >>> import jsonschema
    >>> jsonschema.validate(json.load(open("report.json")), report_schema())
    """
    import json
    from importlib import resources

    major = version.split(".")[0]
    text = (
        resources.files("xai_audit.report") / "schema" / f"report-v{major}.schema.json"
    ).read_text(encoding="utf-8")
    return json.loads(text)
