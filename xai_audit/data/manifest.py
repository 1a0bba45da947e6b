"""The :class:`Manifest`: one row per image, with labels, subgroup attributes and sources.

An image source is either a file path (relative to ``image_root`` unless absolute) or a
reference into data the manifest holds privately: ``mem:<k>`` for arrays passed to
:func:`~xai_audit.data.manifest_from_arrays`, ``ref:<k>`` for DICOM paths kept out of the table
(``manifest_from_dicom(..., path_policy="index")``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .errors import ManifestError, describe_rows
from .readers import not_regular_reason, read_image, read_mask
from .remote import digest_url, is_url, join_url, source_name
from .resize import check_image_size, fit_image
from .validation import check_columns, file_problems, raise_problems, table_problems

if TYPE_CHECKING:
    from .torch_dataset import ImageDataset

__all__ = ["Manifest", "load_manifest"]

MEMORY_PREFIX = "mem:"
REF_PREFIX = "ref:"
CheckFiles = bool | Literal["deep"]


@dataclass(frozen=True)
class SourceStore:
    """Data a manifest holds outside its table (in-memory arrays, private file paths)."""

    images: np.ndarray | None = None
    masks: np.ndarray | None = None
    paths: tuple[str, ...] | None = None


def _ref_index(source: object, prefix: str) -> int | None:
    if isinstance(source, str) and source.startswith(prefix):
        return int(source[len(prefix) :])
    return None


def _is_blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


class Manifest:
    """A validated table of cases: id, image source, labels, attributes, patient id, mask.

    Usually built with :func:`load_manifest`, :func:`~xai_audit.data.manifest_from_arrays` or
    :func:`~xai_audit.data.manifest_from_dicom`. The constructor checks the table (columns,
    unique non-empty ids, image sources, labels) and raises
    :class:`~xai_audit.data.ManifestError` on any problem; it never drops rows. File checks
    run in :meth:`validate`.

    Parameters
    ----------
    table : pd.DataFrame
        One row per case.
    id_col, image_col : str
        Case-id and image-source columns. Case ids are stored as strings.
    label_cols : sequence of str, default ("label",)
        Label columns (may be empty for unlabelled data). Stored as float64.
    attribute_cols : sequence of str, optional
        Subgroup attribute columns; default every column not assigned another role. Missing
        values stay NaN.
    patient_col, mask_col : str, optional
        Patient-id column (stored as strings, NaN kept) and mask-source column (an empty cell
        means no mask).
    image_root : str or Path, optional
        Folder that relative image and mask paths are resolved against.
    binary_labels : bool, default True
        Require every label to be 0 or 1.
    dicom_window : {"auto", None} or (center, width), default "auto"
        Windowing used when DICOM images are loaded, see :func:`~xai_audit.data.read_dicom`.
    image_size : (H, W) or (D, H, W), optional
        Bring every image (and mask) to this size when it is loaded, so that images of mixed
        sizes can be audited together (:mod:`xai_audit.data.resize`).
    resize : {"resize", "pad", "crop"}, default "resize"
        How: stretch, fit and pad with zeros (aspect ratio kept), or cover and centre-crop.
    store : SourceStore, optional
        Internal: in-memory arrays / private paths referenced from the table.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        id_col: str = "case_id",
        image_col: str = "image",
        label_cols: Sequence[str] = ("label",),
        attribute_cols: Sequence[str] | None = None,
        patient_col: str | None = None,
        mask_col: str | None = None,
        image_root: str | Path | None = None,
        binary_labels: bool = True,
        dicom_window: object = "auto",
        image_size: Sequence[int] | None = None,
        resize: str = "resize",
        store: SourceStore | None = None,
    ) -> None:
        self.image_size = check_image_size(image_size, resize)
        self.resize = resize
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}.")
        label_cols = [label_cols] if isinstance(label_cols, str) else list(label_cols)
        fixed = {id_col, image_col, *label_cols, patient_col, mask_col} - {None}
        if attribute_cols is None:
            attribute_cols = [c for c in table.columns if c not in fixed]
        elif isinstance(attribute_cols, str):
            attribute_cols = [attribute_cols]
        roles = {
            "id_col": [id_col],
            "image_col": [image_col],
            "label_cols": label_cols,
            "attribute_cols": list(attribute_cols),
            "patient_col": [patient_col] if patient_col else [],
            "mask_col": [mask_col] if mask_col else [],
        }
        check_columns(table, roles)
        raise_problems(
            table_problems(
                table,
                id_col=id_col,
                image_col=image_col,
                label_cols=label_cols,
                binary_labels=binary_labels,
            )
        )
        table = table.reset_index(drop=True).copy()
        table[id_col] = table[id_col].astype(str)
        for col in label_cols:
            table[col] = pd.to_numeric(table[col]).astype(np.float64)
        if patient_col:
            pids = table[patient_col]
            table[patient_col] = pids.where(pids.isna(), pids.astype(str))

        self.table: pd.DataFrame = table
        self.id_col = id_col
        self.image_col = image_col
        self.label_cols: list[str] = label_cols
        self.attribute_cols: list[str] = list(attribute_cols)
        self.patient_col = patient_col
        self.mask_col = mask_col
        # A URL root (s3://bucket/data) stays a string: Path would collapse its "//".
        self.image_root: Path | str | None = (
            None if image_root is None else image_root if is_url(image_root) else Path(image_root)
        )
        self.binary_labels = binary_labels
        self.dicom_window = dicom_window
        self._store = store or SourceStore()

    # ------------------------------------------------------------------ basic accessors
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        # Deliberately shows roles and sizes only: no paths or cell values (they may be PHI).
        kind = "in-memory" if self._store.images is not None else "files"
        return (
            f"Manifest(n={len(self)}, images={kind}, labels={self.label_cols}, "
            f"attributes={self.attribute_cols}, patient_col={self.patient_col!r}, "
            f"mask_col={self.mask_col!r})"
        )

    @property
    def case_ids(self) -> np.ndarray:
        """Case ids as an object array of strings, in row order."""
        return self.table[self.id_col].to_numpy(dtype=object)

    @property
    def labels(self) -> np.ndarray:
        """Labels as a float64 ``N x L`` array (``L = len(label_cols)``, possibly 0)."""
        return self.table[self.label_cols].to_numpy(dtype=np.float64).reshape(len(self), -1)

    @property
    def label(self) -> np.ndarray:
        """The single label column as a float64 1-D array (only when ``L == 1``)."""
        if len(self.label_cols) != 1:
            raise ManifestError(
                f"Manifest.label needs exactly one label column, this manifest has "
                f"{len(self.label_cols)} ({self.label_cols}); use Manifest.labels (N x L)."
            )
        return self.table[self.label_cols[0]].to_numpy(dtype=np.float64)

    @property
    def attributes(self) -> pd.DataFrame:
        """Attribute columns (a copy); missing values are kept as NaN."""
        return self.table[self.attribute_cols].copy()

    @property
    def patient_ids(self) -> np.ndarray | None:
        """Patient ids as an object array (NaN where unknown), or None without a patient column."""
        if not self.patient_col:
            return None
        return self.table[self.patient_col].to_numpy(dtype=object)

    # ------------------------------------------------------------------ sources
    def _check_index(self, i: int) -> int:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"Row {i} out of range for a manifest of {len(self)} rows.")
        return i % len(self)

    def _resolve(self, source: object) -> Path | str:
        ref = _ref_index(source, REF_PREFIX)
        if ref is not None and self._store.paths is not None:
            return Path(self._store.paths[ref])
        text = str(source)
        if is_url(text):  # s3://, gs://, https://, file://: kept as a URL (Path would mangle //)
            return text
        path = Path(text)
        if not path.is_absolute() and self.image_root is not None:
            if is_url(self.image_root):
                return join_url(self.image_root, text)
            return Path(self.image_root) / path
        return path

    def image_path(self, i: int) -> Path | str | None:
        """Resolved file path (or fsspec URL) of row ``i``'s image; None when held in memory."""
        source = self.table.at[self._check_index(i), self.image_col]
        if self._store.images is not None and _ref_index(source, MEMORY_PREFIX) is not None:
            return None
        return self._resolve(source)

    def mask_path(self, i: int) -> Path | str | None:
        """Resolved file path of row ``i``'s mask; None without a mask or when in memory."""
        if not self.mask_col:
            return None
        source = self.table.at[self._check_index(i), self.mask_col]
        if _is_blank(source):
            return None
        if self._store.masks is not None and _ref_index(source, MEMORY_PREFIX) is not None:
            return None
        return self._resolve(source)

    # ------------------------------------------------------------------ loading
    def load_image(self, i: int) -> np.ndarray:
        """Load row ``i``'s image.

        Parameters
        ----------
        i : int
            Row position (0-based, as in ``table``).

        Returns
        -------
        np.ndarray
            ``float32``, ``C x H x W`` or ``C x D x H x W``.
        """
        i = self._check_index(i)
        source = self.table.at[i, self.image_col]
        k = _ref_index(source, MEMORY_PREFIX)
        if k is not None and self._store.images is not None:
            return self._fit(self._store.images[k])
        path = self._resolve(source)
        try:
            return self._fit(read_image(path, dicom_window=self.dicom_window))
        except ImportError:
            raise
        except Exception as exc:
            raise ManifestError(
                f"Could not read the image of case {self.case_ids[i]!r} (row {i}, "
                f"{source_name(path)}): "
                f"{type(exc).__name__}: {exc}. Run Manifest.validate(check_files='deep') to "
                "find every unreadable file."
            ) from exc

    def _fit(self, array: np.ndarray, mask: bool = False) -> np.ndarray:
        """``array`` brought to :attr:`image_size` (unchanged when none is set)."""
        if self.image_size is None:
            return array
        return fit_image(array, self.image_size, self.resize, mask=mask)  # type: ignore[arg-type]

    def load_images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Load several rows' images stacked into one ``N x C x ...`` float32 array."""
        images = [self.load_image(i) for i in np.asarray(indices, dtype=np.int64).ravel()]
        if not images:
            raise ManifestError("load_images got no indices.")
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ManifestError(
                f"Cannot stack images of different shapes {sorted(shapes)}; validate the "
                "manifest with check_files=True to find the offending rows."
            )
        return np.stack(images).astype(np.float32, copy=False)

    def load_mask(self, i: int) -> np.ndarray | None:
        """Load row ``i``'s mask as binary ``uint8`` ``H x W`` (or ``D x H x W``); None if absent."""
        i = self._check_index(i)
        if not self.mask_col:
            return None
        source = self.table.at[i, self.mask_col]
        if _is_blank(source):
            return None
        k = _ref_index(source, MEMORY_PREFIX)
        if k is not None and self._store.masks is not None:
            return self._fit(self._store.masks[k], mask=True)
        path = self._resolve(source)
        try:
            return self._fit(read_mask(path), mask=True)
        except ImportError:
            raise
        except Exception as exc:
            raise ManifestError(
                f"Could not read the mask of case {self.case_ids[i]!r} (row {i}, "
                f"{source_name(path)}): "
                f"{type(exc).__name__}: {exc}."
            ) from exc

    def load_masks(
        self, indices: Sequence[int] | np.ndarray, missing: Literal["zeros", "raise"] = "zeros"
    ) -> np.ndarray:
        """Load several rows' masks stacked into ``N x H x W`` (or ``N x D x H x W``) uint8.

        Parameters
        ----------
        indices : sequence of int
            Row positions.
        missing : {"zeros", "raise"}, default "zeros"
            Rows without a mask become all-zero masks of the image's spatial shape ("zeros",
            i.e. no finding annotated) or raise :class:`ManifestError` ("raise").
        """
        idx = np.asarray(indices, dtype=np.int64).ravel()
        masks: list[np.ndarray | None] = [self.load_mask(i) for i in idx]
        absent = [self.case_ids[i] for i, m in zip(idx, masks) if m is None]
        if absent and missing == "raise":
            raise ManifestError(f"No mask for {describe_rows(absent)}.")
        out = []
        for i, m in zip(idx, masks):
            out.append(m if m is not None else np.zeros(self.load_image(i).shape[1:], np.uint8))
        return np.stack(out).astype(np.uint8, copy=False)

    def iter_batches(
        self, batch_size: int, indices: Sequence[int] | np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, images)`` batches in row order.

        Parameters
        ----------
        batch_size : int
            Rows per batch (the last batch may be smaller).
        indices : sequence of int, optional
            Rows to visit (default all, in order).

        Yields
        ------
        indices : np.ndarray
            int64 row positions of the batch.
        images : np.ndarray
            ``float32`` ``B x C x ...`` images.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        rows = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            yield batch, self.load_images(batch)

    # ------------------------------------------------------------------ derived manifests
    def subset(self, indices: Sequence[int] | np.ndarray) -> Manifest:
        """A new manifest with the given rows (in the given order); private data is re-packed."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        table = self.table.iloc[idx].reset_index(drop=True).copy()
        store = self._store
        # Re-number mem:/ref: references so the subset holds only its own rows' data.
        images, masks, paths = store.images, store.masks, store.paths
        if images is not None:
            ks = [_ref_index(s, MEMORY_PREFIX) for s in table[self.image_col]]
            images = images[np.asarray(ks, dtype=np.int64)]
            table[self.image_col] = [f"{MEMORY_PREFIX}{j}" for j in range(len(table))]
        if masks is not None and self.mask_col:
            ks = [_ref_index(s, MEMORY_PREFIX) for s in table[self.mask_col]]
            masks = masks[np.asarray(ks, dtype=np.int64)]
            table[self.mask_col] = [f"{MEMORY_PREFIX}{j}" for j in range(len(table))]
        if paths is not None:
            ks = [_ref_index(s, REF_PREFIX) for s in table[self.image_col]]
            paths = tuple(paths[k] for k in ks)  # type: ignore[index]
            table[self.image_col] = [f"{REF_PREFIX}{j}" for j in range(len(table))]
        return Manifest(
            table,
            id_col=self.id_col,
            image_col=self.image_col,
            label_cols=self.label_cols,
            attribute_cols=self.attribute_cols,
            patient_col=self.patient_col,
            mask_col=self.mask_col,
            image_root=self.image_root,
            binary_labels=self.binary_labels,
            dicom_window=self.dicom_window,
            image_size=self.image_size,
            resize=self.resize,
            store=SourceStore(images=images, masks=masks, paths=paths),
        )

    def to_dataset(self, preprocess=None, with_masks: bool = False) -> ImageDataset:
        """Wrap the manifest in a :class:`~xai_audit.data.ImageDataset` for a DataLoader."""
        from .torch_dataset import ImageDataset

        return ImageDataset(self, preprocess=preprocess, with_masks=with_masks)

    # ------------------------------------------------------------------ checks and hashing
    def validate(self, check_files: CheckFiles = True) -> Manifest:
        """Re-check the table and (optionally) every file; raise :class:`ManifestError`.

        Parameters
        ----------
        check_files : bool or "deep", default True
            True: open every image/mask header (existence, readability, consistent shapes).
            "deep": decode every file fully. False: table checks only.

        Returns
        -------
        Manifest
            ``self``, for chaining.
        """
        problems = table_problems(
            self.table,
            id_col=self.id_col,
            image_col=self.image_col,
            label_cols=self.label_cols,
            binary_labels=self.binary_labels,
        )
        if check_files:
            problems += file_problems(self, deep=check_files == "deep")
        raise_problems(problems)
        return self

    def content_hash(self, include_files: bool = False) -> str:
        """SHA-256 of the manifest in a canonical form.

        Parameters
        ----------
        include_files : bool, default False
            Also hash the bytes of every image and mask file (reads every file). Arrays held in
            memory are always hashed, since without them the table identifies nothing.

        Returns
        -------
        str
            64 hex characters. Equal manifests give equal hashes across runs and machines;
            ``image_root`` is not part of it, so moving the data folder keeps the hash.
        """
        h = hashlib.sha256()
        roles = {
            "id_col": self.id_col,
            "image_col": self.image_col,
            "label_cols": self.label_cols,
            "attribute_cols": self.attribute_cols,
            "patient_col": self.patient_col,
            "mask_col": self.mask_col,
        }
        if self.image_size is not None:  # changes every loaded pixel
            roles["image_size"] = [list(self.image_size), self.resize]  # type: ignore[assignment]
        h.update(json.dumps(roles, sort_keys=True).encode())
        csv = self.table.to_csv(index=False, lineterminator="\n", float_format="%.17g")
        h.update(csv.encode())
        for arr in (self._store.images, self._store.masks):
            if arr is not None:
                h.update(f"{arr.dtype.str}{arr.shape}".encode())
                h.update(np.ascontiguousarray(arr).tobytes())
        if include_files:
            for i in range(len(self)):
                for path in (self.image_path(i), self.mask_path(i)):
                    if path is not None:
                        h.update(_file_digest(path))
        return h.hexdigest()


def _file_digest(path: Path | str) -> bytes:
    if is_url(path):
        h = hashlib.sha256()
        digest_url(str(path), h)
        return h.digest()
    reason = not_regular_reason(path)
    if reason is not None:  # reading /dev/zero or a FIFO would never end
        raise ManifestError(
            f"Cannot hash {str(path)!r}: it is {reason}, not a regular file. Fix the path in "
            "the manifest."
        )
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def load_manifest(
    source: str | Path | pd.DataFrame,
    image_root: str | Path | None = None,
    *,
    id_col: str = "case_id",
    image_col: str = "image",
    label_cols: Sequence[str] | str | None = None,
    attribute_cols: Sequence[str] | None = None,
    patient_col: str | Literal[False] | None = None,
    mask_col: str | Literal[False] | None = None,
    binary_labels: bool = True,
    check_files: CheckFiles = True,
    dicom_window: object = "auto",
    image_size: Sequence[int] | None = None,
    resize: str = "resize",
    ids_from: Literal["filename", "path"] | None = None,
) -> Manifest:
    """Load and validate a manifest from a CSV file or a DataFrame.

    Parameters
    ----------
    source : str, Path or pd.DataFrame
        CSV file (ids, paths and patient ids are read as strings, so ``"007"`` stays
        ``"007"``) or a DataFrame.
    image_root : str or Path, optional
        Folder relative image/mask paths are resolved against. Default: the CSV's folder, or
        the current directory for a DataFrame.
    id_col, image_col : str
        Case-id and image-path columns.
    label_cols : str or sequence of str, optional
        Label columns; default ``["label"]``. Pass ``[]`` for unlabelled data.
    attribute_cols : sequence of str, optional
        Subgroup attributes; default every column not otherwise assigned.
    patient_col : str or False, optional
        Patient-id column; default ``"patient_id"`` when present. False: none.
    mask_col : str or False, optional
        Mask-path column; default ``"mask"`` when present. False: none.
    binary_labels : bool, default True
        Require labels to be 0/1.
    check_files : bool or "deep", default True
        Check every file's existence, readability and shape from its header (True), by
        decoding it ("deep"), or not at all (False).
    dicom_window : {"auto", None} or (center, width), default "auto"
        Windowing for DICOM images, see :func:`~xai_audit.data.read_dicom`.
    image_size : (H, W) or (D, H, W), optional
        Bring images of mixed sizes to one size when they are loaded (see :class:`Manifest`).
    resize : {"resize", "pad", "crop"}, default "resize"
        How images are brought to ``image_size``.
    ids_from : {"filename", "path"}, optional
        Build the case ids from the image column instead of reading ``id_col``: the file
        name without its extension, or the path without extension (for file names repeated
        in several folders). The ids must still be unique.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        Listing every problem found, the offending rows and how to fix them; also for a
        manifest without rows, an empty file or a path that is not a regular file.
    """
    if isinstance(source, pd.DataFrame):
        table = source.copy()
    else:
        csv = Path(source)
        reason = not_regular_reason(csv)
        if reason == "missing":
            raise ManifestError(f"Manifest file not found: {str(csv)!r}.")
        if reason is not None:
            raise ManifestError(
                f"The manifest {str(csv)!r} is {reason}, not a regular file; give the path of "
                "a CSV file."
            )
        try:
            header = pd.read_csv(csv, nrows=0).columns
        except pd.errors.EmptyDataError:
            raise ManifestError(
                f"The manifest file {str(csv)!r} is empty (no header, no rows). Write one row "
                f"per image with at least the columns {id_col!r}, {image_col!r} and a label."
            ) from None
        text_cols = {id_col, image_col, "patient_id", "mask", patient_col, mask_col}
        dtypes = {c: str for c in header if c in text_cols}
        table = pd.read_csv(csv, dtype=dtypes)
        if image_root is None:
            image_root = csv.parent
    if table.empty:
        where = "DataFrame" if isinstance(source, pd.DataFrame) else repr(str(source))
        cols = ", ".join(map(str, table.columns)) or "none"
        raise ManifestError(
            f"The manifest {where} has no rows (columns: {cols}). An audit needs at least "
            "one image: add one row per image."
        )
    if ids_from is not None:
        table[id_col] = ids_from_paths(table[image_col], ids_from)
    if label_cols is None:
        label_cols = ["label"]
    if patient_col is None:
        patient_col = "patient_id" if "patient_id" in table.columns else False
    if mask_col is None:
        mask_col = "mask" if "mask" in table.columns else False
    manifest = Manifest(
        table,
        id_col=id_col,
        image_col=image_col,
        label_cols=label_cols,
        attribute_cols=attribute_cols,
        patient_col=patient_col or None,
        mask_col=mask_col or None,
        image_root=image_root,
        binary_labels=binary_labels,
        dicom_window=dicom_window,
        image_size=image_size,
        resize=resize,
    )
    if check_files:
        raise_problems(file_problems(manifest, deep=check_files == "deep"))
    return manifest


def ids_from_paths(paths: Sequence[object], how: str) -> list[str]:
    """Case ids from image paths: ``"filename"`` (stem) or ``"path"`` (path less suffix)."""
    if how not in ("filename", "path"):
        raise ValueError(f"ids_from must be 'filename' or 'path', got {how!r}.")
    out = []
    for p in paths:
        if _is_blank(p):
            out.append("")  # reported as an empty image source and an empty id
            continue
        path = Path(str(p))
        out.append(path.stem if how == "filename" else path.with_suffix("").as_posix())
    return out
