"""The paper's figures from NumPy arrays and ``tinydan.continual`` summaries.

Every function takes plain arrays (or lists, or the JSON-ready lists of ``summarize``, where ``None``
means a missing value), draws one figure, writes it as a PNG to ``path`` (parent folders are made) and
returns the ``matplotlib.figure.Figure``:

===============================  ===============================================================
function                         draws
===============================  ===============================================================
plot_loss_matrix                 the mean ``R`` matrix as a heat map (memory below the staircase,
                                 transfer above it), numbers in the cells
plot_curves                      memory / transfer / total loss over deployment, mean and CI band
                                 per model (paper Figure 4, top)
plot_meta_training               meta-loss against meta-step: raw values faint, moving average bold
                                 (Figure 4, bottom)
plot_function_fits               one function of the regression stream: the target and the model's
                                 fit over the whole domain after each window, dark to light
                                 (Figure 3); ``plot_function_grid`` puts several side by side
plot_reconstruction_panels       rows of image grids, originals above reconstructions (Figure 2)
===============================  ===============================================================

Figures are made with ``matplotlib.figure.Figure`` directly, never with ``pyplot``: no GUI backend is
selected (drawing goes through Agg, so a machine without a display works), and nothing is registered in
pyplot's global list of open figures, so there is nothing to close and no memory builds up over a long
experiment. In a notebook, the returned Figure displays itself.

Plain NumPy and matplotlib: nothing here imports the autograd engine.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

__all__ = [
    "plot_loss_matrix",
    "plot_curves",
    "plot_meta_training",
    "plot_function_fits",
    "plot_function_grid",
    "plot_reconstruction_panels",
    "moving_average",
]

DPI = 120


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def _floats(value, what: str) -> np.ndarray:
    """Array of float64 from arrays/lists (None -> NaN), or a ValueError naming `what`."""
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be an array of numbers, could not convert it to floats ({exc})") from None


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path) -> Figure:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight", pad_inches=0.1)
    return fig


def _finish(fig: Figure, ax, path, xlabel: str, ylabel: str, title: str, logy: bool = False) -> Figure:
    """The line plots' common ending: labels, title, grid, legend, optional log y; saved to `path`."""
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _save(fig, path)


