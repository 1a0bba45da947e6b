"""Acceptance criteria written before an audit, and their verdicts on a result.

A criteria file (YAML or TOML) lists what the model must show, e.g.::

    criteria:
      - metric: sensitivity
        groups: age_group            # every group of this attribute; or overall;
        lower_ci_at_least: 0.85      # or "age_group=65+"; or all; or a list of these
      - metric: auroc
        groups: overall
        lower_ci_at_least: 0.90
      - compare_to: reference        # only in a comparison: paired difference new - reference
        metric: sensitivity
        groups: all
        non_inferiority_margin: 0.02 # lower bound of the paired difference >= -0.02
      - no_findings: high            # no key finding of this severity or above

Each criterion gives one row per group it names, each ``pass``, ``fail`` or ``inconclusive``
(a group too small for the metric, an attribute with a single group, a comparison criterion
without a comparison) with the numbers and the reason. A whole set passes only when every
row passes (:func:`overall_verdict`); ``xai-audit check`` turns that into an exit code.

Bounds are on confidence intervals, never on point estimates: a criterion is met when the
whole interval clears the bound, so that a small test set cannot pass by luck.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..fairness._common import GROUP_SEP, INTERSECTION_SEP, METRICS

#: Columns of the verdict table.
COLUMNS = [
    "criterion",
    "metric",
    "groups",
    "group",
    "value",
    "ci_low",
    "ci_high",
    "required",
    "verdict",
    "reason",
]
VERDICTS = ("pass", "fail", "inconclusive")
#: Exit codes of ``xai-audit check`` per overall verdict (2 also for errors).
EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 2}
#: Metrics where lower is better (a non-inferiority margin bounds the upper end of the diff).
LOWER_IS_BETTER = frozenset({"fpr", "fnr", "brier", "ece"})
BOUNDS = ("lower_ci_at_least", "upper_ci_at_most")
SEVERITIES = ("high", "medium", "info")
_SEVERITY_RANK = {"high": 0, "medium": 1, "info": 2, "ok": 3}
#: Group statuses with defined metrics (see xai_audit.fairness.metrics.group_status).
_JUDGED = ("ok", "constant_prediction", "one_class")
OVERALL = "overall"
TOP_KEYS = ("criteria", "name", "description", "version")


class CriteriaError(ValueError):
    """A criteria file cannot be used; the message lists every problem with its line."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        text = f"{len(problems)} problem(s){where}:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)


@dataclass(frozen=True)
class Criterion:
    """One acceptance criterion (see the module docstring for the file format).

    Attributes
    ----------
    kind : {"metric", "compare", "no_findings"}
    metric : str or None
    groups : tuple of str
        Group specifications: ``"overall"``, ``"all"``, an attribute (``"age_group"``,
        ``"sex × age_group"``) or one group (``"age_group=65+"``, ``"sex=F & age_group=65+"``).
    bound : str or None
        ``"lower_ci_at_least"`` or ``"upper_ci_at_most"`` (on the metric, or for ``compare``
        on the paired difference new - reference).
    value : float or None
        The bound.
    margin : float or None
        The non-inferiority margin it came from (``compare`` only).
    severity : str or None
        ``no_findings``: the lowest severity that fails it.
    name : str
        Display text (given, or written from the fields).
    line : int or None
        Line in the file (for messages).
    """

    kind: str
    metric: str | None = None
    groups: tuple[str, ...] = (OVERALL,)
    bound: str | None = None
    value: float | None = None
    margin: float | None = None
    severity: str | None = None
    name: str = ""
    line: int | None = None

    @property
    def required(self) -> str:
        """The condition in words, e.g. ``"lower CI >= 0.85"``."""
        if self.kind == "no_findings":
            sev = "high" if self.severity == "high" else f"{self.severity} or higher"
            return f"no {sev} finding"
        end = "lower CI" if self.bound == "lower_ci_at_least" else "upper CI"
        op = ">=" if self.bound == "lower_ci_at_least" else "<="
        what = f"{end} of new - reference" if self.kind == "compare" else end
        return f"{what} {op} {self.value:g}"


