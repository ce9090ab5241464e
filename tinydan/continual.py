"""The evaluation protocol of docs/model-and-protocol.md#evaluation: loss matrices,
memory/transfer loss, forgetting, CIs.

A deployed model learns a task sequence of ``T`` sub-tasks one after the other (regression: the five
windows of a function; UCIL: the ten digit classes). After finishing sub-task ``i`` we measure the loss
on every sub-task ``j`` and get the loss matrix::

    R[i, j] = loss on sub-task j after finishing sub-task i          # (T, T) for one sequence
                                                                     # (S, T, T) for S sequences

Row ``i`` is a snapshot of the model; the lower triangle with the diagonal (``j <= i``) is what it has
already seen (its *memory*), the strict upper triangle (``j > i``) is what it has not seen yet
(*transfer*). Every number reported by the experiments is a mean over such a matrix:

==============  =====================================  =========================================
name            formula                                shape for R of shape (S, T, T)
==============  =====================================  =========================================
final loss      mean_j R[T-1, j]                       (S,)
memory loss     memory(i) = mean_{j<=i} R[i, j]        (S, T)
transfer loss   transfer(i) = mean_{j>i} R[i, j]       (S, T); NaN at i = T-1 (no future left)
total loss      total(i) = mean_j R[i, j]              (S, T)
forgetting      mean_{j<T-1} (R[T-1, j] - R[j, j])     (S,); NaN when T = 1
==============  =====================================  =========================================

``forgetting`` is backward transfer with the sign flipped: positive means the model got worse on old
sub-tasks while learning new ones. Over many sequences, ``mean_ci`` gives the mean and the half-width
of a Student-t confidence interval; ``summarize`` packs everything into a JSON-ready dict for
``results.json`` and ``results_table`` renders several such summaries as a Markdown table.

Plain NumPy (and ``scipy.stats.t``): nothing here imports the autograd engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "check_loss_matrix",
    "final_loss",
    "memory_loss",
    "transfer_loss",
    "total_loss",
    "forgetting",
    "mean_ci",
    "format_ci",
    "ci_overlap",
    "summarize",
    "to_jsonable",
    "results_table",
    "choose_on_validation",
]

SCALAR_METRICS = ("final", "forgetting")
CURVE_METRICS = ("memory", "transfer", "total")


# ---------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------


def check_loss_matrix(R) -> np.ndarray:
    """R -> float64 array of shape (T, T) or (S, T, T), T >= 1, all finite; else a clear ValueError."""
    try:
        arr = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"loss matrix R must be an array of numbers of shape (T, T) or (S, T, T); "
            f"could not convert it to floats ({exc})"
        ) from None
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"loss matrix R must have shape (T, T) for one task sequence or (S, T, T) for S sequences, "
            f"got shape {arr.shape}; stack per-sequence matrices with np.stack(list_of_R)"
        )
    if arr.shape[-1] != arr.shape[-2] or arr.shape[-1] < 1:
        raise ValueError(
            f"loss matrix R must be square in its last two axes with T >= 1 "
            f"(R[i, j] = loss on sub-task j after sub-task i), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))
        raise ValueError(
            f"loss matrix R of shape {arr.shape} has {len(bad)} non-finite entries (first at index "
            f"{tuple(int(k) for k in bad[0])}); a diverged run gives NaN/inf losses: fix or drop that "
            f"sequence before computing the protocol's metrics"
        )
    return arr


# ---------------------------------------------------------------------------------------------------
# the protocol's metrics, vectorized over a leading sequence axis
# ---------------------------------------------------------------------------------------------------


def final_loss(R) -> np.ndarray:
    """final = mean_j R[T-1, j]: the loss over the whole sequence after the last sub-task; (T,T)->(), (S,T,T)->(S,)."""
    R = check_loss_matrix(R)
    return R[..., -1, :].mean(axis=-1)


def memory_loss(R) -> np.ndarray:
    """memory(i) = mean_{j<=i} R[i, j]: loss on sub-tasks already seen; (T,T)->(T,), (S,T,T)->(S,T)."""
    R = check_loss_matrix(R)
    T = R.shape[-1]
    seen = np.tril(np.ones((T, T)))  # (T, T): 1 where j <= i
    return (R * seen).sum(axis=-1) / seen.sum(axis=-1)


def transfer_loss(R) -> np.ndarray:
    """transfer(i) = mean_{j>i} R[i, j]: loss on sub-tasks not yet seen; (…,T,T)->(…,T), NaN at i = T-1."""
    R = check_loss_matrix(R)
    T = R.shape[-1]
    future = np.triu(np.ones((T, T)), k=1)  # (T, T): 1 where j > i
    count = future.sum(axis=-1)  # (T,): T-1-i, zero in the last row
    sums = (R * future).sum(axis=-1)
    out = np.full(sums.shape, np.nan)
    np.divide(sums, count, out=out, where=count > 0)
    return out


def total_loss(R) -> np.ndarray:
    """total(i) = mean_j R[i, j]: loss on the whole sequence after sub-task i; (…,T,T)->(…,T)."""
    R = check_loss_matrix(R)
    return R.mean(axis=-1)


def forgetting(R) -> np.ndarray:
    """forgetting = mean_{j<T-1} (R[T-1, j] - R[j, j]): >0 means old sub-tasks got worse; (…,T,T)->(…), NaN if T=1."""
    R = check_loss_matrix(R)
    T = R.shape[-1]
    if T == 1:  # no sub-task was followed by another one: forgetting is undefined
        return np.full(R.shape[:-2], np.nan)[()]
    just_learned = np.diagonal(R, axis1=-2, axis2=-1)[..., :-1]  # (…, T-1): R[j, j]
    at_the_end = R[..., -1, :-1]  # (…, T-1): R[T-1, j]
    return (at_the_end - just_learned).mean(axis=-1)


# ---------------------------------------------------------------------------------------------------
# confidence intervals
# ---------------------------------------------------------------------------------------------------


def mean_ci(values, level: float = 0.95, axis: int = 0):
    """(mean, half_width) with half_width = t_{(1+level)/2, n-1} * s / sqrt(n), s the sample std (ddof=1); NaN if n=1."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must lie strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"mean_ci needs an array of numbers, could not convert to floats ({exc})") from None
    if x.ndim == 0:
        raise ValueError("mean_ci needs at least a 1-D array of per-sequence values, got a scalar")
    try:
        n = x.shape[axis]
    except IndexError:
        raise ValueError(f"axis {axis} is out of range for values of shape {x.shape}") from None
    if n == 0:
        raise ValueError(f"mean_ci needs at least one value along axis {axis}, got shape {x.shape}")
    mean = x.mean(axis=axis)
    if n == 1:  # one sample says nothing about the spread: the interval is unknown
        return mean, np.full(np.shape(mean), np.nan)[()]
    sd = np.sqrt(((x - np.expand_dims(mean, axis)) ** 2).sum(axis=axis) / (n - 1))
    t = stats.t.ppf(0.5 + level / 2.0, df=n - 1)
    return mean, t * sd / math.sqrt(n)


