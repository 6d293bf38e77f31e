"""Build the static HTML book: execute the notebooks in one profile and render them with nbconvert.

    python tools/build_book.py                      # every notebook, cpu profile -> build/book/
    python tools/build_book.py --notebooks 02_hourglass_and_skips --out /tmp/book

The chapters are the notebooks' jupytext sources (``notebooks/NN_topic.py``), executed top to
bottom in a fresh kernel (``HDIT_PROFILE=<profile>``; a failing cell or ``assert`` stops the
build, naming the notebook) and rendered with nbconvert's ``lab`` template: plots are embedded
as data URIs, so the book opens from disk in any browser with nothing installed. The kernels run
headless (``HDIT_HEADLESS=1``: interactive cells draw their default figure, :class:`HeadlessClient`)
and each exercise's solution cell is folded into a ``<details>`` disclosure (:func:`hide_solutions`).
``index.html`` is the table of contents in the paper's order, the order of the README's
notebook map (``| `NN_topic` | paper | what it shows |``), with the paper's sections and the run
time of each chapter; every chapter has links to the contents and to its neighbours.
Formulas are typeset offline: MathJax 2 (the static files of the ``jupyter-server-mathjax``
package, the part SVG output needs) is copied into ``mathjax/`` next to the pages, which load
it with a relative URL instead of nbconvert's CDN default. ``make book`` runs this script.
"""

from __future__ import annotations

import argparse
import copy
import html
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import jupytext
import psutil
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
README = ROOT / "README.md"
MAP_ROW = re.compile(r"^\|\s*`(\d\d\w*?_\w+)`\s*\|([^|]*)\|([^|]*)\|\s*$")
# A cell's time limit. The longest cpu-profile cell (a training cell of notebook 09) takes about
# 100 s on a loaded 2-core machine; a cell past the limit is taken for a hung kernel (run_notebook).
CELL_TIMEOUT_S = 420
# A hung kernel found sooner: a cell during which the kernel and its child processes use less
# than IDLE_CPU_S of CPU in IDLE_HANG_S seconds is hung (no cpu-profile cell waits on anything
# but the CPU: no sleeps, no network). Seen as an idle kernel whose request is never answered.
IDLE_HANG_S = 120
IDLE_CPU_S = 1.0
# MathJax 2 from the jupyter-server-mathjax package: its combined configuration (TeX in, HTML-CSS
# out) with the only web font the package ships, STIX-Web, and the Safe extension (as nbconvert's
# CDN default has).
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,hdit-book"
MATHJAX_SKIP = {  # not needed by that configuration: 7.6 of the package's 10.0 MiB
    "extensions/a11y",  # accessibility explorer (opt-in)
    "localization",  # English is built in
    "jax/output/SVG",  # font data only: the SVG output itself is not in the package
}
MATHJAX_CONFIG = """MathJax.Hub.Config({
  extensions: ["Safe.js"],
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}
});
MathJax.Ajax.loadComplete("[MathJax]/config/hdit-book.js");
"""
STYLE = """<style>
.book-nav { display: flex; justify-content: space-between; gap: 1em; max-width: 1100px;
  margin: 0.5em auto; padding: 0.5em 1em; font: 14px sans-serif; background: #f3f5f8;
  border-radius: 4px; }
.book-nav a { text-decoration: none; }
details.book-solution { margin: 0.3em 0 0.8em; border-left: 3px solid #9ab; padding-left: 0.6em; }
details.book-solution > summary { cursor: pointer; color: #357; font: 14px sans-serif; }
</style>"""
SOLUTION_CELL = re.compile(r'<div\b[^>]*\bclass="jp-Cell\b[^"]*\bcelltag_solution\b[^"]*"[^>]*>')
DIV_TAG = re.compile(r"<(/?)div\b[^>]*>")


@dataclass
class Chapter:
    stem: str  # "02_hourglass_and_skips"
    paper: str  # the README map's paper column: "§4.1, Fig. 3, Table 2"
    summary: str  # the README map's "what it shows"
    title: str = ""  # the notebook's first heading
    seconds: float = 0.0  # execution time

    @property
    def html_name(self) -> str:
        return f"{self.stem}.html"


