"""The UCIL comparison on MNIST (paper section 6.2, Figure 2): the meta-learned phenotype (net0)
against random DANs and plain autoencoders, deployed on the same draws, with results files and
figures.

Every model's deployment learning rate is chosen the same way on validation sequences
(``ucil_selection``); the reported draws come from a seed nothing else uses.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..continual import ci_overlap, mean_ci, results_table, summarize
from ..nn.layers import PlainMLP
from ..parallel import Workers, executor_width, one_blas_thread
from .cli import progress
from .common import Phenotype, command_line, versions, write_results
from .configs import UCILConfig
from .ucil import deploy, random_phenotype, snapshot_net
from .ucil_data import EVAL_SEED, UCILData, cached_data, lr_source_text, mnist_sequences
from .ucil_selection import choose_epoch, choose_lr, deploy_lr, recorded_rate_fits

__all__ = ["compare", "plain_autoencoder", "tune_ae_lr", "NET0", "RANDOM", "PLAIN", "PLAIN_NODES"]

NET0, RANDOM, PLAIN = "net0 (meta-learned DANs)", "random DANs", "plain autoencoder"


PLAIN_NODES = "plain autoencoder, same nodes"      # context: the DAN network's nodes, plain neurons


TAGS = {NET0: "net0", RANDOM: "random_dans", PLAIN: "plain_ae", PLAIN_NODES: "plain_ae_same_nodes"}


def plain_autoencoder(cfg: UCILConfig, same_nodes: bool = False) -> PlainMLP:
    """The baseline: an MLP autoencoder D -> ae_hidden -> D (tanh hidden, linear output; about as
    many parameters as the DAN network has synapses), all of its weights plastic, trained
    sequentially with SGD like the synapses of the DAN network. ``same_nodes``: the DAN network's
    node counts instead (plain neurons where it has DANs): far fewer parameters."""
    return PlainMLP(cfg.nodes if same_nodes else (cfg.nodes[0], *cfg.ae_hidden, cfg.nodes[-1]))


def tune_ae_lr(cfg: UCILConfig, data: UCILData, seed: int = 0,
               same_nodes: bool = False) -> tuple[float, dict]:
    """The plain autoencoder's SGD learning rate, chosen like every model's (``choose_lr``)."""
    ae = plain_autoencoder(cfg, same_nodes)
    return choose_lr(ae, ae.init_synapses(1, np.random.default_rng([seed, 3])), cfg, data)


def _fig2_points(cfg: UCILConfig, T: int = 10) -> list:
    """Figure 2's moments: one step on the first digit, after digit 4, after the last digit."""
    k = cfg.deploy_steps
    return [(0, 1), (min(4, T - 1), k), (T - 1, k)]


