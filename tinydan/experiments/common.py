"""What both experiments share: the phenotype, meta-training with checkpoints, deployment into the
loss matrix R, results files, and the pieces of their command lines.

An experiment supplies its config, its network, its task sequences and its validation score; this
module runs Algorithm 1 (``tinydan.meta.MetaTrainer``) for it with

* **checkpoint and resume**: ``OUT/checkpoint.npz`` is written atomically after every meta-epoch
  and validation result, holding phi, Adam's state, the generator, the history, every validated phi
  snapshot and the snapshots whose validation was still running; a resumed run validates those and
  ends bit for bit where the uninterrupted run would;
* **validation beside meta-training**: each phi snapshot is deployed on validation tasks in a
  worker process (``ValidationQueue``) while meta-training goes on; the best one is deployed;
* **deployment into R**: ``learn_in_order`` learns sub-task after sub-task with phi fixed and
  fills R[:, i, j], the loss on sub-task j after learning sub-task i (paper section 5).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_atomic
from ..continual import to_jsonable
from ..parallel import Workers
from .cli import progress

__all__ = ["Phenotype", "command_line", "versions", "blas_info", "write_results",
           "learn_in_order", "ValidationQueue", "meta_train_loop", "save_phenotype_file",
           "read_phenotype_file", "snapshot_arrays", "snapshots_from", "validation_parts",
           "load_phi"]


@dataclass
class Phenotype:
    """A phenotype ready to deploy: the network with phi loaded, theta_0 and where it came from.

    ``snapshots`` {meta-epoch: phi} holds every validated phi of meta-training (empty for files
    made before they were kept), so the meta-epoch to deploy can be chosen again.
    """

    cfg: object
    net: object
    theta0: dict
    seed: int
    meta: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# provenance and results files
# ---------------------------------------------------------------------------------------------
def command_line(prog: str, argv=None) -> str:
    """The command as the user typed it: ``python -m PROG ARGS``."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join([f"python -m {prog}"] + [shlex.quote(str(a)) for a in argv])


