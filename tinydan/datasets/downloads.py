"""Verified downloads: cache, offline copies, mirrors, retries, a total deadline per file, atomic writes.

A file is looked for in the cache, then in the offline copies, and only then fetched. Every network
attempt for one file shares one deadline (:func:`download_deadline`), so a server that hangs or trickles
bytes fails with one clear :class:`DownloadError` line instead of blocking. Transfers go to a temporary
``.<name>.<host>.<pid>.<random>.part`` file beside the target that is removed on any failure;
``.part`` files left by a killed run are removed when the same file is next asked for.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from .registry import (REGISTRY, ChecksumError, DownloadError, RemoteFile, _cache, _entry, _md5_note,
                       default_offline_dirs, file_md5, verify_file)

__all__ = ["find_local", "download", "download_deadline", "DEADLINE_ENV", "BIGGEST_FILE_DEADLINE",
           "MIN_DEADLINE"]

#: Environment variable: seconds allowed for each file's download (all its URLs and retries together).
DEADLINE_ENV = "TINYDAN_DOWNLOAD_DEADLINE"
#: Default deadline (s) of the biggest registry file; smaller files get a share in proportion to size.
BIGGEST_FILE_DEADLINE = 600.0
#: Default deadlines never go below this (s): connection set-up dominates small files.
MIN_DEADLINE = 60.0
#: A ``.part`` file whose writer cannot be checked (another host, an older naming) is stale after this (s).
STALE_PART_AGE = 3600.0


def download_deadline(name: str, deadline: float | None = None) -> float:
    """Seconds for ``name``: ``deadline``, $TINYDAN_DOWNLOAD_DEADLINE, else max(60, 600 * bytes / biggest)."""
    source = "deadline="
    if deadline is None:
        env = os.environ.get(DEADLINE_ENV, "").strip()
        if not env:
            biggest = max(f.nbytes for f in REGISTRY.values())
            return max(MIN_DEADLINE, BIGGEST_FILE_DEADLINE * _entry(name).nbytes / biggest)
        deadline, source = env, DEADLINE_ENV
    try:
        value = float(deadline)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise ValueError(f"{source} must be a number of seconds > 0, got {deadline!r}")
    return value


class _DeadlineExceeded(DownloadError):
    """The file's deadline passed; the message says how far the transfer got."""


# --------------------------------------------------------------------------------------------
# Local copies
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


# --------------------------------------------------------------------------------------------
# Temporary .part files
# --------------------------------------------------------------------------------------------


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _part_prefix(entry: RemoteFile) -> str:
    return f".{entry.name}.{_host()}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: rely on the age rule
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or cannot be asked
        return True
    return True


def _clean_stale_parts(folder: Path, entry: RemoteFile) -> list[Path]:
    """Delete the entry's .part files whose writer (this host) is gone or idle over STALE_PART_AGE s."""
    if not folder.is_dir():
        return []
    removed, host, now = [], _host(), time.time()
    head = f".{entry.name}."
    for p in folder.iterdir():
        if not (p.name.startswith(head) and p.name.endswith(".part")):
            continue
        fields = p.name[len(head):-len(".part")].split(".")
        try:
            stale = now - p.stat().st_mtime > STALE_PART_AGE
            if not stale and len(fields) == 3 and fields[0] == host and fields[1].isdigit():
                stale = not _pid_alive(int(fields[1]))
            if stale:
                p.unlink()
                removed.append(p)
        except OSError:  # vanished meanwhile, or not ours to delete
            continue
    return removed


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


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
    deadline: float | None = None,
    progress: bool | None = None,
) -> Path:
    """Path of a verified local copy of the registry file ``name``, downloading it into the cache if needed.

    ``base_url`` (or ``$TINYDAN_MIRROR``, whitespace-separated for several) is a URL prefix under which
    files sit as ``omniglot/<name>`` and ``mnist/<name>``; when given, those mirrors are used instead of
    the official URLs. ``urls`` overrides both. ``offline`` (or ``$TINYDAN_OFFLINE=1``) forbids the network.
    Each URL is tried ``1 + retries`` times on connection errors, timeouts and HTTP 5xx, sleeping
    ``backoff * 2**k`` seconds between tries; 4xx answers and MD5 mismatches move on to the next URL.
    ``timeout`` (connect, read) bounds each socket wait; ``deadline`` (seconds, default
    :func:`download_deadline`) bounds the whole network phase for this file, all URLs and retries together.
    """
    entry = _entry(name)
    cache = _cache(cache_dir)
    target = cache / entry.group / entry.name
    _clean_stale_parts(target.parent, entry)

    local = find_local(entry.name, cache, offline_dirs)
    if local is not None:
        return local

    if urls is None:
        mirrors = _mirror_urls(base_url)
        urls = [f"{m}/{entry.relpath}" for m in mirrors] if mirrors is not None else list(entry.urls)
    urls = list(urls)
    if offline is None:
        offline = _env_flag("TINYDAN_OFFLINE")
    limit = download_deadline(entry.name, deadline)

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
        t_end = time.monotonic() + limit
        for url in urls:
            try:
                _fetch(url, target, entry, retries=retries, backoff=backoff, timeout=timeout, t_end=t_end,
                       progress=progress)
                return target
            except _DeadlineExceeded as e:
                earlier = f"; before that {failures[-1]}" if failures else ""
                raise DownloadError(
                    f"could not obtain {entry.relpath} within its {limit:g} s deadline ({e}{earlier}); "
                    f"allow longer with deadline= or {DEADLINE_ENV}, use a faster mirror (TINYDAN_MIRROR), "
                    f"or put the file at {target} by hand"
                ) from None
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


