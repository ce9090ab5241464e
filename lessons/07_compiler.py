# Lesson 7: what a compiler does (percent-format source of 07_compiler.ipynb; run
# `python lessons/_build.py` after editing it).

# %% [markdown]
# # Lesson 7: What a compiler does
#
# **What you will learn**
#
# - what `tinydan.compile` does to a training step: it runs the step once while it records every
#   NumPy kernel into a flat **tape**, then **replays** the tape on new arrays, with no Tensor, no
#   graph, no topological sort and none of your Python;
# - how to read a tape: the arrays it reads at every call, one line per kernel, the buffers it
#   reuses, what it drops because nothing needs it, and the Python function it becomes;
# - the classic bug of tracing compilers, the **stale constant**: a value computed from the inputs
#   (a relu mask, an arg-max) kept as a constant of the tape, and how tinydan avoids it;
# - why Python control flow is frozen when the step is recorded, and the error you get when a value
#   would steer it;
# - how much faster the replay is, and why its numbers are the eager ones, bit for bit.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import tinydan as td
from tinydan import ops
from tinydan.compiler import CompileError, compile
from tinydan.nn import Linear, Sequential
from tinydan.optim import Adam

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A step to compile
#
# A training step in tinydan is ordinary Python: a forward pass builds a graph of Tensors,
# `backward()` sorts it and calls every op's backward rule, the optimizer updates the parameters.
# All of that Python runs at every step, although it does the same thing every time; for small
# arrays it costs more than the arithmetic. A compiler removes the repeated work.
#
# Here is a small regression network, trained with Adam on batches of $\sin$: two models with the
# same initial weights, one stepped eagerly and one through `compile`.

# %%
def make_model():
    init = np.random.default_rng(1)
    model = Sequential(Linear(1, 16, rng=init), Linear(16, 1, rng=init))
    return model, Adam(model.parameters(), lr=0.01)


def make_step(model, opt):
    def step(x, y):
        opt.zero_grad()
        loss = ops.mse_loss(model(ops.tanh(x)), y)
        loss.backward()
        opt.step()
        return loss
    return step


eager_model, eager_opt = make_model()
eager_step = make_step(eager_model, eager_opt)
model, opt = make_model()
step = compile(make_step(model, opt))


def batch(n=32):
    x = rng.uniform(-3, 3, (n, 1)).astype(np.float32)      # the layers are float32
    return td.tensor(x), td.tensor(np.sin(x))


x, y = batch()
print("first call (recorded):", step(x, y).item(), " eager:", eager_step(x, y).item())
print(step)

# %% [markdown]
# The first call ran the step eagerly, exactly as `eager_step` did, while a recorder watched. The
# tape it wrote down is a list of NumPy calls: the forward, the backward, and Adam's update of
# the moments and the parameters.

# %%
print(step.tape)

# %% [markdown]
# How to read it:
#
# - the `<-` lines are what a replay **reads at every call**: the call's arguments (`input 0`, the
#   batch) and every Tensor the step reaches without being given it (the parameters' `.data`,
#   Adam's moments `m` and `v`);
# - then one line per kernel, in the order they ran, with the op that ran it (or the line of
#   Python, like `optim.py:...`). `out=bN` means the result goes into a **buffer** allocated once;
#   buffers are shared by arrays whose lifetimes do not overlap. `(once)` marks a view of a buffer
#   (a reshape, a transpose) made when the tape was built;
# - `_advance()` is Adam's step counter and bias corrections: Python that must run at every step,
#   so Adam puts it in a **callback** that the replay calls;
# - at the end, the writes back: the new parameters, their `.grad`, and the outputs.
#
# The replay is one generated Python function. This is its beginning:

# %%
print("\n".join(step.tape.source.splitlines()[:14]))

# %% [markdown]
# ## 2. Replaying
#
# Every later call with the same **signature** (shapes, dtypes, which Tensors require grad, the
# values of Python numbers) binds the new arrays and runs that function. The numbers are the eager
# ones bit for bit, because the replay calls the same NumPy kernels on the same arrays in the same
# order:

# %%
losses_eager, losses_compiled = [], []
for _ in range(200):
    x, y = batch()
    losses_eager.append(eager_step(x, y).item())
    losses_compiled.append(step(x, y).item())
