"""The results pages, made from the committed results files and nothing else.

    python -m tinydan.experiments.docs              # write docs/results.md and the README's tables
    python -m tinydan.experiments.docs --check      # exit 1 when either differs from the files
    python -m tinydan.experiments.docs --figures    # also draw docs/figures/figure{1,2,3}.png

Every number on docs/results.md, and in the README between the ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` markers, is read from a ``results.json`` (or the benchmark's
``bench.json``) under docs/results/, or computed from one (the score of predicting 0 on the
regression's held-out functions). Each table says the command that made its file, the seed, the
tinydan version and the BLAS libraries with their kernels.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from .ablations import STUDIES

__all__ = ["render", "check", "write", "zero_predictor", "fmt", "fmt_ci", "main",
           "REGIONS"]

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path("docs/results")
PAGE = Path("docs/results.md")
README = Path("README.md")
REGRESSION = RESULTS / "regression" / "default" / "results.json"
SELECTION = RESULTS / "regression" / "selection" / "results.json"
UCIL = RESULTS / "ucil" / "small" / "results.json"
ABLATIONS = RESULTS / "ablations"
SPEED = RESULTS / "speed" / "bench.json"
REGIONS = ("regression", "ucil")
GENERATE = "python -m tinydan.experiments.docs"
LESSON_03 = Path("lessons/03_vecs_and_dans.py")      # its functions draw Figure 1
FIGURE_COPIES = [(REGRESSION.parent / "figure3_predictions.png", "figure3.png"),
                 (UCIL.parent / "fig2_net0.png", "figure2.png")]
DIVERGED = 1e6          # the loss a diverged deployment is scored with (regression.deploy)


# ---------------------------------------------------------------------------------------------
# numbers and provenance
# ---------------------------------------------------------------------------------------------
def _decimals(x: float, sig: int) -> int:
    return max(0, sig - 1 - math.floor(math.log10(abs(x))))


def fmt(x, sig: int = 3) -> str:
    """x with ``sig`` significant digits as a plain decimal (0 as '0'; None, NaN as 'n/a')."""
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    x = float(x)
    return "0" if x == 0 else f"{x:.{_decimals(x, sig)}f}"


def fmt_ci(mean, ci, sig: int = 3) -> str:
    """'mean ± ci', the half-width with as many decimals as the mean (3 significant digits)."""
    if mean is None or not math.isfinite(float(mean)):
        return "n/a"
    m = float(mean)
    d = _decimals(m, sig) if m != 0 else (_decimals(float(ci), sig) if ci else 0)
    half = "n/a" if ci is None or not math.isfinite(float(ci)) else f"{float(ci):.{d}f}"
    return f"{m:.{d}f} ± {half}"


def blas_text(versions: dict) -> str:
    """'LIBRARY VERSION (kernel KERNEL), ...' from a results file's versions (older files: 'not
    recorded')."""
    libs = (versions or {}).get("blas")
    if not libs:
        return "not recorded"
    libs = sorted(libs, key=lambda b: (str(b.get("library")), str(b.get("version"))))
    return ", ".join(f"{b.get('library') or '?'} {b.get('version') or '?'} (kernel "
                     f"{b.get('kernel') or 'not recorded'})" for b in libs)


def kernels(res: dict) -> tuple:
    """The BLAS kernels a results file was made with (empty when not recorded)."""
    libs = res.get("versions", {}).get("blas") or []
    return tuple(sorted({b.get("kernel") or "?" for b in libs}))


def provenance(res: dict, source: Path, in_docs: bool = True) -> str:
    """One paragraph: the file (linked from docs/ or from the root), the command that made it,
    the seed, the tinydan, NumPy and BLAS versions."""
    v = res.get("versions", {})
    link = source.relative_to("docs").as_posix() if in_docs else source.as_posix()
    made = f", {res['created'][:10]}" if res.get("created") else ""
    return (f"Made by `{res.get('command', 'not recorded')}` ([{source.as_posix()}]({link}){made});"
            f" seed {res.get('seed', 'not recorded')}, tinydan "
            f"{v.get('tinydan', 'not recorded')}, NumPy {v.get('numpy', 'not recorded')}, BLAS: "
            f"{blas_text(v)}.")


