"""``tinydan.compile``: record a step once, replay it as bare NumPy calls.

``step = compile(fn)`` returns a function with fn's signature. Its first call with a new
**signature** (the shapes, dtypes and strides of the Tensors and arrays in the arguments, which
Tensors require grad, the grad mode, the values of Python numbers and the identity of other
objects) runs fn eagerly while a recorder writes down every NumPy kernel that touches the inputs:
the forward, the backward (``create_graph=True`` included) and whatever fn does with the results
(an optimizer's in-place update). Later calls with that signature **replay** the tape: the new
arrays are bound, and one generated Python function runs the kernels in order, into buffers
allocated once; no Tensor, no graph, no topological sort. Kernels nothing needs are dropped. The
numbers are the eager ones, bit for bit: the same NumPy calls on the same arrays.

What a replay reads and writes:

* the arguments (Tensors, arrays, numbers, nested in tuples, lists and dicts); outputs are
  detached leaves, new arrays at every call;
* Tensors fn reaches without being given them (a network's Parameters): their ``.data`` is read at
  every call, and rebinding it (``p.data = p.data - lr * g``) or setting ``.grad`` is done again;
* state declared with ``declare_state`` (an optimizer's moments), and values from ``callback``
  (an optimizer's step counter); ``tinydan.optim`` declares its own.

Python runs only while recording: control flow is frozen as it ran, and Python side effects
(appending to a list, printing) happen once. A value may not steer Python: reading a traced value
(``float()``, ``bool()``, ``.item()``, an ``if`` on an array) raises ``CompileError`` naming the
line, and so do writes and stores the tape could not repeat. Python numbers fn reads from elsewhere
(a learning rate in a closure) are constants of the tape: pass them as arguments.

What the recorder cannot see, because NumPy does it in C without asking the array: ``np.array(x)``
and ``np.float64(x)`` copies of a traced array, assigning one into a plain array (``buf[:] = x``),
indexing a plain array with one, and BLAS or other compiled code called on raw arrays. Every new
tape is replayed once on copies of the recorded call and must reproduce it exactly, which catches
such writes into arrays the tape knows (the in-place SGD kernel of ``meta.inner_step`` is refused
this way); ``compile(fn, check=True)`` runs the replay and fn side by side at every call and raises
at the first difference. Lesson 07 shows a tape and what it does.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict

import numpy as np

from .. import tensor as _tensor
from ..tensor import Tensor
from . import traced as _traced
from . import verify as _verify_mod
from .recorder import Recorder
from .tape import Tape
from .traced import CompileError, TracedArray
from .values import Var
from .verify import checked_call, verify_recording

__all__ = ["compile", "Compiled", "CompileError", "declare_state", "callback", "Tape",
           "set_enabled", "is_enabled"]

# every compiled function replays its tapes unless switched off (``--no-compile`` of the command
# lines, or TINYDAN_COMPILE=0 in the environment): then it simply calls fn
_ENABLED = [os.environ.get("TINYDAN_COMPILE", "1") != "0"]


def set_enabled(flag: bool) -> bool:
    """Switch every compiled function on (replay) or off (plain calls of fn); returns the previous
    setting. Worker processes started afterwards inherit it."""
    prev = _ENABLED[0]
    _ENABLED[0] = bool(flag)
    os.environ["TINYDAN_COMPILE"] = "1" if flag else "0"
    return prev


def is_enabled() -> bool:
    """Whether compiled functions replay their tapes."""
    return _ENABLED[0]

def compile(fn=None, *, check: bool = False, cache_size: int = 8):  # noqa: A001 - torch's name
    """Record ``fn`` once per signature and replay it as NumPy calls (see the module docstring).

    ``check=True``: every call runs the replay AND fn, compares outputs and written state bit for
    bit and raises CompileError at the first difference; returns fn's results. ``cache_size``:
    how many signatures keep their tapes (least recently used first out).
    """
    if fn is None:
        return lambda f: compile(f, check=check, cache_size=cache_size)
    return Compiled(fn, check=check, cache_size=cache_size)


def declare_state(owner, *names: str, fixed=(), tensors=()) -> None:
    """Tell a recording that ``owner.<name>`` (an array or a list of arrays) outlives the call:
    replays read it at every call and update it as fn did. ``fixed``: attributes holding numbers
    fn uses as constants (a call where one has changed records a new tape). ``tensors``: Tensors
    whose ``.data`` fn reads or rebinds directly (an optimizer's parameters). Does nothing when no
    call is being recorded."""
    rec = _traced._active
    if rec is not None and rec.thread == threading.get_ident():
        rec.declare(owner, names, fixed)
        for t in tensors:
            if type(t.data) is not TracedArray:
                rec.adopt(t)


def callback(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, run again at every replay: Python a tape needs (a step counter, a
    random draw). It must return NumPy arrays or NumPy scalars (or a tuple of them)."""
    rec = _traced._active
    if rec is not None and rec.thread == threading.get_ident():
        return rec.callback(fn, args, kwargs)
    res = fn(*args, **kwargs)
    if _verify_mod.capture is not None:       # check=True: the replay will need these values
        _verify_mod.capture.append(res)
    return res


class Compiled:
    """The function ``compile`` returns: a signature-keyed cache of tapes around ``fn``."""

    def __init__(self, fn, check: bool = False, cache_size: int = 8):
        if not callable(fn):
            raise TypeError(f"compile needs a function, got {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        self.fn, self.check, self.cache_size = fn, bool(check), max(1, int(cache_size))
        self._cache: OrderedDict = OrderedDict()
        self.tape: Tape | None = None         # the latest tape recorded
        self.records = 0                      # how many calls were recorded
        self._lock = threading.Lock()         # a tape's buffers serve one replay at a time

    def __call__(self, *args, **kwargs):
        if _traced._active is not None or not _ENABLED[0]:   # inside another recording (part
            return self.fn(*args, **kwargs)                  # of its tape), or switched off
        leaves: list = []
        key: list = [_tensor._grad_enabled]
        objects: list = []
        _flatten((args, kwargs), leaves, key, {}, objects)
        key = tuple(key)
        tapes = self._cache.get(key)
        if tapes is not None:
            for tape in tapes:
                if tape.guards_ok():
                    self._cache.move_to_end(key)
                    with self._lock:
                        if self.check:
                            return checked_call(tape, self.fn, args, kwargs, leaves)
                        return tape.replay(leaves)
        tape, out = _record(self.fn, args, kwargs, leaves)
        tape.objects = objects                # keeps objects keyed by identity alive
        self.records += 1
        self.tape = tape
        entry = self._cache.setdefault(key, [])
        entry.insert(0, tape)
        del entry[4:]
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def tapes(self) -> list:
        """Every cached tape, most recently used last."""
        return [t for tapes in self._cache.values() for t in tapes]

    def __repr__(self) -> str:
        return f"<compiled {getattr(self.fn, '__qualname__', self.fn)}: {len(self.tapes())} tapes>"


# ---------------------------------------------------------------------------- signatures
_NUMBERS = (int, float, bool, complex, str, type(None))


def _flatten(x, leaves: list, key: list, seen: dict, objects: list) -> None:
    """Append the Tensors and arrays of ``x`` to ``leaves`` and its signature to ``key``."""
    t = type(x)
    if t is np.ndarray or t is TracedArray:
        key.append(("a", x.shape, x.dtype, x.strides, seen.setdefault(id(x), len(leaves))))
        leaves.append(x)
    elif isinstance(x, Tensor):
        d = x.data
        if x._op is not None and x.requires_grad:
            raise CompileError("compile: an input Tensor has a graph (it was computed by ops "
                               "that recorded); pass leaves: .detach() it, or make it inside fn")
        key.append(("t", d.shape, d.dtype, d.strides, x.requires_grad,
                    seen.setdefault(id(d), len(leaves))))
        leaves.append(x)
    elif t is tuple or t is list:
        key.append((t, len(x)))
        for i in x:
            _flatten(i, leaves, key, seen, objects)
    elif t is dict:
        key.append((dict, tuple(x)))
        for v in x.values():
            _flatten(v, leaves, key, seen, objects)
    elif t in _NUMBERS or isinstance(x, np.generic):
        key.append((t, x))
    elif isinstance(x, np.ndarray):
        raise CompileError(f"compile: an argument is a {t.__name__}; pass plain ndarrays")
    elif isinstance(x, tuple):                          # a namedtuple
        key.append((t, len(x)))
        for i in x:
            _flatten(i, leaves, key, seen, objects)
    else:                                               # any other object: by identity
        key.append(("o", id(x)))
        objects.append(x)


def _substitute(x, subst: dict):
    t = type(x)
    if t is np.ndarray:
        return subst.get(id(x), x)
    if t is tuple or t is list:
        return t(_substitute(i, subst) for i in x)
    if t is dict:
        return {k: _substitute(v, subst) for k, v in x.items()}
    if isinstance(x, tuple) and not isinstance(x, np.ndarray) and hasattr(x, "_make"):
        return t._make(_substitute(i, subst) for i in x)
    return x


# ---------------------------------------------------------------------------- recording
def _record(fn, args, kwargs, leaves):
    """Run fn once under a Recorder; returns (tape, fn's outputs as a replay would give them)."""
    from .tape import out_tensor
    rec = Recorder(fn)
    subst = {}
    for pos, leaf in enumerate(leaves):
        if isinstance(leaf, Tensor):
            rec.bind(leaf.data, pos, leaf)
        else:
            subst[id(leaf)] = rec.bind(leaf, pos, None).traced
    args2, kwargs2 = _substitute((args, kwargs), subst)
    _traced.set_active(rec)
    _tensor._recorder = rec
    try:
        result = fn(*args2, **kwargs2)
    except BaseException:
        _traced.set_active(None)
        _tensor._recorder = None
        rec.restore_all(leaves)
        raise
    _traced.set_active(None)
    _tensor._recorder = None
    del args2, kwargs2, subst
    try:
        template, out = _outputs(rec, result, leaves, out_tensor)
        del result
        writebacks = rec.finish_tensors(leaves) + rec.finish_declared()
    except BaseException:
        rec.restore_all(leaves)
        raise
    rec.check_leaks()
    rec.classify()
    tape = Tape(rec, template, writebacks, len(leaves), getattr(fn, "__qualname__", repr(fn)))
    verify_recording(tape, leaves, out)
    tape.release()
    return tape, out


def _outputs(rec: Recorder, x, leaves, out_tensor):
    """(template, value) of fn's result: how a replay builds each output, and the record call's."""
    if isinstance(x, Tensor):
        for pos, leaf in enumerate(leaves):
            if leaf is x:
                return ("leaf", pos), x
        for entry in rec.tensors:
            if entry[4] is None and entry[0]() is x:
                return ("obj", x), x
        rg = bool(x.requires_grad and x._op is None)
        w = rec._plain_var(x.data)
        if isinstance(w, Var):
            return ("tensor", w, rg, x.name), out_tensor(w.plain, rg, x.name)
        return ("const", x), x
    if isinstance(x, TracedArray):
        v = x._var
        if v is None:
            raise CompileError("compile: fn returned an array made by a NumPy call the recorder "
                               "does not follow")
        if v.where is not None and v.where[0] == "leaf" and not v.where[2]:
            return ("leaf", v.where[1]), leaves[v.where[1]]
        if v.scalar:
            return ("scalar", v), v.plain[()]
        return ("array", v), v.plain
    if isinstance(x, np.ndarray):
        w = rec._plain_var(x)
        return (("array", w), x) if isinstance(w, Var) else (("const", x), x)
    t = type(x)
    if t is list or t is dict or isinstance(x, tuple):
        items = list(x.values()) if t is dict else list(x)
        parts = [_outputs(rec, i, leaves, out_tensor) for i in items]
        tpls, vals = [p[0] for p in parts], [p[1] for p in parts]
        if t is list:
            return ("list", tpls), vals
        if t is dict:
            return ("dict", list(x), tpls), dict(zip(x, vals))
        return ("tuple", t, tpls), (tuple(vals) if t is tuple else
                                    (t._make(vals) if hasattr(t, "_make") else t(vals)))
    return ("const", x), x
