"""Losses: mean squared error and softmax cross-entropy (plus softmax and log-softmax)."""
from __future__ import annotations

import numpy as np

from ..tensor import Op, Tensor, apply, wrap
from .elementwise import _pair, as_tensor, exp, log, mul, neg, sub
from .reduce import mean
from .reduce import sum as tsum


class MSE(Op):
    @staticmethod
    def forward(ctx, pred, target):
        d = pred - target
        d *= d
        return np.asarray(d.sum() / max(1, d.size))

    @staticmethod
    def backward(ctx, g):
        pred, target = ctx.inputs
        d = apply(MSEGrad, pred, target, g)            # d/dpred mean((p - t)^2) = 2 (p - t) / n
        pn, tn = ctx.needs_input_grad
        return (d if pn else None, neg(d) if tn else None)


class MSEGrad(Op):
    """2 (p - t) g / n: the MSE backward as one op (it runs after every forward)."""

    @staticmethod
    def forward(ctx, p, t, g):
        out = p - t
        out *= g * (2.0 / max(1, p.size))
        return out

    @staticmethod
    def backward(ctx, gg):
        p, t, g = ctx.inputs
        n_p, n_t, n_g = ctx.needs_input_grad
        c = 2.0 / max(1, p.data.size)
        dp = mul(gg, mul(g, c)) if (n_p or n_t) else None          # d/dp = 2 g / n
        dg = tsum(mul(mul(gg, sub(p, t)), c)) if n_g else None     # g is a scalar
        return (dp if n_p else None, neg(dp) if n_t else None, dg)


def mse_loss(pred, target) -> Tensor:
    """mean((pred - target)^2) over all elements."""
    pred, target = _pair(pred, target, "mse_loss")
    if pred.shape != target.shape:
        raise ValueError(f"mse_loss: prediction has shape {pred.shape} but target has shape "
                         f"{target.shape}; they must match")
    return apply(MSE, pred, target)


def log_softmax(logits: Tensor, axis: int = -1) -> Tensor:
    """log softmax: z - log sum exp z, computed stably (the max is a constant shift)."""
    z = sub(logits, wrap(logits.data.max(axis=axis, keepdims=True)))
    return sub(z, log(tsum(exp(z), axis=axis, keepdims=True)))


def softmax(logits: Tensor, axis: int = -1) -> Tensor:
    """softmax(z)_i = exp(z_i) / sum_j exp(z_j)."""
    return exp(log_softmax(logits, axis=axis))


def softmax_cross_entropy(logits, labels) -> Tensor:
    """mean over the batch of -log softmax(logits)[label]; logits (N, K), labels (N,) ints."""
    logits = as_tensor(logits)
    labels = np.asarray(labels.data if isinstance(labels, Tensor) else labels)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy expects logits of shape (batch, classes), "
                         f"got {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match the logits, "
                         f"got {labels.shape}")
    if labels.dtype.kind not in "iu" or labels.min(initial=0) < 0 or \
            labels.max(initial=0) >= logits.shape[1]:
        raise ValueError(f"labels must be integers in [0, {logits.shape[1]}), got {labels}")
    onehot = np.zeros(logits.shape, dtype=logits.dtype)
    onehot[np.arange(len(labels)), labels] = 1
    return mul(mean(tsum(mul(log_softmax(logits), wrap(onehot)), axis=1)), -1.0)


__all__ = ["mse_loss", "softmax_cross_entropy", "softmax", "log_softmax"]
