"""CaseSource: one read-only view of the cases that every widget browses.

A source holds the per-case table (id, attributes, label, score, prediction, outcome) and
loads images, masks, attribution maps and embeddings on demand, with caching. It is built
either directly from a model and images (quick exploration: predictions are computed here,
maps on first request) or from an audit result (predictions, maps and quality tables are
read from the result; the model is only needed for maps the audit did not store).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..audit.aggregate import outcome
from ._compat import resolve_explain

OUTCOMES = ("TP", "FP", "FN", "TN")
#: Columns of the case table that are never subgroup attributes.
RESERVED = frozenset(
    {"case_id", "patient_id", "image", "mask", "label", "score", "predicted", "outcome", "row"}
)
#: An attribute column is guessed only when it has at most this many distinct values.
MAX_ATTRIBUTE_LEVELS = 20

ExplainFn = Callable[..., Any]


def guess_attributes(table: pd.DataFrame) -> list[str]:
    """Categorical columns with few levels: the default subgroup attributes."""
    found = []
    for col in table.columns:
        if col in RESERVED or str(col).startswith("lesion_"):
            continue
        series = table[col]
        categorical = (
            series.dtype == object
            or isinstance(series.dtype, pd.CategoricalDtype)
            or pd.api.types.is_bool_dtype(series)
            or pd.api.types.is_string_dtype(series)
        )
        if categorical and series.nunique(dropna=True) <= MAX_ATTRIBUTE_LEVELS:
            found.append(str(col))
    return found


def _maps_array(out: Any) -> np.ndarray:
    """``Attribution`` (``.maps``), tensor or array -> float32 numpy."""
    maps = getattr(out, "maps", out)
    if hasattr(maps, "detach"):
        maps = maps.detach().cpu().numpy()
    return np.asarray(maps, dtype=np.float32)


class _LRU(OrderedDict):
    """A small least-recently-used cache (maps and images are re-requested while browsing)."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def get_or(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        if len(self) > self.maxsize:
            self.popitem(last=False)
        return value


