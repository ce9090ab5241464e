"""The tape: the recorded kernels, planned and turned into one straight-line Python function.

Planning, once per tape:

1. **dead code**: walking back from the outputs and the writes that outlive the call (parameters,
   optimizer state, arrays written in place), a kernel is kept when a kept kernel reads a var it
   makes, or when it writes memory that is read later;
2. **buffers**: an array a ufunc (or matmul, or a reduction) makes that does not leave the call gets
   a buffer allocated once and passed as ``out=``: a view, with the recorded shape and strides, of a
   byte block that arrays whose lifetimes do not overlap share (freed after their last reader);
3. **hoisting**: views of constants and of buffers (reshape, transpose, basic indexing) are made
   once, when the tape is built.

The replay function is generated source: loads of the call's arrays, then one line per kernel
(``np.add(v3, v7, out=b2)``), the writes back into Tensors and states, and the outputs. No Tensor,
no graph, no topological sort.
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor, wrap
from .values import Ref, Var
from .traced import CompileError

__all__ = ["Tape", "same", "out_tensor"]


def out_tensor(a, requires_grad: bool, name):
    """A replayed output Tensor: a leaf around ``a``."""
    t = wrap(a)
    t.requires_grad = requires_grad
    t.name = name
    return t


def _grad_tensor(a):
    return wrap(a)


def _fn_name(fn) -> str:
    uf = getattr(fn, "__self__", None)
    if isinstance(uf, np.ufunc):
        return f"{uf.__name__}.{fn.__name__}"
    return getattr(fn, "__name__", type(fn).__name__)


def same(a, b) -> bool:
    """Exact equality of outputs (bit for bit for arrays, NaN equal to NaN)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.requires_grad == b.requires_grad and same(a.data, b.data)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a is b or a == b


def template_vars(tpl):
    """The vars an output template refers to."""
    kind = tpl[0]
    if kind in ("tensor", "array", "scalar"):
        yield tpl[1]
    elif kind in ("tuple", "list", "dict"):
        for item in tpl[-1]:
            yield from template_vars(item)


