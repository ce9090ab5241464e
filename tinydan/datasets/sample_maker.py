"""Build the bundled sample from the official files: ``python -m tinydan.datasets make-sample``.

Omniglot: images_background_small1.zip + images_background_small2.zip, characters keyed
"Alphabet/characterNN" (Greek and Latin are in both zips, identical), the first
OMNIGLOT_PER_ALPHABET characters of each of the 8 alphabets in key order with all 20 drawings, decoded
and area-downsampled to 28x28 by the same code as ``load_omniglot(size=28)``, stored as uint8 ink
counts (ink = count / 225, checked exact). MNIST: the first MNIST_PER_DIGIT test images of each digit
in file order of the t10k files, raw uint8 pixels. The output depends on the files' contents only, so
it is reproducible bit for bit (``--check`` compares a fresh build with the bundled file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import downloads
from .mnist import load_idx
from .omniglot import _build_omniglot, _index_omniglot
from .registry import REGISTRY, DatasetError
from .sample import (OMNIGLOT_COUNT_SCALE, SAMPLE_FILE, SAMPLE_VERSION, _arrays, counts_to_images,
                     npz_bytes)

__all__ = ["build_sample", "make_sample", "main", "OMNIGLOT_PER_ALPHABET", "MNIST_PER_DIGIT"]

OMNIGLOT_PER_ALPHABET = 6
MNIST_PER_DIGIT = 50
COMMAND = "python -m tinydan.datasets make-sample"
SOURCES = ("images_background_small1.zip", "images_background_small2.zip",
           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

OMNIGLOT_LICENCE = (
    "Omniglot images: Copyright (c) 2015 Brenden Lake, MIT licence, from "
    "https://github.com/brendenlake/omniglot (Lake, Salakhutdinov & Tenenbaum, Human-level concept "
    "learning through probabilistic program induction, Science 350(6266), 2015). The MIT permission "
    "notice: Permission is hereby granted, free of charge, to any person obtaining a copy of this software "
    "and associated documentation files (the \"Software\"), to deal in the Software without restriction, "
    "including without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, "
    "and/or sell copies of the Software, and to permit persons to whom the Software is furnished to do so, "
    "subject to the following conditions: The above copyright notice and this permission notice shall be "
    "included in all copies or substantial portions of the Software. THE SOFTWARE IS PROVIDED \"AS IS\", "
    "WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF "
    "MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS "
    "OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF "
    "CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR "
    "OTHER DEALINGS IN THE SOFTWARE."
)
MNIST_LICENCE = (
    "MNIST digits: the MNIST database, copyright Yann LeCun and Corinna Cortes (a derivative of NIST data), "
    "licensed under CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/). Changes: a subset of "
    "500 test images and their labels, stored as NumPy arrays; this subset is shared under CC BY-SA 3.0."
)


def _sources() -> list[dict]:
    out = []
    for name in SOURCES:
        e = REGISTRY[name]
        src = {"file": e.relpath, "bytes": e.nbytes, "md5": e.md5, "url": e.urls[0]}
        if e.md5_gunzipped:
            src["md5_after_gunzip"] = e.md5_gunzipped
        out.append(src)
    return out


def build_sample(cache_dir: str | os.PathLike | None = None, **download_kwargs) -> dict[str, np.ndarray]:
    """The sample's arrays, from MD5-verified official files (found or fetched by ``download``)."""
    paths = {n: downloads.download(n, cache_dir, **download_kwargs) for n in SOURCES}
    zips = [paths[n] for n in SOURCES[:2]]

    om = _build_omniglot(zips, 28)
    files = _index_omniglot(zips)
    per_alphabet: dict[str, list[int]] = {}
    for c, key in enumerate(om.classes):  # classes are sorted by key
        per_alphabet.setdefault(key.split("/", 1)[0], []).append(c)
    keep = np.array(sorted(c for cs in per_alphabet.values() for c in cs[:OMNIGLOT_PER_ALPHABET]), np.int64)
    rows = np.flatnonzero(np.isin(om.labels, keep))
    counts = np.rint(om.images[rows].astype(np.float64) * OMNIGLOT_COUNT_SCALE).astype(np.uint8)
    if not np.array_equal(counts_to_images(counts, 28).view(np.uint32), om.images[rows].view(np.uint32)):
        raise DatasetError("Omniglot pixels are not exact multiples of 1/225 at 28x28 (the PNGs should be "
                           "1-bit); the sample cannot reproduce the full loader, not writing it")
    classes = [om.classes[c] for c in keep]
    file_names = [f for key in classes for f in sorted(files[key])]

    mnist_images = load_idx(paths["t10k-images-idx3-ubyte.gz"], expected_magic=2051)
    mnist_labels = load_idx(paths["t10k-labels-idx1-ubyte.gz"], expected_magic=2049)
    index = np.sort(np.concatenate([np.flatnonzero(mnist_labels == d)[:MNIST_PER_DIGIT] for d in range(10)]))

    provenance = {
        "format": f"tinydan bundled data sample, version {SAMPLE_VERSION}",
        "command": COMMAND,
        "sources": _sources(),
        "omniglot": {
            "taken": (f"from images_background_small1.zip + images_background_small2.zip (characters keyed "
                      f"Alphabet/characterNN; Greek and Latin are in both, identical): the first "
                      f"{OMNIGLOT_PER_ALPHABET} characters of each of the {len(per_alphabet)} alphabets in "
                      "key order, all 20 drawings each, in load_omniglot's order (classes by key, drawings "
                      "by file name)"),
            "how": ("each 105x105 1-bit PNG inverted (ink = 1) and area-averaged to 28x28 with exact overlap "
                    "weights (tinydan.datasets.area_downsample), as load_omniglot(size=28) does; stored as "
                    "omniglot_counts uint8 with ink = count / 225 exactly (a 28x28 pixel covers 3.75 x 3.75 "
                    "source pixels); omniglot_files names each image's PNG"),
            "characters": classes,
            "n_images": int(len(rows)),
            "licence": "MIT, Copyright (c) 2015 Brenden Lake",
        },
        "mnist": {
            "taken": (f"the first {MNIST_PER_DIGIT} images of each digit 0-9 of the MNIST test set "
                      "(t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), kept in file order; "
                      "mnist_index gives their positions in the test set"),
            "how": "raw uint8 pixels (ink = 255) and labels; loaders divide by 255",
            "n_images": int(len(index)),
            "licence": "CC BY-SA 3.0, Yann LeCun and Corinna Cortes",
        },
    }
    return {
        "version": np.int64(SAMPLE_VERSION),
        "provenance": np.array(json.dumps(provenance, indent=1, sort_keys=True)),
        "licence": np.array(OMNIGLOT_LICENCE + "\n\n" + MNIST_LICENCE),
        "omniglot_counts": counts,
        "omniglot_labels": np.searchsorted(keep, om.labels[rows]).astype(np.uint8),
        "omniglot_classes": np.array(classes),
        "omniglot_files": np.array(file_names),
        "mnist_images": mnist_images[index],
        "mnist_labels": mnist_labels[index].astype(np.uint8),
        "mnist_index": index.astype(np.int64),
    }