def wrap(text: str, width: int = 100) -> str:
    """Markdown with its prose paragraphs and list items wrapped at ``width`` columns; tables,
    headings and code spans stay whole."""
    import textwrap
    out = []
    for para in text.split("\n\n"):
        if para.startswith(("|", "#", "<!--")) or not para.strip():
            out.append(para)
            continue
        items = re.split(r"\n(?=- )", para) if para.startswith("- ") else [para.replace("\n", " ")]
        lines = []
        for item in items:
            item = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\0"),
                          item.replace("\n", " "))                 # code spans stay whole
            indent = "  " if item.startswith("- ") else ""
            lines += [ln.replace("\0", " ") for ln in textwrap.wrap(
                item, width, subsequent_indent=indent, break_on_hyphens=False,
                break_long_words=False)]
        out.append("\n".join(lines) + ("\n" if para.endswith("\n") else ""))
    return "\n\n".join(out)


def fmt_time(seconds) -> str:
    """Seconds per step in us, ms or s, 3 significant digits ('n/a' when missing)."""
    if seconds is None or not math.isfinite(float(seconds)):
        return "n/a"
    for scale, unit in ((1e-6, "us"), (1e-3, "ms"), (1.0, "s")):
        if seconds < 1000 * scale or unit == "s":
            return f"{fmt(seconds / scale)} {unit}"


def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]) + "\n"


def _ci(entry: dict | None) -> str:
    return "n/a" if not entry else fmt_ci(entry.get("mean"), entry.get("ci"))


def _load(root: Path, rel: Path) -> dict | None:
    path = root / rel
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{rel} is not valid JSON ({e}); rerun the command that made it") from None


# ---------------------------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------------------------
def zero_predictor(res: dict) -> tuple[float, float]:
    """(mean, 95% CI) over the held-out functions of the whole-function MSE of predicting 0,
    mean_j mean_x y(x)^2 on the evaluation grid the models are scored on."""
    from ..continual import final_loss, mean_ci
    from ..tasks import SineSequence, sample_functions
    from .configs import RegressionConfig
    from .regression import EVAL_POINTS
    cfg = RegressionConfig.from_dict(res["config"])
    functions = sample_functions(cfg, np.random.default_rng(res["eval_seed"]), res["n_held_out"],
                                 "test")
    seq = SineSequence(functions, np.random.default_rng(0), steps=1, n_windows=cfg.n_windows)
    _, y = seq.eval_points(EVAL_POINTS)                                # (F, T*200, 1)
    per_window = (y[..., 0].astype(np.float64) ** 2).reshape(len(functions), cfg.n_windows, -1)
    R = np.repeat(per_window.mean(-1)[:, None, :], cfg.n_windows, axis=1)  # (F, T, T)
    m, h = mean_ci(final_loss(R))
    return float(m), float(h)


def regression_block(res: dict, source: Path, in_docs: bool = True) -> str:
    """The default regression table with its provenance (README region and results page)."""
    rows = [[name, _ci(s.get("final")), fmt(s.get("final", {}).get("median")),
             _ci(s.get("forgetting"))] for name, s in res["models"].items()]
    return (f"Final MSE over the whole function after the last window, and forgetting, on "
            f"{res['n_held_out']} held-out functions (mean ± 95% confidence interval; config "
            f"`{res['config']['name']}`):\n\n"
            + _table(["model", "final MSE", "median", "forgetting"], rows) + "\n"
            + provenance(res, source, in_docs) + "\n")


