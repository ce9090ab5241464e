"""The known data files (official URLs, sizes, MD5s), the errors, the cache location and checksums."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DatasetError", "DownloadError", "ChecksumError", "UnsafeArchiveError", "REGISTRY", "OMNIGLOT_SETS",
    "RemoteFile", "default_cache_dir", "default_offline_dirs", "file_md5", "verify_file",
]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DatasetError(RuntimeError):
    """Base error for everything that goes wrong while obtaining or reading a data file."""


class DownloadError(DatasetError):
    """A file could not be obtained from the cache, an offline copy or any URL."""


class ChecksumError(DatasetError):
    """A file's MD5 does not match the registry."""


class UnsafeArchiveError(DatasetError):
    """A zip member has an absolute path or escapes the extraction folder."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{}"
_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/{}",
    "http://yann.lecun.com/exdb/mnist/{}",
)


@dataclass(frozen=True)
class RemoteFile:
    """One known file: its folder in the cache, official URLs, MD5, size and (MNIST) MD5 after gunzip."""

    name: str
    group: str  # "omniglot" or "mnist": the sub-folder in a cache or a mirror
    urls: tuple[str, ...]
    md5: str
    nbytes: int
    md5_gunzipped: str | None = None

    @property
    def relpath(self) -> str:
        """The path inside a cache or a mirror, e.g. ``mnist/t10k-labels-idx1-ubyte.gz``."""
        return f"{self.group}/{self.name}"


def _omniglot(name: str, md5: str, size: int) -> RemoteFile:
    return RemoteFile(name, "omniglot", (_OMNIGLOT_URL.format(name),), md5, size)


def _mnist(name: str, md5: str, size: int, md5_raw: str) -> RemoteFile:
    return RemoteFile(name, "mnist", tuple(u.format(name) for u in _MNIST_MIRRORS), md5, size, md5_raw)


REGISTRY: dict[str, RemoteFile] = {
    f.name: f
    for f in (
        _omniglot("images_background.zip", "68d2efa1b9178cc56df9314c21c6e718", 9_464_212),
        _omniglot("images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811", 6_462_886),
        _omniglot("images_background_small1.zip", "e704a628b5459e08445c13499850abc4", 1_319_022),
        _omniglot("images_background_small2.zip", "b75a71a51d3b13f821f212756fe481fd", 1_580_917),
        _mnist("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422,
               "6bbc9ace898e44ae57da46a324031adb"),
        _mnist("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28_881,
               "a25bea736e30d166cdddb491f175f624"),
        _mnist("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877,
               "2646ac647ad5339dbf082846283269ea"),
        _mnist("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4_542,
               "27ae3e4e09519cfbb04c329615203637"),
    )
}

#: Short names of the Omniglot zips accepted by :func:`load_omniglot`.
OMNIGLOT_SETS = {
    "background": "images_background.zip",
    "evaluation": "images_evaluation.zip",
    "small1": "images_background_small1.zip",
    "small2": "images_background_small2.zip",
}


def _entry(name: str) -> RemoteFile:
    key = name.rsplit("/", 1)[-1]
    if key not in REGISTRY:
        raise DatasetError(f"unknown data file {name!r}; known files: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def _md5_note(entry: RemoteFile) -> str:
    note = f"md5 {entry.md5}"
    if entry.md5_gunzipped:
        note += f" (or {entry.md5_gunzipped} after gunzip)"
    return note


# --------------------------------------------------------------------------------------------
# Cache location
# --------------------------------------------------------------------------------------------

_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """The cache folder: ``$TINYDAN_DATA``, else ``<repo>/data`` in a source checkout, else ``~/.cache/tinydan``."""
    env = os.environ.get("TINYDAN_DATA")
    if env:
        return Path(env).expanduser()
    repo_data = _REPO_ROOT / "data"
    if (_REPO_ROOT / "pyproject.toml").is_file() and repo_data.is_dir() and os.access(repo_data, os.W_OK):
        return repo_data
    return Path.home() / ".cache" / "tinydan"


def default_offline_dirs() -> list[Path]:
    """Read-only offline copies searched after the cache, where the machine keeps one beside the checkout."""
    shared = _REPO_ROOT.parent / "shared" / "data"
    return [shared] if shared.is_dir() else []


def _cache(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------

_VERIFIED: dict[tuple[str, int, int], bool] = {}


def file_md5(path: str | os.PathLike, *, gunzip: bool = False) -> str:
    """Hex MD5 of a file's bytes (or of its gunzipped content when ``gunzip``)."""
    h = hashlib.md5()
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, name: str) -> bool:
    """True if the file matches the registry MD5 of ``name`` (for MNIST: of the .gz or after gunzip)."""
    entry = _entry(name)
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return _VERIFIED[key]
    ok = file_md5(path) == entry.md5
    if not ok and entry.md5_gunzipped is not None:
        # Re-uploaded copies may carry rewritten gzip headers: the content is what matters.
        try:
            ok = file_md5(path, gunzip=True) == entry.md5_gunzipped
        except (OSError, EOFError, zlib.error):
            ok = False
    _VERIFIED[key] = ok
    return ok
