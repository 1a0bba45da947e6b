"""Engines that run the batch phase of an audit (the local loop lives in the runner).

``"local"`` is the default; ``"ray"`` (:mod:`xai_audit.audit.backends.ray_backend`) runs the
same :func:`~xai_audit.audit.batch.compute_batch` on Ray actors across a cluster and writes
the same shards through the same :class:`~xai_audit.audit.store.ShardStore`.
"""

from __future__ import annotations

#: Names accepted by ``Audit(..., backend=...)`` and the config key ``backend``.
BACKENDS = ("local", "ray")


def check_backend(backend: object, ray_address: object = None, ray_workers: object = None) -> list:
    """Problem messages for the backend settings (empty when they are valid)."""
    problems = []
    if backend not in BACKENDS:
        problems.append(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if ray_address is not None and not isinstance(ray_address, str):
        problems.append(
            f"ray_address must be a string such as 'auto' or 'ray://head:10001', got "
            f"{ray_address!r}"
        )
    if ray_workers is not None and (
        isinstance(ray_workers, bool) or not isinstance(ray_workers, int) or ray_workers < 1
    ):
        problems.append(f"ray_workers must be a positive integer, got {ray_workers!r}")
    if backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            problems.append(
                "backend 'ray' needs Ray, which is not installed: pip install "
                '"xai-audit[ray]" (or "ray[data]>=2.9"), or use backend: local'
            )
    if backend == "local" and (ray_address is not None or ray_workers is not None):
        problems.append(
            "ray_address / ray_workers are set but backend is 'local'; set backend: ray to run "
            "on Ray, or remove them"
        )
    return problems
