"""Ablation studies of the incremental regression (paper Figure 4, SPEC section 5) and the report.

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

from . import __version__
from .autograd import grad, no_grad
from .checkpoint import CheckpointError
from .continual import choose_on_validation, format_ci, mean_ci, results_table, summarize, to_jsonable
from .meta import MetaTrainer, SynapseAdam, task_loss
from .models import REGRESSION_CONFIGS, PlainMLP, RegressionConfig, build_regression_net, regression_config
from .nn.dan import SHARINGS
from .optim import SGD, Adam
from .tasks import EVAL_SEED, VAL_SEED, SineSequence, sample_functions
from .tensor import Tensor, wrap

__all__ = ["STUDIES", "StudySizes", "SIZES", "run_study", "run_all", "deploy_plastic",
           "ensure_phenotype", "write_report", "add_ablate_arguments", "add_report_arguments",
           "ablate_main", "report_main"]

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
def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    from .parallel import set_blas_threads
    set_blas_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    result = globals()[fn](spec)
    data = {"key": key, "result": to_jsonable(result), "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "finished": datetime.now().isoformat(timespec="seconds")}
    _write_atomic(Path(path), _json(data))
    return data


def run_cells(study: str, cells: list, cell_dir: Path, workers: int | None = None,
              quiet: bool = False, log=print) -> dict:
    """Every cell's stored data ({key, result, seconds, ...}, plus "cached"), computing only the
    cells without a matching file, at most ``workers`` at a time (0: inline, in order)."""
    from .parallel import Workers, usable_cores
    from .regression import _progress
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
    bar = _progress(len(cells), f"ablation {study}", quiet, len(done))
    try:
        with Workers(n) as pool:
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
    from .regression import _sampler, deploy, validate
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


# ---------------------------------------------------------------------------------------------
# the studies: cells, then results.json, results.md and figures
# ---------------------------------------------------------------------------------------------
MODELS = {   # name: (label, phi, sharing, plastic)
    "net0": ("net0: meta-learned shared phi, fixed", "meta", "global", False),
    "net1": ("net1: meta-learned shared phi, plastic", "meta", "global", True),
    "net2": ("net2: random shared phi, fixed", "random", "global", False),
    "net3": ("net3: random shared phi, plastic", "random", "global", True),
    "net4": ("net4: random unique DANs, fixed", "random", "unique", False),
    "net5": ("net5: random unique DANs, plastic", "random", "unique", True),
}


def _models_cells(cfg, sizes, seed, ref):
    return [Cell(name, "_cell_deploy_net", {"phenotype": ref, "phi": phi, "sharing": sharing,
                                             "plastic": plastic, "seed": seed,
                                             "n_eval": _n_eval(cfg, sizes)})
            for name, (_, phi, sharing, plastic) in MODELS.items()]


def _curve_cells(study, cfg, sizes, seed):
    if study == "sharing":
        variants = [(s, cfg.replace(sharing=s, meta_epochs=_study_epochs(cfg, sizes)))
                    for s in sizes.sharings]
    else:
        variants = [(f"C{c}", cfg.replace(n_channels=int(c), sharing="global",
                                          meta_epochs=_study_epochs(cfg, sizes))) for c in sizes.channels]
    return [Cell(f"{v}-seed{seed + k}", "_cell_meta_curve",
                 {"config": c.to_dict(), "seed": seed + k, "n_eval": _n_eval(cfg, sizes)})
            for v, c in variants for k in range(sizes.seeds)]


def _meta_grad_config(cfg):
    return cfg.replace(inner_optimizer="sgd") if cfg.inner_optimizer != "sgd" else cfg


def _meta_grad_cells(cfg, sizes, seed):
    base = _meta_grad_config(cfg)
    return [Cell(f"{mode}-seed{seed + k}", "_cell_meta_grad",
                 {"config": base.replace(meta_grad=mode).to_dict(), "seed": seed + k,
                  "budget_s": sizes.budget_s, "clock": sizes.clock, "n_eval": _n_eval(cfg, sizes)})
            for mode in ("first_order", "one_step") for k in range(sizes.meta_grad_seeds)]


def _baseline_cells(cfg, sizes, seed, ref, n_phi):
    common = {"config": cfg.to_dict(), "seed": seed, "n_eval": _n_eval(cfg, sizes)}
    net0 = _models_cells(cfg, sizes, seed, ref)[0]
    return [
        net0,
        Cell("naive", "_cell_baseline", dict(common, method="naive", lr_grid=sizes.lr_grid,
                                             buffer_size=sizes.buffer_size, replay_batch=sizes.replay_batch)),
        Cell("ewc", "_cell_baseline", dict(common, method="ewc", lr_grid=sizes.lr_grid,
                                           ewc_lambdas=sizes.ewc_lambdas, buffer_size=sizes.buffer_size,
                                           replay_batch=sizes.replay_batch), needs=("naive",)),
        Cell("replay", "_cell_baseline", dict(common, method="replay", lr_grid=sizes.lr_grid,
                                              buffer_size=sizes.buffer_size, replay_batch=sizes.replay_batch)),
        Cell("joint", "_cell_joint", common),
        Cell("warp", "_cell_warp", dict(common, phi_parameters=n_phi,
                                        epochs=sizes.warp_epochs or cfg.meta_epochs)),
    ]


def _cell_times(done: dict) -> dict:
    return {k: {"seconds": d.get("seconds"), "cpu_seconds": d.get("cpu_seconds"),
                "cached": d.get("cached", False)} for k, d in done.items()}


def _window_table(summaries: dict, metric: str) -> str:
    T = len(next(iter(summaries.values()))[metric]["mean"])
    rows = [[name] + [format_ci(m, h) for m, h in zip(s[metric]["mean"], s[metric]["ci"])]
            for name, s in summaries.items()]
    return _md_table(["model"] + [f"after window {i + 1}" for i in range(T)], rows)


def _deployment_figures(summaries: dict, out: Path, what: str) -> list:
    from . import plots
    files = []
    for metric in ("total", "memory"):
        path = out / f"deployment_{metric}_loss.png"
        plots.plot_curves({k: s[metric] for k, s in summaries.items()}, path,
                          xlabel="after window i", ylabel=f"{metric} loss (MSE)", logy=True,
                          title=f"{what}: {metric} loss during deployment (95% CI)")
        files.append(path.name)
    return files


def _aggregate_models(cfg, done, out, ph_meta):
    summaries = {MODELS[k][0]: summarize(done[k]["result"]["R"]) for k in MODELS}
    md = (f"Deployment on {summaries[MODELS['net0'][0]]['n_sequences']} held-out functions, config "
          f"`{cfg.name}`, all models from the same theta_0. Plastic = phi also learns at deployment "
          f"(one function at a time). Final = whole-function MSE after the last window.\n\n"
          + results_table(summaries, metrics=("final", "forgetting"))
          + "\nTotal loss (mean over all windows) after each window:\n\n" + _window_table(summaries, "total")
          + "\nMemory loss (mean over the windows seen so far) after each window:\n\n"
          + _window_table(summaries, "memory"))
    figs = _deployment_figures(summaries, out, "Figure 4 top")
    extra = {"phi_parameters": {MODELS[k][0]: done[k]["result"]["phi_parameters"] for k in MODELS}}
    return summaries, md, figs, extra


def _aggregate_curves(study, cfg, sizes, done, out):
    from . import plots
    variants: dict = {}
    for name, d in done.items():
        variants.setdefault(name.rsplit("-seed", 1)[0], []).append(d["result"])
    loss_name = "memory loss" if cfg.meta_loss == "memory" else f"meta-loss ({cfg.meta_loss})"
    rows, summaries, history = [], {}, {}
    for v, runs in variants.items():
        label = f"n_channels = {v[1:]}" if study == "channels" else v
        R = np.concatenate([np.asarray(r["R"]) for r in runs])       # seeds x functions
        s = summarize(R)
        last = [r["epoch_meta_loss"][-1] for r in runs]
        lm, lh = mean_ci(last) if len(last) > 1 else (last[0], None)
        curves = np.array([r["epoch_meta_loss"] for r in runs])          # (seeds, epochs)
        steps = np.arange(curves.shape[1]) + 1
        history[label] = (steps, curves)
        summaries[label] = dict(s, last_epoch_meta_loss={"mean": lm, "ci": lh},
                                cpu_seconds_per_epoch=float(np.mean([r["cpu_seconds_per_epoch"] for r in runs])),
                                phi_parameters=runs[0]["phi_parameters"], seeds=len(runs),
                                per_seed_final=[float(np.mean(np.asarray(r["R"])[:, -1])) for r in runs],
                                curve={"meta_epoch": steps, "values": curves,
                                       "per_window": [r["block_meta_loss"] for r in runs]})
        rows.append([label, runs[0]["phi_parameters"], len(runs), format_ci(lm, lh),
                     format_ci(s["final"]["mean"], s["final"]["ci"]),
                     f"{summaries[label]['cpu_seconds_per_epoch']:.2f}"])
    path = out / f"meta_training_{study}.png"
    title = ("Figure 4 bottom-left: one phenotype for every DAN, one per layer, one per neuron"
             if study == "sharing" else "Figure 4 bottom-right: channels per VEC")
    plots.plot_meta_training(history, path, title=title, ylabel=f"{loss_name} (mean per meta-epoch)",
                             logy=True, xlabel="meta-epoch")
    md = (f"Meta-training of config `{cfg.name}` for {_study_epochs(cfg, sizes)} meta-epochs, {sizes.seeds} "
          f"seed(s) per variant; {loss_name} during meta-training, then the final phi deployed on "
          f"{_n_eval(cfg, sizes)} held-out functions (final MSE pooled over seeds x functions).\n\n"
          + _md_table(["variant", "phi parameters", "seeds", f"last-epoch {loss_name} (95% CI over seeds)",
                       "held-out final MSE (95% CI)", "CPU s / meta-epoch"], rows))
    return summaries, md, [path.name], {}


def _aggregate_meta_grad(cfg, sizes, done, out):
    arms: dict = {}
    for name, d in done.items():
        arms.setdefault(name.rsplit("-seed", 1)[0], []).append((name, d["result"]))
    rows, summaries, val_hist, loss_hist = [], {}, {}, {}
    for arm, runs in arms.items():
        R = np.concatenate([np.asarray(r["R"]) for _, r in runs])
        s = summarize(R)
        epochs = [r["epochs"] for _, r in runs]
        summaries[arm] = dict(s, epochs=epochs, seconds=[r["seconds"] for _, r in runs],
                              best_val=[r["best_val"] for _, r in runs],
                              best_epoch=[r["best_epoch"] for _, r in runs])
        for name, r in runs:
            v = np.asarray(r["validation"], dtype=float)
            c = np.asarray(r["curve"], dtype=float)
            val_hist[name] = (v[:, 0], v[:, 2])
            loss_hist[name] = (c[:, 0], c[:, 2])
        rows.append([arm, len(runs), f"{np.mean(epochs):.1f}",
                     f"{np.mean([r['seconds'] for _, r in runs]):.1f}",
                     f"{np.mean([r['best_val'] for _, r in runs]):.4f}",
                     format_ci(s["final"]["mean"], s["final"]["ci"])])
    from . import plots
    clock = "CPU" if sizes.clock == "cpu" else "wall-clock"
    plots.plot_arms(val_hist, out / "meta_grad_validation.png", f"meta-training {clock} seconds",
                    "validation final MSE", "first_order vs one_step: deployment on validation functions")
    plots.plot_arms(loss_hist, out / "meta_grad_meta_loss.png", f"meta-training {clock} seconds",
                    "meta-loss (mean per meta-epoch)", "first_order vs one_step: meta-loss")
    base = _meta_grad_config(cfg)
    note = ("" if base == cfg else f" One-step differentiates through an SGD step, so both arms "
            f"use SGD synapses (lr {base.inner_lr}) instead of the config's {cfg.inner_optimizer}.")
    md = (f"Config `{cfg.name}`, a budget of {sizes.budget_s:g} {clock} seconds of meta-training per "
          f"arm and seed (validation not counted; a run stops at the first epoch boundary past the "
          f"budget); the best validated phi deployed on {_n_eval(cfg, sizes)} held-out functions.{note}\n\n"
          + _md_table(["meta-gradient", "seeds", "meta-epochs in budget", f"{clock} s",
                       "best validation MSE", "held-out final MSE (95% CI)"], rows))
    return summaries, md, ["meta_grad_validation.png", "meta_grad_meta_loss.png"], {}


BASELINE_LABELS = {
    "net0": "net0: meta-learned DANs (fixed phi)",
    "naive": "naive: MLP, sequential SGD",
    "ewc": "EWC: MLP + diagonal-Fisher penalty",
    "replay": "replay: MLP + reservoir buffer",
    "joint": "joint: MLP on all windows (upper bound)",
    "warp": "warp layers: meta-learned, fixed",
}


def _aggregate_baselines(cfg, sizes, done, out, n_phi):
    summaries = {BASELINE_LABELS[k]: summarize(done[k]["result"]["R"]) for k in BASELINE_LABELS}
    r = {k: done[k]["result"] for k in done}
    details = {
        "naive": {"lr": r["naive"]["lr"], "val_scores": r["naive"]["val_scores"]},
        "ewc": {"lr": r["ewc"]["lr"], "lambda": r["ewc"]["lam"], "val_scores": r["ewc"]["val_scores"]},
        "replay": {"lr": r["replay"]["lr"], "val_scores": r["replay"]["val_scores"],
                   "buffer_size": sizes.buffer_size, "replay_batch": sizes.replay_batch},
        "joint": {"optimizer": f"Adam lr 0.01, {cfg.joint_epochs} epochs of minibatches of 32"},
        "warp": {k: r["warp"][k] for k in ("warp_parameters", "synapses", "width", "best_epoch", "best_val")},
        "dan_phi_parameters": n_phi, "mlp_parameters": r["naive"]["parameters"],
    }
    md = (f"Config `{cfg.name}`, {summaries[BASELINE_LABELS['net0']]['n_sequences']} held-out functions "
          f"(the same for every row). Hyper-parameters chosen on {cfg.val_functions} validation "
          f"functions only.\n\n" + results_table(summaries, metrics=("final", "forgetting"))
          + "\n" + _md_table(["baseline", "settings"], [
              ["naive", f"MLP {'-'.join(map(str, MLP_SIZES))} ({details['mlp_parameters']} parameters), "
                        f"SGD lr {details['naive']['lr']:g}"],
              ["EWC", f"lambda {details['ewc']['lambda']:g} (from {list(sizes.ewc_lambdas)}), SGD lr "
                      f"{details['ewc']['lr']:g}, true diagonal Fisher per finished window"],
              ["replay", f"reservoir of {sizes.buffer_size} points per function, {sizes.replay_batch} "
                         f"replayed per step, SGD lr {details['replay']['lr']:g}"],
              ["joint", details["joint"]["optimizer"]],
              ["warp layers", f"{details['warp']['warp_parameters']} meta-learned parameters (DAN phi: "
                              f"{n_phi}), width {details['warp']['width']}, "
                              f"{details['warp']['synapses']} synapses, best validated meta-epoch "
                              f"{details['warp']['best_epoch']}"],
          ]))
    figs = _deployment_figures(summaries, out, "baselines")
    return summaries, md, figs, {"baselines": details}


def _ablate_command(study, cfg, sizes_name, seed, phenotype, out) -> str:
    parts = ["python -m tinydan.regression ablate", "--study", study, "--config", cfg.name,
             "--sizes", sizes_name, "--seed", str(seed), "--out", shlex.quote(str(out))]
    if phenotype is not None:
        parts += ["--phenotype", shlex.quote(str(phenotype))]
    return " ".join(parts)


def run_study(study: str, cfg: RegressionConfig, out: Path, sizes: StudySizes | None = None,
              seed: int = 0, phenotype: Path | None = None, workers: int | None = None,
              quiet: bool = False, log=print, command: str | None = None, _ph=None) -> dict:
    """Run one study into ``out`` (resuming finished cells) and write results.json, results.md and
    the figures; returns the results dict."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {STUDIES} or 'all'")
    sizes = SIZES["default"] if sizes is None else sizes
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    extra: dict = {}
    if study in ("models", "baselines"):
        ph, ref = _ph if _ph is not None else ensure_phenotype(cfg, out, seed, phenotype, workers, quiet, log)
        if ph.cfg != cfg and phenotype is not None:
            log(f"using the phenotype's config {ph.cfg.name!r}")
        cfg = ph.cfg
        extra["phenotype"] = dict(ref, **{k: v for k, v in ph.meta.items()
                                           if k in ("seed", "best_val", "best_epoch", "command",
                                                    "meta_train_seconds")})
    if study == "models":
        cells = _models_cells(cfg, sizes, seed, ref)
    elif study in ("sharing", "channels"):
        cells = _curve_cells(study, cfg, sizes, seed)
    elif study == "meta-grad":
        cells = _meta_grad_cells(cfg, sizes, seed)
    else:
        n_phi = ph.net.num_parameters()
        cells = _baseline_cells(cfg, sizes, seed, ref, n_phi)
    done = run_cells(study, cells, out / "cells", workers, quiet, log)
    if study == "models":
        summaries, md, figs, more = _aggregate_models(cfg, done, out, extra.get("phenotype"))
    elif study in ("sharing", "channels"):
        summaries, md, figs, more = _aggregate_curves(study, cfg, sizes, done, out)
    elif study == "meta-grad":
        summaries, md, figs, more = _aggregate_meta_grad(cfg, sizes, done, out)
    else:
        summaries, md, figs, more = _aggregate_baselines(cfg, sizes, done, out, n_phi)
    titles = {"models": "net0 to net5 at deployment (Figure 4 top)",
              "sharing": "sharing schemes during meta-training (Figure 4 bottom-left)",
              "channels": "channels per VEC during meta-training (Figure 4 bottom-right)",
              "meta-grad": "first_order vs one_step meta-gradients at equal budget",
              "baselines": "continual-learning baselines"}
    command = command or _ablate_command(study, cfg, "custom", seed, phenotype, out)
    results = {
        "experiment": "incremental sine regression", "study": study, "title": titles[study],
        "config": cfg.to_dict(), "sizes": sizes.to_dict(), "seed": seed, "eval_seed": EVAL_SEED,
        "val_seed": VAL_SEED, "models": summaries, **extra, **more, "figures": figs,
        "cells": _cell_times(done), "seconds": time.perf_counter() - t0,
        "versions": _versions(), "command": command,
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    _write_atomic(out / "results.json", _json(results))
    _write_atomic(out / "results.md", f"# Ablation `{study}`: {titles[study]}\n\n{md}\n"
                                      f"Command: `{command}`\n")
    log(f"{study}: wrote {out}/results.json, results.md and {', '.join(figs)}")
    return results


def run_all(cfg: RegressionConfig, out: Path, sizes: StudySizes | None = None, seed: int = 0,
            phenotype: Path | None = None, workers: int | None = None, quiet: bool = False,
            log=print, command: str | None = None, studies=STUDIES) -> dict:
    """Every study into ``out/<study>/``, sharing one phenotype (``out/phenotype/`` unless given)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ph = None
    if "models" in studies or "baselines" in studies:
        ph = ensure_phenotype(cfg, out, seed, phenotype, workers, quiet, log)
        cfg = ph[0].cfg                      # a given phenotype's config, for every study
    results = {}
    for study in studies:
        results[study] = run_study(study, cfg, out / study, sizes, seed, phenotype, workers, quiet,
                                   log, command, _ph=ph)
    index = {"experiment": "incremental sine regression", "study": "all",
             "studies": {s: f"{s}/results.json" for s in studies}, "config": cfg.to_dict(),
             "sizes": (sizes or SIZES["default"]).to_dict(), "seconds": time.perf_counter() - t0,
             "versions": _versions(), "command": command or _ablate_command("all", cfg, "custom", seed,
                                                                            phenotype, out),
             "created": datetime.now().isoformat(timespec="seconds")}
    _write_atomic(out / "results.json", _json(index))
    _write_atomic(out / "results.md", "# Ablation studies\n\n" + "\n".join(
        f"- [{s}]({s}/results.md): {results[s]['title']}" for s in studies) + "\n")
    return results


# ---------------------------------------------------------------------------------------------
# report: finished runs and ablations in one Markdown file
# ---------------------------------------------------------------------------------------------
def _result_folders(run_dir: Path) -> list:
    """Folders under run_dir (itself, then its sub-folders) holding a results.json to report."""
    found, subs = [], sorted(p for p in run_dir.iterdir() if p.is_dir())
    try:                               # an `all` folder: its studies in their order
        order = list(json.loads((run_dir / "results.json").read_text()).get("studies", {}))
        subs.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
    except (OSError, ValueError, AttributeError):
        pass
    for d in [run_dir] + subs:
        f = d / "results.json"
        if f.is_file():
            try:
                res = json.loads(f.read_text())
            except ValueError:
                continue
            if res.get("study") != "all":
                found.append((d, res))
    return found


def write_report(run_dirs, out: Path) -> Path:
    """Collect the results of finished runs (``python -m tinydan.regression run`` folders and
    ablation folders, ``--study all`` ones included) into one Markdown file: per run its title,
    the command that produced it, its tables and figures; the versions at the end."""
    out = Path(out)
    sections, versions = [], []
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir} is not a folder of results")
        folders = _result_folders(run_dir)
        if not folders:
            raise FileNotFoundError(f"no results.json in {run_dir} or its sub-folders: is the run "
                                    "finished? (a study writes it when its last cell is done)")
        for d, res in folders:
            study = res.get("study")
            cfg = res.get("config", {}).get("name", "?")
            title = f"Ablation `{study}` ({res.get('title', '')})" if study else \
                f"Regression run, config `{cfg}`"
            md_file = d / "results.md"
            body = md_file.read_text() if md_file.is_file() else ""
            body = "\n".join(line for line in body.splitlines()
                             if not line.startswith("# ") and not line.startswith("Command: "))
            body = body.replace("\n## ", "\n#### ").replace("\n### ", "\n#### ")
            figs = sorted(p for p in d.glob("*.png"))
            rel = [os.path.relpath(f.resolve(), out.resolve().parent) for f in figs]
            lines = [f"## {title}", "", f"Folder: `{d}`", "",
                     f"Command: `{res.get('command', 'unknown')}`", "", body.strip(), ""]
            lines += [f"![{p.stem}]({r})" for p, r in zip(figs, rel)]
            sections.append("\n".join(lines) + "\n")
            v = res.get("versions", {})
            versions.append([f"`{d}`", cfg, res.get("seed", ""), v.get("tinydan", "?"),
                             v.get("git", "-"), v.get("numpy", "?"), v.get("python", "?"),
                             res.get("created", "?")])
    text = (f"# tinydan report\n\nCollected {datetime.now().isoformat(timespec='seconds')} from "
            f"{len(sections)} result folder(s).\n\n" + "\n".join(sections)
            + "\n## Versions\n\n" + _md_table(["folder", "config", "seed", "tinydan", "git", "numpy",
                                                "python", "created"], versions))
    _write_atomic(out, text)
    return out


# ---------------------------------------------------------------------------------------------
# command line (python -m tinydan.regression ablate / report)
# ---------------------------------------------------------------------------------------------
def _number_list(s: str) -> tuple:
    try:
        vals = tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {s!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {s!r}")
    return vals


def add_ablate_arguments(sp, positive_int, positive_float) -> None:
    """The options of ``ablate``."""
    sp.add_argument("--study", choices=[*STUDIES, "all"], default="all", help="which study (default all)")
    sp.add_argument("--config", choices=sorted(REGRESSION_CONFIGS), default="default",
                    help="model and protocol (default: default)")
    sp.add_argument("--sizes", choices=sorted(SIZES), default="default",
                    help="study sizes (default: default; tiny takes seconds)")
    sp.add_argument("--out", type=Path, help="output folder (default runs/ablate-<study>-<time>)")
    sp.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    sp.add_argument("--phenotype", type=Path,
                    help="phenotype of net0 (models, baselines), e.g. RUN/phenotype.npz; default: "
                         "meta-train the config into OUT/phenotype")
    sp.add_argument("--epochs", type=positive_int, help="meta-epochs of net0's phenotype (config's)")
    sp.add_argument("--seeds", type=positive_int, help="seeds per variant (sharing, channels)")
    sp.add_argument("--study-epochs", type=positive_int,
                    help="meta-epochs per run (sharing, channels; default a fifth of the config's)")
    sp.add_argument("--channels", type=_number_list, help="n_channels values, e.g. 1,5,10,20,40")
    sp.add_argument("--budget", type=positive_float, help="meta-grad: seconds per arm and seed")
    sp.add_argument("--clock", choices=["cpu", "wall"], help="meta-grad budget clock (default cpu)")
    sp.add_argument("--eval-functions", type=positive_int, help="held-out functions (default 50)")
    sp.add_argument("--buffer-size", type=positive_int, help="replay: points kept per function")
    sp.add_argument("--workers", type=int, help="worker processes for cells (default: one per core; 0 inline)")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")


def add_report_arguments(sp) -> None:
    """The options of ``report``."""
    sp.add_argument("runs", nargs="+", type=Path, help="run or ablation folders")
    sp.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown file (default report.md)")


def ablate_main(a, parser, command: str) -> int:
    """``python -m tinydan.regression ablate``."""
    sizes = SIZES[a.sizes]
    over = {k: v for k, v in (("seeds", a.seeds), ("meta_epochs", a.study_epochs),
                              ("channels", a.channels), ("budget_s", a.budget), ("clock", a.clock),
                              ("eval_functions", a.eval_functions), ("buffer_size", a.buffer_size))
            if v is not None}
    try:
        sizes = sizes.replace(**over)
    except ValueError as e:
        parser.error(str(e))
    cfg = regression_config(a.config, **({"meta_epochs": a.epochs} if a.epochs else {}))
    if a.phenotype is not None and not a.phenotype.exists():
        parser.error(f"phenotype {a.phenotype} does not exist")
    out = a.out or Path("runs") / f"ablate-{a.study}-{datetime.now():%Y%m%d-%H%M%S}"
    print(f"ablation {a.study!r}: config {cfg.name!r}, sizes {a.sizes!r}; writing to {out} "
          "(rerun the same command to resume)")
    if a.study == "all":
        run_all(cfg, out, sizes, a.seed, a.phenotype, a.workers, a.quiet, command=command)
    else:
        run_study(a.study, cfg, out, sizes, a.seed, a.phenotype, a.workers, a.quiet, command=command)
    return 0


def report_main(a, parser) -> int:
    """``python -m tinydan.regression report``."""
    try:
        path = write_report(a.runs, a.out)
    except FileNotFoundError as e:
        parser.error(str(e))
    print(f"wrote {path}")
    return 0
