"""The :class:`AuditResult`: every number of an audit, saved to and loaded from a folder.

It is the single source for the HTML report, its JSON twin and the notebook widgets.

Folder layout (``AuditResult.save(dir)``)::

    dir/
      .xai_audit           # marker: this folder belongs to xai_audit (see store.claim_folder)
      result.json          # format version, checksums of the files below, the content:
                           # config, provenance, model, data summary, findings, table index
      tables/*.csv         # every table (+ *.dtypes.json so that types and columns round-trip)
      arrays.npz           # exemplar thumbnails and maps, mean maps
      run_state.json       # hashes of the run, per-shard checksums (written by the runner)
      shards/batch_*.npz   # per-batch scores and float16 maps (lazy access via .maps())
      report.html/.json    # the report and its JSON twin
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ._io import (
    atomic_write_bytes,
    atomic_write_text,
    dumps,
    load_table,
    save_table,
    sha256_file,
)

RESULT_FILE = "result.json"
ARRAYS_FILE = "arrays.npz"
TABLE_DIR = "tables"
#: Version of the saved layout. 1: tables without row counts, NaN saved as null; 2: a
#: ``result.json`` with ``files`` (size and SHA-256 of every table and array file) and
#: ``content``, tables that keep their columns and dtypes when empty, NaN kept.
FORMAT_VERSION = 2


class Section(dict):
    """A dict whose keys are also attributes (``result.subgroups.by_group``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(
                f"{key!r} is not in this section; it holds {sorted(self)}"
            ) from None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {str(k) for k in self})


def _section(obj: Any) -> Any:
    if isinstance(obj, dict) and not isinstance(obj, Section):
        return Section({k: _section(v) for k, v in obj.items()})
    if isinstance(obj, Section):
        return Section({k: _section(v) for k, v in obj.items()})
    return obj