def regression_details(res: dict) -> str:
    """What the results page adds under the table: the scale, the phenotype, the baselines."""
    zm, zh = zero_predictor(res)
    ph, b = res.get("phenotype", {}), res.get("baselines", {})
    scores = ", ".join(f"{lr}: {fmt(v) if v < DIVERGED else 'diverged'}"
                       for lr, v in b.get("naive_mlp_lr_val_scores", {}).items())
    worse = [n for n, s in res["models"].items() if s["final"]["mean"] >= zm]
    return (f"For scale: predicting 0 everywhere scores {fmt_ci(zm, zh)} on the same "
            f"{res['n_held_out']} functions (computed here from the config and evaluation seed "
            f"{res['eval_seed']} in the results file). "
            + (f"Final MSE no better than that: {', '.join(worse)}." if worse else
               "Every model's final MSE is below it.") + "\n\n"
            f"- The phenotype deployed as net0 is meta-epoch {ph.get('best_epoch', 'n/a')} of "
            f"{ph.get('config', res['config']).get('meta_epochs', 'n/a')} (validation final MSE "
            f"{fmt(ph.get('best_val'))}), meta-trained in {fmt(ph.get('meta_train_seconds'))} s.\n"
            f"- The naive MLP ({'-'.join(map(str, b.get('mlp_sizes', [])))}, "
            f"{b.get('mlp_parameters', 'n/a')} weights) learns at SGD lr {b.get('naive_mlp_lr')}, "
            f"chosen on validation functions (final MSE per lr: {scores}); the DAN network has "
            f"{b.get('dan_synapses', 'n/a')} synapses and {b.get('dan_phi', 'n/a')} phenotype "
            f"parameters. The joint MLP: {b.get('joint', 'n/a')}.\n")


def selection_section(sel: dict | None, source: Path) -> str:
    """How the regression default's phi learning rate was chosen: every candidate's best
    validation MSE per seed (docs/results/regression/selection/results.json)."""
    if sel is None:
        return ""
    seeds = sorted({r["seed"] for c in sel["candidates"] for r in c["runs"]})
    rows = []
    for c in sel["candidates"]:
        by_seed = {r["seed"]: r for r in c["runs"]}
        cells = [f"{fmt(by_seed[s]['best_val'])} ({by_seed[s]['best_epoch']})" if s in by_seed
                 else "not run" for s in seeds]
        mean = (fmt(float(np.mean([r["best_val"] for r in c["runs"]])))
                if len(c["runs"]) == len(seeds) else "")
        rows.append([c["label"] + (" **(chosen)**" if c["label"] == sel["chosen"] else ""),
                     str(c["meta_epochs"]), *cells, mean])
    notes = "".join(f"- {c['label']}: {c['note']}\n" for c in sel["candidates"] if c.get("note"))
    return ("### How the default's phi learning rate was chosen\n\n"
            f"{sel['rule']} Each cell: the best validation final MSE of a run (its meta-epoch).\n\n"
            + _table(["phi Adam learning rate in meta-epoch e", "meta-epochs",
                      *[f"seed {s}" for s in seeds], "mean"], rows) + "\n" + notes
            + f"\nMade by `{sel['command']}` for each candidate and seed "
              f"([{source.as_posix()}]({source.relative_to('docs').as_posix()})); tinydan "
              f"{sel['versions'].get('tinydan')}, NumPy {sel['versions'].get('numpy')}, BLAS: "
              f"{blas_text(sel['versions'])}.\n")


SAME_RUN = {REGRESSION: ("experiment", "config", "seed", "eval_seed", "n_held_out"),
            UCIL: ("experiment", "config", "seed", "draws", "evaluation_seed")}


def _reruns(root: Path, rel: Path, default: dict) -> list:
    """Other committed runs of the same deployment as ``rel`` (same experiment, config, seed,
    held-out data and deployed phenotype epoch), beside it: [(path, results)]."""
    keys, runs = SAME_RUN[rel], []
    epoch = ("best_epoch", "deployed_epoch")
    for f in sorted((root / rel).parent.parent.glob("*/results.json")):
        r = json.loads(f.read_text())
        if f.relative_to(root) != rel and all(r.get(k) == default.get(k) for k in keys) and \
                all(r.get("phenotype", {}).get(k) == default["phenotype"].get(k) for k in epoch):
            runs.append((f.relative_to(root), r))
    return runs


def _signed(x: float, sign: str = "+") -> str:
    """x to 2 significant digits, with its sign unless ``sign`` is '' ('0' when none)."""
    return "0" if x == 0 else (f"{x:{sign}.1e}" if abs(x) < 1e-3 else f"{x:{sign}.2g}")


