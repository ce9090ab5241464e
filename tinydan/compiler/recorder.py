"""The recorder: runs one call eagerly and writes down every NumPy kernel that touches its inputs.

Storages, vars and kernels are described in ``values``. Kernels run in the order they ran; vars
are array objects, not versions, so in-place writes and views replay exactly as they aliased
eagerly. ``tinydan.tensor.apply`` calls ``enter``/``leave``
around every op: ``enter`` turns the arrays of Tensors the recorder has not seen (parameters,
constants) into vars, ``leave`` records an op as one kernel when its forward did something the
recorder cannot follow (a plain buffer filled in place, a constant made inside the forward).
"""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np

from ..tensor import Tensor
from .traced import CompileError, TracedArray, user_site
from .values import (Kernel, OpKernel, Ref, Storage, Var, array_paths, owner_of, set_path,
                     sig)

__all__ = ["Recorder"]

try:
    from numpy.lib.array_utils import byte_bounds as _byte_bounds
except ImportError:  # pragma: no cover - NumPy < 2
    from numpy import byte_bounds as _byte_bounds

# NumPy functions that look only at shapes, dtypes or memory: run on the plain arrays, not recorded
_META = {np.shape, np.ndim, np.size, np.shares_memory, np.may_share_memory, np.result_type,
         np.iscomplexobj, np.isrealobj, np.can_cast, np.min_scalar_type}
# NumPy functions that write into their first argument
_WRITES_FIRST = {np.copyto, np.put, np.place, np.putmask, np.fill_diagonal, np.put_along_axis}
# ufunc methods that accept out= (the replay passes a preallocated buffer)
_OUT_METHODS = ("__call__", "reduce", "accumulate", "outer")


