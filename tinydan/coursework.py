"""Coursework: make a student copy of tinydan with the solution regions blanked, and grade a copy.

Regions of the library between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` are the pieces a course
asks students to write. They are the code the experiments run, not a copy of it. Each region
belongs to a topic, which is also a pytest marker, so a course can grade one topic at a time:

    python -m tinydan.coursework list                          # the regions and their topics
    python -m tinydan.coursework student --out DIR             # blank every region
    python -m tinydan.coursework student --out DIR --topics conv,dan
    python -m tinydan.coursework grade --repo DIR              # pytest -m <topic>, one per topic

In the copy each region becomes ``raise NotImplementedError("<topic>: <what to implement>")``.
The topics, in the order a course takes them (``TOPICS``):

* ``autograd``: the backward walk (the iterative topological sort, the accumulation of gradients);
* ``ops``: backward rules (mul, tanh, sum, undoing broadcasting, matmul) and the VEC layer's product;
* ``conv``: im2col, col2im and max-pooling; ``dan``: the DAN forward; ``meta``: the inner and meta
  steps of Algorithm 1.

A topic's tests are the tests marked with it. ``conv``, ``dan`` and ``meta`` are leaves: a test
carries the markers of every leaf topic it depends on (a meta test is marked ``meta`` AND
``dan``), so when one leaf topic is blanked only tests marked with it fail (tests/test_coursework.py
checks this on the engine, conv, DAN and meta tests). ``autograd`` and ``ops`` are the foundation
every other topic runs on (almost every test takes a gradient through a product), so blanking
either also fails most tests of the other topics, each by that topic's stub: grade them first.
``grade`` runs ``pytest -m "<topic> and not slow"`` (``--slow`` includes the slow tests) in a fresh
process per topic and prints passed/total and the first failure of each.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SOLUTIONS", "TOPICS", "Region", "Score", "find_regions", "make_student", "grade",
           "score_table", "main"]

# the topics, foundations first: the order of a course, and of the grade table
TOPICS = ("autograd", "ops", "conv", "dan", "meta")

# qualified function name -> (topic, what the student implements)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "toposort": ("autograd", "toposort: every Tensor that requires grad and leads to the roots, "
                             "inputs before the ops that use them, with an explicit stack (no "
                             "recursion)"),
    "_walk_order": ("autograd", "topological sort: one depth-first pass with an explicit stack "
                                "(no recursion) giving the relevant op nodes, inputs first, each "
                                "as (node, needs) with needs[i] = input i leads to a wanted Tensor"),
    "_accumulate": ("autograd", "backward walk: from the roots' gradients, call each op's backward "
                                "in reverse topological order and sum the gradients that reach the "
                                "same Tensor (dL/dx = sum over the users of x)"),
    "Mul.backward": ("ops", "mul backward: d(a*b) gives (g*b, g*a), each summed back to its "
                            "input's shape with sum_to (broadcasting undone); None where "
                            "ctx.needs_input_grad is False"),
    "Tanh.backward": ("ops", "tanh backward: dL/da = g (1 - y^2) with y = tanh(a), the output "
                             "(ctx); one TanhGrad op"),
    "TanhGrad.forward": ("ops", "TanhGrad forward: g * (1 - y^2) in NumPy"),
    "TanhGrad.backward": ("ops", "TanhGrad backward: d/dg = gg (1 - y^2) (a TanhGrad) and d/dy = "
                                 "-2 gg g y, so that tanh has second derivatives"),
    "Sum.backward": ("ops", "sum backward: give the summed axes (ctx.saved) back as size-1 axes, "
                            "then broadcast g to the input's shape"),
    "_sum_axes": ("ops", "undo broadcasting: the axes to sum to turn shape_from into shape_to "
                         "(the extra leading axes, and those where shape_to has 1 and shape_from "
                         "not), and whether they are only the leading ones"),
    "_matmul_forward": ("ops", "the product of every VEC layer and matmul: (..., n, k) @ (..., k, "
                               "m) -> (..., n, m), batch axes broadcast"),
    "_matmul_grads": ("ops", "matmul backward: C = A B gives dA = dC B^T, dB = A^T dC (and the "
                             "transposed-flag cases), one _mm each, summed to A's and B's shapes"),
    "Linear.backward": ("ops", "VEC layer backward, y = x W + b: dx = g W^T, dW = x^T g, db = g "
                               "summed to b's shape; None where not needed"),
    "im2col_array": ("conv", "im2col: copy every kh x kw window of x (N, C, H, W) into one row of a "
                             "(N*OH*OW, C*kh*kw) matrix, vectorized"),
    "col2im_array": ("conv", "col2im: add every row back into the window it came from (the adjoint "
                             "of im2col), one vectorized add per kernel offset"),
    "max_pool2d": ("conv", "max-pool: take the arg-max of every window (im2col + take_rows; "
                           "stride 1: the separable kernel, rows then columns)"),
    "MLPDAN.forward": ("dan", "DAN forward: run the shared (or per-neuron) MLP on all neurons' "
                              "C-vectors in ONE batched call, (R, n, C) -> (R, n)"),
    "ConvDAN.forward": ("dan", "convolutional DAN forward: every neuron's C inputs become one small "
                               "image of a batch, all neurons of the layer in ONE batched call "
                               "(checkpoint_rows over _rows), (R, n, C) -> (R, n)"),
    "inner_step": ("meta", "inner step: theta' = theta - lr * grad_theta L_task (differentiable when "
                           "create_graph=True)"),
    "meta_step": ("meta", "meta step: the inner step, then grad_phi of the meta-loss at theta' "
                          "(first_order: theta' constant; one_step: through the step)"),
}

BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
COPY_ITEMS = ("tinydan", "tests", "lessons", "pyproject.toml", "README.md", "data/README.md")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")


@dataclass(frozen=True)
class Region:
    """One solution region: file, its lines [begin, end] (1-based, markers included), owner."""

    path: Path
    begin: int
    end: int
    function: str
    topic: str
    what: str
    indent: str


def _functions(source: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function, innermost last."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((child.lineno, child.end_lineno, prefix + child.name))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
    visit(ast.parse(source), "")
    return out


def find_regions(package_dir: Path) -> list[Region]:
    """Every solution region under ``package_dir``; an unregistered or unclosed one is an error."""
    regions = []
    for path in sorted(Path(package_dir).rglob("*.py")):
        if path.name == "coursework.py":
            continue
        text = path.read_text()
        if "# BEGIN SOLUTION" not in text:
            continue
        lines = text.splitlines()
        funcs = _functions(text)
        i = 0
        while i < len(lines):
            m = BEGIN.match(lines[i])
            if not m:
                i += 1
                continue
            j = i + 1
            while j < len(lines) and not END.match(lines[j]):
                if BEGIN.match(lines[j]):
                    raise ValueError(f"{path}:{j + 1}: nested BEGIN SOLUTION")
                j += 1
            if j == len(lines):
                raise ValueError(f"{path}:{i + 1}: BEGIN SOLUTION without END SOLUTION")
            owners = [name for a, b, name in funcs if a <= i + 1 <= b]
            if not owners:
                raise ValueError(f"{path}:{i + 1}: a solution region must be inside a function")
            name = owners[-1]
            if name not in SOLUTIONS:
                raise ValueError(f"{path}:{i + 1}: solution region in {name}() is not registered in "
                                 "tinydan.coursework.SOLUTIONS (add its topic and description)")
            topic, what = SOLUTIONS[name]
            regions.append(Region(path, i + 1, j + 1, name, topic, what, m.group(1)))
            i = j + 1
    return regions


def _ordered(topics) -> list[str]:
    """``topics`` in course order (TOPICS first, any others after, sorted)."""
    topics = set(topics)
    return [t for t in TOPICS if t in topics] + sorted(topics - set(TOPICS))


def _blank(path: Path, regions: list[Region]) -> None:
    lines = path.read_text().splitlines(keepends=True)
    for r in sorted(regions, key=lambda r: r.begin, reverse=True):
        msg = f"{r.topic}: {r.what}".replace('"', "'")
        stub = [f"{r.indent}# TODO({r.topic}): implement this; see the docstring above.\n",
                f'{r.indent}raise NotImplementedError("{msg}")\n']
        lines[r.begin - 1:r.end] = stub
    path.write_text("".join(lines))


def _ignore_for(src: Path, repo: Path):
    """The copy's ignore rule: build litter everywhere, and the lessons' worked solutions."""
    def ignore(folder, names):
        skip = set(IGNORE(folder, names))
        if src.name == "lessons" and Path(folder) == repo / "lessons" and "solutions" in names:
            skip.add("solutions")
        return skip
    return ignore


def _blank_lesson_source(path: Path) -> None:
    """A lesson source's exercise answers (``# BEGIN SOLUTION`` ... ``# END SOLUTION``) replaced by
    a NotImplementedError, as in the student notebooks."""
    lines = path.read_text().splitlines(keepends=True)
    out, inside = [], False
    for line in lines:
        m = BEGIN.match(line)
        if m and not inside:
            inside = True
            out.append(f'{m.group(1)}raise NotImplementedError("Exercise: write your answer")\n')
        elif inside and END.match(line):
            inside = False
        elif not inside:
            out.append(line)
    path.write_text("".join(out))


def make_student(out_dir, topics=None, repo: Path | None = None, force: bool = False) -> list[Region]:
    """Copy the project to ``out_dir`` with the solution regions of ``topics`` (default: all) blanked.

    The copy holds the package, the tests, pyproject.toml, the README and the lessons (without
    lessons/solutions/, the worked answers, and with the answers blanked in the lesson sources).
    """
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[1]
    out = Path(out_dir)
    regions = find_regions(repo / "tinydan")
    known = _ordered({r.topic for r in regions})
    topics = known if topics is None else list(topics)
    unknown = [t for t in topics if t not in known]
    if unknown:
        raise ValueError(f"unknown topics {unknown}; topics with solution regions: {known}")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty; choose another folder or pass --force")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for item in COPY_ITEMS:
        src = repo / item
        if not src.exists():
            continue
        dst = out / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=_ignore_for(src, repo))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for lesson in sorted((out / "lessons").glob("[0-9][0-9]_*.py")):
        _blank_lesson_source(lesson)
    chosen = [r for r in regions if r.topic in topics]
    by_file: dict[Path, list[Region]] = {}
    for r in chosen:
        by_file.setdefault(out / r.path.relative_to(repo), []).append(r)
    for path, rs in by_file.items():
        _blank(path, rs)
    return chosen


# ---------------------------------------------------------------------------------------- grading
@dataclass(frozen=True)
class Score:
    """One topic's grade: tests passed out of those run (skipped ones not counted), first failure."""

    topic: str
    passed: int
    total: int
    skipped: int
    first_failure: str | None      # "test id: one-line message", None when every test passed

    @property
    def ok(self) -> bool:
        """The topic passes: at least one test ran and none failed."""
        return self.first_failure is None and self.total > 0


