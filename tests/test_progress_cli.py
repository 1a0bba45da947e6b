"""Progress output of long runs, the command line's error blocks, the config reference."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_audit_helpers import FAST, small_dataset, tiny_model

from xai_audit.audit import Audit
from xai_audit.audit.progress import Progress, make_progress, resolve_mode
from xai_audit.cli import main
from xai_audit.data import load_manifest

ROOT = Path(__file__).resolve().parents[1]
SENSITIVE = ["sex", "site"]
#: Small perturbation samples: these tests are about what is printed, not about the verdicts.
FEW = {"sample_size": 4, "sanity_sample_size": 2, "n_steps": 3, "shortcut_sample_size": 4}
QUICK = {**FAST, "methods": {"gradcam": {}}, "intersections": False, "quality": FEW, "n_boot": 20}
#: The checks the audit reports after its batch phase, in order (one method: gradcam).
STEPS = [
    "subgroups and calibration",
    "shortcut paste scan",
    "faithfulness (gradcam)",
    "sanity (gradcam)",
    "shortcuts (gradcam)",
    "exemplars and mean maps",
    "saving the result",
]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("data") / "demo", n=32, size=32)


def _audit(data: Path, out: Path) -> Audit:
    return Audit(tiny_model(), load_manifest(data), sensitive=SENSITIVE, output_dir=out, **QUICK)


def _config(tmp_path: Path, manifest: Path, **over) -> Path:
    import yaml

    cfg = {
        "output_dir": "out",
        "model": {"loader": "test_audit_helpers:tiny_model"},
        "data": {"manifest": str(manifest)},
        "attributes": SENSITIVE,
        "intersections": False,
        "methods": {"gradcam": {}},
        "n_boot": 20,
        "min_group_size": 5,
        "batch_size": 16,
        "quality": FEW,
        **over,
    }
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("xai-audit: ")]


# ---------------------------------------------------------------------- choosing the display
def test_resolve_mode() -> None:
    plain, tty = io.StringIO(), _Tty()
    assert resolve_mode(None, plain) == "off"  # a script without a terminal: silent
    assert resolve_mode(None, plain, cli=True) == "log"  # the CLI into a log: plain lines
    assert resolve_mode(None, tty) == "bar" and resolve_mode("auto", tty, cli=True) == "bar"
    assert resolve_mode(False, tty) == "off" and resolve_mode("off", tty, cli=True) == "off"
    assert resolve_mode(True, plain) == "bar" and resolve_mode("log", tty) == "log"
    with pytest.raises(ValueError, match="progress must be one of"):
        resolve_mode("loud", plain)
    shared = Progress("log", stream=plain)
    assert make_progress(shared) is shared  # one display for the audit and its report


def test_log_lines_of_the_batch_phase_have_rate_and_eta() -> None:
    out = io.StringIO()
    p = Progress("log", stream=out, interval=3600)  # only the first and the last line
    bar = p.batches(total=100, done=20)
    for _ in range(4):
        bar.advance(20)
    bar.close()
    lines = _progress_lines(out.getvalue())
    assert len(lines) == 2
    assert lines[0].startswith("xai-audit: predict + explain: 20/100 img (20%)")
    assert re.search(r"100/100 img \(100%\), \S+img/s, elapsed \d\d:\d\d, ETA 00:00", lines[1])


# ---------------------------------------------------------------------- the audit
def test_audit_progress_names_every_step_in_order(data, tmp_path, capsys) -> None:
    _audit(data, tmp_path / "a").run(progress="log")
    err = capsys.readouterr().err
    lines = _progress_lines(err)
    assert any(re.search(r"predict \+ explain: 32/32 img \(100%\), .*img/s", x) for x in lines)
    started = [x[len("xai-audit: ") : -len(" ...")] for x in lines if x.endswith(" ...")]
    assert started == STEPS
    for name in STEPS:
        assert any(x.startswith(f"xai-audit: {name} done in ") for x in lines), name


def test_audit_progress_bars(data, tmp_path, capsys) -> None:
    _audit(data, tmp_path / "b").run(progress=True)
    err = capsys.readouterr().err
    assert re.search(r"predict \+ explain: 100%\|.*\| 32/32 \[", err)  # tqdm bar with rate
    assert "img/s" in err
    for name in STEPS:
        assert f"{name}: " in err and "done" in err


def test_progress_false_is_silent_and_auto_is_silent_without_terminal(data, tmp_path, capsys):
    _audit(data, tmp_path / "c").run(progress=False)
    _audit(data, tmp_path / "c").run()  # pytest's captured stderr is not a terminal
    err = capsys.readouterr().err
    assert "predict + explain" not in err and "subgroups and calibration" not in err


def test_resumed_run_skips_the_batch_bar_but_reports_checks(data, tmp_path, capsys) -> None:
    _audit(data, tmp_path / "e").run(progress=False)
    _audit(data, tmp_path / "e").run(progress="log")
    lines = _progress_lines(capsys.readouterr().err)
    assert not any("predict + explain" in x for x in lines)  # every batch reused
    assert any(x.startswith("xai-audit: subgroups and calibration") for x in lines)


# ---------------------------------------------------------------------- the command line
def test_cli_run_prints_plain_progress_lines_and_quiet_silences_them(data, tmp_path, capsys):
    path = _config(tmp_path, data)
    assert main(["run", str(path)]) == 0
    captured = capsys.readouterr()
    lines = _progress_lines(captured.err)
    assert any("predict + explain: 32/32 img (100%)" in x for x in lines)
    assert any(x.startswith("xai-audit: report done in") for x in lines)
    assert "Report written to" in captured.out
    assert main(["run", str(path), "--quiet"]) == 0  # resumed: only the checks would print
    assert _progress_lines(capsys.readouterr().err) == []


def test_config_progress_key(data, tmp_path) -> None:
    from xai_audit.audit import ConfigError, load_config

    cfg = load_config(_config(tmp_path, data, progress=False))
    assert make_progress(cfg.progress, stream=_Tty(), cli=True).mode == "off"
    cfg = load_config(_config(tmp_path, data, progress="log"))
    assert make_progress(cfg.progress, stream=_Tty(), cli=True).mode == "log"
    with pytest.raises(ConfigError, match="progress must be"):
        load_config(_config(tmp_path, data, progress="loud"))
    # a display setting: the config hash (and so the result's provenance) ignores it
    a = load_config(_config(tmp_path, data, progress=False)).hash()
    assert load_config(_config(tmp_path, data, progress="log")).hash() == a


def test_cli_report_of_a_folder_without_result(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("xai-audit report: error: file not found\n")
    assert "missing result.json" in err and "--debug" in err
    with pytest.raises(FileNotFoundError):
        main(["report", str(tmp_path), "--debug"])
    with pytest.raises(FileNotFoundError):
        main(["--debug", "report", str(tmp_path)])


def test_cli_bad_config_is_one_block_with_every_problem(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "attributes: [sex]\nthreshold: 7\ndata: {manifest: nope.csv}\nmethods: [magic]\n"
        "colour: blue\n"
    )
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("xai-audit run: error: invalid configuration\n")
    for text in ("unknown key(s) ['colour']", "'magic'", "threshold", "nope.csv"):
        assert text in err, text
    assert "Configuration reference" in err


def test_cli_data_error_is_one_block(data, tmp_path, capsys) -> None:
    import pandas as pd

    table = pd.read_csv(data)
    table.loc[0, "image"] = "images/missing.png"
    manifest = tmp_path / "manifest.csv"
    table.to_csv(manifest, index=False)
    images = Path(data).parent / "images"
    (tmp_path / "images").symlink_to(images)
    assert main(["run", str(_config(tmp_path, manifest))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "xai-audit run: error:" in err
    assert "missing.png" in err


def test_expected_error_classes_exit_2_and_bugs_keep_their_traceback(capsys) -> None:
    from xai_audit.audit.store import FolderLockedError, NotOwnedError
    from xai_audit.cli_errors import report_error
    from xai_audit.data.errors import ManifestError
    from xai_audit.model.adapter import ModelOutputError

    for exc in (
        ManifestError("3 rows (case ids: a, b, c) have no image"),
        ModelOutputError("the model returned 3 columns for 2 classes"),
        NotOwnedError("folder x holds files xai_audit did not write"),
        FolderLockedError("another audit (pid 1) is writing to x"),
    ):
        assert report_error("run", exc) == 2
        assert str(exc) in capsys.readouterr().err
    assert report_error("run", RuntimeError("a bug")) is None


def test_subprocess_exit_code_and_no_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "xai_audit", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error: file not found" in proc.stderr


def test_run_help_points_to_the_config_reference(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "Configuration reference" in out and "--quiet" in out and "--debug" in out


# ---------------------------------------------------------------------- config reference
def test_readme_documents_every_config_key() -> None:
    from xai_audit.audit.config_reference import config_keys, undocumented

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration reference") :]
    section = section[: section.index("\n## ", 5)]
    assert undocumented(section) == [], (
        "config keys missing from README's Configuration reference; regenerate the table with "
        "`python -m xai_audit.audit.config_reference` (and add their meaning there)"
    )
    keys = {k for k, _, _ in config_keys()}
    rows = set(re.findall(r"^\| `([^`]+)` \|", section, re.M))
    assert rows == keys, f"stale rows: {sorted(rows - keys)}"
    assert "undocumented" not in section, "a config key has no meaning in the README table"
    assert {"data.manifest", "quality.shortcut_region", "threshold", "progress"} <= keys
