"""Ablation studies of the incremental regression (paper section 6.1, Figure 4): the cells they are made of.

    python -m tinydan.regression ablate --study models       # Figure 4 top: net0 ... net5
    python -m tinydan.regression ablate --study sharing      # Figure 4 bottom-left
    python -m tinydan.regression ablate --study channels     # Figure 4 bottom-right
    python -m tinydan.regression ablate --study meta-grad    # first_order vs one_step, equal budget
    python -m tinydan.regression ablate --study baselines    # naive, EWC, replay, joint, warp layers
    python -m tinydan.regression ablate --study all --out runs/ablations
    python -m tinydan.regression report runs/regression-x runs/ablations   # one Markdown file

The studies
-----------
* **models**: net0 (meta-learned shared phi, fixed at deployment), net1 (the same phi, plastic),
  net2 (random shared phi, fixed), net3 (random shared, plastic), net4 (random unique DANs, fixed),
  net5 (random unique, plastic), all from the same theta_0, on the same held-out functions; memory
  and total loss after every window with 95% CIs. *Plastic* means that phi is also updated at
  deployment, by the synapses' optimizer and learning rate, and each function needs its own copy
  of phi: ``deploy_plastic`` deploys the functions ONE AT A TIME (a plain loop over functions, only
  for the plastic variants; the fixed ones deploy every function at once along the population
  axis of the synapses).
* **sharing**: meta-training curves of the meta-loss (the memory loss for configs with
  ``meta_loss = "memory"``) for ``global``, ``per_layer`` and ``unique`` DANs over several seeds,
  and each final phi deployed on the held-out functions.
* **channels**: the same for ``n_channels`` in (1, 5, 10, 20, 40) (global sharing).
* **meta-grad**: ``first_order`` against ``one_step`` meta-gradients, each meta-training for the
  same budget of seconds (process CPU time by default, which equals wall-clock time on an idle
  core and stays fair on a shared machine; ``clock="wall"`` for wall-clock time; a run stops at
  the first epoch boundary past the budget). Validation deployments are not counted. The phi with
  the best validation score is deployed on the held-out functions. One-step needs SGD synapses:
  under a config with Adam synapses (``authors``) both arms use SGD at the same learning rate.
* **baselines**: net0 against a plain MLP (1-40-40-1) trained sequentially with SGD (naive, its
  learning rate tuned on validation functions), EWC (lambda tuned on validation functions, the
  naive learning rate), experience replay (a reservoir of ``buffer_size`` points per function,
  its learning rate tuned on validation functions), the MLP trained jointly on all windows (the
  upper bound), and WarpGrad-style warp layers (``tinydan.baselines.WarpNet``) meta-learned with
  Algorithm 1 on the same config and fixed at deployment, with about as many meta-learned
  parameters as the DANs' phi. Hyper-parameters are chosen by the mean final MSE on the validation
  functions (``VAL_SEED``), never on the held-out ones (``EVAL_SEED``).

net0 is a meta-trained phenotype: ``--phenotype PATH`` (e.g. the ``phenotype.npz`` of a
``python -m tinydan.regression run``), else the study meta-trains the config itself
(``OUT/phenotype/``, resumable, shared by all studies of ``--study all``).

Cells, resume and parallelism
-----------------------------
A study is a list of *cells* (one meta-training run, one deployed model, ...). Each finished cell
is written atomically to ``OUT/cells/<name>.json`` together with its *key* (the config and every
study setting that it depends on); a rerun skips every cell whose file is present with the same
key, so an interrupted study only computes the missing cells, and a study with changed settings
recomputes exactly the cells they touch. Cells run in worker processes (``workers``: default one
per core, 0 = inline) and the results are aggregated into ``results.json``, ``results.md`` and
PNG figures.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shlex
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..autograd import grad, no_grad
from ..checkpoint import CheckpointError, write_atomic
from ..continual import choose_on_validation, format_ci, mean_ci, results_table, summarize, to_jsonable
from ..meta import MetaTrainer, SynapseAdam, task_loss
from ..nn.layers import PlainMLP
from .configs import REGRESSION_CONFIGS, RegressionConfig, build_regression_net, regression_config
from ..nn.dan import SHARINGS
from ..optim import SGD, Adam
from ..tasks import EVAL_SEED, VAL_SEED, SineSequence, sample_functions
from ..parallel import Workers, set_blas_threads, usable_cores
from ..tensor import Tensor, wrap
from .cli import progress

__all__ = ["STUDIES", "SIZES", "StudySizes", "Cell", "run_cells", "deploy_plastic", "ensure_phenotype"]

STUDIES = ("models", "sharing", "channels", "meta-grad", "baselines")
CELL_FORMAT = 1
EVAL_POINTS = 200
MLP_SIZES = (1, 40, 40, 1)


@dataclass(frozen=True)
class StudySizes:
    """How big the studies are (the CLI's ``--sizes`` and per-field options)."""

    seeds: int = 3                     # sharing and channels: meta-training seeds per variant
    meta_epochs: int | None = None     # sharing and channels: meta-epochs per run (None: a fifth
                                       # of the config's, 40 for `default`, 6 for `authors`)
    channels: tuple = (1, 5, 10, 20, 40)
    sharings: tuple = SHARINGS
    meta_grad_seeds: int = 2
    budget_s: float = 240.0            # meta-grad: seconds of meta-training per arm and seed
    clock: str = "cpu"                 # meta-grad budget clock: "cpu" (process time) or "wall"
    eval_functions: int | None = None  # held-out functions (None: the config's, 50)
    lr_grid: tuple = (0.001, 0.003, 0.01, 0.03, 0.1)
    ewc_lambdas: tuple = (0.1, 1.0, 10.0, 100.0, 1000.0)
    buffer_size: int = 10              # replay: points kept per function
    replay_batch: int = 4              # replay: buffer points added to every step's batch
    warp_epochs: int | None = None     # warp layers: meta-epochs (None: the config's)

    def __post_init__(self):
        for name in ("seeds", "meta_grad_seeds", "buffer_size", "replay_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("meta_epochs", "warp_epochs"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1 (or None), got {getattr(self, name)}")
        if self.eval_functions is not None and self.eval_functions < 2:
            raise ValueError(f"eval_functions must be >= 2 (confidence intervals), got {self.eval_functions}")
        if not self.budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s}")
        if self.clock not in ("cpu", "wall"):
            raise ValueError(f"clock must be 'cpu' or 'wall', got {self.clock!r}")
        bad = [s for s in self.sharings if s not in SHARINGS]
        if bad or not self.sharings:
            raise ValueError(f"sharings must be a non-empty subset of {SHARINGS}, got {self.sharings}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive numbers, got {self.channels}")

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "StudySizes":
        return replace(self, **changes)


