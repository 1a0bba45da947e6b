"""Can the explanation be trusted? Faithfulness, localisation, sanity checks, shortcuts.

- :func:`deletion_insertion`: deletion/insertion curves vs a random-attribution reference.
- :func:`localisation`: pointing game, relevance mass, rank accuracy, top-k IoU vs masks.
- :func:`sanity_check`: cascading model-parameter randomisation (Adebayo et al., 2018).
- :func:`shortcut_mass` and :func:`detect_shortcuts`: attribution in regions that should
  not matter, compared across subgroups and predicted classes.
- :func:`by_subgroup`: any per-image number by subgroup and intersection, with CIs.
"""

from .faithfulness import FaithfulnessResult, deletion_insertion, make_baseline
from .groups import iter_groups
from .localisation import LocalisationResult, localisation
from .regions import border_corners_mask, border_mask, boxes_to_masks, corner_mask
from .sanity import SanityResult, edge_detector, sanity_check
from .shortcut import ShortcutResult, detect_shortcuts, region_fraction, shortcut_mass
from .stats import bootstrap_ci, holm
from .subgroup import by_subgroup

__all__ = [
    "FaithfulnessResult",
    "LocalisationResult",
    "SanityResult",
    "ShortcutResult",
    "bootstrap_ci",
    "border_corners_mask",
    "border_mask",
    "boxes_to_masks",
    "by_subgroup",
    "corner_mask",
    "deletion_insertion",
    "detect_shortcuts",
    "edge_detector",
    "holm",
    "iter_groups",
    "localisation",
    "make_baseline",
    "region_fraction",
    "sanity_check",
    "shortcut_mass",
]
