"""The UCIL experiment (paper sections 3.2, 4.2, 6.2): the autoencoder of DANs, deployed on classes
of images one after the other, meta-trained on Omniglot with checkpoints and resume.

Deployment (``deploy``) learns the classes of a sequence in order, ``steps`` SGD steps on the
synapses per class with phi fixed, and scores every class after each: the loss matrix R. Many
sequences are deployed at once along the population axis. ``meta_train_run`` is Algorithm 1 from
one phi_0 (the recipe that chooses it is in ``ucil_selection``); a phenotype file holds phi and
its validated snapshots, theta_0 being regenerated from the seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..autograd import no_grad
from ..checkpoint import CheckpointError
from ..meta import MetaTrainer, deploy_step
from ..nn.dan import DANNetwork
from ..parallel import one_blas_thread, usable_cores
from ..tasks import ClassSequences
from ..tensor import Tensor, wrap
from .common import (Phenotype, learn_in_order, load_phi, meta_train_loop, read_phenotype_file,
                     save_phenotype_file, snapshots_from, validation_parts)
from .configs import UCIL_CONFIGS, UCILConfig, initial_state, theta_fingerprint
from .ucil_data import UCILData, cached_data, omniglot_sequences, validation_sequences

__all__ = ["KIND", "SHIPPED_PHENOTYPE", "deploy", "random_phenotype", "new_trainer", "validate",
           "meta_train_run", "save_phenotype", "load_phenotype", "snapshot_net", "default_processes"]

KIND = "tinydan.ucil"
SHIPPED_PHENOTYPE = Path(__file__).resolve().parent.parent / "phenotypes" / "ucil_small.npz"
DEPLOY_DRAWS = 5      # `deploy` alone: a quick look (`run` uses the config's eval_draws, 20)


def _per_class_mse(model, theta: dict, images: np.ndarray):
    """(S, T, s, D) images -> ((S, T) reconstruction MSE per class, the reconstructions)."""
    S, T, s, D = images.shape
    with no_grad():
        flat = images.reshape(S, T * s, D)
        out = model(wrap(flat), theta).data
    err = ((out - flat) ** 2).reshape(S, T, s * D).mean(-1)
    return err, out.reshape(S, T, s, D)


def deploy(model, theta0: dict, images: np.ndarray, steps: int, lr: float,
           group: int | None = None, snapshots=(), curve_every: int = 0, progress=None) -> dict:
    """Learn the classes of ``images`` (S, T, s, D) one after the other with phi fixed.

    Every sequence starts from member 0 of ``theta0``; ``group`` sequences are deployed at once
    along the population axis (memory). Returns ``R`` (S, T, T) with R[:, i, j] = MSE on class j
    after learning class i; ``snapshots`` [(i, step), ...] -> the reconstructions of all images of
    sequence 0 after ``step`` steps on class i (``recon``: {(i, step): (T, s, D)}); with
    ``curve_every`` > 0, ``curve`` (S, n_points, T): the per-class MSE every ``curve_every`` steps
    (``curve_steps`` says after how many steps in all).
    """
    S, T, s, D = images.shape
    group = S if group is None else max(1, int(group))
    in_place = isinstance(model, DANNetwork)                # a DAN network learns in place

    def step(theta, x, y):                                  # SGD on the synapses
        return deploy_step(model, theta, x, y, lr, in_place=in_place)[0]

    R = np.zeros((S, T, T))
    curve, curve_steps, recon = [], [], {}
    want = {(int(i), int(k)) for i, k in snapshots}
    for g0 in range(0, S, group):
        imgs = images[g0:g0 + group]
        G = len(imgs)
        theta = {k: Tensor(np.repeat(np.asarray(v)[:1], G, axis=0), requires_grad=True)
                 for k, v in theta0.items()}
        rows = []
        if curve_every:                                                  # before learning anything
            rows.append(_per_class_mse(model, theta, imgs)[0])
            if g0 == 0:
                curve_steps.append(0)

        def on_step(i, k, theta):
            if g0 == 0 and (i, k) in want:
                with no_grad():
                    sub = {n: wrap(v.data[:1]) for n, v in theta.items()}
                    recon[(i, k)] = model(wrap(imgs[:1].reshape(1, T * s, D)), sub).data.reshape(T, s, D)
            if curve_every and (k % curve_every == 0 or k == steps) and k != steps:
                rows.append(_per_class_mse(model, theta, imgs)[0])
                if g0 == 0:
                    curve_steps.append(i * steps + k)
            if progress is not None:
                progress(G)

        learned = []                                                     # classes done so far

        def evaluate(theta):
            err = _per_class_mse(model, theta, imgs)[0]                  # (G, T)
            learned.append(err)
            if curve_every:
                rows.append(err)
                if g0 == 0:
                    curve_steps.append(len(learned) * steps)
            return err

        classes = (np.ascontiguousarray(imgs[:, i]) for i in range(T))   # (G, s, D) each
        R[g0:g0 + G], _ = learn_in_order(step, theta, ([(x, x)] * steps for x in classes),
                                         evaluate, on_step)
        if curve_every:
            curve.append(np.stack(rows, axis=1))                         # (G, n_points, T)
    out = {"R": R, "recon": recon}
    if curve_every:
        out["curve"] = np.concatenate(curve, axis=0)
        out["curve_steps"] = np.asarray(curve_steps)
    return out



def random_phenotype(cfg: UCILConfig, seed: int = 0, candidate: int = 0) -> Phenotype:
    """The network with its random phi_0 (before any meta-training; ``candidate``: the phi_0 that
    meta-training started from, see ``ucil_selection.screen_phi0``): the "random DANs" baseline."""
    net, theta0 = initial_state(cfg, seed, population=1, candidate=candidate)
    return Phenotype(cfg, net, theta0, seed, {"source": "random phi_0 (no meta-training)",
                                              "phi0_candidate": int(candidate)})


def _sampler(cfg: UCILConfig, data: UCILData):
    def sample(rng):
        imgs = omniglot_sequences(cfg, data, data.train_classes, cfg.population, rng)
        return ClassSequences(imgs, cfg.inner_steps, cfg.meta_batch)
    return sample


def new_trainer(cfg: UCILConfig, seed: int, data: UCILData, candidate: int = 0,
                processes: int = 1) -> MetaTrainer:
    """Network, theta_0 (both from the seed; phi_0 candidate ``candidate``) and a MetaTrainer on
    Omniglot's training characters (members split across ``processes`` processes)."""
    net, theta0 = initial_state(cfg, seed, candidate=candidate)
    return MetaTrainer(net, theta0, _sampler(cfg, data), cfg.inner_lr, cfg.meta_lr, cfg.meta_grad,
                       cfg.meta_optimizer, seed=seed, in_place=True, processes=processes,
                       meta_lr_decay=cfg.meta_lr_decay)


