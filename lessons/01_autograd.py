# Lesson 1: autograd from scratch (percent-format source of 01_autograd.ipynb; run
# `python lessons/_build.py` after editing it).

# %% [markdown]
# # Lesson 1: Autograd from scratch
#
# **What you will learn**
#
# - how reverse-mode automatic differentiation works: every value remembers the values it was made
#   from, and `backward()` walks that graph from the output back to the inputs, applying the chain
#   rule one operation at a time;
# - how to build it yourself in 40 lines, for scalars (a `Value` class in the spirit of micrograd);
# - how the same idea looks in `tinydan`, where every node is a NumPy array (`td.Tensor`): the graph
#   (`t.inputs`, `t.is_leaf`), `backward()`, gradient accumulation and `zero_grad()`, broadcasting
#   undone in the backward pass, and `td.no_grad()`;
# - how a tinydan operation is written (`td.Op`: forward on arrays, backward in tinydan ops) and
#   checked;
# - how all of this trains a small neural network with plain gradient descent.
#
# The whole of the paper ("Continual Learning with Deep Artificial Neurons") rests on this
# machinery: the synapses (VECs) and the neuronal phenotype (the shared DAN) are both trained by
# backpropagation, and meta-learning the phenotype needs gradients *of* gradients (lesson 2).

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import tinydan as td
from tinydan.testing import check_grad

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A scalar autograd engine
#
# A `Value` holds a number (`data`), the derivative of the final output with respect to it (`grad`),
# the `Value`s it was computed from (`inputs`) and a small function `_backward` that knows the local
# derivative of the operation that made it. For `out = a * b` the chain rule says
#
# $$\frac{\partial L}{\partial a} \mathrel{+}= \frac{\partial L}{\partial \text{out}} \cdot b,
#   \qquad
#   \frac{\partial L}{\partial b} \mathrel{+}= \frac{\partial L}{\partial \text{out}} \cdot a .$$
#
# The `+=` matters: a value used twice receives a gradient from each use.
#
# `backward()` must call every node's `_backward` *after* all the nodes that use it, so it first
# sorts the graph topologically. The sort below uses an explicit stack instead of recursion, so a
# chain of 100,000 operations does not overflow Python's recursion limit.

