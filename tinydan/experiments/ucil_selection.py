"""How the UCIL experiment chooses, on validation data only: the phi_0 it meta-trains from, the
learning rate every model deploys with, and the meta-epoch it deploys.

* **The phi_0 screen** (``screen_phi0``): meta-training only improves a phi_0 whose network passes
  enough signal at theta_0 for SGD on the synapses to learn, and how much it passes depends on
  the draw. K candidates are deployed with phi fixed on two sequences of meta-training characters;
  the lowest final MSE wins.
* **The race of starts** (``race_starts``): the screen cannot see how well a start meta-trains, so
  the best-screened few are each meta-trained a few meta-epochs and the one with the lowest
  Omniglot validation MSE goes on from its checkpoint.
* **Rates and epochs** (``deploy_lr``, ``choose_epoch``): every model's deployment rate is chosen by
  one rule (``continual.choose_on_validation``, with a stability margin) on validation sequences,
  and the snapshot deployed is the one that learns them best.
* **Thick strokes** live in ``ucil_data``: a share of the meta-training classes drawn with thicker
  strokes, closer to MNIST's ink.

docs/how-the-defaults-were-chosen.md tells how each of these was adopted.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..continual import choose_on_validation
from ..parallel import Workers, executor_width, one_blas_thread
from .cli import progress
from .common import Phenotype
from .configs import UCILConfig, initial_state
from .ucil import NEWER_FIELDS, deploy, meta_train_run, snapshot_net
from .ucil_data import UCILData, cached_data, lr_source_text, rate_sequences, screen_sequences

__all__ = ["screen_phi0", "race_starts", "meta_train", "choose_lr", "deploy_lr", "choose_epoch",
           "recorded_rate_fits"]


@one_blas_thread()
def _score_job(cfg_dict: dict, phi: dict, seqs: np.ndarray, seed: int, lr: float) -> float:
    """Mean final MSE of a phi deployed at ``lr`` on ``seqs`` (inf if it diverges), in a worker."""
    cfg = UCILConfig.from_dict(cfg_dict)
    return _final_score(*snapshot_net(cfg, phi, seed), cfg, seqs, lr)
def _screen_job(cfg_dict: dict, seed: int, candidate: int, seqs: np.ndarray) -> float:
    """_screen_score as a job (one BLAS thread, wherever it runs)."""
    return _screen_score(UCILConfig.from_dict(cfg_dict), seed, candidate, seqs)


def _screen_score(cfg: UCILConfig, seed: int, candidate: int, seqs: np.ndarray) -> float:
    """Final MSE of phi_0 candidate ``candidate`` deployed on ``seqs`` at inner_lr (inf: diverged)."""
    net, theta0 = initial_state(cfg, seed, population=1, candidate=candidate)
    with np.errstate(all="ignore"):
        R = deploy(net, theta0, seqs, cfg.deploy_steps, cfg.inner_lr)["R"]
    return float(R[:, -1].mean()) if np.all(np.isfinite(R)) else float("inf")


def screen_phi0(cfg: UCILConfig, seed: int, data: UCILData, quiet: bool = False,
                workers: int | None = None) -> tuple[int, list]:
    """k* = argmin_k L_final(phi_0^(k)): the phi_0 candidate (of cfg.phi_candidates) whose
    deployment with phi fixed learns the screening sequences best (final MSE at inner_lr).

    Why: meta-training only improves a phi_0 whose network passes enough signal at theta_0 for SGD
    on the synapses to learn; how much it passes depends on the draw. The screen uses
    meta-training characters only (validation and MNIST stay unseen). Returns (k*, scores).
    """
    K = int(cfg.phi_candidates)
    if K <= 1:
        return 0, []
    seqs = screen_sequences(cfg, data)
    bar = progress(K, f"screening {K} phi_0 candidates", quiet, unit="candidate")
    with Workers(workers) as pool:
        futs = [pool.submit(_screen_job, cfg.to_dict(), seed, k, seqs) for k in range(1, K, 2)] \
            if executor_width(pool) > 0 else []
        scores = [None] * K
        for k in range(K):
            if executor_width(pool) > 0 and k % 2:
                continue
            scores[k] = _screen_job(cfg.to_dict(), seed, k, seqs)     # as the workers
            if bar is not None:
                bar.update(1)
        for k, f in zip(range(1, K, 2), futs):
            scores[k] = f.result()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return int(np.argmin(scores)), scores


def race_starts(cfg: UCILConfig, seed: int, out_dir: Path, screen: dict, resume: bool = False,
                quiet: bool = False, log=print, workers: int | None = None,
                data: UCILData | None = None, command: str = "", processes: int | None = None) -> dict:
    """k* = argmin over the cfg.start_candidates best-screened k of L_val(phi^(k) after
    cfg.start_epochs meta-epochs): each such start is meta-trained in OUT/starts/phi0-k/
    (resumable), and the winner's checkpoint is written to OUT/checkpoint.npz (atomically, with
    the race's record) for meta_train to continue, so the run equals the winner's own run of
    cfg.meta_epochs. Ties go to the better-screened start. Returns ``screen`` with the winner as phi0_candidate and
    the race recorded: phi0_starts [[k, score]], phi0_race_seconds (the winner's own first
    start_epochs included, as its meta_train_seconds include them too)."""
    out_dir = Path(out_dir)
    scores = screen["phi0_screen"]
    order = sorted(range(len(scores)), key=lambda k: (scores[k], k))[:cfg.start_candidates]
    short = cfg.replace(meta_epochs=cfg.start_epochs)
    t0 = time.perf_counter()
    race = {}
    for rank, k in enumerate(order):
        log(f"race of starts: phi_0 candidate {k} (screened #{rank + 1} of {len(scores)}), "
            f"{cfg.start_epochs} meta-epochs")
        ph = meta_train_run(short, seed, out_dir / "starts" / f"phi0-{k}",
                             {**screen, "phi0_candidate": k}, resume=resume, quiet=quiet, log=log,
                             workers=workers, data=data, command=command, processes=processes)
        v = dict((int(e), float(x)) for e, x in ph.meta["val_history"])[cfg.start_epochs]
        race[k] = v if np.isfinite(v) else float("inf")
    winner = min(order, key=lambda k: (race[k], order.index(k)))     # ties: the better-screened
    log(f"race of starts: Omniglot validation MSE after {cfg.start_epochs} meta-epochs: "
        + ", ".join(f"candidate {k} {race[k]:.4f}" for k in order)
        + f"; candidate {winner} goes on from its checkpoint")
    record = {**screen, "phi0_candidate": winner, "phi0_start_epochs": cfg.start_epochs,
              "phi0_starts": [[k, race[k]] for k in order],
              "phi0_race_seconds": time.perf_counter() - t0}
    arrays, meta = load_checkpoint(out_dir / "starts" / f"phi0-{winner}" / "checkpoint.npz")
    save_checkpoint(out_dir / "checkpoint.npz", arrays, {**meta, **record})   # atomic
    return record


def meta_train(cfg: UCILConfig, seed: int, out_dir: Path, resume: bool = False,
               quiet: bool = False, log=print, workers: int | None = None,
               data: UCILData | None = None, command: str = "", processes: int | None = None) -> Phenotype:
    """Algorithm 1 for cfg.meta_epochs meta-epochs on Omniglot, validating phi every cfg.val_every.

    A tqdm bar shows the meta-loss per meta-step. Validation (deploying a phi snapshot on held-out
    Omniglot characters) runs in a worker process while meta-training goes on when the machine has
    a second core. After each validation ``OUT/checkpoint.npz`` (phi, Adam's state, the generator,
    the history, the best phi so far; theta_0 is regenerated from the seed) is written atomically;
    with ``resume`` training continues from it exactly. ``processes``: the population's members
    are split across this many processes (default ``default_processes``; on ``resume``, the number
    the run was made with: another number gives the same maths, rounded differently). With
    cfg.phi_candidates > 1 meta-training starts from the best-screened phi_0 (``screen_phi0``), or,
    with cfg.start_candidates > 1, from the winner of a race of starts (``race_starts``, its runs in
    OUT/starts/). Returns the phenotype with the best validation phi.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = cached_data(cfg, mnist=False) if data is None else data
    screen = {"phi0_candidate": 0, "phi0_screen": [], "phi0_screen_seconds": 0.0}
    if not (resume and (out_dir / "checkpoint.npz").exists()) and cfg.phi_candidates > 1:
        ts = time.perf_counter()
        k, scores = screen_phi0(cfg, seed, data, quiet=quiet, workers=workers)
        screen = {"phi0_candidate": k, "phi0_screen": scores,
                  "phi0_screen_seconds": time.perf_counter() - ts}
        log(f"phi_0: best-screened candidate {k} of {cfg.phi_candidates} (final MSE on the "
            "screening sequences: "
            + ", ".join(f"{v:.4f}" for v in scores) + ")")
        if cfg.start_candidates > 1:
            screen = race_starts(cfg, seed, out_dir, screen, resume=resume, quiet=quiet, log=log,
                                 workers=workers, data=data, command=command, processes=processes)
            resume = True                       # from the winner's checkpoint, now OUT's own
    return meta_train_run(cfg, seed, out_dir, screen, resume=resume, quiet=quiet, log=log,
                           workers=workers, data=data, command=command, processes=processes)


