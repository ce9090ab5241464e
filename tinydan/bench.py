"""Benchmarks: tinydan against the same computation written by hand in NumPy (or in PyTorch).

Run ``python -m tinydan.bench`` (``--help`` for the options). Each benchmark times one training
step in tinydan (forward + backward) and the SAME math written by hand in NumPy, interleaved
(A B A B ...) so that machine noise hits both alike, and prints the medians and their ratio.
Before timing, the two are run once and their outputs and gradients compared (``np.allclose``);
a benchmark whose tinydan and NumPy results disagree fails loudly instead of printing a number.

The ``regression_*`` benchmarks time the steps of the `paper` regression model (a meta-step with
the first-order or one-step meta-gradient, and a deployment step) against the same computation in
PyTorch eager on one thread, with the same starting weights; the phi gradients and synapse
updates of both are compared first. PyTorch is only a reference measurement, imported lazily and
never a tinydan dependency: without it these benchmarks time tinydan alone (reference "-") and
the notes under the table give the published PyTorch / HIPS autograd / JAX times to compare with.
``--profile`` prints a cProfile of each selected tinydan step; ``--ucil`` runs the UCIL meta-step
benchmark of ``tinydan.ucil.bench_paper_meta_step`` (slow and memory-hungry, so opt-in).

By default the process runs with ONE BLAS thread (``--threads 1``): the small benchmarks measure
Python overhead, and a multi-threaded BLAS only adds noise to them. ``python -m tinydan.bench``
imports ``tinydan`` (and so NumPy) before this module runs, so when the BLAS environment variables
are not already set the module sets them and re-executes itself (once, guarded by an env marker).

Adding a benchmark (a 10-line job)
----------------------------------
Write a function that builds the inputs and returns a ``Case`` with two zero-argument callables,
and decorate it with ``@register``::

    @register("my_bench", target=1.2)          # target: max tinydan/NumPy ratio, or None
    def my_bench() -> Case:
        "One line shown by --list."
        x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        w = td.tensor(x[:8], requires_grad=True)
        xt = td.tensor(x)

        def run_tinydan():                     # one step; returns Tensors/arrays to compare
            loss = td.tanh(td.matmul(xt, w)).sum()
            return (loss, *td.grad(loss, [w]))

        def run_reference():                   # the same math in NumPy, same order of results
            h = np.tanh(x @ x[:8])
            return (h.sum(), x.T @ (1 - h * h))

        return Case(run_tinydan, run_reference, notes="what is measured")

``Case`` also takes ``rtol``/``atol`` (for the correctness check) and ``per_op=True`` to report
the per-op overhead (tinydan time - NumPy time) / ops in the step; the ops are counted for every
benchmark by counting ``Op.forward`` calls during one tinydan step (forward ops and the ops the
backward rules run).
"""
from __future__ import annotations

import os
import sys

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


if __name__ == "__main__":           # BEFORE importing NumPy (in this module, at least)
    _set_blas_threads_or_reexec(sys.argv[1:])

import argparse  # noqa: E402
import atexit  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from statistics import median  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

import tinydan as td  # noqa: E402
from tinydan.tensor import Op, Tensor  # noqa: E402

__all__ = ["Case", "Benchmark", "Result", "BenchmarkMismatch", "BENCHMARKS", "register",
           "compare", "verify", "count_ops", "time_pair", "run_benchmark", "machine_info", "main"]


# ---------------------------------------------------------------------------- the registry
@dataclass
class Case:
    """One benchmark, built: two zero-argument callables computing the same thing.

    Both return a sequence of results (outputs and gradients, Tensors or arrays) in the same
    order; ``verify`` compares them element by element before anything is timed.
    """
    tinydan: Callable[[], Any]
    reference: Callable[[], Any] | None   # None: no reference here (e.g. torch not installed)
    notes: str = ""
    per_op: bool = False          # report (tinydan - NumPy) / number of tinydan ops
    rtol: float = 1e-4
    atol: float = 1e-5            # relative to the largest |value| of each reference array
    reference_name: str = "numpy"  # what the reference is, for the table


@dataclass
class Benchmark:
    name: str
    setup: Callable[[], Case]
    target: float | None = None   # the ratio tinydan/NumPy must stay under (None: no target)
    description: str = ""


BENCHMARKS: dict[str, Benchmark] = {}


def register(name: str, target: float | None = None):
    """Decorator: register ``setup() -> Case`` under ``name`` (benchmarks run in this order)."""
    def deco(setup):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        doc = (setup.__doc__ or "").strip().splitlines()
        BENCHMARKS[name] = Benchmark(name, setup, target, doc[0] if doc else "")
        return setup
    return deco


# ---------------------------------------------------------------------------- correctness
class BenchmarkMismatch(AssertionError):
    """tinydan and the NumPy reference of a benchmark disagree: its timings would mean nothing."""


