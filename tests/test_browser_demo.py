"""The sampling demo in a real browser: JupyterLab on loopback driven by headless Chromium.

Reuses ``test_browser``'s JupyterLab server, browser and "run all cells" helper (and its skip
when Chromium is missing): opens ``notebooks/08_sampling_demo.ipynb``, runs every cell, clicks
the app's **Sample** button and waits until the sample grid image has rendered; the screenshot
goes to ``runs/browser_demo.png``. The notebook finds the shipped model from the package
location (``hdit_edu.widgets.SHIPPED_RUN``), so the server's copy of ``notebooks/`` suffices.
"""

from __future__ import annotations

from test_browser import ROOT, browser, lab, open_and_run_all, pytestmark  # noqa: F401

NOTEBOOK = "08_sampling_demo.ipynb"
GRID = "img.hdit-sample-grid"
RENDERED = f"""() => {{
    const img = document.querySelector({GRID!r});
    return img !== null && img.complete && img.naturalWidth > 0;
}}"""


# JupyterLab's status bar names the kernel once it is attached: "Python 3 (ipykernel) | Idle"
# (before that: "No Kernel | Initializing").
KERNEL_ATTACHED = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .some(e => /\\| Idle$/.test(e.textContent.trim()) && !e.textContent.includes('No Kernel'))"""


class KernelReadyBrowser:
    """The ``browser`` fixture as ``open_and_run_all`` sees it, with one change: when the helper
    waits for the notebook's idle execution indicator, its page also waits until JupyterLab
    has attached the kernel.

    The indicator says "idle" for a moment *before* a kernel is attached; a "Run All Cells"
    clicked in that moment (likely on a loaded machine) gets JupyterLab's "Select Kernel"
    dialog instead of running the cells, and the helper then waits for its full timeout."""

    def __init__(self, chromium):
        self._browser = chromium

    def new_page(self, **options):
        return _KernelReadyPage(self._browser.new_page(**options))


class _KernelReadyPage:
    def __init__(self, page):
        self._page = page

    def __getattr__(self, name):
        return getattr(self._page, name)

    def wait_for_selector(self, selector, **options):
        handle = self._page.wait_for_selector(selector, **options)
        if "jp-Notebook-ExecutionIndicator" in selector:
            self._page.wait_for_function(KERNEL_ATTACHED, timeout=options.get("timeout"))
        return handle


def test_sampling_demo_button_draws_samples(browser, lab):  # noqa: F811
    page = open_and_run_all(KernelReadyBrowser(browser), lab, NOTEBOOK, timeout_s=240)
    errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, errors.all_inner_texts()  # no cell raised (asserts included)

    button = page.locator(".hdit-sample-button")
    button.scroll_into_view_if_needed()
    button.wait_for(state="visible", timeout=30_000)
    assert button.text_content().strip() == "Sample"
    assert page.evaluate(RENDERED) is False  # no samples before the click
    button.click()
    page.wait_for_function(RENDERED, timeout=90_000)

    grid = page.locator(GRID)
    # the demo's 16 samples of 32² in 8 columns (1-pixel padding), shown 4× enlarged
    assert grid.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1060, 268]
    status = page.locator(".widget-html-content", has_text="ms per image")
    status.wait_for(timeout=10_000)
    assert "16 images" in status.inner_text()
    # the screenshot: the app's cell at the top, JupyterLab's news toast dismissed
    button.evaluate("el => el.closest('.jp-Cell').scrollIntoView()")
    news = page.get_by_role("button", name="No", exact=True)
    if news.count():
        news.first.click()
    (ROOT / "runs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "runs" / "browser_demo.png"))
