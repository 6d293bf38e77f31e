"""The longest functions and methods of a package, read from the source with ``ast``.

``python tools/longest_functions.py [N] [FOLDER]`` prints the N (default 10) longest
functions/methods under FOLDER (default ``hdit_edu``), longest first, as
``LINES  file:line  qualified.name``. A function's length is its lines from the ``def`` (or its
first decorator) to its last line, nested functions included; the issue-26 rule of thumb is
"no function over ~150 lines".
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def functions(path: Path) -> list[tuple[int, str, int, str]]:
    """``(length, file, line, qualified name)`` of every function and method in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                name = prefix + child.name
                found.append((child.end_lineno - start + 1, str(path), child.lineno, name))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 10
    folder = Path(argv[1]) if len(argv) > 1 else Path("hdit_edu")
    rows = [row for path in sorted(folder.rglob("*.py")) for row in functions(path)]
    for length, file, line, name in sorted(rows, key=lambda r: (-r[0], r[1], r[2]))[:n]:
        print(f"{length:5d}  {file}:{line}  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
