"""Aggregation: read the shards and compute every table of the audit.

Only small per-image tables are held in memory (scores, shares, localisation numbers); maps
are streamed shard by shard (mean maps) or read for a bounded set of cases (exemplars,
the perturbation sample).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..model import ModelAdapter
from .batch import LOCALISATION_METRICS, BatchTask
from .progress import step
from .store import ShardStore

log = logging.getLogger(__name__)

OUTCOMES = ("TP", "FP", "FN", "TN")


# ------------------------------------------------------------------------------ predictions
def read_tables(store: ShardStore, n_rows: int) -> dict[str, np.ndarray]:
    """Concatenate every shard's small arrays, ordered by manifest row."""
    parts: dict[str, list[np.ndarray]] = {}
    timing: dict[str, float] = {}
    for d in store.iter_tables():
        for k, v in d.items():
            if k.startswith("seconds"):
                timing[k] = timing.get(k, 0.0) + float(v)
            else:
                parts.setdefault(k, []).append(v)
    out = {}
    for k, v in parts.items():
        try:
            out[k] = np.concatenate(v)
        except ValueError:
            if not k.startswith("slice__"):
                raise
            # Slice embeddings of different widths (shards from an older version): dropped,
            # and recomputed if needed.
    # Slice-discovery features missing from older shards: dropped (recomputed if needed).
    out = {
        k: v for k, v in out.items() if not k.startswith("slice__") or len(v) == len(out["indices"])
    }
    order = np.argsort(out["indices"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    if len(out["indices"]) != n_rows or not np.array_equal(out["indices"], np.arange(n_rows)):
        raise RuntimeError(
            f"The shards cover {len(out['indices'])} of {n_rows} images; rerun the audit to "
            "compute the missing batches."
        )
    out["_timing"] = timing  # type: ignore[assignment]
    return out


def outcome(label: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """TP/FP/FN/TN per case (``""`` where the label is missing, as in a widget's own data)."""
    y = np.asarray(label, dtype=np.float64)
    p = np.asarray(predicted).astype(bool)
    pos, neg = y == 1, y == 0  # NaN is neither
    return np.select([pos & p, neg & p, pos & ~p, neg & ~p], ["TP", "FP", "FN", "TN"], "").astype(
        object
    )


def predictions_table(
    manifest: Any, sensitive: list[str], scores: np.ndarray, threshold: float
) -> pd.DataFrame:
    """``row, case_id, <attributes>, label, score, predicted, outcome`` (no patient ids).

    Attribute values are their group names (:func:`xai_audit.fairness.inputs.normalise_attribute`,
    NaN where missing), so every table, figure and widget built from this table groups alike.
    """
    from ..fairness.inputs import normalise_attribute

    label = manifest.label
    predicted = (scores >= threshold).astype(np.int64)
    df = pd.DataFrame(
        {
            "row": np.arange(len(manifest)),
            "case_id": pd.Series(manifest.case_ids, dtype=object).map(str),
        }
    )
    attrs = manifest.table[sensitive].reset_index(drop=True)
    for col in sensitive:
        df[col] = normalise_attribute(attrs[col])
    df["label"] = label.astype(np.int64)
    df["score"] = scores.astype(np.float64)
    df["predicted"] = predicted
    df["outcome"] = outcome(label, predicted)
    return df


# ------------------------------------------------------------------------------ subgroups
def subgroup_section(
    pred: pd.DataFrame,
    sensitive: list[str],
    patient_ids: np.ndarray | None,
    *,
    threshold: Any,
    intersections: Any,
    n_boot: int,
    ci: float,
    min_group_size: int,
    tolerance: Any,
    seed: int,
    label_name: str | list[str],
) -> dict[str, Any]:
    """Run :func:`xai_audit.fairness.evaluate_subgroups` and keep its tables.

    ``label_name`` a list: a multi-label audit, on the ``label__<name>`` and
    ``score__<name>`` columns of ``pred`` (``threshold`` is then ``{label: ThresholdChoice}``).
    """
    import warnings

    from ..fairness import evaluate_subgroups

    with warnings.catch_warnings():
        # Small-group warnings are kept in the result (and the report), not printed.
        warnings.simplefilter("ignore", UserWarning)
        res = _evaluate(
            evaluate_subgroups,
            pred,
            sensitive,
            patient_ids,
            threshold,
            intersections,
            n_boot,
            ci,
            min_group_size,
            tolerance,
            seed,
            label_name,
        )
    thr = res.threshold
    thr_dict = thr.to_dict() if hasattr(thr, "to_dict") else dict(thr)
    # Binomial intervals where the bootstrap degenerates (at 0/1); calibration-bin bands.
    from ..fairness.intervals import apply_to_subgroups

    safe = apply_to_subgroups(res, patient_ids)
    return {
        "threshold": thr_dict,
        "overall": safe["overall"],
        "by_group": safe["by_group"],
        "disparities": res.disparities,
        "gaps": getattr(res, "gaps", pd.DataFrame()),
        "calibration": safe["calibration"],
        "flags": [f.to_dict() if hasattr(f, "to_dict") else dict(f) for f in res.flags],
        "warnings": [str(w) for w in res.warnings],
        "settings": dict(getattr(res, "config", {}) or {}),
    }


def _evaluate(
    evaluate_subgroups: Any,
    pred: pd.DataFrame,
    sensitive: list[str],
    patient_ids: Any,
    threshold: Any,
    intersections: Any,
    n_boot: int,
    ci: float,
    min_group_size: int,
    tolerance: Any,
    seed: int,
    label_name: str | list[str],
) -> Any:
    # Several labels (xai_audit.audit.labels): their label__<name> / score__<name> columns.
    names = [label_name] if isinstance(label_name, str) else list(label_name)
    multi = not isinstance(label_name, str)
    return evaluate_subgroups(
        pred[[f"label__{n}" for n in names]].to_numpy() if multi else pred["label"].to_numpy(),
        pred[[f"score__{n}" for n in names]].to_numpy() if multi else pred["score"].to_numpy(),
        pred[sensitive],
        threshold=threshold,
        intersections=intersections,
        patient_id=patient_ids,
        n_boot=n_boot,
        ci=ci,
        min_group_size=min_group_size,
        tolerance=tolerance,
        label_names=names,
        random_state=seed,
    )


# ------------------------------------------------------------------------------ quality
def stratified_sample(outcomes: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` rows, balanced across outcomes (round-robin), seeded; sorted."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(outcomes == o))) for o in OUTCOMES]
    chosen: list[int] = []
    while len(chosen) < size and any(pools):
        for pool in pools:
            if pool and len(chosen) < size:
                chosen.append(int(pool.pop()))
    return np.sort(np.asarray(chosen, dtype=np.int64))


def localisation_summary(
    per_image: pd.DataFrame, method: str, ci: float, seed: int
) -> pd.DataFrame:
    """Mean of each localisation number over images with a lesion mask, with a CI."""
    from ..quality import bootstrap_ci

    rows = []
    has = (
        per_image["has_mask"].to_numpy(bool)
        if "has_mask" in per_image
        else np.zeros(len(per_image), bool)
    )
    chance = float(per_image.loc[has, "mask_fraction"].mean()) if has.any() else np.nan
    for metric in LOCALISATION_METRICS:
        col = f"loc__{method}__{metric}"
        if col not in per_image:
            continue
        v = per_image.loc[has, col].to_numpy(np.float64)
        est, lo, hi = bootstrap_ci(v, ci=ci, random_state=seed)
        rows.append(
            {
                "metric": metric,
                "n": int(np.isfinite(v).sum()),
                "mean": est,
                "ci_low": lo,
                "ci_high": hi,
                "chance": chance if metric != "iou_top_k" else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _class_names_binary(model: ModelAdapter) -> list[str]:
    names = model.class_names
    pos = names[model.positive_index]
    if len(names) == 2:
        return [names[1 - model.positive_index], pos]
    return [f"not {pos}", pos]


def quality_section(
    model: ModelAdapter,
    manifest: Any,
    store: ShardStore,
    task: BatchTask,
    tables: dict[str, np.ndarray],
    pred: pd.DataFrame,
    sensitive: list[str],
    q: Any,
    *,
    threshold: float,
    batch_size: int,
    ci: float,
    seed: int,
    progress: Any = None,
) -> dict[str, Any]:
    """Faithfulness and sanity on a bounded sample; localisation and shortcuts on all images.

    ``threshold`` is the audit's operating threshold on the positive score (the one that made
    ``pred["predicted"]``); the perturbation checks count decisions at it.
    """
    from ..quality import sanity_check
    from ..quality.regions import describe_region, region_key, region_mask
    from ..quality.sanity import VERDICT_VERSION as SANITY_VERSION

    per_image = pd.DataFrame({"row": pred["row"], "case_id": pred["case_id"]})
    for key, arr in tables.items():
        if key.startswith(("shortcut__", "loc__")) or key in ("has_mask", "mask_fraction"):
            per_image[key] = arr
    sample = stratified_sample(pred["outcome"].to_numpy(), q.sample_size, seed)
    sanity_rows = sample[: q.sanity_sample_size] if len(sample) else sample
    if len(sample) > q.sanity_sample_size:  # keep the sanity sample balanced too
        sanity_rows = stratified_sample(
            pred["outcome"].to_numpy()[sample], q.sanity_sample_size, seed
        )
        sanity_rows = sample[sanity_rows]
    out: dict[str, Any] = {
        "per_image": per_image,
        "sample": {
            "rows": sample,
            "n": int(len(sample)),
            "sanity_n": int(len(sanity_rows)),
            "outcomes": {o: int((pred["outcome"].to_numpy()[sample] == o).sum()) for o in OUTCOMES},
            "rule": "seeded, balanced across TP/FP/FN/TN (round-robin), "
            f"at most {q.sample_size} images ({q.sanity_sample_size} for the sanity check)",
            "seed": seed,
        },
        "region": {
            "name": region_key(task.shortcut_region),
            "description": describe_region(
                task.shortcut_region, task.shortcut_border, task.shortcut_corner
            ),
        },
        "faithfulness": {},
        "localisation": {},
        "sanity": {},
        "shortcuts": {},
    }
    images = manifest.load_images(sample) if len(sample) and (q.faithfulness or q.sanity) else None
    if len(manifest) and not (
        isinstance(task.shortcut_region, str) and task.shortcut_region == "auto"
    ):
        # The named region's area: what a spatially uniform map would put there.
        spatial = images.shape[2:] if images is not None else manifest.load_image(0).shape[1:]
        mask = region_mask(
            task.shortcut_region,
            spatial,
            border=task.shortcut_border,
            corner=task.shortcut_corner,
            rows=np.arange(len(manifest)),
        )
        out["region"]["area_share"] = float(np.mean(mask))
    target = int(model.positive_index)
    outcomes = pred["outcome"].to_numpy()
    scan = None
    auto = isinstance(task.shortcut_region, str) and task.shortcut_region == "auto"
    if q.shortcuts and q.shortcut_scan and auto and len(manifest):
        step(progress, "shortcut paste scan")
        scan = _paste_scan(model, manifest, store, pred, sensitive, q, threshold, seed)
    for spec in task.methods:
        m = spec.name
        m_sample, m_images = sample, images
        if spec.max_images is not None and images is not None:
            # Perturbation checks need stored maps: draw the sample among the explained rows.
            explained = store.explained_rows(m)
            if not np.isin(sample, explained).all():
                m_sample = explained[stratified_sample(outcomes[explained], q.sample_size, seed)]
                m_images = manifest.load_images(m_sample)
                out["sample"].setdefault("per_method", {})[m] = {
                    "rows": m_sample,
                    "n": int(len(m_sample)),
                    "note": f"drawn among the {len(explained)} images {m} explained (max_images)",
                }
        if q.faithfulness and m_images is not None:
            step(progress, f"faithfulness ({m})")
            out["faithfulness"][m] = store.checkpoint(
                f"faithfulness-{m}",
                # what the check depends on beyond the shards (which carry model, data, task)
                {
                    "spec": spec,
                    "n_steps": q.n_steps,
                    "rows": m_sample,
                    "seed": seed,
                    "ci": ci,
                    "reference": q.faithfulness_reference,
                    "threshold": threshold,
                    "rule": FAITHFULNESS_VERSION,
                },
                lambda m=m, m_sample=m_sample, m_images=m_images: _faithfulness(
                    model,
                    m_images,
                    store.maps(m, m_sample, batch_size),
                    target,
                    q.n_steps,
                    seed,
                    ci,
                    reference=q.faithfulness_reference,
                    threshold=threshold,
                ),
            )
        if q.sanity and images is not None and len(sanity_rows):
            step(progress, f"sanity ({m})")
            out["sanity"][m] = store.checkpoint(
                f"sanity-{m}",
                {"spec": spec, "rows": sanity_rows, "seed": seed, "rule": SANITY_VERSION},
                lambda spec=spec: _sanity(
                    model, manifest.load_images(sanity_rows), spec, target, seed, sanity_check
                ),
            )
        if task.localisation and f"loc__{m}__mass_in_mask" in per_image:
            out["localisation"][m] = {"summary": localisation_summary(per_image, m, ci, seed)}
        if q.shortcuts:
            step(progress, f"shortcuts ({m})")
            out["shortcuts"][m] = _shortcuts(
                model,
                manifest,
                task,
                tables,
                pred,
                sensitive,
                q,
                m,
                threshold=threshold,
                ci=ci,
                seed=seed,
                scan=scan,
            )
    return out


def _paste_scan(
    model: ModelAdapter,
    manifest: Any,
    store: ShardStore,
    pred: pd.DataFrame,
    sensitive: list[str],
    q: Any,
    threshold: float,
    seed: int,
) -> dict[str, Any]:
    """The map-free paste scan, once per audit (it does not depend on the method), saved."""
    import hashlib

    from ..quality.shortcut_scan import SCAN_VERSION, paste_scan

    spatial = manifest.load_image(0).shape[1:]
    empty = {"table": pd.DataFrame(), "searched": "", "params": {}}
    if len(spatial) != 2:
        return {**empty, "not_searched": ["3D volumes are not scanned (2D images only)"]}
    predicted = pred["predicted"].to_numpy().astype(np.int8)
    pos = int(model.positive_index)
    key = {
        "predicted": hashlib.sha256(predicted.tobytes()).hexdigest(),
        "sensitive": list(sensitive),
        "threshold": float(threshold),
        "sample": q.shortcut_sample_size,
        "min_change": q.shortcut_min_score_change,
        "seed": seed,
        "rule": SCAN_VERSION,
    }
    try:
        return store.checkpoint(
            "shortcut-scan",
            key,
            lambda: paste_scan(
                lambda x: model.predict_proba(x, progress=False)[:, pos],
                manifest.load_images,
                pred[sensitive].reset_index(drop=True),
                predicted,
                spatial,
                min_change=q.shortcut_min_score_change,
                sample_size=q.shortcut_sample_size,
                seed=seed,
            ),
        )
    except ValueError as exc:
        log.warning("Shortcut paste scan skipped: %s", exc)
        return {**empty, "not_searched": [f"skipped ({exc})"]}


def _shortcuts(
    model: ModelAdapter,
    manifest: Any,
    task: BatchTask,
    tables: dict[str, np.ndarray],
    pred: pd.DataFrame,
    sensitive: list[str],
    q: Any,
    method: str,
    *,
    threshold: float,
    ci: float,
    seed: int,
    scan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Shortcut discovery (or the named region's test) and its causal confirmation."""
    from ..quality.shortcut_analysis import analyse_shortcuts

    predicted = pred["predicted"].to_numpy()
    pos = int(model.positive_index)
    try:
        return analyse_shortcuts(
            region=task.shortcut_region,
            attributes=pred[sensitive].reset_index(drop=True),
            predicted=predicted,
            image_shape=manifest.load_image(0).shape[1:],
            grids=tables.get(f"grid__{method}"),
            shares=tables.get(f"shortcut__{method}"),
            score=lambda x: model.predict_proba(x, progress=False)[:, pos],
            load_images=manifest.load_images,
            threshold=threshold,
            border=task.shortcut_border,
            corner=task.shortcut_corner,
            intersections=q.shortcut_intersections,
            class_names=_class_names_binary(model),
            min_change=q.shortcut_min_score_change,
            sample_size=q.shortcut_sample_size,
            ci=ci,
            seed=seed,
            scan=scan,
        )
    except ValueError as exc:
        log.warning("Shortcut detection skipped for %s: %s", method, exc)
        return {
            "table": pd.DataFrame(),
            "flags": [],
            "notes": [],
            "candidates": [],
            "searched": "",
            "not_searched": [f"{method}: skipped ({exc})"],
            "params": {"skipped": str(exc)},
        }


#: Bumped when the faithfulness verdict changes, so checkpoints of an older rule are redone.
FAITHFULNESS_VERSION = "verdict-1"


def _faithfulness(
    model: ModelAdapter,
    images: np.ndarray,
    maps: np.ndarray,
    target: int,
    n_steps: int,
    seed: int,
    ci: float,
    *,
    reference: str = "road",
    threshold: float | None = None,
) -> dict[str, Any]:
    """Deletion curves and the verdict (:func:`xai_audit.quality.faithfulness_verdict`).

    With the imputing ``"road"`` reference only deletion is computed: the verdict reads the
    deletion curve, and insertion would impute most of the image at its early steps.
    """
    from ..quality import deletion_insertion
    from ..quality.faithfulness import IMPUTING

    fr = deletion_insertion(
        model,
        images,
        maps,
        targets=target,
        n_steps=n_steps,
        modes=("deletion",) if reference in IMPUTING else ("deletion", "insertion"),
        orders=("morf",),
        random_state=seed,
        ci=ci,
        replacement=reference,
        threshold=threshold,
    )
    curves = pd.DataFrame(
        [
            {"mode": mo, "order": o, "reference": r, "fraction": float(f), "score": float(s)}
            for (mo, o, r), a in fr.arrays.items()
            for f, s in zip(fr.fractions, np.nanmean(a, axis=0))
        ]
    )
    return {
        "summary": fr.summary,
        "curves": curves,
        "headline": fr.headline,
        "params": {k: v for k, v in fr.params.items() if k != "seconds"},
    }


def _sanity(
    model: ModelAdapter, x: np.ndarray, spec: Any, target: int, seed: int, sanity_check: Any
) -> dict[str, Any]:
    from .batch import explain_maps

    def explainer(adapter: Any, images: torch.Tensor, targets: np.ndarray) -> np.ndarray:
        arr = (
            images.detach().cpu().numpy()
            if isinstance(images, torch.Tensor)
            else np.asarray(images)
        )
        # Use the targets the check asks for: the random-label step passes other classes.
        return explain_maps(adapter, arr, spec, np.asarray(targets))

    explainer.__name__ = spec.name
    res = sanity_check(
        model, x, explainer={spec.name: explainer}, targets=target, random_state=seed, keep_maps=1
    )
    steps = res.steps
    # The whole-cascade verdict (xai_audit.quality.sanity.cascade_verdict); ``final`` is the
    # deciding similarity at the fully randomised step, kept as ``final_similarity``.
    verdict = dict(res.verdicts.get(spec.name) or {})
    final = verdict.get("final")
    return {
        "passed": bool(res.passed.get(spec.name, False)),
        "reason": str(res.reason.get(spec.name, "")),
        "rule": res.rule,
        "verdict": verdict,
        "steps": steps,
        "final_similarity": None if final is None else float(final),
        "maps": res.maps[spec.name][:, 0].astype(np.float16),
        "layers": [str(v) for v in steps["layer"]] if "layer" in steps else [],
        "label_check": res.label_check if res.label_check is not None else pd.DataFrame(),
        "params": {k: v for k, v in res.params.items() if k != "seconds"},
    }


# ------------------------------------------------------------------------------ maps
def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """Downsample ``N x H x W`` to at most ``size`` px on the long side (area averaging)."""
    h, w = a.shape[-2:]
    if max(h, w) <= size:
        return a.astype(np.float32)
    scale = size / max(h, w)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[:, None]
    out = torch.nn.functional.interpolate(
        t, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area"
    )
    return out[:, 0].numpy()


def _plane(a: np.ndarray) -> np.ndarray:
    """The middle slice of 3D maps/images (``N x D x H x W`` -> ``N x H x W``)."""
    return a[:, a.shape[1] // 2] if a.ndim == 4 else a


def mean_maps(
    store: ShardStore, methods: list[str], outcomes: np.ndarray, size: int = 128
) -> dict[str, Any]:
    """Mean attribution map per method and outcome, streamed over the shards."""
    out: dict[str, Any] = {}
    for m in methods:
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for rows, maps in store.iter_maps(m):
            maps = _plane(maps)
            for o in OUTCOMES:
                sel = outcomes[rows] == o
                if sel.any():
                    sums[o] = sums.get(o, 0) + maps[sel].sum(axis=0, dtype=np.float64)
                    counts[o] = counts.get(o, 0) + int(sel.sum())
        out[m] = {o: _resize((sums[o] / counts[o])[None], size)[0].astype(np.float32) for o in sums}
        out[m]["counts"] = {o: counts[o] for o in counts}
    return out


def select_exemplars(
    pred: pd.DataFrame, sensitive: list[str], k: int, seed: int, preferred: np.ndarray | None = None
) -> pd.DataFrame:
    """At most ``k`` cases per (attribute, group, outcome), seeded; bounded by design.

    ``preferred`` rows (explained by every method) are chosen first.
    """
    from ..fairness.inputs import group_keys

    rng = np.random.default_rng(seed)
    rows = []
    for attr in sensitive:
        values = pd.Series(group_keys(pred[attr]))
        for group in sorted(values.unique()):
            for o in OUTCOMES:
                idx = np.flatnonzero(
                    (values == group).to_numpy() & (pred["outcome"] == o).to_numpy()
                )
                if len(idx) == 0:
                    continue
                idx = rng.permutation(idx)
                if preferred is not None:
                    idx = idx[np.argsort(~preferred[idx], kind="stable")]
                pick = np.sort(idx[:k])
                for i in pick:
                    rows.append(
                        {
                            "attribute": attr,
                            "group": group,
                            "outcome": o,
                            "row": int(pred["row"].iat[i]),
                            "case_id": str(pred["case_id"].iat[i]),
                            "label": int(pred["label"].iat[i]),
                            "score": float(pred["score"].iat[i]),
                        }
                    )
    return pd.DataFrame(
        rows, columns=["attribute", "group", "outcome", "row", "case_id", "label", "score"]
    )


def exemplar_arrays(
    model: ModelAdapter,
    manifest: Any,
    store: ShardStore,
    table: pd.DataFrame,
    task: BatchTask,
    explained: dict[str, np.ndarray],
    batch_size: int,
    size: int,
) -> dict[str, Any]:
    """Thumbnails and maps of the exemplar cases (each case stored once).

    Maps come from the shards; a case outside a method's ``max_images`` sample is explained
    here (a bounded number of cases).
    """
    from .batch import explain_maps

    rows = np.unique(table["row"].to_numpy(np.int64)) if len(table) else np.zeros(0, np.int64)
    out: dict[str, Any] = {"rows": rows}
    if not len(rows):
        return out
    images = manifest.load_images(rows)
    img = images.mean(axis=1) if images.shape[1] in (1, 3) else images[:, 0]
    out["images"] = _resize(_plane(img), size).astype(np.float16)
    out["maps"] = {}
    for spec in task.methods:
        have = np.isin(rows, explained[spec.name])
        maps = np.empty((len(rows), *images.shape[2:]), dtype=np.float32)
        if have.any():
            maps[have] = store.maps(spec.name, rows[have], batch_size)
        if (~have).any():
            maps[~have] = explain_maps(model, images[~have], spec, task.target)
        out["maps"][spec.name] = _resize(_plane(maps), size).astype(np.float16)
    return out
