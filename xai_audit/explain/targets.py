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
            self.per_item = np.array(
                [adapter.class_index(t if isinstance(t, str) else int(t)) for t in self.raw],
                dtype=np.int64,
            )
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
