"""DICOM reading with PHI kept out of the manifest.

Privacy rules
-------------
* Headers are read with an explicit allow-list (``dcmread(specific_tags=...)``): the
  attribute fields in :data:`HEADER_ALLOW_LIST`, the two fields pseudonyms are derived from
  (:data:`PSEUDONYM_SOURCES`), the identifying fields used only to screen file paths
  (:data:`PATH_SCREEN_FIELDS`) and the geometry fields (:data:`GEOMETRY_FIELDS`). Only the
  allow-listed attributes are copied into the manifest.
* Case and patient ids are pseudonyms: the first 16 hex characters of
  HMAC-SHA256(salt, SOPInstanceUID or file path) and HMAC-SHA256(salt, PatientID).
* The image column stores the file path, which can itself carry identifiers (exports named
  ``Doe_Jane.dcm`` or ``MRN-123456/...``). Each file's stored path (and the folder) is screened
  against that file's own identifying header values; on a hit the default
  ``path_policy="raise"`` refuses to build the manifest (without echoing the identifier), and
  ``path_policy="index"`` keeps every path out of the table (``ref:<k>`` references resolved
  from a private list that is neither in the table, the repr nor the content hash).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .binning import bin_labels
from .errors import DataWarning, ManifestError, describe_rows
from .manifest import REF_PREFIX, Manifest, SourceStore, ids_from_paths
from .resize import check_image_size
from .validation import file_problems, patient_conflicts, raise_problems

__all__ = [
    "GEOMETRY_FIELDS",
    "HEADER_ALLOW_LIST",
    "PATH_SCREEN_FIELDS",
    "PSEUDONYM_SOURCES",
    "dicom_shape",
    "manifest_from_dicom",
    "parse_age",
    "pseudonymize",
    "read_dicom",
]

#: DICOM keyword -> manifest column. The only header values copied into a manifest.
HEADER_ALLOW_LIST: dict[str, str] = {
    "PatientSex": "sex",
    "PatientAge": "age",
    "Manufacturer": "manufacturer",
    "Modality": "modality",
    "ViewPosition": "view_position",
    "BodyPartExamined": "body_part",
}
#: Read only to derive pseudonymous patient and case ids; never copied.
PSEUDONYM_SOURCES: tuple[str, ...] = ("PatientID", "SOPInstanceUID")
#: Read only to screen stored file paths for identifiers; never copied.
PATH_SCREEN_FIELDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "InstitutionName",
    "ReferringPhysicianName",
)
#: Read only to report the image shape without decoding pixels.
GEOMETRY_FIELDS: tuple[str, ...] = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel")

_HEADER_TAGS = sorted(
    set(HEADER_ALLOW_LIST) | set(PSEUDONYM_SOURCES) | set(PATH_SCREEN_FIELDS) | set(GEOMETRY_FIELDS)
)
#: Identifier strings shorter than this are not screened (they would match everywhere).
_MIN_SCREEN_LEN = 3
_AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
DEFAULT_AGE_BINS: tuple[float, ...] = (18, 40, 60, 80)

Window = Literal["auto"] | tuple[float, float] | None


# ---------------------------------------------------------------------------- pixels
def _check_window(window: object) -> None:
    if window is None or window == "auto":
        return
    ok = isinstance(window, (tuple, list)) and len(window) == 2
    if not ok or float(window[1]) < 1:  # type: ignore[index]
        raise ValueError(
            f"window must be 'auto', None or (center, width) with width >= 1, got {window!r}."
        )


def _voi_output_range(ds) -> tuple[float, float]:
    """Output range of pydicom's ``apply_voi_lut`` for ``ds`` (mirrors pydicom's rules)."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.PixelRepresentation) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = -float(2 ** (int(ds.BitsStored) - 1)), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM LINEAR VOI function (PS3.3 C.11.2.1.2.1) mapped to [0, 1]."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _has_voi(ds) -> bool:
    return bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds)


