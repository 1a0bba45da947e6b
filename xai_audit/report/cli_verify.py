"""``xai-audit verify-report REPORT.html``: is the report the one whose SHA-256 it records?"""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_verify(args: argparse.Namespace) -> int:
    from .integrity import verify_report

    v = verify_report(args.report)
    print(v.message)
    return 0 if v.ok else 1


def add_parser(sub: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    """Register the ``verify-report`` command on the CLI's subparsers."""
    p = sub.add_parser(
        "verify-report",
        help="check a report's SHA-256 against the digest recorded in it (and in its twin)",
        description="Recompute the SHA-256 of an xai_audit HTML report (the file with the "
        "digest itself emptied) and compare it with the digest recorded in its footer and in "
        "the JSON twin next to it. Exit code 0: intact; 1: modified or no digest.",
        parents=parents or [],
    )
    p.add_argument("report", help="the HTML report")
    p.set_defaults(func=_cmd_verify)


def load_documentation(path: str) -> dict[str, Any]:
    """A ``documentation`` mapping from a YAML/JSON/TOML file (the top level, or its
    ``documentation:`` key), for ``xai-audit report --documentation FILE``."""
    from pathlib import Path

    from ..audit.config import _read_file

    data = _read_file(Path(path))
    return dict(data.get("documentation", data))
