"""The README's quick start runs as written (so the documented API cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _quick_start() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_quick_start_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # its relative paths (datasets/, reports/) land in tmp
    exec(compile(_quick_start(), "README.md", "exec"), {})
    assert "age_group=65+" in capsys.readouterr().out
    assert (tmp_path / "reports" / "quickstart.html").stat().st_size > 10_000
    assert (tmp_path / "reports" / "quickstart.json").exists()
