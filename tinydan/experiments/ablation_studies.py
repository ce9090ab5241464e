"""The ablation studies of the regression experiment (paper section 6.1, Figure 4) built from
cells (``ablations``): which cells each study needs, how their results are aggregated into tables
and figures, running a study or all of them, the report, and the ``ablate``/``report`` options.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, write_atomic
from ..continual import format_ci, mean_ci, results_table, summarize
from ..tasks import EVAL_SEED, VAL_SEED
from .ablations import (MLP_SIZES, SIZES, STUDIES, Cell, StudySizes, _json, _md_table, _n_eval,
                        _study_epochs, ensure_phenotype, run_cells)
from .cli import (RunFolder, UsageError, ci_count, load_refused_in_one_line, nonnegative_int,
                  one_line, positive_float, positive_int, seed_int)
from .common import versions
from .configs import REGRESSION_CONFIGS, RegressionConfig, regression_config

__all__ = ["run_study", "run_all", "write_report", "add_ablate_arguments", "add_report_arguments",
           "ablate_main", "report_main"]


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
    from .. import plots
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
    from .. import plots
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
    from .. import plots
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
              quiet: bool = False, log=print, command: str | None = None, _ph=None,
              executor=None) -> dict:
    """Run one study into ``out`` (resuming finished cells) and write results.json, results.md and
    the figures; returns the results dict. ``executor``: any concurrent.futures.Executor to run
    the cells on (default: a local ``Workers`` pool of ``workers`` processes)."""
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
    done = run_cells(study, cells, out / "cells", workers, quiet, log, executor=executor)
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
        "versions": versions(), "command": command,
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    write_atomic(out / "results.json", _json(results))
    write_atomic(out / "results.md", f"# Ablation `{study}`: {titles[study]}\n\n{md}\n"
                                      f"Command: `{command}`\n")
    log(f"{study}: wrote {out}/results.json, results.md and {', '.join(figs)}")
    return results


def run_all(cfg: RegressionConfig, out: Path, sizes: StudySizes | None = None, seed: int = 0,
            phenotype: Path | None = None, workers: int | None = None, quiet: bool = False,
            log=print, command: str | None = None, studies=STUDIES, executor=None) -> dict:
    """Every study into ``out/<study>/``, sharing one phenotype (``out/phenotype/`` unless given);
    ``executor`` as in ``run_study``."""
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
                                   log, command, _ph=ph, executor=executor)
    index = {"experiment": "incremental sine regression", "study": "all",
             "studies": {s: f"{s}/results.json" for s in studies}, "config": cfg.to_dict(),
             "sizes": (sizes or SIZES["default"]).to_dict(), "seconds": time.perf_counter() - t0,
             "versions": versions(), "command": command or _ablate_command("all", cfg, "custom", seed,
                                                                            phenotype, out),
             "created": datetime.now().isoformat(timespec="seconds")}
    write_atomic(out / "results.json", _json(index))
    write_atomic(out / "results.md", "# Ablation studies\n\n" + "\n".join(
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
    write_atomic(out, text)
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


def _sizes_default(field: str) -> str:
    """ "the sizes', D for default, T for tiny": a StudySizes field's value in each preset."""
    vals = ", ".join(f"{getattr(v, field)} for {k}" for k, v in SIZES.items())
    return f"(default: the sizes', {vals})"


