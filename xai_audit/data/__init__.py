"""Data loading for audits: manifests, image readers, DICOM with PHI stripped, validation.

A :class:`Manifest` is a validated table with one row per image (case id, image source,
labels, subgroup attributes, optional patient id and mask). Build one from a CSV/DataFrame
(:func:`load_manifest`), in-memory arrays (:func:`manifest_from_arrays`) or DICOM files
(:func:`manifest_from_dicom`); problems raise :class:`ManifestError` naming the rows.
"""

from __future__ import annotations

from .arrays import manifest_from_arrays
from .dicom import manifest_from_dicom, pseudonymize, read_dicom
from .errors import DataWarning, ManifestError
from .manifest import Manifest, load_manifest
from .readers import image_shape, mask_shape, read_image, read_mask
from .torch_dataset import ImageDataset

__all__ = [
    "DataWarning",
    "ImageDataset",
    "Manifest",
    "ManifestError",
    "image_shape",
    "load_manifest",
    "manifest_from_arrays",
    "manifest_from_dicom",
    "mask_shape",
    "pseudonymize",
    "read_dicom",
    "read_image",
    "read_mask",
]
