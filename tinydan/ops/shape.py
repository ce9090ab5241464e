"""Shape ops: reshape, transpose, broadcast, indexing, concatenate, stack, pad.

Each comes with its adjoint: broadcast_to and sum_to undo each other, indexing and scatter_add
undo each other, pad and slicing undo each other. The backward of each op is the forward of its
adjoint, so gradients of gradients come for free.
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Op, Tensor, apply, wrap


def _normalize_index(index):
    """Turn Tensors inside an index into arrays; indices carry no gradient."""
    if isinstance(index, tuple):
        return tuple(i.data.astype(np.intp) if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, Tensor):
        return index.data.astype(np.intp)
    return index


def _is_basic(index) -> bool:
    """Basic indexing (ints, slices, None, ...) never repeats an element, so the adjoint can assign."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


class Reshape(Op):
    @staticmethod
    def forward(ctx, a, shape):
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return (reshape(g, ctx.inputs[0].shape),)


class Transpose(Op):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.saved = axes
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return (transpose(g, tuple(np.argsort(ctx.saved))),)


class BroadcastTo(Op):
    @staticmethod
    def forward(ctx, a, shape):
        return np.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return (sum_to(g, ctx.inputs[0].shape),)


_SUM_AXES: dict = {}


def _sum_axes(shape_from, shape_to):
    """(axes to sum, whether they are only the leading ones) to reduce shape_from to shape_to."""
    # BEGIN SOLUTION
    key = (shape_from, shape_to)
    hit = _SUM_AXES.get(key)
    if hit is None:
        lead = len(shape_from) - len(shape_to)
        axes = tuple(range(lead)) + tuple(
            i + lead for i, s in enumerate(shape_to) if s == 1 and shape_from[i + lead] != 1)
        hit = (axes, len(axes) == lead)
        if len(_SUM_AXES) < 4096:                   # memo: the same few shapes recur every step
            _SUM_AXES[key] = hit
    return hit
    # END SOLUTION


class SumTo(Op):
    @staticmethod
    def forward(ctx, a, shape):
        axes, leading_only = _sum_axes(a.shape, shape)
        if leading_only:                            # no keepdims round trip
            out = a.sum(axis=axes)
            return out if type(out) is np.ndarray else np.asarray(out)
        return np.asarray(a.sum(axis=axes, keepdims=True)).reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return (broadcast_to(g, ctx.inputs[0].shape),)


class GetItem(Op):
    @staticmethod
    def forward(ctx, a, index):
        ctx.saved = index
        return np.asarray(a[index])

    @staticmethod
    def backward(ctx, g):
        return (scatter_add(g, ctx.saved, ctx.inputs[0].shape),)


class ScatterAdd(Op):
    @staticmethod
    def forward(ctx, a, index, shape):
        ctx.saved = index
        out = np.zeros(shape, dtype=a.dtype)
        if _is_basic(index):
            out[index] = a
        else:
            np.add.at(out, index, a)
        return out

    @staticmethod
    def backward(ctx, g):
        return (getitem(g, ctx.saved),)


class Concatenate(Op):
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.saved = axis
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        axis = ctx.saved
        grads, start = [], 0
        for x, need in zip(ctx.inputs, ctx.needs_input_grad):
            n = x.shape[axis]
            if need:
                idx = [slice(None)] * g.ndim
                idx[axis] = slice(start, start + n)
                grads.append(getitem(g, tuple(idx)))
            else:
                grads.append(None)
            start += n
        return tuple(grads)


class Stack(Op):
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.saved = axis
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        axis = ctx.saved % g.ndim
        lead = (slice(None),) * axis
        return tuple(getitem(g, lead + (i,)) if need else None
                     for i, need in enumerate(ctx.needs_input_grad))


