"""Module and Parameter: named, nested collections of Tensors to learn.

A ``Module`` registers every ``Parameter`` and sub-``Module`` assigned to it as an attribute, so
``named_parameters()`` can list them with dotted names (``dan.layers.0.weight``). ``state_dict`` and
``load_state_dict`` move their values in and out as NumPy arrays (for checkpoints), and
``functional_call(module, params, *args)`` runs the module with other Tensors in place of its
parameters: that is how a differentiable inner step evaluates the model at theta_{t+1}.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

from ..tensor import Tensor

__all__ = ["Module", "Parameter", "ModuleList", "functional_call"]


class Parameter(Tensor):
    """A leaf Tensor that a Module learns (requires_grad=True)."""

    __slots__ = ()

    def __init__(self, data, dtype=None, name: str | None = None):
        super().__init__(data, requires_grad=True, dtype=dtype, name=name)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class: assign Parameters and Modules as attributes, define ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               "before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) for this module and every sub-module, in definition order."""
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        """Every Parameter, in the order of ``named_parameters``."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        """Forget accumulated gradients of every parameter."""
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter's values, keyed by dotted name."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values into the parameters; shapes must match, and with strict=True the names too."""
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, p in own.items():
            if k not in state:
                continue
            v = np.asarray(state[k].data if isinstance(state[k], Tensor) else state[k])
            if v.shape != p.shape:
                raise ValueError(f"load_state_dict: '{k}' has shape {v.shape} in the state but "
                                 f"{p.shape} in the module")
            p.data = v.astype(p.dtype, copy=True)

    def _set_tensor(self, dotted: str, value) -> None:
        *path, leaf = dotted.split(".")
        m = self
        for part in path:
            m = m._modules[part]
        object.__setattr__(m, leaf, value)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, p in self._parameters.items():
            lines.append(f"  {name}: {p.shape}")
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  {name}: {sub}")
        return "\n".join(lines) + ")"


class ModuleList(Module):
    """A list of Modules, named 0, 1, 2, ..."""

    def __init__(self, modules=()):
        super().__init__()
        self._list = []
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._list)), module)
        self._list.append(module)

    def __getitem__(self, i):
        return self._list[i]

    def __len__(self):
        return len(self._list)

    def __iter__(self):
        return iter(self._list)


@contextmanager
def _swapped(module: Module, params: dict):
    own = dict(module.named_parameters())
    unknown = [k for k in params if k not in own]
    if unknown:
        raise KeyError(f"functional_call: {unknown} are not parameters of {type(module).__name__}; "
                       f"its parameters are {list(own)}")
    for k, v in params.items():
        if tuple(v.shape) != own[k].shape:
            raise ValueError(f"functional_call: '{k}' has shape {tuple(v.shape)}, the module's "
                             f"parameter has {own[k].shape}")
    try:
        for k, v in params.items():
            module._set_tensor(k, v)
        yield
    finally:
        for k in params:
            module._set_tensor(k, own[k])


def functional_call(module: Module, params: dict, *args, **kwargs):
    """module(*args) with the Tensors in ``params`` (dotted names) standing in for its parameters."""
    with _swapped(module, params):
        return module(*args, **kwargs)
