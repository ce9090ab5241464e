"""Matrix products with batch dimensions, and the affine map x @ W + b.

``matmul(a, b)`` follows ``numpy.matmul``: the last two axes are matrices, the leading axes are
batch axes that broadcast. Backward: dA = dC @ B^T and dB = A^T @ dC, summed over the batch axes
that were broadcast. ``linear(x, W, b)`` fuses the product with a bias (one op instead of two, the
most common pair in a network).
"""
from __future__ import annotations

import numpy as np

from ..tensor import Op, Tensor, apply
from .elementwise import _pair
from .shape import reshape, sum_to


def _mT_array(x):
    return x.swapaxes(-1, -2)


def _matmul_forward(a, b):
    # (..., n, k) @ (..., k, m) -> (..., n, m); every VEC layer's product z = x W comes here
    try:
        # BEGIN SOLUTION
        if a.shape[-1] == 1 and b.shape[-2] == 1:
            # an outer product (k = 1): a broadcast multiply is several times faster than BLAS
            # here, and it is every batch-1 synapse gradient and every VEC from a 1-node layer
            return np.multiply(a, b)
        return np.matmul(a, b)
        # END SOLUTION
    except ValueError:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit: the last axis of "
                         f"the first ({a.shape[-1]}) must equal the second-to-last of the second "
                         f"({b.shape[-2]}), and the batch axes must broadcast") from None


def _mm(a: Tensor, b: Tensor, ta: bool = False, tb: bool = False) -> Tensor:
    """op(a) @ op(b) where op transposes the last two axes when its flag is set (internal)."""
    return apply(_MATMULS[ta, tb], a, b)


def _matmul_grads(g, a, b, ta, tb, na, nb):
    """Gradients of C = op(A) op(B) w.r.t. A and B, each one transposed-flag matmul (no copies).

    C = A B:     dA = dC B^T,     dB = A^T dC
    C = A B^T:   dA = dC B,       dB = dC^T A
    C = A^T B:   dA = B dC^T,     dB = A dC
    C = A^T B^T: dA = B^T dC^T,   dB = dC^T A^T
    """
    # BEGIN SOLUTION
    if not ta and not tb:
        ga = _mm(g, b, tb=True) if na else None
        gb = _mm(a, g, ta=True) if nb else None
    elif not ta and tb:
        ga = _mm(g, b) if na else None
        gb = _mm(g, a, ta=True) if nb else None
    elif ta and not tb:
        ga = _mm(b, g, tb=True) if na else None
        gb = _mm(a, g) if nb else None
    else:
        ga = _mm(b, g, ta=True, tb=True) if na else None
        gb = _mm(g, a, ta=True, tb=True) if nb else None
    return (None if ga is None else sum_to(ga, a.data.shape),
            None if gb is None else sum_to(gb, b.data.shape))
    # END SOLUTION


class MatMul(Op):
    """C = op(A) op(B); the subclasses read A and/or B transposed (views, no copies), so that every
    matmul gradient is itself one matmul with no transpose op in the graph."""

    ta = tb = False

    @staticmethod
    def forward(ctx, a, b):
        # (..., n, k) @ (..., k, m) -> (..., n, m)
        return _matmul_forward(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx._inputs
        op = ctx._op
        na, nb = ctx.needs_input_grad
        return _matmul_grads(g, a, b, op.ta, op.tb, na, nb)


class MatMulTA(MatMul):
    """C = A^T B (over the last two axes)."""

    ta = True

    @staticmethod
    def forward(ctx, a, b):
        return _matmul_forward(a.swapaxes(-1, -2), b)


class MatMulTB(MatMul):
    """C = A B^T."""

    tb = True

    @staticmethod
    def forward(ctx, a, b):
        return _matmul_forward(a, b.swapaxes(-1, -2))


class MatMulTT(MatMul):
    """C = A^T B^T."""

    ta = tb = True

    @staticmethod
    def forward(ctx, a, b):
        return _matmul_forward(a.swapaxes(-1, -2), b.swapaxes(-1, -2))


_MATMULS = {(False, False): MatMul, (True, False): MatMulTA, (False, True): MatMulTB,
            (True, True): MatMulTT}


class Linear(Op):
    @staticmethod
    def forward(ctx, x, w, b):
        # (..., n, k) @ (..., k, m) + (..., m) -> (..., n, m)
        out = _matmul_forward(x, w)
        try:
            out += b
        except ValueError:
            raise ValueError(f"linear: bias of shape {b.shape} does not broadcast to the "
                             f"product's shape {out.shape}") from None
        return out

    @staticmethod
    def backward(ctx, g):
        # BEGIN SOLUTION
        x, w, b = ctx._inputs
        nx, nw, nb = ctx.needs_input_grad
        # y = x W + b:  dx = g W^T,  dW = x^T g,  db = g summed over the broadcast axes
        gx = sum_to(apply(MatMulTB, g, w), x.data.shape) if nx else None
        gw = sum_to(apply(MatMulTA, x, g), w.data.shape) if nw else None
        return gx, gw, (sum_to(g, b.data.shape) if nb else None)
        # END SOLUTION


def matmul(a, b) -> Tensor:
    """C = A @ B over the last two axes, batch axes broadcast: C[..., i, j] = sum_k A[..., i, k] B[..., k, j]."""
    a, b = _pair(a, b, "matmul")
    if a.data.ndim >= 2 and b.data.ndim >= 2:
        return apply(MatMul, a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs tensors with at least 1 dimension, got {a.shape} @ {b.shape}")
    # vectors: promote to matrices, multiply, squeeze (NumPy rules)
    a2 = reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
    b2 = reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
    out = matmul(a2, b2)
    shape = out.shape[:-2] + (() if a.ndim == 1 else out.shape[-2:-1]) + \
        (() if b.ndim == 1 else out.shape[-1:])
    return reshape(out, shape)


def linear(x, weight, bias) -> Tensor:
    """The affine map y = x @ W + b (batch axes broadcast); one op, three gradients."""
    x, weight = _pair(x, weight, "linear")
    weight, bias = _pair(weight, bias, "linear")
    if x.data.ndim < 2 or weight.data.ndim < 2:
        raise ValueError(f"linear needs x and W with at least 2 dimensions, got {x.shape} and "
                         f"{weight.shape}")
    return apply(Linear, x, weight, bias)
