"""Traced arrays: NumPy arrays that report every operation on them to the active recorder.

While ``tinydan.compile`` records a call, every array that depends on the call's inputs is a
``TracedArray``: an ``ndarray`` subclass whose ufuncs (``__array_ufunc__``), NumPy functions
(``__array_function__``), indexing and array-returning methods go through the recorder, which runs
them on the plain arrays (the same NumPy calls as eager: the same numbers) and appends them to the
tape. A traced value therefore cannot turn into a constant by accident: masks (``x > 0``), arg-maxes
and arrays an op saves on its ctx are traced like everything else.

What cannot be replayed raises ``CompileError``, naming the line of the caller: reading a value
into Python (``float()``, ``bool()``, ``int()``, ``.item()``, ``.tolist()``), in-place reshapes,
pickling.
Outside a recording a TracedArray behaves as a plain array.
"""
from __future__ import annotations

import linecache
import os
import sys

import numpy as np

__all__ = ["CompileError", "TracedArray", "active", "set_active", "user_site", "plain"]


class CompileError(RuntimeError):
    """What ``tinydan.compile`` cannot record or replay, with the line that asked for it."""


_active = None                     # the Recorder of the call being recorded, or None

_NUMPY_DIR = os.path.dirname(np.__file__) + os.sep
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TENSOR_FILE = os.path.join(os.path.dirname(_HERE.rstrip(os.sep)), "tensor.py")
_SKIP = (_NUMPY_DIR, _HERE)


def active():
    """The recorder of the call being recorded (None outside a recording)."""
    return _active


def set_active(rec) -> None:
    global _active
    _active = rec


