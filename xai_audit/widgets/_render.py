"""Pixels to PNG bytes: grayscale images, attribution overlays, labelled panel strips.

Composed with numpy and Pillow rather than matplotlib figures: a strip of three 256 px
panels encodes in a few milliseconds, which keeps every widget interaction well under the
300 ms budget. The overlay follows :func:`xai_audit.explain.overlay`: a uniform ``alpha``
blend of the colour-mapped map over the image.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Colormaps offered in the widgets (all perceptually ordered except "jet", the familiar one).
COLORMAPS = ("jet", "inferno", "viridis", "magma", "hot", "coolwarm")
TITLE_HEIGHT = 22


def image_slice(image: np.ndarray, slice_index: int | None = None) -> np.ndarray:
    """The displayed 2D plane of a model-input image ``C x H x W`` or ``C x D x H x W``."""
    a = np.asarray(image)
    if a.ndim == 4:
        z = a.shape[1] // 2 if slice_index is None else int(np.clip(slice_index, 0, a.shape[1] - 1))
        return a[0, z]
    if a.ndim == 3:
        return a[0] if a.shape[0] == 1 else a.mean(axis=0)
    return a


def map_slice(attr: np.ndarray, slice_index: int | None = None) -> np.ndarray:
    """The displayed 2D plane of a map ``H x W`` or ``D x H x W``."""
    a = np.asarray(attr)
    if a.ndim == 3:
        z = a.shape[0] // 2 if slice_index is None else int(np.clip(slice_index, 0, a.shape[0] - 1))
        return a[z]
    return a


def normalise_image(plane: np.ndarray) -> np.ndarray:
    """Robust 1-99 percentile window to [0, 1] (site contrast differences stay readable)."""
    p = np.asarray(plane, dtype=np.float32)
    lo, hi = np.percentile(p, [1, 99])
    if hi <= lo:
        lo, hi = float(p.min()), float(p.max())
    if hi <= lo:
        return np.zeros_like(p)
    return np.clip((p - lo) / (hi - lo), 0.0, 1.0)


def normalise_map(plane: np.ndarray) -> np.ndarray:
    """Evidence for the class (positive part) scaled to [0, 1] by its 99.5th percentile.

    Maps without positive values (e.g. evidence only against) show their magnitude instead,
    so that the panel is never blank when the method did return something.
    """
    m = np.asarray(plane, dtype=np.float32)
    pos = np.clip(m, 0.0, None)
    if not np.any(pos > 0):
        pos = np.abs(m)
    top = float(np.percentile(pos, 99.5)) if pos.size else 0.0
    if top <= 0:
        top = float(pos.max()) if pos.size else 0.0
    if top <= 0:
        return np.zeros_like(pos)
    return np.clip(pos / top, 0.0, 1.0)


@lru_cache(maxsize=16)
def _lut(cmap: str) -> np.ndarray:
    """256 x 3 uint8 lookup table of a matplotlib colormap."""
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def gray_rgb(plane: np.ndarray) -> np.ndarray:
    """A 2D image as H x W x 3 uint8 gray."""
    g = (normalise_image(plane) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def overlay_rgb(
    plane: np.ndarray, attr: np.ndarray, cmap: str = "jet", alpha: float = 0.5
) -> np.ndarray:
    """Colour-mapped attribution blended over the gray image, H x W x 3 uint8.

    The map is resized to the image's shape when they differ (e.g. an unsampled CAM).
    """
    base = normalise_image(plane)
    m = normalise_map(attr)
    if m.shape != base.shape:
        m = np.asarray(
            Image.fromarray(m.astype(np.float32), mode="F").resize(
                base.shape[::-1], Image.Resampling.BILINEAR
            )
        )
    colour = _lut(cmap)[(m * 255).astype(np.uint8)].astype(np.float32)
    gray = np.repeat(base[..., None] * 255.0, 3, axis=2)
    out = (1.0 - alpha) * gray + alpha * colour
    return np.clip(out, 0, 255).astype(np.uint8)


def contour_rgb(
    rgb: np.ndarray, mask: np.ndarray | None, colour: tuple[int, int, int] = (0, 255, 0)
) -> np.ndarray:
    """Draw the outline of a binary mask onto an RGB panel (the annotated lesion)."""
    if mask is None:
        return rgb
    m = np.asarray(mask).astype(bool)
    if m.shape != rgb.shape[:2] or not m.any():
        return rgb
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    out = rgb.copy()
    out[edge] = colour
    return out


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def panel_strip(
    panels: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    size: int = 256,
    gap: int = 6,
) -> Image.Image:
    """Place RGB panels side by side, each resized to ``size`` px high, with titles above."""
    titles = list(titles) if titles is not None else [""] * len(panels)
    top = TITLE_HEIGHT if any(titles) else 0
    resized = []
    for p in panels:
        h, w = p.shape[:2]
        width = max(1, round(size * w / h))
        resized.append(Image.fromarray(p).resize((width, size), Image.Resampling.NEAREST))
    total_w = sum(r.width for r in resized) + gap * (len(resized) - 1)
    canvas = Image.new("RGB", (max(total_w, 1), size + top), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(13)
    x = 0
    for r, title in zip(resized, titles):
        canvas.paste(r, (x, top))
        if title:
            draw.text((x + 2, 3), title[: max(8, r.width // 7)], fill="black", font=font)
        x += r.width + gap
    return canvas


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """Encode as PNG (fast compression: the bytes stay in the kernel and the notebook)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for inline HTML (static fallbacks)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig: object, dpi: int = 100) -> bytes:
    """Render a matplotlib Figure (built without pyplot) to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # type: ignore[attr-defined]
    return buf.getvalue()
