"""Coursework: student copies blank exactly one topic's regions, and ``coursework grade`` sees it.

What "a topic's tests" means: the tests carrying the topic's marker (``pytest -m <topic>``).

For each topic, a student copy with only that topic blanked is tested on the engine, conv, DAN and
meta test files, twice: once through ``coursework grade`` (its tests, ``-m <topic>``) and once
with ``-m "not <topic>"`` (every other test). Checked for every topic:

* grade reports the topic as failing (exit code 1), its first failure quoting the topic's stub;
* every test that fails anywhere fails because of that topic's stubs (its report quotes one of
  them), never because something else broke (an import, another topic).

Checked in addition for the leaf topics (conv, dan, meta): no test outside the topic fails, so
leaf topics are independent. The foundations (autograd, ops) are not: every other topic takes
gradients through them, so blanking one fails most other tests too, each by that stub.
"""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tinydan.coursework import (SOLUTIONS, TOPICS, Score, find_regions, grade, main, make_student,
                                score_table)

pytestmark = pytest.mark.coursework

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/test_ops.py", "tests/test_autograd.py", "tests/test_conv.py", "tests/test_dan.py",
         "tests/test_meta.py"]
SKIP = ["-k", "not reduces_the_meta_loss"]          # the one test that trains for seconds
LEAVES = ("conv", "dan", "meta")


def _env(copy: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(copy)}   # the copy's own tinydan first on the path


