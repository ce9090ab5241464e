# Lesson 4: convolutions as matrix products (percent-format source of 04_convolutions.ipynb; run
# `python lessons/_build.py` after editing it).

# %% [markdown]
# # Lesson 4: Convolutions as one matrix product
#
# **What you will learn**
#
# - how a convolution becomes ONE matrix product: `im2col` copies every window of the image into a
#   row of a matrix, and the filters become the columns of another;
# - why `col2im` is the *adjoint* of `im2col`, and why that makes the backward pass of a convolution
#   another convolution-like product (so gradients of gradients come for free);
# - how max-pooling is a *gather* of each window's arg-max, and its backward a *scatter* back to it;
# - how much faster the im2col product is than a loop over output pixels;
# - how to build the convolutional DAN of the paper's UCIL experiment (paper section 3.2) as a plain
#   function of its phenotype, and run a whole layer of DANs in one batched call.
#
# Conventions (as in PyTorch): images are `(N, C, H, W)` (batch, channels, height, width), filters
# are `(F, C, kh, kw)`, and "convolution" means cross-correlation:
#
# $$\text{out}[n, f, i, j] = b_f + \sum_{c, u, v} w[f, c, u, v]\; x[n, c,\, s i + u,\, s j + v].$$

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import tinydan as td
from tinydan.testing import check_grad

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. `im2col`: windows as rows
#
# Take a 5x5 image with one channel and a 3x3 kernel. There are 3x3 = 9 positions for the window;
# `td.im2col(x, kh, kw, stride)` copies the 9 pixels under each position into one row. The result is
# `(N * OH * OW, C * kh * kw)`: here `(9, 9)`. Each pixel appears in as many rows as there are
# windows covering it (the centre pixel, 12, is in all 9).

# %%
x_tiny = td.tensor(np.arange(25.0).reshape(1, 1, 5, 5))
cols = td.im2col(x_tiny, 3, 3)
print("image", x_tiny.shape, "-> im2col", cols.shape)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [5, 9]})
ax1.imshow(x_tiny.data[0, 0], cmap="viridis")
for (i, j), value in np.ndenumerate(x_tiny.data[0, 0]):
    ax1.text(j, i, int(value), ha="center", va="center", color="w", fontsize=9)
ax1.add_patch(plt.Rectangle((0.5, -0.5), 3, 3, fill=False, ec="r", lw=2))
ax1.set_title("5x5 image; red: the window of output (0, 1)")
ax2.imshow(cols.data, cmap="viridis")
for (i, j), value in np.ndenumerate(cols.data):
    ax2.text(j, i, int(value), ha="center", va="center", color="w", fontsize=8)
ax2.add_patch(plt.Rectangle((-0.5, 0.5), 9, 1, fill=False, ec="r", lw=2))
ax2.set_xlabel("position in the window (u, v), row-major")
ax2.set_ylabel("output pixel (i, j), row-major")
ax2.set_title("im2col: one row per window")
for ax in (ax1, ax2):
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# With the windows as rows, the convolution is a matrix product with the filters flattened into
# columns, `(N*OH*OW, C*kh*kw) @ (C*kh*kw, F)`, followed by a reshape to `(N, F, OH, OW)`. That is
# exactly how `td.conv2d` is built. Let us do it by hand on a batch with several channels and
# filters.

# %%
x = td.tensor(rng.standard_normal((2, 3, 7, 6)))        # (N, C, H, W)
w = td.tensor(rng.standard_normal((4, 3, 3, 3)))        # (F, C, kh, kw)
b = td.tensor(rng.standard_normal(4))                   # (F,)
n, c, h, wd = x.shape
f, _, kh, kw = w.shape
oh, ow = h - kh + 1, wd - kw + 1
cols = td.im2col(x, kh, kw)                             # (N*OH*OW, C*kh*kw) = (40, 27)
out = cols @ w.reshape(f, c * kh * kw).T + b            # (N*OH*OW, F)
out = out.reshape(n, oh, ow, f).permute(0, 3, 1, 2)     # (N, F, OH, OW)
print("by hand:", out.shape, "  max |by hand - td.conv2d| =",
      np.abs(out.data - td.conv2d(x, w, b).data).max())

