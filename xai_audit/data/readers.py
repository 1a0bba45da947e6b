"""Image and mask readers for files on disk.

Every reader returns a channels-first ``float32`` array: ``C x H x W`` for 2D images and
``C x D x H x W`` for volumes. Unsigned integer pixels are scaled to ``[0, 1]`` by the range
of their dtype (8-bit / 255, 16-bit / 65535) so that images of one bit depth are comparable
across files; float and signed-integer pixels (e.g. Hounsfield units stored in ``.npy``) are
kept as they are because they have no natural range.

:func:`image_shape` and :func:`mask_shape` read only headers (PIL's lazy ``open``,
``tifffile`` page metadata, ``np.load(mmap_mode="r")``, DICOM without pixel data) and go
through the same layout code as the readers, so the shape they report is the shape the reader
returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .remote import is_url, local_copy, url_problem

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "image_shape",
    "is_dicom_file",
    "not_regular_reason",
    "mask_shape",
    "read_image",
    "read_mask",
    "to_unit_float",
]

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_TIFF_SUFFIXES = (".tif", ".tiff")
_NPY_SUFFIXES = (".npy",)
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = _PIL_SUFFIXES + _TIFF_SUFFIXES + _NPY_SUFFIXES + _NIFTI_SUFFIXES + _DICOM_SUFFIXES
MASK_SUFFIXES = _PIL_SUFFIXES + _TIFF_SUFFIXES + _NPY_SUFFIXES + _NIFTI_SUFFIXES

# PIL modes that hold one grey channel (alpha, if any, is dropped).
_PIL_GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _source_kind(path: Path) -> str:
    """What a path that is not a regular file is, in words (for error messages)."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return "missing"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def not_regular_reason(path: str | Path) -> str | None:
    """None for a regular file (or a link to one); else what the path is, in words.

    Returns ``"missing"``, ``"a folder"``, ``"a device"``, ``"a FIFO (named pipe)"``,
    ``"a socket"`` or ``"not a regular file"``. Devices (``/dev/zero``), FIFOs and sockets
    are refused before any reader opens them: opening or reading them can block or never end.
    """
    if is_url(path):
        return url_problem(str(path))
    path = Path(path)
    return None if path.is_file() else _source_kind(path)


def _require_regular_file(path: Path) -> None:
    reason = not_regular_reason(path)
    if reason == "missing":
        raise FileNotFoundError(f"File not found: {str(path)!r}.")
    if reason is not None:
        raise ValueError(
            f"{str(path)!r} is not a regular file ({reason}); images and masks must be "
            "regular files. Point the manifest at the image file itself."
        )


def is_dicom_file(path: str | Path) -> bool:
    """Return True when the file carries the DICOM preamble magic (``DICM`` at byte 128)."""
    if not Path(path).is_file():  # never open a FIFO or device (it may block forever)
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _kind(path: Path) -> str:
    suffix = _suffix(path)
    if suffix in _PIL_SUFFIXES:
        return "pil"
    if suffix in _TIFF_SUFFIXES:
        return "tiff"
    if suffix in _NPY_SUFFIXES:
        return "npy"
    if suffix in _NIFTI_SUFFIXES:
        return "nifti"
    if suffix in _DICOM_SUFFIXES or is_dicom_file(path):
        # DICOM exports often have no suffix at all; the preamble identifies them.
        return "dicom"
    raise ValueError(
        f"Unsupported image file type {suffix or '(no suffix)'!r} for {str(path)!r}. "
        f"Supported suffixes: {', '.join(IMAGE_SUFFIXES)}. Convert the image to one of these "
        "(e.g. save arrays with np.save as .npy)."
    )


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """Convert pixels to ``float32``, scaling unsigned integers by their dtype range.

    Parameters
    ----------
    arr : np.ndarray
        Pixel array of any numeric or boolean dtype.

    Returns
    -------
    np.ndarray
        ``float32`` array: booleans as 0/1, ``uint8`` / 255, ``uint16`` / 65535, ``uint32`` /
        (2**32 - 1); float and signed-integer values unchanged.
    """
    arr = np.asarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        scale = np.float32(np.iinfo(arr.dtype).max)
        return arr.astype(np.float32) / scale
    if np.issubdtype(arr.dtype, np.number):
        return arr.astype(np.float32)
    raise TypeError(f"Pixel data must be numeric or boolean, got dtype {arr.dtype}.")


def _channels_first(arr: np.ndarray) -> np.ndarray:
    """Layout rule for arrays without a known channel axis (``.npy``, plain TIFF stacks).

    2D ``H x W`` -> ``1 x H x W``; 3D with a first dim <= 4 -> ``C x H x W``, otherwise a
    ``D x H x W`` volume -> ``1 x D x H x W``; 4D is taken as ``C x D x H x W``.
    """
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr if arr.shape[0] <= 4 else arr[None]
    if arr.ndim == 4:
        return arr
    raise ValueError(
        f"Cannot interpret an array of shape {arr.shape} as an image: expected H x W, "
        "C x H x W, D x H x W or C x D x H x W."
    )


