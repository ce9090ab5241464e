"""Omniglot and MNIST: download, verify, cache and load them as float32 images in [0, 1], ink = 1.

Plain NumPy; imports nothing else from tinydan.

Where files live
----------------
The cache folder is, in order of precedence: the ``cache_dir=`` argument of any public function,
the environment variable ``TINYDAN_DATA``, ``<repo>/data`` when running from a source checkout
(the folder exists and is writable), else ``~/.cache/tinydan``. Inside it files sit as
``omniglot/<name>.zip`` and ``mnist/<name>.gz`` (the same layout a mirror uses).

Before touching the network, :func:`download` looks for a checksum-valid copy in the cache, then in
the offline copies (``<repo>/../shared/data``, used in place). Then it tries the mirror(s) in
``base_url=`` / ``TINYDAN_MIRROR`` if given (instead of the official URLs), else the official URLs,
with retries on connection errors and HTTP 5xx, MD5 verification and an atomic write.

Conventions (SPEC section 4): pixels float32 in [0, 1] with ink = 1. Omniglot PNGs are 105x105 with
ink = 0, so they are inverted and area-downsampled (exact overlap weights) to ``size`` x ``size``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import stat
import struct
import tempfile
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np

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


# --------------------------------------------------------------------------------------------
# Cache location
# --------------------------------------------------------------------------------------------

_REPO_ROOT = Path(__file__).resolve().parents[1]


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
    """Read-only offline copies searched after the cache: ``<repo>/../shared/data`` when it exists."""
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


def _md5_note(entry: RemoteFile) -> str:
    note = f"md5 {entry.md5}"
    if entry.md5_gunzipped:
        note += f" (or {entry.md5_gunzipped} after gunzip)"
    return note


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def find_local(name: str, cache_dir: str | os.PathLike | None = None,
               offline_dirs: Iterable[str | os.PathLike] | None = None) -> Path | None:
    """Path of a checksum-valid local copy of ``name`` (cache first, then offline copies), or None."""
    entry = _entry(name)
    target = _cache(cache_dir) / entry.group / entry.name
    if target.exists():
        if verify_file(target, entry.name):
            return target
        _remove_corrupt(target, entry)
    dirs = default_offline_dirs() if offline_dirs is None else [Path(d) for d in offline_dirs]
    for d in dirs:
        for candidate in (Path(d) / entry.group / entry.name, Path(d) / entry.name):
            if candidate.is_file() and verify_file(candidate, entry.name):
                return candidate
    return None


def _remove_corrupt(path: Path, entry: RemoteFile) -> None:
    msg = (f"{path} does not match the expected checksum ({_md5_note(entry)}, got md5 {file_md5(path)}); "
           "deleting it so that it is fetched again")
    try:
        path.unlink()
    except OSError as e:  # read-only cache: refuse it instead
        msg = (f"{path} does not match the expected checksum ({_md5_note(entry)}) and could not be "
               f"deleted ({e}); ignoring it")
    warnings.warn(msg, stacklevel=3)


def _mirror_urls(base_url: str | Sequence[str] | None) -> list[str] | None:
    if base_url is None:
        base_url = os.environ.get("TINYDAN_MIRROR") or None
    if base_url is None:
        return None
    if isinstance(base_url, str):
        base_url = base_url.split()
    return [b.rstrip("/") for b in base_url if b]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def download(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    base_url: str | Sequence[str] | None = None,
    urls: Sequence[str] | None = None,
    offline_dirs: Iterable[str | os.PathLike] | None = None,
    offline: bool | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float | tuple[float, float] = (10.0, 60.0),
    progress: bool | None = None,
) -> Path:
    """Path of a verified local copy of the registry file ``name``, downloading it into the cache if needed.

    ``base_url`` (or ``$TINYDAN_MIRROR``, whitespace-separated for several) is a URL prefix under which
    files sit as ``omniglot/<name>`` and ``mnist/<name>``; when given, those mirrors are used instead of
    the official URLs. ``urls`` overrides both. ``offline`` (or ``$TINYDAN_OFFLINE=1``) forbids the network.
    Each URL is tried ``1 + retries`` times on connection errors, timeouts and HTTP 5xx, sleeping
    ``backoff * 2**k`` seconds between tries; 4xx answers and MD5 mismatches move on to the next URL.
    """
    entry = _entry(name)
    cache = _cache(cache_dir)
    target = cache / entry.group / entry.name

    local = find_local(entry.name, cache, offline_dirs)
    if local is not None:
        return local

    if urls is None:
        mirrors = _mirror_urls(base_url)
        urls = [f"{m}/{entry.relpath}" for m in mirrors] if mirrors is not None else list(entry.urls)
    urls = list(urls)
    if offline is None:
        offline = _env_flag("TINYDAN_OFFLINE")

    failures: list[str] = []
    n_checksum = 0
    if offline:
        failures.append("network not tried (offline mode: offline=True or TINYDAN_OFFLINE is set)")
    else:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DownloadError(
                f"cannot create the cache folder {target.parent} for {entry.name}: {e}. "
                "Pass cache_dir= or set TINYDAN_DATA to a writable folder."
            ) from e
        for url in urls:
            try:
                _fetch(url, target, entry, retries=retries, backoff=backoff, timeout=timeout, progress=progress)
                return target
            except ChecksumError as e:
                n_checksum += 1
                failures.append(f"{url}: {e}")
            except DownloadError as e:
                failures.append(f"{url}: {e}")

    tried = "\n".join(f"  - {f}" for f in failures) or "  (no URL to try)"
    official = "\n".join(f"  {u}" for u in entry.urls)
    cls = ChecksumError if n_checksum and n_checksum == len(failures) else DownloadError
    raise cls(
        f"could not obtain {entry.relpath} ({entry.nbytes:,} bytes, {_md5_note(entry)}).\n"
        f"What was tried:\n{tried}\n"
        f"Official URL(s):\n{official}\n"
        f"To work offline, download it by hand from one of those URLs and put it at\n  {target}\n"
        f"(or set TINYDAN_DATA to a folder holding {entry.relpath}, or TINYDAN_MIRROR to a URL prefix "
        f"serving {entry.relpath})."
    )


def _fetch(url: str, target: Path, entry: RemoteFile, *, retries: int, backoff: float,
           timeout: float | tuple[float, float], progress: bool | None) -> None:
    """Download ``url`` into ``target`` atomically, verifying the MD5; raise DownloadError/ChecksumError."""
    import requests  # imported lazily: loading cached data needs no network stack

    attempts = max(0, int(retries)) + 1
    last = "no attempt"
    for k in range(attempts):
        if k:
            time.sleep(backoff * 2 ** (k - 1))
        fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.name}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            try:
                with os.fdopen(fd, "wb") as out, requests.get(url, stream=True, timeout=timeout) as r:
                    if r.status_code >= 500 or r.status_code == 429:
                        last = f"HTTP {r.status_code} {r.reason or ''}".strip()
                        continue
                    if r.status_code >= 400:
                        raise DownloadError(f"HTTP {r.status_code} {r.reason or ''}".strip())
                    declared = int(r.headers.get("Content-Length") or 0)
                    got = _stream(r, out, declared or entry.nbytes, entry.name, progress)
                    out.flush()
                    os.fsync(out.fileno())
                if declared and got != declared:
                    last = f"truncated transfer ({got:,} of {declared:,} bytes)"
                    continue
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            except requests.RequestException as e:
                raise DownloadError(f"{type(e).__name__}: {e}") from e
            if not verify_file(tmp, entry.name):
                raise ChecksumError(
                    f"MD5 mismatch: got {file_md5(tmp)}, expected {_md5_note(entry)}; the downloaded file "
                    "was deleted"
                )
            os.replace(tmp, target)
            return
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DownloadError(f"{last} (after {attempts} attempt{'s' if attempts > 1 else ''})")


def _stream(response, out, total: int, desc: str, progress: bool | None) -> int:
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        tqdm = None
    bar = None
    if tqdm is not None and progress is not False:
        bar = tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                   disable=None if progress is None else False, leave=False)
    got = 0
    try:
        for chunk in response.iter_content(chunk_size=1 << 16):
            if chunk:
                out.write(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return got


# --------------------------------------------------------------------------------------------
# Safe zip extraction
# --------------------------------------------------------------------------------------------

_COMPLETE = ".tinydan-complete"


def _safe_member(name: str, archive: Path | str) -> PurePosixPath:
    """The member's relative path, or UnsafeArchiveError if it is absolute or escapes the folder."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in p.parts:
        raise UnsafeArchiveError(
            f"refusing to extract {archive}: member {name!r} has an absolute path or escapes the target "
            "folder ('..'); the archive may be malicious or corrupt"
        )
    return p


