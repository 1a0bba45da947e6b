"""Pieces of the clinician-facing views: plain names, colour bars, labelled tiles, closeness.

* Plain-language names of the per-case quality indicators (no ``pointing_game``).
* A colour bar panel saying what the heat-map colours mean (the overlays show the positive
  evidence scaled to its 99.5th percentile, :func:`xai_audit.widgets._render.normalise_map`,
  so the bar runs from "none" to "strongest in this image").
* Thumbnails with a caption of several lines under each (truth, prediction, score).
* A closeness between cases that separates them. Penultimate-layer features of a CNN are
  non-negative (after ReLU) and share a large common component, so the plain cosine of two
  cases is 0.99+ for almost any pair (measured on the demo: median 0.983, 95th percentile
  0.9994). Centring removes the common part but a cosine still ignores how far along a
  direction a case lies (the demo model's features are nearly one-dimensional: 93% of their
  variance on one axis, so centred cosines of the nearest cases are still 0.99). The
  Euclidean distance between features standardised over the data set (each feature divided
  by its standard deviation) keeps that difference; it is shown relative to the median
  distance from the case to all others (1 = a typical case, 0.12 = eight times closer), and
  as a rank: "closer than 97% of cases".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ._render import _font, _lut

#: Plain names of the per-case quality indicators, as shown to a clinician.
PLAIN_NAMES = {
    "method": "explanation",
    "pointing_game": "strongest evidence inside the lesion outline",
    "mass_in_mask": "share of the evidence inside the lesion outline",
    "shortcut_share": "share of evidence in the suspected shortcut region",
    "shortcut_chance": "share expected from an even spread",
    "deletion_advantage": "score drop when the highlighted area is removed vs random areas",
}

#: Plain description of the four outcomes.
OUTCOME_WORDS = {
    "TP": "lesion found",
    "TN": "correctly cleared",
    "FP": "false alarm",
    "FN": "missed lesion",
}


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:.0f}%"


def plain_quality_table(q: pd.DataFrame) -> pd.DataFrame:
    """The quality table with plain column names and readable values (yes/no, percentages)."""
    out = pd.DataFrame({PLAIN_NAMES["method"]: q["method"]})
    pg = q["pointing_game"].astype(float)
    out[PLAIN_NAMES["pointing_game"]] = [
        "–" if not math.isfinite(v) else ("yes" if v >= 1 else "no") for v in pg
    ]
    out[PLAIN_NAMES["mass_in_mask"]] = [_pct(v) for v in q["mass_in_mask"].astype(float)]
    share = q["shortcut_share"].astype(float)
    chance = q.get("shortcut_chance", pd.Series(np.nan, index=q.index)).astype(float)
    out[PLAIN_NAMES["shortcut_share"]] = [
        _pct(s) + (f" (even spread: {_pct(c)})" if math.isfinite(c) and math.isfinite(s) else "")
        for s, c in zip(share, chance)
    ]
    out[PLAIN_NAMES["deletion_advantage"]] = [
        "–" if not math.isfinite(v) else f"{v:+.2f}" for v in q["deletion_advantage"].astype(float)
    ]
    return out


def colorbar_panel(
    cmap: str, height: int, top: str = "strongest", bottom: str = "none", title: str = "evidence"
) -> np.ndarray:
    """A vertical colour bar ``height`` px high, labelled, as an RGB array (white background).

    The bar maps the same lookup table as the overlays (:func:`xai_audit.widgets._render._lut`)
    from 0 at the bottom to 1 at the top.
    """
    height = max(int(height), 40)
    width, bar_w, pad = 78, 14, 8
    img = Image.new("RGB", (width, height), "white")
    lut = _lut(cmap)
    y0, y1 = pad + 14, height - pad - 14  # room for the labels above and below
    span = max(y1 - y0, 2)
    ramp = lut[np.linspace(255, 0, span).astype(np.int64)]  # top = strongest
    column = np.repeat(ramp[:, None, :], bar_w, axis=1)
    img.paste(Image.fromarray(column.astype(np.uint8)), (5, y0))
    draw = ImageDraw.Draw(img)
    draw.rectangle([4, y0 - 1, 5 + bar_w, y0 + span], outline=(90, 90, 90))  # around the ramp
    font = _font(11)
    draw.text((2, 2), title, fill="black", font=font)
    draw.text((4 + bar_w + 4, y0 - 2), top, fill="black", font=font)
    draw.text((4 + bar_w + 4, y0 + span - 12), bottom, fill="black", font=font)
    return np.asarray(img)


def with_colorbar(strip: Image.Image, cmap: str, top_margin: int) -> Image.Image:
    """A panel strip with a colour bar added on its right, level with the panels."""
    bar = Image.fromarray(colorbar_panel(cmap, strip.height - top_margin))
    out = Image.new("RGB", (strip.width + 6 + bar.width, strip.height), "white")
    out.paste(strip, (0, 0))
    out.paste(bar, (strip.width + 6, top_margin))
    return out


def labelled_tiles(
    panels: Sequence[np.ndarray], captions: Sequence[Sequence[str]], size: int = 120, gap: int = 8
) -> Image.Image:
    """Thumbnails side by side, ``size`` px high, each with its caption lines underneath."""
    font = _font(11)
    line_h = 14
    n_lines = max((len(c) for c in captions), default=0)
    tiles = []
    for p in panels:
        h, w = p.shape[:2]
        tiles.append(Image.fromarray(p).resize((max(1, round(size * w / h)), size)))
    width = max(
        (max(t.width, 7 * max((len(x) for x in c), default=0)) for t, c in zip(tiles, captions)),
        default=size,
    )
    canvas = Image.new(
        "RGB", (max(1, len(tiles) * (width + gap) - gap), size + 4 + line_h * n_lines), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for i, (t, lines) in enumerate(zip(tiles, captions)):
        x = i * (width + gap)
        canvas.paste(t, (x + (width - t.width) // 2, 0))
        for j, line in enumerate(lines):
            draw.text((x + 1, size + 3 + j * line_h), line, fill="black", font=font)
    return canvas


def standardised_distance(embeddings: np.ndarray, i: int) -> np.ndarray:
    """Euclidean distance of every case to case ``i`` in standardised features.

    Each feature is centred and divided by its standard deviation over the data set
    (constant features are dropped), so that no single large feature decides.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    sd = x.std(axis=0)
    keep = sd > 1e-12 * max(float(sd.max()) if sd.size else 0.0, 1e-300)
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]
    return np.linalg.norm(z - z[i], axis=1)