def kernel_section(root: Path, defaults: list) -> str:
    """How the figures move with the BLAS kernel: every other committed run of a deployment
    (``defaults``: [(path, results)]) against the one reported above."""
    head = ("## How much the BLAS kernel moves the figures\n\nThe same deployments, run again "
            "with OpenBLAS told which kernel to use (`OPENBLAS_CORETYPE=<kernel>` before the "
            "command; otherwise OpenBLAS picks one for the CPU). The kernels round matrix "
            "products differently, and every SGD step of a deployment carries the difference "
            "on. Each row compares a model with its row in the tables above.\n\n")
    text, rows, moves, unmeasured = head, [], [], []
    for rel, default in defaults:
        reruns = _reruns(root, rel, default)
        unmeasured += [f"{rel.parent.parent.name} / {name}" for name in default["models"]
                       if reruns and all(name not in r["models"] for _, r in reruns)]
        for rrel, r in reruns:
            k, same = ", ".join(kernels(r)) or "not recorded", True
            for name, s in default["models"].items():
                o = r["models"].get(name)
                a = np.asarray(s["final"]["values"], float)
                b = np.asarray([] if o is None else o["final"]["values"], float)
                if o is None or np.array_equal(a, b):
                    continue
                same, d = False, o["final"]["mean"] - s["final"]["mean"]
                label = f"{rel.parent.parent.name} / {name}"
                moves.append((abs(d / s["final"]["mean"]), label, k))
                rows.append([label, k, _ci(o["final"]), f"{_signed(d)} "
                             f"({_signed(100 * d / s['final']['mean'])}%)",
                             _signed(float(np.max(np.abs(a - b))), ""),
                             _signed(abs(d) / s["final"]["ci"], ""),
                             _signed(o["forgetting"]["mean"] - s["forgetting"]["mean"])])
            note = " identical to the run above for every model and every function or draw." \
                if same else ""
            text += f"- kernel {k}:{note} {provenance(r, rrel)}\n"
    if not text.count("- kernel"):
        return head + "Not measured: no second run of a deployment is committed.\n"
    if not rows:
        return text
    moves.sort(reverse=True)
    rest = (f" Every other figure moves by at most {_signed(100 * moves[1][0], '')}% of its mean."
            if len(moves) > 1 else "") + (f" Not run under another kernel: {', '.join(unmeasured)}."
                                          if unmeasured else "")
    return (text + "\n" + _table(["model", "kernel", "final MSE", "change of the mean",
                                  "largest change on one function or draw",
                                  "change / CI half-width", "forgetting change"], rows)
            + f"\nThe figure that moves most: {moves[0][1]} under kernel {moves[0][2]}, by "
              f"{_signed(100 * moves[0][0], '')}% of its mean.{rest}\n")


# ---------------------------------------------------------------------------------------------
# ablations (Figure 4) and baselines, when committed
# ---------------------------------------------------------------------------------------------
def _same_as(reported: dict | None) -> dict:
    """{per-function final values: model name} of the runs reported above (to state them once)."""
    models = (reported or {}).get("models", {})
    return {tuple(s["final"]["values"]): n for n, s in models.items() if s["final"].get("values")}


def ablation_section(root: Path, reported: dict | None = None) -> str:
    """One table per committed ablation study (docs/results/ablations/**/results.json); a row
    that is the same deployment as a row of ``reported`` (the default regression) points to it."""
    head = "## Ablations and baselines (Figure 4, regression)\n\n"
    studies = []
    for f in (root / ABLATIONS).rglob("results.json"):
        r = json.loads(f.read_text())
        if r.get("study") not in (None, "all") and r.get("models"):
            studies.append((f.relative_to(root), r))
    order = {name: i for i, name in enumerate(STUDIES)}
    studies.sort(key=lambda x: (order.get(x[1]["study"], len(order)), str(x[0])))
    if not studies:
        return head + ("Not committed yet: `python -m tinydan.regression ablate --study all "
                       "--out docs/results/ablations` makes them.\n")
    text, known = head, _same_as(reported)
    for rel, r in studies:
        seeds = any("seeds" in s for s in r["models"].values())   # the meta-training studies
        rows = []
        for name, s in r["models"].items():
            twin = known.get(tuple(s.get("final", {}).get("values") or ()))
            cells = [f"as {twin} above", "as above"] if twin else [_ci(s.get("final")),
                                                                    _ci(s.get("forgetting"))]
            rows.append([name, *cells] + ([s.get("seeds", "n/a")] if seeds else [])
                        + [s.get("n_sequences", "n/a")])
        header = ["model", "final MSE", "forgetting"] + (["seeds"] if seeds else []) + ["n"]
        text += (f"### {r.get('title', r['study'])}\n\n" + _table(header, rows) + "\n"
                 + provenance(r, rel) + "\n\n")
    return text