class Pad(Op):
    @staticmethod
    def forward(ctx, a, pad_width, value):
        ctx.saved = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, a.shape))
        return np.pad(a, pad_width, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return (getitem(g, ctx.saved),)


# ---------------------------------------------------------------------------- functions
def reshape(a: Tensor, *shape) -> Tensor:
    """View ``a`` with a new shape (one entry may be -1)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    shape = tuple(int(s) for s in shape)
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if shape.count(-1) > 1 or known == 0 or a.size % known:
            raise ValueError(f"cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                             f"into {shape}")
        shape = tuple(a.size // known if s == -1 else s for s in shape)
    if math.prod(shape) != a.size:
        raise ValueError(f"cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                         f"into {shape}")
    if shape == a.shape:
        return a
    return apply(Reshape, a, shape=shape)


def transpose(a: Tensor, axes=None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None): out[..] = a[permuted ..]."""
    if axes is None:
        axes = tuple(range(a.ndim - 1, -1, -1))
    axes = tuple(int(ax) % a.ndim for ax in axes) if a.ndim else ()
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"axes {axes} are not a permutation of the {a.ndim} axes of shape {a.shape}")
    if axes == tuple(range(a.ndim)):
        return a
    return apply(Transpose, a, axes=axes)


def permute(a: Tensor, *axes) -> Tensor:
    """Alias of transpose with the axes given as arguments: ``x.permute(0, 2, 1)``."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return transpose(a, axes)


def swapaxes(a: Tensor, ax1: int, ax2: int) -> Tensor:
    """Exchange two axes."""
    axes = list(range(a.ndim))
    axes[ax1], axes[ax2] = axes[ax2], axes[ax1]
    return transpose(a, tuple(axes))


def broadcast_to(a: Tensor, shape) -> Tensor:
    """Repeat ``a`` along new or size-1 axes to ``shape`` (NumPy rules); backward: sum_to."""
    shape = tuple(shape)
    if a.shape == shape:
        return a
    try:
        np.broadcast_shapes(a.shape, shape)
    except ValueError:
        raise ValueError(f"cannot broadcast shape {a.shape} to {shape}") from None
    return apply(BroadcastTo, a, shape=shape)


def sum_to(a: Tensor, shape) -> Tensor:
    """Sum ``a`` over the axes that broadcasting added, so that the result has ``shape``."""
    shape = tuple(shape)
    if a.shape == shape:
        return a
    return apply(SumTo, a, shape=shape)


def getitem(a: Tensor, index) -> Tensor:
    """``a[index]`` with NumPy semantics; backward scatters (adds) the gradient back."""
    index = _normalize_index(index)
    try:
        np.empty(a.shape, dtype=bool)[index]
    except IndexError as e:
        raise IndexError(f"bad index for a tensor of shape {a.shape}: {e}") from None
    return apply(GetItem, a, index=index)


def scatter_add(a: Tensor, index, shape) -> Tensor:
    """zeros(shape) with ``a`` added at ``index`` (repeated indices add up): adjoint of indexing."""
    return apply(ScatterAdd, a, index=_normalize_index(index), shape=tuple(shape))


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    tensors = list(tensors)
    _check_same_dtype(tensors, "concatenate")
    return apply(Concatenate, *tensors, axis=axis)


def stack(tensors, axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    tensors = list(tensors)
    _check_same_dtype(tensors, "stack")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack needs tensors of one shape, got {sorted(shapes)}")
    return apply(Stack, *tensors, axis=axis)


def pad(a: Tensor, pad_width, value: float = 0.0) -> Tensor:
    """Pad with a constant; ``pad_width`` is one (before, after) pair per axis."""
    pad_width = tuple((int(lo), int(hi)) for lo, hi in pad_width)
    if len(pad_width) != a.ndim:
        raise ValueError(f"pad_width needs {a.ndim} (before, after) pairs for shape {a.shape}, "
                         f"got {len(pad_width)}")
    return apply(Pad, a, pad_width=pad_width, value=value)


def _check_same_dtype(tensors, what):
    if not tensors:
        raise ValueError(f"{what} needs at least one tensor")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            tensors[i] = wrap(np.asarray(t, dtype=tensors[0].dtype if isinstance(tensors[0], Tensor)
                                         else np.float32))
    dts = {t.dtype for t in tensors}
    if len(dts) > 1:
        raise TypeError(f"{what} got mixed dtypes {sorted(map(str, dts))}; convert with .astype()")
