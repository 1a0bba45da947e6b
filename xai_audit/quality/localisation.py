"""Localisation: does the attribution point at the lesion?

Four per-image numbers against a lesion mask (boxes become masks):

- pointing game (Zhang et al., 2018): 1 if the map's maximum lies inside the mask;
- relevance mass (Arras et al., 2022): share of the map's relevance inside the mask;
- relevance rank accuracy (Arras et al., 2022): of the ``K`` most relevant pixels, with ``K``
  the mask's size, the share inside the mask;
- IoU of the top-k region: the ``top_k`` fraction of most relevant pixels vs the mask.

Images without a lesion (empty mask) and maps with no signal (all zero or constant) get NaN
with the reason in a ``reason`` column, never a misleading 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._validate import as_maps, as_masks
from .faithfulness import _py
from .regions import boxes_to_masks
from .stats import bootstrap_ci

METRICS = ("pointing_game", "mass_in_mask", "rank_accuracy", "iou_top_k")


def relevance(maps: np.ndarray, normalise: str) -> np.ndarray:
    """Relevance used for mass shares: ``abs`` (any evidence) or ``positive`` (evidence for)."""
    if normalise == "abs":
        return np.abs(maps)
    if normalise == "positive":
        return np.clip(maps, 0.0, None)
    raise ValueError(f"normalise must be 'abs' or 'positive', got {normalise!r}.")


def _top_n_masks(flat: np.ndarray, *counts: np.ndarray) -> list[np.ndarray]:
    """Per row, the ``counts[i]`` largest entries (ties resolved by position), per ``counts``.

    One value sort serves every count vector: the ``c``-th largest value is a threshold, all
    entries above it are in, and of the entries equal to it the first ones by position fill
    the rest. (Two argsorts plus rank scatters cost 4x more; this runs on every audit batch.)
    """
    n, p = flat.shape
    ascending = np.sort(flat, axis=1)
    out = []
    for c in counts:
        c = np.clip(np.asarray(c, dtype=np.int64), 0, p)
        threshold = np.take_along_axis(ascending, np.clip(p - c, 0, p - 1)[:, None], axis=1)
        above = flat > threshold
        tie = flat == threshold
        need = c[:, None] - above.sum(axis=1, keepdims=True)
        mask = above | (tie & (np.cumsum(tie, axis=1) <= need))
        mask[c == 0] = False
        out.append(mask)
    return out


@dataclass
class LocalisationResult:
    """Per-image localisation scores with NaN and a reason where undefined.

    Attributes
    ----------
    per_image : DataFrame
        ``image, pointing_game, mass_in_mask, rank_accuracy, iou_top_k, mask_fraction, reason``.
    summary : DataFrame
        Per metric: n (defined images), mean, bootstrap CI, and the chance level (the mask's
        mean area share: what a random map would score on mass, rank accuracy and pointing).
    params : dict
    """

    per_image: pd.DataFrame
    summary: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary, with counts of undefined images by reason."""
        reasons = self.per_image["reason"][self.per_image["reason"] != ""].value_counts()
        return {
            "metric": "localisation",
            "summary": [{k: _py(v) for k, v in r.items()} for r in self.summary.to_dict("records")],
            "undefined": {str(k): int(v) for k, v in reasons.items()},
            "params": {k: _py(v) for k, v in self.params.items()},
        }


