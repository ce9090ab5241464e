"""The command line of the UCIL experiment: ``python -m tinydan.ucil [run|meta-train|deploy|bench]``.

    python -m tinydan.ucil                       # meta-train `small`, deploy on MNIST, compare
    python -m tinydan.ucil meta-train --out runs/u --epochs 4
    python -m tinydan.ucil meta-train --out runs/u --resume --epochs 8   # continue a run
    python -m tinydan.ucil deploy                # the shipped phenotype, net0 alone (5 draws)
    python -m tinydan.ucil deploy --baselines    # ... and the baselines again (minutes)
    python -m tinydan.ucil bench                 # one meta-step of the paper config: time, memory
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

from ..checkpoint import CheckpointError
from ..continual import format_ci, to_jsonable
from ..datasets import DatasetError
from ..meta import META_GRADS
from ..parallel import set_blas_threads, tune_allocator
from .cli import (training_subcommands, RunFolder, add_run_options, add_subcommand, load_refused_in_one_line,
                  make_parser, overrides, positive_float, positive_int, run_cli)
from .common import Phenotype, command_line
from .configs import LR_SOURCES, UCIL_CONFIGS, UCILConfig, ucil_config
from .ucil import DEPLOY_DRAWS, SHIPPED_PHENOTYPE, load_phenotype, save_phenotype
from .ucil_compare import NET0, PLAIN, PLAIN_NODES, RANDOM, compare
from .ucil_selection import meta_train

__all__ = ["build_parser", "main"]


def _deploy_options(g, training: bool) -> None:
    """The options that say how a phenotype is deployed (the "selection, advanced" group)."""
    made = "the config's" if training else "as the phenotype was made"
    g.add_argument("--lr-source", choices=LR_SOURCES, default=None,
                   help="where every model's deployment learning rate is chosen: 'omniglot' "
                        "(held-out Omniglot validation sequences) or 'mnist-val' (a fixed "
                        "validation half of MNIST's test set; the reported draws then come from "
                        f"the other half only) (default: {made})")
    g.add_argument("--epoch-source", choices=LR_SOURCES, default=None,
                   help="how the meta-epoch to deploy is chosen: 'omniglot' (the best on Omniglot "
                        "validation) or 'mnist-val' (the snapshot that learns the --lr-source "
                        f"mnist-val sequences best) (default: {made})")
    g.add_argument("--tune-deploy-lr", action=argparse.BooleanOptionalAction, default=None,
                   help="choose the DAN networks' deployment lr (see --lr-source) like the plain "
                        "autoencoders'; --no-tune-deploy-lr deploys at the meta-training lr (the "
                        f"paper) (default: {made})")


def build_parser() -> argparse.ArgumentParser:
    """The CLI: run (default), meta-train, deploy, bench."""
    p = make_parser("python -m tinydan.ucil",
                    "Unsupervised class-incremental learning with Deep Artificial Neurons (paper "
                    "sections 3.2, 4.2, 6.2). With no command: meta-train the `small` config on "
                    "Omniglot, deploy it on MNIST digits 0-9 in order, compare with random DANs and "
                    "a plain autoencoder, write results.json and figures.")
    sub = p.add_subparsers(dest="command", metavar="{run,meta-train,deploy,bench}")
    small = UCIL_CONFIGS["small"]
    for name, sp in training_subcommands(sub):
        if name == "run":
            sp.add_argument("--draws", type=positive_int, default=None,
                            help="MNIST draws of the 5 images per digit (default: the config's, "
                                 f"{small.eval_draws} for small)")
        adv = add_run_options(sp, UCIL_CONFIGS, "small")
        adv.add_argument("--processes", type=positive_int, metavar="N", default=None,
                         help="processes that share each meta-step's population members (default: "
                              "2 with a second core, else 1; --resume: the run's own); the same "
                              "maths, rounded differently, so a run is reproduced with the same N")
        sel = sp.add_argument_group("selection, advanced")
        sel.add_argument("--thick-strokes", type=float, metavar="P", default=None,
                         help="probability that a meta-training/validation class has thickened "
                              f"strokes (default: the config's, {small.thick_strokes} for small)")
        sel.add_argument("--phi-candidates", type=positive_int, metavar="K", default=None,
                         help="draw K phi_0 candidates and screen them on Omniglot sequences "
                              f"(default: the config's, {small.phi_candidates} for small; 1: the "
                              "seed's phi_0 and no race of starts)")
        sel.add_argument("--start-candidates", type=positive_int, metavar="N", default=None,
                         help="race the N best-screened phi_0 candidates: meta-train each "
                              "--start-epochs meta-epochs, go on with the lowest Omniglot "
                              f"validation (default: the config's, {small.start_candidates} for "
                              "small; 1: no race)")
        sel.add_argument("--start-epochs", type=positive_int, metavar="E", default=None,
                         help="meta-epochs of each start of the race (default: the config's, "
                              f"{small.start_epochs} for small)")
        if name == "run":
            _deploy_options(sel, training=True)
    dp = add_subcommand(sub, "deploy", "deploy a phenotype on MNIST and compare with the baselines")
    dp.add_argument("--checkpoint", type=Path, default=SHIPPED_PHENOTYPE,
                    help="checkpoint or phenotype file (default: the shipped phenotype)")
    dp.add_argument("--draws", type=positive_int, default=DEPLOY_DRAWS,
                    help="MNIST draws of the 5 images per digit")
    dp.add_argument("--baselines", action="store_true",
                    help="also deploy random DANs and the plain autoencoders (their learning rates "
                         "chosen first, see --lr-source): minutes instead of seconds")
    add_run_options(dp, UCIL_CONFIGS, None, training=False, seed=False)
    dp.add_argument("--config", choices=sorted(UCIL_CONFIGS), default=None,
                    help="refuse a file made for another model than this config's (default: the "
                         "file's own config)")
    _deploy_options(dp.add_argument_group("selection, advanced"), training=False)
    bp = add_subcommand(sub, "bench", "time one meta-step of the paper config and its peak memory")
    bp.add_argument("--meta-grad", choices=list(META_GRADS), default="first_order",
                    help="meta-gradient mode timed")
    bp.add_argument("--repeat", type=positive_int, default=3, help="meta-steps timed")
    bp.add_argument("--threads", type=positive_int, default=None,
                    help="threads for the DAN layers' chunks (default: cores, at most 2)")
    bp.add_argument("--blas-threads", type=positive_int, default=1, help="OpenBLAS threads")
    return p


_FIELDS = (("meta_grad", "meta_grad"), ("meta_epochs", "epochs"), ("inner_lr", "inner_lr"),
           ("meta_lr", "meta_lr"), ("meta_lr_decay", "meta_lr_decay"), ("eval_draws", "draws"),
           ("thick_strokes", "thick_strokes"), ("tune_deploy_lr", "tune_deploy_lr"),
           ("lr_source", "lr_source"), ("epoch_source", "epoch_source"),
           ("phi_candidates", "phi_candidates"), ("start_candidates", "start_candidates"),
           ("start_epochs", "start_epochs"))


def _config_from_args(a) -> UCILConfig:
    over = overrides(a, _FIELDS)
    preset = UCIL_CONFIGS[a.config]
    if "phi_candidates" in over and "start_candidates" not in over:   # --phi-candidates 1: no race
        over["start_candidates"] = min(preset.start_candidates, over["phi_candidates"])
    return ucil_config(a.config, **_follow_lr_source(over, preset.epoch_source))


def _follow_lr_source(changes: dict, epoch_source: str) -> dict:
    """``changes`` with epoch_source "omniglot" added when they make lr_source "omniglot" and leave
    an epoch_source "mnist-val" (which needs lr_source "mnist-val"): the epoch is chosen where the
    rates are."""
    if changes.get("lr_source") == "omniglot" and "epoch_source" not in changes \
            and epoch_source == "mnist-val":
        return {**changes, "epoch_source": "omniglot"}
    return changes


def _deploy(a, parser, out: Path, typed) -> int:
    path = a.checkpoint
    if not path.exists():
        parser.error(f"checkpoint {path} does not exist; meta-train one with "
                     "`python -m tinydan.ucil meta-train --out DIR`")
    cfg = None if a.config is None else ucil_config(a.config)
    ph = load_refused_in_one_line(load_phenotype, path, cfg)
    # as the user gave it; the shipped file by its place in the package (no machine paths)
    ph.meta["path"] = (f"tinydan/phenotypes/{path.name}" if path.resolve() == SHIPPED_PHENOTYPE
                       else str(path))
    if a.tune_deploy_lr is not None and a.tune_deploy_lr != ph.cfg.tune_deploy_lr:
        ph.cfg = ph.cfg.replace(tune_deploy_lr=a.tune_deploy_lr)
        ph.meta.pop("deploy_lr", None)         # a recorded rate belongs to the other setting
        ph.meta.pop("deploy_lr_scores", None)
    asked = {k: v for k, v in (("lr_source", a.lr_source), ("epoch_source", a.epoch_source))
             if v is not None}                 # deploy_lr / choose_epoch choose again
    changes = _follow_lr_source(asked, ph.cfg.epoch_source)
    if changes != asked:
        print("note: --lr-source omniglot: the meta-epoch is chosen on Omniglot too")
    try:
        ph.cfg = ph.cfg.replace(**changes)
    except ValueError as e:
        parser.error(str(e))
    print(f"deploying phenotype {path} (config {ph.cfg.name!r}, seed {ph.seed}); writing to {out}")
    with RunFolder(out, overwrite=a.overwrite):
        res = compare(ph, out, draws=a.draws, quiet=a.quiet, argv=typed, baselines=a.baselines)
    _print_verdict(res)
    if not a.baselines:
        _print_recorded(ph)
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m tinydan.ucil``."""
    import sys
    typed = list(sys.argv[1:] if argv is None else argv)   # recorded as the command, as typed
    parser = build_parser()

    def handle(a) -> int:
        if a.command == "bench":
            from ..bench.ucil_step import bench_paper_meta_step
            res = bench_paper_meta_step(a.meta_grad, a.repeat, a.threads, a.blas_threads)
            print(json.dumps(to_jsonable(res), indent=1))
            return 0
        set_blas_threads(1)    # many small products: one BLAS thread, the second core runs workers
        tune_allocator()
        out = a.out or Path("runs") / f"ucil-{datetime.now():%Y%m%d-%H%M%S}"
        if a.command == "deploy":
            return _deploy(a, parser, out, typed)
        try:
            cfg = _config_from_args(a)
        except ValueError as e:
            parser.error(str(e))
        print(f"config {cfg.name!r}: {cfg.meta_grad} meta-gradient, meta-training synapse lr "
              f"{cfg.inner_lr}, phi lr {cfg.meta_lr}, {cfg.meta_epochs} meta-epochs of "
              f"{cfg.n_classes} classes x {cfg.inner_steps} steps; writing to {out}")
        with RunFolder(out, resume=a.resume, overwrite=a.overwrite):
            t = time.perf_counter()
            ph = meta_train(cfg, a.seed, out, resume=a.resume, quiet=a.quiet,
                            command=command_line("tinydan.ucil", typed), processes=a.processes)
            race = ph.meta.get("phi0_starts")
            how = (f" (a race of {len(race)} starts; the winner's own run "
                   f"{ph.meta['meta_train_seconds']:.0f} s)" if race else "")
            print(f"meta-training done in {time.perf_counter() - t:.0f} s{how}; best validation "
                  f"MSE {ph.meta['best_val']:.4f} at meta-epoch {ph.meta['best_epoch']}")
            save_phenotype(ph, out / "phenotype.npz")
            if a.command == "run":
                res = compare(ph, out, quiet=a.quiet, argv=typed,
                              extra={"wall_seconds_meta_training": time.perf_counter() - t})
                save_phenotype(ph, out / "phenotype.npz", results=res)
                _print_verdict(res)
                print(f"total wall time {time.perf_counter() - t:.0f} s; phenotype: "
                      f"{out / 'phenotype.npz'}")
        return 0

    return run_cli(parser, argv, handle, errors=(CheckpointError, DatasetError))


