"""MNIST: IDX parsing and the loader (the full test or training split, or the bundled sample)."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from . import downloads
from .registry import DatasetError
from .sample import mnist_sample
from .sequences import sample_class_sequence

__all__ = ["load_idx", "load_mnist", "mnist_digit_sequence"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Array stored in an IDX file (optionally gzipped), e.g. (N, 28, 28) uint8 images or (N,) uint8 labels."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read or gunzip it ({e}); delete it and fetch it again") from e
    if len(raw) < 4:
        raise DatasetError(f"{path}: too short to be an IDX file ({len(raw)} bytes); delete it and fetch it again")
    magic = struct.unpack(">I", raw[:4])[0]
    zero, code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if expected_magic is not None and magic != expected_magic:
        raise DatasetError(
            f"{path}: bad IDX magic number {magic} (expected {expected_magic}); the file is corrupt or not "
            "the one expected, delete it and fetch it again"
        )
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DatasetError(f"{path}: bad IDX magic number {magic}; the file is corrupt, delete it and fetch it again")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header; delete it and fetch it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    need = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != need:
        raise DatasetError(
            f"{path}: IDX header says shape {dims} ({need:,} bytes of data) but the file holds "
            f"{len(raw) - header:,}; the file is corrupt, delete it and fetch it again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def load_mnist(split: str = "test", cache_dir: str | os.PathLike | None = None, *, sample: bool = False,
               **download_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("test" or "train"): images (N, 28, 28) float32 in [0, 1] with ink = 1, labels (N,) int64.

    ``sample=True``: the bundled sample instead (500 test digits, the first 50 of each digit in file
    order, see :mod:`tinydan.datasets.sample`), read from the package with no network; only
    ``split="test"``, and ``cache_dir`` and the download options are not used.
    """
    prefix = {"test": "t10k", "train": "train"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'test' or 'train', not {split!r}")
    if sample:
        if split != "test":
            raise ValueError("the bundled MNIST sample holds test digits only: use split='test' or "
                             "sample=False")
        return mnist_sample()
    ipath = downloads.download(f"{prefix}-images-idx3-ubyte.gz", cache_dir, **download_kwargs)
    lpath = downloads.download(f"{prefix}-labels-idx1-ubyte.gz", cache_dir, **download_kwargs)
    images = load_idx(ipath, expected_magic=2051)
    labels = load_idx(lpath, expected_magic=2049)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"MNIST {split}: unexpected shapes images {images.shape}, labels {labels.shape}")
    if labels.max(initial=0) > 9:
        raise DatasetError(f"MNIST {split}: labels outside 0..9 in {lpath}")
    return (images.astype(np.float32) / np.float32(255.0)), labels.astype(np.int64)


def mnist_digit_sequence(n_per_class: int = 5, rng=None, split: str = "test",
                         cache_dir: str | os.PathLike | None = None, digits: Sequence[int] = range(10),
                         *, sample: bool = False) -> np.ndarray:
    """MNIST digits 0..9 in order, ``n_per_class`` random images each: (10, n_per_class, 28, 28) float32."""
    images, labels = load_mnist(split, cache_dir, sample=sample)
    return sample_class_sequence((images, labels), n_per_class=n_per_class, rng=rng, class_ids=list(digits))[0]
