"""The data of the UCIL experiment (paper section 4.2): Omniglot characters to meta-train on,
MNIST digits to deploy on, and the fixed draws every choice is made on.

Each draw of sequences has a seed of its own that meta-training never uses (it draws from
``default_rng([seed, 1])``): the Omniglot validation sequences (VAL_SEED), the screen of phi_0
candidates (SCREEN_SEED), the rate-choosing half of MNIST's test set (LR_SEED) and the reported MNIST
draws (EVAL_SEED). docs/model-and-protocol.md says what each is for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tasks import sample_sequences
from .configs import UCILConfig

__all__ = ["UCILData", "load_data", "thicken_strokes", "omniglot_sequences", "cached_data",
           "validation_sequences", "rate_sequences", "lr_source_text", "mnist_sequences",
           "digit_sequences", "screen_sequences", "VAL_SEED", "EVAL_SEED", "LR_SEED",
           "SCREEN_SEED", "SCREEN_SEQUENCES", "MNIST_VAL_FRACTION"]

VAL_SEED = 1_000_033
EVAL_SEED = 2_000_033
LR_SEED = 4_000_033      # lr_source "mnist-val": the MNIST test set's split and the rate-choosing draws
MNIST_VAL_FRACTION = 0.5
SCREEN_SEED = 3_000_033
SCREEN_SEQUENCES = 2     # Omniglot meta-training sequences that screen the phi_0 candidates


@dataclass
@dataclass
class UCILData:
    """Flattened images (N, 784) in [0, 1], ink = 1, with labels; Omniglot split by character."""

    omniglot: np.ndarray
    omniglot_labels: np.ndarray
    train_classes: np.ndarray
    val_classes: np.ndarray
    mnist: np.ndarray | None = None
    mnist_labels: np.ndarray | None = None
    omniglot_thick: np.ndarray | None = None   # the same images with thickened strokes
    mnist_val: np.ndarray | None = None        # lr_source "mnist-val": the rate-choosing half of the
    mnist_val_labels: np.ndarray | None = None # MNIST test set (``mnist`` is then the other half)


def load_data(cfg: UCILConfig, mnist: bool = True) -> UCILData:
    """Omniglot background characters (small1 + small2: 242 characters, 20 images each), split into
    meta-training and ``cfg.val_classes`` held-out validation characters (a fixed draw), and the
    MNIST test set (with cfg.lr_source "mnist-val": split by LR_SEED into a rate-choosing half,
    ``mnist_val``, and the evaluation half, ``mnist``). Raises tinydan.datasets.DatasetError when the
    data cannot be found or fetched."""
    from ..datasets import area_downsample, load_mnist, load_omniglot
    om = load_omniglot(("small1", "small2"), size=cfg.image_side, sample=cfg.data == "sample")
    classes = np.unique(om.labels)
    perm = np.random.default_rng(VAL_SEED).permutation(classes)
    n_val = int(cfg.val_classes)
    if not 0 < n_val < len(classes) - cfg.n_classes:
        raise ValueError(f"val_classes must leave at least n_classes={cfg.n_classes} of the "
                         f"{len(classes)} Omniglot characters for meta-training, got {n_val}")
    data = UCILData(om.images.reshape(len(om.images), -1), om.labels,
                    np.sort(perm[n_val:]), np.sort(perm[:n_val]))
    if cfg.thick_strokes > 0:
        data.omniglot_thick = thicken_strokes(cfg.image_side, sample=cfg.data == "sample")
    if mnist:
        images, labels = load_mnist("test", sample=cfg.data == "sample")
        if images.shape[1] != cfg.image_side:            # `small` works on 14x14 images
            images = area_downsample(images, cfg.image_side)
        images = images.reshape(len(images), -1)
        if cfg.lr_source == "mnist-val":
            perm = np.random.default_rng(LR_SEED).permutation(len(images))
            n_val = int(len(images) * MNIST_VAL_FRACTION)
            val, ev = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            data.mnist_val, data.mnist_val_labels = images[val], labels[val]
            images, labels = images[ev], labels[ev]
        data.mnist, data.mnist_labels = images, labels
    return data


def thicken_strokes(side: int, sample: bool = False) -> np.ndarray:
    """Omniglot small1 + small2 with every stroke one pixel thicker at 28x28 (a 2x2 max filter),
    area-downsampled to side x side and flattened: (N, side * side), in load_omniglot's order."""
    from scipy.ndimage import maximum_filter
    from ..datasets import area_downsample, load_omniglot
    om = load_omniglot(("small1", "small2"), size=28, sample=sample)
    thick = maximum_filter(om.images, size=(1, 2, 2))
    if side != 28:
        thick = area_downsample(thick, side)
    return thick.reshape(len(thick), -1).astype(np.float32)


