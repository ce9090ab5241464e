"""Matrix products with batch dimensions.

``matmul(a, b)`` follows ``numpy.matmul``: the last two axes are matrices, the leading axes are
batch axes that broadcast. Backward: dA = dC @ B^T and dB = A^T @ dC, summed over the batch axes
that were broadcast.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Op, Tensor, apply
from .elementwise import _pair
from .shape import reshape, sum_to, swapaxes


class MatMul(Op):
    @staticmethod
    def forward(ctx, a, b):
        # (..., n, k) @ (..., k, m) -> (..., n, m)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        ga = sum_to(matmul(g, swapaxes(b, -1, -2)), a.shape) if na else None
        gb = sum_to(matmul(swapaxes(a, -1, -2), g), b.shape) if nb else None
        return ga, gb


def matmul(a, b) -> Tensor:
    """C = A @ B over the last two axes, batch axes broadcast: C[..., i, j] = sum_k A[..., i, k] B[..., k, j]."""
    a, b = _pair(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs tensors with at least 1 dimension, got {a.shape} @ {b.shape}")
    if a.ndim == 1 or b.ndim == 1:            # vectors: promote, multiply, squeeze (NumPy rules)
        a2 = reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
        b2 = reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
        out = matmul(a2, b2)
        shape = out.shape[:-2] + (() if a.ndim == 1 else out.shape[-2:-1]) + \
            (() if b.ndim == 1 else out.shape[-1:])
        return reshape(out, shape)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit: the last axis of the "
                         f"first ({a.shape[-1]}) must equal the second-to-last of the second "
                         f"({b.shape[-2]})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch axes of {a.shape} and {b.shape} do not broadcast") from None
    return apply(MatMul, a, b)
