"""The per-batch work of an audit, as a pure function of (model, batch rows) -> shard.

Everything an audit needs per image is computed here in one pass over a batch: the model's
scores, one attribution map per method (stored compactly), and the cheap per-image quality
numbers that only need the map (share of attribution in the shortcut region, localisation
against the lesion mask). Nothing here depends on other batches, so an engine such as Ray
Data's ``map_batches`` can run :func:`compute_batch` over a cluster; the local loop in
:mod:`xai_audit.audit.runner` is the one-machine case.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model import ModelAdapter
from ..quality.regions import region_key

#: Per-image localisation numbers kept in shards (see :func:`xai_audit.quality.localisation`).
LOCALISATION_METRICS = ("pointing_game", "mass_in_mask", "rank_accuracy", "iou_top_k")


@dataclass(frozen=True)
class MethodSpec:
    """One attribution method and its parameters, as named in the config.

    Attributes
    ----------
    name : str
        Method name for :func:`xai_audit.explain.explain`.
    params : dict
        The method's parameters.
    max_images : int, optional
        Explain at most this many images, a seeded sample stratified by label and subgroup
        (for expensive methods such as integrated gradients on large data sets). Default:
        every image.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    max_images: int | None = None

    @classmethod
    def parse(cls, name: str, params: dict[str, Any] | None) -> MethodSpec:
        """From a config entry; the key ``max_images`` is taken out of the parameters."""
        params = dict(params or {})
        max_images = params.pop("max_images", None)
        return cls(str(name), params, None if max_images is None else int(max_images))

    def to_dict(self) -> dict[str, Any]:
        """JSON form, used in hashes and the report."""
        return {
            "name": self.name,
            "params": dict(sorted(self.params.items())),
            "max_images": self.max_images,
        }


