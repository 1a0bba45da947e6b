"""The report's own SHA-256: how it is computed, written and verified.

What is hashed
--------------
The UTF-8 bytes of the HTML file in which every ``<code class="report-sha256">...</code>``
element is emptied (its 64 hexadecimal digits removed, the tags kept). The report is rendered
with those elements empty, hashed, and the digest is then written into them (the footer and
the document-control block) and into the JSON twin (``integrity.report_sha256``). Editing
anything else in the file (a number, a word, a figure) changes the digest.

Verify with ``xai-audit verify-report REPORT.html``, or without xai_audit with the snippet
in the README (section "For reviewers") or :data:`ONE_LINER`; both print ``True`` for an
untouched report. The hash proves that the file is the one whose digest was recorded (e.g. in
a document-management system or a signed submission); it is not a signature: whoever can edit
the file can also recompute the digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

#: The element that carries the digest (empty while hashing).
OPEN, CLOSE = '<code class="report-sha256">', "</code>"
EMPTY = OPEN + CLOSE
_PATTERN = re.compile(re.escape(OPEN) + r"([0-9a-f]{64})?" + re.escape(CLOSE))
#: A check that needs only Python: ``python -c "$ONE_LINER" REPORT.html`` prints True/False.
ONE_LINER = (
    "import hashlib,re,sys;t=open(sys.argv[1],'rb').read();"
    "p=rb'(<code class=\"report-sha256\">)([0-9a-f]{64})(</code>)';"
    "h={m[1] for m in re.findall(p,t)};"
    "print(len(h)==1 and hashlib.sha256(re.sub(p,rb'\\1\\3',t)).hexdigest().encode() in h)"
)
HASHED_CONTENT = (
    'UTF-8 bytes of the HTML file with the text of every <code class="report-sha256"> element '
    "removed (tags kept)"
)


def body_digest(html: str) -> str:
    """SHA-256 (hex) of the report text with every digest element emptied."""
    return hashlib.sha256(_PATTERN.sub(EMPTY, html).encode("utf-8")).hexdigest()


def seal(html: str) -> tuple[str, str]:
    """Write the digest into the (empty) digest elements of a rendered report.

    Returns
    -------
    (str, str)
        The sealed HTML and its digest.

    Raises
    ------
    ValueError
        The HTML has no digest element (the template lost it).
    """
    if EMPTY not in html:
        raise ValueError('the report has no <code class="report-sha256"></code> element to seal')
    digest = body_digest(html)
    return html.replace(EMPTY, OPEN + digest + CLOSE), digest


@dataclass
class Verification:
    """Outcome of :func:`verify_report`."""

    ok: bool
    recorded: str | None
    computed: str
    twin: str | None
    message: str


def verify_report(path: str | Path) -> Verification:
    """Check a report against the digest it records (and its JSON twin's, when present).

    Parameters
    ----------
    path : str or Path
        The HTML report.

    Returns
    -------
    Verification
        ``ok`` is True when the file's digest equals the one recorded in it, every digest
        element agrees, and the JSON twin next to it (if any) records the same digest.
    """
    path = Path(path)
    html = path.read_bytes().decode("utf-8")
    found = {m.group(1) for m in _PATTERN.finditer(html) if m.group(1)}
    computed = body_digest(html)
    twin_path = path.with_suffix(".json")
    twin = None
    if twin_path.is_file():
        try:
            twin = (json.loads(twin_path.read_text(encoding="utf-8")).get("integrity") or {}).get(
                "report_sha256"
            )
        except (ValueError, AttributeError):
            twin = None
    if not found:
        return Verification(False, None, computed, twin, f"{path}: no recorded SHA-256 found")
    if len(found) > 1:
        return Verification(
            False, None, computed, twin, f"{path}: the digest elements disagree: {sorted(found)}"
        )
    recorded = found.pop()
    if recorded != computed:
        return Verification(
            False,
            recorded,
            computed,
            twin,
            f"{path}: MODIFIED: recorded SHA-256 {recorded}, the file hashes to {computed}",
        )
    if twin is not None and twin != recorded:
        return Verification(
            False,
            recorded,
            computed,
            twin,
            f"{path}: the file is intact but its JSON twin records another report ({twin})",
        )
    where = " and its JSON twin" if twin is not None else ""
    return Verification(
        True, recorded, computed, twin, f"{path}: intact (SHA-256 {recorded}{where})"
    )
