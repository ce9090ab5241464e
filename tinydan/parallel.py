"""One way to run independent jobs side by side: ``Workers``, a ``concurrent.futures.Executor``.

Meta-training is one sequential chain of steps, but deploying a phi snapshot on validation tasks,
deploying a baseline, an ablation cell or a share of the population's members does not depend on
it. ``Workers(n)`` runs such jobs in a pool of ``n`` worker processes (default: the cores but one),
or inline in this process with ``n = 0``, with the same interface: ``submit(fn, *args)`` returns a
Future. Anything that takes a ``Workers`` takes any other Executor too (a cluster library's).
Jobs must be module-level functions with picklable arguments. On Linux the pool forks (no
re-import of the caller's script); elsewhere it spawns. If the pool cannot start or breaks, jobs
run inline with a warning: never a lost run. Workers exit when their parent dies (a watchdog
thread), so a killed run leaves no orphans.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
import warnings
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

__all__ = ["Workers", "executor_width", "usable_cores", "watch_parent", "set_blas_threads",
           "blas_threads", "one_blas_thread", "mp_context", "tune_allocator"]


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def mp_context():
    """The multiprocessing context tinydan's workers use: fork on Linux (no re-import of the
    caller's script, arguments inherited), spawn elsewhere."""
    return get_context("fork" if sys.platform.startswith("linux") else "spawn")


def watch_parent(interval: float = 1.0) -> None:
    """Exit this (worker) process as soon as its parent has died: a daemon thread compares the
    parent's pid every ``interval`` seconds (a killed parent cannot tell its workers to stop)."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, daemon=True, name="tinydan-watch-parent").start()


def _init_worker(nice: int = 0, initializer=None, initargs=()):
    watch_parent()
    # one BLAS thread per process: the point is to use the cores with processes, not threads
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if nice:
        try:
            os.nice(int(nice))
        except (AttributeError, OSError):  # pragma: no cover - not POSIX
            pass
    if initializer is not None:
        initializer(*initargs)


def executor_width(pool) -> int:
    """Workers an executor runs jobs on beside this process (0: inline; 1 for a foreign one)."""
    return int(getattr(pool, "n", 1)) if pool is not None else 0


class Workers(Executor):
    """A process pool of ``n`` workers (default: cores - 1), or inline execution when n == 0.

    ``nice`` > 0 lowers the workers' priority: their jobs fill what the caller's processes leave
    of the cores instead of taking turns with them (validation beside a split meta-step).
    ``initializer(*initargs)`` runs once in each worker (state a worker keeps between jobs);
    ``fallback=False``: a pool that cannot start or breaks raises instead of running jobs inline.
    """

    def __init__(self, n: int | None = None, nice: int = 0, initializer=None, initargs=(),
                 fallback: bool = True):
        self.n = max(0, usable_cores() - 1) if n is None else int(n)
        self.fallback = bool(fallback)
        self._pool = None
        if self.n > 0:
            self._pool = ProcessPoolExecutor(self.n, mp_context=mp_context(),
                                             initializer=_init_worker,
                                             initargs=(int(nice), initializer, tuple(initargs)))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Run fn(*args, **kwargs) in a worker (or now, inline) and return a Future."""
        if self._pool is not None:
            try:
                return self._pool.submit(fn, *args, **kwargs)
            except (BrokenProcessPool, RuntimeError, OSError) as e:
                if not self.fallback:
                    raise
                warnings.warn(f"worker process unavailable ({e}); running jobs inline", RuntimeWarning)
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except Exception as e:  # the caller sees it from .result(), as with a pool
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers (after the running jobs, with ``wait``)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
            self._pool = None

    def close(self) -> None:
        """Wait for running jobs and stop the workers."""
        self.shutdown(wait=True)

    def processes(self) -> list:
        """The worker processes running now (multiprocessing.Process objects)."""
        procs = getattr(self._pool, "_processes", None) or {}
        return list(procs.values())


def _openblas_libraries() -> list:
    """(file name, ctypes library) of every OpenBLAS loaded in this process (Linux /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "openblas" in line.split()[-1].lower() and ".so" in line.split()[-1]})
    except OSError:
        return []
    libs = []
    for path in paths:
        try:
            libs.append((os.path.basename(path), ctypes.CDLL(path)))
        except OSError:
            continue
    return libs


def _blas_symbol(lib, verb: str):
    for sym in (f"openblas_{verb}_num_threads", f"openblas_{verb}_num_threads64_",
                f"scipy_openblas_{verb}_num_threads64_", f"scipy_openblas_{verb}_num_threads"):
        fn = getattr(lib, sym, None)
        if fn is not None:
            return fn
    return None


def blas_threads() -> list[tuple[str, int]]:
    """(library, threads) for every OpenBLAS loaded in this process."""
    out = []
    for name, lib in _openblas_libraries():
        fn = _blas_symbol(lib, "get")
        if fn is not None:
            fn.restype = ctypes.c_int
            out.append((name, int(fn())))
    return out


def set_blas_threads(n: int) -> list[str]:
    """Set the thread count of every OpenBLAS loaded in this process (Linux); returns the libraries.

    The DAN experiments multiply many small matrices, where BLAS threads cost more than they give
    (and fight the worker process for the second core), so the CLIs run with one.
    """
    os.environ.update({v: str(n) for v in _THREAD_VARS})                  # for child processes
    return _set_counts(n)


_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _set_counts(counts: dict | int) -> list[str]:
    """Set the thread count of each named OpenBLAS library ({file name: threads}), or of every one
    (an int); returns the libraries set."""
    done = []
    for name, lib in _openblas_libraries():
        n = counts if isinstance(counts, int) else counts.get(name)
        fn = _blas_symbol(lib, "set")
        if fn is not None and n is not None:
            fn(int(n))
            done.append(name)
    return done


@contextlib.contextmanager
def one_blas_thread():
    """Run a block (or, as a decorator, a job) with one OpenBLAS thread, as a worker process does,
    then restore this process's counts and environment. OpenBLAS only (MKL is left as it is).

    A product's rounding depends on how BLAS splits it across threads, so a job gives the same
    numbers, bit for bit, wherever it runs (a worker, inline, or this process taking over).
    """
    before = dict(blas_threads())
    env = {v: os.environ.get(v) for v in _THREAD_VARS}
    set_blas_threads(1)
    try:
        yield
    finally:
        _set_counts(before)
        for v, old in env.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc): mmap threshold 512 MiB, trim threshold 1 GiB.

    Every op allocates its output, and glibc hands blocks above its mmap threshold back to the
    kernel on free, so the next op page-faults and zero-fills them again: half the CPU time of a
    DAN layer went to the kernel. With these settings the blocks are reused. Linux/glibc only;
    returns whether it applied.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 512 << 20)) and bool(libc.mallopt(-1, 1 << 30))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False