@dataclass(frozen=True)
class BatchTask:
    """What :func:`compute_batch` does to every batch (everything that shapes a shard).

    Attributes
    ----------
    methods : tuple of MethodSpec
        Attribution methods, in order.
    target : int
        Class explained for every image (the positive class of the audit).
    shortcut_region : str, number, box or mask
        ``"auto"`` (search the whole image; the per-image share kept is then the corners',
        for the case-review widget), a named region, a border width, a box or a mask (see
        :func:`xai_audit.quality.regions.check_region`).
    shortcut_border, shortcut_corner : float
        Widths of the named regions, fractions of the side.
    shortcut_grid : int
        Patches per side of the per-image attribution grid (region discovery).
    shortcut_normalise : {"abs", "positive"}
        Relevance counted for the shortcut share.
    localisation : bool
        Compute localisation numbers for images with a lesion mask.
    top_k : float
        Fraction of pixels of the top-k region for the IoU.
    map_dtype : str
        Storage type of the maps (``"float16"`` halves the size of float32).
    """

    methods: tuple[MethodSpec, ...]
    target: int
    shortcut_region: Any = "auto"
    shortcut_normalise: str = "abs"
    shortcut_border: float = 0.08
    shortcut_corner: float = 0.15
    shortcut_grid: int = 16
    localisation: bool = True
    top_k: float = 0.1
    map_dtype: str = "float16"
    #: Per method with ``max_images``: the sorted manifest rows it explains.
    explain_rows: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)

    def rows_for(self, method: str, indices: np.ndarray) -> np.ndarray:
        """Boolean mask over ``indices`` of the rows ``method`` explains."""
        if method not in self.explain_rows:
            return np.ones(len(indices), dtype=bool)
        return np.isin(indices, np.asarray(self.explain_rows[method], dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the shard hash is taken over it)."""
        return {
            "methods": [m.to_dict() for m in self.methods],
            "target": int(self.target),
            "shortcut_region": region_key(self.shortcut_region),  # a mask by its bytes' hash
            "shortcut_normalise": self.shortcut_normalise,
            "shortcut_border": float(self.shortcut_border),
            "shortcut_corner": float(self.shortcut_corner),
            "shortcut_grid": int(self.shortcut_grid),
            "localisation": bool(self.localisation),
            "top_k": float(self.top_k),
            "map_dtype": self.map_dtype,
            "explain_rows": {k: sha256_rows(v) for k, v in sorted(self.explain_rows.items())},
        }


def sha256_rows(rows: tuple[int, ...]) -> str:
    """Short digest of a row selection (for the task hash)."""
    import hashlib

    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def explain_maps(
    model: ModelAdapter,
    images: np.ndarray,
    spec: MethodSpec,
    target: int | np.ndarray,
    logits: np.ndarray | None = None,
) -> np.ndarray:
    """Attribution maps ``N x *spatial`` (float32) of one method for one batch.

    ``target`` is one class for every image or one class per image; ``logits``, the batch's
    raw outputs when already computed, spare methods their own forward pass.
    """
    from ..explain import explain

    if isinstance(target, np.ndarray):
        target = [int(t) for t in target]
    attribution = explain(model, images, spec.name, target=target, logits=logits, **spec.params)
    maps = np.asarray(attribution.maps, dtype=np.float32)
    if maps.ndim == images.ndim:  # N x 1 x H x W from a method that keeps a channel
        maps = maps[:, 0]
    return maps


def pack_maps(maps: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale each map to ``max |m| = 1`` and cast, keeping the scale separately.

    float16 has a narrow range: raw integrated-gradients values can underflow to zero, so the
    maps are stored normalised with one float32 scale per image (``map = stored * scale``).
    """
    if len(maps) == 0:  # a batch with no explained image (max_images reached): empty maps
        return maps.astype(dtype), np.zeros(0, np.float32)
    flat = np.abs(maps.reshape(len(maps), -1))
    scale = flat.max(axis=1).astype(np.float32) if flat.size else np.zeros(len(maps), np.float32)
    safe = np.where(scale > 0, scale, 1.0).reshape((-1,) + (1,) * (maps.ndim - 1))
    return (maps / safe).astype(dtype), scale


def compute_batch(
    model: ModelAdapter,
    images: np.ndarray,
    indices: np.ndarray,
    task: BatchTask,
    masks: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Predict, explain and score one batch; return the arrays of its shard.

    Parameters
    ----------
    model : ModelAdapter
    images : numpy.ndarray
        ``B x C x H x W`` (or ``B x C x D x H x W``) float32 images of the batch.
    indices : numpy.ndarray
        Row positions of the images in the manifest.
    task : BatchTask
    masks : numpy.ndarray, optional
        ``B x H x W`` lesion masks (all-zero where there is none), for localisation.

    Returns
    -------
    dict of str to numpy.ndarray
        ``indices``, ``scores`` (``B x K``), ``seconds_predict``, and per method ``m``:
        ``rows__m`` (the rows explained), ``maps__m`` (``map_dtype``, one per explained row),
        ``scale__m``, ``seconds__m``, and per image (NaN where not explained)
        ``shortcut__m`` (share in the named region; the corners for ``"auto"``), ``grid__m``
        (``g x g`` float32 shares of attribution per patch, summing to 1; 3D maps summed over
        depth) and, with masks, ``loc__m__<metric>``.
    """
    import torch

    from ..quality import localisation, shortcut_mass
    from ..quality.regions import region_mask
    from ..quality.shortcut_discovery import attribution_grid

    out: dict[str, np.ndarray] = {"indices": np.asarray(indices, dtype=np.int64)}
    t0 = time.perf_counter()
    # Raw outputs once: the scores, and the logits the explainers would otherwise recompute.
    logits = model.predict_logits(images, progress=False)
    out["scores"] = (
        model.apply_activation(torch.from_numpy(logits)).numpy().astype(np.float32, copy=False)
    )
    out["seconds_predict"] = np.float64(time.perf_counter() - t0)
    from ..slices.audit import batch_features  # embeddings + image statistics (slice discovery)

    out.update(batch_features(model, images))
    has_mask = None
    if masks is not None:
        flat = masks.reshape(len(masks), -1)
        has_mask = flat.any(axis=1)
        out["has_mask"] = has_mask
        out["mask_fraction"] = flat.mean(axis=1).astype(np.float32)
    n = len(indices)
    # The per-image shortcut region ("auto" keeps the corners' share for the case review).
    named = task.shortcut_region
    if isinstance(named, str) and named == "auto":
        named = "corners"
    region = region_mask(
        named,
        images.shape[2:],
        border=task.shortcut_border,
        corner=task.shortcut_corner,
        rows=np.asarray(indices),
    )
    for spec in task.methods:
        m = spec.name
        sel = task.rows_for(m, np.asarray(indices))
        out[f"rows__{m}"] = np.asarray(indices, dtype=np.int64)[sel]
        shares = np.full(n, np.nan, dtype=np.float32)
        grid = np.full((n, task.shortcut_grid, task.shortcut_grid), np.nan, dtype=np.float32)
        loc_cols = {metric: np.full(n, np.nan, dtype=np.float32) for metric in LOCALISATION_METRICS}
        t0 = time.perf_counter()
        if sel.any():
            maps = explain_maps(model, images[sel], spec, task.target, logits=logits[sel])
        else:
            maps = np.zeros((0, *images.shape[2:]), dtype=np.float32)
        out[f"seconds__{m}"] = np.float64(time.perf_counter() - t0)
        stored, scale = pack_maps(maps, task.map_dtype)
        out[f"maps__{m}"] = stored
        out[f"scale__{m}"] = scale
        if sel.any():
            shares[sel] = shortcut_mass(
                maps,
                region if region.ndim == maps.ndim - 1 else region[sel],
                normalise=task.shortcut_normalise,
            )
            cells = attribution_grid(maps, task.shortcut_grid, task.shortcut_normalise)
            if cells.shape[1:] != grid.shape[1:]:  # images smaller than the grid
                grid = np.full((n, *cells.shape[1:]), np.nan, dtype=np.float32)
            grid[sel] = cells
            if task.localisation and has_mask is not None and (has_mask & sel).any():
                loc = localisation(maps, masks[sel], top_k=task.top_k, n_boot=1).per_image  # type: ignore[index]
                for metric in LOCALISATION_METRICS:
                    loc_cols[metric][sel] = loc[metric].to_numpy(np.float32)
        out[f"shortcut__{m}"] = shares
        out[f"grid__{m}"] = grid
        if task.localisation and has_mask is not None:
            for metric in LOCALISATION_METRICS:
                out[f"loc__{m}__{metric}"] = loc_cols[metric]
    return out
