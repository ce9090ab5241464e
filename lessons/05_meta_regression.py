# Lesson 5: meta-learning a phenotype for incremental regression (percent-format source of
# 05_meta_regression.ipynb; run `python lessons/_build.py` after editing it).

# %% [markdown]
# # Lesson 5: Meta-learning a phenotype for incremental regression
#
# **What you will learn**
#
# - the paper's incremental regression task (its section 4.1): a sine mixture learned window by
#   window, 100 SGD steps of one point per window, never going back; and the evaluation protocol
#   (held-out functions from a fixed evaluation seed, separate validation functions to choose the
#   checkpoint, the loss matrix $R$);
# - **Algorithm 1** written out line by line with tinydan ops (an inner SGD step on the synapses,
#   the meta-loss on a memory batch at the updated synapses, the gradient with respect to the
#   phenotype phi) and checked against `tinydan.meta.meta_step`;
# - the two meta-gradients, `first_order` and `one_step`: they differ, and only the one-step one is
#   the derivative of the meta-loss, as finite differences on a float64 network show (lesson 2's toy,
#   now with a real network of DANs);
# - how to meta-train with `tinydan.meta.MetaTrainer`, and why the meta-loss curve is optimistic:
#   progress is judged by *deploying* phi, fixed, on validation functions;
# - the shipped phenotype, meta-trained by `python -m tinydan.regression`: the paper's Figure 3
#   (predictions over the whole function after each window) next to a random phenotype and a plain
#   MLP, the loss matrix, memory and total loss per window with confidence intervals, and
#   forgetting (`tinydan.continual`).
#
# Words as in the glossary of docs/model-and-protocol.md: the **synapses** theta are the VEC weights
# that learn during deployment; the **phenotype** phi is the shared DAN's parameters, fixed during
# deployment and meta-learned beforehand (lesson 3 built both).

# %%
import os

# One BLAS thread, as `python -m tinydan.bench` uses: the matrices here are small, and on a busy
# machine BLAS threads only get in each other's way. (Set before NumPy is imported.)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import copy
import re
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from IPython.display import Markdown, display

import tinydan as td
from tinydan import continual, plots, viz
from tinydan.experiments.configs import build_regression_net, regression_config
from tinydan.meta import MetaTrainer, inner_step, meta_step, task_loss
from tinydan.nn import DANNetwork, MLPDAN, PlainMLP
from tinydan.optim import Adam
from tinydan.regression import (SHIPPED_PHENOTYPE, deploy, load_phenotype, tune_mlp_lr,
                                validate)
from tinydan.tasks import EVAL_SEED, VAL_SEED, SineSequence, sample_sines, windows

FIGURES = Path(tempfile.mkdtemp(prefix="tinydan-lesson05-"))   # tinydan.plots saves PNGs here
WINDOW_COLORS = plt.cm.viridis(np.linspace(0, 0.9, 5))
lesson_start = time.perf_counter()

# %% [markdown]
# ## 1. The task stream
#
# A task sequence is one target function
#
# $$y = a_0 \sin(r_0 x + p_0) + a_1 \sin(r_1 x + p_1), \qquad a \sim U(0, 2),\;
#   r \sim U(0, \pi/3),\; p \sim U(-5, 5),$$
#
# on the domain $[-5, 5]$, cut into 5 windows $[-5,-3], [-3,-1], [-1,1], [1,3], [3,5]$: the 5
# sub-tasks. The network learns window 1 with 100 SGD steps on one point each, $x \sim U(\text{window})$,
# then window 2, and so on; it never sees an old window again. `tinydan.tasks.sample_sines` draws
# the functions and `SineSequence` turns them into this stream: `inner_batches()` yields the 500
# `(x, y)` batches in order, and `meta_batch(rng)` draws the **memory batch** Algorithm 1 needs,
# points from the windows seen so far.

# %%
demo = sample_sines(np.random.default_rng(5), 4)
seq = SineSequence(demo, np.random.default_rng(6), steps=100, batch=1)
stream = list(seq.inner_batches())                  # 500 batches of (x (F, 1, 1), y (F, 1, 1))
print(f"{len(stream)} inner steps; one batch: x {stream[0][0].shape}, y {stream[0][1].shape} "
      f"(functions, points, 1)")
print("windows:", windows().tolist())

grid = np.linspace(-5, 5, 400, dtype=np.float32)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [5, 6]})
for w, (lo, hi) in enumerate(windows()):
    ax1.axvspan(lo, hi, color=WINDOW_COLORS[w], alpha=0.15)
    ax2.axhspan(lo, hi, color=WINDOW_COLORS[w], alpha=0.15)
ys = demo(np.broadcast_to(grid, (len(demo), len(grid))))
for f in range(len(demo)):
    ax1.plot(grid, ys[f], lw=1.6, label=f"function {f}")
ax1.set_xlabel("x")
ax1.set_ylabel("y")
ax1.set_title("four target functions; the 5 windows shaded")
ax1.legend(fontsize=7, ncol=2)

