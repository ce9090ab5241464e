"""The lessons in lessons/ run top to bottom, fast, and match their percent-format sources."""
from __future__ import annotations

import re
import shutil
import time
import types
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.lessons

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("*.ipynb"))
TIME_LIMIT_S = 120
_ANSI = re.compile(r"\x1b\[[0-9;]*m")          # colour codes in IPython tracebacks


def _load_builder():
    """lessons/_build.py as a module, without writing a __pycache__ into the repository."""
    path = LESSONS / "_build.py"
    module = types.ModuleType("lessons_build")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def test_every_lesson_has_a_notebook_and_a_source():
    assert NOTEBOOKS, f"no notebooks found in {LESSONS}"
    for nb_path in NOTEBOOKS:
        assert nb_path.with_suffix(".py").exists(), \
            f"{nb_path.name} has no percent-format source {nb_path.with_suffix('.py').name}"
    for py_path in _load_builder().sources():
        assert py_path.with_suffix(".ipynb").exists(), \
            f"{py_path.name} has no notebook: run python lessons/_build.py"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_sync_with_source_and_without_outputs(nb_path):
    committed = nbformat.read(nb_path, as_version=4)
    for i, cell in enumerate(committed.cells):
        if cell.cell_type == "code":
            assert not cell.get("outputs"), (f"{nb_path.name} cell {i} has outputs committed; "
                                             "rebuild with python lessons/_build.py")
            assert cell.get("execution_count") is None, (
                f"{nb_path.name} cell {i} has an execution count; "
                "rebuild with python lessons/_build.py")
    built = _load_builder().build_notebook(nb_path.with_suffix(".py"))
    got = [(c.cell_type, c.source) for c in committed.cells]
    want = [(c.cell_type, c.source) for c in built.cells]
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                     min(len(got), len(want)))
        pytest.fail(f"{nb_path.name} is out of date with {nb_path.with_suffix('.py').name} "
                    f"(first difference at cell {first}; {len(got)} cells vs {len(want)} built): "
                    "run python lessons/_build.py")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(nb_path, tmp_path, monkeypatch):
    """Execute the notebook in a fresh kernel, in a temporary directory, under the time limit."""
    monkeypatch.setenv("MPLBACKEND", "Agg")          # inherited by the kernel process
    work = tmp_path / nb_path.name
    shutil.copy(nb_path, work)
    nb = nbformat.read(work, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIME_LIMIT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        failed = [c for c in nb.cells if c.cell_type == "code"
                  and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        source = failed[0].source if failed else "(cell not found)"
        failure = (f"{nb_path.name}: a cell raised.\n--- cell source ---\n{source}\n"
                   f"--- error ---\n{_ANSI.sub('', str(err))}")
    except nbclient.exceptions.CellTimeoutError as err:
        failure = f"{nb_path.name}: a cell ran past {TIME_LIMIT_S} s: {err}"
    elapsed = time.perf_counter() - start
    if failure:                                      # outside the except: no chained traceback
        pytest.fail(failure, pytrace=False)
    assert elapsed < TIME_LIMIT_S, \
        f"{nb_path.name} took {elapsed:.0f} s; the limit is {TIME_LIMIT_S} s"
