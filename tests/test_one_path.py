"""One path: the code a course blanks is the code the experiments run.

For each topic, a student copy with only that topic's solution regions blanked runs the
experiments' smoke tests (a regression run through its command line, the UCIL `tiny` run end to
end on the bundled data sample): the ones that use the topic must fail with that topic's NotImplementedError, never pass
through a fast path that skips the student's code. With the solutions in place the same tests
pass in the normal test run.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinydan.coursework import find_regions, make_student

pytestmark = pytest.mark.coursework

REPO = Path(__file__).resolve().parents[1]
REGRESSION = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
              "tests/test_regression.py::test_cli_run_writes_results_and_figures"]
# the UCIL `tiny` run end to end on the bundled data sample: meta-training, then deployment
UCIL = ["-c", "from tinydan.experiments.configs import ucil_config\n"
              "from tinydan.experiments.ucil_selection import meta_train\n"
              "from tinydan.experiments.ucil_compare import compare\n"
              "cfg = ucil_config('tiny', data='sample', meta_epochs=1)\n"
              "ph = meta_train(cfg, 0, 'ucil-run', quiet=True, workers=0, log=lambda *a: None)\n"
              "compare(ph, 'ucil-run', draws=2, quiet=True, workers=0, log=lambda *a: None)\n"]
# which smoke tests run each topic's code (conv: the UCIL DANs pool with max_pool2d)
USES = {"autograd": (REGRESSION, UCIL), "ops": (REGRESSION, UCIL), "dan": (REGRESSION, UCIL),
        "meta": (REGRESSION, UCIL), "conv": (UCIL,)}


def _stub_heads(topic: str) -> list:
    return [f"{topic}: {r.what}".replace('"', "'")[:40] for r in find_regions(REPO / "tinydan")
            if r.topic == topic]


# conv runs in the default test run (one copy, one UCIL run); the rest with -m slow
@pytest.mark.parametrize("topic", [t if t == "conv" else pytest.param(t, marks=pytest.mark.slow)
                                   for t in sorted(USES)])
def test_blanked_topic_stops_the_experiments_with_its_own_error(tmp_path, topic):
    copy = tmp_path / "student"
    make_student(copy, topics=[topic], repo=REPO)
    for args in USES[topic]:
        test = "the UCIL tiny run" if args is UCIL else args[-1]
        out = subprocess.run([sys.executable, *args], cwd=copy, env={**os.environ, "PYTHONPATH": str(copy)},
                             capture_output=True, text=True, timeout=600)
        report = out.stdout + out.stderr
        assert out.returncode != 0, f"{test} passed with topic {topic!r} blanked:\n{report[-2000:]}"
        assert "NotImplementedError" in report and any(h in report for h in _stub_heads(topic)), \
            f"{test} failed, but not with a {topic!r} stub:\n{report[-3000:]}"


def test_the_smoke_runs_pass_with_the_solutions(tmp_path):
    """The same UCIL run, solutions in place (the regression one is in the normal test run)."""
    out = subprocess.run([sys.executable, *UCIL], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "ucil-run" / "results.json").exists()
