"""The Ray backend gives the local backend's results: same tables, findings and maps.

A local Ray cluster is started in this process (``ray.init(num_cpus=2)``) once for the
module and shut down after it. The data are tiny (40 images of 64 px, 5 batches) because
Ray's start-up alone takes seconds on a 2-core machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ray = pytest.importorskip("ray")

import test_audit_helpers  # noqa: E402
from test_audit_helpers import TinyCNN, small_dataset, tiny_model  # noqa: E402
from test_result_store import assert_same  # noqa: E402

from xai_audit.audit import Audit, AuditResult  # noqa: E402
from xai_audit.audit.config import ConfigError  # noqa: E402
from xai_audit.data import load_manifest  # noqa: E402
from xai_audit.model import ModelAdapter  # noqa: E402

SENSITIVE = ["sex", "site"]
SETTINGS = dict(
    methods={"gradcam": {}, "integrated_gradients": {"n_steps": 4}},
    n_boot=40,
    min_group_size=6,
    # faithfulness and sanity run in the aggregation, which is the same code for both backends
    quality={"faithfulness": False, "sanity": False, "shortcut_sample_size": 8},
    exemplars_per_cell=1,
    batch_size=8,
)
N_IMAGES = 40  # 5 batches
METHODS = tuple(SETTINGS["methods"])  # type: ignore[arg-type]

# Ray start-up (~10 s) + several small audits; one xdist worker runs them all (`make test`
# uses --dist loadgroup), so that a 2-core CI machine starts one Ray cluster, not two.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


class KillOnce(TinyCNN):
    """TinyCNN whose first forward pass in a Ray worker kills that worker's process once.

    The flag file makes it happen once in the whole cluster; the driver (the pid that built
    the model) never dies, so the probe and the aggregation run normally.
    """

    def __init__(self, flag: str) -> None:
        super().__init__()
        self.flag = flag
        self.driver_pid = os.getpid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.driver_pid and not os.path.exists(self.flag):
            Path(self.flag).write_text(str(os.getpid()))
            os._exit(1)  # as if the node or the process were killed
        return super().forward(x)


def kill_once_model(flag: Path) -> ModelAdapter:
    """Same weights as :func:`tiny_model` (same seed, same layers), plus the kill switch."""
    torch.manual_seed(0)
    net = KillOnce(str(flag))
    with torch.no_grad():
        net.head.bias.zero_()
    return ModelAdapter(
        net,
        class_names=["normal", "lesion"],
        positive_class="lesion",
        device="cpu",
        batch_size=16,
        name="tiny",
        version="0",
    )


def _patient_startup(mp: pytest.MonkeyPatch, seconds: float = 120.0) -> None:
    """Let the local raylet take longer than Ray's fixed 30 s to register on a loaded machine.

    Ray polls ``services.get_node`` for 30 s (a constant in ``ray._private.node``); with 9
    processes per core that is not always enough. The poll is made to wait up to ``seconds``.
    The environment variable is set for the whole module (the raylet reads it when it starts).
    """
    import time

    services = getattr(getattr(ray, "_private", None), "services", None)
    original = getattr(services, "get_node", None)
    if original is None:  # another Ray version: keep its own behaviour
        return

    def get_node(*args, **kwargs):
        deadline = time.monotonic() + seconds
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    mp.setattr(services, "get_node", get_node)
    # The raylet also gives its dashboard agent (a Python process) 15 s to report its ports
    # and aborts after that; the same patience for it.
    mp.setenv("RAY_agent_register_timeout_ms", str(int(seconds * 1000)))
    # No idle workers started next to the agents (they compete for the CPU at start-up).
    mp.setenv("RAY_enable_worker_prestart", "0")
    mp.setenv("RAY_prestart_worker_first_driver", "0")


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray cluster in this process; test classes are shipped by value."""
    from ray import cloudpickle

    for module in (test_audit_helpers, sys.modules[__name__]):
        cloudpickle.register_pickle_by_value(module)
    with pytest.MonkeyPatch.context() as mp:
        _patient_startup(mp)
        for attempt in range(2):
            try:
                ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
                break
            except Exception:
                ray.shutdown()
                if attempt:
                    raise
        yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("ray_data"), n=N_IMAGES, size=64)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> AuditResult:
    """The local run everything is compared with."""
    out = tmp_path_factory.mktemp("ray_ref") / "local"
    return _run(tiny_model(), data, out)


def _run(model: ModelAdapter, manifest: Path, out: Path, **kw) -> AuditResult:
    return Audit(
        model, load_manifest(manifest), sensitive=SENSITIVE, output_dir=out, **SETTINGS, **kw
    ).run()


def assert_same_result(ref: AuditResult, got: AuditResult, architecture: str | None = None) -> None:
    """Tables and findings identical; maps within float16 (stored as float16 on both)."""
    pd.testing.assert_frame_equal(got.predictions, ref.predictions)
    for part in ("subgroups", "quality", "exemplars", "mean_maps", "data_summary"):
        assert_same(getattr(ref, part), getattr(got, part), part)
    assert got.findings == ref.findings
    info = dict(got.model_info)
    if architecture is not None:  # a subclass of the reference model (same weights)
        assert info["architecture"] == architecture
        info["architecture"] = ref.model_info["architecture"]
    assert info == ref.model_info
    for m in METHODS:
        a, b = ref.maps(m), got.maps(m)
        assert a.shape == b.shape
        scale = np.abs(a).reshape(len(a), -1).max(axis=1).reshape(-1, 1, 1)
        np.testing.assert_allclose(b, a, rtol=0, atol=float(2**-10) * float(scale.max()))


class Stop(Exception):
    """Interrupts a run after some batches (from the on_batch callback)."""


