"""Plain layers: Linear, Tanh, ReLU, Sequential, and the plain MLP of the baselines.

``Linear`` and ``Sequential`` are what a student coming from PyTorch looks for first: a layer that
owns its weights as Parameters, and a chain of layers. ``PlainMLP`` is the network of the paper's
baselines (section 6.1): an MLP whose weights are all *synapses*, one set per population member,
so it is called functionally, ``mlp(x, synapses)``, exactly like a ``DANNetwork``.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..tensor import Tensor
from .init import fan_in_uniform, glorot_uniform
from .module import Module, Parameter

__all__ = ["Linear", "Tanh", "ReLU", "Sequential", "PlainMLP"]


class Linear(Module):
    """y = x W + b with W (in_features, out_features) and b (out_features,), PyTorch's init."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(fan_in_uniform(rng, (self.in_features, self.out_features),
                                               self.in_features, dtype))
        self.bias = (Parameter(fan_in_uniform(rng, (self.out_features,), self.in_features, dtype))
                     if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> (..., out_features)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) expects inputs of "
                             f"shape (..., {self.in_features}), got {tuple(x.shape)}")
        if self.bias is None:
            return ops.matmul(x, self.weight)
        return ops.linear(x, self.weight, self.bias)


class Tanh(Module):
    """tanh, elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        """tanh(x)."""
        return ops.tanh(x)


class ReLU(Module):
    """max(x, 0), elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        """relu(x)."""
        return ops.relu(x)


class Sequential(Module):
    """Modules applied one after the other: Sequential(a, b)(x) = b(a(x)); named 0, 1, ..."""

    def __init__(self, *modules: Module):
        super().__init__()
        self._list = []
        for m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__}")
            setattr(self, str(len(self._list)), m)
            self._list.append(m)

    def forward(self, x: Tensor) -> Tensor:
        """The modules in order."""
        for m in self._list:
            x = m(x)
        return x

    def __getitem__(self, i):
        return self._list[i]

    def __len__(self):
        return len(self._list)


class PlainMLP(Module):
    """A plain MLP (no DANs) with the population interface of a DANNetwork: every weight is a
    per-member synapse, so ``mlp(x, synapses)`` maps x (P, B, n_in) -> (P, B, n_out).

    Hidden layers use tanh; the output is linear. It owns no Parameters (no phenotype: nothing is
    meta-learned). Used for the naive sequential baseline, the joint upper bound, EWC, replay and
    the plain autoencoders of the UCIL experiment.
    """

    def __init__(self, sizes=(1, 40, 40, 1)):
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)

    def synapse_shapes(self) -> dict[str, tuple]:
        """W_l (n_l, n_{l+1}) and b_l (1, n_{l+1}) for each layer."""
        shapes = {}
        for l, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            shapes[f"w{l}"] = (a, b)
            shapes[f"b{l}"] = (1, b)
        return shapes

    def init_synapses(self, population: int, rng: np.random.Generator, dtype=np.float32,
                      same: bool = True) -> dict[str, np.ndarray]:
        """Glorot-uniform weights, zero biases; the same draw for every member when same=True."""
        n = 1 if same else population
        theta = {}
        for name, shape in self.synapse_shapes().items():
            if name.startswith("b"):
                w = np.zeros((n,) + shape, dtype=dtype)
            else:
                w = glorot_uniform(rng, (n,) + shape, shape[0], shape[1], dtype)
            theta[name] = np.repeat(w, population, axis=0) if same else w
        return theta

    def num_synapses(self) -> int:
        """Number of synapses (weights and biases) of one member."""
        return sum(int(np.prod(s)) for s in self.synapse_shapes().values())

    def forward(self, x, synapses: dict) -> Tensor:
        """x (P, B, n_in) -> (P, B, n_out): h_{l+1} = tanh(h_l W_l + b_l), the last layer linear;
        a NumPy x is taken in the synapses' dtype."""
        h = x if isinstance(x, Tensor) else Tensor(x, dtype=synapses["w0"].dtype)
        L = len(self.sizes) - 1
        for l in range(L):
            h = ops.linear(h, synapses[f"w{l}"], synapses[f"b{l}"])
            if l < L - 1:
                h = self.after_hidden(l, ops.tanh(h))
        return h

    def after_hidden(self, l: int, h: Tensor) -> Tensor:
        """What follows hidden layer l + 1's tanh (nothing here; a subclass's warp layer)."""
        return h
