"""A real-browser test: JupyterLab + headless Chromium run 01_quickstart and use the explorer.

Starts ``jupyter lab`` on 127.0.0.1 with a random token in a temporary copy of the notebook,
drives Debian's Chromium through Python playwright: run all cells, wait for the explorer's
image, change the colormap, and wait until the image changes. The server (and its kernel)
is always stopped at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
NOTEBOOK = "01_quickstart.ipynb"
RUN_TIMEOUT_MS = int(os.environ.get("XAI_AUDIT_BROWSER_TIMEOUT_MS", 900_000))

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"jupyter lab exited with code {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - local test server
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server we started and its kernels (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def _write_lab_settings(settings_dir: Path) -> None:
    """Render every cell (JupyterLab 4 virtualises notebooks: cells scrolled out of view
    leave the DOM, which would hide the explorer once Run All scrolls past it), start the
    notebook's kernel without asking, and do not ask about news (a toast over the page)."""
    overrides = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "windowingMode": "none",
            "autoStartDefaultKernel": True,  # no "Select Kernel" dialog
        },
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    }
    for rel, content in overrides.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


@pytest.fixture()
def lab(tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    from xai_audit.model import demo

    if not (demo._weights_dir() / demo.WEIGHTS_FILE).exists():
        pytest.skip("the demo model's weights are not trained yet")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root)
    _write_lab_settings(tmp_path / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        # Keep the server's state out of the user's home directory.
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.terminals_enabled=False",
    ]
    if os.geteuid() == 0:  # CI containers run as root; the server refuses without this
        cmd.append("--allow-root")
    log_path = tmp_path / "lab.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log_path)
        yield f"http://127.0.0.1:{port}", token
    finally:
        _stop(proc)
        log.close()


def test_quickstart_explorer_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    base, token = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "console", lambda m: print("console:", m.text[:300]) if m.type == "error" else None
            )
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
            # Wait until the kernel is up before running (accept the kernel dialog if an
            # older JupyterLab ignores the auto-start setting).
            dialog = page.locator(".jp-Dialog .jp-mod-accept")
            deadline = time.monotonic() + 90
            status = page.locator(".jp-StatusBar-TextItem", has_text="| Idle")
            while status.count() == 0 and time.monotonic() < deadline:
                if dialog.count():
                    dialog.first.click()
                page.wait_for_timeout(500)
            status.first.wait_for(timeout=5_000)

            page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu .lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            image = page.locator(".xai-audit-explorer .xai-audit-explorer-image").first
            image.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
            page.wait_for_function(
                "() => { const i = document.querySelector('.xai-audit-explorer-image');"
                " return i && i.getAttribute('src') && i.naturalWidth > 0; }",
                timeout=60_000,
            )
            # Let the rest of the notebook finish: comm messages wait for an idle kernel.
            page.wait_for_function(
                "() => { const p = [...document.querySelectorAll('.jp-InputPrompt')];"
                " return p.length > 0 && !p.some(e => e.textContent.includes('*')); }",
                timeout=RUN_TIMEOUT_MS,
            )
            errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.first.inner_text()

            before = image.get_attribute("src")
            explorer = page.locator(".xai-audit-explorer").first
            explorer.locator(".widget-dropdown", has_text="colormap").locator(
                "select"
            ).select_option("viridis")
            page.wait_for_function(
                "(before) => document.querySelector('.xai-audit-explorer-image').getAttribute('src') !== before",
                arg=before,
                timeout=30_000,
            )
            assert image.get_attribute("src") != before
        except Exception:
            # Leave evidence for CI: where the page was when it failed.
            shot = Path(os.environ.get("XAI_AUDIT_BROWSER_SHOT", "/tmp")) / "jupyterlab_failure.png"
            page.screenshot(path=str(shot), full_page=True)
            prompts = page.locator(".jp-InputPrompt").all_inner_texts()
            print(f"screenshot: {shot}; prompts: {prompts}")
            raise
        finally:
            browser.close()
