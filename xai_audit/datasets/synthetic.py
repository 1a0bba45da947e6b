"""The public generator: :func:`make_synthetic_cxr` and the :class:`SyntheticDataset` it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xai_audit.datasets.card import build_card
from xai_audit.datasets.config import SyntheticConfig
from xai_audit.datasets.render import marker_region, render_images
from xai_audit.datasets.sampling import CaseDraws, sample_cases


@dataclass
class SyntheticDataset:
    """A generated data set with its ground truth.

    Attributes
    ----------
    images : numpy.ndarray
        float32 in [0, 1], ``N x 1 x H x W`` (``N x 1 x D x H x W`` for volumes).
    masks : numpy.ndarray
        uint8 in {0, 1}, ``N x H x W`` (``N x D x H x W``); all zero for negatives.
    metadata : pandas.DataFrame
        One row per image: ``case_id``, ``patient_id``, ``sex``, ``age_group``, ``site``,
        ``label``, ``marker``, ``lesion_contrast``, ``lesion_radius``, ``lesion_y``,
        ``lesion_x``, ``lesion_side`` (and ``lesion_z`` for volumes).
    card : dict
        JSON-serialisable description, including the injected ``effects``.
    config : SyntheticConfig
        The configuration actually used (the control variant in control mode).
    """

    images: np.ndarray
    masks: np.ndarray
    metadata: pd.DataFrame
    card: dict[str, Any]
    config: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __len__(self) -> int:
        return len(self.metadata)

    @property
    def is_volume(self) -> bool:
        """Whether the images are 3D volumes."""
        return self.images.ndim == 5

    def marker_region(self) -> np.ndarray:
        """Boolean ``H x W`` (``D x H x W``) map of the pixels the corner marker covers."""
        region = marker_region(
            self.config,
            tuple(self.masks.shape[1:]) if self.is_volume else (1, *self.masks.shape[1:]),
        )
        return region if self.is_volume else region[0]

    def write(self, root: str | Path, fmt: str | None = None) -> Path:
        """Write images, masks, ``manifest.csv``, ``truth.csv`` and ``card.json`` under ``root``.

        Parameters
        ----------
        root : str or pathlib.Path
            Output folder (created). Existing files of the same names are replaced; other
            files are left alone.
        fmt : {"png", "npy"} or None
            ``"png"``: 8-bit grayscale images and 0/255 masks (2D only); ``"npy"``: float32
            images and 0/1 uint8 masks, exact. ``None``: png for 2D, npy for volumes.

        Returns
        -------
        pathlib.Path
            Path of ``manifest.csv``.
        """
        from xai_audit.datasets.io import write_dataset

        return write_dataset(self, root, fmt=fmt)


def _draw(
    n_samples: int,
    image_size: int,
    seed: int,
    control: bool,
    volume_depth: int | None,
    config: SyntheticConfig | None,
) -> tuple[SyntheticConfig, np.random.Generator, CaseDraws]:
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    if image_size < 16:
        raise ValueError("image_size must be >= 16")
    if volume_depth is not None and volume_depth < 2:
        raise ValueError("volume_depth must be >= 2 (or None for 2D images)")
    cfg = config if config is not None else SyntheticConfig()
    if control:
        cfg = cfg.as_control()
    rng = np.random.Generator(np.random.PCG64(seed))
    return cfg, rng, sample_cases(cfg, n_samples, image_size, volume_depth, rng)


def synthetic_card(
    n_samples: int = 1200,
    image_size: int = 128,
    seed: int = 0,
    control: bool = False,
    volume_depth: int | None = None,
    config: SyntheticConfig | None = None,
) -> dict[str, Any]:
    """The card that :func:`make_synthetic_cxr` would produce, without rendering any pixels."""
    cfg, _, draws = _draw(n_samples, image_size, seed, control, volume_depth, config)
    return build_card(
        draws.metadata,
        cfg,
        seed=seed,
        control=control,
        image_size=image_size,
        volume_depth=volume_depth,
    )


def make_synthetic_cxr(
    n_samples: int = 1200,
    image_size: int = 128,
    seed: int = 0,
    control: bool = False,
    volume_depth: int | None = None,
    config: SyntheticConfig | None = None,
) -> SyntheticDataset:
    """Generate the seeded synthetic chest-radiograph-like ground-truth data set.

    Parameters
    ----------
    n_samples : int
        Number of images.
    image_size : int
        Height and width in pixels (sizes in the configuration are for 128 px and scale).
    seed : int
        Seed of the only random generator used (``numpy.random.PCG64``); same arguments and
        seed give byte-identical data.
    control : bool
        Switch every injected effect off (faint factor 1, no marker) while keeping the same
        attributes, labels, anatomy and lesion positions as the non-control set of that seed.
    volume_depth : int or None
        Generate ``D``-slice volumes instead of 2D images.
    config : SyntheticConfig or None
        Knobs and effect sizes; ``None`` uses the defaults documented in the data card.

    Returns
    -------
    SyntheticDataset

    Examples
    --------
    >>> data = make_synthetic_cxr(n_samples=8, image_size=64, seed=1)
    >>> data.images.shape, data.masks.shape
    ((8, 1, 64, 64), (8, 64, 64))
    """
    cfg, rng, draws = _draw(n_samples, image_size, seed, control, volume_depth, config)
    shape = (volume_depth or 1, image_size, image_size)
    images, masks = render_images(draws, cfg, shape, rng)
    if volume_depth:
        images = images[:, None]  # N x 1 x D x H x W
    else:
        masks = masks[:, 0]  # N x H x W; images keep depth 1 as their channel axis
    card = build_card(
        draws.metadata,
        cfg,
        seed=seed,
        control=control,
        image_size=image_size,
        volume_depth=volume_depth,
    )
    return SyntheticDataset(
        images=images, masks=masks, metadata=draws.metadata, card=card, config=cfg
    )
