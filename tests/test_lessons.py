"""The lessons: notebooks in sync with their sources, exercises blank for students, solved versions
that run, and executed copies in docs/lessons that match their sources.

Each lesson source ``lessons/NN_name.py`` gives a student notebook (``lessons/NN_name.ipynb``,
solutions blanked), a solved one (``lessons/solutions/``) and an executed copy with outputs
(``docs/lessons/``); ``lessons/_build.py`` makes all three.

The execution test runs the solved notebook once, in a fresh kernel, with every exercise probed on
the way: just before each answer cell it runs the student's version of that cell (the blanks)
and then the check cell, which must fail with the ``NotImplementedError`` of that exercise; then
the reference answer and the check, which must pass. So each check is seen failing in the state
a student reaches with the earlier exercises solved, and the solved notebook runs top to bottom,
in one execution per lesson.
"""
from __future__ import annotations

import re
import sys
import time
import types
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.lessons

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
TIME_LIMIT_S = 120                               # per lesson, probes included
EXECUTED_MAX_BYTES = 2_500_000                   # an executed copy with its figures
_ANSI = re.compile(r"\x1b\[[0-9;]*m")            # colour codes in IPython tracebacks
_MACHINE_PATHS = re.compile(r"((?:^|[\s'\"(=])/[A-Za-z][\w.-]*/[\w.-]+|\b[A-Z]:\\\w)")  # absolute


def _load_builder():
    """lessons/_build.py as a module, without writing a __pycache__ into the repository."""
    path = LESSONS / "_build.py"
    module = types.ModuleType("lessons_build")
    module.__file__ = str(path)
    sys.modules["lessons_build"] = module            # dataclasses look their module up there
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


BUILD = _load_builder()
SOURCES = BUILD.sources()
IDS = [p.stem for p in SOURCES]


def _cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells]


def _first_difference(got, want) -> int:
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))


def test_every_source_has_its_notebooks_and_no_stray_notebooks():
    assert SOURCES, f"no lesson sources lessons/NN_*.py found in {LESSONS}"
    for py in SOURCES:
        for kind, path in BUILD.targets(py).items():
            if kind != "executed":
                assert path.exists(), \
                    f"{py.name} has no {kind} notebook: run python lessons/_build.py"
    stems = {p.stem for p in SOURCES}
    for folder in (LESSONS, BUILD.SOLUTIONS, BUILD.EXECUTED):
        for nb_path in folder.glob("*.ipynb"):
            assert nb_path.stem in stems, (f"{nb_path} has no source lessons/{nb_path.stem}.py; "
                                           "delete it or restore its source")


@pytest.mark.parametrize("py", SOURCES, ids=IDS)
def test_student_and_solved_notebooks_in_sync_and_without_outputs(py):
    paths = BUILD.targets(py)
    for kind, built in (("student", BUILD.build_notebook(py)),
                        ("solution", BUILD.build_solution(py))):
        committed = nbformat.read(paths[kind], as_version=4)
        for i, cell in enumerate(committed.cells):
            if cell.cell_type == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, (
                    f"{paths[kind].name} ({kind}) cell {i} has outputs committed; rebuild with "
                    "python lessons/_build.py")
        got, want = _cells(committed), _cells(built)
        if got != want:
            pytest.fail(f"the {kind} notebook {paths[kind].relative_to(LESSONS.parent)} is out of "
                        f"date with {py.name} (first difference at cell "
                        f"{_first_difference(got, want)}): run python lessons/_build.py")


