"""Manifests over in-memory arrays (numpy or torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ManifestError
from .manifest import MEMORY_PREFIX, Manifest, SourceStore
from .readers import to_unit_float

__all__ = ["manifest_from_arrays"]


def _to_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(x)


def _label_frame(labels: object, n: int, label_names: Sequence[str] | None) -> pd.DataFrame:
    if labels is None:
        return pd.DataFrame(index=range(n))
    if isinstance(labels, pd.DataFrame):
        frame = labels.reset_index(drop=True)
    elif isinstance(labels, pd.Series):
        frame = labels.reset_index(drop=True).to_frame(labels.name or "label")
    elif isinstance(labels, Mapping):
        frame = pd.DataFrame({k: _to_numpy(v) for k, v in labels.items()})
    else:
        arr = _to_numpy(labels)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ManifestError(f"labels must be N or N x L, got shape {arr.shape}.")
        if label_names is None:
            label_names = (
                ["label"] if arr.shape[1] == 1 else [f"label_{j}" for j in range(arr.shape[1])]
            )
        if len(label_names) != arr.shape[1]:
            raise ManifestError(
                f"label_names has {len(label_names)} names for {arr.shape[1]} label columns."
            )
        frame = pd.DataFrame(arr, columns=list(label_names))
    if len(frame) != n:
        raise ManifestError(f"Got {len(frame)} labels for {n} images; pass one per image.")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def manifest_from_arrays(
    images: object,
    labels: object = None,
    attributes: pd.DataFrame | Mapping[str, Sequence] | None = None,
    masks: object = None,
    case_ids: Sequence[object] | None = None,
    patient_ids: Sequence[object] | None = None,
    *,
    label_names: Sequence[str] | None = None,
    binary_labels: bool = True,
) -> Manifest:
    """Build a manifest that holds its images (and masks) in memory.

    Parameters
    ----------
    images : np.ndarray or torch.Tensor
        ``N x C x H x W`` or ``N x C x D x H x W`` (an ``N x H x W`` array gets one channel).
        Converted to float32 with the same rule as the file readers (``uint8`` / 255,
        ``uint16`` / 65535; float values unchanged).
    labels : array, tensor, DataFrame, Series or dict, optional
        ``N`` or ``N x L`` labels (named ``label`` / ``label_0..`` unless ``label_names`` is
        given), or named columns. None: unlabelled.
    attributes : DataFrame or dict of columns, optional
        Subgroup attributes, one row per image (missing values stay NaN).
    masks : array or tensor, optional
        ``N x H x W`` (or ``N x 1 x H x W``, or ``N x D x H x W`` for volumes); nonzero -> 1.
    case_ids : sequence, optional
        Unique case ids; default ``case_00000``, ``case_00001``, ...
    patient_ids : sequence, optional
        Patient id per image.
    label_names : sequence of str, optional
        Names for array labels.
    binary_labels : bool, default True
        Require labels to be 0/1.

    Returns
    -------
    Manifest
        Image column ``image`` holds ``mem:<k>`` references; :meth:`Manifest.load_image`
        returns the arrays themselves.
    """
    imgs = _to_numpy(images)
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    if imgs.ndim not in (4, 5):
        raise ManifestError(
            f"images must be N x C x H x W or N x C x D x H x W, got shape {imgs.shape}."
        )
    imgs = np.ascontiguousarray(to_unit_float(imgs))
    n = imgs.shape[0]

    table = pd.DataFrame(
        {
            "case_id": [f"case_{i:05d}" for i in range(n)] if case_ids is None else case_ids,
            "image": [f"{MEMORY_PREFIX}{i}" for i in range(n)],
        }
    )
    label_frame = _label_frame(labels, n, label_names)
    attr_frame = pd.DataFrame(index=range(n))
    if attributes is not None:
        attr_frame = pd.DataFrame(attributes).reset_index(drop=True)
        if len(attr_frame) != n:
            raise ManifestError(f"Got {len(attr_frame)} attribute rows for {n} images.")
    clash = (set(label_frame.columns) & set(attr_frame.columns)) | (
        (set(label_frame.columns) | set(attr_frame.columns))
        & {"case_id", "image", "patient_id", "mask"}
    )
    if clash:
        raise ManifestError(
            f"Column name(s) {sorted(clash)} used twice (labels, attributes and the reserved "
            "case_id/image/patient_id/mask must be distinct); rename them."
        )
    table = pd.concat([table, label_frame, attr_frame], axis=1)
    if patient_ids is not None:
        if len(patient_ids) != n:
            raise ManifestError(f"Got {len(patient_ids)} patient ids for {n} images.")
        table["patient_id"] = list(patient_ids)

    mask_arr = None
    if masks is not None:
        mask_arr = _to_numpy(masks)
        if mask_arr.ndim == imgs.ndim and mask_arr.shape[1] == 1:
            mask_arr = mask_arr[:, 0]
        if mask_arr.shape != (n, *imgs.shape[2:]):
            raise ManifestError(
                f"masks must be N x spatial = {(n, *imgs.shape[2:])}, got {mask_arr.shape}."
            )
        mask_arr = np.ascontiguousarray(mask_arr != 0, dtype=np.uint8)
        table["mask"] = [f"{MEMORY_PREFIX}{i}" for i in range(n)]

    return Manifest(
        table,
        label_cols=list(label_frame.columns),
        attribute_cols=list(attr_frame.columns),
        patient_col="patient_id" if patient_ids is not None else None,
        mask_col="mask" if masks is not None else None,
        binary_labels=binary_labels,
        store=SourceStore(images=imgs, masks=mask_arr),
    )
