"""Benchmarks: tinydan against the same computation written by hand in NumPy (or in PyTorch).

Run ``python -m tinydan.bench`` (``--help`` for the options). Each benchmark times one step in
tinydan (forward + backward) and the SAME math written another way, interleaved (A B A B ...) so
that machine noise hits both alike, and prints the medians and their ratio. Before timing, the two
are run once and their outputs and gradients compared; a benchmark whose two sides disagree fails
loudly (``BenchmarkMismatch``) instead of printing a number.

Modules:

* ``harness``: ``Case``, ``Benchmark``, ``register``, the correctness check, op counting,
  interleaved timing (``time_pair``), medians (``run_benchmark``), machine facts and the table;
* ``cases``: the registered benchmarks (engine kernels, the regression steps against PyTorch, the
  UCIL steps) and the PyTorch references;
* ``ucil_step``: the paper-scale UCIL meta-step benchmark (time, peak memory, fraction of the
  machine's matmul throughput), also behind ``python -m tinydan.ucil bench``;
* ``cli``: the options and the report; ``__main__``: the BLAS thread count, then ``cli.main``.

This is a tool on top of the package: nothing in tinydan imports it but the ``ucil bench`` command.
"""
from __future__ import annotations

from .cases import PUBLISHED_S           # importing cases registers the benchmarks
from .cli import format_regression_notes, format_ucil, main, run_ucil
from .harness import (BENCHMARKS, CLOCKS, Benchmark, BenchmarkMismatch, Case, Result, as_array,
                      compare, count_ops, fmt_time, format_header, format_table, machine_info,
                      profile_step, register, run_benchmark, time_pair, verify)
from .harness import _openblas_threads_ctypes  # noqa: F401  (kept importable from here)

__all__ = ["Case", "Benchmark", "Result", "BenchmarkMismatch", "BENCHMARKS", "CLOCKS", "register",
           "as_array", "compare", "verify", "count_ops", "time_pair", "run_benchmark",
           "machine_info", "fmt_time", "format_table", "format_header", "profile_step",
           "PUBLISHED_S", "format_regression_notes", "format_ucil", "run_ucil", "main"]