def _is_missing(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and not math.isfinite(float(x)))


def format_ci(mean, hw, digits: int = 3) -> str:
    """'mean ± hw' with `digits` decimals, e.g. format_ci(0.0184, 0.0081) -> '0.018 ± 0.008'; 'n/a' for missing values."""
    if _is_missing(mean):
        return "n/a"
    mean = float(mean)
    width = None if _is_missing(hw) else float(hw)
    scale = max(abs(mean), abs(width) if width is not None else 0.0)
    if 0.0 < scale < 10.0 ** (1 - digits):  # would print as 0.000 ± 0.000: switch to scientific
        fmt = f".{max(digits - 1, 1)}e"
    else:
        fmt = f".{digits}f"
    return f"{mean:{fmt}} ± " + ("n/a" if width is None else f"{width:{fmt}}")


def ci_overlap(a, b):
    """True where the intervals [m_a - h_a, m_a + h_a] and [m_b - h_b, m_b + h_b] overlap; a, b = (mean, hw); an unknown (NaN) hw counts as overlapping."""
    try:
        (ma, ha), (mb, hb) = a, b
    except (TypeError, ValueError):
        raise ValueError(
            f"ci_overlap takes two (mean, half_width) pairs, as returned by mean_ci; got {a!r} and {b!r}"
        ) from None
    ma, ha, mb, hb = (np.asarray(np.nan if v is None else v, dtype=np.float64) for v in (ma, ha, mb, hb))
    if np.any(np.isnan(ma)) or np.any(np.isnan(mb)):
        raise ValueError("ci_overlap got a NaN mean: the comparison is undefined; check the values first")
    with np.errstate(invalid="ignore"):
        overlap = (np.abs(ma - mb) <= ha + hb) | np.isnan(ha) | np.isnan(hb)
    return bool(overlap) if overlap.ndim == 0 else overlap


def _finite_mean(values) -> float:
    with np.errstate(all="ignore"):
        m = float(np.mean(values))
    return m if math.isfinite(m) else float("inf")


