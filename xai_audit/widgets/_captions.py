"""Plain-language sentences for clinicians: what a number means, without jargon."""

from __future__ import annotations

import math


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def confidence_caption(
    score: float,
    class_name: str,
    bin_low: float,
    bin_high: float,
    n_similar: int,
    observed_rate: float,
    min_cases: int = 10,
) -> str:
    """What the probability means on this data set (its observed reliability)."""
    head = f"The model gives this image a {_pct(score)} score for '{class_name}'."
    if n_similar < min_cases or not math.isfinite(observed_rate):
        return (
            f"{head} Too few other cases in this data set received a similar score "
            f"({n_similar} between {_pct(bin_low)} and {_pct(bin_high)}) to say how often such a "
            "score is right; treat it as uncalibrated."
        )
    gap = observed_rate - score
    if abs(gap) < 0.1:
        verdict = "so on this data set the score can be read roughly as a probability."
    elif gap < 0:
        verdict = "so on this data set the model tends to be over-confident at this score."
    else:
        verdict = "so on this data set the model tends to be under-confident at this score."
    return (
        f"{head} Of the {n_similar} other cases in this data set that scored between "
        f"{_pct(bin_low)} and {_pct(bin_high)}, {_pct(observed_rate)} actually had "
        f"'{class_name}', {verdict}"
    )


def method_caption(method: str, class_name: str) -> str:
    """One sentence on what a method's map shows."""
    what = {
        "gradcam": "coarse regions whose features most raised",
        "gradcam++": "coarse regions whose features most raised",
        "scorecam": "coarse regions that, kept alone, most raised",
        "integrated_gradients": "pixels that, added step by step from a blank image, raised",
        "saliency": "pixels to which the score is most sensitive for",
        "occlusion": "patches whose covering most lowered",
        "shap": "pixels estimated to contribute most to",
    }.get(method.lower(), "areas the method attributes most of")
    return f"{method}: warm colours mark {what} the score for '{class_name}'."


def quality_caption(
    method: str,
    pointing_game: float,
    mass_in_mask: float,
    shortcut_share: float,
    shortcut_chance: float,
    deletion_advantage: float,
) -> str:
    """Plain-language reading of one map's quality indicators for this case."""
    parts = []
    if math.isfinite(pointing_game):
        parts.append(
            "its strongest point lies on the marked lesion"
            if pointing_game >= 1
            else "its strongest point lies outside the marked lesion"
        )
    if math.isfinite(mass_in_mask):
        parts.append(f"{_pct(mass_in_mask)} of its evidence falls inside the lesion outline")
    if math.isfinite(shortcut_share):
        level = "more than" if shortcut_share > 2 * shortcut_chance else "about what chance gives"
        extra = (
            f" ({_pct(shortcut_share)} vs {_pct(shortcut_chance)} for an even spread)"
            if math.isfinite(shortcut_chance)
            else ""
        )
        if shortcut_share > 2 * shortcut_chance:
            parts.append(
                f"{_pct(shortcut_share)} of its evidence sits at the image border or corners, "
                f"{level} expected{extra}: check for markers or text the model may rely on"
            )
        else:
            parts.append(f"little evidence at the border or corners{extra}")
    if math.isfinite(deletion_advantage):
        parts.append(
            "erasing the highlighted areas lowers the score faster than erasing random areas "
            "(the map reflects what the model uses)"
            if deletion_advantage > 0
            else "erasing the highlighted areas lowers the score no faster than random erasing "
            "(the map may not reflect what the model uses)"
        )
    if not parts:
        return f"{method}: no quality indicators are available for this case."
    return f"{method}: " + "; ".join(parts) + "."