def _deploy_kwargs(cfg: UCILConfig) -> dict:
    return {"group": cfg.deploy_group, "snapshots": _fig2_points(cfg),
            "curve_every": max(1, cfg.deploy_steps // 3)}


@one_blas_thread()
def _random_dans_job(cfg_dict: dict, seqs: np.ndarray, seed: int, val_history=(), candidate: int = 0):
    """Deploy the random phi_0 of the run's seed on the MNIST draws (a worker job), with its
    learning rate chosen like net0's (``deploy_lr``; ``val_history``: the meta-training run's, whose
    epoch 0 is phi_0's validation score at inner_lr)."""
    cfg = UCILConfig.from_dict(cfg_dict)
    ph = random_phenotype(cfg, seed, candidate)
    ph.meta["val_history"] = [tuple(v) for v in val_history]
    lr, scores = deploy_lr(ph)
    t = time.perf_counter()
    with np.errstate(all="ignore"):
        res = deploy(ph.net, ph.theta0, seqs, cfg.deploy_steps, lr, **_deploy_kwargs(cfg))
    res["seconds"] = time.perf_counter() - t
    res["lr"], res["lr_scores"] = lr, scores
    return res
def _phenotype_job(cfg_dict: dict, phi: dict, seqs: np.ndarray, seed: int, lr: float):
    """Deploy a phi (theta_0 regenerated from the seed) with synapse lr ``lr`` on some draws, in a
    worker process: with no baselines to run, net0's draws are split between the cores."""
    cfg = UCILConfig.from_dict(cfg_dict)
    net, theta0 = snapshot_net(cfg, phi, seed)
    kw = {**_deploy_kwargs(cfg), "snapshots": ()}
    with np.errstate(all="ignore"):
        return deploy(net, theta0, seqs, cfg.deploy_steps, lr, **kw)
def _plain_ae_job(cfg_dict: dict, seqs: np.ndarray, seed: int, same_nodes: bool = False):
    """Choose the plain autoencoder's lr (``tune_ae_lr``), then deploy it on the MNIST draws (a
    worker job)."""
    cfg = UCILConfig.from_dict(cfg_dict)
    lr, scores = tune_ae_lr(cfg, cached_data(cfg, mnist=False, rates=True), seed, same_nodes)
    ae = plain_autoencoder(cfg, same_nodes)
    theta0 = ae.init_synapses(1, np.random.default_rng([seed, 3]))
    t = time.perf_counter()
    with np.errstate(all="ignore"):           # a diverging run is reported, not fatal
        res = deploy(ae, theta0, seqs, cfg.deploy_steps, lr, **_deploy_kwargs(cfg))
    res["seconds"] = time.perf_counter() - t
    res["lr"], res["lr_scores"] = lr, scores
    return res


@one_blas_thread()


@one_blas_thread()


def _unseen_curve(curve: np.ndarray, steps_at: np.ndarray, steps: int) -> np.ndarray:
    """Mean MSE on the classes not yet seen at each point: (S, n_points, T) -> (S, n_points - ...).

    At n steps in all, class (n - 1) // steps is being learned, so the unseen ones are after it;
    the last class's points have no unseen class left and are dropped.
    """
    T = curve.shape[-1]
    cols = []
    for p, n in enumerate(steps_at):
        current = -1 if n == 0 else (int(n) - 1) // steps
        if current + 1 < T:
            cols.append(curve[:, p, current + 1:].mean(-1))
    return np.stack(cols, axis=1)


def compare(ph: Phenotype, out_dir, draws: int | None = None, quiet: bool = False, log=print,
            workers: int | None = None, data: UCILData | None = None, argv=None,
            extra: dict | None = None, figures: str = "all", baselines: bool = True) -> dict:
    """Deploy the phenotype (net0), the random phi_0 (random DANs) and the plain autoencoder on the
    same MNIST draws; write results.json, results.md and the figures to ``out_dir`` (``figures``:
    "all", or "net0" for Figure 2 and the loss matrix of net0 and the transfer curve only).
    ``baselines=False``: net0 alone (seconds instead of minutes; the comparison fields are None)."""
    cfg = ph.cfg
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = cached_data(cfg, mnist=True) if data is None else data
    draws = cfg.eval_draws if draws is None else int(draws)
    seqs = mnist_sequences(cfg, data, draws)
    t0 = time.perf_counter()
    with Workers(workers) as pool:
        here = draws
        if baselines:                               # the slowest job first
            fut_rand = pool.submit(_random_dans_job, cfg.to_dict(), seqs, ph.seed,
                                   ph.meta.get("val_history", []), ph.meta.get("phi0_candidate", 0))
            fut_ae = pool.submit(_plain_ae_job, cfg.to_dict(), seqs, ph.seed)
            fut_nodes = pool.submit(_plain_ae_job, cfg.to_dict(), seqs, ph.seed, True)
        if cfg.tune_deploy_lr and not recorded_rate_fits(ph):
            log(f"choosing net0's deployment learning rate on {lr_source_text(cfg)} from {cfg.ae_lrs}")
        idle = None if baselines else pool          # scores rates and epochs beside this process
        choose_epoch(ph, data, pool=idle, log=log)  # the phi of cfg.epoch_source's meta-epoch
        lr, lr_scores = deploy_lr(ph, data, idle)   # chosen on rate_sequences if cfg says so
        if not baselines and executor_width(pool) > 0 and draws > 1:   # nothing else to run: split net0's draws
            here = (draws + 1) // 2
            fut_rest = pool.submit(_phenotype_job, cfg.to_dict(), ph.net.state_dict(),
                                   seqs[here:], ph.seed, lr)
        bar = progress(here * cfg.n_classes * cfg.deploy_steps, "deploying net0 on MNIST", quiet,
                        unit="draw-step")
        t = time.perf_counter()
        with np.errstate(all="ignore"):
            net0 = deploy(ph.net, ph.theta0, seqs[:here], cfg.deploy_steps, lr,
                          progress=None if bar is None else bar.update, **_deploy_kwargs(cfg))
        if here < draws:                           # the worker's draws, in order after ours
            rest = fut_rest.result()
            net0["R"] = np.concatenate([net0["R"], rest["R"]])
            net0["curve"] = np.concatenate([net0["curve"], rest["curve"]])
        net0["seconds"] = time.perf_counter() - t
        net0["lr"], net0["lr_scores"] = lr, lr_scores
        if bar is not None:
            bar.close()
        runs = {NET0: net0}
        if baselines:
            log("net0 deployed; waiting for the baselines (random DANs, plain autoencoder)")
            runs[RANDOM] = fut_rand.result()
            runs[PLAIN], runs[PLAIN_NODES] = fut_ae.result(), fut_nodes.result()
    steps = cfg.deploy_steps
    summaries, unseen, diverged = {}, {}, {}
    for name, r in runs.items():
        ok = np.all(np.isfinite(r["R"]), axis=(1, 2))         # a diverged draw has NaN/inf losses
        diverged[name] = int((~ok).sum())
        if ok.any():
            summaries[name] = summarize(r["R"][ok])
            unseen[name] = _unseen_curve(r["curve"][ok], r["curve_steps"], steps)
    nan = (float("nan"), float("nan"))
    finals = {name: (summaries[name]["final"]["mean"], summaries[name]["final"]["ci"])
              if name in summaries else nan for name in (NET0, RANDOM, PLAIN, PLAIN_NODES)}
    transfer = {}
    if NET0 in summaries:
        tr = summaries[NET0]["transfer"]["mean"]
        u = unseen[NET0]                                      # (S, points): the digits still to come
        transfer = {
            "transfer_loss_per_class": tr,
            "unseen_loss_before_learning": mean_ci_dict(u[:, 0]),
            "unseen_loss_before_the_last_digit": mean_ci_dict(u[:, -1]),
            # forward transfer: the loss on not-yet-seen digits falls while earlier digits are learned
            "drop_before_learning_to_before_last_digit": mean_ci_dict(u[:, 0] - u[:, -1]),
            "falls": bool(tr[-2] < tr[0]),
        }

    def overlap(a, b):
        return None if np.isnan(a[0]) or np.isnan(b[0]) else bool(ci_overlap(a, b))
    comparison = {
        "net0_final": finals[NET0], "random_final": finals[RANDOM], "plain_final": finals[PLAIN],
        "net0_vs_random_ci_overlap": overlap(finals[NET0], finals[RANDOM]),
        "net0_vs_plain_ci_overlap": overlap(finals[NET0], finals[PLAIN]),
        "plain_same_nodes_final": finals[PLAIN_NODES],
        "net0_vs_plain_same_nodes_ci_overlap": overlap(finals[NET0], finals[PLAIN_NODES]),
        "net0_lowest": (bool(finals[NET0][0] < np.nanmin([finals[RANDOM][0], finals[PLAIN][0], np.inf]))
                        if baselines else None),
        "diverged_draws": diverged,
    }
    half = " (the evaluation half)" if data.mnist_val is not None else ""
    results = {
        "experiment": "ucil", "command": command_line("tinydan.ucil", argv), "config": cfg.to_dict(), "seed": ph.seed,
        "versions": versions(), "draws": draws, "evaluation_seed": EVAL_SEED,
        "phenotype": {k: ph.meta.get(k) for k in ("source", "path", "best_epoch", "best_val",
                                                 "deployed_epoch", "deployed_epoch_source",
                                                 "epoch_scores", "epoch_lr", "epoch_choice_seconds",
                                                 "meta_train_seconds", "command",
                                                 "phi0_candidate", "phi0_screen", "phi0_starts",
                                                 "phi0_start_epochs") if k in ph.meta},
        "protocol": f"MNIST test digits{half} 0..9 in order, {cfg.shots} images each, {steps} "
                    f"SGD steps (net0 lr {lr}) per digit on the synapses, phi fixed; R[i, j] = "
                    f"reconstruction MSE on digit j after digit i; {draws} draws of the images",
        "models": summaries,
        "plain_autoencoders": {name: {"sizes": list(plain_autoencoder(cfg, same).sizes),
                                      "parameters": plain_autoencoder(cfg, same).num_synapses(),
                                      "lr": runs[name]["lr"], "lr_scores":
                                      {str(k): v for k, v in runs[name]["lr_scores"].items()}}
                               for name, same in ((PLAIN, False), (PLAIN_NODES, True)) if name in runs},
        "dan_network": {"synapses": ph.net.num_synapses(), "phi": ph.net.num_parameters()},
        "deploy_lrs": {name: {"lr": r["lr"], "lr_scores": r.get("lr_scores")}
                       for name, r in runs.items()},
        "lr_chosen_on": lr_source_text(cfg) if cfg.tune_deploy_lr or baselines else None,
        "comparison": comparison, "forward_transfer": transfer,
        "unseen_curve": {name: {"steps": [int(n) for n in runs[name]["curve_steps"]][:u.shape[1]],
                                "mean": u.mean(0)} for name, u in unseen.items()},
        "seconds": {name: r["seconds"] for name, r in runs.items()} | {"compare": time.perf_counter() - t0},
    }
    if extra:
        results.update(extra)
    table = results_table(summaries, metrics=("final", "forgetting"))
    how = f"chosen on {lr_source_text(cfg)}" if cfg.tune_deploy_lr else "the meta-training rate"
    lrs = (f"SGD learning rates: {lr} (net0, {how}), {runs[RANDOM]['lr']} ({RANDOM}, {how}); chosen on "
           f"{lr_source_text(cfg)}: {runs[PLAIN]['lr']} ({PLAIN}), {runs[PLAIN_NODES]['lr']} "
           f"({PLAIN_NODES}).\n" if baselines else
           f"net0 only (no baselines were deployed in this run), SGD lr {lr} ({how}).\n")
    results = write_results(out_dir, results,
                            f"# UCIL on MNIST ({cfg.name})\n\n{results['protocol']}.\n\n{table}\n{lrs}")
    _figures(ph, seqs, runs, summaries, unseen, out_dir,
             only_net0=figures == "net0" or not baselines)
    log(table)
    log(f"wrote {out_dir}/results.json, results.md and figures")
    return results


def mean_ci_dict(values) -> dict:
    """{"mean", "ci"} of per-draw values (95% t-interval)."""
    m, h = mean_ci(np.asarray(values, dtype=np.float64))
    return {"mean": float(m), "ci": float(h)}


def _figures(ph: Phenotype, seqs: np.ndarray, runs: dict, summaries: dict, unseen: dict,
             out_dir: Path, only_net0: bool = False) -> None:
    from ..plots import plot_curves, plot_loss_matrix, plot_meta_training, plot_reconstruction_panels
    cfg = ph.cfg
    T, s = seqs.shape[1], seqs.shape[2]
    side = cfg.image_side
    labels = [str(d) for d in range(T)]
    a, b, c = _fig2_points(cfg)
    show = min(2, s)

    def by_shot(imgs):                          # (T, s, D) -> rows of one image per digit
        return imgs[:, :show].transpose(1, 0, 2).reshape(-1, side, side)

    orig = seqs[0]
    for name, r in runs.items():
        if (only_net0 and name != NET0) or name not in summaries:
            continue
        rec = {k: np.clip(v, 0.0, 1.0) for k, v in r["recon"].items()}
        tag = TAGS[name]
        plot_reconstruction_panels([
            ("after 1 step on the 0s: the 0s", orig[0].reshape(-1, side, side),
             rec[a][0].reshape(-1, side, side)),
            (f"after {cfg.deploy_steps} steps on each of 0-{b[0]}: all digits", by_shot(orig), by_shot(rec[b])),
            (f"after 0-{c[0]}: all digits", by_shot(orig), by_shot(rec[c])),
        ], out_dir / f"fig2_{tag}.png", ncols=T, title=f"{name}, MNIST deployment (draw 0)")
        plot_loss_matrix(summaries[name]["R_mean"], out_dir / f"loss_matrix_{tag}.png",
                         title=f"R[i, j], {name}", task_labels=labels)
    for metric in ("transfer",) if only_net0 else ("transfer", "memory", "total"):
        plot_curves({n: summaries[n][metric] for n in summaries}, out_dir / f"{metric}_curve.png",
                    xlabel="after learning digit i", ylabel=f"{metric} loss (MSE)",
                    title=f"{metric} loss over the MNIST deployment (mean, 95% CI)")
    if only_net0:
        return
    n_pts = min(u.shape[1] for u in unseen.values())
    steps_at = next(iter(runs.values()))["curve_steps"][:n_pts]
    plot_curves({n: mean_ci(u[:, :n_pts]) for n, u in unseen.items()}, out_dir / "unseen_digits_curve.png",
                xlabel="SGD steps so far", ylabel="MSE on digits not yet seen",
                title="forward transfer: loss on the digits still to come", x=steps_at)
    hist = ph.meta.get("history")
    if hist and hist.get("epoch"):
        curves = {"meta-loss (mean per meta-epoch)": (hist["epoch"], hist["meta_loss"])}
        vh = ph.meta.get("val_history")
        if vh:
            curves["validation final MSE (Omniglot)"] = ([e for e, _ in vh], [v for _, v in vh])
        plot_meta_training(curves, out_dir / "meta_training.png", xlabel="meta-epoch", smooth=1)