def default_processes(cfg: UCILConfig) -> int:
    """Processes that share a meta-step's population: 2 with a second core (M = 3: 2 members
    here, 1 in a worker whose core also runs the validation jobs), else 1."""
    return max(1, min(2, usable_cores(), cfg.population))


def validate(net, theta0: dict, cfg: UCILConfig, data: UCILData, part=None) -> float:
    """Mean final MSE (all classes after the last one) on the validation sequences, deployed with
    the deployment protocol (cfg.deploy_steps steps per class, phi fixed) at the meta-training rate
    cfg.inner_lr: it picks the best meta-epoch. ``part`` (i, n): the mean over the i-th of n
    near-equal blocks of the sequences only (``common.validation_parts``)."""
    seqs = validation_sequences(cfg, data)
    if part is not None:
        seqs = np.array_split(seqs, part[1])[part[0]]
    return float(deploy(net, theta0, seqs, cfg.deploy_steps, cfg.inner_lr)["R"][:, -1].mean())


def snapshot_net(cfg: UCILConfig, phi: dict, seed: int):
    """(net, theta_0): the network with ``phi`` loaded and one member's theta_0 regenerated from
    the seed: a phi snapshot made deployable."""
    net, theta0 = initial_state(cfg, seed, population=1)
    net.load_state_dict(phi)
    return net, theta0


