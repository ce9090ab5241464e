"""tinydan: Deep Artificial Neurons from scratch, on NumPy.

The engine (``Tensor``, ``grad``, ``no_grad``, the ops, ``testing``) is at the bottom; the library
above it: ``tinydan.nn`` (Modules, VECs and DANs), ``tinydan.optim``, ``tinydan.meta`` (Algorithm 1
of the paper), tasks, datasets and the continual-learning metrics; on top, the paper's two
experiments in ``tinydan.experiments`` (``python -m tinydan.regression``, ``python -m tinydan.ucil``).
"""
from __future__ import annotations

from . import nn, ops, optim, testing, viz
from .compiler import compile
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
    "is_grad_enabled", "set_grad_enabled", "ops", "nn", "optim", "testing", "viz", "compile",
    "abs", "add", "broadcast_to", "col2im", "concatenate", "conv2d", "div", "exp", "getitem",
    "im2col", "leaky_relu", "linear", "log", "log_softmax", "matmul", "max", "max_pool2d", "maximum", "mean",
    "min", "minimum", "mse_loss", "mul", "neg", "pad", "permute", "pow", "relu", "reshape",
    "sigmoid", "softmax", "softmax_cross_entropy", "sqrt", "stack", "sub", "sum", "sum_to", "tanh",
    "transpose", "where", "__version__",
]
