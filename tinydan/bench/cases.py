"""The engine and UCIL benchmarks: tinydan steps against the same computation written by hand in
NumPy, or against tinydan's generic paths for the UCIL steps (the regression steps against PyTorch
eager are in ``regression_steps``).

* ``mlp*``: forward + backward of a tanh MLP with MSE (small: per-op overhead; big: BLAS-bound);
* ``conv2d_ucil*``, ``maxpool_ucil``: the DAN convolutions and pooling on the UCIL batch;
* ``ucil_*``: the UCIL `small` deployment step and meta-step (paper section 3.2), the fast paths
  against the generic ones, and the meta-step split over 2 processes against one.

Adding a benchmark: write a function that builds the inputs and returns a ``Case`` with two
zero-argument callables computing the same results in the same order, and decorate it::

    @register("my_bench", target=1.2)          # target: max tinydan/reference ratio, or None
    def my_bench() -> Case:
        "One line shown by --list."
        x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        w = td.tensor(x[:8], requires_grad=True)
        xt = td.tensor(x)

        def run_tinydan():                     # one step; returns Tensors/arrays to compare
            loss = td.tanh(td.matmul(xt, w)).sum()
            return (loss, *td.grad(loss, [w]))

        def run_reference():                   # the same math in NumPy, same order of results
            h = np.tanh(x @ x[:8])
            return (h.sum(), x.T @ (1 - h * h))

        return Case(run_tinydan, run_reference, notes="what is measured")

``Case`` also takes ``rtol``/``atol`` (for the correctness check) and ``per_op=True`` to report the
per-op overhead (tinydan time - NumPy time) / ops in the step.
"""
from __future__ import annotations

import atexit

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import tinydan as td
from tinydan.tensor import Tensor

from .harness import Case, register

__all__: list = []


# ---------------------------------------------------------------------------- engine kernels
def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _mlp_case(width: int, batch: int, per_op: bool) -> Case:
    """in width -> width -> width -> 1, tanh, MSE; grads w.r.t. the 6 weights and biases."""
    rng = _rng(width * 1000 + batch)
    f32 = np.float32
    sizes = [(width, width), (width, width), (width, 1)]
    Ws = [rng.uniform(-1, 1, s).astype(f32) / f32(np.sqrt(s[0])) for s in sizes]
    bs = [rng.uniform(-0.1, 0.1, s[1]).astype(f32) for s in sizes]
    x = rng.standard_normal((batch, width)).astype(f32)
    t = rng.standard_normal((batch, 1)).astype(f32)
    W1, W2, W3 = Ws
    b1, b2, b3 = bs

    tW = [td.tensor(w, requires_grad=True) for w in Ws]
    tb = [td.tensor(b, requires_grad=True) for b in bs]
    params = [tW[0], tb[0], tW[1], tb[1], tW[2], tb[2]]
    tx, tt = td.tensor(x), td.tensor(t)

    # the layer op that tinydan.nn uses: the fused td.linear(x, W, b) where the engine has it
    layer = getattr(td, "linear", None) or (lambda h, w, b: td.matmul(h, w) + b)

    def run_tinydan():
        h1 = td.tanh(layer(tx, tW[0], tb[0]))
        h2 = td.tanh(layer(h1, tW[1], tb[1]))
        y = layer(h2, tW[2], tb[2])
        loss = td.mse_loss(y, tt)
        return (loss, *td.grad(loss, params))

    def run_reference():
        h1 = np.tanh(x @ W1 + b1)
        h2 = np.tanh(h1 @ W2 + b2)
        y = h2 @ W3 + b3
        d = y - t
        loss = np.mean(d * d)
        dy = d * f32(2.0 / d.size)                    # d mean(d^2) / dy
        dW3 = h2.T @ dy
        db3 = dy.sum(axis=0)
        da2 = (dy @ W3.T) * (1 - h2 * h2)             # through tanh: 1 - tanh^2
        dW2 = h1.T @ da2
        db2 = da2.sum(axis=0)
        da1 = (da2 @ W2.T) * (1 - h1 * h1)
        dW1 = x.T @ da1
        db1 = da1.sum(axis=0)
        return (loss, dW1, db1, dW2, db2, dW3, db3)

    notes = (f"fwd+bwd {width}-{width}-{width}-1 tanh MLP + MSE, batch {batch}, float32, layers "
             + ("td.linear" if hasattr(td, "linear") else "td.matmul + add"))
    return Case(run_tinydan, run_reference, notes=notes, per_op=per_op)


@register("mlp40_b1")
def mlp40_b1() -> Case:
    """MLP 40-40-40-1, batch 1: forward + backward, almost pure per-op overhead."""
    return _mlp_case(40, 1, per_op=True)


@register("mlp40_b32")
def mlp40_b32() -> Case:
    """MLP 40-40-40-1, batch 32: forward + backward."""
    return _mlp_case(40, 32, per_op=True)


@register("mlp256_b64", target=1.15)
def mlp256_b64() -> Case:
    """MLP 256-256-256-1, batch 64: forward + backward (target: within 1.15x of NumPy)."""
    return _mlp_case(256, 64, per_op=False)


