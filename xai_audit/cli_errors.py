"""How the command line reports a failed command: one clear block, no traceback.

Problems of the user's own inputs (a config, a manifest or its images, a model that returns
the wrong thing, a result folder, someone else's files, a running audit) are explained by
their messages; a traceback would only bury the message under 20 lines of library internals.
They print as one block on stderr and the command exits with code 2. ``--debug`` re-raises
them with the traceback. Anything else (a bug) keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import IO

#: Exit code of a command that failed on its inputs (argparse's own usage errors use 2 too).
INPUT_ERROR_EXIT = 2

CONFIG_HELP = "see 'Configuration reference' in README.md for every key"


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that describe a problem with the user's inputs.

    Imported lazily (the command line starts without torch); a class that another version of
    a module no longer defines is simply left out.
    """
    found: list[type[BaseException]] = [FileNotFoundError, NotADirectoryError, IsADirectoryError]
    for module, names in (
        ("xai_audit.audit.config", ("ConfigError",)),
        ("xai_audit.audit.result", ("ResultError",)),
        ("xai_audit.audit.store", ("NotOwnedError", "FolderLockedError")),
        ("xai_audit.audit._io", ("TableError",)),
        ("xai_audit.data.errors", ("ManifestError",)),
        ("xai_audit.model.adapter", ("ModelOutputError", "NonFiniteError")),
        ("xai_audit.model.layers", ("TargetLayerError",)),
    ):
        try:
            mod = __import__(module, fromlist=list(names))
        except Exception:  # noqa: BLE001 - a module that cannot be imported adds nothing
            continue
        found += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    # Every exception defined in xai_audit.data.errors (other helpers add their own there).
    try:
        from .data import errors as data_errors

        found += [
            v
            for v in vars(data_errors).values()
            if isinstance(v, type) and issubclass(v, Exception) and not issubclass(v, Warning)
        ]
    except Exception:  # noqa: BLE001
        pass
    return tuple(dict.fromkeys(found))


def _kind(exc: BaseException) -> str:
    name = type(exc).__name__
    return {
        "ConfigError": "invalid configuration",
        "ResultError": "cannot read the audit result",
        "NotOwnedError": "folder not written by xai_audit",
        "FolderLockedError": "another audit is running",
        "ManifestError": "problem with the data",
        "TableError": "cannot read a table",
        "ModelOutputError": "problem with the model's output",
        "NonFiniteError": "the model returned NaN or infinite values",
        "TargetLayerError": "problem with the explained layer",
        "FileNotFoundError": "file not found",
        "NotADirectoryError": "not a folder",
        "IsADirectoryError": "a folder, not a file",
    }.get(name, "problem with the inputs")


def format_error(command: str | None, exc: BaseException) -> str:
    """The block printed for an expected error (no traceback)."""
    head = f"xai-audit {command}: error: {_kind(exc)}" if command else f"xai-audit: {_kind(exc)}"
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    body = "\n".join(f"  {line}" if line else "" for line in text.splitlines())
    notes = [str(n) for n in getattr(exc, "__notes__", []) or []]
    lines = [head, body, *(f"  {n}" for n in notes)]
    if type(exc).__name__ == "ConfigError":
        lines.append(f"  ({CONFIG_HELP})")
    lines.append("  (run again with --debug to see the traceback)")
    return "\n".join(lines)


def report_error(
    command: str | None, exc: BaseException, stream: IO[str] | None = None
) -> int | None:
    """Print an expected error as one block and return the exit code; ``None`` for others."""
    if not isinstance(exc, expected_errors()):
        return None
    stream = stream if stream is not None else sys.stderr
    print(format_error(command, exc), file=stream)
    return INPUT_ERROR_EXIT
