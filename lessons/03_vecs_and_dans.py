# Lesson 3: VECs and DANs (percent-format source of 03_vecs_and_dans.ipynb; run
# `python lessons/_build.py` after editing it).

# %% [markdown]
# # Lesson 3: Vectors of synapses and Deep Artificial Neurons
#
# **What you will learn**
#
# - how a network of DANs differs from an ordinary network: every connection is a *vector* of `C`
#   synapses (a **VEC**) instead of one weight, and every node is a small neural network (a **DAN**)
#   that turns its `C`-vector of inputs into one number;
# - why a VEC layer is nothing but an ordinary weight matrix with `C` times more columns, and how
#   columns `j*C:(j+1)*C` feed DAN `j` (`tinydan.nn.vec`);
# - how a whole layer of `n` DANs runs as ONE batched call on the reshaped `(rows*n, C)` input, and
#   how much faster that is than a Python loop over neurons;
# - the three ways DANs can share their parameters (the **phenotype** phi): `global`, `per_layer`
#   and `unique`, what each costs, and why `unique` is still one batched matmul;
# - the paper's regression network (its section 3.1) with its skip VECs, its synapse shapes, and the
#   **population** axis `P` that runs several models (or several functions) in one call;
# - what a DAN with a *random* phenotype does to its inputs, and why it does not, by itself, stop a
#   network from forgetting: lesson 5 meta-learns the phenotype that does.
#
# The vocabulary is the paper's (glossary in docs/model-and-protocol.md): **synapses** or **theta**
# are the VEC weights that change while the network learns; the **phenotype** or **phi** is the
# DANs' own parameters, fixed while the network learns and meta-learned beforehand.

# %%
import os

# One BLAS thread, as `python -m tinydan.bench` uses: the matrices here are small, and on a busy
# machine BLAS threads make timings jumpy. (Set before NumPy is imported; delete it to compare.)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

import tinydan as td
from tinydan.experiments.configs import build_regression_net, regression_config
from tinydan.nn import DANNetwork, MLPDAN, PlainMLP, functional_call, vec
from tinydan.regression import deploy
from tinydan.tasks import sample_sines

rng = np.random.default_rng(0)
CHANNEL_COLORS = ["#d62728", "#2ca02c", "#1f77b4", "#9467bd", "#ff7f0e"]

# %% [markdown]
# ## 1. From a weighted sum to a vector of synapses
#
# An ordinary dense layer from `n_in` nodes to `n_out` nodes has one weight per pair of nodes:
# $h_j = \sum_i x_i W_{ij} + b_j$, a weight matrix of shape `(n_in, n_out)`, and then a fixed
# activation such as `tanh`.
#
# In a network of DANs the connection from node $i$ to DAN $j$ is a vector of `C` synapses
# $\theta_{i, j, 0}, \dots, \theta_{i, j, C-1}$ (the paper calls it a VEC). DAN $j$ receives the
# `C`-vector
#
# $$\sigma_{j, c} = \sum_i x_i\, \theta_{i,\, jC + c} + b_{jC + c}, \qquad c = 0, \dots, C - 1,$$
#
# so the VEC layer is still ONE matrix product, with a matrix of shape `(n_in, n_out*C)`: columns
# `j*C:(j+1)*C` are DAN `j`'s synapses. That is `tinydan.nn.vec(x, W, b)`. Like every synapse
# tensor in tinydan, `x`, `W` and `b` carry a leading **population** axis `P` (section 4 says why);
# here `P = 1`.

# %%
n_in, n_out, C = 4, 3, 3
x = rng.standard_normal((1, 2, n_in)).astype(np.float32)               # (P=1, B=2, n_in)
W_dense = rng.standard_normal((1, n_in, n_out)).astype(np.float32)     # (P, n_in, n_out)
W_vec = rng.standard_normal((1, n_in, n_out * C)).astype(np.float32)   # (P, n_in, n_out*C)
b_vec = np.zeros((1, 1, n_out * C), dtype=np.float32)                  # (P, 1, n_out*C)

h = td.tanh(td.tensor(x) @ td.tensor(W_dense))                         # a dense layer
sigma = vec(td.tensor(x), td.tensor(W_vec), td.tensor(b_vec))          # a VEC layer
print("dense layer:", x.shape, "@", W_dense.shape, "->", h.shape, "  (one number per node)")
print("VEC layer:  ", x.shape, "@", W_vec.shape, "->", sigma.shape, "  (C numbers per DAN)")
per_dan = sigma.reshape(2, n_out, C)                                   # (P*B, n_out, C)
for j in range(n_out):
    by_hand = x[0] @ W_vec[0, :, j * C:(j + 1) * C]                    # only DAN j's columns
    print(f"DAN {j}'s input vector for sample 0: {np.round(per_dan.data[0, j], 3)}"
          f"   = x @ W[:, {j * C}:{(j + 1) * C}]: {np.round(by_hand[0], 3)}")
    assert np.allclose(per_dan.data[:, j], by_hand, atol=1e-5)

# %% [markdown]
# The two weight matrices side by side. Each of the VEC matrix's column blocks (one per DAN) plays
# the part of one column of the dense matrix; inside a block, column `c` is channel `c`.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [3, 9]})
ax1.imshow(W_dense[0], cmap="RdBu_r", vmin=-2.5, vmax=2.5)
ax1.set_xticks(range(n_out), [f"node {j}" for j in range(n_out)], fontsize=8)
ax1.set_title(f"dense W {W_dense.shape[1:]}")
ax2.imshow(W_vec[0], cmap="RdBu_r", vmin=-2.5, vmax=2.5)
ax2.set_xticks(range(n_out * C), [f"ch {c}" for j in range(n_out) for c in range(C)], fontsize=7)
for j in range(n_out):
    ax2.add_patch(Rectangle((j * C - 0.5, -0.5), C, n_in, fill=False, ec="k", lw=2.5))
