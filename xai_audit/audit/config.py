"""Audit configuration: a YAML or TOML file, validated completely before any computation.

Example (YAML; relative paths are resolved against the config file's folder)::

    name: Demo audit
    output_dir: ../reports/demo_audit
    model:
      loader: demo                 # "demo", "package.module:function", "file.py:function"
      positive_class: lesion       # or a TorchScript file "model.pt"
    data:
      manifest: ../datasets/demo/manifest.csv
    attributes: [sex, age_group, site]
    methods:
      gradcam: {}
      integrated_gradients: {n_steps: 16}
    threshold: youden              # a number, youden, max_f1, {sensitivity: 0.9}
    tolerance: 0.05                # or {sensitivity: 0.05, specificity: 0.05}
    model_card:
      intended_use: ...

See ``examples/demo_audit.yaml`` for every key.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import tomllib

from ._io import sha256_json

log = logging.getLogger(__name__)

#: Model-card fields a config may give (all optional, shown in the report's Model section).
MODEL_CARD_FIELDS = (
    "name",
    "version",
    "intended_use",
    "intended_users",
    "out_of_scope_use",
    "training_data",
    "limitations",
)
THRESHOLD_RULES = ("youden", "max_f1", "sensitivity", "specificity")


class ConfigError(ValueError):
    """The audit configuration is invalid; the message lists every problem found."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        text = f"{len(problems)} problem(s){where}:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)


@dataclass
class ModelConfig:
    """How to load the model.

    Attributes
    ----------
    loader : str
        ``"demo"`` (the bundled demo CNN), ``"package.module:function"`` or
        ``"path/to/file.py:function"`` (a function returning a ModelAdapter or an
        ``nn.Module``), or a TorchScript file (``.pt``/``.pth``).
    weights : str, optional
        Weights file passed to the demo loader (or to a loader function as ``weights=``).
    params : dict
        Keyword arguments for a loader function.
    class_names, positive_class, activation, batch_size, device, target_layer
        Passed to :class:`~xai_audit.model.ModelAdapter` when the loader returns a bare
        ``nn.Module`` (``positive_class``, ``batch_size`` and ``device`` also override an
        adapter's settings).
    """

    loader: str = "demo"
    weights: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    positive_class: int | str | None = None
    activation: str | None = None
    batch_size: int | None = None
    device: str | None = None
    target_layer: str | None = None


@dataclass
class DataConfig:
    """Where the data are and which manifest columns play which role."""

    manifest: str = ""
    image_root: str | None = None
    id_col: str = "case_id"
    image_col: str = "image"
    label_col: str = "label"
    #: Several label columns (a multi-label audit, :mod:`xai_audit.audit.labels`); overrides
    #: ``label_col``.
    label_cols: list[str] | None = None
    patient_col: str | None = "patient_id"
    mask_col: str | None = "mask"
    #: Bring images of mixed sizes to one size when loaded (:mod:`xai_audit.data.resize`).
    image_size: list[int] | None = None
    resize: str = "resize"
    #: Build case ids from the image paths ("filename" or "path") instead of ``id_col``.
    ids_from: str | None = None


