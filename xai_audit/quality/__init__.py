"""Can the explanation be trusted? Faithfulness, localisation, sanity checks, shortcuts.

- :func:`deletion_insertion`: deletion/insertion curves vs a random-attribution reference.
- :func:`localisation`: pointing game, relevance mass, rank accuracy, top-k IoU vs masks.
- :func:`sanity_check`: cascading model-parameter randomisation (Adebayo et al., 2018).
- :func:`shortcut_mass` and :func:`detect_shortcuts`: attribution in a named region,
  compared across subgroups and predicted classes.
- :func:`attribution_grid`, :func:`discover_regions`, :func:`confirm_region` and
  :func:`analyse_shortcuts`: shortcut discovery anywhere in the image, confirmed by erasing
  and pasting the region (against matched controls).
- :func:`by_subgroup`: any per-image number by subgroup and intersection, with CIs.
"""

from .faithfulness import (
    FaithfulnessResult,
    deletion_insertion,
    faithfulness_verdict,
    make_baseline,
    verdict_rule,
)
from .groups import iter_groups
from .imputation import linear_impute
from .localisation import LocalisationResult, localisation
from .regions import (
    border_corners_mask,
    border_mask,
    boxes_to_masks,
    check_region,
    corner_mask,
    region_mask,
)
from .sanity import SanityResult, cascade_verdict, edge_detector, label_verdict, sanity_check
from .shortcut import ShortcutResult, detect_shortcuts, region_fraction, shortcut_mass
from .shortcut_analysis import analyse_shortcuts
from .shortcut_causal import ConfirmationResult, confirm_region
from .shortcut_discovery import DiscoveryResult, attribution_grid, discover_regions
from .stats import bootstrap_ci, holm
from .subgroup import by_subgroup

__all__ = [
    "ConfirmationResult",
    "DiscoveryResult",
    "FaithfulnessResult",
    "LocalisationResult",
    "SanityResult",
    "ShortcutResult",
    "analyse_shortcuts",
    "attribution_grid",
    "bootstrap_ci",
    "border_corners_mask",
    "border_mask",
    "boxes_to_masks",
    "by_subgroup",
    "cascade_verdict",
    "check_region",
    "confirm_region",
    "corner_mask",
    "deletion_insertion",
    "detect_shortcuts",
    "discover_regions",
    "edge_detector",
    "faithfulness_verdict",
    "holm",
    "iter_groups",
    "label_verdict",
    "linear_impute",
    "localisation",
    "make_baseline",
    "region_fraction",
    "region_mask",
    "sanity_check",
    "verdict_rule",
    "shortcut_mass",
]
