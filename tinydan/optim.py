"""Optimizers: SGD and Adam on Parameters, and a differentiable SGD step on a dict of Tensors.

``SGD`` and ``Adam`` update ``p.data`` in place from a list of gradients (or from ``p.grad``): the
update itself is not part of any graph. ``sgd_step`` returns NEW tensors
``theta - lr * grad``; when the gradients were computed with ``create_graph=True`` the result is
differentiable w.r.t. whatever shaped the gradients (the one-step meta-gradient).

Both updates can be recorded by ``tinydan.compile``: they declare the state that outlives a step
(Adam's moments; the numbers they use as constants) and compute Adam's step counter and bias
corrections in a callback, which a replay runs again.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import ops
from .compiler import callback, declare_state
from .tensor import Tensor

__all__ = ["SGD", "Adam", "sgd_step"]


class _Optimizer:
    def __init__(self, params: Sequence[Tensor], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.lr = float(lr)

    def _grads(self, grads):
        if grads is None:
            grads = [p.grad for p in self.params]
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        out = []
        for p, g in zip(self.params, grads):
            g = None if g is None else (g.data if isinstance(g, Tensor) else np.asarray(g))
            if g is not None and g.shape != p.shape:
                raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {p.shape}")
            out.append(g)
        return out

    def zero_grad(self) -> None:
        """Forget the parameters' accumulated gradients."""
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:  # pragma: no cover - overridden
        return {}

    def load_state_dict(self, state: dict) -> None:  # pragma: no cover - overridden
        pass


class SGD(_Optimizer):
    """p <- p - lr * g."""

    def step(self, grads=None) -> None:
        declare_state(self, fixed=("lr",), tensors=self.params)   # for tinydan.compile
        for p, g in zip(self.params, self._grads(grads)):
            if g is not None:
                p.data = p.data - self.lr * g


class Adam(_Optimizer):
    """Adam (Kingma & Ba): m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr * m_hat / (sqrt(v_hat) + eps), with bias-corrected m_hat, v_hat.

    When every parameter has the same dtype, the moments of all of them live in two flat vectors
    (``m_all``, ``v_all``; ``m[i]`` and ``v[i]`` are views of them), so each line of the update is
    one NumPy call for all parameters at once, as a fused optimizer does. Every element goes
    through the same operations as in a loop over the parameters, so the numbers are the same.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        self.b1, self.b2 = map(float, betas)
        self.eps = float(eps)
        self.t = 0
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) == 1:                     # one flat vector per moment, views per parameter
            sizes = [p.data.size for p in self.params]
            ends = np.cumsum(sizes)
            self._slices = [slice(e - n, e) for n, e in zip(sizes, ends)]
            self.m_all = np.zeros(int(ends[-1]), dtype=dtypes.pop())
            self.v_all = np.zeros_like(self.m_all)
            self.m = [self.m_all[s].reshape(p.shape) for s, p in zip(self._slices, self.params)]
            self.v = [self.v_all[s].reshape(p.shape) for s, p in zip(self._slices, self.params)]
        else:
            self._slices = None
            self.m = [np.zeros_like(p.data) for p in self.params]
            self.v = [np.zeros_like(p.data) for p in self.params]

    def step(self, grads=None) -> None:
        """One update of every parameter from ``grads`` (default: each parameter's ``.grad``); a
        parameter whose gradient is None is left alone, its moments too."""
        grads = self._grads(grads)
        if self._slices is not None and all(g is not None for g in grads):
            return self._step_flat(grads)
        declare_state(self, "m", "v", fixed=("b1", "b2"), tensors=self.params)  # tinydan.compile
        step, eps = callback(self._advance)
        b1, b2 = self.b1, self.b2
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if g is None:
                continue
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p.data = p.data - (step * m / (np.sqrt(v) + eps)).astype(p.dtype, copy=False)

    def _step_flat(self, grads) -> None:
        """The update above on all parameters at once: g, m, v are (total size,) vectors."""
        declare_state(self, "m_all", "v_all", fixed=("b1", "b2"), tensors=self.params)
        step, eps = callback(self._advance)
        b1, b2 = self.b1, self.b2
        g = np.concatenate([g.reshape(-1) for g in grads])
        m, v = self.m_all, self.v_all
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        update = step * m / (np.sqrt(v) + eps)
        for p, s in zip(self.params, self._slices):
            p.data = p.data - update[s].reshape(p.shape).astype(p.dtype, copy=False)

    def _advance(self):
        """t <- t + 1; returns the step lr sqrt(1 - b2^t) / (1 - b1^t) and eps sqrt(1 - b2^t)."""
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        return self.lr * np.sqrt(c2) / c1, self.eps * np.sqrt(c2)

    def state_dict(self) -> dict[str, np.ndarray]:
        """m, v and t as arrays (for checkpoints)."""
        state = {"t": np.array(self.t)}
        for i, (m, v) in enumerate(zip(self.m, self.v)):
            state[f"m.{i}"] = m.copy()
            state[f"v.{i}"] = v.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore m, v and t saved by ``state_dict``."""
        try:
            self.t = int(state["t"])
            for i in range(len(self.params)):
                for buf, key in ((self.m, f"m.{i}"), (self.v, f"v.{i}")):
                    arr = np.asarray(state[key])
                    if arr.shape != self.params[i].shape:
                        raise ValueError(f"optimizer state '{key}' has shape {arr.shape}, the "
                                         f"parameter has {self.params[i].shape}")
                    buf[i][...] = arr             # in place: m[i], v[i] may be views
        except KeyError as e:
            raise KeyError(f"optimizer state is missing {e}; was it saved from another model?") \
                from None


def sgd_step(params: dict, grads, lr: float) -> dict:
    """theta' = theta - lr * grad for every entry; differentiable when the grads carry a graph."""
    if not isinstance(grads, dict):
        grads = dict(zip(params, grads))
    return {k: ops.sub(p, ops.mul(grads[k], lr)) if grads.get(k) is not None else p
            for k, p in params.items()}