def _one_line(text: str | None, width: int = 120) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    line = lines[0] if lines else "(no message)"
    return line if len(line) <= width else line[:width - 3] + "..."


def _failure_message(child: ET.Element) -> str:
    """The one-line reason of a junit <failure>/<error>: the exception line pytest reports."""
    msg = child.get("message") or ""
    if msg and msg != "collection failure":
        return _one_line(msg)
    errors = [ln[1:].strip() for ln in (child.text or "").splitlines() if ln.startswith("E ")]
    return _one_line(errors[-1] if errors else msg)


def _parse_junit(path: Path) -> tuple[int, int, int, str | None]:
    """(passed, total, skipped, first failure) from pytest's junit XML report."""
    passed = total = skipped = 0
    first = None
    for case in ET.parse(path).getroot().iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error")]
        if bad:
            total += 1
            if first is None:
                name = case.get("name", "?")
                where = (case.get("classname") or "").rsplit(".", 1)[-1]
                test = f"{where}::{name}" if where and where != name else name
                first = f"{test}: {_failure_message(bad[0])}"
        elif any(c.tag == "skipped" for c in case):
            skipped += 1
        else:
            passed += 1
            total += 1
    return passed, total, skipped, first


def _run_topic(repo: Path, topic: str, timeout: float, slow: bool, pytest_args) -> Score:
    """``pytest -m <topic>`` in a fresh process in ``repo`` (its own tinydan first on the path)."""
    marker = topic if slow else f"{topic} and not slow"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    with tempfile.TemporaryDirectory(prefix="tinydan-grade-") as tmp:
        report = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
               f"--junitxml={report}", *pytest_args]
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)          # pytest and any worker it started
            proc.communicate()
            return Score(topic, 0, 0, 0, f"timed out after {timeout:g} s (an endless loop?)")
        if proc.returncode == 5:
            return Score(topic, 0, 0, 0, f"no tests are marked {topic!r} in {repo / 'tests'}")
        passed, total, skipped, first = _parse_junit(report) if report.exists() else (0, 0, 0, None)
    if first is None and proc.returncode != 0:           # pytest itself stopped (usage, internal)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        said = [ln for ln in lines if ln.startswith(("ERROR", "E "))] or lines or [""]
        first = f"pytest stopped with exit code {proc.returncode}: {_one_line(said[-1])}"
    return Score(topic, passed, total, skipped, first)