def extract_zip(zip_path: str | os.PathLike, dest_dir: str | os.PathLike, *, strip_components: int = 0) -> Path:
    """Extract a zip into ``dest_dir`` (returned) safely and atomically; refuses absolute or ``..`` members.

    Every member is checked before anything is written; the archive is unpacked into a temporary
    sibling folder, marked complete, then renamed to ``dest_dir``, so a half-extracted folder is never
    taken for a complete one. A complete ``dest_dir`` is returned as it is.
    """
    zip_path, dest = Path(zip_path), Path(dest_dir)
    if (dest / _COMPLETE).is_file():
        return dest
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{zip_path} is not a valid zip file ({e}); delete it and fetch it again") from e
    with zf:
        plan = []
        for info in zf.infolist():
            rel = _safe_member(info.filename, zip_path)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"refusing to extract {zip_path}: member {info.filename!r} is a symlink")
            parts = rel.parts[strip_components:]
            if parts:
                plan.append((info, PurePosixPath(*parts)))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
        try:
            root = tmp.resolve()
            for info, rel in plan:
                out = (tmp / rel).resolve()
                if out != root and root not in out.parents:  # belt and braces
                    raise UnsafeArchiveError(f"refusing to extract {zip_path}: member {info.filename!r} escapes")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            (tmp / _COMPLETE).write_text(f"extracted from {zip_path.name}\n")
            if dest.exists():
                if (dest / _COMPLETE).is_file():  # another process finished first
                    return dest
                shutil.rmtree(dest)  # a stale, incomplete extraction
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def extract_omniglot(set_name: str = "small1", cache_dir: str | os.PathLike | None = None, **download_kwargs) -> Path:
    """Folder ``<cache>/omniglot/<zip stem>/<Alphabet>/characterNN/*.png``, downloading and extracting as needed."""
    name = _omniglot_zip(set_name)
    zpath = download(name, cache_dir, **download_kwargs)
    return extract_zip(zpath, _cache(cache_dir) / "omniglot" / name[: -len(".zip")], strip_components=1)


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------

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


