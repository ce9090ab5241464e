"""The bundled offline sample: 48 Omniglot characters x 20 drawings and 500 MNIST test digits, 28x28.

``sample.npz`` beside this module is built from the official files by ``python -m tinydan.datasets
make-sample`` (:mod:`tinydan.datasets.sample_maker`) and read here with no network and no other file.
``load_omniglot(..., sample=True)`` and ``load_mnist(..., sample=True)`` serve it in the same types and
layouts as the full data; data/README.md gives its provenance and licences, as does :func:`sample_info`.

Omniglot is stored as uint8 ink counts: a 28x28 pixel covers 3.75 x 3.75 source pixels, so with the
binary 105x105 PNGs its ink fraction is exactly count / 225. Summing k x k blocks of counts gives the
exact ink fraction of a (28/k)-pixel, which is why every size dividing 28 reproduces the full loader's
float32 images bit for bit. MNIST is stored as its raw uint8 pixels.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .registry import DatasetError

__all__ = ["SAMPLE_FILE", "sample_info", "omniglot_sample", "mnist_sample", "counts_to_images",
           "OMNIGLOT_COUNT_SCALE"]

#: The bundled file, inside the installed package.
SAMPLE_FILE = Path(__file__).resolve().with_name("sample.npz")
SAMPLE_VERSION = 1
#: Ink fraction of a stored 28x28 Omniglot pixel = count / OMNIGLOT_COUNT_SCALE (3.75**2 * 16).
OMNIGLOT_COUNT_SCALE = 225
#: The Omniglot sets the sample was drawn from (together: characters keyed "Alphabet/characterNN").
SAMPLE_OMNIGLOT_SETS = ("small1", "small2")
_SIDE = 28
_REBUILD = "reinstall tinydan or rebuild it with `python -m tinydan.datasets make-sample`"


@functools.lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    """Every array of the bundled file, read once and made read-only."""
    if not SAMPLE_FILE.is_file():
        raise DatasetError(f"the bundled data sample {SAMPLE_FILE} is missing; {_REBUILD}")
    try:
        with np.load(SAMPLE_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"the bundled data sample {SAMPLE_FILE} is unreadable ({e}); {_REBUILD}") from e
    if int(arrays.get("version", -1)) != SAMPLE_VERSION:
        raise DatasetError(f"the bundled data sample {SAMPLE_FILE} is not format version {SAMPLE_VERSION}; "
                           f"{_REBUILD}")
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def sample_info() -> dict:
    """The bundled sample's provenance, from the file: sources and MD5s, what was taken, how, licences."""
    return json.loads(str(_arrays()["provenance"]))


def counts_to_images(counts: np.ndarray, size: int = _SIDE) -> np.ndarray:
    """(N, 28, 28) uint8 ink counts c -> (N, size, size) float32 (k x k block sums of c) / (225 k^2), k = 28/size."""
    size = int(size)
    if size <= 0 or _SIDE % size:
        raise ValueError(
            f"the bundled Omniglot sample is stored at {_SIDE}x{_SIDE} and gives the full loader's images "
            f"exactly only for sizes dividing {_SIDE} (1, 2, 4, 7, 14, 28), got size={size}; use sample=False"
        )
    k = _SIDE // size
    n = len(counts)
    blocks = np.asarray(counts, np.int64).reshape(n, size, k, size, k).sum(axis=(2, 4))  # (N, size, size)
    return (blocks / float(OMNIGLOT_COUNT_SCALE * k * k)).astype(np.float32)


def omniglot_sample(size: int = _SIDE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sample Omniglot: images (N, size, size) float32 in [0, 1] with ink = 1, labels (N,) int64, classes."""
    z = _arrays()
    images = counts_to_images(z["omniglot_counts"], size)
    return images, z["omniglot_labels"].astype(np.int64), [str(c) for c in z["omniglot_classes"]]


def mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """Sample MNIST test digits: images (N, 28, 28) float32 = pixels / 255 (ink = 1), labels (N,) int64."""
    z = _arrays()
    return z["mnist_images"].astype(np.float32) / np.float32(255.0), z["mnist_labels"].astype(np.int64)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz of ``arrays`` whose bytes depend on the arrays only (fixed order, times, level)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[name]), version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # "Unix", whatever system writes it
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return buf.getvalue()
