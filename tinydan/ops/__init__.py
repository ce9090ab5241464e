"""All ops, and the one place where Tensor gets its operators and methods."""
from __future__ import annotations

from ..tensor import Tensor
from .conv import col2im, conv2d, im2col, max_pool2d, put_rows, take_rows
from .elementwise import (abs, add, as_tensor, div, exp, leaky_relu, log, mask_mul, maximum,
                          minimum, mul, neg, pow, relu, rsub, sigmoid, sqrt, sub, tanh, where)
from .linalg import linear, matmul
from .loss import log_softmax, mse_loss, softmax, softmax_cross_entropy
from .reduce import max, mean, min, sum
from .shape import (broadcast_to, concatenate, getitem, pad, permute, reshape, scatter_add, stack,
                    sum_to, swapaxes, transpose)

__all__ = [
    "abs", "add", "as_tensor", "broadcast_to", "col2im", "concatenate", "conv2d", "div", "exp",
    "getitem", "im2col", "leaky_relu", "linear", "log", "log_softmax", "mask_mul", "matmul", "max",
    "max_pool2d", "maximum", "mean", "min", "minimum", "mse_loss", "mul", "neg", "pad", "permute",
    "pow", "put_rows", "relu", "reshape", "rsub", "scatter_add", "sigmoid", "softmax",
    "softmax_cross_entropy", "sqrt", "stack", "sub", "sum", "sum_to", "swapaxes", "take_rows",
    "tanh", "transpose", "where",
]


def _register() -> None:
    T = Tensor
    T.__add__ = add
    T.__radd__ = lambda self, other: add(other, self)
    T.__sub__ = sub
    T.__rsub__ = lambda self, other: sub(other, self)
    T.__mul__ = mul
    T.__rmul__ = lambda self, other: mul(other, self)
    T.__truediv__ = div
    T.__rtruediv__ = lambda self, other: div(other, self)
    T.__neg__ = neg
    T.__pow__ = pow
    T.__rpow__ = lambda self, other: pow(other, self)
    T.__matmul__ = matmul
    T.__rmatmul__ = lambda self, other: matmul(other, self)
    T.__getitem__ = getitem
    T.sum = sum
    T.mean = mean
    T.max = max
    T.min = min
    T.reshape = reshape
    T.transpose = transpose
    T.permute = permute
    T.swapaxes = swapaxes
    T.broadcast_to = broadcast_to
    T.matmul = matmul
    T.exp = exp
    T.log = log
    T.sqrt = sqrt
    T.tanh = tanh
    T.sigmoid = sigmoid
    T.relu = relu
    T.abs = abs
    T.T = property(lambda self: transpose(self))


_register()