@dataclass
class QualityConfig:
    """Explanation-trust checks.

    Perturbation checks (deletion/insertion, sanity) run on a bounded, seeded sample
    stratified by label and predicted class; shortcut discovery and localisation use every
    image.

    Shortcut settings
    -----------------
    shortcut_region : str, number, box, mask or .npy path, default "auto"
        ``"auto"``: search the whole image, patch by patch, for where one subgroup's positive
        predictions put unusual attribution (:mod:`xai_audit.quality.shortcut_discovery`).
        Or test one region: ``"corners"``, ``"border"``, ``"border_corners"``, a border
        width in (0, 0.5), a box ``[x0, y0, x1, y1]`` in pixels, a boolean mask ``H x W``
        (shared) or ``N x H x W`` (one per image), or the path of a ``.npy`` mask.
    shortcut_border, shortcut_corner : float, default 0.08, 0.15
        Widths of the named regions, fractions of the side.
    shortcut_grid : int, default 16
        Patches per side for ``"auto"``.
    shortcut_sample_size : int, default 64
        Images per edit sample of the causal confirmation (erase / paste), and test pairs per
        subgroup of the paste scan, seeded.
    shortcut_min_score_change : float, default 0.05
        Smallest mean score change of an edit that confirms a shortcut.
    shortcut_intersections : bool, default False
        Also search pairwise intersections of the attributes.
    shortcut_scan : bool, default True
        With ``"auto"``, also run the map-free paste scan
        (:mod:`xai_audit.quality.shortcut_scan`): every window of each subgroup's positive
        predictions is pasted onto other groups' negative predictions, which finds tokens the
        attribution maps do not show. Costs about ``2 x (49 x 8 + shortcut_sample_size)``
        model calls per subgroup, once per audit.

    Faithfulness settings
    ---------------------
    faithfulness_reference : {"road", "blur", "mean", "zeros"}, default "road"
        What deleted pixels are replaced with (:func:`xai_audit.quality.deletion_insertion`):
        ``"road"`` imputes them from their neighbours (noisy linear imputation, Rong et al.
        2022), which keeps the images in distribution; a blur can itself be read as a finding
        by the model (the verdict is then inconclusive).
    """

    faithfulness: bool = True
    sanity: bool = True
    localisation: bool = True
    shortcuts: bool = True
    sample_size: int = 64
    sanity_sample_size: int = 16
    n_steps: int = 20
    faithfulness_reference: str = "road"
    shortcut_region: Any = "auto"
    shortcut_border: float = 0.08
    shortcut_corner: float = 0.15
    shortcut_grid: int = 16
    shortcut_sample_size: int = 64
    shortcut_min_score_change: float = 0.05
    shortcut_intersections: bool = False
    shortcut_scan: bool = True