@one_blas_thread()
def _validate_job(cfg_dict: dict, seed: int, phi: dict, part=None) -> float:
    """validate() for a phi snapshot as a job (one BLAS thread wherever it runs; theta_0
    regenerated from the seed)."""
    cfg = UCILConfig.from_dict(cfg_dict)
    net, theta0 = snapshot_net(cfg, phi, seed)
    return validate(net, theta0, cfg, cached_data(cfg, mnist=False), part=part)


# fields that define the model: a phenotype deploys under a config only if these agree
MODEL_FIELDS = ("image_side", "input_hidden", "nodes", "n_channels", "dan_convs", "dan_pool",
                "dan_hidden", "slope", "skips", "sharing")
# fields that do not change a meta-training trajectory: a run may be resumed with other values
# (``--epochs 30 --resume`` continues a 12-epoch run)
RESUMABLE_FIELDS = ("meta_epochs", "eval_draws", "deploy_group", "tune_deploy_lr", "lr_source",
                    "lr_sequences", "epoch_source", "data")
# fields added after runs were made, with the value that reproduces those runs
NEWER_FIELDS = {"thick_strokes": 0.0, "phi_candidates": 1, "meta_lr_decay": 1.0,
                "start_candidates": 1, "start_epochs": 4}


def expect(cfg: UCILConfig, for_resume: bool = False) -> dict:
    """What a file must match: to resume (every field that shapes the trajectory) or to deploy
    under ``cfg`` (the model's fields)."""
    d = cfg.to_dict()
    if for_resume:                       # the newer fields are checked by _check_newer_fields
        return {"kind": KIND, "config": {k: v for k, v in d.items() if k not in RESUMABLE_FIELDS
                                         and k not in NEWER_FIELDS}}
    return {"kind": KIND, "config": {"name": cfg.name, **{k: d[k] for k in MODEL_FIELDS}}}


def _check_newer_fields(ckpt: Path, cfg: UCILConfig, meta: dict) -> None:
    """A checkpoint without a newer field was made with its old value; any other value differs."""
    stored = meta.get("config", {})
    for k, old in NEWER_FIELDS.items():
        have, want = stored.get(k, old), getattr(cfg, k)
        raced = max(stored.get("start_candidates", 1), cfg.start_candidates) > 1
        if k == "start_epochs" and not raced:
            continue                                     # no race: start_epochs plays no part
        if have != want:
            raise CheckpointError(f"{ckpt}: config.{k}: the run was made with {have}, you asked for "
                                  f"{want}; resume it with --{k.replace('_', '-')} {have}")


def meta_train_run(cfg: UCILConfig, seed: int, out_dir: Path, screen: dict, *, resume: bool,
                   quiet: bool, log, workers, data: UCILData, command: str,
                   processes) -> Phenotype:
    """Algorithm 1 from phi_0 candidate screen["phi0_candidate"] (or OUT/checkpoint.npz), validating
    each snapshot on the Omniglot validation sequences in two halves (``common.meta_train_loop``)."""
    trainer = new_trainer(cfg, seed, data, candidate=screen["phi0_candidate"],
                          processes=default_processes(cfg) if processes is None else int(processes))
    # validation jobs run niced: with a split population they fill what the meta-step leaves of
    # the worker's core instead of slowing the meta-steps
    return meta_train_loop(
        trainer, cfg=cfg, seed=seed, out_dir=out_dir, kind=KIND, command=command,
        job=_validate_job, job_args=(cfg.to_dict(), seed), parts=validation_parts(cfg.val_sequences, 2),
        expect={**expect(cfg, for_resume=True), "seed": seed}, resume=resume, quiet=quiet, log=log,
        workers=workers, nice=10, fingerprint=theta_fingerprint(trainer.theta0), record=screen,
        record_prefix="phi0_", validate_start=True, steps_per_epoch=cfg.n_classes * cfg.inner_steps,
        check=lambda ckpt, meta: _check_newer_fields(ckpt, cfg, meta), processes=processes,
        theta0_rows=1)


