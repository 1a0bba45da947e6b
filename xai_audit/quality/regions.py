"""Image regions: border bands, corner squares, boxes and user masks turned into masks.

Shortcut detection asks where attribution concentrates for one subgroup and not the
others. By default (``"auto"``) nothing is named in advance: the whole image is searched in a
grid of patches (see :mod:`xai_audit.quality.shortcut_discovery`). A region can instead be
named (:data:`REGION_CHOICES`): ``"corners"`` (four squares of 15 % of the side, where
markers sit; the synthetic data's 10 px marker 4 px from the edge at 128 px lies inside the
19 px corner square), ``"border"`` (a band of 8 % of each side, or any width given as a
number), ``"border_corners"`` (their union, about 36 % of a 2D image), a box
``(x0, y0, x1, y1)`` in pixels, or a boolean mask ``H x W`` (shared) / ``N x H x W`` (one per
image), also as the path of a ``.npy`` file. :func:`check_region` validates such a value and
:func:`region_mask` turns it into a mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
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
    """The union of :func:`border_mask` and :func:`corner_mask` (``"border_corners"``)."""
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
    raise ValueError(
        f"Unknown region {name!r}; choose from {list(REGION_CHOICES)}, a border width (a number "
        "in (0, 0.5)), a box (x0, y0, x1, y1) in pixels or a boolean mask."
    )


#: Every region name :func:`check_region` accepts (``"auto"``: search the whole image).
REGION_CHOICES = ("auto", "corners", "border", "border_corners")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def load_region(region: Any) -> Any:
    """The region value with a ``.npy`` path replaced by the array it holds."""
    if isinstance(region, (str, Path)) and str(region).lower().endswith(".npy"):
        return np.load(str(region), allow_pickle=False)
    return region


def check_region(
    region: Any,
    *,
    border: Any = BORDER_FRACTION,
    corner: Any = CORNER_FRACTION,
    image_shape: Sequence[int] | None = None,
    n_images: int | None = None,
    where: str = "quality.shortcut_region",
) -> list[str]:
    """Problems with a shortcut-region setting (empty when it is valid).

    Parameters
    ----------
    region : str, number, box or array
        ``"auto"``, ``"corners"``, ``"border"``, ``"border_corners"``, a border width in
        (0, 0.5), a box ``(x0, y0, x1, y1)`` in pixels (max exclusive), a boolean mask
        ``H x W`` or ``N x H x W``, or the path of a ``.npy`` file holding such a mask.
    border, corner : float
        Widths of the named regions as fractions of the side, in (0, 0.5).
    image_shape : (H, W) or (D, H, W), optional
        When known, boxes and masks are checked against it.
    n_images : int, optional
        When known, a per-image mask must have this many masks.
    where : str
        Name of the setting in the messages.
    """
    problems = []
    for key, v in (("shortcut_border", border), ("shortcut_corner", corner)):
        if not _is_number(v) or not 0.0 < float(v) < 0.5:
            problems.append(
                f"quality.{key} must be a fraction of the image side in (0, 0.5), got {v!r}"
            )
    hint = (
        f"use one of {list(REGION_CHOICES)}, a border width in (0, 0.5), a box "
        "[x0, y0, x1, y1] in pixels, a boolean mask H x W or N x H x W, or a .npy file"
    )
    hw = tuple(int(s) for s in image_shape[-2:]) if image_shape is not None else None
    if isinstance(region, (str, Path)):
        text = str(region)
        if text.lower().endswith(".npy"):
            if not Path(text).is_file():
                return problems + [f"{where}: mask file not found: {text!r}"]
            try:
                region = np.load(text, allow_pickle=False)
            except (OSError, ValueError) as exc:
                return problems + [f"{where}: cannot read {text!r} as a numpy mask: {exc}"]
        elif text not in REGION_CHOICES:
            return problems + [f"{where} {text!r} is unknown; {hint}"]
        else:
            return problems
    if _is_number(region):
        if not 0.0 < float(region) < 0.5:
            problems.append(
                f"{where}: a border width must be a fraction of the side in (0, 0.5), "
                f"got {region!r}"
            )
        return problems
    if isinstance(region, (list, tuple)):
        if len(region) != 4 or not all(_is_number(v) for v in region):
            return problems + [f"{where}: a box must be 4 numbers [x0, y0, x1, y1]; {hint}"]
        x0, y0, x1, y1 = (float(v) for v in region)
        if min(x0, y0) < 0 or x1 <= x0 or y1 <= y0:
            problems.append(
                f"{where}: box {list(region)} must have 0 <= x0 < x1 and 0 <= y0 < y1 "
                "(pixels, max exclusive)"
            )
        elif hw is not None and (x0 >= hw[1] or y0 >= hw[0]):
            problems.append(f"{where}: box {list(region)} lies outside the {hw[0]}x{hw[1]} images")
        return problems
    if hasattr(region, "detach"):  # a torch tensor
        region = region.detach().cpu().numpy()
    if not isinstance(region, np.ndarray):
        return problems + [f"{where}: cannot use a {type(region).__name__}; {hint}"]
    arr = region
    if arr.ndim not in (2, 3) or arr.size == 0:
        return problems + [
            f"{where}: a mask must be H x W (shared) or N x H x W (one per image); got shape "
            f"{arr.shape}"
        ]
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            return problems + [f"{where}: a mask must be boolean (or 0/1); got dtype {arr.dtype}"]
    if not arr.any():
        problems.append(f"{where}: the mask is empty (no pixel set)")
    elif arr.all():
        problems.append(f"{where}: the mask covers the whole image; nothing to compare it with")
    if hw is not None and tuple(arr.shape[-2:]) != hw:
        problems.append(f"{where}: mask of shape {arr.shape} does not match the images ({hw})")
    if arr.ndim == 3 and n_images is not None and len(arr) != n_images:
        if image_shape is None or len(image_shape) != 3 or tuple(arr.shape) != tuple(image_shape):
            problems.append(
                f"{where}: a per-image mask needs one mask per image ({n_images}); got {len(arr)}"
            )
    return problems


def region_mask(
    region: Any,
    shape: Sequence[int],
    *,
    border: float = BORDER_FRACTION,
    corner: float = CORNER_FRACTION,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The boolean mask of a (validated) region for images of ``shape``.

    Returns ``H x W`` (or ``D x H x W``) for a shared region, ``len(rows) x ...`` for a
    per-image mask (``rows``: the images' manifest rows). ``"auto"`` has no fixed mask and
    raises ``ValueError``.
    """
    shape = _check_shape(shape)
    region = load_region(region)
    if isinstance(region, str):
        if region == "auto":
            raise ValueError("region 'auto' is searched, not fixed; it has no mask.")
        return named_region(region, shape, border=border, corner=corner)
    if _is_number(region):
        return border_mask(shape, float(region))
    if isinstance(region, (list, tuple)):
        plane = boxes_to_masks([tuple(region)], shape[-2:])[0]
        return np.broadcast_to(plane, shape).copy()
    arr = np.asarray(region)
    arr = arr.astype(bool) if arr.dtype != bool else arr
    if arr.shape == shape or (arr.ndim == 2 and arr.shape == shape[-2:]):
        return np.broadcast_to(arr, shape).copy() if arr.shape != shape else arr
    if rows is None:
        raise ValueError(f"a per-image mask {arr.shape} needs the images' rows")
    picked = arr[np.asarray(rows, dtype=np.int64)]
    if picked.ndim == len(shape):  # one in-plane mask per volume: the same in every slice
        picked = np.broadcast_to(picked[:, None], (len(picked), *shape)).copy()
    return picked