def notebook_map(readme: Path = README) -> list[Chapter]:
    """The README's notebook map, in its order (the paper's)."""
    rows = [MAP_ROW.match(line) for line in readme.read_text().splitlines()]
    chapters = [Chapter(m[1], m[2].strip(), m[3].strip()) for m in rows if m]
    if not chapters:
        raise ValueError(f"{readme}: no notebook map rows (| `NN_topic` | paper | what |) found")
    return chapters


def select_chapters(names: list[str] | None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Chapter]:
    """The chapters to build, in map order: ``names`` (stems, e.g. "02_hourglass_and_skips";
    default: every ``NN_topic.py``). Every source must be in the README's map."""
    chapters = notebook_map()
    by_stem = {c.stem: c for c in chapters}
    sources = {p.stem for p in notebook_dir.glob("[0-9][0-9]*_*.py")}
    unmapped = sorted(sources - set(by_stem))
    if unmapped:
        raise ValueError(f"notebooks missing from README's notebook map: {', '.join(unmapped)}")
    wanted = set(names) if names else sources
    unknown = sorted(wanted - sources)
    if unknown:
        raise ValueError(f"unknown notebooks {unknown}; allowed: {', '.join(sorted(sources))}")
    return [c for c in chapters if c.stem in wanted]


class HangWatch:
    """Watches a running notebook client from a thread: when a cell has run for ``idle_s``
    seconds while its kernel and the kernel's child processes used less than ``min_cpu_s`` CPU
    seconds, the kernel is taken for hung and killed (nbclient then raises ``DeadKernelError``)
    and :attr:`hung` is set. The window slides: any ``idle_s`` stretch of a cell counts."""

    def __init__(self, idle_s: float = IDLE_HANG_S, min_cpu_s: float = IDLE_CPU_S):
        self.idle_s, self.min_cpu_s = idle_s, min_cpu_s
        self.client = None
        self.running = False  # a cell is executing
        self.hung = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def on_cell_execute(self, **_):
        self.running = True

    def on_cell_executed(self, **_):
        self.running = False

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _kernel(self):
        km = getattr(self.client, "km", None)
        pid = getattr(getattr(km, "provisioner", None), "pid", None)
        return psutil.Process(pid) if pid else None

    def _cpu(self, kernel) -> float:
        total = 0.0
        for p in [kernel, *kernel.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:  # a child that ended in between
                pass
        return total

    def _watch(self):
        window = None  # (start, CPU seconds then) of the current idle window
        while not self._stop.wait(min(5.0, self.idle_s / 3)):
            try:
                kernel = self._kernel() if self.running else None
                if kernel is None:
                    window = None
                    continue
                now, cpu = time.monotonic(), self._cpu(kernel)
            except psutil.Error:
                window = None
                continue
            if window is None or cpu - window[1] >= self.min_cpu_s:
                window = (now, cpu)  # busy (or just started): a new window
            elif now - window[0] >= self.idle_s:
                self.hung = True
                kernel.kill()
                return


class HeadlessClient(NotebookClient):
    """nbclient's client without its part of a front end: it records the widgets a kernel
    opens (their state goes into the notebook) but never answers one.

    nbclient plays the front end of ``ipywidgets.Output`` (what ``ipywidgets.interact`` draws
    into): for each output the kernel sends while an ``Output`` captures, it sends a
    ``comm_msg`` with the widget's outputs back into the kernel's shell channel, from the
    coroutine that reads IOPub, while another coroutine waits on that same shell channel for
    the cell's ``execute_reply``. That round trip is the one place where a run talks back to
    the kernel during a cell, and the cells that hung (notebook 01's ``interact`` cells) were
    those that made it. The runner's kernels run headless (``HDIT_HEADLESS=1``: the notebooks'
    apps and ``hdit_edu.widgets.interact`` draw a still picture and open no ``Output``), and an
    ``Output`` opened anyway is named in :attr:`output_widgets` and fails the run
    (:func:`run_notebook`) instead of sometimes hanging it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_widgets: list[int] = []  # the cells (notebook index) that opened an Output
        self.comm_open_handlers = {"jupyter.widget": self._widget_opened}
        self._cell_index = -1

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        self._cell_index = cell_index
        return await super().async_execute_cell(cell, cell_index, *args, **kwargs)

    def _widget_opened(self, msg) -> None:
        if msg["content"]["data"].get("state", {}).get("_model_name") == "OutputModel":
            self.output_widgets.append(self._cell_index)
        return None  # no comm object: nothing is ever sent back to the kernel


def run_notebook(
    nb, cwd: Path, profile: str = "cpu", timeout: int = CELL_TIMEOUT_S, idle_s: float = IDLE_HANG_S
):
    """Execute ``nb`` in place in a fresh, headless kernel (working directory ``cwd``,
    ``HDIT_PROFILE`` = ``profile``, ``HDIT_HEADLESS=1``); a failing cell raises
    ``CellExecutionError``, a cell that opens an ``ipywidgets.Output`` ``RuntimeError``
    (:class:`HeadlessClient`).

    A cell that outlives ``timeout``, or during which the kernel sits idle for ``idle_s`` seconds
    (:class:`HangWatch`), is run once more from the top in a new kernel, with a line saying so
    on stdout (a retry that fires is a bug to report, not a cure). A notebook that hangs or
    times out twice fails."""
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if not kernel:
        raise ValueError("notebook has no kernelspec name: add one to the jupytext header")
    saved = {name: os.environ.get(name) for name in ("HDIT_PROFILE", "HDIT_HEADLESS")}
    os.environ["HDIT_PROFILE"] = profile  # the kernel inherits the environment
    os.environ["HDIT_HEADLESS"] = "1"  # hdit_edu.widgets.front_end_attached() is False
    try:
        for attempt in (1, 2):
            work = copy.deepcopy(nb)
            with HangWatch(idle_s) as watch:
                client = watch.client = HeadlessClient(
                    work,
                    kernel_name=kernel,
                    timeout=timeout,
                    resources={"metadata": {"path": str(cwd)}},
                    on_cell_execute=watch.on_cell_execute,
                    on_cell_executed=watch.on_cell_executed,
                )
                try:
                    client.execute()
                    break
                except (CellTimeoutError, DeadKernelError) as e:
                    hung = watch.hung or isinstance(e, CellTimeoutError)
                    if attempt == 2 or not hung:
                        raise
                    why = f"idle for {idle_s:g} s" if watch.hung else f"past {timeout} s"
                    print(
                        f"a cell's kernel hung ({why}): running the notebook again in a new kernel"
                    )
        if client.output_widgets:
            cells = ", ".join(str(i) for i in sorted(set(client.output_widgets)))
            raise RuntimeError(
                f"cell(s) {cells} opened an ipywidgets.Output with no front end attached: "
                "draw a still picture when hdit_edu.widgets.front_end_attached() is False "
                "(e.g. hdit_edu.widgets.interact instead of ipywidgets.interact)"
            )
        nb.cells = work.cells
        nb.metadata = work.metadata
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return nb


def execute(source: Path, profile: str):
    """The notebook of ``source`` (jupytext), executed in a fresh kernel in ``profile``."""
    nb = jupytext.read(source)
    if not nb.metadata.get("kernelspec", {}).get("name"):
        raise ValueError(f"{source.name} has no kernelspec name: add one to the jupytext header")
    return run_notebook(nb, source.parent, profile)


def copy_mathjax(out: Path) -> Path:
    """MathJax's static files (from the ``jupyter-server-mathjax`` package) in ``out/mathjax``,
    with the book's configuration ``config/hdit-book.js``."""
    import jupyter_server_mathjax  # the book's one extra dependency (the notebooks extra)

    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = out / "mathjax"

    def skip(folder: str, names: list[str]) -> set[str]:
        here = Path(folder).relative_to(source)
        return {n for n in names if (here / n).as_posix() in MATHJAX_SKIP}

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=skip)
    (target / "config" / "hdit-book.js").write_text(MATHJAX_CONFIG, encoding="utf-8")
    return target


