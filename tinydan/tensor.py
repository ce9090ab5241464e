"""The Tensor: a NumPy array that remembers how it was made.

A Tensor holds ``data`` (a float32 or float64 ``numpy.ndarray``), a ``grad`` (a Tensor or None) and,
when it was computed by an op while gradients were being recorded, the op and its input Tensors.
That is the whole graph: every Tensor points back at the Tensors it came from, and
``tinydan.autograd`` walks those pointers backwards.

The output Tensor of an op is also that op's ``ctx``: ``forward(ctx, *arrays)`` may save what the
backward needs in ``ctx.saved``, and ``backward(ctx, g)`` finds the inputs in ``ctx.inputs`` and the
output itself in ``ctx`` (useful for ``exp`` and ``tanh``, whose derivatives are made of their output).
One object per op keeps the dispatch lean.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_DTYPE = np.dtype(np.float32)

# The recording switch. ``tinydan.autograd.no_grad`` flips it; ``apply`` reads it on every op.
_grad_enabled = True

# While ``tinydan.compile`` records a call, its recorder (tinydan/compiler/recorder.py): ``apply``
# lets it see every op's arrays before and after the forward. None otherwise.
_recorder = None


def is_grad_enabled() -> bool:
    """True when ops record the graph (the default); False inside ``tinydan.no_grad()``."""
    return _grad_enabled


def set_grad_enabled(mode: bool) -> bool:
    """Switch graph recording on or off; returns the previous mode."""
    global _grad_enabled
    prev = _grad_enabled
    _grad_enabled = bool(mode)
    return prev


def _as_float_array(data, dtype=None) -> np.ndarray:
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"tinydan tensors are float32 or float64, got dtype {dtype}")
        return np.asarray(data, dtype=dtype)
    if isinstance(data, np.ndarray) and data.dtype in FLOAT_DTYPES:
        return data
    arr = np.asarray(data)
    if arr.dtype in FLOAT_DTYPES and isinstance(data, (np.ndarray, np.generic)):
        return arr
    if arr.dtype.kind in "fiub":          # Python numbers, lists, ints, bools, float16: float32 by default
        return arr.astype(DEFAULT_DTYPE)
    raise TypeError(f"cannot make a tensor from {type(data).__name__} with dtype {arr.dtype}; "
                    "pass numbers or a float32/float64 array")


def _rebuild(cls, data, grad, requires_grad, name):
    """A leaf of type ``cls`` (Tensor or a subclass such as Parameter) from pickled values."""
    t = cls.__new__(cls)
    Tensor.__init__(t, data, requires_grad=requires_grad, name=name)
    t.grad = grad
    return t


class Tensor:
    """An n-dimensional float array with an optional gradient and a link to the op that made it."""

    __slots__ = ("data", "grad", "requires_grad", "_op", "_inputs", "saved", "needs_input_grad",
                 "name", "__weakref__")
    __array_priority__ = 1000.0   # ndarray (op) Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, dtype=None, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_float_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._op = None
        self._inputs = ()
        self.saved = None
        self.needs_input_grad = None
        self.name = name

    def __reduce__(self):
        """Pickle and deepcopy the values, not the graph: a Tensor comes back as a leaf with its
        data, gradient, requires_grad and name (so a graph of any depth pickles, no recursion)."""
        return (_rebuild, (type(self), self.data, self.grad, self.requires_grad, self.name))

    # ------------------------------------------------------------------ basic facts
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def inputs(self) -> tuple:
        """The Tensors this one was computed from (empty for a leaf)."""
        return self._inputs

    @property
    def is_leaf(self) -> bool:
        """A leaf was made by the user, not by an op that recorded it."""
        return self._op is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, separator=", ", threshold=20)
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self._op is not None:
            extra += f", op={self._op.__name__}"
        dt = "" if self.data.dtype == DEFAULT_DTYPE else f", dtype={self.data.dtype}"
        return f"Tensor({body}{dt}{extra})"

    __hash__ = object.__hash__

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(self.data.reshape(-1)[0])

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied)."""
        return self.data

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (requires_grad=False)."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Mark a leaf as a parameter to differentiate (in place); returns self."""
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be set on a leaf; use .detach() first")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self) -> None:
        """Forget the accumulated gradient (gradients accumulate until you call this)."""
        self.grad = None

    def astype(self, dtype) -> "Tensor":
        """A copy in another float dtype (a constant: no gradient flows through a cast)."""
        return Tensor(self.data.astype(dtype), requires_grad=False)

    # ``Tensor.backward`` is attached by tinydan/autograd.py (imported by ``import tinydan``), so
    # that this file does not import autograd and autograd can import Tensor.

    # Operators, methods such as .sum() and .reshape(), are attached by tinydan/ops/__init__.py,
    # in one place, so that this file does not import the ops and the ops can import Tensor.

    # Comparisons give plain boolean arrays: they have no gradient and are used as masks.
    def __gt__(self, other):
        return self.data > _raw(other)

    def __ge__(self, other):
        return self.data >= _raw(other)

    def __lt__(self, other):
        return self.data < _raw(other)

    def __le__(self, other):
        return self.data <= _raw(other)


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


