"""The benchmark harness: the registry, the correctness check, op counting, interleaved timing,
machine facts and the results table.

A benchmark is a ``setup() -> Case`` registered with ``@register``; ``run_benchmark`` builds it,
runs both sides once and compares them (``verify``), counts the tinydan ops of one step
(``count_ops``), then times the two sides alternately (``time_pair``) and reports the medians.
``machine_info`` records what the numbers were measured on (NumPy, the BLAS library and kernel, its
threads, CPUs, load).
"""
from __future__ import annotations

import gc
import math
import os
import platform
import time
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Callable

import numpy as np

import tinydan as td
from tinydan.tensor import Op, Tensor

__all__ = ["Case", "Benchmark", "Result", "BenchmarkMismatch", "BENCHMARKS", "BLAS_ENV", "CLOCKS",
           "register", "as_array", "compare", "verify", "count_ops", "time_pair", "run_benchmark",
           "machine_info", "blas_library", "fmt_time", "format_table", "format_header",
           "profile_step"]

#: the environment variables that set the BLAS thread count (read when the BLAS library loads)
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


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
    """A registered benchmark: its name, its ``setup() -> Case``, the ratio it must stay under."""
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


def as_array(x) -> np.ndarray:
    """A result as a NumPy array: Tensor -> its data, a torch tensor -> numpy, else np.asarray."""
    if isinstance(x, Tensor):
        return x.data
    if hasattr(x, "detach") and hasattr(x, "numpy"):         # a torch tensor (reference side)
        return x.detach().cpu().numpy()
    return np.asarray(x)


def compare(name: str, got, expected, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Raise BenchmarkMismatch unless each tinydan result g matches its reference e: same shape,
    finite, and |g - e| <= rtol |e| + atol max|e| elementwise."""
    got, expected = list(got), list(expected)
    if len(got) != len(expected):
        raise BenchmarkMismatch(f"{name}: tinydan returned {len(got)} results, the NumPy "
                                f"reference {len(expected)}")
    if not expected:
        raise BenchmarkMismatch(f"{name}: nothing to compare")
    for i, (g, e) in enumerate(zip(got, expected)):
        g, e = as_array(g), as_array(e)
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


#: "wall": time.perf_counter; "cpu": this thread's CPU time, which other processes on a shared
#: machine disturb much less (``--clock``)
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def time_pair(a: Callable, b: Callable | None, repeat: int | None = None, warmup: int = 3,
              min_sample_s: float = 0.002, budget_s: float = 3.0, min_repeat: int = 7,
              max_repeat: int = 201, clock: str = "wall"
              ) -> tuple[list[float], list[float], int]:
    """Per-call times of ``a`` and ``b`` (seconds), sampled alternately: a b a b ...

    Each sample times ``number`` back-to-back calls (so that a sample of the faster side lasts at
    least ``min_sample_s``, far above the timer's resolution) and divides by it. With
    ``repeat=None`` the number of samples fills about ``budget_s`` seconds. The garbage collector
    is off while timing (as in ``timeit``). Returns (a_times, b_times, number). With ``b=None``
    only ``a`` is timed and b_times is empty. ``clock`` is a key of ``CLOCKS``.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
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
    perf = CLOCKS[clock]
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
    """One benchmark's timings (medians and every sample), ratio, target status and op count."""
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
        """The fields as a dict (what ``--json`` writes)."""
        return dict(self.__dict__)


def run_benchmark(name: str, repeat: int | None = None, quick: bool = False,
                  clock: str = "wall") -> Result:
    """Build, verify, count the ops of, and time one registered benchmark.

    ratio = median(tinydan) / median(reference); status PASS when ratio <= target, else MISS;
    us/op (``Case.per_op``) = (median(tinydan) - median(reference)) / ops.
    """
    bench = BENCHMARKS[name]
    case = bench.setup()
    verify(name, case)
    ops, _ = count_ops(case.tinydan)
    if quick:
        # verify() and count_ops() have already run both sides once: no separate warm-up
        ta, tb, number = time_pair(case.tinydan, case.reference, repeat=repeat or 3, warmup=0,
                                   min_sample_s=0.0, clock=clock)
    else:
        ta, tb, number = time_pair(case.tinydan, case.reference, repeat=repeat, clock=clock)
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
    from tinydan.parallel import blas_threads
    return blas_threads()


def _git_revision() -> str | None:
    """The commit of the tinydan checkout, '+dirty' if tinydan/ has uncommitted edits (or None)."""
    import subprocess
    here = os.path.dirname(os.path.abspath(td.__file__))                # the tinydan package
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


def load_avg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def blas_library() -> list[dict]:
    """The BLAS that NumPy runs on: one {library, version, architecture, ...} per loaded library.

    From ``threadpoolctl`` where it is installed (architecture: the kernel chosen at run time);
    else from ``np.show_config``, which knows how NumPy was built but not the run-time kernel
    (architecture None, the build's configuration string instead).
    """
    try:
        import threadpoolctl                        # optional, never required
    except ImportError:
        pass
    else:
        return [{"library": p.get("internal_api"), "version": p.get("version"),
                 "architecture": p.get("architecture"),
                 "threading_layer": p.get("threading_layer"), "source": "threadpoolctl"}
                for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    try:
        b = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    except Exception:                               # older NumPy: no mode="dicts"
        return []
    if not b:
        return []
    return [{"library": b.get("name"), "version": b.get("version"), "architecture": None,
             "build_configuration": (b.get("openblas configuration") or "").strip() or None,
             "source": "numpy.show_config"}]


def machine_info() -> dict:
    """numpy version, BLAS (library, version, kernel), BLAS threads in use, CPU counts, load."""
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
    info["load_avg"] = load_avg()
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
    info["blas_library"] = blas_library()
    info["blas_env"] = {k: os.environ.get(k) for k in BLAS_ENV}
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


def fmt_time(s: float) -> str:
    """Seconds as a short string in us, ms or s ("-" for nan)."""
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
    """The results as an aligned text table, one row per benchmark."""
    head = ("benchmark", "tinydan", "reference", "ref", "ratio", "target", "status", "notes")
    rows = [head]
    for r in results:
        rows.append((r.name, fmt_time(r.tinydan_s), fmt_time(r.reference_s), r.reference_name,
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


def _format_kernel(libs: list[dict]) -> str:
    """The BLAS kernel line of the header, from ``blas_library()``."""
    if not libs:
        return "unknown"
    parts = []
    for lib in libs:
        what = " ".join(str(x) for x in (lib.get("library"), lib.get("version")) if x)
        if lib.get("architecture"):
            what += f", kernel {lib['architecture']}"
        else:
            what += ", run-time kernel unknown"
        parts.append(f"{what} ({lib.get('source')})")
    return "; ".join(parts)


def format_header(info: dict, threads_requested: int) -> str:
    """What the numbers were measured on, and how to read them."""
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
        f"BLAS kernel: {_format_kernel(info.get('blas_library') or [])}",
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
