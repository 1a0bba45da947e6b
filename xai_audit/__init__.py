"""xai_audit: explainability and bias audits for medical imaging models.

The public names below are imported lazily, so that ``import xai_audit`` (and the CLI's
``--help``) does not pay for torch, captum, shap and fairlearn until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

_LAZY = {
    "ModelAdapter": "xai_audit.model",
    "load_demo_model": "xai_audit.model",
    "load_manifest": "xai_audit.data",
    "manifest_from_arrays": "xai_audit.data",
    "manifest_from_dicom": "xai_audit.data",
    "Manifest": "xai_audit.data",
    "explain": "xai_audit.explain",
    "evaluate_subgroups": "xai_audit.fairness",
    "Audit": "xai_audit.audit",
    "AuditResult": "xai_audit.audit",
    "make_synthetic_cxr": "xai_audit.datasets",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xai_audit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