def region_key(region: Any) -> Any:
    """A hashable, JSON-able stand-in for a region (masks by the SHA-256 of their bytes)."""
    import hashlib

    region = load_region(region)
    if hasattr(region, "detach"):
        region = region.detach().cpu().numpy()
    if isinstance(region, np.ndarray):
        arr = np.ascontiguousarray(region.astype(bool))
        digest = hashlib.sha256(arr.tobytes()).hexdigest()[:16]
        return f"mask{list(arr.shape)}:{digest}"
    if isinstance(region, (list, tuple)):
        return [float(v) for v in region]
    if _is_number(region):
        return float(region)
    return str(region)


def describe_region(
    region: Any, border: float = BORDER_FRACTION, corner: float = CORNER_FRACTION
) -> str:
    """Plain words for a region setting (used in messages and the report)."""
    region = load_region(region)
    if isinstance(region, str):
        if region == "auto":
            return "the whole image (searched patch by patch)"
        if region == "border":
            return f"the image border (a band of {border:.0%} of each side)"
        if region == "corners":
            return f"the image corners (squares of {corner:.0%} of the side)"
        if region == "border_corners":
            return f"the image border ({border:.0%}) and corners ({corner:.0%})"
        return REGION_NAMES.get(region, region)
    if _is_number(region):
        return f"the image border (a band of {float(region):.0%} of each side)"
    if isinstance(region, (list, tuple)):
        x0, y0, x1, y1 = (int(round(float(v))) for v in region)
        return f"the box x {x0}-{x1}, y {y0}-{y1} (pixels)"
    arr = np.asarray(region)
    kind = "one mask per image" if arr.ndim == 3 else "a shared mask"
    return f"a user-given region ({kind}, {arr.astype(bool).mean():.0%} of the image)"


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