class CaseSource:
    """Cases with predictions, and on-demand images, masks, maps and embeddings.

    Build it with :meth:`from_model` or :meth:`from_result`; widgets share one source.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per case, in data order: ``case_id``, the attribute columns, ``label``,
        ``score`` (probability of the positive class), ``predicted`` (0/1 at ``threshold``)
        and ``outcome`` (TP/FP/FN/TN, "" without a label); ``patient_id`` when known.
    attributes : list of str
        Subgroup attribute columns.
    class_names : list of str
    positive_index : int
        Output whose probability is ``score``.
    threshold : float
        Operating threshold of ``predicted`` and ``outcome``.
    methods : list of str
        Explanation methods offered.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        attributes: Sequence[str],
        class_names: Sequence[str],
        positive_index: int,
        threshold: float,
        methods: Sequence[str],
        probabilities: np.ndarray | None = None,
        model: Any = None,
        images: Any = None,
        masks: Any = None,
        explain_fn: ExplainFn | None = None,
        result: Any = None,
        cache_size: int = 512,
    ) -> None:
        self.table = table.reset_index(drop=True)
        self.attributes = list(attributes)
        self.class_names = list(class_names)
        self.positive_index = int(positive_index)
        self.threshold = float(threshold)
        self.methods = list(methods)
        self.model = model
        self.result = result
        self._probabilities = probabilities
        self._images = images
        self._masks = masks
        self._explain_fn = explain_fn
        self._row_of = {cid: i for i, cid in enumerate(self.table["case_id"])}
        self._maps = _LRU(cache_size)
        self._image_cache = _LRU(cache_size)
        self._embeddings: np.ndarray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def given_or_from_model(
        cls, source: CaseSource | None, model: Any, images: Any, *args: Any, **kwargs: Any
    ) -> CaseSource:
        """``source`` when given, else :meth:`from_model` (the widgets' direct mode)."""
        if source is not None:
            return source
        if model is None or images is None:
            raise TypeError("Give model= and images= (direct mode) or source=.")
        return cls.from_model(model, images, *args, **kwargs)

    @classmethod
    def from_model(
        cls,
        model: Any,
        images: Any,
        metadata: pd.DataFrame | None = None,
        labels: Any = None,
        *,
        masks: Any = None,
        attributes: Sequence[str] | None = None,
        methods: Sequence[str] = ("gradcam",),
        threshold: float = 0.5,
        explain_fn: ExplainFn | None = None,
    ) -> CaseSource:
        """Predict every case with ``model``; maps are computed when first shown.

        Parameters
        ----------
        model : ModelAdapter
        images : array, tensor or Manifest
            ``N x C x H x W`` (``N x C x D x H x W`` for volumes), or a
            :class:`~xai_audit.data.Manifest` (its table supplies ids, labels, attributes
            and masks).
        metadata : DataFrame, optional
            One row per image (``case_id``, attributes, ``label``, ``patient_id``...).
        labels : array, optional
            0/1 ground truth; default ``metadata["label"]`` when present.
        masks : array, optional
            Lesion masks ``N x H x W`` (for localisation indicators in the case review).
        attributes : sequence of str, optional
            Subgroup attributes; default: categorical metadata columns with few levels.
        methods : sequence of str
            Explanation methods (names understood by :func:`xai_audit.explain.explain`).
        threshold : float
            Operating threshold on the positive-class probability.
        explain_fn : callable, optional
            ``explain_fn(model, images, method=..., target=...)``; default
            :func:`xai_audit.explain.explain`.
        """
        is_manifest = hasattr(images, "load_images") and hasattr(images, "table")
        if is_manifest:
            meta = images.table.copy()
            meta = meta.rename(columns={images.id_col: "case_id"})
            if images.patient_col and images.patient_col != "patient_id":
                meta = meta.rename(columns={images.patient_col: "patient_id"})
            if labels is None and len(images.label_cols) == 1:
                labels = images.label
            if attributes is None:
                attributes = list(images.attribute_cols)
            if masks is None and images.mask_col:
                masks = images
            meta = meta.drop(columns=[c for c in ("image", "mask") if c in meta.columns])
            if metadata is not None:
                meta = pd.concat([meta, metadata.reset_index(drop=True)], axis=1)
        else:
            if hasattr(images, "detach"):
                images = images.detach().cpu().numpy()
            images = np.asarray(images, dtype=np.float32)
            meta = pd.DataFrame(index=range(len(images))) if metadata is None else metadata
            meta = meta.reset_index(drop=True).copy()
        n = len(meta)
        if "case_id" not in meta.columns:
            meta.insert(0, "case_id", [f"case_{i:05d}" for i in range(n)])
        meta["case_id"] = meta["case_id"].astype(str)
        if labels is None and "label" in meta.columns:
            labels = meta["label"].to_numpy()
        if labels is not None:
            labels = np.asarray(labels, dtype=np.float64).reshape(-1)
            if labels.shape[0] != n:
                raise ValueError(f"Got {labels.shape[0]} labels for {n} images.")
        if attributes is None:
            attributes = guess_attributes(meta)
        missing = [a for a in attributes if a not in meta.columns]
        if missing:
            raise ValueError(f"Attributes {missing} are not columns of the metadata.")

        proba = np.asarray(model.predict_proba(images), dtype=np.float64)
        if proba.shape[0] != n:
            raise ValueError(f"The model scored {proba.shape[0]} images but there are {n} rows.")
        pos = _positive_index(model, proba)
        score = proba[:, pos]
        table = meta.copy()
        table["label"] = labels if labels is not None else np.nan
        table["score"] = score
        table["predicted"] = (score >= threshold).astype(np.int8)
        table["outcome"] = outcome(table["label"].to_numpy(), table["predicted"].to_numpy())
        return cls(
            table,
            attributes=attributes,
            class_names=_class_names(model, proba.shape[1]),
            positive_index=pos,
            threshold=threshold,
            methods=methods,
            probabilities=proba,
            model=model,
            images=images,
            masks=masks,
            explain_fn=explain_fn,
        )

    @classmethod
    def from_result(
        cls,
        result: Any,
        model: Any = None,
        data: Any = None,
        *,
        methods: Sequence[str] | None = None,
        explain_fn: ExplainFn | None = None,
    ) -> CaseSource:
        """Read cases, predictions and stored maps from an audit result.

        Parameters
        ----------
        result : AuditResult
            Needs ``.predictions`` (``case_id``, attributes, ``label``, ``score``,
            ``predicted``, ``outcome``); ``.maps(method, case_ids)`` is used when present.
        model : ModelAdapter, optional
            Default ``result.model``; needed for maps the result did not store and for
            similar-case search.
        data : Manifest or array, optional
            Images in the result's case order; default ``result.data`` / ``result.manifest``.
        methods : sequence of str, optional
            Default: the methods the audit ran.
        """
        pred = result.predictions.copy()
        model = model if model is not None else getattr(result, "model", None)
        if data is None:
            data = getattr(result, "data", None)
            data = data if data is not None else getattr(result, "manifest", None)
        attributes = _result_attributes(result, pred)
        methods = list(methods or _result_methods(result) or ["gradcam"])
        threshold = _result_threshold(result, pred)
        pred["case_id"] = pred["case_id"].astype(str)
        if "outcome" not in pred.columns:
            pred["outcome"] = outcome(pred["label"].to_numpy(), pred["predicted"].to_numpy())
        masks = None
        images = data
        if hasattr(data, "load_images"):
            # Align the manifest's rows with the result's case order.
            order = {c: i for i, c in enumerate(data.case_ids)}
            rows = [order[c] for c in pred["case_id"]]
            if rows != list(range(len(data))):
                data = data.subset(rows)
            images = data
            masks = data if data.mask_col else None
            # Results keep no patient ids; the manifest has them (similar cases, CIs).
            if "patient_id" not in pred.columns and data.patient_ids is not None:
                pred["patient_id"] = data.patient_ids
        elif data is not None and len(np.asarray(data)) != len(pred):
            raise ValueError(
                f"data has {len(np.asarray(data))} images, the result {len(pred)} cases."
            )
        class_names, pos = _result_classes(result, model)
        return cls(
            pred,
            attributes=attributes,
            class_names=class_names,
            positive_index=pos,
            threshold=threshold,
            methods=methods,
            model=model,
            images=images
            if images is None or hasattr(images, "load_images")
            else np.asarray(images, np.float32),
            masks=masks,
            explain_fn=explain_fn,
            result=result,
        )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.table)

    @property
    def case_ids(self) -> list[str]:
        """All case ids in data order."""
        return list(self.table["case_id"])

    @property
    def has_labels(self) -> bool:
        """Whether ground truth is known for at least one case."""
        return bool(np.isfinite(self.table["label"].to_numpy(dtype=np.float64)).any())

    def row(self, case_id: str) -> int:
        """Row position of a case."""
        try:
            return self._row_of[str(case_id)]
        except KeyError:
            raise KeyError(f"Unknown case {case_id!r}.") from None

    def case(self, case_id: str) -> pd.Series:
        """The table row of a case."""
        return self.table.iloc[self.row(case_id)]

    def probabilities(self, case_id: str) -> np.ndarray:
        """Class probabilities of one case (computed with the model when not stored)."""
        i = self.row(case_id)
        if self._probabilities is None:
            if self.model is None:
                s = float(self.table.at[i, "score"])
                return np.array([1.0 - s, s])
            self._probabilities = np.asarray(self.model.predict_proba(self._images), np.float64)
        return self._probabilities[i]

    # ------------------------------------------------------------------ pixels
    def image(self, case_id: str) -> np.ndarray:
        """The model-input image ``C x H x W`` (``C x D x H x W``), float32."""
        i = self.row(case_id)
        if self._images is None:
            raise ValueError(
                "No images: pass data= (the Manifest or array the audit ran on) to the widget."
            )
        if isinstance(self._images, np.ndarray):
            return self._images[i]
        return self._image_cache.get_or(("img", i), lambda: self._images.load_images([i])[0])

    def images(self, case_ids: Sequence[str]) -> np.ndarray:
        """Several images stacked ``N x C x ...``."""
        return np.stack([self.image(c) for c in case_ids])

    @property
    def is_volume(self) -> bool:
        """Whether the images are 3D volumes."""
        return self.image(self.case_ids[0]).ndim == 4

    def mask(self, case_id: str) -> np.ndarray | None:
        """The lesion mask of a case (``H x W`` / ``D x H x W``), or None when unknown."""
        if self._masks is None:
            return None
        i = self.row(case_id)
        if isinstance(self._masks, np.ndarray):
            return self._masks[i]
        return self._masks.load_mask(i)

    def attribution(self, case_id: str, method: str, target: int | None = None) -> np.ndarray:
        """Attribution map of one case for one method and target class (cached).

        Stored maps of an audit result are used when they exist for the case's predicted
        target; otherwise the map is computed with the model.
        """
        target = self.positive_index if target is None else int(target)
        key = (str(case_id), method, target)
        return self._maps.get_or(key, lambda: self._compute_map(str(case_id), method, target))

    def prefetch(self, case_ids: Sequence[str], method: str, target: int | None = None) -> None:
        """Compute maps for several cases in one batched call (used by the benchmark/bench)."""
        target = self.positive_index if target is None else int(target)
        todo = [c for c in case_ids if (str(c), method, target) not in self._maps]
        if not todo:
            return
        maps = self._explain(self.images(todo), method, target)
        for c, m in zip(todo, maps):
            self._maps.get_or((str(c), method, target), lambda m=m: m)

    def _compute_map(self, case_id: str, method: str, target: int) -> np.ndarray:
        stored = self._stored_map(case_id, method, target)
        if stored is not None:
            return stored
        return self._explain(self.image(case_id)[None], method, target)[0]

    def _stored_map(self, case_id: str, method: str, target: int) -> np.ndarray | None:
        getter = getattr(self.result, "maps", None)
        if getter is None or target != self.positive_index:
            return None
        try:
            out = getter(method, [case_id])
        except (KeyError, ValueError, LookupError):
            return None
        if out is None:
            return None
        maps = _maps_array(out)
        return maps[0] if maps.ndim >= 3 and maps.shape[0] == 1 else None

    def _explain(self, batch: np.ndarray, method: str, target: int) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(
                f"No stored {method!r} maps for these cases and no model to compute them: "
                "pass model= when building the widget."
            )
        fn = self._explain_fn or resolve_explain()
        out = fn(self.model, batch, method=method, target=target)
        return _maps_array(out)

    # ------------------------------------------------------------------ features
    def embeddings(self) -> np.ndarray:
        """Penultimate-layer features of every case ``N x F`` (computed once)."""
        if self._embeddings is None:
            stored = getattr(self.result, "embeddings", None)
            if stored is not None and not callable(stored):
                self._embeddings = np.asarray(stored, dtype=np.float32)
            elif self.model is None:
                raise RuntimeError("Similar cases need the model's features: pass model=.")
            else:
                self._embeddings = np.asarray(self.model.embed(self._images), dtype=np.float32)
        return self._embeddings