@dataclass
class AuditConfig:
    """A complete, validated description of one audit.

    Attributes
    ----------
    name : str
        Title of the audit.
    output_dir : str
        Result folder (shards, saved result); the report goes to ``report_path`` or
        ``output_dir/report.html``.
    model, data, quality : ModelConfig, DataConfig, QualityConfig
    attributes : list of str
        Sensitive attributes (manifest columns).
    intersections : bool, int or list of [str, str, ...]
        ``true``: every pair of attributes; ``3``: every pair and triple (three-way cells);
        a list: those intersections; ``false``: none.
    attribute_bins : dict, optional
        Bin edges per numeric attribute (``{age: [0, 40, 65, 120]}``), ``auto`` or ``false``;
        by default numeric attributes with more than 10 values are binned
        (:mod:`xai_audit.data.binning`).
    methods : dict of str to dict
        Attribution method -> parameters.
    threshold : float, str or (rule, target)
    threshold_from : dict, optional
        ``{split_column, split, rule}``: choose the threshold on these manifest rows, which
        are then left out of the audit (:mod:`xai_audit.audit.operating_point`).
    threshold_note : str, optional
        Where a given threshold comes from (e.g. "model card: Youden on validation").
    performance_floor : dict, optional
        Lowest acceptable overall value per metric (``{auroc: 0.8}``), judged on the lower CI
        (:mod:`xai_audit.audit.performance_findings`).
    criteria : str, optional
        Acceptance criteria file checked after the run (:mod:`xai_audit.audit.criteria`).
    tolerance : float or dict of metric -> float
        Largest acceptable disparity (absolute difference) before a flag.
    explain_labels : "auto", "all" or list of str
        Multi-label audits (``data.label_cols``): the labels explained (see
        :class:`~xai_audit.audit.Audit`); ``"auto"``: all when at most 5 labels, else the
        first and the flagged ones (at most 5).
    min_group_size, n_boot, ci, seed, batch_size
    exemplars_per_cell : int
        Gallery cases per (subgroup, outcome) cell.
    slices : bool, "auto" or dict
        Hidden-stratification discovery (:mod:`xai_audit.slices`); ``"auto"``: from 300
        images on; a mapping gives options (``min_images``, ``min_size``, ``alpha``, ...).
    model_card : dict
        ``name``, ``version``, ``intended_use``, ``intended_users``, ``out_of_scope_use``,
        ``training_data``, ``limitations``.
    documentation : dict
        Regulatory documentation fields and ``document_control`` (see
        :mod:`xai_audit.audit.documentation`); a field not given reads "not provided".
    backend : {"local", "ray"}
        Where the batches run (:mod:`xai_audit.audit.backends`); ``ray_address`` and
        ``ray_workers`` configure Ray. Not part of the audit's hash: results are the same.
    """

    name: str = "xai_audit audit"
    output_dir: str = "audit_result"
    report_path: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    attributes: list[str] = field(default_factory=list)
    intersections: bool | int | list[list[str]] = True
    attribute_bins: dict[str, Any] | None = None
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: {"gradcam": {}})
    threshold: Any = "youden"
    threshold_from: dict[str, Any] | None = None
    threshold_note: str | None = None
    performance_floor: dict[str, float] | None = None
    criteria: str | None = None
    tolerance: float | dict[str, float] = 0.05
    explain_labels: Any = "auto"
    min_group_size: int = 30
    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    batch_size: int = 32
    quality: QualityConfig = field(default_factory=QualityConfig)
    exemplars_per_cell: int = 2
    slices: Any = "auto"
    model_card: dict[str, Any] = field(default_factory=dict)
    documentation: dict[str, Any] = field(default_factory=dict)
    progress: Any = None  # display only: not part of the audit's settings or hash
    # Where the batches run (xai_audit.audit.backends); the results are the same, so these
    # are not part of the audit's settings or hash either.
    backend: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (recorded in the result's provenance)."""
        out = asdict(self)
        out.pop("source", None)
        out.pop("progress", None)
        for key in ("backend", "ray_address", "ray_workers"):
            out.pop(key, None)
        return out

    def hash(self) -> str:
        """SHA-256 of :meth:`to_dict`."""
        return sha256_json(self.to_dict())


def check_quality_sizes(q: QualityConfig) -> list[str]:
    """Problems with the perturbation-check settings (sample sizes, steps, reference)."""
    problems = []
    for key in ("sample_size", "sanity_sample_size", "n_steps"):
        v = getattr(q, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            problems.append(f"quality.{key} must be an integer >= 2, got {v!r}")
    if q.faithfulness_reference not in ("road", "blur", "mean", "zeros"):
        problems.append(
            "quality.faithfulness_reference must be 'road', 'blur', 'mean' or 'zeros', got "
            f"{q.faithfulness_reference!r}"
        )
    return problems


# ------------------------------------------------------------------------------ parsing
def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"config file not found: {str(path)!r}"])
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(
                [f"unknown config format {path.suffix!r}: use .yaml, .yml or .toml"], str(path)
            )
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - YAML/TOML parser errors, re-raised with context
        raise ConfigError([f"cannot parse the file: {exc}"], str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError(["the file must hold a mapping of settings at top level"], str(path))
    return data


def _build(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    """Instantiate a config dataclass from a mapping, reporting unknown keys."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        problems.append(f"{where} must be a mapping, got {type(data).__name__}")
        return cls()
    names = {f.name for f in fields(cls)} - {"source"}
    unknown = sorted(set(data) - names)
    if unknown:
        problems.append(f"unknown key(s) {unknown} in {where}; known keys: {sorted(names)}")
    return cls(**{k: v for k, v in data.items() if k in names})


def parse_config(
    data: dict[str, Any], base_dir: str | Path = ".", source: str | None = None
) -> AuditConfig:
    """Build an :class:`AuditConfig` from a mapping and validate it (see :func:`validate`).

    Relative paths are resolved against ``base_dir``.
    """
    problems: list[str] = []
    data = dict(data)
    model = _build(ModelConfig, data.pop("model", None), "model", problems)
    dconf = _build(DataConfig, data.pop("data", None), "data", problems)
    quality = _build(QualityConfig, data.pop("quality", None), "quality", problems)
    if "sensitive" in data and "attributes" not in data:
        data["attributes"] = data.pop("sensitive")
    methods = data.pop("methods", None)
    cfg = _build(AuditConfig, data, "the config", problems)
    cfg.model, cfg.data, cfg.quality, cfg.source = model, dconf, quality, source
    if methods is not None:
        cfg.methods = _parse_methods(methods, problems)
    base = Path(base_dir)

    def resolve(p: str | None) -> str | None:
        if p is None or p == "" or Path(p).is_absolute():
            return p
        return str((base / p).resolve())

    cfg.data.manifest = resolve(cfg.data.manifest) or ""
    cfg.data.image_root = resolve(cfg.data.image_root)
    cfg.output_dir = resolve(cfg.output_dir) or cfg.output_dir
    cfg.report_path = resolve(cfg.report_path)
    cfg.criteria = resolve(cfg.criteria) if isinstance(cfg.criteria, str) else cfg.criteria
    cfg.model.weights = resolve(cfg.model.weights)
    region = cfg.quality.shortcut_region
    if isinstance(region, str) and region.lower().endswith(".npy"):
        cfg.quality.shortcut_region = resolve(region)  # a mask file next to the config
    if cfg.model.loader.endswith((".pt", ".pth", ".ts")) or ".py:" in cfg.model.loader:
        path, _, fn = cfg.model.loader.partition(":")
        cfg.model.loader = resolve(path) + (f":{fn}" if fn else "")  # type: ignore[operator]
    problems += validate(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _parse_methods(methods: Any, problems: list[str]) -> dict[str, dict[str, Any]]:
    if isinstance(methods, str):
        return {methods: {}}
    if isinstance(methods, list):
        out: dict[str, dict[str, Any]] = {}
        for m in methods:
            if isinstance(m, str):
                out[m] = {}
            elif isinstance(m, dict) and "name" in m:
                out[str(m["name"])] = {k: v for k, v in m.items() if k != "name"}
            else:
                problems.append(f"cannot read method entry {m!r}: give a name or {{name: ...}}")
        return out
    if isinstance(methods, dict):
        out = {}
        for k, v in methods.items():
            if v is not None and not isinstance(v, dict):
                problems.append(f"parameters of method {k!r} must be a mapping, got {v!r}")
                v = {}
            out[str(k)] = dict(v or {})
        return out
    problems.append(f"methods must be a list or a mapping, got {type(methods).__name__}")
    return {}


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate a YAML or TOML audit config.

    Raises
    ------
    ConfigError
        Listing every problem (unknown keys and methods, missing columns and files, bad
        tolerances or threshold rules) before anything is computed.
    """
    path = Path(path)
    return parse_config(_read_file(path), base_dir=path.parent, source=str(path))


# ------------------------------------------------------------------------------ validation
def check_threshold(threshold: Any) -> str | None:
    """A problem message for an invalid threshold rule, or None."""
    from ..fairness.threshold import parse_rule

    if isinstance(threshold, dict) and len(threshold) == 1:
        threshold = tuple(next(iter(threshold.items())))
    try:
        rule, value = parse_rule(threshold)
    except (ValueError, TypeError) as exc:
        return f"threshold: {exc}"
    if rule == "fixed" and not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        return f"threshold: a fixed threshold must lie in [0, 1], got {value}"
    return None


def normalise_threshold(threshold: Any) -> Any:
    """``{"sensitivity": 0.9}`` or ``["sensitivity", 0.9]`` -> ``("sensitivity", 0.9)``."""
    if isinstance(threshold, dict) and len(threshold) == 1:
        return tuple(next(iter(threshold.items())))
    if isinstance(threshold, list):
        return tuple(threshold)
    return threshold


def check_tolerance(tolerance: Any) -> list[str]:
    """Problem messages for an invalid tolerance (a number in (0, 1) or metric -> number)."""
    from ..fairness._common import METRICS

    def bad(v: Any) -> bool:
        return isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0

    if isinstance(tolerance, dict):
        out = []
        unknown = sorted(set(tolerance) - set(METRICS))
        if unknown:
            out.append(f"tolerance names unknown metric(s) {unknown}; known: {list(METRICS)}")
        out += [
            f"tolerance for {k!r} must be a number in (0, 1) (an absolute difference), got {v!r}"
            for k, v in tolerance.items()
            if bad(v)
        ]
        return out
    if bad(tolerance):
        return [
            f"tolerance must be a number in (0, 1) (largest acceptable absolute difference "
            f"between subgroups, e.g. 0.05) or a mapping metric -> number; got {tolerance!r}"
        ]
    return []


def check_methods(methods: dict[str, dict[str, Any]]) -> list[str]:
    """Problem messages for unknown methods or parameters (names the known methods)."""
    try:
        from ..explain import available_methods, get_method
    except ImportError as exc:  # pragma: no cover - explain is part of the package
        return [f"the explain sub-package cannot be imported: {exc}"]
    problems = []
    if not methods:
        problems.append(f"no attribution method given; known methods: {available_methods()}")
    for name, params in methods.items():
        try:
            cls = get_method(name)
        except (ValueError, TypeError) as exc:
            problems.append(f"methods: {exc}")
            continue
        params = {k: v for k, v in params.items() if k != "max_images"}
        try:
            cls(**params)
        except (TypeError, ValueError) as exc:
            problems.append(f"methods: {name}: {exc}")
    return problems


def check_shortcut(
    q: QualityConfig, image_shape: tuple[int, ...] | None = None, n_images: int | None = None
) -> list[str]:
    """Problem messages for the shortcut settings of a :class:`QualityConfig`.

    ``image_shape`` (``(H, W)`` or ``(D, H, W)``) and ``n_images``, when known, let boxes
    and masks be checked against the data.
    """
    from ..quality.regions import check_region

    problems = check_region(
        q.shortcut_region,
        border=q.shortcut_border,
        corner=q.shortcut_corner,
        image_shape=image_shape,
        n_images=n_images,
    )
    for key, low in (("shortcut_grid", 2), ("shortcut_sample_size", 2)):
        v = getattr(q, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            problems.append(f"quality.{key} must be an integer >= {low}, got {v!r}")
    v = q.shortcut_min_score_change
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
        problems.append(
            f"quality.shortcut_min_score_change must be a score change in (0, 1), got {v!r}"
        )
    if not isinstance(q.shortcut_scan, bool):
        problems.append(f"quality.shortcut_scan must be true or false, got {q.shortcut_scan!r}")
    if not isinstance(q.shortcut_intersections, bool):
        problems.append(
            f"quality.shortcut_intersections must be true or false, got {q.shortcut_intersections!r}"
        )
    return problems


def check_intersections(intersections: Any, attributes: list[str]) -> list[str]:
    """Problem messages for ``intersections`` (bool, an integer >= 2, or lists of attributes)."""
    if isinstance(intersections, bool):
        return []
    if isinstance(intersections, int):
        return (
            []
            if intersections >= 2
            else [
                f"intersections as a number is the most attributes per cell (>= 2), got "
                f"{intersections}"
            ]  # fmt: skip
        )
    if not isinstance(intersections, list) or not all(
        isinstance(c, list) and len(c) >= 2 and all(isinstance(a, str) for a in c)
        for c in intersections
    ):
        return [
            "intersections must be true, false, a number (3: pairs and triples) or a list of "
            f"attribute lists such as [[sex, age_group]]; got {intersections!r}"
        ]
    unknown = sorted({a for c in intersections for a in c} - set(attributes))
    return (
        [f"intersections name attributes {unknown} that are not in attributes"] if unknown else []
    )


def manifest_columns(path: str) -> list[str] | None:
    """Header of a CSV manifest (None when it cannot be read)."""
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except Exception:  # noqa: BLE001 - reported as a problem by the caller
        return None


def check_columns(columns: list[str], dconf: DataConfig, attributes: list[str]) -> list[str]:
    """Problem messages for manifest columns that the config names but the file lacks."""
    wanted = {
        "data.id_col": dconf.id_col,
        "data.image_col": dconf.image_col,
        "data.label_col": dconf.label_col,
    }
    if dconf.ids_from:  # ids are built from the image paths
        del wanted["data.id_col"]
    label_problems = []
    if dconf.label_cols is not None:  # multi-label: every listed column instead of label_col
        del wanted["data.label_col"]
        cols = dconf.label_cols
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            label_problems.append(
                f"data.label_cols must be a non-empty list of column names, got {cols!r}"
            )
        else:
            wanted.update({f"data.label_cols[{i}]": c for i, c in enumerate(cols)})
    for key, col in (("data.patient_col", dconf.patient_col), ("data.mask_col", dconf.mask_col)):
        # The defaults are optional; explicitly configured ones must exist.
        if col and (col not in ("patient_id", "mask") or col in columns):
            wanted[key] = col
    problems = [
        f"{key}: column {col!r} is not in the manifest; available columns: {columns}"
        for key, col in wanted.items()
        if col not in columns
    ]
    problems += label_problems
    missing = [a for a in attributes if a not in columns]
    if missing:
        problems.append(
            f"attributes {missing} are not columns of the manifest; available columns: {columns}"
        )
    return problems


def validate(cfg: AuditConfig) -> list[str]:
    """Every problem with ``cfg`` (empty when it is valid). Cheap: reads only file headers."""
    problems: list[str] = []
    if not cfg.attributes:
        problems.append("attributes: give at least one sensitive attribute (a manifest column)")
    elif not isinstance(cfg.attributes, list) or not all(
        isinstance(a, str) for a in cfg.attributes
    ):
        problems.append(f"attributes must be a list of column names, got {cfg.attributes!r}")
    problems += check_methods(cfg.methods)
    msg = check_threshold(normalise_threshold(cfg.threshold))
    if msg:
        problems.append(msg)
    problems += check_tolerance(cfg.tolerance)
    problems += _check_data_loading(cfg.data)
    from ..data.binning import check_attribute_bins

    problems += check_attribute_bins(cfg.attribute_bins, list(cfg.attributes or []))
    problems += _check_change_control(cfg)
    for key in ("min_group_size", "n_boot", "batch_size", "seed", "exemplars_per_cell"):
        v = getattr(cfg, key)
        if (
            isinstance(v, bool)
            or not isinstance(v, int)
            or v < (0 if key in ("seed", "exemplars_per_cell") else 1)
        ):
            problems.append(f"{key} must be a positive integer, got {v!r}")
    if not isinstance(cfg.ci, (int, float)) or not 0.5 <= cfg.ci < 1.0:
        problems.append(f"ci must be a confidence level in [0.5, 1), got {cfg.ci!r}")
    from .progress import PROGRESS_VALUES

    if cfg.progress not in PROGRESS_VALUES:
        problems.append(
            f"progress must be true, false, auto, bar, log or off; got {cfg.progress!r}"
        )
    q = cfg.quality
    problems += check_quality_sizes(q)
    from .backends import check_backend

    problems += check_backend(cfg.backend, cfg.ray_address, cfg.ray_workers)
    problems += check_shortcut(q)
    from ..slices.audit import check_setting as check_slices

    problems += check_slices(cfg.slices)
    from .documentation import check_documentation

    problems += check_documentation(cfg.documentation)
    problems += check_intersections(cfg.intersections, list(cfg.attributes or []))
    unknown_card = sorted(set(cfg.model_card) - set(MODEL_CARD_FIELDS))
    if unknown_card:
        problems.append(
            f"model_card: unknown field(s) {unknown_card}; known: {list(MODEL_CARD_FIELDS)}"
        )
    # files and columns
    if not cfg.data.manifest:
        problems.append("data.manifest: give the path of the manifest CSV")
    elif not Path(cfg.data.manifest).is_file():
        problems.append(f"data.manifest: file not found: {cfg.data.manifest!r}")
    else:
        columns = manifest_columns(cfg.data.manifest)
        if columns is None:
            problems.append(f"data.manifest: cannot read {cfg.data.manifest!r} as CSV")
        else:
            problems += check_columns(columns, cfg.data, list(cfg.attributes or []))
    if cfg.data.image_root and not Path(cfg.data.image_root).is_dir():
        problems.append(f"data.image_root: folder not found: {cfg.data.image_root!r}")
    problems += _check_model(cfg.model)
    return problems


def _check_change_control(cfg: AuditConfig) -> list[str]:
    """threshold_from, threshold_note, performance_floor and the criteria file."""
    from .criteria import CriteriaError, load_criteria
    from .operating_point import check_threshold_from
    from .performance_findings import check_floor

    columns = manifest_columns(cfg.data.manifest) if Path(cfg.data.manifest).is_file() else None
    problems = check_threshold_from(cfg.threshold_from, cfg.threshold, columns)
    if cfg.threshold_note is not None and not isinstance(cfg.threshold_note, str):
        problems.append(f"threshold_note must be text, got {cfg.threshold_note!r}")
    problems += check_floor(cfg.performance_floor)
    if cfg.criteria is not None:
        if not isinstance(cfg.criteria, str):
            problems.append(f"criteria must be the path of a criteria file, got {cfg.criteria!r}")
        else:
            try:
                load_criteria(cfg.criteria)
            except CriteriaError as exc:
                problems += [f"criteria: {p}" for p in exc.problems]
    return problems


def _check_model(m: ModelConfig) -> list[str]:
    if m.weights and not Path(m.weights).is_file():
        return [f"model.weights: file not found: {m.weights!r}"]
    if m.loader == "demo":
        if m.weights is None:
            from ..model.demo import WEIGHTS_FILE, _weights_dir

            if not (_weights_dir() / WEIGHTS_FILE).is_file():
                return ["model.loader: the bundled demo weights are not installed"]
        return []
    target, _, fn = m.loader.partition(":")
    if target.endswith((".pt", ".pth", ".ts")) and not fn:
        return [] if Path(target).is_file() else [f"model.loader: file not found: {target!r}"]
    if not fn:
        return [
            f"model.loader {m.loader!r}: use 'demo', 'package.module:function', "
            "'file.py:function' or a TorchScript file"
        ]
    if target.endswith(".py"):
        return [] if Path(target).is_file() else [f"model.loader: file not found: {target!r}"]
    if importlib.util.find_spec(target.split(".")[0]) is None:
        return [f"model.loader: module {target!r} cannot be found"]
    return []


# ------------------------------------------------------------------------------ loading
def load_model(m: ModelConfig) -> Any:
    """Build the :class:`~xai_audit.model.ModelAdapter` a :class:`ModelConfig` describes."""
    import torch

    from ..model import ModelAdapter, load_demo_model

    if m.loader == "demo":
        adapter = load_demo_model(m.weights, device=m.device)
    else:
        target, _, fn = m.loader.partition(":")
        if not fn:
            obj: Any = torch.jit.load(target, map_location=m.device or "cpu")
        else:
            if target.endswith(".py"):
                spec = importlib.util.spec_from_file_location(Path(target).stem, target)
                module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            else:
                module = importlib.import_module(target)
            kwargs = dict(m.params)
            if m.weights:
                kwargs.setdefault("weights", m.weights)
            obj = getattr(module, fn)(**kwargs)
        if isinstance(obj, ModelAdapter):
            adapter = obj
        else:
            adapter = ModelAdapter(
                obj,
                class_names=m.class_names,
                activation=m.activation,  # type: ignore[arg-type]
                positive_class=m.positive_class,
                target_layer=m.target_layer,
                device=m.device,
                batch_size=m.batch_size or 32,
            )
    if m.positive_class is not None:
        adapter._positive_class = m.positive_class  # an explicit config choice wins
    if m.batch_size:
        adapter.batch_size = int(m.batch_size)
    return adapter


def load_data(d: DataConfig, attributes: list[str]) -> Any:
    """Load and validate the manifest a :class:`DataConfig` describes."""
    from ..data import load_manifest

    columns = manifest_columns(d.manifest) or []
    patient = d.patient_col if d.patient_col and d.patient_col in columns else False
    mask = d.mask_col if d.mask_col and d.mask_col in columns else False
    return load_manifest(
        d.manifest,
        image_root=d.image_root,
        id_col=d.id_col,
        image_col=d.image_col,
        label_cols=list(d.label_cols) if d.label_cols else [d.label_col],
        attribute_cols=list(attributes),
        patient_col=patient,
        mask_col=mask,
        image_size=d.image_size,
        resize=d.resize,
        ids_from=d.ids_from,  # type: ignore[arg-type]
    )


def _check_data_loading(d: DataConfig) -> list[str]:
    """``data.image_size`` / ``data.resize`` / ``data.ids_from`` problems."""
    from ..data.resize import check_image_size

    problems = []
    try:
        check_image_size(d.image_size, d.resize)
    except ValueError as exc:
        problems.append(f"data: {exc}")
    if d.ids_from not in (None, "filename", "path"):
        problems.append(f"data.ids_from must be filename or path (or absent), got {d.ids_from!r}")
    return problems


@dataclass
class RunOutput:
    """What :func:`run_config` returns."""

    result: Any
    result_dir: Path
    report_path: Path


def audit_from_config(
    cfg: AuditConfig, output_dir: str | Path | None = None, fresh: bool = False
) -> Any:
    """The :class:`~xai_audit.audit.Audit` a validated config describes (nothing run yet)."""
    from .runner import Audit

    model = load_model(cfg.model)
    data = load_data(cfg.data, cfg.attributes)
    return Audit(
        model,
        data,
        sensitive=cfg.attributes,
        methods=cfg.methods,
        threshold=normalise_threshold(cfg.threshold),
        threshold_from=cfg.threshold_from,
        threshold_note=cfg.threshold_note,
        performance_floor=cfg.performance_floor,
        criteria=cfg.criteria,
        tolerance=cfg.tolerance,
        intersections=cfg.intersections,
        attribute_bins=cfg.attribute_bins,
        min_group_size=cfg.min_group_size,
        n_boot=cfg.n_boot,
        ci=cfg.ci,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        quality=cfg.quality,
        exemplars_per_cell=cfg.exemplars_per_cell,
        slices=cfg.slices,
        model_card=cfg.model_card,
        documentation=cfg.documentation,
        name=cfg.name,
        output_dir=output_dir or cfg.output_dir,
        fresh=fresh,
        config=cfg.to_dict(),
        explain_labels=cfg.explain_labels,
        backend=cfg.backend,
        ray_address=cfg.ray_address,
        ray_workers=cfg.ray_workers,
    )


def run_config(
    path: str | Path,
    output_dir: str | Path | None = None,
    fresh: bool = False,
    overwrite: bool = False,
    progress: Any = None,
    slices: Any = None,
    cli: bool = False,
    backend: str | None = None,
    ray_address: str | None = None,
    ray_workers: int | None = None,
) -> RunOutput:
    """Run the audit a YAML/TOML config describes and write its report.

    Parameters
    ----------
    path : str or Path
        The config file.
    output_dir : str or Path, optional
        Overrides the config's ``output_dir``.
    fresh : bool, default False
        Ignore finished batches of an earlier run and start afresh.
    overwrite : bool, default False
        Write into an output folder (and over report files) that xai_audit did not create
        (see :class:`~xai_audit.audit.Audit`).
    progress : None, bool or str, optional
        Overrides the config's ``progress`` key (see :meth:`Audit.run`).
    slices : None, bool or "auto", optional
        Overrides the config's ``slices`` key (slice discovery).
    cli : bool, default False
        Automatic progress prints plain lines when stderr is not a terminal (the command
        line), instead of nothing.
    backend, ray_address, ray_workers : optional
        Override the config's keys of the same names (where the batches run).

    Returns
    -------
    RunOutput
        ``result``, ``result_dir`` and ``report_path``.
    """
    cfg = load_config(path)
    if slices is not None:  # the CLI's --slices / --no-slices
        cfg.slices = slices
    if backend is not None or ray_address is not None or ray_workers is not None:
        from .backends import check_backend

        cfg.backend = backend or ("ray" if ray_address or ray_workers else cfg.backend)
        cfg.ray_address = ray_address if ray_address is not None else cfg.ray_address
        cfg.ray_workers = ray_workers if ray_workers is not None else cfg.ray_workers
        problems = check_backend(cfg.backend, cfg.ray_address, cfg.ray_workers)
        if problems:
            raise ConfigError(problems, str(path))
    audit = audit_from_config(cfg, output_dir=output_dir, fresh=fresh)
    audit.overwrite = overwrite
    from .progress import make_progress

    shown = make_progress(cfg.progress if progress is None else progress, cli=cli)
    result = audit.run(progress=shown)
    result_dir = Path(audit.output_dir)
    report = (
        Path(cfg.report_path)
        if cfg.report_path and output_dir is None
        else result_dir / "report.html"
    )
    shown.step("report")
    report_path = result.report(report, overwrite=overwrite)
    shown.end()
    return RunOutput(result=result, result_dir=result_dir, report_path=report_path)