_new = object.__new__


def wrap(array: np.ndarray) -> Tensor:
    """A constant Tensor around ``array`` without copying or checking (for internal use)."""
    t = _new(Tensor)
    t.data = array
    t.grad = None
    t.requires_grad = False
    t._op = None
    t._inputs = ()
    t.saved = None
    t.needs_input_grad = None
    t.name = None
    return t


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Make a Tensor from numbers or an array (float32 unless the array is float64 or dtype says)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


class Op:
    """A differentiable function. Subclasses define two static methods:

    ``forward(ctx, *arrays, **attrs) -> ndarray``: plain NumPy on the input arrays; may store what
    the backward needs in ``ctx.saved``.

    ``backward(ctx, g) -> tuple``: one gradient per input (a Tensor, or None where
    ``ctx.needs_input_grad[i]`` is False), written with tinydan ops only, so that the backward pass
    can itself be recorded and differentiated (``create_graph=True``).
    """

    @staticmethod
    def forward(ctx, *arrays, **attrs):  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def backward(ctx, g):  # pragma: no cover - interface
        raise NotImplementedError


def apply(op, *inputs: Tensor, **attrs) -> Tensor:
    """Run ``op.forward`` on the inputs' arrays and, if recording, link the output to the inputs."""
    rec = _recorder
    if rec is not None:                  # tinydan.compile is recording: inputs become traced
        attrs = rec.enter(op, inputs, attrs)
    out = _new(Tensor)
    out.saved = None
    n = len(inputs)                      # unrolled for the common arities: this is the hot path
    if n == 1:
        a = inputs[0]
        # (a call without ** when there are no attributes: the faster call path)
        out.data = op.forward(out, a.data, **attrs) if attrs else op.forward(out, a.data)
        record = _grad_enabled and a.requires_grad
    elif n == 2:
        a, b = inputs
        out.data = op.forward(out, a.data, b.data, **attrs) if attrs else op.forward(out, a.data, b.data)
        record = _grad_enabled and (a.requires_grad or b.requires_grad)
    elif n == 3:
        a, b, c = inputs
        out.data = (op.forward(out, a.data, b.data, c.data, **attrs) if attrs
                    else op.forward(out, a.data, b.data, c.data))
        record = _grad_enabled and (a.requires_grad or b.requires_grad or c.requires_grad)
    else:
        out.data = op.forward(out, *[t.data for t in inputs], **attrs)
        record = _grad_enabled and any(t.requires_grad for t in inputs)
    out.grad = None
    out.name = None
    out.needs_input_grad = None
    if record:
        out.requires_grad = True
        out._op = op
        out._inputs = inputs
    else:
        out.requires_grad = False
        out._op = None
        out._inputs = ()
        out.saved = None
    if rec is not None:
        rec.leave(op, out)
    return out
