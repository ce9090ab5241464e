"""The benchmarks: tinydan steps against the same computation written by hand in NumPy, or in
PyTorch eager for the steps of the `paper` regression model, or against tinydan's generic paths for
the UCIL steps.

* ``mlp*``: forward + backward of a tanh MLP with MSE (small: per-op overhead; big: BLAS-bound);
* ``conv2d_ucil*``, ``maxpool_ucil``: the DAN convolutions and pooling on the UCIL batch;
* ``regression_*``: the meta-step (first-order or one-step meta-gradient) and the deployment step
  of the `paper` regression model (paper section 3.1), against PyTorch eager on one thread;
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

from .harness import Case, as_array, register

__all__ = ["PUBLISHED_S"]


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


# ---------------------------------------------------------------------------- regression steps
# The meta-training and deployment steps of the `paper` regression model, against the SAME
# computation in PyTorch eager (a reference measurement only: torch is imported lazily, never a
# tinydan dependency; without it these benchmarks time tinydan alone and check nothing).

#: Published times of these steps, measured side by side on this kind of machine, one thread
#: each; printed under the table next to tinydan's medians.
PUBLISHED_S = {
    "regression_meta_first_order": {"PyTorch 2.13 eager": 2.1e-3, "HIPS autograd": 3.7e-3,
                                    "JAX jit": 0.85e-3},
    "regression_meta_one_step": {"PyTorch 2.13 eager": 2.9e-3, "HIPS autograd": 7.9e-3,
                                 "JAX jit": 1.2e-3},
    "regression_deploy": {"PyTorch 2.13 eager": 0.54e-3, "HIPS autograd": 1.3e-3,
                          "JAX jit": 0.14e-3},
}

_TORCH_THREADS_SET = False


def _torch():
    """PyTorch with ONE intra-op thread, or None when it cannot be imported (imported lazily)."""
    global _TORCH_THREADS_SET
    try:
        import torch
    except ImportError:
        return None
    if not _TORCH_THREADS_SET:
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:                 # only settable before torch's first parallel work
            pass
        _TORCH_THREADS_SET = True
    return torch


class _Update:
    """The synapse update (theta_new - theta_old) / lr of one step, computed only when compared.

    Comparing theta_new itself would hide a wrong gradient: lr * grad is ~1e-3 of theta. The
    subtraction happens in ``__array__`` (the correctness check), not in the timed step.
    """
    __slots__ = ("new", "old", "lr")

    def __init__(self, new, old, lr):
        self.new, self.old, self.lr = new, old, lr

    def __array__(self, dtype=None, copy=None):
        d = (as_array(self.new).astype(np.float64) - as_array(self.old)) / self.lr
        return d if dtype is None else d.astype(dtype)


def _torch_regression_forward(torch, net, x, theta: dict, phi: list):
    """DANNetwork.forward in PyTorch for a globally shared tanh MLPDAN: x (P, B, n0) -> (P, B, nL).

    The same ops in the same order: VEC = x @ W + b (one fused baddbmm, like td.linear), skip
    VECs added before the DANs, one DAN call per layer on (P*B*n, C) rows, the final tanh and
    output scale as configured.
    """
    P, B, _ = x.shape
    C, nodes, L = net.n_channels, net.nodes, len(net.nodes) - 1
    n_dan = len(phi) // 2
    acts = [x]
    for l in range(1, L + 1):
        z = torch.baddbmm(theta[f"vec{l - 1}.bias"], acts[l - 1], theta[f"vec{l - 1}.weight"])
        for j, k in net.skips:
            if k == l:
                z = z + torch.bmm(acts[j], theta[f"skip{j}_{k}.weight"])
        h = z.reshape(P * B * nodes[l], C)
        for i in range(n_dan):
            h = torch.addmm(phi[2 * i + 1], h, phi[2 * i])
            if i < n_dan - 1 or l < L or net.final_activation:
                h = torch.tanh(h)
        acts.append(h.reshape(P, B, nodes[l]))
    out = acts[-1]
    if net.output_scale is not None:
        out = out * float(net.output_scale)
    return out


def _regression_case(kind: str) -> Case:
    """kind: "first_order", "one_step" (meta_step + Adam on phi) or "deploy" (deploy_step)."""
    from tinydan.meta import deploy_step, meta_step
    from tinydan.experiments.configs import build_regression_net, regression_config
    from tinydan.optim import Adam
    from tinydan.tasks import sample_sines

    cfg = regression_config("paper")
    rng = _rng(7)
    net = build_regression_net(cfg, rng)
    if net.sharing != "global" or not all(getattr(d, "activation", None) == "tanh"
                                          for d in net.dans):
        raise ValueError("the regression benchmarks expect the paper's global tanh MLPDAN")
    theta0 = net.init_synapses(1, rng)                          # population 1
    names = list(theta0)
    phi = net.parameters()
    f32 = np.float32
    fn = sample_sines(rng, 1)
    x = rng.uniform(-5, 5, (1, cfg.inner_batch)).astype(f32)    # the inner step: 1 point
    xm = rng.uniform(-5, 5, (1, cfg.meta_batch)).astype(f32)    # the meta-loss: 32 points
    y, ym = fn(x).astype(f32)[..., None], fn(xm).astype(f32)[..., None]
    x, xm = x[..., None], xm[..., None]
    lr = cfg.inner_lr
    phi0 = [p.data.copy() for p in phi]                         # torch starts from these

    st = {"theta": {k: Tensor(np.array(v), requires_grad=True) for k, v in theta0.items()}}
    if kind == "deploy":
        def run_tinydan():
            old = st["theta"]
            new, loss = deploy_step(net, old, x, y, lr)
            st["theta"] = new
            return (loss, *[_Update(new[k], old[k], lr) for k in names])
    else:
        opt = Adam(phi, lr=cfg.meta_lr)

        def run_tinydan():
            old = st["theta"]
            new, gphi, lt, lm = meta_step(net, old, x, y, xm, ym, lr, kind, phi)
            opt.step(gphi)
            st["theta"] = new
            return (lm, lt, *gphi, *[_Update(new[k], old[k], lr) for k in names])

    what = {"first_order": "inner SGD step (1 point) + first-order meta-gradient (32 points) "
                           "+ Adam on phi",
            "one_step": "inner SGD step (1 point, create_graph) + one-step meta-gradient "
                        "(32 points) + Adam on phi",
            "deploy": "deploy_step: one SGD step on the synapses (1 point), phi fixed"}[kind]
    notes = f"paper net, P=1, state carried forward; {what}"

    torch = _torch()
    if torch is None:
        return Case(run_tinydan, None, notes=notes + "; torch not installed: no reference, "
                    "not checked", reference_name="torch (absent)")

    F = torch.nn.functional
    T = lambda a: torch.from_numpy(np.array(a, dtype=f32))      # noqa: E731 - a private copy
    tx, ty, txm, tym = T(x), T(y), T(xm), T(ym)
    P = float(x.shape[0])
    tphi = [T(p).requires_grad_(kind != "deploy") for p in phi0]
    tst = {"theta": {k: T(v).requires_grad_() for k, v in theta0.items()}}

    def torch_inner(old, create_graph):
        loss = F.mse_loss(_torch_regression_forward(torch, net, tx, old, tphi), ty) * P
        gs = torch.autograd.grad(loss, [old[k] for k in names], create_graph=create_graph)
        return loss, gs

    if kind == "deploy":
        def run_reference():
            old = tst["theta"]
            loss, gs = torch_inner(old, False)
            with torch.no_grad():
                new = {k: (old[k] - lr * g).requires_grad_() for k, g in zip(names, gs)}
            tst["theta"] = new
            return (loss.item() / P, *[_Update(new[k], old[k], lr) for k in names])
    else:
        try:                         # the fused Adam: the fastest PyTorch has on the CPU
            topt = torch.optim.Adam(tphi, lr=cfg.meta_lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            topt = torch.optim.Adam(tphi, lr=cfg.meta_lr)
        one_step = kind == "one_step"

        def run_reference():
            old = tst["theta"]
            loss, gs = torch_inner(old, one_step)
            if one_step:                                         # theta' stays a function of phi
                th1 = {k: old[k] - lr * g for k, g in zip(names, gs)}
            else:
                with torch.no_grad():
                    th1 = {k: old[k] - lr * g for k, g in zip(names, gs)}
            meta = F.mse_loss(_torch_regression_forward(torch, net, txm, th1, tphi), tym)
            gphi = torch.autograd.grad(meta, tphi)
            for p, g in zip(tphi, gphi):
                p.grad = g
            topt.step()
            new = {k: v.detach().requires_grad_() for k, v in th1.items()}
            tst["theta"] = new
            return (meta.item(), loss.item() / P, *gphi,
                    *[_Update(new[k], old[k], lr) for k in names])

    # float32 on both sides, different summation orders: gradients agree to ~1e-5 of their
    # largest entry; the synapse update (theta' - theta) / lr loses ~1e-4 more to the rounding of
    # theta' (lr = 1e-3). A wrong rule anywhere in the engine is off by far more than that.
    return Case(run_tinydan, run_reference, notes=notes, rtol=1e-3, atol=3e-4,
                reference_name=f"torch {torch.__version__.split('+')[0]}")


@register("regression_meta_first_order", target=1.0)
def regression_meta_first_order() -> Case:
    """Meta-step (inner SGD + first-order meta-gradient + Adam), paper net, vs PyTorch eager."""
    return _regression_case("first_order")


@register("regression_meta_one_step", target=1.0)
def regression_meta_one_step() -> Case:
    """Meta-step (inner SGD + one-step meta-gradient + Adam), paper net, vs PyTorch eager."""
    return _regression_case("one_step")


@register("regression_deploy", target=1.0)
def regression_deploy() -> Case:
    """Deployment SGD step on the synapses, paper net, vs PyTorch eager."""
    return _regression_case("deploy")


def _compiled_case(kind: str) -> Case:
    """The regression step of ``kind`` recorded once and replayed (``tinydan.compile``) against
    the same step run eagerly: the ratio is what compiling saves; outputs must be equal."""
    from tinydan.compiler import compile
    from tinydan.experiments.configs import build_regression_net, regression_config
    from tinydan.meta import deploy_step, meta_step
    from tinydan.optim import Adam
    from tinydan.tasks import sample_sines

    cfg = regression_config("paper")
    rng = _rng(7)
    fn = sample_sines(rng, 1)
    x = rng.uniform(-5, 5, (1, cfg.inner_batch, 1)).astype(np.float32)
    xm = rng.uniform(-5, 5, (1, cfg.meta_batch, 1)).astype(np.float32)
    y, ym = fn(x[..., 0]).astype(np.float32)[..., None], fn(xm[..., 0]).astype(np.float32)[..., None]
    lr = cfg.inner_lr

    def make(compiled: bool):
        net = build_regression_net(cfg, _rng(8))
        phi = net.parameters()
        opt = Adam(phi, lr=cfg.meta_lr)
        st = {"theta": {k: Tensor(v, requires_grad=True)
                        for k, v in net.init_synapses(1, _rng(9)).items()}}

        def step(theta, x, y, xm, ym, lr):
            if kind == "deploy":
                return deploy_step(net, theta, x, y, lr)
            theta1, gphi, lt, lm = meta_step(net, theta, x, y, xm, ym, lr, kind, phi)
            opt.step(gphi)
            return theta1, lm
        run = compile(step) if compiled else step

        def go():
            st["theta"], loss = run(st["theta"], x, y, xm, ym, lr)
            return (np.asarray(loss), *[v.data for v in st["theta"].values()],
                    *[p.data for p in phi])
        return go

    what = {"first_order": "first-order meta-step + Adam on phi", "one_step": "one-step "
            "meta-step + Adam on phi", "deploy": "deploy_step"}[kind]
    return Case(make(True), make(False), notes=f"paper net, P=1; {what}, compiled vs eager",
                rtol=0.0, atol=0.0, reference_name="tinydan eager")


@register("compiled_meta_first_order")
def compiled_meta_first_order() -> Case:
    """The first-order meta-step (+ Adam on phi) replayed by tinydan.compile, vs eager tinydan."""
    return _compiled_case("first_order")


@register("compiled_meta_one_step")
def compiled_meta_one_step() -> Case:
    """The one-step meta-step (+ Adam on phi) replayed by tinydan.compile, vs eager tinydan."""
    return _compiled_case("one_step")


@register("compiled_deploy")
def compiled_deploy() -> Case:
    """The deployment SGD step replayed by tinydan.compile, vs eager tinydan."""
    return _compiled_case("deploy")


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
