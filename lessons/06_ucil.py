# Lesson 6: unsupervised class-incremental learning, Omniglot to MNIST (percent-format source of
# 06_ucil.ipynb; run `python lessons/_build.py` after editing it).

# %% [markdown]
# # Lesson 6: Unsupervised class-incremental learning (UCIL), Omniglot to MNIST
#
# **What you will learn**
#
# - the paper's UCIL experiment (its sections 3.2, 4.2 and 6.2): an autoencoder that learns to
#   reconstruct 10 classes of images **one class after the other**, 5 images per class, k SGD steps
#   per class, never going back; meta-trained on Omniglot characters, deployed on MNIST digits it
#   has never seen;
# - the data as tinydan loads it (`tinydan.ucil.load_data`): Omniglot characters downsampled to
#   28x28 by area averaging with ink = 1, the MNIST test digits (two fixed halves: one chooses the
#   learning rates and the meta-epoch, the other is deployed on), and the task sequences
#   (`ClassSequences`) that Algorithm 1 consumes;
# - the model of paper section 3.2: an **input DAN layer** (two 3x3 convolutions), then layers of
#   **convolutional DANs** that read their C inputs as a small sqrt(C) x sqrt(C) image, one
#   phenotype per layer (`per_layer` sharing), and skip VECs; its synapse shapes and counts for the
#   `small` config and for the paper's (38.6M synapses per model, counted, never allocated);
# - deployment with phi fixed (`tinydan.ucil.deploy`): the paper's Figure 2 (reconstructions after
#   one step on the 0s, after digits 0-4, after all ten), the 10x10 loss matrix, and the loss on
#   digits **not yet seen** as learning goes on (forward transfer), against random fixed DANs on
#   the same images.
#
# Words as in lessons 3-5 (and the glossary in docs/model-and-protocol.md): the **synapses** theta
# (VEC weights) learn during deployment; the **phenotype** phi (the DANs' own parameters) is fixed
# during deployment and meta-learned beforehand.

# %%
import os

# One BLAS thread, as `python -m tinydan.ucil` uses: many small products, and on a busy machine
# BLAS threads only get in each other's way. (Set before NumPy is imported.)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import math
import re
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import tinydan as td
from tinydan import continual, plots, ucil

FIGURES = Path(tempfile.mkdtemp(prefix="tinydan-lesson06-"))   # tinydan.plots saves PNGs here
lesson_start = time.perf_counter()

# %% [markdown]
# ## 1. The data and the protocol
#
# `ucil.load_data(cfg)` returns flattened images (28x28, or 14x14 for `small`) in $[0, 1]$ with
# **ink = 1** (white background = 0): Omniglot's "background" characters (105x105 strokes averaged
# down to 28x28) split by character into meta-training and held-out validation characters, and
# MNIST test digits, which `small` splits into two fixed halves (`lr_source` "mnist-val"):
# `data.mnist_val` only chooses deployment learning rates, `data.mnist` is what every model is
# deployed and scored on.
#
# The experiment (`python -m tinydan.ucil`) uses the full sets (242 Omniglot characters of 20
# drawings, the 10,000 MNIST test digits), downloaded once. This lesson uses the small sample of
# the same data that ships inside tinydan (`data="sample"`: 48 characters, 500 digits), so it runs
# offline and in seconds; with fewer characters it holds out 12 for validation instead of 40.
#
# The protocol, for one **task sequence**:
#
# 1. take 10 classes in order, 5 images of each;
# 2. for class t = 1, ..., 10: take k SGD steps on the synapses, the batch being the 5 images of
#    class t (input = target: an autoencoder);
# 3. never revisit an earlier class. After each class i, the reconstruction MSE on every class j
#    gives the loss matrix entry R[i, j].
#
# Meta-training (Algorithm 1, lesson 5) draws the 10 classes from the Omniglot training characters;
# after every inner step it updates phi on a batch of images from the **whole** sequence, classes
# seen and not yet seen (memory and forward transfer). Deployment uses MNIST digits 0, 1, ..., 9
# in order, phi fixed.

