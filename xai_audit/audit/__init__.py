"""The audit: one run from a model and a manifest to a saved result, an HTML report and JSON.

>>> from xai_audit.audit import Audit, AuditResult
>>> result = Audit(model, manifest, sensitive=["sex", "age_group", "site"],
...                methods=["gradcam", "integrated_gradients"], output_dir="audits/demo").run()
>>> result.report("reports/audit.html")
>>> AuditResult.load("audits/demo").subgroups.by_group

Predictions and attributions are computed batch by batch and written as shards (see
:mod:`xai_audit.audit.store`), so memory does not grow with the number of images and an
interrupted run resumes; :func:`xai_audit.audit.batch.compute_batch` is the pure per-batch
function a cluster engine can map over.
"""

from __future__ import annotations

from .batch import BatchTask, MethodSpec, compute_batch
from .config import AuditConfig, ConfigError, load_config, run_config
from .criteria import CriteriaError, evaluate_criteria, load_criteria, overall_verdict
from .result import AuditResult, ResultError
from .runner import Audit
from .store import FolderLockedError, NotOwnedError

__all__ = [
    "Audit",
    "AuditConfig",
    "AuditResult",
    "BatchTask",
    "ConfigError",
    "CriteriaError",
    "FolderLockedError",
    "MethodSpec",
    "NotOwnedError",
    "ResultError",
    "compute_batch",
    "evaluate_criteria",
    "load_criteria",
    "overall_verdict",
    "load_config",
    "run_config",
]