same_weights = all(np.array_equal(a.data, b.data)
                   for a, b in zip(eager_model.parameters(), model.parameters()))
print("recorded", step.records, "time(s); loss curves identical:",
      losses_eager == losses_compiled, "; weights identical:", same_weights)

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.semilogy(losses_eager, lw=3, alpha=0.5, label="eager")
ax.semilogy(losses_compiled, "k", lw=1, label="compiled (replayed tape)")
ax.set_xlabel("step")
ax.set_ylabel("batch loss")
ax.set_title("the same training curve, one computed with no graph at all")
ax.legend()
plt.show()

# %% [markdown]
# A new signature (another batch size, say) records a new tape; `compile` keeps a few in a small
# cache, so switching back costs nothing.

# %%
x5, y5 = batch(5)
step(x5, y5)
print("after a batch of 5:", step.records, "tapes recorded;", len(step.tapes()), "cached")

# %% [markdown]
# ## 3. What a compiler can do with a tape
#
# A tape is a program with no control flow, so it can be planned once:
#
# - **dead code**: a kernel whose result nothing uses is dropped. The recorder saw it run, the
#   replay never runs it;
# - **constants**: a kernel whose inputs are all constants (the gradient seed, a broadcast of a
#   number) is folded into its result;
# - **memory**: buffers are allocated once and reused; the outputs are fresh arrays at every call,
#   so a result you keep is never overwritten by the next call.

# %%
w = td.tensor(rng.standard_normal((3, 3)), requires_grad=True)


def wasteful(x):
    h = ops.tanh(x @ w)
    diagnostics = ops.exp(h).sum()       # computed, never returned
    return ops.mean(h * h)


f = compile(wasteful)
f(td.tensor(rng.standard_normal((4, 3))))
print(f.tape)

# %% [markdown]
# `exp` ran while recording, and nothing needs it: the tape counts it among the dropped kernels and
# the replay never computes it.

# %% [markdown]
# ## 4. The stale constant
#
# The hard part of a tracing compiler is telling a constant from a value. Look at relu: its
# backward rule multiplies the gradient by the mask $x > 0$, which tinydan computes from the
# forward's input inside `Relu.backward`, in NumPy. A tracer that records only what ops return
# would see that mask as an array that was "just there", and keep it: every replay would then use
# the mask of the first batch. We can make that bug by hand:

# %%
def relu_grad(x_array, frozen_mask=None):
    """d sum(relu(x)^2) / dx, optionally with a mask recorded earlier."""
    xt = td.tensor(x_array, requires_grad=True)
    if frozen_mask is None:
        return td.grad((ops.relu(xt) ** 2).sum(), xt).data
    return 2 * np.maximum(x_array, 0) * frozen_mask       # what a stale tape would compute


x_next = rng.standard_normal(6)
x_first = -x_next                                          # the first batch had other signs
stale = relu_grad(x_next, frozen_mask=(x_first > 0))
print("right gradient:     ", relu_grad(x_next).round(3))
print("with a stale mask:  ", stale.round(3))

# %% [markdown]
# tinydan's recorder cannot make that mistake, because it never decides what is constant by
# looking at where an array came from. While it records, every array that depends on the inputs is
# a `TracedArray`: a NumPy array whose ufuncs, functions, indexing and methods are reported to the
# recorder. `x > 0` is a ufunc on a traced array, so it is a kernel of the tape like any other:

# %%
g = compile(lambda x: td.grad((ops.relu(x) ** 2).sum(), x))
g(td.tensor(x_first, requires_grad=True))                 # records
print(g.tape)
for _ in range(3):
    xs = td.tensor(rng.standard_normal(6), requires_grad=True)
    assert np.array_equal(g(xs).data, relu_grad(xs.data))
print("the compiled relu gradient is right on new inputs")

# %% [markdown]
# The same holds for the arg-max of `max`, the masks of `maximum` and `where`, and every array an
# op saves on its ctx in the forward for its backward. Each new tape is also replayed once on a
# copy of the recorded call, and must reproduce it exactly: that catches code that writes into
# arrays behind the recorder's back, such as BLAS called directly on raw arrays.
#
# When you suspect a tape anyway, `compile(fn, check=True)` runs the replay and your function side
# by side at every call and raises at the first difference.