# %%
cfg = ucil.ucil_config("small", data="sample", val_classes=12)
t = time.perf_counter()
data = ucil.load_data(cfg)
print(f"loaded in {time.perf_counter() - t:.1f} s")
print(f"Omniglot: {data.omniglot.shape} images of {len(np.unique(data.omniglot_labels))} characters "
      f"({len(data.train_classes)} for meta-training, {len(data.val_classes)} held out for validation)")
print(f"MNIST test, evaluation half: {data.mnist.shape} (validation half {data.mnist_val.shape}); "
      f"pixel range [{data.mnist.min()}, {data.mnist.max()}], "
      f"mean ink {data.mnist.mean():.3f} (Omniglot {data.omniglot.mean():.3f})")

rng = np.random.default_rng(6)
omni_seq = ucil.sample_sequences(data.omniglot, data.omniglot_labels, data.train_classes, 1,
                                 cfg.n_classes, cfg.shots, rng)[0]          # (10 classes, 5, 784)
mnist_seq = ucil.mnist_sequences(cfg, data, draws=1)[0]                      # digits 0..9 in order
side = cfg.image_side
fig, axes = plt.subplots(1, 2, figsize=(13, 3.6))
for ax, seq_, name, first in [(axes[0], omni_seq, "an Omniglot sequence (meta-training)", 1),
                              (axes[1], mnist_seq, "the MNIST sequence (deployment): digits 0..9", 0)]:
    T_, s_ = seq_.shape[:2]
    grid = seq_.reshape(T_, s_, side, side).transpose(1, 2, 0, 3).reshape(s_ * side, T_ * side)
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks(np.arange(T_) * side + side / 2, [str(t + first) for t in range(T_)])
    ax.set_yticks([])
    ax.set_xlabel("class, in the order it is learned (5 images each, top to bottom)")
    ax.set_title(name)
plt.tight_layout()
plt.show()

# %% [markdown]
# `ClassSequences` turns a population of sequences `(M, T, s, D)` into the stream `MetaTrainer`
# consumes: `inner_batches()` yields the current class's images k times per class, class after
# class, and `meta_batch(rng)` draws images from the whole sequence for the meta-loss.

# %%
demo = ucil.ClassSequences(omni_seq[None], steps=3, meta_batch=8)
stream = list(demo.inner_batches())
print(f"{len(stream)} inner batches (10 classes x 3 steps); one batch: x {stream[0][0].shape} "
      "(members, images, pixels), and y is x")
xm, _ = demo.meta_batch(np.random.default_rng(0))
print(f"meta-batch: {xm.shape}, drawn from all {cfg.n_classes * cfg.shots} images of the sequence")

# %% [markdown]
# ## 2. The model: an autoencoder made of DANs
#
# ```
# image (784) -> input DAN layer -> VEC -> E1 DANs -> VEC -> E2 DANs -> VEC -> D1 DANs -> VEC -> 784 output DANs
#                      |____________ skip VEC A _______^                          ^
#                                             E1 |________ skip VEC B ____________|
# ```
#
# - The **input DAN layer** (`InputConvDAN`) is two 3x3 convolutions with padding 1 and leaky ReLU,
#   1 -> 8 -> 1 channels, so a 28x28 image stays 784 values. Its weights are part of phi.
# - Every hidden and output neuron is a **convolutional DAN** (`ConvDAN`, lesson 4): a VEC layer
#   gives each of them C inputs, which it reads as a sqrt(C) x sqrt(C) image; two small
#   convolutions, a max-pool, and a fully connected layer map it to one output. In the paper
#   C = 100 (10x10 images); `small` uses C = 36 (6x6).
# - Sharing is `per_layer`: all DANs of one layer share one phi, each layer has its own.
# - **Skip VECs** A (input DANs -> E2) and B (E1 -> output) are extra synapses whose products are
#   added to the VEC input of the layer they reach.
# - The output DANs end in a linear layer, so reconstructions are not confined to [0, 1]; the loss
#   is the plain MSE and figures clip to [0, 1].

