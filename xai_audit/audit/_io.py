"""Small I/O helpers: JSON-safe values, atomic writes, hashing, tables that round-trip."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and non-finite floats for ``json.dumps``.

    NaN and infinities become ``None`` (JSON has no NaN), so the JSON twin always parses.
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, pd.DataFrame):
        return [jsonable(r) for r in obj.to_dict("records")]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def dumps(obj: Any, indent: int | None = 1) -> str:
    """JSON text of ``obj`` after :func:`jsonable` (strict: no NaN)."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def _current_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    A reader (or a rerun after a crash) sees either the old file or the complete new one,
    never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp creates the file 0600; give it the permissions a plain open() would have
        # (0666 minus the umask), so a shared report is readable by whoever may read it.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_json(obj: Any) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (sorted keys)."""
    text = json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ tables
#: How a missing value is written in saved tables (the PostgreSQL/MySQL convention).
NA_REP = "\\N"
#: Version of the table sidecar (``*.dtypes.json``) that :func:`save_table` writes.
TABLE_FORMAT = 2
_INDEX_PREFIX = "__index_"


class TableError(ValueError):
    """A saved table cannot be read back (damaged, truncated or of an unknown format)."""


def _plain(v: Any) -> Any:
    """A cell as plain JSON data (numpy scalars unwrapped; NaN kept: cells allow it)."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is pd.NA or v is pd.NaT:
        return None
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def _escape(v: Any) -> Any:
    # A text starting with a backslash gets one more, so that the text "\N" is not missing.
    return "\\" + v if isinstance(v, str) and v.startswith("\\") else v


def _unescape(v: Any) -> Any:
    return v[1:] if isinstance(v, str) and v.startswith("\\") else v


def _encoding(s: pd.Series) -> str:
    """``plain`` (numbers, bools, dates), ``text`` (strings only) or ``json`` (mixed cells)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return "text" if all(isinstance(c, str) for c in s.cat.categories) else "json"
    if isinstance(s.dtype, pd.StringDtype):
        return "text"
    if s.dtype == object:
        missing = {type(v) for v in s[s.isna()]}
        texts = all(isinstance(v, str) for v in s[s.notna()])
        return "text" if texts and len(missing) <= 1 else "json"  # None and NaN: keep which
    return "plain"