def grade(repo: Path | None = None, topics=None, timeout: float = 1800.0, slow: bool = False,
          pytest_args=()) -> list[Score]:
    """Run each topic's tests (``pytest -m "<topic> and not slow"``) in ``repo``; one Score each.

    ``pytest_args`` are passed on to every run (test files to limit it to, ``-k EXPR``, ...).
    """
    repo = Path(repo).resolve() if repo is not None else Path(__file__).resolve().parents[1]
    if not (repo / "tinydan").is_dir() or not (repo / "tests").is_dir():
        raise ValueError(f"{repo} is not a tinydan copy (it needs tinydan/ and tests/); pass "
                         "--repo with the folder that 'student --out' wrote")
    topics = list(TOPICS) if topics is None else _ordered(topics)
    return [_run_topic(repo, t, timeout, slow, list(pytest_args)) for t in topics]


def score_table(scores: list[Score]) -> str:
    """The grade as a text table: topic, passed/total, the first failure's one-line message."""
    rows = [("topic", "passed", "first failure")]
    for s in scores:
        count = f"{s.passed}/{s.total}" + (f" ({s.skipped} skipped)" if s.skipped else "")
        rows.append((s.topic, count, "-" if s.ok else (s.first_failure or "no tests ran")))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    lines.insert(1, "-" * min(100, max(len(ln) for ln in lines)))
    done = sum(s.ok for s in scores)
    lines.append(f"{done}/{len(scores)} topics pass")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Entry point of ``python -m tinydan.coursework``."""
    p = argparse.ArgumentParser(prog="python -m tinydan.coursework",
                                description="Coursework support: list the solution regions, make "
                                            "a student copy with them blanked out, grade a copy.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the solution regions and their topics")
    st = sub.add_parser("student", help="write a student copy with solution regions blanked")
    st.add_argument("--out", type=Path, required=True, help="the folder to write the copy to")
    st.add_argument("--topics", help="comma-separated topics to blank (default: all)")
    st.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    gr = sub.add_parser("grade", help="run each topic's tests in a copy and print a score table; "
                                      "exit code 0 only when every topic passes")
    gr.add_argument("--repo", type=Path, help="the copy to grade (default: this tinydan's folder)")
    gr.add_argument("--topics", help=f"comma-separated topics (default: {','.join(TOPICS)})")
    gr.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds allowed per topic (default: 1800)")
    gr.add_argument("--slow", action="store_true", help="include the tests marked slow")
    gr.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS",
                    help="after --: passed on to pytest (test files, -k EXPR, ...)")
    a = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    raw = getattr(a, "topics", None)
    topics = None if raw is None else [t.strip() for t in raw.split(",") if t.strip()]
    if a.command == "list":
        regions = find_regions(repo / "tinydan")
        order = {t: i for i, t in enumerate(_ordered({r.topic for r in regions}))}
        for r in sorted(regions, key=lambda r: order[r.topic]):
            print(f"{r.topic:8s} {r.path.relative_to(repo)}:{r.begin}-{r.end} {r.function}: "
                  f"{r.what}")
        return 0
    if a.command == "grade":
        if topics is not None:
            unknown = [t for t in topics if t not in TOPICS]
            if unknown:
                p.error(f"unknown topics {unknown}; choose from {','.join(TOPICS)}")
        try:
            scores = grade(a.repo, topics, timeout=a.timeout, slow=a.slow,
                           pytest_args=a.pytest_args)
        except ValueError as e:
            p.error(str(e))
        print(score_table(scores))
        return 0 if all(s.ok for s in scores) else 1
    try:
        done = make_student(a.out, topics, repo=repo, force=a.force)
    except (ValueError, FileExistsError) as e:
        p.error(str(e))
    for r in done:
        print(f"blanked {r.topic}: {r.path.relative_to(repo)} {r.function}")
    print(f"student copy written to {a.out}: pip install -e \".[test]\" there, then "
          f"python -m pytest -m <topic>, or python -m tinydan.coursework grade --repo {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