# %% [markdown]
# ## 2. `col2im`, the adjoint of `im2col`
#
# `im2col` is a linear map $A$ from images to window matrices. Its backward pass needs the transpose
# (adjoint) $A^T$: given a gradient for every entry of the window matrix, add each entry back onto
# the pixel it was copied from. That is `td.col2im(cols, x_shape, kh, kw, stride)`: where windows
# overlap, contributions add up. The defining property of an adjoint is
#
# $$\langle A x, y \rangle = \langle x, A^T y \rangle \quad \text{for all } x, y.$$

# %%
x_img = rng.standard_normal((2, 3, 7, 6))
y_cols = rng.standard_normal((2 * 5 * 4, 3 * 3 * 3))
lhs = np.sum(td.im2col(td.tensor(x_img), 3, 3).data * y_cols)
rhs = np.sum(x_img * td.col2im(td.tensor(y_cols), x_img.shape, 3, 3).data)
print(f"<im2col x, y> = {lhs:.12f}\n<x, col2im y> = {rhs:.12f}")
assert np.isclose(lhs, rhs)

# %% [markdown]
# Applied to a matrix of ones, `col2im` counts how many windows cover each pixel: the corners are in
# one window, the centre of a large image in `kh * kw` of them. With stride 2 some pixels are in no
# window at all (they get no gradient).

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
for ax, stride in zip(axes, (1, 2)):
    oh_s, ow_s = (8 - 3) // stride + 1, (8 - 3) // stride + 1
    counts = td.col2im(td.tensor(np.ones((oh_s * ow_s, 9))), (1, 1, 8, 8), 3, 3, stride).data[0, 0]
    im = ax.imshow(counts, cmap="magma", vmin=0, vmax=9)
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, int(value), ha="center", va="center", color="w" if value < 5 else "k")
    ax.set_title(f"col2im(ones): windows per pixel\n8x8 image, 3x3 kernel, stride {stride}")
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# This pairing is what makes the convolution differentiable twice: the backward of `im2col` is
# `col2im` and the backward of `col2im` is `im2col`, both recorded as tinydan ops. `check_grad`
# checks first derivatives and Hessian-vector products (in float64):

# %%
print("im2col :", check_grad(lambda a: td.im2col(a, 3, 3, 2), rng.standard_normal((2, 2, 7, 6))))
print("col2im :", check_grad(lambda a: td.col2im(a, (2, 2, 7, 6), 3, 3, 2),
                             rng.standard_normal((2 * 3 * 2, 2 * 9))))
print("conv2d :", check_grad(lambda a, k, c: td.conv2d(a, k, c, stride=2, padding=1),
                             rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3)),
                             rng.standard_normal(4)))

# %% [markdown]
# ## 3. The loop, for comparison
#
# The definition of a convolution, written as loops over the output pixels:

