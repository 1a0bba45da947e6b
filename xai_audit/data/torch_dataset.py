"""A :class:`torch.utils.data.Dataset` view of a :class:`~xai_audit.data.Manifest`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from .manifest import Manifest

__all__ = ["ImageDataset"]


class ImageDataset(Dataset):
    """Items of a manifest as dicts of tensors, ready for the default DataLoader collate.

    Parameters
    ----------
    manifest : Manifest
        Rows to serve, in manifest order.
    preprocess : callable, optional
        Applied to the image tensor (``C x ...`` float32) of every item, e.g. resizing or
        normalisation. Masks are not passed through it.
    with_masks : bool, default False
        Add ``mask`` (uint8 tensor; all zeros for rows without a mask) and ``has_mask``.

    Notes
    -----
    Each item is ``{"image": float32 tensor, "index": int, "label": float32 tensor (L,)}``
    plus ``mask``/``has_mask`` when requested. ``index`` is the manifest row, so batches map
    back to cases.
    """

    def __init__(
        self,
        manifest: Manifest,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        with_masks: bool = False,
    ) -> None:
        self.manifest = manifest
        self.preprocess = preprocess
        self.with_masks = with_masks
        self._labels = torch.from_numpy(manifest.labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict[str, object]:
        index = int(index)
        array = self.manifest.load_image(index)
        # Copy: in-memory manifests hand out views of their store, which must stay unchanged.
        image = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        spatial = tuple(image.shape[1:])
        if self.preprocess is not None:
            image = self.preprocess(image)
        item: dict[str, object] = {"image": image, "index": index, "label": self._labels[index]}
        if self.with_masks:
            mask = self.manifest.load_mask(index)
            item["has_mask"] = mask is not None
            if mask is None:
                mask = np.zeros(spatial, dtype=np.uint8)
            item["mask"] = torch.from_numpy(np.array(mask, dtype=np.uint8, copy=True))
        return item
