# Lesson 2: gradient checks and gradients of gradients (percent-format source of
# 02_gradient_checks.ipynb; run `python lessons/_build.py` after editing it).

# %% [markdown]
# # Lesson 2: Gradient checks, and gradients of gradients
#
# **What you will learn**
#
# - how to check a derivative with finite differences, why the *central* difference is the one to
#   use, and why the step cannot be too small or too large (truncation error against round-off
#   error), in float64 and in float32: this is why `check_grad` refuses float32;
# - what `tinydan.testing.check_grad` checks: first derivatives *and* Hessian-vector products;
# - how a wrong backward rule is caught, including one that is right to first order but cannot be
#   differentiated again;
# - how to differentiate a gradient (`create_graph=True`): the second derivative of tanh, and the
#   nested derivative $\frac{d}{dx}\big[x \cdot \frac{\partial}{\partial y}(x y)\big]$;
# - why meta-learning a neuronal phenotype needs gradients of gradients: the gradient of the loss
#   *after* one differentiable SGD step, "one-step" against "first-order".

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinydan as td
from tinydan import viz
from tinydan.testing import check_grad

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Finite differences: truncation against round-off
#
# The derivative is a limit, $f'(x) = \lim_{h \to 0} \frac{f(x + h) - f(x)}{h}$, so a small step `h`
# gives an estimate. Taylor's theorem says how good it is:
#
# - **forward difference** $\frac{f(x + h) - f(x)}{h} = f'(x) + \frac{h}{2} f''(x) + O(h^2)$:
#   the truncation error shrinks like $h$;
# - **central difference**
#   $\frac{f(x + h) - f(x - h)}{2h} = f'(x) + \frac{h^2}{6} f'''(x) + O(h^4)$: the even terms cancel
#   and the error shrinks like $h^2$.
#
# But computers round. $f(x \pm h)$ comes with a relative error of about the machine epsilon $u$
# ($2.2 \times 10^{-16}$ in float64, $1.2 \times 10^{-7}$ in float32), and dividing by a small $h$
# magnifies it: the round-off error grows like $u / h$. Let us measure both on $f = \tanh$ at
# $x = 0.5$, where we know the exact derivative $1 - \tanh^2 x$.

# %%
def finite_differences(f, x, h, dtype):
    """Forward and central differences of f at x with step h, computed in ``dtype``."""
    x, h = dtype(x), dtype(h)
    forward = (f(x + h) - f(x)) / h
    central = (f(x + h) - f(x - h)) / (dtype(2) * h)
    return forward, central


x0 = 0.5
exact = 1.0 - np.tanh(x0) ** 2
hs = np.logspace(-15, 0, 121)
errors = {}
for dtype in (np.float64, np.float32):
    fwd, ctr = zip(*(finite_differences(np.tanh, x0, h, dtype) for h in hs))
    errors[dtype.__name__] = (np.abs(np.array(fwd, dtype=np.float64) - exact),
                              np.abs(np.array(ctr, dtype=np.float64) - exact))

# %%
fig, ax = plt.subplots(figsize=(8, 5))
floor = 1e-17                          # an exact hit (error 0) cannot be drawn on a log axis
for name, color in (("float64", "C0"), ("float32", "C3")):
    fwd, ctr = errors[name]
    ax.loglog(hs, np.maximum(fwd, floor), "--", color=color, label=f"forward, {name}")
    ax.loglog(hs, np.maximum(ctr, floor), "-", color=color, lw=2, label=f"central, {name}")
for name, h_text in (("float64", 1e-13), ("float32", 1.5e-7)):
    u = np.finfo(name).eps
    ax.loglog(hs, u / hs, ":", color="0.5")
    ax.text(h_text, 1.5 * u / h_text, f"round-off ~ u/h ({name})", fontsize=8, color="0.3")
ax.loglog(hs, 0.1 * hs, ":", color="0.7")
ax.loglog(hs, 0.1 * hs ** 2, ":", color="0.7")
ax.text(1e-3, 3e-4, "truncation ~ h", fontsize=8, color="0.3")
ax.text(1e-3, 3e-8, "truncation ~ h^2", fontsize=8, color="0.3")
ax.axvline(1e-6, color="k", lw=0.8)
ax.text(1.3e-6, 3e-17, "check_grad's eps = 1e-6", fontsize=8)
ax.set_ylim(1e-17, 10)
ax.set_xlabel("step h")
ax.set_ylabel("|finite difference - exact derivative|")
ax.set_title("d tanh(x)/dx at x = 0.5: round-off (left) against truncation (right)")
ax.legend(loc="lower left", fontsize=8, ncol=2)
plt.show()