# %%
def conv2d_loop(x, w, b):
    """out[n, f, i, j] = b[f] + sum(w[f] * x[n, :, i:i+kh, j:j+kw]), one output pixel at a time."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    out = np.zeros((n, f, oh, ow), dtype=x.dtype)
    for i_n in range(n):
        for i_f in range(f):
            for i in range(oh):
                for j in range(ow):
                    out[i_n, i_f, i, j] = np.sum(x[i_n, :, i:i + kh, j:j + kw] * w[i_f]) + b[i_f]
    return out


x = rng.standard_normal((2, 3, 7, 6))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
diff = np.abs(conv2d_loop(x, w, b) - td.conv2d(td.tensor(x), td.tensor(w), td.tensor(b)).data)
print("max |loop - td.conv2d| =", diff.max())

# %% [markdown]
# Same numbers; very different speed. We time both on a small batch (8 images, 3 channels, 8 filters
# of 3x3) at a few image sizes, in float32 as in training. The loop makes one small NumPy call per
# output pixel and filter; im2col makes one copy and one matrix product, whatever the size.

# %%
def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


sizes = [8, 12, 16, 24, 32]
t_loop, t_im2col = [], []
w32 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
b32 = np.zeros(8, dtype=np.float32)
for size in sizes:
    x32 = rng.standard_normal((8, 3, size, size)).astype(np.float32)
    t_loop.append(best_time(lambda: conv2d_loop(x32, w32, b32), 1 if size > 16 else 2))
    t_im2col.append(best_time(lambda: td.conv2d(td.tensor(x32), td.tensor(w32), td.tensor(b32)),
                              20))

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.semilogy(sizes, np.array(t_loop) * 1e3, "o-", label="loop over output pixels")
ax.semilogy(sizes, np.array(t_im2col) * 1e3, "s-", label="im2col + one matmul (td.conv2d)")
ax.set_xlabel("image height = width")
ax.set_ylabel("time per call (ms, log scale)")
ax.set_title("8 images x 3 channels, 8 filters of 3x3, float32")
ax.legend()
plt.show()
for size, a, b_ in zip(sizes, t_loop, t_im2col):
    print(f"{size:2d}x{size:<2d}: loop {a * 1e3:8.2f} ms   im2col {b_ * 1e3:6.3f} ms   "
          f"speed-up x{a / b_:.0f}")

# %% [markdown]
# ## 4. Max-pooling: gather the arg-max, scatter the gradient back
#
# A k x k max-pool with stride s takes the largest value in each window. With `im2col` every window
# is a row, so the pool is: find each row's arg-max (a constant, like relu's mask), and *gather*
# that entry. The backward pass is the adjoint of the gather: a *scatter* that puts each output's
# gradient back on the pixel that won its window, then `col2im` adds the windows back into the
# image. With stride 1 the windows overlap, so a pixel that wins several windows receives several
# gradients.
#
# Written with public tinydan ops (`td.im2col`, fancy indexing, `reshape`):

# %%
def max_pool_by_hand(x, k, stride):
    n, c, h, wd = x.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    cols = td.im2col(x.reshape(n * c, 1, h, wd), k, k, stride)   # (N*C*OH*OW, k*k)
    winner = np.argmax(cols.data, axis=1)                        # a constant: not differentiated
    picked = cols[np.arange(cols.shape[0]), winner]              # gather: (N*C*OH*OW,)
    return picked.reshape(n, c, oh, ow)


img = td.tensor(rng.standard_normal((1, 1, 8, 8)), requires_grad=True)
pooled = max_pool_by_hand(img, 3, 1)
print("max |by hand - td.max_pool2d| =", np.abs(pooled.data - td.max_pool2d(img, 3, 1).data).max())
pooled.sum().backward()                     # d(sum of outputs)/d(pixel) = windows the pixel won

fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, data, title in zip(axes, (img.data[0, 0], pooled.data[0, 0], img.grad.data[0, 0]),
                           ("input 8x8", "max_pool2d(k=3, stride=1): 6x6",
                            "gradient of sum(output): windows won")):
    im = ax.imshow(data, cmap="magma" if "gradient" in title else "coolwarm")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    plt.colorbar(im, ax=ax, fraction=0.046)
for (i, j), value in np.ndenumerate(img.grad.data[0, 0]):
    if value:
        axes[2].text(j, i, int(value), ha="center", va="center", color="w" if value < 4 else "k")
plt.tight_layout()
plt.show()
print("max_pool2d:",
      check_grad(lambda a: td.max_pool2d(a, 3, 1), rng.standard_normal((2, 3, 6, 6))))

# %% [markdown]
# ## 5. The convolutional DAN of the UCIL experiment
#
# In the paper's unsupervised class-incremental model (its section 3.2), every hidden and output
# neuron is a Deep Artificial Neuron: a small CNN that reads its input vector of `C = 100` values as
# a 10x10 image:
#
# | step | shape per DAN |
# | --- | --- |
# | input vector, seen as an image | 1 x 10 x 10 |
# | conv 1 -> 8, kernel 2, stride 1, leaky relu | 8 x 9 x 9 |
# | conv 8 -> 4, kernel 2, stride 1, leaky relu | 4 x 8 x 8 |
# | max-pool, kernel 3, stride 1 | 4 x 6 x 6 = 144 |
# | fully connected 144 -> 30, leaky relu | 30 |
# | fully connected 30 -> 1 | 1 |
#
# All DANs of a layer share these weights, the phenotype $\varphi$. The synapses (a VEC layer) from
# `n_in` nodes to `n_out` DANs are a weight of shape `(n_in, n_out * C)`: columns `j*C:(j+1)*C` are
# DAN `j`'s input vector. So a layer is: one matrix product, one **reshape** that stacks every
# (example, DAN) pair along the batch axis, and one call of the DAN: no loop over neurons.

# %%
C, SIDE = 100, 10


def init_phenotype(rng):
    """The DAN's weights phi, float32, He-initialised."""
    def he(shape, fan_in):
        return td.tensor(rng.standard_normal(shape) * np.sqrt(2.0 / fan_in), dtype="float32",
                         requires_grad=True)

    def zeros(n):
        return td.tensor(np.zeros(n), dtype="float32", requires_grad=True)
    return {"conv1.w": he((8, 1, 2, 2), 4), "conv1.b": zeros(8),
            "conv2.w": he((4, 8, 2, 2), 32), "conv2.b": zeros(4),
            "fc1.w": he((144, 30), 144), "fc1.b": zeros(30),
            "fc2.w": he((30, 1), 30), "fc2.b": zeros(1)}


