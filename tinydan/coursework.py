"""Coursework support: make a student copy of tinydan with the leaf kernels blanked out.

Regions of the library between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` are the pieces a course
asks students to write (im2col, col2im, max-pool, the DAN forward, the inner and meta steps). Each
region belongs to a topic, which is also a pytest marker, so a course can grade one topic at a time:

    python -m tinydan.coursework list                          # the regions and their topics
    python -m tinydan.coursework make-student OUT_DIR          # blank every region
    python -m tinydan.coursework make-student OUT_DIR --topics conv,dan
    cd OUT_DIR && pip install -e ".[test]" && python -m pytest -m conv

In the copy each region becomes ``raise NotImplementedError("<topic>: <what to implement>")``.
Tests carry the markers of every topic they depend on (a UCIL test is marked ``ucil`` AND ``conv``),
so when one topic is blanked, ``pytest -m "not <topic>"`` passes and only tests of that topic fail.
"""
from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SOLUTIONS", "Region", "find_regions", "make_student", "main"]

# qualified function name -> (topic, what the student implements)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "im2col_array": ("conv", "im2col: copy every kh x kw window of x (N, C, H, W) into one row of a "
                             "(N*OH*OW, C*kh*kw) matrix, vectorized"),
    "col2im_array": ("conv", "col2im: add every row back into the window it came from (the adjoint "
                             "of im2col), one vectorized add per kernel offset"),
    "max_pool2d": ("conv", "max-pool: take the arg-max of every window (im2col + take_rows)"),
    "MLPDAN.forward": ("dan", "DAN forward: run the shared (or per-neuron) MLP on all neurons' "
                              "C-vectors in ONE batched call, (R, n, C) -> (R, n)"),
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


def _blank(path: Path, regions: list[Region]) -> None:
    lines = path.read_text().splitlines(keepends=True)
    for r in sorted(regions, key=lambda r: r.begin, reverse=True):
        msg = f"{r.topic}: {r.what}".replace('"', "'")
        stub = [f"{r.indent}# TODO({r.topic}): implement this; see the docstring above.\n",
                f'{r.indent}raise NotImplementedError("{msg}")\n']
        lines[r.begin - 1:r.end] = stub
    path.write_text("".join(lines))


def make_student(out_dir, topics=None, repo: Path | None = None, force: bool = False) -> list[Region]:
    """Copy the project to ``out_dir`` with the solution regions of ``topics`` (default: all) blanked."""
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[1]
    out = Path(out_dir)
    regions = find_regions(repo / "tinydan")
    known = sorted({r.topic for r in regions})
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
            shutil.copytree(src, dst, ignore=IGNORE)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    chosen = [r for r in regions if r.topic in topics]
    by_file: dict[Path, list[Region]] = {}
    for r in chosen:
        by_file.setdefault(out / r.path.relative_to(repo), []).append(r)
    for path, rs in by_file.items():
        _blank(path, rs)
    return chosen


def main(argv=None) -> int:
    """Entry point of ``python -m tinydan.coursework``."""
    p = argparse.ArgumentParser(prog="python -m tinydan.coursework",
                                description="Coursework support: list the solution regions, or make "
                                            "a student copy with them blanked out.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the solution regions and their topics")
    ms = sub.add_parser("make-student", help="write a student copy with solution regions blanked")
    ms.add_argument("out_dir", type=Path)
    ms.add_argument("--topics", help="comma-separated topics to blank (default: all)")
    ms.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    a = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    if a.command == "list":
        for r in find_regions(repo / "tinydan"):
            print(f"{r.topic:5s} {r.path.relative_to(repo)}:{r.begin}-{r.end} {r.function}: {r.what}")
        return 0
    topics = None if a.topics is None else [t.strip() for t in a.topics.split(",") if t.strip()]
    try:
        done = make_student(a.out_dir, topics, repo=repo, force=a.force)
    except (ValueError, FileExistsError) as e:
        p.error(str(e))
    for r in done:
        print(f"blanked {r.topic}: {r.path.relative_to(repo)} {r.function}")
    print(f"student copy written to {a.out_dir}: pip install -e \".[test]\" there, then "
          f"python -m pytest -m <topic>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
