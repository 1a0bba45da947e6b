"""Write a generated data set to disk in the manifest layout, and read its card back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from xai_audit.datasets.synthetic import SyntheticDataset

#: Columns of manifest.csv: what an audit may see (label, attributes, patient id).
MANIFEST_COLUMNS = ("case_id", "image", "mask", "label", "sex", "age_group", "site", "patient_id")
#: Per-image ground truth that an audit must not treat as an attribute (goes to truth.csv).
TRUTH_EXCLUDE = ("patient_id", "sex", "age_group", "site", "label")

CARD_FILE = "card.json"
MANIFEST_FILE = "manifest.csv"
TRUTH_FILE = "truth.csv"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise an image in [0, 1] to 8 bits exactly as the PNG writer does."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    # Fixed compression level and no metadata chunks: the bytes depend on the pixels only.
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=6)


def card_json(card: dict[str, Any]) -> str:
    """Serialise a card exactly as ``card.json`` stores it."""
    return json.dumps(card, indent=2, allow_nan=False) + "\n"


def write_dataset(data: SyntheticDataset, root: str | Path, fmt: str | None = None) -> Path:
    """Write ``data`` under ``root``; see :meth:`SyntheticDataset.write`.

    Returns
    -------
    pathlib.Path
        Path of ``manifest.csv``.
    """
    volume = data.is_volume
    fmt = fmt or ("npy" if volume else "png")
    if fmt not in ("png", "npy"):
        raise ValueError(f"fmt must be 'png' or 'npy', got {fmt!r}")
    if volume and fmt == "png":
        raise ValueError("volumes can only be written as .npy (fmt='npy')")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)

    meta = data.metadata
    image_rel, mask_rel = [], []
    for i, case_id in enumerate(meta["case_id"]):
        img_path, mask_path = f"images/{case_id}.{fmt}", f"masks/{case_id}.{fmt}"
        if fmt == "png":
            _save_png(to_uint8(data.images[i, 0]), root / img_path)
            _save_png(data.masks[i] * np.uint8(255), root / mask_path)
        else:
            np.save(root / img_path, data.images[i], allow_pickle=False)
            np.save(root / mask_path, data.masks[i], allow_pickle=False)
        image_rel.append(img_path)
        mask_rel.append(mask_path)

    manifest = meta.assign(image=image_rel, mask=mask_rel)[list(MANIFEST_COLUMNS)]
    truth = meta[[c for c in meta.columns if c not in TRUTH_EXCLUDE]]
    manifest_path = root / MANIFEST_FILE
    # lineterminator fixed so the files are byte-identical on every platform.
    manifest.to_csv(manifest_path, index=False, lineterminator="\n")
    truth.to_csv(root / TRUTH_FILE, index=False, lineterminator="\n")
    card = dict(data.card)
    card["files"] = {
        "format": fmt,
        "manifest": MANIFEST_FILE,
        "truth": TRUTH_FILE,
        "image_encoding": (
            "8-bit grayscale PNG, value = round(255 * intensity)"
            if fmt == "png"
            else "float32 .npy, shape " + ("1 x D x H x W" if volume else "1 x H x W")
        ),
        "mask_encoding": (
            "8-bit PNG, 255 = lesion, 0 = background"
            if fmt == "png"
            else "uint8 .npy in {0, 1}, shape " + ("D x H x W" if volume else "H x W")
        ),
    }
    # The card goes last: its presence marks a complete write.
    (root / CARD_FILE).write_text(card_json(card), encoding="utf-8")
    return manifest_path


def load_card(root: str | Path) -> dict[str, Any]:
    """Read the data card of a written data set.

    Parameters
    ----------
    root : str or pathlib.Path
        The data set folder, or any file in it (e.g. its ``manifest.csv``).

    Returns
    -------
    dict
    """
    root = Path(root)
    path = root if root.name == CARD_FILE else (root.parent if root.is_file() else root) / CARD_FILE
    return json.loads(path.read_text(encoding="utf-8"))