def _start(copy: Path, *args) -> subprocess.Popen:
    """Start ``python *args`` in the copy; do not wait."""
    return subprocess.Popen([sys.executable, *args], cwd=copy, env=_env(copy), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _failures(report: Path) -> tuple[set, dict]:
    """(ids of the tests that ran, {failed test id: its report text}) from a junit XML report."""
    ran, failed = set(), {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        if any(c.tag == "skipped" for c in case):
            continue
        ran.add(test)
        bad = [c for c in case if c.tag in ("failure", "error")]
        if bad:
            failed[test] = "\n".join(f"{c.get('message', '')}\n{c.text or ''}" for c in bad)
    return ran, failed


def _stubs(topic: str) -> list[str]:
    """The start of every stub message of ``topic``, as the student copy raises it."""
    return [f"{topic}: {r.what}".replace('"', "'")[:40] for r in find_regions(REPO / "tinydan")
            if r.topic == topic]


def test_every_region_is_registered_and_inside_a_known_topic():
    regions = find_regions(REPO / "tinydan")
    assert {r.function for r in regions} == set(SOLUTIONS)      # nothing stale, nothing missing
    assert {r.topic for r in regions} == set(TOPICS)
    by_topic = {t: {r.function for r in regions if r.topic == t} for t in TOPICS}
    assert {"_walk_order", "_accumulate"} <= by_topic["autograd"]
    assert {"Mul.backward", "Tanh.backward", "Sum.backward", "_sum_axes", "_matmul_forward",
            "_matmul_grads", "Linear.backward"} <= by_topic["ops"]


def test_tensor_module_does_not_import_autograd():
    """tensor.py is below autograd: Tensor.backward is attached by autograd, not imported lazily."""
    import ast

    import tinydan as td
    tree = ast.parse((REPO / "tinydan" / "tensor.py").read_text())
    imported = {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("autograd" in m for m in imported), imported
    x = td.tensor([1.0, -2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.data.tolist() == [2.0, -4.0]
    assert td.Tensor.backward.__qualname__ == "Tensor.backward"


def test_make_student_replaces_regions_with_clear_stubs(tmp_path):
    done = make_student(tmp_path / "s", ["dan"], repo=REPO)
    assert [r.function for r in done] == ["MLPDAN.forward", "ConvDAN.forward"]
    text = (tmp_path / "s" / "tinydan" / "nn" / "dan.py").read_text()
    assert 'raise NotImplementedError("dan: DAN forward' in text
    assert "BEGIN SOLUTION" not in text and "ops.transpose(z, (1, 0, 2))" not in text
    assert "BEGIN SOLUTION" in (tmp_path / "s" / "tinydan" / "ops" / "conv.py").read_text()
    with pytest.raises(FileExistsError, match="not empty"):
        make_student(tmp_path / "s", ["dan"], repo=REPO)
    with pytest.raises(ValueError, match="unknown topics"):
        make_student(tmp_path / "t", ["quantum"], repo=REPO)
    with pytest.raises(SystemExit):
        main(["student", "--out", str(tmp_path / "u"), "--topics", "quantum"])
    done = make_student(tmp_path / "a", ["autograd"], repo=REPO)
    text = (tmp_path / "a" / "tinydan" / "autograd.py").read_text()
    assert "BEGIN SOLUTION" not in text and "grads[x] = gx if old is None" not in text
    assert text.count('raise NotImplementedError("autograd: ') == len(done) == 3


def _fake_repo(root: Path) -> Path:
    """A two-topic project with lessons: 'good' passes, 'bad' has one failing test."""
    (root / "tinydan").mkdir(parents=True)
    (root / "tinydan" / "__init__.py").write_text("")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.good\ndef test_one():\n    assert 1 + 1 == 2\n\n"
        "@pytest.mark.bad\ndef test_two():\n    assert True\n\n"
        "@pytest.mark.bad\ndef test_three():\n    raise NotImplementedError('bad: write me')\n")
    (root / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\ntestpaths = ['tests']\naddopts = \"--strict-markers\"\n"
        "markers = ['good: passes', 'bad: fails', 'empty: no tests', 'slow: long']\n")
    for name in ("lessons/01_intro.ipynb", "lessons/solutions/01_intro.ipynb"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    (root / "lessons" / "01_intro.py").write_text(
        "def f(x):\n    # BEGIN SOLUTION\n    return 2 * x  # the answer\n    # END SOLUTION\n")
    return root


def test_student_copy_takes_the_lessons_but_not_their_solutions(tmp_path):
    repo = _fake_repo(tmp_path / "repo")
    assert make_student(tmp_path / "s", repo=repo) == []
    assert (tmp_path / "s" / "lessons" / "01_intro.ipynb").exists()
    assert not (tmp_path / "s" / "lessons" / "solutions").exists()
    source = (tmp_path / "s" / "lessons" / "01_intro.py").read_text()
    assert "the answer" not in source and 'raise NotImplementedError("Exercise' in source
    assert (tmp_path / "s" / "tests" / "test_x.py").exists()


def test_grade_counts_each_topic_and_quotes_the_first_failure(tmp_path):
    repo = _fake_repo(tmp_path / "repo")
    scores = grade(repo, ["good", "bad", "empty", "nothing"], timeout=120)
    assert [s.topic for s in scores] == ["bad", "empty", "good", "nothing"]   # not course topics
    bad, empty, good, unknown = scores
    assert good == Score("good", 1, 1, 0, None) and good.ok
    assert (bad.passed, bad.total, bad.ok) == (1, 2, False)
    assert bad.first_failure == "test_x::test_three: NotImplementedError: bad: write me"
    assert not empty.ok and "no tests are marked 'empty'" in empty.first_failure
    assert not unknown.ok and "Unknown marker" in unknown.first_failure
    table = score_table([good, bad, empty])
    assert re.search(r"^good\s+1/1\s+-$", table, re.M), table
    assert re.search(r"^bad\s+1/2\s+test_x::test_three: NotImplementedError: bad: write me$",
                     table, re.M), table
    assert table.endswith("1/3 topics pass")
    with pytest.raises(ValueError, match="not a tinydan copy"):
        grade(tmp_path, ["good"])


# a foundation (autograd) and a leaf (conv) in the default test run; the other topics with -m slow
@pytest.mark.parametrize("topic", [t if t in ("autograd", "conv") else
                                   pytest.param(t, marks=pytest.mark.slow) for t in TOPICS])
def test_blanking_one_topic_fails_its_tests_and_grade_reports_it(tmp_path, topic):
    """Only ``topic`` blanked: grade fails it by its stub; other tests fail by that stub or pass."""
    copy = tmp_path / topic
    make_student(copy, [topic], repo=REPO)
    graded = _start(copy, "-m", "tinydan.coursework", "grade", "--repo", str(copy), "--topics",
                    topic, "--timeout", "600", "--", *FILES, *SKIP)      # its tests, -m <topic>
    rest = _start(copy, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
                  "--tb=short", "-m", f"not {topic} and not slow", f"--junitxml={copy}/rest.xml",
                  *SKIP, *FILES)                                           # every other test
    table, _ = graded.communicate(timeout=600)
    rest.communicate(timeout=600)
    # grade: the topic fails, and its first failure quotes the topic's stub
    assert graded.returncode == 1, table
    row = re.search(rf"^{topic}\s+(\d+)/(\d+).*$", table, re.M)
    assert row and int(row[1]) < int(row[2]), table
    assert f"NotImplementedError: {topic}: " in row[0], table
    # every other test passes or (foundations only) fails by this topic's stub, nothing else
    ran, failed = _failures(copy / "rest.xml")
    assert ran, f"no test outside {topic} ran"
    stubs = _stubs(topic)
    not_ours = {t for t, text in failed.items() if not any(s in text for s in stubs)}
    assert not not_ours, f"blanking {topic} broke tests by something else: {sorted(not_ours)}"
    if topic in LEAVES:
        assert not failed, f"tests outside topic {topic} failed: {sorted(failed)}"
    else:
        assert len(failed) < len(ran), f"blanking {topic} broke every other test"


def test_grade_on_a_solved_copy_passes_one_topic(tmp_path):
    copy = tmp_path / "solved"
    assert make_student(copy, [], repo=REPO) == []                # nothing blanked
    proc = _start(copy, "-m", "tinydan.coursework", "grade", "--repo", str(copy), "--topics", "ops",
                  "--", "tests/test_ops.py")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert re.search(r"^ops\s+(\d+)/\1\s+-$", out, re.M), out
    assert out.rstrip().endswith("1/1 topics pass")


@pytest.mark.slow
def test_grade_on_a_solved_copy_scores_every_topic_in_full(tmp_path):
    copy = tmp_path / "solved"
    make_student(copy, [], repo=REPO)
    proc = _start(copy, "-m", "tinydan.coursework", "grade", "--repo", str(copy))
    out, _ = proc.communicate(timeout=3600)
    assert proc.returncode == 0, out
    for topic in TOPICS:
        assert re.search(rf"^{topic}\s+(\d+)/\1(\s+\(\d+ skipped\))?\s+-$", out, re.M), out
    assert out.rstrip().endswith(f"{len(TOPICS)}/{len(TOPICS)} topics pass")