@dataclass
class Criteria:
    """The criteria of one file: ``items``, and the file's path and SHA-256."""

    items: list[Criterion] = field(default_factory=list)
    source: str | None = None
    sha256: str | None = None
    name: str | None = None

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def needs_comparison(self) -> bool:
        """Whether any criterion compares with a reference model."""
        return any(c.kind == "compare" for c in self.items)


# ------------------------------------------------------------------------------ loading
def _yaml_lines(text: str) -> list[int | None]:
    """1-based line of each item of the top-level ``criteria`` list (YAML)."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    seq = root
    if isinstance(root, yaml.MappingNode):
        seq = next((v for k, v in root.value if getattr(k, "value", None) == "criteria"), None)
    if not isinstance(seq, yaml.SequenceNode):
        return []
    return [n.start_mark.line + 1 for n in seq.value]


def _toml_lines(text: str) -> list[int | None]:
    """1-based line of each ``[[criteria]]`` table (TOML)."""
    return [
        i + 1
        for i, line in enumerate(text.splitlines())
        if re.match(r"^\s*\[\[\s*criteria\s*\]\]", line)
    ]


def load_criteria(path: str | Path) -> Criteria:
    """Read and check a criteria file (YAML ``.yaml``/``.yml`` or TOML ``.toml``).

    Parameters
    ----------
    path : str or Path
        The file. Its top level is ``criteria:`` (a list) with optional ``name`` and
        ``description``; in TOML, one ``[[criteria]]`` table per criterion.

    Returns
    -------
    Criteria

    Raises
    ------
    CriteriaError
        Listing every problem, each with the line (and item number) it is on and what is
        expected: a missing or unreadable file, unknown keys, unknown metrics or severities,
        a criterion with no bound or two, bounds outside [0, 1].
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise CriteriaError([f"criteria file not found: {src!r}"])
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
            lines = _toml_lines(text)
        elif suffix in (".yaml", ".yml", ".json"):
            import yaml

            data = yaml.safe_load(text)
            lines = _yaml_lines(text)
        else:
            raise CriteriaError(
                [f"unknown file type {path.suffix!r}: use .yaml, .yml or .toml"], src
            )
    except CriteriaError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's own message names the line
        raise CriteriaError([f"cannot parse the file: {exc}"], src) from exc
    crit = parse_criteria(data, lines, src)
    crit.sha256 = hashlib.sha256(raw).hexdigest()
    return crit


