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


def save_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame as CSV plus a dtype sidecar so that :func:`load_table` restores it.

    Floats are written with 17 significant digits (exact float64 round trip); object columns
    keep strings such as ``"NA"``, ``""`` or ``"007"`` as they are (missing values are written
    as ``\\N``, so an empty string and a missing value stay distinct).
    """
    path = Path(path)
    dtypes = {str(c): str(t) for c, t in df.dtypes.items()}
    text = df.to_csv(index=False, lineterminator="\n", float_format="%.17g", na_rep=NA_REP)
    atomic_write_text(path, text)
    atomic_write_text(path.with_suffix(".dtypes.json"), json.dumps(dtypes, indent=1))
    return path


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`save_table`."""
    path = Path(path)
    sidecar = path.with_suffix(".dtypes.json")
    dtypes: dict[str, str] = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    text_cols = [c for c, t in dtypes.items() if t in ("object", "string", "str", "category")]
    kwargs: dict[str, Any] = {}
    if int(pd.__version__.split(".")[0]) < 3:
        kwargs["float_precision"] = "round_trip"  # the default from pandas 3 on
    df = pd.read_csv(
        path,
        dtype={c: object for c in text_cols},
        keep_default_na=False,
        na_values=[NA_REP],
        **kwargs,
    )
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
