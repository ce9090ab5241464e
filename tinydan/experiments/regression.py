"""Incremental sine regression (paper sections 3.1, 4.1, 6.1): meta-train a phenotype, deploy it,
compare it with random DANs and plain MLPs.

Protocol (docs/model-and-protocol.md): a function y = a0 sin(r0 x + p0) + a1 sin(r1 x + p1) is
learned window by window ([-5,-3], ..., [3,5]), 100 SGD steps of one point per window, never
revisiting a window. After each window the model is scored on 200 evenly spaced points of every
window, giving the loss matrix R. Held-out functions come from a fixed evaluation seed that
meta-training never uses; the checkpoint is chosen on separate validation functions. Many
functions are deployed at once along the population axis of the synapses.
"""
from __future__ import annotations

import itertools
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from ..autograd import grad, no_grad
from ..checkpoint import CheckpointError
from ..compiler import compile
from ..continual import choose_on_validation, results_table, summarize
from ..meta import MetaTrainer, SynapseAdam, deploy_step, task_loss
from ..nn.layers import PlainMLP
from ..optim import Adam
from ..parallel import Workers, one_blas_thread
from ..tasks import EVAL_SEED, VAL_SEED, SineFunctions, SineSequence, sample_functions
from ..tensor import Tensor, wrap
from .cli import progress
from .common import (Phenotype, command_line, learn_in_order, load_phi, meta_train_loop,
                     read_phenotype_file, save_phenotype_file, snapshots_from, versions,
                     write_results)
from .configs import RegressionConfig, build_regression_net

__all__ = ["deploy", "meta_train", "load_phenotype", "save_phenotype", "train_joint", "tune_mlp_lr",
           "validate", "new_trainer", "compare", "SHIPPED_PHENOTYPE", "KIND", "EVAL_POINTS"]

KIND = "tinydan.regression"
SHIPPED_PHENOTYPE = Path(__file__).resolve().parent.parent / "phenotypes" / "regression_default.npz"
EVAL_POINTS = 200


# ---------------------------------------------------------------------------------------------
# deployment: plain SGD on the synapses, phi fixed
# ---------------------------------------------------------------------------------------------
def _replicate(theta0: dict, n: int) -> dict:
    out = {}
    for k, v in theta0.items():
        v = np.asarray(v)
        out[k] = np.repeat(v[:1], n, axis=0) if v.shape[0] != n else v.copy()
    return out


def deploy(net, theta0: dict, functions: SineFunctions, cfg: RegressionConfig, lr: float | None = None,
           seed: int = 0, record: bool = False, optimizer: str | None = None,
           compiled: bool = True) -> dict:
    """Learn every function window by window with SGD on the synapses (phi fixed).

    Returns R (F, T, T) with R[f, i, j] = MSE on window j of function f after window i, and with
    ``record`` the predictions (F, T, T*200) on the evaluation grid after each window.
    ``optimizer`` (default ``cfg.inner_optimizer``): "sgd", or "adam" (config ``authors``).
    ``compiled``: the SGD step is recorded once and replayed (``tinydan.compile``; the same numbers).
    """
    lr = cfg.inner_lr if lr is None else lr
    adam = SynapseAdam(lr) if (optimizer or cfg.inner_optimizer) == "adam" else None
    F, T = len(functions), cfg.n_windows
    seq = SineSequence(functions, np.random.default_rng([seed, 7]), steps=cfg.steps_per_window,
                       batch=cfg.inner_batch, n_windows=T, meta_batch_size=cfg.meta_batch)
    theta = {k: Tensor(v, requires_grad=True) for k, v in _replicate(theta0, F).items()}
    xe, ye = seq.eval_points(EVAL_POINTS)                       # (F, T*200, 1)
    preds = np.zeros((F, T, T * EVAL_POINTS), dtype=np.float32) if record else None
    done = []

    def step(theta, x, y):
        return (adam.deploy_step(net, theta, x, y) if adam else deploy_step(net, theta, x, y, lr))[0]
    if adam is None and compiled:                # recorded once, replayed (the same numbers)
        step = compile(step)

    def evaluate(theta):
        with no_grad():
            p = net(wrap(xe), theta).data                       # (F, T*200, 1)
        if record:
            preds[:, len(done)] = p[..., 0]
        done.append(True)
        return ((p - ye) ** 2).reshape(F, T, EVAL_POINTS).mean(-1)

    batches = iter(seq.inner_batches())
    windows = (itertools.islice(batches, cfg.steps_per_window) for _ in range(T))
    with np.errstate(over="ignore", invalid="ignore"):   # a diverging baseline is scored, not fatal
        R, _ = learn_in_order(step, theta, windows, evaluate)
    if not np.all(np.isfinite(R)):
        R = np.where(np.isfinite(R), R, 1e6)                    # diverged runs count as huge losses
    return {"R": R, "preds": preds, "x": xe[0, :, 0], "y": ye[..., 0], "windows": seq.windows}


