"""Incremental sine regression (paper 3.1, 4.1, 6.1): meta-train a phenotype, deploy it, compare.

    python -m tinydan.regression                      # meta-train `default`, deploy, compare, plot
    python -m tinydan.regression meta-train --config paper --meta-grad one_step
    python -m tinydan.regression deploy               # the shipped phenotype, in seconds
    python -m tinydan.regression deploy --checkpoint runs/<run>/checkpoint.npz

Protocol (SPEC sections 3 and 5): a function y = a0 sin(r0 x + p0) + a1 sin(r1 x + p1) is learned
window by window ([-5,-3], ..., [3,5]), 100 SGD steps of one point per window, never revisiting a
window. After each window the model is scored on 200 evenly spaced points of every window, giving
the loss matrix R. Held-out functions come from a fixed evaluation seed that meta-training never
uses; the checkpoint is chosen on separate validation functions. Many functions are deployed at once
along the population axis of the synapses, so evaluation is one batched run.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from . import __version__
from .autograd import no_grad
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .cli import positive_float, positive_int, progress
from .continual import choose_on_validation, format_ci, results_table, summarize, to_jsonable
from .meta import MetaTrainer, SynapseAdam, deploy_step, task_loss
from .models import (REGRESSION_CONFIGS, PlainMLP, RegressionConfig, build_regression_net,
                     regression_config)
from .optim import Adam
from .tasks import EVAL_SEED, VAL_SEED, SineFunctions, SineSequence, sample_functions
from .tensor import Tensor, wrap

__all__ = ["deploy", "meta_train", "load_phenotype", "save_phenotype", "train_joint", "tune_mlp_lr",
           "compare",
           "main", "SHIPPED_PHENOTYPE", "KIND"]

KIND = "tinydan.regression"
SHIPPED_PHENOTYPE = Path(__file__).resolve().parent / "phenotypes" / "regression_default.npz"
EVAL_POINTS = 200


_progress = progress          # shared with the other CLIs (tinydan.cli)


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
           seed: int = 0, record: bool = False, optimizer: str | None = None) -> dict:
    """Learn every function window by window with SGD on the synapses (phi fixed).

    Returns R (F, T, T) with R[f, i, j] = MSE on window j of function f after window i, and with
    ``record`` the predictions (F, T, T*200) on the evaluation grid after each window.
    ``optimizer`` (default ``cfg.inner_optimizer``): "sgd", or "adam" (config ``authors``).
    """
    lr = cfg.inner_lr if lr is None else lr
    adam = SynapseAdam(lr) if (optimizer or cfg.inner_optimizer) == "adam" else None
    F, T = len(functions), cfg.n_windows
    seq = SineSequence(functions, np.random.default_rng([seed, 7]), steps=cfg.steps_per_window,
                       batch=cfg.inner_batch, n_windows=T, meta_batch_size=cfg.meta_batch)
    theta = {k: Tensor(v, requires_grad=True) for k, v in _replicate(theta0, F).items()}
    xe, ye = seq.eval_points(EVAL_POINTS)                       # (F, T*200, 1)
    R = np.zeros((F, T, T))
    preds = np.zeros((F, T, T * EVAL_POINTS), dtype=np.float32) if record else None
    with np.errstate(over="ignore", invalid="ignore"):   # a diverging baseline is scored, not fatal
        for step, (x, y) in enumerate(seq.inner_batches()):
            theta, _ = adam.deploy_step(net, theta, x, y) if adam else deploy_step(net, theta, x, y, lr)
            if (step + 1) % cfg.steps_per_window != 0:
                continue
            w = step // cfg.steps_per_window
            with no_grad():
                p = net(wrap(xe), theta).data                   # (F, T*200, 1)
            R[:, w, :] = ((p - ye) ** 2).reshape(F, T, EVAL_POINTS).mean(-1)
            if record:
                preds[:, w] = p[..., 0]
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
    from .autograd import grad
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
# meta-training (Algorithm 1 via tinydan.meta.MetaTrainer), with checkpoints and resume
# ---------------------------------------------------------------------------------------------
@dataclass
class Phenotype:
    """A meta-trained (or random) phenotype ready to deploy: the network, theta_0 and provenance."""

    cfg: RegressionConfig
    net: object
    theta0: dict
    meta: dict


def _sampler(cfg: RegressionConfig):
    def sample(rng):
        return SineSequence(sample_functions(cfg, rng, cfg.population), rng, steps=cfg.steps_per_window,
                            batch=cfg.inner_batch, n_windows=cfg.n_windows,
                            meta_batch_size=cfg.meta_batch, meta_loss=cfg.meta_loss)
    return sample


def _checkpoint_meta(cfg, seed, trainer, extra) -> dict:
    meta = {"kind": KIND, "config": cfg.to_dict(), "seed": seed, "command": _command()}
    meta.update(trainer.state_meta())
    meta.update(extra)
    return meta


def _command() -> str:
    return "python -m tinydan.regression " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def new_trainer(cfg: RegressionConfig, seed: int) -> MetaTrainer:
    """Network, theta_0 (drawn once from the seed) and a MetaTrainer for this config."""
    rng = np.random.default_rng(seed)
    net = build_regression_net(cfg, rng)
    theta0 = net.init_synapses(cfg.population, rng)
    return MetaTrainer(net, theta0, _sampler(cfg), cfg.inner_lr, cfg.meta_lr, cfg.meta_grad,
                       cfg.meta_optimizer, seed=seed, inner_optimizer=cfg.inner_optimizer,
                       meta_updates=cfg.meta_updates)


def _validate_job(cfg_dict: dict, phi: dict, theta0: dict, seed: int) -> float:
    """validate() for a phi snapshot, runnable in a worker process."""
    cfg = RegressionConfig.from_dict(cfg_dict)
    net = build_regression_net(cfg, np.random.default_rng(0))
    net.load_state_dict(phi)
    return validate(net, theta0, cfg, seed)


def meta_train(cfg: RegressionConfig, seed: int, out_dir: Path, resume: bool = False,
               quiet: bool = False, log=print, workers: int | None = None) -> Phenotype:
    """Algorithm 1 for cfg.meta_epochs meta-epochs, validating a phi snapshot every cfg.val_every.

    Validation (deploying the snapshot on the validation functions) runs in a worker process while
    meta-training goes on, when the machine has a second core (``workers=0``: inline). After each
    validation result ``checkpoint.npz`` (latest state + best phi so far) is written atomically;
    with ``resume`` training continues from it. Returns the phenotype with the best validation phi.
    """
    from .parallel import Workers
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint.npz"
    trainer = new_trainer(cfg, seed)
    val_hist: list = []
    best = {"val": float("inf"), "epoch": 0, "phi": trainer.net.state_dict()}
    if resume and ckpt.exists():
        arrays, meta = load_checkpoint(ckpt, expect={"kind": KIND, "config": cfg.to_dict(),
                                                     "seed": seed})
        trainer.load_state(arrays, meta)
        val_hist = [tuple(v) for v in meta.get("val_history", [])]
        best = {"val": meta.get("best_val", float("inf")), "epoch": meta.get("best_epoch", 0),
                "phi": {k[9:]: v for k, v in arrays.items() if k.startswith("best.phi.")}}
        log(f"resumed from {ckpt} at meta-epoch {trainer.epoch}")
    elif resume:
        log(f"no checkpoint at {ckpt}: starting from scratch")

    def save():
        arrays = trainer.state_arrays()
        arrays.update({f"best.phi.{k}": v for k, v in best["phi"].items()})
        save_checkpoint(ckpt, arrays, _checkpoint_meta(cfg, seed, trainer, {
            "val_history": val_hist, "best_val": best["val"], "best_epoch": best["epoch"]}))

    def collect(pending, wait):
        nonlocal best
        while pending and (wait or pending[0][2].done()):
            epoch, phi, fut = pending.pop(0)
            v = fut.result()
            val_hist.append((epoch, v))
            if v < best["val"]:
                best = {"val": v, "epoch": epoch, "phi": phi}
            save()

    bar = _progress(cfg.meta_epochs, f"meta-training ({cfg.meta_grad})", quiet, trainer.epoch)
    t0 = time.perf_counter()
    pending: list = []
    with Workers(workers) as pool:
        while trainer.epoch < cfg.meta_epochs:
            stats = trainer.run_epoch()
            if trainer.epoch % cfg.val_every == 0 or trainer.epoch == cfg.meta_epochs:
                phi = trainer.net.state_dict()
                pending.append((trainer.epoch, phi, pool.submit(
                    _validate_job, cfg.to_dict(), phi, trainer.theta0, seed)))
            collect(pending, wait=len(pending) > 2)        # never fall far behind
            if bar is not None:
                bar.update(1)
                bar.set_postfix(meta_loss=f"{stats['meta_loss']:.4f}",
                                val=f"{val_hist[-1][1]:.4f}" if val_hist else "-")
        collect(pending, wait=True)
    if bar is not None:
        bar.close()
    trainer.net.load_state_dict(best["phi"])
    meta = {"kind": KIND, "config": cfg.to_dict(), "seed": seed, "best_val": best["val"],
            "best_epoch": best["epoch"], "val_history": val_hist, "history": trainer.history,
            "meta_train_seconds": time.perf_counter() - t0, "checkpoint": str(ckpt),
            "command": _command()}
    return Phenotype(cfg, trainer.net, trainer.theta0, meta)


def save_phenotype(ph: Phenotype, path) -> Path:
    """A small deployable checkpoint: the (best) phi, theta_0, the config and the provenance."""
    arrays = {f"phi.{k}": v for k, v in ph.net.state_dict().items()}
    arrays.update({f"theta0.{k}": np.asarray(v) for k, v in ph.theta0.items()})
    keep = ("seed", "best_val", "best_epoch", "val_history", "history", "meta_train_seconds",
            "command")
    meta = {"kind": KIND, "config": ph.cfg.to_dict(), **{k: ph.meta[k] for k in keep if k in ph.meta}}
    return save_checkpoint(Path(path), arrays, meta, compress=True)


def load_phenotype(path, cfg: RegressionConfig | None = None) -> Phenotype:
    """The best phi, theta_0 and config stored in a checkpoint (refused if it is for another config)."""
    path = Path(path)
    expect = {"kind": KIND}
    if cfg is not None:
        expect["config"] = cfg.to_dict()
    arrays, meta = load_checkpoint(path, expect=expect)
    try:
        cfg = RegressionConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its config cannot be read ({e}); was it written by another "
                              "version of tinydan?") from None
    net = build_regression_net(cfg, np.random.default_rng(0))
    prefix = "best.phi." if any(k.startswith("best.phi.") for k in arrays) else "phi."
    phi = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    try:
        net.load_state_dict(phi)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: its phenotype does not fit config {cfg.name!r}: {e}") from None
    theta0 = {k[7:]: v for k, v in arrays.items() if k.startswith("theta0.")}
    if set(theta0) != set(net.synapse_shapes()):
        raise CheckpointError(f"{path}: theta0 entries {sorted(theta0)} do not match the network's "
                              f"synapses {sorted(net.synapse_shapes())}")
    return Phenotype(cfg, net, theta0, meta)


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
            quiet: bool = False, log=print, workers: int | None = None) -> dict:
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
    bar = _progress(len(steps), "deploying on held-out functions", quiet)

    def tick(name, t0):
        timings[name] = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(name)

    from .parallel import Workers
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
        "versions": {"tinydan": __version__, "numpy": np.__version__, "python": platform.python_version()},
        "command": _command(),
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    (out_dir / "results.json").write_text(json.dumps(to_jsonable(results), indent=1, allow_nan=False))
    (out_dir / "results.md").write_text(
        f"# Incremental regression, {n} held-out functions\n\nConfig `{cfg.name}`, "
        f"meta-gradient `{cfg.meta_grad}`. Final = whole-function MSE after the last window.\n\n"
        f"{table}\n")
    _figures(ph, runs, summaries, out_dir)
    log("\n" + table)
    log(f"\nwrote {out_dir}/results.json, results.md and figures")
    return results


def _figures(ph: Phenotype, runs: dict, summaries: dict, out_dir: Path) -> None:
    from . import plots
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


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
_positive_int, _positive_float = positive_int, positive_float


def build_parser() -> argparse.ArgumentParser:
    """The CLI: run (default), meta-train, deploy, ablate, report."""
    p = argparse.ArgumentParser(
        prog="python -m tinydan.regression",
        description="Incremental sine regression with Deep Artificial Neurons (paper sections "
                    "3.1, 4.1, 6.1). With no command: meta-train the `default` config, deploy it on "
                    "held-out functions, compare with random DANs and plain MLPs, write results.json "
                    "and figures.")
    sub = p.add_subparsers(dest="command", metavar="{run,meta-train,deploy,ablate,report}")

    def common(sp, training=True):
        sp.add_argument("--out", type=Path, help="output folder (default runs/regression-<time>)")
        sp.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
        sp.add_argument("--eval-functions", type=_positive_int,
                        help="number of held-out functions (default from the config: 50)")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if training:
            sp.add_argument("--config", choices=sorted(REGRESSION_CONFIGS), default="default",
                            help="model and protocol (default: default)")
            sp.add_argument("--meta-grad", choices=["first_order", "one_step"],
                            help="meta-gradient mode (default from the config)")
            sp.add_argument("--epochs", type=_positive_int, help="meta-epochs (default from the config)")
            sp.add_argument("--inner-lr", type=_positive_float, help="synapse SGD learning rate")
            sp.add_argument("--meta-lr", type=_positive_float, help="phi Adam learning rate")
            sp.add_argument("--output", choices=["scaled_tanh", "linear"], help="output option")
            sp.add_argument("--init", choices=["glorot", "fan_in_uniform"],
                            help="initialisation of phi and theta_0 (default from the config)")
            sp.add_argument("--val-every", type=_positive_int,
                            help="validate a phi snapshot every N meta-epochs (default 10)")
            sp.add_argument("--resume", action="store_true",
                            help="continue from OUT/checkpoint.npz (needs --out)")

    common(sub.add_parser("run", help="meta-train, then deploy and compare (the default)"))
    common(sub.add_parser("meta-train", help="meta-train only; writes OUT/checkpoint.npz"))
    dp = sub.add_parser("deploy", help="deploy a phenotype on held-out functions and compare")
    common(dp, training=False)
    dp.add_argument("--checkpoint", type=Path, default=None,
                    help=f"checkpoint to deploy (default: the shipped phenotype {SHIPPED_PHENOTYPE.name})")
    from .ablations import add_ablate_arguments, add_report_arguments
    add_ablate_arguments(sub.add_parser(
        "ablate", help="ablation studies (Figure 4) and continual-learning baselines; resumable"),
        _positive_int, _positive_float)
    add_report_arguments(sub.add_parser(
        "report", help="collect finished runs and ablations into one Markdown file"))
    return p


def _config_from_args(a) -> RegressionConfig:
    over = {}
    for field_name, arg in (("meta_grad", a.meta_grad), ("meta_epochs", a.epochs),
                            ("inner_lr", a.inner_lr), ("meta_lr", a.meta_lr), ("output", a.output),
                            ("eval_functions", a.eval_functions), ("init", a.init),
                            ("val_every", a.val_every)):
        if arg is not None:
            over[field_name] = arg
    return regression_config(a.config, **over)


def main(argv=None) -> int:
    """Entry point of ``python -m tinydan.regression``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run"] + argv
    parser = build_parser()
    a = parser.parse_args(argv)
    from .parallel import set_blas_threads
    set_blas_threads(1)       # small matmuls: one BLAS thread each, the second core validates
    if a.command in ("ablate", "report"):
        from . import ablations
        if a.command == "report":
            return ablations.report_main(a, parser)
        return ablations.ablate_main(a, parser, "python -m tinydan.regression " +
                                     " ".join(shlex.quote(x) for x in argv))
    if a.command == "run" and not argv:
        a.command = "run"
    out = a.out or Path("runs") / f"regression-{datetime.now():%Y%m%d-%H%M%S}"
    if getattr(a, "resume", False) and a.out is None:
        parser.error("--resume needs --out pointing at the run folder to continue")
    try:
        if a.command == "deploy":
            path = a.checkpoint or SHIPPED_PHENOTYPE
            if not path.exists():
                parser.error(f"checkpoint {path} does not exist; meta-train one with "
                             "`python -m tinydan.regression meta-train --out DIR`")
            ph = load_phenotype(path)
            print(f"deploying phenotype {path} (config {ph.cfg.name!r}, meta-epoch "
                  f"{ph.meta.get('best_epoch', '?')}, validation MSE {ph.meta.get('best_val', float('nan')):.4f})")
            compare(ph, out, n_functions=a.eval_functions, seed=a.seed, quiet=a.quiet)
            return 0
        cfg = _config_from_args(a)
        print(f"config {cfg.name!r}: output {cfg.output}, meta-gradient {cfg.meta_grad}, synapse lr "
              f"{cfg.inner_lr}, phi lr {cfg.meta_lr}, {cfg.meta_epochs} meta-epochs; writing to {out}")
        ph = meta_train(cfg, a.seed, out, resume=a.resume, quiet=a.quiet)
        save_phenotype(ph, out / "phenotype.npz")
        print(f"meta-training done in {ph.meta['meta_train_seconds']:.0f} s; best validation MSE "
              f"{ph.meta['best_val']:.4f} at meta-epoch {ph.meta['best_epoch']}; deployable "
              f"phenotype in {out / 'phenotype.npz'}")
        if a.command == "run":
            res = compare(ph, out, n_functions=a.eval_functions, seed=a.seed, quiet=a.quiet)
            m = res["models"]
            k0, k2 = "net0 (meta-learned DANs)", "net2 (random DANs)"
            print(f"\nnet0 final MSE {format_ci(m[k0]['final']['mean'], m[k0]['final']['ci'])} vs "
                  f"net2 {format_ci(m[k2]['final']['mean'], m[k2]['final']['ci'])}")
        return 0
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
