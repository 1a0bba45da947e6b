"""Per-batch shards on disk: ``shards/batch_00012.npz`` plus ``run_state.json``.

Each finished batch is written once, atomically (temporary file + ``os.replace``), so an
interrupted run keeps every finished batch and never leaves a half-written shard. The run
state records the hashes of everything that shapes a shard (the batch task and batch size,
the model's weights, the data manifest) and, per finished shard, its row range, size and
SHA-256. A rerun with the same hashes verifies the listed shards, reuses the sound ones and
recomputes the rest (a damaged shard with a warning naming it); any hash mismatch starts
afresh.

The result folder belongs to xai_audit: :func:`claim_folder` writes a ``.xai_audit`` marker
into a new or empty folder and refuses a non-empty folder without one unless told to
``overwrite``; files are deleted only when the run state (or ``result.json``) lists them as
written by xai_audit. :class:`FolderLock` keeps two runs out of one folder at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ._io import atomic_write_bytes, atomic_write_text, dumps, sha256_file, sha256_json

log = logging.getLogger(__name__)

STATE_FILE = "run_state.json"
SHARD_DIR = "shards"
CHECK_DIR = "checks"
#: Marker file of a folder that xai_audit created (or was allowed to write into).
MARKER_FILE = ".xai_audit"
#: Version of the folder layout the marker announces.
FOLDER_FORMAT = 1
LOCK_FILE = ".xai_audit.lock"
LOCK_INFO_FILE = ".xai_audit.lock.json"
#: Version of ``run_state.json``; 2 added per-shard checksums and the written-file lists.
STATE_FORMAT = 2
#: The keys of the run state that must match for shards to be reused.
HASH_KEYS = ("task_hash", "model_hash", "data_hash", "batch_size", "n_rows")


class NotOwnedError(FileExistsError):
    """xai_audit would write over files (or into a folder) that it did not create."""


class FolderLockedError(RuntimeError):
    """Another run holds the lock on the result folder."""


def shard_name(k: int) -> str:
    """File name of batch ``k``."""
    return f"batch_{k:05d}.npz"


# ------------------------------------------------------------------------------ ownership
def _written_before_markers(root: Path) -> bool:
    """True for a result folder of an xai_audit from before the marker file existed.

    Those folders (e.g. ``reports/demo_audit`` of an earlier ``make demo``) hold a
    ``run_state.json`` with xai_audit's own keys; refusing them would make every existing user
    pass ``overwrite=True`` once for their own results.
    """
    try:
        state = json.loads((root / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    keys = {"model_hash", "data_hash", "task_hash", "xai_audit"}
    return isinstance(state, dict) and keys <= set(state)


def claim_folder(root: str | Path, *, overwrite: bool = False) -> Path:
    """Make sure xai_audit may write into ``root``; create it (with its marker) if needed.

    A folder is xai_audit's when it carries the ``.xai_audit`` marker. A missing or empty
    folder gets one. A non-empty folder without it is refused (:class:`NotOwnedError`) unless
    ``overwrite`` is True: then the marker is added and the audit's files replace files of the
    same names (``result.json``, ``arrays.npz``, ``run_state.json``, ``report.html``,
    ``tables/``, ``shards/``); nothing else in the folder is deleted or changed.

    Returns
    -------
    Path
        ``root``.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"The output folder {str(root)!r} is a file; give output_dir a new or empty folder."
        )
    marker = root / MARKER_FILE
    if marker.is_file():
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        version = info.get("format", 1) if isinstance(info, dict) else 1
        if isinstance(version, int) and version > FOLDER_FORMAT:
            raise NotOwnedError(
                f"{str(root)!r} was written by a newer xai_audit (folder format {version}; this "
                f"version {__version__} knows {FOLDER_FORMAT}); upgrade xai_audit or choose "
                "another output folder."
            )
        return root
    own = (LOCK_FILE, LOCK_INFO_FILE)  # a run may lock a folder before claiming it
    entries = sorted(p.name for p in root.iterdir() if p.name not in own) if root.is_dir() else []
    if entries and not overwrite and _written_before_markers(root):
        log.warning(
            "%s is a result folder of an earlier xai_audit (before folder markers); claiming it.",
            root,
        )
        entries = []
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise NotOwnedError(
            f"The output folder {str(root)!r} is not empty ({shown}) and was not created by "
            f"xai_audit (it has no {MARKER_FILE} marker), so nothing is written there. Choose a "
            "new or empty folder, or pass overwrite=True (CLI: --overwrite) to write the "
            "result into it: files with the result's names (result.json, arrays.npz, "
            "run_state.json, report.html, tables/, shards/) are then replaced, nothing else "
            "is touched."
        )
    if entries:
        log.warning(
            "Writing the audit into %s, which xai_audit did not create (overwrite=True).", root
        )
    root.mkdir(parents=True, exist_ok=True)
    from .provenance import utc_now

    atomic_write_text(
        marker,
        dumps(
            {
                "tool": "xai_audit",
                "format": FOLDER_FORMAT,
                "xai_audit": __version__,
                "created_utc": utc_now(),
                "note": "An xai_audit result folder: xai_audit writes and deletes its own "
                "files here.",
            }
        ),
    )
    return root


