"""Build the lesson notebooks from their percent-format sources (``lessons/NN_name.py``).

Each source gives three notebooks, all with the same cells (and stable cell ids):

* ``lessons/NN_name.ipynb``: the student notebook, without outputs; every reference solution is
  replaced by ``raise NotImplementedError("Exercise N: write <function>")``, so its check cell
  fails until the exercise is solved;
* ``lessons/solutions/NN_name.ipynb``: the solved notebook, without outputs;
* ``docs/lessons/NN_name.ipynb``: the solved notebook executed, with its outputs and figures, to
  read without running anything. Its metadata records the SHA-256 of the source it was run from,
  so a test can tell, without running it, that a source changed and its copy was not rebuilt.

The source format is jupytext's "percent" format, parsed with the standard library and nbformat:

* ``# %%`` starts a code cell (text after it is ignored), ``# %% [markdown]`` a markdown cell
  whose lines are comments (``# text`` -> ``text``); lines before the first marker and blank lines
  at the edges of a cell are dropped;
* an exercise is a markdown heading ``### Exercise N``, then an answer cell, then its check cell
  (the next code cell). In the answer cell, the reference solution sits between the lines
  ``# BEGIN SOLUTION`` and ``# END SOLUTION`` inside a function (several regions may share a cell).

Usage::

    python lessons/_build.py                 # write the student and solved notebooks
    python lessons/_build.py --check         # exit 1 if any of them is out of date
    python lessons/_build.py --execute       # also execute every solved notebook into docs/lessons
    python lessons/_build.py --execute 05 06 # only these lessons
    python lessons/_build.py --stale         # list the executed copies older than their source
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parent
ROOT = LESSONS.parent
SOLUTIONS = LESSONS / "solutions"
EXECUTED = ROOT / "docs" / "lessons"
EXECUTE_TIMEOUT_S = 600            # per cell; the lessons test holds each lesson to 2 minutes
FIGURE_DPI = 72                    # PNG figures in the executed copies: readable and small

_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
_EXERCISE = re.compile(r"^#{2,4}\s+Exercise\s+(\d+)\b", re.MULTILINE)
_BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
_END = re.compile(r"^\s*# END SOLUTION\s*$")
_ANSWER_HEADER = re.compile(r"^# YOUR ANSWER\b.*$")
STUDENT_HEADER = ("# YOUR ANSWER: replace every `raise NotImplementedError(...)` below with your "
                  "code")
SOLVED_HEADER = "# REFERENCE SOLUTION (the student notebook has `raise NotImplementedError` here)"


# ---------------------------------------------------------------------------------- parsing
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


@dataclass(frozen=True)
class Exercise:
    """One answer cell: its exercise number, its cell index and its check cell's index."""

    number: int
    answer: int
    check: int
    functions: tuple      # the functions whose bodies are blanked, e.g. ("SiLU.forward",)


def _regions(source: str, where: str) -> list[tuple[int, int, str]]:
    """(begin, end, indent) of each solution region of a cell: 0-based lines, markers included."""
    lines, out, i = source.splitlines(), [], 0
    while i < len(lines):
        m = _BEGIN.match(lines[i])
        if _END.match(lines[i]):
            raise ValueError(f"{where}: END SOLUTION without BEGIN SOLUTION")
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not _END.match(lines[j]):
            if _BEGIN.match(lines[j]):
                raise ValueError(f"{where}: BEGIN SOLUTION inside another solution region")
            j += 1
        if j == len(lines):
            raise ValueError(f"{where}: BEGIN SOLUTION without END SOLUTION")
        out.append((i, j, m.group(1)))
        i = j + 1
    return out


def _owner(tree: ast.AST, lineno: int) -> str | None:
    """Qualified name of the innermost function around line ``lineno`` (1-based)."""
    best = None

    def visit(node, prefix):
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if child.lineno <= lineno <= child.end_lineno:
                    best = prefix + child.name
                visit(child, prefix + child.name + ".")
    visit(tree, "")
    return best