def relative_distance(distance: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``distance`` divided by its median over the candidate cases (1 = a typical case)."""
    pool = distance[candidates]
    med = float(np.median(pool)) if pool.size else float("nan")
    return distance / med if med > 0 else np.full(distance.shape, np.nan)


def closer_than(similarity: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Share of the candidate cases that are less similar than each case (0..1).

    ``similarity`` is any score where higher means closer (e.g. minus a distance).

    ``candidates`` marks the cases compared against (the query and its patient's other images
    left out); a case's own value counts half for ties, as in a mid-rank percentile.
    """
    pool = np.sort(similarity[candidates])
    if pool.size == 0:
        return np.full(similarity.shape, np.nan)
    below = np.searchsorted(pool, similarity, side="left")
    equal = np.searchsorted(pool, similarity, side="right") - below
    # a candidate does not count itself among the cases it is compared with
    self_in = candidates.astype(np.float64)
    n_other = np.maximum(pool.size - self_in, 1.0)
    return (below + 0.5 * np.maximum(equal - self_in, 0.0)) / n_other


def tile_caption(truth: str, prediction: str, score: float, closer: float) -> list[str]:
    """Caption lines of a similar-case tile."""
    lines = [f"truth: {truth}", f"prediction: {prediction}", f"score {score:.2f}"]
    if math.isfinite(closer):
        lines.append(closer_text(closer, short=True))
    return lines


def closer_text(closer: float, short: bool = False) -> str:
    """``"closer than 97% of cases"`` (one decimal above 99%, so that near neighbours differ)."""
    if not math.isfinite(closer):
        return "–"
    if closer >= 1.0:
        return "closest of all" if short else "closer than all other cases"
    pct = f"{100 * closer:.1f}" if closer >= 0.99 else f"{100 * closer:.0f}"
    return f"closer than {pct}%" + ("" if short else " of cases")
