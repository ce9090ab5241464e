"""Weight initialisers (NumPy in, NumPy out, seeded by a Generator)."""
from __future__ import annotations

import numpy as np

__all__ = ["glorot_uniform", "lecun_normal", "fan_in_uniform", "zeros", "INITS"]

INITS = ("glorot", "fan_in_uniform")


def glorot_uniform(rng: np.random.Generator, shape, fan_in: int, fan_out: int, dtype=np.float32):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


def lecun_normal(rng: np.random.Generator, shape, fan_in: int, dtype=np.float32):
    """N(0, 1 / fan_in): keeps the variance of a weighted sum near that of its inputs."""
    return (rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(dtype)


def zeros(shape, dtype=np.float32):
    """All zeros."""
    return np.zeros(shape, dtype=dtype)


def fan_in_uniform(rng: np.random.Generator, shape, fan_in: int, dtype=np.float32):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights and biases alike (PyTorch's nn.Linear default)."""
    a = 1.0 / np.sqrt(max(fan_in, 1))
    return rng.uniform(-a, a, size=shape).astype(dtype)
