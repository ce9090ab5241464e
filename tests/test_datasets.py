"""tinydan.datasets: downloader (against loopback HTTP servers only), deadlines, safe extraction, loaders on
real data, the bundled sample."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinydan import datasets as ds
from tinydan.datasets import downloads, sample, sample_maker

pytestmark = pytest.mark.data

LABELS = "t10k-labels-idx1-ubyte.gz"  # smallest registry file (4,542 bytes)
SMALL1 = "images_background_small1.zip"
FAST = dict(retries=0, backoff=0.0, timeout=5.0, progress=False)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No mirror, cache or offline setting leaks in from the environment; loopback never goes via a proxy."""
    for var in ("TINYDAN_MIRROR", "TINYDAN_DATA", "TINYDAN_OFFLINE", "TINYDAN_DOWNLOAD_DEADLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def offline_copy():
    """An offline copy of the data (default_offline_dirs) holding the real files, served over loopback."""
    for folder in ds.default_offline_dirs():
        if (folder / "mnist" / LABELS).is_file() and (folder / "omniglot" / SMALL1).is_file():
            return folder
    pytest.skip(f"no offline data copy holding mnist/{LABELS} and omniglot/{SMALL1} (default_offline_dirs() "
                f"= {ds.default_offline_dirs()}); one is needed to serve real files over loopback")


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
# Downloader (loopback only, never the internet, never an offline copy as a cache)
# --------------------------------------------------------------------------------------------


def test_download_from_loopback_mirror(serve, offline_copy, tmp_path):
    srv = serve(offline_copy)
    cache = tmp_path / "cache"
    path = ds.download(LABELS, cache, base_url=srv.url, offline_dirs=(), **FAST)
    assert path == cache / "mnist" / LABELS
    assert _md5(path) == ds.REGISTRY[LABELS].md5
    assert srv.paths == [f"/mnist/{LABELS}"]
    assert _files(cache) == [path]  # no temporary files left behind
    # a second call finds the verified file in the cache and does not touch the network
    assert ds.download(LABELS, cache, base_url=srv.url, offline_dirs=(), **FAST) == path
    assert len(srv.paths) == 1


def test_download_omniglot_zip_via_env_mirror(serve, offline_copy, tmp_path, monkeypatch):
    srv = serve(offline_copy)
    monkeypatch.setenv("TINYDAN_MIRROR", srv.url + "/")
    monkeypatch.setenv("TINYDAN_DATA", str(tmp_path / "envcache"))
    name = "images_background_small1.zip"
    path = ds.download(name, offline_dirs=(), **FAST)
    assert path == tmp_path / "envcache" / "omniglot" / name
    assert _md5(path) == ds.REGISTRY[name].md5
    assert srv.paths == [f"/omniglot/{name}"]


def test_corrupt_download_refused_and_not_cached(serve, offline_copy, tmp_path):
    bad = tmp_path / "bad" / "mnist"
    bad.mkdir(parents=True)
    data = bytearray((offline_copy / "mnist" / LABELS).read_bytes())
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


def test_regzipped_mnist_accepted_by_content_md5(serve, offline_copy, tmp_path):
    raw = gzip.decompress((offline_copy / "mnist" / LABELS).read_bytes())
    (tmp_path / "re" / "mnist").mkdir(parents=True)
    regz = tmp_path / "re" / "mnist" / LABELS
    regz.write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))  # different gzip header and body
    assert _md5(regz) != ds.REGISTRY[LABELS].md5
    srv = serve(tmp_path / "re")
    path = ds.download(LABELS, tmp_path / "cache", base_url=srv.url, offline_dirs=(), **FAST)
    assert gzip.decompress(path.read_bytes()) == raw


def test_corrupt_file_in_cache_is_deleted_and_refetched(serve, offline_copy, tmp_path):
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist" / LABELS).write_bytes(b"not the real file")
    srv = serve(offline_copy)
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


def test_fallback_to_next_mirror(serve, offline_copy, tmp_path):
    broken = serve(status=503)
    good = serve(offline_copy)
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


def test_offline_copy_is_used_in_place(offline_copy, tmp_path):
    path = ds.download(LABELS, tmp_path / "cache", offline_dirs=[offline_copy], offline=True)
    assert path == offline_copy / "mnist" / LABELS
    assert ds.find_local(LABELS, tmp_path / "cache", offline_dirs=()) is None


