"""The benchmarks of the regression model's steps (paper section 3.1): the meta-step (first-order
or one-step meta-gradient, then Adam on phi) and the deployment SGD step of the `paper` network.

* ``regression_*``: tinydan eager against PyTorch eager (``tinydan.bench.torch_reference``), one
  thread each; target: faster than PyTorch;
* ``regression_compiled_*``: the same steps recorded once and replayed by ``tinydan.compile``,
  against PyTorch eager; target: at most half of PyTorch's time;
* ``compiled_*``: the replayed step against the same step run eagerly by tinydan, whose outputs
  it must equal bit for bit: the ratio is what compiling saves.

Both sides of a ``regression*`` row start from the same phi and theta_0 and carry their synapses
forward from call to call; the correctness check compares the losses, the phi gradients and the
synapse updates (theta' - theta) / lr before anything is timed. Without PyTorch those rows time
tinydan alone and say so.
"""
from __future__ import annotations

import numpy as np

from tinydan.tensor import Tensor

from .harness import Case, as_array, register

__all__ = ["PUBLISHED_S"]

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

_WHAT = {"first_order": "inner SGD step (1 point) + first-order meta-gradient (32 points) + Adam "
                        "on phi",
         "one_step": "inner SGD step (1 point, create_graph) + one-step meta-gradient (32 points) "
                     "+ Adam on phi",
         "deploy": "deploy_step: one SGD step on the synapses (1 point), phi fixed"}


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


def _inputs(seed: int = 7):
    """The paper network, theta_0 (population 1), one sine, an inner point and a meta-batch."""
    from tinydan.experiments.configs import build_regression_net, regression_config
    from tinydan.tasks import sample_sines
    cfg = regression_config("paper")
    rng = np.random.default_rng(seed)
    net = build_regression_net(cfg, rng)
    theta0 = net.init_synapses(1, rng)
    f32 = np.float32
    fn = sample_sines(rng, 1)
    x = rng.uniform(-5, 5, (1, cfg.inner_batch)).astype(f32)    # the inner step: 1 point
    xm = rng.uniform(-5, 5, (1, cfg.meta_batch)).astype(f32)    # the meta-loss: 32 points
    y, ym = fn(x).astype(f32)[..., None], fn(xm).astype(f32)[..., None]
    return cfg, net, theta0, x[..., None], y, xm[..., None], ym


def _tinydan_step(net, kind: str, cfg, compiled: bool):
    """step(theta, x, y, xm, ym, lr) -> (theta', loss, phi gradients, L_task): tinydan's
    deploy_step, or meta_step followed by Adam on phi; recorded and replayed when ``compiled``."""
    from tinydan.compiler import compile
    from tinydan.meta import deploy_step, meta_step
    from tinydan.optim import Adam
    phi = net.parameters()
    opt = None if kind == "deploy" else Adam(phi, lr=cfg.meta_lr)

    def step(theta, x, y, xm, ym, lr):
        if kind == "deploy":
            new, loss = deploy_step(net, theta, x, y, lr)
            return new, loss, (), loss
        new, gphi, lt, lm = meta_step(net, theta, x, y, xm, ym, lr, kind, phi)
        opt.step(gphi)
        return new, lm, tuple(gphi), lt
    return compile(step) if compiled else step


def _regression_case(kind: str, compiled: bool = False) -> Case:
    """kind: "first_order", "one_step" (meta_step + Adam on phi) or "deploy" (deploy_step);
    tinydan eager (or compiled) against PyTorch eager."""
    cfg, net, theta0, x, y, xm, ym = _inputs()
    if net.sharing != "global" or not all(getattr(d, "activation", None) == "tanh"
                                          for d in net.dans):
        raise ValueError("the regression benchmarks expect the paper's global tanh MLPDAN")
    names, lr = list(theta0), cfg.inner_lr
    phi0 = [p.data.copy() for p in net.parameters()]                 # torch starts from these
    step = _tinydan_step(net, kind, cfg, compiled)
    st = {"theta": {k: Tensor(np.array(v), requires_grad=True) for k, v in theta0.items()}}

    def run_tinydan():
        old = st["theta"]
        new, loss, gphi, lt = step(old, x, y, xm, ym, lr)
        st["theta"] = new
        head = (loss,) if kind == "deploy" else (loss, lt, *gphi)
        return (*head, *[_Update(new[k], old[k], lr) for k in names])

    from .torch_reference import TorchStep, load_torch   # (runnable as python -m on its own)
    how = "recorded once and replayed (tinydan.compile)" if compiled else "eager"
    notes = f"paper net, P=1, state carried forward; {_WHAT[kind]}; tinydan {how}"
    torch = load_torch()
    if torch is None:
        return Case(run_tinydan, None, notes=notes + "; torch not installed: no reference, "
                    "not checked", reference_name="torch (absent)")
    ref = TorchStep(torch, net, kind, phi0, theta0, lr, cfg.meta_lr)

    def run_reference():
        lm, lt, gphi, old, new = ref(x, y, xm, ym)
        head = (lt,) if kind == "deploy" else (lm, lt, *gphi)
        return (*head, *[_Update(new[k], old[k], lr) for k in names])

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


@register("regression_compiled_meta_first_order", target=0.5)
def regression_compiled_meta_first_order() -> Case:
    """The first-order meta-step + Adam, replayed by tinydan.compile, vs PyTorch eager."""
    return _regression_case("first_order", compiled=True)


@register("regression_compiled_meta_one_step", target=0.5)
def regression_compiled_meta_one_step() -> Case:
    """The one-step meta-step + Adam, replayed by tinydan.compile, vs PyTorch eager."""
    return _regression_case("one_step", compiled=True)


@register("regression_compiled_deploy", target=0.5)
def regression_compiled_deploy() -> Case:
    """The deployment SGD step, replayed by tinydan.compile, vs PyTorch eager."""
    return _regression_case("deploy", compiled=True)


def _compiled_case(kind: str) -> Case:
    """The regression step of ``kind`` recorded once and replayed (``tinydan.compile``) against
    the same step run eagerly: the ratio is what compiling saves; outputs must be equal."""
    from tinydan.experiments.configs import build_regression_net

    cfg, _, _, x, y, xm, ym = _inputs()
    lr = cfg.inner_lr

    def make(compiled: bool):
        net = build_regression_net(cfg, np.random.default_rng(8))
        phi = net.parameters()
        step = _tinydan_step(net, kind, cfg, compiled)
        st = {"theta": {k: Tensor(v, requires_grad=True)
                        for k, v in net.init_synapses(1, np.random.default_rng(9)).items()}}

        def go():
            st["theta"], loss, _, _ = step(st["theta"], x, y, xm, ym, lr)
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