top = ax2.secondary_xaxis("top")
top.set_xticks([j * C + (C - 1) / 2 for j in range(n_out)], [f"DAN {j}" for j in range(n_out)])
ax2.set_title(f"VEC W {W_vec.shape[1:]}: column block j feeds DAN j")
for ax in (ax1, ax2):
    ax.set_yticks(range(n_in), [f"input {i}" for i in range(n_in)], fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### The paper's Figure 1, drawn
#
# Here is the same idea as a picture, for a network with 2 inputs, 3 and 2 nodes in the next layers,
# and `C = 3` channels (the paper's Figure 1 uses `n_channels = 3`). Left: the ordinary network,
# one line (one weight) per pair of nodes. Middle: the network of DANs. Every connection is 3 lines,
# one per channel (colour); channel `c` of every incoming VEC ends at the same input port `c` of the
# DAN, because the VEC layer *sums* over the source nodes. Every DAN box is the same function, with
# the same phenotype phi. Right: what is inside one DAN, an MLP from its `C` channels to one output
# (in the paper's regression network, `C = 40 -> 15 -> 8 -> 1` with tanh).

# %%
def layer_ys(n, gap=1.7):
    return (np.arange(n)[::-1] - (n - 1) / 2) * gap


def draw_network(ax, nodes, n_channels, dans=True, title=""):
    """Nodes as circles (inputs, or ordinary neurons) or DAN boxes with one port per channel."""
    xs = np.arange(len(nodes)) * 3.2
    half_w, half_h, r = 0.45, 0.6, 0.28
    ports = (np.arange(n_channels)[::-1] - (n_channels - 1) / 2) * 0.3

    def out_point(l, y):
        return (xs[l] + (half_w if dans and l > 0 else r), y)

    for l in range(len(nodes) - 1):                               # connections first, under nodes
        for y0 in layer_ys(nodes[l]):
            for y1 in layer_ys(nodes[l + 1]):
                x0, _ = out_point(l, y0)
                if dans:
                    for c in range(n_channels):
                        ax.plot([x0, xs[l + 1] - half_w], [y0, y1 + ports[c]],
                                color=CHANNEL_COLORS[c], lw=1.1, alpha=0.8)
                else:
                    ax.plot([x0, xs[l + 1] - r], [y0, y1], color="0.3", lw=1.1)
    for l, n in enumerate(nodes):
        for i, y in enumerate(layer_ys(n)):
            if l == 0:
                ax.add_patch(Circle((xs[l], y), r, fc="#dbe9f6", ec="0.2", zorder=3))
                ax.text(xs[l], y, f"$x_{i}$", ha="center", va="center", zorder=4)
            elif not dans:
                ax.add_patch(Circle((xs[l], y), r, fc="#fde2c8", ec="0.2", zorder=3))
                ax.text(xs[l], y, "tanh", ha="center", va="center", fontsize=7, zorder=4)
            else:
                ax.add_patch(FancyBboxPatch((xs[l] - half_w, y - half_h), 2 * half_w, 2 * half_h,
                                            boxstyle="round,pad=0.02", fc="#fde2c8", ec="0.2",
                                            zorder=3))
                ax.text(xs[l] + 0.05, y, "DAN\n$\\varphi$", ha="center", va="center",
                        fontsize=8, zorder=4)
                for c in range(n_channels):
                    ax.add_patch(Circle((xs[l] - half_w, y + ports[c]), 0.07,
                                        fc=CHANNEL_COLORS[c], ec="none", zorder=4))
    ax.set_xlim(xs[0] - 0.8, xs[-1] + 0.9)
    span = max(layer_ys(max(nodes))) + 1.0
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)


def draw_dan_inside(ax, sizes, shown=(3, 6, 4, 1)):
    """One DAN as an MLP; `shown` nodes per layer are drawn, `sizes` are the real widths."""
    xs = np.arange(len(shown)) * 1.6
    ys = [layer_ys(n, gap=0.5) for n in shown]
    for l in range(len(shown) - 1):
        for y0 in ys[l]:
            for y1 in ys[l + 1]:
                ax.plot([xs[l], xs[l + 1]], [y0, y1], color="0.7", lw=0.6)
    for l, n in enumerate(shown):
        for i, y in enumerate(ys[l]):
            fc = CHANNEL_COLORS[i] if l == 0 else "#fde2c8"
            ax.add_patch(Circle((xs[l], y), 0.13, fc=fc, ec="0.2", zorder=3))
        label = f"C = {sizes[0]}\nchannels" if l == 0 else (
            f"{sizes[l]}\ntanh" if l < len(shown) - 1 else "1 output\ntanh")
        ax.text(xs[l], -1.85, label, ha="center", va="top", fontsize=8)
    ax.add_patch(FancyBboxPatch((xs[0] - 0.45, -1.6), xs[-1] - xs[0] + 0.9, 3.2,
                                boxstyle="round,pad=0.05", fill=False, ec="0.2", ls="--"))
    ax.set_xlim(xs[0] - 0.7, xs[-1] + 0.7)
    ax.set_ylim(-2.9, 2.9)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("inside one DAN: an MLP, parameters phi", fontsize=10)


fig, axes = plt.subplots(1, 3, figsize=(14, 4.6), gridspec_kw={"width_ratios": [4, 4, 3]})
draw_network(axes[0], (2, 3, 2), 3, dans=False, title="ordinary network: one weight per connection")
draw_network(axes[1], (2, 3, 2), 3, dans=True,
             title="network of DANs, C = 3: one VEC (3 synapses) per connection")
draw_dan_inside(axes[2], sizes=(3, 15, 8, 1))
plt.tight_layout()
plt.show()

# %% [markdown]
# Count the lines: the ordinary network has `2*3 + 3*2 = 12` weights; the network of DANs has
# `C = 3` times as many synapses, 36 (plus biases). The paper's point is that a connection between
# two neurons is then "a non-linear function of the magnitude and orientation of this synaptic
# vector" (Figure 1's caption): what the DAN makes of its `C`-vector is learned, and shared.
#
# ## 2. A DAN, and a whole layer of DANs in one call
#
# `MLPDAN(C, hidden=(15, 8))` is the paper's DAN: `C -> 15 -> 8 -> 1` with tanh after every layer.
# Its Parameters are the phenotype phi: $40 \cdot 15 + 15 + 15 \cdot 8 + 8 + 8 \cdot 1 + 1 = 752$
# numbers for `C = 40`.