def _as_array(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.data
    if hasattr(x, "detach") and hasattr(x, "numpy"):         # a torch tensor (reference side)
        return x.detach().cpu().numpy()
    return np.asarray(x)


def compare(name: str, got, expected, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Raise BenchmarkMismatch unless each tinydan result matches its reference (shape, values)."""
    got, expected = list(got), list(expected)
    if len(got) != len(expected):
        raise BenchmarkMismatch(f"{name}: tinydan returned {len(got)} results, the NumPy "
                                f"reference {len(expected)}")
    if not expected:
        raise BenchmarkMismatch(f"{name}: nothing to compare")
    for i, (g, e) in enumerate(zip(got, expected)):
        g, e = _as_array(g), _as_array(e)
        if g.shape != e.shape:
            raise BenchmarkMismatch(f"{name}: result {i} has shape {g.shape} in tinydan but "
                                    f"{e.shape} in the NumPy reference")
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        if not np.all(np.isfinite(g)) or not np.allclose(g, e, rtol=rtol,
                                                         atol=atol * max(scale, 1e-30)):
            err = float(np.max(np.abs(g.astype(np.float64) - e))) if e.size else float("nan")
            raise BenchmarkMismatch(f"{name}: result {i} (shape {e.shape}) differs between "
                                    f"tinydan and the NumPy reference: max |diff| = {err:.3g}, "
                                    f"max |ref| = {scale:.3g}")


def verify(name: str, case: Case) -> None:
    """Run both sides once and compare them (raises BenchmarkMismatch).

    Without a reference (``case.reference is None``) tinydan runs once and nothing is compared.
    """
    if case.reference is None:
        case.tinydan()
        return
    compare(name, case.tinydan(), case.reference(), case.rtol, case.atol)


# ---------------------------------------------------------------------------- op counting
def _op_classes() -> list[type]:
    seen, stack = [], [Op]
    while stack:
        c = stack.pop()
        for s in c.__subclasses__():
            if s not in seen:
                seen.append(s)
                stack.append(s)
    return seen


def count_ops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(number of tinydan ops run by ``fn()``, its result).

    Every op goes through ``apply``, which calls ``op.forward`` exactly once, so wrapping the
    ``forward`` of every Op subclass for one call counts the forward ops and the ops that the
    backward rules run (with or without recording). The classes are restored afterwards.
    """
    counter = [0]
    patched = []
    for cls in _op_classes():
        if "forward" in cls.__dict__:
            orig = cls.__dict__["forward"]
            func = orig.__func__ if isinstance(orig, staticmethod) else orig

            def counting(*args, _f=func, **kw):
                counter[0] += 1
                return _f(*args, **kw)
            patched.append((cls, orig))
            setattr(cls, "forward", staticmethod(counting))
    try:
        out = fn()
    finally:
        for cls, orig in patched:
            setattr(cls, "forward", orig)
    return counter[0], out


# ---------------------------------------------------------------------------- timing
def _calls_per_sample(fn, min_sample_s: float) -> int:
    """How many back-to-back calls make one sample last at least ``min_sample_s``."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    if dt <= 0:
        return 1000
    return max(1, min(1000, math.ceil(min_sample_s / dt)))


# "wall": time.perf_counter; "cpu": this thread's CPU time, which other processes on a shared
# machine disturb much less (set with --clock)
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
CLOCK = "wall"


def time_pair(a: Callable, b: Callable | None, repeat: int | None = None, warmup: int = 3,
              min_sample_s: float = 0.002, budget_s: float = 3.0, min_repeat: int = 7,
              max_repeat: int = 201) -> tuple[list[float], list[float], int]:
    """Per-call times of ``a`` and ``b`` (seconds), sampled alternately: a b a b ...

    Each sample times ``number`` back-to-back calls (so that a sample of the faster side lasts at
    least ``min_sample_s``, far above the timer's resolution) and divides by it. With
    ``repeat=None`` the number of samples fills about ``budget_s`` seconds. The garbage collector
    is off while timing (as in ``timeit``). Returns (a_times, b_times, number). With ``b=None``
    only ``a`` is timed and b_times is empty.
    """
    if b is None:
        b = _nothing
    for _ in range(warmup):
        a()
        b()
    number = 1
    if min_sample_s > 0:
        number = _calls_per_sample(a, min_sample_s)
        if b is not _nothing:
            number = min(number, _calls_per_sample(b, min_sample_s))
    if repeat is None:
        t0 = time.perf_counter()
        for _ in range(number):
            a()
            b()
        pair = max(time.perf_counter() - t0, 1e-9)
        repeat = int(min(max_repeat, max(min_repeat, budget_s // pair)))
    ta, tb = [], []
    perf = CLOCKS[CLOCK]
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = perf()
            for _ in range(number):
                a()
            t1 = perf()
            for _ in range(number):
                b()
            t2 = perf()
            ta.append((t1 - t0) / number)
            tb.append((t2 - t1) / number)
    finally:
        if was_enabled:
            gc.enable()
    return ta, ([] if b is _nothing else tb), number


def _nothing():
    """The missing side of time_pair(a, None)."""


@dataclass
class Result:
    name: str
    tinydan_s: float               # median seconds per step
    reference_s: float             # nan without a reference
    ratio: float                   # tinydan_s / reference_s (nan without a reference)
    target: float | None
    status: str                    # "PASS", "MISS" or "" (no target, or no reference)
    ops: int                       # tinydan ops per step
    per_op_us: float | None        # (tinydan - reference) / ops, microseconds
    repeat: int
    number: int
    notes: str
    tinydan_samples: list[float] = field(default_factory=list, repr=False)
    reference_samples: list[float] = field(default_factory=list, repr=False)
    reference_name: str = "numpy"

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        return d


def run_benchmark(name: str, repeat: int | None = None, quick: bool = False) -> Result:
    """Build, verify, count the ops of, and time one registered benchmark."""
    bench = BENCHMARKS[name]
    case = bench.setup()
    verify(name, case)
    ops, _ = count_ops(case.tinydan)
    if quick:
        # verify() and count_ops() have already run both sides once: no separate warm-up
        ta, tb, number = time_pair(case.tinydan, case.reference, repeat=repeat or 3, warmup=0,
                                   min_sample_s=0.0)
    else:
        ta, tb, number = time_pair(case.tinydan, case.reference, repeat=repeat)
    mt = median(ta)
    mr = median(tb) if tb else float("nan")
    ratio = (mt / mr if mr > 0 else float("inf")) if tb else float("nan")
    status = "" if bench.target is None or not tb else \
        ("PASS" if ratio <= bench.target else "MISS")
    per_op = (mt - mr) / ops * 1e6 if case.per_op and ops and tb else None
    notes = case.notes
    if per_op is not None:
        notes = f"{per_op:+.2f} us/op over {ops} ops; " + notes
    elif ops:
        notes = f"{ops} ops; " + notes
    return Result(name, mt, mr, ratio, bench.target, status, ops, per_op, len(ta), number,
                  notes, ta, tb, case.reference_name)


# ---------------------------------------------------------------------------- machine facts
def _openblas_threads_ctypes() -> list[tuple[str, int]]:
    """Threads of every OpenBLAS loaded in this process (Linux, via /proc/self/maps and ctypes)."""
    from .parallel import blas_threads
    return blas_threads()


def _git_revision() -> str | None:
    """The commit of the tinydan checkout, '+dirty' if tinydan/ has uncommitted edits (or None)."""
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain",
                                "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _load_avg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """numpy version, BLAS, BLAS threads in use, CPU counts."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tinydan": getattr(td, "__version__", "?"),
        "tinydan_git": _git_revision(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["cpus_usable"] = os.cpu_count()
    info["load_avg"] = _load_avg()
    blas = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg.get("Build Dependencies", {}).get("blas", {})
        blas = " ".join(str(x) for x in (b.get("name"), b.get("version")) if x) or blas
        conf = b.get("openblas configuration")
        if conf:
            blas += f" ({conf.strip()})"
    except Exception:                               # older NumPy: no mode="dicts"
        pass
    info["blas"] = blas
    info["blas_env"] = {k: os.environ.get(k) for k in _BLAS_ENV}
    threads = None
    try:
        import threadpoolctl                        # optional, never required
        pools = threadpoolctl.threadpool_info()
        threads = [(p.get("internal_api", "?"), p.get("num_threads")) for p in pools]
        info["threads_source"] = "threadpoolctl"
    except ImportError:
        threads = _openblas_threads_ctypes()
        info["threads_source"] = "openblas_get_num_threads via ctypes" if threads else "env vars"
    info["blas_threads"] = threads or None
    return info


def _fmt_time(s: float) -> str:
    if math.isnan(s):
        return "-"
    if not math.isfinite(s):
        return str(s)
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def format_table(results: list[Result]) -> str:
    head = ("benchmark", "tinydan", "reference", "ref", "ratio", "target", "status", "notes")
    rows = [head]
    for r in results:
        rows.append((r.name, _fmt_time(r.tinydan_s), _fmt_time(r.reference_s), r.reference_name,
                     f"{r.ratio:.2f}x" if not math.isnan(r.ratio) else "-",
                     f"<= {r.target:.2f}x" if r.target is not None else "-", r.status or "-",
                     r.notes))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:])]
        lines.append("  ".join(cells + [row[-1]]))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)