def test_unknown_name_and_cache_dir_resolution(tmp_path, monkeypatch):
    with pytest.raises(ds.DatasetError, match="unknown data file"):
        ds.download("nope.zip", tmp_path, offline=True)
    monkeypatch.setenv("TINYDAN_DATA", str(tmp_path / "d"))
    assert ds.default_cache_dir() == tmp_path / "d"
    monkeypatch.delenv("TINYDAN_DATA")
    assert ds.default_cache_dir() in (Path(ds.__file__).resolve().parents[2] / "data",
                                      Path.home() / ".cache" / "tinydan")


# --------------------------------------------------------------------------------------------
# Deadlines and temporary files
# --------------------------------------------------------------------------------------------


class _Trickle:
    """A loopback HTTP server that announces LABELS' size, then sends one byte every `every` seconds."""

    def __init__(self, every: float):
        self.paths: list[str] = []
        self.stop = threading.Event()
        paths, stop = self.paths, self.stop

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(ds.REGISTRY[LABELS].nbytes))
                self.end_headers()
                try:
                    while not stop.wait(every):
                        self.wfile.write(b"\x00")
                        self.wfile.flush()
                except OSError:  # the client gave up
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def trickle():
    srv = _Trickle(every=0.1)
    yield srv
    srv.close()


def test_trickling_server_fails_at_the_deadline(trickle, tmp_path):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    with pytest.raises(ds.DownloadError) as exc:
        ds.download(LABELS, cache, base_url=[trickle.url, trickle.url], offline_dirs=(), retries=3,
                    backoff=0.001, timeout=5.0, deadline=1.0, progress=False)
    elapsed = time.perf_counter() - t0
    assert 0.9 < elapsed < 3.0  # the read timeout (5 s) never fires: only the deadline stops it
    msg = str(exc.value)
    assert "\n" not in msg  # one line
    assert f"mnist/{LABELS} within its 1 s deadline" in msg and "TINYDAN_DOWNLOAD_DEADLINE" in msg
    assert "sent " in msg and f"of {ds.REGISTRY[LABELS].nbytes:,} bytes" in msg
    assert str(cache / "mnist" / LABELS) in msg
    assert len(trickle.paths) == 1  # the deadline covers retries and further mirrors: no second try
    assert _files(cache) == []  # the .part file is gone


def test_hanging_server_fails_at_the_deadline_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYDAN_DOWNLOAD_DEADLINE", "0.5")
    with socket.socket() as listener:  # accepts connections (kernel backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.perf_counter()
        with pytest.raises(ds.DownloadError) as exc:
            ds.download(LABELS, tmp_path / "cache", base_url=url, offline_dirs=(), retries=5, backoff=0.001,
                        progress=False)  # default timeout (10 s, 60 s): capped by the deadline
        elapsed = time.perf_counter() - t0
    assert 0.4 < elapsed < 3.0
    msg = str(exc.value)
    assert "\n" not in msg and "within its 0.5 s deadline" in msg and "did not answer in time" in msg
    assert _files(tmp_path / "cache") == []


def test_download_deadline_defaults_and_overrides(monkeypatch):
    biggest = max(f.nbytes for f in ds.REGISTRY.values())
    assert ds.download_deadline("train-images-idx3-ubyte.gz") == downloads.BIGGEST_FILE_DEADLINE == 600.0
    assert ds.download_deadline("images_background.zip") == pytest.approx(600.0 * 9_464_212 / biggest)
    assert ds.download_deadline(LABELS) == downloads.MIN_DEADLINE == 60.0  # small files: the floor
    monkeypatch.setenv("TINYDAN_DOWNLOAD_DEADLINE", "7.5")
    assert ds.download_deadline(LABELS) == ds.download_deadline("images_background.zip") == 7.5
    assert ds.download_deadline(LABELS, 2) == 2.0  # the argument wins over the environment
    monkeypatch.setenv("TINYDAN_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(ValueError, match="TINYDAN_DOWNLOAD_DEADLINE must be a number of seconds > 0, got 'soon'"):
        ds.download(LABELS, offline_dirs=(), offline=True)
    with pytest.raises(ValueError, match="deadline= must be"):
        ds.download_deadline(LABELS, 0)


def test_stale_part_files_are_removed_on_the_next_start(tmp_path):
    folder = tmp_path / "cache" / "mnist"
    folder.mkdir(parents=True)
    host = downloads._host()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hour_ago = time.time() - 2 * downloads.STALE_PART_AGE
    names = {
        f".{LABELS}.{host}.{dead.pid}.k1.part": None,  # killed run on this host: stale
        f".{LABELS}.{host}.{os.getpid()}.k2.part": None,  # a live writer (this process): kept
        f".{LABELS}.otherhost.123.k3.part": None,  # another host, recently written: kept
        f".{LABELS}.otherhost.123.k4.part": hour_ago,  # another host, idle for long: stale
        f".{LABELS}.oldstyle.part": hour_ago,  # an older naming, idle for long: stale
        f".{LABELS}.oldstyle2.part": None,  # an older naming, recent: kept
        f".train-labels-idx1-ubyte.gz.{host}.{dead.pid}.k5.part": None,  # another file's: not touched now
    }
    for name, mtime in names.items():
        (folder / name).write_bytes(b"partial")
        if mtime is not None:
            os.utime(folder / name, (mtime, mtime))
    with pytest.raises(ds.DownloadError, match="offline"):
        ds.download(LABELS, tmp_path / "cache", offline_dirs=(), offline=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f".{LABELS}.{host}.{os.getpid()}.k2.part", f".{LABELS}.otherhost.123.k3.part",
         f".{LABELS}.oldstyle2.part", f".train-labels-idx1-ubyte.gz.{host}.{dead.pid}.k5.part"])


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
# Loaders on the real data (the cache or the offline copies, else a bounded download)
# --------------------------------------------------------------------------------------------


