"""The batch phase on Ray: actors that hold the model compute shards, the driver stores them.

Each worker is a Ray actor holding one copy of the :class:`~xai_audit.model.ModelAdapter`
(on one GPU when the cluster has GPUs, else on one CPU), the manifest and the
:class:`~xai_audit.audit.batch.BatchTask`. It reads a batch's images through the manifest
(so the image paths must be readable from every node: a shared file system or a mounted
bucket) and runs the very :func:`~xai_audit.audit.batch.compute_batch` of a local run; the
driver writes the returned arrays through the same
:class:`~xai_audit.audit.store.ShardStore` (atomic shard, SHA-256 in ``run_state.json``).
Only the driver touches the result folder, so the folder lock, resume and shard checksums
work unchanged, across backends: a local run resumes a Ray run's shards and vice versa.

Failures: an actor that dies (killed process, lost node, out-of-memory kill) is restarted
and its unfinished batches are retried by Ray (``max_restarts`` / ``max_task_retries``);
a batch that raises (an unreadable image) stops the run like a local one, keeping every
finished shard.

Ray is an optional dependency (``pip install "xai-audit[ray]"``); it is imported only here.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ..batch import BatchTask, compute_batch
from ..store import ShardStore

log = logging.getLogger(__name__)

#: Restarts of a dead actor and retries of its unfinished batches before the run fails.
MAX_RESTARTS = 3
#: Batches queued on each actor at a time (hides the driver round trip between batches).
IN_FLIGHT = 2


def import_ray() -> Any:
    """``ray``, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='ray' needs Ray: pip install \"xai-audit[ray]\" (or pip install "
            "\"ray[data]>=2.9\"), or run with backend='local'."
        ) from exc
    return ray


def _move_to(model: Any, device: str) -> None:
    """Put a ModelAdapter (weights and device attribute) on ``device``."""
    import torch

    model.device = torch.device(device)
    model.model.to(model.device)


class BatchWorker:
    """One Ray actor: a model copy that turns batch numbers into shard arrays.

    Parameters
    ----------
    model : ModelAdapter
    data : Manifest
    task : BatchTask
    batch_size : int
    torch_threads : int, optional
        Intra-op threads of torch in this actor (default: Ray's setting, the actor's CPUs).
    """

    def __init__(
        self,
        model: Any,
        data: Any,
        task: BatchTask,
        batch_size: int,
        torch_threads: int | None = None,
    ) -> None:
        import torch

        ray = import_ray()
        if torch.cuda.is_available() and ray.get_gpu_ids():
            _move_to(model, "cuda")  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
        elif str(model.device) != "cpu" and not torch.cuda.is_available():
            _move_to(model, "cpu")  # a driver's CUDA model on a CPU-only worker
        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.model = model
        self.data = data
        self.task = task
        self.batch_size = int(batch_size)

    def rows(self, k: int) -> np.ndarray:
        """Manifest rows of batch ``k`` (as in the local loop)."""
        return np.arange(k * self.batch_size, min((k + 1) * self.batch_size, len(self.data)))

    def compute(self, k: int) -> tuple[int, dict[str, np.ndarray]]:
        """Load batch ``k`` through the manifest and compute its shard arrays."""
        rows = self.rows(k)
        images = self.data.load_images(rows)
        masks = self.data.load_masks(rows) if self.task.localisation else None
        return k, compute_batch(self.model, images, rows, self.task, masks=masks)

    def info(self) -> dict[str, Any]:
        """Where this actor runs (pid, host, device), for logs and tests."""
        import socket

        return {"pid": os.getpid(), "host": socket.gethostname(), "device": str(self.model.device)}