# ------------------------------------------------------------------------------ lock
def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError, OverflowError) as exc:
        return isinstance(exc, PermissionError)  # exists, owned by someone else
    return True


class FolderLock:
    """An exclusive lock on a result folder (``filelock``), with who holds it.

    The holder's pid, host and start time go to ``.xai_audit.lock.json``; a second run
    fails at once with :class:`FolderLockedError` naming them. The lock itself is an OS file
    lock, released when its process dies; the info file a killed holder leaves behind is
    then taken over with a warning.

    Examples
    --------
    >>> with FolderLock("audits/run1"):
    ...     ...  # write into the folder
    """

    def __init__(self, root: str | Path) -> None:
        from filelock import FileLock

        self.root = Path(root)
        self.info_path = self.root / LOCK_INFO_FILE
        self._lock = FileLock(str(self.root / LOCK_FILE), timeout=0)

    def holder(self) -> dict[str, Any]:
        """What the info file says about the holder (empty when unreadable)."""
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def describe(info: dict[str, Any]) -> str:
        """``pid 123 on host x, started 2026-...``."""
        if not info:
            return "holder unknown"
        return (
            f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started_utc')}"
        )

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderLockedError` at once."""
        from filelock import Timeout

        from .provenance import utc_now

        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise FolderLockedError(
                f"Another xai_audit run is writing to {str(self.root)!r} "
                f"({self.describe(self.holder())}). Wait for it to finish, or give this run "
                "another output folder."
            ) from None
        old = self.holder()
        if old:
            alive = old.get("host") == socket.gethostname() and _pid_alive(old.get("pid"))
            log.warning(
                "Took over the lock on %s left by a run that %s (%s).",
                self.root,
                "no longer holds it" if alive else "is gone",
                self.describe(old),
            )
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_utc": utc_now()}
        atomic_write_text(self.info_path, dumps(info))
        return self

    def release(self) -> None:
        """Release the lock (and remove the info file)."""
        self.info_path.unlink(missing_ok=True)
        self._lock.release()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ------------------------------------------------------------------------------ shards
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
        self._state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ state
    def read_state(self) -> dict[str, Any] | None:
        """The recorded run state, or None when there is none (or it is unreadable)."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    @property
    def state(self) -> dict[str, Any]:
        """The run state (as :meth:`open` left it, else as read from disk)."""
        if self._state is None:
            self._state = self.read_state() or {}
        return self._state

    def _save_state(self) -> None:
        atomic_write_text(self.state_path, dumps(self.state))

    def update_state(self, **values: Any) -> None:
        """Record ``values`` in the run state (e.g. ``model_info`` found during batches)."""
        self.state.update(values)
        self._save_state()

    def _shards(self) -> dict[str, dict[str, Any]]:
        shards = self.state.get("shards")
        return shards if isinstance(shards, dict) else {}

    def _expected_rows(self, k: int, state: dict[str, Any]) -> list[int]:
        bs, n = int(state["batch_size"]), int(state["n_rows"])
        return [k * bs, min((k + 1) * bs, n)]

    def verify(self, k: int, entry: dict[str, Any], state: dict[str, Any]) -> str | None:
        """Why batch ``k``'s shard cannot be reused (None when it is sound)."""
        path = self.path(k)
        if not path.is_file():
            return "it is missing"
        if entry.get("rows") != self._expected_rows(k, state):
            return (
                f"it holds rows {entry.get('rows')}, batch {k} is {self._expected_rows(k, state)}"
            )
        size = path.stat().st_size
        if size != entry.get("size"):
            return f"it has {size} bytes, {entry.get('size')} were written"
        if sha256_file(path) != entry.get("sha256"):
            return "its SHA-256 differs from the one recorded when it was written"
        return None

    def open(self, state: dict[str, Any], fresh: bool = False) -> int:
        """Get ready to run with ``state``; return how many finished shards can be reused.

        Shards are reused only when every hash in :data:`HASH_KEYS` matches; each one listed
        in the old run state is verified (row range, size, SHA-256) and a damaged one is
        recomputed with a warning naming it. Otherwise (or with ``fresh=True``) the shards
        and checkpoints that the old run state lists are deleted and the run starts afresh;
        files it does not list are never deleted (a shard file of the same name is
        overwritten when its batch is computed).
        """
        old = self.read_state()
        reason = None
        new_info = {k: v for k, v in (state.get("model_info") or {}).items() if v is not None}
        old_info = (old or {}).get("model_info") or {}
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
            elif old.get("state_format") != STATE_FORMAT:
                reason = "the run state predates shard checksums"
            elif old_info.get("target_layer") and new_info.get("target_layer") not in (
                None,
                old_info.get("target_layer"),
            ):
                reason = "the CAM target layer changed"
        elif self.shard_dir.exists() and any(self.shard_dir.glob("batch_*.npz")):
            reason = "the shards have no run state"
        keep: dict[str, dict[str, Any]] = {}
        checks: list[str] = []
        if old is not None and reason is None:
            self._state = old
            checks = [c for c in old.get("checks", []) if isinstance(c, str)]
            for key, entry in self._shards().items():
                k = int(key)
                why = self.verify(k, entry, state)
                if why is None:
                    keep[key] = entry
                else:
                    log.warning(
                        "Shard %s cannot be reused (%s); recomputing batch %d.",
                        self.path(k),
                        why,
                        k,
                    )
                    self.path(k).unlink(missing_ok=True)  # listed: it is ours
        elif old is not None:
            log.info("Starting afresh in %s: %s.", self.root, reason)
            self._state = old
            self._remove_listed()
        elif reason is not None:
            log.info("Starting afresh in %s: %s.", self.root, reason)
        self._state = {
            **state,
            "state_format": STATE_FORMAT,
            "model_info": {**(old_info if reason is None else {}), **new_info},
            "shards": keep,
            "checks": checks,
        }
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._save_state()
        if keep:
            log.info(
                "Resuming: %d finished batch(es) found in %s are reused.", len(keep), self.shard_dir
            )
        return len(keep)

    def _remove_listed(self) -> None:
        """Delete the shards and checkpoints the current state lists (files xai_audit wrote)."""
        from .result import remove_tree

        for key in self._shards():
            try:
                self.path(int(key)).unlink(missing_ok=True)
            except ValueError:
                continue
        for name in self.state.get("checks", []) or []:
            if isinstance(name, str) and "/" not in name and name not in ("", ".", ".."):
                remove_tree(self.shard_dir / CHECK_DIR / name)
        try:
            (self.shard_dir / CHECK_DIR).rmdir()
        except OSError:
            pass  # absent, or holds files xai_audit did not list

    def path(self, k: int) -> Path:
        """Path of batch ``k``'s shard."""
        return self.shard_dir / shard_name(k)

    def finished(self) -> list[int]:
        """Batch numbers whose shard the run state lists as written (and verified)."""
        return sorted(int(key) for key in self._shards())

    def has(self, k: int) -> bool:
        """Whether batch ``k`` is finished."""
        return str(k) in self._shards()

    def write(self, k: int, arrays: dict[str, np.ndarray]) -> Path:
        """Write batch ``k``'s shard atomically and list it (rows, size, SHA-256) in the state."""
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        path = atomic_write_bytes(self.path(k), data)
        idx = np.asarray(arrays.get("indices", np.zeros(0, np.int64)))
        rows = [int(idx.min()), int(idx.max()) + 1] if idx.size else [0, 0]
        shards = self.state.setdefault("shards", {})
        shards[str(k)] = {
            "file": path.name,
            "rows": rows,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        self._save_state()  # after the shard: a crash in between only recomputes the batch
        return path

    def read(self, k: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of batch ``k`` (only ``keys`` when given; maps are large)."""
        try:
            with np.load(self.path(k), allow_pickle=False) as data:
                names = data.files if keys is None else [k_ for k_ in keys if k_ in data.files]
                return {name: data[name] for name in names}
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
            raise OSError(
                f"Shard {self.path(k)} cannot be read ({exc}); rerun the audit with the same "
                "settings to recompute it."
            ) from exc

    def keys(self, k: int) -> list[str]:
        """Names of the arrays in batch ``k``'s shard."""
        try:
            with np.load(self.path(k), allow_pickle=False) as data:
                return list(data.files)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
            raise OSError(
                f"Shard {self.path(k)} cannot be read ({exc}); rerun the audit with the same "
                "settings to recompute it."
            ) from exc

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

        folder_name = f"{name}-{sha256_json(key)[:16]}"
        folder = self.shard_dir / CHECK_DIR / folder_name
        listed = folder_name in (self.state.get("checks") or [])
        if listed and (folder / RESULT_FILE).is_file():
            try:
                return load_tree(folder)["value"]
            except (OSError, ValueError, KeyError) as exc:
                log.warning("Recomputing %s: its checkpoint is unreadable (%s).", name, exc)
        value = compute()
        save_tree(folder, {"value": value})
        if not listed:
            self.state.setdefault("checks", []).append(folder_name)
            self._save_state()
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
