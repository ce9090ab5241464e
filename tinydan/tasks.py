"""The task streams of both experiments (paper sections 4.1 and 4.2). Plain NumPy.

Incremental sine regression:

A task sequence is one target function y = a0 sin(r0 x + p0) + a1 sin(r1 x + p1) with
a ~ U(0, 2), r ~ U(0, pi/3), p ~ U(-5, 5), learned window by window: the domain [-5, 5] is cut into
5 windows [-5,-3], [-3,-1], [-1,1], [1,3], [3,5]; each sub-task is ``steps`` SGD steps on batches
of ``batch`` points x ~ U(window). Many functions are handled at once along a leading axis (the
population during meta-training, the held-out functions at deployment).

Config ``authors`` (the authors' notebook) uses another family, see ``sample_authors_sines``:
y = (a0 sin(r0 x + p0) + a1 cos(r1 x + p1)) / 2 with Gaussian noise on the training targets.
``sample_functions(cfg, rng, n, split)`` picks the family of a config.

Unsupervised class-incremental learning: ``sample_sequences`` draws sequences of classes of images,
``ClassSequences`` serves them to meta-training (one class after the other, an autoencoder's x = y).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SineFunctions", "SineSequence", "sample_sines", "sample_authors_sines",
           "sample_functions", "windows", "EVAL_SEED", "VAL_SEED", "sample_sequences",
           "ClassSequences"]

# Held-out functions come from these seeds, which meta-training never uses (it draws from
# np.random.default_rng([seed, 1])).
EVAL_SEED = 2_000_003
VAL_SEED = 1_000_003


def windows(domain=(-5.0, 5.0), n: int = 5) -> np.ndarray:
    """(n, 2) array of consecutive equal windows covering ``domain``."""
    edges = np.linspace(domain[0], domain[1], n + 1)
    return np.stack([edges[:-1], edges[1:]], axis=1)


@dataclass
class SineFunctions:
    """F target functions: amplitudes a (F, 2), rates r (F, 2), phases p (F, 2).

    ``second = "cos"`` and ``scale`` give the authors' family scale * (a0 sin(.) + a1 cos(.));
    ``noise`` (F,) is the standard deviation of the Gaussian noise SineSequence adds to the
    training targets (never to the evaluation points). The defaults are the paper's family.
    """

    a: np.ndarray
    r: np.ndarray
    p: np.ndarray
    second: str = "sin"
    scale: float = 1.0
    noise: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.a)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """y[f, ...] = sum_k a[f,k] sin(r[f,k] x[f, ...] + p[f,k]); x (F, ...) -> (F, ...)."""
        shape = (len(self),) + (1,) * (x.ndim - 1)
        y = np.zeros_like(x)
        for k in range(2):
            wave = np.cos if (k == 1 and self.second == "cos") else np.sin
            y += self.a[:, k].reshape(shape) * wave(self.r[:, k].reshape(shape) * x +
                                                    self.p[:, k].reshape(shape))
        if self.scale != 1.0:
            y *= self.scale
        return y

    def subset(self, idx) -> "SineFunctions":
        """The functions at ``idx``."""
        return SineFunctions(self.a[idx], self.r[idx], self.p[idx], self.second, self.scale,
                             None if self.noise is None else self.noise[idx])


def sample_sines(rng: np.random.Generator, n: int, amp=(0.0, 2.0), rate=(0.0, np.pi / 3),
                 phase=(-5.0, 5.0)) -> SineFunctions:
    """n functions with a ~ U(amp), r ~ U(rate), p ~ U(phase) for both sine terms."""
    return SineFunctions(rng.uniform(*amp, size=(n, 2)), rng.uniform(*rate, size=(n, 2)),
                         rng.uniform(*phase, size=(n, 2)))


def sample_authors_sines(rng: np.random.Generator, n: int, split: str = "train",
                         noise: float = 0.03, domain=(-5.0, 5.0)) -> SineFunctions:
    """The authors' notebook: y = (a0 sin(r0 x + p0) + a1 cos(r1 x + p1)) / 2 with a ~ U(0.1, 0.9),
    r ~ U(pi/6, pi) for training and U(pi/6, pi/2) at test (split "val" and "test"), integer
    offsets p in [-5, 5), and noise of std ``noise`` times the function's range over ``domain``
    (max - min on 1000 evenly spaced points) on the training targets."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    hi = np.pi if split == "train" else np.pi / 2
    a = rng.uniform(0.1, 0.9, size=(n, 2))
    r = rng.uniform(np.pi / 6, hi, size=(n, 2))
    p = rng.integers(-5, 5, size=(n, 2)).astype(np.float64)
    f = SineFunctions(a, r, p, second="cos", scale=0.5)
    grid = np.broadcast_to(np.linspace(domain[0], domain[1], 1000), (n, 1000))
    y = f(grid)
    f.noise = noise * (y.max(axis=1) - y.min(axis=1)) if noise > 0 else None
    return f


def sample_functions(cfg, rng: np.random.Generator, n: int, split: str = "train") -> SineFunctions:
    """n target functions of ``cfg.target``'s family ("paper": ``sample_sines``, the same draws
    for every split; "authors": ``sample_authors_sines`` with ``cfg.target_noise``).

    The validation functions ("val") come from the test distribution, from their own seed.
    """
    if getattr(cfg, "target", "paper") == "paper":
        return sample_sines(rng, n)
    return sample_authors_sines(rng, n, split, noise=cfg.target_noise)


