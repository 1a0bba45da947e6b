"""Shortcut detection in a named region: attribution mass where nothing clinical should be.

An audit searches the whole image by default (``shortcut_region="auto"``, see
:mod:`xai_audit.quality.shortcut_discovery`); this module tests one region given in advance.
:func:`shortcut_mass` gives, per image, the share of attribution in a region (the image
corners when called without one, where markers sit; the border band; a box; or any mask such
as ``~lung_mask``). A larger region such as the whole border band also collects the spread
of diffuse maps (e.g. for faint lesions), which is not a shortcut. :func:`detect_shortcuts` then
compares, within each predicted class, every subgroup's shares with everyone else's
(one-sided Mann–Whitney U, Holm-corrected over the whole table) and flags subgroups whose
positive predictions lean on that region clearly and significantly more than the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._validate import as_maps, as_masks
from .faithfulness import _py
from .groups import iter_groups
from .localisation import relevance
from .regions import REGION_NAMES, named_region
from .stats import bootstrap_ci, format_p, holm, mann_whitney_greater


def shortcut_mass(
    maps: Any,
    region: str | np.ndarray = "corners",
    *,
    normalise: str = "abs",
    border: float = 0.08,
    corner: float = 0.15,
) -> np.ndarray:
    """Share of each map's attribution mass inside ``region``.

    Parameters
    ----------
    maps : array ``N x H x W`` (or ``N x D x H x W``), tensor or ``Attribution``
    region : {"corners", "border", "border_corners"} or bool array, default "corners"
        A named region (see :mod:`xai_audit.quality.regions`: the four corner squares of 15 %
        of the side by default, where markers and burned-in text sit) or a mask ``H x W`` / ``N x H x W`` of where attribution
        should *not* be, e.g. ``~lung_masks``.
    normalise : {"abs", "positive"}, default "abs"
        ``abs`` counts evidence for and against the class (both show the model looks there);
        ``positive`` only evidence for it.
    border, corner : float
        Sizes of the named regions as fractions of the side.

    Returns
    -------
    numpy.ndarray ``(N,)``
        Shares in [0, 1]; NaN for maps with no mass (all zero), since no share exists.
    """
    m = as_maps(maps)
    if isinstance(region, str):
        mask = named_region(region, m.shape[1:], border=border, corner=corner)
    else:
        mask = region
    mk = as_masks(mask, m.shape, name="region")
    rel = relevance(m, normalise).reshape(len(m), -1)
    total = rel.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (rel * mk.reshape(len(m), -1)).sum(axis=1) / total
    share[total == 0] = np.nan
    return share


def region_fraction(
    shape: Sequence[int], region: str | np.ndarray = "corners", **kwargs: Any
) -> float:
    """Area share of a region: what a spatially uniform map would put there."""
    if isinstance(region, str):
        return float(named_region(region, shape, **kwargs).mean())
    return float(np.asarray(region, dtype=bool).mean())


@dataclass
class ShortcutResult:
    """Per-subgroup shortcut statistics and plain-language flags.

    Attributes
    ----------
    table : DataFrame
        One row per attribute, group and predicted class: ``n``, ``mean_share`` with a
        bootstrap CI, ``rest_n``, ``rest_mean_share`` (same predicted class, other groups),
        ``effect`` (difference), ``p_value`` (one-sided Mann–Whitney U), ``p_holm``,
        ``flagged`` and ``explained_by`` (the flagged group that accounts for this one).
    flags : list of str
        One message per flagged subgroup.
    notes : list of str
        Groups with a significant excess that is explained by their overlap with a flagged
        group (e.g. an age group over-represented at the shortcut site); not flags.
    params : dict
    """

    table: pd.DataFrame
    flags: list[str]
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged(self) -> pd.DataFrame:
        """The flagged rows of :attr:`table`."""
        return self.table[self.table["flagged"]].reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: flags, flagged rows and the whole table."""

        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: _py(v) for k, v in r.items()} for r in df.to_dict("records")]

        return {
            "metric": "shortcut",
            "flags": list(self.flags),
            "notes": list(self.notes),
            "flagged": records(self.flagged),
            "table": records(self.table),
            "params": {k: _py(v) for k, v in self.params.items()},
        }

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Mean share per subgroup and predicted class, with CIs."""
        from .plots import plot_shortcuts

        return plot_shortcuts(self, ax=ax, **kwargs)


def _class_label(c: Any, class_names: Sequence[str] | None) -> str:
    if class_names is not None:
        try:
            return str(class_names[int(c)])
        except (ValueError, TypeError, IndexError):
            pass
    return str(c)


def detect_shortcuts(
    shares: Any,
    attributes: pd.DataFrame,
    predicted: Any,
    *,
    positive_class: Any = 1,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    min_ratio: float = 1.5,
    min_group_size: int = 10,
    intersections: bool | Sequence[tuple[str, str]] = False,
    columns: Sequence[str] | None = None,
    region_name: str = REGION_NAMES["corners"],
    class_names: Sequence[str] | None = None,
    flag_classes: Sequence[Any] | None = None,
    ci: float = 0.95,
    n_boot: int = 1000,
    random_state: int = 0,
) -> ShortcutResult:
    """Flag subgroups whose positive predictions put unusual attribution mass in a region.

    Parameters
    ----------
    shares : array ``(N,)``
        From :func:`shortcut_mass` (NaN entries are left out and counted).
    attributes : DataFrame
        Subgroup attributes, one row per image in the same order.
    predicted : array ``(N,)``
        Predicted class per image (index or label).
    positive_class : default 1
        The predicted class whose subgroups are flagged (see ``flag_classes``).
    alpha : float, default 0.05
        Significance after Holm correction over every test in the table.
    min_effect : float, default 0.05
        Smallest difference in mean share (5 percentage points) worth a flag: with many
        images tiny, harmless differences (e.g. acquisition differences between sites)
        become significant.
    min_ratio : float, default 1.5
        The group's mean share must also be this many times the rest's (on the demo data the
        marker site reaches ~2.4, acquisition differences on the control data at most ~1.7
        with an effect below 0.04).
    min_group_size : int, default 10
        Smaller groups are tested and tabled but never flagged (too noisy to act on).
    intersections : bool or sequence of pairs, default False
        Also test pairwise intersections of attributes.
    columns : sequence of str, optional
        Attributes to use (default all columns).
    region_name : str
        Words for the region in messages.
    class_names : sequence of str, optional
        Names for predicted class indices (tables and messages).
    flag_classes : sequence, optional
        Predicted classes that can be flagged; default ``[positive_class]``.
    ci, n_boot, random_state
        Bootstrap CI of each group's mean share.

    Returns
    -------
    ShortcutResult
    """
    s = np.asarray(shares, dtype=np.float64).ravel()
    pred = np.asarray(predicted).ravel()
    if not isinstance(attributes, pd.DataFrame):
        raise TypeError(f"attributes must be a pandas DataFrame, got {type(attributes).__name__}.")
    if not (len(s) == len(pred) == len(attributes)):
        raise ValueError(
            f"shares ({len(s)}), predicted ({len(pred)}) and attributes ({len(attributes)}) "
            "must have one entry per image."
        )
    if np.any((s < -1e-9) | (s > 1 + 1e-9)):
        raise ValueError("shares must lie in [0, 1] (use shortcut_mass to compute them).")
    flag_classes = [positive_class] if flag_classes is None else list(flag_classes)
    finite = np.isfinite(s)
    classes = [c for c in pd.unique(pred)]
    try:
        classes = sorted(classes)
    except TypeError:
        pass
    rows = []
    masks: dict[tuple[str, str], np.ndarray] = {}
    for grp in iter_groups(attributes, columns, intersections=intersections):
        masks[(grp.attribute, grp.group)] = grp.mask
        for c in classes:
            in_class = (pred == c) & finite
            inside = grp.mask & in_class
            rest = ~grp.mask & in_class
            if not inside.any():
                continue
            mean, low, high = bootstrap_ci(
                s[inside], ci=ci, n_boot=n_boot, random_state=random_state
            )
            rest_mean = float(s[rest].mean()) if rest.any() else np.nan
            rows.append(
                {
                    "attribute": grp.attribute,
                    "group": grp.group,
                    "predicted": c,
                    "predicted_label": _class_label(c, class_names),
                    "n": int(inside.sum()),
                    "n_undefined": int((grp.mask & (pred == c) & ~finite).sum()),
                    "mean_share": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "rest_n": int(rest.sum()),
                    "rest_mean_share": rest_mean,
                    "effect": mean - rest_mean,
                    "p_value": mann_whitney_greater(s[inside], s[rest]),
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError("No subgroup has images with a defined share; nothing to test.")
    table["p_holm"] = holm(table["p_value"].to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = table["mean_share"] / table["rest_mean_share"]
    table["flagged"] = (
        table["predicted"].isin(flag_classes)
        & (table["p_holm"] < alpha)
        & (table["effect"] >= min_effect)
        & ((ratio >= min_ratio) | (table["rest_mean_share"] == 0))
        & (table["n"] >= min_group_size)
    ).astype(bool)
    _explain_overlaps(table, masks, s, pred, finite, alpha, min_effect, min_group_size)
    flags = []
    notes = []
    for r in table[table["flagged"] | (table["explained_by"] != "")].itertuples(index=False):
        who = (
            "Positive predictions"
            if r.predicted == positive_class
            else f"Predictions of '{r.predicted_label}'"
        )
        groups = _describe(r.attribute, r.group)
        text = (
            f"{who} at {groups} put {r.mean_share:.0%} of attribution in {region_name} vs "
            f"{r.rest_mean_share:.0%} elsewhere ({format_p(r.p_holm)}, n={r.n})"
        )
        if r.flagged:
            flags.append(f"{text}: possible shortcut.")
        else:
            notes.append(
                f"{text}, but this is explained by their overlap with {r.explained_by} "
                "(without those images the difference is not significant)."
            )
    params = {
        "positive_class": positive_class,
        "alpha": alpha,
        "min_effect": min_effect,
        "min_ratio": min_ratio,
        "min_group_size": min_group_size,
        "intersections": bool(intersections)
        if isinstance(intersections, bool)
        else [list(p) for p in intersections],
        "region": region_name,
        "n_images": len(s),
        "n_undefined": int((~finite).sum()),
        "test": "one-sided Mann-Whitney U vs the rest of the same predicted class, Holm-corrected",
    }
    return ShortcutResult(table=table, flags=flags, notes=notes, params=params)


def _describe(attribute: str, group: str) -> str:
    """``site=C`` or ``site=C and sex=F`` for an intersection."""
    return " and ".join(f"{a}={g}" for a, g in zip(attribute.split(" × "), group.split(" | ")))


def _explain_overlaps(
    table: pd.DataFrame,
    masks: dict[tuple[str, str], np.ndarray],
    s: np.ndarray,
    pred: np.ndarray,
    finite: np.ndarray,
    alpha: float,
    min_effect: float,
    min_group_size: int,
) -> None:
    """Unflag groups whose excess is only their overlap with another flagged group.

    A shortcut at one site also shows up in any group that over-represents that site (e.g.
    an age group with more positive predictions from it). Group ``a`` is explained by group
    ``b`` when dropping ``b``'s images removes ``a``'s excess, while dropping ``a``'s images
    leaves ``b``'s intact. Fills ``table["explained_by"]`` and clears ``flagged`` there.
    """
    table["explained_by"] = ""
    flagged = table.index[table["flagged"]].tolist()

    def survives(i: int, drop: np.ndarray) -> bool:
        row = table.loc[i]
        keep = (pred == row["predicted"]) & finite & ~drop
        mask = masks[(row["attribute"], row["group"])]
        inside, rest = keep & mask, keep & ~mask
        if inside.sum() < min_group_size or not rest.any():
            return False
        effect = s[inside].mean() - s[rest].mean()
        return bool(effect >= min_effect and mann_whitney_greater(s[inside], s[rest]) < alpha)

    for a in flagged:
        ra = table.loc[a]
        mask_a = masks[(ra["attribute"], ra["group"])]
        explained = []
        for b in flagged:
            rb = table.loc[b]
            if b == a or rb["predicted"] != ra["predicted"]:
                continue
            mask_b = masks[(rb["attribute"], rb["group"])]
            if not survives(a, mask_b) and survives(b, mask_a):
                explained.append(_describe(rb["attribute"], rb["group"]))
        if explained:
            table.loc[a, "explained_by"] = " / ".join(explained)
    table.loc[table["explained_by"] != "", "flagged"] = False