# %%
C = 40
dan = MLPDAN(C, hidden=(15, 8), activation="tanh", rng=np.random.default_rng(1))
print(dan)
for name, p in dan.named_parameters():
    print(f"  {name}: {p.shape}")
print("phi has", dan.num_parameters(), "numbers")

# %% [markdown]
# A DAN takes input of shape `(R, n, C)`: `R` rows (samples, times population members), `n`
# neurons, `C` channels, and returns `(R, n)`, one number per neuron. Because every neuron of the
# layer uses the same phi, the DAN does not care which neuron a `C`-vector belongs to: it reshapes
# the input to `(R*n, C)`, one row per (sample, neuron) pair, and runs its MLP once on all the rows.
# Here it is by hand in NumPy, with the shapes, next to `dan(z)`.

# %%
R, n = 5, 40
z = rng.standard_normal((R, n, C)).astype(np.float32)        # what a VEC layer produced
rows = z.reshape(R * n, C)
print(f"z {z.shape} -> rows {rows.shape}")
hid = rows
for i in range(3):
    w, b = getattr(dan, f"w{i}").data, getattr(dan, f"b{i}").data
    hid = np.tanh(hid @ w + b)
    print(f"  layer {i}: {hid.shape[0]} rows @ w{i} {w.shape} -> {hid.shape}")
out_by_hand = hid.reshape(R, n)
out = dan(td.tensor(z))
print(f"back to (R, n): {out_by_hand.shape};  dan(z): {out.shape};  "
      f"max difference {np.abs(out.data - out_by_hand).max():.1e}")
assert np.allclose(out.data, out_by_hand, atol=1e-6)

# %% [markdown]
# The paper warns that passing each neuron's slice through a DAN of its own, separately, "can
# significantly worsen computational efficiency, and should be avoided". Even with one shared DAN,
# a loop over the slices is the slow way. Let us measure it: a Python loop over neurons against one
# batched call, for layers of growing width.
# The loop pays the fixed cost of every NumPy call (and of tinydan's bookkeeping) once per neuron;
# the batched call pays it once per layer.