def _local_dir(name: str) -> Path:
    """Folder of a verified copy of ``name``: local, else downloaded into the cache; skip when neither works."""
    found = ds.find_local(name)
    if found is None:
        try:
            found = ds.download(name, retries=1, backoff=1.0, deadline=120.0, progress=False)
        except ds.DatasetError as e:
            pytest.skip(f"{name} is neither in the data cache ({ds.default_cache_dir()}) nor in an offline "
                        f"copy ({ds.default_offline_dirs()}), and could not be downloaded "
                        f"({str(e).splitlines()[0]}); the loaders are tested on real data only")
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
    monkeypatch.setattr(ds.mnist, "load_mnist", lambda split="test", cache_dir=None, **kw: (images, labels))
    seq = ds.mnist_digit_sequence(n_per_class=5, rng=np.random.default_rng(0))
    assert seq.shape == (10, 5, 28, 28) and seq.dtype == np.float32
    for d in range(10):
        pool = images[labels == d].reshape(-1, 784)
        for img in seq[d]:
            assert (np.abs(pool - img.ravel()).max(1) == 0).any()  # digit d at position d
    np.testing.assert_array_equal(seq, ds.mnist_digit_sequence(5, rng=np.random.default_rng(0)))


# --------------------------------------------------------------------------------------------
# The bundled sample
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Downloads and sockets fail, and the data cache is an empty folder that must stay empty."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network or the downloader was used")

    monkeypatch.setattr(downloads, "download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    monkeypatch.setenv("TINYDAN_DATA", str(cache))
    yield cache
    assert _files(cache) == []


def test_sample_loads_without_network(no_network):
    om = ds.load_omniglot(("small2", "small1"), size=28, sample=True)
    assert isinstance(om, ds.OmniglotData)
    assert om.images.shape == (960, 28, 28) and om.images.dtype == np.float32
    assert om.labels.shape == (960,) and om.labels.dtype == np.int64
    assert om.n_classes == 48 and len(om) == 960 and len(set(om.classes)) == 48
    assert om.classes == sorted(om.classes)  # the full loader's class order
    assert len(om.alphabets) == 8 and {"Greek", "Latin", "Korean", "Tagalog"} <= set(om.alphabets)
    assert [sum(c.startswith(a + "/") for c in om.classes) for a in om.alphabets] == [6] * 8
    assert np.bincount(om.labels).tolist() == [20] * 48 and (np.diff(om.labels) >= 0).all()
    assert om.images.min() == 0.0 and om.images.max() == 1.0
    assert 0.03 < om.images.mean() < 0.2  # ink = 1
    counts = om.images.astype(np.float64) * 225
    assert np.abs(counts - np.rint(counts)).max() < 1e-4  # 1-bit PNGs: ink fractions are multiples of 1/225
    small = ds.load_omniglot(("small1", "small2"), size=14, sample=True)
    assert small.images.shape == (960, 14, 14) and small.classes == om.classes
    np.testing.assert_allclose(small.images, om.images.reshape(960, 14, 2, 14, 2).mean((2, 4)), atol=1e-6)

    images, labels = ds.load_mnist("test", sample=True)
    assert images.shape == (500, 28, 28) and images.dtype == np.float32
    assert labels.shape == (500,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [50] * 10
    assert images.min() == 0.0 and images.max() == 1.0 and 0.1 < images.mean() < 0.16  # ink = 1
    np.testing.assert_array_equal(np.rint(images * 255).astype(np.float32) / np.float32(255), images)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the test set's first digits (file order)
    seq = ds.mnist_digit_sequence(n_per_class=3, rng=0, sample=True)
    assert seq.shape == (10, 3, 28, 28)

    info = ds.sample_info()
    assert info["command"] == "python -m tinydan.datasets make-sample"
    assert {s["file"]: s["md5"] for s in info["sources"]} == {
        "omniglot/images_background_small1.zip": ds.REGISTRY["images_background_small1.zip"].md5,
        "omniglot/images_background_small2.zip": ds.REGISTRY["images_background_small2.zip"].md5,
        "mnist/t10k-images-idx3-ubyte.gz": ds.REGISTRY["t10k-images-idx3-ubyte.gz"].md5,
        "mnist/t10k-labels-idx1-ubyte.gz": ds.REGISTRY[LABELS].md5,
    }
    assert info["omniglot"]["characters"] == om.classes
    assert "MIT" in info["omniglot"]["licence"] and "CC BY-SA 3.0" in info["mnist"]["licence"]
    assert ds.SAMPLE_FILE.parent == Path(ds.__file__).parent and ds.SAMPLE_FILE.stat().st_size < 400_000


def test_sample_argument_errors(no_network):
    with pytest.raises(ValueError, match="small1 \\+ small2 together"):
        ds.load_omniglot("small1", sample=True)
    with pytest.raises(ValueError, match="sizes dividing 28"):
        ds.load_omniglot(("small1", "small2"), size=10, sample=True)
    with pytest.raises(ValueError, match="test digits only"):
        ds.load_mnist("train", sample=True)


def test_full_data_never_falls_back_to_the_sample(tmp_path):
    with pytest.raises(ds.DownloadError, match="offline"):
        ds.load_mnist("test", cache_dir=tmp_path, offline_dirs=(), offline=True)
    with pytest.raises(ds.DownloadError, match="offline"):
        ds.load_omniglot(("small1", "small2"), size=14, cache_dir=tmp_path, offline_dirs=(), offline=True)


def test_sample_equals_the_full_loaders_bit_for_bit(omniglot, omniglot_cache, mnist_test):
    cache, dirs = omniglot_cache
    full14 = ds.load_omniglot(("small1", "small2"), size=14, cache_dir=cache, offline_dirs=dirs, offline=True)
    full = {28: omniglot, 14: full14}
    for size, f in full.items():
        s = ds.load_omniglot(("small1", "small2"), size=size, sample=True)
        for c, key in enumerate(s.classes):
            np.testing.assert_array_equal(s.class_images(c).view(np.uint32),
                                          f.class_images(f.classes.index(key)).view(np.uint32))
    images, labels = mnist_test
    index = sample._arrays()["mnist_index"]
    s_images, s_labels = ds.load_mnist("test", sample=True)
    np.testing.assert_array_equal(s_images.view(np.uint32), images[index].view(np.uint32))
    np.testing.assert_array_equal(s_labels, labels[index])
    assert all((labels[:i] == d).sum() < 50 for i, d in zip(index, labels[index]))  # the first 50 of each


def test_npz_bytes_depend_on_the_arrays_only(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.uint8).reshape(2, 3), "a": np.array("text"), "v": np.int64(1)}
    blob = sample.npz_bytes(arrays)
    time.sleep(1.1)  # zip timestamps have a 2 s resolution: make a clock-dependent writer show up
    assert sample.npz_bytes(dict(reversed(list(arrays.items())))) == blob
    (tmp_path / "x.npz").write_bytes(blob)
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["a", "b", "v"]
        np.testing.assert_array_equal(z["b"], arrays["b"])
        assert str(z["a"]) == "text"
    assert sample.npz_bytes({**arrays, "v": np.int64(2)}) != blob


def test_make_sample_reproduces_the_bundled_file(tmp_path, monkeypatch, capsys):
    for name in sample_maker.SOURCES:
        _local_dir(name)
    monkeypatch.setenv("TINYDAN_OFFLINE", "1")
    out = ds.make_sample(tmp_path / "sample.npz")
    assert out.read_bytes() == ds.SAMPLE_FILE.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    # the command's --check says so, and notices a file that differs
    blob = bytearray(out.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    out.write_bytes(bytes(blob))
    assert sample_maker.main(["make-sample", "--check", "--offline", "--out", str(out)]) == 1
    assert "DIFFERS" in capsys.readouterr().out
