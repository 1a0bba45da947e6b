"""Map-free shortcut search: paste each window of a group's images onto other groups' negatives.

Attribution maps can miss a shortcut that the model uses. In the findings benchmark (fresh
seed 14) a 4x4-pixel square in the image centre on 90 % of site B's positives turned 37 % of
clean negatives positive when pasted on them, yet Grad-CAM put only 1.1-1.3x the other sites'
share on it: the lesion took the maps of the images that carry the token. The discovery of
:mod:`.shortcut_discovery`, which reads the maps, cannot find such a token; this scan asks the
model directly.

For each subgroup, seeded samples of other groups' negative predictions (the recipients), of
the group's positive predictions and of the other groups' positive predictions are paired. For
a window ``w`` of a grid (side 1/4 of the image, stride 1/8: 7 x 7 windows), recipient ``i``
gets window ``w`` of the group's image ``i`` in one copy and of the peer's image ``i`` in
another, and

    d_i(w) = score(recipient_i with the group's window) - score(recipient_i with the peer's)

A token on nearly every image of the group raises the score of most recipients, so the
*typical* ``d_i`` is large. Lesions carried by the windows appear in both arms and cancel on
average; lesions that cluster by chance in one group's window move only the few pairs whose
source has one, and content that differs slightly between sites (brightness, noise, blur)
moves many pairs by little. The test is therefore a sign test on a margin: the number of pairs
with ``d_i >= min_change`` (0.05), one-sided binomial against 1/2 (H0: the median ``d`` is
below ``min_change``).

Two stages keep the cost at about ``2 x (49 x 8 + 64)`` model calls per subgroup instead of
``2 x 49 x 64``: every window is *screened* on 8 pairs to choose the group's window (most pairs
at the margin, then the largest median), and only that window is *tested* on 64 fresh pairs.
The choice uses other pairs than the test, so it cannot inflate the test, and one test per
group is made: the level is ``alpha`` Bonferroni-adjusted over the groups. (A first version
kept the level of testing all windows, ``alpha / (49 x groups)``; on 80 findings-benchmark runs
two tokens passed it only just, 47 of 64 pairs at p = 1.1e-4 against 1.3e-4, while the best
window of the 624 groups without a token, on the fresh pairs, reached at most 36 of 64; the
group-level level needs about 43 of 64 for 8 groups.) A window picked out by the best-of-49
screening on the *same* pairs looks stronger (a blurred site's best window reached 31 of 48 in
an all-window run, 65 %), which is why the test's pairs are fresh. The window found becomes a
candidate region, confirmed or not by the edits of :func:`.shortcut_causal.confirm_region`,
like a region found in the maps.

Why a margin and a sign test rather than a mean: in the findings benchmark (tokens at seeds
13-15 and six runs with no token; all windows tested on 48 pairs), tokens reached 39-41 of 48
pairs at ``d >= 0.05`` (p <= 8e-6), while no window of any group without a token passed 31 of
48 (p >= 0.03), including lesion clusters that had fooled map-based rules and whole sites that
are blurrier; the mean ``d`` of those reached +0.30 from a few large pairs.

Written by hand:
no maintained library scans pasted windows between groups.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .groups import group_labels
from .shortcut_causal import MIN_SCORE_CHANGE

#: Window side and stride as fractions of the image side: 7 x 7 windows of 1/16 of the image.
WINDOW_FRACTION = 0.25
STRIDE_FRACTION = 0.125
#: Bump when the scan's rule changes: saved scans of an earlier rule are then recomputed.
SCAN_VERSION = 4  # 4: group names by the rule of every other table
#: Most edited images per model call (memory stays ~ this many images).
CHUNK_IMAGES = 512


def scan_windows(spatial: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x0, y0, x1, y1)`` of the scan's windows on an ``H x W`` image.

    Side ``WINDOW_FRACTION`` and stride ``STRIDE_FRACTION`` of each side; the last window of a
    row or column touches the edge.
    """
    h, w = int(spatial[-2]), int(spatial[-1])

    def starts(n: int) -> list[int]:
        side = max(1, int(round(n * WINDOW_FRACTION)))
        stride = max(1, int(round(n * STRIDE_FRACTION)))
        s = list(range(0, n - side + 1, stride))
        if s[-1] != n - side:
            s.append(n - side)
        return s

    sy, sx = max(1, int(round(h * WINDOW_FRACTION))), max(1, int(round(w * WINDOW_FRACTION)))
    return [(x, y, x + sx, y + sy) for y in starts(h) for x in starts(w)]


