"""The built book in a real browser (headless Chromium, as ``test_browser``): the contents page
of the small book (``conftest.SMALL_BOOK``) opens from disk, its link leads to a chapter, and
that chapter shows a rendered plot — an <img> whose PNG decoded to a non-zero size — and its
formulas typeset by the book's own copy of MathJax, with no server, no network (every http(s)
request is refused) and nothing installed. The screenshot goes to ``runs/browser_book.png``."""

from __future__ import annotations

from conftest import SMALL_BOOK
from test_browser import ROOT, browser, pytestmark  # noqa: F401

# MathJax 2's output elements (HTML-CSS) and its error marks; 02 has five formulas
TYPESET = "() => document.querySelectorAll('.jp-RenderedMarkdown .MathJax').length"
MATH_ERRORS = "() => document.querySelectorAll('.MathJax_Error, merror').length"
RENDERED_PLOTS = """() => [...document.querySelectorAll('.jp-OutputArea-output img')]
    .filter(img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0).length"""


def test_book_index_opens_a_chapter_with_a_rendered_plot(browser, small_book):  # noqa: F811
    out, chapters = small_book
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    refused = []  # offline: the template's require.js (CDN) is not needed, MathJax is local
    page.route("http*://**", lambda route: (refused.append(route.request.url), route.abort()))
    page.goto((out / "index.html").as_uri(), wait_until="domcontentloaded")
    rows = page.locator("#toc a")
    assert rows.all_inner_texts() == [c.title for c in chapters]
    rows.nth(SMALL_BOOK.index("02_hourglass_and_skips")).click()
    page.wait_for_url("**/02_hourglass_and_skips.html", wait_until="domcontentloaded")
    page.wait_for_function(f"() => ({RENDERED_PLOTS})() >= 3", timeout=30_000)
    page.wait_for_function(f"() => ({TYPESET})() >= 5", timeout=30_000)
    assert page.evaluate(MATH_ERRORS) == 0
    assert not [url for url in refused if "mathjax" in url.lower()]
    assert page.locator(".book-nav").first.get_by_text("Contents").count() == 1
    (ROOT / "runs").mkdir(exist_ok=True)
    page.locator(".jp-OutputArea-output img").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ROOT / "runs" / "browser_book.png"))
    page.locator(".book-nav").first.get_by_text("Contents").click()
    page.wait_for_url("**/index.html", wait_until="domcontentloaded")
    page.close()
