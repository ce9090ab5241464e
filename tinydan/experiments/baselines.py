"""Continual-learning baselines for the incremental regression: EWC, experience replay, warp layers.

All of them learn the same held-out functions, window by window, from the same points as
``tinydan.regression.deploy`` (the same ``SineSequence`` draws), with many functions at once along
the population axis of the synapses, and return the loss matrix R (F, T, T) of
docs/model-and-protocol.md#evaluation.

* **naive**: plain SGD on a ``PlainMLP``, one window after the other (catastrophic forgetting).
* **EWC** (Kirkpatrick et al. 2017): after window i the diagonal Fisher F_i of the synapses at
  theta*_i is computed on that window's points, and every later step adds the penalty
  (lambda / 2) sum_i sum_p F_i,p (theta_p - theta*_i,p)^2 (one anchor per finished window). With a
  Gaussian likelihood of unit variance the Fisher is the mean over the window's points of the
  squared gradient of the network OUTPUT, (d f(x) / d theta)^2 (the true Fisher: unlike the
  "empirical" one built from loss gradients, it does not vanish where the fit is already good).
  lambda is tuned on validation functions, never on held-out ones.
* **replay**: a reservoir buffer of ``capacity`` points per function (Vitter's algorithm R: after
  n points every one of them is kept with probability capacity / n, and the buffer never holds
  more than ``capacity``). Each SGD step uses the current point(s) plus ``replay_batch`` points drawn
  from the buffer; the current points enter the buffer after the step.
* **warp layers** (WarpGrad, Flennerhag et al. 2020): ``WarpNet``, a plain MLP whose layers of
  synapses are interleaved with dense warp layers. The warp layers are meta-learned with the same
  Algorithm 1 as the DANs (``tinydan.meta.MetaTrainer`` takes any net with ``parameters()`` as phi
  and ``net(x, synapses)``) and fixed at deployment; they precondition the synapses' gradients.
  ``warp_width`` sizes them so that they hold about as many parameters as the DANs' phi.

The joint upper bound is ``tinydan.regression.train_joint``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..autograd import grad, no_grad
from ..meta import task_loss
from ..nn.module import Parameter
from ..nn.layers import PlainMLP
from ..tasks import SineSequence
from ..tensor import Tensor, wrap

__all__ = ["METHODS", "output_fisher", "ewc_penalty", "ReservoirBuffer", "sequential_deploy",
           "WarpNet", "warp_width"]

METHODS = ("naive", "ewc", "replay")
EVAL_POINTS = 200


# ---------------------------------------------------------------------------------------------
# EWC
# ---------------------------------------------------------------------------------------------
def output_fisher(net, theta: dict, x: np.ndarray) -> dict:
    """Diagonal Fisher of each member's synapses: F[k] = mean_n (d f(x_n) / d theta[k])^2.

    theta: {name: (P, ...)} arrays, x: (P, N, n_in) points of each member. Every point gets its own
    copy of its member's synapses (a population of P*N), so ONE backward pass gives all the
    per-point gradients. Needs a single output (regression). Returns {name: (P, ...)} arrays.
    """
    P, N = x.shape[:2]
    rep = {k: Tensor(np.repeat(np.asarray(v.data if isinstance(v, Tensor) else v), N, axis=0),
                     requires_grad=True) for k, v in theta.items()}      # member-major (P*N, ...)
    dtype = next(iter(rep.values())).dtype
    out = net(Tensor(x.reshape(P * N, 1, x.shape[2]), dtype=dtype), rep)  # (P*N, 1, 1)
    if out.shape[-1] != 1:
        raise ValueError(f"output_fisher needs a single network output, got shape {out.shape}")
    gs = grad(ops.sum(out), list(rep.values()))          # sum over points: each copy its own grad
    return {k: (g.data ** 2).reshape((P, N) + g.shape[1:]).mean(axis=1)
            for k, g in zip(rep, gs)}


def ewc_penalty(theta: dict, anchors: list, lam: float) -> Tensor:
    """(lam / 2) sum_i sum_k sum F_i[k] * (theta[k] - star_i[k])^2 over the anchors (F_i, star_i).

    Summed over the population axis too, so each member's synapses get exactly their own penalty
    gradient lam * F_i (theta - star_i). Differentiable (also twice) in theta.
    """
    total = None
    for fisher, star in anchors:
        for k, t in theta.items():
            d = ops.sub(t, Tensor(np.asarray(star[k]), dtype=t.dtype))
            term = ops.sum(ops.mul(Tensor(np.asarray(fisher[k]), dtype=t.dtype), ops.mul(d, d)))
            total = term if total is None else ops.add(total, term)
    if total is None:
        raise ValueError("ewc_penalty needs at least one anchor (fisher, star)")
    return ops.mul(total, float(lam) / 2)


# ---------------------------------------------------------------------------------------------
# experience replay
# ---------------------------------------------------------------------------------------------
class ReservoirBuffer:
    """A reservoir of at most ``capacity`` (x, y) points for each of ``streams`` functions.

    ``add`` offers points one at a time (algorithm R): the n-th point (0-based) fills slot n while
    n < capacity, otherwise replaces a uniformly chosen slot with probability capacity / (n + 1),
    independently per function. All functions see the same number of points, so ``size`` is shared.
    """

    def __init__(self, capacity: int, streams: int, n_in: int = 1, n_out: int = 1,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        if int(capacity) < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.streams = int(capacity), int(streams)
        self.x = np.zeros((self.streams, self.capacity, n_in), dtype=dtype)
        self.y = np.zeros((self.streams, self.capacity, n_out), dtype=dtype)
        self.size = 0          # points stored per function (<= capacity)
        self.seen = 0          # points offered per function
        self.rng = np.random.default_rng(0) if rng is None else rng

    def __len__(self) -> int:
        return self.size

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Offer a batch x (streams, b, n_in), y (streams, b, n_out), point after point."""
        if x.shape[0] != self.streams or y.shape[:2] != x.shape[:2]:
            raise ValueError(f"expected x (streams={self.streams}, b, n_in) and y (same, b, n_out), "
                             f"got {x.shape} and {y.shape}")
        rows = np.arange(self.streams)
        for i in range(x.shape[1]):
            if self.seen < self.capacity:
                self.x[:, self.seen], self.y[:, self.seen] = x[:, i], y[:, i]
                self.size += 1
            else:
                j = self.rng.integers(0, self.seen + 1, size=self.streams)   # per function
                keep = j < self.capacity
                self.x[rows[keep], j[keep]] = x[keep, i]
                self.y[rows[keep], j[keep]] = y[keep, i]
            self.seen += 1

    def sample(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """m stored points per function, drawn uniformly with replacement: (streams, m, .) each."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self.rng.integers(0, self.size, size=(self.streams, m))
        rows = np.arange(self.streams)[:, None]
        return self.x[rows, idx], self.y[rows, idx]


# ---------------------------------------------------------------------------------------------
# sequential deployment with a continual-learning method
# ---------------------------------------------------------------------------------------------
def sequential_deploy(net, theta0: dict, functions, cfg, lr: float, seed: int = 0,
                      method: str = "naive", lam: float = 0.0, capacity: int = 10,
                      replay_batch: int = 4) -> dict:
    """Learn every function window by window with SGD on the synapses, as ``regression.deploy``
    (same points, same R), with ``method`` "naive", "ewc" (strength ``lam``) or "replay"
    (``capacity`` points per function, ``replay_batch`` replayed per step).

    Returns {"R": (F, T, T)}; a diverged run scores 1e6 where its losses are not finite.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    F, T = len(functions), cfg.n_windows
    seq = SineSequence(functions, np.random.default_rng([seed, 7]), steps=cfg.steps_per_window,
                       batch=cfg.inner_batch, n_windows=T, meta_batch_size=cfg.meta_batch)
    theta = {}
    for k, v in theta0.items():
        v = np.asarray(v)
        theta[k] = Tensor(np.repeat(v[:1], F, axis=0) if v.shape[0] != F else v.copy(),
                          requires_grad=True)
    xe, ye = seq.eval_points(EVAL_POINTS)                                   # (F, T*200, 1)
    buffer = ReservoirBuffer(capacity, F, rng=np.random.default_rng([seed, 13])) \
        if method == "replay" else None
    anchors: list = []
    R = np.zeros((F, T, T))
    with np.errstate(over="ignore", invalid="ignore"):
        for step, (x, y) in enumerate(seq.inner_batches()):
            xb, yb = x, y
            if buffer is not None and len(buffer):
                xr, yr = buffer.sample(replay_batch)
                xb, yb = np.concatenate([x, xr], axis=1), np.concatenate([y, yr], axis=1)
            loss = task_loss(net, theta, wrap(xb), wrap(yb))
            if anchors and lam > 0:
                loss = ops.add(loss, ewc_penalty(theta, anchors, lam))
            gs = grad(loss, list(theta.values()))
            theta = {k: Tensor(t.data - lr * g.data, requires_grad=True)
                     for (k, t), g in zip(theta.items(), gs)}
            if buffer is not None:
                buffer.add(x, y)
            if (step + 1) % cfg.steps_per_window != 0:
                continue
            w = step // cfg.steps_per_window
            if method == "ewc" and w < T - 1:
                pts = seq.xs[w].transpose(1, 0, 2).reshape(F, -1, 1)        # window w's points
                anchors.append((output_fisher(net, theta, pts),
                                {k: t.data.copy() for k, t in theta.items()}))
            with no_grad():
                p = net(wrap(xe), theta).data
            R[:, w, :] = ((p - ye) ** 2).reshape(F, T, EVAL_POINTS).mean(-1)
    R = np.where(np.isfinite(R), R, 1e6)
    return {"R": R}


# ---------------------------------------------------------------------------------------------
# WarpGrad-style warp layers
# ---------------------------------------------------------------------------------------------
def warp_width(n_params: int, n_warp_layers: int = 2) -> int:
    """The width h whose n_warp_layers dense h x h warp layers (with biases) hold about n_params
    parameters: the root of n_warp_layers * (h^2 + h) = n_params, rounded."""
    if n_params < 1 or n_warp_layers < 1:
        raise ValueError(f"need n_params >= 1 and n_warp_layers >= 1, got {n_params}, {n_warp_layers}")
    return max(1, round((-1 + math.sqrt(1 + 4 * n_params / n_warp_layers)) / 2))


class WarpNet(PlainMLP):
    """A plain MLP of synapses interleaved with meta-learned dense warp layers (WarpGrad):

        x -> [W_0, b_0] -> tanh -> warp_1 -> [W_1, b_1] -> tanh -> warp_2 -> ... -> [W_L, b_L]

    The synapses W_l, b_l (theta) have a population axis and learn at deployment, as in
    ``PlainMLP``; every warp layer (phi, this Module's Parameters) is an affine map h -> h A + c
    shared by all members, meta-learned and fixed at deployment. Warp layers start as the identity,
    so before meta-learning the network is exactly the plain MLP. Being linear, a warp layer folds
    into the next synapse layer in the forward pass but changes the geometry of its gradient
    descent: it is a meta-learned preconditioner.
    """

    def __init__(self, sizes=(1, 19, 19, 1), dtype=np.float32):
        super().__init__(sizes)                        # the synapses' shapes and initialisation
        if len(self.sizes) < 3:
            raise ValueError(f"a warp network needs at least one hidden layer, got sizes {sizes}")
        for l, h in enumerate(self.sizes[1:-1], start=1):
            setattr(self, f"warp{l}_w", Parameter(np.eye(h, dtype=dtype)))
            setattr(self, f"warp{l}_b", Parameter(np.zeros(h, dtype=dtype)))

    def after_hidden(self, l: int, h: Tensor) -> Tensor:
        """The warp layer after hidden layer l + 1: h A + c."""
        return ops.linear(h, getattr(self, f"warp{l + 1}_w"), getattr(self, f"warp{l + 1}_b"))