class Tape:
    """A recorded call, planned and compiled to a replay function (see the module docstring)."""

    def __init__(self, rec, template, writebacks, n_leaves: int, title: str):
        self.title = title
        self.guards = list(rec.guards)
        self.template = template
        self.writebacks = writebacks
        self.n_leaves = n_leaves
        self.recorded = sum(not k.dead for k in rec.kernels)
        self.kernels = [k for k in rec.kernels if not k.dead]
        self._plan()
        self.source = self._generate()
        self._make = self._exec()
        self.replay = self._make(**self._closure)

    # ------------------------------------------------------------------ planning
    def _escaping(self) -> list:
        out = list(template_vars(self.template))
        for _, _, w in self.writebacks:
            if isinstance(w, Var):
                out.append(w)
        return out

    def _plan(self) -> None:
        escaping = self._escaping()
        for v in escaping:
            v.storage.escapes = True
        needed = {id(v) for v in escaping}
        live = {id(v.storage) for v in escaping}
        for k in self.kernels:
            for st in k.writes:
                if st.kind in ("input", "tensor", "state"):
                    live.add(id(st))            # writes into the caller's arrays are effects
        for k in reversed(self.kernels):
            if (k.kind == "callback" or any(o is not None and id(o) in needed for o in k.outs)
                    or any(id(st) in live for st in k.writes)):
                k.needed = True
                for v in k.reads:
                    needed.add(id(v))
                    live.add(id(v.storage))
        self.order = [k for k in self.kernels if k.needed]
        for k in self.order:
            for v in k.reads:
                if v.producer is not None and v.producer.dead:
                    raise CompileError(f"compile: a value made inside op {v.producer.label}'s "
                                       "forward is used outside it; that op cannot be recorded")
        # homes: bound (read at every call), const, folded, buffer, hoisted view, or local
        self.home: dict = {}
        for k in self.order:                 # kernels of constants only: their recorded results
            if (k.kind in ("call", "method", "getitem") and not k.writes and k.outs
                    and all(self._is_const(v) for v in k.reads)
                    and all(o is not None and not o.storage.written and not o.storage.escapes
                            for o in k.outs)):
                for o in k.outs:
                    self.home[id(o)] = "fold"
                k.kind = "fold:" + k.kind
        pooled = []
        for k in self.order:
            if k.kind.startswith("fold:"):
                continue
            if k.out_ok and all(o is not None and o.storage.kind == "fresh"
                                and not o.storage.escapes and o.storage.producer is k
                                for o in k.outs):
                for o in k.outs:
                    self.home[id(o)] = "buffer"
                    pooled.append(o)
        fixed_st = {id(o.storage) for o in pooled}
        for k in self.order:
            if (k.kind in ("method", "getitem", "call") and not k.writes and k.outs
                    and all(self._is_fixed(v, fixed_st) for v in k.reads)
                    and all(o is not None and o.storage.owner is not o.plain
                            and (o.storage.kind == "const" or id(o.storage) in fixed_st
                                 or self.home.get(id(o.storage.views.get(_root_sig(o)))) == "fold")
                            for o in k.outs)):
                for o in k.outs:
                    self.home[id(o)] = "hoist"
                k.kind = "hoist:" + k.kind
        self._assign_buffers(pooled)

    def _is_const(self, v) -> bool:
        if self.home.get(id(v)) == "fold":
            return True
        return (v.producer is None and v.where is None and v.storage.kind == "const"
                and not v.storage.written)

    def _is_fixed(self, v, fixed_st) -> bool:
        h = self.home.get(id(v))
        if h in ("buffer", "hoist", "fold"):
            return True
        return v.producer is None and v.where is None and v.storage.kind == "const"

    def _assign_buffers(self, pooled) -> None:
        """Give every pooled array a view of a byte block (its recorded shape and strides); blocks
        are reused, smallest that fits first, by arrays made after the last reader of the
        previous one, so the tape touches little memory (it stays in cache)."""
        last: dict = {}
        for i, k in enumerate(self.order):
            for v in k.reads:
                last[id(v.storage)] = i
            for st in k.writes:
                last[id(st)] = i
        free: list = []                                  # (capacity in bytes, block index)
        self.blocks: list = []
        self.buffers: list = []                          # one view per pooled array
        self.buffer_of: dict = {}
        ends: dict = {}
        pooled_ids = {id(v) for v in pooled}
        for i, k in enumerate(self.order):
            for o in k.outs:
                if o is None or id(o) not in pooled_ids:
                    continue
                need = max(1, o.plain.nbytes)
                fits = [f for f in free if f[0] >= need]
                if fits:
                    best = min(fits)
                    free.remove(best)
                    j = best[1]
                else:
                    j = len(self.blocks)
                    self.blocks.append(np.empty(need, dtype=np.uint8))
                block = self.blocks[j]
                view = np.ndarray(o.shape, o.dtype, buffer=block, strides=o.plain.strides)
                self.buffer_of[id(o)] = len(self.buffers)
                self.buffers.append(view)
                ends.setdefault(last.get(id(o.storage), i), []).append((block.nbytes, j))
            for entry in ends.pop(i, ()):
                free.append(entry)

    # ------------------------------------------------------------------ code generation
    def _const(self, value, prefix="k") -> str:
        key = id(value)
        name = self._const_names.get(key)
        if name is None:
            name = f"{prefix}{len(self._const_names)}"
            self._const_names[key] = name
            self._closure[name] = value
            self._keep.append(value)
        return name

    def _name(self, v) -> str:
        name = self._names.get(id(v))
        if name is not None:
            return name
        home = self.home.get(id(v))
        if home == "buffer":
            name = self._const(self.buffers[self.buffer_of[id(v)]], "b")
        elif home == "fold" or (v.where is None and v.producer is None):   # a constant
            name = self._const(v.plain, "c")
        else:
            name = f"v{v.n}"
        self._names[id(v)] = name
        return name

    def _render(self, x) -> str:
        t = type(x)
        if t is Ref:
            return self._name(x.var)
        if t is tuple:
            inner = ", ".join(self._render(i) for i in x)
            return f"({inner},)" if len(x) == 1 else f"({inner})"
        if t is list:
            return "[" + ", ".join(self._render(i) for i in x) + "]"
        if t is dict:
            return "{" + ", ".join(f"{self._render(k)}: {self._render(v)}" for k, v in x.items()) \
                + "}"
        if x is None or t is bool or t is int or t is str:
            return repr(x)
        if t is float and math.isfinite(x):
            return repr(x)
        if x is Ellipsis:
            return "..."
        return self._const(x)

    def _call(self, k) -> str:
        args = [self._render(a) for a in (k.args[1:] if k.kind.endswith("method") else k.args)]
        args += [f"{name}={self._render(v)}" for name, v in k.kwargs.items()]
        kind = k.kind.split(":")[-1]
        if kind == "method":
            return f"{self._render(k.args[0])}.{k.attr}({', '.join(args)})"
        if kind == "getitem":
            return f"{self._render(k.args[0])}[{self._render(k.args[1])}]"
        if kind == "setitem":
            return f"{self._render(k.args[0])}[{self._render(k.args[1])}] = " \
                   f"{self._render(k.args[2])}"
        pooled = [o for o in k.outs if self.home.get(id(o)) == "buffer"]
        if pooled:
            outs = [self._name(o) for o in pooled]
            args.append(f"out={outs[0]}" if len(outs) == 1 and not k.multi
                        else f"out=({', '.join(outs)},)")
        return f"{self._const(k.fn, 'f')}({', '.join(args)})"

    def _line(self, k) -> list:
        expr = self._call(k)
        if k.kind.endswith("setitem") or all(o is None for o in k.outs) or (
                k.out_ok and all(self.home.get(id(o)) == "buffer" for o in k.outs)):
            return [expr]
        if not k.multi:
            o = k.outs[0]
            if o.scalar:
                expr = f"_asarray({expr})"
            return [f"{self._name(o)} = {expr}"]
        lhs = ", ".join("_" if o is None else self._name(o) for o in k.outs)
        lines = [f"{lhs}{',' if len(k.outs) == 1 else ''} = {expr}"]
        lines += [f"{self._name(o)} = _asarray({self._name(o)})" for o in k.outs
                  if o is not None and o.scalar]
        return lines

    def _bind(self, v) -> str:
        where = v.where
        if where[0] == "leaf":
            return f"L[{where[1]}].data" if where[2] else f"L[{where[1]}]"
        if where[0] == "tensor":
            return f"{self._const(where[1], 'o')}.data"
        _, owner, name, idx = where
        return f"{self._const(owner, 'o')}.{name}" + ("" if idx is None else f"[{idx!r}]")

    def _out(self, tpl) -> str:
        kind = tpl[0]
        if kind == "tensor":
            _, v, rg, name = tpl
            return f"_T({self._name(v)}, {rg!r}, {self._render(name)})"
        if kind == "array":
            return self._name(tpl[1])
        if kind == "scalar":
            return f"{self._name(tpl[1])}[()]"
        if kind == "leaf":
            return f"L[{tpl[1]}]"
        if kind == "obj":
            return self._const(tpl[1], "o")
        if kind == "const":
            c = self._const(tpl[1])
            return f"{c}.copy()" if isinstance(tpl[1], np.ndarray) else c
        items = [self._out(i) for i in tpl[-1]]
        if kind == "list":
            return "[" + ", ".join(items) + "]"
        if kind == "dict":
            return "{" + ", ".join(f"{self._render(k)}: {i}" for k, i in zip(tpl[1], items)) + "}"
        body = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if tpl[1] is tuple:
            return body
        return f"{self._const(tpl[1])}._make({body})" if hasattr(tpl[1], "_make") \
            else f"{self._const(tpl[1])}({body})"

    def _writeback(self, target, attr, w) -> str:
        if target[0] == "leaf":
            lhs = f"L[{target[1]}]"
        elif target[0] == "tensor":
            lhs = self._const(target[1], "o")
        else:
            lhs = f"{self._const(target[1], 'o')}.{target[2]}"
            rhs = self._wb_value(w)
            return f"{lhs} = {rhs}" if attr is None else f"{lhs}[{attr!r}] = {rhs}"
        rhs = "None" if w is None else self._wb_value(w)
        if attr == "grad" and w is not None:
            rhs = f"_G({rhs})"
        return f"{lhs}.{attr} = {rhs}"

    def _wb_value(self, w) -> str:
        if isinstance(w, Var):
            return self._name(w)
        c = self._const(w[1])
        return f"{c}.copy()" if isinstance(w[1], np.ndarray) else c

    def _generate(self) -> str:
        self._closure = {"_T": out_tensor, "_G": _grad_tensor, "_asarray": np.asarray,
                         "_copyto": np.copyto}
        self._const_names: dict = {}
        self._names: dict = {}
        self._keep: list = []
        hoisted, body = [], []
        for k in self.order:
            if not k.kind.startswith("fold:"):
                (hoisted if k.kind.startswith("hoist:") else body).extend(self._line(k))
        resets = []
        for k in self.order:
            for st in k.writes:
                if st.kind == "const" and st.snapshot is not None:
                    line = f"_copyto({self._const(st.owner, 'c')}, {self._const(st.snapshot, 's')})"
                    if line not in resets:
                        resets.append(line)
        writebacks = [self._writeback(*w) for w in self.writebacks]
        output = self._out(self.template)
        binds = []
        for v in self._bound_vars():
            binds.append(f"{self._name(v)} = {self._bind(v)}")
        params = ", ".join(self._closure)
        lines = [f"def _make({params}):"]
        lines += [f"    {h}" for h in hoisted]
        lines.append("    def replay(L):")
        lines += [f"        {s}" for s in binds + resets + body + writebacks]
        lines.append(f"        return {output}")
        lines.append("    return replay")
        return "\n".join(lines) + "\n"

    def _bound_vars(self) -> list:
        seen, out = set(), []
        refs = [v for k in self.order for v in k.reads] + self._escaping()
        for v in refs:
            if v.where is not None and id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        self.bound = sorted(out, key=lambda v: v.n)
        return self.bound

    def _exec(self):
        ns: dict = {}
        exec(compile(self.source, f"<tape {self.title}>", "exec"), ns)
        return ns["_make"]

    # ------------------------------------------------------------------ running
    def guards_ok(self) -> bool:
        for owner, name, value in self.guards:
            if getattr(owner, name) != value:
                return False
        return True

    def run_with(self, leaves, owners: dict, callbacks: dict):
        """Replay on stand-ins: ``owners`` maps each state owner to a stand-in and ``callbacks``
        each callback to a function giving the values it gave eagerly."""
        subst = dict(self._closure)
        for name, value in self._closure.items():
            if id(value) in owners:
                subst[name] = owners[id(value)]
            elif id(value) in callbacks:
                subst[name] = callbacks[id(value)]
        return self._make(**subst)(leaves)

    # ------------------------------------------------------------------ reading it
    def __str__(self) -> str:
        lines = [f"tape of {self.title}: {self.n_kernels()} kernels "
                 f"({self.recorded - len(self.order)} recorded ones dropped: nothing needs them), "
                 f"{len(self.bound)} arrays read per call, {len(self.buffers)} arrays in "
                 f"{len(self.blocks)} reused buffers "
                 f"({sum(b.nbytes for b in self.blocks) / 1e6:.2f} MB)"]
        for v in self.bound:
            lines.append(f"  {self._name(v):>6} <- {self.describe(v.where):<34} "
                         f"{_shape(v)}")
        folded = sum(k.kind.startswith("fold:") for k in self.order)
        if folded:
            lines[0] += f"; {folded} on constants only, folded"
        for k in self.order:
            if k.kind.startswith("fold:"):
                continue
            text = self._call(k)
            outs = [o for o in k.outs if o is not None]
            if k.kind.endswith("setitem") or not outs:
                lhs = "       "
            else:
                lhs = f"{', '.join(self._name(o) for o in outs):>6} ="
            hoist = "  (once)" if k.kind.startswith("hoist:") else ""
            for f, name in self._const_names_of(k):
                text = text.replace(name, f)
            shape = _shape(outs[0]) if outs else ""
            lines.append(f"  {lhs} {text:<58} {shape:<18} {k.label}{hoist}")
        for w in self.writebacks:
            lines.append(f"  {self._writeback(*w)}")
        lines.append(f"  return {self._out(self.template)}")
        return "\n".join(lines)

    def _const_names_of(self, k):
        if k.fn is not None:
            name = self._const_names.get(id(k.fn))
            if name is not None:
                yield _fn_name(k.fn), name

    def describe(self, where) -> str:
        if where[0] == "leaf":
            return f"input {where[1]}" + (" (Tensor)" if where[2] else "")
        if where[0] == "tensor":
            t = where[1]
            return f"{type(t).__name__} {t.name or ''}.data".replace(" .", ".")
        return f"{type(where[1]).__name__}.{where[2]}" + ("" if where[3] is None else
                                                        f"[{where[3]!r}]")

    def n_kernels(self) -> int:
        """Kernels a replay runs (folded and hoisted ones run once, when the tape is built)."""
        return sum(not k.kind.startswith(("fold:", "hoist:")) for k in self.order)

    def describe_target(self, target, attr) -> str:
        if target[0] == "leaf":
            return f"input {target[1]}'s .{attr}"
        if target[0] == "tensor":
            return f"{type(target[1]).__name__} {target[1].name or ''}.{attr}".replace(" .", ".")
        return f"{type(target[1]).__name__}.{target[2]}" + ("" if attr is None else f"[{attr!r}]")

    def release(self) -> None:
        """Drop the recorded call's arrays the replay does not need (after verifying)."""
        keep = {id(v) for v in self.bound}
        for k in self.order:
            k.record = None
            for v in list(k.reads) + [o for o in k.outs if o is not None]:
                v.snapshot = None
                if id(v) not in keep and not self._is_const(v) and v.storage.kind != "const":
                    v.plain = None
                    if v.storage.kind == "fresh":
                        v.storage.owner = None
        for k in self.kernels:
            if not k.needed:
                k.args = k.kwargs = None
                k.reads, k.outs = [], []
        self.kernels = self.order

    def __repr__(self) -> str:
        return f"<Tape {self.title}: {self.n_kernels()} kernels>"


def _root_sig(v) -> tuple:
    o = v.storage.owner
    return (o.__array_interface__["data"][0], o.shape, o.strides, o.dtype)


def _shape(v) -> str:
    return f"{v.dtype.name} {tuple(v.shape)}"
