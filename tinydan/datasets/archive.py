"""Safe, atomic zip extraction: members with absolute paths, ``..`` or symlinks are refused."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .registry import DatasetError, UnsafeArchiveError

__all__ = ["extract_zip"]

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
