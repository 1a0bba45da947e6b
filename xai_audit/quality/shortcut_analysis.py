"""The audit's shortcut analysis: discover (or test a named region), then confirm by editing.

:func:`analyse_shortcuts` is what an audit runs per attribution method after the batches: with
``region="auto"`` it searches the whole image (:func:`~.shortcut_discovery.discover_regions`
on the per-image patch grids), with a named region, box or mask it tests the share of
attribution there (:func:`~.shortcut.detect_shortcuts`); every candidate is then edited on a
bounded, seeded sample (:func:`~.shortcut_causal.confirm_region`). Only a confirmed candidate
is flagged; the others are notes. The result says in words what was searched and what could
not be.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from .regions import describe_region, region_mask
from .shortcut import detect_shortcuts
from .shortcut_causal import MIN_SCORE_CHANGE, confirm_region
from .shortcut_discovery import (
    MAX_AREA,
    MIN_RATIO,
    describe_box,
    discover_regions,
    patches_to_box,
    patches_to_mask,
)

#: Images per edit sample (flagged group, other groups' negatives, other groups' positives).
CAUSAL_SAMPLE = 64
#: Exemplar thumbnails of the flagged group kept per candidate (for the report).
N_EXEMPLARS = 4


def _where(attribute: str, group: str) -> str:
    names = attribute.split(" × ")
    values = group.split(" | ") if len(names) > 1 else [group]
    return " & ".join(f"{a}={v}" for a, v in zip(names, values))


def _labels(attributes: pd.DataFrame, attribute: str) -> np.ndarray:
    """Group labels per row for a single attribute or an ``a × b`` intersection."""
    from .groups import group_labels

    parts = [group_labels(attributes[a])[0] for a in attribute.split(" × ")]
    out = parts[0].astype(object)
    for p in parts[1:]:
        out = out + " | " + p
    return out


def _thumbs(images: np.ndarray, size: int) -> np.ndarray:
    """Grey thumbnails (channel mean, middle slice of volumes) of at most ``size`` px."""
    import torch

    img = images.mean(axis=1)
    if img.ndim == 4:
        img = img[:, img.shape[1] // 2]
    h, w = img.shape[-2:]
    if max(h, w) <= size:
        return img.astype(np.float16)
    scale = size / max(h, w)
    t = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[:, None],
        size=(max(1, round(h * scale)), max(1, round(w * scale))),
        mode="area",
    )
    return t[:, 0].numpy().astype(np.float16)


def analyse_shortcuts(
    *,
    region: Any,
    attributes: pd.DataFrame,
    predicted: np.ndarray,
    image_shape: Sequence[int],
    grids: np.ndarray | None = None,
    shares: np.ndarray | None = None,
    score: Callable[[np.ndarray], np.ndarray] | None = None,
    load_images: Callable[[np.ndarray], np.ndarray] | None = None,
    threshold: float = 0.5,
    border: float = 0.08,
    corner: float = 0.15,
    intersections: bool | Sequence[tuple[str, str]] = False,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    min_ratio: float = MIN_RATIO,
    max_area: float = MAX_AREA,
    min_group_size: int = 10,
    min_change: float = MIN_SCORE_CHANGE,
    sample_size: int = CAUSAL_SAMPLE,
    thumbnail_size: int = 96,
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    dilations: Sequence[int] = (0, 1, 2),
) -> dict[str, Any]:
    """Discover shortcut candidates and confirm them by erasing and pasting.

    Parameters
    ----------
    region : "auto", a named region, a border width, a box or a mask
        What to search (see :func:`xai_audit.quality.regions.check_region`).
    attributes : DataFrame
        Sensitive attributes, one row per image (manifest order).
    predicted : array ``(N,)``
        1 for a positive prediction at the audit threshold, else 0.
    image_shape : (H, W) or (D, H, W)
    grids : array ``N x g x g``, optional
        Per-image patch shares (:func:`~.shortcut_discovery.attribution_grid`), for ``"auto"``.
    shares : array ``(N,)``, optional
        Per-image share in the named region, otherwise.
    score, load_images : callable, optional
        ``score(images) -> (n,)`` and ``load_images(rows) -> images``; without them the
        candidates are not confirmed (and stay notes).
    threshold : float
        The audit's operating threshold.
    min_ratio : float, default 4
        A discovered region's share must be this many times the rest's (patches need 1.5x):
        a lesion region that one group's positive predictions favour stays below it (at most
        2.6x on the demo's control data), a token the rest never shows is far above (50x).
    min_change : float, default 0.05
        Smallest mean score change of an edit that confirms.
    sample_size : int, default 64
        Images per edit sample, seeded.

    Returns
    -------
    dict
        ``mode``, ``searched`` (words), ``not_searched`` (list), ``table`` (every tested group),
        ``candidates`` (list of dicts: ``attribute, group, where, box, location, area,
        mean_share, rest_mean_share, effect, ratio, n, status, confirmed, confirmation``
        (DataFrame), ``causal`` (numbers), ``exemplars`` (thumbnails), ``exemplar_box``),
        ``flags`` and ``notes`` (messages), ``params``.
    """
    pred = np.asarray(predicted).astype(int)
    attributes = attributes.reset_index(drop=True)
    auto = isinstance(region, str) and region == "auto"
    out: dict[str, Any] = {"mode": "auto" if auto else "region", "candidates": []}
    if auto:
        if grids is None:
            raise ValueError("region 'auto' needs the per-image attribution grids.")
        res = discover_regions(
            grids,
            attributes,
            pred,
            image_shape,
            alpha=alpha,
            min_effect=min_effect,
            min_ratio=min_ratio,
            max_area=max_area,
            min_group_size=min_group_size,
            intersections=intersections,
        )
        out["table"] = res.table
        out["searched"] = res.searched
        out["not_searched"] = list(res.not_searched)
        out["params"] = dict(res.params)
        cands = []
        for key, patches in res.regions.items():
            row = res.table[(res.table["attribute"] == key[0]) & (res.table["group"] == key[1])]
            r = row.iloc[0]
            cands.append(
                {
                    "attribute": key[0],
                    "group": key[1],
                    "patches": patches,
                    "box": patches_to_box(patches, image_shape),
                    "mask": patches_to_mask(patches, image_shape),
                    "area": float(r["area"]),
                    "mean_share": float(r["mean_share"]),
                    "rest_mean_share": float(r["rest_mean_share"]),
                    "effect": float(r["effect"]),
                    "ratio": float(r["ratio"]),
                    "p_value": float(r["p_value"]),
                    "n": int(r["n"]),
                }
            )
    else:
        if shares is None:
            raise ValueError("a named region needs the per-image shares in it.")
        words = describe_region(region, border, corner)
        sc = detect_shortcuts(
            shares,
            attributes,
            pred,
            positive_class=1,
            intersections=intersections,
            region_name=words,
            class_names=class_names,
            min_group_size=min_group_size,
            random_state=seed,
        )
        out["table"] = sc.table
        fixed = not (
            isinstance(region, np.ndarray) and region.ndim == 3 and len(region) == len(pred)
        )
        area = (
            float(np.mean(region_mask(region, image_shape, border=border, corner=corner)))
            if fixed
            else float(np.asarray(region, bool).mean())
        )
        tested = sc.table[sc.table["predicted"] == 1]
        small = tested[tested["n"] < min_group_size]
        out["not_searched"] = [
            f"{_where(a, g)} ({int(n)} positive predictions)"
            for a, g, n in zip(small["attribute"], small["group"], small["n"])
        ]
        out["searched"] = (
            f"{words} ({area:.0%} of the image): share of attribution of the positive "
            f"predictions of every subgroup of {', '.join(attributes.columns)} with >= "
            f"{min_group_size} of them, against the other positive predictions (one-sided "
            f"Mann-Whitney U, Holm over {len(sc.table)} tests; a flag needs >= "
            f"{sc.params['min_effect']:.0%} more share and >= {sc.params['min_ratio']:g}x the "
            "rest's)"
        )
        out["params"] = dict(sc.params)
        cands = []
        for r in sc.flagged.to_dict("records"):
            in_group = _labels(attributes, r["attribute"]) == r["group"]
            if fixed:
                mask = region_mask(region, image_shape, border=border, corner=corner)
                plane = mask if mask.ndim == 2 else mask.any(axis=0)
            else:
                mask = None  # per image
                plane = np.asarray(region, bool)[in_group & (pred == 1)].any(axis=0)
            rr, cc = np.nonzero(plane)
            box = [int(cc.min()), int(rr.min()), int(cc.max() + 1), int(rr.max() + 1)]
            cands.append(
                {
                    "attribute": r["attribute"],
                    "group": r["group"],
                    "box": box,
                    "mask": mask,
                    "area": area,
                    "mean_share": float(r["mean_share"]),
                    "rest_mean_share": float(r["rest_mean_share"]),
                    "effect": float(r["effect"]),
                    "ratio": float(r["mean_share"] / r["rest_mean_share"])
                    if r["rest_mean_share"] > 0
                    else float("inf"),
                    "p_value": float(r["p_holm"]),
                    "n": int(r["n"]),
                }
            )
    out["params"].update(
        {"min_change": min_change, "causal_sample": sample_size, "region": _region_param(region)}
    )
    flags, notes = [], []
    rng = np.random.default_rng(seed)
    for c in cands:
        in_group = _labels(attributes, c["attribute"]) == c["group"]
        c["where"] = _where(c["attribute"], c["group"])
        c["location"] = describe_box(c["box"], image_shape)
        c["status"] = "not tested"
        c["confirmed"] = False
        c["confirmation"] = pd.DataFrame()
        c["causal"] = {}
        grp_rows = np.flatnonzero(in_group & (pred == 1))
        other_rows = np.flatnonzero(~in_group & (pred == 0))
        peer_rows = np.flatnonzero(~in_group & (pred == 1))
        neg_rows = np.flatnonzero(in_group & (pred == 0))
        if score is not None and load_images is not None and len(grp_rows) and len(other_rows):
            pick = [
                np.sort(rng.choice(r, min(sample_size, len(r)), replace=False))
                for r in (grp_rows, other_rows, peer_rows, neg_rows)
            ]
            xg, xo = load_images(pick[0]), load_images(pick[1])
            xp = load_images(pick[2]) if len(pick[2]) else None
            xn = load_images(pick[3]) if len(pick[3]) else None
            spatial = xg.shape[2:]
            if c["mask"] is None:  # per-image user masks
                gmask = region_mask(region, spatial, rows=pick[0])
                pmask = region_mask(region, spatial, rows=pick[2]) if xp is not None else None
                variants = [(0, gmask)]
            else:
                pmask = None
                variants = (
                    _dilations(c["patches"], image_shape, dilations)
                    if "patches" in c
                    else [(0, c["mask"])]
                )
            # Several edit regions are tried (the region and its dilations): each is tested at
            # a Bonferroni-adjusted level, so that the candidate's false confirmation rate
            # stays at 1 - ci.
            level = 1.0 - (1.0 - ci) / len(variants)
            cr = first = None
            c["tried"] = []
            for d, gmask in variants:
                cr = confirm_region(
                    score,
                    xg,
                    gmask,
                    xo,
                    threshold,
                    peer_images=xp,
                    peer_masks=pmask,
                    group_negatives=xn,
                    min_change=min_change,
                    ci=level,
                    n_boot=n_boot,
                    random_state=seed,
                )
                c["tried"].append(
                    {"dilation": int(d), "confirmed": cr.confirmed, **cr.to_dict()["excess"]}
                )
                first = first or cr
                if cr.confirmed:
                    break
            if not cr.confirmed:  # report the region as found; "tried" lists the others
                cr, d = first, 0
            c["dilation"] = d
            if d:
                c["edit_box"] = patches_to_box(
                    ndimage.binary_dilation(c["patches"], iterations=d), image_shape
                )
            c["confirmed"] = cr.confirmed
            c["status"] = "confirmed" if cr.confirmed else "not confirmed"
            c["confirmation"] = cr.table
            c["causal"] = cr.to_dict()
            c["causal_params"] = dict(cr.params)
            k = min(N_EXEMPLARS, len(xg))
            c["exemplars"] = _thumbs(xg[:k], thumbnail_size)
            c["exemplar_rows"] = pick[0][:k]
            scale = c["exemplars"].shape[-1] / float(spatial[-1])
            c["exemplar_box"] = [float(v) * scale for v in (c.get("edit_box") or c["box"])]
        c.pop("mask", None)
        text = _message(c)
        c["message"] = text
        (flags if c["confirmed"] else notes).append(text)
        out["candidates"].append(c)
    out["flags"] = flags
    out["notes"] = notes
    return out


def _dilations(
    patches: np.ndarray, image_shape: Sequence[int], dilations: Sequence[int]
) -> list[tuple[int, np.ndarray]]:
    """The discovered region grown by ``d`` patches on every side, for each ``d``.

    Why: a CAM is computed on a coarse layer whose units see far beyond their own cell, so
    the evidence for a token often lands a cell or two beside it (in the findings benchmark,
    10 px below an interior text token at 64 px). Editing only the highlighted cells then
    misses the token; editing a slightly larger area does not.
    """
    out = []
    for d in dilations:
        grown = ndimage.binary_dilation(patches, iterations=d) if d else patches
        out.append((int(d), patches_to_mask(grown, image_shape)))
    return out


def _region_param(region: Any) -> Any:
    from .regions import region_key

    return region_key(region)


def _pct(v: Any) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.0%}"


def _signed(v: Any) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:+.2f}"


def _message(c: dict[str, Any]) -> str:
    """One plain-language sentence: where, who, how much attribution, how much it moves."""
    x0, y0, x1, y1 = c["box"]
    head = (
        f"Positive predictions at {c['where']} put {_pct(c['mean_share'])} of their attribution "
        f"in the {c['location']} (box x {x0}-{x1}, y {y0}-{y1} px) vs "
        f"{_pct(c['rest_mean_share'])} for other positive predictions (n={c['n']})"
    )
    causal = c.get("causal") or {}
    if not causal:
        return head + "; editing the region could not be tested (no model images)."
    parts = []
    grown = [t["dilation"] for t in c.get("tried") or [] if t["dilation"]]
    if grown and not c["confirmed"]:
        parts.append(f"also tried grown by {', '.join(map(str, grown))} patch(es)")
    if c.get("dilation"):
        ex0, ey0, ex1, ey1 = c["edit_box"]
        parts.append(
            f"the edits cover the region grown by {c['dilation']} patches (box x {ex0}-{ex1}, "
            f"y {ey0}-{ey1} px), because a CAM's evidence can sit beside what the model reads"
        )
    for op, verb in (
        ("erase", "erasing it in those images"),
        ("paste", "pasting it onto negative predictions of other groups"),
    ):
        r = causal.get(f"{op}_region") or {}
        ctrl = causal.get(f"{op}_elsewhere") or {}
        peers = causal.get(f"{op}_other_groups") or {}
        did = (causal.get("excess") or {}).get(f"{op}_difference_in_differences") or {}
        controls = f"same edit elsewhere: {_signed(ctrl.get('mean_change'))}"
        if peers:
            controls += (
                f"; same edit on other groups' positive predictions: "
                f"{_signed(peers.get('mean_change'))}; excess over both controls (difference "
                f"in differences): {_signed(did.get('mean'))}, CI {_signed(did.get('ci_low'))} "
                f"to {_signed(did.get('ci_high'))}"
            )
        parts.append(
            f"{verb} changes the score by {_signed(r.get('mean_change'))} (95% CI "
            f"{_signed(r.get('ci_low'))} to {_signed(r.get('ci_high'))}) and flips "
            f"{_pct(r.get('flip_share'))} of decisions (CI {_pct(r.get('flip_ci_low'))}-"
            f"{_pct(r.get('flip_ci_high'))}; {controls})"
        )
    if c["confirmed"]:
        return head + "; " + "; ".join(parts) + ": possible shortcut."
    return (
        head
        + ", but editing the region does not change decisions more than the controls ("
        + "; ".join(parts)
        + ")."
    )


def searched_summary(shortcuts: dict[str, dict[str, Any]]) -> str:
    """One sentence per method on what the shortcut analysis searched and could not.

    For the report's "Nothing flagged" finding: "no suspected shortcut" is only ever said of
    what was searched.
    """
    parts = []
    for method, sc in shortcuts.items():
        searched = str(sc.get("searched") or "").rstrip(".")
        missing = list(sc.get("not_searched") or [])
        if not searched:
            parts.append(f"{method}: shortcut analysis skipped ({'; '.join(missing) or 'n/a'}).")
            continue
        text = f"{method}: searched {searched}."
        if missing:
            text += f" Not searched (too few positive predictions): {'; '.join(missing)}."
        parts.append(text)
    return " ".join(parts)
