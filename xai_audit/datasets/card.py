"""Build the data card: what was generated, from which settings, and every injected effect.

The card is computed from the metadata alone (no pixels), so a writer can tell whether a data
set on disk is the one that the current arguments would generate without rendering it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from xai_audit.datasets.config import GENERATOR_NAME, GENERATOR_VERSION, SyntheticConfig
from xai_audit.datasets.render import marker_geometry

#: How the card names each marker shape.
_TOKEN_NAMES = {
    "L": "letter-like marker",
    "square": "square marker",
    "ring": "ring-shaped marker",
    "text": "text-like bar",
}
#: Attribute columns whose distributions the card records (the audit's sensitive attributes).
ATTRIBUTES = ("sex", "age_group", "site")


def _rate(k: int, n: int) -> float | None:
    return float(k) / n if n else None


def _counts(series: pd.Series, order) -> dict[str, int]:
    counts = series.value_counts()
    return {str(k): int(counts.get(k, 0)) for k in order}


def _faint_effect(meta: pd.DataFrame, cfg: SyntheticConfig) -> dict[str, Any]:
    pos = meta[meta["label"] == 1]
    conditions = cfg.faint_conditions
    in_group = np.ones(len(pos), dtype=bool)
    for attr, group in conditions.items():
        in_group &= (pos[attr] == group).to_numpy()
    in_group = pd.Series(in_group, index=pos.index)
    mean_group = float(pos.loc[in_group, "lesion_contrast"].mean()) if in_group.any() else None
    mean_other = float(pos.loc[~in_group, "lesion_contrast"].mean()) if (~in_group).any() else None
    ratio = mean_group / mean_other if mean_group is not None and mean_other else None
    # Named as the audit names groups: "sex × age_group" / "F | 65+" for an intersection.
    attribute = " × ".join(conditions)
    group = " | ".join(conditions.values())
    where = " & ".join(f"{a}={g}" for a, g in conditions.items())
    if cfg.faint_where is None:
        outcome = (
            f"sensitivity in age_group={cfg.faint_age_group} clearly below overall "
            "(a gap of at least 0.10 for a small CNN); specificity about equal"
        )
    else:
        outcome = f"sensitivity for {where} clearly below overall; specificity about equal" + (
            "; the single groups of the intersection are affected only through it"
            if len(conditions) > 1
            else ""
        )
    return {
        "name": "faint_lesions",
        "kind": "disparity",
        "attribute": attribute,
        "group": group,
        "mechanism": (
            f"lesion contrast (peak intensity added) is multiplied by {cfg.faint_factor} in {where}"
        ),
        "size": {"lesion_contrast_ratio": cfg.faint_factor},
        "measured": {
            "lesion_contrast_ratio": ratio,
            "mean_lesion_contrast_group": mean_group,
            "mean_lesion_contrast_others": mean_other,
            "n_positive_group": int(in_group.sum()),
            "n_positive_others": int((~in_group).sum()),
        },
        "expected_audit_outcome": outcome,
        **({"conditions": conditions} if cfg.faint_where is not None else {}),
    }


def _marker_effect(
    meta: pd.DataFrame, cfg: SyntheticConfig, shape: tuple[int, int, int]
) -> dict[str, Any]:
    at_site = meta["site"] == cfg.marker_site
    pos, neg = meta["label"] == 1, meta["label"] == 0
    mk = meta["marker"] == 1
    n_pos, n_neg, n_other = (
        int((at_site & pos).sum()),
        int((at_site & neg).sum()),
        int((~at_site).sum()),
    )
    k_pos, k_neg, k_other = (
        int((at_site & pos & mk).sum()),
        int((at_site & neg & mk).sum()),
        int((~at_site & mk).sum()),
    )
    geo = marker_geometry(cfg, shape)
    if cfg.marker_is_default_corner:
        token, where = "letter-like marker", f"in the {cfg.marker_corner} corner, outside the body"
        place = f"{cfg.marker_corner} corner (off-anatomy)"
        region: dict[str, Any] = {"corner": cfg.marker_corner}
        region.update({k: geo[k] for k in ("size", "y0", "x0", "z0", "depth")})
    else:
        token = _TOKEN_NAMES[cfg.marker_shape]
        y0, x0 = geo["y0"], geo["x0"]
        y1, x1 = y0 + geo["size"], x0 + geo["width"]
        where = f"in the pixel box rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1}"
        place = f"marker box (rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1})"
        region = {
            "shape": cfg.marker_shape,
            "corner": cfg.marker_corner if cfg.marker_position is None else None,
            **geo,
            "box": [x0, y0, x1, y1],
        }
    return {
        "name": "site_marker_shortcut",
        "kind": "shortcut",
        "attribute": "site",
        "group": cfg.marker_site,
        "mechanism": (
            f"a bright {token} is drawn {where}, at site {cfg.marker_site}, far more often on "
            "positive images"
        ),
        "size": {
            "p_marker_given_positive": cfg.p_marker_positive,
            "p_marker_given_negative": cfg.p_marker_negative,
            "p_marker_other_sites": cfg.p_marker_other_sites,
        },
        "measured": {
            "p_marker_given_positive": _rate(k_pos, n_pos),
            "p_marker_given_negative": _rate(k_neg, n_neg),
            "p_marker_other_sites": _rate(k_other, n_other),
            "n_marker": int(mk.sum()),
            "n_positive_site": n_pos,
            "n_negative_site": n_neg,
        },
        "region": region,
        "expected_audit_outcome": (
            f"attribution mass in the {place} on marked "
            f"site-{cfg.marker_site} images: shortcut suspected; marked negatives at site "
            f"{cfg.marker_site} get high scores (false positives) and site-{cfg.marker_site} "
            "sensitivity is inflated"
        ),
    }


def _device_effect(meta: pd.DataFrame, cfg: SyntheticConfig) -> dict[str, Any]:
    dev = meta["device"] == 1 if "device" in meta else pd.Series(False, index=meta.index)
    pos = meta["label"] == 1
    harmful = cfg.device_lesion_factor < 1.0
    return {
        "name": "hidden_device",
        "kind": "hidden_stratification" if harmful else "harmless_device",
        "attribute": None,
        "group": None,
        "mechanism": (
            f"a tube-like device line is drawn from the top edge into one lung on a share "
            f"{cfg.p_device} of the images (any site, label or attribute); lesion contrast on "
            f"device images is multiplied by {cfg.device_lesion_factor}"
            + ("" if harmful else " (no effect: the harmless variant)")
            + ". Recorded only in truth.csv (column device) and this card, never in the "
            "manifest"
        ),
        "size": {"p_device": cfg.p_device, "device_lesion_factor": cfg.device_lesion_factor},
        "measured": {
            "n_device": int(dev.sum()),
            "n_device_positive": int((dev & pos).sum()),
            "share_device": float(dev.mean()) if len(meta) else None,
        },
        "expected_audit_outcome": (
            "a discovered slice made mostly of device images, with sensitivity well below the "
            "rest; no recorded attribute explains it"
            if harmful
            else "device images may form a slice, but none is significantly worse than the rest"
        ),
    }


def build_card(
    meta: pd.DataFrame,
    cfg: SyntheticConfig,
    *,
    seed: int,
    control: bool,
    image_size: int,
    volume_depth: int | None,
) -> dict[str, Any]:
    """Describe a generated data set as a JSON-serialisable dict.

    Parameters
    ----------
    meta : pandas.DataFrame
        The per-image truth table.
    cfg : SyntheticConfig
        The configuration used (the control variant when ``control``).
    seed : int
        Seed of the generator.
    control : bool
        Whether the effects were switched off.
    image_size : int
        Height and width in pixels.
    volume_depth : int or None
        Number of slices for volumes.

    Returns
    -------
    dict
        The card; ``card["effects"]`` lists every injected effect (empty in control mode).
    """
    shape = (volume_depth or 1, image_size, image_size)
    n = len(meta)
    per_patient = meta.groupby("patient_id").size()
    attributes = {
        "sex": {"configured": dict(cfg.sex_probs), "counts": _counts(meta["sex"], cfg.sex_probs)},
        "age_group": {
            "configured": dict(cfg.age_group_probs),
            "counts": _counts(meta["age_group"], cfg.age_group_probs),
        },
        "site": {
            "configured": dict(cfg.site_probs),
            "counts": _counts(meta["site"], cfg.site_probs),
        },
    }
    effects: list[dict[str, Any]] = []
    if not control:
        if cfg.faint_factor != 1.0:
            effects.append(_faint_effect(meta, cfg))
        if max(cfg.p_marker_positive, cfg.p_marker_negative, cfg.p_marker_other_sites) > 0:
            effects.append(_marker_effect(meta, cfg, shape))
        if cfg.p_device > 0:
            effects.append(_device_effect(meta, cfg))
    card = {
        "name": "xai_audit synthetic chest radiographs",
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "control": bool(control),
        "n_samples": n,
        "n_patients": int(per_patient.size),
        "n_positive": int(meta["label"].sum()),
        "prevalence": float(meta["label"].mean()) if n else None,
        "prevalence_configured": cfg.prevalence,
        "image_size": int(image_size),
        "volume_depth": int(volume_depth) if volume_depth else None,
        "image_shape": [1, *shape] if volume_depth else [1, image_size, image_size],
        "intensity_range": [0.0, 1.0],
        "attributes": attributes,
        "images_per_patient": {
            "configured": {str(k): v for k, v in cfg.images_per_patient_probs.items()},
            "counts": {str(k): int(v) for k, v in per_patient.value_counts().sort_index().items()},
        },
        "acquisition": {
            s: {
                "contrast_gain": a.contrast_gain,
                "noise_sd": a.noise_sd,
                "blur_sigma_px": a.blur_sigma * image_size / 128.0,
            }
            for s, a in cfg.sites.items()
        },
        "lesion": {
            "contrast_range": list(cfg.lesion_contrast_range),
            "radius_range_px": [
                max(r * image_size / 128.0, cfg.min_lesion_radius) for r in cfg.lesion_radius_range
            ],
            "profile": "solid sphere (3D)" if volume_depth else "projected sphere sqrt(1-(d/r)^2)",
            "mask": "disk (sphere for volumes) of radius lesion_radius around (lesion_y, lesion_x)",
        },
        "effects": effects,
        "config": cfg.to_dict(),
    }
    return _jsonable(card)


def effect(card: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Return the effect called ``name`` from a card, or ``None`` when it was not injected."""
    return next((e for e in card.get("effects", []) if e["name"] == name), None)


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars and NaN so that ``json.dumps`` accepts and round-trips the card."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