def _blank_answer(source: str, number: int, where: str) -> tuple[str, str, tuple]:
    """(student source, solved source, blanked functions) of one answer cell."""
    lines = source.splitlines()
    if lines and _ANSWER_HEADER.match(lines[0]):
        lines = lines[1:]
    body = "\n".join(lines)
    regions = _regions(body, where)
    try:
        tree = ast.parse(body)
    except SyntaxError as err:
        raise ValueError(f"{where}: the answer cell is not valid Python: {err}") from None
    student, solved, functions, last = [], [], [], 0
    for begin, end, indent in regions:
        owner = _owner(tree, begin + 1)
        if owner is None:
            raise ValueError(f"{where}: a solution region must be inside a function (line "
                             f"{begin + 1} of the cell)")
        functions.append(owner)
        student += lines[last:begin]
        student.append(f'{indent}raise NotImplementedError("Exercise {number}: write {owner}")')
        solved += lines[last:begin] + lines[begin + 1:end]
        last = end + 1
    student += lines[last:]
    solved += lines[last:]
    return ("\n".join([STUDENT_HEADER] + student), "\n".join([SOLVED_HEADER] + solved),
            tuple(functions))


def _has_region(source: str) -> bool:
    return any(_BEGIN.match(x) for x in source.splitlines())


def lesson_cells(py_path: Path) -> tuple[list, list, list[Exercise]]:
    """The student cells, the solved cells ((type, source) pairs) and the exercises of a source."""
    py_path = Path(py_path)
    cells = parse_cells(py_path.read_text(), py_path.name)
    student, solved, exercises, number = [], [], [], None
    for i, (kind, source) in enumerate(cells):
        where = f"{py_path.name} cell {i}"
        if kind == "markdown":
            found = _EXERCISE.findall(source)
            if found:
                number = int(found[-1])
        elif _has_region(source):
            if number is None:
                raise ValueError(f"{where}: a solution region before any '### Exercise N' heading")
            check = next((k for k in range(i + 1, len(cells)) if cells[k][0] == "code"), None)
            if check is None or _has_region(cells[check][1]):
                raise ValueError(f"{where}: an answer cell must be followed by its check cell "
                                 "(a code cell without solution regions)")
            mine, ref, functions = _blank_answer(source, number, where)
            student.append((kind, mine))
            solved.append((kind, ref))
            exercises.append(Exercise(number, i, check, functions))
            continue
        elif any(_END.match(x) for x in source.splitlines()):
            raise ValueError(f"{where}: END SOLUTION without BEGIN SOLUTION")
        student.append((kind, source))
        solved.append((kind, source))
    return student, solved, exercises


def exercises(py_path: Path) -> list[Exercise]:
    """The exercises (answer cells) of one lesson source."""
    return lesson_cells(py_path)[2]


def _notebook(py_path: Path, cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells):
        cell = (nbformat.v4.new_markdown_cell(source) if kind == "markdown"
                else nbformat.v4.new_code_cell(source))
        cell.id = f"{py_path.stem.replace('_', '-')}-{i:03d}"   # stable ids: clean git diffs
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def build_notebook(py_path: Path) -> nbformat.NotebookNode:
    """The student notebook (no outputs, solutions blanked) of one source."""
    return _notebook(Path(py_path), lesson_cells(py_path)[0])


def build_solution(py_path: Path) -> nbformat.NotebookNode:
    """The solved notebook (no outputs) of one source."""
    return _notebook(Path(py_path), lesson_cells(py_path)[1])


def sources() -> list[Path]:
    """Every lesson source: lessons/NN_*.py (this builder and other helpers start with '_')."""
    return sorted(p for p in LESSONS.glob("[0-9]*.py"))


def source_hash(py_path: Path) -> str:
    """SHA-256 of a lesson source's bytes: what its executed copy records."""
    return hashlib.sha256(Path(py_path).read_bytes()).hexdigest()