# %%
net_small = ucil.build_ucil_net(cfg)
net_paper = ucil.build_ucil_net(ucil.ucil_config("paper"))    # phi only: nothing of theta allocated


def describe(net, name):
    shapes = net.synapse_shapes()
    print(f"--- {name}: nodes {net.nodes}, C = {net.n_channels}, sharing {net.sharing!r}")
    for k, shp in shapes.items():
        print(f"  {k:15s} {str(shp):15s} {math.prod(shp):>12,d}")
    print(f"  synapses per model: {net.num_synapses():,d}; phi: {net.num_parameters():,d} "
          f"(input layer {sum(p.size for p in net.input_layer.parameters()):,d}, "
          f"one conv DAN {sum(p.size for p in net.dans[0].parameters()):,d} x {len(net.dans)} layers)")


describe(net_small, "small")
describe(net_paper, "paper")
dan = net_paper.dans[0]
print("\npaper conv DAN: phi", {k: p.shape for k, p in dan.named_parameters()})

# %% [markdown]
# Almost all of the model is synapses: 38.6M per model in the paper's config (each of the 784
# output DANs reads C = 100 inputs from each of 120 D1 neurons and, through skip B, 120 E1 neurons),
# against a few thousand phenotype numbers. What the DAN sees is a small image. Below: the C
# inputs of the first 8 E1 neurons for one MNIST digit, with the random synapses theta_0 (the input
# DAN layer first, then the VEC product, computed by hand).

# %%
ph_random = ucil.random_phenotype(cfg, seed=0)
theta0 = ph_random.theta0
x = td.tensor(mnist_seq[3][:1][None])                               # (1 member, 1 image, 784)
with td.no_grad():
    h0 = ph_random.net.input_layer(x).data[0, 0]                     # input DAN layer: 784 values
z1 = h0 @ theta0["vec0.weight"][0] + theta0["vec0.bias"][0, 0]       # (n_E1 * C,)
z1 = z1.reshape(cfg.nodes[1], cfg.n_channels)
c_side = math.isqrt(cfg.n_channels)
fig, axes = plt.subplots(1, 10, figsize=(13, 1.8))
axes[0].imshow(mnist_seq[3][0].reshape(side, side), cmap="gray_r"); axes[0].set_title("digit")
axes[1].imshow(h0.reshape(side, side), cmap="gray_r"); axes[1].set_title("input DANs")
for n in range(8):
    axes[n + 2].imshow(z1[n].reshape(c_side, c_side), cmap="RdBu_r")
    axes[n + 2].set_title(f"E1 DAN {n}", fontsize=9)
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.show()

# %% [markdown]
# ## 3. Deployment with phi fixed
#
# The phenotype to deploy: `python -m tinydan.ucil` meta-trains the `small` config on Omniglot
# (12-23 minutes with the baselines, by machine) and tinydan ships the result as `ucil.SHIPPED_PHENOTYPE`. If that file is
# there we load it and print where it came from. If it is not, this cell says so and meta-trains
# for a few seconds instead (a handful of meta-steps on short Omniglot sequences): that shows the
# machinery, not a useful phenotype, so expect it to behave like the random DANs.

# %%
if ucil.SHIPPED_PHENOTYPE.exists():
    ph = ucil.load_phenotype(ucil.SHIPPED_PHENOTYPE)
    print(f"loaded {ucil.SHIPPED_PHENOTYPE.name}: config {ph.cfg.name!r}, seed {ph.seed}")
    ph.meta["command"] = re.sub(r" --out \S+", "", ph.meta.get("command", "?"))  # (a folder elsewhere)
    for key in ("command", "best_epoch", "best_val", "deployed_epoch", "epoch_lr",
                "meta_train_seconds", "note"):
        if key in ph.meta:
            print(f"  {key}: {ph.meta[key]}")
    net0_name = "net0 (meta-learned DANs)"
