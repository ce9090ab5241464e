"""``python -m tinydan.bench``: set the BLAS thread count (``--threads``, default 1), run the CLI.

OpenBLAS reads its thread count from the environment when it is loaded, and ``python -m
tinydan.bench`` has imported ``tinydan`` (and so NumPy) before this file runs. So when the BLAS
environment variables do not already say ``--threads N``, this sets them and re-executes the
process (once, guarded by an environment marker): the new process loads NumPy with them. This
part uses the standard library only and runs before the CLI's modules are imported here.
"""
from __future__ import annotations

import os
import sys

#: the same names as ``tinydan.bench.harness.BLAS_ENV``, spelled here so that this needs no NumPy
_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_REEXEC_MARKER = "TINYDAN_BENCH_REEXEC"


def _threads_from_argv(argv) -> int:
    """The --threads value (default 1) from a raw argv, before argparse (and NumPy) are loaded."""
    value = "1"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
    try:
        return int(value)
    except ValueError:
        return 1          # argparse reports the bad value later


def _set_blas_threads_or_reexec(argv) -> None:
    """Put ``--threads N`` into the BLAS env vars; re-exec if NumPy was loaded without them."""
    n = _threads_from_argv(argv)
    if n <= 0:                                   # --threads 0: leave the BLAS default alone
        return
    if all(os.environ.get(k) == str(n) for k in _BLAS_ENV):
        return
    for k in _BLAS_ENV:
        os.environ[k] = str(n)
    if "numpy" in sys.modules and not os.environ.get(_REEXEC_MARKER):
        os.environ[_REEXEC_MARKER] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "tinydan.bench", *argv])


if __name__ == "__main__":
    _set_blas_threads_or_reexec(sys.argv[1:])
    from tinydan.bench.cli import main
    sys.exit(main())
