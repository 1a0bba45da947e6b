"""Manifest validation: table-level checks and (header-only) file checks.

Every check returns human-readable problem descriptions instead of raising, so that one
:class:`~xai_audit.data.ManifestError` can report everything that is wrong at once. Nothing is
ever dropped: a manifest either keeps every row or is rejected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import ManifestError, describe_rows
from .readers import image_shape, mask_shape, not_regular_reason, read_image, read_mask
from .remote import source_name
from .resize import fitted_shape

if TYPE_CHECKING:
    from .manifest import Manifest

__all__ = [
    "check_columns",
    "file_problems",
    "patient_conflicts",
    "raise_problems",
    "table_problems",
]


def raise_problems(problems: Sequence[str]) -> None:
    """Raise one :class:`ManifestError` listing every problem (no-op when there are none)."""
    if not problems:
        return
    if len(problems) == 1:
        raise ManifestError(problems[0])
    body = "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, start=1))
    raise ManifestError(f"The manifest has {len(problems)} problems:\n{body}")


def check_columns(table: pd.DataFrame, roles: dict[str, Sequence[str]]) -> None:
    """Raise when a column named for a role is absent from the table.

    Parameters
    ----------
    table : pd.DataFrame
        The manifest table.
    roles : dict
        Role name (the keyword argument that named it, e.g. ``"label_cols"``) -> column names.
    """
    available = [str(c) for c in table.columns]
    missing = [
        f"{col!r} (from {role}=)"
        for role, cols in roles.items()
        for col in cols
        if col not in table
    ]
    if missing:
        raise ManifestError(
            f"Column(s) not found in the manifest: {', '.join(missing)}. "
            f"Available columns: {', '.join(available) or '(none)'}. "
            "Rename the columns or pass the right names to load_manifest "
            "(id_col=, image_col=, label_cols=, attribute_cols=, patient_col=, mask_col=)."
        )
    assigned = [c for cols in roles.values() for c in cols]
    doubled = sorted({c for c in assigned if assigned.count(c) > 1})
    if doubled:
        raise ManifestError(
            f"Column(s) {', '.join(map(repr, doubled))} are assigned to more than one role "
            f"({', '.join(f'{r}={list(c)}' for r, c in roles.items() if c)}). "
            "Give each column exactly one role."
        )


def _blank(values: pd.Series) -> np.ndarray:
    """True where a cell holds no value (NaN/None or an empty/whitespace string)."""
    as_str = values.astype("string").str.strip()
    return (values.isna() | (as_str == "")).to_numpy(dtype=bool)


def table_problems(
    table: pd.DataFrame,
    *,
    id_col: str,
    image_col: str,
    label_cols: Sequence[str],
    binary_labels: bool,
) -> list[str]:
    """Check ids, image sources and labels of a manifest table.

    Parameters
    ----------
    table : pd.DataFrame
        The manifest table (columns already checked by :func:`check_columns`).
    id_col, image_col : str
        Case-id and image-source columns.
    label_cols : sequence of str
        Label columns.
    binary_labels : bool
        Require every label to be 0 or 1.

    Returns
    -------
    list of str
        One description per problem found; empty when the table is valid.
    """
    problems: list[str] = []
    ids = table[id_col]
    blank_ids = _blank(ids)
    if blank_ids.any():
        rows = np.flatnonzero(blank_ids)
        problems.append(
            f"Empty case id in column {id_col!r} for {len(rows)} rows "
            f"(row positions: {', '.join(map(str, rows[:5]))}). Give every row a unique id."
        )
    id_str = ids.astype(str)
    dup = id_str.duplicated(keep=False).to_numpy() & ~blank_ids
    if dup.any():
        problems.append(
            f"Duplicate case ids in column {id_col!r}: {describe_rows(id_str[dup].tolist())}. "
            "Case ids must be unique; de-duplicate the rows, or build the ids from the image "
            "paths: load_manifest(..., ids_from='path') or manifest_from_dicom(..., "
            "ids_from='path')."
        )
    blank_img = _blank(table[image_col])
    if blank_img.any():
        problems.append(
            f"Empty image source in column {image_col!r} for "
            f"{describe_rows(id_str[blank_img].tolist())}. Every row needs an image."
        )
    for col in label_cols:
        problems.extend(_label_problems(table[col], col, id_str, binary_labels))
    return problems


def _label_problems(values: pd.Series, col: str, ids: pd.Series, binary_labels: bool) -> list[str]:
    problems: list[str] = []
    missing = values.isna().to_numpy()
    if missing.any():
        problems.append(
            f"Missing (NaN) labels in column {col!r} for {describe_rows(ids[missing].tolist())}. "
            "Fill in the labels or remove these rows yourself; nothing is dropped automatically."
        )
    numeric = pd.to_numeric(values, errors="coerce")
    non_numeric = numeric.isna().to_numpy() & ~missing
    if binary_labels:
        bad = non_numeric | (~numeric.isin([0, 1]).to_numpy() & ~missing)
        if bad.any():
            shown = _show_values(values[bad])
            problems.append(
                f"Non-binary labels in column {col!r} for {describe_rows(ids[bad].tolist())}: "
                f"values {shown}. binary_labels=True expects 0/1 (or True/False); map the labels "
                "to 0/1 or pass binary_labels=False."
            )
    elif non_numeric.any():
        shown = _show_values(values[non_numeric])
        problems.append(
            f"Non-numeric labels in column {col!r} for "
            f"{describe_rows(ids[non_numeric].tolist())}: values {shown}. "
            "Map class names to numbers first."
        )
    return problems


def _show_values(values: pd.Series) -> str:
    """Up to five distinct offending values, as plain Python reprs (``2``, ``'yes'``)."""
    uniq = pd.unique(values)[:5]
    return ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in uniq)


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def file_problems(manifest: Manifest, *, deep: bool = False) -> list[str]:
    """Check that every image (and mask) file exists, opens and has a consistent shape.

    Parameters
    ----------
    manifest : Manifest
        The manifest to check. In-memory sources are skipped.
    deep : bool, default False
        Decode every image and mask fully instead of reading headers only (slower, but also
        catches files that are truncated after a valid header).

    Returns
    -------
    list of str
        One description per problem found.
    """
    ids = manifest.case_ids
    missing: list[str] = []
    first_missing: Path | str | None = None
    irregular: list[str] = []
    first_irregular = ""
    unreadable: list[str] = []
    first_error = ""
    shapes: dict[int, tuple[int, ...]] = {}
    fitted: dict[int, tuple[int, ...]] = {}
    mask_missing: list[str] = []
    mask_unreadable: list[str] = []
    mask_error = ""
    mask_mismatch: list[str] = []
    mask_mismatch_example = ""

    for i in range(len(manifest)):
        path = manifest.image_path(i)
        if path is None:  # held in memory
            continue
        reason = not_regular_reason(path)
        if reason == "missing":
            missing.append(ids[i])
            first_missing = first_missing or path
            continue
        if reason is not None:  # a device, FIFO, folder: never opened (reading may not end)
            irregular.append(ids[i])
            first_irregular = first_irregular or f"{str(path)!r} is {reason}"
            continue
        try:
            shape = read_image(path, dicom_window=None).shape if deep else image_shape(path)
        except ImportError:
            raise
        except Exception as exc:  # the reader's own error tells what is corrupt
            unreadable.append(ids[i])
            first_error = first_error or f"{source_name(path)}: {_exc_text(exc)}"
            continue
        shapes[i] = tuple(shape)
        # With image_size set, images are brought to one size when loaded (masks too).
        fitted[i] = fitted_shape(shape, getattr(manifest, "image_size", None))

        mpath = manifest.mask_path(i)
        if mpath is None:
            continue
        mreason = not_regular_reason(mpath)
        if mreason == "missing":
            mask_missing.append(ids[i])
            continue
        if mreason is not None:
            irregular.append(ids[i])
            first_irregular = first_irregular or f"mask {str(mpath)!r} is {mreason}"
            continue
        try:
            mshape = read_mask(mpath).shape if deep else mask_shape(mpath)
        except ImportError:
            raise
        except Exception as exc:
            mask_unreadable.append(ids[i])
            mask_error = mask_error or f"{source_name(mpath)}: {_exc_text(exc)}"
            continue
        if tuple(mshape) != shapes[i][1:]:
            mask_mismatch.append(ids[i])
            mask_mismatch_example = mask_mismatch_example or (
                f"mask {tuple(mshape)} vs image {shapes[i]} for case {ids[i]}"
            )

    root = f"image_root={str(manifest.image_root)!r}" if manifest.image_root else "the cwd"
    problems: list[str] = []
    if missing:
        problems.append(
            f"Image files not found for {describe_rows(missing)}; first missing path: "
            f"{str(first_missing)!r}. Relative paths in column {manifest.image_col!r} are "
            f"resolved against {root}; fix the paths or pass the right image_root."
        )
    if irregular:
        problems.append(
            f"Image or mask sources that are not regular files for "
            f"{describe_rows(irregular)}; first: {first_irregular}. Every source must be a "
            "regular image file (not a device, FIFO, socket or folder); fix the paths in the "
            "manifest."
        )
    if unreadable:
        problems.append(
            f"Unreadable or corrupt images for {describe_rows(unreadable)}; first error: "
            f"{first_error}. Replace or re-export these files (rows are never dropped "
            "automatically)."
        )
    if len(set(fitted.values())) > 1:
        problems.append(_shape_problem(fitted, ids))
    if mask_missing:
        problems.append(
            f"Mask files not found for {describe_rows(mask_missing)} (column "
            f"{manifest.mask_col!r}). Fix the paths or leave the cell empty for no mask."
        )
    if mask_unreadable:
        problems.append(
            f"Unreadable or corrupt masks for {describe_rows(mask_unreadable)}; first error: "
            f"{mask_error}."
        )
    if mask_mismatch:
        problems.append(
            f"Mask shape differs from the image's spatial shape for "
            f"{describe_rows(mask_mismatch)} (e.g. {mask_mismatch_example}). Masks must "
            "cover the image pixel for pixel."
        )
    return problems


def _shape_problem(shapes: dict[int, tuple[int, ...]], ids: np.ndarray) -> str:
    counts = Counter(shapes.values())
    ranked = counts.most_common()
    parts = []
    for shape, count in ranked:
        noun = "row" if count == 1 else "rows"
        parts.append(f"{shape} x {count} {noun}")
    majority = ranked[0][0]
    odd = [ids[i] for i, s in shapes.items() if s != majority]
    return (
        f"Inconsistent image shapes across the manifest: {'; '.join(parts)}. Rows not of the "
        f"most common shape {majority}: {describe_rows(odd)}. All images must share one shape "
        "(C x H x W or C x D x H x W). Pass image_size=(H, W) (and resize='resize', 'pad' or "
        "'crop') to load_manifest / manifest_from_dicom to bring them to one size when "
        "loaded; channels and dimensionality must agree."
    )


def patient_conflicts(
    manifest: Manifest, columns: Sequence[str] | None = None, examples: int = 3
) -> list[str]:
    """Patients whose images disagree on a label or an attribute (warnings, not errors).

    Values are compared as the audit groups them
    (:func:`~xai_audit.fairness.inputs.normalise_attribute`: ``1`` and ``1.0`` agree); a
    missing value does not conflict with a known one. Patient ids are never named (they may
    be identifiers): the examples are case ids of the first image of a patient.

    Parameters
    ----------
    manifest : Manifest
        Checked only when it has a patient column.
    columns : sequence of str, optional
        Label and attribute columns to compare; default every label and attribute column.
    examples : int, default 3
        Case ids named per message.

    Returns
    -------
    list of str
        One message per column with conflicts.
    """
    from ..fairness.inputs import normalise_attribute  # lazy: fairness imports fairlearn

    if not manifest.patient_col:
        return []
    table = manifest.table
    if columns is None:
        columns = [*manifest.label_cols, *manifest.attribute_cols]
    pid = table[manifest.patient_col]
    known = pid.notna().to_numpy()
    if not known.any():
        return []
    notes = []
    for col in columns:
        frame = pd.DataFrame(
            {
                "patient": pid.to_numpy(dtype=object)[known],
                "value": normalise_attribute(table[col])[known],
                "case": table[manifest.id_col].to_numpy(dtype=object)[known],
            }
        )
        n_values = frame.groupby("patient", sort=False)["value"].nunique(dropna=True)
        bad = n_values.index[n_values.to_numpy() > 1]
        if not len(bad):
            continue
        affected = frame[frame["patient"].isin(bad)]
        first_cases = affected.drop_duplicates("patient")["case"].head(examples).tolist()
        shown = ", ".join(map(str, first_cases))
        if col in manifest.label_cols:
            what = f"different labels in {col!r}"
            advice = (
                "That is expected when labels are per image (e.g. follow-up studies, two "
                "sides); otherwise correct the labels."
            )
        else:
            what = f"different values of {col!r}"
            advice = (
                "A patient-level attribute should be the same on every image of a patient; "
                "correct the manifest, or these patients count in several groups."
            )
        notes.append(
            f"{len(bad)} patient(s) ({len(affected)} images) have images with {what} (e.g. the "
            f"patients of cases {shown}). {advice}"
        )
    return notes