# %%
def topological_order(root, inputs_of=lambda v: v.inputs):
    """Every node that leads to ``root``, each one listed after all of its inputs (no recursion)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:                 # second visit: all its inputs are already in `order`
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for x in reversed(inputs_of(node)):   # reversed: the first input is visited first
            if id(x) not in seen:
                stack.append((x, False))
    return order


class Value:
    """A scalar that remembers how it was made."""

    def __init__(self, data, inputs=(), op="", label=""):
        self.data = float(data)
        self.grad = 0.0
        self.inputs = inputs            # the Values this one was computed from
        self.op = op                    # the name of the operation that made it
        self.label = label
        self._backward = lambda: None   # adds self.grad * (local derivative) to each input's grad

    def __repr__(self):
        return f"Value({self.label or self.op}: data={self.data:.4f}, grad={self.grad:.4f})"

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():                # d(a + b)/da = 1, d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():                # d(a b)/da = b, d(a b)/db = a
            self.grad += out.grad * other.data
            other.grad += out.grad * self.data
        out._backward = _backward
        return out

    __radd__ = __add__
    __rmul__ = __mul__

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward():                # d tanh(a)/da = 1 - tanh(a)^2
            self.grad += out.grad * (1.0 - t * t)
        out._backward = _backward
        return out

    def backward(self):
        """Fill in d(self)/d(v) for every v that self was computed from."""
        order = topological_order(self)
        self.grad = 1.0                 # d(self)/d(self)
        for v in reversed(order):       # outputs first, inputs last
            v._backward()

# %% [markdown]
# A single artificial neuron, `o = tanh(x1 w1 + x2 w2 + b)`, is a good first graph.

# %%
x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
b = Value(6.8813735870195432, label="b")
x1w1 = x1 * w1
x1w1.label = "x1*w1"
x2w2 = x2 * w2
x2w2.label = "x2*w2"
s = x1w1 + x2w2
s.label = "sum"
n = s + b
n.label = "n"
o = n.tanh()
o.label = "o"
o.backward()
for v in (x1, x2, w1, w2, b):
    print(v)

# %% [markdown]
# Let us look at the graph. Each box shows a node's value and the gradient `backward()` left in it;
# arrows go from inputs to the operation's output. Read the gradients from right to left: `o` has
# gradient 1; `tanh'(n) = 1 - o^2 = 0.5` flows into `n`; a sum passes its gradient unchanged to both
# of its inputs; a product sends each input the gradient times the *other* input (so `x2` receives
# `w2 * 0.5` and `w2` receives `x2 * 0.5 = 0`).

# %%
def draw_graph(root, label_of, inputs_of=lambda v: v.inputs, ax=None, title=None):
    """Draw a computation graph with matplotlib: one text box per node, arrows input -> output."""
    order = topological_order(root, inputs_of)
    depth = {}
    for v in order:                                   # a node sits one column right of its inputs
        ins = inputs_of(v)
        depth[id(v)] = 1 + max(depth[id(x)] for x in ins) if ins else 0
    for v in reversed(order):                         # a leaf sits just left of its first user
        users = [depth[id(u)] for u in order if any(x is v for x in inputs_of(u))]
        if not inputs_of(v) and users:
            depth[id(v)] = min(users) - 1
    columns = {}
    for v in sorted(order, key=lambda v: not inputs_of(v)):   # op outputs above leaves
        columns.setdefault(depth[id(v)], []).append(v)
    n_cols, n_rows = max(columns) + 1, max(len(c) for c in columns.values())
    if ax is None:
        _, ax = plt.subplots(figsize=(2.3 * n_cols + 1, 1.1 * n_rows + 1))
    pos = {}
    for d, nodes in columns.items():
        for i, v in enumerate(nodes):
            pos[id(v)] = (d, (len(nodes) - 1) / 2 - i)
    boxes = {}
    for v in order:
        leaf = not inputs_of(v)
        boxes[id(v)] = ax.text(*pos[id(v)], label_of(v), ha="center", va="center", fontsize=8,
                               family="monospace",
                               bbox=dict(boxstyle="round,pad=0.4",
                                         fc="#dbe9f6" if leaf else "#fde2c8", ec="0.3"))
    for v in order:
        for x in inputs_of(v):
            ax.annotate("", xy=(0, 0.5), xycoords=boxes[id(v)], xytext=(1, 0.5),
                        textcoords=boxes[id(x)],
                        arrowprops=dict(arrowstyle="->", color="0.35", shrinkA=6, shrinkB=6))
    ax.set_xlim(-0.6, n_cols - 0.4)
    ax.set_ylim(-n_rows / 2, n_rows / 2)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def value_label(v):
    head = v.label + (f"  ({v.op})" if v.op else "")
    return f"{head}\ndata {v.data:+.4f}\ngrad {v.grad:+.4f}"


draw_graph(o, value_label,
           title="o = tanh(x1*w1 + x2*w2 + b): leaves in blue, op outputs in orange")
plt.show()

# %% [markdown]
# **Trust, but verify.** A derivative is a limit of difference quotients, so we can check the
# gradient of `w1` by nudging it: $(o(w_1 + \epsilon) - o(w_1 - \epsilon)) / 2\epsilon$. Lesson 2 is
# all about doing this well.

# %%
def neuron(w1_value):
    return math.tanh(2.0 * w1_value + 0.0 * 1.0 + 6.8813735870195432)


eps = 1e-6
numeric = (neuron(-3.0 + eps) - neuron(-3.0 - eps)) / (2 * eps)
print(f"backward: {w1.grad:.8f}   central difference: {numeric:.8f}")
assert abs(w1.grad - numeric) < 1e-6

# %% [markdown]
# ## 2. The same engine on arrays: `tinydan.Tensor`
#
# tinydan works exactly like `Value`, with two differences:
#
# 1. every node is a NumPy array, so one node can be a whole layer's activations;
# 2. a backward rule is not a closure that adds floats: it is written with tinydan's own operations,
#    which is what makes gradients of gradients possible (lesson 2).
#
# Leaves are tensors you make yourself; `requires_grad=True` marks the ones you want gradients for.
#
# A word on dtypes: Python numbers and lists become float32 (the default, used for training), a
# NumPy float64 array stays float64, and `dtype=` says what you want. tinydan never mixes the two
# silently: `float32 * float64` is an error that tells you to convert with `.astype()`. Here we use
# float64 so that the numbers match the Python floats of the `Value` engine exactly.

# %%
x = td.tensor([2.0, 0.0], dtype="float64")
w = td.tensor([-3.0, 1.0], dtype="float64", requires_grad=True)
bias = td.tensor(6.8813735870195432, dtype="float64", requires_grad=True)
n_t = (x * w).sum() + bias
o_t = td.tanh(n_t)
o_t.backward()
print("w.grad   ", w.grad, "   (Value engine:", w1.grad, w2.grad, ")")
print("bias.grad", bias.grad, "   (Value engine:", b.grad, ")")
assert np.allclose(w.grad.data, [w1.grad, w2.grad]) and np.isclose(bias.grad.item(), b.grad)

# %% [markdown]
# ### The graph
#
# A tensor made by an operation knows its inputs (`t.inputs`); a tensor you made yourself is a leaf
# (`t.is_leaf`). `x` needs no gradient, so it has none after `backward()`, and only the leaves that
# require grad keep a `.grad` (intermediate gradients are freed as the backward pass goes).

# %%
print("o_t.is_leaf:", o_t.is_leaf, "  w.is_leaf:", w.is_leaf)
print("o_t.inputs: ", o_t.inputs)
print("x.grad:", x.grad, "  n_t.grad:", n_t.grad)

# %% [markdown]
# The same drawing function works on tinydan tensors, because a `Tensor` also has `.inputs`.
# Tensors have an optional `name`; we give the intermediate ones names to label the boxes.

# %%
x.name, w.name, bias.name = "x", "w", "bias"
xw = x * w
xw.name = "x * w"
s_t = xw.sum()
s_t.name = "sum"
n_t = s_t + bias
n_t.name = "n"
o_t = td.tanh(n_t)
o_t.name = "o = tanh(n)"


def tensor_label(t):
    values = np.array2string(t.data, precision=3, separator=", ")
    return f"{t.name}  {t.shape}\n{values}\nrequires_grad={t.requires_grad}"


draw_graph(o_t, tensor_label, title="the same neuron in tinydan: one node per array")
plt.show()

# %% [markdown]
# ### tinydan's own picture of the graph: `tinydan.viz`
#
# tinydan ships a drawing of any graph, `tinydan.viz.draw_graph(*tensors)`, that shows what the
# engine itself records: one box per tensor, labelled with the `td.Op` that made it (its class
# name) and its shape; leaves that require grad in green, constants grey and dashed, the outputs
# in red. `viz.graph_of` returns the same graph as data: the nodes in topological order (inputs
# first), each with its op and shape, and the edges from input to op. Here is a small layer and its
# loss, $\text{mean}\big(\tanh(x W + b)^2\big)$:

# %%
from tinydan import viz

rng_small = np.random.default_rng(1)              # its own generator: rng's stream stays as it was
x_small = td.Tensor(rng_small.standard_normal((4, 3)), name="x")
W_small = td.Tensor(rng_small.standard_normal((3, 2)), requires_grad=True, name="W")
b_small = td.Tensor(np.zeros(2), requires_grad=True, name="b")
loss_small = (td.tanh(x_small @ W_small + b_small) ** 2).mean()
print(viz.graph_of(loss_small))
viz.draw_graph(loss_small, title="mean(tanh(x @ W + b) ** 2)")

# %% [markdown]
# Each op box is one call of an op's `forward`; `loss_small.backward()` visits the same boxes from
# the bottom up, calling each op's `backward` (`PowScalar` is `** 2`). `x` is a constant:
# `backward()` computes no gradient for it. The `Add` broadcasts `b` from shape `(2,)` to `(4, 2)`,
# which the backward pass has to undo (see below). Lesson 2 draws a graph that contains a backward
# pass, and lesson 5 the graph of a meta-gradient.

# %% [markdown]
# ### Gradients accumulate; `zero_grad()` resets them
#
# `backward()` *adds* into `.grad`, like the `+=` in `Value`. That is what you want when a parameter
# is used in several places, or when you sum gradients over several batches, but it means a training
# loop must reset the gradients before each step.

# %%
a = td.tensor([1.0, 2.0, 3.0], requires_grad=True)
(a * a).sum().backward()
print("after one backward: ", a.grad)          # d/da sum(a^2) = 2a
(a * a).sum().backward()
print("after two backwards:", a.grad)          # 2a + 2a
a.zero_grad()
print("after zero_grad:    ", a.grad)

# %% [markdown]
# ### Broadcasting is undone in the backward pass
#
# NumPy broadcasting silently copies an array along new or size-1 axes: adding a bias of shape
# `(4,)` to activations of shape `(3, 4)` uses each bias entry three times. Each copy receives its
# own gradient, so the backward pass must **sum** the gradient over the broadcast axes, back to the
# input's shape (tinydan's `sum_to`). That is why a bias's gradient is the sum over the batch.

# %%
acts = td.tensor(rng.standard_normal((3, 4)), dtype="float32", requires_grad=True)
bias4 = td.tensor(np.zeros(4), dtype="float32", requires_grad=True)
out = acts + bias4                             # (3, 4) + (4,) -> (3, 4)
g = np.arange(12, dtype=np.float32).reshape(3, 4)
out.backward(g)                                # upstream gradient dL/d(out) = g
print("out.shape", out.shape, " bias4.grad.shape", bias4.grad.shape)
print("bias4.grad     ", bias4.grad)
print("g.sum(axis=0)  ", g.sum(axis=0))
col = td.tensor(np.ones((3, 1)), dtype="float32", requires_grad=True)
row = td.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
(col * row).backward(g)                       # (3, 1) * (4,) -> (3, 4): both are broadcast
print("col.grad (g @ row, summed over the broadcast last axis):", col.grad.data.ravel(),
      " =", g @ row.data)

# %% [markdown]
# ### `td.no_grad()`: compute without recording
#
# Inside `with td.no_grad():` operations record no graph: results have `requires_grad=False` and no
# inputs. Use it when you only need numbers: evaluating a model, or plotting its predictions.

# %%
with td.no_grad():
    y_eval = (a * 2.0).sum()
print("inside no_grad:  requires_grad =", y_eval.requires_grad, " inputs =", y_eval.inputs)
y_rec = (a * 2.0).sum()
print("outside no_grad: requires_grad =", y_rec.requires_grad, " is_leaf =", y_rec.is_leaf)

# %% [markdown]
# ## 3. Writing an operation: softplus
#
# Every tinydan operation is a subclass of `td.Op` with two static methods:
#
# - `forward(ctx, *arrays)`: plain NumPy on the input **arrays**; returns an array;
# - `backward(ctx, g)`: given the upstream gradient `g` (a **Tensor**), returns one gradient per
#   input, written with **tinydan operations**. The inputs are in `ctx.inputs` (Tensors) and the
#   output is `ctx` itself.
#
# `td.apply(Op, *tensors)` runs the forward pass and, if some input requires grad, links the output
# to its inputs. Here is softplus, $\mathrm{softplus}(a) = \log(1 + e^a)$, whose derivative is the
# logistic sigmoid $\sigma(a) = 1 / (1 + e^{-a})$:

# %%
class Softplus(td.Op):
    @staticmethod
    def forward(ctx, a):
        return np.logaddexp(0.0, a)           # log(e^0 + e^a), without overflow for large a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.inputs
        return (g * td.sigmoid(a),)           # tinydan ops: this backward is differentiable too


def softplus(x):
    """log(1 + e^x), elementwise; derivative sigmoid(x)."""
    return td.apply(Softplus, x)


# check_grad compares the gradient (and, with order=2, Hessian-vector products) with finite
# differences in float64; it returns True or raises an AssertionError naming the worst element.
print(check_grad(softplus, rng.standard_normal((3, 4)), order=2))

# %% [markdown]
# Because the backward pass is itself made of tinydan operations, we can differentiate softplus
# twice. `td.grad(outputs, inputs, create_graph=True)` returns the gradient as a tensor with a graph
# of its own (lesson 2 explains this in detail).

# %%
xs = td.tensor(np.linspace(-4, 4, 200), dtype="float64", requires_grad=True)
ys = softplus(xs)
dy = td.grad(ys.sum(), xs, create_graph=True)     # softplus'(x) = sigmoid(x), elementwise
d2y = td.grad(dy.sum(), xs)                      # softplus''(x) = sigmoid(x) (1 - sigmoid(x))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(xs.data, ys.data, label="softplus(x)")
ax.plot(xs.data, np.maximum(xs.data, 0), "k:", label="relu(x)")
ax.plot(xs.data, dy.data, label="first derivative (td.grad)")
ax.plot(xs.data, d2y.data, label="second derivative (td.grad of td.grad)")
ax.set_xlabel("x")
ax.legend()
ax.set_title("softplus: a smooth relu, differentiated twice by tinydan")
plt.show()

# %% [markdown]
# ## 4. Training a tiny MLP with plain gradient descent
#
# Now the whole loop: a multi-layer perceptron `1 -> 32 -> 32 -> 1` with tanh, fit to 64 noisy
# points of a curve by minimising the mean squared error with plain (full-batch) gradient descent:
#
# $$\theta \leftarrow \theta - \eta \, \nabla_\theta \,
#   \frac{1}{N}\sum_i (f_\theta(x_i) - y_i)^2 .$$
#
# Each step: forward pass, `backward()`, update every parameter's array in place, `zero_grad()`.
# The update itself must not be recorded in the graph, which is why it works on the raw arrays
# (`p.data`).

# %%
rng = np.random.default_rng(0)
x_train = np.linspace(-3, 3, 64, dtype=np.float32)[:, None]                  # (64, 1)
y_train = (np.sin(1.5 * x_train) + 0.3 * x_train
           + 0.1 * rng.standard_normal(x_train.shape)).astype(np.float32)    # (64, 1)


def init_layer(n_in, n_out):
    W = td.tensor(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in), dtype="float32",
                  requires_grad=True)
    b = td.tensor(np.zeros(n_out), dtype="float32", requires_grad=True)
    return [W, b]


params = init_layer(1, 32) + init_layer(32, 32) + init_layer(32, 1)


def mlp(params, x):
    W1, b1, W2, b2, W3, b3 = params
    h = td.tanh(x @ W1 + b1)                 # (N, 32); b1 (32,) is broadcast over the batch
    h = td.tanh(h @ W2 + b2)                 # (N, 32)
    return h @ W3 + b3                       # (N, 1)


X, Y = td.tensor(x_train), td.tensor(y_train)
lr, losses = 0.015, []
for step in range(3000):
    loss = td.mse_loss(mlp(params, X), Y)
    loss.backward()
    for p in params:
        p.data -= lr * p.grad.data           # gradient descent on the raw array
        p.zero_grad()
    losses.append(loss.item())
print(f"loss: first step {losses[0]:.4f}, last step {losses[-1]:.4f} "
      f"(the noise alone has mean square {0.1 ** 2:.4f})")

# %%
x_grid = np.linspace(-3.5, 3.5, 300, dtype=np.float32)[:, None]
with td.no_grad():                           # predictions only: no graph needed
    y_grid = mlp(params, td.tensor(x_grid)).data
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
ax1.plot(x_train, y_train, "o", ms=4, alpha=0.6, label="noisy data")
ax1.plot(x_grid, np.sin(1.5 * x_grid) + 0.3 * x_grid, "k:", label="true curve")
ax1.plot(x_grid, y_grid, lw=2, label="MLP after training")
ax1.set_xlabel("x")
ax1.legend()
ax1.set_title("the fit")
ax2.semilogy(losses)
ax2.axhline(0.1 ** 2, color="k", ls=":", label="noise level")
ax2.set_xlabel("gradient descent step")
ax2.set_ylabel("mean squared error")
ax2.legend()
ax2.set_title("the loss curve")
plt.tight_layout()
plt.show()

# %% [markdown]
# Try `lr = 0.1` in the training cell: the loss curve grows spikes, where a step overshoots the
# valley it was descending and the next steps climb back down. Plain gradient descent is simple, and
# its step size matters.
#
# ## Exercises
#
# Each exercise has an answer cell marked `# YOUR ANSWER`: replace every
# `raise NotImplementedError(...)` in it with your code, then run the check cell below it. The check
# fails, with a message that says what is wrong, until your answer is right. (Run top to bottom,
# this notebook stops at the first exercise not yet answered; `lessons/solutions/` has the same
# notebook with reference solutions.)
#
# ### Exercise 1: `Value.exp`
#
# Give the scalar engine an exponential: `v.exp()` returns a new `Value` $e^v$ whose `_backward`
# adds the right amount to `v.grad`. (Hint: $\frac{d}{dv} e^v = e^v$, which is the output's own
# data.)

# %%
# YOUR ANSWER
def value_exp(self):
    # BEGIN SOLUTION
    e = math.exp(self.data)
    out = Value(e, (self,), "exp")

    def _backward():
        self.grad += out.grad * e
    out._backward = _backward
    return out
    # END SOLUTION


Value.exp = value_exp

# %%
# Check: the gradients of f(a, b) = exp(a * b) + a * exp(b) against tinydan's, at a few points.
for a0, b0 in [(0.5, -1.0), (-1.2, 0.3), (0.0, 2.0)]:
    va, vb = Value(a0, label="a"), Value(b0, label="b")
    f = (va * vb).exp() + va * vb.exp()
    f.backward()
    ta = td.tensor(a0, dtype="float64", requires_grad=True)
    tb = td.tensor(b0, dtype="float64", requires_grad=True)
    tf = td.exp(ta * tb) + ta * td.exp(tb)
    tf.backward()
    assert abs(f.data - tf.item()) < 1e-9, \
        f"exp's forward value is wrong at a={a0}, b={b0}: got {f.data}, expected {tf.item()}"
    assert abs(va.grad - ta.grad.item()) < 1e-9 and abs(vb.grad - tb.grad.item()) < 1e-9, (
        f"at a={a0}, b={b0} your gradients are (df/da, df/db) = ({va.grad:.6f}, {vb.grad:.6f}) "
        f"but tinydan says ({ta.grad.item():.6f}, {tb.grad.item():.6f}); check that _backward "
        "ADDS out.grad * exp(v) to self.grad")
print("Exercise 1: correct")

# %% [markdown]
# ### Exercise 2: a SiLU op
#
# Write the SiLU (or "swish") activation $\mathrm{silu}(x) = x\,\sigma(x)$ as a `td.Op`. Its
# derivative is $\sigma(x) + x\,\sigma(x)(1 - \sigma(x))$. Write `forward` in NumPy and `backward`
# with tinydan operations only (`td.sigmoid`, `*`, `+`, `-` on Tensors), so that the check can
# differentiate it twice.

# %%
# YOUR ANSWER
class SiLU(td.Op):
    @staticmethod
    def forward(ctx, a):
        # BEGIN SOLUTION
        return a * 0.5 * (1.0 + np.tanh(0.5 * a))        # a * sigmoid(a)
        # END SOLUTION

    @staticmethod
    def backward(ctx, g):
        # BEGIN SOLUTION
        (a,) = ctx.inputs
        s = td.sigmoid(a)
        return (g * (s + a * s * (1.0 - s)),)
        # END SOLUTION


def silu(x):
    return td.apply(SiLU, x)

# %%
x_check = td.tensor(rng.standard_normal((4, 3)) * 2, dtype="float64")
expected = (x_check * td.sigmoid(x_check)).data
assert np.allclose(silu(x_check).data, expected), \
    "silu's forward pass does not compute x * sigmoid(x)"
check_grad(silu, x_check, order=1)        # first derivative: raises AssertionError if wrong
try:
    check_grad(silu, x_check, order=2)    # second derivative: needs a backward made of td ops
except AssertionError as err:
    raise AssertionError("the first derivative is right but the second is not: write backward "
                         "with tinydan ops on Tensors (td.sigmoid(a), not NumPy on a.data)\n"
                         f"{err}") from None
print("Exercise 2: correct")

# %% [markdown]
# ### Exercise 3: undo broadcasting yourself
#
# Write `unbroadcast(g, shape)` in NumPy: given the gradient `g` of a broadcast result, return the
# gradient for an input of shape `shape`, by summing over the leading axes that broadcasting added
# and over the axes where `shape` has a 1 (keeping them as size-1 axes).

# %%
# YOUR ANSWER
def unbroadcast(g, shape):
    # BEGIN SOLUTION
    g = np.asarray(g)
    while g.ndim > len(shape):               # axes added in front
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):      # axes stretched from size 1
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g
    # END SOLUTION

# %%
# Check: for several pairs of shapes, compare with the gradients tinydan computes for a * b.
for shape_a, shape_b in [((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)), ((5,), ()),
                         ((2, 1, 4), (2, 3, 1))]:
    ta = td.tensor(rng.standard_normal(shape_a), dtype="float64", requires_grad=True)
    tb = td.tensor(rng.standard_normal(shape_b), dtype="float64", requires_grad=True)
    prod = ta * tb
    upstream = rng.standard_normal(prod.shape)
    prod.backward(upstream)
    mine_a = unbroadcast(upstream * np.broadcast_to(tb.data, prod.shape), shape_a)
    mine_b = unbroadcast(upstream * np.broadcast_to(ta.data, prod.shape), shape_b)
    for name, mine, ref in (("a", mine_a, ta.grad.data), ("b", mine_b, tb.grad.data)):
        assert np.shape(mine) == ref.shape, (
            f"for a{shape_a} * b{shape_b} your gradient for {name} has shape {np.shape(mine)}, "
            f"expected {ref.shape}")
        assert np.allclose(mine, ref), \
            f"for a{shape_a} * b{shape_b} your gradient for {name} has the wrong values"
print("Exercise 3: correct")

# %% [markdown]
# **Next:** lesson 2 looks hard at gradient checks (finite differences, and why they need float64)
# and at gradients of gradients, which meta-learning a neuronal phenotype depends on.
