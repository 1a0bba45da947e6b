"""Image and mask sources given as URLs (``s3://``, ``gs://``, ``https://``, ``file://``, ...).

A manifest row may name its image by an fsspec URL instead of a local path, so that the
workers of a Ray cluster read the data straight from object storage. fsspec (and its backends:
``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``, built-in for ``file://``, ``memory://`` and
``http(s)://``) does the transport; the readers stay the local ones: each object is copied
once into a temporary file with the same suffix (so that format detection, DICOM preambles and
``.nii.gz`` work unchanged) and read from there.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(source: object) -> bool:
    """Whether ``source`` is a URL with a scheme (``s3://...``) rather than a file path."""
    return isinstance(source, str) and bool(_URL.match(source))


def url_name(url: str) -> str:
    """The last component of a URL's path (``scan.png`` for ``s3://bucket/a/scan.png``)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def source_name(source: object) -> str:
    """The file name of a path or URL, for messages (``scan.png``)."""
    return url_name(str(source)) if is_url(source) else Path(str(source)).name


def join_url(root: str, relative: str) -> str:
    """``root/relative`` for a URL root (a manifest's ``image_root`` on object storage)."""
    return root.rstrip("/") + "/" + relative.lstrip("/")


def _filesystem(url: str):  # noqa: ANN202 - fsspec's AbstractFileSystem
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        raise ImportError(
            f"Cannot read {url!r}: fsspec has no working backend for {scheme}:// ({exc}). "
            f"Install it (e.g. pip install s3fs for s3://, gcsfs for gs://)."
        ) from exc


def url_problem(url: str) -> str | None:
    """None for an existing object; ``"missing"`` or ``"a folder"`` otherwise."""
    fs, path = _filesystem(url)
    if not fs.exists(path):
        return "missing"
    if fs.isdir(path):
        return "a folder"
    return None


def _suffix(url: str) -> str:
    name = url_name(url).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


@contextmanager
def local_copy(url: str) -> Iterator[Path]:
    """A temporary local copy of the object at ``url`` (removed on exit).

    Raises
    ------
    FileNotFoundError
        When nothing exists at ``url``.
    ValueError
        When ``url`` names a folder.
    ImportError
        When fsspec has no backend for the URL's scheme.
    """
    problem = url_problem(url)
    if problem == "missing":
        raise FileNotFoundError(f"Not found: {url!r}.")
    if problem is not None:
        raise ValueError(f"{url!r} is {problem}, not an image object.")
    fs, path = _filesystem(url)
    fd, tmp = tempfile.mkstemp(prefix="xai-audit-", suffix=_suffix(url))
    try:
        with os.fdopen(fd, "wb") as out, fs.open(path, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
        yield Path(tmp)
    finally:
        os.unlink(tmp)


def digest_url(url: str, h) -> None:  # noqa: ANN001 - a hashlib object
    """Feed the object's bytes into ``h`` (content hashes of manifests on object storage)."""
    problem = url_problem(url)
    if problem is not None:
        raise FileNotFoundError(f"Cannot hash {url!r}: it is {problem}.")
    fs, path = _filesystem(url)
    with fs.open(path, "rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