# %%
def best_time(fn, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def layer_by_loop(dan, z):
    """The loop the library avoids: one DAN call per neuron."""
    outs = [dan(td.tensor(z[:, j:j + 1, :])) for j in range(z.shape[1])]
    return td.concatenate(outs, axis=1)


widths = [1, 4, 16, 64, 256, 1024]
t_loop, t_batched = [], []
with td.no_grad():
    for width in widths:
        zw = rng.standard_normal((8, width, C)).astype(np.float32)
        assert np.allclose(layer_by_loop(dan, zw).data, dan(td.tensor(zw)).data, atol=1e-6)
        t_loop.append(best_time(lambda: layer_by_loop(dan, zw)))
        t_batched.append(best_time(lambda: dan(td.tensor(zw)), repeats=10))
        print(f"{width:5d} neurons: loop {1e3 * t_loop[-1]:8.2f} ms, batched "
              f"{1e3 * t_batched[-1]:6.3f} ms, speedup {t_loop[-1] / t_batched[-1]:6.1f}x")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
ax1.loglog(widths, 1e3 * np.array(t_loop), "o-", label="Python loop over neurons")
ax1.loglog(widths, 1e3 * np.array(t_batched), "s-", label="one batched call")
ax1.set_xlabel("neurons in the layer")
ax1.set_ylabel("forward time (ms), 8 samples")
ax1.legend()
ax1.set_title("a layer of DANs, C = 40")
ax2.semilogx(widths, np.array(t_loop) / np.array(t_batched), "o-", color="C2")
ax2.set_xlabel("neurons in the layer")
ax2.set_ylabel("loop time / batched time")
ax2.set_title("speedup of the batched call")
plt.tight_layout()
plt.show()

# %% [markdown]
# The batched call grows far more slowly than the loop: a few hundred neurons cost it little more
# than one. (Exact numbers depend on your machine; the shape of the curves does not.) The same
# holds for the backward pass, which the meta-learning of lesson 5 runs thousands of times.
#
# ## 3. Sharing the phenotype: `global`, `per_layer`, `unique`
#
# Who shares phi with whom is a design choice; the paper compares three (its Figure 4,
# bottom-left):
#
# | sharing | phenotypes | phi in the paper's regression network |
# | --- | --- | --- |
# | `global` | one DAN for every DAN layer | 752 |
# | `per_layer` | one DAN per layer (3 layers of DANs) | 3 x 752 |
# | `unique` | one DAN per neuron (40 + 40 + 1 = 81 DANs) | 81 x 752 |
#
# `build_regression_net(cfg, sharing=...)` builds each; the synapses (theta) are the same in all
# three.

# %%
cfg = regression_config("paper")
counts = {}
for sharing in ("global", "per_layer", "unique"):
    net_s = build_regression_net(cfg, sharing=sharing)
    counts[sharing] = net_s.num_parameters()
    print(f"{sharing:10s} {len(net_s.dans)} DAN module(s), phi: {counts[sharing]:6d} numbers "
          f"= {counts[sharing] // counts['global']:2d} x 752;  synapses theta: "
          f"{net_s.num_synapses()}")
assert counts == {"global": 752, "per_layer": 3 * 752, "unique": 81 * 752}

fig, ax = plt.subplots(figsize=(6.5, 3.2))
bars = ax.bar(list(counts), list(counts.values()), color=["C0", "C1", "C3"])
ax.axhline(net_s.num_synapses(), color="k", ls=":", label="synapses theta (73,640)")
ax.bar_label(bars, [f"{v:,}" for v in counts.values()])
ax.set_yscale("log")
ax.set_ylim(300, 3e5)
ax.set_ylabel("phenotype parameters phi")
ax.set_title("phi of the paper's regression network, by sharing scheme")
ax.legend(loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# With `unique` sharing each DAN module serves a whole layer but holds one set of weights *per
# neuron*: a leading neuron axis on every weight. The input `(R, n, C)` is transposed to
# `(n, R, C)`, so that the neuron axis is a batch axis, and each layer of the MLP is one batched
# matrix product `(n, R, C) @ (n, C, 15) -> (n, R, 15)`: still no loop over neurons.

# %%
net_unique = build_regression_net(cfg, sharing="unique")
for name, p in net_unique.named_parameters():
    if name.startswith("dans.0."):
        print(f"  {name}: {p.shape}")
print("  ... and dans.1 (40 neurons), dans.2 (1 neuron) likewise")

# %% [markdown]
# If every neuron's weights are the same, `unique` must compute exactly what `global` computes.
# A good check of the whole machinery: take a `global` network's phi, copy it to every neuron of a
# `unique` network (`np.broadcast_to` adds the neuron axis), and run both on the same input and
# synapses. `functional_call(module, params, *args)` runs a module with other tensors standing in
# for its parameters, without touching the module itself.

# %%
net_global = build_regression_net(cfg, np.random.default_rng(2), sharing="global")
phi_global = dict(net_global.named_parameters())      # dans.0.w0 (40, 15), dans.0.b0 (15,), ...
copied = {}
for name, p in net_unique.named_parameters():         # dans.<layer>.w0 (n, 40, 15), ...
    _, layer, leaf = name.split(".")
    n_neurons = cfg.nodes[int(layer) + 1]
    g = phi_global[f"dans.0.{leaf}"].data
    shape = (n_neurons,) + g.shape if leaf.startswith("w") else (n_neurons, 1) + g.shape
    copied[name] = td.tensor(np.broadcast_to(g, shape).copy())
theta = {k: td.tensor(v) for k, v in net_global.init_synapses(1, np.random.default_rng(3)).items()}
xs = np.linspace(-5, 5, 50, dtype=np.float32).reshape(1, 50, 1)
y_global = net_global(xs, theta).data
y_unique = functional_call(net_unique, copied, xs, theta).data
print("largest difference, unique (identical neurons) vs global:",
      np.abs(y_global - y_unique).max())
assert np.allclose(y_global, y_unique, atol=1e-5), "unique with identical DANs must equal global"

# %% [markdown]
# Is `unique` slow? It reads `n` times more weights, but it does the same arithmetic as `global` in
# the same number of calls, so for a network this size it costs about the same:

# %%
with td.no_grad():
    for name, m in (("global", net_global), ("unique", net_unique)):
        t = best_time(lambda: m(np.zeros((1, 32, 1), np.float32), theta), repeats=10)
        print(f"{name:7s} forward of the whole network on 32 points: {1e3 * t:.2f} ms")

# %% [markdown]
# ## 4. Skip VECs and the full regression network
#
# The regression network of the paper (section 3.1) has nodes `[1, 40, 40, 1]`: one input, two
# layers of 40 DANs and one output DAN, `C = 40`. Besides the three VEC layers between consecutive
# layers it has two **skip VECs**, 0 -> 2 and 1 -> 3 (as in residual networks). A skip VEC is a
# VEC layer without bias, and its output is *added to the target layer's DAN input, before the
# DANs*:
#
# $$\sigma_2 = \text{vec}(a_1, \theta_1) + \text{vec}(a_0, \theta_{\text{skip } 0 \to 2}),
#   \qquad a_2 = \text{DAN}_\varphi(\sigma_2).$$
#
# The output of the `paper` config is `4 * tanh(...)`, because the output DAN ends in tanh while
# the targets reach about 4 (config `default` drops the last tanh instead).

# %%
def draw_regression_net(ax, nodes, skips, C):
    xs = np.arange(len(nodes)) * 3.0
    heights = [0.9 + 2.1 * n / max(nodes) for n in nodes]
    for l, n in enumerate(nodes):
        ax.add_patch(FancyBboxPatch((xs[l] - 0.5, -heights[l] / 2), 1.0, heights[l],
                                    boxstyle="round,pad=0.05",
                                    fc="#dbe9f6" if l == 0 else "#fde2c8", ec="0.2"))
        kind = "input" if l == 0 else ("output\nDAN" if l == len(nodes) - 1 else "DANs")
        ax.text(xs[l], 0, f"{n}\n{kind}", ha="center", va="center", fontsize=9)
        if l > 0:
            w = (nodes[l - 1], nodes[l] * C)
            ax.add_patch(FancyArrowPatch((xs[l - 1] + 0.6, 0), (xs[l] - 0.6, 0),
                                         arrowstyle="-|>", mutation_scale=14, color="k"))
            ax.text((xs[l - 1] + xs[l]) / 2, 0.15, f"vec{l - 1}\n{w}", ha="center",
                    va="bottom", fontsize=8)
    for s, (j, k) in enumerate(skips):
        sign = 1 if s % 2 == 0 else -1                   # first skip above, second below
        start = (xs[j], sign * (heights[j] / 2 + 0.1))
        end = (xs[k], sign * (heights[k] / 2 + 0.1))
        ax.add_patch(FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={-0.45 * sign}",
                                     arrowstyle="-|>", mutation_scale=14, color="C3", lw=1.5))
        dist = np.hypot(end[0] - start[0], end[1] - start[1])
        apex = (start[1] + end[1]) / 2 + sign * 0.45 * dist / 2      # top of the Bezier arc
        ax.text((xs[j] + xs[k]) / 2, apex + sign * 0.1,
                f"skip{j}_{k}  {(nodes[j], nodes[k] * C)}, no bias",
                ha="center", va="bottom" if sign > 0 else "top", fontsize=8, color="C3")
    ax.set_xlim(-0.8, xs[-1] + 0.8)
    ax.set_ylim(-3.4, 3.4)
    ax.set_aspect("equal")
    ax.axis("off")


net = build_regression_net(cfg, np.random.default_rng(4))
fig, ax = plt.subplots(figsize=(10, 4.4))
draw_regression_net(ax, cfg.nodes, cfg.skips, cfg.n_channels)
ax.set_title("the regression network of paper section 3.1: VECs (black), skip VECs (red), C = 40")
plt.show()

# %% [markdown]
# `net.synapse_shapes()` lists one member's synapses; `net.init_synapses(P, rng)` makes them for
# `P` members, with the leading population axis.

# %%
shapes = net.synapse_shapes()
print(f"{'synapses':16s} {'shape':>12s} {'count':>7s}")
for name, shape in shapes.items():
    print(f"{name:16s} {str(shape):>12s} {int(np.prod(shape)):7d}")
print(f"{'total':16s} {'':12s} {net.num_synapses():7d}    (phi: {net.num_parameters()})")

# %% [markdown]
# The whole forward pass fits in a few lines, with the public pieces: `vec`, the skip VECs added
# before the DANs, the reshape to one row of `C` per DAN, and `net.dan_for_layer(l)`. We check it
# against `net(x, theta)`.

# %%
def forward_by_hand(net, x, theta):
    P, B, _ = x.shape
    C, L = net.n_channels, len(net.nodes) - 1
    acts = [x]
    for l in range(1, L + 1):
        sigma = vec(acts[l - 1], theta[f"vec{l - 1}.weight"], theta[f"vec{l - 1}.bias"])
        for j, k in net.skips:
            if k == l:                                   # skip VEC: added before the DANs
                sigma = sigma + vec(acts[j], theta[f"skip{j}_{k}.weight"])
        sigma = sigma.reshape(P * B, net.nodes[l], C)    # one row of C per DAN
        a = net.dan_for_layer(l)(sigma, final_activation=(l < L or net.final_activation))
        acts.append(a.reshape(P, B, net.nodes[l]))
    out = acts[-1]
    return out * net.output_scale if net.output_scale is not None else out


theta = {k: td.tensor(v) for k, v in net.init_synapses(1, np.random.default_rng(5)).items()}
x_in = td.tensor(np.linspace(-5, 5, 7, dtype=np.float32).reshape(1, 7, 1))
mine, ref = forward_by_hand(net, x_in, theta), net(x_in, theta)
print("by hand:", np.round(mine.data.ravel(), 4))
print("net:    ", np.round(ref.data.ravel(), 4))
assert np.allclose(mine.data, ref.data, atol=1e-6)

# %% [markdown]
# ### The population axis `P`
#
# Every synapse tensor has a leading axis `P`, and so do the input `(P, B, 1)` and the output
# `(P, B, 1)`. Member `p` uses only `theta[name][p]`, while all members share phi. This is how
# Algorithm 1 trains a population of models at once, and how deployment learns many different
# functions at once (lesson 5): one call, no loop over members. Here, 5 members with *different*
# random synapses (`same=False`) compute 5 different random functions of `x` through the same
# DANs.

# %%
P = 5
theta_pop = {k: td.tensor(v) for k, v in
             net.init_synapses(P, np.random.default_rng(6), same=False).items()}
print({k: v.shape for k, v in theta_pop.items()})
x_grid = np.broadcast_to(np.linspace(-5, 5, 200, dtype=np.float32)[:, None], (P, 200, 1))
with td.no_grad():
    y_pop = net(x_grid, theta_pop).data                                # (P, 200, 1): one call
    y_member2 = net(x_grid[2:3], {k: v[2:3] for k, v in theta_pop.items()}).data
print("output", y_pop.shape, "; member 2 alone equals row 2:", np.allclose(y_member2[0], y_pop[2]))
assert np.allclose(y_member2[0], y_pop[2], atol=1e-6)

fig, ax = plt.subplots(figsize=(7, 3.2))
for p in range(P):
    ax.plot(x_grid[p, :, 0], y_pop[p, :, 0], label=f"member {p}")
ax.set_xlabel("x")
ax.set_ylabel("network output")
ax.set_title("one call, 5 population members: same phi, different synapses")
ax.legend(fontsize=8, ncol=5, loc="lower center")
plt.tight_layout()
plt.show()

# %% [markdown]
# Why the steep step at `x = 0`? With one input, the first layer of DANs receives `x` times a fixed
# vector of synapses (plus biases, zero at initialisation). These weights are drawn with variance
# 1 / fan_in = 1, so the 40-vector has a norm of about 6: by `|x| = 0.3` its norm is already about
# 2, where the DANs saturate (the previous plots show it), and as `x` crosses 0 the vector flips to
# the opposite direction, to which a DAN may respond quite differently.

# %% [markdown]
# ## 5. What a DAN does to learning
#
# A standard neuron's output is a monotone function of ONE number, the weighted sum of its inputs.
# A DAN's output is a function of a `C`-vector: whatever smooth function its phenotype makes of it.
# Let us look at the shared DAN of the network above (random phi) along a few directions of its
# 40-dimensional input space:
#
# - **one channel scanned**: channel 0 from -4 to 4, the other 39 channels held at a random vector;
# - **the norm of the vector**: $\sigma = s\,u$ for a few random unit directions $u$, and
#   $s \ge 0$, compared with a standard tanh neuron whose input is $s$;
# - **two channels** at once, the others at zero, as a map.

# %%
dan_r = net.dan_for_layer(1)                       # the shared DAN, random phi
rng5 = np.random.default_rng(7)
s = np.linspace(-4, 4, 201, dtype=np.float32)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
with td.no_grad():
    for k in range(4):
        base = rng5.standard_normal(C).astype(np.float32)
        inp = np.repeat(base[None], len(s), axis=0)
        inp[:, 0] = s
        axes[0].plot(s, dan_r(td.tensor(inp[:, None, :])).data[:, 0], label=f"others = random #{k}")
    axes[0].set_xlabel("channel 0")
    axes[0].set_ylabel("DAN output")
    axes[0].set_title("scan of one channel")
    axes[0].legend(fontsize=8)

    norms = np.linspace(0, 12, 201, dtype=np.float32)
    for k in range(4):
        u = rng5.standard_normal(C).astype(np.float32)
        u /= np.linalg.norm(u)
        axes[1].plot(norms, dan_r(td.tensor(norms[:, None, None] * u)).data[:, 0],
                     label=f"direction #{k}")
    axes[1].plot(norms, np.tanh(norms), "k:", label="tanh(s): a standard neuron")
    axes[1].set_xlabel("norm s of the input vector")
    axes[1].set_ylim(-1.05, 1.9)
    axes[1].set_title("along rays s * u")
    axes[1].legend(fontsize=7, ncol=2, loc="upper right")

    g = np.linspace(-4, 4, 81, dtype=np.float32)
    grid = np.zeros((len(g), len(g), C), dtype=np.float32)
    grid[..., 0], grid[..., 1] = np.meshgrid(g, g)
    resp = dan_r(td.tensor(grid.reshape(-1, 1, C))).data.reshape(len(g), len(g))
    im = axes[2].imshow(resp, origin="lower", extent=(-4, 4, -4, 4), cmap="RdBu_r")
    axes[2].contour(g, g, resp, colors="k", linewidths=0.5, levels=10)
    axes[2].set_xlabel("channel 0")
    axes[2].set_ylabel("channel 1")
    axes[2].set_title("two channels (others 0)")
    plt.colorbar(im, ax=axes[2])
fig.suptitle("a DAN with a RANDOM phenotype, C = 40 -> 15 -> 8 -> 1", y=1.02)
plt.tight_layout()
plt.show()

# %% [markdown]
# Even a random DAN is more than a squashed sum. Along a ray the output depends on the
# *direction* of the input vector, not only on its size: each direction saturates at its own level,
# some rise, some fall, and some (direction #3 here) first fall and then come back, which no
# `tanh(s)` can do. In the map, the output changes fastest across one oblique direction and hardly
# at all along another, and the bends in the contours show that it is not a function of one
# weighted sum either. That is the freedom the paper wants: learning moves the synapses, and *how
# the network's function changes* when a synapse moves is decided by the DAN. A random phenotype
# decides it at random.
#
# ### Deploying: learning five windows in a row
#
# Now the continual-learning test of the paper (sections 4.1 and 6.1), made small so that it runs in
# seconds: a sine-like function on [-5, 5] is learned window by window, [-5, -3] first, then
# [-3, -1], ..., [3, 5], with 100 SGD steps of one point per window, on the synapses only (phi is
# fixed), never going back to an earlier window. `tinydan.regression.deploy` does exactly that for
# many functions at once (along the population axis) and records the predictions after every
# window. We compare:
#
# - a network of DANs with a **random** phenotype: `regression_config("tiny")` (nodes
#   `[1, 8, 8, 1]`, `C = 6`, DAN `6 -> 5 -> 4 -> 1`, linear output) with 100 steps per window;
# - a plain MLP `1 -> 40 -> 40 -> 1` with tanh (`PlainMLP`), whose weights are all "synapses".
#
# Both use SGD with learning rate 0.01.

# %%
cfg_small = regression_config("tiny", steps_per_window=100)
net_small = build_regression_net(cfg_small, np.random.default_rng(6))     # random phi
theta0 = net_small.init_synapses(1, np.random.default_rng(9))
mlp = PlainMLP((1, 40, 40, 1))
theta0_mlp = mlp.init_synapses(1, np.random.default_rng(10))
functions = sample_sines(np.random.default_rng(15), 4)

start = time.perf_counter()
runs = {"DANs, random phi": deploy(net_small, theta0, functions, cfg_small, record=True),
        "plain MLP": deploy(mlp, theta0_mlp, functions, cfg_small, lr=0.01, record=True)}
elapsed = time.perf_counter() - start
print(f"deployed {len(functions)} functions with both models in {elapsed:.1f} s")
print(f"synapses: DAN network {net_small.num_synapses()} (phi {net_small.num_parameters()}), "
      f"MLP {mlp.num_synapses()}")

# %%
shown = 3
T = cfg_small.n_windows
colors = plt.cm.viridis(np.linspace(0, 0.9, T))
fig, axes = plt.subplots(2, shown, figsize=(14, 6.4), sharex=True)
for row, (name, run) in enumerate(runs.items()):
    for f in range(shown):
        ax = axes[row, f]
        for w, (lo, hi) in enumerate(run["windows"]):
            ax.axvspan(lo, hi, color=colors[w], alpha=0.12)
            ax.plot(run["x"], run["preds"][f, w], color=colors[w], lw=1.4,
                    label=f"after window {w}")
        ax.plot(run["x"], run["y"][f], "k--", lw=1.2, label="target")
        ax.set_ylim(-4.5, 4.5)
        ax.set_title(f"{name}, function {f}", fontsize=10)
        if f == 0:
            ax.set_ylabel("prediction")
        if row == 1:
            ax.set_xlabel("x")
axes[0, 0].legend(fontsize=7, loc="lower left", ncol=2)
plt.tight_layout()
plt.show()

# %% [markdown]
# After each window the colour of the curve changes. Both models fit the window they are on (each
# curve matches the dashed target inside its own shaded band), and both bend away from the windows
# they learned before: **forgetting**. The loss matrix $R_{ij}$ (error on window $j$ after learning
# window $i$, averaged over the functions) shows it at a glance: the diagonal is what was just
# learned, everything left of it is memory.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, (name, run) in zip(axes, runs.items()):
    Rm = run["R"].mean(0)
    im = ax.imshow(np.log10(Rm), cmap="magma_r", vmin=-3, vmax=0.5)
    for (i, j), v in np.ndenumerate(Rm):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="w" if np.log10(v) > -0.5 else "k")
    ax.set_xlabel("window j (scored)")
    ax.set_ylabel("after learning window i")
    memory = np.mean([Rm[i, :i].mean() for i in range(1, T)])
    ax.set_title(f"{name}\nfinal MSE {Rm[-1].mean():.3f}, memory loss {memory:.3f}", fontsize=10)
