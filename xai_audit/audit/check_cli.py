"""``xai-audit check RESULT_DIR --criteria FILE [--json PATH]``: acceptance criteria as a gate.

Exit code 0 when every criterion passes, 1 when one fails, 2 when one is inconclusive or the
inputs cannot be used (one message, no traceback; ``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Register the ``check`` command on the CLI's sub-parsers."""
    p = sub.add_parser(
        "check",
        help="check a saved audit result against pre-specified acceptance criteria",
        description="Evaluate acceptance criteria (YAML/TOML) on a saved audit result and "
        "print one line per criterion and group. Exit code: 0 every criterion passes, 1 one "
        "fails, 2 one is inconclusive (e.g. a group too small) or on an error.",
        parents=list(parents),
    )
    p.add_argument("result_dir", help="folder written by `xai-audit run` or AuditResult.save")
    p.add_argument("--criteria", required=True, metavar="FILE", help="criteria file (.yaml/.toml)")
    p.add_argument(
        "--json", default=None, metavar="PATH", help="also write the verdicts to this JSON file"
    )
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Run the check; every expected problem is one message on stderr and exit code 2."""
    try:
        return _check(args)
    except Exception as exc:  # noqa: BLE001 - a gate reports, it does not crash
        if getattr(args, "debug", False):
            raise
        print(f"xai-audit check: error: {exc}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> int:
    import pandas as pd

    from ._io import atomic_write_text
    from .criteria import evaluate_criteria, exit_code, format_table, load_criteria, overall_verdict
    from .result import AuditResult

    criteria = load_criteria(args.criteria)  # first: a bad file is reported before loading
    result = AuditResult.load(Path(args.result_dir))
    table = evaluate_criteria(result, criteria)
    print(f"Acceptance criteria {Path(args.criteria).name} on {result.name!r}:")
    print(format_table(table))
    if args.json:
        payload = {
            "result": str(args.result_dir),
            "criteria": str(args.criteria),
            "criteria_sha256": criteria.sha256,
            "verdict": overall_verdict(table),
            "exit_code": exit_code(table),
            "rows": [
                {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in r.items()}
                for r in table.to_dict("records")
            ],
        }
        atomic_write_text(Path(args.json), json.dumps(payload, indent=1))
        print(f"Verdicts written to {args.json}")
    return exit_code(table)
