"""ExplorerState: the explanation explorer's logic, without any widget.

Filters (subgroup values, outcomes) select a list of cases; the selection (case, methods,
target class, colormap, opacity, slice) determines one rendered strip: the image followed
by one overlay per method. Renders are cached per full selection, so going back to a case
or toggling a setting back costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..fairness.inputs import group_keys
from ._clinical import with_colorbar
from ._render import (
    COLORMAPS,
    TITLE_HEIGHT,
    contour_rgb,
    gray_rgb,
    image_slice,
    map_slice,
    overlay_rgb,
    panel_strip,
    png_bytes,
)
from ._source import _LRU, OUTCOMES, CaseSource

ALL = None  # filter value meaning "no restriction"


@dataclass(frozen=True)
class Rendered:
    """One rendered selection: PNG bytes and what is shown."""

    png: bytes
    case_id: str
    methods: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)


class ExplorerState:
    """Filters, selection and rendering of the explanation explorer.

    Parameters
    ----------
    source : CaseSource
    methods : sequence of str, optional
        Methods shown initially (default: the first of ``source.methods``).
    cmap : str, default "jet"
    alpha : float, default 0.5
        Overlay opacity in [0, 1].
    size : int, default 256
        Panel height in pixels.
    show_mask : bool, default True
        Outline the annotated lesion, when masks are known.
    """

    def __init__(
        self,
        source: CaseSource,
        *,
        methods: Sequence[str] | None = None,
        cmap: str = "jet",
        alpha: float = 0.5,
        size: int = 256,
        show_mask: bool = True,
    ) -> None:
        self.source = source
        self.filters: dict[str, Any] = {a: ALL for a in source.attributes}
        self.outcomes: set[str] = set()
        self.methods: list[str] = list(methods or source.methods[:1])
        self._check_methods(self.methods)
        self.target: int = source.positive_index
        self.cmap = cmap
        self.alpha = float(alpha)
        self.size = int(size)
        self.show_mask = bool(show_mask)
        self.slice_index: int | None = None
        self._renders = _LRU(256)
        self._cases: list[str] = []
        self.case_id: str | None = None
        self._refilter()

    # ------------------------------------------------------------------ filters
    def _check_methods(self, methods: Iterable[str]) -> None:
        unknown = [m for m in methods if m not in self.source.methods]
        if unknown:
            raise ValueError(f"Unknown method(s) {unknown}; offered: {self.source.methods}.")

    def levels(self, attribute: str) -> list[str]:
        """Values of an attribute, sorted (missing values shown as "missing")."""
        col = self.source.table[attribute]
        return sorted(set(group_keys(col.dropna()).tolist())) + (
            ["missing"] if col.isna().any() else []
        )

    def set_filter(self, attribute: str, value: Any) -> None:
        """Keep cases whose ``attribute`` equals ``value`` (None: no restriction)."""
        if attribute not in self.filters:
            raise KeyError(f"Unknown attribute {attribute!r}; attributes: {list(self.filters)}.")
        self.filters[attribute] = None if value is None else str(value)
        self._refilter()

    def set_group(self, group: Mapping[str, Any]) -> None:
        """Replace all subgroup filters at once, e.g. ``{"sex": "F", "age_group": "65+"}``."""
        for a in self.filters:
            self.filters[a] = ALL
        for a, v in group.items():
            if a not in self.filters:
                raise KeyError(f"Unknown attribute {a!r}; attributes: {list(self.filters)}.")
            self.filters[a] = None if v is None else str(v)
        self._refilter()

    def set_outcomes(self, outcomes: Iterable[str]) -> None:
        """Keep cases with these outcomes (TP/FP/FN/TN); empty: all cases."""
        chosen = {str(o).upper() for o in outcomes}
        bad = chosen - set(OUTCOMES)
        if bad:
            raise ValueError(f"Unknown outcome(s) {sorted(bad)}; use {OUTCOMES}.")
        self.outcomes = chosen
        self._refilter()

    def mask(self) -> np.ndarray:
        """Boolean row mask of the cases passing the filters."""
        table = self.source.table
        keep = np.ones(len(table), dtype=bool)
        for a, v in self.filters.items():
            if v is None:
                continue
            col = table[a]
            keep &= col.isna().to_numpy() if v == "missing" else group_keys(col) == v
        if self.outcomes:
            keep &= table["outcome"].isin(self.outcomes).to_numpy()
        return keep

    def _refilter(self) -> None:
        ids = self.source.table["case_id"].to_numpy()[self.mask()]
        self._cases = [str(c) for c in ids]
        if self.case_id not in self._cases:
            self.case_id = self._cases[0] if self._cases else None

    @property
    def cases(self) -> list[str]:
        """Case ids passing the filters, in data order."""
        return list(self._cases)

    def case_table(self) -> pd.DataFrame:
        """The filtered cases' rows (id, attributes, label, score, outcome)."""
        cols = ["case_id", *self.source.attributes, "label", "score", "outcome"]
        return self.source.table.loc[self.mask(), cols].reset_index(drop=True)

    def counts(self) -> dict[str, int]:
        """Number of filtered cases per outcome (ignoring the outcome filter itself)."""
        saved, self.outcomes = self.outcomes, set()
        try:
            sub = self.source.table.loc[self.mask(), "outcome"]
        finally:
            self.outcomes = saved
        return {o: int((sub == o).sum()) for o in OUTCOMES}

    # ------------------------------------------------------------------ selection
    def select_case(self, case_id: str) -> None:
        """Show one case (it need not pass the filters, e.g. when opened from elsewhere)."""
        self.source.row(case_id)  # raises for an unknown id
        self.case_id = str(case_id)

    def step(self, offset: int) -> None:
        """Move ``offset`` cases forward/backward in the filtered list (wrapping around)."""
        if not self._cases:
            return
        i = self._cases.index(self.case_id) if self.case_id in self._cases else -1
        self.case_id = self._cases[(i + offset) % len(self._cases)]

    def set_methods(self, methods: Sequence[str]) -> None:
        """Methods shown side by side (at least one)."""
        methods = list(dict.fromkeys(methods))
        if not methods:
            raise ValueError("Choose at least one explanation method.")
        self._check_methods(methods)
        self.methods = methods

    def set_target(self, target: int | str) -> None:
        """Class explained, by index or name."""
        names = self.source.class_names
        index = names.index(target) if isinstance(target, str) else int(target)
        if not 0 <= index < len(names):
            raise ValueError(f"Target {target!r} out of range; classes: {names}.")
        self.target = index

    def set_cmap(self, cmap: str) -> None:
        """Overlay colormap (any matplotlib name)."""
        from matplotlib import colormaps

        if cmap not in colormaps:
            raise ValueError(f"Unknown colormap {cmap!r}; e.g. {COLORMAPS}.")
        self.cmap = cmap

    def set_alpha(self, alpha: float) -> None:
        """Overlay opacity in [0, 1]."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
        self.alpha = float(alpha)

    @property
    def n_slices(self) -> int:
        """Slices of a volume (1 for 2D images)."""
        if self.case_id is None:
            return 1
        image = self.source.image(self.case_id)
        return int(image.shape[1]) if image.ndim == 4 else 1

    def set_slice(self, index: int) -> None:
        """Slice shown for 3D volumes."""
        n = self.n_slices
        if not 0 <= index < n:
            raise ValueError(f"Slice {index} out of range (0..{n - 1}).")
        self.slice_index = int(index)

    # ------------------------------------------------------------------ output
    def info(self, case_id: str | None = None) -> dict[str, Any]:
        """Case id, attributes, ground truth, prediction, probability and outcome."""
        cid = case_id or self.case_id
        if cid is None:
            return {}
        row = self.source.case(cid)
        names = self.source.class_names
        pos = self.source.positive_index
        label = row["label"]
        return {
            "case_id": cid,
            **{a: row[a] for a in self.source.attributes},
            "ground_truth": None
            if pd.isna(label)
            else (names[pos] if int(label) == 1 else _negative_name(names, pos)),
            "predicted": names[pos] if int(row["predicted"]) == 1 else _negative_name(names, pos),
            "probability": float(row["score"]),
            "target": names[self.target],
            "outcome": row["outcome"],
        }

    def key(self) -> tuple:
        """Everything that determines the rendered image."""
        return (
            self.case_id,
            tuple(self.methods),
            self.target,
            self.cmap,
            round(self.alpha, 3),
            self.slice_index,
            self.size,
            self.show_mask,
        )

    def render(self) -> Rendered | None:
        """The current case: image plus one overlay per method (cached). None if no case."""
        if self.case_id is None:
            return None
        return self._renders.get_or(self.key(), self._render)

    def _render(self) -> Rendered:
        cid = self.case_id
        assert cid is not None
        image = self.source.image(cid)
        plane = image_slice(image, self.slice_index)
        mask = self.source.mask(cid) if self.show_mask else None
        mask_plane = map_slice(mask, self.slice_index) if mask is not None else None
        panels = [contour_rgb(gray_rgb(plane), mask_plane)]
        titles = [f"{cid}"]
        target_name = self.source.class_names[self.target]
        for m in self.methods:
            attr = self.source.attribution(cid, m, self.target)
            panels.append(
                contour_rgb(
                    overlay_rgb(plane, map_slice(attr, self.slice_index), self.cmap, self.alpha),
                    mask_plane,
                )
            )
            titles.append(f"{m} ({target_name})")
        strip = panel_strip(panels, titles, size=self.size)
        # A colour bar says what the overlay colours mean (no evidence .. strongest evidence).
        png = png_bytes(with_colorbar(strip, self.cmap, TITLE_HEIGHT) if self.methods else strip)
        return Rendered(png=png, case_id=cid, methods=tuple(self.methods), info=self.info(cid))


def _negative_name(names: list[str], pos: int) -> str:
    return names[1 - pos] if len(names) == 2 else f"not {names[pos]}"
