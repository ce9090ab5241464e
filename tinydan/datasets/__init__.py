"""Omniglot and MNIST: download, verify, cache and load them as float32 images in [0, 1], ink = 1.

Plain NumPy (``requests`` only for downloads); imports nothing else from tinydan. Modules:
``registry`` (known files, errors, cache folder, MD5s), ``downloads`` (verified downloads with a
deadline), ``archive`` (safe unzip), ``images`` (PNG decoding, area downsampling), ``omniglot``,
``mnist``, ``sequences`` (class-incremental draws), ``sample`` (the bundled offline sample) and
``sample_maker`` (``python -m tinydan.datasets make-sample`` rebuilds it from the official files).

Where files live
----------------
The cache folder is, in order of precedence: the ``cache_dir=`` argument of any public function,
the environment variable ``TINYDAN_DATA``, ``<repo>/data`` when running from a source checkout
(the folder exists and is writable), else ``~/.cache/tinydan``. Inside it files sit as
``omniglot/<name>.zip`` and ``mnist/<name>.gz`` (the same layout a mirror uses).

Before touching the network, :func:`download` looks for a checksum-valid copy in the cache, then in
the read-only offline copies of :func:`default_offline_dirs` (used in place). Then it tries the
mirror(s) in ``base_url=`` / ``TINYDAN_MIRROR`` if given (instead of the official URLs), else the
official URLs, with retries on connection errors and HTTP 5xx, a total deadline per file
(``deadline=`` / ``TINYDAN_DOWNLOAD_DEADLINE``), MD5 verification and an atomic write.

The bundled sample
------------------
``load_omniglot(("small1", "small2"), size, sample=True)`` and ``load_mnist("test", sample=True)``
return 48 Omniglot characters x 20 drawings and 500 MNIST test digits from a file inside the package,
with no network; the full data is never replaced by the sample unless ``sample=True`` is passed.

Conventions: pixels float32 in [0, 1] with ink = 1. Omniglot PNGs are 105x105 with ink = 0, so they
are inverted and area-downsampled (exact overlap weights) to ``size`` x ``size``.
"""

from __future__ import annotations

from .archive import extract_zip
from .downloads import DEADLINE_ENV, download, download_deadline, find_local
from .images import area_downsample, area_matrix, decode_png
from .sample_maker import make_sample
from .mnist import load_idx, load_mnist, mnist_digit_sequence
from .omniglot import OmniglotData, extract_omniglot, load_omniglot
from .registry import (OMNIGLOT_SETS, REGISTRY, ChecksumError, DatasetError, DownloadError, RemoteFile,
                       UnsafeArchiveError, default_cache_dir, default_offline_dirs, file_md5, verify_file)
from .sample import SAMPLE_FILE, sample_info
from .sequences import sample_class_sequence

__all__ = [
    "DatasetError",
    "DownloadError",
    "ChecksumError",
    "UnsafeArchiveError",
    "REGISTRY",
    "OMNIGLOT_SETS",
    "RemoteFile",
    "default_cache_dir",
    "default_offline_dirs",
    "file_md5",
    "verify_file",
    "find_local",
    "download",
    "download_deadline",
    "DEADLINE_ENV",
    "extract_zip",
    "extract_omniglot",
    "load_idx",
    "load_mnist",
    "area_matrix",
    "area_downsample",
    "decode_png",
    "OmniglotData",
    "load_omniglot",
    "sample_class_sequence",
    "mnist_digit_sequence",
    "SAMPLE_FILE",
    "sample_info",
    "make_sample",
]