def add_ablate_arguments(sp) -> None:
    """The options of ``ablate``."""
    sp.add_argument("--study", choices=[*STUDIES, "all"], default="all", help="which study")
    sp.add_argument("--config", choices=sorted(REGRESSION_CONFIGS), default="default",
                    help="model and protocol")
    sp.add_argument("--sizes", choices=sorted(SIZES), default="default",
                    help="study sizes; tiny takes seconds (with config default and no "
                         "--phenotype, net0 is then the shipped phenotype)")
    sp.add_argument("--out", type=Path,
                    help="output folder; rerun the same command on it to resume (default: "
                         "runs/ablate-<study>-<date>-<time>)")
    sp.add_argument("--seed", type=seed_int, default=0, help="base seed (a whole number >= 0)")
    sp.add_argument("--phenotype", type=Path,
                    help="phenotype of net0 (models, baselines), e.g. RUN/phenotype.npz (default: "
                         "meta-train the config into OUT/phenotype)")
    sp.add_argument("--epochs", type=positive_int,
                    help="meta-epochs of net0's phenotype (default: the config's)")
    sp.add_argument("--seeds", type=positive_int,
                    help="seeds per variant (sharing, channels) " + _sizes_default("seeds"))
    sp.add_argument("--study-epochs", type=positive_int,
                    help="meta-epochs per run (sharing, channels; default: the sizes', a fifth of "
                         "the config's for default, 1 for tiny)")
    sp.add_argument("--channels", type=_number_list,
                    help="n_channels values, e.g. 1,5,10,20,40 " + _sizes_default("channels"))
    sp.add_argument("--budget", type=positive_float,
                    help="meta-grad: seconds per arm and seed " + _sizes_default("budget_s"))
    sp.add_argument("--clock", choices=["cpu", "wall"],
                    help="meta-grad budget clock " + _sizes_default("clock"))
    sp.add_argument("--eval-functions", type=ci_count,
                    help="held-out functions, at least 2 (default: the sizes', the config's (50) "
                         "for default, 3 for tiny)")
    sp.add_argument("--buffer-size", type=positive_int,
                    help="replay: points kept per function " + _sizes_default("buffer_size"))
    sp.add_argument("--workers", type=nonnegative_int,
                    help="worker processes for cells, 0 runs them here one by one (default: one "
                         "per core)")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")


def add_report_arguments(sp) -> None:
    """The options of ``report``."""
    sp.add_argument("runs", nargs="+", type=Path, help="run or ablation folders")
    sp.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown file")


def _check_ablate_out(out: Path) -> None:
    """Refuse (UsageError) an --out that holds a run of another kind: a meta-training checkpoint
    or results that are not an ablation's (an ablation folder is resumed, never refused)."""
    if (out / "checkpoint.npz").is_file():
        raise UsageError(f"--out {out} holds a meta-training run (checkpoint.npz), not an "
                         "ablation; choose another --out")
    res = out / "results.json"
    if res.is_file():
        try:
            study = json.loads(res.read_text()).get("study")
        except (OSError, ValueError, AttributeError):
            study = None
        if study is None:
            raise UsageError(f"--out {out} holds the results of another kind of run, not an "
                             "ablation; choose another --out")


def _net0_phenotype(a, cfg, log=print):
    """The phenotype file net0 deploys: --phenotype (checked now, so that a wrong file stops the
    run before any work), the shipped phenotype for `--sizes tiny` of config default, or None
    (meta-train the config into OUT/phenotype)."""
    from .regression import SHIPPED_PHENOTYPE, load_phenotype
    if a.study not in ("models", "baselines", "all"):
        return a.phenotype
    path = a.phenotype
    if path is None:
        if not (a.sizes == "tiny" and cfg == regression_config("default")
                and SHIPPED_PHENOTYPE.is_file()):
            return None
        path = SHIPPED_PHENOTYPE
        log(f"net0: the shipped phenotype {path} (--sizes tiny; pass --phenotype to choose "
            "another, or --config tiny to meta-train one in seconds)")
    if not path.is_file():
        raise UsageError(f"--phenotype {path} does not exist or is not a file")
    try:
        load_refused_in_one_line(load_phenotype, path)
    except CheckpointError as e:
        raise UsageError(f"--phenotype {path} is not a regression phenotype: {one_line(e)}") from None
    return path


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
    RunFolder(out, resume=True).check()
    _check_ablate_out(out)
    phenotype = _net0_phenotype(a, cfg)
    print(f"ablation {a.study!r}: config {cfg.name!r}, sizes {a.sizes!r}; writing to {out} "
          "(rerun the same command to resume)")
    with RunFolder(out, resume=True):
        if a.study == "all":
            run_all(cfg, out, sizes, a.seed, phenotype, a.workers, a.quiet, command=command)
        else:
            run_study(a.study, cfg, out, sizes, a.seed, phenotype, a.workers, a.quiet,
                      command=command)
    return 0


def _check_report_out(out: Path) -> None:
    """Refuse (UsageError) a report path that is a folder, lies below a file, or cannot be made."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the path of the Markdown file to write")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {out}: {parent} is a file, not a folder; choose another "
                                 "--out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"--out {out}: cannot write in {parent} (not writable); choose "
                                 "another --out")
            break


def report_main(a, parser) -> int:
    """``python -m tinydan.regression report``."""
    _check_report_out(a.out)
    try:
        path = write_report(a.runs, a.out)
    except FileNotFoundError as e:
        parser.error(str(e))
    print(f"wrote {path}")
    return 0