def blas_info() -> list:
    """The BLAS libraries NumPy runs on: [{library, version, kernel, threads}] (threadpoolctl when
    it is installed, else NumPy's build configuration). Results can move with the kernel."""
    try:
        from threadpoolctl import threadpool_info
        return [{"library": d.get("internal_api"), "version": d.get("version"),
                 "kernel": d.get("architecture"), "threads": d.get("num_threads")}
                for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [{"library": cfg.get("name"), "version": cfg.get("version"),
                 "kernel": cfg.get("openblas configuration"), "threads": None}]
    except Exception:                                # pragma: no cover - very old NumPy
        return []


def versions() -> dict:
    """What a result depends on besides its config and seed: package versions, the machine, BLAS."""
    import matplotlib
    import scipy
    return {"tinydan": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "matplotlib": matplotlib.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "blas": blas_info()}


def write_results(out_dir: Path, results: dict, markdown: str) -> dict:
    """Write OUT/results.json (NaN and inf as null) and OUT/results.md, each atomically."""
    results = to_jsonable(results)
    write_atomic(Path(out_dir) / "results.json", json.dumps(results, indent=1, allow_nan=False))
    write_atomic(Path(out_dir) / "results.md", markdown)
    return results


# ---------------------------------------------------------------------------------------------
# deployment into R
# ---------------------------------------------------------------------------------------------
def learn_in_order(step, theta: dict, subtasks, evaluate, on_step=None):
    """R (P, T, T): learn sub-task after sub-task with ``step``, scoring every sub-task after each.

    ``subtasks`` yields, for each sub-task i, the iterable of its batches (x, y); ``step(theta, x,
    y)`` returns theta after one SGD step on the synapses (phi fixed); ``evaluate(theta)`` gives
    (P, T), the loss of each of the P deployments on each sub-task, so R[:, i, j] is the loss on
    sub-task j after learning sub-task i. ``on_step(i, k, theta)`` after step k (from 1) of i.
    Returns (R, theta).
    """
    rows = []
    for i, batches in enumerate(subtasks):
        for k, (x, y) in enumerate(batches, start=1):
            theta = step(theta, x, y)
            if on_step is not None:
                on_step(i, k, theta)
        rows.append(evaluate(theta))
    return np.stack(rows, axis=1).astype(np.float64), theta


# ---------------------------------------------------------------------------------------------
# validation beside meta-training
# ---------------------------------------------------------------------------------------------
def validation_parts(n_tasks: int, n: int) -> list:
    """[(part, weight)] splitting ``n_tasks`` validation tasks into ``n`` near-equal blocks:
    ``part`` = (i, n) and the weighted part means sum to the whole mean."""
    sizes = [len(b) for b in np.array_split(np.arange(n_tasks), n)]
    return [((i, n), k / n_tasks) for i, k in enumerate(sizes) if k]


class ValidationQueue:
    """The validations of a meta-training run: each phi snapshot's score, in ``parts``, run in the
    executor one part at a time while meta-training goes on (``pump`` after every step), so work
    not yet started stays here; ``finish`` then shares what is left between this process and the
    executor. ``job(*args, phi, part)`` is a module-level function returning a part's mean; a
    snapshot's parts are always the same and summed in part order, so its score does not depend on
    where they ran. ``on_result(epoch, score, phi)`` when a score is complete.
    """

    def __init__(self, pool, job, args: tuple, parts: list, on_result):
        self.pool, self.job, self.args, self.parts = pool, job, tuple(args), list(parts)
        self.on_result = on_result
        self.queue: list = []                       # [(epoch, part)] not started
        self.running = None                         # (epoch, part, future) in the executor
        self.phi: dict = {}                         # epoch -> phi, until its score is complete
        self.values: dict = {}                      # epoch -> {part: value} of the parts done

    def submit(self, epoch: int, phi: dict) -> None:
        """Queue the validation of the phi snapshot of ``epoch``."""
        self.phi[epoch], self.values[epoch] = phi, {}
        self.queue += [(epoch, part) for part, _ in self.parts]
        self.pump()

    def pending(self) -> list:
        """[(epoch, phi)] of the snapshots whose score is not complete."""
        return sorted(self.phi.items(), key=lambda kv: kv[0])

    def _done(self, epoch, part, value) -> None:
        self.values[epoch][part] = value
        if len(self.values[epoch]) == len(self.parts):
            values = self.values.pop(epoch)
            score = sum(w * values[p] for p, w in self.parts)
            self.on_result(epoch, float(score), self.phi.pop(epoch))

    def pump(self, wait: bool = False) -> None:
        """Collect the executor's finished part (or wait for it) and give it the next one."""
        while True:
            if self.running is not None and (wait or self.running[2].done()):
                epoch, part, fut = self.running
                self.running = None
                self._done(epoch, part, fut.result())
            if self.running is not None or not self.queue:
                return
            epoch, part = self.queue.pop(0)
            fut = self.pool.submit(self.job, *self.args, self.phi[epoch], part)
            self.running = (epoch, part, fut)
            wait = False

    def finish(self) -> None:
        """No meta-steps left: this process takes parts from the back of the queue, the executor
        from the front, until every score is complete."""
        while self.queue or self.running is not None:
            self.pump()
            if self.queue:
                epoch, part = self.queue.pop()
                self._done(epoch, part, self.job(*self.args, self.phi[epoch], part))
            else:
                self.pump(wait=True)


def snapshot_arrays(snapshots: dict, prefix: str = "snap") -> dict:
    """{"snap.E.phi.NAME": array} of the phi snapshots {E: phi} (the checkpoint layout)."""
    return {f"{prefix}.{e}.phi.{k}": v for e, phi in snapshots.items() for k, v in phi.items()}


def snapshots_from(arrays: dict, prefix: str = "snap") -> dict:
    """Inverse of ``snapshot_arrays``: {E: phi}, sorted by meta-epoch."""
    snaps: dict = {}
    for key, v in arrays.items():
        if key.startswith(prefix + "."):
            e, name = key[len(prefix) + 1:].split(".phi.", 1)
            snaps.setdefault(int(e), {})[name] = v
    return dict(sorted(snaps.items()))


# ---------------------------------------------------------------------------------------------
# meta-training with checkpoint and resume
# ---------------------------------------------------------------------------------------------
def meta_train_loop(trainer, *, cfg, seed: int, out_dir: Path, kind: str, command: str,
                    job, job_args: tuple, parts: list, expect: dict, resume: bool = False,
                    quiet: bool = False, log=print, workers: int | None = None, nice: int = 0,
                    fingerprint: str | None = None, record: dict | None = None,
                    record_prefix: str | None = None, validate_start: bool = False,
                    steps_per_epoch: int = 1, check=None, processes: int | None = None,
                    theta0_rows: int | None = None) -> Phenotype:
    """Run ``trainer`` (a MetaTrainer) to cfg.meta_epochs, validating phi every cfg.val_every.

    ``job(*job_args, phi, part)`` scores a snapshot's part (``ValidationQueue``); the best epoch
    (lowest score, ties to the earlier) is loaded into the returned phenotype. ``fingerprint``: the
    checkpoint stores no theta_0 (the experiment regenerates it from the seed) but this checksum
    of it; else theta_0 is stored. ``record``: more provenance for the checkpoint and the returned
    meta (on resume, the checkpoint's keys starting with ``record_prefix`` win). ``expect``:
    what a checkpoint must match to be resumed (``load_checkpoint``), ``check(ckpt, meta)`` any
    further test. ``validate_start``: score phi_0 too (epoch 0, for reference). ``processes``:
    None continues a resumed run with the processes it was made with.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint.npz"
    record = dict(record or {})
    val_hist: list = []
    best = {"val": float("inf"), "epoch": 0, "phi": trainer.net.state_dict()}
    snapshots: dict = {}                      # meta-epoch -> its validated phi
    elapsed0 = 0.0
    resubmit: list = []
    if resume and ckpt.exists():
        arrays, meta = load_checkpoint(ckpt, expect=expect)
        if check is not None:
            check(ckpt, meta)
        if fingerprint is not None:
            if meta.get("theta0_crc32") != fingerprint:
                raise CheckpointError(f"{ckpt}: theta_0 regenerated from seed {seed} does not match "
                                      "the one it was trained with (another tinydan version?); "
                                      "start afresh")
            arrays.update({f"theta0.{k}": v for k, v in trainer.theta0.items()})
        trainer.load_state(arrays, meta)
        val_hist = [tuple(v) for v in meta.get("val_history", [])]
        best = {"val": meta.get("best_val", float("inf")), "epoch": meta.get("best_epoch", 0),
                "phi": {k[9:]: v for k, v in arrays.items() if k.startswith("best.phi.")}}
        snapshots.update(snapshots_from(arrays))
        if best["phi"] and any(int(e) == int(best["epoch"]) for e, _ in val_hist):
            snapshots.setdefault(best["epoch"], best["phi"])    # a validated phi only
        lost = sorted({int(e) for e, _ in val_hist} - set(snapshots) - {0})
        if lost:
            log(f"note: {ckpt} keeps no phi of meta-epoch(s) {lost} (made before tinydan kept "
                "them): the meta-epoch to deploy is chosen among the others")
        elapsed0 = float(meta.get("meta_train_seconds", 0.0))
        if record_prefix:                 # the checkpoint's record wins; the caller's fills gaps
            record.update({k: v for k, v in meta.items() if k.startswith(record_prefix)})
        recorded = int(meta.get("processes", 1))
        if processes is None:                        # continue as the run was made
            trainer.processes = recorded
        elif int(processes) != recorded:
            log(f"note: the run was made with {recorded} process(es), resuming with "
                f"{processes}: the same maths, rounded differently")
        for epoch in meta.get("pending_epochs", []):           # validations still running then
            pre = f"pending.{epoch}.phi."
            resubmit.append((epoch, {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}))
        log(f"resumed from {ckpt} at meta-epoch {trainer.epoch}")
    elif resume:
        log(f"no checkpoint at {ckpt}: starting from scratch")

    t0 = time.perf_counter()
    validations = None

    def save():
        arrays = trainer.state_arrays()
        if fingerprint is not None:
            arrays = {k: v for k, v in arrays.items() if not k.startswith("theta0.")}
        arrays.update({f"best.phi.{k}": v for k, v in best["phi"].items()})
        arrays.update(snapshot_arrays(snapshots))
        pending = [] if validations is None else validations.pending()
        for epoch, phi in pending:                        # so that a resumed run validates them
            arrays.update({f"pending.{epoch}.phi.{k}": v for k, v in phi.items()})
        meta = {"kind": kind, "config": cfg.to_dict(), "seed": seed, "command": command,
                **({"theta0_crc32": fingerprint} if fingerprint is not None else {}), **record,
                "processes": trainer.processes, "val_history": val_hist, "best_val": best["val"],
                "best_epoch": best["epoch"], "pending_epochs": [e for e, _ in pending],
                "meta_train_seconds": elapsed0 + time.perf_counter() - t0}
        meta.update(trainer.state_meta())
        save_checkpoint(ckpt, arrays, meta)

    def on_result(epoch, v, phi):
        nonlocal best
        val_hist.append((epoch, v))
        val_hist.sort(key=lambda ev: ev[0])
        if v < best["val"] or (v == best["val"] and epoch < best["epoch"]):
            best = {"val": v, "epoch": epoch, "phi": phi}
        snapshots[epoch] = phi

    trainer.start()         # fork the population's workers before the bar and the pool have threads
    bar = progress(cfg.meta_epochs * steps_per_epoch, f"meta-training {cfg.name} ({cfg.meta_grad})",
                   quiet, trainer.epoch * steps_per_epoch, unit="step")
    state = {"n": 0}

    def on_step(meta_loss):
        state["n"] += 1
        validations.pump()
        if bar is not None:
            bar.update(1)
            if state["n"] % 10 == 0:
                bar.set_postfix(meta_loss=f"{meta_loss:.4f}",
                                val=f"{val_hist[-1][1]:.4f}" if val_hist else "-", refresh=False)

    with Workers(workers, nice=nice) as pool:
        validations = ValidationQueue(pool, job, job_args, parts, on_result)
        if validate_start and trainer.epoch == 0 and not val_hist:      # phi_0, for reference
            validations.submit(0, trainer.net.state_dict())
        for epoch, phi in resubmit:
            validations.submit(epoch, phi)
        try:
            while trainer.epoch < cfg.meta_epochs:
                trainer.run_epoch(progress=on_step)
                if trainer.epoch % cfg.val_every == 0 or trainer.epoch == cfg.meta_epochs:
                    validations.submit(trainer.epoch, trainer.net.state_dict())
                save()
        finally:
            trainer.close()
        validations.finish()
        save()
    if bar is not None:
        bar.close()
    trainer.net.load_state_dict(best["phi"])
    meta = {"kind": kind, "config": cfg.to_dict(), "seed": seed, "best_val": best["val"],
            "best_epoch": best["epoch"], "val_history": val_hist, "history": trainer.history,
            **({"theta0_crc32": fingerprint} if fingerprint is not None else {}), **record,
            "processes": trainer.processes,
            "meta_train_seconds": elapsed0 + time.perf_counter() - t0, "checkpoint": str(ckpt),
            "command": command}
    theta0 = trainer.theta0 if theta0_rows is None else \
        {k: np.asarray(v)[:theta0_rows] for k, v in trainer.theta0.items()}
    return Phenotype(cfg, trainer.net, theta0, seed, meta, snapshots=dict(sorted(snapshots.items())))


# ---------------------------------------------------------------------------------------------
# phenotype files
# ---------------------------------------------------------------------------------------------
def save_phenotype_file(path, ph: Phenotype, kind: str, keep: tuple, extra: dict | None = None,
                        with_theta0: bool = False) -> Path:
    """A small deployable file: phi (the deployed one), the validated snapshots, the config and the
    provenance keys ``keep`` of ph.meta (and theta_0 when ``with_theta0``), written atomically."""
    meta = {"kind": kind, "config": ph.cfg.to_dict(), "seed": ph.seed,
            **{k: ph.meta[k] for k in keep if k in ph.meta}, **(extra or {})}
    arrays = {f"phi.{k}": v for k, v in ph.net.state_dict().items()}
    if with_theta0:
        arrays.update({f"theta0.{k}": np.asarray(v) for k, v in ph.theta0.items()})
    arrays.update(snapshot_arrays(ph.snapshots))
    return save_checkpoint(Path(path), arrays, meta, compress=True)


def read_phenotype_file(path, expect: dict, config_class):
    """(arrays, meta, cfg, phi) of a checkpoint or phenotype file: phi is a checkpoint's best one
    (``best.phi.*``) or a phenotype file's (``phi.*``). Refused with one clear line when the file
    is not of ``expect``'s kind or its config cannot be read."""
    path = Path(path)
    arrays, meta = load_checkpoint(path, expect=expect)
    try:
        cfg = config_class.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its config cannot be read ({e}); was it written by another "
                              "version of tinydan?") from None
    prefix = "best.phi." if any(k.startswith("best.phi.") for k in arrays) else "phi."
    phi = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    return arrays, meta, cfg, phi


def load_phi(net, phi: dict, path, cfg) -> None:
    """net.load_state_dict(phi), refused with one clear line when phi does not fit the network."""
    try:
        net.load_state_dict(phi)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: its phenotype does not fit config {cfg.name!r}: {e}") from None