def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean over the last `window` finite values (fewer at the start), (n,) -> (n,); NaN/inf are skipped."""
    v = _floats(values, "values")
    if v.ndim != 1:
        raise ValueError(f"moving_average takes a 1-D array of values, got shape {v.shape}")
    if int(window) != window or window < 1:
        raise ValueError(f"moving-average window must be a positive integer, got {window!r}")
    window = int(window)
    ok = np.isfinite(v)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    end = np.arange(1, len(v) + 1)
    start = np.maximum(end - window, 0)
    n = counts[end] - counts[start]
    out = np.full(len(v), np.nan)
    np.divide(sums[end] - sums[start], n, out=out, where=n > 0)
    return out


# ---------------------------------------------------------------------------------------------------
# the loss matrix
# ---------------------------------------------------------------------------------------------------


def plot_loss_matrix(R_mean, path, title: str = "loss matrix R", task_labels: Sequence[str] | None = None,
                     fmt: str = ".3g", log: bool = False, cmap: str = "viridis") -> Figure:
    """Heat map of the (T, T) mean loss matrix R[i, j] (row: after sub-task i, column: loss on sub-task j)."""
    R = _floats(R_mean, "R_mean")
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(
            f"plot_loss_matrix needs one square (T, T) matrix, got shape {R.shape}; for a stack of "
            f"(S, T, T) matrices pass R.mean(axis=0) or summarize(R)['R_mean']"
        )
    T = R.shape[0]
    labels = [str(k + 1) for k in range(T)] if task_labels is None else [str(s) for s in task_labels]
    if len(labels) != T:
        raise ValueError(f"task_labels has {len(labels)} entries for a {T}x{T} matrix; give one label per sub-task")
    finite = R[np.isfinite(R)]
    if log:
        positive = finite[finite > 0]
        if positive.size == 0:
            raise ValueError("log=True needs some positive losses in R_mean; use log=False")
        norm = LogNorm(vmin=positive.min(), vmax=positive.max())
    else:
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)

    size = min(3.0 + 0.55 * T, 12.0)
    fig = _new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(R), cmap=cmap, norm=norm)
    fig.colorbar(image, ax=ax, label="loss", shrink=0.85)
    if T <= 20:  # numbers stay readable up to about this size
        colours = colormaps[cmap]
        for i in range(T):
            for j in range(T):
                if not np.isfinite(R[i, j]):
                    continue
                shade = colours(norm(R[i, j]))
                luminance = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2]
                ax.text(j, i, format(R[i, j], fmt), ha="center", va="center", fontsize=8 if T > 8 else 9,
                        color="black" if luminance > 0.5 else "white")
    if T > 1:  # staircase between memory (j <= i, on and below the diagonal) and transfer (j > i)
        xs, ys = [], []
        for i in range(T - 1):
            xs += [i + 0.5, i + 0.5]
            ys += [i - 0.5, i + 0.5]
        xs.append(T - 0.5)
        ys.append(T - 1.5)
        ax.plot(xs, ys, color="white", linewidth=1.5, linestyle="--")
    ax.set_xticks(range(T), labels)
    ax.set_yticks(range(T), labels)
    ax.set_xlabel("loss on sub-task j")
    ax.set_ylabel("after sub-task i")
    ax.set_title(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# curves over deployment
# ---------------------------------------------------------------------------------------------------


def _mean_and_hw(name: str, curve) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(curve, Mapping):  # an entry of summarize(R), e.g. summary["memory"]
        if "mean" not in curve:
            raise ValueError(f"curve {name!r} is a dict without 'mean'; pass (mean, half_width) or summary['memory']")
        mean, hw = curve["mean"], curve.get("ci")
    else:
        try:
            mean, hw = curve
        except (TypeError, ValueError):
            raise ValueError(
                f"curve {name!r} must be a (mean, half_width) pair of (T,) arrays, as from mean_ci"
            ) from None
    mean = _floats(mean, f"mean of curve {name!r}")
    hw = np.full(mean.shape, np.nan) if hw is None else _floats(hw, f"half-width of curve {name!r}")
    if mean.ndim != 1 or hw.shape != mean.shape:
        raise ValueError(
            f"curve {name!r} needs mean and half-width of the same shape (T,), got {mean.shape} and {hw.shape}"
        )
    return mean, hw


def plot_curves(curves: Mapping[str, object], path, xlabel: str = "after sub-task i", ylabel: str = "loss",
                title: str = "", logy: bool = False, x=None) -> Figure:
    """Lines mean(i) with shaded bands [mean - hw, mean + hw], one per model; curves = {name: (mean (T,), hw (T,))}."""
    if not curves:
        raise ValueError("plot_curves needs at least one curve: {name: (mean, half_width)}")
    parsed = {str(name): _mean_and_hw(str(name), c) for name, c in curves.items()}
    lengths = {m.shape[0] for m, _ in parsed.values()}
    if len(lengths) != 1:
        raise ValueError(f"all curves must have the same length T, got lengths {sorted(lengths)}")
    T = lengths.pop()
    xs = np.arange(1, T + 1) if x is None else _floats(x, "x")
    if xs.shape != (T,):
        raise ValueError(f"x must have shape ({T},) like the curves, got {xs.shape}")

    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name, (mean, hw) in parsed.items():
        (line,) = ax.plot(xs, mean, marker="o", markersize=4, linewidth=2, label=name)
        lo, hi = mean - hw, mean + hw
        if logy:  # a band reaching zero or below would vanish on a log axis: clip it at a tenth of the mean
            lo = np.where(lo > 0, lo, mean / 10)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if x is None:
        ax.set_xticks(xs)
    return _finish(fig, ax, path, xlabel, ylabel, title, logy)


def plot_meta_training(history: Mapping[str, tuple], path, title: str = "meta-training", ylabel: str = "meta-loss",
                       smooth: int | None = None, xlabel: str = "meta-step", logy: bool = False) -> Figure:
    """Meta-loss vs step per run: raw values faint, trailing moving average (window `smooth`, auto n/25) bold.

    history = {name: (steps (n,), values (n,) or (runs, n))}; with several runs (seeds) under one name
    each run is drawn faint and the moving average of their mean bold.
    """
    if not history:
        raise ValueError("plot_meta_training needs at least one run: {name: (steps, values)}")
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name, entry in history.items():
        try:
            steps, values = entry
        except (TypeError, ValueError):
            raise ValueError(f"history[{name!r}] must be a (steps, values) pair") from None
        steps = _floats(steps, f"steps of {name!r}")
        values = _floats(values, f"values of {name!r}")
        runs = values[None] if values.ndim == 1 else values
        if steps.ndim != 1 or runs.ndim != 2 or runs.shape[1] != steps.shape[0]:
            raise ValueError(
                f"history[{name!r}]: steps must be (n,) and values (n,) or (runs, n), got {steps.shape} "
                f"and {values.shape}"
            )
        if steps.shape[0] == 0:
            raise ValueError(f"history[{name!r}] is empty: nothing to plot")
        window = max(1, round(steps.shape[0] / 25)) if smooth is None else smooth
        colour = None
        for run in runs:
            (line,) = ax.plot(steps, run, linewidth=0.8, alpha=0.25, color=colour)
            colour = line.get_color()
        with warnings.catch_warnings():  # a step where every run diverged is NaN, and stays so quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = np.nanmean(np.where(np.isfinite(runs), runs, np.nan), axis=0) if len(runs) > 1 else runs[0]
        ax.plot(steps, moving_average(centre, window), linewidth=2.2, color=colour, zorder=3,
                label=f"{name} (moving average of {window})" if window > 1 else name)
    return _finish(fig, ax, path, xlabel, ylabel, title, logy)


def plot_arms(runs: Mapping[str, tuple], path, xlabel: str, ylabel: str, title: str) -> Figure:
    """One colour per arm, one line with markers per seed, log y; runs = {"<arm>-seed<k>": (x, y)}."""
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    colours: dict = {}
    for name, (x, y) in sorted(runs.items()):
        arm = name.rsplit("-seed", 1)[0]
        first = arm not in colours
        colours.setdefault(arm, f"C{len(colours)}")
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.5, color=colours[arm],
                label=arm if first else None)
    return _finish(fig, ax, path, xlabel, ylabel, title, logy=True)


# ---------------------------------------------------------------------------------------------------
# Figure 3: fits of the regression stream
# ---------------------------------------------------------------------------------------------------


def _check_fit(x, y_true, preds, windows):
    x = _floats(x, "x")
    y_true = _floats(y_true, "y_true")
    preds = _floats(preds, "preds")
    windows = _floats(windows, "windows")
    if x.ndim != 1 or y_true.shape != x.shape:
        raise ValueError(f"x and y_true must both have shape (P,), got {x.shape} and {y_true.shape}")
    if preds.ndim == 1:
        preds = preds[None]
    if preds.ndim != 2 or preds.shape[1] != x.shape[0]:
        raise ValueError(
            f"preds must have shape (T, P) = (windows, points), one row per window, got {preds.shape} "
            f"for P = {x.shape[0]} points"
        )
    if windows.shape != (preds.shape[0], 2):
        raise ValueError(
            f"windows must be (T, 2) [lo, hi] pairs, one per row of preds (T = {preds.shape[0]}), got shape "
            f"{windows.shape}"
        )
    order = np.argsort(x)
    return x[order], y_true[order], preds[:, order], windows


def plot_function_fits(x, y_true, preds, windows, path=None, title: str = "", ax=None,
                       cmap: str = "viridis", legend: bool = True) -> Figure:
    """One panel of Figure 3: target y_true(x) and the (T, P) predictions after each of the T windows, dark to light.

    Each window [lo, hi] is shaded in the colour of the fit made right after learning it. Pass `ax` to
    draw into an existing axes (then `path` may be None); otherwise a new figure is made and saved to `path`.
    """
    x, y_true, preds, windows = _check_fit(x, y_true, preds, windows)
    own_figure = ax is None
    if own_figure:
        if path is None:
            raise ValueError("plot_function_fits needs a `path` to save to (or an `ax` to draw into)")
        fig = _new_figure(8.0, 4.0)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    T = preds.shape[0]
    colours = colormaps[cmap](np.linspace(0.0, 0.9, T)) if T > 1 else colormaps[cmap]([0.0])
    for (lo, hi), colour in zip(windows, colours):
        ax.axvspan(lo, hi, color=colour, alpha=0.12, linewidth=0)
    ax.plot(x, y_true, color="black", linewidth=2.5, linestyle="--", label="target", zorder=5)
    for k, (pred, colour) in enumerate(zip(preds, colours)):
        lo, hi = windows[k]
        ax.plot(x, pred, color=colour, linewidth=1.6, label=f"after window {k + 1} [{lo:g}, {hi:g}]", zorder=4)
    ax.set_xlim(min(x.min(), windows.min()), max(x.max(), windows.max()))
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    if legend and own_figure:
        fig.legend(loc="outside right upper", frameon=False, fontsize=8)
    elif legend:
        ax.legend(frameon=False, fontsize=7)
    if path is not None:
        _save(fig, path)
    return fig


def plot_function_grid(fits: Sequence, path, ncols: int | None = None, title: str | None = None) -> Figure:
    """Figure 3: several plot_function_fits panels side by side; fits = [(x, y_true, preds, windows[, title]) or dict]."""
    if len(fits) == 0:
        raise ValueError("plot_function_grid needs at least one fit: [(x, y_true, preds, windows, title), ...]")
    ncols = min(len(fits), 4) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    nrows = math.ceil(len(fits) / ncols)
    fig = _new_figure(4.2 * ncols, 3.4 * nrows + (0.4 if title else 0.0))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, fit in enumerate(fits):
        if isinstance(fit, Mapping):
            args = [fit.get(key) for key in ("x", "y_true", "preds", "windows")]
            panel_title = fit.get("title", "")
        elif isinstance(fit, (tuple, list)) and len(fit) in (4, 5):
            args, panel_title = list(fit[:4]), (fit[4] if len(fit) == 5 else "")
        else:
            raise ValueError(
                f"fit {k} must be (x, y_true, preds, windows[, title]) or a dict with those keys, "
                f"got {type(fit).__name__}"
            )
        try:
            plot_function_fits(*args, title=str(panel_title or f"function {k + 1}"), ax=axes.flat[k],
                               legend=False)
        except ValueError as exc:
            raise ValueError(f"fit {k}: {exc}") from None
    for ax in axes.flat[len(fits):]:
        ax.set_axis_off()
    handles, labels = axes.flat[0].get_legend_handles_labels()  # the first panel's windows label them all
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# Figure 2: reconstructions
# ---------------------------------------------------------------------------------------------------


def _images(value, what: str) -> np.ndarray:
    """(N, H, W), (N, 1, H, W) or (N, D) with D a square number -> (N, H, W)."""
    imgs = _floats(value, what)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    elif imgs.ndim == 2:
        side = math.isqrt(imgs.shape[1])
        if side * side != imgs.shape[1]:
            raise ValueError(f"{what}: flat images of shape {imgs.shape} are not square; pass (N, H, W)")
        imgs = imgs.reshape(imgs.shape[0], side, side)
    if imgs.ndim != 3 or min(imgs.shape) < 1:
        raise ValueError(f"{what} must be images of shape (N, H, W), e.g. (N, 28, 28), got {imgs.shape}")
    return imgs


GAP_COLOUR = (0.85, 0.85, 0.85, 1.0)  # thin separators between images
EMPTY = (1.0, 1.0, 1.0, 0.0)  # unused slots: transparent


def _mosaic(rows_of_images: list[np.ndarray], gaps: list[int], width: int, to_rgba) -> np.ndarray:
    """Tile images into one (height, width, 4) RGBA picture: gaps[r] separator pixels above row r; rest transparent."""
    H, W = rows_of_images[0].shape[1:]
    out = []
    previous = 0
    for row, gap in zip(rows_of_images, gaps):
        used = len(row) * (W + 1) - 1  # pixels covered by this row's images and the gaps between them
        if gap:
            above = np.empty((gap, width, 4))
            above[:] = EMPTY
            above[:, :max(used, previous)] = GAP_COLOUR
            out.append(above)
        strip = np.empty((H, width, 4))
        strip[:] = EMPTY
        strip[:, :used] = GAP_COLOUR
        for c, img in enumerate(row):
            strip[:, c * (W + 1): c * (W + 1) + W] = to_rgba(img)
        out.append(strip)
        previous = used
    return np.concatenate(out, axis=0)


def plot_reconstruction_panels(panels: Sequence[tuple], path, ncols: int = 10, title: str | None = None,
                               cmap: str = "gray_r", vmin: float = 0.0, vmax: float = 1.0) -> Figure:
    """Figure 2: one titled block per panel, (title, images (N,H,W)) or (title, originals, reconstructions) in rows of ncols.

    With both, each row of originals sits directly above the row of their reconstructions. All panels
    share one scale (an image is as large in every panel). Pixels are shown on [vmin, vmax] (with the
    default 'gray_r', ink = 1 is black on white); NaN pixels are drawn red.
    """
    if len(panels) == 0:
        raise ValueError("plot_reconstruction_panels needs at least one panel: [(title, images), ...]")
    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    parsed = []
    for k, panel in enumerate(panels):
        if not isinstance(panel, (tuple, list)) or len(panel) not in (2, 3):
            kind = type(panel).__name__ + (f" of length {len(panel)}" if isinstance(panel, (tuple, list)) else "")
            raise ValueError(f"panel {k} must be (title, images) or (title, originals, reconstructions), got {kind}")
        name = str(panel[0])
        sets = [_images(p, f"panel {k} ({name!r}) images") for p in panel[1:]]
        if len(sets) == 2 and sets[0].shape != sets[1].shape:
            raise ValueError(
                f"panel {k} ({name!r}): originals {sets[0].shape} and reconstructions {sets[1].shape} "
                f"must have the same shape"
            )
        parsed.append((name, sets))
    cols = min(int(ncols), max(sets[0].shape[0] for _, sets in parsed))  # shared by every panel
    width = max(cols * (sets[0].shape[2] + 1) - 1 for _, sets in parsed)
    colours = colormaps[cmap].with_extremes(bad="red")
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)

    def to_rgba(img):
        return colours(norm(np.ma.masked_invalid(img)))

    band = 16  # transparent pixels above each panel, for its title
    pictures, ticks, tick_labels, titles, y = [], [], [], [], 0
    for name, sets in parsed:
        rows, gaps, labels = [], [], []
        for start in range(0, sets[0].shape[0], cols):
            for s, imgs in enumerate(sets):
                gaps.append(0 if not rows else (1 if s else 4))
                rows.append(imgs[start:start + cols])
                labels.append(("original", "reconstruction")[s] if len(sets) == 2 else "")
        pictures.append(np.broadcast_to(EMPTY, (band, width, 4)))
        titles.append((y + band * 0.55, name))
        y += band
        for row, gap, label in zip(rows, gaps, labels):
            y += gap
            if label:
                ticks.append(y + row.shape[1] / 2 - 0.5)
                tick_labels.append(label)
            y += row.shape[1]
        pictures.append(_mosaic(rows, gaps, width, to_rgba))
    mosaic = np.concatenate(pictures, axis=0)  # every panel in one picture: one scale for all

    fig_width = min(1.4 + 0.75 * width / 29, 16.0)
    fig = _new_figure(fig_width, (fig_width - 1.2) * mosaic.shape[0] / width + (0.5 if title else 0.2))
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    for y_title, name in titles:
        ax.text(width / 2, y_title, name, ha="center", va="center", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks(ticks, tick_labels, fontsize=7)
    ax.tick_params(axis="y", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