@pytest.mark.parametrize("py", SOURCES, ids=IDS)
def test_student_notebook_has_a_blank_for_every_solution(py):
    student = _cells(BUILD.build_notebook(py))
    solved = _cells(BUILD.build_solution(py))
    exercises = BUILD.exercises(py)
    headings = set()
    for kind, source in BUILD.parse_cells(py.read_text(), py.name):
        if kind == "markdown":
            headings |= {int(n) for n in BUILD._EXERCISE.findall(source)}
        elif re.search(r"^# YOUR ANSWER", source, re.M):
            assert any(BUILD._BEGIN.match(x) for x in source.splitlines()), (
                f"{py.name}: an answer cell without '# BEGIN SOLUTION' ... '# END SOLUTION' ships "
                "its reference solution to students:\n" + source[:300])
    assert headings == {e.number for e in exercises}, (
        f"{py.name}: exercises {sorted(headings)} in the text, answer cells for "
        f"{sorted({e.number for e in exercises})}: mark each reference solution")
    answers = {e.answer: e for e in exercises}
    for i, ((kind, mine), (_, ref)) in enumerate(zip(student, solved)):
        if i not in answers:
            assert mine == ref, f"{py.name} cell {i}: student and solved differ outside an answer"
            continue
        e = answers[i]
        blanks = re.findall(r'raise NotImplementedError\("Exercise (\d+): ', mine)
        assert blanks == [str(e.number)] * len(e.functions) and e.functions, (py.name, i, blanks)
        assert "BEGIN SOLUTION" not in mine + ref and "END SOLUTION" not in mine + ref
        assert mine.startswith(BUILD.STUDENT_HEADER) and ref.startswith(BUILD.SOLVED_HEADER)
        assert "raise NotImplementedError(" not in ref and mine != ref


def test_builder_blanks_regions_and_refuses_bad_ones(tmp_path):
    good = tmp_path / "90_demo.py"
    good.write_text(
        "# %% [markdown]\n# ### Exercise 4: twice\n\n# %%\n# YOUR ANSWER\ndef twice(x):\n"
        "    y = 2 * x\n    # BEGIN SOLUTION\n    return y\n    # END SOLUTION\n\n"
        "# %%\nassert twice(3) == 6\n")
    (student, ref), (_, check) = [c for c in zip(_cells(BUILD.build_notebook(good))[1:],
                                                 _cells(BUILD.build_solution(good))[1:])]
    assert student[1].endswith('def twice(x):\n    y = 2 * x\n    raise NotImplementedError('
                               '"Exercise 4: write twice")')
    assert ref[1].endswith("def twice(x):\n    y = 2 * x\n    return y")
    assert check == ("code", "assert twice(3) == 6")
    assert BUILD.exercises(good) == [BUILD.Exercise(4, 1, 2, ("twice",))]
    bad_sources = {
        "must be inside a function": "# %% [markdown]\n# ### Exercise 1: x\n# %%\n"
                                     "# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n# %%\nassert x\n",
        "without END SOLUTION": "# %% [markdown]\n# ### Exercise 1: x\n# %%\ndef f():\n"
                                "    # BEGIN SOLUTION\n    return 1\n# %%\nf()\n",
        "before any": "# %%\ndef f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n"
                      "# %%\nf()\n",
        "followed by its check cell": "# %% [markdown]\n# ### Exercise 1: x\n# %%\ndef f():\n"
                                      "    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n",
    }
    for message, text in bad_sources.items():
        bad = tmp_path / "91_bad.py"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            BUILD.build_notebook(bad)


@pytest.mark.parametrize("py", SOURCES, ids=IDS)
def test_executed_copy_matches_its_source(py):
    """No execution: the copy in docs/lessons was run from this very source (hash) and is clean."""
    path = BUILD.targets(py)["executed"]
    rebuild = f"run python lessons/_build.py --execute {py.stem.split('_')[0]}"
    assert path.exists(), f"{py.name} has no executed copy docs/lessons/{path.name}: {rebuild}"
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("tinydan", {})
    assert meta.get("source_sha256") == BUILD.source_hash(py), (
        f"{py.name} changed after docs/lessons/{path.name} was executed: {rebuild}")
    got, want = _cells(nb), _cells(BUILD.build_solution(py))
    assert got == want, (f"docs/lessons/{path.name} differs from the solved notebook at cell "
                         f"{_first_difference(got, want)}: {rebuild}")
    size = path.stat().st_size
    assert size < EXECUTED_MAX_BYTES, f"docs/lessons/{path.name} is {size / 1e6:.1f} MB: shrink " \
                                      "its figures"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.get("execution_count") is not None, f"{path.name} cell {i} was not executed"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name} cell {i} shows an error"
            text = "".join(out.get("text", "")) + "".join(
                out.get("data", {}).get("text/plain", ""))
            found = _MACHINE_PATHS.search(text)
            assert not found, (f"{path.name} cell {i} prints a path of the machine that ran it "
                               f"({found.group(0)!r}...): print relative paths or names")