# ---------------------------------------------------------------------------------------------
# UCIL
# ---------------------------------------------------------------------------------------------
def ucil_block(res: dict, source: Path, in_docs: bool = True) -> str:
    """The UCIL table with its provenance and forward transfer (README region and results page)."""
    ae = res.get("plain_autoencoders", {})
    rows = []
    for name, s in res["models"].items():
        label = name
        if name in ae:
            sizes, n = ae[name]["sizes"], ae[name]["parameters"]
            label = f"{name} {'-'.join(map(str, sizes))} ({n} weights)"
        lr = res.get("deploy_lrs", {}).get(name, {}).get("lr")
        rows.append([label, "n/a" if lr is None else f"{lr:g}", _ci(s.get("final")),
                     _ci(s.get("forgetting"))])
    ft = res.get("forward_transfer", {})
    transfer = ""
    if ft.get("unseen_loss_before_learning"):
        transfer = (f"Forward transfer: net0's loss on the digits not yet seen goes from "
                    f"{_ci(ft['unseen_loss_before_learning'])} before learning to "
                    f"{_ci(ft['unseen_loss_before_the_last_digit'])} just before the last "
                    "digit.\n\n")
    chosen = res.get("lr_chosen_on")
    digits = next(iter(res["models"].values()), {}).get("n_subtasks", "n/a")
    return (f"Final MSE over all {digits} digits after the last one, and forgetting, on "
            f"{res['draws']} "
            f"MNIST draws (mean ± 95% confidence interval; config `{res['config']['name']}`"
            + (f"; every SGD lr chosen on {chosen}" if chosen else "") + "):\n\n"
            + _table(["model", "SGD lr", "final MSE", "forgetting"], rows) + "\n" + transfer
            + provenance(res, source, in_docs) + "\n")


def ucil_details(res: dict) -> str:
    """The protocol and the phenotype of the UCIL run, for the results page."""
    ph = res.get("phenotype", {})
    how = {"mnist-val": "on MNIST's validation half", "omniglot": "on Omniglot validation"}
    net = res.get("dan_network", {})
    cfg = res["config"]
    half = " (from the half of MNIST's test set not used to choose rates)" \
        if cfg.get("lr_source") == "mnist-val" else ""
    epoch = ph.get("deployed_epoch", ph.get("best_epoch", "n/a"))
    chosen = how.get(ph.get("deployed_epoch_source"), "on Omniglot validation")
    return (f"Protocol: the MNIST test digits in order, one digit after the other{half}, "
            f"{cfg['shots']} images and {cfg['deploy_steps']} SGD steps per digit on the "
            "synapses, phi fixed; the loss matrix and forgetting as in "
            "[model-and-protocol.md](model-and-protocol.md#evaluation). The DAN network has "
            f"{net.get('synapses', 'n/a')} synapses and {net.get('phi', 'n/a')} phenotype "
            f"parameters; net0 deploys meta-epoch {epoch} of its phenotype (chosen {chosen}).\n")


