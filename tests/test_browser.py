"""Real-browser tests: JupyterLab on loopback, driven by headless Chromium through Playwright.

Chromium comes from Debian's package (``/usr/bin/chromium``; ``.ci/run`` installs it), never a
browser download. Without it these tests skip with that reason. Screenshots go to ``runs/``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("HDIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)",
    ),
]


# The notebook's execution indicator says "idle" for a moment *before* a kernel is attached; a
# "Run All Cells" clicked then gets JupyterLab's "Select Kernel" dialog instead of running. So we
# also wait for the status bar to name an attached, idle kernel.
KERNEL_ATTACHED = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .some(e => /\\| Idle$/.test(e.textContent.trim()) && !e.textContent.includes('No Kernel'))"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a random token, serving a copy of notebooks/."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, HDIT_PROFILE="cpu", JUPYTER_CONFIG_DIR=str(root / "cfg"))
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}"
                ) from None
            time.sleep(0.5)
    yield base, token
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def open_and_run_all(browser, lab, notebook: str, timeout_s: float = 600):
    """Open ``notebooks/<notebook>`` in JupyterLab, run all cells, wait until the kernel is idle
    and every code cell has an execution count. Returns the page."""
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/lab/tree/notebooks/{notebook}?token={token}", timeout=120_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    page.wait_for_function(KERNEL_ATTACHED, timeout=120_000)
    page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu").get_by_text("Run All Cells", exact=True).click()
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        # a collapsed cell (the exercises' solutions: jupyter.source_hidden) shows an empty
        # placeholder prompt instead of its input; its real prompt, hidden, still gets [n]
        pending = page.evaluate(
            """() => [...document.querySelectorAll(
                       '.jp-CodeCell .jp-InputPrompt:not(.jp-Placeholder-prompt)')]
                   .filter(p => !/\\[\\d+\\]/.test(p.textContent)).length"""
        )
        if pending == 0:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"{notebook}: cells still running after {timeout_s} s")
    return page


def test_tour_runs_in_jupyterlab(browser, lab):
    page = open_and_run_all(browser, lab, "00_tour.ipynb")
    # textContent, not innerText: after "Run All" the notebook has scrolled to its last cell,
    # and JupyterLab does not render (innerText '') the cells far above the viewport
    text = page.locator(".jp-OutputArea-output").all_text_contents()
    assert any("torch" in t and "natten" in t for t in text), text
    assert not page.locator(
        ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"
    ).count()
    (ROOT / "runs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "runs" / "browser_tour.png"), full_page=True)
