"""Convolution and max-pooling as pairs of adjoint kernels.

``im2col`` copies every kh x kw window of an image batch into one row of a matrix, so a
convolution becomes ONE matrix product: ``(N*OH*OW, C*kh*kw) @ (C*kh*kw, F)``. Its adjoint
``col2im`` adds each row back into the window it came from. The backward of one is the forward of
the other, so conv2d's gradient is made of differentiable ops and has a gradient of its own.

Max-pooling gathers the arg-max of each window (``take_rows``); its adjoint puts a value back at
the arg-max (``put_rows``). The arg-max itself is a constant mask, as for relu.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..tensor import Op, Tensor, apply
from .elementwise import _pair, add
from .linalg import matmul
from .shape import pad, reshape, transpose


def _out_size(n, k, stride):
    return (n - k) // stride + 1


# ---------------------------------------------------------------------------- NumPy kernels
def im2col_array(x: np.ndarray, kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw): row (n, oh, ow) holds the window at (oh*s, ow*s)."""
    # BEGIN SOLUTION
    n, c, h, w = x.shape
    oh, ow = _out_size(h, kh, stride), _out_size(w, kw, stride)
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))        # (N, C, H-kh+1, W-kw+1, kh, kw)
    win = win[:, :, ::stride, ::stride][:, :, :oh, :ow]         # (N, C, OH, OW, kh, kw)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)   # copies once
    # END SOLUTION


def col2im_array(cols: np.ndarray, x_shape, kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """Adjoint of im2col: (N*OH*OW, C*kh*kw) -> (N, C, H, W), overlapping windows add up."""
    # BEGIN SOLUTION
    n, c, h, w = x_shape
    oh, ow = _out_size(h, kh, stride), _out_size(w, kw, stride)
    cols6 = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)   # (N, C, kh, kw, OH, OW)
    out = np.zeros(x_shape, dtype=cols.dtype)
    for i in range(kh):                       # kh*kw vectorized adds, one per kernel offset
        for j in range(kw):
            out[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += cols6[:, :, i, j]
    return out
    # END SOLUTION


class Im2Col(Op):
    @staticmethod
    def forward(ctx, x, kh, kw, stride):
        ctx.saved = (kh, kw, stride)
        return im2col_array(x, kh, kw, stride)

    @staticmethod
    def backward(ctx, g):
        kh, kw, stride = ctx.saved
        return (col2im(g, ctx.inputs[0].shape, kh, kw, stride),)


class Col2Im(Op):
    @staticmethod
    def forward(ctx, cols, x_shape, kh, kw, stride):
        ctx.saved = (kh, kw, stride)
        return col2im_array(cols, x_shape, kh, kw, stride)

    @staticmethod
    def backward(ctx, g):
        kh, kw, stride = ctx.saved
        return (im2col(g, kh, kw, stride),)


def im2col(x: Tensor, kh: int, kw: int, stride: int = 1) -> Tensor:
    """Windows as rows: (N, C, H, W) -> (N*OH*OW, C*kh*kw)."""
    if x.ndim != 4:
        raise ValueError(f"im2col expects (N, C, H, W), got shape {x.shape}")
    if x.shape[2] < kh or x.shape[3] < kw:
        raise ValueError(f"a {kh}x{kw} window does not fit in a {x.shape[2]}x{x.shape[3]} image")
    return apply(Im2Col, x, kh=kh, kw=kw, stride=stride)


def col2im(cols: Tensor, x_shape, kh: int, kw: int, stride: int = 1) -> Tensor:
    """Rows back into windows, adding overlaps: (N*OH*OW, C*kh*kw) -> x_shape = (N, C, H, W)."""
    return apply(Col2Im, cols, x_shape=tuple(x_shape), kh=kh, kw=kw, stride=stride)


class TakeRows(Op):
    @staticmethod
    def forward(ctx, a, idx):
        ctx.saved = idx
        return a[np.arange(a.shape[0]), idx]                  # (M, K) -> (M,)

    @staticmethod
    def backward(ctx, g):
        return (put_rows(g, ctx.saved, ctx.inputs[0].shape[1]),)


class PutRows(Op):
    @staticmethod
    def forward(ctx, a, idx, k):
        ctx.saved = idx
        out = np.zeros((a.shape[0], k), dtype=a.dtype)        # (M,) -> (M, K)
        out[np.arange(a.shape[0]), idx] = a
        return out

    @staticmethod
    def backward(ctx, g):
        return (take_rows(g, ctx.saved),)


def take_rows(a: Tensor, idx: np.ndarray) -> Tensor:
    """out[m] = a[m, idx[m]] (gather one entry per row)."""
    return apply(TakeRows, a, idx=idx)


def put_rows(a: Tensor, idx: np.ndarray, k: int) -> Tensor:
    """out = zeros(M, k) with out[m, idx[m]] = a[m] (adjoint of take_rows)."""
    return apply(PutRows, a, idx=idx, k=k)


# ---------------------------------------------------------------------------- layers
def conv2d(x, weight, bias=None, stride: int = 1, padding: int = 0) -> Tensor:
    """out[n, f] = sum_{c,i,j} w[f, c, i, j] x[n, c, s*oh + i, s*ow + j] + b[f] (cross-correlation).

    x: (N, C, H, W), weight: (F, C, kh, kw), bias: (F,) -> (N, F, OH, OW).
    """
    x, weight = _pair(x, weight, "conv2d")
    if x.ndim != 4:
        raise ValueError(f"conv2d expects input (N, C, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight (F, C, kh, kw), got shape {weight.shape}")
    f, c, kh, kw = weight.shape
    if x.shape[1] != c:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but the weight expects {c} "
                         f"(weight shape {weight.shape})")
    if stride < 1 or padding < 0:
        raise ValueError(f"conv2d needs stride >= 1 and padding >= 0, got {stride}, {padding}")
    if padding:
        x = pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, _, h, w = x.shape
    oh, ow = _out_size(h, kh, stride), _out_size(w, kw, stride)
    cols = im2col(x, kh, kw, stride)                                  # (N*OH*OW, C*kh*kw)
    out = matmul(cols, transpose(reshape(weight, (f, c * kh * kw))))  # (N*OH*OW, F)
    if bias is not None:
        if bias.shape != (f,):
            raise ValueError(f"conv2d bias must have shape ({f},), got {bias.shape}")
        out = add(out, bias)
    return transpose(reshape(out, (n, oh, ow, f)), (0, 3, 1, 2))     # (N, F, OH, OW)


def max_pool2d(x: Tensor, kernel_size: int, stride: int | None = None) -> Tensor:
    """out[n, c, oh, ow] = max over the k x k window at (s*oh, s*ow); gradient to the arg-max."""
    if x.ndim != 4:
        raise ValueError(f"max_pool2d expects input (N, C, H, W), got shape {x.shape}")
    k = int(kernel_size)
    s = k if stride is None else int(stride)
    n, c, h, w = x.shape
    # BEGIN SOLUTION
    oh, ow = _out_size(h, k, s), _out_size(w, k, s)
    cols = im2col(reshape(x, (n * c, 1, h, w)), k, k, s)              # (N*C*OH*OW, k*k)
    idx = np.argmax(cols.data, axis=1)                                # constant mask
    return reshape(take_rows(cols, idx), (n, c, oh, ow))
    # END SOLUTION