def make_sample(out: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                **download_kwargs) -> Path:
    """Build the sample and write it atomically to ``out`` (default: the bundled file); returns the path."""
    out = Path(out) if out is not None else SAMPLE_FILE
    data = npz_bytes(build_sample(cache_dir, **download_kwargs))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # an ordinary package file, not mkstemp's private mode
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if out.resolve() == SAMPLE_FILE:
        _arrays.cache_clear()  # this process reads the new file from now on
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m tinydan.datasets make-sample [--out PATH] [--check] [--cache-dir DIR] [--offline]``."""
    parser = argparse.ArgumentParser(prog="python -m tinydan.datasets",
                                     description="tinydan's data files: build the bundled offline sample.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-sample",
                       help="build the bundled sample from the official Omniglot and MNIST files")
    p.add_argument("--out", type=Path, default=SAMPLE_FILE, help=f"where to write it (default {SAMPLE_FILE})")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 unless a fresh build equals --out byte for byte")
    p.add_argument("--cache-dir", type=Path, default=None, help="data cache folder (default: as download())")
    p.add_argument("--offline", action="store_true", help="use local copies only, never the network")
    args = parser.parse_args(argv)
    kwargs = {"offline": True} if args.offline else {}
    try:
        if args.check:
            fresh = npz_bytes(build_sample(args.cache_dir, **kwargs))
            old = args.out.read_bytes() if args.out.is_file() else b""
            same = fresh == old
            print(f"{args.out}: {'identical to' if same else 'DIFFERS from'} a fresh build "
                  f"(sha256 {hashlib.sha256(fresh).hexdigest()}, {len(fresh):,} bytes)")
            return 0 if same else 1
        path = make_sample(args.out, args.cache_dir, **kwargs)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = path.read_bytes()
    print(f"wrote {path} ({len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()})")
    return 0
