"""tinydan.datasets: downloader (against a loopback HTTP server only), safe extraction, loaders on real data."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinydan import datasets as ds

pytestmark = pytest.mark.data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELS = "t10k-labels-idx1-ubyte.gz"  # smallest registry file (4,542 bytes)
FAST = dict(retries=0, backoff=0.0, timeout=5.0, progress=False)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No mirror, cache or offline setting leaks in from the environment; loopback never goes via a proxy."""
    for var in ("TINYDAN_MIRROR", "TINYDAN_DATA", "TINYDAN_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def needs_shared():
    if not (SHARED / "mnist" / LABELS).is_file():
        pytest.skip(f"offline data copy not found at {SHARED} (needed to serve real files over loopback)")
    return SHARED


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> serving a folder, or answering every GET with `status`."""

    def __init__(self, directory: Path, status: int | None = None):
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self):
                paths.append(self.path)
                if status is not None:
                    self.send_error(status)
                else:
                    super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve(tmp_path):
    """Factory: serve(directory=None, status=None) -> _Server; all servers are shut down afterwards."""
    servers = []

    def start(directory: Path | None = None, status: int | None = None) -> _Server:
        s = _Server(directory if directory is not None else tmp_path, status)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more: connection refused


# --------------------------------------------------------------------------------------------
# Downloader (loopback only, never the internet, never the shared copy as a cache)
# --------------------------------------------------------------------------------------------


def test_download_from_loopback_mirror(serve, needs_shared, tmp_path):
    srv = serve(needs_shared)
    cache = tmp_path / "cache"
    path = ds.download(LABELS, cache, base_url=srv.url, offline_dirs=(), **FAST)
    assert path == cache / "mnist" / LABELS
    assert _md5(path) == ds.REGISTRY[LABELS].md5
    assert srv.paths == [f"/mnist/{LABELS}"]
    assert _files(cache) == [path]  # no temporary files left behind
    # a second call finds the verified file in the cache and does not touch the network
    assert ds.download(LABELS, cache, base_url=srv.url, offline_dirs=(), **FAST) == path
    assert len(srv.paths) == 1


def test_download_omniglot_zip_via_env_mirror(serve, needs_shared, tmp_path, monkeypatch):
    srv = serve(needs_shared)
    monkeypatch.setenv("TINYDAN_MIRROR", srv.url + "/")
    monkeypatch.setenv("TINYDAN_DATA", str(tmp_path / "envcache"))
    name = "images_background_small1.zip"
    path = ds.download(name, offline_dirs=(), **FAST)
    assert path == tmp_path / "envcache" / "omniglot" / name
    assert _md5(path) == ds.REGISTRY[name].md5
    assert srv.paths == [f"/omniglot/{name}"]


def test_corrupt_download_refused_and_not_cached(serve, needs_shared, tmp_path):
    bad = tmp_path / "bad" / "mnist"
    bad.mkdir(parents=True)
    data = bytearray((needs_shared / "mnist" / LABELS).read_bytes())
    data[100] ^= 0xFF
    (bad / LABELS).write_bytes(bytes(data))
    srv = serve(tmp_path / "bad")
    cache = tmp_path / "cache"
    with pytest.raises(ds.ChecksumError) as exc:
        ds.download(LABELS, cache, base_url=srv.url, offline_dirs=(), **FAST)
    msg = str(exc.value)
    assert LABELS in msg and "MD5 mismatch" in msg and srv.url in msg
    assert str(cache / "mnist" / LABELS) in msg  # says where to put a good copy by hand
    assert _files(cache) == []


def test_regzipped_mnist_accepted_by_content_md5(serve, needs_shared, tmp_path):
    raw = gzip.decompress((needs_shared / "mnist" / LABELS).read_bytes())
    (tmp_path / "re" / "mnist").mkdir(parents=True)
    regz = tmp_path / "re" / "mnist" / LABELS
    regz.write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))  # different gzip header and body
    assert _md5(regz) != ds.REGISTRY[LABELS].md5
    srv = serve(tmp_path / "re")
    path = ds.download(LABELS, tmp_path / "cache", base_url=srv.url, offline_dirs=(), **FAST)
    assert gzip.decompress(path.read_bytes()) == raw


def test_corrupt_file_in_cache_is_deleted_and_refetched(serve, needs_shared, tmp_path):
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist" / LABELS).write_bytes(b"not the real file")
    srv = serve(needs_shared)
    with pytest.warns(UserWarning, match="checksum"):
        path = ds.download(LABELS, cache, base_url=srv.url, offline_dirs=(), **FAST)
    assert _md5(path) == ds.REGISTRY[LABELS].md5
    assert len(srv.paths) == 1


def test_http_500_is_retried_then_clear_error(serve, tmp_path):
    srv = serve(status=500)
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    with pytest.raises(ds.DownloadError) as exc:
        ds.download(LABELS, cache, base_url=srv.url, offline_dirs=(), retries=2, backoff=0.001,
                    timeout=5.0, progress=False)
    assert time.perf_counter() - t0 < 5
    assert len(srv.paths) == 3  # one try plus two retries
    msg = str(exc.value)
    assert "HTTP 500" in msg and "3 attempts" in msg and f"{srv.url}/mnist/{LABELS}" in msg
    assert ds.REGISTRY[LABELS].urls[0] in msg  # names the official URL for a manual download
    assert str(cache / "mnist" / LABELS) in msg and "TINYDAN_DATA" in msg
    assert _files(cache) == []


def test_http_404_is_not_retried(serve, tmp_path):
    (tmp_path / "empty").mkdir()
    srv = serve(tmp_path / "empty")
    with pytest.raises(ds.DownloadError, match="HTTP 404"):
        ds.download(LABELS, tmp_path / "cache", base_url=srv.url, offline_dirs=(), retries=3, backoff=0.001,
                    progress=False)
    assert len(srv.paths) == 1


def test_fallback_to_next_mirror(serve, needs_shared, tmp_path):
    broken = serve(status=503)
    good = serve(needs_shared)
    mirrors = [_dead_url(), broken.url, good.url]
    path = ds.download(LABELS, tmp_path / "cache", base_url=mirrors, offline_dirs=(), retries=1, backoff=0.001,
                       timeout=5.0, progress=False)
    assert _md5(path) == ds.REGISTRY[LABELS].md5
    assert len(broken.paths) == 2 and len(good.paths) == 1
    # explicit urls= take precedence over mirrors
    path2 = ds.download(LABELS, tmp_path / "cache2", urls=[f"{broken.url}/x", f"{good.url}/mnist/{LABELS}"],
                        offline_dirs=(), **FAST)
    assert _md5(path2) == ds.REGISTRY[LABELS].md5


def test_offline_missing_file_message(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ds.DownloadError) as exc:
        ds.download("train-images-idx3-ubyte.gz", cache, offline_dirs=(), offline=True)
    msg = str(exc.value)
    assert "train-images-idx3-ubyte.gz" in msg and "offline" in msg
    for url in ds.REGISTRY["train-images-idx3-ubyte.gz"].urls:
        assert url in msg
    assert str(cache / "mnist" / "train-images-idx3-ubyte.gz") in msg and "TINYDAN_DATA" in msg


def test_offline_copy_is_used_in_place(needs_shared, tmp_path):
    path = ds.download(LABELS, tmp_path / "cache", offline_dirs=[needs_shared], offline=True)
    assert path == needs_shared / "mnist" / LABELS
    assert ds.find_local(LABELS, tmp_path / "cache", offline_dirs=()) is None


def test_unknown_name_and_cache_dir_resolution(tmp_path, monkeypatch):
    with pytest.raises(ds.DatasetError, match="unknown data file"):
        ds.download("nope.zip", tmp_path, offline=True)
    monkeypatch.setenv("TINYDAN_DATA", str(tmp_path / "d"))
    assert ds.default_cache_dir() == tmp_path / "d"
    monkeypatch.delenv("TINYDAN_DATA")
    assert ds.default_cache_dir() in (Path(ds.__file__).resolve().parents[1] / "data",
                                      Path.home() / ".cache" / "tinydan")


# --------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("evil", ["../evil", "a/../../evil", "/abs/evil", "C:/evil", "..\\evil"])
def test_extract_refuses_escaping_members(tmp_path, evil):
    zp = _zip(tmp_path / "evil.zip", {"ok/file.txt": b"fine", evil: b"pwned"})
    dest = tmp_path / "out" / "x"
    with pytest.raises(ds.UnsafeArchiveError, match="refusing to extract"):
        ds.extract_zip(zp, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out" / "evil").exists()
    assert _files(tmp_path / "out") == []  # nothing written, no temporary folder left


def test_extract_is_atomic_and_idempotent(tmp_path):
    zp = _zip(tmp_path / "good.zip", {"top/a/1.txt": b"one", "top/b/2.txt": b"two"})
    dest = tmp_path / "out" / "top"
    dest.mkdir(parents=True)
    (dest / "half.txt").write_text("a stale, half-extracted folder without the completion marker")
    assert ds.extract_zip(zp, dest, strip_components=1) == dest
    assert (dest / "a" / "1.txt").read_bytes() == b"one" and (dest / "b" / "2.txt").read_bytes() == b"two"
    assert not (dest / "half.txt").exists()
    mtime = (dest / "a" / "1.txt").stat().st_mtime_ns
    ds.extract_zip(zp, dest, strip_components=1)  # complete: left as is
    assert (dest / "a" / "1.txt").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["top"]


# --------------------------------------------------------------------------------------------
# IDX and PNG parsing, area downsampling
# --------------------------------------------------------------------------------------------


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def test_idx_roundtrip_and_corrupt_files(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(_idx(2051, (2, 3, 4), imgs.tobytes())))
    np.testing.assert_array_equal(ds.load_idx(good, expected_magic=2051), imgs)

    bad = tmp_path / "bad-magic"
    bad.write_bytes(_idx(2052, (2, 3, 4), imgs.tobytes()))
    with pytest.raises(ds.DatasetError, match=r"bad IDX magic number 2052 \(expected 2051\)"):
        ds.load_idx(bad, expected_magic=2051)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x12\x34\x56\x78" + bytes(40))
    with pytest.raises(ds.DatasetError, match="bad IDX magic"):
        ds.load_idx(garbage)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(_idx(2051, (2, 3, 4), imgs.tobytes()[:-1])))
    with pytest.raises(ds.DatasetError, match="corrupt"):
        ds.load_idx(short, expected_magic=2051)
    notgz = tmp_path / "notgz.gz"
    notgz.write_bytes(b"\x1f\x8b" + bytes(30))
    with pytest.raises(ds.DatasetError, match="gunzip"):
        ds.load_idx(notgz)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _encode_png(rows: np.ndarray, width: int, depth: int, color: int, filters: list[int], bpp: int) -> bytes:
    """A reference PNG encoder for the test: rows (H, stride) uint8 already packed, filter per row."""
    out, prev = [], [0] * rows.shape[1]
    for y, row in enumerate(rows.tolist()):
        f = filters[y % len(filters)]
        enc = []
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][f]
            enc.append((x - pred) & 255)
        out.append(bytes([f] + enc))
        prev = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, rows.shape[0], depth, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(out)))
            + chunk(b"IEND", b""))


def test_decode_png_filters_and_bit_depths():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(7, 9), dtype=np.uint8)
    for filters in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4]):
        png = _encode_png(grey, 9, 8, 0, filters, bpp=1)
        np.testing.assert_allclose(ds.decode_png(png), grey / 255.0)
    bits = rng.integers(0, 2, size=(6, 13), dtype=np.uint8)
    png = _encode_png(np.packbits(bits, axis=1), 13, 1, 0, [0, 2, 4], bpp=1)
    np.testing.assert_array_equal(ds.decode_png(png), bits.astype(float))
    rgb = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    png = _encode_png(rgb.reshape(4, 15), 5, 8, 2, [1, 3, 4], bpp=3)
    np.testing.assert_allclose(ds.decode_png(png), rgb.mean(-1) / 255.0)
    with pytest.raises(ds.DatasetError, match="not a PNG"):
        ds.decode_png(b"GIF89a")


def test_area_matrix_rows_sum_to_one_and_match_brute_force():
    a = ds.area_matrix(105, 28)
    assert a.shape == (28, 105) and (a >= 0).all()
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(a.sum(0), 28 / 105, atol=1e-12)  # every input pixel counted equally
    const = np.full((3, 105, 105), 0.37)
    np.testing.assert_allclose(ds.area_downsample(const, 28), 0.37, atol=1e-6)
    np.testing.assert_allclose(ds.area_matrix(12, 12), np.eye(12))
    # brute force on a 15 -> 4 grid: integrate a piecewise-constant image over each output cell
    rng = np.random.default_rng(1)
    img = rng.random((15, 15))
    fine = np.kron(img, np.ones((4, 4)))  # 60x60: each output cell is exactly a 15x15 block
    expected = fine.reshape(4, 15, 4, 15).mean(axis=(1, 3))
    np.testing.assert_allclose(ds.area_downsample(img, 4), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Loaders on the real data (cache or ../shared/data; never the network)
# --------------------------------------------------------------------------------------------


def _local_dir(name: str) -> Path:
    found = ds.find_local(name)
    if found is None:
        pytest.skip(f"{name} is neither in the data cache ({ds.default_cache_dir()}) nor in {SHARED}; "
                    "the loaders are tested on real data only")
    return found.parent


@pytest.fixture(scope="module")
def mnist_test(tmp_path_factory):
    dirs = [_local_dir("t10k-images-idx3-ubyte.gz"), _local_dir(LABELS)]
    return ds.load_mnist("test", cache_dir=tmp_path_factory.mktemp("mnist-cache"), offline_dirs=dirs, offline=True)


@pytest.fixture(scope="module")
def omniglot_cache(tmp_path_factory):
    dirs = [_local_dir("images_background_small1.zip"), _local_dir("images_background_small2.zip")]
    return tmp_path_factory.mktemp("omniglot-cache"), dirs


@pytest.fixture(scope="module")
def omniglot(omniglot_cache):
    cache, dirs = omniglot_cache
    return ds.load_omniglot(("small1", "small2"), size=28, cache_dir=cache, offline_dirs=dirs, offline=True)


def test_mnist_test_split(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10000, 28, 28) and images.dtype == np.float32
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert 0.12 < images.mean() < 0.14  # ink = 1 on a black background
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_omniglot_small1_small2(omniglot):
    assert len(omniglot.alphabets) == 8 and "Greek" in omniglot.alphabets and "Latin" in omniglot.alphabets
    assert omniglot.n_classes == 242 and len(omniglot) == 4840
    assert omniglot.images.shape == (4840, 28, 28) and omniglot.images.dtype == np.float32
    assert omniglot.labels.dtype == np.int64
    assert np.bincount(omniglot.labels, minlength=242).tolist() == [20] * 242
    assert omniglot.images.min() >= 0.0 and omniglot.images.max() <= 1.0
    assert 0.03 < omniglot.images.mean() < 0.2  # ink = 1: strokes are a small fraction of the area
    assert all(c.count("/") == 1 and c.split("/")[1].startswith("character") for c in omniglot.classes)
    assert len(set(omniglot.classes)) == 242
    assert omniglot.class_images(0).shape == (20, 28, 28)


def test_omniglot_npz_cache(omniglot, omniglot_cache):
    cache, dirs = omniglot_cache
    npz = list((cache / "omniglot").glob("*.npz"))
    assert len(npz) == 1 and "small1" in npz[0].name and "28px" in npz[0].name
    with np.load(npz[0], allow_pickle=False) as z:
        assert z["images"].shape == (4840, 28, 28)
    t0 = time.perf_counter()
    again = ds.load_omniglot(("small2", "small1"), cache_dir=cache, offline_dirs=(), offline=True)
    assert time.perf_counter() - t0 < 2.0
    np.testing.assert_array_equal(again.images, omniglot.images)
    assert again.classes == omniglot.classes


def test_omniglot_single_set_and_extraction(omniglot_cache):
    cache, dirs = omniglot_cache
    small1 = ds.load_omniglot("small1", size=14, cache_dir=cache, offline_dirs=dirs, offline=True)
    assert small1.images.shape == (2720, 14, 14) and small1.n_classes == 136 and len(small1.alphabets) == 5
    folder = ds.extract_omniglot("small1", cache_dir=cache, offline_dirs=dirs, offline=True)
    assert folder == cache / "omniglot" / "images_background_small1"
    assert len(list(folder.glob("*/character*/*.png"))) == 2720
    with pytest.raises(ValueError, match="unknown Omniglot set"):
        ds.load_omniglot("small3", cache_dir=cache)


def test_sample_class_sequence(omniglot):
    imgs, ids = ds.sample_class_sequence(omniglot, n_classes=10, n_per_class=5, rng=np.random.default_rng(3))
    assert imgs.shape == (10, 5, 28, 28) and imgs.dtype == np.float32
    assert ids.shape == (10,) and len(set(ids.tolist())) == 10
    for k, c in enumerate(ids):
        pool = omniglot.class_images(c).reshape(20, -1)
        for img in imgs[k]:
            assert (np.abs(pool - img.ravel()).max(1) == 0).any()  # drawn from its own class
        assert len({img.tobytes() for img in imgs[k]}) == 5  # without replacement
    again, ids2 = ds.sample_class_sequence(omniglot, 10, 5, rng=3)
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_array_equal(again, imgs)
    with pytest.raises(ValueError):
        ds.sample_class_sequence(omniglot, n_classes=10, n_per_class=21, rng=0)


def test_mnist_digit_sequence(mnist_test, monkeypatch):
    images, labels = mnist_test
    monkeypatch.setattr(ds, "load_mnist", lambda split="test", cache_dir=None, **kw: (images, labels))
    seq = ds.mnist_digit_sequence(n_per_class=5, rng=np.random.default_rng(0))
    assert seq.shape == (10, 5, 28, 28) and seq.dtype == np.float32
    for d in range(10):
        pool = images[labels == d].reshape(-1, 784)
        for img in seq[d]:
            assert (np.abs(pool - img.ravel()).max(1) == 0).any()  # digit d at position d
    np.testing.assert_array_equal(seq, ds.mnist_digit_sequence(5, rng=np.random.default_rng(0)))