def _positive_index(model: Any, proba: np.ndarray) -> int:
    try:
        return int(model.positive_index)
    except (AttributeError, ValueError):
        return proba.shape[1] - 1


def _class_names(model: Any, k: int) -> list[str]:
    try:
        return list(model.class_names)
    except (AttributeError, RuntimeError):
        return [f"class_{i}" for i in range(k)]


def _result_attributes(result: Any, pred: pd.DataFrame) -> list[str]:
    """Audited attributes: ``config["attributes"]`` / ``data_summary["attributes"]``."""
    for holder in (getattr(result, "config", None), getattr(result, "data_summary", None)):
        if isinstance(holder, dict) and holder.get("attributes"):
            return [a for a in holder["attributes"] if a in pred.columns]
    found = getattr(result, "sensitive", None)
    return list(found) if found else guess_attributes(pred)


def _result_methods(result: Any) -> list[str]:
    names = getattr(result, "method_names", None)
    if names:
        return list(names)
    methods = getattr(result, "methods", None) or []
    return [m["name"] if isinstance(m, dict) else str(m) for m in methods]


def _result_classes(result: Any, model: Any) -> tuple[list[str], int]:
    """Class names and positive index, from the model or the result's model description."""
    if model is not None:
        return _class_names(model, 2), _positive_index(model, np.zeros((1, 2)))
    info = getattr(result, "model_info", None) or {}
    names = list(info.get("class_names") or ["negative", "positive"])
    positive = (getattr(result, "data_summary", None) or {}).get("positive_class")
    return names, names.index(positive) if positive in names else len(names) - 1


def _result_threshold(result: Any, pred: pd.DataFrame) -> float:
    """The audit's operating threshold (attribute, mapping, or implied by the predictions)."""
    for name in ("threshold", "thresholds"):
        value = getattr(result, name, None)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict) and value:
            first = next(iter(value.values()))
            return float(getattr(first, "value", first))
        if hasattr(value, "value"):
            return float(value.value)
    sub = getattr(result, "subgroups", None)
    value = getattr(sub, "threshold", None)
    if isinstance(value, (int, float)):
        return float(value)
    # Fall back to the midpoint between the highest negative and lowest positive prediction.
    s, p = pred["score"].to_numpy(float), pred["predicted"].to_numpy().astype(bool)
    if p.any() and (~p).any():
        return float((s[p].min() + s[~p].max()) / 2)
    return 0.5
