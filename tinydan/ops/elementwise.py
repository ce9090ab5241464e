"""Elementwise ops with NumPy broadcasting.

A binary op's gradient has the shape of the broadcast result; ``sum_to`` folds it back to each
input's shape, so ``x.grad.shape == x.shape`` always. Masks (relu's ``x > 0``, which of two
arguments is the max) are constants in the backward: they are not differentiated.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Op, Tensor, apply, wrap
from .shape import sum_to


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor; numbers and arrays become constants in ``like``'s dtype."""
    if isinstance(x, Tensor):
        return x
    if like is not None:
        return wrap(np.asarray(x, dtype=like.data.dtype))
    return Tensor(x)


def _pair(a, b, name):
    if not isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            b = as_tensor(b)
        a = as_tensor(a, b)
    elif not isinstance(b, Tensor):
        b = as_tensor(b, a)
    elif a.data.dtype != b.data.dtype:
        raise TypeError(f"{name}: mismatched dtypes {a.dtype} and {b.dtype}; convert one with "
                        ".astype() (tinydan never casts silently)")
    return a, b


def _broadcast_check(a, b, name):
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{name}: shapes {a.shape} and {b.shape} do not broadcast") from None


def _forward_binary(fn, name, a, b):
    try:
        return fn(a, b)
    except ValueError:
        _broadcast_check(a, b, name)
        raise


