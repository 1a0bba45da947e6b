"""Image sources given as fsspec URLs (issue 17: workers read s3:// etc. through the manifest).

fsspec's ``memory://`` file system stands in for object storage (no network): the objects
are written there, the manifest names them by URL, and every read must equal the local one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_audit_helpers import small_dataset, tiny_model  # noqa: E402

from xai_audit.audit import Audit  # noqa: E402
from xai_audit.data import ManifestError, load_manifest  # noqa: E402
from xai_audit.data.readers import image_shape, not_regular_reason, read_image  # noqa: E402
from xai_audit.data.remote import is_url, join_url, url_name  # noqa: E402


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("remote"), n=24, size=32)


def _upload(csv: Path, bucket: str) -> pd.DataFrame:
    """Copy every image and mask of a manifest to memory://bucket/...; the table with URLs."""
    fs = fsspec.filesystem("memory")
    table = _table(csv)
    for col in ("image", "mask"):
        urls = []
        for rel in table[col]:
            if not isinstance(rel, str) or not rel:
                urls.append(rel)
                continue
            url = f"memory://{bucket}/{rel}"
            with fs.open(url, "wb") as f:
                f.write((csv.parent / rel).read_bytes())
            urls.append(url)
        table[col] = urls
    return table


def _table(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv, dtype={"case_id": str, "image": str, "patient_id": str, "mask": str})


def test_url_helpers() -> None:
    assert is_url("s3://bucket/a/b.png") and is_url("file:///tmp/x.npy")
    assert not is_url("/tmp/x.png") and not is_url("images/x.png") and not is_url(Path("a"))
    assert url_name("s3://bucket/a/scan.nii.gz") == "scan.nii.gz"
    assert join_url("s3://bucket/data/", "/images/x.png") == "s3://bucket/data/images/x.png"


def test_images_read_by_url_equal_the_local_files(local) -> None:
    table = _upload(local, "equal")
    remote = load_manifest(table)
    here = load_manifest(local)
    rows = np.arange(len(here))
    np.testing.assert_array_equal(remote.load_images(rows), here.load_images(rows))
    np.testing.assert_array_equal(remote.load_masks(rows), here.load_masks(rows))
    assert remote.image_path(0) == table["image"].iloc[0]  # kept as a URL, not a mangled Path
    assert image_shape(table["image"].iloc[0]) == here.load_image(0).shape
    # npy objects too (format from the URL's suffix)
    arr = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    with fsspec.open("memory://equal/extra/volume.npy", "wb") as f:
        np.save(f, arr)
    np.testing.assert_array_equal(read_image("memory://equal/extra/volume.npy"), arr)


def test_relative_paths_under_a_url_root(local) -> None:
    _upload(local, "rooted")
    table = _table(local)
    remote = load_manifest(table, image_root="memory://rooted")
    assert remote.image_path(1) == "memory://rooted/" + table["image"].iloc[1]
    np.testing.assert_array_equal(remote.load_image(1), load_manifest(local).load_image(1))


def test_missing_objects_and_folders_are_named(local) -> None:
    table = _upload(local, "broken")
    table.loc[2, "image"] = "memory://broken/images/nothing-here.png"
    table.loc[3, "image"] = "memory://broken/images"  # a "folder"
    assert not_regular_reason(table.loc[2, "image"]) == "missing"
    assert not_regular_reason(table.loc[3, "image"]) == "a folder"
    with pytest.raises(ManifestError) as err:
        load_manifest(table)
    text = str(err.value)
    assert "nothing-here.png" in text and table.loc[2, "case_id"] in text
    assert table.loc[3, "case_id"] in text and "folder" in text
    lazy = load_manifest(table, check_files=False)
    with pytest.raises(ManifestError, match="nothing-here.png"):
        lazy.load_image(2)


def test_content_hash_reads_the_objects(local) -> None:
    table = _upload(local, "hashed")
    before = load_manifest(table).content_hash(include_files=True)
    assert before == load_manifest(table).content_hash(include_files=True)
    with fsspec.open(table["image"].iloc[0], "wb") as f:  # same name, other bytes
        f.write((local.parent / pd.read_csv(local)["image"].iloc[1]).read_bytes())
    assert load_manifest(table).content_hash(include_files=True) != before


def test_unknown_scheme_says_what_to_install() -> None:
    with pytest.raises(ImportError, match="no working backend for nosuchproto://"):
        read_image("nosuchproto://bucket/x.png")


def test_audit_on_urls_equals_audit_on_files(local, tmp_path) -> None:
    settings = dict(
        sensitive=["sex"],
        methods=["gradcam"],
        n_boot=50,
        min_group_size=4,
        quality={"sanity": False, "faithfulness": False, "sample_size": 4},
        slices=False,
    )
    here = Audit(tiny_model(), load_manifest(local), output_dir=tmp_path / "a", **settings).run()
    remote = Audit(
        tiny_model(), load_manifest(_upload(local, "audit")), output_dir=tmp_path / "b", **settings
    ).run()
    cols = ["case_id", "label", "score", "predicted"]
    pd.testing.assert_frame_equal(remote.predictions[cols], here.predictions[cols])
    np.testing.assert_array_equal(remote.maps("gradcam"), here.maps("gradcam"))
