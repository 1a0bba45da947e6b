"""Write the bundled demo data set once, and reuse it while its card is unchanged."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from xai_audit.datasets.config import SyntheticConfig
from xai_audit.datasets.io import CARD_FILE, MANIFEST_FILE, TRUTH_FILE, load_card
from xai_audit.datasets.synthetic import make_synthetic_cxr, synthetic_card

#: Default size of the demo set: enough for a small CNN to show the injected effects, and
#: written in a few seconds.
DEMO_N_SAMPLES = 1200
DEMO_IMAGE_SIZE = 128


def _is_complete(root: Path, expected: dict) -> bool:
    """Whether ``root`` holds the data set described by ``expected``, with all its files."""
    manifest = root / MANIFEST_FILE
    if not (manifest.is_file() and (root / CARD_FILE).is_file()):
        return False
    try:
        card = load_card(root)
    except ValueError:
        return False
    card.pop("files", None)
    if card != expected:
        return False
    table = pd.read_csv(manifest)
    if len(table) != expected["n_samples"]:
        return False
    return all((root / p).is_file() for p in pd.concat([table["image"], table["mask"]]))


def generate_demo_dataset(
    root: str | Path = "datasets/demo",
    n_samples: int = DEMO_N_SAMPLES,
    seed: int = 0,
    control: bool = False,
    overwrite: bool = False,
    image_size: int = DEMO_IMAGE_SIZE,
    config: SyntheticConfig | None = None,
) -> Path:
    """Write the demo data set under ``root`` unless an identical one is already there.

    Parameters
    ----------
    root : str or pathlib.Path
        Output folder (relative paths are relative to the working directory).
    n_samples, seed, control, image_size, config
        Passed to :func:`~xai_audit.datasets.make_synthetic_cxr`.
    overwrite : bool
        Regenerate even when the data set on disk matches.

    Returns
    -------
    pathlib.Path
        Path of ``manifest.csv``.

    Notes
    -----
    The data set is written to a temporary sibling folder and moved into place entry by entry,
    ``card.json`` last, so that a concurrent reader never sees a card without its files.
    Only ``images/``, ``masks/``, ``manifest.csv``, ``truth.csv`` and ``card.json`` are
    replaced; anything else in ``root`` is left alone.
    """
    root = Path(root)
    expected = synthetic_card(n_samples, image_size, seed, control, None, config)
    if not overwrite and _is_complete(root, expected):
        return root / MANIFEST_FILE

    root.mkdir(parents=True, exist_ok=True)
    data = make_synthetic_cxr(n_samples, image_size, seed, control, None, config)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        data.write(tmp, fmt="png")
        (root / CARD_FILE).unlink(missing_ok=True)  # invalidate before replacing files
        for name in ("images", "masks"):
            old = root / name
            if old.exists():
                trash = tmp / f"old-{name}"
                os.replace(old, trash)  # rename first: rmtree of a huge folder is not atomic
            os.replace(tmp / name, old)
        for name in (MANIFEST_FILE, TRUTH_FILE, CARD_FILE):
            os.replace(tmp / name, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / MANIFEST_FILE
