"""Saved results: round trips (property-based), damaged results, folder ownership, report
files, shard checksums, the folder lock and model facts kept across a resume."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_audit_helpers import FAST, small_dataset, tiny_model

from xai_audit.audit import Audit, AuditResult
from xai_audit.audit._io import load_table, save_table
from xai_audit.audit.result import ResultError, load_tree, save_tree
from xai_audit.audit.store import (
    LOCK_INFO_FILE,
    MARKER_FILE,
    FolderLock,
    FolderLockedError,
    NotOwnedError,
)
from xai_audit.cli import main
from xai_audit.data import load_manifest, manifest_from_arrays

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

#: Small audits: one method, few samples, no sanity check (it is not what is tested here).
MINI = {
    **FAST,
    "methods": {"gradcam": {}},
    "quality": {"sample_size": 4, "sanity": False, "n_steps": 3},
}


# ------------------------------------------------------------------------------ helpers
def assert_same(a, b, where="") -> None:
    """Deep equality after a save/load: NaN == NaN, tuples are lists, keys are strings."""
    if isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), where
        pd.testing.assert_frame_equal(b, a, obj=where or "table")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and b.dtype == a.dtype and b.shape == a.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(b) == [str(k) for k in a], where
        for k, v in a.items():
            assert_same(v, b[str(k)], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


texts = st.one_of(
    st.text(alphabet=st.sampled_from(list('ab,"\n\r\\N é;')), max_size=6),
    st.sampled_from(["NA", "nan", "null", "$table", "", "\\N", "007", "True"]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
cells = st.one_of(st.none(), st.integers(-(2**62), 2**62), floats, texts, st.booleans())


@st.composite
def tables(draw) -> pd.DataFrame:
    """Frames of every kind the audit writes: empty, NaN, text, bool, int, mixed objects."""
    n = draw(st.integers(0, 5))
    kinds = draw(
        st.lists(
            st.sampled_from(["int", "float", "bool", "text", "mixed", "f32", "cat"]), max_size=4
        )
    )
    cols = {}
    for j, kind in enumerate(kinds):
        name = draw(st.sampled_from(["a", "b", "group", "", "n/a", "\\N"])) + str(j)
        if kind == "int":
            cols[name] = pd.Series(
                draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n)), dtype="int64"
            )
        elif kind == "float":
            cols[name] = pd.Series(draw(st.lists(floats, min_size=n, max_size=n)), dtype="float64")
        elif kind == "f32":
            cols[name] = pd.Series(
                draw(st.lists(st.floats(width=32), min_size=n, max_size=n)), dtype="float32"
            )
        elif kind == "bool":
            cols[name] = pd.Series(
                draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool
            )
        elif kind == "text":
            values = draw(st.lists(st.one_of(st.none(), texts), min_size=n, max_size=n))
            cols[name] = pd.Series(values, dtype=object)
        elif kind == "cat":
            values = draw(st.lists(st.sampled_from(["F", "M"]), min_size=n, max_size=n))
            cols[name] = pd.Series(pd.Categorical(values, categories=["M", "F"]))
        else:
            values = draw(
                st.lists(
                    st.one_of(
                        cells,
                        st.lists(cells, max_size=2),
                        st.dictionaries(texts, cells, max_size=2),
                    ),
                    min_size=n,
                    max_size=n,
                )
            )
            cols[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(cols, index=range(n)) if cols else pd.DataFrame(index=range(n))


arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_, np.dtype("<U3")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
)
leaves = st.one_of(cells, tables(), arrays)
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["x", "$table", "$array", "$float", "$dict", "1", "é"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


# ------------------------------------------------------------------------------ round trips
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.dictionaries(st.sampled_from(["config", "quality", "findings", "x"]), trees))
def test_any_tree_of_tables_arrays_and_values_round_trips(content) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        save_tree(tmp, content)
        assert_same(content, load_tree(tmp))
        # saving what was loaded writes the same files again
        again = Path(tmp) / "again"
        save_tree(again, load_tree(tmp))
        assert_same(content, load_tree(again))


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame(),  # what a skipped shortcut check wrote: a 1-byte CSV before
        pd.DataFrame(index=range(3)),
        pd.DataFrame({"attribute": pd.Series(dtype=object), "p": pd.Series(dtype=float)}),
        pd.DataFrame({"s": ["\\N", "", None, "NA"], "i": [1, 2, 3, 4]}),
        pd.DataFrame([[1, 2]], columns=["a", "a"]),
        pd.DataFrame({"v": [1.5, np.nan]}, index=pd.Index(["x", "y"], name="group")),
    ],
    ids=["no-columns", "rows-no-columns", "columns-no-rows", "text", "duplicate-names", "index"],
)
def test_tables_round_trip_with_their_columns(df: pd.DataFrame, tmp_path: Path) -> None:
    save_table(df, tmp_path / "t.csv")
    pd.testing.assert_frame_equal(load_table(tmp_path / "t.csv"), df)


def test_format_1_empty_table_loads(tmp_path: Path) -> None:
    """Results saved before format 2 wrote an empty table as a 1-byte file: it loads now."""
    (tmp_path / "t.csv").write_text("\n")
    (tmp_path / "t.dtypes.json").write_text("{}")
    assert load_table(tmp_path / "t.csv").empty


# ------------------------------------------------------------------------------ real audits
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("data") / "demo", n=32, size=32)


@pytest.fixture(scope="module")
def constant_run(tmp_path_factory) -> AuditResult:
    """All-black images: no map has a defined share, so the shortcut check is skipped."""
    rng = np.random.default_rng(0)
    n = 32
    manifest = manifest_from_arrays(
        np.zeros((n, 1, 32, 32), np.float32),
        labels=rng.integers(0, 2, n),
        attributes={"sex": rng.choice(["F", "M"], n), "site": rng.choice(["A", "B"], n)},
    )
    out = tmp_path_factory.mktemp("constant") / "audit"
    return Audit(tiny_model(), manifest, sensitive=["sex", "site"], output_dir=out, **MINI).run()


def test_audit_with_skipped_checks_reloads_and_reports(constant_run: AuditResult, tmp_path) -> None:
    r = constant_run
    loaded = AuditResult.load(r.result_dir)
    for field in AuditResult._FIELDS:
        assert_same(getattr(r, field), getattr(loaded, field), field)
    assert loaded.to_json() == r.to_json()
    assert main(["report", str(r.result_dir), "--output", str(tmp_path / "r.html")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["meta"]["generator"].startswith(
        "xai_audit"
    )

    # Whatever the shortcut search does with black images today, a skipped check (an empty
    # table without columns: a 1-byte CSV that no reader could open before) must reload.
    r = loaded  # a copy: the module's fixture stays as it is
    r.quality["shortcuts"]["gradcam"] = {
        "table": pd.DataFrame(),
        "flags": [],
        "params": {"skipped": "No subgroup has images with a defined share"},
    }
    copy = tmp_path / "skipped"
    r.save(copy)
    again = AuditResult.load(copy)
    assert_same(r.quality, again.quality, "quality")
    assert main(["report", str(copy)]) == 0 and (copy / "report.html").is_file()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda d: (d / "result.json").write_text((d / "result.json").read_text()[:200]),
            r"result\.json is damaged.*Rerun the audit",
        ),
        (
            lambda d: next((d / "tables").glob("predictions.csv")).unlink(),
            r"predictions\.csv is missing",
        ),
        (
            lambda d: (d / "tables" / "predictions.csv").write_text("row,case_id\n"),
            r"predictions\.csv is damaged or was changed",
        ),
        (
            lambda d: (d / "arrays.npz").write_bytes((d / "arrays.npz").read_bytes()[:100]),
            r"arrays\.npz is damaged",
        ),
        (
            lambda d: (d / "result.json").write_text(
                json.dumps({**json.loads((d / "result.json").read_text()), "format_version": 99})
            ),
            r"result format 99.*reads formats up to 2.*Upgrade",
        ),
    ],
    ids=["truncated-json", "missing-table", "edited-table", "bad-arrays", "newer-version"],
)
def test_damaged_result_gives_a_clear_error(
    constant_run: AuditResult, tmp_path: Path, damage, expected, capsys
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(constant_run.result_dir, folder)
    damage(folder)
    with pytest.raises(ResultError, match=expected):
        AuditResult.load(folder)
    assert main(["report", str(folder)]) == 2
    assert "xai-audit report:" in capsys.readouterr().err
    assert not (folder / "report.html").exists()


# ------------------------------------------------------------------------------ ownership
def test_a_users_folder_is_never_written_without_overwrite(data, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "shards").mkdir(parents=True)
    (folder / "shards" / "notes.txt").write_text("mine")
    (folder / "result.json").write_text("my own json")
    manifest = load_manifest(data)
    with pytest.raises(NotOwnedError, match=r"mine.*not empty.*overwrite=True.*--overwrite"):
        Audit(tiny_model(), manifest, sensitive=["sex"], output_dir=folder, **MINI).run()
    assert sorted(p.name for p in folder.rglob("*")) == ["notes.txt", "result.json", "shards"]
    assert (folder / "result.json").read_text() == "my own json"

    # With overwrite=True the result's own names are replaced and nothing else is touched,
    # also when a rerun with other methods drops the earlier shards.
    Audit(
        tiny_model(), manifest, sensitive=["sex"], output_dir=folder, overwrite=True, **MINI
    ).run()
    assert (folder / MARKER_FILE).is_file() and (
        folder / "shards" / "notes.txt"
    ).read_text() == "mine"
    stale = folder / "shards" / "batch_00001.npz"
    before = stale.read_bytes()
    other = {**MINI, "methods": {"saliency": {}}, "batch_size": 32}
    Audit(tiny_model(), manifest, sensitive=["sex"], output_dir=folder, **other).run()
    assert not stale.exists() and before  # its own stale shard is gone
    assert (folder / "shards" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (folder / "shards").glob("batch_*")) == ["batch_00000.npz"]

    # AuditResult.save is held to the same rule
    with pytest.raises(NotOwnedError, match="overwrite=True"):
        AuditResult.load(folder).save(tmp_path)


def test_cli_run_refuses_a_users_folder_unless_overwrite(data, tmp_path: Path, capsys) -> None:
    from test_audit import _write_config

    config = _write_config(tmp_path, data)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    assert main(["run", str(config), "--output-dir", str(mine)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert main(["run", str(config), "--output-dir", str(mine), "--overwrite"]) == 0
    assert (mine / "keep.txt").read_text() == "x" and (mine / "report.html").is_file()


def test_report_does_not_replace_files_it_did_not_write(
    constant_run: AuditResult, tmp_path: Path
) -> None:
    thesis = tmp_path / "thesis.html"
    (tmp_path / "thesis.json").write_text('{"chapter": 1}')
    with pytest.raises(NotOwnedError, match=r"thesis\.json.*overwrite=True"):
        constant_run.report(thesis)
    assert (tmp_path / "thesis.json").read_text() == '{"chapter": 1}' and not thesis.exists()
    assert main(["report", str(constant_run.result_dir), "--output", str(thesis)]) == 2
    # overwrite=True replaces anything; its own earlier report is replaced without asking
    constant_run.report(thesis, overwrite=True)
    assert json.loads((tmp_path / "thesis.json").read_text())["meta"]["title"] == constant_run.name
    (tmp_path / "thesis.json").write_text(thesis.with_suffix(".json").read_text() + " ")
    constant_run.report(thesis)
    assert not (tmp_path / "thesis.json").read_text().endswith(" ")


# ------------------------------------------------------------------------------ shards
def test_damaged_shards_are_recomputed_with_a_warning(data, tmp_path: Path, caplog) -> None:
    out = tmp_path / "audit"
    manifest = load_manifest(data)
    settings_ = {**MINI, "batch_size": 8}
    first = Audit(tiny_model(), manifest, sensitive=["sex"], output_dir=out, **settings_).run()
    shards = out / "shards"
    truncated = shards / "batch_00001.npz"
    truncated.write_bytes(truncated.read_bytes()[:300])
    swapped = shards / "batch_00002.npz"
    shutil.copyfile(shards / "batch_00000.npz", swapped)  # a valid shard of another batch
    calls: list[tuple[int, str]] = []
    with caplog.at_level("WARNING", logger="xai_audit.audit.store"):
        again = Audit(
            tiny_model(),
            manifest,
            sensitive=["sex"],
            output_dir=out,
            on_batch=lambda k, n, s: calls.append((k, s)),
            **settings_,
        ).run()
    assert sorted(calls) == [(0, "reused"), (1, "computed"), (2, "computed"), (3, "reused")]
    assert "batch_00001.npz" in caplog.text and "batch_00002.npz" in caplog.text
    assert "recomputing" in caplog.text
    pd.testing.assert_frame_equal(again.predictions, first.predictions)
    state = json.loads((out / "run_state.json").read_text())
    assert state["shards"]["2"]["rows"] == [16, 24] and len(state["shards"]["2"]["sha256"]) == 64


def test_target_layer_is_restored_after_a_fully_resumed_run(data, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    manifest = load_manifest(data)
    first = Audit(tiny_model(), manifest, sensitive=["sex"], output_dir=out, **MINI).run()
    assert first.model_info["target_layer"]
    resumed = Audit(tiny_model(), manifest, sensitive=["sex"], output_dir=out, **MINI).run()
    assert resumed.provenance["batches"]["computed"] == 0
    assert resumed.model_info["target_layer"] == first.model_info["target_layer"]
    assert AuditResult.load(out).model_info["target_layer"] == first.model_info["target_layer"]


# ------------------------------------------------------------------------------ lock
HOLD = """
import sys, time
from xai_audit.audit.store import FolderLock
lock = FolderLock(sys.argv[1]).acquire()  # kept: a collected FileLock releases
print("locked", flush=True)
time.sleep(120)
"""


def test_second_run_into_a_locked_folder_fails_and_a_dead_holder_is_taken_over(
    data, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "audit"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=rf"pid {holder.pid} on host .*started 20"):
            Audit(
                tiny_model(), load_manifest(data), sensitive=["sex"], output_dir=out, **MINI
            ).run()
        assert not (out / "run_state.json").exists()  # nothing was touched
    finally:
        holder.kill()  # SIGKILL: no clean-up, the info file stays behind
        holder.wait()
    assert (out / LOCK_INFO_FILE).is_file()
    with caplog.at_level("WARNING", logger="xai_audit.audit.store"):
        with FolderLock(out):
            assert json.loads((out / LOCK_INFO_FILE).read_text())["pid"] != holder.pid
    assert f"pid {holder.pid}" in caplog.text and "is gone" in caplog.text
    assert not (out / LOCK_INFO_FILE).exists()


def test_result_folder_of_an_earlier_version_is_claimed(tmp_path: Path) -> None:
    """A pre-marker result folder (its run_state.json has xai_audit's keys) is ours; a folder
    whose run_state.json is someone else's file is not."""
    from xai_audit.audit.store import MARKER_FILE, claim_folder

    old = tmp_path / "old_result"
    old.mkdir()
    state = {"model_hash": "a", "data_hash": "b", "task_hash": "c", "xai_audit": "0.1.0"}
    (old / "run_state.json").write_text(json.dumps(state))
    claim_folder(old)
    assert (old / MARKER_FILE).is_file()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run_state.json").write_text(json.dumps({"model_hash": "a"}))
    with pytest.raises(NotOwnedError, match="not empty"):
        claim_folder(foreign)
    assert not (foreign / MARKER_FILE).exists()