# %% [markdown]
# ## 5. Python is frozen
#
# The replay runs none of your Python: loops and `if`s happened once, while recording. Control flow
# that depends only on shapes and settings (a loop over layers) is fine. Control flow that depends on
# a *value* cannot be replayed, and the recorder refuses it, naming the line:

# %%
def clipped_update(g, max_norm=1.0):
    norm = ops.sqrt(ops.sum(g * g))
    if norm.data > max_norm:                  # a decision on a value
        return g * (max_norm / norm)
    return g


try:
    compile(clipped_update)(td.tensor(rng.standard_normal(4)))
except CompileError as err:
    print("CompileError:", err)

# %% [markdown]
# The same error comes from `float(...)`, `.item()` and `bool(...)` on a value inside the compiled
# function. Exercise 3 rewrites this function so that the value flows through arithmetic instead.

# %% [markdown]
# ## 6. How much faster?
#
# The replay skips the Python: Tensor objects, the graph, the topological sort, the dispatch of
# every op and its backward. What is left is the arithmetic. For the inner step of the regression
# experiment's network (a forward, a backward to the synapses, an SGD step: about 100 kernels on
# small arrays), timing calls in turns:

# %%
from tinydan.experiments.configs import build_regression_net, regression_config
from tinydan.meta import inner_step

cfg = regression_config("default")
net = build_regression_net(cfg, np.random.default_rng(0))
theta0 = net.init_synapses(1, np.random.default_rng(1))


def synapse_step(theta, x, y):
    return inner_step(net, theta, x, y, cfg.inner_lr)


fast = compile(synapse_step)
thetas = {"eager": {k: td.tensor(v, requires_grad=True) for k, v in theta0.items()},
          "compiled": {k: td.tensor(v, requires_grad=True) for k, v in theta0.items()}}
times = {"eager": [], "compiled": []}
for i in range(300):
    xb = rng.uniform(-5, 5, (1, 1, 1)).astype(np.float32)
    for name, fn in (("eager", synapse_step), ("compiled", fast)):
        t0 = time.perf_counter()
        thetas[name], _ = fn(thetas[name], xb, np.sin(xb))
        times[name].append(time.perf_counter() - t0)
median = {name: 1e3 * np.median(t[20:]) for name, t in times.items()}
print(f"eager {median['eager']:.3f} ms, compiled {median['compiled']:.3f} ms per step: "
      f"{median['eager'] / median['compiled']:.1f}x; synapses identical: "
      f"{all(np.array_equal(thetas['eager'][k].data, thetas['compiled'][k].data) for k in theta0)}")

# %% [markdown]
# The ratio depends on the machine and on how small the arrays are: the bigger the arrays, the more
# of the step is arithmetic that both run alike. The meta-steps of Algorithm 1 (`meta_step`, then
# Adam on phi) compile the same way, as long as they hand their losses back as NumPy values: a
# `float()` inside a compiled function is a value read into Python.

# %% [markdown]
# ## Exercises
#
# Each exercise has an answer cell marked `# YOUR ANSWER`: replace every
# `raise NotImplementedError(...)` in it with your code, then run the check cell below it. The check
# fails, with a message that says what is wrong, until your answer is right. (Run top to bottom,
# this notebook stops at the first exercise not yet answered; `lessons/solutions/` has the same
# notebook with reference solutions.)
#
# Exercises 1 and 2 use a tape of our own: a list of kernels `(function, input slots, output
# slot)`. Slots `0 .. n-1` hold the `n` inputs; every kernel reads its input slots and writes its
# output slot:

# %%
mini_tape = [
    (np.matmul, (0, 1), 3),      # z = x @ W
    (np.add, (3, 2), 4),         # a = z + b
    (np.tanh, (4,), 5),          # h = tanh(a)
    (np.exp, (3,), 6),           # e = exp(z): nothing below reads slot 6
    (np.sum, (5,), 7),           # s = sum(h)
    (np.square, (5,), 8),        # q = h^2
]

