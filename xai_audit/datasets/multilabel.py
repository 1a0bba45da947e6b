"""Multi-label mode of the synthetic generator: several findings per image, one label each.

The base finding is the generator's lesion (column ``lesion``); further findings are drawn
per patient and painted before the site's acquisition (contrast, blur, noise), so every
finding goes through the same scanner. The defaults add an effusion-like opacity at the base
of one lung, fainter for ``sex=F`` (the injected disparity, recorded in the card), and a
small nodule with no effect. The lesion, the attributes and the pixel noise are those of the
single-label data set of the same seed (the extra findings use their own random stream).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xai_audit.datasets.card import _jsonable, build_card
from xai_audit.datasets.config import SyntheticConfig
from xai_audit.datasets.render import render_images
from xai_audit.datasets.synthetic import SyntheticDataset, _draw

__all__ = ["FindingSpec", "MultiLabelDataset", "make_multilabel_cxr", "DEFAULT_FINDINGS"]

#: Finding shapes: ``"opacity"`` (a wide, soft band at the base of a lung, like an effusion)
#: and ``"nodule"`` (a small projected sphere in the upper part of a lung).
FINDING_KINDS = ("opacity", "nodule")
#: Name of the generator's own lesion as a label column.
BASE_LABEL = "lesion"
#: Offset of the extra findings' random stream (``PCG64([seed, STREAM])``).
STREAM = 7919


@dataclass(frozen=True)
class FindingSpec:
    """One extra finding of the multi-label mode.

    Parameters
    ----------
    name : str
        Label column name (must differ from ``lesion`` and the attribute names).
    kind : {"opacity", "nodule"}
        Shape (see :data:`FINDING_KINDS`).
    prevalence : float
        Probability that a patient has it (independent of the other findings and attributes).
    contrast_range : tuple of float
        Peak intensity added, drawn uniformly per patient.
    size : float
        Nodule radius, or the opacity's half-height, px at 128 px.
    faint_where : dict of str to str, optional
        Attribute -> group conditions under which the finding is fainter (the injected
        disparity for this label); None: no effect.
    faint_factor : float
        Contrast multiplier where ``faint_where`` holds (forced to 1 in control mode).
    """

    name: str
    kind: str = "opacity"
    prevalence: float = 0.35
    contrast_range: tuple[float, float] = (0.16, 0.26)
    size: float = 7.0
    faint_where: dict[str, str] | None = None
    faint_factor: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}; choose from {FINDING_KINDS}")
        if self.name in (BASE_LABEL, "label", "sex", "age_group", "site", "patient_id"):
            raise ValueError(f"finding name {self.name!r} is taken; choose another name")
        if not 0.0 <= self.prevalence <= 1.0:
            raise ValueError(f"prevalence of {self.name!r} must lie in [0, 1]")
        if self.size <= 0:
            raise ValueError(f"size of {self.name!r} must be > 0")


DEFAULT_FINDINGS: tuple[FindingSpec, ...] = (
    FindingSpec(
        "effusion",
        "opacity",
        prevalence=0.35,
        contrast_range=(0.16, 0.26),
        size=7.0,
        faint_where={"sex": "F"},
        faint_factor=0.3,
    ),
    FindingSpec("nodule", "nodule", prevalence=0.30, contrast_range=(0.28, 0.38), size=3.5),
)


@dataclass
class MultiLabelDataset(SyntheticDataset):
    """A :class:`SyntheticDataset` with several labels.

    Attributes
    ----------
    label_names : list of str
        ``["lesion", <finding names>]``: the label columns of :attr:`labels` and the manifest.
    finding_masks : dict of str to numpy.ndarray
        ``N x H x W`` uint8 mask per extra finding (``masks`` is the lesion's).
    """

    label_names: list[str] = field(default_factory=list)
    finding_masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """``N x L`` int64 labels, columns :attr:`label_names`."""
        meta = self.metadata.assign(**{BASE_LABEL: self.metadata["label"]})
        return meta[self.label_names].to_numpy(np.int64)

    def write(self, root: str | Path, fmt: str | None = None) -> Path:
        """Write as :meth:`SyntheticDataset.write`, with one manifest column per label.

        ``manifest.csv`` holds ``lesion, <findings>`` instead of ``label``; ``truth.csv``
        keeps the per-finding contrast and position (not the labels).
        """
        from xai_audit.datasets.io import MANIFEST_COLUMNS, MANIFEST_FILE, TRUTH_FILE

        path = super().write(root, fmt=fmt)
        manifest = pd.read_csv(path, dtype=str)
        cols = [c for c in MANIFEST_COLUMNS if c != "label"]
        at = cols.index("mask") + 1
        manifest[BASE_LABEL] = self.metadata["label"].to_numpy()
        for name in self.label_names[1:]:
            manifest[name] = self.metadata[name].to_numpy()
        manifest = manifest[cols[:at] + self.label_names + cols[at:]]
        manifest.to_csv(path, index=False, lineterminator="\n")
        truth = pd.read_csv(Path(root) / TRUTH_FILE)
        truth = truth.drop(columns=[c for c in self.label_names if c in truth.columns])
        truth.to_csv(Path(root) / TRUTH_FILE, index=False, lineterminator="\n")
        assert path.name == MANIFEST_FILE
        return path


def _conditions(meta: pd.DataFrame, where: dict[str, str] | None) -> np.ndarray:
    hit = np.ones(len(meta), dtype=bool)
    for attr, group in (where or {}).items():
        if attr not in meta.columns:
            raise ValueError(f"faint_where: unknown attribute {attr!r}")
        hit &= (meta[attr] == group).to_numpy()
    return hit if where else np.zeros(len(meta), dtype=bool)


def _draw_findings(
    meta: pd.DataFrame,
    geom: dict[str, np.ndarray],
    findings: tuple[FindingSpec, ...],
    image_size: int,
    seed: int,
    control: bool,
) -> pd.DataFrame:
    """Per-image columns of every extra finding (label, contrast, centre, size)."""
    rng = np.random.Generator(np.random.PCG64([int(seed), STREAM]))
    pat_codes, pats = pd.factorize(meta["patient_id"])
    n_pat, scale, half = len(pats), image_size / 128.0, image_size / 2.0
    cols: dict[str, np.ndarray] = {}
    for f in findings:
        has = (rng.random(n_pat) < f.prevalence).astype(np.int64)[pat_codes]
        base = rng.uniform(*f.contrast_range, n_pat)[pat_codes]
        side = np.where(rng.random(n_pat) < 0.5, -1.0, 1.0)[pat_codes]
        u, v = rng.random(n_pat)[pat_codes], rng.random(n_pat)[pat_codes]
        faint = 1.0 if control else f.faint_factor
        contrast = np.where(
            has == 1, base * np.where(_conditions(meta, f.faint_where), faint, 1), 0
        )
        cx_n = geom["body_cx"] + side * geom["lung_off"]
        if f.kind == "opacity":
            # The lung's base: its lower edge, a little inside; wide and low.
            cy_n = geom["body_cy"] + geom["lung_cy"] + 0.8 * geom["lung_ay"]
            x = (cx_n + 1.0) * half - 0.5 + (u - 0.5) * 0.2 * geom["lung_ax"] * half
            y = (cy_n + 1.0) * half - 0.5
        else:
            # Upper half of the lung, away from the base where the opacity sits.
            cy_n = geom["body_cy"] + geom["lung_cy"] - 0.45 * geom["lung_ay"]
            x = (cx_n + 1.0) * half - 0.5 + (u - 0.5) * 0.8 * geom["lung_ax"] * half
            y = (cy_n + 1.0) * half - 0.5 + (v - 0.5) * 0.5 * geom["lung_ay"] * half
        cols[f.name] = has
        cols[f"{f.name}_contrast"] = contrast
        cols[f"{f.name}_y"] = np.where(has == 1, y, np.nan)
        cols[f"{f.name}_x"] = np.where(has == 1, x, np.nan)
        cols[f"{f.name}_size"] = np.where(has == 1, max(f.size * scale, 1.5), 0.0)
        cols[f"{f.name}_width"] = np.where(has == 1, geom["lung_ax"] * half * 0.75, 0.0)
    return pd.DataFrame(cols, index=meta.index)


def _painter(
    meta: pd.DataFrame, findings: tuple[FindingSpec, ...], masks: dict[str, np.ndarray]
) -> Any:
    """``extra(image, index)`` for :func:`render_images`: paints every finding, fills masks."""

    def paint(image: np.ndarray, index: np.ndarray) -> None:
        _, _, h, w = image.shape
        yy = np.arange(h, dtype=np.float32).reshape(1, h, 1)
        xx = np.arange(w, dtype=np.float32).reshape(1, 1, w)
        for f in findings:
            rows = np.flatnonzero(meta[f.name].to_numpy()[index] == 1)
            if rows.size == 0:
                continue
            sel = index[rows]

            def col(name: str, sel: np.ndarray = sel, f: FindingSpec = f) -> np.ndarray:
                return meta[f"{f.name}_{name}"].to_numpy(np.float32)[sel].reshape(-1, 1, 1)

            dy, dx = yy - col("y"), xx - col("x")
            if f.kind == "opacity":
                q = (dx / col("width")) ** 2 + (dy / col("size")) ** 2
                profile = np.exp(-q)  # soft edge; the mask is the ellipse q <= 1 (profile >= 1/e)
            else:
                q = (dx**2 + dy**2) / col("size") ** 2
                profile = np.sqrt(np.clip(1.0 - q, 0.0, None))
            image[rows, 0] += (col("contrast") * profile).astype(np.float32, copy=False)
            masks[f.name][sel] = (q <= 1.0).astype(np.uint8)

    return paint


def _effects(meta: pd.DataFrame, findings: tuple[FindingSpec, ...], control: bool) -> list:
    out = []
    for f in findings:
        if control or f.faint_where is None or f.faint_factor == 1.0:
            continue
        pos = meta[meta[f.name] == 1]
        hit = _conditions(pos, f.faint_where)
        c = pos[f"{f.name}_contrast"].to_numpy(np.float64)
        mean_g = float(c[hit].mean()) if hit.any() else None
        mean_o = float(c[~hit].mean()) if (~hit).any() else None
        where = " & ".join(f"{a}={g}" for a, g in f.faint_where.items())
        out.append(
            {
                "name": f"faint_{f.name}",
                "kind": "disparity",
                "label": f.name,
                "attribute": " × ".join(f.faint_where),
                "group": " | ".join(f.faint_where.values()),
                "mechanism": f"{f.name} contrast is multiplied by {f.faint_factor} in {where}",
                "size": {"contrast_ratio": f.faint_factor},
                "measured": {
                    "contrast_ratio": mean_g / mean_o if mean_g is not None and mean_o else None,
                    "n_positive_group": int(hit.sum()),
                    "n_positive_others": int((~hit).sum()),
                },
                "expected_audit_outcome": (
                    f"sensitivity for {where} on the label {f.name!r} clearly below overall; "
                    "the other labels show no gap for this group"
                ),
            }
        )
    return out


def make_multilabel_cxr(
    n_samples: int = 1200,
    image_size: int = 128,
    seed: int = 0,
    control: bool = False,
    findings: tuple[FindingSpec, ...] = DEFAULT_FINDINGS,
    config: SyntheticConfig | None = None,
) -> MultiLabelDataset:
    """Generate a multi-label synthetic chest-radiograph data set with known effects.

    Parameters
    ----------
    n_samples, image_size, seed, control
        As :func:`~xai_audit.datasets.make_synthetic_cxr` (2D images only).
    findings : tuple of FindingSpec
        Extra findings after the lesion; default :data:`DEFAULT_FINDINGS` (``effusion``,
        fainter for ``sex=F``, and ``nodule``, no effect).
    config : SyntheticConfig, optional
        Configuration of the base data set (the lesion, anatomy, sites). Default: the
        defaults with the lesion's own effects (faint age group, site marker) switched off,
        so that the only injected effect is the findings' ``faint_where``.

    Returns
    -------
    MultiLabelDataset
        ``label_names`` = ``["lesion", *finding names]``; the card's ``effects`` lists every
        injected effect with the ``label`` it concerns, and ``card["findings"]`` the specs.

    Examples
    --------
    >>> data = make_multilabel_cxr(n_samples=8, image_size=64, seed=1)
    >>> data.label_names, data.labels.shape
    (['lesion', 'effusion', 'nodule'], (8, 3))
    """
    names = [f.name for f in findings]
    if len(set(names)) != len(names):
        raise ValueError(f"finding names must be distinct, got {names}")
    cfg = config if config is not None else SyntheticConfig().as_control()
    cfg, rng, draws = _draw(n_samples, image_size, seed, control, None, cfg)
    extra = _draw_findings(draws.metadata, draws.geometry, findings, image_size, seed, control)
    meta = pd.concat([draws.metadata, extra], axis=1)
    draws.metadata = meta
    masks = {f.name: np.zeros((len(meta), image_size, image_size), np.uint8) for f in findings}
    images, lesion_masks = render_images(
        draws, cfg, (1, image_size, image_size), rng, extra=_painter(meta, findings, masks)
    )
    card = build_card(
        meta, cfg, seed=seed, control=control, image_size=image_size, volume_depth=None
    )
    card["name"] = "xai_audit synthetic chest radiographs (multi-label)"
    card["labels"] = {
        name: {
            "n_positive": int(v.sum()),
            "prevalence": float(v.mean()) if len(v) else None,
        }
        for name, v in [(BASE_LABEL, meta["label"]), *((n, meta[n]) for n in names)]
    }
    for e in card["effects"]:
        e.setdefault("label", BASE_LABEL)
    card["effects"] += _effects(meta, findings, control)
    card["findings"] = [{**asdict(f), "contrast_range": list(f.contrast_range)} for f in findings]
    return MultiLabelDataset(
        images=images,
        masks=lesion_masks[:, 0],
        metadata=meta,
        card=_jsonable(card),
        config=cfg,
        label_names=[BASE_LABEL, *names],
        finding_masks=masks,
    )
