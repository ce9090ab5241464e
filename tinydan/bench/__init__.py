"""Benchmarks: tinydan against the same computation written by hand in NumPy (or in PyTorch).

Run ``python -m tinydan.bench`` (``--help`` for the options). Each benchmark times one step in
tinydan (forward + backward) and the SAME math written another way, interleaved (A B A B ...) so
that machine noise hits both alike, and prints the medians and their ratio. Before timing, the two
are run once and their outputs and gradients compared; a benchmark whose two sides disagree fails
loudly (``BenchmarkMismatch``) instead of printing a number.

Modules:

* ``harness``: ``Case``, ``Benchmark``, ``register``, the correctness check, op counting,
  interleaved timing (``time_pair``), medians (``run_benchmark``), machine facts and the table;
* ``cases``: the engine-kernel and UCIL benchmarks;
* ``regression_steps``: the regression model's steps, eager and compiled, against PyTorch eager;
* ``torch_reference``: those steps and the whole regression meta-training in PyTorch eager;
* ``end_to_end``: ``python -m tinydan.regression meta-train`` against the PyTorch meta-training,
  as whole processes (``--end-to-end``);
* ``ucil_step``: the paper-scale UCIL meta-step benchmark (time, peak memory, fraction of the
  machine's matmul throughput), also behind ``python -m tinydan.ucil bench``;
* ``cli``: the options and the report; ``__main__``: the BLAS thread count, then ``cli.main``.

This is a tool on top of the package: nothing in tinydan imports it but the ``ucil bench`` command.
"""
from __future__ import annotations

from . import cases                      # noqa: F401 - importing it registers the benchmarks
from .end_to_end import end_to_end, format_end_to_end
from .regression_steps import PUBLISHED_S
from .cli import format_regression_notes, format_ucil, main, run_ucil
from .harness import (BENCHMARKS, CLOCKS, Benchmark, BenchmarkMismatch, Case, Result, as_array,
                      compare, count_ops, fmt_time, format_header, format_table, machine_info,
                      profile_step, register, run_benchmark, time_pair, verify)
from .harness import _openblas_threads_ctypes  # noqa: F401  (kept importable from here)

__all__ = ["Case", "Benchmark", "Result", "BenchmarkMismatch", "BENCHMARKS", "CLOCKS", "register",
           "as_array", "compare", "verify", "count_ops", "time_pair", "run_benchmark",
           "machine_info", "fmt_time", "format_table", "format_header", "profile_step",
           "PUBLISHED_S", "end_to_end", "format_end_to_end", "format_regression_notes",
           "format_ucil", "run_ucil", "main"]