def hide_solutions(body: str) -> str:
    """Each solution cell (tag ``solution``: nbconvert's lab template gives its ``<div>`` the
    class ``celltag_solution``) inside a closed ``<details>`` disclosure: the book shows the
    exercise and the student's answer cell, and the solution with its output on a click."""
    out, pos = [], 0
    for start in SOLUTION_CELL.finditer(body):
        if start.start() < pos:  # nested inside one already wrapped
            continue
        depth, end = 0, None
        for tag in DIV_TAG.finditer(body, start.start()):
            depth += -1 if tag[1] else 1
            if depth == 0:
                end = tag.end()
                break
        if end is None:
            raise ValueError("a solution cell's <div> is never closed")
        out += [
            body[pos : start.start()],
            '<details class="book-solution"><summary>Solution (try the exercise first)</summary>',
            body[start.start() : end],
            "</details>",
        ]
        pos = end
    return "".join(out) + body[pos:]


def nav(chapters: list[Chapter], i: int) -> str:
    """The bar linking a chapter to its neighbours and to the contents."""

    def link(j: int, arrow: str) -> str:
        if not 0 <= j < len(chapters):
            return "<span></span>"
        c = chapters[j]
        return f'<a href="{c.html_name}">{arrow} {html.escape(c.title)}</a>'

    prev, nxt = link(i - 1, "←"), link(i + 1, "→")
    return f'<nav class="book-nav">{prev}<a href="index.html">Contents</a>{nxt}</nav>'


