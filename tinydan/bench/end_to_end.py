"""End to end: ``python -m tinydan.regression meta-train`` against the same meta-training in
PyTorch eager (``tinydan.bench.torch_reference``), as whole processes.

Each round runs both commands once, in alternating order (A B, then B A, ...), so that a change in
the machine's load hits both alike; the figures are the medians over rounds of the wall time, the
CPU time of the process and its children, and the per-round ratio tinydan / PyTorch. Both start
from the same phi_0 and theta_0 and see the same task draws, so their meta-loss histories must
agree (to float32 rounding): a large difference is reported, not hidden.

tinydan's command is timed as a user runs it: process start, imports, compiling the step on its
first call, a checkpoint written after every meta-epoch and one validation at the end (``--val-every
EPOCHS``: phi deployed on the 20 validation functions, in a worker process). The PyTorch side
imports, trains and runs the same validation; it writes no checkpoints.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import BLAS_ENV

__all__ = ["end_to_end", "format_end_to_end"]


def _timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children) of one command; raises with
    its stderr when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): "
                           f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _tinydan_record(out_dir: Path) -> tuple[list[float], float]:
    """(meta-loss history, last validation MSE) of a finished tinydan run."""
    from tinydan.checkpoint import load_checkpoint
    _, meta = load_checkpoint(out_dir / "checkpoint.npz")
    return list(meta["history"]["meta_loss"]), float(meta["val_history"][-1][1])


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def end_to_end(epochs: int, rounds: int = 3, config: str = "default",
               meta_grad: str | None = None, log=None) -> dict:
    """Time ``rounds`` interleaved pairs of whole meta-training runs of ``epochs`` meta-epochs:
    tinydan's command line against the PyTorch reference. Returns every sample, the medians,
    the median ratio and the largest relative difference of the two meta-loss histories."""
    if epochs < 1 or rounds < 1:
        raise ValueError(f"epochs and rounds must be >= 1, got {epochs} and {rounds}")
    env = {**os.environ, **{k: "1" for k in BLAS_ENV}}          # one BLAS thread each
    grad = ["--meta-grad", meta_grad] if meta_grad else []
    samples = {"tinydan": [], "torch": []}
    diff = val_diff = 0.0
    with tempfile.TemporaryDirectory(prefix="tinydan-e2e-") as tmp:
        tmp = Path(tmp)
        for r in range(rounds):
            out, hist = tmp / f"tinydan-{r}", tmp / f"torch-{r}.json"
            cmds = {"tinydan": [sys.executable, "-m", "tinydan.regression", "meta-train",
                                "--config", config, "--epochs", str(epochs), "--val-every",
                                str(epochs), "--out", str(out), "--quiet", *grad],
                    "torch": [sys.executable, "-m", "tinydan.bench.torch_reference", "--config",
                              config, "--epochs", str(epochs), "--json", str(hist), *grad]}
            order = ("tinydan", "torch") if r % 2 == 0 else ("torch", "tinydan")
            for side in order:
                wall, cpu = _timed(cmds[side], env)
                samples[side].append({"wall_s": wall, "cpu_s": cpu})
                if log is not None:
                    log(f"  round {r + 1}/{rounds} {side}: {wall:.2f} s wall, {cpu:.2f} s CPU")
            mine, my_val = _tinydan_record(out)
            theirs = json.loads(hist.read_text())
            diff = max([diff] + [_rel(a, b) for a, b in zip(mine, theirs["history"]["meta_loss"])])
            val_diff = max(val_diff, _rel(my_val, theirs["val"]))
    med = {side: {k: statistics.median(s[k] for s in samples[side]) for k in ("wall_s", "cpu_s")}
           for side in samples}
    ratios = {k: statistics.median(a[k] / b[k] for a, b in zip(samples["tinydan"],
                                                                 samples["torch"]))
              for k in ("wall_s", "cpu_s")}
    return {"epochs": epochs, "rounds": rounds, "config": config, "meta_grad": meta_grad,
            "samples": samples, "median": med, "ratio": ratios,
            "meta_loss_max_rel_diff": diff, "val_max_rel_diff": val_diff}


def format_end_to_end(res: dict) -> str:
    """The result of ``end_to_end`` as a few lines of text."""
    from tinydan.experiments.configs import regression_config
    grad = res["meta_grad"] or regression_config(res["config"]).meta_grad
    m, r = res["median"], res["ratio"]
    verdict = "PASS" if r["wall_s"] <= 0.5 else "MISS"
    return "\n".join([
        f"End to end: {res['epochs']} meta-epochs of config {res['config']!r} ({grad}), "
        f"{res['rounds']} interleaved rounds, medians:",
        f"  tinydan  `python -m tinydan.regression meta-train`  {m['tinydan']['wall_s']:.2f} s wall"
        f", {m['tinydan']['cpu_s']:.2f} s CPU",
        f"  PyTorch  `python -m tinydan.bench.torch_reference`  {m['torch']['wall_s']:.2f} s wall"
        f", {m['torch']['cpu_s']:.2f} s CPU",
        f"  tinydan / PyTorch: {r['wall_s']:.2f}x wall, {r['cpu_s']:.2f}x CPU (median of the "
        f"rounds' ratios) [{verdict}: target <= 0.5x wall]",
        f"  meta-loss histories agree to {res['meta_loss_max_rel_diff']:.1e} (largest relative "
        f"difference of an epoch's mean), the final validation MSE to "
        f"{res.get('val_max_rel_diff', float('nan')):.1e}"])
