"""tinydan: Deep Artificial Neurons from scratch, on NumPy.

The engine (``Tensor``, ``grad``, ``no_grad`` and the ops) is at the bottom; ``tinydan.nn`` builds
VECs and DANs on it; ``tinydan.meta`` is Algorithm 1; ``tinydan.regression`` and ``tinydan.ucil``
are the paper's two experiments.
"""
from __future__ import annotations

from . import ops
from .autograd import backward, enable_grad, grad, is_grad_enabled, no_grad, set_grad_enabled
from .ops import (abs, add, broadcast_to, concatenate, conv2d, div, exp, getitem, im2col,
                  leaky_relu, linear, log, log_softmax, matmul, max, max_pool2d, maximum, mean, min,
                  minimum, mse_loss, mul, neg, pad, permute, pow, relu, reshape, sigmoid,
                  softmax, softmax_cross_entropy, sqrt, stack, sub, sum, sum_to, tanh,
                  transpose, where, col2im)
from .tensor import Op, Tensor, apply, tensor

__version__ = "0.2.0"

__all__ = [
    "Tensor", "tensor", "Op", "apply", "grad", "backward", "no_grad", "enable_grad",
    "is_grad_enabled", "set_grad_enabled", "ops",
    "abs", "add", "broadcast_to", "col2im", "concatenate", "conv2d", "div", "exp", "getitem",
    "im2col", "leaky_relu", "linear", "log", "log_softmax", "matmul", "max", "max_pool2d", "maximum", "mean",
    "min", "minimum", "mse_loss", "mul", "neg", "pad", "permute", "pow", "relu", "reshape",
    "sigmoid", "softmax", "softmax_cross_entropy", "sqrt", "stack", "sub", "sum", "sum_to", "tanh",
    "transpose", "where", "__version__",
]
