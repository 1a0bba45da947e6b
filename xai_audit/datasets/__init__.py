"""Seeded synthetic chest-radiograph-like data with injected, recorded effects.

The generator produces images, lesion masks and a truth table in which a subgroup disparity
(fainter lesions in one age group) and a shortcut (a corner marker at one site that co-occurs
with the positive label) are injected with known sizes, recorded in the data card. A control
mode generates the same data with nothing injected. See ``datasets/README.md``.
"""

from __future__ import annotations

from xai_audit.datasets.card import effect
from xai_audit.datasets.config import GENERATOR_VERSION, SiteAcquisition, SyntheticConfig
from xai_audit.datasets.demo import DEMO_N_SAMPLES, generate_demo_dataset
from xai_audit.datasets.io import load_card, to_uint8
from xai_audit.datasets.multilabel import FindingSpec, MultiLabelDataset, make_multilabel_cxr
from xai_audit.datasets.synthetic import SyntheticDataset, make_synthetic_cxr, synthetic_card

__all__ = [
    "DEMO_N_SAMPLES",
    "FindingSpec",
    "GENERATOR_VERSION",
    "SiteAcquisition",
    "SyntheticConfig",
    "SyntheticDataset",
    "MultiLabelDataset",
    "effect",
    "generate_demo_dataset",
    "load_card",
    "make_multilabel_cxr",
    "make_synthetic_cxr",
    "synthetic_card",
    "to_uint8",
]