def _print_verdict(res: dict) -> None:
    c, m = res["comparison"], res["models"]
    deployed = [name for name in (NET0, RANDOM, PLAIN, PLAIN_NODES) if name in c["diverged_draws"]]
    line = ", ".join(f"{name} {format_ci(m[name]['final']['mean'], m[name]['final']['ci'])}"
                     if name in m else f"{name} diverged" for name in deployed)
    print(f"\nfinal MSE over all 10 digits (mean ± 95% CI over {res['draws']} draws): {line}")
    p = res.get("phenotype", {})
    if "deployed_epoch" in p:
        how = ("on MNIST's validation half" if p.get("deployed_epoch_source") == "mnist-val"
               else "on Omniglot validation")
        print(f"net0 deployed meta-epoch {p['deployed_epoch']} (chosen {how})")
    if len(deployed) > 1:
        print(f"net0 lowest: {c['net0_lowest']}; CI overlaps: random DANs "
              f"{c['net0_vs_random_ci_overlap']}, plain autoencoder {c['net0_vs_plain_ci_overlap']}")
    tr = res["forward_transfer"].get("transfer_loss_per_class")
    if tr:
        print("net0 transfer loss (digits not yet seen) after each digit: " +
              " ".join("-" if v is None else f"{v:.4f}" for v in tr))


def _print_recorded(ph: Phenotype) -> None:
    """The comparison recorded in the phenotype file when it was made (baselines not rerun)."""
    rec = ph.meta.get("results")
    if not rec:
        print("(run with --baselines to deploy random DANs and the plain autoencoders too)")
        return
    finals = rec.get("final_mse", {})
    lrs = rec.get("deploy_lrs", {})
    line = ", ".join(f"{name} {format_ci(v['mean'], v['ci'])}"
                     + (f" (lr {lrs[name]})" if name in lrs else "") for name, v in finals.items())
    print(f"recorded in the phenotype ({rec.get('draws')} draws, `{rec.get('command')}`): {line}")
    made = ph.meta.get("config", {}).get("lr_source", "omniglot")
    if made != ph.cfg.lr_source:
        print(f"(recorded with lr_source {made!r}, deployed now with {ph.cfg.lr_source!r}: other "
              "rate-choosing sequences and other MNIST images, so the figures are not comparable)")
    print("(run with --baselines to deploy the baselines again on these draws)")
