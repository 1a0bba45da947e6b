"""Provenance: package versions, platform, hardware, seeds, hashes, timings and the date."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import sys
from typing import Any

#: Distributions whose versions every audit records.
PACKAGES = (
    "xai_audit",
    "torch",
    "captum",
    "fairlearn",
    "scikit-learn",
    "numpy",
    "pandas",
    "scipy",
    "shap",
    "matplotlib",
    "jinja2",
    "pydicom",
    "monai",
)


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | None = None) -> dict[str, Any]:
    """CPU, core count, memory, GPU (if any) and the device the model ran on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    try:
        info["memory_gb"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
        else:
            info["gpu"] = None
    except Exception:  # noqa: BLE001 - provenance must never break an audit
        info["gpu"] = None
    return info


def utc_now() -> str:
    """The current UTC time in ISO 8601 (seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def collect(
    *,
    seeds: dict[str, Any],
    hashes: dict[str, str],
    timings: dict[str, float],
    device: str | None,
    started: str,
    batches: dict[str, int],
) -> dict[str, Any]:
    """Everything needed to reproduce an audit (no patient data, no file contents).

    Parameters
    ----------
    seeds : dict
        Every seed used (bootstrap, quality sample, randomisation).
    hashes : dict
        ``model_hash``, ``data_hash``, ``task_hash``, ``config_hash``.
    timings : dict
        Seconds per phase.
    device : str or None
        Torch device of the model.
    started : str
        UTC start time.
    batches : dict
        ``computed`` and ``reused`` batch counts (resumed runs reuse finished batches).
    """
    return {
        "date_utc": started,
        "finished_utc": utc_now(),
        "packages": package_versions(),
        "python_executable": os.path.basename(sys.executable),
        "hardware": hardware(device),
        "seeds": dict(seeds),
        "hashes": dict(hashes),
        "timings_s": {k: round(float(v), 4) for k, v in timings.items()},
        "batches": dict(batches),
    }
