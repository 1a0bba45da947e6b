"""Turn drawn cases into pixels: anatomy, lesions and masks, marker token, site acquisition."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import expit

from xai_audit.datasets.anatomy import render_anatomy
from xai_audit.datasets.config import SyntheticConfig
from xai_audit.datasets.sampling import CaseDraws

#: Voxels rendered per batch: bounds peak memory (a few float32 arrays of this size).
_CHUNK_VOXELS = 1 << 22


def marker_geometry(cfg: SyntheticConfig, shape: tuple[int, int, int]) -> dict[str, int]:
    """Pixel box of the marker for an image of ``shape`` = ``(D, H, W)``.

    Returns
    -------
    dict
        ``size`` (the box's height), ``width``, ``y0``, ``x0`` (top-left pixel), and ``z0``,
        ``depth`` (0 and 1 for 2D images).
    """
    d, h, w = shape
    size = max(3, int(round(cfg.marker_size * h / 128.0)))
    width = size if cfg.marker_width is None else max(3, int(round(cfg.marker_width * h / 128.0)))
    width = min(width, w)
    if cfg.marker_position is None:
        off = max(1, int(round(cfg.marker_offset * h / 128.0)))
        y0 = off if cfg.marker_corner.startswith("top") else h - off - size
        x0 = off if cfg.marker_corner.endswith("left") else w - off - width
    else:
        # Scaled like every size, then kept inside the image (rounding may push it out by 1).
        y0 = min(max(0, int(round(cfg.marker_position[0] * h / 128.0))), h - size)
        x0 = min(max(0, int(round(cfg.marker_position[1] * h / 128.0))), w - width)
    if d > 1:
        depth = min(size, d)
        z0 = min(max(1, int(round(cfg.marker_offset * h / 128.0))), d - depth)
    else:
        depth, z0 = 1, 0
    return {"size": size, "width": width, "y0": y0, "x0": x0, "z0": z0, "depth": depth}


def marker_pattern(size: int, shape: str = "L", width: int | None = None) -> np.ndarray:
    """The marker token, boolean ``(size, width)``.

    Parameters
    ----------
    size : int
        Height of the box in pixels.
    shape : {"L", "square", "ring", "text"}
        ``"L"``: a letter like a lead side marker; ``"square"``: a filled box; ``"ring"``: an
        (elliptical) annulus; ``"text"``: a row of character-like blocks of varying heights,
        like burned-in text.
    width : int, optional
        Width of the box in pixels (default ``size``).
    """
    h = int(size)
    w = h if width is None else int(width)
    pat = np.zeros((h, w), dtype=bool)
    if shape == "L":
        stroke = max(1, int(round(min(h, w) * 0.35)))
        pat[:, :stroke] = True
        pat[h - stroke :, :] = True
    elif shape == "square":
        pat[:] = True
    elif shape == "ring":
        yy, xx = np.mgrid[:h, :w].astype(np.float64)
        q = np.hypot((yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2))
        thickness = max(1, int(round(0.25 * min(h, w)))) / (min(h, w) / 2)
        pat[:] = (q <= 1.0) & (q >= 1.0 - thickness)
    elif shape == "text":
        # Characters: cells about 0.6 x the height wide, one pixel apart, bottom-aligned, with
        # heights cycling like mixed upper/lower case; a fixed pattern, no randomness.
        cell = max(2, int(round(0.6 * h)))
        heights = (1.0, 0.6, 1.0, 0.8)
        for k, x0 in enumerate(range(0, w, cell + 1)):
            top = h - max(1, int(round(heights[k % len(heights)] * h)))
            pat[top:, x0 : x0 + cell] = True
    else:
        raise ValueError(f"unknown marker shape {shape!r}")
    return pat


def marker_region(cfg: SyntheticConfig, shape: tuple[int, int, int]) -> np.ndarray:
    """Boolean ``(D, H, W)`` map of the marker's bright pixels (where it is drawn)."""
    geo = marker_geometry(cfg, shape)
    region = np.zeros(shape, dtype=bool)
    s, w = geo["size"], geo["width"]
    region[
        geo["z0"] : geo["z0"] + geo["depth"], geo["y0"] : geo["y0"] + s, geo["x0"] : geo["x0"] + w
    ] = marker_pattern(s, cfg.marker_shape, w)
    return region


def _lesions(
    image: np.ndarray, masks: np.ndarray, draws: CaseDraws, index: np.ndarray, volume: bool
) -> None:
    """Add lesions of the positive images in ``index`` to ``image`` and fill ``masks`` in place."""
    meta = draws.metadata
    pos = np.flatnonzero(meta["label"].to_numpy()[index] == 1)
    if pos.size == 0:
        return
    rows = index[pos]

    def col(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1, 1)

    _, d, h, w = image.shape
    zz = np.arange(d, dtype=np.float32).reshape(1, d, 1, 1)
    yy = np.arange(h, dtype=np.float32).reshape(1, 1, h, 1)
    xx = np.arange(w, dtype=np.float32).reshape(1, 1, 1, w)
    r = col(meta["lesion_radius"].to_numpy()[rows])
    dist2 = (yy - col(meta["lesion_y"].to_numpy()[rows])) ** 2 + (
        xx - col(meta["lesion_x"].to_numpy()[rows])
    ) ** 2
    if volume:
        dist2 = dist2 + (zz - col(draws.lesion_z[rows])) ** 2
        # A solid nodule in a volume: uniform density with a soft (half-pixel) edge.
        profile = expit((r - np.sqrt(dist2)) / np.float32(0.5))
    else:
        # A sphere seen in projection: thickness, hence brightness, is sqrt(r^2 - d^2).
        profile = np.sqrt(np.clip(1.0 - dist2 / r**2, 0.0, None))
    amp = col(meta["lesion_contrast"].to_numpy()[rows])
    image[pos] += (amp * profile).astype(np.float32, copy=False)
    masks[pos] = (dist2 <= r**2).astype(np.uint8)


def _devices(image: np.ndarray, draws: CaseDraws, index: np.ndarray, cfg: SyntheticConfig) -> None:
    """Draw the hidden factor: a tube-like line from the top edge bending into one lung.

    The line blends the pixels towards ``device_intensity`` (a radiopaque tube), on every
    slice of a volume. Only images whose truth ``device`` is 1 are touched.
    """
    if cfg.p_device <= 0 or "device" not in draws.metadata:
        return
    has = np.flatnonzero(draws.metadata["device"].to_numpy()[index] == 1)
    if has.size == 0:
        return
    g = {k: v[index[has]] for k, v in draws.geometry.items()}
    _, d, h, w = image.shape
    half = w / 2.0

    def col(v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=np.float32).reshape(-1, 1, 1)

    x_top = col((g["body_cx"] + g["device_x_top"] + 1.0) * half - 0.5)
    x_end = col((g["body_cx"] + g["device_side"] * g["lung_off"] * 0.8 + 1.0) * half - 0.5)
    y_end = col((g["body_cy"] + g["lung_cy"] + g["device_y_end"] + 1.0) * (h / 2.0) - 0.5)
    yy = np.arange(h, dtype=np.float32).reshape(1, h, 1)
    xx = np.arange(w, dtype=np.float32).reshape(1, 1, w)
    t = np.clip(yy / np.maximum(y_end, 1.0), 0.0, None)
    centre = x_top + (x_end - x_top) * np.minimum(t, 1.0) ** col(g["device_bend"])
    sigma = max(cfg.device_width * h / 128.0, 1.0) / 2.355  # width is the line's FWHM
    profile = np.exp(-0.5 * ((xx - centre) / np.float32(sigma)) ** 2)
    profile *= (t <= 1.0).astype(np.float32)  # the tube ends in the lung
    sub = image[has]
    sub += (np.float32(cfg.device_intensity) - sub) * profile[:, None]
    image[has] = sub


def _markers(image: np.ndarray, draws: CaseDraws, index: np.ndarray, cfg: SyntheticConfig) -> None:
    has = np.flatnonzero(draws.metadata["marker"].to_numpy()[index] == 1)
    if has.size == 0:
        return
    region = marker_region(cfg, image.shape[1:])
    # Marker pixels are set (not added): a lead letter blocks the beam whatever lies behind it.
    sub = image[has]
    sub[:, region] = np.float32(cfg.marker_intensity)
    image[has] = sub


def _acquire(
    image: np.ndarray,
    sites: np.ndarray,
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    volume: bool,
) -> np.ndarray:
    """Apply per-site contrast gain, blur and noise, then clip to [0, 1]."""
    h = image.shape[2]
    gain = np.array([cfg.sites[s].contrast_gain for s in sites], dtype=np.float32)
    noise_sd = np.array([cfg.sites[s].noise_sd for s in sites], dtype=np.float32)
    pivot = np.float32(cfg.gain_pivot)
    image = pivot + gain.reshape(-1, 1, 1, 1) * (image - pivot)
    for name in sorted(cfg.sites):
        sigma = cfg.sites[name].blur_sigma * h / 128.0
        idx = np.flatnonzero(sites == name)
        if sigma <= 0 or idx.size == 0:
            continue
        sig = (0.0, sigma if volume else 0.0, sigma, sigma)
        image[idx] = gaussian_filter(image[idx], sigma=sig, mode="nearest")
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise_sd.reshape(-1, 1, 1, 1) * noise
    return np.clip(image, 0.0, 1.0, out=image)


def render_images(
    draws: CaseDraws,
    cfg: SyntheticConfig,
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    extra: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render all images and lesion masks, in batches.

    Parameters
    ----------
    draws : CaseDraws
        Output of :func:`~xai_audit.datasets.sampling.sample_cases`.
    cfg : SyntheticConfig
        Generator configuration.
    shape : tuple of int
        ``(D, H, W)``, ``D`` = 1 for 2D images.
    rng : numpy.random.Generator
        Source of the pixel noise (drawn batch after batch, in case order).
    extra : callable, optional
        ``extra(image, index)`` adds further findings to the chunk ``image`` (``(n, D, H, W)``,
        rows ``index``) in place, after the lesions and before the marker and the site's
        acquisition (the multi-label mode, :mod:`xai_audit.datasets.multilabel`). It must not
        draw from ``rng``, so that the pixel noise stays that of the single-label data set.

    Returns
    -------
    images : numpy.ndarray
        float32 ``(N, D, H, W)`` in [0, 1].
    masks : numpy.ndarray
        uint8 ``(N, D, H, W)`` in {0, 1}.
    """
    n = len(draws.metadata)
    volume = shape[0] > 1
    images = np.empty((n, *shape), dtype=np.float32)
    masks = np.zeros((n, *shape), dtype=np.uint8)
    sites = draws.metadata["site"].to_numpy()
    step = max(1, _CHUNK_VOXELS // int(np.prod(shape)))
    for start in range(0, n, step):
        index = np.arange(start, min(n, start + step))
        image, _ = render_anatomy(draws.geometry, index, shape, cfg)
        _lesions(image, masks[index[0] : index[-1] + 1], draws, index, volume)
        if extra is not None:
            extra(image, index)
        _devices(image, draws, index, cfg)
        _markers(image, draws, index, cfg)
        images[index[0] : index[-1] + 1] = _acquire(image, sites[index], cfg, rng, volume)
    return images, masks
