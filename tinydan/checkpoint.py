"""Atomic ``.npz`` checkpoints with JSON metadata (docs/model-and-protocol.md#files).

A checkpoint is one ``.npz`` file (a zip of ``.npy`` arrays):

- one entry per array, named by its dotted parameter name: ``phi.0.weight``, ``theta0.vec.1.bias``,
  ``optim.m.phi.0.weight`` ...;
- one reserved entry ``__meta__``: the metadata dict (config, seed, meta-epoch, ...) as UTF-8 JSON bytes
  in a ``uint8`` array, so that ``np.load(path, allow_pickle=False)`` reads everything and nothing in a
  checkpoint is ever unpickled. ``save_checkpoint`` adds ``format`` (this file layout's version),
  ``tinydan_version`` and ``created`` (UTC, ISO 8601) to it, overwriting earlier values.

Writing is atomic: the zip goes to a temporary file in the same folder, is flushed and fsync'ed, then
``os.replace`` renames it over the target. A crash or an error mid-write leaves the previous checkpoint
untouched and removes the temporary file.

Loading checks what can go wrong in practice -- a missing, truncated or foreign file, an entry that would
need unpickling, a checkpoint made for another config -- and raises ``CheckpointError`` (a ``ValueError``)
that says which file, what was wrong and what to do.

Plain NumPy: nothing here imports the autograd engine. Callers convert Tensors/Parameters to arrays.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = [
    "CheckpointError",
    "write_atomic",
    "META_KEY",
    "FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "check_arrays_match",
]

META_KEY = "__meta__"
FORMAT_VERSION = 1
_AUTO_META = ("format", "tinydan_version", "created")
_HINT = "re-run meta-training to make it, or pass the right --checkpoint"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match what was asked for."""


def _tinydan_version() -> str:
    # read from the installed distribution, not from tinydan/__init__.py: this module stands apart
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tinydan")
    except PackageNotFoundError:
        return "unknown"


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(
        f"checkpoint metadata must be JSON-serializable (dicts, lists, str, numbers, bools, None); "
        f"got a {type(obj).__name__}: store it as a plain value or as an array entry instead"
    )


def _to_json(obj) -> str:
    return json.dumps(obj, default=_json_default)


def _write_npz(fileobj, payload: dict[str, np.ndarray], compress: bool) -> None:
    """Write {name: array} as an npz zip to an open binary file (what np.savez does, with any key names)."""
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(fileobj, mode="w", compression=compression, allowZip64=True) as zf:
        for name, arr in payload.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


def _fsync_dir(folder: Path) -> None:
    # make the rename itself durable; not possible (nor needed) on every platform
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data) -> Path:
    """Write ``data`` (str or bytes) to ``path`` atomically: a temporary file in the same folder,
    flushed to disk, then renamed over ``path``; a failed write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(path, arrays: Mapping[str, np.ndarray], meta: Mapping, compress: bool = False) -> Path:
    """Atomically write {dotted_name: array} plus JSON metadata (+format, tinydan_version, created) to the .npz `path`."""
    path = Path(path)
    if not isinstance(meta, Mapping):
        raise TypeError(f"checkpoint metadata must be a dict, got {type(meta).__name__}")
    payload: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"checkpoint array names must be non-empty strings like 'phi.0.weight', got {name!r}")
        if name == META_KEY:
            raise ValueError(
                f"array name {META_KEY!r} is reserved for the checkpoint's metadata; rename that array "
                f"(metadata goes in the `meta` argument)"
            )
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(
                f"array {name!r} has dtype object ({arr.shape}); checkpoints hold numeric arrays only, "
                f"loadable with allow_pickle=False: convert it (e.g. np.asarray(x, dtype=np.float32)) "
                f"or put plain values in `meta`"
            )
        payload[name] = arr
    full_meta = dict(meta)
    full_meta.update(format=FORMAT_VERSION, tinydan_version=_tinydan_version(),
                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    payload[META_KEY] = np.frombuffer(_to_json(full_meta).encode("utf-8"), dtype=np.uint8)

    buffer = io.BytesIO()
    _write_npz(buffer, payload, compress)
    write_atomic(path, buffer.getbuffer())
    return path


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) != isinstance(b, bool):  # JSON keeps true and 1 apart; so do we
        return False
    return a == b


def _differences(actual, expected, prefix: str) -> list[str]:
    """Dotted-path descriptions of every field of `expected` that `actual` lacks or holds differently."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{prefix or 'metadata'}: checkpoint has {_short(actual)}, you asked for {_short(expected)}"]
        out: list[str] = []
        for key, want in expected.items():
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in actual:
                out.append(f"{where}: missing from the checkpoint, you asked for {_short(want)}")
            else:
                out.extend(_differences(actual[key], want, where))
        return out
    if not _same(actual, expected):
        return [f"{prefix or 'metadata'}: checkpoint has {_short(actual)}, you asked for {_short(expected)}"]
    return []