plt.colorbar(im, ax=axes, label="log10 MSE")
plt.show()
for name, run in runs.items():
    just_learned = np.diagonal(run["R"], axis1=1, axis2=2).mean()
    print(f"{name:17s} MSE on the window just learned {just_learned:.3f};  "
          f"on all windows at the end {run['R'][:, -1].mean():.3f}")

# %% [markdown]
# This random phenotype makes a network of DANs a fine learner of the current window, and just as
# forgetful as an MLP: nothing in random DANs knows that an old window should be left alone. (Not
# every random phenotype even learns: build `net_small` with `np.random.default_rng(8)` and the
# network can hardly fit a single window. The paper's random fixed phenotype, net2 in its Figure 4,
# does about as well as predicting zero.) The paper's claim is
# that a phenotype *can* know this, if it is meta-learned for it: phi is trained so that after every
# SGD step on the synapses the network still fits everything seen so far (the memory loss).
# **Lesson 5** does that meta-learning (Algorithm 1) and deploys the result on these same plots.
#
# ## Exercises
#
# Each exercise has an answer cell marked `# YOUR ANSWER`: replace every
# `raise NotImplementedError(...)` in it with your code, then run the check cell below it. The check
# fails, with a message that says what is wrong, until your answer is right. (Run top to bottom,
# this notebook stops at the first exercise not yet answered; `lessons/solutions/` has the same
# notebook with reference solutions.)
#
# ### Exercise 1: a VEC layer in NumPy
#
# Write `vec_numpy(x, W, b)` for `x (P, B, n_in)`, `W (P, n_in, n_out*C)` and `b (P, 1, n_out*C)`
# (or `None`), returning the VEC output `(P, B, n_out*C)`, and `dan_inputs(sigma, n_out, C)` that
# reshapes it to `(P*B, n_out, C)`, one row of `C` per DAN. Use NumPy only.