def localisation(
    maps: Any,
    masks: Any = None,
    *,
    boxes: Any = None,
    top_k: float = 0.1,
    normalise: str = "positive",
    ci: float = 0.95,
    n_boot: int = 1000,
    random_state: int = 0,
) -> LocalisationResult:
    """Pointing game, relevance mass, rank accuracy and top-k IoU against lesion masks.

    Parameters
    ----------
    maps : array ``N x H x W`` (or ``N x D x H x W``), tensor or ``Attribution``
    masks : array, optional
        Lesion masks, one per image (same shape as the maps) or one shared ``H x W`` mask.
    boxes : sequence, optional
        Instead of masks: per image a box ``(x_min, y_min, x_max, y_max)`` or a list of
        boxes (see :func:`boxes_to_masks`).
    top_k : float, default 0.1
        Fraction of most relevant pixels forming the region for ``iou_top_k``.
    normalise : {"positive", "abs"}, default "positive"
        Relevance counted for mass, rank accuracy and IoU: the positive part (Arras et al.:
        evidence *for* the class) or magnitudes.
    ci, n_boot, random_state
        Bootstrap CI settings (across images).

    Returns
    -------
    LocalisationResult

    Raises
    ------
    ValueError
        Masks of the wrong shape, both or neither of masks and boxes, non-finite maps.
    """
    if (masks is None) == (boxes is None):
        raise ValueError("Give exactly one of masks= or boxes=.")
    if not 0.0 < top_k <= 1.0:
        raise ValueError(f"top_k must lie in (0, 1], got {top_k}.")
    m = as_maps(maps)
    n = m.shape[0]
    if boxes is not None:
        if len(boxes) != n:
            raise ValueError(f"Got {len(boxes)} box entries for {n} maps.")
        masks = boxes_to_masks(boxes, m.shape[1:])
    mk = as_masks(masks, m.shape)
    flat = m.reshape(n, -1)
    mflat = mk.reshape(n, -1)
    rel = relevance(flat, normalise)
    p = flat.shape[1]
    mask_size = mflat.sum(axis=1)

    reason = np.full(n, "", dtype=object)
    empty_mask = mask_size == 0
    zero_map = ~np.any(flat != 0, axis=1)
    constant = (np.ptp(flat, axis=1) == 0) & ~zero_map
    no_rel = (rel.sum(axis=1) == 0) & ~zero_map & ~constant
    reason[no_rel] = f"no {normalise} relevance in the map"
    reason[constant] = "constant attribution map"
    reason[zero_map] = "all-zero attribution map"
    reason[empty_mask] = "empty mask (no lesion to localise)"
    undefined = empty_mask | zero_map | constant
    undefined_mass = undefined | no_rel

    # Pointing game: the maximum is attained inside the mask (ties count as a hit only if
    # a maximal pixel lies inside, which a flat map never reaches: it is NaN above).
    peak = flat.max(axis=1)
    inside_max = np.where(mflat, flat, -np.inf).max(axis=1)
    pointing = (inside_max >= peak).astype(np.float64)

    with np.errstate(invalid="ignore", divide="ignore"):
        mass = (rel * mflat).sum(axis=1) / rel.sum(axis=1)
        k = max(1, int(round(top_k * p)))
        top_mask_size, top = _top_n_masks(rel, mask_size, np.full(n, k))
        rank_acc = (top_mask_size & mflat).sum(axis=1) / mask_size
        iou = (top & mflat).sum(axis=1) / (top | mflat).sum(axis=1)

    pointing[undefined] = np.nan
    for arr in (mass, rank_acc, iou):
        arr[undefined_mass] = np.nan
    per_image = pd.DataFrame(
        {
            "image": np.arange(n),
            "pointing_game": pointing,
            "mass_in_mask": mass,
            "rank_accuracy": rank_acc,
            "iou_top_k": iou,
            "mask_fraction": mask_size / p,
            "reason": reason,
        }
    )
    chance = float(np.mean(mask_size[~empty_mask] / p)) if (~empty_mask).any() else np.nan
    rows = []
    for metric in METRICS:
        est, low, high = bootstrap_ci(
            per_image[metric].to_numpy(), ci=ci, n_boot=n_boot, random_state=random_state
        )
        rows.append(
            {
                "metric": metric,
                "n": int(per_image[metric].notna().sum()),
                "mean": est,
                "ci_low": low,
                "ci_high": high,
                "chance": chance if metric != "iou_top_k" else np.nan,
            }
        )
    return LocalisationResult(
        per_image=per_image,
        summary=pd.DataFrame(rows),
        params={"top_k": top_k, "normalise": normalise, "n_images": n, "ci": ci},
    )