def _open_failed(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"cannot read checkpoint {path}: {why}; {_HINT}")


def _read_npz(fh, path: Path) -> dict[str, np.ndarray]:
    """Every entry of an open .npz file, read with allow_pickle=False; CheckpointError on anything else."""
    try:
        npz = np.load(fh, allow_pickle=False)
    except ValueError:  # neither npy nor npz: numpy's only other reading would unpickle it
        raise _open_failed(
            path, "it is neither a .npz nor a .npy file (unknown content, which tinydan refuses to unpickle)"
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _open_failed(path, f"the file is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _open_failed(path, "it holds a single .npy array, not a .npz checkpoint with metadata")
    arrays: dict[str, np.ndarray] = {}
    with npz:
        for name in npz.files:
            try:
                arrays[name] = npz[name]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise _open_failed(
                        path, f"entry {name!r} is a pickled object array; tinydan checkpoints hold numeric "
                        f"arrays only and never unpickle (allow_pickle=False), so this file was not written "
                        f"by tinydan.checkpoint.save_checkpoint"
                    ) from None
                raise _open_failed(path, f"entry {name!r} is corrupt ({exc})") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
                raise _open_failed(
                    path, f"entry {name!r} is truncated or corrupt ({type(exc).__name__}: {exc})"
                ) from None
    return arrays


def load_checkpoint(path, expect: Mapping | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read (arrays, meta) from a .npz checkpoint with allow_pickle=False; every field of `expect` must match meta."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist; {_HINT}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} is not a file; pass the path of the .npz file itself")
    if path.stat().st_size == 0:
        raise _open_failed(path, "the file is empty (was a write interrupted?)")
    with open(path, "rb") as fh:  # our own handle: numpy leaks its own when a zip turns out corrupt
        arrays = _read_npz(fh, path)
    raw = arrays.pop(META_KEY, None)
    if raw is None:
        raise _open_failed(path, f"it has no {META_KEY!r} metadata entry, so it is not a tinydan checkpoint")
    try:
        text = str(raw[()]) if raw.dtype.kind == "U" else raw.astype(np.uint8).tobytes().decode("utf-8")
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _open_failed(path, f"its metadata entry is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _open_failed(path, f"its metadata is a JSON {type(meta).__name__}, not an object")
    fmt = meta.get("format")
    if isinstance(fmt, int) and fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {fmt}, newer than the {FORMAT_VERSION} this tinydan reads "
            f"(it was made by tinydan {meta.get('tinydan_version', 'unknown')}); upgrade tinydan or re-run "
            f"meta-training with this version"
        )
    if expect is not None:
        if not isinstance(expect, Mapping):
            raise TypeError(f"`expect` must be a dict of metadata fields, got {type(expect).__name__}")
        wanted = json.loads(_to_json(dict(expect)))  # tuples -> lists, numpy scalars -> numbers, as stored
        diffs = _differences(meta, wanted, "")
        if diffs:
            raise CheckpointError(
                f"checkpoint {path} was made for other settings than you asked for:\n  - "
                + "\n  - ".join(diffs)
                + "\nPass a checkpoint made with these settings (--checkpoint PATH), or re-run meta-training "
                "with them to make one."
            )
    return arrays, meta


def check_arrays_match(
    arrays: Mapping[str, np.ndarray],
    expected_shapes: Mapping[str, tuple],
    allow_extra: bool = False,
) -> None:
    """Raise CheckpointError naming missing keys, unexpected keys (unless allow_extra) and shape mismatches."""
    have, want = set(arrays), set(expected_shapes)
    problems: list[str] = []
    missing = sorted(want - have)
    if missing:
        problems.append(f"missing arrays: {', '.join(missing)}")
    extra = sorted(have - want)
    if extra and not allow_extra:
        problems.append(f"unexpected arrays: {', '.join(extra)}")
    for name in sorted(have & want):
        got = tuple(np.shape(arrays[name]))
        exp = tuple(int(d) for d in expected_shapes[name])
        if got != exp:
            problems.append(f"{name}: shape {got} in the checkpoint, the model expects {exp}")
    if problems:
        raise CheckpointError(
            "checkpoint arrays do not fit the model:\n  - " + "\n  - ".join(problems)
            + "\nThe checkpoint was probably made for another model size or config: pass the matching "
            "config, or re-run meta-training to make a checkpoint for this one."
        )