def format_header(info: dict, threads_requested: int) -> str:
    env = info["blas_env"]
    lines = [
        f"tinydan {info['tinydan']}"
        + (f" (git {info['tinydan_git']})" if info.get("tinydan_git") else "")
        + f" benchmarks -- python {info['python']}, numpy {info['numpy']}",
        f"platform: {info['platform']}",
        f"CPUs: {info['cpu_count']} ({info['cpus_usable']} usable by this process)"
        + (", load average {:.2f} {:.2f} {:.2f} (1/5/15 min)".format(*info["load_avg"])
           if info.get("load_avg") else ""),
        f"BLAS: {info['blas']}",
        "BLAS threads in use: " + (", ".join(f"{n} ({lib})" for lib, n in info["blas_threads"])
                                   if info["blas_threads"] else "unknown")
        + f"  [{info['threads_source']}; env " + " ".join(f"{k}={v}" for k, v in env.items()) + "]",
        "Run with ONE BLAS thread for the small benchmarks (--threads 1, the default): they "
        "measure Python overhead, and BLAS threads only add noise.",
    ]
    in_use = [n for _, n in (info["blas_threads"] or [])]
    if threads_requested > 0 and any(n != threads_requested for n in in_use):
        lines.append(f"WARNING: --threads {threads_requested} was asked for but BLAS uses "
                     f"{in_use}; run as `python -m tinydan.bench` so the env can be set first.")
    lines.append("Times: median per step over interleaved samples (tinydan, reference, tinydan, "
                 "...), gc off while timing; ratio = tinydan median / reference median. The "
                 "reference (column ref) is the same math hand-written in numpy, or in PyTorch "
                 "eager (one thread) for the regression_* steps.")
    lines.append("ops: tinydan ops per step = Op.forward calls in one step (the forward ops plus "
                 "the ops run by the backward rules); us/op = (tinydan - numpy) / ops.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- benchmarks
def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _mlp_case(width: int, batch: int, per_op: bool) -> Case:
    """in width -> width -> width -> 1, tanh, MSE; grads w.r.t. the 6 weights and biases."""
    rng = _rng(width * 1000 + batch)
    f32 = np.float32
    sizes = [(width, width), (width, width), (width, 1)]
    Ws = [rng.uniform(-1, 1, s).astype(f32) / f32(np.sqrt(s[0])) for s in sizes]
    bs = [rng.uniform(-0.1, 0.1, s[1]).astype(f32) for s in sizes]
    x = rng.standard_normal((batch, width)).astype(f32)
    t = rng.standard_normal((batch, 1)).astype(f32)
    W1, W2, W3 = Ws
    b1, b2, b3 = bs

    tW = [td.tensor(w, requires_grad=True) for w in Ws]
    tb = [td.tensor(b, requires_grad=True) for b in bs]
    params = [tW[0], tb[0], tW[1], tb[1], tW[2], tb[2]]
    tx, tt = td.tensor(x), td.tensor(t)

    # the layer op that tinydan.nn uses: the fused td.linear(x, W, b) where the engine has it
    layer = getattr(td, "linear", None) or (lambda h, w, b: td.matmul(h, w) + b)

    def run_tinydan():
        h1 = td.tanh(layer(tx, tW[0], tb[0]))
        h2 = td.tanh(layer(h1, tW[1], tb[1]))
        y = layer(h2, tW[2], tb[2])
        loss = td.mse_loss(y, tt)
        return (loss, *td.grad(loss, params))

    def run_reference():
        h1 = np.tanh(x @ W1 + b1)
        h2 = np.tanh(h1 @ W2 + b2)
        y = h2 @ W3 + b3
        d = y - t
        loss = np.mean(d * d)
        dy = d * f32(2.0 / d.size)                    # d mean(d^2) / dy
        dW3 = h2.T @ dy
        db3 = dy.sum(axis=0)
        da2 = (dy @ W3.T) * (1 - h2 * h2)             # through tanh: 1 - tanh^2
        dW2 = h1.T @ da2
        db2 = da2.sum(axis=0)
        da1 = (da2 @ W2.T) * (1 - h1 * h1)
        dW1 = x.T @ da1
        db1 = da1.sum(axis=0)
        return (loss, dW1, db1, dW2, db2, dW3, db3)

    notes = (f"fwd+bwd {width}-{width}-{width}-1 tanh MLP + MSE, batch {batch}, float32, layers "
             + ("td.linear" if hasattr(td, "linear") else "td.matmul + add"))
    return Case(run_tinydan, run_reference, notes=notes, per_op=per_op)


@register("mlp40_b1")
def mlp40_b1() -> Case:
    """MLP 40-40-40-1, batch 1: forward + backward, almost pure per-op overhead."""
    return _mlp_case(40, 1, per_op=True)


@register("mlp40_b32")
def mlp40_b32() -> Case:
    """MLP 40-40-40-1, batch 32: forward + backward."""
    return _mlp_case(40, 32, per_op=True)


@register("mlp256_b64", target=1.15)
def mlp256_b64() -> Case:
    """MLP 256-256-256-1, batch 64: forward + backward (target: within 1.15x of NumPy)."""
    return _mlp_case(256, 64, per_op=False)


def _im2col_ref(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw), stride 1, one copy."""
    n, c, h, w = x.shape
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))            # (N, C, OH, OW, kh, kw)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * (h - kh + 1) * (w - kw + 1), c * kh * kw)


def _col2im_ref(cols: np.ndarray, x_shape, kh: int, kw: int) -> np.ndarray:
    """Adjoint of _im2col_ref: add every row back into its window, one add per kernel offset."""
    n, c, h, w = x_shape
    oh, ow = h - kh + 1, w - kw + 1
    c6 = cols.reshape(n, oh, ow, c, kh, kw)
    out = np.zeros(x_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + oh, j:j + ow] += c6[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return out


def _conv_case(x_shape, w_shape, seed: int) -> Case:
    rng = _rng(seed)
    f32 = np.float32
    n, c, h, w_ = x_shape
    f, _, kh, kw = w_shape
    oh, ow = h - kh + 1, w_ - kw + 1
    x = rng.standard_normal(x_shape).astype(f32)
    w = (rng.standard_normal(w_shape) / np.sqrt(c * kh * kw)).astype(f32)
    b = rng.standard_normal(f).astype(f32) * f32(0.1)
    g = rng.standard_normal((n, f, oh, ow)).astype(f32)                # upstream gradient
    tx, tw, tb = (td.tensor(a, requires_grad=True) for a in (x, w, b))
    tg = td.tensor(g)

    def run_tinydan():
        out = td.conv2d(tx, tw, tb, 1, 0)
        return (out, *td.grad(out, [tx, tw, tb], grad_outputs=tg))

    def run_reference():
        cols = _im2col_ref(x, kh, kw)                                  # (N*OH*OW, C*kh*kw)
        wm = w.reshape(f, c * kh * kw)
        out = (cols @ wm.T + b).reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
        g2 = g.transpose(0, 2, 3, 1).reshape(n * oh * ow, f)           # (N*OH*OW, F)
        db = g2.sum(axis=0)
        dw = (g2.T @ cols).reshape(w_shape)
        dx = _col2im_ref(g2 @ wm, x_shape, kh, kw)
        return (out, dx, dw, db)

    notes = (f"conv2d fwd+bwd x{x_shape} w{w_shape}+bias, float32; ref: im2col by "
             "sliding_window_view, 1 matmul, col2im by kernel offsets")
    return Case(run_tinydan, run_reference, notes=notes)


@register("conv2d_ucil", target=1.3)
def conv2d_ucil() -> Case:
    """First DAN conv on the UCIL batch: (3920, 1, 10, 10) * (8, 1, 2, 2) + bias, fwd + bwd."""
    return _conv_case((3920, 1, 10, 10), (8, 1, 2, 2), seed=1)


@register("conv2d_ucil_2", target=1.3)
def conv2d_ucil_2() -> Case:
    """Second DAN conv on the UCIL batch: (3920, 8, 9, 9) * (4, 8, 2, 2) + bias, fwd + bwd."""
    return _conv_case((3920, 8, 9, 9), (4, 8, 2, 2), seed=2)


@register("maxpool_ucil")
def maxpool_ucil() -> Case:
    """max_pool2d(kernel 3, stride 1) on (3920, 4, 8, 8), fwd + bwd."""
    rng = _rng(3)
    f32 = np.float32
    k = 3
    x = rng.standard_normal((3920, 4, 8, 8)).astype(f32)
    n, c, h, w = x.shape
    oh, ow = h - k + 1, w - k + 1
    g = rng.standard_normal((n, c, oh, ow)).astype(f32)
    tx, tg = td.tensor(x, requires_grad=True), td.tensor(g)

    def run_tinydan():
        out = td.max_pool2d(tx, k, 1)
        return (out, td.grad(out, tx, grad_outputs=tg))

    def run_reference():
        cols = sliding_window_view(x, (k, k), axis=(2, 3)).reshape(-1, k * k)   # (N*C*OH*OW, 9)
        idx = cols.argmax(axis=1)
        out = cols[np.arange(cols.shape[0]), idx].reshape(n, c, oh, ow)
        # flat index in x of each window's max: window origin + offset of the arg-max
        origin = (np.arange(n * c)[:, None, None] * (h * w) + np.arange(oh)[None, :, None] * w
                  + np.arange(ow)[None, None, :]).reshape(-1)
        flat = origin + (idx // k) * w + idx % k
        dx = np.bincount(flat, weights=g.reshape(-1), minlength=x.size)
        return (out, dx.astype(f32).reshape(x.shape))

    notes = ("max_pool2d k3 s1 fwd+bwd on (3920, 4, 8, 8), float32; ref: argmax over "
             "sliding windows, backward by np.bincount on flat arg-max indices")
    return Case(run_tinydan, run_reference, notes=notes)


# ---------------------------------------------------------------------------- regression steps
# The meta-training and deployment steps of the `paper` regression model, against the SAME
# computation in PyTorch eager (a reference measurement only: torch is imported lazily, never a
# tinydan dependency; without it these benchmarks time tinydan alone and check nothing).

#: Times measured side by side on this kind of machine, one thread each (the project's issue).
PUBLISHED_S = {
    "regression_meta_first_order": {"PyTorch 2.13 eager": 2.1e-3, "HIPS autograd": 3.7e-3,
                                    "JAX jit": 0.85e-3},
    "regression_meta_one_step": {"PyTorch 2.13 eager": 2.9e-3, "HIPS autograd": 7.9e-3,
                                 "JAX jit": 1.2e-3},
    "regression_deploy": {"PyTorch 2.13 eager": 0.54e-3, "HIPS autograd": 1.3e-3,
                          "JAX jit": 0.14e-3},
}

_TORCH_THREADS_SET = False


def _torch():
    """PyTorch with ONE intra-op thread, or None when it cannot be imported (imported lazily)."""
    global _TORCH_THREADS_SET
    try:
        import torch
    except ImportError:
        return None
    if not _TORCH_THREADS_SET:
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:                 # only settable before torch's first parallel work
            pass
        _TORCH_THREADS_SET = True
    return torch


class _Update:
    """The synapse update (theta_new - theta_old) / lr of one step, computed only when compared.

    Comparing theta_new itself would hide a wrong gradient: lr * grad is ~1e-3 of theta. The
    subtraction happens in ``__array__`` (the correctness check), not in the timed step.
    """
    __slots__ = ("new", "old", "lr")

    def __init__(self, new, old, lr):
        self.new, self.old, self.lr = new, old, lr

    def __array__(self, dtype=None, copy=None):
        d = (_as_array(self.new).astype(np.float64) - _as_array(self.old)) / self.lr
        return d if dtype is None else d.astype(dtype)


def _torch_regression_forward(torch, net, x, theta: dict, phi: list):
    """DANNetwork.forward in PyTorch for a globally shared tanh MLPDAN: x (P, B, n0) -> (P, B, nL).

    The same ops in the same order: VEC = x @ W + b (one fused baddbmm, like td.linear), skip
    VECs added before the DANs, one DAN call per layer on (P*B*n, C) rows, the final tanh and
    output scale as configured.
    """
    P, B, _ = x.shape
    C, nodes, L = net.n_channels, net.nodes, len(net.nodes) - 1
    n_dan = len(phi) // 2
    acts = [x]
    for l in range(1, L + 1):
        z = torch.baddbmm(theta[f"vec{l - 1}.bias"], acts[l - 1], theta[f"vec{l - 1}.weight"])
        for j, k in net.skips:
            if k == l:
                z = z + torch.bmm(acts[j], theta[f"skip{j}_{k}.weight"])
        h = z.reshape(P * B * nodes[l], C)
        for i in range(n_dan):
            h = torch.addmm(phi[2 * i + 1], h, phi[2 * i])
            if i < n_dan - 1 or l < L or net.final_activation:
                h = torch.tanh(h)
        acts.append(h.reshape(P, B, nodes[l]))
    out = acts[-1]
    if net.output_scale is not None:
        out = out * float(net.output_scale)
    return out


def _regression_case(kind: str) -> Case:
    """kind: "first_order", "one_step" (meta_step + Adam on phi) or "deploy" (deploy_step)."""
    from .meta import deploy_step, meta_step
    from .models import build_regression_net, regression_config
    from .optim import Adam
    from .tasks import sample_sines

    cfg = regression_config("paper")
    rng = _rng(7)
    net = build_regression_net(cfg, rng)
    if net.sharing != "global" or not all(getattr(d, "activation", None) == "tanh"
                                          for d in net.dans):
        raise ValueError("the regression benchmarks expect the paper's global tanh MLPDAN")
    theta0 = net.init_synapses(1, rng)                          # population 1
    names = list(theta0)
    phi = net.parameters()
    f32 = np.float32
    fn = sample_sines(rng, 1)
    x = rng.uniform(-5, 5, (1, cfg.inner_batch)).astype(f32)    # the inner step: 1 point
    xm = rng.uniform(-5, 5, (1, cfg.meta_batch)).astype(f32)    # the meta-loss: 32 points
    y, ym = fn(x).astype(f32)[..., None], fn(xm).astype(f32)[..., None]
    x, xm = x[..., None], xm[..., None]
    lr = cfg.inner_lr
    phi0 = [p.data.copy() for p in phi]                         # torch starts from these

    st = {"theta": {k: Tensor(np.array(v), requires_grad=True) for k, v in theta0.items()}}
    if kind == "deploy":
        def run_tinydan():
            old = st["theta"]
            new, loss = deploy_step(net, old, x, y, lr)
            st["theta"] = new
            return (loss, *[_Update(new[k], old[k], lr) for k in names])
    else:
        opt = Adam(phi, lr=cfg.meta_lr)

        def run_tinydan():
            old = st["theta"]
            new, gphi, lt, lm = meta_step(net, old, x, y, xm, ym, lr, kind, phi)
            opt.step(gphi)
            st["theta"] = new
            return (lm, lt, *gphi, *[_Update(new[k], old[k], lr) for k in names])

    what = {"first_order": "inner SGD step (1 point) + first-order meta-gradient (32 points) "
                           "+ Adam on phi",
            "one_step": "inner SGD step (1 point, create_graph) + one-step meta-gradient "
                        "(32 points) + Adam on phi",
            "deploy": "deploy_step: one SGD step on the synapses (1 point), phi fixed"}[kind]
    notes = f"paper net, P=1, state carried forward; {what}"

    torch = _torch()
    if torch is None:
        return Case(run_tinydan, None, notes=notes + "; torch not installed: no reference, "
                    "not checked", reference_name="torch (absent)")

    F = torch.nn.functional
    T = lambda a: torch.from_numpy(np.array(a, dtype=f32))      # noqa: E731 - a private copy
    tx, ty, txm, tym = T(x), T(y), T(xm), T(ym)
    P = float(x.shape[0])
    tphi = [T(p).requires_grad_(kind != "deploy") for p in phi0]
    tst = {"theta": {k: T(v).requires_grad_() for k, v in theta0.items()}}

    def torch_inner(old, create_graph):
        loss = F.mse_loss(_torch_regression_forward(torch, net, tx, old, tphi), ty) * P
        gs = torch.autograd.grad(loss, [old[k] for k in names], create_graph=create_graph)
        return loss, gs

    if kind == "deploy":
        def run_reference():
            old = tst["theta"]
            loss, gs = torch_inner(old, False)
            with torch.no_grad():
                new = {k: (old[k] - lr * g).requires_grad_() for k, g in zip(names, gs)}
            tst["theta"] = new
            return (loss.item() / P, *[_Update(new[k], old[k], lr) for k in names])
    else:
        try:                         # the fastest CPU Adam (fused: ~2x the default's speed)
            topt = torch.optim.Adam(tphi, lr=cfg.meta_lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            topt = torch.optim.Adam(tphi, lr=cfg.meta_lr)
        one_step = kind == "one_step"

        def run_reference():
            old = tst["theta"]
            loss, gs = torch_inner(old, one_step)
            if one_step:                                         # theta' stays a function of phi
                th1 = {k: old[k] - lr * g for k, g in zip(names, gs)}
            else:
                with torch.no_grad():
                    th1 = {k: old[k] - lr * g for k, g in zip(names, gs)}
            meta = F.mse_loss(_torch_regression_forward(torch, net, txm, th1, tphi), tym)
            gphi = torch.autograd.grad(meta, tphi)
            for p, g in zip(tphi, gphi):
                p.grad = g
            topt.step()
            new = {k: v.detach().requires_grad_() for k, v in th1.items()}
            tst["theta"] = new
            return (meta.item(), loss.item() / P, *gphi,
                    *[_Update(new[k], old[k], lr) for k in names])

    # float32 on both sides, different summation orders: gradients agree to ~1e-5 of their
    # largest entry; the synapse update (theta' - theta) / lr loses ~1e-4 more to the rounding of
    # theta' (lr = 1e-3). A wrong rule anywhere in the engine is off by far more than that.
    return Case(run_tinydan, run_reference, notes=notes, rtol=1e-3, atol=3e-4,
                reference_name=f"torch {torch.__version__.split('+')[0]}")


@register("regression_meta_first_order", target=1.0)
def regression_meta_first_order() -> Case:
    """Meta-step (inner SGD + first-order meta-gradient + Adam), paper net, vs PyTorch eager."""
    return _regression_case("first_order")


@register("regression_meta_one_step", target=1.0)
def regression_meta_one_step() -> Case:
    """Meta-step (inner SGD + one-step meta-gradient + Adam), paper net, vs PyTorch eager."""
    return _regression_case("one_step")


@register("regression_deploy", target=1.0)
def regression_deploy() -> Case:
    """Deployment SGD step on the synapses, paper net, vs PyTorch eager."""
    return _regression_case("deploy")


@register("ucil_deploy_step", target=1.0)
def ucil_deploy_step() -> Case:
    """UCIL `small` deployment step, 6 draws at once: sgd_step_ (in place) vs deploy_step."""
    from .meta import deploy_step, sgd_step_
    from .ucil import initial_state, ucil_config
    cfg = ucil_config("small")
    G, lr = 6, 1.0
    net, theta0 = initial_state(cfg, 0, population=1)
    x = _rng(5).random((G, cfg.shots, cfg.nodes[0])).astype(np.float32)    # (draws, 5 images, D)
    names = sorted(theta0)

    def fresh():
        return {k: Tensor(np.repeat(theta0[k], G, axis=0), requires_grad=True) for k in names}
    mine, ref = {"theta": fresh()}, {"theta": fresh()}

    def run_tinydan():                 # the synapses keep learning, as in a deployment
        mine["theta"], loss = sgd_step_(net, mine["theta"], x, x, lr)
        return (loss, *[mine["theta"][k].data for k in names])

    def run_reference():
        ref["theta"], loss = deploy_step(net, ref["theta"], x, x, lr)
        return (loss, *[ref["theta"][k].data for k in names])

    return Case(run_tinydan, run_reference, reference_name="deploy_step",
                notes=f"{net.num_synapses() * G / 1e6:.1f}M synapses (small, {G} draws, 5 images "
                      "each), phi fixed; the reference is the generic autograd SGD step "
                      "(a gradient array per synapse tensor, then theta - lr g)")


@register("ucil_meta_step", target=1.0)
def ucil_meta_step() -> Case:
    """UCIL `small` meta-step (M = 3, first_order): the fast paths vs the generic ones."""
    from .meta import meta_step
    from .ucil import initial_state, ucil_config
    cfg = ucil_config("small")
    fast, theta0 = initial_state(cfg, 0)
    slow, _ = initial_state(cfg, 0)
    for dan in slow.dans:              # banded strips, recomputed forward
        dan.dense, dan.keep_bytes = [False] * len(dan.dense), 0
    r = _rng(6)
    M, D = cfg.population, cfg.nodes[0]
    x = r.random((M, cfg.shots, D)).astype(np.float32)                    # the inner batch
    xm = r.random((M, cfg.meta_batch, D)).astype(np.float32)              # the meta-batch
    names = sorted(theta0)

    def fresh():
        return {k: Tensor(np.array(theta0[k]), requires_grad=True) for k in names}
    mine, ref = {"theta": fresh()}, {"theta": fresh()}

    def step(net, state, in_place):    # the synapses keep learning, as in a meta-epoch
        state["theta"], gphi, lt, lm = meta_step(net, state["theta"], x, x, xm, xm, cfg.inner_lr,
                                                 "first_order", in_place=in_place)
        return (lm, lt, *gphi, *[state["theta"][k].data for k in names])

    return Case(lambda: step(fast, mine, True), lambda: step(slow, ref, False),
                reference_name="generic path", rtol=1e-3, atol=1e-4,
                notes=f"{fast.num_synapses() / 1e6:.2f}M synapses per member, 5-image inner step, "
                      f"{cfg.meta_batch}-image meta-batch; tinydan: whole-image conv matrices, "
                      "kept DAN graphs, in-place inner SGD; reference: the same step with banded "
                      "convs, recomputed DAN forward, a gradient array per synapse tensor")


@register("ucil_meta_step_2proc", target=1.0)
def ucil_meta_step_2proc() -> Case:
    """UCIL `small` meta-step (M = 3, first_order, fast paths): members split over 2 processes
    (``PopulationSplit``, what ``python -m tinydan.ucil`` runs on 2 cores) vs one process."""
    from .meta import PopulationSplit, meta_step
    from .ucil import initial_state, ucil_config
    cfg = ucil_config("small")
    net, theta0 = initial_state(cfg, 0)
    r = _rng(6)
    M, D = cfg.population, cfg.nodes[0]
    x = r.random((M, cfg.shots, D)).astype(np.float32)                    # the inner batch
    xm = r.random((M, cfg.meta_batch, D)).astype(np.float32)              # the meta-batch
    names = sorted(theta0)
    split = PopulationSplit(net, M, 2)
    atexit.register(split.close)                # (a daemon worker would stop anyway)
    mine = {"theta": split.reset(theta0)}
    ref = {"theta": {k: Tensor(np.array(theta0[k]), requires_grad=True) for k in names}}
    rows = split.blocks[0]

    def two():
        mine["theta"], gphi, lt, lm = split.meta_step(net, mine["theta"], x, x, xm, xm,
                                                      cfg.inner_lr, "first_order", in_place=True)
        return (lm, lt, *gphi, *[mine["theta"][k].data for k in names])

    def one():
        ref["theta"], gphi, lt, lm = meta_step(net, ref["theta"], x, x, xm, xm, cfg.inner_lr,
                                               "first_order", in_place=True)
        return (lm, lt, *gphi, *[ref["theta"][k].data[rows] for k in names])

    return Case(two, one, reference_name="one process", rtol=1e-3, atol=1e-4,
                notes="wall time of the step; this process runs members 0-1, a worker member 2 "
                      "(its core is left half idle for the validation jobs); phi gradient combined "
                      "as the member-weighted mean")


# ---------------------------------------------------------------------------- CLI
def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m tinydan.bench",
        description="Time tinydan against hand-written NumPy doing the same computation "
                    "(outputs and gradients are checked to agree before timing).")
    p.add_argument("--only", metavar="NAME[,NAME]", default=None,
                   help="comma-separated benchmarks to run (default: all; see --list)")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="samples per side (default: as many as fit in ~3 s, 7..201)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: no extra warm-up, 3 samples (unless --repeat), "
                        "1 call per sample")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="BLAS threads: sets OPENBLAS/OMP/MKL_NUM_THREADS and re-executes the "
                        "process if needed (default 1; 0 leaves the environment alone)")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write machine facts and results (with all samples) to PATH")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time (default) or this thread's CPU time, steadier on a busy machine")
    p.add_argument("--profile", action="store_true",
                   help="after timing, cProfile the tinydan step of each benchmark and print "
                        "the top functions by own time (tottime)")
    p.add_argument("--ucil", action="store_true",
                   help="also run tinydan.ucil.bench_paper_meta_step (slow and memory-hungry: "
                        "off by default); alone it runs only that, with --only those first. "
                        "Under --threads 1 (the default) it runs on one BLAS thread too")
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.threads < 0:
        p.error("--threads must be >= 0")
    names = [] if args.ucil and not args.only else list(BENCHMARKS)
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in names if s not in BENCHMARKS]
        if unknown:
            p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                    f"{', '.join(BENCHMARKS)}")
    args.names = names
    return args


def format_regression_notes(results: list[Result], load_before: list[float] | None) -> str:
    """What the regression_* rows compare with: the published numbers, torch, the machine load."""
    rows = [r for r in results if r.name in PUBLISHED_S]
    if not rows:
        return ""
    lines = ["Published one-thread times for these steps, measured side by side on this kind of "
             "machine (the project's issue), next to tinydan's median here:"]
    w = max(len(r.name) for r in rows)
    for r in rows:
        pub = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in PUBLISHED_S[r.name].items())
        lines.append(f"  {r.name.ljust(w)}  tinydan {_fmt_time(r.tinydan_s)} here | published: "
                     f"{pub}")
    torch = sys.modules.get("torch")
    if torch is not None and any(not math.isnan(r.reference_s) for r in rows):
        lines.append(f"PyTorch reference here: torch {torch.__version__} eager, "
                     f"torch.get_num_threads() = {torch.get_num_threads()}; same weights, same "
                     "math; its phi gradients and synapse updates were checked against tinydan's "
                     "before timing.")
    else:
        lines.append("PyTorch is not installed here: no reference was timed or checked (\"-\"); "
                     "compare tinydan's times with the published ones above.")
    now = _load_avg()
    load = ""
    if load_before and now:
        load = (f" (load average {load_before[0]:.2f} at the start, {now[0]:.2f} now, on "
                f"{os.cpu_count()} CPUs)")
    lines.append(f"Absolute times depend on this machine's load{load}; the ratio against PyTorch "
                 "measured in this same run, interleaved, is the meaningful figure. "
                 "PASS: tinydan beats PyTorch eager (ratio < 1).")
    return "\n".join(lines)


def profile_step(name: str, calls: int | None = None, top: int = 15) -> str:
    """cProfile of ``calls`` tinydan steps of benchmark ``name`` (after a warm-up): the ``top``
    functions by own time, as pstats prints them."""
    import cProfile
    import io
    import pstats
    case = BENCHMARKS[name].setup()
    for _ in range(3):
        case.tinydan()
    if calls is None:
        calls = _calls_per_sample(case.tinydan, 1.0)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        case.tinydan()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue().strip()
    return f"cProfile of {calls} tinydan steps of {name}, top {top} by tottime:\n{text}"


UCIL_HOOK = ("tinydan.ucil", "bench_paper_meta_step")


def run_ucil(quick: bool = False, repeat: int | None = None) -> tuple[bool, Any, str]:
    """Call ``tinydan.ucil.bench_paper_meta_step`` if it exists: (ran, result, message).

    The UCIL meta-step is benchmarked by its own module (it is slow and memory-hungry); this only
    calls it, passing ``quick``/``repeat`` where its signature takes them.
    """
    import importlib
    import inspect
    mod_name, fn_name = UCIL_HOOK
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name == mod_name:
            return False, None, (f"--ucil: {mod_name} does not exist yet (no tinydan/ucil.py), "
                                 "so there is no UCIL meta-step to benchmark.")
        return False, None, f"--ucil: {mod_name} could not be imported: {e!r}"
    except Exception as e:                                  # a module still being written
        return False, None, f"--ucil: {mod_name} could not be imported: {e!r}"
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        return False, None, (f"--ucil: {mod_name} has no {fn_name}() yet, so there is no UCIL "
                             "meta-step to benchmark.")
    kwargs = {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "quick" in params:
        kwargs["quick"] = quick
    if "repeat" in params and repeat is not None:
        kwargs["repeat"] = repeat
    result = fn(**kwargs)
    return True, result, format_ucil(result)


def _ucil_dict(result) -> dict | None:
    import dataclasses
    if isinstance(result, dict):
        return result
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if hasattr(result, "as_dict"):
        return result.as_dict()
    return None


def format_ucil(result) -> str:
    """The UCIL hook's result, one ``key: value`` a line when it is a dict (or a dataclass)."""
    d = _ucil_dict(result)
    if d is None:
        return f"UCIL paper meta-step: {result}"
    lines = ["UCIL paper meta-step (tinydan.ucil.bench_paper_meta_step):"]
    for k, v in d.items():
        if isinstance(v, float) and k.endswith("_s"):
            v = _fmt_time(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k.endswith("bytes"):
            v = f"{v / 2 ** 20:.1f} MiB"
        elif isinstance(v, float):
            v = f"{v:.4g}"
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Entry point of ``python -m tinydan.bench``; returns 0 (a missed target is only reported),
    1 when ``--ucil`` was asked for and the UCIL hook is not there."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for b in BENCHMARKS.values():
            tgt = f" [target <= {b.target}x]" if b.target is not None else ""
            print(f"{b.name:28s} {b.description}{tgt}")
        return 0
    global CLOCK
    CLOCK = args.clock
    info = machine_info()
    print(format_header(info, args.threads))
    print(f"Clock: {'wall time (perf_counter)' if CLOCK == 'wall' else 'CPU time of this thread (thread_time)'}")
    print(flush=True)
    results = []
    for name in args.names:
        r = run_benchmark(name, repeat=args.repeat, quick=args.quick)
        results.append(r)
        print(f"  {name}: tinydan {_fmt_time(r.tinydan_s)}, {r.reference_name} "
              f"{_fmt_time(r.reference_s)} ({r.repeat} samples x {r.number} calls)",
              file=sys.stderr, flush=True)
    sys.stderr.flush()
    if results:
        print(format_table(results))
        missed = [r.name for r in results if r.status == "MISS"]
        if missed:
            print(f"\nMISSED targets: {', '.join(missed)}")
        notes = format_regression_notes(results, info.get("load_avg"))
        if notes:
            print("\n" + notes)
        if args.quick:
            print("\n(--quick: too few samples for the numbers to mean much)")
    if args.profile:
        for name in args.names:
            print("\n" + profile_step(name, calls=3 if args.quick else None))
    rc, ucil = 0, None
    if args.ucil:
        ran, ucil, message = run_ucil(quick=args.quick, repeat=args.repeat)
        print(("\n" if results else "") + message, flush=True)
        if not ran:
            rc = 1
    if args.json:
        data = {"machine": info, "threads_requested": args.threads,
                "quick": args.quick, "results": [r.as_dict() for r in results]}
        if args.ucil:
            data["ucil"] = _ucil_dict(ucil) if _ucil_dict(ucil) is not None else ucil
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=str)
    return rc


if __name__ == "__main__":
    sys.exit(main())
