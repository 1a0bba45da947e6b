"""``xai-audit compare REFERENCE_DIR NEW_DIR [--criteria FILE] [--report PATH]``.

Exit codes (usable as a CI gate): 0 every criterion passes (or no criteria given), 1 a
criterion fails, 2 a criterion is inconclusive or the comparison could not be made (one
message, no traceback).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 1, 2


def add_parser(sub: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    """Register the ``compare`` command on the CLI's subparsers."""
    p = sub.add_parser(
        "compare",
        help="compare two audits of the same cases (paired differences, criteria gate)",
        description="Compare a new model's audit with a reference audit of the same cases: "
        "paired patient-level bootstrap differences (new - reference) overall and per group, "
        "flipped decisions, explanation behaviour. With --criteria, exit 0 when every "
        "criterion passes, 1 when one fails, 2 when one is inconclusive or on error.",
        parents=parents or [],
    )
    p.add_argument("reference_dir", help="folder of the reference audit result")
    p.add_argument("new_dir", help="folder of the new audit result")
    p.add_argument("--criteria", default=None, help="acceptance criteria file (YAML or TOML)")
    p.add_argument("--report", default=None, help="write the comparison HTML report (+ .json)")
    p.add_argument("--save", default=None, help="save the comparison tables to this folder")
    p.add_argument(
        "--manifest",
        default=None,
        help="manifest CSV with case and patient ids, for a patient-level bootstrap (audit "
        "results keep no patient ids; default: the manifest named in the audit's config)",
    )
    p.add_argument("--id-col", default="case_id", help="case-id column of --manifest")
    p.add_argument("--patient-col", default="patient_id", help="patient-id column of --manifest")
    p.add_argument("--label", default=None, help="label to compare (multi-label audits)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files at the report/save paths even if xai_audit did not write them",
    )
    p.set_defaults(func=run)


def _patients_from_csv(path: Path, id_col: str, patient_col: str) -> Any:
    import pandas as pd

    from .comparison import ComparisonError

    if not path.is_file():
        raise ComparisonError(f"--manifest: file not found: {str(path)!r}")
    head = pd.read_csv(path, nrows=0).columns
    missing = [c for c in (id_col, patient_col) if c not in head]
    if missing:
        raise ComparisonError(
            f"--manifest {str(path)!r} has no column(s) {missing} (columns: {list(head)}); "
            "set --id-col / --patient-col."
        )
    table = pd.read_csv(path, usecols=[id_col, patient_col], dtype=str)
    return pd.Series(table[patient_col].to_numpy(dtype=object), index=table[id_col].to_numpy())


def _config_manifest(result: Any) -> tuple[Path, str, str] | None:
    """The manifest a config-run audit names (if it still exists there)."""
    data = (result.config or {}).get("data") if isinstance(result.config, dict) else None
    if not isinstance(data, dict) or not data.get("manifest"):
        return None
    path = Path(str(data["manifest"]))
    pcol = data.get("patient_col", "patient_id")
    if not path.is_file() or not pcol:
        return None
    return path, str(data.get("id_col") or "case_id"), str(pcol)


def run(args: argparse.Namespace) -> int:
    """Run the ``compare`` command; return its exit code."""
    try:
        return _run(args)
    except Exception as exc:  # noqa: BLE001 - one message, exit 2 (the CLI's input-error code)
        if getattr(args, "debug", False):
            raise
        from ..audit.result import ResultError
        from ..audit.store import NotOwnedError
        from .comparison import ComparisonError

        expected = (ComparisonError, ResultError, NotOwnedError, OSError)
        try:
            from ..audit.criteria import CriteriaError

            expected += (CriteriaError,)
        except ImportError:  # pragma: no cover - criteria module absent
            pass
        if isinstance(exc, expected):
            print(f"xai-audit compare: error: {exc}", file=sys.stderr)
        else:  # a bug: name it, keep it to one message (--debug shows the traceback)
            print(
                f"xai-audit compare: internal error {type(exc).__name__}: {exc} "
                "(rerun with --debug for the traceback and please report it)",
                file=sys.stderr,
            )
        return EXIT_INCONCLUSIVE


def _run(args: argparse.Namespace) -> int:
    from ..audit.result import AuditResult
    from .comparison import compare_audits

    ref = AuditResult.load(Path(args.reference_dir))
    new = AuditResult.load(Path(args.new_dir))
    criteria = None
    if args.criteria:
        from ..audit.criteria import load_criteria

        criteria = load_criteria(args.criteria)  # fails early on a bad file
    patients = None
    if args.manifest:
        patients = _patients_from_csv(Path(args.manifest), args.id_col, args.patient_col)
    else:
        found = _config_manifest(ref)
        if found is not None:
            patients = _patients_from_csv(*found)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the summary prints the same notes
        cmp = compare_audits(
            ref, new, patients=patients, n_boot=args.n_boot, seed=args.seed, label=args.label
        )
    print(cmp.summary())
    outcome = None
    code = EXIT_PASS
    if criteria is not None:
        from ..audit.criteria import evaluate_criteria, exit_code, format_table, overall_verdict

        outcome = evaluate_criteria(cmp.new, criteria, comparison=cmp)
        code = exit_code(outcome)
        print()
        print(format_table(outcome))
        print(f"\nAcceptance criteria: {overall_verdict(outcome).upper()} (exit code {code})")
    if args.save:
        print(f"Comparison saved to {cmp.save(args.save, overwrite=args.overwrite)}")
    if args.report:
        path = cmp.report(args.report, criteria=outcome, overwrite=args.overwrite)
        print(f"Comparison report written to {path} (and {path.with_suffix('.json').name})")
    return code
