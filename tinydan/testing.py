"""Gradient checks: compare tinydan's derivatives with central finite differences.

``check_grad(f, *inputs, order=2)`` checks, in float64,

* order 1: the gradient of L(x) = <v, f(x)> (v a fixed random vector) against
  (L(x + eps e_k) - L(x - eps e_k)) / (2 eps) for every element k of every input;
* order 2: the Hessian-vector product H u = d/dx <grad L(x), u> (computed by differentiating the
  gradient, ``create_graph=True``) against (grad L(x + eps u) - grad L(x - eps u)) / (2 eps).

A failure names the input, the worst element and its index, and both values.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .autograd import grad
from .tensor import Tensor

__all__ = ["check_grad", "GradientCheckError", "numerical_grad"]


class GradientCheckError(AssertionError):
    """A gradient (or Hessian-vector product) disagrees with finite differences."""


def _scalarize(f, xs, v_holder, rng):
    out = f(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"check_grad: f must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(f"check_grad: f returned dtype {out.dtype}; gradient checks need float64 "
                        "all the way through")
    if v_holder[0] is None:
        v_holder[0] = Tensor(rng.standard_normal(out.shape), dtype=np.float64)
    if out.shape != v_holder[0].shape:
        raise ValueError(f"check_grad: f's output shape changed from {v_holder[0].shape} to {out.shape}")
    return (out * v_holder[0]).sum()


def numerical_grad(fun: Callable[[list[np.ndarray]], float], arrays: list[np.ndarray],
                   eps: float = 1e-6) -> list[np.ndarray]:
    """Central differences dL/dx_k ~ (L(x + eps e_k) - L(x - eps e_k)) / (2 eps) for each element."""
    grads = []
    for a in arrays:
        ga = np.zeros_like(a)
        for k in np.ndindex(a.shape):
            old = a[k]
            a[k] = old + eps
            hi = fun(arrays)
            a[k] = old - eps
            lo = fun(arrays)
            a[k] = old
            ga[k] = (hi - lo) / (2 * eps)
        grads.append(ga)
    return grads


def _compare(what, i, analytic, numeric, atol, rtol):
    analytic = np.zeros_like(numeric) if analytic is None else analytic
    err = np.abs(analytic - numeric)
    tol = atol + rtol * np.abs(numeric)
    if analytic.shape != numeric.shape:
        raise GradientCheckError(f"{what} of input {i}: shape {analytic.shape}, expected {numeric.shape}")
    if not np.all(np.isfinite(analytic)):
        raise GradientCheckError(f"{what} of input {i} has non-finite entries: {analytic}")
    bad = err - tol
    if bad.size and bad.max() > 0:
        k = np.unravel_index(np.argmax(bad), bad.shape)
        raise GradientCheckError(
            f"{what} of input {i} (shape {numeric.shape}) is wrong: worst element at index "
            f"{tuple(int(j) for j in k)}: analytic {analytic[k]:.8g}, numeric {numeric[k]:.8g} "
            f"(abs error {err[k]:.3g}, tolerance {tol[k]:.3g})")


def check_grad(f: Callable[..., Tensor], *inputs, order: int = 2, eps: float = 1e-6,
               atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0) -> bool:
    """Check d f / d inputs (order >= 1) and Hessian-vector products (order 2) in float64.

    ``inputs`` are float64 Tensors or arrays; every one is differentiated. Returns True, or raises
    ``GradientCheckError`` naming the worst element.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if not inputs:
        raise ValueError("check_grad needs at least one input")
    arrays = []
    for i, x in enumerate(inputs):
        a = x.data if isinstance(x, Tensor) else np.asarray(x)
        if a.dtype != np.float64:
            raise TypeError(f"check_grad: input {i} has dtype {a.dtype}; finite differences in "
                            "float32 are too coarse to check anything. Pass float64 inputs "
                            "(x.astype(np.float64) or tinydan.tensor(..., dtype='float64')).")
        arrays.append(np.array(a, dtype=np.float64, copy=True))
    rng = np.random.default_rng(seed)
    v = [None]

    def loss_value(arrs):
        xs = [Tensor(a, dtype=np.float64) for a in arrs]
        return float(_scalarize(f, xs, v, rng).data)

    def analytic_grads(arrs, create_graph=False):
        xs = [Tensor(a.copy(), requires_grad=True, dtype=np.float64) for a in arrs]
        L = _scalarize(f, xs, v, rng)
        if not L.requires_grad:
            return xs, [None] * len(xs)
        gs = grad(L, xs, create_graph=create_graph, allow_unused=True)
        return xs, list(gs)

    _, gs = analytic_grads(arrays)
    numeric = numerical_grad(loss_value, arrays, eps)
    for i, (g, n) in enumerate(zip(gs, numeric)):
        _compare("gradient", i, None if g is None else g.data, n, atol, rtol)
    if order == 1:
        return True

    # Hessian-vector product along a random direction u (one block per input).
    u = [rng.standard_normal(a.shape) for a in arrays]
    xs, gs = analytic_grads(arrays, create_graph=True)
    pairs = [(g * Tensor(ui, dtype=np.float64)).sum() for g, ui in zip(gs, u)
             if g is not None and g.requires_grad]
    if pairs:
        gu = pairs[0]
        for p in pairs[1:]:
            gu = gu + p
        hv = grad(gu, xs, allow_unused=True)
        hv = [None if h is None else h.data for h in hv]
    else:                                      # the gradient is constant: H = 0
        hv = [None] * len(xs)
    plus = [a + eps * ui for a, ui in zip(arrays, u)]
    minus = [a - eps * ui for a, ui in zip(arrays, u)]
    _, gp = analytic_grads(plus)
    _, gm = analytic_grads(minus)
    for i in range(len(arrays)):
        gpi = np.zeros_like(arrays[i]) if gp[i] is None else gp[i].data
        gmi = np.zeros_like(arrays[i]) if gm[i] is None else gm[i].data
        _compare("Hessian-vector product", i, hv[i], (gpi - gmi) / (2 * eps), atol, rtol)
    return True