xs = np.array([x[0, 0, 0] for x, _ in stream])       # function 0's stream of inputs
steps = np.arange(len(xs))
ax2.scatter(steps, xs, s=6, c=[WINDOW_COLORS[t // 100] for t in steps])
meta_rng = np.random.default_rng(7)
for t in (50, 150, 250, 350, 450):                   # memory batches at a few steps
    seq.current_window = t // 100                    # (inner_batches() sets it while iterating)
    xm, _ = seq.meta_batch(meta_rng)
    ax2.scatter(np.full(xm.shape[1], t), xm[0, :, 0], s=10, marker="_", color="k")
ax2.set_xlabel("inner step t")
ax2.set_ylabel("x")
ax2.set_title("function 0's stream: x of each step (dots), memory batches (black)")
plt.tight_layout()
plt.show()

# %% [markdown]
# On the right, time runs left to right: 100 points from window 1, then 100 from window 2... The
# data are anything but i.i.d. The black ticks are memory batches (32 points) drawn at a few steps:
# always from $[-5, \text{end of the current window}]$, everything seen so far. The memory batch
# never reaches into the future: the paper meta-trains on the **memory loss** only.
#
# ### The protocol (paper section 4.1; docs/model-and-protocol.md, "Regression protocol")
#
# Three disjoint sources of functions keep the evaluation honest:
#
# | functions | drawn from | used for |
# | --- | --- | --- |
# | meta-training | the trainer's generator, `default_rng([seed, 1])` | Algorithm 1 |
# | validation | `default_rng(VAL_SEED)` | choosing the checkpoint (and the MLP's learning rate) |
# | held-out | `default_rng(EVAL_SEED)` | the reported numbers, never looked at before |
#
# After each window $i$ the model is scored on 200 evenly spaced, noise-free points of every window
# $j$: $R[i, j]$ is that mean squared error. Row $i$ is a snapshot after window $i$; the diagonal is
# the window just learned, left of it the memory, right of it windows not yet seen.

# %%
for name, seed in [("meta-training", [0, 1]), ("validation", VAL_SEED), ("held-out", EVAL_SEED)]:
    f = sample_sines(np.random.default_rng(seed), 3)
    print(f"{name:13s} first amplitudes a0: {np.round(f.a[:, 0], 3)}")

# %% [markdown]
# ## 2. Algorithm 1, one line at a time
#
# Algorithm 1 alternates two updates. For every inner step (lines 9-16, for each member $m$ of the
# population):
#
# $$\theta_{t+1} = \theta_t - \alpha\, \nabla_\theta L_{\text{task}}(\theta_t, \varphi)
#   \qquad \text{(lines 9-11: the inner step, SGD on the synapses)}$$
#
# $$L_{\text{meta}}(\varphi) = L_{\text{memory}}(\theta_{t+1}, \varphi)
#   \qquad \text{(lines 12-13: MSE on a memory batch, at the updated synapses)}$$
#
# $$\varphi \leftarrow \text{Adam}\Big(\varphi,\ \tfrac{1}{M}\textstyle\sum_m \nabla_\varphi
#   L_{\text{meta}, m}\Big) \qquad \text{(lines 14-16: one phenotype update per inner step)}$$
#
# and at the end of a meta-epoch the synapses go back to $\theta_0$ (line 19). Here are lines 9-14
# with tinydan ops, on the `tiny` config (nodes `[1, 8, 8, 1]`, `C = 6`, DAN `6 -> 5 -> 4 -> 1`) in
# float64, so that we can check the result with finite differences below.
#
# Which $\nabla_\varphi$? $\theta_{t+1}$ itself depends on $\varphi$, because the gradient of line 10
# was computed through the DANs. Differentiating *through* the inner step is the **one-step**
# meta-gradient (`create_graph=True` on line 10: the gradient becomes part of the graph, a gradient
# of a gradient); holding $\theta_{t+1}$ constant is the **first-order** one. We write the one-step
# version here; Exercise 1 asks you for the first-order one.

# %%
cfg_t = regression_config("tiny")
net64 = build_regression_net(cfg_t, np.random.default_rng(0), dtype=np.float64)      # phi
theta0_64 = net64.init_synapses(1, np.random.default_rng(1), dtype=np.float64)       # theta_0
task = SineSequence(sample_sines(np.random.default_rng(2), 1), np.random.default_rng(3),
                    steps=cfg_t.steps_per_window, meta_batch_size=cfg_t.meta_batch,
                    dtype=np.float64)
x_task, y_task = next(task.inner_batches())        # the first inner batch: (1, 1, 1) each
x_mem, y_mem = task.meta_batch(np.random.default_rng(4))   # a memory batch: (1, 8, 1) each
alpha = 0.5                                        # a large inner step makes the effects visible


def algorithm1_one_step(net, theta0, x, y, xm, ym, alpha):
    """Lines 9-14 of Algorithm 1 with the one-step meta-gradient; returns (theta_1, grads of phi)."""
    theta = {k: td.tensor(v, requires_grad=True) for k, v in theta0.items()}   # theta_t
    names = list(theta)
    loss_task = task_loss(net, theta, td.tensor(x), td.tensor(y))              # line 9
    g_theta = td.grad(loss_task, [theta[k] for k in names], create_graph=True)  # line 10
    theta_1 = {k: theta[k] - alpha * g for k, g in zip(names, g_theta)}       # line 11
    meta_loss = td.mse_loss(net(td.tensor(xm), theta_1), td.tensor(ym))       # lines 12-13
    g_phi = td.grad(meta_loss, net.parameters())                              # line 14
    return theta_1, g_phi, meta_loss.item()


theta_1, g_phi, meta_loss_value = algorithm1_one_step(net64, theta0_64, x_task, y_task, x_mem,
                                                      y_mem, alpha)
print(f"meta-loss at theta_1: {meta_loss_value:.6f}")
for (name, p), g in zip(net64.named_parameters(), g_phi):
    print(f"  d meta-loss / d {name:12s} {str(p.shape):8s} |g| = {np.linalg.norm(g.data):.4f}")

# %% [markdown]
# `tinydan.meta.meta_step` is the library's version of the same lines, for a whole population at
# once. It returns the updated synapses (as fresh leaves), phi's gradients, the task loss and the
# meta-loss. Same inputs, same numbers:

# %%
def leaves(theta):
    return {k: td.tensor(v, requires_grad=True) for k, v in theta.items()}


theta_lib, g_lib, task_lib, meta_lib = meta_step(net64, leaves(theta0_64), x_task, y_task, x_mem,
                                                 y_mem, alpha, meta_grad="one_step")
assert np.isclose(meta_lib, meta_loss_value, rtol=1e-10), (meta_lib, meta_loss_value)
for k in theta_1:
    assert np.allclose(theta_lib[k].data, theta_1[k].data, rtol=1e-10, atol=1e-13), k
for (name, _), a, b in zip(net64.named_parameters(), g_phi, g_lib):
    assert np.allclose(a.data, b.data, rtol=1e-10, atol=1e-14), name
print("by hand == tinydan.meta.meta_step(..., 'one_step'): theta_1, meta-loss and every phi gradient")

# %% [markdown]
# ### The one-step meta-gradient, drawn
#
# The `tiny` network's graph has hundreds of nodes, so to *see* what `create_graph=True` adds we
# repeat lines 9-13 on a network small enough to read: nodes `[1, 2, 1]`, `C = 2`, each DAN
# $\tanh(w \cdot z + b)$ (the output DAN without the tanh), one task point, a memory batch of three.
# `tinydan.viz.draw_graph` draws the meta-loss's graph; with `stages` it colours the nodes that lead
# to the task loss "forward" (blue) and the other nodes that lead to the gradient of line 10
# "backward" (orange). Constants are left out.

# %%
toy = DANNetwork((1, 2, 1), 2, lambda n_neurons=None: MLPDAN(
    2, (), n_neurons=n_neurons, rng=np.random.default_rng(0), dtype=np.float64),
    final_activation=False)
for name, p in toy.named_parameters():
    p.name = f"phi {name}"
theta_toy = {k: td.Tensor(v, requires_grad=True, name=f"theta {k}")
             for k, v in toy.init_synapses(1, np.random.default_rng(1), dtype=np.float64).items()}
x_t, y_t = td.tensor(np.full((1, 1, 1), 0.5)), td.tensor(np.ones((1, 1, 1)))   # one task point
x_m = td.tensor(np.linspace(-1.0, 1.0, 3).reshape(1, 3, 1))                    # memory batch
y_m = td.tensor(np.sin(x_m.data))
loss_toy = task_loss(toy, theta_toy, x_t, y_t)                                  # line 9
g_toy = td.grad(loss_toy, list(theta_toy.values()), create_graph=True)         # line 10
theta_toy_1 = {k: v - alpha * g for (k, v), g in zip(theta_toy.items(), g_toy)}  # line 11
for k, v in theta_toy_1.items():
    v.name = f"theta_1 {k}"
meta_toy = td.mse_loss(toy(x_m, theta_toy_1), y_m)                              # lines 12-13
stages = {"forward": loss_toy, "backward": g_toy}
graph = viz.graph_of(meta_toy, stages=stages, constants=False)
phi_ids = {id(p) for p in toy.parameters()}
print(f"{len(graph)} nodes; forward ops {sum(graph.op_counts('forward').values())}, "
      f"backward ops {sum(graph.op_counts('backward').values())}: {graph.op_counts('backward')}")
print("backward ops that read phi directly:",
      sorted({graph.nodes[b].op for a, b, _ in graph.edges
              if id(graph.tensors[a]) in phi_ids and graph.nodes[b].stage == "backward"}))
viz.draw_graph(meta_toy, stages=stages, constants=False,
               title="the meta-loss at theta_1 = theta - alpha * grad (one step)")

# %% [markdown]
# Read it from the top. The blue nodes down to `MSEGrad` are the task loss's forward pass (line 9;
# the `MSE` node itself is not needed). The orange nodes are its backward pass, recorded by
# `create_graph=True` (line 10): `MSEGrad`, then transposed matrix products (`MatMulTB`,
# `MatMulTA`) and `TanhGrad` going back through the layers. They read phi (the DAN's weight feeds
# the `MatMulTB` nodes) and the forward pass's outputs (the `Tanh` feeds `TanhGrad`). They end in
# the `Sub` nodes, $\theta_1 = \theta - \alpha\, g$ (line 11), and below those runs the meta-loss's
# own forward pass at $\theta_1$ (lines 12-13), which uses phi again.
#
# The gradient of the meta-loss with respect to phi flows back along *every* path from phi to the
# output. The paths through the orange nodes are the second-order terms: the **one-step**
# meta-gradient follows them; the **first-order** one cuts the graph at $\theta_1$ (`.detach()`
# in Exercise 1) and keeps only the paths from phi into the lower forward pass.

# %% [markdown]
# Line 16 is then one optimizer step on phi. With a population of $M$ members, the synapse tensors
# carry a leading axis of size $M$; `task_loss` *sums* the members' losses (so each member's synapses
# get exactly their own gradient) while the meta-loss is the *mean* over members, so its gradient is
# Algorithm 1's average $\frac1M \sum_m \nabla_\varphi L_{\text{meta}, m}$.

# %%
phi_before = [p.data.copy() for p in net64.parameters()]
backup = net64.state_dict()
Adam(net64.parameters(), lr=1e-3).step(g_lib)                                # line 16
moved = max(np.abs(p.data - b).max() for p, b in zip(net64.parameters(), phi_before))
print(f"after one Adam step (lr 1e-3) the largest change in phi is {moved:.2e}")
net64.load_state_dict(backup)                                # undo it: the checks below use phi

# %% [markdown]
# ### First-order against one-step, and which one is the derivative
#
# Now the first-order meta-gradient on the same inputs, and a **finite-difference** check (lesson 2):
# nudge one number of phi by $\pm\epsilon$, **redo the inner step**, measure the meta-loss. That is
# the true derivative of the meta-loss, and only the one-step gradient should match it. (We
# measure the meta-loss with `meta_step` itself; its fourth return value is the meta-loss.)

# %%
_, g_first, _, _ = meta_step(net64, leaves(theta0_64), x_task, y_task, x_mem, y_mem, alpha,
                             meta_grad="first_order")


def post_step_meta_loss():
    return meta_step(net64, leaves(theta0_64), x_task, y_task, x_mem, y_mem, alpha)[3]


eps = 1e-6
fd, one, first = [], [], []
for p, g1, g0 in zip(net64.parameters(), g_lib, g_first):
    for k in np.ndindex(p.shape):                 # every one of phi's numbers
        old = p.data[k]
        p.data[k] = old + eps
        hi = post_step_meta_loss()
        p.data[k] = old - eps
        lo = post_step_meta_loss()
        p.data[k] = old
        fd.append((hi - lo) / (2 * eps))
        one.append(g1.data[k])
        first.append(g0.data[k])
fd, one, first = map(np.array, (fd, one, first))
print(f"phi has {fd.size} numbers")
print(f"max |one-step    - finite difference| = {np.abs(one - fd).max():.2e}")
print(f"max |first-order - finite difference| = {np.abs(first - fd).max():.2e}"
      f"   (largest gradient entry {np.abs(fd).max():.2e})")
assert np.allclose(one, fd, rtol=1e-5, atol=1e-8)

fig, ax = plt.subplots(figsize=(5.2, 4.6))
lim = 1.1 * np.abs(fd).max()
ax.plot([-lim, lim], [-lim, lim], color="0.7", lw=1)
ax.scatter(fd, one, s=22, label="one-step", zorder=3)
ax.scatter(fd, first, s=22, marker="x", label="first-order", zorder=3)
ax.set_xlabel("finite difference (inner step redone)")
ax.set_ylabel("meta-gradient")
ax.set_title(f"all {fd.size} entries of d meta-loss / d phi, alpha = {alpha}")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The one-step gradient lies on the diagonal to about $10^{-9}$; the first-order one scatters around
# it. How far depends on the inner learning rate: the first-order gradient drops the term
# $\frac{\partial L}{\partial \theta_{1}} \frac{\partial \theta_1}{\partial \varphi}$, and
# $\partial\theta_1/\partial\varphi$ is proportional to $\alpha$ (at $\alpha = 0$ they agree). The
# relative difference at a few learning rates, 0.01 being the synapse learning rate of the configs:

# %%
for a in (0.01, 0.1, 0.5):
    g1 = meta_step(net64, leaves(theta0_64), x_task, y_task, x_mem, y_mem, a, "one_step")[1]
    g0 = meta_step(net64, leaves(theta0_64), x_task, y_task, x_mem, y_mem, a, "first_order")[1]
    v1 = np.concatenate([g.data.ravel() for g in g1])
    v0 = np.concatenate([g.data.ravel() for g in g0])
    print(f"alpha = {a:4}: |one-step - first-order| / |one-step| = "
          f"{np.linalg.norm(v1 - v0) / np.linalg.norm(v1):.4f}")

# %% [markdown]
# Not a rounding error even at 0.01, and it enters every one of the 500 meta-steps of every
# meta-epoch. `one_step` costs about one and a half times as much per meta-step, and
# `first_order` is what the authors' public code computes; which one tinydan's configs use, and
# why, is in docs/how-the-defaults-were-chosen.md ("Meta-gradient").
#
# ## 3. Meta-training with `MetaTrainer`
#
# `MetaTrainer(net, theta0, sample, inner_lr, meta_lr, meta_grad)` runs Algorithm 1: `run_epoch()`
# resets the synapses to `theta0`, draws a task sequence with `sample(rng)` (one function per
# population member) and does a `meta_step` plus an Adam step on phi for every inner step. We
# meta-train a small variant of the `tiny` config for a few seconds: 40 steps per window instead of
# 100 (so a meta-epoch is 200 meta-steps), phi's Adam learning rate 1e-3. Every two meta-epochs we
# **validate**: deploy the current phi, fixed, on 16 validation functions and record the final
# whole-function MSE (`tinydan.regression.validate`).

# %%
cfg_small = regression_config("tiny", steps_per_window=40, meta_lr=1e-3, val_functions=16)
rng = np.random.default_rng(0)
net_small = build_regression_net(cfg_small, rng)            # phi_0, random
theta0_small = net_small.init_synapses(1, rng)              # theta_0, drawn once


def sample(rng):
    """One task sequence per population member (here M = 1), as Algorithm 1's line 5."""
    functions = sample_sines(rng, cfg_small.population)
    return SineSequence(functions, rng, steps=cfg_small.steps_per_window,
                        batch=cfg_small.inner_batch, meta_batch_size=cfg_small.meta_batch)


trainer = MetaTrainer(net_small, theta0_small, sample, cfg_small.inner_lr, cfg_small.meta_lr,
                      cfg_small.meta_grad, seed=0)
val_functions = sample_sines(np.random.default_rng(VAL_SEED), cfg_small.val_functions)
zero_mse = float(np.mean(val_functions(np.broadcast_to(grid, (len(val_functions), len(grid))))
                         ** 2))
val_history = [(0, validate(net_small, theta0_small, cfg_small))]
step_losses = []                                     # the meta-loss of every meta-step
start = time.perf_counter()
for epoch in range(8):
    trainer.run_epoch(progress=step_losses.append)
    if trainer.epoch % 2 == 0:
        val_history.append((trainer.epoch, validate(net_small, theta0_small, cfg_small)))
print(f"{trainer.epoch} meta-epochs ({len(step_losses)} meta-steps) in "
      f"{time.perf_counter() - start:.1f} s")
print("validation final MSE by meta-epoch:",
      ", ".join(f"{e}: {v:.3f}" for e, v in val_history))

# %%
steps_per_epoch = len(step_losses) // trainer.epoch
ep_val, v_val = zip(*val_history)
fig, ax = plt.subplots(figsize=(8, 4))
ax.semilogy(np.arange(len(step_losses)) / steps_per_epoch, step_losses, lw=0.5, alpha=0.35,
            color="C0")
ax.semilogy(np.arange(len(step_losses)) / steps_per_epoch,
            plots.moving_average(step_losses, steps_per_epoch), lw=2, color="C0",
            label="meta-loss (memory batch, phi learning)")
ax.semilogy(ep_val, v_val, "o-", color="C3", lw=2,
            label="validation: final MSE, phi fixed")
ax.axhline(zero_mse, color="0.5", ls="--", label="predicting 0 (validation)")
ax.set_xlabel("meta-epoch")
ax.set_ylabel("MSE")
ax.set_title("meta-training the small config")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The meta-loss drops by an order of magnitude within a few meta-epochs. The validation loss does
# not follow: it hardly moves from where the random phenotype started, and it can even get worse.
# Do not read progress off the meta-loss:
#
# 1. **phi learns on the very function it is scored on.** After every inner step, phi takes an Adam
#    step on a memory batch of the *current* function. Within one meta-epoch phi adapts to that
#    function: meta-training is, for phi, learning with replay. At deployment phi is fixed and there
#    is no replay. (The larger phi's learning rate, the stronger the effect: 1e-3 here, 1e-4 in the
#    `default` config.)
# 2. **the meta-loss is an average over the whole stream**, early steps included, where the memory
#    is one window and easy to keep; validation scores the whole function after the last window.
#
# The first point can be measured directly. Take the trained phenotype, copy the trainer twice and
# run one meta-epoch of each copy on the same validation function with the same batches: once as in
# training, once with phi's learning rate set to 0 (phi fixed, as at deployment). Same code, same
# data; the only difference is whether phi learns. We do it for two functions and average.

# %%
traces = {"phi learning (meta-training)": [], "phi fixed (deployment)": []}
for f in range(2):
    for name, trace in traces.items():
        twin = copy.deepcopy(trainer)                   # phi, Adam state and generator copied
        twin.sample = lambda rng, f=f: SineSequence(
            val_functions.subset([f]), rng, steps=cfg_small.steps_per_window,
            meta_batch_size=cfg_small.meta_batch)
        if name.startswith("phi fixed"):
            twin.optimizer.lr = 0.0
        losses = []
        twin.run_epoch(progress=losses.append)
        trace.append(losses)

fig, ax = plt.subplots(figsize=(8, 3.6))
for w in range(cfg_small.n_windows):
    ax.axvspan(w * cfg_small.steps_per_window, (w + 1) * cfg_small.steps_per_window,
               color=WINDOW_COLORS[w], alpha=0.12)
for name, trace in traces.items():
    mean = np.mean(trace, axis=0)
    ax.semilogy(plots.moving_average(mean, 10), lw=2, label=f"{name}: mean {mean.mean():.3f}")
ax.set_xlabel("inner step")
ax.set_ylabel("memory loss (moving average)")
ax.set_title("the same 2 validation functions, the same batches")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The gap between the curves is the optimism of the meta-loss. This is why
# `tinydan.regression.meta_train` validates a snapshot of phi every `val_every` meta-epochs by
# deploying it on the validation functions, and keeps the **best validated** phi rather than the
# last one (the validation curves in docs/how-the-defaults-were-chosen.md peak, then drift).
# A few seconds of meta-training are not enough for a good phenotype: the
# shipped one below took many minutes.
#
# ## 4. The shipped phenotype
#
# `tinydan/phenotypes/regression_default.npz` (`SHIPPED_PHENOTYPE`) is a checkpoint written by
# `python -m tinydan.regression`, which meta-trains the `default` config: the paper's network
# (nodes `[1, 40, 40, 1]`, `C = 40`, DAN `40 -> 15 -> 8 -> 1`, skip VECs) with a linear output,
# synapse SGD learning rate 0.01 and phi's Adam learning rate 1e-4, 100 steps of one point per
# window as in the paper. `load_phenotype` returns the config, the network with the best validated
# phi, theta_0, and the metadata, which records the command that made it.

# %%
if SHIPPED_PHENOTYPE.exists():
    ph = load_phenotype(SHIPPED_PHENOTYPE)
    cfg, net0, theta0, meta = ph.cfg, ph.net, ph.theta0, ph.meta
    print(f"loaded {SHIPPED_PHENOTYPE.name}")
    made_by = re.sub(r" --out \S+", "", meta.get("command", "?"))   # --out: a folder elsewhere
    print(f"  made by:   {made_by}")
    print(f"  config:    {cfg.name!r}, output {cfg.output}, meta-gradient {cfg.meta_grad}, "
          f"synapse lr {cfg.inner_lr}, phi lr {cfg.meta_lr}")
    epochs = meta.get("history", {}).get("epoch") or [cfg.meta_epochs]
    print(f"  phi chosen at meta-epoch {meta.get('best_epoch', '?')} of {epochs[-1]}, validation "
          f"final MSE {meta.get('best_val', float('nan')):.4f}; meta-training took "
          f"{meta.get('meta_train_seconds', float('nan')) / 60:.0f} min "
          f"(tinydan {meta.get('tinydan_version', '?')}, {meta.get('created', '?')})")
else:
    # A checkout without the shipped file: use the phenotype meta-trained in section 3 instead.
    print(f"NOTE: {SHIPPED_PHENOTYPE} does not exist, so this lesson deploys the small phenotype "
          "meta-trained in section 3 (a few seconds of training: expect weak results). Make the "
          "real one with `python -m tinydan.regression meta-train --out runs/mine` and load it "
          "with load_phenotype('runs/mine/checkpoint.npz').")
    cfg, net0, theta0 = cfg_small, net_small, theta0_small
    meta = {"command": "(section 3 of this lesson)", "history": trainer.history,
            "val_history": val_history}
print(f"network: {net0.num_synapses()} synapses per model, phi has {net0.num_parameters()} numbers")

# %% [markdown]
# The checkpoint also keeps the record of its meta-training: the mean meta-loss of every meta-epoch
# and the validation loss of every `val_every`-th snapshot (the same two curves as in section 3, over
# a much longer run). `tinydan.plots.plot_meta_training` draws them; like every function of
# `tinydan.plots` it saves a PNG (here to a temporary folder) and returns the figure.

# %%
record = {}
if meta.get("history", {}).get("meta_loss"):
    record["meta-loss (mean per meta-epoch)"] = (meta["history"]["epoch"],
                                                 meta["history"]["meta_loss"])
if len(meta.get("val_history", [])) > 1:
    record["validation: final MSE, phi fixed"] = tuple(zip(*meta["val_history"]))
if record:
    display(plots.plot_meta_training(record, FIGURES / "meta_training.png", xlabel="meta-epoch",
                                     ylabel="MSE", logy=True,
                                     title="how the deployed phenotype was meta-trained"))
else:
    print("this phenotype has no meta-training record")

# %% [markdown]
# We deploy it on held-out functions: the first 6 of the 50 that `python -m tinydan.regression
# deploy` scores (`EVAL_SEED`), next to two baselines on the same functions and the same points:
#
# - **net2**: the same network with a *random* phenotype (fixed), the same theta_0;
# - **naive MLP**: a plain MLP `1 -> 40 -> 40 -> 1` (tanh) trained window by window with SGD, its
#   learning rate chosen on validation functions (`tune_mlp_lr`, as `compare` does; here on 8
#   validation functions, to save time).
#
# `deploy` learns all functions at once along the population axis and returns $R$ of shape
# `(functions, windows, windows)`, and with `record=True` the predictions on the evaluation grid
# after each window.

# %%
n_held_out = 6
held_out = sample_sines(np.random.default_rng(EVAL_SEED), cfg.eval_functions).subset(
    np.arange(n_held_out))
net2 = build_regression_net(cfg, np.random.default_rng([0, 99]))     # random phi, as compare() does
mlp = PlainMLP((1, 40, 40, 1))
theta0_mlp = mlp.init_synapses(1, np.random.default_rng([0, 5]))

start = time.perf_counter()
mlp_lr, lr_scores = tune_mlp_lr(mlp, theta0_mlp, cfg.replace(val_functions=8))
runs = {
    "net0 (meta-learned phi, fixed)": deploy(net0, theta0, held_out, cfg, record=True),
    "net2 (random phi, fixed)": deploy(net2, theta0, held_out, cfg, record=True),
    "naive MLP (sequential SGD)": deploy(mlp, theta0_mlp, held_out, cfg, lr=mlp_lr, record=True),
}
print(f"MLP learning rate {mlp_lr} (validation medians: "
      + ", ".join(f"{k}: {v:.3f}" for k, v in lr_scores.items()) + ")")
print(f"deployed {n_held_out} held-out functions with 3 models in {time.perf_counter() - start:.1f} s")
zero = (runs["net0 (meta-learned phi, fixed)"]["y"] ** 2).mean(-1)
print(f"predicting 0 everywhere would score {np.round(zero, 3)}: mean {zero.mean():.3f} "
      "(1.3 over all 50 held-out functions)")

# %% [markdown]
# ### Figure 3
#
# The paper's Figure 3: predictions over the *whole* function after each window, darkest after
# window 1, lightest after window 5. Each window is shaded in the colour of the fit made right after
# learning it. (`tinydan.plots.plot_function_fits` draws one panel.)

# %%
shown = 4
fig, axes = plt.subplots(len(runs), shown, figsize=(16, 9.5), sharex=True, sharey=True)
for row, (name, run) in enumerate(runs.items()):
    for f in range(shown):
        plots.plot_function_fits(run["x"], run["y"][f], run["preds"][f], run["windows"],
                                 ax=axes[row, f], legend=False,
                                 title=f"{name.split(' (')[0]}, held-out function {f}")
        axes[row, f].set_ylim(-4.5, 4.5)
handles, labels = axes[0, 0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=9, frameon=False)
fig.tight_layout(rect=(0, 0.04, 1, 1))
plt.show()

# %% [markdown]
# Look down each column. The meta-learned network (top row) keeps its fit of the early windows
# while it learns the later ones: once a window has been learned, the later curves stay on the
# target there. With a *random* phenotype, fixed, the same network hardly learns at all (middle
# row): its curves stay nearly flat. The plain MLP (bottom row; learning rate 0.001, the one that
# did best on the validation functions) learns slowly and smoothly, and drifts away from the first
# windows (functions 0 and 2). net0 shows no transfer: to the right of the current window its
# prediction is not the target. It was meta-trained on the memory loss only, as in the paper.
#
# ### The loss matrix, memory loss and total loss, with confidence intervals
#
# `tinydan.continual.summarize(R)` computes every number of the protocol from the `(S, T, T)` loss
# matrices of `S` sequences: the final loss, forgetting, and the memory/transfer/total curves, each
# as a mean and the half-width of a 95% Student-t interval over the sequences. Six functions give
# wide intervals; `python -m tinydan.regression deploy` runs the full 50.

# %%
summaries = {name: continual.summarize(run["R"]) for name, run in runs.items()}
display(Markdown(continual.results_table(summaries, metrics=("final", "forgetting"))))

R_means = {name: np.array(summary["R_mean"]) for name, summary in summaries.items()}
norm = LogNorm(vmin=min(R.min() for R in R_means.values()),
               vmax=max(R.max() for R in R_means.values()))
fig, axes = plt.subplots(1, len(R_means), figsize=(15, 4.6))
for ax, (name, Rm) in zip(axes, R_means.items()):
    image = ax.imshow(Rm, cmap="viridis", norm=norm)
    for (i, j), v in np.ndenumerate(Rm):
        ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=8,
                color="k" if norm(v) > 0.6 else "w")
    stairs = np.arange(len(Rm) + 1) - 0.5                   # memory (j <= i) | future (j > i)
    ax.step(stairs + 1, stairs, where="pre", color="w", ls="--", lw=1.5)
    ax.set_xlim(-0.5, len(Rm) - 0.5)
    ax.set_ylim(len(Rm) - 0.5, -0.5)
    ax.set_xticks(range(len(Rm)), range(1, len(Rm) + 1))
    ax.set_yticks(range(len(Rm)), range(1, len(Rm) + 1))
    ax.set_xlabel("loss on window j")
    ax.set_ylabel("after window i")
    ax.set_title(name, fontsize=10)
fig.colorbar(image, ax=axes, label="mean MSE over the held-out functions", shrink=0.85)
plt.show()

# %% [markdown]
# In $R$ (row: after window $i$; column: scored on window $j$), the diagonal and everything left of
# the dashed staircase is memory, everything right of it is the future. A model that does not
# forget has columns that stay as dark as their diagonal entry, all the way down. (All three share
# one colour scale; `tinydan.plots.plot_loss_matrix` draws one such matrix to a PNG, as the CLI
# does.) Next, the memory and total loss after each window (the paper's Figure 4, top), mean and 95%
# interval over the held-out functions.

# %%
for metric in ("memory", "total"):
    display(plots.plot_curves({name: summaries[name][metric] for name in runs},
                              FIGURES / f"{metric}_loss.png", xlabel="after window i",
                              ylabel=f"{metric} loss (MSE)", logy=True,
                              title=f"{metric} loss during deployment, {n_held_out} held-out "
                                    "functions"))
for name in runs:
    mem, ci = summaries[name]["memory"]["mean"], summaries[name]["memory"]["ci"]
    print(f"{name:32s} memory loss per window: "
          + "  ".join(continual.format_ci(m, c, 2) for m, c in zip(mem, ci)))

# %% [markdown]
# net0's memory loss stays one to two orders of magnitude below the others after every window.
# Its total loss, which also counts the windows not seen yet, starts level with the plain MLP's
# (no transfer: what lies ahead is not predicted) and ends the lowest by far: by the last window
# there is no future left, only memory.
#
# ### Forgetting
#
# Forgetting is $\frac{1}{T-1}\sum_{j<T-1} (R[T-1, j] - R[j, j])$: how much worse each window is at
# the end than right after it was learned (backward transfer with the sign flipped; positive means
# forgetting). Per function:

# %%
for name, run in runs.items():
    per_function = continual.forgetting(run["R"])
    mean, hw = continual.mean_ci(per_function)
    print(f"{name:32s} forgetting {continual.format_ci(mean, hw)}   per function: "
          f"{np.round(per_function, 3)}")

# %% [markdown]
# The meta-learned phenotype does what Algorithm 1 asked of it: plain SGD on the synapses, with phi
# fixed, learns each window and leaves the old ones nearly alone, and its final loss is far below
# the other two. Read forgetting next to the final loss: net2 forgets little because it learned
# little to forget.
#
# Six functions make a small sample, and these six happen to be easier than average (predicting
# zero scores about 0.6 on them, 1.3 on all 50): `python -m tinydan.regression deploy` gives the
# 50-function numbers, with confidence intervals and the MLP trained jointly on all windows at
# once (no forgetting to fight); the README's results table lists them.
#
# ## Exercises
#
# Each exercise has an answer cell marked `# YOUR ANSWER`: replace every
# `raise NotImplementedError(...)` in it with your code, then run the check cell below it. The check
# fails, with a message that says what is wrong, until your answer is right. (Run top to bottom,
# this notebook stops at the first exercise not yet answered; `lessons/solutions/` has the same
# notebook with reference solutions.)
#
# ### Exercise 1: the first-order meta-step by hand
#
# Write `first_order_meta_step(net, theta, x, y, xm, ym, alpha)` with `tinydan` ops (`task_loss`,
# `td.grad`, `td.mse_loss`, arithmetic on Tensors). `theta` is a dict of leaf Tensors. Return
# `(theta_1, grads)`: the synapses after one SGD step on the task batch, as a dict of Tensors, and
# the gradients of the memory loss on `(xm, ym)` at `theta_1` with respect to `net.parameters()`,
# with `theta_1` **held constant**. The check compares them with `meta_step(..., "first_order")`
# on a population of 3 members.

# %%
# YOUR ANSWER
def first_order_meta_step(net, theta, x, y, xm, ym, alpha):
    # BEGIN SOLUTION
    names = list(theta)
    loss = task_loss(net, theta, td.tensor(x), td.tensor(y))
    grads = td.grad(loss, [theta[k] for k in names])              # no graph needed
    theta_1 = {k: (theta[k] - alpha * g).detach() for k, g in zip(names, grads)}
    meta_loss = td.mse_loss(net(td.tensor(xm), theta_1), td.tensor(ym))
    return theta_1, td.grad(meta_loss, net.parameters())
    # END SOLUTION

# %%
rng_e = np.random.default_rng(50)
for M, a in [(3, 0.3), (1, 0.01)]:
    th_e = net64.init_synapses(M, rng_e, dtype=np.float64, same=False)
    xt_e = rng_e.uniform(-5, 5, (M, 2, 1))
    xm_e = rng_e.uniform(-5, 5, (M, 8, 1))
    yt_e, ym_e = np.sin(xt_e), np.cos(xm_e)
    want_theta, want_g, _, _ = meta_step(net64, leaves(th_e), xt_e, yt_e, xm_e, ym_e, a,
                                         "first_order")
    got_theta, got_g = first_order_meta_step(net64, leaves(th_e), xt_e, yt_e, xm_e, ym_e, a)
    assert set(got_theta) == set(want_theta), \
        f"theta_1 must have the same keys as theta {sorted(want_theta)}, got {sorted(got_theta)}"
    for k in want_theta:
        got_k = np.asarray(got_theta[k].data if isinstance(got_theta[k], td.Tensor)
                           else got_theta[k])
        assert np.allclose(got_k, want_theta[k].data, rtol=1e-10, atol=1e-12), (
            f"population {M}: theta_1[{k!r}] is wrong. It is theta - alpha * grad of task_loss "
            "(task_loss sums over the members, so each member gets its own gradient)")
    got_g = list(got_g)
    assert len(got_g) == len(want_g), \
        f"return one gradient per entry of net.parameters() ({len(want_g)}), got {len(got_g)}"
    for (name, _), g, w in zip(net64.named_parameters(), got_g, want_g):
        assert np.allclose(g.data, w.data, rtol=1e-8, atol=1e-12), (
            f"population {M}, alpha {a}: the gradient for {name} differs from first_order. Is "
            "theta_1 held constant (.detach(), or new leaves) before the meta-loss? Is the "
            "meta-loss the MSE (mean over members and points) at theta_1, not at theta?")
print("Exercise 1: correct")

# %% [markdown]
# ### Exercise 2: the protocol's numbers from a loss matrix
#
# Given `R` of shape `(S, T, T)` (`R[s, i, j]`: loss on sub-task `j` after sub-task `i`, sequence
# `s`), write with NumPy only:
#
# - `memory(R)` `(S, T)`: $\text{memory}(i) = \text{mean}_{j \le i} R[i, j]$;
# - `total(R)` `(S, T)`: $\text{total}(i) = \text{mean}_{j} R[i, j]$;
# - `forgetting_of(R)` `(S,)`: $\text{mean}_{j < T-1} (R[T-1, j] - R[j, j])$.
#
# The check compares them with `tinydan.continual` on the held-out runs above and on random
# matrices of other sizes.

# %%
# YOUR ANSWER
def memory(R):
    # BEGIN SOLUTION
    T = R.shape[-1]
    seen = np.tril(np.ones((T, T)))                          # 1 where j <= i
    return (R * seen).sum(-1) / seen.sum(-1)
    # END SOLUTION


def total(R):
    # BEGIN SOLUTION
    return R.mean(-1)
    # END SOLUTION


def forgetting_of(R):
    # BEGIN SOLUTION
    diag = np.diagonal(R, axis1=-2, axis2=-1)[..., :-1]      # R[j, j] for j < T-1
    return (R[..., -1, :-1] - diag).mean(-1)
    # END SOLUTION

# %%
cases = [run["R"] for run in runs.values()]
cases += [np.random.default_rng(s).uniform(0, 2, (s, T_, T_)) for s, T_ in [(3, 2), (4, 7), (1, 5)]]
for R_e in cases:
    for mine, ref, what in [(memory, continual.memory_loss, "memory"),
                            (total, continual.total_loss, "total"),
                            (forgetting_of, continual.forgetting, "forgetting")]:
        got, want = np.asarray(mine(R_e)), ref(R_e)
        assert got.shape == want.shape, \
            f"{what} for R of shape {R_e.shape} should have shape {want.shape}, got {got.shape}"
        assert np.allclose(got, want), (
            f"{what} differs from tinydan.continual for R of shape {R_e.shape}: got "
            f"{np.round(got, 4).ravel()[:5]}..., expected {np.round(want, 4).ravel()[:5]}...")
worst = np.argmax(forgetting_of(runs["naive MLP (sequential SGD)"]["R"]))
print(f"Exercise 2: correct. The MLP forgot most on held-out function {worst}.")

# %% [markdown]
# ### Exercise 3: a plastic phenotype (net1)
#
# The paper's **net1** uses the same meta-learned phi as net0 but keeps it *plastic* during
# deployment: every SGD step updates the synapses and phi. Before you code it, predict: will net1
# forget less or more than net0? Think about what phi is shared by, and what it was meta-learned
# for.
#
# Write `deploy_plastic(net, theta0, functions, cfg, phi_lr)` returning `R` of shape
# `(F, T, T)`, like `deploy`, but with phi also trained by SGD (learning rate `phi_lr`) on the
# task loss. Each function must get its **own copy** of phi, starting from `net`'s, and `net` itself
# must not change. Use the same points as `deploy`: build the stream with
# `SineSequence(functions, np.random.default_rng([0, 7]), steps=cfg.steps_per_window,
# batch=cfg.inner_batch, n_windows=cfg.n_windows)` (what `deploy` does with its default
# `seed=0`), learn function `f` from the `[f:f+1]` slices of its batches, and score it after each
# window on `seq.eval_points(200)` like `deploy`. (Hint: a fresh
# `build_regression_net(cfg)` with `load_state_dict(net.state_dict())` is a copy of phi.)

# %%
# YOUR ANSWER
def deploy_plastic(net, theta0, functions, cfg, phi_lr):
    # BEGIN SOLUTION
    F, T, S = len(functions), cfg.n_windows, cfg.steps_per_window
    seq = SineSequence(functions, np.random.default_rng([0, 7]), steps=S, batch=cfg.inner_batch,
                       n_windows=T)
    batches = list(seq.inner_batches())
    xe, ye = seq.eval_points(200)                                   # (F, T*200, 1)
    R = np.zeros((F, T, T))
    for f in range(F):
        net_f = build_regression_net(cfg)                           # this function's own phi
        net_f.load_state_dict(net.state_dict())
        phi = net_f.parameters()
        theta = {k: td.tensor(v[:1], requires_grad=True) for k, v in theta0.items()}
        for step, (x, y) in enumerate(batches):
            loss = task_loss(net_f, theta, td.tensor(x[f:f + 1]), td.tensor(y[f:f + 1]))
            grads = td.grad(loss, list(theta.values()) + phi)
            theta = {k: td.tensor(v.data - cfg.inner_lr * g.data, requires_grad=True)
                     for (k, v), g in zip(theta.items(), grads)}
            for p, g in zip(phi, grads[len(theta):]):
                p.data = p.data - phi_lr * g.data
            if (step + 1) % S == 0:
                with td.no_grad():
                    pred = net_f(td.tensor(xe[f:f + 1]), theta).data
                R[f, step // S] = ((pred - ye[f:f + 1]) ** 2).reshape(T, -1).mean(-1)
    return R
    # END SOLUTION

# %%
two = held_out.subset([0, 1])
phi_snapshot = {k: v.copy() for k, v in net0.state_dict().items()}
short = cfg.replace(steps_per_window=20)            # a quick check first: 20 steps per window
R_fixed = deploy_plastic(net0, theta0, two, short, phi_lr=0.0)
R_ref = deploy(net0, theta0, two, short)["R"]
assert np.shape(R_fixed) == R_ref.shape, \
    f"deploy_plastic should return R of shape {R_ref.shape} for 2 functions, got {np.shape(R_fixed)}"
assert np.allclose(R_fixed, R_ref, rtol=2e-3, atol=1e-5), (
    "with phi_lr = 0, deploy_plastic must reproduce deploy's R (phi fixed): same points "
    "(SineSequence with default_rng([0, 7])), same synapse SGD (cfg.inner_lr), scored after every "
    f"window. Got final losses {np.round(np.asarray(R_fixed)[:, -1].mean(-1), 4)}, deploy gives "
    f"{np.round(R_ref[:, -1].mean(-1), 4)}")
R_net1 = deploy_plastic(net0, theta0, two, cfg, phi_lr=cfg.inner_lr)        # the full protocol
for k, v in net0.state_dict().items():
    assert np.array_equal(v, phi_snapshot[k]), (
        f"deploy_plastic changed the caller's phi ({k}): give every function its own copy")
R_net0 = runs["net0 (meta-learned phi, fixed)"]["R"][:2]
assert not np.allclose(R_net1, R_net0, rtol=1e-2), \
    "with phi_lr > 0 the results equal the fixed-phi ones: is phi updated at every step?"
print("Exercise 3: correct")
for name, R_e in [("net0 (phi fixed)", R_net0), ("net1 (phi plastic)", R_net1)]:
    print(f"{name:19s} final MSE per function {np.round(continual.final_loss(R_e), 3)}, "
          f"forgetting {np.round(continual.forgetting(R_e), 3)}")

# %% [markdown]
# Was your prediction right? Two functions are a small sample, so look at the paper too. phi is
# shared by *every* DAN in the network, so a step on phi changes how every neuron responds,
# everywhere in the domain, not only in the current window; and meta-learning shaped phi to be a
# good *fixed* phenotype for learning in the synapses, not to be trained itself. In the paper's
# Figure 4 (section 6.1) the plastic phenotype does much worse, and so it does on 50 functions in
# `python -m tinydan.regression ablate --study models`. Try other values of `phi_lr`, and more functions, to see how the gap
# grows with phi's learning rate.
#
# **Next:** lesson 6 scales the same Algorithm 1 to images: unsupervised class-incremental
# learning, meta-trained on Omniglot and deployed on MNIST.

# %%
print(f"lesson 5 ran in {time.perf_counter() - lesson_start:.0f} s")
