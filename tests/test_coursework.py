"""Coursework: the student copy blanks exactly one topic's kernels, and topics are independent.

For each topic with solution regions, a student copy with only that topic blanked is tested on the
engine, conv, DAN and meta test files: the failing tests must all carry the topic's marker (they
test it or depend on it), at least one must fail, and every other test must pass. The original
passes them all (it is this repository, tested by the rest of the suite).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinydan.coursework import SOLUTIONS, find_regions, main, make_student

pytestmark = pytest.mark.coursework

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/test_ops.py", "tests/test_autograd.py", "tests/test_conv.py", "tests/test_dan.py",
         "tests/test_meta.py"]


def _pytest(copy: Path, *args) -> subprocess.Popen:
    """Start pytest in the student copy (its own tinydan first on the path); do not wait."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             "-o", "addopts=", *args], cwd=copy, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_every_region_is_registered_and_inside_a_known_topic():
    regions = find_regions(REPO / "tinydan")
    assert {r.function for r in regions} == set(SOLUTIONS)      # nothing stale, nothing missing
    assert {r.topic for r in regions} == {"conv", "dan", "meta"}


def test_make_student_replaces_regions_with_clear_stubs(tmp_path):
    done = make_student(tmp_path / "s", ["dan"], repo=REPO)
    assert [r.function for r in done] == ["MLPDAN.forward"]
    text = (tmp_path / "s" / "tinydan" / "nn" / "dan.py").read_text()
    assert 'raise NotImplementedError("dan: DAN forward' in text
    assert "BEGIN SOLUTION" not in text and "ops.transpose(z, (1, 0, 2))" not in text
    assert "BEGIN SOLUTION" in (tmp_path / "s" / "tinydan" / "ops" / "conv.py").read_text()
    with pytest.raises(FileExistsError, match="not empty"):
        make_student(tmp_path / "s", ["dan"], repo=REPO)
    with pytest.raises(ValueError, match="unknown topics"):
        make_student(tmp_path / "t", ["quantum"], repo=REPO)
    with pytest.raises(SystemExit):
        main(["make-student", str(tmp_path / "u"), "--topics", "quantum"])


def test_blanking_one_topic_fails_exactly_that_topics_tests(tmp_path):
    topics = ["conv", "dan", "meta"]
    runs = {}
    for topic in topics:                     # the three copies are tested side by side (2 cores)
        copy = tmp_path / topic
        make_student(copy, [topic], repo=REPO)
        runs[topic] = (_pytest(copy, "--co", "-m", topic, *FILES),
                       _pytest(copy, "-rA", "-k", "not reduces_the_meta_loss", *FILES))
    for topic, (chosen, run) in runs.items():
        listed, _ = chosen.communicate(timeout=600)
        out, _ = run.communicate(timeout=600)
        topic_tests = set(re.findall(r"^(tests/\S+::\S+)$", listed, re.M))
        assert topic_tests, listed
        outcomes = {m.group(2): m.group(1) for m in
                    re.finditer(r"^(PASSED|FAILED|ERROR) (tests/\S+::\S+)", out, re.M)}
        assert outcomes, out[-3000:]
        failed = {t for t, o in outcomes.items() if o != "PASSED"}
        assert failed, f"blanking {topic} made no test fail"
        assert failed <= topic_tests, \
            f"tests outside topic {topic} failed: {sorted(failed - topic_tests)}"
        assert "NotImplementedError" in out and f"{topic}:" in out   # the stub names the topic
