"""Checking a tape against the eager call: once after recording, and at every call for check=True.

The tape is replayed on copies of what the call started from (its input arrays, the Tensors and
states it reads, stand-ins for their owners) with the callbacks giving the values they gave
eagerly; its outputs and everything it writes must equal, bit for bit, what fn did.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor
from .tape import Tape, same
from .traced import CompileError

__all__ = ["verify_recording", "checked_call", "capture"]

capture = None           # while a check=True call runs fn eagerly: the values callbacks gave


class StandIn:
    """Takes the place of a Tensor or a state owner while a tape is checked on copies."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def _copy(a):
    return np.array(a, copy=True) if isinstance(a, np.ndarray) else a


def _copy_result(res):
    return tuple(_copy(r) for r in res) if isinstance(res, tuple) else _copy(res)


def _read(where, leaves, owners):
    if where[0] == "leaf":
        x = leaves[where[1]]
        return x.data if where[2] else x
    if where[0] == "tensor":
        return owners.get(id(where[1]), where[1]).data
    _, owner, name, idx = where
    val = getattr(owners.get(id(owner), owner), name)
    return val if idx is None else val[idx]


def _written(target, attr, leaves, owners):
    """The value a writeback left in its target."""
    if target[0] == "leaf":
        return getattr(leaves[target[1]], attr)
    obj = owners.get(id(target[1]), target[1])
    if target[0] == "tensor":
        return getattr(obj, attr)
    val = getattr(obj, target[2])
    return val if attr is None else val[attr]


def _data_of(x):
    """Outputs with Tensors (and stand-ins) replaced by their arrays, for comparing."""
    if isinstance(x, (Tensor, StandIn)):
        return x.data
    if isinstance(x, (tuple, list)):
        return [_data_of(i) for i in x]
    if isinstance(x, dict):
        return {k: _data_of(v) for k, v in x.items()}
    return x


def _stand_ins(tape: Tape, leaves, recorded: bool):
    """Copies of everything the tape reads: the leaves, and stand-ins for Tensors and owners.
    ``recorded``: the values the recorded call started from, else the current ones."""
    fake_leaves = [StandIn(data=_copy(leaf.data), grad=None, name=leaf.name)
                   if isinstance(leaf, Tensor) else _copy(leaf) for leaf in leaves]
    owners: dict = {}
    for v in tape.bound:
        where = v.where
        value = _copy(v.snapshot if recorded else _read(where, leaves, {}))
        if where[0] == "leaf":
            if where[2]:
                fake_leaves[where[1]].data = value
            else:
                fake_leaves[where[1]] = value
        elif where[0] == "tensor":
            owners[id(where[1])] = StandIn(data=value, grad=None, name=where[1].name)
        else:
            _, owner, name, idx = where
            fake = owners.setdefault(id(owner), StandIn())
            if idx is None:
                setattr(fake, name, value)
            else:
                if not hasattr(fake, name):
                    held = getattr(owner, name)
                    setattr(fake, name, {k: _copy(a) for k, a in held.items()}
                            if isinstance(held, dict) else [_copy(a) for a in held])
                getattr(fake, name)[idx] = value
    for target, _, _ in tape.writebacks:
        if target[0] == "tensor" and id(target[1]) not in owners:
            owners[id(target[1])] = StandIn(data=None, grad=None, name=target[1].name)
        elif target[0] == "state" and id(target[1]) not in owners:
            held = getattr(target[1], target[2])
            owners[id(target[1])] = StandIn(**{target[2]: dict(held) if isinstance(held, dict)
                                               else list(held)})
    return fake_leaves, owners


def _replay_on(tape: Tape, fake_leaves, owners, values: list):
    queue = list(values)
    cbs = {id(k.fn): (lambda *a, **kw: _copy_result(queue.pop(0)))
           for k in tape.order if k.kind == "callback"}
    return tape.run_with(fake_leaves, owners, cbs)


def _differences(tape: Tape, leaves, out, fake_leaves, owners, replayed) -> list:
    problems = []
    if not same(_data_of(out), _data_of(replayed)):
        problems.append("the outputs")
    for v in tape.bound:
        if not same(_read(v.where, leaves, {}), _read(v.where, fake_leaves, owners)):
            problems.append(f"{tape.describe(v.where)} (written in place)")
    for target, attr, _ in tape.writebacks:
        if not same(_data_of(_written(target, attr, leaves, {})),
                    _data_of(_written(target, attr, fake_leaves, owners))):
            problems.append(f"what it leaves in {tape.describe_target(target, attr)}")
    return problems


def verify_recording(tape: Tape, leaves, out) -> None:
    """Replay the recorded call on copies of its starting values; refuse a tape that differs."""
    fake_leaves, owners = _stand_ins(tape, leaves, recorded=True)
    values = [k.record for k in tape.order if k.kind == "callback"]
    replayed = _replay_on(tape, fake_leaves, owners, values)
    problems = _differences(tape, leaves, out, fake_leaves, owners, replayed)
    if problems:
        raise CompileError(
            f"compile: replaying the recorded call did not reproduce it ({problems[0]} differ): "
            "fn changes or reads arrays in ways the recorder cannot see: BLAS or C code called on "
            "arrays directly (as the in-place SGD kernel of inner_step(in_place=True) and "
            "sgd_step_ do), np.array or np.float64 copies of traced arrays, or a plain array "
            "indexed by a traced one. Leave that function uncompiled")


def checked_call(tape: Tape, fn, args, kwargs, leaves):
    """check=True: fn runs eagerly (its results are returned) and the tape replays on copies of
    what the call started from; every output and every written array must agree."""
    global capture
    fake_leaves, owners = _stand_ins(tape, leaves, recorded=False)
    prev, capture = capture, []
    try:
        out = fn(*args, **kwargs)
        values = capture
    finally:
        capture = prev
    replayed = _replay_on(tape, fake_leaves, owners, values)
    problems = _differences(tape, leaves, out, fake_leaves, owners, replayed)
    if problems:
        raise CompileError(f"compile(check=True): the replay differs from eager in {problems[0]}: "
                           "a value the tape keeps constant depends on the inputs, or fn's Python "
                           "took another path than when it was recorded")
    return out