def _short(path: str) -> str:
    """A path relative to the working directory, or the file's name when it is outside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return os.path.basename(path)
    return os.path.basename(path) if rel.startswith("..") else rel


def user_site(depth: int = 1, short: bool = False) -> str:
    """``file:line in function (`source`)`` of the innermost caller outside NumPy, the compiler
    and tensor.py (the line that asked for what cannot be recorded); ``short``: ``file:line``."""
    f = sys._getframe(depth)
    while f is not None:
        path = f.f_code.co_filename
        if not path.startswith(_SKIP) and os.path.abspath(path) != _TENSOR_FILE:
            if short:
                return f"{os.path.basename(path)}:{f.f_lineno}"
            code = linecache.getline(path, f.f_lineno).strip()
            return f"{_short(path)}:{f.f_lineno} in {f.f_code.co_name} (`{code}`)"
        f = f.f_back
    return "an unknown line"


def _value_error(what: str):
    rec = _active
    site = user_site(3)
    extra = "" if rec is None else rec.caller_note(site)
    return CompileError(
        f"compile: {what} reads a traced value into Python at {site}{extra}; a replay runs "
        "only the recorded NumPy calls, so no value may steer Python: return the array instead, "
        "or compute the decision outside the compiled function (use ops.where or a mask inside)")


def plain(x):
    """``x`` with every TracedArray (inside tuples, lists and dicts too) viewed as plain."""
    if isinstance(x, TracedArray):
        return np.ndarray.view(x, np.ndarray)
    if type(x) in (tuple, list):
        return type(x)(plain(i) for i in x)
    if type(x) is dict:
        return {k: plain(v) for k, v in x.items()}
    return x


def _method(name: str, writes: bool = False):
    base = getattr(np.ndarray, name)

    def method(self, *args, **kwargs):
        rec = _active
        if rec is None:
            return base(plain(self), *plain(args), **plain(kwargs))
        return rec.method(self, name, args, kwargs, writes)

    method.__name__ = name
    method.__doc__ = base.__doc__
    return method


def _refused(name: str):
    def method(self, *args, **kwargs):
        if _active is None:
            return getattr(np.ndarray, name)(plain(self), *plain(args), **plain(kwargs))
        raise CompileError(f"compile: ndarray.{name} on a traced array cannot be recorded (at "
                           f"{user_site(2)}); use an out-of-place NumPy function instead")
    method.__name__ = name
    return method


def _reads_value(what: str):
    def method(self, *args, **kwargs):
        if _active is None:
            return getattr(np.ndarray, what)(plain(self), *args, **kwargs)
        raise _value_error(f"{what}()")
    method.__name__ = what
    return method


class TracedArray(np.ndarray):
    """An array whose operations are recorded on the tape (see the module docstring)."""

    __slots__ = ("_var",)

    def __array_finalize__(self, obj):
        self._var = None                      # set by the recorder; None: made behind its back

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        rec = _active
        if rec is None:
            return getattr(ufunc, method)(*plain(inputs), **plain(kwargs))
        return rec.ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        rec = _active
        if rec is None:
            return func(*plain(args), **plain(kwargs))
        return rec.function(func, args, kwargs)

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, index):
        rec = _active
        if rec is None:
            return np.ndarray.__getitem__(plain(self), plain(index))
        return rec.getitem(self, index)

    def __setitem__(self, index, value):
        rec = _active
        if rec is None:
            return np.ndarray.__setitem__(plain(self), plain(index), plain(value))
        rec.setitem(self, index, value)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # ------------------------------------------------------------------ views and layout
    @property
    def T(self):
        return self.transpose()

    @property
    def mT(self):
        return self.swapaxes(-1, -2)

    @property
    def shape(self):
        return np.ndarray.shape.__get__(self)

    @shape.setter
    def shape(self, value):
        if _active is not None:
            raise CompileError(f"compile: setting .shape of a traced array in place cannot be "
                               f"recorded (at {user_site(2)}); use .reshape()")
        np.ndarray.shape.__set__(self, value)

    @property
    def flags(self):
        """The flags of the array the recorder computed (so owndata reads as it would eagerly)."""
        var = self._var
        return np.ndarray.flags.__get__(self if var is None else var.plain)

    def view(self, *args, **kwargs):
        if _active is None or (args and args[0] is np.ndarray) or kwargs.get("type") is np.ndarray:
            if _active is not None:
                return self                    # a plain view would escape the recorder
            return np.ndarray.view(plain(self), *args, **kwargs)
        return _active.method(self, "view", args, kwargs, False)

    # ------------------------------------------------------------------ no values into Python
    def __bool__(self):
        if _active is None:
            return bool(plain(self))
        raise _value_error("bool() (an if, while, and/or or comparison)")

    def __float__(self):
        if _active is None:
            return float(plain(self))
        raise _value_error("float()")

    def __int__(self):
        if _active is None:
            return int(plain(self))
        raise _value_error("int()")

    def __index__(self):
        if _active is None:
            return plain(self).__index__()
        raise _value_error("using it as an index or a size")

    def __complex__(self):
        if _active is None:
            return complex(plain(self))
        raise _value_error("complex()")

    def __contains__(self, item):
        if _active is None:
            return item in plain(self)
        raise _value_error("`in`")

    item = _reads_value("item")
    tolist = _reads_value("tolist")
    tobytes = _reads_value("tobytes")

    def __reduce_ex__(self, protocol):
        if _active is not None:
            raise CompileError(f"compile: a traced array cannot be pickled (at {user_site(2)})")
        return plain(self).__reduce_ex__(protocol)

    def __repr__(self):
        return repr(plain(self))

    def __str__(self):
        return str(plain(self))

    def __format__(self, spec):
        return format(plain(self), spec)


for _name in ("reshape", "transpose", "swapaxes", "astype", "copy", "ravel", "flatten", "squeeze",
              "repeat", "take", "diagonal", "argmax", "argmin", "argsort", "dot", "nonzero",
              "searchsorted", "compress", "cumsum", "cumprod", "trace", "choose", "round",
              "__copy__"):
    setattr(TracedArray, _name, _method(_name))
TracedArray.fill = _method("fill", writes=True)
TracedArray.__deepcopy__ = lambda self, memo=None: self.copy()
for _name in ("sort", "put", "partition", "resize", "itemset", "setfield", "byteswap", "setflags",
              "tofile", "dump", "dumps"):
    if hasattr(np.ndarray, _name):
        setattr(TracedArray, _name, _refused(_name))