def conv_dan(phi, dan_inputs, return_maps=False):
    """(batch, n_dans, C) DAN input vectors -> (batch, n_dans) outputs, all DANs in one call."""
    batch, n_dans, c = dan_inputs.shape
    if c != SIDE * SIDE:
        raise ValueError(f"expected DAN inputs of shape (batch, n_dans, {SIDE * SIDE}), "
                         f"got {dan_inputs.shape}")
    h0 = dan_inputs.reshape(batch * n_dans, 1, SIDE, SIDE)                 # (B*n, 1, 10, 10)
    h1 = td.leaky_relu(td.conv2d(h0, phi["conv1.w"], phi["conv1.b"]))     # (B*n, 8, 9, 9)
    h2 = td.leaky_relu(td.conv2d(h1, phi["conv2.w"], phi["conv2.b"]))     # (B*n, 4, 8, 8)
    h3 = td.max_pool2d(h2, 3, 1)                                          # (B*n, 4, 6, 6)
    h4 = td.leaky_relu(h3.reshape(batch * n_dans, 144) @ phi["fc1.w"] + phi["fc1.b"])  # (B*n, 30)
    out = (h4 @ phi["fc2.w"] + phi["fc2.b"]).reshape(batch, n_dans)      # (B, n)
    return (out, [h0, h1, h2, h3]) if return_maps else out


def dan_layer(x, synapses, bias, phi):
    """A VEC layer into n_out shared DANs: (batch, n_in) -> (batch, n_out)."""
    n_out = synapses.shape[1] // C
    s = x @ synapses + bias                                # (batch, n_out * C)
    return conv_dan(phi, s.reshape(x.shape[0], n_out, C))  # DAN j reads columns j*C:(j+1)*C


phi = init_phenotype(rng)
n_in, n_out, batch = 64, 120, 16
synapses = td.tensor(rng.standard_normal((n_in, n_out * C)) / np.sqrt(n_in), dtype="float32",
                     requires_grad=True)
bias = td.tensor(np.zeros(n_out * C), dtype="float32", requires_grad=True)
x_batch = td.tensor(rng.random((batch, n_in)), dtype="float32")

start = time.perf_counter()
y = dan_layer(x_batch, synapses, bias, phi)
y.sum().backward()
elapsed = time.perf_counter() - start
print(f"{batch} examples x {n_out} DANs = {batch * n_out} DAN evaluations in one call: output "
      f"{y.shape}, forward + backward {elapsed * 1e3:.0f} ms")
print("gradient shapes:", {k: v.grad.shape for k, v in phi.items()}, " synapses:",
      synapses.grad.shape)

# %% [markdown]
# The batched call computes exactly what a loop over neurons would (we run such a loop here once, on
# a few DANs, only to check it; never write it in a model):

# %%
with td.no_grad():
    s = (x_batch @ synapses + bias).reshape(batch, n_out, C)
    for j in (0, 7, 119):
        one = conv_dan(phi, s[:, j:j + 1, :])             # DAN j alone: (batch, 1)
        assert np.allclose(one.data[:, 0], y.data[:, j], atol=1e-5), f"DAN {j} differs"
print("the batched layer matches DANs evaluated one at a time")

# %% [markdown]
# The gradients flow through the reshapes, the convolutions and the pool, to the phenotype and to
# the synapses. A float64 check, on a small layer:

# %%
phi64 = {k: v.data.astype(np.float64) for k, v in phi.items()}


def small_layer(x, syn, conv1_w):
    """The DAN layer as a function of its input, synapses and first conv filters (float64)."""
    p = {k: td.tensor(v) for k, v in phi64.items()}
    p["conv1.w"] = conv1_w
    return dan_layer(x, syn, td.tensor(np.zeros(2 * C)), p)


