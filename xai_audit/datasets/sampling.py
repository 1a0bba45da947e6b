"""Draw patients, their attributes, anatomy and lesions, and the per-image truth table.

Everything random about a case except the pixel noise is drawn here, so that the metadata (and
the data card) can be produced without rendering a single image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from xai_audit.datasets.config import SyntheticConfig

#: Number of low-frequency cosine components in the smooth background variation.
N_LOWFREQ = 3


@dataclass
class CaseDraws:
    """Per-image parameters needed to render the images.

    Attributes
    ----------
    metadata : pandas.DataFrame
        The public truth table, one row per image.
    geometry : dict of str to numpy.ndarray
        Per-image anatomy parameters in normalised coordinates ([-1, 1] across the image).
    lesion_z : numpy.ndarray
        Lesion centre slice (float, voxels) for volumes; NaN for negatives and for 2D images.
    marker_uniform : numpy.ndarray
        The uniform draws that decided the markers (kept so control and non-control share them).
    """

    metadata: pd.DataFrame
    geometry: dict[str, np.ndarray]
    lesion_z: np.ndarray
    marker_uniform: np.ndarray


def _choice(rng: np.random.Generator, probs: dict, size: int) -> np.ndarray:
    keys = list(probs)
    idx = rng.choice(len(keys), size=size, p=np.asarray(list(probs.values()), dtype=float))
    return np.asarray(keys, dtype=object)[idx]


def _images_per_patient(rng: np.random.Generator, cfg: SyntheticConfig, n: int) -> np.ndarray:
    """Images per patient, summing to exactly ``n`` (the last patient is truncated)."""
    # n patients always suffice because every patient has at least one image.
    counts = _choice(rng, cfg.images_per_patient_probs, n).astype(np.int64)
    total = np.cumsum(counts)
    n_pat = int(np.searchsorted(total, n) + 1)
    counts = counts[:n_pat].copy()
    counts[-1] -= int(total[n_pat - 1] - n)
    return counts


def depth_scales(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Body and lung size multipliers along the depth axis (``w`` in [-1, 1]).

    The lungs taper towards both ends of a volume, the body much less; in 2D ``w`` = 0.
    """
    body = np.sqrt(np.clip(1.0 - 0.3 * w**2, 0.05, None))
    lung = np.sqrt(np.clip(1.0 - (w / 1.1) ** 2, 0.0025, None))
    return body, lung