def _pair_excess(
    score: Callable[[np.ndarray], np.ndarray],
    recipients: np.ndarray,
    group_src: np.ndarray,
    peer_src: np.ndarray,
    windows: Sequence[tuple[int, int, int, int]],
) -> np.ndarray:
    """``windows x n`` score differences: recipient with the group's window minus the peer's."""
    n = len(recipients)
    per_call = max(1, CHUNK_IMAGES // (2 * n))
    out = np.empty((len(windows), n), dtype=np.float64)
    for start in range(0, len(windows), per_call):
        chunk = windows[start : start + per_call]
        edited = np.repeat(recipients[None], 2 * len(chunk), axis=0)  # (2k, n, C, H, W)
        for j, (x0, y0, x1, y1) in enumerate(chunk):
            edited[2 * j, ..., y0:y1, x0:x1] = group_src[..., y0:y1, x0:x1]
            edited[2 * j + 1, ..., y0:y1, x0:x1] = peer_src[..., y0:y1, x0:x1]
        s = np.asarray(score(edited.reshape(-1, *recipients.shape[1:])), dtype=np.float64)
        s = s.reshape(len(chunk), 2, n)
        out[start : start + len(chunk)] = s[:, 0] - s[:, 1]
    return out


def paste_scan(
    score: Callable[[np.ndarray], np.ndarray],
    load_images: Callable[[np.ndarray], np.ndarray],
    attributes: pd.DataFrame,
    predicted: np.ndarray,
    image_shape: Sequence[int],
    *,
    min_change: float = MIN_SCORE_CHANGE,
    alpha: float = 0.05,
    sample_size: int = 64,
    screen_pairs: int = 8,
    min_group_size: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Search every subgroup for a window whose content raises other groups' scores.

    Parameters
    ----------
    score : callable
        ``score(images) -> (n,)``, the model's score of the audited class.
    load_images : callable
        ``load_images(rows) -> images`` (``n x C x H x W``), manifest rows.
    attributes : DataFrame
        Sensitive attributes, one row per image (manifest order).
    predicted : array ``(N,)``
        1 for a positive prediction at the audit threshold, else 0.
    image_shape : (H, W)
        2D images only (the caller reports 3D volumes as not scanned).
    min_change : float, default 0.05
        The margin: a pair counts when the group's window raises the recipient's score at
        least this much more than the peer's window.
    alpha : float, default 0.05
        Family-wise level, Bonferroni over the groups tested (one test per group).
    sample_size : int, default 64
        Pairs of the test (stage 2) per group (fewer when a side has fewer images), seeded.
    screen_pairs : int, default 8
        Pairs on which every window is screened (stage 1) to choose the group's window;
        disjoint from the test's pairs (at most a quarter of them when a group is small).
    min_group_size : int, default 10
        Fewest positive predictions in the group, positive and negative predictions outside
        it, for the group to be tested.

    Returns
    -------
    dict
        ``table`` (DataFrame, one row per tested group: ``attribute, group, n_screen,
        n_pairs, x0, y0, x1, y1`` (the screened window), ``n_exceed`` (test pairs with
        ``d >= min_change``),
        ``share_exceed, median_excess, mean_excess, p_value, level, candidate, reason``),
        ``searched`` (words), ``not_searched`` (list), ``params``.
    """
    if len(image_shape) != 2:
        raise ValueError("the paste scan handles 2D images only.")
    pred = np.asarray(predicted).astype(int)
    attributes = attributes.reset_index(drop=True)
    windows = scan_windows(image_shape)
    plan, not_searched = [], []
    for attr in attributes.columns:
        # The group names every other table uses (1.0 and 1 -> "1", missing -> "missing"):
        # the candidates are confirmed by rows selected by name, and a "1.0" or "nan" from
        # str() selected none.
        labels, order = group_labels(attributes[attr])
        for group in order:
            inside = labels == group
            sides = (inside & (pred == 1), ~inside & (pred == 1), ~inside & (pred == 0))
            n_side = [int(s.sum()) for s in sides]
            if min(n_side) < max(min_group_size, 2):  # a screening pair and a test pair
                not_searched.append(
                    f"{attr}={group} ({n_side[0]} positive predictions, {n_side[1]} positive "
                    f"and {n_side[2]} negative predictions outside it)"
                )
                continue
            plan.append((attr, group, sides))
    n_tests = max(1, len(plan))
    level = alpha / n_tests
    rows = []
    for attr, group, sides in plan:
        # Each group draws from its own stream: its verdict must not depend on the others.
        key = zlib.crc32(f"{attr}={group}".encode())
        rng = np.random.default_rng(np.random.SeedSequence([seed, key]))
        total = min(screen_pairs + sample_size, *(int(s.sum()) for s in sides))
        # A small group gives the screening at most a quarter of its pairs.
        full = total == screen_pairs + sample_size
        n_screen = screen_pairs if full else max(1, min(screen_pairs, total // 4))
        picks = [rng.choice(np.flatnonzero(s), total, replace=False) for s in sides]
        images = [np.asarray(load_images(np.sort(p)), np.float32) for p in picks]
        # load_images wants sorted rows; put the images back in the drawn (random) order.
        images = [x[np.argsort(np.argsort(p))] for x, p in zip(images, picks)]
        group_src, peer_src, recipients = images
        # Stage 1, screening: every window on a few pairs, to choose the group's window.
        screen = slice(0, n_screen)
        d1 = _pair_excess(score, recipients[screen], group_src[screen], peer_src[screen], windows)
        count1 = (d1 >= min_change).sum(axis=1)
        best = int(np.lexsort((-np.median(d1, axis=1), -count1))[0])
        # Stage 2, the test: the chosen window on fresh pairs.
        n = min(sample_size, total - n_screen)
        test = slice(n_screen, n_screen + n)
        (d,) = _pair_excess(score, recipients[test], group_src[test], peer_src[test],
                            [windows[best]])  # fmt: skip
        exceed = int((d >= min_change).sum())
        p = float(stats.binom.sf(exceed - 1, n, 0.5))
        ok = bool(p < level)
        if ok:
            reason = ""
        elif 0.5**n >= level:
            reason = (
                f"too few pairs ({n}) to reach the level {level:.2g} even if every pair "
                "exceeded the margin"
            )
        else:
            reason = (
                f"no window whose content raises most recipients' scores: the screened best "
                f"raised {exceed} of {n} fresh pairs by >= {min_change:g} (p={p:.2g}; needs "
                f"p < {level:.2g})"
            )
        x0, y0, x1, y1 = windows[best]
        rows.append(
            {
                "attribute": attr,
                "group": group,
                "n_screen": n_screen,
                "n_pairs": n,
                "x0": x0,
                "y0": y0,
                "x1": x1,
                "y1": y1,
                "n_exceed": exceed,
                "share_exceed": exceed / n if n else float("nan"),
                "median_excess": float(np.median(d)) if n else float("nan"),
                "mean_excess": float(d.mean()) if n else float("nan"),
                "p_value": p,
                "level": level,
                "candidate": ok,
                "reason": reason,
            }
        )
    columns = ["attribute", "group", "n_screen", "n_pairs", "x0", "y0", "x1", "y1", "n_exceed",
               "share_exceed", "median_excess", "mean_excess", "p_value", "level",
               "candidate", "reason"]  # fmt: skip
    side = windows[0][2] - windows[0][0], windows[0][3] - windows[0][1]
    searched = (
        f"a paste scan of {len(windows)} windows ({side[0]}x{side[1]} px, 1/16 of the image) "
        f"for each of {len(plan)} subgroups: other groups' negative predictions get the window "
        "from one of the group's positive predictions and from one of the other groups'; the "
        f"window chosen on {screen_pairs} pairs is a candidate when most of up to "
        f"{sample_size} fresh pairs rise by >= {min_change:g} more with the group's content "
        f"(sign test, Bonferroni over {n_tests} groups)"
    )
    return {
        "table": pd.DataFrame(rows, columns=columns),
        "searched": searched,
        "not_searched": not_searched,
        "params": {
            "windows": len(windows),
            "window_fraction": WINDOW_FRACTION,
            "stride_fraction": STRIDE_FRACTION,
            "sample_size": sample_size,
            "screen_pairs": screen_pairs,
            "min_change": min_change,
            "alpha": alpha,
            "min_group_size": min_group_size,
            "test": "one-sided sign test of d >= min_change, Bonferroni",
        },
    }