else:
    print(f"NOTE: {ucil.SHIPPED_PHENOTYPE} does not exist (no meta-trained phenotype was shipped "
          "with this copy of tinydan).\nMeta-training the `small` model for a few seconds instead "
          "(3 classes x 2 steps per sequence, 2 meta-epochs): an illustration of the machinery,\n"
          "NOT a trained phenotype; run `python -m tinydan.ucil` for a real one (12-23 min).")
    quick = cfg.replace(n_classes=3, inner_steps=2, meta_batch=10, population=2, meta_lr=3e-3)
    trainer = ucil.new_trainer(quick, 0, data)
    t = time.perf_counter()
    for _ in range(2):
        trainer.run_epoch()
    print(f"  {2 * quick.n_classes * quick.inner_steps} meta-steps in {time.perf_counter() - t:.1f} s; "
          f"meta-loss per meta-epoch {np.round(trainer.history['meta_loss'], 4).tolist()}")
    ph = ucil.Phenotype(cfg, trainer.net, {k: np.asarray(v)[:1] for k, v in trainer.theta0.items()},
                        0, {"source": "a few seconds of meta-training in lesson 6"})
    net0_name = "net0 (a few meta-steps)"
print(f"deploying phenotype: {ph.meta.get('source', ph.meta.get('command', '?'))}")

# %% [markdown]
# **Which meta-epoch?** Meta-training keeps phi after every validation (`ph.snapshots`), and which
# one to deploy is a model-selection question. Held-out Omniglot characters score each snapshot
# (`val_history`, at the meta-training rate), but the task is MNIST, and the snapshot that learns
# Omniglot best is not always the one that transfers best. `small` therefore deploys every
# snapshot on the same 10 sequences of MNIST's *validation* half that choose the learning rates,
# at the rate chosen for the Omniglot-best one, and keeps the lowest (`ucil.choose_epoch`,
# `epoch_source="mnist-val"`); the reported draws come from the other half. The plot puts the two
# scores side by side for the phenotype loaded above.

# %%
val_hist = dict((int(e), v) for e, v in ph.meta.get("val_history", []))
mnist_val = {int(e): v for e, v in (ph.meta.get("epoch_scores") or {}).items()}
if mnist_val:
    epochs = sorted(mnist_val)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(epochs, [val_hist[e] for e in epochs], "o-", label="Omniglot validation (lr = inner_lr)")
    ax.plot(epochs, [mnist_val[e] for e in epochs], "s-",
            label=f"MNIST validation half (lr = {ph.meta['epoch_lr']})")
    ax.axvline(ph.meta["deployed_epoch"], color="k", ls=":", lw=1, label="deployed")
    ax.set_xlabel("meta-epoch"); ax.set_ylabel("final MSE, all classes"); ax.legend(fontsize=8)
    ax.set_title("model selection: which snapshot of phi to deploy")
    plt.show()
else:
    print("this phenotype records no per-epoch MNIST scores (epoch chosen on Omniglot); "
          f"Omniglot validation per meta-epoch: {val_hist}")

# %% [markdown]
# `ucil.deploy(model, theta0, images, steps, lr, ...)` learns the classes of `images`
# `(S, T, s, D)` one after the other, starting every sequence from theta_0, and returns `R`
# `(S, T, T)`. With `snapshots=[(i, step), ...]` it also returns the reconstructions of all images
# after `step` steps on class i (Figure 2), and with `curve_every` the per-class loss every few
# steps (for the forward-transfer curve).
#
# The paper takes 60 steps per digit and averages over 20 draws of the images; to run in seconds
# we take **20 steps per digit on one draw** (`python -m tinydan.ucil deploy` does the full
# protocol). Both models see the same images, start from the same theta_0 and learn with the same
# synapse learning rate: the one recorded in the phenotype file (`small` chooses every model's rate
# by one rule, `ucil.choose_lr`, on sequences from a fixed validation half of MNIST's test set; the
# images you deploy on here come from the other half, as every reported result does), else the
# meta-training rate.
# The random DANs are the phi_0 that meta-training started from. (`small` draws 8 candidates for
# phi_0 and screens them: each network learns two Omniglot training sequences with phi fixed,
# `ucil.screen_phi0`, because most random draws pass too little signal at theta_0 for SGD on the
# synapses to learn, and then meta-training has nothing to improve. The screen cannot see how a
# start will meta-train, so the 2 best-screened are each meta-trained for 4 meta-epochs and the
# one with the lower Omniglot validation goes on, `ucil.race_starts`. The phenotype file records
# which candidate, `phi0_candidate`, and the race, `phi0_starts`.)

