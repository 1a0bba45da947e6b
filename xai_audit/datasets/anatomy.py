"""Render the lesion-free anatomy of a batch of images with array operations only.

Intensities follow a radiograph's convention: air is dark, soft tissue and bone are bright. A
2D image is rendered as a volume of depth 1, so 2D and 3D share one code path.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from xai_audit.datasets.config import SyntheticConfig
from xai_audit.datasets.sampling import N_LOWFREQ, depth_scales

#: Edge softness of the body and lung outlines, in normalised units.
_BODY_EDGE = 0.02
_LUNG_EDGE = 0.04


def normalised_grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], shaped to broadcast against ``(n, D, H, W)``.

    Parameters
    ----------
    shape : tuple of int
        ``(D, H, W)``; ``D`` = 1 for 2D images.

    Returns
    -------
    w, v, u : numpy.ndarray
        Depth, row and column coordinates (float32), shapes ``(1, D, 1, 1)``, ``(1, 1, H, 1)``
        and ``(1, 1, 1, W)``. For ``D`` = 1 the depth coordinate is 0.
    """
    d, h, w_ = shape

    def axis(k: int) -> np.ndarray:
        return ((np.arange(k, dtype=np.float32) + 0.5) / k * 2.0 - 1.0).astype(np.float32)

    w = axis(d) if d > 1 else np.zeros(1, dtype=np.float32)
    return w.reshape(1, d, 1, 1), axis(h).reshape(1, 1, h, 1), axis(w_).reshape(1, 1, 1, w_)


def _col(values: np.ndarray) -> np.ndarray:
    """Per-image parameters as float32 of shape ``(n, 1, 1, 1)``."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1, 1)


def _ellipse(
    u: np.ndarray,
    v: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    ax: np.ndarray,
    ay: np.ndarray,
    edge: float,
) -> np.ndarray:
    """Soft indicator of an ellipse: ~1 inside, ~0 outside, a sigmoid ramp at the border."""
    q = np.sqrt(((u - cx) / ax) ** 2 + ((v - cy) / ay) ** 2)
    return expit((1.0 - q) / np.float32(edge)).astype(np.float32, copy=False)


def render_anatomy(
    geometry: dict[str, np.ndarray],
    index: np.ndarray,
    shape: tuple[int, int, int],
    cfg: SyntheticConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the anatomy of the images ``index``.

    Parameters
    ----------
    geometry : dict of str to numpy.ndarray
        Per-image parameters from :func:`~xai_audit.datasets.sampling.sample_cases`.
    index : numpy.ndarray
        Indices of the images to render.
    shape : tuple of int
        ``(D, H, W)``.
    cfg : SyntheticConfig
        Intensity levels and texture amplitudes.

    Returns
    -------
    image : numpy.ndarray
        float32 ``(n, D, H, W)``, lesion-free, before acquisition effects.
    lungs : numpy.ndarray
        float32 ``(n, D, H, W)`` soft lung-field indicator in [0, 1].
    """
    g = {k: v[index] for k, v in geometry.items()}
    w, v, u = normalised_grid(shape)
    body_s, lung_s = (s.astype(np.float32) for s in depth_scales(w))
    bcx, bcy = _col(g["body_cx"]), _col(g["body_cy"])

    body = _ellipse(
        u, v, bcx, bcy, _col(g["body_ax"]) * body_s, _col(g["body_ay"]) * body_s, _BODY_EDGE
    )
    lungs = np.zeros_like(body)
    for side in (-1.0, 1.0):
        lungs += _ellipse(
            u,
            v,
            bcx + np.float32(side) * _col(g["lung_off"]),
            bcy + _col(g["lung_cy"]),
            _col(g["lung_ax"]) * lung_s,
            _col(g["lung_ay"]) * lung_s,
            _LUNG_EDGE,
        )
    lungs *= body  # lungs never poke out of the body

    # Rib-like bands: curved sinusoids, sharpened by a power, strongest over the lungs where
    # the dark background makes them stand out.
    phase = 2.0 * np.pi * _col(g["rib_freq"]) * (v + _col(g["rib_curv"]) * (u - bcx) ** 2)
    ribs = (0.5 + 0.5 * np.sin(phase + _col(g["rib_phase"]) + np.float32(2.0) * w)) ** 4
    ribs *= lungs + np.float32(0.3) * body

    spine = np.exp(-(((u - bcx) / np.float32(0.09)) ** 2)) * body

    lowfreq = np.zeros_like(body)
    for k in range(N_LOWFREQ):
        lowfreq += _col(g["lf_amp"][:, k]) * np.cos(
            np.float32(np.pi) * (_col(g["lf_fx"][:, k]) * u + _col(g["lf_fy"][:, k]) * v)
            + _col(g["lf_phase"][:, k])
        )

    f = np.float32
    image = f(cfg.background_level) + f(cfg.tissue_level - cfg.background_level) * body
    image -= f(cfg.lung_drop) * lungs
    image += f(cfg.rib_amplitude) * ribs
    image += f(cfg.mediastinum_amplitude) * spine
    image += f(cfg.lowfreq_amplitude) * lowfreq * body
    return image.astype(np.float32, copy=False), lungs