print("DAN layer:", check_grad(small_layer, rng.random((2, 3)),
                               rng.standard_normal((3, 2 * C)) / 2, phi64["conv1.w"], order=1))

# %% [markdown]
# Finally, what one DAN sees. We feed one DAN a structured 10x10 input (a ring) and show the feature
# maps of its two convolutions and of the pool. The phenotype here is random; meta-learning
# (lesson 6) shapes these filters.

# %%
yy, xx = np.mgrid[0:SIDE, 0:SIDE]
ring = np.exp(-((np.hypot(yy - 4.5, xx - 4.5) - 3.0) ** 2) / 1.5).astype(np.float32)
out_one, maps = conv_dan(phi, td.tensor(ring.reshape(1, 1, C)), return_maps=True)

fig, axes = plt.subplots(3, 8, figsize=(13, 5.2))
for ax in axes.ravel():
    ax.axis("off")
axes[0, 0].imshow(maps[0].data[0, 0], cmap="gray")
axes[0, 0].set_title("input 10x10", fontsize=9)
for k in range(4):
    axes[0, 2 + k].imshow(maps[1].data[0, k], cmap="viridis")
    axes[0, 2 + k].set_title(f"conv1 map {k}", fontsize=8)
    axes[2, 4 + k].imshow(maps[3].data[0, k], cmap="viridis")
    axes[2, 4 + k].set_title(f"pool map {k} (6x6)", fontsize=8)
    axes[2, k].imshow(maps[2].data[0, k], cmap="viridis")
    axes[2, k].set_title(f"conv2 map {k} (8x8)", fontsize=8)
for k in range(4, 8):
    axes[1, k - 2].imshow(maps[1].data[0, k], cmap="viridis")
    axes[1, k - 2].set_title(f"conv1 map {k}", fontsize=8)
fig.suptitle("one conv DAN on a ring: conv1 (8 maps, 9x9), conv2 (4 maps, 8x8), "
             f"pool (4 maps, 6x6); output {out_one.item():+.3f}")
plt.show()

# %% [markdown]
# ## Exercises
#
# Each exercise has an answer cell marked `# YOUR ANSWER`: replace every
# `raise NotImplementedError(...)` in it with your code, then run the check cell below it. The check
# fails, with a message that says what is wrong, until your answer is right. (Run top to bottom,
# this notebook stops at the first exercise not yet answered; `lessons/solutions/` has the same
# notebook with reference solutions.)
#
# ### Exercise 1: a strided convolution from `im2col`
#
# Write `my_conv2d(x, w, b, stride)` with `td.im2col`, one `@`, `reshape` and `permute` (no loops),
# for `x` of shape `(N, C, H, W)`, `w` of shape `(F, C, kh, kw)` and `b` of shape `(F,)`.
# The output size is `OH = (H - kh) // stride + 1`.

# %%
# YOUR ANSWER
def my_conv2d(x, w, b, stride=1):
    # BEGIN SOLUTION
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    cols = td.im2col(x, kh, kw, stride)                   # (N*OH*OW, C*kh*kw)
    out = cols @ w.reshape(f, c * kh * kw).T + b          # (N*OH*OW, F)
    return out.reshape(n, oh, ow, f).permute(0, 3, 1, 2)  # (N, F, OH, OW)
    # END SOLUTION

# %%
for shape, stride in [((2, 3, 7, 6), 1), ((1, 2, 9, 8), 2), ((3, 1, 5, 5), 3)]:
    xc = td.tensor(rng.standard_normal(shape))
    wc = td.tensor(rng.standard_normal((4, shape[1], 3, 2)))
    bc = td.tensor(rng.standard_normal(4))
    mine, ref = my_conv2d(xc, wc, bc, stride), td.conv2d(xc, wc, bc, stride=stride)
    assert mine.shape == ref.shape, \
        f"input {shape}, stride {stride}: output shape {mine.shape}, expected {ref.shape}"
    assert np.allclose(mine.data, ref.data), \
        f"input {shape}, stride {stride}: values differ from td.conv2d (check the reshape/permute)"
check_grad(lambda a, k, c: my_conv2d(a, k, c, 2), rng.standard_normal((1, 2, 5, 5)),
           rng.standard_normal((3, 2, 2, 2)), rng.standard_normal(3))
print("Exercise 1: correct")

