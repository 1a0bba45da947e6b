"""Hidden-stratification (slice) discovery: coherent groups where the model fails.

See :func:`discover_slices`; the README section "Discovered slices" explains how to read them.
"""

from .describe import IMAGE_STATISTICS, describe_slice, image_statistics
from .discover import (
    SLICE_COLUMNS,
    SliceDiscovery,
    SliceInputError,
    discover_slices,
    empty_table,
    holm,
    slice_case_ids,
)
from .embedding import stage_embedding
from .widget import slice_picker

__all__ = [
    "IMAGE_STATISTICS",
    "SLICE_COLUMNS",
    "SliceDiscovery",
    "SliceInputError",
    "describe_slice",
    "discover_slices",
    "empty_table",
    "holm",
    "image_statistics",
    "slice_case_ids",
    "slice_picker",
    "stage_embedding",
]