def choose_lr(model, theta0: dict, cfg: UCILConfig, data: UCILData,
              known: dict | None = None, pool=None, phi: dict | None = None,
              seed: int = 0) -> tuple[float, dict]:
    """A deployment SGD learning rate for ``model``, chosen on ``rate_sequences`` (cfg.lr_source:
    Omniglot validation, or the rate-choosing half of MNIST's test set; never the evaluation
    draws) by the one rule, with its stability margin (``choose_on_validation(stable=True)``)
    over cfg.ae_lrs. Returns (lr, {lr: score}), score inf for a diverged run.

    ``known`` {lr: score}: scores already measured on these sequences with this protocol, used as
    they are. ``pool`` (an idle executor) with the DAN network's ``phi`` and ``seed``: rates are
    scored in the pool and here side by side, the same scores as one after another."""
    seqs = rate_sequences(cfg, data)
    parallel = pool is not None and phi is not None
    return choose_on_validation(
        lambda lr: _final_score(model, theta0, cfg, seqs, lr), cfg.ae_lrs, stable=True, known=known,
        submit=(lambda lr: pool.submit(_score_job, cfg.to_dict(), phi, seqs, seed, lr))
        if parallel else None, width=1 + (executor_width(pool) if parallel else 0))


def deploy_lr(ph: Phenotype, data: UCILData | None = None, pool=None) -> tuple[float, dict | None]:
    """The synapse learning rate a DAN phenotype deploys with: cfg.inner_lr (the paper: the
    meta-training rate), or with cfg.tune_deploy_lr the rate ``choose_lr`` picks on cfg.lr_source's
    sequences, as for the plain autoencoders (recorded in the phenotype file once chosen, with the
    source it was chosen on; ``pool``: an idle ``Workers`` to score rates in). Returns (lr, scores
    or None)."""
    cfg = ph.cfg
    if not cfg.tune_deploy_lr:
        return cfg.inner_lr, None
    if recorded_rate_fits(ph):
        return float(ph.meta["deploy_lr"]), ph.meta.get("deploy_lr_scores")
    data = cached_data(cfg, mnist=False, rates=True) if data is None else data
    lr, scores = choose_lr(ph.net, ph.theta0, cfg, data, known=_known_val(ph), pool=pool,
                           phi=ph.net.state_dict(), seed=ph.seed)
    ph.meta["deploy_lr"], ph.meta["deploy_lr_scores"] = lr, {str(k): v for k, v in scores.items()}
    ph.meta["deploy_lr_source"] = cfg.lr_source
    if cfg.lr_source != "omniglot":
        ph.meta["deploy_lr_sequences"] = cfg.lr_sequences
    return lr, ph.meta["deploy_lr_scores"]


