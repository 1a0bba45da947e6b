"""Image regions: border bands, corner squares and boxes turned into masks.

Shortcut detection asks how much attribution falls where nothing clinical should be. By
default that is a border band of 8 % of each side plus the four corner squares of 15 % of the
side: scanner text, laterality tokens, rulers and site markers sit there (the synthetic data's
10 px marker 4 px from the edge at 128 px lies inside the 19 px corner square), while lesions
and anatomy sit in the middle. Together they cover about 36 % of a 2D image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Default width of the border band, as a fraction of each side.
BORDER_FRACTION = 0.08
#: Default side of each corner square, as a fraction of each side.
CORNER_FRACTION = 0.15


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) or (D, H, W) with positive sides; got {shape}.")
    return shape


def _band(side: int, fraction: float) -> int:
    if not 0.0 <= fraction <= 0.5:
        raise ValueError(f"Region fractions must lie in [0, 0.5]; got {fraction}.")
    return int(round(side * fraction)) if fraction > 0 else 0


def border_mask(shape: Sequence[int], fraction: float = BORDER_FRACTION) -> np.ndarray:
    """A band of ``fraction`` of each side along every edge of the (last two) image axes.

    Parameters
    ----------
    shape : (H, W) or (D, H, W)
        Image shape; for volumes the band is drawn in every slice (in-plane edges).
    fraction : float, default 0.08
        Band width as a fraction of the side (at least one pixel when positive).

    Returns
    -------
    numpy.ndarray of bool
    """
    shape = _check_shape(shape)
    h, w = shape[-2:]
    bh = max(1, _band(h, fraction)) if fraction > 0 else 0
    bw = max(1, _band(w, fraction)) if fraction > 0 else 0
    plane = np.zeros((h, w), dtype=bool)
    if bh:
        plane[:bh] = plane[-bh:] = True
    if bw:
        plane[:, :bw] = plane[:, -bw:] = True
    return np.broadcast_to(plane, shape).copy()


def corner_mask(
    shape: Sequence[int],
    fraction: float = CORNER_FRACTION,
    corners: Sequence[str] = ("top-left", "top-right", "bottom-left", "bottom-right"),
) -> np.ndarray:
    """Squares of ``fraction`` of each side in the chosen in-plane corners.

    Parameters
    ----------
    shape : (H, W) or (D, H, W)
    fraction : float, default 0.15
    corners : sequence of {"top-left", "top-right", "bottom-left", "bottom-right"}
    """
    shape = _check_shape(shape)
    h, w = shape[-2:]
    ch, cw = max(1, _band(h, fraction)), max(1, _band(w, fraction))
    plane = np.zeros((h, w), dtype=bool)
    slices = {
        "top-left": (slice(0, ch), slice(0, cw)),
        "top-right": (slice(0, ch), slice(w - cw, w)),
        "bottom-left": (slice(h - ch, h), slice(0, cw)),
        "bottom-right": (slice(h - ch, h), slice(w - cw, w)),
    }
    for corner in corners:
        if corner not in slices:
            raise ValueError(f"Unknown corner {corner!r}; choose from {sorted(slices)}.")
        plane[slices[corner]] = True
    return np.broadcast_to(plane, shape).copy()


def border_corners_mask(
    shape: Sequence[int],
    border: float = BORDER_FRACTION,
    corner: float = CORNER_FRACTION,
) -> np.ndarray:
    """The default shortcut region: the union of :func:`border_mask` and :func:`corner_mask`."""
    return border_mask(shape, border) | corner_mask(shape, corner)


REGION_NAMES = {
    "border_corners": "the image border and corners",
    "border": "the image border",
    "corners": "the image corners",
}


def named_region(name: str, shape: Sequence[int], **kwargs: Any) -> np.ndarray:
    """Mask of a named region: ``"border_corners"``, ``"border"`` or ``"corners"``."""
    border = kwargs.get("border", BORDER_FRACTION)
    corner = kwargs.get("corner", CORNER_FRACTION)
    if name == "border_corners":
        return border_corners_mask(shape, border, corner)
    if name == "border":
        return border_mask(shape, border)
    if name == "corners":
        return corner_mask(shape, corner)
    raise ValueError(f"Unknown region {name!r}; choose from {sorted(REGION_NAMES)} or pass a mask.")


def boxes_to_masks(boxes: Sequence[Any], shape: Sequence[int]) -> np.ndarray:
    """Turn bounding boxes into boolean masks, one per image.

    Parameters
    ----------
    boxes : sequence
        One entry per image: a box ``(x_min, y_min, x_max, y_max)`` in pixel coordinates
        (column = x, row = y; the max is exclusive, as in slicing), a list of such boxes
        (their union), or ``None`` / an empty list (an empty mask). Boxes are clipped to
        the image; fractional coordinates are rounded outwards.
    shape : (H, W)
        Image size.

    Returns
    -------
    numpy.ndarray of bool, ``N x H x W``

    Examples
    --------
    >>> boxes_to_masks([(1, 0, 3, 2)], (3, 4)).astype(int)[0]
    array([[0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    """
    shape = _check_shape(shape)
    if len(shape) != 2:
        raise ValueError(f"boxes_to_masks draws 2D boxes; got shape {shape}.")
    h, w = shape
    out = np.zeros((len(boxes), h, w), dtype=bool)
    for i, entry in enumerate(boxes):
        if entry is None:
            continue
        arr = np.asarray(entry, dtype=np.float64)
        if arr.size == 0:
            continue
        arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ValueError(
                f"Box entry {i} must be (x_min, y_min, x_max, y_max) or a list of them; got "
                f"shape {np.asarray(entry).shape}."
            )
        for x0, y0, x1, y1 in arr:
            if x1 < x0 or y1 < y0:
                raise ValueError(f"Box {(x0, y0, x1, y1)} of image {i} has max < min.")
            c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
            c1, r1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
            out[i, r0:r1, c0:c1] = True
    return out
