"""Which output each explanation is about: predicted class, a fixed class, one per item, all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..model import ModelAdapter

TargetLike = Any  # None | int | str | sequence of int/str | "all"


@dataclass
class TargetSpec:
    """A parsed ``target=`` argument.

    Attributes
    ----------
    kind : {"predicted", "fixed", "per_item", "all"}
    fixed : int, for ``kind == "fixed"``
    per_item : numpy.ndarray of int64, for ``kind == "per_item"``
    """

    kind: str
    raw: Any = None
    fixed: int | None = None
    per_item: np.ndarray | None = None
    n_labels: int | None = None

    @classmethod
    def parse(cls, target: TargetLike) -> TargetSpec:
        """Classify the user's ``target`` argument (resolved later by :meth:`resolve`)."""
        if target is None:
            return cls("predicted")
        if isinstance(target, str):
            return cls("all") if target == "all" else cls("fixed", raw=target)
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            return cls("fixed", raw=int(target))
        if isinstance(target, torch.Tensor):
            target = target.detach().cpu().numpy()
        if isinstance(target, np.ndarray) and target.ndim == 0:
            return cls("fixed", raw=int(target))
        if isinstance(target, (Sequence, np.ndarray)):
            values = np.asarray(target)
            if values.dtype.kind in "iu":  # the usual case: indices, kept as one array
                return cls("per_item", raw=values.ravel())
            return cls("per_item", raw=list(np.asarray(target, dtype=object).ravel()))
        raise TypeError(
            "target must be None (predicted class), a class index or name, a sequence with one "
            f"target per image, or 'all'; got {type(target).__name__}."
        )

    def resolve(self, adapter: ModelAdapter, n_total: int | None) -> None:
        """Turn names into indices and check ranges (needs ``adapter.n_outputs``)."""
        if self.kind == "fixed":
            self.fixed = adapter.class_index(self.raw)
        elif self.kind == "per_item":
            if n_total is not None and len(self.raw) != n_total:
                raise ValueError(
                    f"target has {len(self.raw)} entries but {n_total} images were given; pass "
                    "one target per image (or a single int / class name for all)."
                )
            self.per_item = _per_item_indices(self.raw, adapter)
        elif self.kind == "all":
            self.n_labels = len(adapter.class_names)

    def for_batch(self, start: int, stop: int, device: torch.device) -> list[torch.Tensor | None]:
        """Targets for items ``start:stop``: one entry per map to compute (None = predicted)."""
        n = stop - start
        if self.kind == "predicted":
            return [None]
        if self.kind == "fixed":
            assert self.fixed is not None
            return [torch.full((n,), self.fixed, dtype=torch.long, device=device)]
        if self.kind == "per_item":
            assert self.per_item is not None
            if stop > len(self.per_item):
                raise ValueError(
                    f"target has {len(self.per_item)} entries but more images were given."
                )
            return [torch.as_tensor(self.per_item[start:stop], device=device)]
        assert self.n_labels is not None
        return [torch.full((n,), k, dtype=torch.long, device=device) for k in range(self.n_labels)]

    def check_count(self, n_seen: int) -> None:
        """After the last batch: a per-item sequence must match the number of images."""
        if self.kind == "per_item" and self.per_item is not None and n_seen != len(self.per_item):
            raise ValueError(
                f"target has {len(self.per_item)} entries but {n_seen} images were given."
            )


def _per_item_indices(raw: np.ndarray | list, adapter: ModelAdapter) -> np.ndarray:
    """One class index per item, range-checked; names looked up once per distinct value."""
    if isinstance(raw, np.ndarray):  # integer indices: checked in one pass
        indices = raw.astype(np.int64)
        outside = (indices < 0) | (indices >= len(adapter.class_names))
        if outside.any():
            adapter.class_index(int(indices[outside][0]))  # raises the out-of-range message
        return indices
    resolved: dict[tuple[bool, Any], int] = {}
    out = np.empty(len(raw), dtype=np.int64)
    for i, t in enumerate(raw):
        key = (True, t) if isinstance(t, str) else (False, int(t))
        if key not in resolved:
            resolved[key] = adapter.class_index(key[1])
        out[i] = resolved[key]
    return out