# %%
LR = float(ph.meta.get("deploy_lr", ph.cfg.inner_lr))
print(f"synapse learning rate for both models: {LR}")
STEPS = 20
images = mnist_seq[None]                                             # (1 draw, 10 digits, 5, 784)
snap = [(0, 1), (4, STEPS), (9, STEPS)]
runs = {}
phi0 = ucil.random_phenotype(cfg, ph.seed, candidate=ph.meta.get("phi0_candidate", 0))
for name, model_ph in [(net0_name, ph), ("random DANs", phi0)]:
    t = time.perf_counter()
    runs[name] = ucil.deploy(model_ph.net, model_ph.theta0, images, STEPS, LR,
                             snapshots=snap, curve_every=STEPS // 2)
    print(f"{name:24s} deployed in {time.perf_counter() - t:4.1f} s: final MSE over all digits "
          f"{continual.final_loss(runs[name]['R'])[0]:.4f}, forgetting "
          f"{continual.forgetting(runs[name]['R'])[0]:+.4f}")

# %% [markdown]
# ### Figure 2
#
# Three moments of one deployment: the 0s after a single SGD step on them; every digit after
# learning 0-4 (5-9 not seen yet: forward transfer); every digit after learning all ten (memory).
# Each block shows originals above reconstructions.

# %%
def by_shot(imgs, show=2):
    """(T, s, D) -> (show * T, side, side): rows of one image per digit."""
    return imgs[:, :show].transpose(1, 0, 2).reshape(-1, side, side)


for name, run in runs.items():
    rec = {k: np.clip(v, 0, 1) for k, v in run["recon"].items()}
    display(plots.plot_reconstruction_panels([
        ("after 1 step on the 0s: the 0s", mnist_seq[0].reshape(-1, side, side),
         rec[(0, 1)][0].reshape(-1, side, side)),
        (f"after {STEPS} steps on each of 0-4: all digits", by_shot(mnist_seq), by_shot(rec[(4, STEPS)])),
        ("after 0-9: all digits", by_shot(mnist_seq), by_shot(rec[(9, STEPS)])),
    ], FIGURES / f"fig2_{name.split()[0]}.png", ncols=10, title=f"{name}, MNIST deployment"))

# %% [markdown]
# ### The loss matrix and forward transfer
#
# R[i, j] is the MSE on digit j after learning digit i: on and below the diagonal is memory, above
# it is transfer to digits not seen yet. The second plot follows the mean loss on the digits still
# to come, step by step: if learning earlier digits helps with later ones it falls.

# %%
for name, run in runs.items():
    display(plots.plot_loss_matrix(run["R"][0], FIGURES / f"R_{name.split()[0]}.png", title=f"R[i, j], {name}",
                                   task_labels=[str(d) for d in range(10)]))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 3.8))
for c, (name, run) in enumerate(runs.items()):
    curve, at = run["curve"][0], run["curve_steps"]                  # (points, 10), steps so far
    unseen_x, unseen_y = [], []
    for p, n in enumerate(at):
        current = -1 if n == 0 else (int(n) - 1) // STEPS               # the digit being learned
        if current + 1 < 10:
            unseen_x.append(n)
            unseen_y.append(curve[p, current + 1:].mean())
    ax1.plot(unseen_x, unseen_y, "o-", ms=3, color=f"C{c}", label=name)
    ax2.plot(range(10), continual.memory_loss(run["R"])[0], "o-", color=f"C{c}", label=f"{name}: memory")
    ax2.plot(range(9), continual.transfer_loss(run["R"])[0, :-1], "s--", color=f"C{c}",
             label=f"{name}: transfer")