def _probe_notebook(py):
    """The solved notebook with, before every answer cell, the student's cell and the check cell
    (tagged ``raises-exception``); returns it and {probe check cell index: exercise}."""
    solved = BUILD.build_solution(py)
    student = BUILD.build_notebook(py)
    nb = nbformat.v4.new_notebook(metadata=solved.metadata)
    probes = {}
    answers = {e.answer: e for e in BUILD.exercises(py)}
    for i, cell in enumerate(solved.cells):
        if i in answers:
            e = answers[i]
            blank = nbformat.v4.new_code_cell(student.cells[i].source)
            check = nbformat.v4.new_code_cell(solved.cells[e.check].source,
                                              metadata={"tags": ["raises-exception"]})
            nb.cells += [blank, check]
            probes[len(nb.cells) - 1] = e
        nb.cells.append(cell)
    for k, cell in enumerate(nb.cells):
        cell.id = f"probe-{k:03d}"
    return nb, probes


@pytest.mark.parametrize("py", SOURCES, ids=IDS)
def test_solved_lesson_runs_and_every_check_fails_on_the_blanks(py, tmp_path, monkeypatch):
    """Execute the solved notebook (with the probes) in a fresh kernel, under the time limit."""
    monkeypatch.setenv("MPLBACKEND", "Agg")          # inherited by the kernel process
    nb, probes = _probe_notebook(py)
    start = time.perf_counter()
    failure = None
    try:
        BUILD.execute(nb, tmp_path, timeout=TIME_LIMIT_S)
    except nbclient.exceptions.CellExecutionError as err:
        failed = [c for c in nb.cells if c.cell_type == "code"
                  and any(o.get("output_type") == "error" for o in c.get("outputs", []))
                  and "raises-exception" not in c.metadata.get("tags", [])]
        source = failed[0].source if failed else "(cell not found)"
        failure = (f"{py.name}: a cell of the solved notebook raised.\n--- cell source ---\n"
                   f"{source}\n--- error ---\n{_ANSI.sub('', str(err))}")
    except nbclient.exceptions.CellTimeoutError as err:
        failure = f"{py.name}: a cell ran past {TIME_LIMIT_S} s: {err}"
    elapsed = time.perf_counter() - start
    if failure:                                      # outside the except: no chained traceback
        pytest.fail(failure, pytrace=False)
    print(f"{py.name}: solved notebook and {len(probes)} probes ran in {elapsed:.1f} s")
    assert elapsed < TIME_LIMIT_S, f"{py.name} took {elapsed:.0f} s; the limit is {TIME_LIMIT_S} s"
    for k, e in probes.items():
        errors = [o for o in nb.cells[k].get("outputs", []) if o.get("output_type") == "error"]
        assert errors, (f"{py.name}: the check of exercise {e.number} passes on the student's "
                        f"blank cell ({', '.join(e.functions)} not written): it cannot fail")
        ename, evalue = errors[0].get("ename"), _ANSI.sub("", errors[0].get("evalue", ""))
        assert ename == "NotImplementedError" and evalue.startswith(f"Exercise {e.number}: "), (
            f"{py.name}: on the student's blank cell the check of exercise {e.number} fails with "
            f"{ename}: {evalue[:200]!r}, not with the blank's NotImplementedError")