def read_dicom(path: str | Path, window: Window = "auto") -> np.ndarray:
    """Read a DICOM image as ``float32`` in ``[0, 1]``, channels first.

    Parameters
    ----------
    path : str or Path
        DICOM file.
    window : {"auto", None} or (center, width), default "auto"
        After the modality LUT (RescaleSlope / RescaleIntercept, via pydicom's
        ``apply_modality_lut``): "auto" applies the file's first VOI LUT or window
        (``apply_voi_lut``) when present and min-max scales otherwise; ``(center, width)``
        applies that LINEAR window (e.g. ``(40, 400)`` for a CT soft-tissue window); None
        min-max scales the modality values.

    Returns
    -------
    np.ndarray
        ``float32``: ``1 x H x W`` (``1 x F x H x W`` for multi-frame). MONOCHROME1 images
        are inverted so that higher values are always brighter. Colour images
        (SamplesPerPixel > 1) are returned ``3 x H x W``, scaled by BitsStored, without LUTs.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    _check_window(window)
    ds = _dcmread(path)
    pixels = ds.pixel_array
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        scale = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return np.ascontiguousarray(np.moveaxis(pixels, -1, 0).astype(np.float32) / scale)

    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if window == "auto" and _has_voi(ds):
        lo, hi = _voi_output_range(ds)
        out = (np.asarray(apply_voi_lut(values, ds), dtype=np.float64) - lo) / (hi - lo)
    elif window is None or window == "auto":
        vmin, vmax = float(values.min()), float(values.max())
        out = (values - vmin) / (vmax - vmin) if vmax > vmin else np.zeros_like(values)
    else:
        out = _linear_window(values, float(window[0]), float(window[1]))  # type: ignore[index]
    out = np.clip(out, 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are bright
    return np.ascontiguousarray(out[None], dtype=np.float32)


def _dcmread(path: str | Path, **kwargs):
    """``pydicom.dcmread``; files without the 128-byte preamble / "DICM" prefix (older
    exports, e.g. pydicom's own ``rtstruct.dcm``) are read again with ``force=True``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, force=True, **kwargs)
        if not any(k in ds for k in ("SOPClassUID", "Modality", "Rows", "PixelData")):
            raise  # not a DICOM data set at all
        return ds


def _read_header(path: Path):
    return _dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)


#: Pixel-data elements: an object without any of them is not an image (RT structure set,
#: plan, structured report, waveform). Read deferred, so the pixels themselves are not loaded.
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _read_manifest_header(path: Path):
    """The allow-listed header plus whether the object has pixel data (not read)."""
    return _dcmread(
        path, defer_size=256, specific_tags=[*_HEADER_TAGS, "SOPClassUID", *_PIXEL_TAGS]
    )


def _object_kind(ds) -> str:
    """``"RTSTRUCT (RT Structure Set Storage)"``: modality and SOP class, no identifiers."""
    modality = _text(ds, "Modality") or "no modality"
    uid = ds.get("SOPClassUID")
    name = getattr(uid, "name", "") if uid is not None else ""
    return f"{modality} ({name})" if name and name != str(uid) else modality


def dicom_shape(path: str | Path) -> tuple[int, ...]:
    """Shape :func:`read_dicom` returns, from the header only (no pixel data is read)."""
    ds = _read_header(Path(path))
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    channels = 3 if samples > 1 else 1
    return (channels, rows, cols) if frames == 1 else (channels, frames, rows, cols)


# ---------------------------------------------------------------------------- header values
def pseudonymize(value: str, salt: str | bytes) -> str:
    """First 16 hex characters of HMAC-SHA256(salt, value).

    Parameters
    ----------
    value : str
        Identifier to replace (PatientID, SOPInstanceUID, a file path).
    salt : str or bytes
        Secret key. Keep it secret: with a known salt, candidate identifiers can be tested.

    Returns
    -------
    str
    """
    key = salt.encode() if isinstance(salt, str) else bytes(salt)
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


