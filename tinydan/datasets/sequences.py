"""Class-incremental task sequences drawn from a labelled image set (paper section 4.2)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["sample_class_sequence"]


def _images_labels(dataset) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(dataset, dict):
        return np.asarray(dataset["images"]), np.asarray(dataset["labels"])
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        return np.asarray(dataset.images), np.asarray(dataset.labels)
    images, labels = dataset
    return np.asarray(images), np.asarray(labels)


def sample_class_sequence(dataset, n_classes: int = 10, n_per_class: int = 5, rng=None,
                          class_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A class-incremental sequence: images (n_classes, n_per_class, H, W) and distinct class_ids (n_classes,) int64.

    ``dataset`` is an OmniglotData, a dict with "images"/"labels" or an ``(images, labels)`` pair;
    ``rng`` a numpy Generator or seed. Classes are drawn without replacement (or given as ``class_ids``,
    kept in that order), and ``n_per_class`` distinct images are drawn from each.
    """
    images, labels = _images_labels(dataset)
    rng = np.random.default_rng(rng)
    if class_ids is None:
        available = np.unique(labels)
        if n_classes > len(available):
            raise ValueError(f"asked for {n_classes} classes but the dataset has {len(available)}")
        class_ids = rng.choice(available, size=n_classes, replace=False)
    class_ids = np.asarray(class_ids, np.int64)
    if len(np.unique(class_ids)) != len(class_ids):
        raise ValueError(f"class_ids must be distinct, got {class_ids.tolist()}")
    out = np.empty((len(class_ids), n_per_class) + images.shape[1:], images.dtype)
    for k, c in enumerate(class_ids):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n_per_class:
            raise ValueError(f"class {int(c)} has {len(idx)} images, fewer than n_per_class={n_per_class}")
        out[k] = images[rng.choice(idx, size=n_per_class, replace=False)]
    return out, class_ids