# ---------------------------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------------------------
def speed_section(bench: dict | None) -> str:
    """The benchmark table of docs/results/speed/bench.json."""
    head = "## Speed\n\n"
    if bench is None:
        return head + f"Not committed yet: `python -m tinydan.bench --quick --json {SPEED}`.\n"
    m = bench.get("machine", {})
    cmd = "python -m tinydan.bench" + (" --quick" if bench.get("quick") else "")
    if bench.get("threads_requested") not in (None, 1):
        cmd += f" --threads {bench['threads_requested']}"
    e2e = bench.get("end_to_end")
    if e2e:
        cmd += f" --end-to-end {e2e['epochs']} --rounds {e2e['rounds']}"
    cmd += f" --json {SPEED.as_posix()}"
    rows = [[r["name"], fmt_time(r["tinydan_s"]), r.get("reference_name", "n/a"),
             fmt_time(r["reference_s"]), fmt(r["ratio"]),
             "" if r.get("target") is None else f"≤ {r['target']:g}", r.get("status") or "",
             f"{r['repeat']} x {r['number']}"] for r in bench.get("results", [])]
    libs = m.get("blas_library")
    blas = blas_text({"blas": [dict(b, kernel=b.get("architecture")) for b in libs]}) if libs \
        else m.get("blas", "not recorded")
    threads = ", ".join(f"{a} {n} thread(s)" for a, n in m.get("blas_threads") or [])
    load = m.get("load_avg")
    load = ", ".join(map(str, load)) if isinstance(load, (list, tuple)) else "not recorded"
    return (head + "Median time per step of tinydan against the reference named in each row "
            "doing the same computation (hand-written NumPy, tinydan's own generic path, or "
            "PyTorch when it is installed; outputs and gradients checked to agree first); "
            "ratio = tinydan / reference. Measured on a shared, noisy machine with "
            f"{m.get('cpus_usable', m.get('cpu_count', 'n/a'))} usable cores (load average "
            f"{load} when it started)"
            + (" and with `--quick`, few samples per side, so a ratio can be off by tens of "
               "percent" if bench.get("quick") else "")
            + ". The ratios say how tinydan compares with its references here; the absolute "
              "times say little about another machine.\n\n"
            + _table(["benchmark", "tinydan", "reference", "reference time", "ratio", "target",
                      "status", "samples x calls"], rows)
            + f"\nMade by `{cmd}` ([{SPEED.as_posix()}](results/speed/bench.json)); tinydan "
              f"{m.get('tinydan', 'not recorded')} ({m.get('tinydan_git', 'no revision')}), "
              f"NumPy {m.get('numpy', 'not recorded')}, BLAS: {blas}, "
              f"{threads or 'threads not recorded'}.\n" + end_to_end_text(e2e))


def end_to_end_text(e2e: dict | None) -> str:
    """The end-to-end rows of bench.json: whole meta-training runs, tinydan against PyTorch."""
    if not e2e:
        return ""
    med, ratio = e2e["median"], e2e["ratio"]
    rows = [["tinydan: `python -m tinydan.regression meta-train`",
             f"{med['tinydan']['wall_s']:.1f} s", f"{med['tinydan']['cpu_s']:.1f} s"],
            ["PyTorch eager: `python -m tinydan.bench.torch_reference`",
             f"{med['torch']['wall_s']:.1f} s", f"{med['torch']['cpu_s']:.1f} s"],
            ["ratio tinydan / PyTorch (median of the rounds)", fmt(ratio["wall_s"]),
             fmt(ratio["cpu_s"])]]
    val = (f", and one validation of the final phi on the validation functions (its MSE "
           f"agrees to {e2e['val_max_rel_diff']:.0e})" if "val_max_rel_diff" in e2e else "")
    return (f"\nEnd to end: {e2e['epochs']} meta-epochs of the regression config "
            f"`{e2e['config']}`{val}; both sides start from the same phi_0, theta_0 and task "
            f"draws (their meta-loss histories agree to {e2e['meta_loss_max_rel_diff']:.0e}); "
            "whole processes, "
            f"{e2e['rounds']} interleaved rounds, medians; target: tinydan at most half "
            "PyTorch's wall time.\n\n" + _table(["run", "wall", "CPU"], rows))


# ---------------------------------------------------------------------------------------------
# the page, the README regions, --check
# ---------------------------------------------------------------------------------------------
INTRO = f"""# Results

Every number on this page is read from a committed results file under [results/](results/),
or computed from one, by `{GENERATE}`, which also writes the tables of the top-level README.
`{GENERATE} --check` (run by the tests) fails when this page or the README differs from what
the files give. A table is reproduced by running the command under it; the figures can move
with the BLAS kernel (last section), so each table names the BLAS libraries it ran on.
"""