def _drop_alpha(arr: np.ndarray) -> np.ndarray:
    """Drop an alpha channel from a channels-first array (RGBA -> RGB, grey+alpha -> grey)."""
    if arr.shape[0] == 4:
        return arr[:3]
    if arr.shape[0] == 2:
        return arr[:1]
    return arr


# ---------------------------------------------------------------------------- PIL (PNG/JPEG)
def _pil_array(img) -> np.ndarray:
    """Decode an opened PIL image to an ``H x W`` or ``H x W x 3`` array, native dtype."""
    mode = img.mode
    if mode in ("LA", "La"):
        img = img.getchannel(0)
    elif mode == "I" and img.format == "PNG":
        # Older Pillow versions open 16-bit grey PNGs as 32-bit "I"; PNG has at most 16 bits.
        return np.asarray(img).astype(np.uint16)
    elif mode not in _PIL_GREY_MODES and mode != "RGB":
        img = img.convert("RGB")  # RGBA, P, CMYK, YCbCr, ... -> RGB (alpha dropped)
    return np.asarray(img)


def _pil_layout(arr: np.ndarray) -> np.ndarray:
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return _pil_layout(_pil_array(img))


def _pil_shape(path: Path) -> tuple[int, ...]:
    from PIL import Image

    with Image.open(path) as img:  # lazy: parses the header only
        width, height = img.size
        channels = 1 if img.mode in _PIL_GREY_MODES else 3
    return (channels, height, width)


# ---------------------------------------------------------------------------- TIFF
def _tiff_layout(arr: np.ndarray, axes: str) -> np.ndarray:
    if "S" in axes:  # samples (colour channels) are stored last or planar; move them first
        arr = np.moveaxis(arr, axes.index("S"), 0)
        arr = _drop_alpha(arr)
        if arr.ndim in (3, 4):  # C x H x W or C x D x H x W
            return arr
        raise ValueError(f"Unsupported TIFF layout {axes!r} with shape {arr.shape}.")
    return _channels_first(arr)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        return _tiff_layout(series.asarray(), series.axes)


def _tiff_shape(path: Path) -> tuple[int, ...]:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        return _tiff_layout(_phantom(series.shape), series.axes).shape


# ---------------------------------------------------------------------------- NPY
def _read_npy(path: Path) -> np.ndarray:
    return _channels_first(np.load(path, allow_pickle=False))


def _npy_shape(path: Path) -> tuple[int, ...]:
    # mmap reads the header only; pixel pages are never touched.
    return _channels_first(np.load(path, mmap_mode="r", allow_pickle=False)).shape


# ---------------------------------------------------------------------------- NIfTI
def _nibabel():
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading NIfTI files needs nibabel, which is not installed. Install the optional "
            "extra with `pip install 'xai_audit[nifti]'` (or `pip install nibabel`)."
        ) from exc
    return nibabel


def _nifti_layout(arr: np.ndarray) -> np.ndarray:
    # NIfTI stores X, Y, Z[, C]; reverse the spatial axes to D x H x W (rows = Y).
    if arr.ndim == 2:
        return arr.T[None]
    if arr.ndim == 3:
        return np.transpose(arr, (2, 1, 0))[None]
    if arr.ndim == 4:
        return np.transpose(arr, (3, 2, 1, 0))
    raise ValueError(f"Unsupported NIfTI shape {arr.shape}.")


def _read_nifti(path: Path) -> np.ndarray:
    img = _nibabel().load(str(path))
    return _nifti_layout(np.asarray(img.dataobj))


def _nifti_shape(path: Path) -> tuple[int, ...]:
    img = _nibabel().load(str(path))  # lazy proxy: header only
    return _nifti_layout(_phantom(img.shape)).shape


# ---------------------------------------------------------------------------- dispatch
def _phantom(shape: tuple[int, ...]) -> np.ndarray:
    """A zero-memory array of ``shape``: layout functions applied to it give output shapes."""
    return np.broadcast_to(np.zeros((), dtype=np.uint8), tuple(int(s) for s in shape))


_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    "pil": _read_pil,
    "tiff": _read_tiff,
    "npy": _read_npy,
    "nifti": _read_nifti,
}