def _capped(timeout: float | tuple[float, float] | None, left: float) -> tuple[float, float]:
    """(connect, read) socket timeouts, none beyond the time left (plus a margin so a hit means it passed)."""
    if timeout is None:
        timeout = float("inf")
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    cap = max(left, 0.0) + 0.05
    return min(float(connect), cap), min(float(read), cap)


def _fetch(url: str, target: Path, entry: RemoteFile, *, retries: int, backoff: float,
           timeout: float | tuple[float, float], t_end: float, progress: bool | None) -> None:
    """Download ``url`` into ``target`` atomically by ``t_end`` (monotonic), verifying the MD5.

    Raises DownloadError or ChecksumError, or _DeadlineExceeded when ``t_end`` passes.
    """
    import requests  # imported lazily: loading cached data needs no network stack

    attempts = max(0, int(retries)) + 1
    last = "no attempt"
    for k in range(attempts):
        if k:
            time.sleep(max(0.0, min(backoff * 2 ** (k - 1), t_end - time.monotonic())))
        if time.monotonic() >= t_end:
            raise _DeadlineExceeded(f"last try at {url}: {last}" if k else f"no time left to try {url}")
        fd, tmp_name = tempfile.mkstemp(prefix=_part_prefix(entry), suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        state = {"answered": False, "got": 0, "total": entry.nbytes}
        try:
            try:
                with os.fdopen(fd, "wb") as out, requests.get(
                        url, stream=True, timeout=_capped(timeout, t_end - time.monotonic())) as r:
                    state["answered"] = True
                    if r.status_code >= 500 or r.status_code == 429:
                        last = f"HTTP {r.status_code} {r.reason or ''}".strip()
                        continue
                    if r.status_code >= 400:
                        raise DownloadError(f"HTTP {r.status_code} {r.reason or ''}".strip())
                    declared = int(r.headers.get("Content-Length") or 0)
                    state["total"] = declared or entry.nbytes
                    got = _stream(r, out, state, entry.name, progress, t_end, url)
                    out.flush()
                    os.fsync(out.fileno())
                if declared and got != declared:
                    last = f"truncated transfer ({got:,} of {declared:,} bytes)"
                    continue
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as e:
                if time.monotonic() >= t_end:
                    raise _DeadlineExceeded(_progress_note(url, state)) from None
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


def _progress_note(url: str, state: dict) -> str:
    if not state["answered"]:
        return f"{url} did not answer in time"
    return f"{url} sent {state['got']:,} of {state['total']:,} bytes"


def _stream(response, out, state: dict, desc: str, progress: bool | None, t_end: float, url: str) -> int:
    """Copy the body to ``out`` piece by piece as it arrives, giving up once ``t_end`` passes."""
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        tqdm = None
    bar = None
    if tqdm is not None and progress is not False:
        bar = tqdm(total=state["total"] or None, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                   disable=None if progress is None else False, leave=False)
    try:
        for chunk in _chunks(response, 1 << 16):
            if chunk:
                out.write(chunk)
                state["got"] += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if time.monotonic() >= t_end and state["got"] < state["total"]:
                raise _DeadlineExceeded(_progress_note(url, state))
    finally:
        if bar is not None:
            bar.close()
    return state["got"]


def _chunks(response, size: int):
    """The body in pieces of at most ``size`` bytes, each from one socket read where urllib3 allows it.

    Errors are raised as ``requests.Response.iter_content`` raises them. With an urllib3 that has no
    ``read1`` the pieces are whole ``size`` chunks, so the deadline is checked between chunks only.
    """
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(chunk_size=size)
        return
    import requests
    from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError

    try:
        while True:
            chunk = read1(size, decode_content=True)
            if not chunk:
                return
            yield chunk
    except ProtocolError as e:
        raise requests.exceptions.ChunkedEncodingError(e) from e
    except ReadTimeoutError as e:
        raise requests.ConnectionError(e) from e
    except DecodeError as e:
        raise requests.exceptions.ContentDecodingError(e) from e
    except SSLError as e:
        raise requests.exceptions.SSLError(e) from e
