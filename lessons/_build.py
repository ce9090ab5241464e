"""Build every lesson notebook (``lessons/NN_name.ipynb``) from its percent-format source (``.py``).

The ``.py`` file is the source of truth; the ``.ipynb`` is generated and committed without outputs.
The format is jupytext's "percent" format, parsed here with nothing but the standard library and
nbformat:

* a line ``# %%`` starts a code cell (text after it, such as a title, is ignored);
* a line ``# %% [markdown]`` starts a markdown cell, whose lines are comments
  (``# text`` -> ``text``);
* lines before the first marker (a module docstring or comment) are not part of the notebook;
* blank lines at the start and end of a cell are dropped.

Usage::

    python lessons/_build.py            # regenerate every lessons/*.ipynb from its .py
    python lessons/_build.py --check    # exit 1 if a notebook is out of date (nothing written)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parent
_MARKER = re.compile(r"^# %%(?P<rest>.*)$")


def _strip_blank_edges(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _uncomment(line: str, where: str) -> str:
    if line.startswith("# "):
        return line[2:]
    if line.rstrip() == "#":
        return ""
    if not line.strip():
        return ""
    raise ValueError(f"{where}: a markdown cell line must start with '# ', got {line!r}")


def parse_cells(text: str, name: str = "<source>") -> list[tuple[str, str]]:
    """(cell_type, source) pairs of a percent-format file, in order."""
    cells: list[tuple[str, list[str], int]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _MARKER.match(line)
        if m:
            kind = "markdown" if m.group("rest").strip().startswith("[markdown]") else "code"
            cells.append((kind, [], lineno))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, lines, lineno in cells:
        lines = _strip_blank_edges(lines)
        if kind == "markdown":
            lines = [_uncomment(x, f"{name}:{lineno}") for x in lines]
        if not lines:
            raise ValueError(f"{name}:{lineno}: empty {kind} cell")
        out.append((kind, "\n".join(lines)))
    if not out:
        raise ValueError(f"{name}: no '# %%' cells found")
    return out


def build_notebook(py_path: Path) -> nbformat.NotebookNode:
    """The notebook (no outputs, deterministic cell ids) for one percent-format source."""
    py_path = Path(py_path)
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(parse_cells(py_path.read_text(), py_path.name)):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
        cell.id = f"{py_path.stem.replace('_', '-')}-{i:03d}"   # stable ids: clean git diffs
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def sources() -> list[Path]:
    """Every lesson source: lessons/NN_*.py (this builder and other helpers start with '_')."""
    return sorted(p for p in LESSONS.glob("[0-9]*.py"))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for py in sources():
        nb = build_notebook(py)
        target = py.with_suffix(".ipynb")
        text = nbformat.writes(nb) + "\n"
        if target.exists() and target.read_text() == text:
            continue
        if check:
            stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(LESSONS.parent)}")
    if stale:
        print("out of date (run python lessons/_build.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