# %% [markdown]
# ### Exercise 1: replay a tape
#
# Write `replay(tape, inputs, outputs)`: put the arrays `inputs` in slots `0 .. len(inputs)-1`,
# run every kernel in order, and return the list of the values in the slots `outputs`.

# %%
# YOUR ANSWER
def replay(tape, inputs, outputs):
    # BEGIN SOLUTION
    slots = dict(enumerate(inputs))
    for fn, ins, out in tape:
        slots[out] = fn(*[slots[i] for i in ins])
    return [slots[o] for o in outputs]
    # END SOLUTION

# %%
x_in, W_in, b_in = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
got = replay(mini_tape, [x_in, W_in, b_in], [7, 6])
assert isinstance(got, list) and len(got) == 2, "replay should return a list, one value per output"
h_want = np.tanh(x_in @ W_in + b_in)
assert np.allclose(got[0], h_want.sum()), f"slot 7 should be sum(tanh(x W + b)), got {got[0]}"
assert np.allclose(got[1], np.exp(x_in @ W_in)), "slot 6 should be exp(x W)"
x_new = rng.standard_normal((4, 3))
assert np.allclose(replay(mini_tape, [x_new, W_in, b_in], [7])[0],
                   np.tanh(x_new @ W_in + b_in).sum()), "replaying with new inputs went wrong"
print("Exercise 1: correct")

# %% [markdown]
# ### Exercise 2: dead-code elimination
#
# Write `live(tape, outputs)`: the sorted list of the indices of the kernels that must run to
# produce the slots `outputs`. Walk the tape backwards: a kernel is live when a live kernel (or an
# output) reads the slot it writes.

# %%
# YOUR ANSWER
def live(tape, outputs):
    # BEGIN SOLUTION
    needed, keep = set(outputs), []
    for i in range(len(tape) - 1, -1, -1):
        fn, ins, out = tape[i]
        if out in needed:
            keep.append(i)
            needed.update(ins)
    return sorted(keep)
    # END SOLUTION

# %%
assert list(live(mini_tape, [7])) == [0, 1, 2, 4], \
    f"sum(tanh(x W + b)) needs kernels [0, 1, 2, 4], got {live(mini_tape, [7])}"
assert list(live(mini_tape, [6])) == [0, 3], f"exp(x W) needs [0, 3], got {live(mini_tape, [6])}"
assert list(live(mini_tape, [7, 8])) == [0, 1, 2, 4, 5], "two outputs need the union"
assert list(live(mini_tape, [1])) == [], "an input needs no kernel at all"
pruned = [mini_tape[i] for i in live(mini_tape, [7])]
assert np.allclose(replay(pruned, [x_in, W_in, b_in], [7])[0], h_want.sum())
print("Exercise 2: correct; the pruned tape has", len(pruned), "of", len(mini_tape), "kernels")

# %% [markdown]
# ### Exercise 3: no value may steer Python
#
# Rewrite `clipped_update` from section 5 as `clip_by_norm(g, max_norm)` with tinydan ops only and
# no `if` on a value: scale `g` by $\min\big(1, \text{max\_norm} / \lVert g \rVert\big)$
# (`ops.minimum` takes a number and a tensor). It must compile, and agree with `clipped_update`
# on both sides of the threshold.

# %%
# YOUR ANSWER
def clip_by_norm(g, max_norm=1.0):
    # BEGIN SOLUTION
    norm = ops.sqrt(ops.sum(g * g))
    return g * ops.minimum(1.0, max_norm / norm)
    # END SOLUTION

# %%
clip_fast = compile(clip_by_norm)
for scale in (0.1, 0.5, 2.0, 10.0):                       # norms below and above 1
    gt = td.tensor(scale * rng.standard_normal(4) / 2)
    want = clipped_update(gt).data
    got = clip_fast(gt)
    assert isinstance(got, td.Tensor), "clip_by_norm should return a Tensor"
    assert np.allclose(got.data, want), (
        f"for a gradient of norm {np.linalg.norm(gt.data):.2f} expected {want.round(4)}, got "
        f"{got.data.round(4)}")
assert clip_fast.records == 1, "one tape should serve every norm: no value may steer Python"
print("Exercise 3: correct")