def index_page(chapters: list[Chapter], profile: str) -> str:
    rows = "\n".join(
        f'<tr><td><a href="{c.html_name}">{html.escape(c.title)}</a><br><code>{c.stem}</code>'
        f"</td><td>{html.escape(c.paper)}</td><td>{html.escape(c.summary)}</td>"
        f"<td>{c.seconds:.0f} s</td></tr>"
        for c in chapters
    )
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hdit-edu: the book</title>
<style>
body {{ font: 16px/1.5 sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.5em; text-align: left; vertical-align: top; }}
</style></head>
<body>
<h1>hdit-edu: Hourglass Diffusion Transformers, notebook by notebook</h1>
<p>The notebooks of <code>hdit-edu</code>, an educational toolkit for the Hourglass Diffusion
Transformer (HDiT; Crowson et al., <i>Scalable High-Resolution Pixel-Space Image Synthesis with
Hourglass Diffusion Transformers</i>, ICML 2024), executed in the <code>{profile}</code> profile
with every output and plot. The chapters follow the paper. Interactive widgets need a running
kernel: open the notebooks with <code>make lab</code>.</p>
<h2>Contents</h2>
<table id="toc">
<tr><th>chapter</th><th>paper</th><th>what it shows</th><th>run time</th></tr>
{rows}
</table>
<p>Built {built} with <code>make book</code>.</p>
</body></html>
"""


def build_book(
    out: Path,
    names: list[str] | None = None,
    profile: str = "cpu",
    notebook_dir: Path = NOTEBOOK_DIR,
    log=print,
) -> list[Chapter]:
    """Execute the chosen notebooks (default: all) and write ``out/index.html`` plus one
    ``out/<stem>.html`` per chapter. Returns the chapters with their titles and run times."""
    chapters = select_chapters(names, notebook_dir)
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True, mathjax_url=MATHJAX_URL)
    bodies = []
    for c in chapters:
        start = time.perf_counter()
        nb = execute(notebook_dir / f"{c.stem}.py", profile)
        c.seconds = time.perf_counter() - start
        heading = next(
            (cell.source for cell in nb.cells if cell.cell_type == "markdown"), c.stem
        ).lstrip("# ")
        c.title = heading.splitlines()[0].strip()
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": c.title}})
        bodies.append(body)
        log(f"{c.stem}: executed in {c.seconds:.0f} s")
    for i, (c, body) in enumerate(zip(chapters, bodies)):
        bar = nav(chapters, i)
        body = hide_solutions(body.replace("</head>", f"{STYLE}\n</head>", 1))
        body = re.sub(r"(<body[^>]*>)", rf"\1\n{bar}", body, count=1)
        body = body.replace("</body>", f"{bar}\n</body>", 1)
        (out / c.html_name).write_text(body, encoding="utf-8")
    copy_mathjax(out)
    (out / "index.html").write_text(index_page(chapters, profile), encoding="utf-8")
    return chapters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="output folder")
    parser.add_argument(
        "--notebooks", nargs="+", metavar="STEM", help="notebook stems (default: all)"
    )
    parser.add_argument("--profile", default="cpu", choices=("cpu", "gpu"), help="profile")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    build_book(args.out, args.notebooks, args.profile)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(
        f"wrote {args.out / 'index.html'} in {time.perf_counter() - start:.0f} s "
        f"({size / 2**20:.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