for name in ("float64", "float32"):
    fwd, ctr = errors[name]
    at_1e6 = ctr[np.argmin(np.abs(hs - 1e-6))]
    print(f"{name}: best forward error {fwd.min():.0e} (h = {hs[fwd.argmin()]:.0e}), "
          f"best central error {ctr.min():.0e} (h = {hs[ctr.argmin()]:.0e}), "
          f"central error at h = 1e-6: {at_1e6:.0e}")

# %% [markdown]
# Read the V shapes. On the right, truncation dominates: slope 1 for the forward difference, slope 2
# for the central one. On the left, round-off dominates with slope $-1$. The best step balances the
# two: about $\sqrt{u}$ for the forward difference and $u^{1/3}$ for the central one.
# (At the far left of the float32 curves, $x + h$ rounds to $x$ itself: the difference is 0, and
# the error is the whole derivative.)
#
# - In **float64**, the central difference is good to $10^{-10}$ or better over a wide range of
#   steps around `eps = 1e-6`, so a gradient check catches errors of $10^{-5}$ reliably.
# - In **float32**, even the *best* step leaves an error of a few $10^{-6}$, and at `eps = 1e-6` the
#   error is about $10^{-2}$: larger than many bugs. A float32 gradient check passes wrong gradients
#   and fails right ones.
#
# That is why `check_grad` works in float64 only, and refuses float32 inputs with an explanation:

# %%
try:
    check_grad(td.tanh, np.ones(3, dtype=np.float32))
except TypeError as err:
    print("TypeError:", err)

# %% [markdown]
# ## 2. What `check_grad` checks
#
# `check_grad(f, *inputs, order=2)` takes a function of tensors that returns a tensor, and float64
# inputs. It checks:
#
# 1. **first order.** With a fixed random vector $v$ it forms the scalar
#    $L(x) = \langle v, f(x)\rangle$ (so that every output element matters) and compares tinydan's
#    $\nabla L$ with the central difference for *every* element of *every* input;
# 2. **second order** (`order=2`, the default). Along a random direction $u$ it compares the
#    Hessian-vector product $H u = \nabla_x \langle \nabla_x L, u\rangle$, computed by
#    differentiating tinydan's gradient, with the central difference of gradients
#    $\big(\nabla L(x + \epsilon u) - \nabla L(x - \epsilon u)\big) / 2\epsilon$.
#
# It returns `True`, or raises `GradientCheckError` (an `AssertionError`) naming the worst element.

# %%
def layer(x, W, b):
    """A tanh layer with a broadcast bias: tanh((N, 3) @ (3, 2) + (2,))."""
    return td.tanh(x @ W + b)


x = rng.standard_normal((4, 3))
W = rng.standard_normal((3, 2))
b = rng.standard_normal(2)
print("first order: ", check_grad(layer, x, W, b, order=1))
print("second order:", check_grad(layer, x, W, b, order=2))

# %% [markdown]
# The second-order check is what you would write by hand: differentiate once with
# `create_graph=True` (the gradient is then a tensor with a graph of its own), take the inner
# product with $u$, and differentiate again.

# %%
v = rng.standard_normal((4, 2))                  # projects the (4, 2) output to a scalar
u = rng.standard_normal(W.shape)                 # the direction of the Hessian-vector product


def grad_wrt_W(W_array, create_graph=False):
    Wt = td.tensor(W_array, requires_grad=True)
    L = (layer(td.tensor(x), Wt, td.tensor(b)) * v).sum()
    return Wt, td.grad(L, Wt, create_graph=create_graph)