def read_image(path: str | Path, *, dicom_window: object = "auto") -> np.ndarray:
    """Read an image file as a channels-first ``float32`` array.

    Parameters
    ----------
    path : str or Path
        PNG, JPEG, BMP (pillow), TIFF (tifffile), NPY, NIfTI (``.nii``/``.nii.gz``, needs the
        optional ``nibabel``) or DICOM (``.dcm`` or any file with the DICOM preamble).
    dicom_window : {"auto", None} or (center, width), default "auto"
        Windowing for DICOM files, see :func:`xai_audit.data.read_dicom`.

    Returns
    -------
    np.ndarray
        ``float32``, ``C x H x W`` (grey -> 1 channel, RGB -> 3, alpha dropped) or
        ``C x D x H x W`` for volumes. Unsigned integer pixels are scaled to ``[0, 1]`` by
        their dtype range; float and signed-integer pixels are returned unscaled.

    Raises
    ------
    ValueError
        For an unsupported suffix or an array that is not an image.
    ImportError
        For NIfTI files when nibabel is not installed.
    """
    if is_url(path):  # s3://, gs://, https://, file://: a local copy, read as a file
        with local_copy(str(path)) as local:
            return read_image(local, dicom_window=dicom_window)
    path = Path(path)
    _require_regular_file(path)
    kind = _kind(path)
    if kind == "dicom":
        from .dicom import read_dicom

        return read_dicom(path, window=dicom_window)  # type: ignore[arg-type]
    return np.ascontiguousarray(to_unit_float(_READERS[kind](path)))


def image_shape(path: str | Path) -> tuple[int, ...]:
    """Shape :func:`read_image` would return, read from the file header only.

    Parameters
    ----------
    path : str or Path
        Image file (any suffix :func:`read_image` supports).

    Returns
    -------
    tuple of int
        ``(C, H, W)`` or ``(C, D, H, W)``.
    """
    if is_url(path):
        with local_copy(str(path)) as local:
            return image_shape(local)
    path = Path(path)
    _require_regular_file(path)
    kind = _kind(path)
    if kind == "pil":
        return _pil_shape(path)
    if kind == "tiff":
        return _tiff_shape(path)
    if kind == "npy":
        return _npy_shape(path)
    if kind == "nifti":
        return _nifti_shape(path)
    from .dicom import dicom_shape

    return dicom_shape(path)


# ---------------------------------------------------------------------------- masks
def _mask_layout(arr: np.ndarray) -> np.ndarray:
    """Masks are spatial: drop a leading singleton channel; 3D otherwise means a volume."""
    if arr.ndim in (3, 4) and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"Cannot interpret an array of shape {arr.shape} as a mask.")
    return arr


def read_mask(path: str | Path) -> np.ndarray:
    """Read a segmentation mask as a binary ``uint8`` array (nonzero -> 1).

    Parameters
    ----------
    path : str or Path
        PNG/JPEG/BMP, TIFF, NPY or NIfTI file. Colour masks count a pixel as foreground when
        any channel is nonzero.

    Returns
    -------
    np.ndarray
        ``uint8`` of 0/1, ``H x W`` (or ``D x H x W`` for volumes).
    """
    if is_url(path):
        with local_copy(str(path)) as local:
            return read_mask(local)
    path = Path(path)
    _require_regular_file(path)
    kind = _kind(path)
    if kind == "pil":
        from PIL import Image

        with Image.open(path) as img:
            arr = np.asarray(img.convert("L") if img.mode == "P" else img)
        fg = arr != 0 if arr.ndim == 2 else np.any(arr[..., :3] != 0, axis=-1)
        return fg.astype(np.uint8)
    if kind == "tiff":
        import tifffile

        arr = np.asarray(tifffile.imread(path))
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            return np.any(arr[..., :3] != 0, axis=-1).astype(np.uint8)
        return (_mask_layout(arr) != 0).astype(np.uint8)
    if kind == "npy":
        return (_mask_layout(np.load(path, allow_pickle=False)) != 0).astype(np.uint8)
    if kind == "nifti":
        return (_mask_layout(_read_nifti(path)) != 0).astype(np.uint8)
    raise ValueError(f"DICOM files are not supported as masks ({str(path)!r}).")


def mask_shape(path: str | Path) -> tuple[int, ...]:
    """Spatial shape :func:`read_mask` would return, read from the file header only."""
    if is_url(path):
        with local_copy(str(path)) as local:
            return mask_shape(local)
    path = Path(path)
    _require_regular_file(path)
    kind = _kind(path)
    if kind == "pil":
        return _pil_shape(path)[1:]
    if kind == "tiff":
        import tifffile

        with tifffile.TiffFile(path) as tf:
            shape = tuple(tf.series[0].shape)
        if len(shape) == 3 and shape[-1] in (3, 4):
            return shape[:2]
        return _mask_layout(_phantom(shape)).shape
    if kind == "npy":
        return _mask_layout(np.load(path, mmap_mode="r", allow_pickle=False)).shape
    if kind == "nifti":
        return _mask_layout(_phantom(_nifti_shape(path))).shape
    raise ValueError(f"DICOM files are not supported as masks ({str(path)!r}).")
