"""Convolution and max-pooling as pairs of adjoint kernels.

``im2col`` copies every kh x kw window of an image batch into one row of a matrix, so a
convolution becomes ONE matrix product: ``(N*OH*OW, C*kh*kw) @ (C*kh*kw, F)``. Its adjoint
``col2im`` adds each row back into the window it came from. The backward of one is the forward of
the other, so conv2d's gradient is made of differentiable ops and has a gradient of its own.

Max-pooling gathers the arg-max of each window (``take_rows``); its adjoint puts a value back at
the arg-max (``put_rows``). The arg-max itself is a constant mask, as for relu.

For the convolutional DANs (thousands of 10x10 images per call) there is a second, faster layout:
channels-last rows (N, H, W*C) with *banded* weights (``conv2d_rows``) or, for images so small
that the whole convolution is a small matrix, that matrix (``dense_conv_weight``: one GEMM, no
im2col), separable stride-1 max-pooling (``max_pool_rows``) and ``checkpoint_rows``, which runs a
row-wise function in cache-sized chunks and recomputes it in the backward instead of storing its
intermediates (or, with ``keep``, stores them when they are few).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..autograd import enable_grad, grad, no_grad
from ..tensor import Op, Tensor, apply, is_grad_enabled, wrap
from .elementwise import _pair, add, leaky_mask, mask_mul
from .linalg import matmul
from .shape import broadcast_to, concatenate, getitem, pad, reshape, sum_to, transpose


def _out_size(n, k, stride):
    return (n - k) // stride + 1


# ---------------------------------------------------------------------------- NumPy kernels
def _pair_stride(stride) -> tuple[int, int]:
    """``s`` or ``(sh, sw)`` -> (sh, sw)."""
    if isinstance(stride, (tuple, list)):
        sh, sw = stride
    else:
        sh = sw = stride
    sh, sw = int(sh), int(sw)
    if sh < 1 or sw < 1:
        raise ValueError(f"strides must be >= 1, got {stride}")
    return sh, sw


def im2col_array(x: np.ndarray, kh: int, kw: int, stride=1) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw): row (n, oh, ow) holds the window at (oh*sh, ow*sw).

    ``stride`` is one number or a pair (sh, sw)."""
    # BEGIN SOLUTION
    sh, sw = _pair_stride(stride)
    n, c, h, w = x.shape
    oh, ow = _out_size(h, kh, sh), _out_size(w, kw, sw)
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))        # (N, C, H-kh+1, W-kw+1, kh, kw)
    win = win[:, :, ::sh, ::sw][:, :, :oh, :ow]                 # (N, C, OH, OW, kh, kw)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)   # copies once
    # END SOLUTION