Wt, gW = grad_wrt_W(W, create_graph=True)
print("gW.requires_grad:", gW.requires_grad, "(it has a graph, so it can be differentiated)")
Hu = td.grad((gW * u).sum(), Wt)                 # H u, exactly
eps = 1e-6
Hu_fd = (grad_wrt_W(W + eps * u)[1].data - grad_wrt_W(W - eps * u)[1].data) / (2 * eps)
print("H u by autograd:           ", Hu.data.ravel().round(6))
print("H u by finite differences: ", Hu_fd.ravel().round(6))
print("largest difference:", np.abs(Hu.data - Hu_fd).max())

# %% [markdown]
# ## 3. Catching wrong backward rules
#
# Here are two broken versions of tanh. The first has a plain bug: $1 - \tanh$ instead of
# $1 - \tanh^2$. The second computes the right first derivative, but in NumPy on raw arrays, so the
# gradient it returns is a constant with no graph: the first-order check passes, and the
# second-order check finds that its "Hessian" is zero.

# %%
class TanhWrongFormula(td.Op):
    @staticmethod
    def forward(ctx, a):
        return np.tanh(a)

    @staticmethod
    def backward(ctx, g):
        return (g * (1.0 - ctx),)                        # BUG: should be 1 - ctx * ctx


class TanhNumpyBackward(td.Op):
    @staticmethod
    def forward(ctx, a):
        return np.tanh(a)

    @staticmethod
    def backward(ctx, g):
        y = ctx.data                                     # BUG: NumPy, not tinydan ops
        return (td.tensor(g.data * (1.0 - y * y)),)      # right numbers, but a dead end for grad


x = rng.standard_normal(5)
for name, op in (("wrong formula", TanhWrongFormula), ("NumPy backward", TanhNumpyBackward)):
    for order in (1, 2):
        try:
            check_grad(lambda a: td.apply(op, a), x, order=order)
            print(f"{name:15s} order {order}: passed")
        except AssertionError as err:
            print(f"{name:15s} order {order}: FAILED: {err}")

# %% [markdown]
# ## 4. Gradients of gradients
#
# With `create_graph=True`, `td.grad` records the backward pass itself: every backward rule is
# written with tinydan ops, so the gradient is an ordinary tensor computed from the inputs, and we
# can differentiate it again. For $\tanh$, $\tanh' = 1 - \tanh^2$ and
# $\tanh'' = -2 \tanh \,(1 - \tanh^2)$. We compare tinydan's second derivative with a central
# difference of its first derivative.

# %%
xs = td.tensor(np.linspace(-4, 4, 161), requires_grad=True)       # float64: a float64 array
ys = td.tanh(xs)
d1 = td.grad(ys.sum(), xs, create_graph=True)     # the sum's gradient is elementwise tanh'(x)
d2 = td.grad(d1.sum(), xs)                        # and this is tanh''(x)


def tanh_prime(x_array):
    xt = td.tensor(x_array, requires_grad=True)
    return td.grad(td.tanh(xt).sum(), xt).data


h = 1e-5
d2_fd = (tanh_prime(xs.data + h) - tanh_prime(xs.data - h)) / (2 * h)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
ax1.plot(xs.data, ys.data, label="tanh(x)")
ax1.plot(xs.data, d1.data, label="tanh'(x): td.grad(create_graph=True)")
ax1.plot(xs.data, d2.data, lw=2, label="tanh''(x): td.grad of the gradient")
ax1.plot(xs.data[::6], d2_fd[::6], "ko", ms=4, label="central difference of tanh'")
ax1.set_xlabel("x")
ax1.set_ylim(-1.1, 2.0)
ax1.legend(fontsize=7, loc="upper center", ncol=2)
ax1.set_title("second derivative of tanh")
ax2.semilogy(xs.data, np.abs(d2.data - d2_fd) + 1e-17, label="|autograd - finite difference|")
ax2.semilogy(xs.data, np.abs(d2.data - (-2 * np.tanh(xs.data) * (1 - np.tanh(xs.data) ** 2)))
             + 1e-17, label="|autograd - formula| (exactly 0, drawn at 1e-17)")
