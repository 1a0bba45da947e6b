"""Input checks shared by the quality metrics: attribution maps, masks and images."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_maps(
    maps: Any, *, spatial_shape: tuple[int, ...] | None = None, name: str = "maps"
) -> np.ndarray:
    """Attribution maps as a float64 array ``N x H x W`` (or ``N x D x H x W``).

    Accepts numpy arrays, torch tensors and objects with a ``.maps`` attribute (an
    ``xai_audit.explain.Attribution``). A singleton channel axis (``N x 1 x H x W``) is
    dropped when ``spatial_shape`` says the images are 2D (or 3D with ``N x 1 x D x H x W``).
    """
    if hasattr(maps, "maps") and not isinstance(maps, (np.ndarray, torch.Tensor)):
        maps = maps.maps
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    arr = np.asarray(maps, dtype=np.float64)
    if spatial_shape is not None and arr.ndim == len(spatial_shape) + 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be N x H x W (2D) or N x D x H x W (3D); got shape {arr.shape}."
        )
    if spatial_shape is not None and tuple(arr.shape[1:]) != tuple(spatial_shape):
        raise ValueError(
            f"{name} have spatial shape {tuple(arr.shape[1:])} but the images are "
            f"{tuple(spatial_shape)}; resize the maps to the image size first."
        )
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1))
        raise ValueError(
            f"{name} contain NaN or infinite values (images {bad[:5].tolist()}); "
            "recompute or drop them."
        )
    return arr


def as_masks(masks: Any, maps_shape: tuple[int, ...], *, name: str = "masks") -> np.ndarray:
    """Boolean masks broadcast to ``maps_shape`` (``N x H x W``; one ``H x W`` mask is shared).

    Raises
    ------
    ValueError
        If the masks' shape matches neither one image nor all images.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    arr = np.asarray(masks)
    spatial = tuple(maps_shape[1:])
    if arr.ndim == len(spatial) + 2 and arr.shape[1] == 1:  # N x 1 x H x W
        arr = arr[:, 0]
    if tuple(arr.shape) == spatial:
        arr = np.broadcast_to(arr, maps_shape)
    if tuple(arr.shape) != tuple(maps_shape):
        raise ValueError(
            f"{name} have shape {tuple(np.asarray(masks).shape)}; expected one mask per image "
            f"{tuple(maps_shape)} or one shared mask {spatial} (same size as the maps)."
        )
    if arr.dtype != bool:
        if not np.isfinite(arr.astype(np.float64)).all():
            raise ValueError(f"{name} contain NaN or infinite values.")
        arr = arr > 0.5 if np.issubdtype(arr.dtype, np.floating) else arr != 0
    return arr


def as_image_tensor(images: Any) -> torch.Tensor:
    """Images as a float32 CPU tensor ``N x C x H x W`` (or ``N x C x D x H x W``)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a tensor or array N x C x H x W; got {type(images).__name__}."
        )
    if images.ndim not in (4, 5):
        raise ValueError(
            f"images must be N x C x H x W (2D) or N x C x D x H x W (3D); got shape "
            f"{tuple(images.shape)}."
        )
    return images.detach().to("cpu", dtype=torch.float32)


def as_adapter(model: Any) -> Any:
    """A :class:`~xai_audit.model.ModelAdapter` (a bare ``nn.Module`` is wrapped on the CPU)."""
    from xai_audit.model import ModelAdapter

    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, torch.nn.Module):
        return ModelAdapter(model, device="cpu")
    raise TypeError(f"model must be a ModelAdapter or torch.nn.Module, got {type(model).__name__}.")


def resolve_targets(
    adapter: Any, images: torch.Tensor, targets: Any, maps: Any = None
) -> np.ndarray:
    """Target class per image: given, else the attribution's own targets, else the prediction."""
    n = images.shape[0]
    if targets is None and maps is not None and hasattr(maps, "targets"):
        targets = maps.targets
    if targets is None:
        proba = adapter.predict_proba(images)
        if proba.shape[1] == 1:
            return np.zeros(n, dtype=np.int64)
        return proba.argmax(axis=1).astype(np.int64)
    if isinstance(targets, (int, np.integer, str)):
        index = adapter.class_index(targets) if isinstance(targets, str) else int(targets)
        return np.full(n, index, dtype=np.int64)
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    out = np.asarray(
        [adapter.class_index(t) if isinstance(t, str) else int(t) for t in np.asarray(targets)],
        dtype=np.int64,
    )
    if out.shape != (n,):
        raise ValueError(f"targets must have one entry per image ({n}); got {out.shape}.")
    return out