# %%
# YOUR ANSWER
def vec_numpy(x, W, b=None):
    # BEGIN SOLUTION
    out = np.matmul(x, W)                        # (P, B, n_in) @ (P, n_in, n_out*C)
    return out if b is None else out + b
    # END SOLUTION


def dan_inputs(sigma, n_out, C):
    # BEGIN SOLUTION
    P, B, _ = sigma.shape
    return sigma.reshape(P * B, n_out, C)
    # END SOLUTION

# %%
rng_e = np.random.default_rng(100)
for P_, B_, n_in_, n_out_, C_ in [(1, 3, 4, 2, 3), (3, 5, 2, 4, 6), (2, 1, 7, 1, 5)]:
    xe = rng_e.standard_normal((P_, B_, n_in_))
    We = rng_e.standard_normal((P_, n_in_, n_out_ * C_))
    be = rng_e.standard_normal((P_, 1, n_out_ * C_))
    for bias in (be, None):
        ref = vec(td.tensor(xe), td.tensor(We), None if bias is None else td.tensor(bias)).data
        mine = np.asarray(vec_numpy(xe, We, bias))
        assert mine.shape == ref.shape, (
            f"vec_numpy returned shape {mine.shape} for x {xe.shape}, W {We.shape}; "
            f"expected {ref.shape}")
        assert np.allclose(mine, ref), (
            f"vec_numpy differs from tinydan.nn.vec for x {xe.shape}, W {We.shape}, "
            f"bias {'given' if bias is not None else 'None'}: each member p must use its own W[p]")
    sigma_e = vec(td.tensor(xe), td.tensor(We), td.tensor(be)).data
    rows = np.asarray(dan_inputs(sigma_e, n_out_, C_))
    assert rows.shape == (P_ * B_, n_out_, C_), \
        f"dan_inputs returned shape {rows.shape}, expected {(P_ * B_, n_out_, C_)}"
    p, b_, j = P_ - 1, B_ - 1, n_out_ - 1
    want = xe[p, b_] @ We[p, :, j * C_:(j + 1) * C_] + be[p, 0, j * C_:(j + 1) * C_]
    assert np.allclose(rows[p * B_ + b_, j], want), (
        "dan_inputs puts the wrong numbers in a DAN's row: row (p*B + b, j) must be "
        "columns j*C:(j+1)*C of member p's sample b")
