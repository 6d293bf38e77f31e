"""The static HTML book (``make book``, ``tools/build_book.py``), built from two cheap chapters:
the contents follow the README's notebook map, every chapter is linked to its neighbours and
carries its plots as embedded images, and a failing cell fails the build."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import SMALL_BOOK
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_book  # noqa: E402

pytestmark = pytest.mark.notebook


def test_every_notebook_is_in_the_readme_map_in_paper_order():
    chapters = build_book.select_chapters(None)
    stems = [c.stem for c in chapters]
    assert sorted(stems) == sorted(p.stem for p in ROOT.glob("notebooks/[0-9][0-9]*_*.py"))
    # the README's map order: 05b (HDiT assembled) comes after 05 and before 06
    assert stems.index("05_flops_and_scaling") + 1 == stems.index("05b_hdit_assembled")
    assert stems[0] == "00_tour" and stems[-3:] == [
        "08_sampling_demo",
        "09_train_toy_live",
        "10_resolution_extrapolation",
    ]
    assert next(c for c in chapters if c.stem == "04_local_attention").paper == "§4.3"


def test_unknown_notebook_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown notebooks \\['99_nope'\\]"):
        build_book.select_chapters(["99_nope"])


def test_index_lists_the_chapters_with_links(small_book):
    out, chapters = small_book
    assert [c.stem for c in chapters] == SMALL_BOOK
    index = (out / "index.html").read_text()
    links = re.findall(r'<a href="([^"]+\.html)">', index)
    assert links == [f"{stem}.html" for stem in SMALL_BOOK]
    assert all((out / link).is_file() for link in links)
    assert "A tour of hdit-edu" in index and "§4.1, Fig. 3, Table 2" in index
    assert all(c.seconds > 0 for c in chapters)


def test_chapters_link_their_neighbours_and_embed_their_plots(small_book):
    out, _ = small_book
    tour = (out / "00_tour.html").read_text()
    hourglass = (out / "02_hourglass_and_skips.html").read_text()
    assert tour.count('<a href="02_hourglass_and_skips.html">→') == 2  # top and bottom bars
    assert hourglass.count('<a href="00_tour.html">←') == 2
    assert hourglass.count('<a href="index.html">Contents</a>') == 2
    plots = re.findall(r'<img[^>]+src="([^"]{0,40})', hourglass)
    assert len(plots) >= 3 and all(src.startswith("data:image/png;base64,") for src in plots)
    assert "jp-OutputArea-output" in hourglass  # executed: the outputs are there
    # formulas: the book's own MathJax (tests/test_browser_book.py sees them typeset offline)
    assert f'<script src="{build_book.MATHJAX_URL}">' in hourglass
    assert "libs/mathjax" not in hourglass  # not the CDN
    assert (out / "mathjax" / "MathJax.js").is_file()
    assert (out / "mathjax" / "config" / "hdit-book.js").is_file()


def test_a_failing_cell_fails_the_build(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    header = (ROOT / "notebooks" / "00_tour.py").read_text().split("# %%")[0]  # the kernelspec
    cells = "# %% [markdown]\n# # A failing chapter\n\n# %%\nassert 1 + 1 == 3, 'arithmetic'\n"
    (notebooks / "00_tour.py").write_text(header + cells)
    with pytest.raises(CellExecutionError, match="arithmetic"):
        build_book.build_book(tmp_path / "book", ["00_tour"], notebook_dir=notebooks)
    assert not (tmp_path / "book" / "index.html").exists()


def test_solutions_are_hidden_and_interactive_cells_show_their_figure(small_book):
    """Each solution cell sits in a closed <details> disclosure (the answer cell before it stays
    open), and an interactive cell shows its default figure under a line naming the values,
    with no <function …> repr: the page teaches without a kernel."""
    out, _ = small_book
    for stem, solutions in (("00_tour", 2), ("02_hourglass_and_skips", 3)):
        page = (out / f"{stem}.html").read_text()
        wrapped = re.findall(
            r'<details class="book-solution"><summary>[^<]*</summary>\s*<div[^>]*celltag_solution',
            page,
        )
        assert len(wrapped) == page.count("celltag_solution") == solutions, stem
        assert page.count("celltag_exercise") == solutions, stem  # the student's answer cells
        assert "&lt;function" not in page and "<function" not in page
    hourglass = (out / "02_hourglass_and_skips.html").read_text()
    shown = hourglass.index("Interactive with a running kernel; shown here: f = 0.5")
    assert hourglass.find('src="data:image/png;base64,', shown) - shown < 2000  # its figure


def test_hide_solutions_wraps_whole_cells_only():
    body = (
        '<div class="jp-Cell jp-CodeCell"><div>q</div></div>'
        '<div id="c2" class="jp-Cell jp-CodeCell celltag_solution"><div><div>a</div></div></div>'
        "<p>after</p>"
    )
    hidden = build_book.hide_solutions(body)
    assert hidden == (
        '<div class="jp-Cell jp-CodeCell"><div>q</div></div>'
        '<details class="book-solution"><summary>Solution (try the exercise first)</summary>'
        '<div id="c2" class="jp-Cell jp-CodeCell celltag_solution"><div><div>a</div></div></div>'
        "</details><p>after</p>"
    )
