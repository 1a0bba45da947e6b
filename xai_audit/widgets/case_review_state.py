"""CaseReviewState: one case for a clinician, without any widget.

Shows the prediction with its observed reliability on the data set ("calibrated
confidence"), two or three explanations side by side with plain-language captions, the
explanation-quality indicators of this very case, and the most similar cases by the model's
own features, with their ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._captions import confidence_caption, method_caption, quality_caption
from ._clinical import (
    closer_than,
    labelled_tiles,
    plain_quality_table,
    relative_distance,
    standardised_distance,
    tile_caption,
    with_colorbar,
)
from ._compat import deletion_fn, localisation_fn, shortcut_mass_fn
from ._render import (
    TITLE_HEIGHT,
    contour_rgb,
    gray_rgb,
    image_slice,
    map_slice,
    overlay_rgb,
    panel_strip,
    png_bytes,
)
from ._source import _LRU, CaseSource

N_BINS = 10


@dataclass(frozen=True)
class Confidence:
    """The score of a case and how often similar scores were right on the data set."""

    score: float
    class_name: str
    bin_low: float
    bin_high: float
    n_similar: int
    observed_rate: float
    caption: str


class CaseReviewState:
    """Everything the case review shows for the selected case.

    Parameters
    ----------
    source : CaseSource
    case_id : str, optional
        Default: the first case.
    methods : sequence of str, optional
        Two or three methods (default: up to three of ``source.methods``).
    k_similar : int, default 4
        Number of similar cases shown.
    size : int, default 320
        Panel height in pixels (large: this view is for reading).
    deletion : bool, default False
        Run the per-case deletion test whenever a case is opened (about 20 forward passes
        per method: hundreds of milliseconds). Otherwise it runs on request
        (:meth:`run_deletion`), which keeps opening a case under the 300 ms budget.
    """

    def __init__(
        self,
        source: CaseSource,
        case_id: str | None = None,
        *,
        methods: Sequence[str] | None = None,
        k_similar: int = 4,
        size: int = 320,
        cmap: str = "jet",
        alpha: float = 0.45,
        deletion: bool = False,
    ) -> None:
        self.source = source
        self.methods = list(methods or source.methods[:3])
        unknown = [m for m in self.methods if m not in source.methods]
        if unknown:
            raise ValueError(f"Unknown method(s) {unknown}; offered: {source.methods}.")
        self.k_similar = int(k_similar)
        self.size = int(size)
        self.cmap = cmap
        self.alpha = float(alpha)
        self.deletion = bool(deletion)
        self._deletion: dict[tuple[str, str], float] = {}
        self.case_id = str(case_id) if case_id is not None else source.case_ids[0]
        source.row(self.case_id)
        self._cache = _LRU(128)

    def select_case(self, case_id: str) -> None:
        """Review another case."""
        self.source.row(case_id)
        self.case_id = str(case_id)

    # ------------------------------------------------------------------ prediction
    def confidence(self) -> Confidence:
        """The positive-class score and its observed reliability among similar scores.

        Bins are the audit's calibration bins (10 equal-width bins of the score); the
        case itself is left out of its bin's count.
        """
        t = self.source.table
        i = self.source.row(self.case_id)
        s = t["score"].to_numpy(np.float64)
        y = t["label"].to_numpy(np.float64)
        edges = np.linspace(0.0, 1.0, N_BINS + 1)
        bins = np.searchsorted(edges[1:-1], s)  # calibration_curve's convention
        same = (bins == bins[i]) & np.isfinite(y)
        same[i] = False
        n = int(same.sum())
        rate = float(y[same].mean()) if n else float("nan")
        name = self.source.class_names[self.source.positive_index]
        lo, hi = float(edges[bins[i]]), float(edges[bins[i] + 1])
        return Confidence(
            score=float(s[i]),
            class_name=name,
            bin_low=lo,
            bin_high=hi,
            n_similar=n,
            observed_rate=rate,
            caption=confidence_caption(float(s[i]), name, lo, hi, n, rate),
        )

    def summary(self) -> dict[str, Any]:
        """Case id, attributes, ground truth, prediction, score and outcome."""
        row = self.source.case(self.case_id)
        names = self.source.class_names
        pos = self.source.positive_index
        neg = names[1 - pos] if len(names) == 2 else f"not {names[pos]}"
        label = row["label"]
        return {
            "case_id": self.case_id,
            **{a: row[a] for a in self.source.attributes},
            "ground_truth": None if pd.isna(label) else (names[pos] if int(label) == 1 else neg),
            "prediction": names[pos] if int(row["predicted"]) == 1 else neg,
            "score": float(row["score"]),
            "threshold": self.source.threshold,
            "outcome": row["outcome"],
        }

    # ------------------------------------------------------------------ explanations
    def explanations_png(self) -> bytes:
        """The case large, followed by one overlay per method (lesion outlined if known)."""
        key = ("strip", self.case_id, tuple(self.methods), self.cmap, self.alpha, self.size)
        return self._cache.get_or(key, self._explanations_png)

    def _explanations_png(self) -> bytes:
        cid = self.case_id
        plane = image_slice(self.source.image(cid))
        mask = self.source.mask(cid)
        mplane = map_slice(mask) if mask is not None else None
        panels, titles = (
            [contour_rgb(gray_rgb(plane), mplane)],
            ["image" + (" (lesion outlined)" if mplane is not None and mplane.any() else "")],
        )
        for m in self.methods:
            attr = map_slice(self.source.attribution(cid, m))
            panels.append(contour_rgb(overlay_rgb(plane, attr, self.cmap, self.alpha), mplane))
            titles.append(m)
        strip = panel_strip(panels, titles, size=self.size)
        # What the colours mean: from no evidence to the strongest evidence in this image.
        return png_bytes(with_colorbar(strip, self.cmap, TITLE_HEIGHT) if self.methods else strip)

    def captions(self) -> list[str]:
        """One plain-language sentence per method."""
        name = self.source.class_names[self.source.positive_index]
        return [method_caption(m, name) for m in self.methods]

    # ------------------------------------------------------------------ quality
    def quality(self) -> pd.DataFrame:
        """Quality indicators of each method's map for this case, with a caption each.

        Columns: ``method, pointing_game, mass_in_mask, shortcut_share, shortcut_chance,
        deletion_advantage, caption``. Values are NaN where undefined (e.g. no lesion to
        localise on a negative case).
        """
        if self.deletion:
            self.run_deletion()
        done = tuple(self._deletion.get((self.case_id, m)) for m in self.methods)
        key = ("quality", self.case_id, tuple(self.methods), done)
        return self._cache.get_or(key, self._quality)

    def plain_quality(self) -> pd.DataFrame:
        """:meth:`quality` in plain words, as the review shows it (no jargon column names).

        Columns: "explanation", "strongest evidence inside the lesion outline" (yes/no),
        "share of the evidence inside the lesion outline", "share of evidence in the suspected
        shortcut region" (with the share an even spread would give), "score drop when the
        highlighted area is removed vs random areas".
        """
        return plain_quality_table(self.quality())

    def run_deletion(self) -> dict[str, float]:
        """Deletion test of the current case, per method (cached).

        Removes the most relevant pixels first (10 steps, blurred replacement) and compares
        the fall of the score with removing random pixels: a positive advantage means the map
        points at what the model uses. Returns ``{method: advantage}`` (NaN without a model).
        """
        dele = deletion_fn()
        image = None
        for m in self.methods:
            key = (self.case_id, m)
            if key in self._deletion:
                continue
            if dele is None or self.source.model is None:
                self._deletion[key] = float("nan")
                continue
            if image is None:
                image = self.source.image(self.case_id)
            maps = self._full_res(self.source.attribution(self.case_id, m)[None], image)
            res = dele(
                self.source.model,
                image[None],
                maps,
                targets=[self.source.positive_index],
                n_steps=10,
                modes=("deletion",),
                orders=("morf",),
                n_boot=1,
            )
            self._deletion[key] = float(res.per_image["advantage"].iloc[0])
        return {m: self._deletion[(self.case_id, m)] for m in self.methods}

    @staticmethod
    def _full_res(maps: np.ndarray, image: np.ndarray) -> np.ndarray:
        return maps if maps.shape[1:] == image.shape[1:] else _resize_maps(maps, image.shape[1:])

    def _quality(self) -> pd.DataFrame:
        cid = self.case_id
        image = self.source.image(cid)
        mask = self.source.mask(cid)
        loc, short = localisation_fn(), shortcut_mass_fn()
        rows = []
        for m in self.methods:
            attr = self.source.attribution(cid, m)
            maps = attr[None]
            if maps.shape[1:] != image.shape[1:]:
                maps = _resize_maps(maps, image.shape[1:])
            stored = self._stored_quality(m)
            pg = mass = float("nan")
            if stored is not None:
                pg, mass = stored["pointing_game"], stored["mass_in_mask"]
            elif loc is not None and mask is not None and np.asarray(mask).any():
                per = loc(maps, np.asarray(mask)[None], n_boot=1).per_image.iloc[0]
                pg, mass = float(per["pointing_game"]), float(per["mass_in_mask"])
            share = chance = float("nan")
            if short is not None:
                from xai_audit.quality.shortcut import region_fraction

                chance = float(region_fraction(maps.shape[1:]))
            if stored is not None and np.isfinite(stored["shortcut_share"]):
                share = stored["shortcut_share"]
            elif short is not None:
                share = float(short(maps)[0])
            adv = self._deletion.get((cid, m), float("nan"))
            rows.append(
                {
                    "method": m,
                    "pointing_game": pg,
                    "mass_in_mask": mass,
                    "shortcut_share": share,
                    "shortcut_chance": chance,
                    "deletion_advantage": adv,
                    "caption": quality_caption(m, pg, mass, share, chance, adv),
                }
            )
        return pd.DataFrame(rows)

    def _stored_quality(self, method: str) -> dict[str, float] | None:
        """This case's per-image quality numbers from the audit (same region and maps)."""
        quality = getattr(self.source.result, "quality", None)
        per = quality.get("per_image") if isinstance(quality, dict) else None
        if not isinstance(per, pd.DataFrame) or "case_id" not in per.columns:
            return None
        hit = per[per["case_id"].astype(str) == self.case_id]
        if hit.empty or f"shortcut__{method}" not in per.columns:
            return None
        row = hit.iloc[0]

        def get(col: str) -> float:
            return float(row[col]) if col in row.index and pd.notna(row[col]) else float("nan")

        return {
            "pointing_game": get(f"loc__{method}__pointing_game"),
            "mass_in_mask": get(f"loc__{method}__mass_in_mask"),
            "shortcut_share": get(f"shortcut__{method}"),
        }

    def _class_word(self, positive: int) -> str:
        """The class name of a 0/1 decision ("lesion" / "normal", or "no lesion")."""
        names = self.source.class_names
        pos = self.source.positive_index
        if positive:
            return names[pos]
        return names[1 - pos] if len(names) == 2 else f"no {names[pos]}"

    # ------------------------------------------------------------------ similar cases
    def similar(self, k: int | None = None) -> pd.DataFrame:
        """The ``k`` most similar other cases by the model's features.

        Closeness is the Euclidean distance between the features standardised over the data
        set (:func:`xai_audit.widgets._clinical.standardised_distance`; the plain cosine of
        ReLU features is 0.99+ for almost any pair), given as ``distance`` relative to the
        median distance from this case to the others (1 = a typical case) and as
        ``closer_than``, the share of the other cases that are farther away ("closer than 97%
        of cases"). Images of the same patient are left out (they would be trivially similar).
        Columns: ``case_id, distance, closer_than, label, score, outcome`` and the attributes.
        """
        k = self.k_similar if k is None else int(k)
        key = ("similar", self.case_id, k)
        return self._cache.get_or(key, lambda: self._similar(k))

    def _similar(self, k: int) -> pd.DataFrame:
        emb = self.source.embeddings()
        i = self.source.row(self.case_id)
        dist = standardised_distance(emb, i)
        t = self.source.table
        exclude = np.zeros(len(t), dtype=bool)
        exclude[i] = True
        if "patient_id" in t.columns and pd.notna(t.at[i, "patient_id"]):
            exclude |= (t["patient_id"] == t.at[i, "patient_id"]).to_numpy()
        rank = closer_than(-dist, ~exclude)
        rel = relative_distance(dist, ~exclude)
        order = np.argsort(np.where(exclude, np.inf, dist), kind="stable")
        order = order[: min(k, int((~exclude).sum()))]
        cols = ["case_id", "label", "score", "outcome", *self.source.attributes]
        out = t.iloc[order][cols].reset_index(drop=True)
        out.insert(1, "distance", rel[order])
        out.insert(2, "closer_than", rank[order])
        return out

    def similar_png(self, k: int | None = None, size: int = 120) -> bytes:
        """Thumbnails of the similar cases, each captioned "truth: lesion", "prediction: no
        lesion", "score 0.59" and "closer than 97%" (of the other cases)."""
        table = self.similar(k)
        key = ("similar_png", self.case_id, len(table), size)

        def make() -> bytes:
            panels, captions = [], []
            for r in table.itertuples(index=False):
                panels.append(gray_rgb(image_slice(self.source.image(r.case_id))))
                truth = "unknown" if pd.isna(r.label) else self._class_word(int(r.label))
                predicted = self._class_word(int(float(r.score) >= self.source.threshold))
                captions.append(tile_caption(truth, predicted, float(r.score), r.closer_than))
            if not panels:
                return png_bytes(np.full((size, size, 3), 255, np.uint8))
            return png_bytes(labelled_tiles(panels, captions, size=size))

        return self._cache.get_or(key, make)


def _resize_maps(maps: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Upsample low-resolution maps to the image's spatial shape (bilinear)."""
    from scipy import ndimage

    factors = (1.0, *(s / m for s, m in zip(shape, maps.shape[1:])))
    return ndimage.zoom(maps, factors, order=1)