def parse_criteria(
    data: Any, lines: Sequence[int | None] = (), source: str | None = None
) -> Criteria:
    """Build :class:`Criteria` from parsed data (``{"criteria": [...]}`` or a list).

    ``lines`` gives each item's line in the file, for messages.
    """
    problems: list[str] = []
    name = None
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - set(TOP_KEYS))
        if unknown:
            problems.append(
                f"unknown top-level key(s) {unknown}; expected 'criteria' (a list), optionally "
                "'name' and 'description'"
            )
        name = data.get("name")
        items = data.get("criteria")
        if items is None:
            raise CriteriaError(
                problems
                + [
                    "no 'criteria' list: the file must hold 'criteria:' followed by a list of "
                    "criteria (YAML) or [[criteria]] tables (TOML)"
                ],
                source,
            )
    else:
        items = data
    if not isinstance(items, list):
        raise CriteriaError(
            problems + [f"'criteria' must be a list of criteria, got {type(items).__name__}"],
            source,
        )
    if not items:
        problems.append("'criteria' is empty: give at least one criterion")
    out = []
    for i, item in enumerate(items):
        line = lines[i] if i < len(lines) else None
        where = f"line {line} (criterion {i + 1})" if line else f"criterion {i + 1}"
        crit, errs = _parse_item(item, line)
        problems += [f"{where}: {e}" for e in errs]
        if crit is not None:
            out.append(crit)
    if problems:
        raise CriteriaError(problems, source)
    return Criteria(items=out, source=source, name=str(name) if name else None)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _parse_item(item: Any, line: int | None) -> tuple[Criterion | None, list[str]]:
    errs: list[str] = []
    if not isinstance(item, Mapping):
        return None, [
            f"expected a mapping (metric: ..., groups: ..., lower_ci_at_least: ...) or "
            f"'no_findings: high', got {item!r}"
        ]
    given_name = item.get("name")
    if given_name is not None and not isinstance(given_name, str):
        errs.append(f"name must be text, got {given_name!r}")
    if "no_findings" in item:
        allowed = {"no_findings", "name", "description"}
        unknown = sorted(set(item) - allowed)
        if unknown:
            errs.append(f"unknown key(s) {unknown} with no_findings; allowed: {sorted(allowed)}")
        sev = str(item["no_findings"]).lower()
        if sev not in SEVERITIES:
            errs.append(
                f"no_findings must be one of {list(SEVERITIES)} (the lowest severity that "
                f"fails), got {item['no_findings']!r}"
            )
            return None, errs
        c = Criterion(kind="no_findings", groups=("all",), severity=sev, line=line)
        return _named(c, given_name), errs
    compare = "compare_to" in item
    allowed = {"metric", "groups", "name", "description", *BOUNDS}
    if compare:
        allowed |= {"compare_to", "non_inferiority_margin"}
    unknown = sorted(set(item) - allowed)
    if unknown:
        hint = (
            " (non_inferiority_margin needs compare_to: reference)"
            if "non_inferiority_margin" in unknown
            else ""
        )
        errs.append(f"unknown key(s) {unknown}; allowed here: {sorted(allowed)}{hint}")
    if compare and item["compare_to"] != "reference":
        errs.append(f"compare_to must be 'reference', got {item['compare_to']!r}")
    metric = item.get("metric")
    if metric is None:
        errs.append(
            "missing 'metric' (one of " + ", ".join(METRICS) + "), or use 'no_findings: high'"
        )
    elif metric not in METRICS:
        errs.append(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    groups = item.get("groups", OVERALL)
    if isinstance(groups, str):
        groups = [groups]
    if (
        not isinstance(groups, list)
        or not groups
        or not all(isinstance(g, str) and g.strip() for g in groups)
    ):
        errs.append(
            "groups must be 'overall', 'all', an attribute ('age_group'), one group "
            f"('age_group=65+') or a list of these; got {item.get('groups')!r}"
        )
        groups = [OVERALL]
    bounds = [b for b in (*BOUNDS, "non_inferiority_margin") if b in item]
    if len(bounds) != 1:
        options = "lower_ci_at_least or upper_ci_at_most" + (
            " or non_inferiority_margin" if compare else ""
        )
        errs.append(
            f"give exactly one bound ({options}); got " + (", ".join(bounds) if bounds else "none")
        )
        return None, errs
    key = bounds[0]
    v = item[key]
    margin = None
    if not _number(v):
        errs.append(f"{key} must be a number, got {v!r}")
        return None, errs
    v = float(v)
    if key == "non_inferiority_margin":
        if not 0.0 <= v < 1.0:
            errs.append(f"non_inferiority_margin must be in [0, 1), got {v:g}")
        margin = v
        if metric in LOWER_IS_BETTER:
            key, v = "upper_ci_at_most", v
        else:
            key, v = "lower_ci_at_least", -v
    elif compare and not -1.0 <= v <= 1.0:
        errs.append(f"{key} bounds the difference new - reference: give a number in [-1, 1]")
    elif not compare and not 0.0 <= v <= 1.0:
        errs.append(f"{key} must be in [0, 1] (every metric is a proportion), got {v:g}")
    if errs:
        return None, errs
    c = Criterion(
        kind="compare" if compare else "metric",
        metric=str(metric),
        groups=tuple(g.strip() for g in groups),
        bound=key,
        value=v,
        margin=margin,
        line=line,
    )
    return _named(c, given_name), errs


def _groups_text(groups: Sequence[str]) -> str:
    if tuple(groups) == (OVERALL,):
        return "overall"
    parts = []
    for g in groups:
        if g == OVERALL:
            parts.append("overall")
        elif g == "all":
            parts.append("every group")
        elif "=" in g:
            parts.append(g)
        else:
            parts.append(f"every {g}")
    return ", ".join(parts)


def _in(groups: Sequence[str]) -> str:
    text = _groups_text(groups)
    return text if text == "overall" else f"in {text}"


def _named(c: Criterion, given: str | None) -> Criterion:
    if given:
        text = given
    elif c.kind == "no_findings":
        text = f"no {c.severity} finding" + ("" if c.severity == "high" else "s or higher")
    elif c.kind == "compare":
        what = (
            f"non-inferior by {c.margin:g}"
            if c.margin is not None
            else c.required.replace("of new - reference ", "of the difference ")
        )
        text = f"{c.metric} vs reference: {what} {_in(c.groups)}"
    else:
        text = f"{c.metric} {c.required} {_in(c.groups)}"
    return Criterion(**{**c.__dict__, "name": text})


def as_criteria(criteria: Any) -> Criteria:
    """A :class:`Criteria` from a path, a loaded object or a list of mappings."""
    if isinstance(criteria, Criteria):
        return criteria
    if isinstance(criteria, (str, Path)):
        return load_criteria(criteria)
    if isinstance(criteria, Mapping) or isinstance(criteria, list):
        return parse_criteria(criteria)
    raise TypeError(
        f"criteria must be a file path, a Criteria object or a list of mappings; got "
        f"{type(criteria).__name__}"
    )


# ------------------------------------------------------------------------------ groups
def _pairs(attribute: str, group: str) -> frozenset[tuple[str, str]]:
    names = str(attribute).split(INTERSECTION_SEP)
    values = str(group).split(GROUP_SEP) if len(names) > 1 else [str(group)]
    return frozenset(zip(names, values))


def _attr_key(spec: str) -> frozenset[str]:
    """``"sex × age_group"``, ``"sex&age_group"`` -> {"sex", "age_group"}."""
    parts = re.split(r"\s*(?:×|&|\|)\s*", spec.strip())
    return frozenset(p for p in parts if p)


def _spec_pairs(spec: str) -> frozenset[tuple[str, str]] | None:
    """``"age_group=65+"`` / ``"sex=F & age_group=65+"`` -> pairs; None if not ``a=b``."""
    if "=" not in spec:
        return None
    out = []
    for part in re.split(r"\s*&\s*", spec.strip()):
        a, sep, v = part.partition("=")
        if not sep or not a.strip():
            return None
        out.append((a.strip(), v.strip()))
    return frozenset(out)


def display(attribute: str, group: str) -> str:
    """``"overall"``, ``"age_group=65+"``, ``"sex=F & age_group=65+"``."""
    if attribute == OVERALL:
        return OVERALL
    names = str(attribute).split(INTERSECTION_SEP)
    values = str(group).split(GROUP_SEP) if len(names) > 1 else [str(group)]
    return " & ".join(f"{a}={v}" for a, v in zip(names, values))


@dataclass
class _Expanded:
    #: In the order of the specs: ``(attribute, group)`` keys of rows to judge, and
    #: ``(group text, reason)`` of inconclusive rows (a group the result does not have).
    items: list[tuple[str, tuple[str, str]]]


def _expand(specs: Iterable[str], table: pd.DataFrame) -> _Expanded:
    """The (attribute, group) rows a list of group specs names in ``table``."""
    keys = list(dict.fromkeys(zip(table["attribute"].astype(str), table["group"].astype(str))))
    attrs: dict[frozenset[str], list[tuple[str, str]]] = {}
    for a, g in keys:
        if a != OVERALL:
            attrs.setdefault(_attr_key(a), []).append((a, g))
    out: list[tuple[str, tuple[str, str]]] = []
    problems = _Problems(out)
    for spec in specs:
        if spec == OVERALL:
            if (OVERALL, OVERALL) in keys:
                out.append(("key", (OVERALL, OVERALL)))
            else:
                problems.append((OVERALL, "no overall row in this result"))
        elif spec == "all":
            out += [("key", k) for k in keys]
        elif (pairs := _spec_pairs(spec)) is not None:
            hit = [k for k in keys if k[0] != OVERALL and _pairs(*k) == pairs]
            if hit:
                out += [("key", k) for k in hit]
            else:
                attr = frozenset(a for a, _ in pairs)
                known = [display(*k) for k in attrs.get(attr, [])]
                problems.append(
                    (
                        spec,
                        f"no group {spec} in this result"
                        + (
                            f" (groups: {', '.join(known)})"
                            if known
                            else " (attribute not audited)"
                        ),
                    )
                )
        else:
            members = attrs.get(_attr_key(spec))
            if not members:
                audited = sorted({a for a, _ in keys if a != OVERALL and INTERSECTION_SEP not in a})
                problems.append(
                    (spec, f"attribute {spec!r} was not audited (attributes: {', '.join(audited)})")
                )
            elif len(members) == 1:
                problems.append(
                    (
                        display(*members[0]),
                        f"{spec} has a single group ({display(*members[0])}) in this data: "
                        "there are no subgroups to judge",
                    )
                )
            else:
                out += [("key", k) for k in members]
    return _Expanded(list(dict.fromkeys(out)))


class _Problems:
    """Appends ``("problem", (text, reason))`` to the shared ordered list."""

    def __init__(self, out: list[tuple[str, tuple[str, str]]]) -> None:
        self.out = out

    def append(self, item: tuple[str, str]) -> None:
        self.out.append(("problem", item))


# ------------------------------------------------------------------------------ evaluation
def _result_table(result: Any) -> pd.DataFrame:
    """Overall and group rows of an audit: attribute, group, metric, value, CI, status."""
    sub = result.subgroups if not isinstance(result, Mapping) else result["subgroups"]
    ov = sub["overall"].copy()
    ov["attribute"], ov["group"] = OVERALL, OVERALL
    ov["status"], ov["reason"] = "ok", ""
    by = sub["by_group"]
    cols = ["attribute", "group", "metric", "value", "ci_low", "ci_high", "status", "reason"]
    for c in ("n", "n_pos"):
        if c in by:
            cols.append(c)
    return pd.concat([ov, by], ignore_index=True).reindex(columns=cols)


def _comparison_table(comparison: Any) -> pd.DataFrame:
    d = comparison.differences if hasattr(comparison, "differences") else comparison["differences"]
    d = d.copy()
    d["value"] = d["diff"]
    if "status" not in d:
        d["status"] = "ok"
    if "reason" not in d:
        d["reason"] = ""
    return d


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _judge(c: Criterion, row: Mapping[str, Any]) -> tuple[str, str]:
    value, lo, hi = _f(row.get("value")), _f(row.get("ci_low")), _f(row.get("ci_high"))
    status = str(row.get("status") or "ok")
    if not np.isfinite(value):
        why = str(row.get("reason") or "") or f"status {status}"
        if status == "small":
            n = row.get("n")
            why = (
                f"group too small ({why})" if n is None else f"group too small (n={int(n)}): {why}"
            )
        return "inconclusive", f"{c.metric} undefined: {why}"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive", f"{c.metric} has no confidence interval (too few resamples?)"
    what = "difference" if c.kind == "compare" else c.metric
    if c.bound == "lower_ci_at_least":
        ok = lo >= float(c.value)  # type: ignore[arg-type]
        rel = f"lower CI {lo:.3f} {'>=' if ok else '<'} {c.value:g}"
    else:
        ok = hi <= float(c.value)  # type: ignore[arg-type]
        rel = f"upper CI {hi:.3f} {'<=' if ok else '>'} {c.value:g}"
    reason = f"{what} {value:.3f}, {rel}"
    if not ok and (
        (c.bound == "lower_ci_at_least" and value >= float(c.value))  # type: ignore[arg-type]
        or (c.bound == "upper_ci_at_most" and value <= float(c.value))  # type: ignore[arg-type]
    ):
        reason += " (the estimate meets it, the interval does not)"
    return ("pass" if ok else "fail"), reason


def _findings_rows(c: Criterion, result: Any) -> list[dict[str, Any]]:
    findings = getattr(result, "findings", None)
    if findings is None and isinstance(result, Mapping):
        findings = result.get("findings")
    base = {"criterion": c.name, "metric": "findings", "groups": "all", "group": "all"}
    base.update(ci_low=np.nan, ci_high=np.nan, required=c.required)
    if findings is None:
        return [{**base, "value": np.nan, "verdict": "inconclusive", "reason": "no findings"}]
    limit = _SEVERITY_RANK[c.severity or "high"]
    bad = [f for f in findings if _SEVERITY_RANK.get(str(f.get("severity")), 9) <= limit]
    if bad:
        shown = "; ".join(f"{f.get('severity')}: {f.get('title')}" for f in bad[:5])
        reason = f"{len(bad)} finding(s): {shown}" + (" ..." if len(bad) > 5 else "")
        return [{**base, "value": float(len(bad)), "verdict": "fail", "reason": reason}]
    return [{**base, "value": 0.0, "verdict": "pass", "reason": "none"}]


def evaluate_criteria(result: Any, criteria: Any, comparison: Any = None) -> pd.DataFrame:
    """The verdict of every criterion on an audit result (and, optionally, a comparison).

    Parameters
    ----------
    result : AuditResult
        The audit (in a comparison: the new model's); ``subgroups`` gives the metrics with
        CIs, ``findings`` the key findings.
    criteria : Criteria, str, Path or list
        Loaded criteria or a criteria file (:func:`load_criteria`).
    comparison : object with a ``differences`` DataFrame, optional
        A model-vs-model comparison (``xai_audit.compare``): columns ``metric, attribute,
        group, reference, new, diff, ci_low, ci_high, n``, the whole data as ``attribute ==
        group == "overall"``, groups named as in ``result.subgroups.by_group``. Criteria with
        ``compare_to: reference`` read it; without it they are inconclusive.

    Returns
    -------
    pandas.DataFrame
        One row per criterion and group: ``criterion, metric, groups, group, value, ci_low,
        ci_high, required, verdict, reason``. ``verdict`` is ``pass``, ``fail`` or
        ``inconclusive``; ``value``/``ci_*`` are the metric (or for comparisons the paired
        difference new - reference) and its CI.

    Examples
    --------
    >>> table = evaluate_criteria(result, "acceptance.yaml")
    >>> overall_verdict(table)
    'fail'
    """
    crit = as_criteria(criteria)
    rows: list[dict[str, Any]] = []
    metrics_table = None
    cmp_table = _comparison_table(comparison) if comparison is not None else None
    for c in crit:
        if c.kind == "no_findings":
            rows += _findings_rows(c, result)
            continue
        groups_text = ", ".join(c.groups)
        base = {"criterion": c.name, "metric": c.metric, "groups": groups_text}
        base["required"] = c.required
        if c.kind == "compare" and cmp_table is None:
            rows.append(
                {
                    **base,
                    "group": groups_text,
                    "value": np.nan,
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "verdict": "inconclusive",
                    "reason": "needs a comparison (xai-audit compare REFERENCE_DIR NEW_DIR "
                    "--criteria FILE)",
                }
            )
            continue
        if c.kind == "compare":
            table = cmp_table
        else:
            if metrics_table is None:
                metrics_table = _result_table(result)
            table = metrics_table
        table = table[table["metric"] == c.metric]  # type: ignore[index]
        exp = _expand(c.groups, table)
        if not exp.items:
            rows.append(
                {
                    **base,
                    "group": groups_text,
                    "value": np.nan,
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "verdict": "inconclusive",
                    "reason": f"no {c.metric} rows in this "
                    + ("comparison" if c.kind == "compare" else "result"),
                }
            )
        indexed = table.set_index(["attribute", "group"])
        for what, key in exp.items:
            if what == "problem":
                rows.append(
                    {
                        **base,
                        "group": key[0],
                        "value": np.nan,
                        "ci_low": np.nan,
                        "ci_high": np.nan,
                        "verdict": "inconclusive",
                        "reason": key[1],
                    }
                )
                continue
            r = indexed.loc[key]
            r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
            r = {**r.to_dict(), "attribute": key[0], "group": key[1]}
            verdict, reason = _judge(c, r)
            rows.append(
                {
                    **base,
                    "group": display(*key),
                    "value": _f(r.get("value")),
                    "ci_low": _f(r.get("ci_low")),
                    "ci_high": _f(r.get("ci_high")),
                    "verdict": verdict,
                    "reason": reason,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def overall_verdict(table: pd.DataFrame) -> str:
    """``fail`` if any row fails, else ``inconclusive`` if any is, else ``pass``.

    An empty table is ``inconclusive`` (nothing was shown).
    """
    if table is None or len(table) == 0:
        return "inconclusive"
    v = set(table["verdict"])
    if "fail" in v:
        return "fail"
    return "inconclusive" if "inconclusive" in v else "pass"


def exit_code(table: pd.DataFrame) -> int:
    """0 when every criterion passes, 1 when one fails, 2 when one is inconclusive."""
    return EXIT_CODES[overall_verdict(table)]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per criterion: its verdict and how many groups passed, failed, were open."""
    out = []
    for name, rows in table.groupby("criterion", sort=False):
        counts = rows["verdict"].value_counts()
        out.append(
            {
                "criterion": name,
                "required": rows["required"].iloc[0],
                "verdict": overall_verdict(rows),
                **{f"n_{v}": int(counts.get(v, 0)) for v in VERDICTS},
            }
        )
    return pd.DataFrame(
        out, columns=["criterion", "required", "verdict", "n_pass", "n_fail", "n_inconclusive"]
    )


def criteria_section(criteria: Criteria, table: pd.DataFrame) -> dict[str, Any]:
    """What a result keeps of its criteria check (``result.criteria``)."""
    return {
        "file": Path(criteria.source).name if criteria.source else None,
        "name": criteria.name,
        "sha256": criteria.sha256,
        "verdict": overall_verdict(table),
        "summary": summarise(table),
        "table": table,
    }


def attach_criteria(result: Any, criteria: Any) -> pd.DataFrame:
    """Evaluate ``criteria`` on ``result`` and keep the verdicts in ``result.criteria``."""
    from .result import _section

    crit = as_criteria(criteria)
    table = evaluate_criteria(result, crit)
    result.criteria = _section(criteria_section(crit, table))
    return table


def format_table(table: pd.DataFrame, width: int = 100) -> str:
    """The verdict table as plain text for a terminal (one line per criterion and group)."""
    lines = []
    for name, rows in table.groupby("criterion", sort=False):
        verdict = overall_verdict(rows)
        lines.append(f"[{verdict.upper():^12}] {name}  (required: {rows['required'].iloc[0]})")
        for r in rows.to_dict("records"):
            v = r["value"]
            num = ""
            if np.isfinite(_f(v)):
                num = f"{_f(v):.3f}"
                if np.isfinite(_f(r["ci_low"])):
                    num += f" [{_f(r['ci_low']):.3f}, {_f(r['ci_high']):.3f}]"
            text = f"    {r['verdict']:<12} {r['group']:<28} {num:<24} {r['reason']}"
            lines.append(text if len(text) <= width + 60 else text[: width + 57] + "...")
    counts = table["verdict"].value_counts() if len(table) else pd.Series(dtype=int)
    lines.append(
        f"Overall: {overall_verdict(table).upper()} ("
        + ", ".join(f"{int(counts.get(v, 0))} {v}" for v in VERDICTS)
        + " rows)"
    )
    return "\n".join(lines)


def _plain_records(df: Any) -> list[dict[str, Any]]:
    if df is None or len(df) == 0:
        return []
    return [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def report_data(result: Any) -> dict[str, Any]:
    """The report's "Acceptance criteria" section as plain data (empty when none were set)."""
    c = getattr(result, "criteria", None) or {}
    if not c:
        return {}
    return {
        "file": c.get("file"),
        "name": c.get("name"),
        "sha256": c.get("sha256"),
        "verdict": c.get("verdict"),
        "summary": _plain_records(c.get("summary")),
        "rows": _plain_records(c.get("table")),
    }
