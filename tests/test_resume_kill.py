"""SIGKILL an audit at seeded random points, rerun it, and get exactly the uninterrupted numbers.

A subprocess runs a small audit and appends each computed batch to a progress file (from the
``on_batch`` callback); the test kills it with SIGKILL once the seeded number of batches is
done (after a seeded extra delay, so that the kill also lands inside a shard write, the run
state update or the aggregation), reruns the audit to completion and compares every table,
finding and stored map with those of a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_audit_helpers import small_dataset, tiny_model
from test_result_store import assert_same

from xai_audit.audit import Audit, AuditResult
from xai_audit.data import load_manifest

SENSITIVE = ["sex", "site"]
SETTINGS = dict(
    methods={"gradcam": {}, "saliency": {}},
    n_boot=40,
    min_group_size=6,
    # the slow checks (faithfulness, sanity) are tested elsewhere; their checkpoints too
    quality={"faithfulness": False, "sanity": False, "shortcut_sample_size": 8},
    exemplars_per_cell=1,
    batch_size=6,
)
N_IMAGES = 48  # 8 batches

SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_audit_helpers import tiny_model
from test_resume_kill import SENSITIVE, SETTINGS
from xai_audit.audit import Audit
from xai_audit.data import load_manifest

manifest, out, progress = sys.argv[1:4]


def on_batch(k, n, status):
    if status == "computed":
        with open(progress, "a") as fh:
            fh.write(f"{{k}}\\n")


Audit(tiny_model(), load_manifest(manifest), sensitive=SENSITIVE, output_dir=out,
      on_batch=on_batch, **SETTINGS).run()
print("finished", flush=True)
"""


def _run(manifest: Path, out: Path) -> AuditResult:
    return Audit(
        tiny_model(), load_manifest(manifest), sensitive=SENSITIVE, output_dir=out, **SETTINGS
    ).run()


def _kill_after(script: Path, manifest: Path, out: Path, k: int, delay: float) -> int:
    """Start the audit, SIGKILL it ``delay`` s after its ``k``-th batch; batches it logged."""
    progress = out.parent / f"{out.name}.progress"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(manifest), str(out), str(progress)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = progress.read_text().split() if progress.exists() else []
            if len(done) >= k:
                time.sleep(delay)
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it finished first: the rerun then reuses everything
    finally:
        proc.wait()
    return len(progress.read_text().split()) if progress.exists() else 0


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_identical_numbers(tmp_path: Path) -> None:
    manifest = small_dataset(tmp_path / "data", n=N_IMAGES, size=32)
    reference = _run(manifest, tmp_path / "reference")
    n_batches = reference.provenance["batches"]["total"]
    assert n_batches == 8

    script = tmp_path / "audit_script.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    rng = np.random.default_rng(20261153)  # kills after batch 2 and in the aggregation
    for trial in range(2):
        # k = n_batches: killed after the last batch, i.e. during the aggregation
        k, delay = int(rng.integers(1, n_batches + 1)), float(rng.uniform(0, 0.3))
        out = tmp_path / f"killed{trial}"
        logged = _kill_after(script, manifest, out, k, delay)
        assert logged >= k or logged == n_batches, (k, logged)
        assert not (out / "result.json").exists()  # it was killed before the end

        resumed = _run(manifest, out)
        batches = resumed.provenance["batches"]
        # Every batch the killed run reported is reused (one more may have been written
        # between its shard and its progress line); none is computed twice.
        assert batches["reused"] >= logged and batches["total"] == 8
        pd.testing.assert_frame_equal(resumed.predictions, reference.predictions)
        for part in ("subgroups", "quality", "exemplars", "mean_maps", "data_summary"):
            assert_same(getattr(reference, part), getattr(resumed, part), part)
        assert resumed.findings == reference.findings
        assert resumed.model_info == reference.model_info
        for m in ("gradcam", "saliency"):
            assert np.array_equal(resumed.maps(m), reference.maps(m))
        loaded = AuditResult.load(out)
        pd.testing.assert_frame_equal(loaded.predictions, reference.predictions)