def train_joint(mlp: PlainMLP, theta0: dict, functions: SineFunctions, cfg: RegressionConfig,
                lr: float = 0.01, epochs: int = 300, batch: int = 32, seed: int = 0) -> dict:
    """The upper bound: the plain MLP trained on all T*steps points of each function at once
    (shuffled minibatches, Adam), then scored on every window. All rows of R are that final model."""
    F, T = len(functions), cfg.n_windows
    seq = SineSequence(functions, np.random.default_rng([seed, 7]), steps=cfg.steps_per_window,
                       batch=cfg.inner_batch, n_windows=T)
    X = seq.xs.transpose(2, 0, 1, 3).reshape(F, -1)             # the same points the others see
    Y = functions(X)
    theta = {k: Tensor(v, requires_grad=True) for k, v in _replicate(theta0, F).items()}
    params = list(theta.values())
    opt = Adam(params, lr=lr)
    rng = np.random.default_rng([seed, 11])
    n = X.shape[1]
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            x, y = X[:, idx, None], Y[:, idx, None].astype(np.float32)
            loss = task_loss(mlp, theta, wrap(x), wrap(y))
            opt.step(grad(loss, params))
    xe, ye = seq.eval_points(EVAL_POINTS)
    with no_grad():
        p = mlp(wrap(xe), theta).data
    err = ((p - ye) ** 2).reshape(F, T, EVAL_POINTS).mean(-1)   # (F, T)
    R = np.repeat(err[:, None, :], T, axis=1)
    return {"R": R}


def tune_mlp_lr(mlp: PlainMLP, theta0: dict, cfg: RegressionConfig, grid=(0.001, 0.003, 0.01, 0.03, 0.1),
                seed: int = 0) -> tuple[float, dict]:
    """The naive baseline's SGD learning rate: the lowest mean final MSE on the validation functions
    (never held-out ones), the criterion of every tuned baseline (``choose_on_validation``)."""
    val = sample_functions(cfg, np.random.default_rng(VAL_SEED), cfg.val_functions, "val")
    return choose_on_validation(
        lambda lr: deploy(mlp, theta0, val, cfg, lr=lr, seed=seed)["R"][:, -1].mean(-1), grid)


def validate(net, theta0: dict, cfg: RegressionConfig, seed: int = 0) -> float:
    """Mean final whole-function MSE on the validation functions (checkpoint selection)."""
    val = sample_functions(cfg, np.random.default_rng(VAL_SEED), cfg.val_functions, "val")
    return float(deploy(net, theta0, val, cfg, seed=seed)["R"][:, -1].mean())


# ---------------------------------------------------------------------------------------------
# meta-training (Algorithm 1 via common.meta_train_loop), with checkpoints and resume
# ---------------------------------------------------------------------------------------------
def _sampler(cfg: RegressionConfig):
    def sample(rng):
        return SineSequence(sample_functions(cfg, rng, cfg.population), rng, steps=cfg.steps_per_window,
                            batch=cfg.inner_batch, n_windows=cfg.n_windows,
                            meta_batch_size=cfg.meta_batch, meta_loss=cfg.meta_loss)
    return sample


def new_trainer(cfg: RegressionConfig, seed: int) -> MetaTrainer:
    """Network, theta_0 (drawn once from the seed) and a MetaTrainer for this config."""
    rng = np.random.default_rng(seed)
    net = build_regression_net(cfg, rng)
    theta0 = net.init_synapses(cfg.population, rng)
    return MetaTrainer(net, theta0, _sampler(cfg), cfg.inner_lr, cfg.meta_lr, cfg.meta_grad,
                       cfg.meta_optimizer, seed=seed, inner_optimizer=cfg.inner_optimizer,
                       meta_updates=cfg.meta_updates, meta_lr_decay=cfg.meta_lr_decay)


@one_blas_thread()
def _validate_job(cfg_dict: dict, theta0: dict, seed: int, phi: dict, part=None) -> float:
    """validate() for a phi snapshot, runnable in a worker process (one BLAS thread)."""
    cfg = RegressionConfig.from_dict(cfg_dict)
    net = build_regression_net(cfg, np.random.default_rng(0))
    net.load_state_dict(phi)
    return validate(net, theta0, cfg, seed)