print("Exercise 1: correct")

# %% [markdown]
# ### Exercise 2: count the synapses
#
# Write `count_synapses(nodes, C, skips)`: the number of synapses of one member of a
# `DANNetwork(nodes, C, ..., skips=skips)`, i.e. every VEC weight and bias and every skip VEC weight
# (skip VECs have no bias). The check compares it with `DANNetwork.num_synapses()` for several
# networks, the paper's among them (73,640).

# %%
# YOUR ANSWER
def count_synapses(nodes, C, skips=()):
    # BEGIN SOLUTION
    total = 0
    for n_from, n_to in zip(nodes[:-1], nodes[1:]):
        total += n_from * n_to * C + n_to * C          # weight + bias
    for j, k in skips:
        total += nodes[j] * nodes[k] * C               # weight only
    return total
    # END SOLUTION

# %%
cases = [((1, 40, 40, 1), 40, ((0, 2), (1, 3))), ((1, 8, 8, 1), 6, ((0, 2), (1, 3))),
         ((3, 5, 2), 4, ()), ((2, 7, 3, 4, 1), 3, ((0, 2), (1, 4), (2, 4))), ((1, 1), 1, ())]
for nodes_, C_, skips_ in cases:
    net_e = DANNetwork(nodes_, C_, lambda n_neurons=None: MLPDAN(C_, (3,), n_neurons=n_neurons),
                       skips=skips_)
    want, got = net_e.num_synapses(), count_synapses(nodes_, C_, skips_)
    assert got == want, (
        f"nodes {nodes_}, C = {C_}, skips {skips_}: you count {got} synapses, the network has "
        f"{want}. Its synapses are {net_e.synapse_shapes()}")
print("Exercise 2: correct")