def parse_age(value: object) -> float:
    """Parse a DICOM Age String (``"045Y"``, ``"006M"``, ``"003W"``, ``"010D"``) to years.

    Returns NaN when the value is empty or malformed.
    """
    text = str(value or "").strip().upper()
    match = re.fullmatch(r"(\d{1,3})([YMWD]?)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _AGE_UNITS[match.group(2) or "Y"]


def _age_group(ages: pd.Series, bins: Sequence[float]) -> pd.Series:
    # The one binning rule of xai_audit (Audit(attribute_bins=...) uses it too).
    return bin_labels(ages, bins).set_axis(ages.index)


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _screen_strings(ds) -> dict[str, list[str]]:
    """Identifying strings of one header, by field (names also split into components)."""
    out: dict[str, list[str]] = {}
    for field in PATH_SCREEN_FIELDS:
        text = _text(ds, field)
        if not text:
            continue
        parts = {text, *re.split(r"[\\^=]", text)} if "Name" in field else {text}
        if field == "OtherPatientIDs":
            parts |= set(text.split("\\"))
        strings = [p.strip() for p in parts if len(p.strip()) >= _MIN_SCREEN_LEN]
        if strings:
            out[field] = strings
    return out


def _path_hits(stored: str, screen: dict[str, list[str]]) -> list[str]:
    """Fields whose identifying strings occur in ``stored`` (case-insensitive)."""
    low = stored.lower()
    # Names are also compared with separators removed ("Doe^Jane" vs "doe_jane"/"DoeJane").
    squashed = re.sub(r"[\s_\-.^]", "", low)
    hits = []
    for field, strings in screen.items():
        for s in strings:
            s_low = s.lower()
            s_sq = re.sub(r"[\s_\-.^]", "", s_low)
            if s_low in low or (len(s_sq) >= _MIN_SCREEN_LEN and s_sq in squashed):
                hits.append(field)
                break
    return hits


# ---------------------------------------------------------------------------- manifests
def _collect_paths(source: str | Path | Iterable[str | Path]) -> tuple[list[Path], Path | None]:
    if isinstance(source, (str, Path)):
        root = Path(source)
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".dcm")
            if not files:
                raise ManifestError(f"No *.dcm files found under {str(root)!r}.")
            return files, root
        return [root], None
    files = [Path(p) for p in source]
    if not files:
        raise ManifestError("manifest_from_dicom got an empty list of paths.")
    return files, None


def _labels_frame(labels: pd.DataFrame | pd.Series | Mapping) -> pd.DataFrame:
    if isinstance(labels, pd.DataFrame):
        frame = labels.copy()
    elif isinstance(labels, pd.Series):
        frame = labels.to_frame(labels.name if labels.name is not None else "label")
    elif isinstance(labels, Mapping):
        values = list(labels.values())
        if values and all(isinstance(v, Mapping) for v in values):
            frame = pd.DataFrame.from_dict(dict(labels), orient="index")
        else:
            frame = pd.Series(dict(labels)).to_frame("label")
    else:
        raise TypeError(
            "labels must be a DataFrame/Series indexed by case id or file name, or a dict "
            f"mapping those keys to a label or to a dict of labels; got {type(labels).__name__}."
        )
    frame.index = frame.index.map(str)
    return frame


def _match_labels(
    frame: pd.DataFrame, case_ids: list[str], names: list[str], stored: list[str]
) -> pd.DataFrame:
    """Rows of ``frame`` for each file, keyed by case id, then file name, then stored path."""
    name_counts = pd.Series(names).value_counts()
    keys: list[str | None] = []
    ambiguous: list[str] = []
    for cid, name, rel in zip(case_ids, names, stored):
        if cid in frame.index:
            keys.append(cid)
        elif name in frame.index:
            keys.append(name)
            if name_counts[name] > 1:
                ambiguous.append(cid)
        elif rel in frame.index:
            keys.append(rel)
        else:
            keys.append(None)
    unmatched = [cid for cid, k in zip(case_ids, keys) if k is None]
    if unmatched:
        raise ManifestError(
            f"No labels for {describe_rows(unmatched)}. Index labels by the pseudonymous case "
            "id (same salt), the file name or the path relative to the folder; files without "
            "labels are never dropped silently, so pass labels for every file or a smaller list "
            "of paths."
        )
    if ambiguous:
        raise ManifestError(
            f"Labels keyed by file name are ambiguous for {describe_rows(ambiguous)}: several "
            "files share that name. Key these labels by relative path or case id instead."
        )
    if frame.index.duplicated().any():
        raise ManifestError("The labels index has duplicate keys; make it unique.")
    return frame.loc[keys].reset_index(drop=True)


