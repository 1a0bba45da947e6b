"""Figures for the report, rendered off-screen and inlined as base64 PNG ``data:`` URIs.

Every figure is drawn from an :class:`~xai_audit.audit.AuditResult`'s tables (never from
anything recomputed elsewhere) and closed right after rendering. Thumbnails are composed
with numpy + Pillow (no figure per case), which keeps galleries fast and small.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 90
_FIG_MAX_ROWS = 40


def fig_to_uri(fig: Figure) -> str:
    """PNG ``data:`` URI of a figure; the figure is cleared afterwards."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def array_to_uri(rgb: np.ndarray, fmt: str = "PNG") -> str:
    """``data:`` URI of an ``H x W x 3`` uint8 array (PNG, or JPEG for noisy thumbnails)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(np.asarray(a, dtype=np.float32))
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def overlay_rgb(image: np.ndarray, amap: np.ndarray | None, alpha: float = 0.5) -> np.ndarray:
    """Grey image with an attribution heat map (positive part, jet) blended on top."""
    grey = _unit(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if amap is not None:
        m = np.clip(np.nan_to_num(amap.astype(np.float32)), 0, None)
        peak = float(m.max())
        m = m / peak if peak > 0 else m
        heat = colormaps["jet"](m)[..., :3]
        a = alpha * m[..., None] ** 0.5
        rgb = (1 - a) * rgb + a * heat
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def case_strip(image: np.ndarray, maps: list[np.ndarray]) -> str:
    """One PNG per gallery case: the image, then its overlay for each method."""
    tiles = [overlay_rgb(image, None)] + [overlay_rgb(image, m) for m in maps]
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for t in tiles:
        parts += [t, gap]
    # JPEG: radiograph noise makes PNG thumbnails five times larger for no visible gain.
    return array_to_uri(np.concatenate(parts[:-1], axis=1), fmt="JPEG")


def roc_figure(pred: pd.DataFrame, attribute: str | None, threshold: float) -> str:
    """ROC of all cases (and of each group of ``attribute``) with the operating point."""
    from ..fairness import plots

    y = pred["label"].to_numpy()
    s = pred["score"].to_numpy()
    groups: list[tuple[str, np.ndarray, bool]] = [("overall", np.arange(len(pred)), True)]
    if attribute is not None:
        values = (
            pred[attribute].astype(object).where(pred[attribute].notna(), "missing").astype(str)
        )
        for g in sorted(values.unique()):
            rows = np.flatnonzero((values == g).to_numpy())
            ok = len(np.unique(y[rows])) == 2
            groups.append((f"{g} (n={len(rows)})", rows, ok))
    fig = plots.roc_by_group(
        y, s, groups, threshold=threshold, title=f"ROC by {attribute}" if attribute else "ROC"
    )
    fig.set_size_inches(4.6, 4.2)
    return fig_to_uri(fig)


def reliability_figure(calibration: pd.DataFrame, attribute: str | None) -> str | None:
    """Reliability curves of all cases (and of each group of ``attribute``)."""
    from ..fairness import plots

    rows = calibration[calibration["attribute"] == "overall"]
    if attribute is not None:
        rows = pd.concat([rows, calibration[calibration["attribute"] == attribute]])
    if rows.empty:
        return None
    fig = plots.reliability(
        rows, title=f"Reliability by {attribute}" if attribute else "Reliability"
    )
    fig.set_size_inches(4.6, 4.2)
    return fig_to_uri(fig)


def forest_figure(by_group: pd.DataFrame, overall: pd.DataFrame, metric: str) -> str | None:
    """Forest plot of one metric across groups and intersections (CIs, overall band)."""
    from ..fairness import plots

    rows = by_group[by_group["metric"] == metric]
    ov = overall[overall["metric"] == metric]
    if rows.empty or ov.empty:
        return None
    fig = plots.forest(rows, ov.iloc[0], metric)
    return fig_to_uri(fig)


def faithfulness_figure(curves: pd.DataFrame, method: str) -> str:
    """Mean deletion and insertion curves of the method vs random rankings."""
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(curves["mode"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(3.3 * len(modes), 2.8), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sub = curves[(curves["mode"] == mode) & (curves["order"] == "morf")]
        for ref, style in (("method", "-"), ("random", "--")):
            r = sub[sub["reference"] == ref]
            ax.plot(r["fraction"], r["score"], style, label=method if ref == "method" else "random")
        ax.set_title(f"{mode} (most relevant first)", fontsize=9)
        ax.set_xlabel("fraction of pixels", fontsize=8)
        ax.set_ylabel("score", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig_to_uri(fig)


def sanity_strip(maps: np.ndarray, layers: list[str]) -> str:
    """Maps of one image after each cumulative randomisation step (thumbnail strip)."""
    tiles = [
        (colormaps["viridis"](_unit(np.abs(m)))[..., :3] * 255).astype(np.uint8)
        for m in maps.astype(np.float32)
    ]
    size = 64
    tiles = [np.asarray(Image.fromarray(t).resize((size, size), Image.BILINEAR)) for t in tiles]
    gap = np.full((size, 2, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for t in tiles:
        parts += [t, gap]
    return array_to_uri(np.concatenate(parts[:-1], axis=1))


def shortcut_figure(
    table: pd.DataFrame, area_share: float | None, positive_label: str
) -> str | None:
    """Mean share of attribution in the shortcut region per group (positive predictions)."""
    import matplotlib.pyplot as plt

    if table is None or table.empty or "predicted" not in table:  # "auto": no named region
        return None
    sub = table[(table["predicted"] == 1) & ~table["attribute"].str.contains(" × ")]
    if sub.empty:
        return None
    sub = sub.head(_FIG_MAX_ROWS)
    labels = [f"{a}={g}" for a, g in zip(sub["attribute"], sub["group"])]
    fig, ax = plt.subplots(figsize=(5.5, 0.3 * len(sub) + 1.0))
    y = np.arange(len(sub))
    err = np.vstack([sub["mean_share"] - sub["ci_low"], sub["ci_high"] - sub["mean_share"]])
    colors = ["#c0392b" if f else "#34495e" for f in sub["flagged"].astype(bool)]
    ax.barh(y, sub["mean_share"], xerr=np.nan_to_num(err), color=colors, alpha=0.85)
    if area_share is not None:
        ax.axvline(area_share, color="grey", ls=":", label="uniform map")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of attribution in the region (predicted {positive_label})", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig_to_uri(fig)


def shortcut_region_tiles(thumbs: np.ndarray, box: Any) -> str | None:
    """Exemplar thumbnails of a flagged group with the shortcut region's box drawn in red."""
    thumbs = np.asarray(thumbs, dtype=np.float32)
    if thumbs.ndim != 3 or not len(thumbs):
        return None
    h, w = thumbs.shape[1:]
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, y0 = min(max(0, x0), w - 1), min(max(0, y0), h - 1)
    x1, y1 = min(max(x0 + 1, x1), w), min(max(y0 + 1, y1), h)
    red = np.array([220, 40, 40], dtype=np.uint8)
    gap = np.full((h, 4, 3), 255, dtype=np.uint8)
    parts = []
    for t in thumbs:
        rgb = (np.repeat(_unit(t)[..., None], 3, axis=2) * 255).astype(np.uint8)
        rgb[y0, x0:x1] = rgb[y1 - 1, x0:x1] = red  # box outline, 1 px
        rgb[y0:y1, x0] = rgb[y0:y1, x1 - 1] = red
        parts += [rgb, gap]
    return array_to_uri(np.concatenate(parts[:-1], axis=1))


def mean_map_tile(m: np.ndarray) -> str:
    """A mean attribution map as a small heat-map PNG."""
    rgb = (colormaps["magma"](_unit(np.clip(m, 0, None)))[..., :3] * 255).astype(np.uint8)
    return array_to_uri(rgb)


def figure_inventory(_: Any = None) -> list[str]:  # pragma: no cover - documentation helper
    """Names of the figures a report contains."""
    return [
        "roc",
        "reliability",
        "forest",
        "faithfulness",
        "sanity",
        "shortcut",
        "shortcut_regions",
        "mean_maps",
        "gallery",
    ]
