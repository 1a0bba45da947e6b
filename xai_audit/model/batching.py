"""Turning the image containers users hold into batches of float tensors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch


def _as_tensor(batch: Any) -> torch.Tensor:
    """The image tensor inside one batch (tensor, array, dict with 'image', or tuple)."""
    if isinstance(batch, dict):
        if "image" not in batch:
            raise ValueError(
                f"A batch given as a dict needs an 'image' key; got keys {sorted(batch)}."
            )
        batch = batch["image"]
    elif isinstance(batch, (tuple, list)) and batch and not np.isscalar(batch[0]):
        first = batch[0]
        if (
            isinstance(first, (torch.Tensor, np.ndarray))
            and len(batch) <= 4
            and (not isinstance(first, np.ndarray) or first.ndim >= 3)
        ):
            # (images, labels, ...) tuples as yielded by most DataLoaders.
            batch = first
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            f"Cannot read images from a {type(batch).__name__}; pass a tensor or array of shape "
            "N x C x H x W (or N x C x D x H x W), a Manifest, a torch Dataset or a DataLoader."
        )
    return batch.float() if not torch.is_floating_point(batch) else batch


def n_items(images: Any) -> int | None:
    """Number of images in a container, or None when it cannot be known up front."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return int(images.shape[0])
    if isinstance(images, torch.utils.data.DataLoader):
        try:
            return len(images.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    try:
        return len(images)
    except TypeError:
        return None


def iter_image_batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield float tensors of at most ``batch_size`` images, in order.

    Accepts tensors/arrays (first axis = images), a sequence of per-image arrays, an object
    with ``iter_batches(batch_size)`` (an :class:`xai_audit.data.Manifest`), a torch
    ``Dataset`` or a ``DataLoader`` (batched as it is).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if isinstance(images, (torch.Tensor, np.ndarray)):
        for start in range(0, images.shape[0], batch_size):
            yield _as_tensor(images[start : start + batch_size])
        return
    if hasattr(images, "iter_batches"):
        for _indices, batch in images.iter_batches(batch_size):
            yield _as_tensor(batch)
        return
    if isinstance(images, torch.utils.data.DataLoader):
        for batch in images:
            yield _as_tensor(batch)
        return
    if isinstance(images, torch.utils.data.Dataset) or (
        isinstance(images, Sequence) and not isinstance(images, (str, bytes))
    ):
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False)
        for batch in loader:
            yield _as_tensor(batch)
        return
    raise TypeError(
        f"Cannot iterate images from a {type(images).__name__}; pass a tensor or array "
        "(N x C x ...), a Manifest, a torch Dataset or a DataLoader."
    )