def recorded_rate_fits(ph: Phenotype) -> bool:
    """A deployment rate is recorded in ``ph.meta`` and was chosen the way ph.cfg chooses one (the
    same lr_source and, for "mnist-val", lr_sequences; files without a source chose on Omniglot)."""
    cfg = ph.cfg
    if "deploy_lr" not in ph.meta or ph.meta.get("deploy_lr_source", "omniglot") != cfg.lr_source:
        return False
    return cfg.lr_source == "omniglot" or ph.meta.get("deploy_lr_sequences") == cfg.lr_sequences


# fields that define validate()'s sequences and protocol
_VALIDATION_FIELDS = ("image_side", "n_classes", "shots", "deploy_steps", "inner_lr", "val_classes",
                      "val_sequences", "thick_strokes")


def _known_val(ph: Phenotype) -> dict:
    """{cfg.inner_lr: score} when meta-training already validated this very phi (``validate``:
    the same sequences, protocol and rate): the best epoch's phi for net0, phi_0 (epoch 0) for the
    random DANs of a recorded run. Saves ``choose_lr`` one deployment of the validation set.
    Nothing with cfg.lr_source "mnist-val": meta-training validated on Omniglot."""
    if ph.cfg.lr_source != "omniglot":
        return {}
    made = ph.meta.get("config")
    if made is not None and any(made.get(k, NEWER_FIELDS.get(k)) != v
                                for k, v in ph.cfg.to_dict().items() if k in _VALIDATION_FIELDS):
        return {}                       # validated under another protocol: measure again
    if ph.meta.get("source", "").startswith("random"):
        v = dict((int(e), s) for e, s in ph.meta.get("val_history", [])).get(0)
    else:
        v = ph.meta.get("best_val")
    return {} if v is None or not np.isfinite(v) else {ph.cfg.inner_lr: float(v)}


@one_blas_thread()