class Add(Op):
    @staticmethod
    def forward(ctx, a, b):
        return _forward_binary(np.add, "add", a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        return (sum_to(g, a.data.shape) if na else None, sum_to(g, b.data.shape) if nb else None)


class Sub(Op):
    @staticmethod
    def forward(ctx, a, b):
        return _forward_binary(np.subtract, "sub", a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        return (sum_to(g, a.data.shape) if na else None,
                sum_to(apply(Neg, g), b.data.shape) if nb else None)


class Mul(Op):
    @staticmethod
    def forward(ctx, a, b):
        return _forward_binary(np.multiply, "mul", a, b)

    @staticmethod
    def backward(ctx, g):
        # BEGIN SOLUTION
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        return (sum_to(apply(Mul, g, b), a.data.shape) if na else None,
                sum_to(apply(Mul, g, a), b.data.shape) if nb else None)
        # END SOLUTION


class Div(Op):
    @staticmethod
    def forward(ctx, a, b):
        return _forward_binary(np.divide, "div", a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        ga = sum_to(div(g, b), a.shape) if na else None
        gb = sum_to(neg(mul(g, div(ctx, b))), b.shape) if nb else None   # d(a/b)/db = -(a/b)/b
        return ga, gb


class Neg(Op):
    @staticmethod
    def forward(ctx, a):
        return np.negative(a)

    @staticmethod
    def backward(ctx, g):
        return (neg(g),)


class PowScalar(Op):
    @staticmethod
    def forward(ctx, a, p):
        ctx.saved = p
        return np.power(a, p)

    @staticmethod
    def backward(ctx, g):
        p = ctx.saved
        (a,) = ctx.inputs
        if p == 2:
            return (mul(g, mul(a, 2.0)),)
        return (mul(g, mul(pow(a, p - 1), float(p))),)


class Exp(Op):
    @staticmethod
    def forward(ctx, a):
        return np.exp(a)

    @staticmethod
    def backward(ctx, g):
        return (mul(g, ctx),)                     # d exp(a) = exp(a)


class Log(Op):
    @staticmethod
    def forward(ctx, a):
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        return (div(g, ctx.inputs[0]),)


class Sqrt(Op):
    @staticmethod
    def forward(ctx, a):
        return np.sqrt(a)

    @staticmethod
    def backward(ctx, g):
        return (div(mul(g, 0.5), ctx),)           # d sqrt(a) = 1 / (2 sqrt(a))


class Tanh(Op):
    @staticmethod
    def forward(ctx, a):
        return np.tanh(a)

    @staticmethod
    def backward(ctx, g):
        # BEGIN SOLUTION
        return (apply(TanhGrad, g, ctx),)             # d tanh = 1 - tanh^2
        # END SOLUTION


class TanhGrad(Op):
    """g * (1 - y^2) for y = tanh(a): tanh's backward as one op (it is on every DAN's path)."""

    @staticmethod
    def forward(ctx, g, y):
        # BEGIN SOLUTION
        if y.ndim == 0 or y.shape != g.shape:
            return g * (1 - y * y)
        out = y * y                                  # in place: one temporary instead of three
        np.subtract(1, out, out=out)
        out *= g
        return out
        # END SOLUTION

    @staticmethod
    def backward(ctx, gg):
        # BEGIN SOLUTION
        g, y = ctx.inputs
        ng, ny = ctx.needs_input_grad
        dg = apply(TanhGrad, gg, y) if ng else None                     # d/dg = 1 - y^2
        dy = mul(apply(Mul, gg, apply(Mul, g, y)), -2.0) if ny else None  # d/dy = -2 g y
        return dg, dy
        # END SOLUTION


class Sigmoid(Op):
    @staticmethod
    def forward(ctx, a):
        # 0.5 * (1 + tanh(a / 2)) is the overflow-free form of 1 / (1 + exp(-a))
        return 0.5 * (1.0 + np.tanh(0.5 * a))

    @staticmethod
    def backward(ctx, g):
        return (mul(g, mul(ctx, rsub(ctx, 1.0))),)   # d sigma = sigma (1 - sigma)


class MaskMul(Op):
    """g * mask for a constant mask (relu, leaky_relu, abs, max): the mask is not differentiated."""

    @staticmethod
    def forward(ctx, a, mask):
        ctx.saved = mask
        return a * mask

    @staticmethod
    def backward(ctx, g):
        return (mask_mul(g, ctx.saved),)


class Relu(Op):
    @staticmethod
    def forward(ctx, a):
        return np.maximum(a, 0)

    @staticmethod
    def backward(ctx, g):
        return (mask_mul(g, (ctx.inputs[0].data > 0).astype(g.dtype)),)


def leaky_mask(a: np.ndarray, slope: float) -> np.ndarray:
    """d leaky_relu(a) / da: 1 where a > 0, slope elsewhere. For slope >= 0 the output has the
    input's sign, so the output works as ``a`` too. Arithmetic on the boolean mask, because
    np.where on a random mask is several times slower."""
    mask = (a > 0).astype(a.dtype)
    mask *= 1 - slope
    mask += slope
    return mask


class LeakyRelu(Op):
    @staticmethod
    def forward(ctx, a, slope):
        ctx.saved = slope
        if 0.0 <= slope <= 1.0:                      # max(a, slope a): one pass, no mask
            return np.maximum(a, a * np.asarray(slope, a.dtype))
        return np.where(a > 0, a, a * slope)

    @staticmethod
    def backward(ctx, g):
        return (mask_mul(g, leaky_mask(ctx.inputs[0].data, ctx.saved)),)


class Abs(Op):
    @staticmethod
    def forward(ctx, a):
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        return (mask_mul(g, np.sign(ctx.inputs[0].data)),)


class Where(Op):
    @staticmethod
    def forward(ctx, a, b, cond):
        ctx.saved = cond
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        m = np.broadcast_to(ctx.saved, g.shape).astype(g.dtype)
        return (sum_to(mask_mul(g, m), a.shape) if na else None,
                sum_to(mask_mul(g, 1 - m), b.shape) if nb else None)


# ---------------------------------------------------------------------------- functions
def add(a, b) -> Tensor:
    """a + b (broadcasting)."""
    a, b = _pair(a, b, "add")
    return apply(Add, a, b)


def sub(a, b) -> Tensor:
    """a - b (broadcasting)."""
    a, b = _pair(a, b, "sub")
    return apply(Sub, a, b)


def rsub(a, b) -> Tensor:
    """b - a (for ``number - tensor``)."""
    return sub(b, a)


def mul(a, b) -> Tensor:
    """a * b elementwise (broadcasting)."""
    a, b = _pair(a, b, "mul")
    return apply(Mul, a, b)


def div(a, b) -> Tensor:
    """a / b elementwise (broadcasting)."""
    a, b = _pair(a, b, "div")
    return apply(Div, a, b)


def neg(a: Tensor) -> Tensor:
    """-a."""
    return apply(Neg, a)


def pow(a, p) -> Tensor:  # noqa: A001 - the paper's and NumPy's name
    """a ** p; a constant exponent, or a tensor one via exp(p log a) (then a must be > 0)."""
    if isinstance(p, Tensor):
        return exp(mul(p, log(as_tensor(a, p))))
    if not np.isscalar(p):
        raise TypeError(f"pow exponent must be a number or a Tensor, got {type(p).__name__}")
    a = as_tensor(a)
    if p == 1:
        return a
    return apply(PowScalar, a, p=float(p) if not float(p).is_integer() else int(p))


def exp(a: Tensor) -> Tensor:
    """e ** a."""
    return apply(Exp, as_tensor(a))


def log(a: Tensor) -> Tensor:
    """Natural logarithm."""
    return apply(Log, as_tensor(a))


def sqrt(a: Tensor) -> Tensor:
    """Square root."""
    return apply(Sqrt, as_tensor(a))


def tanh(a: Tensor) -> Tensor:
    """tanh(a); derivative 1 - tanh(a)^2."""
    return apply(Tanh, as_tensor(a))


def sigmoid(a: Tensor) -> Tensor:
    """1 / (1 + e^-a); derivative s (1 - s)."""
    return apply(Sigmoid, as_tensor(a))


def relu(a: Tensor) -> Tensor:
    """max(a, 0)."""
    return apply(Relu, as_tensor(a))


def leaky_relu(a: Tensor, slope: float = 0.01) -> Tensor:
    """a if a > 0 else slope * a."""
    return apply(LeakyRelu, as_tensor(a), slope=float(slope))


def abs(a: Tensor) -> Tensor:  # noqa: A001
    """|a|; derivative sign(a) (0 at 0)."""
    return apply(Abs, as_tensor(a))


def mask_mul(a: Tensor, mask: np.ndarray) -> Tensor:
    """a * mask where ``mask`` is a constant array (no gradient flows into it)."""
    return apply(MaskMul, a, mask=mask)


def where(cond, a, b) -> Tensor:
    """a where cond else b; ``cond`` is a boolean array (or a comparison such as ``x > 0``)."""
    a, b = _pair(a, b, "where")
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: shapes {cond.shape}, {a.shape} and {b.shape} do not broadcast") \
            from None
    return apply(Where, a, b, cond=cond)


def maximum(a, b) -> Tensor:
    """Elementwise max; on ties the gradient goes to ``a``."""
    a, b = _pair(a, b, "maximum")
    return where(a.data >= b.data, a, b)


def minimum(a, b) -> Tensor:
    """Elementwise min; on ties the gradient goes to ``a``."""
    a, b = _pair(a, b, "minimum")
    return where(a.data <= b.data, a, b)