def save_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame as CSV plus a sidecar ``*.dtypes.json`` so that :func:`load_table`
    restores it: columns in order (duplicates too), dtypes, row count and a non-default index.

    Floats are written with 17 significant digits (exact round trip); text columns keep
    strings such as ``"NA"``, ``""`` or ``"007"`` as they are (missing values are written as
    ``\\N``, and a text starting with a backslash gets one more, so an empty string, the text
    ``\\N`` and a missing value stay distinct). Object columns mixing types (numbers and text,
    lists, dicts) are written one JSON value per cell. A table without columns is an empty
    file whose sidecar keeps the row count.
    """
    path = Path(path)
    if isinstance(df.columns, pd.MultiIndex):
        raise TypeError(f"{path.name}: tables with multi-level columns cannot be saved.")
    idx = df.index
    parts: list[tuple[Any, pd.Series]] = []
    index_names: list[Any] | None = None
    if not (isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1):
        index_names = [_plain(n) for n in idx.names]
        parts += [
            (f"{_INDEX_PREFIX}{i}__", pd.Series(idx.get_level_values(i)))
            for i in range(idx.nlevels)
        ]
    parts += [
        (_plain(df.columns[j]), df.iloc[:, j].reset_index(drop=True)) for j in range(df.shape[1])
    ]
    columns: list[dict[str, Any]] = []
    cells: dict[int, pd.Series] = {}
    for j, (name, s) in enumerate(parts):
        enc = _encoding(s)
        col: dict[str, Any] = {"name": name, "dtype": str(s.dtype), "enc": enc}
        if isinstance(s.dtype, pd.CategoricalDtype):
            col["categories"] = [_plain(c) for c in s.cat.categories]
            col["ordered"] = bool(s.cat.ordered)
        if enc == "text":
            if s.dtype == object and any(v is None for v in s):
                col["missing"] = "None"
            s = s.astype(object).map(_escape)
        elif enc == "json":
            s = s.astype(object).map(
                lambda v: json.dumps(_plain(v), ensure_ascii=False, allow_nan=True)
            )
        columns.append(col)
        cells[j] = s
    text = ""
    if columns:
        flat = pd.DataFrame(cells, index=range(len(df)))
        flat.columns = [str(c["name"]) for c in columns]
        # CRLF (RFC 4180): the csv writer then quotes a text holding a lone "\r" as well.
        text = flat.to_csv(index=False, lineterminator="\r\n", float_format="%.17g", na_rep=NA_REP)
    meta = {
        "format": TABLE_FORMAT,
        "n_rows": len(df),
        "columns": columns,
        "columns_dtype": str(df.columns.dtype),
        "index": index_names,
    }
    atomic_write_text(path, text)
    atomic_write_text(path.with_suffix(".dtypes.json"), json.dumps(meta, indent=1))
    return path


def _decode(s: pd.Series, col: dict[str, Any]) -> pd.Series:
    """One column read as text (missing: NaN) back to its saved dtype."""
    dtype, enc = col["dtype"], col["enc"]
    # Lists, not Series.map: map would infer a dtype ([None, 0] would become [NaN, 0.0]).
    if enc == "json":
        values = [json.loads(v) if isinstance(v, str) else None for v in s]
        s = pd.Series(values, index=s.index, dtype=object)
    elif enc == "text":
        none = col.get("missing") == "None"
        values = [_unescape(v) if isinstance(v, str) else (None if none else v) for v in s]
        s = pd.Series(values, index=s.index, dtype=object)
    if "categories" in col:
        return pd.Series(
            pd.Categorical(s, categories=col["categories"], ordered=col["ordered"]), dtype=dtype
        )
    if enc != "plain":
        return s if dtype == "object" else s.astype(dtype)
    if dtype in ("bool", "boolean"):
        s = s.map({"True": True, "False": False})
        return s.astype(dtype) if dtype == "boolean" or not s.isna().any() else s
    if dtype.startswith("datetime64"):
        return pd.Series(pd.to_datetime(s)).astype(dtype)
    if dtype.startswith("timedelta64"):
        return pd.Series(pd.to_timedelta(s)).astype(dtype)
    if dtype[:1] in ("I", "U", "F"):  # nullable Int64 / UInt8 / Float64: parse, then cast
        return pd.to_numeric(s).astype(dtype)
    return s.astype(dtype)  # numpy numbers: Python's own (exact) parsing of each value


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`save_table`.

    Raises
    ------
    TableError
        The file or its sidecar is damaged, truncated or of a newer format.
    """
    path = Path(path)
    sidecar = path.with_suffix(".dtypes.json")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
    except ValueError as exc:
        raise TableError(f"{sidecar.name} is damaged ({exc}).") from exc
    if not (isinstance(meta, dict) and "format" in meta):
        return _load_table_v1(path, meta)
    if meta["format"] > TABLE_FORMAT:
        raise TableError(
            f"{path.name} was written by a newer xai_audit (table format {meta['format']}; "
            f"this version reads up to {TABLE_FORMAT}); upgrade xai_audit to read it."
        )
    cols, n = meta["columns"], int(meta["n_rows"])
    if not cols:
        df = pd.DataFrame(index=pd.RangeIndex(n))
    else:
        try:
            raw = pd.read_csv(
                path,
                dtype=object,
                keep_default_na=False,
                na_values=[NA_REP],
                skip_blank_lines=False,
            )
        except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
            raise TableError(f"{path.name} is damaged ({exc}).") from exc
        if raw.shape != (n, len(cols)):
            raise TableError(
                f"{path.name} has {raw.shape[0]} rows and {raw.shape[1]} columns; its sidecar "
                f"says {n} and {len(cols)} (the file is truncated or was edited)."
            )
        try:
            decoded = {j: _decode(raw.iloc[:, j], c) for j, c in enumerate(cols)}
        except (ValueError, TypeError) as exc:
            raise TableError(f"{path.name}: a value does not parse as its type ({exc}).") from exc
        df = pd.DataFrame(decoded)
        df.columns = pd.Index([c["name"] for c in cols], dtype=object)
    index = meta.get("index")
    if index is not None:
        k = len(index)
        levels = [df.iloc[:, i] for i in range(k)]
        new_index = (
            pd.MultiIndex.from_arrays(levels, names=index)
            if k > 1
            else pd.Index(levels[0], name=index[0])
        )
        df = df.iloc[:, k:].set_axis(new_index, axis=0)
    try:
        df.columns = df.columns.astype(meta.get("columns_dtype", "object"))
    except (TypeError, ValueError):
        pass  # names that no longer fit the recorded dtype stay objects
    return df


def _load_table_v1(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    """Tables of format 1 (a ``{column: dtype}`` sidecar; an empty table was a 1-byte file)."""
    text_cols = [c for c, t in dtypes.items() if t in ("object", "string", "str", "category")]
    try:
        if not path.read_text(encoding="utf-8").strip():
            raise pd.errors.EmptyDataError
        df = pd.read_csv(
            path,
            dtype={c: object for c in text_cols},
            keep_default_na=False,
            na_values=[NA_REP],
        )
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except (ValueError, pd.errors.ParserError) as exc:
        raise TableError(f"{path.name} is damaged ({exc}).") from exc
    for col, dtype in dtypes.items():
        if col not in df.columns:
            continue
        if col in text_cols:
            obj = df[col].astype(object).where(df[col].notna(), np.nan)
            df[col] = obj if dtype == "object" else obj.astype(dtype)
            continue
        try:
            if dtype == "bool" and df[col].dtype == object:
                df[col] = df[col].map({"True": True, "False": False})
            df[col] = df[col].astype(dtype)
        except (TypeError, ValueError):
            pass  # e.g. an int column that gained NaN: keep what pandas read
    if df.empty and dtypes:
        df = pd.DataFrame(
            {c: pd.Series(dtype=t if t != "str" else object) for c, t in dtypes.items()}
        )
    return df
