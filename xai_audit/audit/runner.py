"""The :class:`Audit`: from a model and a manifest to a saved :class:`AuditResult`."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..data.errors import DataWarning
from ..model import ModelAdapter
from . import aggregate, provenance
from ._io import sha256_json
from .batch import BatchTask, MethodSpec, compute_batch
from .config import (
    QualityConfig,
    check_methods,
    check_quality_sizes,
    check_threshold,
    check_tolerance,
    normalise_threshold,
)
from .findings import collect_findings
from .labels import is_multilabel, label_problems, run_multilabel, task_key
from .progress import BatchPhase, make_progress, step
from .result import AuditResult
from .store import FolderLock, ShardStore, claim_folder

log = logging.getLogger(__name__)

#: ``on_batch(k, n_batches, status)`` with status ``"computed"`` or ``"reused"``.
BatchCallback = Callable[[int, int, str], None]


def _methods(methods: Any) -> tuple[MethodSpec, ...]:
    if isinstance(methods, str):
        return (MethodSpec(methods),)
    if isinstance(methods, Mapping):
        return tuple(MethodSpec.parse(str(k), dict(v or {})) for k, v in methods.items())
    out = []
    for m in methods:
        out.append(m if isinstance(m, MethodSpec) else MethodSpec(str(m)))
    return tuple(out)


class Audit:
    """One audit of a model on a data set: predictions, explanations, checks, subgroups.

    Parameters
    ----------
    model : ModelAdapter
        The wrapped classifier (binary audits use ``model.positive_index``).
    data : Manifest or str or Path
        A :class:`~xai_audit.data.Manifest` or the path of a manifest CSV.
    sensitive : sequence of str
        Attribute columns to audit.
    methods : sequence of str or mapping of str to dict, default ("gradcam",)
        Attribution methods, optionally with parameters (``{"integrated_gradients":
        {"n_steps": 32}}``).
    threshold : float, str or (rule, target), default "youden"
        Operating threshold or rule (see :func:`xai_audit.fairness.evaluate_subgroups`).
        A rule is applied to the audited data itself (reported as optimistic) unless
        ``threshold_from`` names a validation split.
    threshold_from : dict, optional
        ``{"split_column": "split", "split": "validation", "rule": "youden"}``: choose the
        threshold by the rule on these manifest rows, which are set aside and enter no metric
        of the audit (:mod:`xai_audit.audit.operating_point`).
    threshold_note : str, optional
        Where a given threshold comes from (shown in the report), e.g. "model card".
    performance_floor : dict, optional
        Lowest acceptable overall value per metric, judged on the lower end of the CI (a high
        finding when not met); the AUROC is always judged against chance (0.5).
    criteria : str, Path or Criteria, optional
        Acceptance criteria checked at the end of the run; verdicts in ``result.criteria``
        (:mod:`xai_audit.audit.criteria`).
    tolerance : float or dict, default 0.05
        Largest acceptable disparity (absolute difference) before a flag.
    intersections : bool or list of pairs, default True
    attribute_bins : dict, optional
        Bins for numeric attributes, ``{"age": [0, 40, 65, 120]}`` (left-closed edges with open
        ends: ``"<0"``, ``"0-39"``, ``"40-64"``, ``"65-119"``, ``"120+"``), ``"auto"`` or
        ``False`` (raw values) per column. By default a numeric attribute with more than 10
        distinct values is binned: age-like columns in decades, others in quintiles
        (:mod:`xai_audit.data.binning`); the data summary and findings say how.
    min_group_size, n_boot, ci, seed
        Subgroup analysis settings (bootstrap resamples are patient-level when the manifest
        has a patient id).
    batch_size : int, optional
        Images per batch (and per shard); default the model's batch size.
    quality : QualityConfig or dict, optional
        Explanation-trust checks (see :class:`~xai_audit.audit.config.QualityConfig`).
    exemplars_per_cell : int, default 2
        Gallery cases per (subgroup, outcome).
    thumbnail_size : int, default 96
        Long side of stored exemplar thumbnails, pixels.
    model_card : dict, optional
        Intended use, intended users, out-of-scope use, training data, limitations, ...
    documentation : dict, optional
        Regulatory documentation fields and document control, shown in the report's
        documentation checklist (see :mod:`xai_audit.audit.documentation`).
    name : str, optional
        Title of the audit.
    output_dir : str or Path, optional
        Result folder; default ``audits/<model hash>-<data hash>`` so that a rerun resumes.
    fresh : bool, default False
        Discard finished batches of an earlier run.
    overwrite : bool, default False
        Write into ``output_dir`` even when it is a non-empty folder that xai_audit did not
        create (no ``.xai_audit`` marker). By default such a folder is refused, so that the
        audit never replaces anyone's files; with ``overwrite=True`` files with the result's
        names are replaced and nothing else is touched. A new or empty folder, or one an
        earlier audit wrote, needs no flag.
    config : dict, optional
        The config the audit came from (recorded in the provenance).
    on_batch : callable, optional
        ``on_batch(k, n_batches, status)`` after each batch (progress, tests).
    explain_labels : "auto", "all" or list of str, default "auto"
        Multi-label audits (several label columns; :mod:`xai_audit.audit.labels`): the
        labels explained (attribution maps and explanation checks; every label gets its
        threshold, subgroup tables and findings). ``"auto"``: all labels when there are at
        most 5, else the first label and the labels with a flagged subgroup gap (at most 5).
    backend : {"local", "ray"}, default "local"
        Engine of the batch phase: the local loop, or Ray actors (one per GPU, else per CPU)
        writing the same shards (needs ``pip install "xai-audit[ray]"``). Results, resume and
        the folder lock are the same for both; aggregation always runs here.
    ray_address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``); default: the Ray already
        initialised in this process, else ``RAY_ADDRESS``, else a local Ray for this run.
    ray_workers : int, optional
        Number of Ray actors (default one per GPU of the cluster, else one per CPU).
    slices : bool, "auto" or dict, default "auto"
        Hidden-stratification discovery (:mod:`xai_audit.slices`) on the model's
        penultimate-layer embeddings; ``"auto"`` runs it from 300 images on (below, half the
        images held out for testing leave slices too small to test); a dict gives options
        (``min_images``, ``min_size``, ``alpha``, ``min_gap``, ``max_components``, ...).

    Attributes
    ----------
    data_warnings : list of str
        Valid but suspicious data found when the audit was built: an attribute mixing value
        types, with a single group or with many numeric values; patients whose images
        disagree on the label or an attribute. Also emitted as
        :class:`~xai_audit.data.errors.DataWarning` and kept in the result
        (``data_summary["warnings"]`` and an info finding).

    Raises
    ------
    ConfigError
        Every problem found before any work, together: settings, empty data, an
        ``output_dir`` that is a file, and what one probe forward pass on two images reveals
        (:meth:`ModelAdapter.check_inputs`: channels vs the model's first layer, output rows,
        dtype and shape, NaN outputs, gradients), each saying how to fix it.

    Examples
    --------
    >>> result = Audit(model, manifest, sensitive=["sex", "age_group"],
    ...                methods=["gradcam", "integrated_gradients"]).run()
    >>> result.report("reports/audit.html")
    """

    def __init__(
        self,
        model: ModelAdapter,
        data: Any,
        sensitive: Sequence[str] = (),
        methods: Any = ("gradcam",),
        *,
        threshold: Any = "youden",
        threshold_from: Mapping[str, Any] | None = None,
        threshold_note: str | None = None,
        performance_floor: Mapping[str, float] | None = None,
        criteria: Any = None,
        tolerance: float | dict[str, float] = 0.05,
        intersections: bool | Sequence[Sequence[str]] = True,
        attribute_bins: Mapping[str, Any] | None = None,
        min_group_size: int = 30,
        n_boot: int = 1000,
        ci: float = 0.95,
        seed: int = 0,
        batch_size: int | None = None,
        quality: QualityConfig | Mapping[str, Any] | None = None,
        exemplars_per_cell: int = 2,
        thumbnail_size: int = 96,
        model_card: Mapping[str, Any] | None = None,
        documentation: Mapping[str, Any] | None = None,
        name: str | None = None,
        output_dir: str | Path | None = None,
        fresh: bool = False,
        overwrite: bool = False,
        config: Mapping[str, Any] | None = None,
        on_batch: BatchCallback | None = None,
        explain_labels: str | Sequence[str] = "auto",
        backend: str = "local",
        ray_address: str | None = None,
        ray_workers: int | None = None,
        slices: Any = "auto",
    ) -> None:
        if isinstance(data, (str, Path)):
            from ..data import load_manifest

            data = load_manifest(data)
        self.model = model
        self.data = data
        self.sensitive = [sensitive] if isinstance(sensitive, str) else list(sensitive)
        self._bin_numeric_attributes(attribute_bins)
        self.methods = _methods(methods)
        self.threshold = normalise_threshold(threshold)
        # Change control: a validation split is set aside before anything else sees the data.
        from .change_control import prepare

        self.threshold_from, self.threshold_note = threshold_from, threshold_note
        self.performance_floor = dict(performance_floor) if performance_floor else None
        cc = prepare(self.data, self.threshold, threshold_from, self.performance_floor, criteria)
        self.data, self._validation, self.criteria = cc.data, cc.validation, cc.criteria
        self._change_control_problems = cc.problems
        self.tolerance = tolerance
        self.intersections = (
            intersections
            if isinstance(intersections, (bool, int))
            else [tuple(p) for p in intersections]
        )
        self.min_group_size = int(min_group_size)
        self.n_boot = int(n_boot)
        self.ci = float(ci)
        self.seed = int(seed)
        self.batch_size = int(batch_size or model.batch_size)
        if quality is None:
            quality = QualityConfig()
        elif isinstance(quality, Mapping):
            quality = QualityConfig(**quality)
        self.quality = quality
        self.exemplars_per_cell = int(exemplars_per_cell)
        self.slices = slices
        self.thumbnail_size = int(thumbnail_size)
        self.model_card = dict(model_card or {})
        from .documentation import normalise_documentation

        self.documentation = normalise_documentation(documentation)
        self.name = name or f"Audit of {model.name}"
        self.fresh = fresh
        self.overwrite = bool(overwrite)
        self.on_batch = on_batch
        self.explain_labels = explain_labels
        self.backend, self.ray_address, self.ray_workers = backend, ray_address, ray_workers
        self._config = dict(config) if config is not None else None
        self._output_dir = Path(output_dir) if output_dir is not None else None
        self._validate()

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        """Every problem with the settings, raised together before any computation."""
        from .config import ConfigError

        problems = []
        attrs = list(self.data.attribute_cols) + [
            c for c in self.data.table.columns if c not in self.data.attribute_cols
        ]
        if len(self.data) == 0:
            problems.append(
                "data: the manifest has no rows; an audit needs at least one image (add one "
                "row per image)"
            )
        out_problem = self._output_dir_problem()
        if out_problem:
            problems.append(out_problem)
        if not self.sensitive:
            problems.append("sensitive: give at least one attribute column")
        problems += self._bin_problems
        missing = [a for a in self.sensitive if a not in self.data.table.columns]
        if missing:
            problems.append(
                f"sensitive attributes {missing} are not manifest columns; available: {attrs}"
            )
        if not self.data.label_cols:
            problems.append(
                "the audit needs a label column; the manifest has none (label_cols=[...])"
            )
        problems += check_methods({m.name: m.params for m in self.methods})
        problems += [
            f"methods: {m.name}: max_images must be >= 1, got {m.max_images}"
            for m in self.methods
            if m.max_images is not None and m.max_images < 1
        ]
        msg = check_threshold(self.threshold)
        if msg:
            problems.append(msg)
        problems += check_tolerance(self.tolerance)
        problems += self._change_control_problems
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.data):
            problems += self._probe_problems()
        if len(self.data.label_cols) > 1:  # multi-label: outputs matched to labels
            problems += label_problems(self)
        elif self.model.n_outputs is not None:  # known from class names or the probe
            try:
                self.model.positive_index  # noqa: B018 - raises for ambiguous multi-class models
            except (ValueError, RuntimeError) as exc:
                problems.append(f"model: {exc}")
        problems += check_quality_sizes(self.quality)
        from ..slices.audit import check_setting as check_slices

        problems += check_slices(self.slices)
        problems += self._check_shortcut()
        from .backends import check_backend

        problems += check_backend(self.backend, self.ray_address, self.ray_workers)
        if problems:
            raise ConfigError(problems, "Audit")
        self.data_warnings = self._data_warnings()
        for w in self.data_warnings:
            warnings.warn(w, DataWarning, stacklevel=3)

    def _output_dir_problem(self) -> str | None:
        """The output folder path names a file (or lies below one): say so before any work."""
        if self._output_dir is None:
            return None
        path = self._output_dir
        for p in (path, *path.parents):
            if not p.exists():
                continue
            if p.is_dir():
                return None
            if p == path:
                return (
                    f"output_dir {str(path)!r} is an existing file, not a folder; give the path "
                    "of a folder (it is created when absent)"
                )
            return (
                f"output_dir {str(path)!r} cannot be created: {str(p)!r} is a file, not a "
                "folder; choose another location"
            )
        return None

    def _probe_problems(self) -> list[str]:
        """One forward pass on (at most) two images: layout, channels, output rows/dtype/shape.

        See :meth:`ModelAdapter.check_inputs`; cheap, and it turns a crash deep inside the
        first batch into a diagnosis before any work.
        """
        from ..explain import get_method

        try:
            images = self.data.load_images(np.arange(min(2, len(self.data))))
        except Exception as exc:  # unreadable file, mixed shapes: the manifest's own message
            return [f"data: the first images cannot be loaded: {exc}"]
        from ..explain.cam import _CamExplainer

        # What the methods differentiate: the pixels, a layer only (CAMs), or nothing.
        gradients = None
        try:
            for m in self.methods:
                cls = get_method(m.name)
                if issubclass(cls, _CamExplainer):
                    gradients = gradients or "layer"
                elif cls.name not in ("occlusion", "partition_shap"):
                    gradients = "input"
        except (ValueError, TypeError):
            gradients = None  # an unknown method is reported by check_methods
        found = self.model.check_inputs(images, gradients=gradients)
        return [f"model: {p}" for p in found]

    def _bin_numeric_attributes(self, bins: Mapping[str, Any] | None) -> None:
        """Numeric attributes -> a few readable groups (:mod:`xai_audit.data.binning`)."""
        from ..data.binning import bin_manifest, check_attribute_bins

        self.attribute_bins = dict(bins) if isinstance(bins, Mapping) else bins
        self._bin_problems = check_attribute_bins(bins, self.sensitive)
        self.binned_attributes: dict[str, dict] = {}
        if not self._bin_problems:
            try:
                self.data, self.binned_attributes = bin_manifest(self.data, self.sensitive, bins)
            except ValueError as exc:  # edges for a non-numeric column
                self._bin_problems = [str(exc)]

    def _data_warnings(self) -> list[str]:
        """Valid but suspicious data (kept in the result's data summary and findings)."""
        from ..data.validation import patient_conflicts
        from ..fairness.inputs import attribute_notes

        notes = [info["note"] for info in self.binned_attributes.values()]
        for col in self.sensitive:
            notes += attribute_notes(self.data.table[col], col)
        notes += patient_conflicts(self.data, [*self.data.label_cols, *self.sensitive])
        return notes

    def _check_shortcut(self) -> list[str]:
        """Shortcut settings; boxes and masks are checked against the first image's size."""
        from .config import check_shortcut

        q = self.quality
        shape = None
        if not isinstance(q.shortcut_region, (str, Path)) and len(self.data):
            try:
                shape = tuple(self.data.load_image(0).shape[1:])
            except Exception:  # noqa: BLE001 - unreadable images are reported elsewhere
                shape = None
        return check_shortcut(q, image_shape=shape, n_images=len(self.data))

    # ------------------------------------------------------------------ hashes
    @property
    def task(self) -> BatchTask:
        """The per-batch work (what shapes a shard)."""
        if getattr(self, "_task", None) is None:
            from ..quality.regions import load_region

            q = self.quality
            rows = {
                m.name: tuple(int(r) for r in self._explain_sample(m.max_images))
                for m in self.methods
                if m.max_images is not None and m.max_images < len(self.data)
            }
            self._task = BatchTask(
                methods=self.methods,
                target=int(self.model.positive_index),
                shortcut_region=load_region(q.shortcut_region),
                shortcut_border=float(q.shortcut_border),
                shortcut_corner=float(q.shortcut_corner),
                shortcut_grid=int(q.shortcut_grid),
                localisation=bool(q.localisation and self.data.mask_col),
                explain_rows=rows,
            )
        return self._task

    def _explain_sample(self, size: int) -> np.ndarray:
        """Seeded rows balanced across label x subgroup strata (for ``max_images``)."""
        import pandas as pd

        from ..fairness.inputs import group_keys

        table = self.data.table
        strata = group_keys(table[self.sensitive[0]])
        for col in self.sensitive[1:]:
            strata = strata + "|" + group_keys(table[col])
        strata = pd.Series(strata + "|" + self.data.label.astype(int).astype(str).astype(object))
        rng = np.random.default_rng(self.seed)
        pools = [
            list(rng.permutation(np.flatnonzero((strata == s).to_numpy())))
            for s in sorted(strata.unique())
        ]
        chosen: list[int] = []
        while len(chosen) < size and any(pools):
            for pool in pools:
                if pool and len(chosen) < size:
                    chosen.append(int(pool.pop()))
        return np.sort(np.asarray(chosen, dtype=np.int64))

    def settings(self) -> dict[str, Any]:
        """The audit's settings as plain data."""
        q = asdict(self.quality) if is_dataclass(self.quality) else dict(self.quality)
        return {
            "name": self.name,
            "attributes": self.sensitive,
            "methods": {
                m.name: {**m.params, **({"max_images": m.max_images} if m.max_images else {})}
                for m in self.methods
            },
            "threshold": self.threshold,
            "tolerance": self.tolerance,
            "intersections": self.intersections,
            **({"attribute_bins": self.attribute_bins} if self.attribute_bins else {}),
            "min_group_size": self.min_group_size,
            "n_boot": self.n_boot,
            "ci": self.ci,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "quality": q,
            "exemplars_per_cell": self.exemplars_per_cell,
            "slices": self.slices,
            "threshold_from": self.threshold_from,
            "threshold_note": self.threshold_note,
            "performance_floor": self.performance_floor,
            "criteria": self.criteria.source if self.criteria is not None else None,
            "documentation": self.documentation,
        }

    @property
    def output_dir(self) -> Path:
        """The result folder."""
        if self._output_dir is None:
            task = self.task.to_dict() if len(self.data.label_cols) <= 1 else task_key(self)
            key = sha256_json([self.model.model_hash(), self.data.content_hash(), task])
            self._output_dir = Path("audits") / f"audit-{key[:12]}"
        return self._output_dir

    # ------------------------------------------------------------------ run
    def run(self, progress: Any = None) -> AuditResult:
        """Run the audit (resuming finished batches) and save the result.

        Parameters
        ----------
        progress : None, bool or {"auto", "bar", "log", "off"}, default None
            What to show while it runs (:mod:`xai_audit.audit.progress`): ``None``/"auto"
            draws tqdm bars in a terminal or a notebook (images with rate and ETA, then one
            bar per check) and nothing otherwise; ``"log"`` prints plain lines to stderr;
            ``False`` is silent.

        Returns
        -------
        AuditResult
            Saved in :attr:`output_dir`.

        Raises
        ------
        NotOwnedError
            :attr:`output_dir` is a non-empty folder that xai_audit did not create (pass
            ``overwrite=True`` to write into it anyway).
        FolderLockedError
            Another run is writing to :attr:`output_dir` (the message names its pid, host
            and start time).
        Exception, KeyboardInterrupt
            Whatever interrupted the run, after every finished batch was kept; running
            again with the same settings resumes from there.
        """
        claim_folder(self.output_dir, overwrite=self.overwrite)
        self._progress = make_progress(progress)
        try:
            with FolderLock(self.output_dir):
                if is_multilabel(self.data):
                    return run_multilabel(self)  # one single-label run per explained label
                return self._run_locked()
        finally:
            self._progress.close()

    def _run_locked(self) -> AuditResult:
        t_start = time.perf_counter()
        started = provenance.utc_now()
        task = self.task
        hashes = {
            "model_hash": self.model.model_hash(),
            "data_hash": self.data.content_hash(),
            "task_hash": sha256_json(task.to_dict()),
        }
        n = len(self.data)
        state = {
            **hashes,
            "batch_size": self.batch_size,
            "n_rows": n,
            "xai_audit": __version__,
            "methods": [m.name for m in self.methods],
            # what is known of the model now (an explicit CAM layer); batches add the rest
            "model_info": self._discovered_model_info(),
        }
        store = ShardStore(self.output_dir)
        store.open(state, fresh=self.fresh)
        n_batches = (n + self.batch_size - 1) // self.batch_size
        todo = [k for k in range(n_batches) if not store.has(k)]
        reused = n_batches - len(todo)
        log.info(
            "Audit %r: %d images, %d batches (%d to compute) in %s",
            self.name,
            n,
            n_batches,
            len(todo),
            self.output_dir,
        )
        if self.on_batch is not None:
            for k in range(n_batches):
                if k not in set(todo):
                    self.on_batch(k, n_batches, "reused")
        t_batches = time.perf_counter()
        progress = getattr(self, "_progress", None)
        phase = BatchPhase(progress, n, self.batch_size, todo, self.on_batch)
        self.on_batch = phase.callback  # both batch engines report through on_batch
        try:
            self._run_batches(store, task, todo, n_batches)
        finally:
            self.on_batch = phase.user_callback
            phase.close()
        t_batches = time.perf_counter() - t_batches
        # What the batches found out about the model (e.g. the CAM target layer) is kept in
        # the run state, so that a fully resumed run reports it and explains with it too.
        recorded = dict(store.state.get("model_info") or {})
        if self.model.target_layer_name is None and recorded.get("target_layer"):
            try:
                self.model.set_target_layer(recorded["target_layer"])
            except Exception as exc:  # noqa: BLE001 - the layer is then found again on use
                log.warning(
                    "Recorded target layer %r not restored: %s", recorded["target_layer"], exc
                )
        recorded.update(self._discovered_model_info())
        store.update_state(model_info=recorded)

        t_agg = time.perf_counter()
        result = self._aggregate(store, task, hashes, started)
        for key, value in recorded.items():
            if result.model_info.get(key) is None:
                result.model_info[key] = value
        result.provenance["timings_s"].update(
            {
                "batches": round(t_batches, 4),
                "aggregation": round(time.perf_counter() - t_agg, 4),
                "total": round(time.perf_counter() - t_start, 4),
            }
        )
        result.provenance["batches"] = {"total": n_batches, "computed": len(todo), "reused": reused}
        result.provenance["backend"] = self.backend  # of the batches computed in this run
        if self.criteria is not None:  # after the findings: "no_findings" criteria read them
            from .criteria import attach_criteria

            attach_criteria(result, self.criteria)
        step(getattr(self, "_progress", None), "saving the result")
        result.save(self.output_dir)
        step(getattr(self, "_progress", None), None)
        log.info("Audit result saved in %s", self.output_dir)
        return result

    def _discovered_model_info(self) -> dict[str, Any]:
        """The model facts found out while running (None until known)."""
        info = {"target_layer": self.model.target_layer_name, "n_outputs": self.model.n_outputs}
        return {k: v for k, v in info.items() if v is not None}

    def _load(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        rows = np.arange(k * self.batch_size, min((k + 1) * self.batch_size, len(self.data)))
        images = self.data.load_images(rows)
        masks = self.data.load_masks(rows) if self.task.localisation else None
        return rows, images, masks

    def _run_batches(
        self, store: ShardStore, task: BatchTask, todo: list[int], n_batches: int
    ) -> None:
        if self.backend == "ray" and todo:
            return self._run_batches_ray(store, task, todo, n_batches)
        done = 0
        # Load the next batch's images in a thread while the model works on this one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._load, todo[0]) if todo else None
            try:
                for i, k in enumerate(todo):
                    rows, images, masks = pending.result()  # type: ignore[union-attr]
                    pending = pool.submit(self._load, todo[i + 1]) if i + 1 < len(todo) else None
                    arrays = compute_batch(self.model, images, rows, task, masks=masks)
                    store.write(k, arrays)
                    done += 1
                    if self.on_batch is not None:
                        self.on_batch(k, n_batches, "computed")
            except BaseException as exc:
                if pending is not None:
                    pending.cancel()
                finished = len(store.finished())
                msg = (
                    f"The audit stopped after {finished} of {n_batches} batches; the finished "
                    f"batches are kept in {store.shard_dir} and running it again with the same "
                    "settings resumes from there."
                )
                log.error(msg)
                if hasattr(exc, "add_note"):
                    exc.add_note(msg)
                raise

    def _run_batches_ray(
        self, store: ShardStore, task: BatchTask, todo: list[int], n_batches: int
    ) -> None:
        """The batch phase on Ray actors (:mod:`xai_audit.audit.backends.ray_backend`)."""
        from .backends import ray_backend

        try:
            ray_backend.run_batches(
                self.model,
                self.data,
                store,
                task,
                todo,
                n_batches,
                self.batch_size,
                address=self.ray_address,
                workers=self.ray_workers,
                on_batch=self.on_batch,
            )
        except BaseException as exc:
            msg = (
                f"The audit stopped after {len(store.finished())} of {n_batches} batches; the "
                f"finished batches are kept in {store.shard_dir} and running it again with the "
                "same settings (on either backend) resumes from there."
            )
            log.error(msg)
            if hasattr(exc, "add_note"):
                exc.add_note(msg)
            raise

    def _aggregate(
        self, store: ShardStore, task: BatchTask, hashes: dict[str, str], started: str
    ) -> AuditResult:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        step(getattr(self, "_progress", None), "subgroups and calibration")
        tables = aggregate.read_tables(store, len(self.data))
        shard_timing = tables.pop("_timing")  # type: ignore[arg-type]
        scores = tables["scores"][:, self.model.positive_index].astype(np.float64)
        label_name = self.model.class_names[self.model.positive_index]
        patient_ids = self.data.patient_ids

        import pandas as pd

        base = pd.DataFrame({"label": self.data.label.astype(np.int64), "score": scores})
        for col in self.sensitive:
            base[col] = self.data.table[col].to_numpy(dtype=object)
        from .change_control import resolve_threshold

        op_threshold, op_source = resolve_threshold(self, label_name)
        subgroups = aggregate.subgroup_section(
            base,
            self.sensitive,
            patient_ids,
            threshold=op_threshold,
            intersections=self.intersections,
            n_boot=self.n_boot,
            ci=self.ci,
            min_group_size=self.min_group_size,
            tolerance=self.tolerance,
            seed=self.seed,
            label_name=label_name,
        )
        threshold = float(subgroups["threshold"]["value"])
        subgroups["threshold"]["source"] = op_source
        pred = aggregate.predictions_table(self.data, self.sensitive, scores, threshold)
        timings["subgroups"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        quality = aggregate.quality_section(
            self.model,
            self.data,
            store,
            task,
            tables,
            pred,
            self.sensitive,
            self.quality,
            threshold=threshold,
            batch_size=self.batch_size,
            ci=self.ci,
            seed=self.seed,
            progress=getattr(self, "_progress", None),
        )
        timings["quality"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        step(getattr(self, "_progress", None), "exemplars and mean maps")
        methods = [m.name for m in task.methods]
        means = aggregate.mean_maps(store, methods, pred["outcome"].to_numpy())
        explained = {m: store.explained_rows(m) for m in methods}
        preferred = np.ones(len(pred), dtype=bool)
        for rows in explained.values():
            preferred &= np.isin(np.arange(len(pred)), rows)
        ex_table = aggregate.select_exemplars(
            pred, self.sensitive, self.exemplars_per_cell, self.seed, preferred
        )
        ex_arrays = aggregate.exemplar_arrays(
            self.model,
            self.data,
            store,
            ex_table,
            task,
            explained,
            self.batch_size,
            self.thumbnail_size,
        )
        timings["exemplars"] = time.perf_counter() - t0
        timings["predict"] = shard_timing.get("seconds_predict", 0.0)
        for m in methods:
            timings[f"explain_{m}"] = shard_timing.get(f"seconds__{m}", 0.0)

        data_summary = self._data_summary(pred, tables, hashes["data_hash"])
        model_info = self._model_info(hashes["model_hash"])
        # Before the findings: a significant slice is an info finding, and the coverage note
        # says whether unrecorded factors were searched.
        slice_discovery = self._slices(store, tables, pred, threshold, timings)
        findings = collect_findings(
            subgroups["flags"],
            subgroups["warnings"],
            quality,
            data_summary,
            quality["region"]["description"],
            subgroups.get("disparities"),
            subgroups=subgroups,
            performance_floor=self.performance_floor,
            slices=slice_discovery,
        )
        settings = self.settings()
        config = self._config if self._config is not None else settings
        hashes = {**hashes, "config_hash": sha256_json(config)}
        prov = provenance.collect(
            seeds={
                "audit": self.seed,
                "bootstrap": self.seed,
                "quality_sample": self.seed,
                "randomisation": self.seed,
                "exemplars": self.seed,
            },
            hashes=hashes,
            timings=timings,
            device=str(self.model.device),
            started=started,
            batches={},
        )
        return AuditResult(
            name=self.name,
            config={**config, "settings": settings} if self._config is not None else settings,
            provenance=prov,
            model_info=model_info,
            data_summary=data_summary,
            predictions=pred,
            subgroups=subgroups,
            quality=quality,
            findings=findings,
            exemplars={"table": ex_table, **ex_arrays},
            mean_maps=means,
            methods=self._method_info(),
            slice_discovery=slice_discovery,
            result_dir=self.output_dir,
        )

    def _slices(
        self, store: ShardStore, tables: dict, pred: Any, threshold: float, timings: dict
    ) -> dict[str, Any]:
        """Hidden-stratification discovery (:func:`xai_audit.slices.audit.slice_section`)."""
        from ..slices.audit import slice_section

        t0 = time.perf_counter()
        out = slice_section(
            self.model,
            self.data,
            store,
            tables,
            pred,
            setting=self.slices,
            threshold=threshold,
            patient_ids=self.data.patient_ids,
            sensitive=self.sensitive,
            methods=[m.name for m in self.methods],
            batch_size=self.batch_size,
            thumbnail_size=self.thumbnail_size,
            n_boot=self.n_boot,
            ci=self.ci,
            seed=self.seed,
        )
        timings["slices"] = time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------ summaries
    def _method_info(self) -> list[dict[str, Any]]:
        from ..explain import get_method

        out = []
        for m in self.methods:
            cls = get_method(m.name)
            params = {**cls.defaults, **m.params}
            out.append(
                {
                    "name": m.name,
                    "max_images": m.max_images,
                    "params": {
                        k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                        for k, v in params.items()
                    },
                    "description": cls.description or (cls.__doc__ or "").strip().split("\n")[0],
                    "seconds": None,
                }
            )
        return out

    def _model_info(self, model_hash: str) -> dict[str, Any]:
        info = self.model.describe()
        info["sha256"] = model_hash
        info["positive_class"] = self.model.class_names[self.model.positive_index]
        card = {
            k: self.model_card.get(k)
            for k in (
                "name",
                "version",
                "intended_use",
                "intended_users",
                "out_of_scope_use",
                "training_data",
                "limitations",
            )
        }
        if card.get("name"):
            info["name"] = card["name"]
        if card.get("version"):
            info["version"] = card["version"]
        info["card"] = card
        return info

    def _data_summary(
        self, pred: Any, tables: dict[str, np.ndarray], data_hash: str
    ) -> dict[str, Any]:
        import pandas as pd

        from ..fairness.inputs import group_keys

        m = self.data
        pids = m.patient_ids
        sizes = {}
        missing = {}
        for col in self.sensitive:
            s = m.table[col]
            missing[col] = int(s.isna().sum())
            counts = pd.Series(group_keys(s)).value_counts().sort_index()
            sizes[col] = {str(k): int(v) for k, v in counts.items()}
        shape = None
        if len(m):
            shape = list(m.load_image(0).shape)
        return {
            "n_images": int(len(m)),
            "n_patients": int(pd_nunique(pids)) if pids is not None else None,
            "n_positive": int(pred["label"].sum()),
            "prevalence": float(pred["label"].mean()) if len(pred) else None,
            "label": m.label_cols[0],
            "positive_class": self.model.class_names[self.model.positive_index],
            "attributes": list(self.sensitive),
            "subgroup_sizes": sizes,
            "missing_attributes": missing,
            "n_with_mask": int(np.asarray(tables.get("has_mask", np.zeros(0, bool))).sum()),
            "image_shape": shape,
            "data_hash": data_hash,
            "patient_level_bootstrap": pids is not None,
            "warnings": list(getattr(self, "data_warnings", [])),
            "binned_attributes": dict(getattr(self, "binned_attributes", {})),
        }


def pd_nunique(values: np.ndarray) -> int:
    """Distinct non-missing values (patients); rows without an id count as their own."""
    import pandas as pd

    s = pd.Series(values, dtype=object)
    return int(s.nunique(dropna=True) + s.isna().sum())