def manifest_from_dicom(
    source: str | Path | Iterable[str | Path],
    labels: pd.DataFrame | pd.Series | Mapping | None = None,
    *,
    salt: str | bytes | None = None,
    window: Window = "auto",
    path_policy: Literal["raise", "index"] = "raise",
    age_bins: Sequence[float] = DEFAULT_AGE_BINS,
    binary_labels: bool = True,
    check_files: bool | Literal["deep"] = True,
    image_size: Sequence[int] | None = None,
    resize: Literal["resize", "pad", "crop"] = "resize",
    ids_from: Literal["uid", "filename", "path"] = "uid",
    skip_unreadable: bool = False,
) -> Manifest:
    """Build a PHI-free manifest from DICOM files.

    Objects without pixel data (RT structure sets and plans, structured reports, waveforms)
    are skipped, with one :class:`~xai_audit.data.DataWarning` counting them by modality and
    SOP class. Patients whose images disagree on sex or age group get a warning naming
    pseudonymous case ids only; no header value that identifies a patient (name, id, birth
    date) is ever printed or stored.

    Parameters
    ----------
    source : str, Path or iterable of paths
        A folder (searched recursively for ``*.dcm``), one file, or a list of files.
    labels : DataFrame, Series or dict, optional
        Labels keyed (index / dict keys) by pseudonymous case id, file name or path relative
        to the folder; a dict maps a key to one label (column ``"label"``) or to a dict of
        named labels. Every file must get labels. None: an unlabelled manifest.
    salt : str or bytes, optional
        HMAC key for the pseudonyms. Pass a fixed secret to get the same ids across runs;
        default a fresh random salt (ids are then only stable within this manifest).
    window : {"auto", None} or (center, width), default "auto"
        Windowing used when images are loaded, see :func:`read_dicom`.
    path_policy : {"raise", "index"}, default "raise"
        What to do when a stored path contains an identifier from its file's header: refuse
        ("raise"), or keep all paths out of the table ("index"; paths then live only in this
        object, so a table saved to CSV cannot be re-loaded without them).
    age_bins : sequence of float, default (18, 40, 60, 80)
        Left-closed edges of the ``age_group`` column (``"<18"``, ``"18-39"``, ... ``"80+"``).
    binary_labels : bool, default True
        Require labels to be 0/1.
    check_files : bool or "deep", default True
        Validate shapes/readability from the headers (True) or by decoding ("deep").
    image_size : (H, W) or (D, H, W), optional
        Bring every image to this size when it is loaded, so that mixed sizes can be audited
        together (torch interpolation; see :mod:`xai_audit.data.resize`).
    resize : {"resize", "pad", "crop"}, default "resize"
        Stretch to ``image_size``, fit and zero-pad (aspect ratio kept), or cover and
        centre-crop.
    ids_from : {"uid", "filename", "path"}, default "uid"
        Case ids: the pseudonym of the SOPInstanceUID, the file name without extension, or
        the path (relative to the folder) without extension. File-name ids are readable but
        must be unique; the paths are screened for identifiers as usual.
    skip_unreadable : bool, default False
        Skip files whose header cannot be read (with a warning counting them) instead of
        refusing the folder.

    Returns
    -------
    Manifest
        Columns: ``case_id``, ``image``, label columns, ``sex``, ``age``, ``age_group``,
        ``manufacturer``, ``modality``, ``view_position`` and ``body_part`` (each attribute
        only when some file has it), ``patient_id`` (when some file has a PatientID).

    Raises
    ------
    ManifestError
        Unreadable headers, identifiers in paths (``path_policy="raise"``), missing labels,
        duplicate instances, or any manifest validation problem.
    """
    _check_window(window)
    if path_policy not in ("raise", "index"):
        raise ValueError(f"path_policy must be 'raise' or 'index', got {path_policy!r}.")
    if ids_from not in ("uid", "filename", "path"):
        raise ValueError(f"ids_from must be 'uid', 'filename' or 'path', got {ids_from!r}.")
    if ids_from != "uid" and path_policy == "index":
        raise ValueError(
            f"ids_from={ids_from!r} would store file names, which path_policy='index' keeps "
            "out of the table; use ids_from='uid' with path_policy='index'."
        )
    check_image_size(image_size, resize)
    salt = secrets.token_bytes(32) if salt is None else salt
    files, root = _collect_paths(source)

    headers, kept, unreadable, first_error, first_kind = [], [], [], "", ""
    skipped: Counter[str] = Counter()
    for pos, path in enumerate(files):
        try:
            ds = _read_manifest_header(path)
        except Exception as exc:
            unreadable.append(f"#{pos}")
            first_error = first_error or f"{path.name}: {type(exc).__name__}: {exc}"
            first_kind = first_kind or f"position #{pos}: {type(exc).__name__}"
            continue
        if not any(tag in ds for tag in _PIXEL_TAGS):
            skipped[_object_kind(ds)] += 1
            continue
        headers.append(ds)
        kept.append(path)
    if unreadable and not skip_unreadable:
        raise ManifestError(
            f"Could not read the DICOM header of {len(unreadable)} files (positions "
            f"{', '.join(unreadable[:5])}); first error: {first_error}. Remove non-DICOM files "
            "from the list or folder, or pass skip_unreadable=True to skip them."
        )
    _warn_skipped(skipped, len(unreadable), first_kind, len(files))
    if not kept:
        raise ManifestError(
            f"None of the {len(files)} DICOM files holds an image (pixel data); objects found: "
            f"{_counts_text(skipped) or 'none readable'}."
        )
    files = kept

    stored = [p.relative_to(root).as_posix() if root else str(p) for p in files]
    case_ids, patient_ids, records, hits = [], [], [], []
    for path, ds, rel in zip(files, headers, stored):
        sop = _text(ds, "SOPInstanceUID")
        case_ids.append(pseudonymize(sop or str(path.resolve()), salt))
        pid = _text(ds, "PatientID")
        patient_ids.append(pseudonymize(pid, salt) if pid else np.nan)
        records.append({col: _text(ds, kw) or np.nan for kw, col in HEADER_ALLOW_LIST.items()})
        screen = _screen_strings(ds)
        found = _path_hits(rel, screen)
        if root is not None and _path_hits(str(root.resolve()), screen):
            found.append("folder")
        hits.append(found)

    flagged = [cid for cid, h in zip(case_ids, hits) if h]
    if flagged and path_policy == "raise":
        fields = sorted({f for h in hits for f in h})
        raise ManifestError(
            f"File paths contain identifiers from their own DICOM headers for "
            f"{describe_rows(flagged)} (fields: {', '.join(fields)}). Storing these paths would "
            "put PHI into the manifest. Rename the files/folders (e.g. to the case id) or pass "
            "path_policy='index' to keep every path out of the table."
        )

    attrs = pd.DataFrame.from_records(records, columns=list(HEADER_ALLOW_LIST.values()))
    attrs["age"] = attrs["age"].map(parse_age).astype(np.float64)
    attrs.insert(attrs.columns.get_loc("age") + 1, "age_group", _age_group(attrs["age"], age_bins))
    attrs = attrs.loc[:, attrs.notna().any(axis=0)]  # only attributes some file has

    store = None
    image_values: list[str] = stored
    if path_policy == "index":
        store = SourceStore(paths=tuple(str(p) for p in files))
        image_values = [f"{REF_PREFIX}{k}" for k in range(len(files))]

    if ids_from != "uid":
        case_ids = ids_from_paths(stored, "filename" if ids_from == "filename" else "path")
    table = pd.DataFrame({"case_id": case_ids, "image": image_values})
    label_cols: list[str] = []
    if labels is not None:
        matched = _match_labels(_labels_frame(labels), case_ids, [p.name for p in files], stored)
        label_cols = [str(c) for c in matched.columns]
        table = pd.concat([table, matched.set_axis(label_cols, axis=1)], axis=1)
    table = pd.concat([table, attrs], axis=1)
    has_patient = any(isinstance(p, str) for p in patient_ids)
    if has_patient:
        table["patient_id"] = patient_ids

    manifest = Manifest(
        table,
        label_cols=label_cols,
        attribute_cols=list(attrs.columns),
        patient_col="patient_id" if has_patient else None,
        image_root=root if path_policy == "raise" else None,
        binary_labels=binary_labels,
        dicom_window=window,
        image_size=image_size,
        resize=resize,
        store=store,
    )
    if check_files:
        raise_problems(file_problems(manifest, deep=check_files == "deep"))
    # Patient-level attributes that differ between one patient's images (case ids only).
    compared = [c for c in ("sex", "age_group") if c in manifest.table.columns]
    for note in patient_conflicts(manifest, compared):
        warnings.warn(note, DataWarning, stacklevel=2)
    return manifest


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{kind} x{n}" for kind, n in counts.most_common())


def _warn_skipped(skipped: Counter[str], n_unreadable: int, first: str, total: int) -> None:
    """One summary warning for the objects left out (counts by modality / SOP class).

    No file names (they may carry identifiers): unreadable files are named by position.
    """
    parts = []
    if skipped:
        parts.append(
            f"{sum(skipped.values())} non-image object(s) without pixel data "
            f"({_counts_text(skipped)})"
        )
    if n_unreadable:
        parts.append(f"{n_unreadable} unreadable file(s) (first: {first})")
    if parts:
        warnings.warn(
            f"manifest_from_dicom skipped {' and '.join(parts)} of {total} files; the "
            "manifest holds the other images.",
            DataWarning,
            stacklevel=3,
        )