def targets(py_path: Path) -> dict:
    """Where the student, solved and executed notebooks of a source live."""
    name = Path(py_path).with_suffix(".ipynb").name
    return {"student": LESSONS / name, "solution": SOLUTIONS / name, "executed": EXECUTED / name}


def _text(nb) -> str:
    return nbformat.writes(nb) + "\n"


# -------------------------------------------------------------------------------- executing
def execute(nb: nbformat.NotebookNode, workdir: Path, timeout: int = EXECUTE_TIMEOUT_S):
    """Run ``nb`` in place in a fresh python3 kernel whose working directory is ``workdir``.

    Cells tagged ``raises-exception`` may raise; any other error raises nbclient's
    ``CellExecutionError``. The kernel inherits this process's environment.
    """
    import nbclient
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     record_timing=False,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return client


def execute_lesson(py_path: Path) -> float:
    """Execute the solved notebook of ``py_path`` into docs/lessons; returns the seconds taken."""
    py_path = Path(py_path)
    nb = build_solution(py_path)
    work = Path(tempfile.mkdtemp(prefix="tinydan-lesson-"))
    rc = work / "matplotlibrc"                 # not a setup cell: a lesson may need to set things
    rc.write_text(f"figure.dpi: {FIGURE_DPI}\n")   # (BLAS threads) before numpy is imported
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline",   # figures as PNG outputs
           "MATPLOTLIBRC": str(rc)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.perf_counter()
    try:
        execute(nb, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - start
    target = targets(py_path)["executed"]
    nb.metadata["tinydan"] = {"source": f"lessons/{py_path.name}",
                              "source_sha256": source_hash(py_path),
                              "built_from": f"lessons/solutions/{target.name}",
                              "executed_in_s": round(seconds, 1)}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_text(nb))
    return seconds


def stale_executed() -> list[str]:
    """Names of the executed copies that are missing or were run from another version of their
    source."""
    stale = []
    for py in sources():
        path = targets(py)["executed"]
        if not path.exists():
            stale.append(path.name)
            continue
        meta = nbformat.read(path, as_version=4).metadata.get("tinydan", {})
        if meta.get("source_sha256") != source_hash(py):
            stale.append(path.name)
    return stale


# ------------------------------------------------------------------------------------ main
def _select(names: list[str]) -> list[Path]:
    chosen = []
    for name in names:
        found = [p for p in sources() if p.stem == name or p.stem.split("_")[0] == name]
        if not found:
            raise SystemExit(f"no lesson source matches {name!r}; lessons: "
                             + ", ".join(p.stem for p in sources()))
        chosen += found
    return chosen


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    names = [a for a in argv if not a.startswith("--")]
    unknown = flags - {"--check", "--execute", "--stale"}
    if unknown:
        print(f"unknown option {sorted(unknown)[0]}; use --check, --execute or --stale")
        return 2
    if "--stale" in flags:
        stale = stale_executed()
        for name in stale:
            print(f"docs/lessons/{name} is missing or older than its source")
        return 1 if stale else 0
    check = "--check" in flags
    out_of_date = []
    for py in sources():
        paths = targets(py)
        for kind, nb in (("student", build_notebook(py)), ("solution", build_solution(py))):
            target, text = paths[kind], _text(nb)
            if target.exists() and target.read_text() == text:
                continue
            if check:
                out_of_date.append(str(target.relative_to(ROOT)))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                print(f"wrote {target.relative_to(ROOT)}")
    if out_of_date:
        print("out of date (run python lessons/_build.py): " + ", ".join(out_of_date))
        return 1
    if "--execute" in flags and not check:
        for py in (_select(names) if names else sources()):
            print(f"executing {py.name} ...", flush=True)
            seconds = execute_lesson(py)
            size = targets(py)["executed"].stat().st_size
            print(f"wrote docs/lessons/{py.with_suffix('.ipynb').name} ({seconds:.0f} s, "
                  f"{size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
