"""Reductions over axes: sum, mean, max (with keepdims).

The backward of a reduction puts the reduced axes back (a reshape to the keepdims shape) and
broadcasts the gradient over them.
"""
from __future__ import annotations

import builtins

import numpy as np

from ..tensor import Op, Tensor, apply
from .elementwise import as_tensor, mask_mul, mul
from .shape import broadcast_to, reshape


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    out = []
    for ax in axis:
        if not -ndim <= ax < builtins.max(ndim, 1):
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
        out.append(int(ax) % builtins.max(ndim, 1))
    return tuple(sorted(set(out)))


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


class Sum(Op):
    @staticmethod
    def forward(ctx, a, axes, keepdims):
        ctx.saved = axes
        return np.asarray(a.sum(axis=axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        # BEGIN SOLUTION
        (a,) = ctx.inputs
        return (broadcast_to(reshape(g, _keepdims_shape(a.shape, ctx.saved)), a.shape),)
        # END SOLUTION


class Mean(Op):
    @staticmethod
    def forward(ctx, a, axes, keepdims):
        ctx.saved = axes
        return np.asarray(a.mean(axis=axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.inputs
        n = 1
        for ax in ctx.saved:
            n *= a.shape[ax]
        return (broadcast_to(reshape(mul(g, 1.0 / n), _keepdims_shape(a.shape, ctx.saved)),
                             a.shape),)


class Max(Op):
    @staticmethod
    def forward(ctx, a, axes, keepdims):
        m = a.max(axis=axes, keepdims=True)
        mask = (a == m)
        ctx.saved = (axes, mask / mask.sum(axis=axes, keepdims=True))   # ties share the gradient
        return np.asarray(m if keepdims else m.reshape([s for i, s in enumerate(m.shape)
                                                          if i not in axes]))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.inputs
        axes, mask = ctx.saved
        return (mask_mul(broadcast_to(reshape(g, _keepdims_shape(a.shape, axes)), a.shape),
                         mask.astype(g.dtype)),)


def sum(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """sum of a over ``axis`` (all axes when None)."""
    a = as_tensor(a)
    return apply(Sum, a, axes=_axes(axis, a.ndim), keepdims=keepdims)


def mean(a, axis=None, keepdims: bool = False) -> Tensor:
    """mean of a over ``axis`` (all axes when None)."""
    a = as_tensor(a)
    return apply(Mean, a, axes=_axes(axis, a.ndim), keepdims=keepdims)


def max(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """max of a over ``axis``; the gradient goes to the arg-max (shared equally between ties)."""
    a = as_tensor(a)
    if a.size == 0:
        raise ValueError("max of an empty tensor")
    return apply(Max, a, axes=_axes(axis, a.ndim), keepdims=keepdims)


def min(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """min of a over ``axis`` (= -max(-a))."""
    from .elementwise import neg
    return neg(max(neg(as_tensor(a)), axis=axis, keepdims=keepdims))