# %% [markdown]
# ### Exercise 3: a layer of unique DANs with `einsum`
#
# With `unique` sharing, `MLPDAN(C, hidden, n_neurons=n)` stores `w{i}` of shape `(n, a, b)` and
# `b{i}` of shape `(n, 1, b)`. Write `unique_dan_forward(z, weights, biases)` that computes the
# layer's output `(R, n)` from `z (R, n, C)` with `np.einsum` (tanh after every layer), without a
# loop over neurons. The check compares it with `MLPDAN(..., n_neurons=n)`.

# %%
# YOUR ANSWER
def unique_dan_forward(z, weights, biases):
    # BEGIN SOLUTION
    h = z                                                    # (R, n, C)
    for w, b in zip(weights, biases):                        # w (n, a, b), b (n, 1, b)
        h = np.tanh(np.einsum("rna,nab->rnb", h, w) + b[:, 0, :])
    return h[..., 0]                                         # (R, n, 1) -> (R, n)
    # END SOLUTION

# %%
for R_, n_, C_, hidden_ in [(4, 3, 5, (6, 2)), (1, 7, 2, (3,)), (6, 1, 4, (5, 4, 3))]:
    dan_e = MLPDAN(C_, hidden_, n_neurons=n_, rng=np.random.default_rng(R_), dtype=np.float64)
    for p in dan_e.parameters():                 # non-zero biases, so they are checked too
        p.data = p.data + 0.1 * rng_e.standard_normal(p.shape)
    ze = rng_e.standard_normal((R_, n_, C_))
    ws = [getattr(dan_e, f"w{i}").data for i in range(dan_e.n_layers)]
    bs = [getattr(dan_e, f"b{i}").data for i in range(dan_e.n_layers)]
    ref = dan_e(td.tensor(ze)).data
    mine = np.asarray(unique_dan_forward(ze, ws, bs))
    assert mine.shape == ref.shape, f"expected output of shape {ref.shape} (R, n), got {mine.shape}"
    wrong = np.flatnonzero(~np.isclose(mine, ref).all(axis=0))
    assert wrong.size == 0, (
        f"R={R_}, n={n_}, C={C_}, hidden={hidden_}: neurons {wrong.tolist()} differ from MLPDAN; "
        "neuron j must use w[j] and b[j] only, with tanh after every layer")
print("Exercise 3: correct")

# %% [markdown]
# ### Exercise 4: an ordinary network is a network of DANs
#
# Show that the ordinary dense network is the special case `C = 1` with a DAN that does (almost)
# nothing. Given the synapses of a `PlainMLP((1, 16, 16, 1))` (tanh hidden layers, linear output),
# return a `DANNetwork` and its synapses that compute exactly the same function.
#
# Hints: with `C = 1` a VEC layer has the shape of a dense layer. `MLPDAN(1, hidden=())` is the DAN
# $z \mapsto \tanh(w z + b)$ with $w$ `w0 (1, 1)` and $b$ `b0 (1,)`; choose its phi so that it is
# exactly `tanh`, and remember `final_activation=False` for the linear output layer. Set
# parameters with `module.load_state_dict({...})`.

# %%
# YOUR ANSWER
def mlp_as_dan_network(mlp_theta, sizes):
    # BEGIN SOLUTION
    net = DANNetwork(sizes, 1, lambda n_neurons=None: MLPDAN(1, hidden=(), n_neurons=n_neurons),
                     final_activation=False)
    net.load_state_dict({"dans.0.w0": np.ones((1, 1)), "dans.0.b0": np.zeros(1)})   # DAN = tanh
    theta = {}
    for l in range(len(sizes) - 1):
        theta[f"vec{l}.weight"] = mlp_theta[f"w{l}"]
        theta[f"vec{l}.bias"] = mlp_theta[f"b{l}"]
    return net, theta
    # END SOLUTION

# %%
sizes_e = (1, 16, 16, 1)
mlp_e = PlainMLP(sizes_e)
theta_mlp = mlp_e.init_synapses(3, np.random.default_rng(12), same=False)
for k in theta_mlp:                                        # non-zero biases
    if k.startswith("b"):
        noise = 0.3 * rng_e.standard_normal(theta_mlp[k].shape)
        theta_mlp[k] = theta_mlp[k] + noise.astype(np.float32)
net_e, theta_e = mlp_as_dan_network({k: v.copy() for k, v in theta_mlp.items()}, sizes_e)
assert isinstance(net_e, DANNetwork), "return a tinydan.nn.DANNetwork as the first value"
assert net_e.n_channels == 1, f"use C = 1 channel per connection, not {net_e.n_channels}"
missing = set(net_e.synapse_shapes()) - set(theta_e)
assert not missing, \
    f"your synapses lack {sorted(missing)}; the network needs {net_e.synapse_shapes()}"
for k, shape in net_e.synapse_shapes().items():
    assert np.shape(theta_e[k])[1:] == shape, \
        f"synapses {k} have shape {np.shape(theta_e[k])}, expected (P,) + {shape}"
x_e = np.broadcast_to(np.linspace(-5, 5, 64, dtype=np.float32)[:, None], (3, 64, 1))
with td.no_grad():
    want = mlp_e(td.tensor(x_e), {k: td.tensor(v) for k, v in theta_mlp.items()}).data
    got = net_e(td.tensor(x_e), {k: td.tensor(np.asarray(v, np.float32))
                                 for k, v in theta_e.items()}).data
err = np.abs(got - want).max()
assert err < 1e-5, (
    f"the DAN network differs from the MLP by up to {err:.3g}. Is each DAN exactly tanh (w0 = 1, "
    "b0 = 0) in the hidden layers, and is the output layer linear (final_activation=False)?")
print("Exercise 4: correct")

# %% [markdown]
# So a network of DANs generalises the ordinary network in two directions at once: `C > 1`
# synapses per connection, and a learned function in place of `tanh`. With `C = 1`, a DAN that can
# learn would still be just a learned activation function; the vectors give it something to work
# with.
#
# **Next:** lesson 4 turns convolutions into matrix products and builds the convolutional DAN of
# the UCIL experiment; lesson 5 meta-learns the phenotype that lets a network of DANs
# learn window after window without forgetting.