for d in range(1, 10):
    ax1.axvline(d * STEPS, color="0.85", lw=0.8, zorder=0)
ax1.set_xlabel("SGD steps so far (grey lines: next digit)")
ax1.set_ylabel("MSE on digits not yet seen")
ax1.set_title("forward transfer")
ax2.set_xlabel("after learning digit i")
ax2.set_ylabel("MSE")
ax2.set_title("memory (digits <= i) and transfer (digits > i)")
ax1.legend(fontsize=8); ax2.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# What to look for. With phi fixed, everything the network learns is in the synapses. With random
# DANs the network learns each digit slowly and blurrily (random DANs pass little signal from their
# inputs to their output, so the synapses' gradients are weak), and what it learned of the earlier
# digits fades. A meta-learned phenotype is meta-trained precisely so that a few SGD steps count
# and interfere little: the paper's Figure 2 shows crisp reconstructions
# of the current digit after one step, earlier digits still recognisable after all ten, and later
# digits already reconstructed before they are seen. With the few meta-steps above (when no
# phenotype is shipped) you should not expect that; the full comparison, over 20 draws with
# confidence intervals and the plain autoencoder baselines, is
# `python -m tinydan.ucil deploy --baselines --draws 20`.

# %% [markdown]
# ## Exercises
#
# Each exercise has an answer cell marked `# YOUR ANSWER`: replace every
# `raise NotImplementedError(...)` in it with your code, then run the check cell below it. The check
# fails, with a message that says what is wrong, until your answer is right. (Run top to bottom,
# this notebook stops at the first exercise not yet answered; `lessons/solutions/` has the same
# notebook with reference solutions.)
#
# ### Exercise 1: memory and transfer curves
#
# Write `memory_curve(R)` and `transfer_curve(R)` for loss matrices of shape `(..., T, T)`:
# memory(i) = mean over j <= i of R[i, j], transfer(i) = mean over j > i of R[i, j], with NaN at
# the last row (no class is left to transfer to). The check compares them with
# `tinydan.continual.memory_loss` / `transfer_loss` on the deployments above and on random matrices.

# %%
# YOUR ANSWER
def memory_curve(R):
    # BEGIN SOLUTION
    R = np.asarray(R, dtype=np.float64)
    T = R.shape[-1]
    return np.stack([R[..., i, :i + 1].mean(-1) for i in range(T)], axis=-1)
    # END SOLUTION


def transfer_curve(R):
    # BEGIN SOLUTION
    R = np.asarray(R, dtype=np.float64)
    T = R.shape[-1]
    cols = [R[..., i, i + 1:].mean(-1) for i in range(T - 1)]
    cols.append(np.full(R.shape[:-2], np.nan))
    return np.stack(cols, axis=-1)
    # END SOLUTION

# %%
cases = [run["R"] for run in runs.values()]
cases += [np.random.default_rng(s).uniform(0, 1, (s, T_, T_)) for s, T_ in [(2, 3), (3, 10), (1, 2)]]
for R_e in cases:
    for mine, ref, what in [(memory_curve, continual.memory_loss, "memory"),
                            (transfer_curve, continual.transfer_loss, "transfer")]:
        got, want = np.asarray(mine(R_e), dtype=np.float64), ref(R_e)
        assert got.shape == want.shape, \
            f"{what} for R of shape {R_e.shape} should have shape {want.shape}, got {got.shape}"
        assert np.allclose(got, want, equal_nan=True), (
            f"{what} differs from tinydan.continual for R of shape {R_e.shape}: got "
            f"{np.round(got, 4).ravel()[:5]}..., expected {np.round(want, 4).ravel()[:5]}... "
            "(memory averages j <= i, the diagonal included; transfer averages j > i, NaN in the last row)")
print("Exercise 1: correct")