def sample_cases(
    cfg: SyntheticConfig,
    n_samples: int,
    image_size: int,
    volume_depth: int | None,
    rng: np.random.Generator,
) -> CaseDraws:
    """Draw every per-image quantity except pixel noise.

    Parameters
    ----------
    cfg : SyntheticConfig
        Generator configuration (already the control variant when ``control=True``).
    n_samples : int
        Number of images.
    image_size : int
        Height and width in pixels.
    volume_depth : int or None
        Number of slices for volumes, ``None`` for 2D images.
    rng : numpy.random.Generator
        The data set's generator; the order of draws is part of the generator version.

    Returns
    -------
    CaseDraws
    """
    n = int(n_samples)
    size = int(image_size)
    scale = size / 128.0
    counts = _images_per_patient(rng, cfg, n)
    n_pat = counts.size

    # --- patient level: attributes, label and lesion, all independent of each other.
    sex = _choice(rng, cfg.sex_probs, n_pat)
    age = _choice(rng, cfg.age_group_probs, n_pat)
    site = _choice(rng, cfg.site_probs, n_pat)
    label = (rng.random(n_pat) < cfg.prevalence).astype(np.int64)
    side = np.where(rng.random(n_pat) < 0.5, -1.0, 1.0)
    rho = np.sqrt(rng.random(n_pat))  # sqrt: uniform over the ellipse's area
    theta = rng.uniform(0.0, 2.0 * np.pi, n_pat)
    radius = np.maximum(rng.uniform(*cfg.lesion_radius_range, n_pat) * scale, cfg.min_lesion_radius)
    base_contrast = rng.uniform(*cfg.lesion_contrast_range, n_pat)
    z_frac = rng.uniform(-0.35, 0.35, n_pat)  # lesion depth, where the lungs are near full size
    pat_geom = {
        "body_cx": rng.normal(0.0, 0.02, n_pat),
        "body_cy": 0.05 + rng.normal(0.0, 0.02, n_pat),
        "body_ax": rng.uniform(0.78, 0.86, n_pat),
        "body_ay": rng.uniform(0.88, 0.95, n_pat),
        "lung_off": rng.uniform(0.36, 0.42, n_pat),
        "lung_cy": rng.uniform(-0.12, -0.04, n_pat),
        "lung_ax": rng.uniform(0.25, 0.30, n_pat),
        "lung_ay": rng.uniform(0.50, 0.58, n_pat),
        "rib_freq": rng.uniform(3.0, 4.0, n_pat),
        "rib_curv": rng.uniform(0.8, 1.3, n_pat),
        "lf_fx": rng.uniform(0.3, 1.2, (n_pat, N_LOWFREQ)),
        "lf_fy": rng.uniform(0.3, 1.2, (n_pat, N_LOWFREQ)),
        "lf_amp": rng.uniform(-1.0, 1.0, (n_pat, N_LOWFREQ)),
    }

    # --- image level: shuffle so that one patient's images are not adjacent.
    patient_of = np.repeat(np.arange(n_pat), counts)[rng.permutation(n)]
    geom = {k: v[patient_of] for k, v in pat_geom.items()}
    # Follow-up images of a patient differ slightly in positioning and texture phase.
    geom["body_cx"] = geom["body_cx"] + rng.normal(0.0, 0.01, n)
    geom["body_cy"] = geom["body_cy"] + rng.normal(0.0, 0.01, n)
    geom["rib_phase"] = rng.uniform(0.0, 2.0 * np.pi, n)
    geom["lf_phase"] = rng.uniform(0.0, 2.0 * np.pi, (n, N_LOWFREQ))
    marker_u = rng.random(n)

    lab = label[patient_of]
    img_site = site[patient_of]
    img_age = age[patient_of]
    img_attr = {"sex": sex[patient_of], "age_group": img_age, "site": img_site}
    in_faint = np.ones(n, dtype=bool)
    for attr, group in cfg.faint_conditions.items():
        in_faint &= img_attr[attr] == group
    faint = np.where(in_faint, cfg.faint_factor, 1.0)
    contrast = np.where(lab == 1, base_contrast[patient_of] * faint, 0.0)
    r = radius[patient_of]

    # Lesion centre: inside the chosen lung ellipse shrunk by the radius, so the disk stays
    # inside the lung field (and therefore far from the corner marker).
    w_c = z_frac[patient_of] if volume_depth else np.zeros(n)
    _, lung_s = depth_scales(w_c)
    half = size / 2.0
    cx_n = geom["body_cx"] + side[patient_of] * geom["lung_off"]
    cy_n = geom["body_cy"] + geom["lung_cy"]
    ax_px = np.maximum(geom["lung_ax"] * lung_s * half - r - 1.0, 0.5)
    ay_px = np.maximum(geom["lung_ay"] * lung_s * half - r - 1.0, 0.5)
    rr, th = rho[patient_of], theta[patient_of]
    les_x = (cx_n + 1.0) * half - 0.5 + rr * np.cos(th) * ax_px
    les_y = (cy_n + 1.0) * half - 0.5 + rr * np.sin(th) * ay_px
    if volume_depth:
        les_z = (w_c + 1.0) * volume_depth / 2.0 - 0.5
        les_z = np.where(lab == 1, les_z, np.nan)
    else:
        les_z = np.full(n, np.nan)

    in_marker_site = img_site == cfg.marker_site
    p_marker = np.where(
        in_marker_site,
        np.where(lab == 1, cfg.p_marker_positive, cfg.p_marker_negative),
        cfg.p_marker_other_sites,
    )
    marker = (marker_u < p_marker).astype(np.int64)
    device = np.zeros(n, dtype=np.int64)
    if cfg.p_device > 0:
        # The hidden factor, drawn last and only when on: every draw above (and so the data of
        # a configuration without devices) stays unchanged.
        device = (rng.random(n) < cfg.p_device).astype(np.int64)
        geom["device_x_top"] = rng.uniform(-0.12, 0.12, n)
        geom["device_side"] = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        geom["device_y_end"] = rng.uniform(0.10, 0.45, n)
        geom["device_bend"] = rng.uniform(1.5, 3.0, n)
        contrast = contrast * np.where(device == 1, cfg.device_lesion_factor, 1.0)

    width_case = max(5, len(str(n - 1)))
    width_pat = max(4, len(str(n_pat)))
    meta = pd.DataFrame(
        {
            "case_id": [f"case_{i:0{width_case}d}" for i in range(n)],
            "patient_id": [f"pat_{p + 1:0{width_pat}d}" for p in patient_of],
            "sex": sex[patient_of].astype(str),
            "age_group": img_age.astype(str),
            "site": img_site.astype(str),
            "label": lab,
            "marker": marker,
            "lesion_contrast": contrast,
            "lesion_radius": np.where(lab == 1, r, 0.0),
            "lesion_y": np.where(lab == 1, les_y, np.nan),
            "lesion_x": np.where(lab == 1, les_x, np.nan),
            "lesion_side": np.where(lab == 1, np.where(side[patient_of] < 0, "left", "right"), ""),
        }
    )
    if cfg.p_device > 0:
        meta["device"] = device  # truth only: io.MANIFEST_COLUMNS never lists it
    if volume_depth:
        meta["lesion_z"] = les_z
    return CaseDraws(metadata=meta, geometry=geom, lesion_z=les_z, marker_uniform=marker_u)