def meta_train(cfg: RegressionConfig, seed: int, out_dir: Path, resume: bool = False,
               quiet: bool = False, log=print, workers: int | None = None,
               command: str | None = None) -> Phenotype:
    """Algorithm 1 for cfg.meta_epochs meta-epochs, validating a phi snapshot every cfg.val_every.

    Validation (deploying the snapshot on the validation functions) runs in a worker process while
    meta-training goes on, when the machine has a second core (``workers=0``: inline).
    ``OUT/checkpoint.npz`` is written atomically after every meta-epoch; with ``resume`` training
    continues from it, bit for bit. Returns the phenotype with the best validation phi.
    """
    trainer = new_trainer(cfg, seed)
    return meta_train_loop(
        trainer, cfg=cfg, seed=seed, out_dir=out_dir, kind=KIND,
        command=command or command_line("tinydan.regression"), job=_validate_job,
        job_args=(cfg.to_dict(), trainer.theta0, seed), parts=[(None, 1.0)],
        expect={"kind": KIND, "config": cfg.to_dict(), "seed": seed}, resume=resume, quiet=quiet,
        log=log, workers=workers, steps_per_epoch=cfg.n_windows * cfg.steps_per_window)


PHENOTYPE_KEYS = ("best_val", "best_epoch", "val_history", "history", "meta_train_seconds",
                  "command")


def save_phenotype(ph: Phenotype, path) -> Path:
    """A small deployable file: the (best) phi, theta_0, the snapshots, the config, provenance."""
    return save_phenotype_file(path, ph, KIND, PHENOTYPE_KEYS, with_theta0=True)


def load_phenotype(path, cfg: RegressionConfig | None = None) -> Phenotype:
    """The best phi, theta_0 and config stored in a checkpoint (refused if it is for another config)."""
    path = Path(path)
    expect = {"kind": KIND}
    if cfg is not None:
        expect["config"] = cfg.to_dict()
    arrays, meta, cfg, phi = read_phenotype_file(path, expect, RegressionConfig)
    net = build_regression_net(cfg, np.random.default_rng(0))
    load_phi(net, phi, path, cfg)
    theta0 = {k[7:]: v for k, v in arrays.items() if k.startswith("theta0.")}
    if set(theta0) != set(net.synapse_shapes()):
        raise CheckpointError(f"{path}: theta0 entries {sorted(theta0)} do not match the network's "
                              f"synapses {sorted(net.synapse_shapes())}")
    for k, shape in net.synapse_shapes().items():
        if theta0[k].shape[1:] != tuple(shape):
            raise CheckpointError(f"{path}: theta0.{k} has shape {theta0[k].shape[1:]}, the "
                                  f"network's synapses {tuple(shape)}: the file is damaged")
    return Phenotype(cfg, net, theta0, int(meta.get("seed", 0)), meta,
                     snapshots=snapshots_from(arrays))


# ---------------------------------------------------------------------------------------------
# comparison on held-out functions, results.json and figures
# ---------------------------------------------------------------------------------------------
def _naive_mlp_job(cfg_dict, sizes, theta0, functions, seed):
    """Tune the naive MLP's SGD learning rate on validation functions, then deploy it."""
    cfg = RegressionConfig.from_dict(cfg_dict)
    mlp = PlainMLP(sizes)
    lr, scores = tune_mlp_lr(mlp, theta0, cfg, seed=seed)
    return deploy(mlp, theta0, functions, cfg, lr=lr, seed=seed), lr, scores


def _joint_mlp_job(cfg_dict, sizes, theta0, functions, seed):
    """The joint upper bound (see train_joint)."""
    cfg = RegressionConfig.from_dict(cfg_dict)
    return train_joint(PlainMLP(sizes), theta0, functions, cfg, epochs=cfg.joint_epochs, seed=seed)