ax2.set_xlabel("x")
ax2.legend(fontsize=8)
ax2.set_title("how far apart (log scale)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### A nested derivative
#
# A classic test of an autograd engine:
#
# $$\frac{d}{dx}\Big[\, x \cdot \frac{\partial}{\partial y}(x\, y)\Big|_{y = 2} \Big]_{x = 1}.$$
#
# The inner derivative is $x$ (whatever $y$ is), so the bracket is $x^2$ and the answer is $2x = 2$.
# The inner derivative *depends on* $x$, and the outer derivative must see that dependence. With
# `create_graph=True` it does. Without it, the inner gradient is a constant $1$ with no graph, the
# bracket looks like $x \cdot 1$, and the answer comes out as $1$: wrong.

# %%
x = td.tensor(1.0, dtype="float64", requires_grad=True)
y = td.tensor(2.0, dtype="float64", requires_grad=True)
inner = td.grad(x * y, y, create_graph=True)          # = x, as a tensor that depends on x
outer = td.grad(x * inner, x)
print("with create_graph=True: ", outer.item())
assert outer.item() == 2.0
inner_const = td.grad(x * y, y)                       # = 1.0, a constant
print("with create_graph=False:", td.grad(x * inner_const, x).item(), "(the inner gradient "
      "was cut from the graph)")

# %% [markdown]
# ### What `create_graph=True` records
#
# With `create_graph=True` the backward pass is recorded in the same graph as the forward pass, as
# ordinary ops. `tinydan.viz.draw_graph` draws that graph; the graph does not say which pass made
# which node, so we name the parts with `stages`: a node that leads to `y` is "forward", another
# node that leads to the first derivative is "backward", the rest belong to the second derivative.
# For $y = \tanh(x)$ at one point, drawing the first and the second derivative together:

# %%
xp = td.tensor(0.7, dtype="float64", requires_grad=True)
yp = td.tanh(xp)
dyp = td.grad(yp, xp, create_graph=True)          # tanh'(x) = 1 - tanh(x)^2, recorded
d2yp = td.grad(dyp, xp, create_graph=True)        # tanh''(x), recorded too
print(f"tanh''(0.7) = {d2yp.item():.6f}; the formula gives "
      f"{-2 * np.tanh(0.7) * (1 - np.tanh(0.7) ** 2):.6f}")
stages = {"forward": yp, "backward": dyp, "backward of the backward": d2yp}
graph = viz.graph_of(dyp, d2yp, stages=stages)
for stage in stages:
    print(f"{stage:25s} ops {graph.op_counts(stage)}")
viz.draw_graph(dyp, d2yp, stages=stages, title="tanh'(x) and tanh''(x) in one graph")

# %% [markdown]
# tanh's backward rule is one op, `TanhGrad(g, y)` $= g\,(1 - y^2)$, made from the forward
# *output* $y$ (the leaf $x$ feeds only `Tanh`: the derivatives never need it). Differentiating the
# first derivative runs `TanhGrad`'s own backward rule, $-2\,g\,y$ times the incoming gradient (the
# three `Mul`s), and then `Tanh`'s rule once more (the second `TanhGrad`): altogether
# $-2\,y\,(1 - y^2) = \tanh''(x)$. Every backward rule in tinydan is written with tinydan ops for
# exactly this reason: a rule written in NumPy would be a dead end in this graph.

# %% [markdown]
# ## 5. Why meta-learning needs gradients of gradients
#
# In the paper, a network of Deep Artificial Neurons has two kinds of parameters: the synapses
# $\theta$ (VECs), which learn during deployment by SGD, and the neuronal phenotype $\varphi$ (the
# shared DAN), which is fixed during deployment and is *meta*-learned so that SGD on $\theta$
# forgets little. One meta-step (Algorithm 1) looks at the loss after an inner step:
#
# $$\theta_1(\varphi) = \theta - \alpha\, \nabla_\theta L_{\text{task}}(\theta, \varphi), \qquad
#   \text{meta-loss}(\varphi) = L_{\text{memory}}\big(\theta_1(\varphi), \varphi\big).$$
#
# $\varphi$ shapes the step: change it and $\theta_1$ changes. Two meta-gradients (paper section 5
# leaves the choice open):
#
# - **first-order**: $\partial L_{\text{memory}} / \partial \varphi$ with $\theta_1$ held constant
#   (cheap; what the authors' code runs);
# - **one-step**: the full derivative $d\, \text{meta-loss} / d\varphi$, which includes
#   $\frac{\partial L}{\partial \theta_1} \frac{\partial \theta_1}{\partial \varphi}$, and
#   $\partial \theta_1 / \partial \varphi = -\alpha\, \partial^2 L_{\text{task}} / \partial\theta\,
#   \partial\varphi$ is a derivative of a gradient.
#
# A toy version: one "neuron" $\hat y = \theta_2 \tanh\big(\varphi\,(\theta_0 x + \theta_1)\big)$
# whose gain $\varphi$ plays the phenotype. The task batch and the memory batch are two samples of
# $\sin x$.

# %%
x_task = rng.uniform(-2, 2, 8)
x_memory = rng.uniform(-2, 2, 16)
theta_init = np.array([0.5, 0.1, 0.8])


def predict(theta, phi, x):
    return theta[2] * td.tanh(phi * (theta[0] * x + theta[1]))


def loss(theta, phi, x):
    return td.mse_loss(predict(theta, phi, td.tensor(x)), td.tensor(np.sin(x)))


def inner_step(phi, alpha, create_graph):
    """theta_1 = theta - alpha * grad_theta L_task(theta, phi), from theta_init."""
    theta = td.tensor(theta_init, requires_grad=True)
    g = td.grad(loss(theta, phi, x_task), theta, create_graph=create_graph)
    return theta - alpha * g


def meta_loss_one_step(phi, alpha):
    """L_memory(theta_1(phi), phi): differentiable through the inner step."""
    return loss(inner_step(phi, alpha, create_graph=True), phi, x_memory)


def meta_loss_first_order(phi, alpha):
    """L_memory(theta_1, phi) with theta_1 computed, then held constant (.detach())."""
    return loss(inner_step(phi, alpha, create_graph=False).detach(), phi, x_memory)


phi = td.tensor(1.5, dtype="float64", requires_grad=True)
alpha = 0.5
g_one = td.grad(meta_loss_one_step(phi, alpha), phi)
g_first = td.grad(meta_loss_first_order(phi, alpha), phi)
print(f"alpha = {alpha}: one-step meta-gradient {g_one.item():+.6f}, "
      f"first-order {g_first.item():+.6f}")

# %% [markdown]
# Which one is *the* derivative of the meta-loss? Ask finite differences. Nudge $\varphi$, redo the
# inner step, and measure the meta-loss: that is what the one-step gradient should match. The
# first-order gradient matches a different finite difference, the one where $\theta_1$ is frozen.
# And because the one-step meta-loss is an ordinary tinydan function of $\varphi$, `check_grad` can
# check it (to second order, which needs third derivatives of the task loss).

# %%
print("check_grad on the one-step meta-loss:",
      check_grad(lambda p: meta_loss_one_step(p, alpha), np.array(1.5), order=2))

def meta_loss_value(p, alpha, theta_1=None):
    """The meta-loss as a number, at phi = p; the inner step is redone unless theta_1 is given."""
    phi_p = td.tensor(p, dtype="float64")
    if theta_1 is None:
        theta_1 = inner_step(phi_p, alpha, create_graph=False)
    return loss(theta_1, phi_p, x_memory).item()


alphas = np.linspace(0.0, 2.0, 21)
eps = 1e-6
one_step, first_order, fd_full, fd_frozen = [], [], [], []
for a in alphas:
    phi = td.tensor(1.5, dtype="float64", requires_grad=True)
    one_step.append(td.grad(meta_loss_one_step(phi, a), phi).item())
    first_order.append(td.grad(meta_loss_first_order(phi, a), phi).item())
    fd_full.append((meta_loss_value(1.5 + eps, a) - meta_loss_value(1.5 - eps, a)) / (2 * eps))
    theta_frozen = inner_step(td.tensor(1.5, dtype="float64"), a, create_graph=False).detach()
    fd_frozen.append((meta_loss_value(1.5 + eps, a, theta_frozen)
                      - meta_loss_value(1.5 - eps, a, theta_frozen)) / (2 * eps))

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(alphas, one_step, lw=2, label="one-step (through the inner step)")
ax.plot(alphas, fd_full, "ko", ms=5, mfc="none", label="finite difference, inner step redone")
ax.plot(alphas, first_order, lw=2, label="first-order (theta_1 held constant)")
ax.plot(alphas, fd_frozen, "kx", ms=5, label="finite difference, theta_1 frozen")
ax.axhline(0, color="0.7", lw=0.8)
ax.set_xlabel("inner learning rate alpha")
ax.set_ylabel("d meta-loss / d phi")
ax.set_title("meta-gradients w.r.t. the phenotype parameter phi")
ax.legend(fontsize=8)
plt.show()
print("max |one-step - finite difference|:   ", np.max(np.abs(np.subtract(one_step, fd_full))))
print("max |first-order - finite difference|:", np.max(np.abs(np.subtract(first_order, fd_full))))
wrong_sign = alphas[np.sign(first_order) != np.sign(one_step)]
print("alphas where the first-order gradient has the wrong sign:", wrong_sign)

# %% [markdown]
# At $\alpha = 0$ there is no inner step and the two agree. As $\alpha$ grows, the inner step
# depends more on $\varphi$ and the first-order gradient drifts away from the true derivative. Near
# the learning rates printed above it even has the wrong sign: a meta-learner following it would
# *increase* the meta-loss it means to decrease. This is why tinydan's engine computes gradients of
# gradients exactly: the one-step meta-gradient of lesson 5 is this computation, with a network of
# DANs in place of the toy neuron.
#
# ## Exercises
#
# Each exercise has an answer cell marked `# YOUR ANSWER`: replace every
# `raise NotImplementedError(...)` in it with your code, then run the check cell below it. The check
# fails, with a message that says what is wrong, until your answer is right. (Run top to bottom,
# this notebook stops at the first exercise not yet answered; `lessons/solutions/` has the same
# notebook with reference solutions.)
#
# ### Exercise 1: a central-difference gradient
#
# Write `numerical_gradient(f, x, eps)`: for a function `f` from a float64 NumPy array to a float,
# return the array of central differences
# $\big(f(x + \epsilon e_k) - f(x - \epsilon e_k)\big) / 2\epsilon$, one per element $k$ of `x` (any
# shape). Do not modify the caller's `x`.

# %%
# YOUR ANSWER
def numerical_gradient(f, x, eps=1e-6):
    # BEGIN SOLUTION
    x = np.array(x, dtype=np.float64)              # a copy: the caller's array is left alone
    grad = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        old = x[k]
        x[k] = old + eps
        up = f(x)
        x[k] = old - eps
        down = f(x)
        x[k] = old
        grad[k] = (up - down) / (2 * eps)
    return grad
    # END SOLUTION

# %%
from tinydan.testing import numerical_grad     # the library's version, to compare with


def f_numpy(a):
    return float(np.sum(np.tanh(a) * a ** 2) + np.sqrt(np.exp(a).sum()))


def f_tinydan(a):
    return (td.tanh(a) * a ** 2).sum() + td.sqrt(td.exp(a).sum())


a0 = rng.standard_normal((2, 3))
a_copy = a0.copy()
mine = numerical_gradient(f_numpy, a0)
assert np.array_equal(a0, a_copy), "numerical_gradient changed its input x: work on a copy"
assert np.shape(mine) == a0.shape, f"expected a gradient of shape {a0.shape}, got {np.shape(mine)}"
library = numerical_grad(lambda arrays: f_numpy(arrays[0]), [a0.copy()], eps=1e-6)[0]
assert np.allclose(mine, library, atol=1e-8), (
    "numerical_gradient differs from tinydan.testing.numerical_grad: largest difference "
    f"{np.abs(np.asarray(mine) - library).max():.2e}; is it the CENTRAL difference with "
    "eps = 1e-6?")
a_t = td.tensor(a0, requires_grad=True)
exact = td.grad(f_tinydan(a_t), a_t).data
assert np.allclose(mine, exact, atol=1e-8), (
    f"numerical_gradient is {np.abs(np.asarray(mine) - exact).max():.2e} away from the exact "
    "gradient; a central difference with eps = 1e-6 is good to about 1e-9 here")
print("Exercise 1: correct")

# %% [markdown]
# ### Exercise 2: a Hessian-vector product
#
# Write `hvp(f, x, u)`: for a function `f` of one tensor returning a scalar tensor, return
# $H u = \nabla_x \langle \nabla_x f(x), u \rangle$ as a NumPy array, with two calls to `td.grad`
# (no finite differences, and never forming $H$).

# %%
# YOUR ANSWER
def hvp(f, x, u):
    # BEGIN SOLUTION
    xt = td.tensor(x, requires_grad=True)
    g = td.grad(f(xt), xt, create_graph=True)
    return td.grad((g * td.tensor(u)).sum(), xt).data
    # END SOLUTION

# %%
# f(x) = 1/2 x^T A x + sum(x^3) / 3 has the Hessian A + diag(2 x) (A symmetric).
A = rng.standard_normal((4, 4))
A = A + A.T
x_check, u_check = rng.standard_normal(4), rng.standard_normal(4)


def cubic(xt):
    return 0.5 * (xt * (td.tensor(A) @ xt)).sum() + (xt ** 3).sum() / 3.0


got = np.asarray(hvp(cubic, x_check, u_check))
want = (A + np.diag(2 * x_check)) @ u_check
assert got.shape == want.shape, f"hvp should return shape {want.shape}, got {got.shape}"
assert np.allclose(got, want, atol=1e-10), (
    f"hvp is off: got {got.round(5)}, expected {want.round(5)}. Did you pass create_graph=True to "
    "the first td.grad, so that the gradient can be differentiated?")
print("Exercise 2: correct")

# %% [markdown]
# ### Exercise 3: the one-step meta-gradient by hand
#
# A scalar synapse $\theta$ and a scalar phenotype parameter $\varphi$, with task loss
# $L_{\text{task}} = \frac12 (\varphi\theta - a)^2$ and memory loss
# $L_{\text{memory}} = \frac12 (\varphi\theta - b)^2$. One inner step:
# $\theta_1 = \theta - \alpha\, \varphi\, (\varphi\theta - a)$. Work out, with pencil and paper,
#
# - `first_order(theta, phi, a, b, alpha)`:
#   $\partial L_{\text{memory}}(\theta_1, \varphi) / \partial\varphi$ with $\theta_1$ held constant;
# - `one_step(theta, phi, a, b, alpha)`:
#   $d\, L_{\text{memory}}(\theta_1(\varphi), \varphi) / d\varphi$.

# %%
# YOUR ANSWER
def first_order(theta, phi, a, b, alpha):
    # BEGIN SOLUTION
    theta_1 = theta - alpha * phi * (phi * theta - a)
    return (phi * theta_1 - b) * theta_1
    # END SOLUTION


def one_step(theta, phi, a, b, alpha):
    # BEGIN SOLUTION
    theta_1 = theta - alpha * phi * (phi * theta - a)
    dtheta1_dphi = -alpha * (2 * phi * theta - a)
    return (phi * theta_1 - b) * (theta_1 + phi * dtheta1_dphi)
    # END SOLUTION

# %%
def tinydan_meta_gradients(theta, phi, a, b, alpha):
    th = td.tensor(theta, dtype="float64", requires_grad=True)
    ph = td.tensor(phi, dtype="float64", requires_grad=True)
    g = td.grad(0.5 * (ph * th - a) ** 2, th, create_graph=True)
    th1 = th - alpha * g
    one = td.grad(0.5 * (ph * th1 - b) ** 2, ph).item()
    first = td.grad(0.5 * (ph * th1.detach() - b) ** 2, ph).item()
    return first, one


for args in [(0.3, 1.2, 1.0, -0.5, 0.1), (-1.0, 0.7, 0.4, 2.0, 0.5), (2.0, -1.5, 0.0, 1.0, 0.05)]:
    first_ref, one_ref = tinydan_meta_gradients(*args)
    assert np.isclose(first_order(*args), first_ref), (
        f"first_order{args} = {first_order(*args):.6f}, but tinydan says {first_ref:.6f}: with "
        "theta_1 frozen, only the explicit phi in phi * theta_1 is differentiated")
    assert np.isclose(one_step(*args), one_ref), (
        f"one_step{args} = {one_step(*args):.6f}, but tinydan says {one_ref:.6f}: remember that "
        "theta_1 depends on phi twice (phi * (phi * theta - a))")
print("Exercise 3: correct")

# %% [markdown]
# **Next:** lesson 3 builds VEC layers of synapses and layers of DANs that share one phenotype, as
# one batched call per layer; lesson 5 runs the one-step meta-gradient on a whole network of DANs.
