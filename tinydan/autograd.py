"""Reverse-mode differentiation over the Tensor graph.

``backward`` and ``grad`` share one engine, ``_backprop``:

1. ``_walk_order`` sorts the graph topologically with an explicit stack (no recursion: a
   10,000-op chain is fine) and keeps only the nodes that lead to something we want a gradient for;
2. ``_accumulate`` walks them from the outputs back to the inputs, calling each op's ``backward``
   and adding up the gradients that reach the same Tensor from several uses.

``Tensor.backward`` is attached to Tensor here (``import tinydan`` imports this module), so that
tensor.py does not import autograd.

The backward rules are written in tinydan ops. With ``create_graph=False`` recording is switched off
while they run, so they cost little more than plain NumPy. With ``create_graph=True`` the same ops
record, and the gradients are Tensors with a graph of their own: differentiate them again for
Hessian-vector products or for the one-step meta-gradient of Algorithm 1.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Sequence

import numpy as np

from .tensor import Tensor, is_grad_enabled, set_grad_enabled, wrap

__all__ = ["no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled", "backward", "grad",
           "toposort"]


@contextmanager
def no_grad():
    """Inside this block ops record nothing: results have requires_grad=False."""
    prev = set_grad_enabled(False)
    try:
        yield
    finally:
        set_grad_enabled(prev)


@contextmanager
def enable_grad():
    """Inside this block ops record the graph, even within ``no_grad``."""
    prev = set_grad_enabled(True)
    try:
        yield
    finally:
        set_grad_enabled(prev)


def toposort(roots: Iterable[Tensor]) -> list[Tensor]:
    """Tensors that require grad and lead to ``roots``, inputs before the ops that use them.

    Depth-first with an explicit stack (no recursion): a Tensor is appended once all of its inputs
    are, the second time it is seen on top of the stack.
    """
    # BEGIN SOLUTION
    order: list[Tensor] = []
    seen: set[int] = set()        # pushed its inputs
    done: set[int] = set()        # appended to order
    stack = [r for r in roots if r.requires_grad]
    while stack:
        t = stack[-1]
        key = id(t)
        if key in seen:
            stack.pop()
            if key not in done:
                done.add(key)
                order.append(t)
            continue
        seen.add(key)
        for x in t._inputs:
            if x.requires_grad and id(x) not in seen:
                stack.append(x)
    return order
    # END SOLUTION


def _as_grad(g, like: Tensor, what: str) -> Tensor:
    if not isinstance(g, Tensor):
        g = wrap(np.asarray(g, dtype=like.dtype))
    if g.shape != like.shape:
        raise ValueError(f"{what} has shape {g.shape} but the output has shape {like.shape}; "
                         "they must be the same")
    if g.dtype != like.dtype:
        raise TypeError(f"{what} has dtype {g.dtype} but the output has dtype {like.dtype}")
    return g


def _backprop(roots: Sequence[Tensor], root_grads: Sequence[Tensor], wanted: set | None,
              create_graph: bool) -> dict:
    """Gradients of sum_i <root_grads[i], roots[i]> w.r.t. every Tensor in ``wanted`` (or every leaf).

    Returns a dict keyed by the Tensors themselves (hashed by identity).
    """
    order = _walk_order(roots, wanted)
    return _accumulate(order, roots, root_grads, () if wanted is None else wanted, create_graph)


def _walk_order(roots: Sequence[Tensor], wanted: set | None) -> list:
    """The op nodes that lead from ``wanted`` (or any leaf) to ``roots``, inputs before users.

    One depth-first pass with an explicit stack (no recursion: a 10,000-op chain is fine). A Tensor
    is finished the second time it is on top of the stack, after all of its inputs: it is
    "relevant" when it is wanted or one of its inputs is relevant, and a relevant op node is
    appended as (node, needs), needs[i] saying whether input i is relevant. Irrelevant nodes and
    leaves are left out of the walk.
    """
    # BEGIN SOLUTION
    order: list = []                     # (op node, needs) pairs
    seen: set = set()
    relevant: set = set()
    stack = [r for r in roots if r.requires_grad]
    while stack:
        t = stack[-1]
        if t in seen:
            stack.pop()
            if t in relevant:
                continue
            inputs = t._inputs
            n = len(inputs)
            if n == 0:                                       # a root that is a leaf
                if wanted is None or t in wanted:
                    relevant.add(t)
                continue                                  # unrolled: this runs once per op
            if n == 1:
                needs = (inputs[0] in relevant,)
            elif n == 2:
                needs = (inputs[0] in relevant, inputs[1] in relevant)
            else:
                needs = tuple([x in relevant for x in inputs])
            if wanted is not None and t in wanted:
                relevant.add(t)
            if True in needs:
                relevant.add(t)
                order.append((t, needs))
            continue
        seen.add(t)
        for x in t._inputs:
            if x.requires_grad and x not in seen:
                if x._inputs:
                    stack.append(x)
                else:                                        # a leaf: settled here, not pushed
                    seen.add(x)
                    if wanted is None or x in wanted:
                        relevant.add(x)
    return order
    # END SOLUTION


def _accumulate(order: list, roots: Sequence[Tensor], root_grads: Sequence[Tensor], keep,
                create_graph: bool) -> dict:
    """Walk ``order`` from the outputs back: dL/dx = sum over the ops u that use x of op_u.backward.

    Starts from {root: root_grad} (summed when a root repeats); each node's gradient is complete
    when it is reached, because every user of it comes later in ``order``. Gradients of Tensors not
    in ``keep`` are dropped once used. Records the backward ops only when ``create_graph``.
    """
    # BEGIN SOLUTION
    grads: dict = {}
    for r, g in zip(roots, root_grads):
        if r.requires_grad:
            old = grads.get(r)
            grads[r] = g if old is None else old + g
    prev = set_grad_enabled(create_graph)
    try:
        for t, needs in reversed(order):
            g = grads.get(t) if t in keep else grads.pop(t, None)   # free intermediates as we go
            if g is None:
                continue
            t.needs_input_grad = needs
            in_grads = t._op.backward(t, g)
            t.needs_input_grad = None
            for x, need, gx in zip(t._inputs, needs, in_grads):
                if need and gx is not None:
                    old = grads.get(x)
                    grads[x] = gx if old is None else old + gx
    finally:
        set_grad_enabled(prev)
    return grads
    # END SOLUTION


def backward(output: Tensor, gradient=None, create_graph: bool = False) -> None:
    """Accumulate d(output)/d(leaf) into ``leaf.grad`` for every leaf with requires_grad=True.

    ``gradient`` is the vector v in the vector-Jacobian product v^T J; it may be omitted only for a
    scalar (one-element) output.
    """
    if not isinstance(output, Tensor):
        raise TypeError(f"backward() needs a Tensor, got {type(output).__name__}")
    if not output.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad: no input it was "
                           "computed from has requires_grad=True (or it was computed under no_grad)")
    if gradient is None:
        if output.size != 1:
            raise RuntimeError(f"backward() on a tensor of shape {output.shape} needs a gradient of "
                               "that shape; reduce it first (e.g. loss.sum().backward()) or pass "
                               "gradient=")
        gradient = wrap(np.ones(output.shape, dtype=output.dtype))
    g = _as_grad(gradient, output, "gradient")
    grads = _backprop([output], [g], None, create_graph)
    for t, gt in grads.items():
        if t._op is None:
            if not create_graph and gt.requires_grad:
                gt = wrap(gt.data)
            t.grad = gt if t.grad is None else t.grad + gt


def _tensor_backward(self, gradient=None, create_graph: bool = False) -> None:
    """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad."""
    backward(self, gradient, create_graph=create_graph)


_tensor_backward.__name__ = "backward"
_tensor_backward.__qualname__ = "Tensor.backward"
Tensor.backward = _tensor_backward      # attached here so that tensor.py never imports autograd


def grad(outputs, inputs, grad_outputs=None, create_graph: bool = False,
         allow_unused: bool = False):
    """Vector-Jacobian products sum_i <grad_outputs[i], d outputs[i] / d inputs>.

    ``outputs`` and ``inputs`` are Tensors or sequences of Tensors. Returns a tuple with one
    gradient per input (a single Tensor when ``inputs`` is a single Tensor). Nothing is accumulated
    into ``.grad``. With ``create_graph=True`` the gradients are themselves differentiable.
    """
    single = isinstance(inputs, Tensor)
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins = [inputs] if single else list(inputs)
    for i, x in enumerate(ins):
        if not isinstance(x, Tensor):
            raise TypeError(f"inputs[{i}] is a {type(x).__name__}, not a Tensor")
        if not x.requires_grad:
            raise RuntimeError(f"inputs[{i}] (shape {x.shape}) does not require grad; create it "
                               "with requires_grad=True")
    if grad_outputs is None:
        gos = [None] * len(outs)
    elif isinstance(grad_outputs, (Tensor, np.ndarray)) or np.isscalar(grad_outputs):
        gos = [grad_outputs]
    else:
        gos = list(grad_outputs)
    if len(gos) != len(outs):
        raise ValueError(f"got {len(gos)} grad_outputs for {len(outs)} outputs")
    root_grads = []
    for i, (o, go) in enumerate(zip(outs, gos)):
        if not isinstance(o, Tensor):
            raise TypeError(f"outputs[{i}] is a {type(o).__name__}, not a Tensor")
        if go is None:
            if o.size != 1:
                raise RuntimeError(f"grad() of a non-scalar output (shape {o.shape}) needs "
                                   "grad_outputs of that shape")
            go = wrap(np.ones(o.shape, dtype=o.dtype))
        root_grads.append(_as_grad(go, o, f"grad_outputs[{i}]"))
    grads = _backprop(outs, root_grads, set(ins), create_graph)
    result = []
    for i, x in enumerate(ins):
        gx = grads.get(x)
        if gx is None and not allow_unused:
            bare = [j for j, o in enumerate(outs) if not o.requires_grad]
            if len(bare) == len(outs):      # no output has a graph to walk back
                raise RuntimeError(
                    f"outputs[{bare[0]}] (shape {outs[bare[0]].shape}) has no graph: it was computed "
                    "with gradient recording off (under no_grad()), or from no Tensor with "
                    "requires_grad=True; compute it outside no_grad() to differentiate it")
            raise RuntimeError(f"inputs[{i}] (shape {x.shape}) was not used to compute the outputs; "
                               "pass allow_unused=True to get None for it")
        if gx is not None and not create_graph and gx.requires_grad:
            gx = wrap(gx.data)
        result.append(gx)
    return result[0] if single else tuple(result)