class Recorder:
    """Records one call of ``fn`` (see the module docstring)."""

    def __init__(self, fn):
        self.fn = fn
        self.code = getattr(fn, "__code__", None)
        self.thread = threading.get_ident()
        self.kernels: list[Kernel] = []
        self.vars: list[Var] = []
        self.storages: dict[int, Storage] = {}
        self.storage_list: list[Storage] = []
        self.frames: list = []
        self.tensors: list = []          # [weakref, var, original array, grad before, leaf]
        self.declared: list = []         # (owner, name, index, var, original array)
        self.guards: list = []           # (owner, name, value)
        self.n_lifts = 0
        self.old_grads: set = set()

    # ------------------------------------------------------------------ vars and storages
    def caller_note(self, site: str) -> str:
        """', called from <line in fn>' when the failing line ``site`` is deeper than fn."""
        import os
        import sys
        f = sys._getframe(1)
        while f is not None and f.f_code is not self.code:
            f = f.f_back
        if f is None:
            return ""
        here = f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"
        return "" if site.startswith(here) or f"/{here} " in site else f", called from {here}"

    def _storage(self, kind, owner) -> Storage:
        st = Storage(kind, owner)
        self.storages[id(owner)] = st
        self.storage_list.append(st)
        return st

    def _var(self, storage, plain, producer, scalar=False) -> Var:
        v = Var(len(self.vars), storage, plain, producer, scalar)
        self.vars.append(v)
        storage.views[sig(plain)] = v
        return v

    def lookup(self, a: np.ndarray):
        """The var of plain array ``a``, None for memory the recorder has not seen; an unknown
        view of traced memory raises (its value would be frozen)."""
        owner = owner_of(a)
        st = self.storages.get(id(owner))
        if st is None or st.owner is not owner:
            return None
        v = st.views.get(sig(a))
        if v is None:
            if st.kind == "const":
                return self._var(st, a, None)
            raise CompileError(f"compile: a view of a traced array that the recorder did not make "
                               f"reached {user_site(3)}; it comes from a NumPy call on the plain "
                               "memory (np.asarray of a traced array?) that the tape cannot replay")
        return v

    def lift_const(self, a: np.ndarray) -> Var:
        """A plain array the tape keeps (by reference): a constant, or a buffer it fills."""
        owner = owner_of(a)
        st = self.storages.get(id(owner))
        if st is None or st.owner is not owner:
            st = self._storage("const", owner)
        self.n_lifts += 1
        return self._var(st, a, None)

    def resolve(self, x, reads: list):
        """(template, plain) of an argument: arrays become Refs to vars."""
        t = type(x)
        if t is TracedArray:
            v = x._var
            if v is None:
                raise CompileError(f"compile: an array made by a NumPy call the recorder does not "
                                   f"follow (a view from .real, np.lib.stride_tricks, ...) reached "
                                   f"{user_site(3)}")
            reads.append(v)
            return Ref(v), v.plain
        if isinstance(x, np.ndarray):
            v = self.lookup(x) or self.lift_const(x)
            reads.append(v)
            return Ref(v), x
        if t is tuple or t is list:
            parts = [self.resolve(i, reads) for i in x]
            return t(p[0] for p in parts), t(p[1] for p in parts)
        if t is dict:
            parts = {k: self.resolve(v, reads) for k, v in x.items()}
            return {k: p[0] for k, p in parts.items()}, {k: p[1] for k, p in parts.items()}
        return x, x

    def _pre_write(self, tpl, writes: list) -> None:
        if not isinstance(tpl, Ref):
            return
        st = tpl.var.storage
        if st.kind == "const" and st.snapshot is None:
            st.snapshot = np.array(st.owner, copy=True)
        st.written = True
        writes.append(st)

    def _label(self) -> str:
        return self.frames[-1][0].__name__ if self.frames else user_site(4, short=True)

    def _kernel(self, kind, fn, args, kwargs, reads, writes) -> Kernel:
        k = Kernel(len(self.kernels), kind, fn, args, kwargs, reads, writes, self._label())
        self.kernels.append(k)
        return k

    def _containing(self, r: np.ndarray):
        lo, hi = _byte_bounds(r)
        for st in self.storage_list:
            if st.bounds is None:
                st.bounds = _byte_bounds(st.owner)
            if st.bounds[0] <= lo and hi <= st.bounds[1] and st.owner.size:
                return st
        return None

    def _result(self, r, k: Kernel):
        """The var of a kernel's result (a new one, or an existing var it aliases)."""
        if isinstance(r, TracedArray):
            r = np.ndarray.view(r, np.ndarray)
        if not isinstance(r, np.ndarray):
            if r is None:
                return None
            if not isinstance(r, (np.generic, bool, int, float, complex)):
                raise CompileError(f"compile: a NumPy call returned a {type(r).__name__} computed "
                                   f"from traced arrays at {user_site(4)}; it cannot be replayed")
            a = np.asarray(r)
            st = self._storage("fresh", a)
            st.producer = k
            return self._var(st, a, k, scalar=True)
        owner = owner_of(r)
        st = self.storages.get(id(owner))
        if st is not None and st.owner is owner:
            v = st.views.get(sig(r))
            if v is not None:
                return v
            return self._var(st, r, k)
        if r.base is not None:
            st = self._containing(r)
            if st is not None:
                return self._var(st, r, k)
        st = self._storage("fresh", owner)
        st.producer = k
        return self._var(st, r, k)

    def _results(self, k: Kernel, res):
        if isinstance(res, (tuple, list)) and not isinstance(res, np.ndarray):
            vs = [self._result(r, k) for r in res]
            k.multi = True
            k.outs = [v if v is not None and v.producer is k else None for v in vs]
            return type(res)(v.traced if v is not None else None for v in vs) \
                if type(res) in (tuple, list) else tuple(v.traced for v in vs)
        v = self._result(res, k)
        k.outs = [v if v is not None and v.producer is k else None]
        return None if v is None else v.traced

    def check_thread(self) -> None:
        if threading.get_ident() != self.thread:
            raise CompileError("compile: a traced array was used from another thread while a call "
                               "was being recorded; record with one thread")

    # ------------------------------------------------------------------ what TracedArray reports
    def ufunc(self, uf, method, inputs, kwargs):
        self.check_thread()
        reads: list = []
        args_t, args_p = self.resolve(inputs, reads)
        kw_t, kw_p = self.resolve(kwargs, reads)
        writes: list = []
        out = kw_t.get("out")
        for o in (out if type(out) is tuple else (out,)):
            self._pre_write(o, writes)
        if method == "at":
            self._pre_write(args_t[0], writes)
        fn = uf if method == "__call__" else getattr(uf, method)
        res = fn(*args_p, **kw_p)
        k = self._kernel("call", fn, args_t, kw_t, reads, writes)
        if method == "at":
            return None
        ret = self._results(k, res)
        k.out_ok = (method in _OUT_METHODS and out is None and kwargs.get("where", True) is True
                    and all(v is not None and v.storage.owner is v.plain for v in k.outs))
        return ret

    def function(self, func, args, kwargs):
        self.check_thread()
        if func in _META:
            from .traced import plain
            return func(*plain(args), **plain(kwargs))
        reads: list = []
        args_t, args_p = self.resolve(args, reads)
        kw_t, kw_p = self.resolve(kwargs, reads)
        writes: list = []
        if func in _WRITES_FIRST:
            self._pre_write(args_t[0] if args_t else next(iter(kw_t.values())), writes)
        out = kw_t.get("out")
        for o in (out if type(out) in (tuple, list) else (out,)):
            self._pre_write(o, writes)
        res = func(*args_p, **kw_p)
        k = self._kernel("call", func, args_t, kw_t, reads, writes)
        return self._results(k, res)

    def method(self, obj, name, args, kwargs, writes_self):
        self.check_thread()
        reads: list = []
        self_t, self_p = self.resolve(obj, reads)
        args_t, args_p = self.resolve(args, reads)
        kw_t, kw_p = self.resolve(kwargs, reads)
        writes: list = []
        if writes_self:
            self._pre_write(self_t, writes)
        res = getattr(self_p, name)(*args_p, **kw_p)
        if res is self_p and not writes:
            return obj
        k = self._kernel("method", None, (self_t,) + tuple(args_t), kw_t, reads, writes)
        k.attr = name
        return self._results(k, res)

    def getitem(self, obj, index):
        self.check_thread()
        reads: list = []
        self_t, self_p = self.resolve(obj, reads)
        idx_t, idx_p = self.resolve(index, reads)
        res = self_p[idx_p]
        k = self._kernel("getitem", None, (self_t, idx_t), {}, reads, [])
        return self._results(k, res)

    def setitem(self, obj, index, value):
        self.check_thread()
        reads: list = []
        self_t, self_p = self.resolve(obj, reads)
        idx_t, idx_p = self.resolve(index, reads)
        val_t, val_p = self.resolve(value, reads)
        writes: list = []
        self._pre_write(self_t, writes)
        self_p[idx_p] = val_p
        self._kernel("setitem", None, (self_t, idx_t, val_t), {}, reads, writes)

    def callback(self, fn, args, kwargs):
        self.check_thread()
        reads: list = []
        args_t, args_p = self.resolve(args, reads)
        kw_t, kw_p = self.resolve(kwargs, reads)
        res = fn(*args_p, **kw_p)
        items = res if isinstance(res, (tuple, list)) else (res,)
        if not all(isinstance(r, (np.ndarray, np.generic)) for r in items):
            raise CompileError(f"compile: callback {getattr(fn, '__qualname__', fn)!r} returned "
                               f"{[type(r).__name__ for r in items]}; return NumPy arrays or NumPy "
                               f"scalars (np.float64(x)) so that the tape can carry them "
                               f"(at {user_site(3)})")
        k = self._kernel("callback", fn, args_t, kw_t, reads, [])
        k.record = res
        return self._results(k, res)

    def declare(self, owner, names, fixed) -> None:
        self.check_thread()
        for name in fixed:
            if not any(o is owner and n == name for o, n, _ in self.guards):
                self.guards.append((owner, name, getattr(owner, name)))
        for name in names:
            val = getattr(owner, name)
            if isinstance(val, np.ndarray):
                items = [(None, val)]
            elif isinstance(val, list) and all(isinstance(a, np.ndarray) for a in val):
                items = list(enumerate(val))
            elif isinstance(val, dict) and all(isinstance(a, np.ndarray) for a in val.values()):
                items = list(val.items())
            else:
                raise CompileError(f"declare_state: {type(owner).__name__}.{name} is a "
                                   f"{type(val).__name__}; declare arrays, or lists or dicts of "
                                   "arrays (compute numbers in a callback)")
            for idx, a in items:
                if type(a) is TracedArray:
                    continue                                  # declared earlier in this call
                if self.lookup(a) is not None:
                    raise CompileError(f"declare_state: {type(owner).__name__}.{name} was used "
                                       "before it was declared; declare it first")
                v = self._var(self._storage("state", owner_of(a)), a, None)
                v.where = ("state", owner, name, idx)
                v.snapshot = np.array(a, copy=True)
                if idx is None:
                    setattr(owner, name, v.traced)
                else:
                    val[idx] = v.traced
                self.declared.append((owner, name, idx, v, a))

    # ------------------------------------------------------------------ call inputs
    def bind(self, a: np.ndarray, pos: int, tensor: Tensor | None) -> Var:
        """A call input: leaf ``pos`` (a Tensor's array, or an array)."""
        owner = owner_of(a)
        st = self.storages.get(id(owner))
        if st is None or st.owner is not owner:
            st = self._storage("input", owner)
        v = self._var(st, a, None)
        v.where = ("leaf", pos, tensor is not None)
        v.snapshot = np.array(a, copy=True)
        if tensor is not None:
            self.tensors.append([weakref.ref(tensor), v, a, tensor.grad, pos])
            tensor.data = v.traced
        return v

    # ------------------------------------------------------------------ the apply hook
    def enter(self, op, inputs, attrs):
        """Before op.forward: every input Tensor's array becomes a traced var."""
        if threading.get_ident() != self.thread:
            return attrs
        for t in inputs:
            if type(t.data) is not TracedArray:
                self.adopt(t)
        if attrs:
            new = None
            for key, a in attrs.items():
                if type(a) is np.ndarray:
                    v = self.lookup(a)
                    if v is not None:
                        new = dict(attrs) if new is None else new
                        new[key] = v.traced
            attrs = new or attrs
        self.frames.append((op, inputs, attrs, len(self.kernels), self.n_lifts))
        return attrs

    def adopt(self, t: Tensor) -> Var:
        """A Tensor whose array is not traced yet: a parameter, a constant, or a traced value
        that came back as a plain view."""
        if id(t) in self.old_grads:
            raise CompileError(f"compile: a .grad that was set before the call is read at "
                               f"{user_site(4)} (gradients accumulate); call zero_grad() before "
                               "the compiled function, or use tinydan.grad")
        d = t.data
        owner = owner_of(d)
        st = self.storages.get(id(owner))
        known = st is not None and st.owner is owner
        v = st.views.get(sig(d)) if known else None
        if v is None and known and st.kind not in ("input", "tensor", "state"):
            v = self.lookup(d)                      # a const view, or an untracked view: raises
        if v is None:
            if not known:
                st = self._storage("tensor", owner)
            v = self._var(st, d, None)              # read from this Tensor at every call
            v.where = ("tensor", weakref.ref(t))
            v.snapshot = np.array(d, copy=True)
            self.n_lifts += 1
        if t.grad is not None:
            self.old_grads.add(id(t.grad))
        self.tensors.append([weakref.ref(t), v, d, t.grad, None])
        t.data = v.traced
        return v

    def leave(self, op, out: Tensor) -> None:
        """After op.forward: an op the recorder could not follow becomes one kernel."""
        if threading.get_ident() != self.thread:
            return
        _, inputs, attrs, k0, lifts0 = self.frames.pop()
        d = out.data
        if type(d) is not TracedArray:
            v = self.lookup(d)
            if v is not None:
                out.data = d = v.traced
        traced_in = any(type(t.data) is TracedArray for t in inputs) or any(
            type(a) is TracedArray for _, a in array_paths(attrs))
        if (type(d) is not TracedArray and traced_in) or self.n_lifts > lifts0:
            self._op_kernel(op, inputs, attrs, out, k0)

    def _op_kernel(self, op, inputs, attrs, out, k0) -> None:
        for k in self.kernels[k0:]:
            k.dead = True                                   # superseded by the whole op
        reads: list = []
        args_t = tuple(self.resolve(t.data, reads)[0] for t in inputs)
        attrs_t, _ = self.resolve(dict(attrs), reads)
        given = {id(a) for _, a in array_paths(attrs)} | {id(t.data) for t in inputs}
        try:
            saved = [(p, a) for p, a in array_paths(out.saved) if id(a) not in given]
        except TypeError:
            raise CompileError(f"compile: op {op.__name__} keeps Tensors on its ctx and its "
                               "forward does NumPy work the recorder cannot follow; it cannot "
                               "be recorded") from None
        k = self._kernel("op", OpKernel(op, [p for p, _ in saved]), args_t, attrs_t, reads, [])
        k.multi = True
        k.label = op.__name__
        outs = []
        for i, a in enumerate([out.data] + [a for _, a in saved]):
            p = np.ndarray.view(a, np.ndarray) if isinstance(a, TracedArray) else a
            old = a._var if isinstance(a, TracedArray) else None
            if old is not None and (old.producer is None or old.producer.n < k0):
                v = self._var(old.storage, old.plain, k)     # an input passed through
            else:
                st = self._storage("fresh", owner_of(p))
                st.producer = k
                v = self._var(st, p, k)
            outs.append(v)
            if i == 0:
                out.data = v.traced
            else:
                out.saved = set_path(out.saved, saved[i - 1][0], v.traced)
        k.outs = outs

    # ------------------------------------------------------------------ after the call
    def finish_tensors(self, leaves) -> list:
        """Give every Tensor the recorder touched a plain array again; returns the writebacks
        (target, attribute, var or ("const", value) or None) a replay performs."""
        writebacks = []
        for wr, v, original, grad0, pos in self.tensors:
            t = leaves[pos] if pos is not None else wr()
            if t is None:
                continue
            target = ("leaf", pos) if pos is not None else ("tensor", t)
            cur = t.data
            if cur is v.traced:
                t.data = original
            else:
                w = self._plain_var(cur)
                t.data = w.plain if isinstance(w, Var) else cur
                writebacks.append((target, "data", w))
            g = t.grad
            if g is grad0:
                continue
            if g is None:
                writebacks.append((target, "grad", None))
            else:
                w = self._plain_var(g.data)
                g.data = w.plain if isinstance(w, Var) else g.data
                writebacks.append((target, "grad", w))
        return writebacks

    def finish_declared(self) -> list:
        writebacks = []
        for owner, name, idx, v, original in self.declared:
            container = getattr(owner, name)
            cur = container if idx is None else container[idx]
            if cur is v.traced:
                new = original
            else:
                w = self._plain_var(cur)
                new = w.plain if isinstance(w, Var) else cur
                writebacks.append((("state", owner, name), idx, w))
            if idx is None:
                setattr(owner, name, new)
            else:
                container[idx] = new
        return writebacks

    def _plain_var(self, a):
        """The var of a value left in a Tensor or a state, or ("const", a) for an array the call
        made without traced inputs."""
        if isinstance(a, TracedArray):
            if a._var is None:
                raise CompileError("compile: a Tensor or a declared state was left holding an "
                                   "array made by a NumPy call the recorder does not follow")
            return a._var
        if isinstance(a, np.ndarray):
            v = self.lookup(a)
            return v if v is not None else ("const", a)
        return ("const", a)

    def restore_all(self, leaves) -> None:
        """After a failed recording: plain arrays back in every Tensor and state (best effort)."""
        for wr, v, original, grad0, pos in self.tensors:
            t = leaves[pos] if pos is not None else wr()
            if t is not None:
                if isinstance(t.data, TracedArray):
                    t.data = original if t.data is v.traced else np.ndarray.view(t.data, np.ndarray)
                if t.grad is not None and isinstance(t.grad.data, TracedArray):
                    t.grad.data = np.ndarray.view(t.grad.data, np.ndarray)
        for owner, name, idx, v, original in self.declared:
            container = getattr(owner, name)
            cur = container if idx is None else container[idx]
            new = original if cur is v.traced else (
                np.ndarray.view(cur, np.ndarray) if isinstance(cur, TracedArray) else cur)
            if idx is None:
                setattr(owner, name, new)
            else:
                container[idx] = new

    def classify(self) -> None:
        """Tensors that died with the call were temporaries: their arrays are constants. A
        constant written in place must be the call's own buffer (reset at every replay)."""
        for v in self.vars:
            if v.where is not None and v.where[0] == "tensor":
                t = v.where[1]()
                if t is None:
                    v.where = None
                    if v.storage.kind == "tensor":
                        v.storage.kind = "const"
                else:
                    v.where = ("tensor", t)
        ours = {id(v) for v in self.vars} | {id(v.plain) for v in self.vars} | {
            id(st) for st in self.storage_list} | {id(self.vars), id(self.storage_list)}
        for st in self.storage_list:
            if st.kind == "const" and st.written:
                outside = [r for r in gc.get_referrers(st.owner) if id(r) not in ours
                           and not (isinstance(r, dict) and r is self.storages)]
                if outside:
                    raise CompileError(
                        "compile: the call writes in place into an array that lives on after it "
                        f"(held by a {type(outside[0]).__name__}); replays would not update it. "
                        "Declare it with tinydan.compiler.declare_state(owner, name)")

    def check_leaks(self) -> None:
        """Traced arrays still referenced after the call were stored somewhere the tape does not
        write back (an object's attribute, a cache): refuse rather than leave them stale."""
        refs = [weakref.ref(v.traced) for v in self.vars]
        for v in self.vars:
            v.traced = None
        if any(r() is not None for r in refs):
            gc.collect()                      # only reference cycles may still hold them
        leaked = [r() for r in refs if r() is not None]
        if leaked:
            holders = [type(h).__name__ for h in gc.get_referrers(leaked[0])
                       if not isinstance(h, (list, type(gc.get_referrers)))][:3]
            raise CompileError(
                f"compile: the call stored {len(leaked)} computed array(s) where the tape cannot "
                f"write them back (held by {holders or 'an object'}): e.g. an optimizer's state "
                "dict. Declare such state with tinydan.compiler.declare_state, or return the "
                "values")