# %% [markdown]
# ### Exercise 2: the per-class reconstruction MSE
#
# `deploy` scores a model by the mean squared error per class: for class j, the mean over its s
# images and their D pixels of (reconstruction - image)^2. Write `per_class_mse(recon, images)` for
# `recon` and `images` of shape `(T, s, D)`, returning `(T,)`. The snapshot after the last step on
# digit 9 used the same synapses as the last row of R, so your function applied to it must
# reproduce `R[0, 9]`.

# %%
# YOUR ANSWER
def per_class_mse(recon, images):
    # BEGIN SOLUTION
    err = (np.asarray(recon, dtype=np.float64) - np.asarray(images, dtype=np.float64)) ** 2
    return err.reshape(err.shape[0], -1).mean(-1)
    # END SOLUTION

# %%
for name, run in runs.items():
    got = np.asarray(per_class_mse(run["recon"][(9, STEPS)], mnist_seq))
    want = run["R"][0, 9]
    assert got.shape == want.shape, f"per_class_mse should return shape {want.shape} (one per class), got {got.shape}"
    assert np.allclose(got, want, rtol=1e-4, atol=1e-7), (
        f"{name}: per_class_mse gives {np.round(got, 5)}, deploy's last row of R is {np.round(want, 5)}. "
        "Average over the images AND the pixels of each class, not over classes; do not clip.")
toy = np.zeros((2, 3, 4)); toy_rec = toy.copy(); toy_rec[1, 0, 0] = 2.0
assert np.allclose(per_class_mse(toy_rec, toy), [0.0, 4.0 / 12]), \
    "one pixel off by 2 in class 1 (3 images x 4 pixels) should give MSE [0, 4/12]"
print("Exercise 2: correct")

# %% [markdown]
# ### Exercise 3: counting synapses from the config
#
# Write `count_synapses(cfg)` from the fields of a `UCILConfig` alone (`nodes`, `n_channels`,
# `skips`), without building a network: every VEC from layer l to l+1 has an `(n_l, n_{l+1} C)`
# weight and a `(1, n_{l+1} C)` bias; every skip (j, k) has an `(n_j, n_k C)` weight and no bias.
# The check compares it with the library (`build_ucil_net(cfg).num_synapses()`) on the `tiny`,
# `small` and `paper` configs and on a few altered ones.

# %%
# YOUR ANSWER
def count_synapses(cfg):
    # BEGIN SOLUTION
    n, C = cfg.nodes, cfg.n_channels
    total = sum(n[l] * n[l + 1] * C + n[l + 1] * C for l in range(len(n) - 1))
    return total + sum(n[j] * n[k] * C for j, k in cfg.skips)
    # END SOLUTION

# %%
configs = [ucil.ucil_config(name) for name in ("tiny", "small", "paper")]
_px = configs[0].nodes[0]                     # pixels of the tiny config's images
configs += [ucil.ucil_config("small", skips=()), ucil.ucil_config("tiny", n_channels=25),
            ucil.ucil_config("tiny", nodes=(_px, 5, 7, 3, _px), skips=((0, 2), (0, 4), (1, 3)))]
for c in configs:
    want = ucil.build_ucil_net(c).num_synapses()
    got = count_synapses(c)
    assert got == want, (
        f"config {c.name!r} (nodes {c.nodes}, C {c.n_channels}, skips {c.skips}): you count {got:,d} "
        f"synapses, the library {want:,d}. Biases are C per target DAN; skips have no bias.")
print(f"Exercise 3: correct. The paper's model has {count_synapses(configs[2]):,d} synapses, "
      f"{count_synapses(configs[2]) / count_synapses(configs[1]):.1f}x the `small` one.")

# %% [markdown]
# **Going further.** Run `python -m tinydan.ucil` to meta-train `small` on Omniglot and deploy it
# on MNIST with the full protocol (60 steps per digit, 20 draws, confidence intervals, a plain
# autoencoder baseline), then reload its `phenotype.npz` here with `ucil.load_phenotype` in place
# of `ph` and look at Figure 2 again.

# %%
print(f"lesson 6 ran in {time.perf_counter() - lesson_start:.0f} s")