def load_mnist(split: str = "test", cache_dir: str | os.PathLike | None = None,
               **download_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("test" or "train"): images (N, 28, 28) float32 in [0, 1] with ink = 1, labels (N,) int64."""
    prefix = {"test": "t10k", "train": "train"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'test' or 'train', not {split!r}")
    ipath = download(f"{prefix}-images-idx3-ubyte.gz", cache_dir, **download_kwargs)
    lpath = download(f"{prefix}-labels-idx1-ubyte.gz", cache_dir, **download_kwargs)
    images = load_idx(ipath, expected_magic=2051)
    labels = load_idx(lpath, expected_magic=2049)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"MNIST {split}: unexpected shapes images {images.shape}, labels {labels.shape}")
    if labels.max(initial=0) > 9:
        raise DatasetError(f"MNIST {split}: labels outside 0..9 in {lpath}")
    return (images.astype(np.float32) / np.float32(255.0)), labels.astype(np.int64)


def mnist_digit_sequence(n_per_class: int = 5, rng=None, split: str = "test",
                         cache_dir: str | os.PathLike | None = None, digits: Sequence[int] = range(10)) -> np.ndarray:
    """MNIST digits 0..9 in order, ``n_per_class`` random images each: (10, n_per_class, 28, 28) float32."""
    images, labels = load_mnist(split, cache_dir)
    return sample_class_sequence((images, labels), n_per_class=n_per_class, rng=rng, class_ids=list(digits))[0]


# --------------------------------------------------------------------------------------------
# PNG decoding (zlib + NumPy; no Pillow needed)
# --------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def decode_png(data: bytes) -> np.ndarray:
    """Non-interlaced PNG bytes -> (H, W) float64 grey levels in [0, 1] (0 = black); alpha is ignored."""
    values, maxval = _decode_png_levels(data)
    return values / maxval


def _decode_png_levels(data: bytes) -> tuple[np.ndarray, float]:
    """(H, W) integer or float grey levels of a PNG and the level of white."""
    if data[:8] != _PNG_SIGNATURE:
        raise DatasetError("not a PNG file (bad signature)")
    pos, idat, ihdr, palette = 8, [], None, None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif ctype == b"PLTE":
            palette = np.frombuffer(chunk, np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(chunk)
        elif ctype == b"IEND":
            break
    if ihdr is None:
        raise DatasetError("PNG without IHDR chunk")
    w, h, depth, color, _comp, _filt, interlace = ihdr
    if (interlace != 0 or color not in _PNG_CHANNELS or (color == 3 and palette is None)
            or depth not in (1, 2, 4, 8, 16)):
        raise DatasetError(f"unsupported PNG (colour type {color}, bit depth {depth}, interlace {interlace})")
    ch = _PNG_CHANNELS[color]
    bits = ch * depth
    stride = (w * bits + 7) // 8
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    except zlib.error as e:
        raise DatasetError(f"corrupt PNG data ({e})") from e
    if raw.size < h * (stride + 1):
        raise DatasetError("truncated PNG data")
    raw = raw[: h * (stride + 1)].reshape(h, stride + 1)
    rows = _png_unfilter(raw[:, 0], raw[:, 1:], max(1, bits // 8))
    if depth == 1:
        vals = np.unpackbits(rows, axis=1)[:, : w * ch]
    elif depth < 8:
        weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
        vals = (np.unpackbits(rows, axis=1).reshape(h, -1, depth) @ weights)[:, : w * ch]
    elif depth == 16:
        vals = rows.view(">u2")[:, : w * ch].astype(np.uint16)
    else:
        vals = rows[:, : w * ch]
    vals = vals.reshape(h, w, ch)
    if color == 3:
        rgb = palette[np.minimum(vals[..., 0], len(palette) - 1)].astype(np.float64)
        return rgb.mean(-1), 255.0
    maxval = float((1 << depth) - 1)
    if color in (2, 6):
        return vals[..., :3].astype(np.float64).mean(-1), maxval
    return vals[..., 0], maxval


def _png_unfilter(ftypes: np.ndarray, rows: np.ndarray, bpp: int) -> np.ndarray:
    if not ftypes.any():
        return np.ascontiguousarray(rows)
    out = np.zeros(rows.shape, np.uint8)
    prev = np.zeros(rows.shape[1], np.int64)
    for y, f in enumerate(ftypes):
        row = rows[y].astype(np.int64)
        if f == 1:  # Sub: running sum (mod 256) along each of the bpp byte lanes
            for k in range(bpp):
                row[k::bpp] = np.cumsum(row[k::bpp])
            row &= 255
        elif f == 2:  # Up
            row = (row + prev) & 255
        elif f in (3, 4):  # Average, Paeth: sequential within a row
            for i in range(len(row)):
                a = row[i - bpp] if i >= bpp else 0
                b = prev[i]
                if f == 3:
                    row[i] = (row[i] + ((a + b) >> 1)) & 255
                else:
                    c = prev[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    row[i] = (row[i] + pred) & 255
        elif f != 0:
            raise DatasetError(f"corrupt PNG: unknown row filter {int(f)}")
        out[y] = row
        prev = row
    return out


# --------------------------------------------------------------------------------------------
# Area downsampling
# --------------------------------------------------------------------------------------------


def area_matrix(n_in: int = 105, n_out: int = 28) -> np.ndarray:
    """(n_out, n_in) float64 overlap weights of exact area averaging; each row sums to 1."""
    if not 0 < n_out <= n_in:
        raise ValueError(f"area_matrix needs 0 < n_out <= n_in, got n_in={n_in}, n_out={n_out}")
    scale = n_in / n_out
    lo = np.arange(n_out)[:, None] * scale  # output pixel i covers [i*scale, (i+1)*scale)
    j = np.arange(n_in)[None, :]  # input pixel j covers [j, j+1)
    overlap = np.clip(np.minimum(lo + scale, j + 1) - np.maximum(lo, j), 0.0, None)
    return overlap / overlap.sum(1, keepdims=True)


def area_downsample(images: np.ndarray, size: int = 28) -> np.ndarray:
    """(..., H, W) images area-averaged to (..., size, size) float32 with one batched matmul."""
    images = np.asarray(images)
    a_rows = area_matrix(images.shape[-2], size)
    a_cols = area_matrix(images.shape[-1], size)
    return (a_rows @ np.asarray(images, np.float64) @ a_cols.T).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Omniglot
# --------------------------------------------------------------------------------------------

_OMNIGLOT_CACHE_VERSION = 1


@dataclass(frozen=True)
class OmniglotData:
    """Omniglot images (N, size, size) float32 in [0, 1], ink = 1; labels (N,) int64; classes[label] = "Alphabet/characterNN"."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        """Number of images."""
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        """Number of characters (classes)."""
        return len(self.classes)

    @property
    def alphabets(self) -> list[str]:
        """Sorted alphabet names."""
        return sorted({c.split("/", 1)[0] for c in self.classes})

    def class_images(self, class_id: int) -> np.ndarray:
        """The (n, size, size) images of one class."""
        return self.images[self.labels == class_id]


def _omniglot_zip(set_name: str) -> str:
    s = str(set_name)
    name = OMNIGLOT_SETS.get(s, s if s.endswith(".zip") else s + ".zip")
    if name not in OMNIGLOT_SETS.values():
        raise ValueError(
            f"unknown Omniglot set {set_name!r}; use one of {sorted(OMNIGLOT_SETS)} or their zip names"
        )
    return name


def _omniglot_names(sets) -> list[str]:
    if isinstance(sets, str):
        sets = (sets,)
    names = []
    for s in sets:
        n = _omniglot_zip(s)
        if n not in names:
            names.append(n)
    if not names:
        raise ValueError("load_omniglot needs at least one set")
    order = list(OMNIGLOT_SETS.values())
    return sorted(names, key=order.index)  # canonical order: the same data and cache file for any order


def load_omniglot(sets: str | Sequence[str] = ("small1", "small2"), size: int = 28,
                  cache_dir: str | os.PathLike | None = None, **download_kwargs) -> OmniglotData:
    """Omniglot as OmniglotData: images (N, size, size) float32 in [0, 1] with ink = 1, labels (N,), classes.

    ``sets``: "small1", "small2", "background", "evaluation" (or zip names), one or several. Characters
    are keyed "Alphabet/characterNN", so alphabets present in several sets (Greek and Latin in both small
    sets) appear once: small1 + small2 gives 8 alphabets, 242 characters, 4,840 images. Classes are sorted
    by key, images within a class by file name. The result is cached as an ``.npz`` in the cache folder.
    """
    names = _omniglot_names(sets)
    size = int(size)
    cache = _cache(cache_dir)
    stems = "+".join(n[: -len(".zip")].replace("images_", "") for n in names)
    npz = cache / "omniglot" / f"processed_{stems}_{size}px_v{_OMNIGLOT_CACHE_VERSION}.npz"
    cached = _read_omniglot_npz(npz, size)
    if cached is not None:
        return cached

    zips = [download(n, cache, **download_kwargs) for n in names]
    data = _build_omniglot(zips, size)
    try:
        npz.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{npz.name}.", suffix=".part", dir=npz.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, images=data.images, labels=data.labels,
                                    classes=np.array(data.classes, dtype=str),
                                    version=np.int64(_OMNIGLOT_CACHE_VERSION))
            os.replace(tmp, npz)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"could not cache the processed Omniglot arrays at {npz}: {e}", stacklevel=2)
    return data


def _read_omniglot_npz(npz: Path, size: int) -> OmniglotData | None:
    if not npz.is_file():
        return None
    try:
        with np.load(npz, allow_pickle=False) as z:
            images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
            ok = (int(z["version"]) == _OMNIGLOT_CACHE_VERSION and images.dtype == np.float32
                  and images.shape[1:] == (size, size) and labels.shape == (len(images),)
                  and labels.dtype == np.int64 and len(classes) > int(labels.max(initial=-1)))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        warnings.warn(f"ignoring unreadable processed-Omniglot cache {npz}: {e}", stacklevel=3)
        return None
    return OmniglotData(images, labels, classes) if ok else None


def _build_omniglot(zips: Sequence[Path], size: int) -> OmniglotData:
    files: dict[str, dict[str, tuple[Path, str]]] = {}  # class key -> file name -> (zip, member)
    for zpath in zips:
        with zipfile.ZipFile(zpath) as zf:
            for member in zf.namelist():
                parts = _safe_member(member, zpath).parts
                if len(parts) != 4 or not parts[-1].lower().endswith(".png"):
                    continue
                key = f"{parts[1]}/{parts[2]}"
                files.setdefault(key, {}).setdefault(parts[3], (zpath, member))  # first set wins
    classes = sorted(files)
    if not classes:
        raise DatasetError(f"no Omniglot PNGs (<set>/<Alphabet>/<character>/<file>.png) found in {list(map(str, zips))}")
    order = [(c, fname) for c, key in enumerate(classes) for fname in sorted(files[key])]
    labels = np.array([c for c, _ in order], np.int64)
    images = np.empty((len(order), size, size), np.float32)
    handles = {z: zipfile.ZipFile(z) for z in zips}
    batch_size = 256
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ink = None
            for k, (c, fname) in enumerate(chunk):
                zpath, member = files[classes[c]][fname]
                try:
                    levels, white = _decode_png_levels(handles[zpath].read(member))
                except DatasetError as e:
                    raise DatasetError(f"{zpath}:{member}: {e}") from e
                if ink is None:
                    ink = np.empty((len(chunk),) + levels.shape, np.float64)
                if levels.shape != ink.shape[1:]:
                    raise DatasetError(f"{zpath}:{member}: image is {levels.shape}, expected {ink.shape[1:]}")
                # Omniglot: white background, black strokes -> ink = 1 - grey
                np.subtract(1.0, levels / white if white != 1.0 else levels, out=ink[k])
            images[start:start + len(chunk)] = area_downsample(ink, size)
    finally:
        for zf in handles.values():
            zf.close()
    np.clip(images, 0.0, 1.0, out=images)
    return OmniglotData(images, labels, classes)


# --------------------------------------------------------------------------------------------
# Task sequences
# --------------------------------------------------------------------------------------------


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
