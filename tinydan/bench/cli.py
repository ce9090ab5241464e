"""The command line of ``python -m tinydan.bench``: options, the run, the notes under the table,
``--profile``, ``--ucil`` (the paper-scale UCIL meta-step of ``tinydan.bench.ucil_step``) and
``--json`` (machine facts, BLAS library and kernel, every sample).

The BLAS thread count (``--threads``) is set in ``tinydan/bench/__main__.py``, before this module
is imported there.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from tinydan.checkpoint import write_atomic

from . import cases, ucil_step          # noqa: F401 - importing cases registers its benchmarks
from .end_to_end import end_to_end, format_end_to_end
from .regression_steps import PUBLISHED_S
from .harness import (BENCHMARKS, CLOCKS, Result, fmt_time, format_header, format_table,
                      load_avg, machine_info, profile_step, run_benchmark)

__all__ = ["main", "run_ucil", "format_ucil", "format_regression_notes"]


def _parse_args(argv):
    """The options (with the selected benchmark names in ``.names``); exits on a bad option."""
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
                   help="also run the paper-scale UCIL meta-step benchmark "
                        "(tinydan.bench.ucil_step.bench_paper_meta_step; slow and memory-hungry: "
                        "off by default); alone it runs only that, with --only those first. "
                        "Its meta-step runs on one BLAS thread whatever --threads says")
    p.add_argument("--end-to-end", type=int, default=None, metavar="EPOCHS",
                   help="also time `python -m tinydan.regression meta-train --epochs EPOCHS` "
                        "against the same meta-training in PyTorch eager, as whole processes, "
                        "interleaved (needs PyTorch), after the benchmarks --only selects "
                        "(all by default)")
    p.add_argument("--rounds", type=int, default=3, metavar="N",
                   help="--end-to-end: interleaved pairs of runs (default 3)")
    args = p.parse_args(argv)
    if args.end_to_end is not None and args.end_to_end < 1:
        p.error("--end-to-end must be >= 1 meta-epoch")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
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
             "machine, next to tinydan's median here:"]
    w = max(len(r.name) for r in rows)
    for r in rows:
        pub = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in PUBLISHED_S[r.name].items())
        lines.append(f"  {r.name.ljust(w)}  tinydan {fmt_time(r.tinydan_s)} here | published: "
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
    now = load_avg()
    load = ""
    if load_before and now:
        load = (f" (load average {load_before[0]:.2f} at the start, {now[0]:.2f} now, on "
                f"{os.cpu_count()} CPUs)")
    lines.append(f"Absolute times depend on this machine's load{load}; the ratio against PyTorch "
                 "measured in this same run, interleaved, is the meaningful figure. "
                 "PASS: tinydan beats PyTorch eager (ratio < 1).")
    return "\n".join(lines)


def run_ucil(repeat: int | None = None) -> tuple[bool, Any, str]:
    """Run ``ucil_step.bench_paper_meta_step`` (``repeat`` meta-steps when given): (ran, result,
    message); ran is False, with the reason, when its subprocess died."""
    kwargs = {} if repeat is None else {"repeat": repeat}
    try:
        result = ucil_step.bench_paper_meta_step(**kwargs)
    except RuntimeError as e:                      # the benchmark's subprocess died
        return False, None, f"--ucil: {e}"
    return True, result, format_ucil(result)


def _ucil_dict(result) -> dict | None:
    """The UCIL result as a dict (from a dict, a dataclass or ``as_dict()``), else None."""
    import dataclasses
    if isinstance(result, dict):
        return result
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if hasattr(result, "as_dict"):
        return result.as_dict()
    return None


def format_ucil(result) -> str:
    """The UCIL benchmark's result, one ``key: value`` a line when it is a dict (or a dataclass)."""
    d = _ucil_dict(result)
    if d is None:
        return f"UCIL paper meta-step: {result}"
    lines = ["UCIL paper meta-step (tinydan.bench.ucil_step.bench_paper_meta_step):"]
    for k, v in d.items():
        if isinstance(v, float) and k.endswith("_s"):
            v = fmt_time(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k.endswith("bytes"):
            v = f"{v / 2 ** 20:.1f} MiB"
        elif isinstance(v, float):
            v = f"{v:.4g}"
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Entry point of ``python -m tinydan.bench``; returns 0 (a missed target is only reported),
    1 when ``--ucil`` was asked for and its benchmark could not run."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        w = max(len(name) for name in BENCHMARKS)
        for b in BENCHMARKS.values():
            tgt = f" [target <= {b.target}x]" if b.target is not None else ""
            print(f"{b.name.ljust(w)}  {b.description}{tgt}")
        return 0
    info = machine_info()
    print(format_header(info, args.threads))
    print("Clock: " + ("wall time (perf_counter)" if args.clock == "wall"
                       else "CPU time of this thread (thread_time)"))
    print(flush=True)
    results = []
    for name in args.names:
        r = run_benchmark(name, repeat=args.repeat, quick=args.quick, clock=args.clock)
        results.append(r)
        print(f"  {name}: tinydan {fmt_time(r.tinydan_s)}, {r.reference_name} "
              f"{fmt_time(r.reference_s)} ({r.repeat} samples x {r.number} calls)",
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
        ran, ucil, message = run_ucil(repeat=args.repeat)
        print(("\n" if results else "") + message, flush=True)
        if not ran:
            rc = 1
    e2e = None
    if args.end_to_end is not None:
        try:
            e2e = end_to_end(args.end_to_end, rounds=args.rounds,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
            print("\n" + format_end_to_end(e2e), flush=True)
        except RuntimeError as e:                  # a command failed (e.g. no PyTorch)
            print(f"\n--end-to-end: {e}", flush=True)
            rc = 1
    if args.json:
        data = {"machine": info, "threads_requested": args.threads,
                "quick": args.quick, "results": [r.as_dict() for r in results]}
        if e2e is not None:
            data["end_to_end"] = e2e
        if args.ucil:
            data["ucil"] = _ucil_dict(ucil) if _ucil_dict(ucil) is not None else ucil
        write_atomic(args.json, json.dumps(data, indent=1, default=str))
    return rc