# %% [markdown]
# ### Exercise 2: average pooling
#
# Write `avg_pool2d(x, k, stride)`: the mean of each k x k window, per channel, for `x` of shape
# `(N, C, H, W)`, using `td.im2col` and `.mean(axis=...)`. Unlike max-pooling there is no arg-max:
# every pixel of a window gets `1 / k^2` of its gradient.

# %%
# YOUR ANSWER
def avg_pool2d(x, k, stride):
    # BEGIN SOLUTION
    n, c, h, wd = x.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    cols = td.im2col(x.reshape(n * c, 1, h, wd), k, k, stride)   # (N*C*OH*OW, k*k)
    return cols.mean(axis=1).reshape(n, c, oh, ow)
    # END SOLUTION

# %%
def avg_pool_loop(x, k, s):
    n, c, h, wd = x.shape
    oh, ow = (h - k) // s + 1, (wd - k) // s + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, i * s:i * s + k, j * s:j * s + k].mean(axis=(2, 3))
    return out


for shape, k, s in [((2, 3, 6, 6), 2, 2), ((1, 2, 7, 5), 3, 1), ((2, 1, 8, 8), 3, 2)]:
    xa = rng.standard_normal(shape)
    mine = avg_pool2d(td.tensor(xa), k, s)
    ref = avg_pool_loop(xa, k, s)
    assert mine.shape == ref.shape, f"input {shape}, k={k}, stride={s}: shape {mine.shape}, " \
                                    f"expected {ref.shape}"
    assert np.allclose(mine.data, ref), f"input {shape}, k={k}, stride={s}: wrong window means"
check_grad(lambda a: avg_pool2d(a, 3, 2), rng.standard_normal((2, 2, 7, 7)))
print("Exercise 2: correct")

# %% [markdown]
# ### Exercise 3: the transposed convolution
#
# The backward pass of a convolution with respect to its input is the *transposed* convolution:
# given a gradient `g` of shape `(N, F, OH, OW)`, it returns a gradient of shape `(N, C, H, W)`.
# Write `conv_transpose2d(g, w, x_shape, stride)` with one `@` and `td.col2im` (the adjoint of the
# `im2col` that the forward pass used), and no loops. It must satisfy
# $\langle \text{conv2d}(x, w), g\rangle = \langle x, \text{conv\_transpose2d}(g, w)\rangle$.

# %%
# YOUR ANSWER
def conv_transpose2d(g, w, x_shape, stride=1):
    # BEGIN SOLUTION
    n, f, oh, ow = g.shape
    _, c, kh, kw = w.shape
    g_rows = g.permute(0, 2, 3, 1).reshape(n * oh * ow, f)          # (N*OH*OW, F)
    cols = g_rows @ w.reshape(f, c * kh * kw)                        # (N*OH*OW, C*kh*kw)
    return td.col2im(cols, x_shape, kh, kw, stride)                  # (N, C, H, W)
    # END SOLUTION

# %%
for x_shape, stride in [((2, 3, 7, 6), 1), ((1, 2, 9, 9), 2)]:
    xt = td.tensor(rng.standard_normal(x_shape), requires_grad=True)
    wt = td.tensor(rng.standard_normal((4, x_shape[1], 3, 3)))
    y_out = td.conv2d(xt, wt, stride=stride)
    g = td.tensor(rng.standard_normal(y_out.shape))
    mine = conv_transpose2d(g, wt, x_shape, stride)
    assert mine.shape == x_shape, \
        f"conv_transpose2d returned shape {mine.shape}, expected {x_shape}"
    lhs, rhs = np.sum(y_out.data * g.data), np.sum(xt.data * mine.data)
    assert np.isclose(lhs, rhs), f"<conv2d(x, w), g> = {lhs:.6f} but <x, conv_transpose2d(g, w)> " \
                                 f"= {rhs:.6f}: not the adjoint"
    vjp = td.grad(y_out, xt, grad_outputs=g)     # tinydan's own backward pass of conv2d
    assert np.allclose(mine.data, vjp.data), "conv_transpose2d differs from conv2d's backward pass"
check_grad(lambda a: conv_transpose2d(a, td.tensor(wt.data), (1, 2, 9, 9), 2),
           rng.standard_normal((1, 4, 4, 4)))
print("Exercise 3: correct")

# %% [markdown]
# **Next:** lesson 5 meta-learns a phenotype for incremental regression, and lesson 6
# uses the conv DAN above for unsupervised class-incremental learning.