def _slug(parts: list[str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "__".join(parts)).strip("_") or "table"


class ResultError(ValueError):
    """A saved result cannot be read: damaged, incomplete or written by a newer version."""


#: What to do about a damaged result (appended to :class:`ResultError` messages).
REMEDY = (
    "Rerun the audit (finished batches are reused), or run `xai-audit report` on a complete "
    "result folder."
)


def _encode(
    obj: Any, path: list[str], tables: dict[str, pd.DataFrame], arrays: dict[str, np.ndarray]
) -> Any:
    """Replace DataFrames and arrays by references (``$table`` / ``$array``).

    Non-finite floats become ``{"$float": "nan"}`` (JSON has no NaN) and a dict whose keys
    start with ``$`` is wrapped in ``{"$dict": ...}``, so that nothing is mistaken for a
    reference on the way back.
    """
    if isinstance(obj, pd.DataFrame):
        name = _slug(path)
        while name in tables:
            name += "_"
        tables[name] = obj
        return {"$table": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(
                f"{'.'.join(path)}: arrays of Python objects are not saved (nothing is pickled); "
                "store a numeric or string array, a list or a DataFrame."
            )
        name = _slug(path)
        while name in arrays:
            name += "_"
        arrays[name] = obj
        return {"$array": name}
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return {"$float": str(float(obj))}
    if isinstance(obj, dict):
        out = {str(k): _encode(v, [*path, str(k)], tables, arrays) for k, v in obj.items()}
        return {"$dict": out} if any(k.startswith("$") for k in out) else out
    if isinstance(obj, (list, tuple)):
        return [_encode(v, [*path, str(i)], tables, arrays) for i, v in enumerate(obj)]
    return obj


def _decode(obj: Any, root: Path, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1:
            ((key, value),) = obj.items()
            if key == "$table":
                path = root / TABLE_DIR / f"{value}.csv"
                try:
                    return load_table(path)
                except (OSError, ValueError) as exc:  # TableError is a ValueError
                    raise ResultError(f"{path} cannot be read ({exc}). {REMEDY}") from exc
            if key == "$array":
                try:
                    return arrays[value]
                except KeyError:
                    raise ResultError(
                        f"{root / ARRAYS_FILE} has no array {value!r}. {REMEDY}"
                    ) from None
            if key == "$float":
                return float(value)
            if key == "$dict":
                return {k: _decode(v, root, arrays) for k, v in value.items()}
        return {k: _decode(v, root, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, root, arrays) for v in obj]
    return obj


def _file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _listed_files(root: Path) -> list[str]:
    """Files (relative paths) that the ``result.json`` now in ``root`` says it wrote."""
    try:
        head = json.loads((root / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = head.get("files") if isinstance(head, dict) else None
    return [str(f) for f in files] if isinstance(files, dict) else []


def save_tree(root: str | Path, content: dict[str, Any]) -> Path:
    """Write nested dicts/lists of plain values, DataFrames and arrays to ``root``.

    Tables go to ``tables/*.csv``, arrays to one ``arrays.npz`` and the rest to
    ``result.json``, written last, so its presence marks a complete save. It lists every
    other file with its size and SHA-256 (checked by :func:`load_tree`); tables that an
    earlier save listed and this one does not are removed, nothing else is. Nothing is
    pickled: a folder received from someone else is read as data only.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    before = _listed_files(root)
    tables: dict[str, pd.DataFrame] = {}
    arrays: dict[str, np.ndarray] = {}
    encoded = {k: _encode(v, [k], tables, arrays) for k, v in content.items()}
    files: dict[str, dict[str, Any]] = {}
    for name, df in tables.items():
        path = save_table(df, root / TABLE_DIR / f"{name}.csv")
        for p in (path, path.with_suffix(".dtypes.json")):
            files[p.relative_to(root).as_posix()] = _file_entry(p)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(root / ARRAYS_FILE, data)
    files[ARRAYS_FILE] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    head = {
        "format_version": FORMAT_VERSION,
        "written_by": f"xai_audit {__version__}",
        "files": files,
        "content": encoded,
    }
    atomic_write_text(root / RESULT_FILE, dumps(head))
    for rel in before:  # only files an earlier save of ours listed
        if rel not in files and "/" in rel and rel.startswith(f"{TABLE_DIR}/"):
            (root / rel).unlink(missing_ok=True)
    return root


def remove_tree(root: str | Path) -> None:
    """Delete what :func:`save_tree` wrote in ``root`` (and ``root`` if that empties it)."""
    root = Path(root)
    for rel in [*_listed_files(root), RESULT_FILE]:
        (root / rel).unlink(missing_ok=True)
    for folder in (root / TABLE_DIR, root):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty: something else lives there, leave it


def load_tree(root: str | Path) -> dict[str, Any]:
    """Read what :func:`save_tree` wrote (tuples come back as lists, keys as strings).

    Raises
    ------
    ResultError
        ``result.json`` is damaged or of a newer format, or a file it lists is missing or
        does not match its recorded size and SHA-256.
    """
    root = Path(root)
    path = root / RESULT_FILE
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ResultError(f"{path} is damaged (not valid JSON: {exc}). {REMEDY}") from exc
    if not isinstance(head, dict):
        raise ResultError(f"{path} is not an audit result (a JSON object). {REMEDY}")
    version = head.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ResultError(
            f"{path} has result format {version!r}; this xai_audit ({__version__}) reads "
            f"formats up to {FORMAT_VERSION}. Upgrade xai_audit (pip install -U xai_audit) or "
            "rerun the audit with this version."
        )
    if version >= 2:
        if not isinstance(head.get("content"), dict) or not isinstance(head.get("files"), dict):
            raise ResultError(f"{path} lacks its content or file list. {REMEDY}")
        for rel, entry in head["files"].items():
            _verify(root, rel, entry)
        content = head["content"]
    else:
        content = {k: v for k, v in head.items() if k != "format_version"}
    arrays_path = root / ARRAYS_FILE
    try:
        with np.load(arrays_path, allow_pickle=False) if arrays_path.exists() else _Empty() as arr:
            return {k: _decode(v, root, arr) for k, v in content.items()}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, ResultError):
            raise
        raise ResultError(f"{arrays_path} cannot be read ({exc}). {REMEDY}") from exc


def _verify(root: Path, rel: str, entry: dict[str, Any]) -> None:
    path = root / rel
    if not path.is_file():
        raise ResultError(f"{path} is missing; {root / RESULT_FILE} lists it. {REMEDY}")
    size = path.stat().st_size
    if size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
        raise ResultError(
            f"{path} is damaged or was changed after the audit saved it ({size} bytes; "
            f"{entry.get('size')} recorded, or another SHA-256). {REMEDY}"
        )


@dataclass
class AuditResult:
    """Everything an audit found, with the provenance to reproduce it.

    Attributes
    ----------
    name : str
        Title of the audit.
    config : dict
        The settings the audit ran with.
    provenance : dict
        Package versions, hardware, seeds, hashes (model, data, config), timings, UTC date.
    model_info : dict
        :meth:`ModelAdapter.describe` plus the model card (intended use, users, ...).
    data_summary : dict
        Size, prevalence, patients, subgroup sizes, missing attributes, data hash.
    predictions : pandas.DataFrame
        One row per image: ``row, case_id``, the attributes, ``label, score, predicted,
        outcome`` (TP/FP/FN/TN at the operating threshold). Patient ids are not kept.
    subgroups : Section
        ``threshold``, ``overall``, ``by_group``, ``disparities``, ``calibration``,
        ``flags``, ``warnings`` (from :func:`xai_audit.fairness.evaluate_subgroups`).
    quality : Section
        ``sample`` (how the perturbation sample was drawn) and per method ``faithfulness``,
        ``localisation``, ``sanity``, ``shortcuts``.
    findings : list of dict
        Key findings: ``severity``, ``kind``, ``title``, ``message``, ``evidence``.
    exemplars : Section
        ``table`` (case, attribute, group, outcome, score) and ``images`` / ``maps`` arrays
        of a bounded set of gallery cases.
    mean_maps : Section
        ``method -> outcome -> H x W`` mean attribution maps.
    methods : list of dict
        Attribution methods with parameters and descriptions.
    criteria : Section
        Acceptance criteria checked in the run (config ``criteria``): ``file``, ``verdict``
        and ``table`` (:func:`xai_audit.audit.criteria.evaluate_criteria`); empty when none.
    slice_discovery : Section
        Hidden-stratification discovery (:func:`xai_audit.slices.audit.slice_section`):
        ``status``, ``table`` (also :attr:`slices`), ``members``, ``enrichment``,
        ``image_stats``, ``descriptions``, ``typical``, ``thumbnails``, ``mean_maps``.
    result_dir : Path or None
        Where the result (and its shards) live.
    """

    name: str
    config: dict[str, Any]
    provenance: dict[str, Any]
    model_info: dict[str, Any]
    data_summary: dict[str, Any]
    predictions: pd.DataFrame
    subgroups: Section
    quality: Section
    findings: list[dict[str, Any]]
    exemplars: Section
    mean_maps: Section = field(default_factory=Section)
    methods: list[dict[str, Any]] = field(default_factory=list)
    criteria: Section = field(default_factory=Section)
    slice_discovery: Section = field(default_factory=Section)
    result_dir: Path | None = None

    _FIELDS = (
        "name",
        "config",
        "provenance",
        "model_info",
        "data_summary",
        "predictions",
        "subgroups",
        "quality",
        "findings",
        "exemplars",
        "mean_maps",
        "methods",
        "criteria",
        "slice_discovery",
    )

    def __post_init__(self) -> None:
        self.subgroups = _section(self.subgroups)
        self.quality = _section(self.quality)
        self.exemplars = _section(self.exemplars)
        self.mean_maps = _section(self.mean_maps)
        self.criteria = _section(self.criteria or {})  # results before criteria: none
        self.slice_discovery = _section(self.slice_discovery or {})  # older results: none

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path | None = None, *, overwrite: bool = False) -> Path:
        """Write the result to ``directory`` (default: :attr:`result_dir`); return it.

        Parameters
        ----------
        directory : str or Path, optional
            A new or empty folder, or one that xai_audit wrote before (it carries a
            ``.xai_audit`` marker); anything else is refused.
        overwrite : bool, default False
            Also write into a non-empty folder that xai_audit did not create (files with the
            result's names are replaced; nothing else is touched).

        Raises
        ------
        NotOwnedError
            ``directory`` holds someone else's files and ``overwrite`` is False.
        """
        from .store import claim_folder

        root = Path(directory) if directory is not None else self.result_dir
        if root is None:
            raise ValueError("Give a directory to save the result to.")
        claim_folder(root, overwrite=overwrite)
        content = {k: getattr(self, k) for k in self._FIELDS}
        save_tree(root, content)
        self.result_dir = root
        return root

    @classmethod
    def load(cls, directory: str | Path) -> AuditResult:
        """Read a result written by :meth:`save` (or by ``xai-audit run``).

        Raises
        ------
        FileNotFoundError
            ``directory`` has no ``result.json``.
        ResultError
            The result is damaged (truncated ``result.json``, a missing or changed table,
            a bad ``arrays.npz``) or was written by a newer xai_audit.
        """
        root = Path(directory)
        path = root / RESULT_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"No audit result in {str(root)!r} (missing {RESULT_FILE}); run the audit first."
            )
        content = load_tree(root)
        values = {k: content.get(k) for k in cls._FIELDS}
        values["findings"] = values["findings"] or []
        values["methods"] = values["methods"] or []
        return cls(**values, result_dir=root)

    # ------------------------------------------------------------------ access
    @property
    def slices(self) -> pd.DataFrame:
        """Discovered slices, one row per slice (hypotheses to review, see the README).

        Columns include ``slice, n, metric, value, rest_value, gap, ci_low, ci_high,
        significant`` (see :class:`xai_audit.slices.SliceDiscovery`); empty when discovery did
        not run (``slice_discovery["status"]`` says why).
        """
        table = self.slice_discovery.get("table")
        if table is None:
            from ..slices import empty_table

            return empty_table()
        return table

    def slice_cases(self, slice: int | str) -> list[str]:  # noqa: A002 - the contract's name
        """Case ids of a discovered slice (``1``, ``2``, ... or ``"slice 1"``), most typical
        first."""
        from ..slices import slice_case_ids

        members = self.slice_discovery.get("members")
        if members is None or not len(members):
            raise KeyError(
                "this result has no discovered slices "
                f"({self.slice_discovery.get('status') or 'discovery did not run'})"
            )
        return slice_case_ids(members, slice)

    @property
    def method_names(self) -> list[str]:
        """Names of the attribution methods."""
        return [m["name"] for m in self.methods]

    @property
    def threshold(self) -> float:
        """The operating threshold (score >= threshold is a positive prediction)."""
        return float(self.subgroups["threshold"]["value"])

    def maps(self, method: str, case_ids: Any = None) -> np.ndarray:
        """Stored attribution maps of ``method`` (float32), read lazily from the shards.

        Parameters
        ----------
        method : str
            One of :attr:`method_names`.
        case_ids : sequence of str, optional
            Cases to read (default all, which may be large).

        Returns
        -------
        numpy.ndarray
            ``len(case_ids) x H x W`` maps in the order asked for.
        """
        from .store import ShardStore

        if method not in self.method_names:
            raise KeyError(f"Unknown method {method!r}; this audit has {self.method_names}.")
        if self.result_dir is None:
            raise ValueError("This result was never saved, so it has no stored maps.")
        store = ShardStore(self.result_dir)
        state = store.read_state() or {}
        batch_size = int(state.get("batch_size") or self.config.get("batch_size", 32))
        rows_by_case = pd.Series(
            self.predictions["row"].to_numpy(), index=self.predictions["case_id"].astype(str)
        )
        if case_ids is None:
            rows = self.predictions["row"].to_numpy()
        else:
            ids = [str(c) for c in ([case_ids] if isinstance(case_ids, str) else case_ids)]
            unknown = [c for c in ids if c not in rows_by_case.index]
            if unknown:
                raise KeyError(f"Unknown case id(s) {unknown[:5]}.")
            rows = rows_by_case.loc[ids].to_numpy()
        return store.maps(method, rows, batch_size)

    # ------------------------------------------------------------------ outputs
    def report_data(self) -> dict[str, Any]:
        """The report's content as plain data (what the HTML shows and the JSON twin holds)."""
        from ..report.content import build_report_data

        return build_report_data(self)

    def to_json(self, indent: int | None = 1) -> str:
        """The JSON twin of the report: every number it shows (no images)."""
        from ..report.content import strip_images

        return dumps(strip_images(self.report_data()), indent=indent)

    def report(
        self,
        path: str | Path | None = None,
        *,
        pdf: bool = False,
        overwrite: bool = False,
        documentation: dict[str, Any] | None = None,
    ) -> Path:
        """Write the self-contained HTML report (and its JSON twin next to it).

        An earlier report of xai_audit at the same path (and its twin) is replaced; a file
        that xai_audit did not write (e.g. your own ``thesis.json`` next to ``thesis.html``)
        is not, unless ``overwrite=True``.

        Parameters
        ----------
        path : str or Path, optional
            Default ``result_dir/report.html``.
        pdf : bool, default False
            Also print it to PDF with headless Chromium (needs playwright and Chromium).
        overwrite : bool, default False
            Replace existing files at the report's paths even if xai_audit did not write them.
        documentation : dict, optional
            Documentation fields laid over the recorded ones for this report (e.g. a
            reviewer's sign-off: ``{"document_control": {"reviewer": ..., "review_date":
            ...}}``; see :mod:`xai_audit.audit.documentation`).

        Returns
        -------
        Path
            The HTML file; the twin is the same path with ``.json``.

        Raises
        ------
        NotOwnedError
            A file at the report's paths was not written by xai_audit and ``overwrite`` is
            False.
        """
        from ..report import write_report

        if path is None:
            if self.result_dir is None:
                raise ValueError("Give a report path (the result has no folder).")
            path = self.result_dir / "report.html"
        if self.data_summary.get("label_cols"):  # multi-label: a report per label too
            from .labels import write_label_reports

            return write_label_reports(self, path, pdf=pdf, overwrite=overwrite)
        return write_report(self, path, pdf=pdf, overwrite=overwrite, documentation=documentation)

    # ------------------------------------------------------------------ widgets
    def explorer(self, data: Any = None, model: Any = None, **kwargs: Any) -> Any:
        """Open an :class:`~xai_audit.widgets.ExplanationExplorer` on this result.

        ``data`` and ``model`` default to the ones the audit ran with (needed for images and
        for maps the audit did not store); ``kwargs`` go to the widget.
        """
        from ..widgets import ExplanationExplorer

        return ExplanationExplorer.from_result(self, model=model, data=data, **kwargs)

    def dashboard(self, data: Any = None, model: Any = None, **kwargs: Any) -> Any:
        """Open a :class:`~xai_audit.widgets.SubgroupDashboard` on this result."""
        from ..widgets import SubgroupDashboard

        return SubgroupDashboard.from_result(self, model=model, data=data, **kwargs)

    def case_review(self, data: Any = None, model: Any = None, **kwargs: Any) -> Any:
        """Open a :class:`~xai_audit.widgets.CaseReview` on one case of this result."""
        from ..widgets import CaseReview

        return CaseReview.from_result(self, model=model, data=data, **kwargs)

    def __repr__(self) -> str:
        n = len(self.predictions)
        return (
            f"AuditResult({self.name!r}, images={n}, methods={self.method_names}, "
            f"findings={len(self.findings)}, result_dir={str(self.result_dir)!r})"
        )


class _Empty(dict):
    def __enter__(self) -> _Empty:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
