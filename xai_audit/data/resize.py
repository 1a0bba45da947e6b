"""Bring images of different sizes to one size when they are loaded (``image_size=``).

Three modes, all centred, all with torch's interpolation (bilinear / trilinear with
anti-aliasing in 2D for images, nearest for masks, so that masks stay 0/1):

* ``"resize"``: stretch to the size (the aspect ratio may change);
* ``"pad"``: scale so that the whole image fits, keep the aspect ratio, pad with zeros
  (letterbox);
* ``"crop"``: scale so that the image covers the size, keep the aspect ratio, crop the
  overflow (centre crop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

ResizeMode = Literal["resize", "pad", "crop"]
RESIZE_MODES: tuple[str, ...] = ("resize", "pad", "crop")

__all__ = ["RESIZE_MODES", "ResizeMode", "check_image_size", "fit_image", "fitted_shape"]


def check_image_size(image_size: object, resize: object) -> tuple[int, ...] | None:
    """Validate ``image_size`` / ``resize``; returns the size as a tuple (or None).

    Raises
    ------
    ValueError
        With what is wrong and an example of a valid value.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}.")
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        raise ValueError(
            f"image_size must give every spatial axis, e.g. (224, 224) or (64, 128, 128); got "
            f"{image_size!r}."
        )
    try:
        size = tuple(int(s) for s in image_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(
            f"image_size must be a sequence of 2 or 3 positive integers, got {image_size!r}."
        ) from None
    if len(size) not in (2, 3) or any(s < 1 for s in size):
        raise ValueError(
            f"image_size must be 2 (H, W) or 3 (D, H, W) positive integers, got {image_size!r}."
        )
    return size


def fitted_shape(shape: Sequence[int], image_size: Sequence[int] | None) -> tuple[int, ...]:
    """The shape an image of ``shape`` (``C x *spatial``) has after :func:`fit_image`."""
    shape = tuple(int(s) for s in shape)
    if image_size is None or len(shape) - 1 != len(image_size):
        return shape  # a dimensionality mismatch is reported by the shape check
    return (shape[0], *(int(s) for s in image_size))


def _interpolate(x: torch.Tensor, size: tuple[int, ...], mask: bool) -> torch.Tensor:
    import torch.nn.functional as F  # lazy: the data package loads without torch

    if tuple(x.shape[2:]) == size:
        return x
    if mask:
        return F.interpolate(x, size=size, mode="nearest-exact")
    if len(size) == 2:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def _centre_pad_or_crop(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Pad (zeros) or crop every spatial axis of ``1 x C x *s`` to ``size``, centred."""
    import torch.nn.functional as F

    for axis, want in enumerate(size, start=2):
        have = x.shape[axis]
        if have > want:
            start = (have - want) // 2
            x = x.narrow(axis, start, want)
        elif have < want:
            before = (want - have) // 2
            pad = [0, 0] * (x.ndim - 2)
            # F.pad lists the last axis first.
            k = 2 * (x.ndim - 1 - axis)
            pad[k], pad[k + 1] = before, want - have - before
            x = F.pad(x, pad)
    return x


def fit_image(
    array: np.ndarray,
    image_size: Sequence[int],
    mode: ResizeMode = "resize",
    *,
    mask: bool = False,
) -> np.ndarray:
    """Bring one image ``C x *spatial`` (or a mask ``*spatial``) to ``image_size``.

    Parameters
    ----------
    array : numpy.ndarray
        ``C x H x W`` / ``C x D x H x W`` image, or with ``mask=True`` an ``H x W`` /
        ``D x H x W`` mask.
    image_size : sequence of int
        Target spatial size, ``(H, W)`` or ``(D, H, W)``.
    mode : {"resize", "pad", "crop"}
        See the module docstring.
    mask : bool, default False
        Nearest-neighbour interpolation and no channel axis.

    Returns
    -------
    numpy.ndarray
        float32 for images, the mask's dtype for masks.
    """
    size = tuple(int(s) for s in image_size)
    arr = np.asarray(array)
    spatial = arr.shape if mask else arr.shape[1:]
    if len(spatial) != len(size):
        raise ValueError(
            f"image_size {size} has {len(size)} axes but the image has spatial shape "
            f"{tuple(spatial)}; give (H, W) for 2D images or (D, H, W) for volumes."
        )
    if tuple(spatial) == size:
        return arr if mask else arr.astype(np.float32, copy=False)
    import torch

    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    x = x[None, None] if mask else x[None]
    if mode == "resize":
        out = _interpolate(x, size, mask)
    else:
        ratios = [want / have for want, have in zip(size, spatial)]
        scale = min(ratios) if mode == "pad" else max(ratios)
        scaled = tuple(max(1, round(have * scale)) for have in spatial)
        out = _centre_pad_or_crop(_interpolate(x, scaled, mask), size)
    result = out[0, 0] if mask else out[0]
    arr_out = result.numpy()
    return arr_out.astype(arr.dtype, copy=False) if mask else arr_out.astype(np.float32)
