"""Slice discovery inside an audit: per-batch features, the ``slices`` setting, the section.

The audit runner calls :func:`batch_features` on every batch (the arrays go to the shards under
the ``slice__`` prefix) and :func:`slice_section` once while aggregating; the result keeps the
section as ``AuditResult.slice_discovery`` (``AuditResult.slices`` is its table).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .describe import IMAGE_STATISTICS, describe_slice, image_statistics
from .discover import discover_slices, empty_table
from .embedding import stage_embedding

log = logging.getLogger(__name__)

#: Below this many images an audit skips discovery by default (``slices: auto``): with half
#: the images held out for testing, smaller sets leave slices too small to test.
MIN_IMAGES = 300
#: Shard keys written by :func:`batch_features`.
PREFIX = "slice__"
#: Typical images stored per slice (thumbnails in the report, first cases in the dashboard).
N_TYPICAL = 4
#: Options of the ``slices`` mapping (besides ``enabled`` and ``min_images``).
OPTIONS = (
    "max_components",
    "n_pca",
    "error_weight",
    "min_size",
    "alpha",
    "min_gap",
    "test_fraction",
    "max_fit",
)


def batch_features(model: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    """Multi-scale embeddings and image statistics of one batch (for the shards).

    The embedding is :func:`~.embedding.stage_embedding` (penultimate features plus each
    stage's channel maxima and means); its block widths are stored per row too, so that
    discovery can weigh the blocks equally. A model whose embeddings cannot be taken gets
    none (discovery is then skipped with a note); the audit itself never fails here.
    """
    out = {f"{PREFIX}{k}": v for k, v in image_statistics(images).items()}
    try:
        feats, blocks = stage_embedding(model, images)
    except Exception as exc:  # noqa: BLE001 - optional: an unusual model just gets no slices
        log.warning("No embeddings for slice discovery: %s", exc)
        return out
    out[f"{PREFIX}embedding"] = feats
    out[f"{PREFIX}embedding_blocks"] = np.broadcast_to(blocks, (len(feats), len(blocks))).copy()
    return out


def parse_setting(value: Any) -> dict[str, Any]:
    """Normalise the ``slices`` setting to ``{"enabled": True/False/"auto", ...options}``."""
    if value is None or isinstance(value, (bool, str)):
        return {"enabled": "auto" if value is None else value, "min_images": MIN_IMAGES}
    if isinstance(value, Mapping):
        out = {"enabled": True, "min_images": MIN_IMAGES}
        out.update(dict(value))
        return out
    return {"enabled": value, "min_images": MIN_IMAGES}


def check_setting(value: Any) -> list[str]:
    """Problems with a ``slices`` setting (config key or ``Audit(slices=...)``)."""
    s = parse_setting(value)
    problems = []
    if s["enabled"] not in (True, False, "auto"):
        problems.append(
            f"slices must be true, false, 'auto' or a mapping of options, got {value!r}"
        )
    unknown = sorted(set(s) - {"enabled", "min_images", *OPTIONS})
    if unknown:
        problems.append(
            f"slices: unknown option(s) {unknown}; known: {['enabled', 'min_images', *OPTIONS]}"
        )
    for key in ("min_images", "max_components", "n_pca", "min_size", "max_fit"):
        v = s.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            problems.append(f"slices.{key} must be a positive integer, got {v!r}")
    for key, lo, hi in (("alpha", 0, 1), ("min_gap", 0, 1), ("test_fraction", 0.1, 0.9)):
        v = s.get(key)
        if v is not None and (not isinstance(v, (int, float)) or not lo <= v <= hi):
            problems.append(f"slices.{key} must lie in [{lo}, {hi}], got {v!r}")
    return problems


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """``N x H x W`` down to at most ``size`` px on the long side (area averaging)."""
    import torch

    h, w = a.shape[-2:]
    if max(h, w) <= size:
        return a.astype(np.float32)
    scale = size / max(h, w)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[:, None]
    out = torch.nn.functional.interpolate(
        t, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area"
    )
    return out[:, 0].numpy()


def _grey(images: np.ndarray) -> np.ndarray:
    a = images.mean(axis=1) if images.shape[1] in (1, 3) else images[:, 0]
    return a[:, a.shape[1] // 2] if a.ndim == 4 else a


def _features(
    model: Any, data: Any, tables: dict[str, np.ndarray], batch_size: int
) -> tuple[np.ndarray | None, pd.DataFrame, np.ndarray | None]:
    """Embeddings, image statistics and embedding block widths from the shards, or
    computed now (older shards); widths are None for shards written before they existed."""
    emb = tables.get(f"{PREFIX}embedding")
    stats = {k: tables.get(f"{PREFIX}{k}") for k in IMAGE_STATISTICS}
    n = len(data)
    if emb is not None and all(v is not None for v in stats.values()):
        return np.asarray(emb, np.float32), pd.DataFrame(stats), _blocks(tables)
    parts, stat_parts, widths = [], [], []
    for a in range(0, n, batch_size):
        feats = batch_features(model, data.load_images(np.arange(a, min(n, a + batch_size))))
        if f"{PREFIX}embedding" not in feats:
            return None, pd.DataFrame(), None
        parts.append(feats.pop(f"{PREFIX}embedding"))
        widths.append(feats.pop(f"{PREFIX}embedding_blocks"))
        stat_parts.append(pd.DataFrame({k.removeprefix(PREFIX): v for k, v in feats.items()}))
    blocks = _blocks({f"{PREFIX}embedding_blocks": np.concatenate(widths)})
    return np.concatenate(parts), pd.concat(stat_parts, ignore_index=True), blocks


def _blocks(tables: dict[str, np.ndarray]) -> np.ndarray | None:
    """The embedding's block widths (the same on every row), or None when not recorded."""
    rows = tables.get(f"{PREFIX}embedding_blocks")
    if rows is None or len(rows) == 0:
        return None
    rows = np.asarray(rows, dtype=np.int64)
    if not (rows == rows[0]).all():  # batches embedded differently: weigh nothing
        log.warning("Slice embeddings have different block layouts across batches.")
        return None
    return rows[0]


def _slice_maps(
    store: Any, methods: list[str], slice_of: np.ndarray, ids: list[int], size: int
) -> dict[str, np.ndarray]:
    """Mean attribution map of each slice per method (streamed over the shards)."""
    out: dict[str, np.ndarray] = {}
    for m in methods:
        sums: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        for rows, maps in store.iter_maps(m):
            maps = maps[:, maps.shape[1] // 2] if maps.ndim == 4 else maps
            for sl in ids:
                sel = slice_of[rows] == sl
                if sel.any():
                    sums[sl] = sums.get(sl, 0) + maps[sel].sum(axis=0, dtype=np.float64)
                    counts[sl] = counts.get(sl, 0) + int(sel.sum())
        if sums:
            shape = next(iter(sums.values())).shape
            stack = np.stack(
                [sums[sl] / counts[sl] if sl in sums else np.zeros(shape) for sl in ids]
            )
            out[m] = _resize(stack, size).astype(np.float16)
    return out


def slice_section(
    model: Any,
    data: Any,
    store: Any,
    tables: dict[str, np.ndarray],
    pred: pd.DataFrame,
    *,
    setting: Any,
    threshold: float,
    patient_ids: Any,
    sensitive: list[str],
    methods: list[str],
    batch_size: int,
    thumbnail_size: int = 96,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Run discovery for an audit and return the result's ``slice_discovery`` section.

    Returns
    -------
    dict
        ``status`` (what ran, or why not), ``settings``, ``table`` (see
        :data:`~xai_audit.slices.SLICE_COLUMNS`), ``members`` (case -> slice), ``enrichment``,
        ``image_stats``, ``descriptions`` (slice -> sentence), ``typical`` (slice, rank,
        case_id, row), ``thumbnails`` (typical images, ``K x h x w`` float16) and
        ``mean_maps`` (method -> ``S x h x w``, one map per slice in table order).
    """
    s = parse_setting(setting)
    n = len(pred)
    off = {"status": "", "settings": s, "table": empty_table()}
    if s["enabled"] is False:
        return {**off, "status": "off (slices: false)"}
    if s["enabled"] == "auto" and n < int(s["min_images"]):
        return {
            **off,
            "status": f"not run: {n} images, fewer than the {s['min_images']} that "
            "slices: auto needs (set slices: true to force it)",
        }
    labels = pred["label"].to_numpy(np.float64)
    if np.isnan(labels).any() or not np.isin(labels, (0, 1)).all():
        return {**off, "status": "not run: needs a 0/1 label for every image"}
    emb, stats, blocks = _features(model, data, tables, batch_size)
    if emb is None:
        return {**off, "status": "not run: the model's embeddings could not be taken"}
    options = {k: s[k] for k in OPTIONS if k in s}
    found = discover_slices(
        emb,
        labels.astype(np.int64),
        pred["score"].to_numpy(np.float64),
        threshold=threshold,
        patient_ids=patient_ids,
        case_ids=pred["case_id"].astype(str).to_numpy(),
        attributes=pred[sensitive] if sensitive else None,
        image_stats=stats,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        feature_blocks=blocks,
        **options,
    )
    table = found.table
    ids = [int(i) for i in table["slice"]]
    slice_of = found.members["slice"].to_numpy()
    typical = []
    for sl in ids:
        for rank, cid in enumerate(found.typical(sl, N_TYPICAL)):
            typical.append({"slice": sl, "rank": rank, "case_id": cid})
    typ = pd.DataFrame(typical, columns=["slice", "rank", "case_id"])
    row_of = pd.Series(pred["row"].to_numpy(), index=pred["case_id"].astype(str))
    typ["row"] = row_of.reindex(typ["case_id"]).to_numpy(np.int64) if len(typ) else []
    out = {
        "status": found.settings.get("status", ""),
        "settings": {**s, **found.settings},
        "table": table,
        "members": found.members,
        "enrichment": found.enrichment,
        "image_stats": found.image_stats,
        "descriptions": {
            str(sl): describe_slice(sl, found.enrichment, found.image_stats) for sl in ids
        },
        "typical": typ,
    }
    if len(typ):
        images = data.load_images(typ["row"].to_numpy(np.int64))
        out["thumbnails"] = _resize(_grey(images), thumbnail_size).astype(np.float16)
    if ids:
        out["mean_maps"] = _slice_maps(store, methods, slice_of, ids, thumbnail_size)
    return out