def render(root: Path = ROOT) -> tuple[str, dict]:
    """(docs/results.md, {region name: README region text}) from the results files under root."""
    root = Path(root)
    reg, ucil = _load(root, REGRESSION), _load(root, UCIL)
    page, regions = [INTRO], {}
    page.append("## Incremental regression (paper sections 3.1, 4.1 and 6.1)\n")
    if reg is None:
        page.append(f"Not committed yet: `python -m tinydan.regression deploy --out "
                    f"{REGRESSION.parent.as_posix()}`.\n")
        regions["regression"] = f"Not committed yet: see [docs/results.md]({PAGE.as_posix()}).\n"
    else:
        page.append(regression_block(reg, REGRESSION) + "\n" + regression_details(reg) + "\n"
                    + selection_section(_load(root, SELECTION), SELECTION))
        regions["regression"] = (regression_block(reg, REGRESSION, in_docs=False) + "\nThe "
                                 "score of predicting 0, the baselines' settings, and which "
                                 "figures move with the BLAS kernel: "
                                 f"[{PAGE.as_posix()}]({PAGE.as_posix()}).\n")
    page.append(ablation_section(root, reg))
    page.append("## Unsupervised class-incremental learning (paper sections 3.2, 4.2 and 6.2)\n")
    if ucil is None:
        page.append(f"Not committed yet: `python -m tinydan.ucil deploy --baselines --out "
                    f"{UCIL.parent.as_posix()}`.\n")
        regions["ucil"] = f"Not committed yet: see [docs/results.md]({PAGE.as_posix()}).\n"
    else:
        page.append(ucil_block(ucil, UCIL) + "\n" + ucil_details(ucil))
        regions["ucil"] = ucil_block(ucil, UCIL, in_docs=False)
    page.append(speed_section(_load(root, SPEED)))
    page.append(kernel_section(root, [(rel, r) for rel, r in ((REGRESSION, reg), (UCIL, ucil))
                                      if r is not None]))
    page = re.sub(r"\n{3,}", "\n\n", "\n".join(page))
    return wrap(page), {k: wrap(v) for k, v in regions.items()}


def _region_re(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- results:{name} -->\n)(.*?)(<!-- /results:{name} -->)", re.S)


def read_regions(readme: str) -> dict:
    """{name: text between the markers} of the README (a missing pair is absent)."""
    out = {}
    for name in REGIONS:
        m = _region_re(name).search(readme)
        if m:
            out[name] = m.group(2)
    return out


def fill_regions(readme: str, regions: dict) -> str:
    """The README with every region replaced by its generated text (markers must exist)."""
    for name, text in regions.items():
        if not _region_re(name).search(readme):
            raise ValueError(f"README.md has no <!-- results:{name} --> ... <!-- /results:{name} "
                             "--> pair: add the two marker lines where the table goes")
        readme = _region_re(name).sub(lambda m: m.group(1) + text + m.group(3), readme, count=1)
    return readme


def check(root: Path = ROOT) -> list:
    """What differs between the committed pages and what the results files give (empty: none)."""
    root = Path(root)
    page, regions = render(root)
    problems = []
    path = root / PAGE
    if not path.exists() or path.read_text() != page:
        problems.append(f"{PAGE} differs from the results files")
    have = read_regions((root / README).read_text()) if (root / README).exists() else {}
    for name, text in regions.items():
        if have.get(name) != text:
            problems.append(f"{README} region results:{name} differs from the results files")
    return problems


def write(root: Path = ROOT) -> list:
    """Write docs/results.md and the README regions; returns the paths that changed."""
    root = Path(root)
    page, regions = render(root)
    readme = (root / README).read_text()
    changed = []
    for rel, new in ((PAGE, page), (README, fill_regions(readme, regions))):
        path = root / rel
        if not path.exists() or path.read_text() != new:
            path.write_text(new)
            changed.append(rel)
    return changed


def main(argv=None) -> int:
    """Entry point of ``python -m tinydan.experiments.docs``."""
    p = argparse.ArgumentParser(prog=GENERATE, description="Write docs/results.md and the README's "
                                "results tables from the committed results files.")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when a page differs from the results files")
    p.add_argument("--figures", action="store_true",
                   help="also draw docs/figures/figure1.png and copy Figures 2 and 3 there, small")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository's root folder")
    a = p.parse_args(argv)
    try:
        if a.check:
            problems = check(a.root)
            for line in problems:
                print(f"{line}; run `{GENERATE}` and commit the result", file=sys.stderr)
            return 1 if problems else 0
        changed = write(a.root)
        print("wrote " + (", ".join(map(str, changed)) if changed else "nothing (up to date)"))
        if a.figures:
            from .docs_figures import draw_figures
            drawn = draw_figures(a.root, LESSON_03, FIGURE_COPIES)
            print("drew " + ", ".join(str(f.relative_to(a.root)) for f in drawn))
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
