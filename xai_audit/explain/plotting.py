"""Overlays of attribution maps on images (matplotlib, object API: safe under Agg).

Every helper returns a :class:`matplotlib.figure.Figure` built without pyplot, so nothing is
shown or kept in pyplot's global state (save it, or display it in a notebook).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .base import Attribution


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def _image_2d(image: Any) -> np.ndarray:
    """An ``H x W`` grey or ``H x W x 3`` RGB array from ``[1|3] x H x W`` / ``H x W [x 3]``."""
    img = _to_numpy(image)
    if img.ndim == 4 and img.shape[0] == 1:  # a batch of one
        img = img[0]
    if img.ndim == 3:
        if img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = np.moveaxis(img, 0, -1)
        if img.shape[-1] == 1:
            img = img[..., 0]
        elif img.shape[-1] != 3:
            raise ValueError(
                f"Cannot show an image of shape {image.shape} (expected 1 or 3 channels)."
            )
    if img.ndim not in (2, 3):
        raise ValueError(f"Expected a 2D image, got shape {img.shape}.")
    lo, hi = np.nanmin(img), np.nanmax(img)
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _map_2d(attribution_map: Any) -> np.ndarray:
    if isinstance(attribution_map, Attribution):
        attribution_map = attribution_map.maps[0]
    m = _to_numpy(attribution_map)
    m = np.squeeze(m)
    if m.ndim != 2:
        raise ValueError(f"Expected a 2D attribution map, got shape {m.shape}.")
    return m


def _normalize(m: np.ndarray, mode: str | None) -> np.ndarray:
    if mode is None:
        return m
    if mode == "abs":
        m = np.abs(m)
        return m / m.max() if m.max() > 0 else m
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def overlay(
    image: Any,
    attribution_map: Any,
    ax: Axes | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    title: str | None = None,
    normalize: str | None = "minmax",
    colorbar: bool = False,
) -> Figure:
    """Draw an attribution map over its image.

    Parameters
    ----------
    image : array or tensor
        ``H x W``, ``1 x H x W`` or ``3 x H x W`` (or channels-last); shown in grey/RGB.
    attribution_map : array, tensor or Attribution
        ``H x W`` map (an :class:`Attribution` of one item is accepted).
    ax : matplotlib Axes, optional
        Draw into this axes; default: a new figure.
    cmap, alpha : str, float
        Heatmap colormap and opacity.
    title : str, optional
    normalize : {"minmax", "abs", None}, default "minmax"
        Rescale the map to [0, 1] before colouring (None: use its values as they are).
    colorbar : bool, default False

    Returns
    -------
    matplotlib.figure.Figure
    """
    img = _image_2d(image)
    m = _normalize(_map_2d(attribution_map), normalize)
    if m.shape != img.shape[:2]:
        raise ValueError(f"Map shape {m.shape} does not match image shape {img.shape[:2]}.")
    if ax is None:
        fig = Figure(figsize=(4, 4))
        ax = fig.add_subplot(1, 1, 1)
    fig = ax.figure
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    kwargs = {"vmin": 0.0, "vmax": 1.0} if normalize else {}
    heat = ax.imshow(m, cmap=cmap, alpha=alpha, interpolation="bilinear", **kwargs)
    if colorbar:
        fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return fig


def compare_methods(
    image: Any,
    maps: Mapping[str, Any],
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    normalize: str | None = "minmax",
    show_image: bool = True,
    panel_size: float = 2.6,
    title: str | None = None,
) -> Figure:
    """Show several methods' maps for one image side by side.

    Parameters
    ----------
    image : array or tensor
        The image (as for :func:`overlay`).
    maps : mapping of str to map
        ``{method name: H x W map or single-item Attribution}``, in display order.
    show_image : bool, default True
        Put the plain image first.
    normalize : {"minmax", "abs", None}
        Per-map rescaling (signed methods such as IG read better with "abs").
    """
    n = len(maps) + int(show_image)
    if n == 0:
        raise ValueError("Nothing to show: give at least one map.")
    fig = Figure(figsize=(panel_size * n, panel_size + (0.4 if title else 0.2)))
    axes = fig.subplots(1, n, squeeze=False)[0]
    if show_image:
        img = _image_2d(image)
        axes[0].imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[0].set_title("image", fontsize=9)
        axes[0].set_axis_off()
    for ax, (name, m) in zip(axes[int(show_image) :], maps.items()):
        overlay(image, m, ax=ax, cmap=cmap, alpha=alpha, title=name, normalize=normalize)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def slice_grid(
    volume: Any,
    attribution_map: Any | None = None,
    *,
    n_slices: int = 8,
    axis: int = 0,
    n_cols: int = 4,
    cmap: str = "jet",
    alpha: float = 0.5,
    normalize: str | None = "minmax",
    title: str | None = None,
    panel_size: float = 2.2,
) -> Figure:
    """Evenly spaced slices of a 3D volume, each with its attribution overlaid.

    Parameters
    ----------
    volume : array or tensor
        ``D x H x W`` or ``1 x D x H x W``.
    attribution_map : array, tensor or Attribution, optional
        ``D x H x W`` map; normalised over the whole volume (so slices are comparable).
    n_slices : int, default 8
    axis : int, default 0
        Spatial axis to slice along (0 = D, 1 = H, 2 = W).
    """
    vol = _to_numpy(volume)
    while vol.ndim > 3 and vol.shape[0] == 1:
        vol = vol[0]
    if vol.ndim != 3:
        raise ValueError(f"Expected a D x H x W volume, got shape {vol.shape}.")
    heat = None
    if attribution_map is not None:
        if isinstance(attribution_map, Attribution):
            attribution_map = attribution_map.maps[0]
        heat = np.squeeze(_to_numpy(attribution_map))
        if heat.shape != vol.shape:
            raise ValueError(f"Map shape {heat.shape} does not match volume {vol.shape}.")
        heat = _normalize(heat, normalize)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}.")
    depth = vol.shape[axis]
    idx = np.unique(np.linspace(0, depth - 1, num=min(n_slices, depth)).round().astype(int))
    n_cols = max(1, min(n_cols, len(idx)))
    n_rows = int(np.ceil(len(idx) / n_cols))
    fig = Figure(figsize=(panel_size * n_cols, panel_size * n_rows + (0.4 if title else 0)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    lo, hi = float(vol.min()), float(vol.max())
    for ax, i in zip(axes, idx):
        ax.imshow(np.take(vol, i, axis=axis), cmap="gray", vmin=lo, vmax=hi)
        if heat is not None:
            kwargs = {"vmin": 0.0, "vmax": 1.0} if normalize else {}
            ax.imshow(np.take(heat, i, axis=axis), cmap=cmap, alpha=alpha, **kwargs)
        ax.set_title(f"slice {i}", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