def resolve_target_layer(model: Any, data: Any, task: BatchTask, first_rows: np.ndarray) -> None:
    """Find the CAM target layer here, before the model is shipped to the actors.

    In a local run the first CAM call finds it on the driver's model and the runner records
    it; actors work on copies, so it is found once on the driver instead (the same search
    on the same first batch), and every actor explains with the same layer.
    """
    from ...explain import get_method
    from ...explain.cam import _CamExplainer

    cams = [
        m
        for m in task.methods
        if issubclass(get_method(m.name), _CamExplainer) and m.params.get("target_layer") is None
    ]
    if cams and model.target_layer_name is None:
        model.target_layer(data.load_images(first_rows[:1]))


def plan_workers(ray: Any, n_todo: int, workers: int | None) -> tuple[int, dict[str, float]]:
    """How many actors to start and the resources of each.

    One actor per GPU when the cluster has GPUs, else one per CPU; never more actors than
    batches to compute.
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if workers is None:
        workers = gpus if gpus else max(1, int(resources.get("CPU", 1)))
    per_actor = {"num_cpus": 1.0, "num_gpus": 1.0 if gpus else 0.0}
    return max(1, min(int(workers), n_todo)), per_actor


def run_batches(
    model: Any,
    data: Any,
    store: ShardStore,
    task: BatchTask,
    todo: list[int],
    n_batches: int,
    batch_size: int,
    *,
    address: str | None = None,
    workers: int | None = None,
    torch_threads: int | None = None,
    on_batch: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Compute the batches ``todo`` on Ray actors and write their shards into ``store``.

    Parameters
    ----------
    model, data, store, task, todo, n_batches, batch_size
        As in the local loop of :class:`~xai_audit.audit.Audit`.
    address : str, optional
        Ray cluster to connect to (``"auto"``, ``"ray://head:10001"``); default: the Ray
        already initialised in this process, else ``RAY_ADDRESS``, else a local Ray started
        for this run (and shut down after it).
    workers : int, optional
        Number of actors (default one per GPU, else one per CPU of the cluster).
    torch_threads : int, optional
        torch threads per actor.
    on_batch : callable, optional
        ``on_batch(k, n_batches, "computed")`` after each shard is written.

    Returns
    -------
    dict
        ``{"backend": "ray", "workers": n, "address": ...}`` for the provenance.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    elif address is not None:
        log.info("Ray is already initialised in this process; ray_address=%r not used.", address)
    actors: list[Any] = []
    pending: dict[Any, tuple[int, Any]] = {}
    try:
        if not todo:
            return {"backend": "ray", "workers": 0}
        n_workers, per_actor = plan_workers(ray, len(todo), workers)
        k0 = todo[0]
        resolve_target_layer(
            model, data, task, np.arange(k0 * batch_size, min((k0 + 1) * batch_size, len(data)))
        )
        # One copy of each input in the object store, shared by all actors (and by restarts).
        refs = [ray.put(model), ray.put(data), ray.put(task)]
        actor_cls = ray.remote(
            max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS, **per_actor
        )(BatchWorker)
        actors = [actor_cls.remote(*refs, batch_size, torch_threads) for _ in range(n_workers)]
        log.info(
            "Ray backend: %d batches on %d actor(s) (%s each)", len(todo), n_workers, per_actor
        )
        queue = deque(todo)

        def submit(actor: Any) -> None:
            k = queue.popleft()
            pending[actor.compute.remote(k)] = (k, actor)

        for _ in range(IN_FLIGHT):
            for actor in actors:
                if queue:
                    submit(actor)
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            k, actor = pending.pop(ready)
            try:
                k_done, arrays = ray.get(ready)
            except ray.exceptions.RayTaskError as exc:  # the batch itself raised
                raise exc.as_instanceof_cause() from None
            assert k_done == k
            store.write(k, arrays)
            if on_batch is not None:
                on_batch(k, n_batches, "computed")
            if queue:
                submit(actor)
        return {"backend": "ray", "workers": n_workers}
    finally:
        for actor in actors:  # also ends the batches still queued after a failure
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
        if started_here:
            ray.shutdown()