def omniglot_sequences(cfg: UCILConfig, data: UCILData, class_pool, n_sequences: int,
                       rng: np.random.Generator) -> np.ndarray:
    """(n_sequences, n_classes, shots, D) Omniglot sequences; with cfg.thick_strokes = p > 0 each
    class of each sequence comes with thickened strokes with probability p (same images)."""
    if cfg.thick_strokes <= 0 or data.omniglot_thick is None:
        return sample_sequences(data.omniglot, data.omniglot_labels, class_pool, n_sequences,
                                cfg.n_classes, cfg.shots, rng)
    D = data.omniglot.shape[1]
    both = np.concatenate([data.omniglot, data.omniglot_thick], axis=1)    # (N, 2D): same draws
    seqs = sample_sequences(both, data.omniglot_labels, class_pool, n_sequences, cfg.n_classes,
                            cfg.shots, rng)
    thick = rng.random((n_sequences, cfg.n_classes)) < cfg.thick_strokes
    return np.where(thick[:, :, None, None], seqs[..., D:], seqs[..., :D])


_DATA_CACHE: dict = {}


def cached_data(cfg: UCILConfig, mnist: bool, rates: bool = False) -> UCILData:
    """load_data once per process; ``rates``: the data ``choose_lr`` needs is wanted too."""
    mnist = mnist or (rates and cfg.lr_source == "mnist-val")
    key = (cfg.data, cfg.image_side, cfg.val_classes, cfg.n_classes, mnist, cfg.thick_strokes > 0,
           cfg.lr_source if mnist else None)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_data(cfg, mnist=mnist)
    return _DATA_CACHE[key]


def validation_sequences(cfg: UCILConfig, data: UCILData) -> np.ndarray:
    """The fixed validation draw: cfg.val_sequences sequences of held-out Omniglot characters."""
    return omniglot_sequences(cfg, data, data.val_classes, cfg.val_sequences,
                              np.random.default_rng(VAL_SEED))


def rate_sequences(cfg: UCILConfig, data: UCILData) -> np.ndarray:
    """The sequences deployment learning rates are chosen on (cfg.lr_source): the Omniglot
    validation sequences, or cfg.lr_sequences draws of MNIST digits 0..9 in order from the
    rate-choosing half of the test set (never the evaluation half)."""
    if cfg.lr_source == "omniglot":
        return validation_sequences(cfg, data)
    if data.mnist_val is None:
        raise ValueError("lr_source 'mnist-val' needs load_data(cfg, mnist=True) with that config")
    return digit_sequences(cfg, data.mnist_val, data.mnist_val_labels, cfg.lr_sequences, LR_SEED)


def lr_source_text(cfg: UCILConfig) -> str:
    """Where cfg's deployment learning rates are chosen, in words."""
    return ("Omniglot validation sequences" if cfg.lr_source == "omniglot" else
            f"{cfg.lr_sequences} sequences of the validation half of MNIST's test set")


def mnist_sequences(cfg: UCILConfig, data: UCILData, draws: int) -> np.ndarray:
    """(draws, 10, shots, D): MNIST test digits 0..9 in order, ``shots`` random images each, from
    the fixed evaluation seed (meta-training and validation never see MNIST; with cfg.lr_source
    "mnist-val" only the evaluation half of the test set is drawn from)."""
    if data.mnist is None:
        raise ValueError("load_data(..., mnist=True) is needed for the MNIST deployment")
    if cfg.lr_source == "mnist-val" and data.mnist_val is None:
        raise ValueError("lr_source 'mnist-val' evaluates on half of MNIST's test set: load the data "
                         "with that config (load_data(cfg)), not one that kept the whole test set")
    return digit_sequences(cfg, data.mnist, data.mnist_labels, draws, EVAL_SEED)


def digit_sequences(cfg: UCILConfig, images, labels, n: int, seed: int) -> np.ndarray:
    """(n, 10, shots, D): digits 0..9 in order, cfg.shots random images each, drawn from seed."""
    return sample_sequences(images, labels, np.arange(10), n, 10, cfg.shots,
                            np.random.default_rng(seed), ordered=True)


def screen_sequences(cfg: UCILConfig, data: UCILData) -> np.ndarray:
    """The fixed screening draw: SCREEN_SEQUENCES sequences of Omniglot meta-training characters."""
    return omniglot_sequences(cfg, data, data.train_classes, SCREEN_SEQUENCES,
                              np.random.default_rng(SCREEN_SEED))
