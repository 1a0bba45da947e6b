"""Per-batch shards on disk: ``shards/batch_00012.npz`` plus ``run_state.json``.

Each finished batch is written once, atomically (temporary file + ``os.replace``), so an
interrupted run keeps every finished batch and never leaves a half-written shard. The run
state records the hashes of everything that shapes a shard (the batch task and batch size,
the model's weights, the data manifest); a rerun with the same hashes reuses the shards and
computes only the missing batches, and any mismatch starts afresh.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write_bytes, atomic_write_text, dumps, sha256_json

log = logging.getLogger(__name__)

STATE_FILE = "run_state.json"
SHARD_DIR = "shards"
CHECK_DIR = "checks"
#: The keys of the run state that must match for shards to be reused.
HASH_KEYS = ("task_hash", "model_hash", "data_hash", "batch_size", "n_rows")


def shard_name(k: int) -> str:
    """File name of batch ``k``."""
    return f"batch_{k:05d}.npz"


class ShardStore:
    """The shards of one audit run in ``root`` (``root/shards`` and ``root/run_state.json``).

    Parameters
    ----------
    root : str or Path
        The audit's output folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / SHARD_DIR
        self.state_path = self.root / STATE_FILE

    # ------------------------------------------------------------------ state
    def read_state(self) -> dict[str, Any] | None:
        """The recorded run state, or None when there is none (or it is unreadable)."""
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def open(self, state: dict[str, Any], fresh: bool = False) -> int:
        """Get ready to run with ``state``; return how many finished shards can be reused.

        Shards are reused only when every hash in :data:`HASH_KEYS` matches; otherwise (or
        with ``fresh=True``) the old shards are deleted and the run starts afresh.
        """
        old = self.read_state()
        reason = None
        if fresh:
            reason = "a fresh run was requested"
        elif old is not None:
            changed = [k for k in HASH_KEYS if old.get(k) != state.get(k)]
            if changed:
                what = {
                    "task_hash": "audit configuration",
                    "model_hash": "model weights",
                    "data_hash": "data manifest",
                    "batch_size": "batch size",
                    "n_rows": "number of images",
                }
                reason = "the " + ", ".join(what[k] for k in changed) + " changed"
        elif self.shard_dir.exists() and any(self.shard_dir.iterdir()):
            reason = "the shards have no run state"
        if reason is not None and self.shard_dir.exists():
            log.info("Starting afresh in %s: %s.", self.root, reason)
            shutil.rmtree(self.shard_dir)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.state_path, dumps(state))
        done = self.finished()
        if done:
            log.info(
                "Resuming: %d finished batch(es) found in %s are reused.", len(done), self.shard_dir
            )
        return len(done)

    # ------------------------------------------------------------------ shards
    def path(self, k: int) -> Path:
        """Path of batch ``k``'s shard."""
        return self.shard_dir / shard_name(k)

    def finished(self) -> list[int]:
        """Batch numbers whose shard exists."""
        if not self.shard_dir.exists():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in self.shard_dir.glob("batch_*.npz"))

    def has(self, k: int) -> bool:
        """Whether batch ``k`` is finished."""
        return self.path(k).is_file()

    def write(self, k: int, arrays: dict[str, np.ndarray]) -> Path:
        """Write batch ``k``'s shard atomically."""
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return atomic_write_bytes(self.path(k), buf.getvalue())

    def read(self, k: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of batch ``k`` (only ``keys`` when given; maps are large)."""
        with np.load(self.path(k), allow_pickle=False) as data:
            names = data.files if keys is None else [k_ for k_ in keys if k_ in data.files]
            return {name: data[name] for name in names}

    def keys(self, k: int) -> list[str]:
        """Names of the arrays in batch ``k``'s shard."""
        with np.load(self.path(k), allow_pickle=False) as data:
            return list(data.files)

    def iter_tables(self) -> Iterator[dict[str, np.ndarray]]:
        """Every shard's small arrays (everything but the maps), in batch order."""
        for k in self.finished():
            names = [n for n in self.keys(k) if not n.startswith(("maps__", "rows__", "scale__"))]
            yield self.read(k, names)

    def explained_rows(self, method: str) -> np.ndarray:
        """Manifest rows that ``method`` explained (all rows unless it had ``max_images``)."""
        parts = [self.read(k, [f"rows__{method}"]).get(f"rows__{method}") for k in self.finished()]
        parts = [p for p in parts if p is not None]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def iter_maps(self, method: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(indices, maps)`` of one method per shard, maps rescaled to float32."""
        for k in self.finished():
            d = self.read(k, [f"rows__{method}", f"maps__{method}", f"scale__{method}"])
            yield d[f"rows__{method}"], unpack(d[f"maps__{method}"], d[f"scale__{method}"])

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, name: str, key: Any, compute: Callable[[], dict[str, Any]]) -> dict:
        """``compute()``, saved under ``shards/checks/`` and reused while ``key`` is unchanged.

        The aggregation's expensive checks (faithfulness, sanity) take minutes on a CPU; a run
        that stops after some of them keeps those, like finished batches. The folder lives
        with the shards, so a changed model, data or task (which deletes the shards) drops it
        too; ``key`` adds what else the check depends on (its settings and sample).
        """
        from .result import RESULT_FILE, load_tree, save_tree

        folder = self.shard_dir / CHECK_DIR / f"{name}-{sha256_json(key)[:16]}"
        if (folder / RESULT_FILE).is_file():
            try:
                return load_tree(folder)["value"]
            except (OSError, ValueError, KeyError) as exc:
                log.warning("Recomputing %s: its checkpoint is unreadable (%s).", name, exc)
        value = compute()
        save_tree(folder, {"value": value})
        return load_tree(folder)["value"]  # the same types as a reused one

    def maps(self, method: str, rows: Sequence[int] | np.ndarray, batch_size: int) -> np.ndarray:
        """Float32 maps of ``method`` for manifest rows ``rows`` (reads only their shards)."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        out: np.ndarray | None = None
        for k in np.unique(rows // batch_size):
            d = self.read(int(k), [f"rows__{method}", f"maps__{method}", f"scale__{method}"])
            if f"maps__{method}" not in d:
                raise KeyError(f"No maps of method {method!r} are stored.")
            pos = {int(r): j for j, r in enumerate(d[f"rows__{method}"])}
            want = np.flatnonzero(rows // batch_size == k)
            absent = [int(rows[i]) for i in want if int(rows[i]) not in pos]
            if absent:
                raise KeyError(f"{method} did not explain rows {absent[:5]} (max_images sample).")
            take = np.array([pos[int(rows[i])] for i in want], dtype=np.int64)
            maps = unpack(d[f"maps__{method}"][take], d[f"scale__{method}"][take])
            if out is None:
                out = np.empty((len(rows), *maps.shape[1:]), dtype=np.float32)
            out[want] = maps
        if out is None:
            raise ValueError("No rows were requested.")
        return out


def unpack(stored: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Undo :func:`~xai_audit.audit.batch.pack_maps`: float32 maps at their original scale."""
    return stored.astype(np.float32) * scale.reshape((-1,) + (1,) * (stored.ndim - 1))