def col2im_array(cols: np.ndarray, x_shape, kh: int, kw: int, stride=1) -> np.ndarray:
    """Adjoint of im2col: (N*OH*OW, C*kh*kw) -> (N, C, H, W), overlapping windows add up."""
    # BEGIN SOLUTION
    sh, sw = _pair_stride(stride)
    n, c, h, w = x_shape
    oh, ow = _out_size(h, kh, sh), _out_size(w, kw, sw)
    out = np.zeros(x_shape, dtype=cols.dtype)
    if kh * kw <= oh * ow:                    # one vectorized add per kernel offset
        cols6 = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)  # (N, C, kh, kw, OH, OW)
        for i in range(kh):
            for j in range(kw):
                out[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += cols6[:, :, i, j]
    else:                                     # wide windows (row strips): one add per window
        cols6 = cols.reshape(n, oh, ow, c, kh, kw)                               # (N, OH, OW, C, kh, kw)
        for a in range(oh):
            for b in range(ow):
                out[:, :, a * sh:a * sh + kh, b * sw:b * sw + kw] += cols6[:, a, b]
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


def im2col(x: Tensor, kh: int, kw: int, stride=1) -> Tensor:
    """Windows as rows: (N, C, H, W) -> (N*OH*OW, C*kh*kw); ``stride`` is s or (sh, sw)."""
    if x.ndim != 4:
        raise ValueError(f"im2col expects (N, C, H, W), got shape {x.shape}")
    if x.shape[2] < kh or x.shape[3] < kw:
        raise ValueError(f"a {kh}x{kw} window does not fit in a {x.shape[2]}x{x.shape[3]} image")
    stride = _pair_stride(stride)
    return apply(Im2Col, x, kh=kh, kw=kw, stride=stride)


def col2im(cols: Tensor, x_shape, kh: int, kw: int, stride=1) -> Tensor:
    """Rows back into windows, adding overlaps: (N*OH*OW, C*kh*kw) -> x_shape = (N, C, H, W)."""
    stride = _pair_stride(stride)
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
    if s == 1 and k > 1:                       # stride 1: the separable kernel (same maxima)
        return _max_pool_stride1(x, k)
    oh, ow = _out_size(h, k, s), _out_size(w, k, s)
    cols = im2col(reshape(x, (n * c, 1, h, w)), k, k, s)              # (N*C*OH*OW, k*k)
    idx = np.argmax(cols.data, axis=1)                                # constant mask
    return reshape(take_rows(cols, idx), (n, c, oh, ow))
    # END SOLUTION


# ---------------------------------------------------------------------------- channels-last rows
# A convolutional DAN sees thousands of tiny images at once (one per neuron and row of the batch).
# For such batches two things matter more than the op count: the matrix products must not be
# skinny (im2col's (N*OH*OW, C*kh*kw) @ (C*kh*kw, F) has F = 4 columns: BLAS crawls), and the
# arrays must stay small enough for the cache. The first is solved by *banded weights*: store each
# image channels-last as rows, (N, H, W*C), and let one matrix row hold a strip of kh image rows
# and ``block + kw - 1`` pixels; a banded matrix T maps it to ``block`` output pixels with all F
# channels at once. With block = 1 this is plain im2col (in channels-last order); larger blocks
# trade a few multiplications by zero for a matrix product BLAS runs well. The second is solved by
# ``checkpoint_rows``: run a row-wise function chunk by chunk and recompute it in the backward.

def _band_selection(f: int, c: int, kh: int, kw: int, block: int) -> np.ndarray:
    """0/1 matrix S with T.flat = w.flat @ S: (F*C*kh*kw, kh*L*C * block*F), L = block + kw - 1.

    T[(dy, x, ci), (xo, fo)] = w[fo, ci, dy, x - xo] where 0 <= x - xo < kw, else 0.
    """
    L = block + kw - 1
    dy, x, ci, xo, fo = np.meshgrid(np.arange(kh), np.arange(L), np.arange(c), np.arange(block),
                                    np.arange(f), indexing="ij")
    dx = x - xo
    ok = (dx >= 0) & (dx < kw)
    rows = ((dy * L + x) * c + ci) * (block * f) + xo * f + fo     # flat index into T
    src = ((fo * c + ci) * kh + dy) * kw + np.clip(dx, 0, kw - 1)  # flat index into w
    S = np.zeros((f * c * kh * kw, kh * L * c * block * f))
    S[src[ok], rows[ok]] = 1.0
    return S


_BANDS: dict = {}


def banded_weight(weight: Tensor, block: int) -> Tensor:
    """Conv weight (F, C, kh, kw) -> banded matrix (kh*(block+kw-1)*C, block*F) (differentiable).

    Row (dy, x, c) of a strip times column (xo, f) is w[f, c, dy, x - xo] inside the band, 0 outside.
    """
    f, c, kh, kw = weight.shape
    key = (f, c, kh, kw, int(block), weight.dtype)
    if key not in _BANDS:
        _BANDS[key] = _band_selection(f, c, kh, kw, int(block)).astype(weight.dtype)
    L = block + kw - 1
    flat = matmul(reshape(weight, (1, f * c * kh * kw)), wrap(_BANDS[key]))   # (1, K*block*F)
    return reshape(flat, (kh * L * c, block * f))


def _dense_selection(f: int, c: int, kh: int, kw: int, height: int, width: int) -> np.ndarray:
    """0/1 matrix S with T.flat = weight.flat @ S: (F*C*kh*kw, H*W*C * OH*OW*F).

    T[(y, x, ci), (oy, ox, fo)] = weight[fo, ci, y - oy, x - ox] inside the kernel, else 0.
    """
    oh, ow = height - kh + 1, width - kw + 1
    y, x, ci, oy, ox, fo = np.meshgrid(np.arange(height), np.arange(width), np.arange(c),
                                       np.arange(oh), np.arange(ow), np.arange(f), indexing="ij")
    dy, dx = y - oy, x - ox
    ok = (dy >= 0) & (dy < kh) & (dx >= 0) & (dx < kw)
    rows = ((y * width + x) * c + ci) * (oh * ow * f) + (oy * ow + ox) * f + fo   # flat index into T
    src = ((fo * c + ci) * kh + np.clip(dy, 0, kh - 1)) * kw + np.clip(dx, 0, kw - 1)
    S = np.zeros((f * c * kh * kw, height * width * c * oh * ow * f))
    S[src[ok], rows[ok]] = 1.0
    return S


def dense_conv_weight(weight: Tensor, h: int, w: int) -> Tensor:
    """Conv weight (F, C, kh, kw) -> the whole convolution of an H x W image as one matrix
    T (H*W*C, OH*OW*F) on channels-last rows (differentiable): out.flat = x.flat @ T.

    Mostly zeros (each output pixel reads kh*kw of the H*W pixels), so only worth it for tiny
    images, where one GEMM with no im2col copy beats the banded strips (``ConvDAN`` decides).
    """
    f, c, kh, kw = weight.shape
    key = ("dense", f, c, kh, kw, int(h), int(w), weight.dtype)
    if key not in _BANDS:
        _BANDS[key] = _dense_selection(f, c, kh, kw, int(h), int(w)).astype(weight.dtype)
    flat = matmul(reshape(weight, (1, f * c * kh * kw)), wrap(_BANDS[key]))   # (1, H*W*C*OH*OW*F)
    return reshape(flat, (h * w * c, (h - kh + 1) * (w - kw + 1) * f))


class BandedConv(Op):
    @staticmethod
    def forward(ctx, x, band, bias_row, kh, win, step, slope):
        # x (N, H, W*C) -> strips (N*OH*nb, kh*win) @ band (kh*win, block*F) + bias [-> leaky]
        ctx.saved = (kh, win, step, slope)
        n, h, wc = x.shape
        cols = im2col_array(x.reshape(n, 1, h, wc), kh, win, (1, step))
        out = cols @ band
        out += bias_row
        if slope is not None:                 # leaky ReLU in place: max(a, slope * a)
            np.maximum(out, out * np.asarray(slope, out.dtype), out=out)
        return out.reshape(n, h - kh + 1, -1)

    @staticmethod
    def backward(ctx, g):
        kh, win, step, slope = ctx.saved
        x, band, bias_row = ctx.inputs
        nx, nband, nbias = ctx.needs_input_grad
        n, h, wc = x.shape
        g2 = reshape(g, (-1, band.shape[1]))                          # (N*OH*nb, block*F)
        if slope is not None:
            g2 = mask_mul(g2, leaky_mask(ctx.data, slope).reshape(g2.shape))
        gx = gband = gbias = None
        if nx:
            gcols = matmul(g2, transpose(band))                         # (N*OH*nb, kh*win)
            gx = reshape(col2im(gcols, (n, 1, h, wc), kh, win, (1, step)), x.shape)
        if nband:
            cols = im2col(reshape(x, (n, 1, h, wc)), kh, win, (1, step))
            gband = matmul(transpose(cols), g2)
        if nbias:
            gbias = sum_to(g2, bias_row.shape)
        return gx, gband, gbias


def conv_rows_banded(x: Tensor, band: Tensor, bias_row: Tensor, kh: int, kw: int,
                     channels: int, block: int, slope: float | None = None) -> Tensor:
    """Channels-last convolution with a banded weight (stride 1, no padding), + bias, and a leaky
    ReLU with ``slope`` if given, in one op (its output's sign is all the backward needs).

    x (N, H, W*C) -> (N, OH, OW*F); ``band`` from ``banded_weight(w, block)``, ``bias_row`` the
    bias repeated ``block`` times, (block*F,).
    """
    n, h, wc = x.shape
    ow = wc // channels - kw + 1
    if ow % block:
        raise ValueError(f"block {block} must divide the output width {ow}")
    win = (block + kw - 1) * channels
    if band.shape[0] != kh * win:
        raise ValueError(f"banded weight has {band.shape[0]} rows, a {kh}x{win} strip needs {kh * win}")
    return apply(BandedConv, x, band, bias_row, kh=kh, win=win, step=block * channels,
                 slope=None if slope is None else float(slope))


def conv2d_rows(x: Tensor, weight: Tensor, bias: Tensor | None = None, block: int | None = None) -> Tensor:
    """conv2d (stride 1, no padding) on channels-last rows: x (N, H, W*C) -> (N, OH, OW*F).

    The same numbers as ``conv2d`` on (N, C, H, W), laid out as out[n, oh, ow*F + f]. ``block``
    output pixels per matrix row (default: a whole output row).
    """
    f, c, kh, kw = weight.shape
    if x.ndim != 3 or x.shape[2] % c:
        raise ValueError(f"conv2d_rows expects x (N, H, W*{c}), got shape {x.shape}")
    ow = x.shape[2] // c - kw + 1
    block = ow if block is None else int(block)
    if bias is None:
        bias = wrap(np.zeros(f, dtype=weight.dtype))
    bias_row = reshape(broadcast_to(bias, (block, f)), (block * f,))
    return conv_rows_banded(x, banded_weight(weight, block), bias_row, kh, kw, c, block)


def _shift_slice(ndim: int, axis: int, start: int, length: int) -> tuple:
    idx = [slice(None)] * ndim
    idx[axis] = slice(start, start + length)
    return tuple(idx)


class ShiftTake(Op):
    @staticmethod
    def forward(ctx, a, idx, axis, k, step, known=None):
        # out[.., o, ..] = a[.., o + idx[.., o, ..] * step, ..] along ``axis``
        ctx.saved = (idx, axis, k, step)
        if known is not None:               # the caller already gathered it (max_pool_rows)
            return known
        n_out = a.shape[axis] - (k - 1) * step
        out = np.zeros(idx.shape, dtype=a.dtype)
        for d in range(k):                  # arithmetic selection: no branchy where
            out += a[_shift_slice(a.ndim, axis, d * step, n_out)] * (idx == d)
        return out

    @staticmethod
    def backward(ctx, g):
        idx, axis, k, step = ctx.saved
        return (shift_put(g, idx, axis, k, step, ctx.inputs[0].shape[axis]),)


class ShiftPut(Op):
    @staticmethod
    def forward(ctx, g, idx, axis, k, step, length):
        # adjoint of ShiftTake: out[.., o + idx * step, ..] += g[.., o, ..]
        ctx.saved = (idx, axis, k, step)
        shape = list(g.shape)
        shape[axis] = length
        out = np.zeros(shape, dtype=g.dtype)
        n_out = g.shape[axis]
        for d in range(k):
            out[_shift_slice(g.ndim, axis, d * step, n_out)] += g * (idx == d)
        return out

    @staticmethod
    def backward(ctx, g):
        idx, axis, k, step = ctx.saved
        return (shift_take(g, idx, axis, k, step),)


def shift_take(a: Tensor, idx: np.ndarray, axis: int, k: int, step: int) -> Tensor:
    """out[.., o, ..] = a[.., o + idx[.., o, ..] * step, ..]: pick one of k shifted copies per entry."""
    return apply(ShiftTake, a, idx=idx, axis=axis, k=k, step=step)


def shift_put(g: Tensor, idx: np.ndarray, axis: int, k: int, step: int, length: int) -> Tensor:
    """Adjoint of shift_take: scatter-add g back to where each entry was taken from."""
    return apply(ShiftPut, g, idx=idx, axis=axis, k=k, step=step, length=length)


def _window_argmax(a: np.ndarray, axis: int, k: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(idx, max): which d < k maximises a[o + d*step] for each output o along ``axis`` (uint8,
    the first on ties) and that maximum."""
    n_out = a.shape[axis] - (k - 1) * step
    shifted = [a[_shift_slice(a.ndim, axis, d * step, n_out)] for d in range(k)]
    if k == 1:
        return np.zeros(shifted[0].shape, np.uint8), shifted[0].copy()
    best = np.maximum(shifted[0], shifted[1])
    idx = np.greater(shifted[1], shifted[0]).view(np.uint8)
    for d in range(2, k):                   # d beats every earlier index: idx = max(idx, d * better)
        np.maximum(idx, np.greater(shifted[d], best).view(np.uint8) * np.uint8(d), out=idx)
        np.maximum(best, shifted[d], out=best)
    return idx, best


def _max_pool_stride1(x: Tensor, k: int) -> Tensor:
    """k x k max-pool, stride 1, on (N, C, H, W): the max over k shifted rows, then over k shifted
    columns (2k shifted copies, not k*k); the first index wins ties in each pass."""
    idx, best = _window_argmax(x.data, 2, k, 1)
    rows = apply(ShiftTake, x, idx=idx, axis=2, k=k, step=1, known=best)             # (N, C, OH, W)
    idx, best = _window_argmax(rows.data, 3, k, 1)
    return apply(ShiftTake, rows, idx=idx, axis=3, k=k, step=1, known=best)          # (N, C, OH, OW)


def max_pool_rows(x: Tensor, k: int, channels: int) -> Tensor:
    """k x k max-pool, stride 1, on channels-last rows: (N, H, W*C) -> (N, H-k+1, (W-k+1)*C).

    Separable: the max over k rows, then over k pixels (k shifted copies each, not k*k); the
    gradient goes to the arg-max, a constant mask as in ``max_pool2d``.
    """
    if x.ndim != 3 or x.shape[2] % channels:
        raise ValueError(f"max_pool_rows expects x (N, H, W*{channels}), got shape {x.shape}")
    idx, best = _window_argmax(x.data, 1, k, 1)
    rows = apply(ShiftTake, x, idx=idx, axis=1, k=k, step=1, known=best)             # (N, OH, W*C)
    idx, best = _window_argmax(rows.data, 2, k, channels)
    return apply(ShiftTake, rows, idx=idx, axis=2, k=k, step=channels, known=best)  # (N, OH, OW*C)


# ---------------------------------------------------------------------------- checkpointing
def _map_chunks(job, starts, threads: int) -> list:
    """[job(i) for i in starts], on ``threads`` threads when > 1 (NumPy and BLAS release the GIL)."""
    if threads <= 1 or len(starts) <= 1:
        return [job(i) for i in starts]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(threads, len(starts))) as pool:
        return list(pool.map(job, starts))


class CheckpointRows(Op):
    @staticmethod
    def forward(ctx, x, *params, fn, chunk, threads, keep):
        # fn chunk by chunk. keep None: recording nothing, only the inputs stay alive for the
        # backward. keep (requires_grad of x, of each param): each chunk's graph is recorded on
        # leaves of its own and kept, so a plain backward needs no recomputation.
        starts = range(0, x.shape[0], chunk)
        if keep is not None:
            with enable_grad():
                ps = [Tensor(p, requires_grad=r) for p, r in zip(params, keep[1])]

                def run(i):
                    xc = Tensor(x[i:i + chunk], requires_grad=keep[0])
                    return xc, fn(xc, ps)
                graphs = _map_chunks(run, starts, threads)
            ctx.saved = (fn, chunk, threads, (ps, graphs))
            outs = [o.data for _, o in graphs]
        else:
            ctx.saved = (fn, chunk, threads, None)
            with no_grad():
                ps = [wrap(p) for p in params]
                outs = _map_chunks(lambda i: fn(wrap(x[i:i + chunk]), ps).data, starts, threads)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    @staticmethod
    def backward(ctx, g):
        fn, chunk, threads, kept = ctx.saved
        x, *params = ctx.inputs
        need_x, *need_p = ctx.needs_input_grad
        n = x.shape[0]
        if kept is not None and not is_grad_enabled():        # the forward's graphs, as they are
            ps, graphs = kept
            return _chunk_gradients(graphs.__getitem__, len(graphs), g.data, chunk, threads, x,
                                    need_x, ps, need_p, create_graph=False)
        if is_grad_enabled():
            # create_graph: recompute with recording on, so the gradient has a graph of its own
            gx_parts, gp = [], [None] * len(params)
            for i in range(0, n, chunk):
                xc = getitem(x, slice(i, i + chunk))
                wanted = ([xc] if need_x else []) + [p for p, nd in zip(params, need_p) if nd]
                grads = list(grad(fn(xc, params), wanted, getitem(g, slice(i, i + chunk)),
                                  create_graph=True, allow_unused=True))
                if need_x:
                    gxc = grads.pop(0)
                    gx_parts.append(gxc if gxc is not None else wrap(np.zeros(xc.shape, x.dtype)))
                for j, nd in enumerate(need_p):
                    if nd:
                        gj = grads.pop(0)
                        if gj is not None:
                            gp[j] = gj if gp[j] is None else add(gp[j], gj)
            gx = (gx_parts[0] if len(gx_parts) == 1 else concatenate(gx_parts)) if need_x else None
            return (gx, *gp)
        # plain backward: recompute one chunk at a time on fresh leaves, keep only the gradients.
        # Recording stays switched on throughout (create_graph=True inside), so that chunks may run
        # on several threads without one switching it off under another's feet.
        ps = [Tensor(p.data, requires_grad=nd) for p, nd in zip(params, need_p)]

        def recompute(k):
            xc = Tensor(x.data[k * chunk:(k + 1) * chunk], requires_grad=need_x)
            return xc, fn(xc, ps)

        with enable_grad():
            return _chunk_gradients(recompute, -(-n // chunk), g.data, chunk, threads, x, need_x, ps,
                                    need_p, create_graph=True)


def _chunk_gradients(graph, n_chunks, g, chunk, threads, x, need_x, ps, need_p, create_graph):
    """CheckpointRows' plain backward, chunk by chunk: ``graph(k)`` gives chunk k's (x leaf,
    output), kept by the forward or recomputed; only the gradients are kept (as plain arrays)."""
    gx = np.empty(x.shape, x.dtype) if need_x else None
    wanted_p = [p for p, nd in zip(ps, need_p) if nd]

    def job(k):
        i = k * chunk
        xc, out = graph(k)
        grads = grad(out, ([xc] if need_x else []) + wanted_p, wrap(g[i:i + chunk]),
                     create_graph=create_graph, allow_unused=True)
        grads = [None if gi is None else gi.data for gi in grads]
        if need_x:
            gxc = grads.pop(0)
            gx[i:i + chunk] = 0 if gxc is None else gxc
        return grads

    parts = _map_chunks(job, range(n_chunks), threads)
    return (None if gx is None else wrap(gx), *_sum_parts(parts, ps, need_p))


def _sum_parts(parts, params, need_p) -> list:
    """Per-param gradients summed over the chunks' parts (None where not needed)."""
    gp, k = [], 0
    for p, nd in zip(params, need_p):
        if not nd:
            gp.append(None)
            continue
        acc = np.zeros(p.shape, p.dtype)
        for part in parts:
            if part[k] is not None:
                acc += part[k]
        gp.append(wrap(acc))
        k += 1
    return gp


def checkpoint_rows(fn, x: Tensor, params, chunk: int, threads: int = 1, keep: bool = False) -> Tensor:
    """fn(x, params) for a row-wise fn, computed ``chunk`` rows at a time, storing no intermediates
    (unless ``keep``).

    ``fn(x_rows, params) -> out_rows`` must treat every row of x on its own (a layer of DANs does).
    Without ``keep`` the forward stores only x and the params; the backward recomputes each chunk
    and backpropagates through it (gradient checkpointing), so memory stays at one chunk's
    intermediates and the arrays stay small enough for the cache. With create_graph the
    recomputation is recorded, so gradients of gradients work as for the plain composition.
    ``threads`` > 1 runs the chunks of the forward and of the plain backward on that many threads
    (give BLAS one thread each).
    ``keep``: when recording, keep every chunk's intermediates instead (memory for time: a plain
    backward then recomputes nothing; with create_graph it still recomputes).
    """
    if x.shape[0] == 0:
        raise ValueError("checkpoint_rows needs at least one row")
    params = list(params)
    kept = None
    if keep and is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        kept = (x.requires_grad, tuple(p.requires_grad for p in params))
    return apply(CheckpointRows, x, *params, fn=fn, chunk=max(1, int(chunk)),
                 threads=max(1, int(threads)), keep=kept)