PHENOTYPE_KEYS = ("best_val", "best_epoch", "val_history", "history", "theta0_crc32",
                  "meta_train_seconds", "command", "deploy_lr", "deploy_lr_scores", "phi0_candidate",
                  "deploy_lr_source", "deploy_lr_sequences", "phi0_screen", "phi0_screen_seconds",
                  "phi0_start_epochs", "phi0_starts", "phi0_race_seconds", "processes",
                  "deployed_epoch", "deployed_epoch_source", "epoch_scores", "epoch_lr",
                  "epoch_lr_sequences", "epoch_choice_seconds")


def save_phenotype(ph: Phenotype, path, results: dict | None = None) -> Path:
    """A small deployable file: phi (the deployed one), its snapshots and metadata; theta_0 is
    regenerated from the seed recorded in it and checked against its CRC32. ``results`` (from
    ``compare``): the final losses with their CIs are recorded too, so the file says what it
    achieved."""
    extra = {}
    if results is not None:
        extra["results"] = {
            "protocol": results["protocol"], "draws": results["draws"],
            "final_mse": {name: {k: m["final"][k] for k in ("mean", "ci", "median")}
                          for name, m in results["models"].items()},
            "forgetting": {name: {k: m["forgetting"][k] for k in ("mean", "ci")}
                           for name, m in results["models"].items()},
            "comparison": results["comparison"], "deploy_lrs": {
                name: v["lr"] for name, v in results.get("deploy_lrs", {}).items()},
            "forward_transfer": results["forward_transfer"], "command": results["command"]}
    return save_phenotype_file(path, ph, KIND, PHENOTYPE_KEYS, extra)


def load_phenotype(path, cfg: UCILConfig | None = None) -> Phenotype:
    """The phi a file deploys (a checkpoint's best on Omniglot validation; a phenotype file's
    deployed meta-epoch, ``ucil_selection.choose_epoch``) and its snapshots, with theta_0
    regenerated from its seed.

    Refused with a clear message when the file is not a UCIL checkpoint, or was made for another
    config than ``cfg`` (when given).
    """
    path = Path(path)
    arrays, meta, file_cfg, phi = read_phenotype_file(
        path, expect(cfg) if cfg is not None else {"kind": KIND}, UCILConfig)
    try:
        seed = int(meta["seed"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its seed cannot be read ({e}); was it written by another "
                              "version of tinydan?") from None
    named = UCIL_CONFIGS.get(file_cfg.name)
    net, theta0 = initial_state(file_cfg, seed, population=1)
    load_phi(net, phi, path, file_cfg)
    crc = meta.get("theta0_crc32")
    if crc is not None and crc != theta_fingerprint(theta0):
        raise CheckpointError(f"{path}: theta_0 regenerated from seed {seed} does not match the one "
                              "the phenotype was trained with (made by another tinydan version?)")
    meta = dict(meta)
    # fields that only say how a phenotype is deployed, added later: a file without one was made
    # before it existed (its default value is how the file deploys)
    later = [k for k in ("epoch_source",) if k not in meta.get("config", {})]
    if named is not None and named.replace(**{k: getattr(file_cfg, k) for k in later}) != file_cfg:
        meta["note"] = f"config differs from the current {file_cfg.name!r} preset"
    elif named is not None and named != file_cfg:
        meta["note"] = (f"made before {', '.join(later)} existed: deploys its best meta-epoch on "
                        "Omniglot validation")
    return Phenotype(file_cfg, net, theta0, seed, meta, snapshots=snapshots_from(arrays))
