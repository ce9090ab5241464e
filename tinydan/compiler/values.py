"""What a recording is made of: storages, vars, kernels, and the helpers they need.

Values live in **storages** (one block of memory: a call's input, a Tensor's array read at replay,
an optimizer's declared state, a constant, or an array a kernel made) and are seen through
**vars** (one array object: a storage's root or a view of it). Every var has a TracedArray that
stands for it while the call runs. A **kernel** is one NumPy call: which function, which vars and
constants it takes (a template with ``Ref``s), which vars it makes, which storages it writes.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor
from .traced import TracedArray

__all__ = ["Ref", "Storage", "Var", "Kernel", "OpKernel", "owner_of", "sig", "array_paths",
           "set_path"]


def owner_of(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory (``a`` itself when it owns it)."""
    b = a.base
    while isinstance(b, np.ndarray):
        a, b = b, b.base
    return a


def sig(a: np.ndarray) -> tuple:
    return (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype)


class Ref:
    """A var inside a kernel's argument template."""

    __slots__ = ("var",)

    def __init__(self, var):
        self.var = var


class Storage:
    """One block of memory. kind: "input", "tensor" (a Tensor's array, read at every replay),
    "state" (declared with ``declare_state``), "const" or "fresh" (made by a kernel)."""

    __slots__ = ("kind", "owner", "views", "producer", "written", "snapshot", "bounds", "escapes")

    def __init__(self, kind: str, owner: np.ndarray):
        self.kind, self.owner = kind, owner
        self.views: dict = {}
        self.producer = None
        self.written = False
        self.snapshot = None        # a const's value before its first in-place write
        self.bounds = None
        self.escapes = False


class Var:
    """One array object of the call: a storage's root or a view of it."""

    __slots__ = ("n", "storage", "plain", "traced", "producer", "scalar", "where", "snapshot",
                 "name", "shape", "dtype", "__weakref__")

    def __init__(self, n, storage, plain, producer, scalar=False):
        self.n, self.storage, self.plain, self.producer = n, storage, plain, producer
        self.scalar = scalar        # eagerly a NumPy scalar: replayed as a 0-d array
        self.where = None           # bound vars: how the replay reads it
        self.snapshot = None        # bound vars: the value the recorded call started from
        self.name = None
        self.shape, self.dtype = plain.shape, plain.dtype
        t = np.ndarray.view(plain, TracedArray)
        t._var = self
        self.traced = t


class Kernel:
    """One recorded NumPy call. kind: "call" fn(*args, **kwargs), "method" args[0].attr(...),
    "getitem", "setitem", "op" (a whole op's forward) or "callback" (Python run at every replay)."""

    __slots__ = ("n", "kind", "fn", "attr", "args", "kwargs", "outs", "multi", "writes", "reads",
                 "out_ok", "label", "dead", "needed", "record")

    def __init__(self, n, kind, fn, args, kwargs, reads, writes, label):
        self.n, self.kind, self.fn, self.args, self.kwargs = n, kind, fn, args, kwargs
        self.attr = None
        self.reads, self.writes, self.label = reads, writes, label
        self.outs: list = []
        self.multi = False
        self.out_ok = False
        self.dead = False
        self.needed = False
        self.record = None


class _Ctx:
    """The ctx an op's forward gets at replay (it may set ``saved``)."""

    __slots__ = ("saved",)

    def __init__(self):
        self.saved = None


class OpKernel:
    """A whole op as one kernel: op.forward on the arrays, then the arrays it saved on its ctx."""

    def __init__(self, op, paths):
        self.op, self.paths = op, paths
        self.__name__ = f"{op.__name__}.forward"

    def __call__(self, *arrays, **attrs):
        ctx = _Ctx()
        out = self.op.forward(ctx, *arrays, **attrs)
        return (out, *[_get_path(ctx.saved, p) for p in self.paths])


def _get_path(obj, path):
    for i in path:
        obj = obj[i]
    return obj


def set_path(obj, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        new = dict(obj)
        new[head] = set_path(obj[head], rest, value)
        return new
    items = list(obj)
    items[head] = set_path(items[head], rest, value)
    return type(obj)(items) if type(obj) in (tuple, list) else tuple(items)


def array_paths(obj, path=()):
    """(path, array) for every ndarray inside nested tuples, lists and dicts; Tensors raise."""
    if isinstance(obj, np.ndarray):
        yield path, obj
    elif type(obj) in (tuple, list):
        for i, x in enumerate(obj):
            yield from array_paths(x, path + (i,))
    elif type(obj) is dict:
        for k, x in obj.items():
            yield from array_paths(x, path + (k,))
    elif isinstance(obj, Tensor):
        raise TypeError("tensor")
