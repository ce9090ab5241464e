"""Workers: jobs on the second core, the same answers as inline, safe from an unguarded script."""
import math
import subprocess
import sys

import pytest

from tinydan.parallel import Workers

pytestmark = pytest.mark.meta


def _fail():
    raise ValueError("job failed on purpose")


@pytest.mark.parametrize("n", [0, 1])
def test_workers_return_results_and_raise_job_errors(n):
    with Workers(n) as w:
        assert w.submit(math.sqrt, 9.0).result() == 3.0
        with pytest.raises(ValueError, match="on purpose"):
            w.submit(_fail).result()


def test_a_script_without_a_main_guard_can_use_workers(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("import math\nfrom tinydan.parallel import Workers\n"
                      "with Workers(1) as w:\n    print(w.submit(math.sqrt, 16.0).result())\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4.0"


def test_set_blas_threads_sets_the_loaded_openblas():
    import numpy as np  # noqa: F401  (loads OpenBLAS)
    from tinydan.bench import _openblas_threads_ctypes
    from tinydan.parallel import set_blas_threads
    libs = set_blas_threads(1)
    if not libs:
        pytest.skip("no OpenBLAS loaded in this process (NumPy built against another BLAS)")
    assert all(n == 1 for _, n in _openblas_threads_ctypes())


def _niceness():
    import os
    return os.nice(0)


def test_nice_workers_run_at_lower_priority():
    import os
    with Workers(1, nice=5) as w:
        assert w.submit(_niceness).result() == min(19, os.nice(0) + 5)