def choose_on_validation(final_losses, grid, *, stable: bool = False, known=None, submit=None,
                         width: int = 1) -> tuple:
    """argmin over v in ``grid`` of mean(final_losses(v)): (best value, {value: mean}).

    The one rule every tuned hyper-parameter of tinydan is chosen by, on validation tasks only.
    ``final_losses(v)`` gives the final loss of every validation sequence (or their mean) for the
    value v; the criterion is the MEAN over sequences, the figure the results report. A non-finite
    mean (a diverged run) scores inf and is never chosen unless all are.

    ``stable`` (learning rates): the grid is tried in increasing order, rates above the first one
    that diverges are not tried, and the choice is among the rates whose next larger rate did not
    diverge either: a margin, since plain SGD at the edge of stability on the validation tasks can
    diverge on the test tasks. ``known`` {v: score}: scores measured already, used as they are.
    ``submit(v)`` (with ``width`` > 1): a Future scoring v elsewhere; ``width`` values are then
    scored side by side, the first of each batch here.
    """
    known = {float(k): float(v) for k, v in (known or {}).items()}
    if not stable:
        scores = {}
        for v in grid:
            scores[float(v)] = known[float(v)] if float(v) in known else _finite_mean(final_losses(v))
        return min(scores, key=scores.get), scores
    lrs = sorted(grid)
    width = max(1, int(width)) if submit is not None else 1
    scores: dict = {}
    todo = list(lrs)
    while todo:
        batch, todo = todo[:width], todo[width:]
        fresh = [lr for lr in batch if float(lr) not in known]
        futures = {lr: submit(lr) for lr in fresh[1:]}
        for lr in batch:
            if float(lr) in known:
                scores[lr] = known[float(lr)]
            elif lr in futures:
                scores[lr] = futures[lr].result()
            else:
                scores[lr] = _finite_mean(final_losses(lr))
        diverged = [lr for lr in batch if not np.isfinite(scores[lr])]
        if diverged:                            # larger rates diverge too
            scores = {lr: v for lr, v in scores.items() if lr <= diverged[0]}
            break
    safe = [lr for lr, nxt in zip(lrs, lrs[1:]) if nxt in scores and np.isfinite(scores[nxt])]
    candidates = safe or [lr for lr in scores if np.isfinite(scores[lr])] or lrs[:1]
    return min(candidates, key=scores.get), scores


# ---------------------------------------------------------------------------------------------------
# summaries for results.json and tables for the README
# ---------------------------------------------------------------------------------------------------


def to_jsonable(obj):
    """Nested dict/list/tuple/ndarray/numpy scalars -> plain Python lists, floats, ints; NaN and inf -> None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def summarize(R, level: float = 0.95) -> dict:
    """(S,T,T) or (T,T) loss matrices -> JSON-ready dict: final/forgetting (mean, ci, median), memory/transfer/total curves (mean, ci per i), R_mean."""
    R = check_loss_matrix(R)
    if R.ndim == 2:
        R = R[None]
    S, T, _ = R.shape
    if S == 0:
        raise ValueError(f"summarize needs at least one task sequence, got R of shape {R.shape}")
    out: dict = {"n_sequences": S, "n_subtasks": T, "level": level}
    for name, values in (("final", final_loss(R)), ("forgetting", forgetting(R))):
        mean, hw = mean_ci(values, level=level)
        out[name] = {"mean": mean, "ci": hw, "median": np.median(values), "values": values}
    for name, fn in (("memory", memory_loss), ("transfer", transfer_loss), ("total", total_loss)):
        mean, hw = mean_ci(fn(R), level=level)
        out[name] = {"mean": mean, "ci": hw}
    out["R_mean"] = R.mean(axis=0)
    return to_jsonable(out)


def results_table(
    rows: Mapping[str, Mapping],
    metrics: Sequence[str] = SCALAR_METRICS,
    digits: int = 3,
    name_header: str = "model",
) -> str:
    """{name: summarize(...)} -> Markdown table, one row per name, one 'mean ± CI' column per scalar metric, plus n."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not rows:
        raise ValueError("results_table needs at least one row: pass {model_name: summarize(R)}")
    levels = {s.get("level") for s in rows.values() if isinstance(s, Mapping)}
    level = levels.pop() if len(levels) == 1 else None
    ci_label = f"{round(100 * level)}% CI" if isinstance(level, (int, float)) else "CI"
    header = [name_header] + [f"{m} (mean ± {ci_label})" for m in metrics] + ["n"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for name, summary in rows.items():
        if not isinstance(summary, Mapping):
            raise ValueError(
                f"row {name!r} must be a summary dict from tinydan.continual.summarize, got {type(summary).__name__}"
            )
        cells = [str(name)]
        for m in metrics:
            entry = summary.get(m)
            if not isinstance(entry, Mapping) or "mean" not in entry:
                available = [k for k, v in summary.items() if isinstance(v, Mapping) and "mean" in v]
                raise ValueError(f"summary for {name!r} has no metric {m!r}; available: {', '.join(available)}")
            if isinstance(entry["mean"], (list, tuple, np.ndarray)):
                raise ValueError(
                    f"metric {m!r} is a curve (one value per sub-task), not a number; tables take the scalar "
                    f"metrics {', '.join(SCALAR_METRICS)}"
                )
            cells.append(format_ci(entry["mean"], entry.get("ci"), digits=digits))
        cells.append(str(summary.get("n_sequences", "?")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