def compare(ph: Phenotype, out_dir: Path, n_functions: int | None = None, seed: int = 0,
            quiet: bool = False, log=print, workers: int | None = None,
            command: str | None = None) -> dict:
    """Deploy net0 (meta-learned phi), net2 (random shared phi), the naive MLP and the joint MLP on
    the same held-out functions; write results.json, results.md and the figures."""
    cfg = ph.cfg
    n = cfg.eval_functions if n_functions is None else n_functions
    if n < 2:
        raise ValueError(f"need at least 2 held-out functions for confidence intervals, got {n}")
    held_out = sample_functions(cfg, np.random.default_rng(EVAL_SEED), n, "test")
    out_dir.mkdir(parents=True, exist_ok=True)
    timings, runs = {}, {}
    steps = ["net0", "net2", "naive MLP", "joint MLP"]
    bar = progress(len(steps), "deploying on held-out functions", quiet)

    def tick(name, t0):
        timings[name] = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(name)

    mlp = PlainMLP((cfg.nodes[0], 40, 40, cfg.nodes[-1]))
    mlp_theta0 = mlp.init_synapses(1, np.random.default_rng([seed, 5]))
    with Workers(workers) as pool:     # the MLP baselines on the second core, the DANs here
        t0 = time.perf_counter()
        naive_job = pool.submit(_naive_mlp_job, cfg.to_dict(), mlp.sizes, mlp_theta0, held_out, seed)
        joint_job = pool.submit(_joint_mlp_job, cfg.to_dict(), mlp.sizes, mlp_theta0, held_out, seed)
        runs["net0 (meta-learned DANs)"] = deploy(ph.net, ph.theta0, held_out, cfg, seed=seed,
                                                  record=True)
        tick("net0", t0)
        t0 = time.perf_counter()
        rand = build_regression_net(cfg, np.random.default_rng([seed, 99]))
        runs["net2 (random DANs)"] = deploy(rand, ph.theta0, held_out, cfg, seed=seed)
        tick("net2", t0)
        naive, mlp_lr, lr_scores = naive_job.result()
        runs["naive MLP (sequential SGD)"] = naive
        tick("naive MLP", t0)
        runs["joint MLP (all windows at once)"] = joint_job.result()
        tick("joint MLP", t0)
    if bar is not None:
        bar.close()

    summaries = {name: summarize(r["R"]) for name, r in runs.items()}
    table = results_table(summaries, metrics=("final", "forgetting"))
    results = {
        "experiment": "incremental sine regression",
        "config": cfg.to_dict(), "seed": seed, "n_held_out": n, "eval_seed": EVAL_SEED,
        "phenotype": {k: v for k, v in ph.meta.items() if k not in ("history", "rng_state")},
        "baselines": {"naive_mlp_lr": mlp_lr, "naive_mlp_lr_val_scores": lr_scores,
                      "mlp_sizes": list(mlp.sizes), "mlp_parameters": mlp.num_synapses(),
                      "dan_synapses": ph.net.num_synapses(), "dan_phi": ph.net.num_parameters(),
                      "joint": f"Adam lr 0.01, {cfg.joint_epochs} epochs of minibatches of 32 on "
                               "the same points"},
        "models": summaries,
        "timings_seconds": timings,
        "versions": versions(),
        "command": command or command_line("tinydan.regression"),
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    results = write_results(out_dir, results,
        f"# Incremental regression, {n} held-out functions\n\nConfig `{cfg.name}`, "
        f"meta-gradient `{cfg.meta_grad}`. Final = whole-function MSE after the last window.\n\n"
        f"{table}\n")
    _figures(ph, runs, summaries, out_dir)
    log("\n" + table)
    log(f"\nwrote {out_dir}/results.json, results.md and figures")
    return results


def _figures(ph: Phenotype, runs: dict, summaries: dict, out_dir: Path) -> None:
    from .. import plots
    r0 = runs["net0 (meta-learned DANs)"]
    fits = [(r0["x"], r0["y"][f], r0["preds"][f], r0["windows"], f"held-out function {f}")
            for f in range(min(4, len(r0["preds"])))]
    plots.plot_function_grid(fits, out_dir / "figure3_predictions.png",
                             title="net0 during deployment: predictions after each window (Figure 3)")
    for metric in ("memory", "total"):
        plots.plot_curves({k: summaries[k][metric] for k in summaries if "joint" not in k},
                          out_dir / f"deployment_{metric}_loss.png", xlabel="after window i",
                          ylabel=f"{metric} loss (MSE)", title=f"{metric} loss during deployment",
                          logy=True)
    plots.plot_loss_matrix(np.array(summaries["net0 (meta-learned DANs)"]["R_mean"]),
                           out_dir / "loss_matrix_net0.png", title="net0: mean R[i, j]")
    hist = ph.meta.get("history")
    if hist and hist.get("meta_loss"):
        plots.plot_meta_training({"meta-loss (train)": (hist["epoch"], hist["meta_loss"])},
                                 out_dir / "meta_training.png", xlabel="meta-epoch",
                                 title="meta-training: mean memory meta-loss per epoch", logy=True)
    vh = ph.meta.get("val_history")
    if vh and len(vh) > 1:
        ep, v = zip(*vh)
        plots.plot_meta_training({"validation final MSE": (ep, v)}, out_dir / "validation.png",
                                 xlabel="meta-epoch", ylabel="final MSE", smooth=1, logy=True,
                                 title="deployment on validation functions during meta-training")