def _im2col_ref(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw), stride 1, one copy."""
    n, c, h, w = x.shape
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))            # (N, C, OH, OW, kh, kw)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * (h - kh + 1) * (w - kw + 1), c * kh * kw)


def _col2im_ref(cols: np.ndarray, x_shape, kh: int, kw: int) -> np.ndarray:
    """Adjoint of _im2col_ref: add every row back into its window, one add per kernel offset."""
    n, c, h, w = x_shape
    oh, ow = h - kh + 1, w - kw + 1
    c6 = cols.reshape(n, oh, ow, c, kh, kw)
    out = np.zeros(x_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + oh, j:j + ow] += c6[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return out


def _conv_case(x_shape, w_shape, seed: int) -> Case:
    rng = _rng(seed)
    f32 = np.float32
    n, c, h, w_ = x_shape
    f, _, kh, kw = w_shape
    oh, ow = h - kh + 1, w_ - kw + 1
    x = rng.standard_normal(x_shape).astype(f32)
    w = (rng.standard_normal(w_shape) / np.sqrt(c * kh * kw)).astype(f32)
    b = rng.standard_normal(f).astype(f32) * f32(0.1)
    g = rng.standard_normal((n, f, oh, ow)).astype(f32)                # upstream gradient
    tx, tw, tb = (td.tensor(a, requires_grad=True) for a in (x, w, b))
    tg = td.tensor(g)

    def run_tinydan():
        out = td.conv2d(tx, tw, tb, 1, 0)
        return (out, *td.grad(out, [tx, tw, tb], grad_outputs=tg))

    def run_reference():
        cols = _im2col_ref(x, kh, kw)                                  # (N*OH*OW, C*kh*kw)
        wm = w.reshape(f, c * kh * kw)
        out = (cols @ wm.T + b).reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
        g2 = g.transpose(0, 2, 3, 1).reshape(n * oh * ow, f)           # (N*OH*OW, F)
        db = g2.sum(axis=0)
        dw = (g2.T @ cols).reshape(w_shape)
        dx = _col2im_ref(g2 @ wm, x_shape, kh, kw)
        return (out, dx, dw, db)

    notes = (f"conv2d fwd+bwd x{x_shape} w{w_shape}+bias, float32; ref: im2col by "
             "sliding_window_view, 1 matmul, col2im by kernel offsets")
    return Case(run_tinydan, run_reference, notes=notes)


@register("conv2d_ucil", target=1.3)
def conv2d_ucil() -> Case:
    """First DAN conv on the UCIL batch: (3920, 1, 10, 10) * (8, 1, 2, 2) + bias, fwd + bwd."""
    return _conv_case((3920, 1, 10, 10), (8, 1, 2, 2), seed=1)


@register("conv2d_ucil_2", target=1.3)
def conv2d_ucil_2() -> Case:
    """Second DAN conv on the UCIL batch: (3920, 8, 9, 9) * (4, 8, 2, 2) + bias, fwd + bwd."""
    return _conv_case((3920, 8, 9, 9), (4, 8, 2, 2), seed=2)


@register("maxpool_ucil")
def maxpool_ucil() -> Case:
    """max_pool2d(kernel 3, stride 1) on (3920, 4, 8, 8), fwd + bwd."""
    rng = _rng(3)
    f32 = np.float32
    k = 3
    x = rng.standard_normal((3920, 4, 8, 8)).astype(f32)
    n, c, h, w = x.shape
    oh, ow = h - k + 1, w - k + 1
    g = rng.standard_normal((n, c, oh, ow)).astype(f32)
    tx, tg = td.tensor(x, requires_grad=True), td.tensor(g)

    def run_tinydan():
        out = td.max_pool2d(tx, k, 1)
        return (out, td.grad(out, tx, grad_outputs=tg))

    def run_reference():
        cols = sliding_window_view(x, (k, k), axis=(2, 3)).reshape(-1, k * k)   # (N*C*OH*OW, 9)
        idx = cols.argmax(axis=1)
        out = cols[np.arange(cols.shape[0]), idx].reshape(n, c, oh, ow)
        # flat index in x of each window's max: window origin + offset of the arg-max
        origin = (np.arange(n * c)[:, None, None] * (h * w) + np.arange(oh)[None, :, None] * w
                  + np.arange(ow)[None, None, :]).reshape(-1)
        flat = origin + (idx // k) * w + idx % k
        dx = np.bincount(flat, weights=g.reshape(-1), minlength=x.size)
        return (out, dx.astype(f32).reshape(x.shape))

    notes = ("max_pool2d k3 s1 fwd+bwd on (3920, 4, 8, 8), float32; ref: argmax over "
             "sliding windows, backward by np.bincount on flat arg-max indices")
    return Case(run_tinydan, run_reference, notes=notes)


# ---------------------------------------------------------------------------- UCIL steps
@register("ucil_deploy_step", target=1.0)
def ucil_deploy_step() -> Case:
    """UCIL `small` deployment step, 6 draws at once: sgd_step_ (in place) vs deploy_step."""
    from tinydan.meta import deploy_step, sgd_step_
    from tinydan.experiments.configs import initial_state, ucil_config
    cfg = ucil_config("small")
    G, lr = 6, 1.0
    net, theta0 = initial_state(cfg, 0, population=1)
    x = _rng(5).random((G, cfg.shots, cfg.nodes[0])).astype(np.float32)    # (draws, 5 images, D)
    names = sorted(theta0)

    def fresh():
        return {k: Tensor(np.repeat(theta0[k], G, axis=0), requires_grad=True) for k in names}
    mine, ref = {"theta": fresh()}, {"theta": fresh()}

    def run_tinydan():                 # the synapses keep learning, as in a deployment
        mine["theta"], loss = sgd_step_(net, mine["theta"], x, x, lr)
        return (loss, *[mine["theta"][k].data for k in names])

    def run_reference():
        ref["theta"], loss = deploy_step(net, ref["theta"], x, x, lr)
        return (loss, *[ref["theta"][k].data for k in names])

    return Case(run_tinydan, run_reference, reference_name="deploy_step",
                notes=f"{net.num_synapses() * G / 1e6:.1f}M synapses (small, {G} draws, 5 images "
                      "each), phi fixed; the reference is the generic autograd SGD step "
                      "(a gradient array per synapse tensor, then theta - lr g)")


@register("ucil_meta_step", target=1.0)
def ucil_meta_step() -> Case:
    """UCIL `small` meta-step (M = 3, first_order): the fast paths vs the generic ones."""
    from tinydan.meta import meta_step
    from tinydan.experiments.configs import initial_state, ucil_config
    cfg = ucil_config("small")
    fast, theta0 = initial_state(cfg, 0)
    slow, _ = initial_state(cfg, 0)
    for dan in slow.dans:              # banded strips, recomputed forward
        dan.dense, dan.keep_bytes = [False] * len(dan.dense), 0
    r = _rng(6)
    M, D = cfg.population, cfg.nodes[0]
    x = r.random((M, cfg.shots, D)).astype(np.float32)                    # the inner batch
    xm = r.random((M, cfg.meta_batch, D)).astype(np.float32)              # the meta-batch
    names = sorted(theta0)

    def fresh():
        return {k: Tensor(np.array(theta0[k]), requires_grad=True) for k in names}
    mine, ref = {"theta": fresh()}, {"theta": fresh()}

    def step(net, state, in_place):    # the synapses keep learning, as in a meta-epoch
        state["theta"], gphi, lt, lm = meta_step(net, state["theta"], x, x, xm, xm, cfg.inner_lr,
                                                 "first_order", in_place=in_place)
        return (lm, lt, *gphi, *[state["theta"][k].data for k in names])

    return Case(lambda: step(fast, mine, True), lambda: step(slow, ref, False),
                reference_name="generic path", rtol=1e-3, atol=1e-4,
                notes=f"{fast.num_synapses() / 1e6:.2f}M synapses per member, 5-image inner step, "
                      f"{cfg.meta_batch}-image meta-batch; tinydan: whole-image conv matrices, "
                      "kept DAN graphs, in-place inner SGD; reference: the same step with banded "
                      "convs, recomputed DAN forward, a gradient array per synapse tensor")


@register("ucil_meta_step_2proc", target=1.0)
def ucil_meta_step_2proc() -> Case:
    """UCIL `small` meta-step (M = 3, first_order, fast paths): members split over 2 processes
    (``PopulationSplit``, what ``python -m tinydan.ucil`` runs on 2 cores) vs one process."""
    from tinydan.meta import PopulationSplit, meta_step
    from tinydan.experiments.configs import initial_state, ucil_config
    cfg = ucil_config("small")
    net, theta0 = initial_state(cfg, 0)
    r = _rng(6)
    M, D = cfg.population, cfg.nodes[0]
    x = r.random((M, cfg.shots, D)).astype(np.float32)                    # the inner batch
    xm = r.random((M, cfg.meta_batch, D)).astype(np.float32)              # the meta-batch
    names = sorted(theta0)
    split = PopulationSplit(net, M, 2)
    atexit.register(split.close)                # (a daemon worker would stop anyway)
    mine = {"theta": split.reset(theta0)}
    ref = {"theta": {k: Tensor(np.array(theta0[k]), requires_grad=True) for k in names}}
    rows = split.blocks[0]

    def two():
        mine["theta"], gphi, lt, lm = split.meta_step(net, mine["theta"], x, x, xm, xm,
                                                      cfg.inner_lr, "first_order", in_place=True)
        return (lm, lt, *gphi, *[mine["theta"][k].data for k in names])

    def one():
        ref["theta"], gphi, lt, lm = meta_step(net, ref["theta"], x, x, xm, xm, cfg.inner_lr,
                                               "first_order", in_place=True)
        return (lm, lt, *gphi, *[ref["theta"][k].data[rows] for k in names])

    return Case(two, one, reference_name="one process", rtol=1e-3, atol=1e-4,
                notes="wall time of the step; this process runs members 0-1, a worker member 2 "
                      "(its core is left half idle for the validation jobs); phi gradient combined "
                      "as the member-weighted mean")