SIZES = {
    "default": StudySizes(),
    # seconds: for tests and for trying the commands out
    "tiny": StudySizes(seeds=1, meta_epochs=1, channels=(1, 3), meta_grad_seeds=1, budget_s=0.2,
                       eval_functions=3, lr_grid=(0.01, 0.1), ewc_lambdas=(1.0, 100.0),
                       buffer_size=4, replay_batch=2, warp_epochs=1),
}


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _json(obj) -> str:
    return json.dumps(to_jsonable(obj), indent=1, allow_nan=False)


def _normal(obj):
    """obj as it reads back from JSON (tuples -> lists, numpy -> Python)."""
    return json.loads(json.dumps(to_jsonable(obj)))


def _study_epochs(cfg: RegressionConfig, sizes: StudySizes) -> int:
    return max(1, cfg.meta_epochs // 5) if sizes.meta_epochs is None else int(sizes.meta_epochs)


def _n_eval(cfg: RegressionConfig, sizes: StudySizes) -> int:
    return cfg.eval_functions if sizes.eval_functions is None else int(sizes.eval_functions)


def _held_out(cfg: RegressionConfig, n: int):
    return sample_functions(cfg, np.random.default_rng(EVAL_SEED), n, "test")


def _validation(cfg: RegressionConfig):
    return sample_functions(cfg, np.random.default_rng(VAL_SEED), cfg.val_functions, "val")


def _versions() -> dict:
    out = {"tinydan": __version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        if rev.returncode == 0:
            out["git"] = rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _file_sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# plastic deployment (net1, net3, net5)
# ---------------------------------------------------------------------------------------------
def deploy_plastic(net, theta0: dict, functions, cfg: RegressionConfig, lr: float | None = None,
                   phi_lr: float | None = None, seed: int = 0) -> dict:
    """Like ``regression.deploy`` (same points, same R), but phi learns too, at every step, with the
    synapses' optimizer (SGD, or Adam for configs with ``inner_optimizer = "adam"``) at ``phi_lr``
    (default: the synapses' learning rate).

    Every function needs its own copy of phi, so the functions are deployed ONE AT A TIME (a plain
    loop over functions; each starts from ``net``'s phi, which is restored at the end).
    """
    lr = cfg.inner_lr if lr is None else lr
    phi_lr = lr if phi_lr is None else phi_lr
    F, T = len(functions), cfg.n_windows
    seq = SineSequence(functions, np.random.default_rng([seed, 7]), steps=cfg.steps_per_window,
                       batch=cfg.inner_batch, n_windows=T, meta_batch_size=cfg.meta_batch)
    batches = list(seq.inner_batches())                        # every step's (x, y), (F, b, 1)
    xe, ye = seq.eval_points(EVAL_POINTS)                       # (F, T*200, 1)
    base = net.state_dict()
    phi = net.parameters()
    R = np.zeros((F, T, T))
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            for f in range(F):
                net.load_state_dict(base)
                theta = {k: Tensor(np.asarray(v)[:1].copy(), requires_grad=True)
                         for k, v in theta0.items()}
                adam = cfg.inner_optimizer == "adam"
                theta_opt = SynapseAdam(lr) if adam else None
                phi_opt = (Adam if adam else SGD)(phi, lr=phi_lr) if phi_lr > 0 else None
                for step, (x, y) in enumerate(batches):
                    names = list(theta)
                    loss = task_loss(net, theta, wrap(x[f:f + 1]), wrap(y[f:f + 1]))
                    gs = grad(loss, [theta[k] for k in names] + phi)
                    gt, gp = gs[:len(names)], gs[len(names):]
                    if theta_opt is not None:
                        theta = theta_opt.step(theta, gt)
                    else:
                        theta = {k: Tensor(theta[k].data - lr * g.data, requires_grad=True)
                                 for k, g in zip(names, gt)}
                    if phi_opt is not None:
                        phi_opt.step(gp)
                    if (step + 1) % cfg.steps_per_window == 0:
                        w = step // cfg.steps_per_window
                        with no_grad():
                            p = net(wrap(xe[f:f + 1]), theta).data      # (1, T*200, 1)
                        R[f, w, :] = ((p - ye[f:f + 1]) ** 2).reshape(T, EVAL_POINTS).mean(-1)
    finally:
        net.load_state_dict(base)
    R = np.where(np.isfinite(R), R, 1e6)
    return {"R": R}


# ---------------------------------------------------------------------------------------------
# the phenotype of net0
# ---------------------------------------------------------------------------------------------
def ensure_phenotype(cfg: RegressionConfig, root: Path, seed: int = 0, phenotype: Path | None = None,
                     workers: int | None = None, quiet: bool = False, log=print):
    """(Phenotype, reference) for net0: the file ``phenotype`` if given, else ``root/phenotype/``
    (meta-trained with ``regression.meta_train`` for cfg.meta_epochs, resumed if interrupted, reused
    when it exists for the same config and seed). The reference {path, sha1} goes into the keys
    of the cells that deploy it."""
    from .regression import load_phenotype, meta_train, save_phenotype
    if phenotype is not None:
        path = Path(phenotype)
        ph = load_phenotype(path)
        return ph, {"path": str(path.resolve()), "sha1": _file_sha1(path)}
    pdir = Path(root) / "phenotype"
    path = pdir / "phenotype.npz"
    if path.exists():
        try:
            ph = load_phenotype(path, cfg)
            if ph.meta.get("seed") == seed:
                log(f"reusing the phenotype in {path}")
                return ph, {"path": str(path.resolve()), "sha1": _file_sha1(path)}
        except CheckpointError:
            pass
        log(f"{path} was made with other settings: meta-training again")
    try:
        ph = meta_train(cfg, seed, pdir, resume=True, quiet=quiet, log=log, workers=workers)
    except CheckpointError as e:
        log(f"cannot resume from {pdir / 'checkpoint.npz'} ({str(e).splitlines()[0]}): starting over")
        ph = meta_train(cfg, seed, pdir, resume=False, quiet=quiet, log=log, workers=workers)
    save_phenotype(ph, path)
    return ph, {"path": str(path.resolve()), "sha1": _file_sha1(path)}


# ---------------------------------------------------------------------------------------------
# cells: module-level functions of a JSON spec, run inline or in a worker process
# ---------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One unit of a study: ``fn`` (a ``_cell_*`` function of this module) applied to ``spec``.
    ``needs`` names cells whose results it reads (as ``spec["inputs"]``, not part of its key)."""

    name: str
    fn: str
    spec: dict
    needs: tuple = ()


def _cell_key(study: str, cell: Cell) -> dict:
    return _normal({"format": CELL_FORMAT, "study": study, "cell": cell.name, "fn": cell.fn,
                    "needs": list(cell.needs), "spec": cell.spec})


def _load_cell(path: Path, key: dict):
    """The stored result if ``path`` holds a finished cell with this key, else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or "result" not in data:
        return None
    return data


def _run_cell(fn: str, spec: dict, path: str, key: dict) -> dict:
    """Run one cell and write {key, result, seconds} atomically to ``path`` (in the worker)."""
    set_blas_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    result = globals()[fn](spec)
    data = {"key": key, "result": to_jsonable(result), "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "finished": datetime.now().isoformat(timespec="seconds")}
    write_atomic(Path(path), _json(data))
    return data


def run_cells(study: str, cells: list, cell_dir: Path, workers: int | None = None,
              quiet: bool = False, log=print, executor=None) -> dict:
    """Every cell's stored data ({key, result, seconds, ...}, plus "cached"), computing only the
    cells without a matching file, at most ``workers`` at a time (0: inline, in order).

    ``executor``: any ``concurrent.futures.Executor`` to run the cells on instead of a local
    ``Workers`` pool (a cluster's, for instance: each cell writes its own file under ``cell_dir``,
    which must then be a folder every worker machine sees); ``workers`` is how many cells are
    submitted at a time.
    """
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"cell names must be unique, got {names}")
    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    done: dict = {}
    for c in cells:
        data = _load_cell(cell_dir / f"{c.name}.json", _cell_key(study, c))
        if data is not None:
            done[c.name] = dict(data, cached=True)
    todo = [c for c in cells if c.name not in done]
    if done:
        log(f"{study}: {len(done)} of {len(cells)} cells already done in {cell_dir}")
    n = usable_cores() if workers is None else int(workers)
    own = executor is None
    bar = progress(len(cells), f"ablation {study}", quiet, len(done))
    try:
        with (Workers(n) if own else contextlib.nullcontext(executor)) as pool:
            running: dict = {}
            while todo or running:
                ready = [c for c in todo if all(d in done for d in c.needs)]
                if not ready and not running:
                    missing = sorted({d for c in todo for d in c.needs} - set(names))
                    raise ValueError(f"cells {[c.name for c in todo]} need unknown cells {missing}")
                while ready and len(running) < max(1, n):
                    c = ready.pop(0)
                    todo.remove(c)
                    spec = dict(c.spec, inputs={d: done[d]["result"] for d in c.needs})
                    fut = pool.submit(_run_cell, c.fn, spec, str(cell_dir / f"{c.name}.json"),
                                      _cell_key(study, c))
                    running[fut] = c
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    c = running.pop(fut)
                    done[c.name] = dict(fut.result(), cached=False)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(c.name)
    finally:
        if bar is not None:
            bar.close()
    return done


def _cell_deploy_net(spec: dict) -> dict:
    """models / baselines: deploy net0..net5 (phi meta-learned or random, fixed or plastic)."""
    from .regression import deploy, load_phenotype
    ph = load_phenotype(spec["phenotype"]["path"])
    cfg, seed = ph.cfg, spec["seed"]
    if spec["phi"] == "meta":
        net = ph.net
    else:
        net = build_regression_net(cfg, np.random.default_rng([seed, 99]), sharing=spec["sharing"])
    functions = _held_out(cfg, spec["n_eval"])
    run = deploy_plastic if spec["plastic"] else deploy
    return {"R": run(net, ph.theta0, functions, cfg, seed=seed)["R"],
            "phi_parameters": net.num_parameters()}


def _cell_meta_curve(spec: dict) -> dict:
    """sharing / channels: meta-train, recording the meta-loss, then deploy the final phi."""
    from .regression import deploy, new_trainer
    cfg = RegressionConfig.from_dict(spec["config"])
    seed = spec["seed"]
    tr = new_trainer(cfg, seed)
    losses: list = []
    t0 = time.process_time()
    for _ in range(cfg.meta_epochs):
        tr.run_epoch(progress=losses.append)
    seconds = time.process_time() - t0
    block = cfg.steps_per_window
    curve = np.asarray(losses).reshape(-1, block).mean(axis=1)         # one value per window
    R = deploy(tr.net, tr.theta0, _held_out(cfg, spec["n_eval"]), cfg, seed=seed)["R"]
    return {"block_meta_loss": curve, "steps_per_block": block, "epoch_meta_loss": tr.history["meta_loss"],
            "R": R, "phi_parameters": tr.net.num_parameters(),
            "cpu_seconds_per_epoch": seconds / cfg.meta_epochs}


def _cell_meta_grad(spec: dict) -> dict:
    """meta-grad: meta-train for a budget of seconds, validating; deploy the best phi."""
    from .regression import deploy, new_trainer, validate
    cfg = RegressionConfig.from_dict(spec["config"])
    seed, budget = spec["seed"], float(spec["budget_s"])
    clock = time.process_time if spec["clock"] == "cpu" else time.perf_counter
    tr = new_trainer(cfg, seed)
    used, curve, val = 0.0, [], []
    best = (float("inf"), 0, tr.net.state_dict())
    while used < budget:
        t0 = clock()
        stats = tr.run_epoch()
        used += clock() - t0
        curve.append((used, tr.epoch, stats["meta_loss"]))
        if tr.epoch % cfg.val_every == 0 or used >= budget:
            v = validate(tr.net, tr.theta0, cfg, seed)
            val.append((used, tr.epoch, v))
            if v < best[0]:
                best = (v, tr.epoch, tr.net.state_dict())
    tr.net.load_state_dict(best[2])
    R = deploy(tr.net, tr.theta0, _held_out(cfg, spec["n_eval"]), cfg, seed=seed)["R"]
    return {"R": R, "curve": curve, "validation": val, "epochs": tr.epoch, "seconds": used,
            "best_val": best[0], "best_epoch": best[1]}


def _mlp_theta0(seed: int) -> dict:
    return PlainMLP(MLP_SIZES).init_synapses(1, np.random.default_rng([seed, 5]))


def _cell_baseline(spec: dict) -> dict:
    """baselines: the plain MLP sequentially with SGD ("naive"), "ewc" or "replay", tuned on the
    validation functions, then deployed on the held-out functions."""
    from .baselines import sequential_deploy
    cfg = RegressionConfig.from_dict(spec["config"])
    seed, method = spec["seed"], spec["method"]
    mlp, theta0 = PlainMLP(MLP_SIZES), _mlp_theta0(seed)
    val, held = _validation(cfg), _held_out(cfg, spec["n_eval"])
    opts = {"capacity": spec["buffer_size"], "replay_batch": spec["replay_batch"]}

    def final(functions, **kw):
        return sequential_deploy(mlp, theta0, functions, cfg, seed=seed, **kw)["R"][:, -1].mean(-1)

    out: dict = {"method": method}
    if method == "ewc":
        lr = spec["inputs"]["naive"]["lr"]
        lam, scores = choose_on_validation(lambda v: final(val, lr=lr, method="ewc", lam=v),
                                          spec["ewc_lambdas"])
        out.update(lr=lr, lam=lam, val_scores=scores)
        kw = {"lr": lr, "method": "ewc", "lam": lam}
    else:
        lr, scores = choose_on_validation(lambda v: final(val, lr=v, method=method, **opts),
                                         spec["lr_grid"])
        out.update(lr=lr, val_scores=scores)
        kw = {"lr": lr, "method": method, **opts}
    out["R"] = sequential_deploy(mlp, theta0, held, cfg, seed=seed, **kw)["R"]
    out["parameters"] = mlp.num_synapses()
    return out


def _cell_joint(spec: dict) -> dict:
    """baselines: the MLP trained on all windows' points at once (the upper bound)."""
    from .regression import train_joint
    cfg = RegressionConfig.from_dict(spec["config"])
    R = train_joint(PlainMLP(MLP_SIZES), _mlp_theta0(spec["seed"]), _held_out(cfg, spec["n_eval"]),
                    cfg, epochs=cfg.joint_epochs, seed=spec["seed"])["R"]
    return {"R": R, "parameters": PlainMLP(MLP_SIZES).num_synapses()}


def _cell_warp(spec: dict) -> dict:
    """baselines: warp layers meta-learned with Algorithm 1 (best validation snapshot), deployed
    with the warp layers fixed."""
    from .baselines import WarpNet, warp_width
    from .regression import _sampler, deploy, validate  # noqa: F401
    cfg = RegressionConfig.from_dict(spec["config"])
    seed, epochs = spec["seed"], spec["epochs"]
    hidden = len(cfg.nodes) - 2
    h = warp_width(spec["phi_parameters"], hidden)
    net = WarpNet((cfg.nodes[0],) + (h,) * hidden + (cfg.nodes[-1],))
    theta0 = net.init_synapses(cfg.population, np.random.default_rng([seed, 21]))
    tr = MetaTrainer(net, theta0, _sampler(cfg), cfg.inner_lr, cfg.meta_lr, cfg.meta_grad,
                     cfg.meta_optimizer, seed=seed, inner_optimizer=cfg.inner_optimizer,
                     meta_updates=cfg.meta_updates)
    best, val = (float("inf"), 0, net.state_dict()), []
    for e in range(epochs):
        tr.run_epoch()
        if tr.epoch % cfg.val_every == 0 or tr.epoch == epochs:
            v = validate(net, theta0, cfg, seed)
            val.append((tr.epoch, v))
            if v < best[0]:
                best = (v, tr.epoch, net.state_dict())
    net.load_state_dict(best[2])
    R = deploy(net, theta0, _held_out(cfg, spec["n_eval"]), cfg, seed=seed)["R"]
    return {"R": R, "warp_parameters": net.num_parameters(), "synapses": net.num_synapses(),
            "width": h, "best_epoch": best[1], "best_val": best[0], "validation": val,
            "meta_loss": tr.history["meta_loss"]}
