"""Command-line interface: ``xai-audit demo | run CONFIG | report RESULT_DIR | version``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__

DEBUG_HELP = "show the full traceback of an error (default: one explained message)"
QUIET_HELP = "print no progress (by default: bars in a terminal, a plain line every 30 s otherwise)"


def _cmd_version(_args: argparse.Namespace) -> int:
    print(f"xai_audit {__version__}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    out = run_demo(
        data_dir=Path(args.data_dir),
        report_path=Path(args.output),
        n_samples=args.n_samples,
        seed=args.seed,
        control=args.control,
        n_boot=args.n_boot,
        progress=False if args.quiet else None,
        cli=True,
    )
    print(f"Report written to {out}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .audit.config import run_config

    out = run_config(
        Path(args.config),
        output_dir=args.output_dir,
        fresh=args.fresh,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
        cli=True,
        slices=args.slices,
        backend=args.backend,
        ray_address=args.ray_address,
        ray_workers=args.ray_workers,
    )
    print(f"Audit result in {out.result_dir}")
    print(f"Report written to {out.report_path}")
    if getattr(out.result, "criteria", None):  # config key `criteria`: verdicts in the result
        c = out.result.criteria
        print(f"Acceptance criteria ({c['file']}): {str(c['verdict']).upper()}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .audit.result import AuditResult
    from .report.cli_verify import load_documentation

    result = AuditResult.load(Path(args.result_dir))
    path = result.report(
        args.output or Path(args.result_dir) / "report.html",
        pdf=args.pdf,
        overwrite=args.overwrite,
        documentation=load_documentation(args.documentation) if args.documentation else None,
    )
    print(f"Report written to {path}")
    if args.pdf:
        print(f"PDF written to {path.with_suffix('.pdf')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="xai-audit",
        description=(
            "Explainability and bias audits for medical imaging models: attributions, "
            "explanation trust checks, subgroup performance, HTML reports."
        ),
    )
    parser.add_argument("--version", action="version", version=f"xai_audit {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # --debug is accepted after the command too (SUPPRESS keeps the top-level value).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true", help=QUIET_HELP)

    p = sub.add_parser("version", help="print the version", parents=[common])
    p.set_defaults(func=_cmd_version)

    p = sub.add_parser(
        "demo",
        help="audit the bundled demo model on the synthetic ground-truth data",
        description="Generate the seeded demo data (if needed), audit the bundled demo model "
        "and write a self-contained HTML report.",
        parents=[common, quiet],
    )
    p.add_argument("--data-dir", default="datasets/demo", help="where the demo data lives")
    p.add_argument("--output", default="reports/demo_audit.html", help="report path")
    p.add_argument("--n-samples", type=int, default=None, help="images to generate")
    p.add_argument("--seed", type=int, default=None, help="data seed (default: the card's)")
    p.add_argument("--control", action="store_true", help="use the control data (no effects)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "run",
        help="run an audit described by a YAML or TOML config",
        description="Run the audit a YAML or TOML config describes (resuming finished "
        "batches) and write its HTML report.",
        epilog="Every config key (type, default, meaning) is listed in README.md, section "
        "'Configuration reference'; examples/demo_audit.yaml is a complete example.",
        parents=[common, quiet],
    )
    p.add_argument("config", help="path to the config file")
    p.add_argument("--output-dir", default=None, help="override the config's output folder")
    p.add_argument("--fresh", action="store_true", help="ignore finished batches, start afresh")
    p.add_argument(
        "--slices",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run (or skip) hidden-stratification slice discovery, overriding the config's "
        "`slices` key (default: from 300 images on)",
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default=None,
        help="where the batches run (overrides the config's `backend`): the local loop or "
        'Ray actors, one per GPU (needs pip install "xai-audit[ray]"); same results',
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join, e.g. 'auto' on a cluster node or 'ray://head:10001' "
        "(implies --backend ray; default: start a local Ray)",
    )
    p.add_argument(
        "--ray-workers", type=int, default=None, help="Ray actors (default: one per GPU, else CPU)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty output folder (and over report files) that xai_audit did "
        "not create; files with the result's names are replaced, nothing else is touched",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "report", help="(re)build the HTML report of a saved audit result", parents=[common]
    )
    p.add_argument("result_dir", help="folder written by `xai-audit run` or AuditResult.save")
    p.add_argument("--output", default=None, help="report path (default RESULT_DIR/report.html)")
    p.add_argument(
        "--pdf",
        action="store_true",
        help="also print it to PDF with headless Chromium (needs playwright and /usr/bin/chromium)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files at the report paths even if xai_audit did not write them",
    )
    p.add_argument(
        "--documentation",
        default=None,
        metavar="FILE",
        help="YAML/TOML file of documentation fields (e.g. the reviewer's sign-off under "
        "document_control) laid over the ones recorded with the result",
    )
    p.set_defaults(func=_cmd_report)

    from .compare.cli import add_parser as add_compare

    add_compare(sub, parents=[common])
    from .report.cli_verify import add_parser as add_verify

    add_verify(sub, parents=[common])
    from .audit.check_cli import add_parser as add_check

    add_check(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xai-audit`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted; finished batches are kept and a rerun resumes.", file=sys.stderr)
        return 130
    except Exception as exc:
        # Problems with the user's inputs (config, data, model output, result folder, someone
        # else's files, a running audit): one block, exit code 2 (xai_audit.cli_errors).
        if getattr(args, "debug", False):
            raise
        from .cli_errors import report_error

        code = report_error(args.command, exc)
        if code is None:
            raise
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