def _final_score(net, theta0: dict, cfg: UCILConfig, seqs: np.ndarray, lr: float) -> float:
    """Mean final MSE (all classes after the last one) of a deployment at ``lr``; inf if it diverged."""
    with np.errstate(all="ignore"):
        R = deploy(net, theta0, seqs, cfg.deploy_steps, lr)["R"]
    return float(R[:, -1].mean()) if np.all(np.isfinite(R)) else float("inf")


def choose_epoch(ph: Phenotype, data: UCILData | None = None, pool=None, log=print) -> int:
    """Load into ph.net the phi snapshot ph deploys, by cfg.epoch_source, and return its meta-epoch.

    "omniglot": the best meta-epoch on Omniglot validation (``best_epoch``). "mnist-val": with r* =
    ``deploy_lr`` of the Omniglot-best phi, argmin_e mean final MSE of snapshot e deployed at r* on
    ``rate_sequences`` (MNIST's validation half; ties go to the Omniglot-best); the evaluation half
    is never used. Deployed at r*. Recorded in ph.meta: deployed_epoch, deployed_epoch_source,
    epoch_scores {epoch: score}, epoch_lr; a choice already recorded the same way is kept. ``pool`` (an idle
    ``Workers``): snapshots are scored in it and here side by side (the same scores up to
    rounding)."""
    cfg, meta = ph.cfg, ph.meta
    best = int(meta.get("best_epoch", 0))
    current = int(meta.get("deployed_epoch", best))
    rate_now = meta.get("deploy_lr") if cfg.tune_deploy_lr else cfg.inner_lr
    if (cfg.epoch_source == "mnist-val" and meta.get("deployed_epoch_source") == "mnist-val"
            and meta.get("epoch_lr_sequences") == cfg.lr_sequences and meta.get("epoch_lr") == rate_now
            and (not cfg.tune_deploy_lr or recorded_rate_fits(ph))):
        return current                                  # chosen already, this way
    if current != best:                                 # the file holds another epoch's phi
        if best not in ph.snapshots:
            raise CheckpointError(f"{meta.get('path', 'the phenotype')}: it deploys meta-epoch "
                                  f"{current} and has no snapshot of meta-epoch {best} to go back to")
        ph.net.load_state_dict(ph.snapshots[best])
    for k in ("epoch_scores", "epoch_lr", "epoch_lr_sequences", "epoch_choice_seconds"):
        meta.pop(k, None)
    meta.update(deployed_epoch=best, deployed_epoch_source="omniglot")
    if cfg.epoch_source == "omniglot":
        return best
    candidates = {e: phi for e, phi in ph.snapshots.items() if e >= 1 and e != best}
    if not candidates:
        log("note: this file keeps no phi of another meta-epoch (made before tinydan kept them, "
            f"or validated once): deploying the best meta-epoch on Omniglot, {best}")
        return best
    t0 = time.perf_counter()
    data = cached_data(cfg, mnist=False, rates=True) if data is None else data
    seqs = rate_sequences(cfg, data)
    lr, scores = deploy_lr(ph, data, pool)              # r*, chosen for the Omniglot-best phi
    log(f"choosing the meta-epoch to deploy on {lr_source_text(cfg)} at lr {lr}: epochs "
        + ", ".join(str(e) for e in sorted([best, *candidates])))
    got = {best: float(scores[str(lr)]) if scores and str(lr) in scores
           else _final_score(ph.net, ph.theta0, cfg, seqs, lr)}
    order = sorted(candidates)
    width = executor_width(pool)
    n_pool = len(order) * width // (width + 1)  # the rest run here
    futures = {e: pool.submit(_score_job, cfg.to_dict(), candidates[e], seqs, ph.seed, lr)
               for e in order[:n_pool]}
    net, theta0 = initial_state(cfg, ph.seed, population=1)
    for e in order[n_pool:]:
        net.load_state_dict(candidates[e])
        got[e] = _final_score(net, theta0, cfg, seqs, lr)
    got.update({e: f.result() for e, f in futures.items()})
    chosen = min(sorted(got), key=lambda e: (got[e], e != best))
    if chosen != best:                                  # (ph.net holds the best's phi)
        ph.net.load_state_dict(ph.snapshots[chosen])
    meta.update(deployed_epoch=chosen, deployed_epoch_source="mnist-val", epoch_lr=lr,
                epoch_lr_sequences=cfg.lr_sequences,
                epoch_scores={str(e): got[e] for e in sorted(got)},
                epoch_choice_seconds=time.perf_counter() - t0)      # the rate's choice included
    log("meta-epoch scores: " + ", ".join(f"{e}: {got[e]:.4f}" for e in sorted(got))
        + f" -> deploying meta-epoch {chosen}")
    return chosen
