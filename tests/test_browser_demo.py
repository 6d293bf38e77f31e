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


def test_sampling_demo_button_draws_samples(browser, lab):  # noqa: F811
    page = open_and_run_all(browser, lab, NOTEBOOK, timeout_s=600)
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
        page.wait_for_timeout(800)  # let the toast fade out
    (ROOT / "runs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "runs" / "browser_demo.png"))