def _stop_after(n: int):
    done: list[int] = []

    def on_batch(k: int, _n: int, status: str) -> None:
        if status == "computed":
            done.append(k)
            if len(done) >= n:
                raise Stop(f"stopped after {n} batches")

    return on_batch


def test_ray_run_equals_local_run(cluster, data, reference, tmp_path) -> None:
    got = _run(tiny_model(), data, tmp_path / "ray", backend="ray", ray_workers=2)
    assert got.provenance["backend"] == "ray"
    assert got.provenance["batches"] == {"total": 5, "computed": 5, "reused": 0}
    assert_same_result(reference, got)
    # the shards themselves are interchangeable: same names, same arrays (floats to 1e-5)
    for k in range(5):
        name = f"shards/batch_{k:05d}.npz"
        with np.load(reference.result_dir / name) as a, np.load(tmp_path / "ray" / name) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                if key.startswith("seconds"):
                    continue
                if a[key].dtype.kind == "f":  # features of other checks may differ in the last bit
                    np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)
                else:
                    assert np.array_equal(a[key], b[key]), key


def test_workers_read_images_by_url(cluster, data, reference, tmp_path) -> None:
    """A manifest of file:// URLs (the form of s3:// and gs:// sources): each worker process
    fetches its images through fsspec, and the result equals the local run on paths."""
    table = pd.read_csv(data, dtype=str)
    for col in ("image", "mask"):
        table[col] = [f"file://{(data.parent / rel).resolve()}" for rel in table[col]]
    table["label"] = table["label"].astype(int)
    got = Audit(
        tiny_model(),
        load_manifest(table),
        sensitive=SENSITIVE,
        output_dir=tmp_path / "ray_urls",
        backend="ray",
        ray_workers=2,
        **SETTINGS,
    ).run()
    assert got.provenance["batches"]["computed"] == 5
    cols = ["case_id", "label", "score", "predicted"]
    pd.testing.assert_frame_equal(got.predictions[cols], reference.predictions[cols])
    for m in METHODS:
        np.testing.assert_allclose(got.maps(m), reference.maps(m), rtol=0, atol=1e-3)
    assert got.findings == reference.findings


def test_killed_worker_batches_are_retried(cluster, data, reference, tmp_path) -> None:
    flag = tmp_path / "killed.flag"
    got = _run(kill_once_model(flag), data, tmp_path / "ray", backend="ray", ray_workers=2)
    assert flag.exists(), "no worker was killed: the test did not test the retry"
    assert int(flag.read_text()) != os.getpid()
    assert got.provenance["batches"]["computed"] == 5
    assert_same_result(reference, got, architecture="KillOnce")


@pytest.mark.parametrize("first,second", [("local", "ray"), ("ray", "local")])
def test_resume_across_backends(cluster, data, reference, tmp_path, first, second) -> None:
    out = tmp_path / "run"
    with pytest.raises(Stop):
        _run(tiny_model(), data, out, backend=first, on_batch=_stop_after(2))
    assert not (out / "result.json").exists()
    resumed = _run(tiny_model(), data, out, backend=second)
    batches = resumed.provenance["batches"]
    # every shard the first run wrote is reused (the Ray run may finish one more in flight)
    assert batches["total"] == 5 and batches["reused"] >= 2
    assert batches["reused"] + batches["computed"] == 5
    assert resumed.provenance["backend"] == second
    assert_same_result(reference, resumed)


def test_bad_backend_settings_are_reported(data) -> None:
    with pytest.raises(ConfigError) as err:
        Audit(tiny_model(), load_manifest(data), sensitive=SENSITIVE, backend="spark")
    assert "backend must be one of ['local', 'ray']" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Audit(tiny_model(), load_manifest(data), sensitive=SENSITIVE, backend="ray", ray_workers=0)
    assert "ray_workers must be a positive integer" in str(err.value)


def _config(tmp_path: Path, manifest: Path, **extra: object) -> Path:
    import yaml

    cfg = {
        "name": "ray cli",
        "output_dir": str(tmp_path / "cli_out"),
        "batch_size": 8,
        "model": {"loader": "demo", "positive_class": "lesion", "device": "cpu"},
        "data": {"manifest": str(manifest)},
        "attributes": SENSITIVE,
        "methods": {"gradcam": {}},
        "n_boot": 20,
        "min_group_size": 6,
        "quality": {"faithfulness": False, "sanity": False, "shortcuts": False},
        **extra,
    }
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_backend_ray(cluster, data, tmp_path) -> None:
    from xai_audit.cli import main

    path = _config(tmp_path, data)
    assert main(["run", str(path), "--backend", "ray", "--ray-workers", "2", "-q"]) == 0
    result = AuditResult.load(tmp_path / "cli_out")
    assert result.provenance["backend"] == "ray"
    assert result.provenance["batches"]["computed"] == 5
    # the backend is not part of the config's hash: a local rerun resumes every batch
    assert main(["run", str(path), "-q"]) == 0
    again = AuditResult.load(tmp_path / "cli_out")
    assert again.provenance["batches"] == {"total": 5, "computed": 0, "reused": 5}
    assert again.provenance["backend"] == "local"
    pd.testing.assert_frame_equal(again.predictions, result.predictions)


def test_config_backend_key_is_checked(data, tmp_path) -> None:
    from xai_audit.audit.config import load_config

    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, data, backend="spark", ray_workers=-1))
    assert "backend must be one of ['local', 'ray'], got 'spark'" in str(err.value)
    assert "ray_workers must be a positive integer, got -1" in str(err.value)
    cfg = load_config(_config(tmp_path, data, backend="ray", ray_address="auto"))
    assert (cfg.backend, cfg.ray_address) == ("ray", "auto")
    assert "backend" not in cfg.to_dict()
