"""The command line of the regression experiment:
``python -m tinydan.regression [run|meta-train|deploy|ablate|report]``.

    python -m tinydan.regression                      # meta-train `default`, deploy, compare, plot
    python -m tinydan.regression meta-train --config paper --meta-grad one_step --out runs/p
    python -m tinydan.regression deploy               # the shipped phenotype, in seconds
    python -m tinydan.regression deploy --checkpoint runs/<run>/checkpoint.npz
"""
from __future__ import annotations

import argparse
import shlex
from datetime import datetime
from pathlib import Path

from ..checkpoint import CheckpointError
from ..continual import format_ci
from ..parallel import set_blas_threads
from .ablation_studies import ablate_main, add_ablate_arguments, add_report_arguments, report_main
from .cli import (training_subcommands, RunFolder, UsageError, add_run_options, add_subcommand, ci_count,
                  load_refused_in_one_line, make_parser, overrides, positive_int, run_cli)
from .common import command_line
from .configs import REGRESSION_CONFIGS, regression_config
from .regression import SHIPPED_PHENOTYPE, compare, load_phenotype, meta_train, save_phenotype

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI: run (default), meta-train, deploy, ablate, report."""
    p = make_parser("python -m tinydan.regression",
                    "Incremental sine regression with Deep Artificial Neurons (paper sections 3.1, "
                    "4.1, 6.1). With no command: meta-train the `default` config, deploy it on "
                    "held-out functions, compare with random DANs and plain MLPs, write "
                    "results.json and figures.")
    sub = p.add_subparsers(dest="command", metavar="{run,meta-train,deploy,ablate,report}")
    for name, sp in training_subcommands(sub):
        if name == "run":
            sp.add_argument("--eval-functions", type=ci_count, default=None,
                            help="number of held-out functions, at least 2 (default: the "
                                 "config's, 50)")
        adv = add_run_options(sp, REGRESSION_CONFIGS, "default")
        adv.add_argument("--output", choices=["scaled_tanh", "linear"], default=None,
                         help="output option (default: the config's)")
        adv.add_argument("--init", choices=["glorot", "fan_in_uniform"], default=None,
                         help="initialisation of phi and theta_0 (default: the config's)")
        adv.add_argument("--val-every", type=positive_int, default=None,
                         help="validate a phi snapshot every N meta-epochs (default: the config's)")
    dp = add_subcommand(sub, "deploy", "deploy a phenotype on held-out functions and compare")
    dp.add_argument("--checkpoint", type=Path, default=SHIPPED_PHENOTYPE,
                    help="checkpoint or phenotype file to deploy (default: the shipped phenotype)")
    dp.add_argument("--eval-functions", type=ci_count, default=None,
                    help="number of held-out functions, at least 2 (default: the phenotype's "
                         "config's, 50)")
    add_run_options(dp, REGRESSION_CONFIGS, None, training=False)
    add_ablate_arguments(add_subcommand(
        sub, "ablate", "ablation studies (Figure 4) and continual-learning baselines; resumable"))
    add_report_arguments(add_subcommand(
        sub, "report", "collect finished runs and ablations into one Markdown file"))
    return p


_FIELDS = (("meta_grad", "meta_grad"), ("meta_epochs", "epochs"), ("inner_lr", "inner_lr"),
           ("meta_lr", "meta_lr"), ("meta_lr_decay", "meta_lr_decay"), ("output", "output"),
           ("eval_functions", "eval_functions"), ("init", "init"), ("val_every", "val_every"))


def main(argv=None) -> int:
    """Entry point of ``python -m tinydan.regression``."""
    import sys
    typed = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()

    def handle(a) -> int:
        set_blas_threads(1)   # small matmuls: one BLAS thread each, the second core validates
        command = command_line("tinydan.regression", typed)
        if a.command == "report":
            return report_main(a, parser)
        if a.command == "ablate":
            return ablate_main(a, parser, "python -m tinydan.regression " +
                               " ".join(shlex.quote(x) for x in typed))
        out = a.out or Path("runs") / f"regression-{datetime.now():%Y%m%d-%H%M%S}"
        if a.command == "deploy":
            path = a.checkpoint
            if not path.exists():
                parser.error(f"checkpoint {path} does not exist; meta-train one with "
                             "`python -m tinydan.regression meta-train --out DIR`")
            ph = load_refused_in_one_line(load_phenotype, path)
            n = a.eval_functions or ph.cfg.eval_functions
            if n < 2:
                raise UsageError(f"--eval-functions {n}: confidence intervals need at least 2")
            print(f"deploying phenotype {path} (config {ph.cfg.name!r}, meta-epoch "
                  f"{ph.meta.get('best_epoch', '?')}, validation MSE "
                  f"{ph.meta.get('best_val', float('nan')):.4f})")
            with RunFolder(out, overwrite=a.overwrite):
                compare(ph, out, n_functions=n, seed=a.seed, quiet=a.quiet, command=command)
            return 0
        try:
            cfg = regression_config(a.config, **overrides(a, _FIELDS))
        except ValueError as e:
            parser.error(str(e))
        if a.command == "run" and cfg.eval_functions < 2:
            raise UsageError(f"--eval-functions {cfg.eval_functions}: confidence intervals need "
                             "at least 2 held-out functions")
        print(f"config {cfg.name!r}: output {cfg.output}, meta-gradient {cfg.meta_grad}, synapse "
              f"lr {cfg.inner_lr}, phi lr {cfg.meta_lr}, {cfg.meta_epochs} meta-epochs; writing "
              f"to {out}")
        with RunFolder(out, resume=a.resume, overwrite=a.overwrite):
            ph = meta_train(cfg, a.seed, out, resume=a.resume, quiet=a.quiet, command=command)
            save_phenotype(ph, out / "phenotype.npz")
            print(f"meta-training done in {ph.meta['meta_train_seconds']:.0f} s; best validation "
                  f"MSE {ph.meta['best_val']:.4f} at meta-epoch {ph.meta['best_epoch']}; "
                  f"deployable phenotype in {out / 'phenotype.npz'}")
            if a.command == "run":
                res = compare(ph, out, seed=a.seed, quiet=a.quiet, command=command)
                m = res["models"]
                k0, k2 = "net0 (meta-learned DANs)", "net2 (random DANs)"
                print(f"\nnet0 final MSE {format_ci(m[k0]['final']['mean'], m[k0]['final']['ci'])}"
                      f" vs net2 {format_ci(m[k2]['final']['mean'], m[k2]['final']['ci'])}")
        return 0

    return run_cli(parser, argv, handle, errors=(CheckpointError,))