class SineSequence:
    """The task sequences of F functions, as Algorithm 1 and deployment consume them.

    ``inner_batches()`` yields (x, y) of shape (F, batch, 1) for every inner step, window after
    window; ``meta_batch(rng)`` draws ``meta_batch_size`` points per function for the meta-loss:
    from the windows seen so far (memory loss), or from the whole domain (memory + transfer).
    """

    def __init__(self, functions: SineFunctions, rng: np.random.Generator, steps: int = 100,
                 batch: int = 1, n_windows: int = 5, domain=(-5.0, 5.0),
                 meta_batch_size: int = 32, meta_loss: str = "memory", dtype=np.float32):
        if meta_loss not in ("memory", "memory+transfer"):
            raise ValueError(f"meta_loss must be 'memory' or 'memory+transfer', got {meta_loss!r}")
        self.f = functions
        self.windows = windows(domain, n_windows)
        self.steps, self.batch = int(steps), int(batch)
        self.meta_batch_size, self.meta_loss = int(meta_batch_size), meta_loss
        self.dtype = dtype
        F = len(functions)
        # every x the sequence will show, drawn up front: (windows, steps, F, batch)
        lo, hi = self.windows[:, 0], self.windows[:, 1]
        # function-major draws, so the first k functions see the same points whatever F is
        u = rng.uniform(size=(F, n_windows, self.steps, self.batch)).transpose(1, 2, 0, 3)
        self.xs = (lo[:, None, None, None] + (hi - lo)[:, None, None, None] * u).astype(dtype)
        self.current_window = 0
        self.noise = None                 # (windows, steps, F, batch) target noise, if any
        if functions.noise is not None:
            std = np.asarray(functions.noise)[None, None, :, None]
            self.noise = (std * rng.standard_normal(self.xs.shape)).astype(dtype)

    def inner_batches(self):
        """(x (F, batch, 1), y (F, batch, 1)) per step; ``current_window`` tracks the sub-task."""
        for w in range(len(self.windows)):
            self.current_window = w
            for s in range(self.steps):
                x = self.xs[w, s]
                y = self.f(x) if self.noise is None else self.f(x) + self.noise[w, s]
                yield x[..., None], y[..., None].astype(self.dtype)

    def meta_batch(self, rng: np.random.Generator):
        """(x, y) of shape (F, meta_batch_size, 1) from the windows seen so far (or everywhere)."""
        lo = self.windows[0, 0]
        hi = self.windows[self.current_window, 1] if self.meta_loss == "memory" else self.windows[-1, 1]
        x = rng.uniform(lo, hi, size=(len(self.f), self.meta_batch_size)).astype(self.dtype)
        y = self.f(x)
        if self.f.noise is not None:
            y = y + np.asarray(self.f.noise)[:, None] * rng.standard_normal(y.shape)
        return x[..., None], y[..., None].astype(self.dtype)

    def eval_points(self, per_window: int = 200):
        """Evenly spaced noise-free points per window: x (F, T*per_window, 1), y likewise."""
        xs = np.concatenate([np.linspace(lo, hi, per_window) for lo, hi in self.windows])
        x = np.broadcast_to(xs, (len(self.f), len(xs))).astype(self.dtype)
        return x[..., None], self.f(x)[..., None].astype(self.dtype)


def sample_sequences(images: np.ndarray, labels: np.ndarray, class_pool, n_sequences: int,
                     n_classes: int, shots: int, rng: np.random.Generator,
                     ordered: bool = False) -> np.ndarray:
    """(n_sequences, n_classes, shots, D) images: per sequence ``n_classes`` distinct classes from
    ``class_pool`` (in random order, or in the pool's order when ``ordered``), ``shots`` images each."""
    from .datasets import sample_class_sequence
    pool = np.asarray(class_pool)
    out = np.empty((n_sequences, n_classes, shots, images.shape[1]), images.dtype)
    for s in range(n_sequences):
        ids = pool[:n_classes] if ordered else rng.choice(pool, size=n_classes, replace=False)
        out[s] = sample_class_sequence((images, labels), n_per_class=shots, rng=rng, class_ids=ids)[0]
    return out


class ClassSequences:
    """One class-incremental sequence per population member, as ``MetaTrainer`` consumes them.

    ``images`` (M, T, s, D). ``inner_batches()`` yields the current class's s images (x = y: an
    autoencoder) ``steps`` times per class, class after class; ``meta_batch(rng)`` draws
    ``meta_batch`` images per member from the WHOLE sequence (seen and unseen classes: memory +
    transfer), without replacement.
    """

    def __init__(self, images: np.ndarray, steps: int, meta_batch: int):
        self.images = images
        self.steps, self.meta_batch_size = int(steps), int(meta_batch)
        self.current_class = 0

    def inner_batches(self):
        for t in range(self.images.shape[1]):
            self.current_class = t
            x = self.images[:, t]                                    # (M, s, D)
            for _ in range(self.steps):
                yield x, x

    def meta_batch(self, rng: np.random.Generator):
        M, T, s, D = self.images.shape
        flat = self.images.reshape(M, T * s, D)
        idx = np.argsort(rng.random((M, T * s)), axis=1)[:, :self.meta_batch_size]
        x = np.take_along_axis(flat, idx[..., None], axis=1)         # (M, B, D)
        return x, x
