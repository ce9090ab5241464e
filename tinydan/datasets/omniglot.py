"""Omniglot: the loader (PNGs read straight from the official zips, or the bundled sample) and extraction.

Omniglot PNGs are 105x105 with ink = 0 (black strokes on white), so they are inverted and
area-downsampled with exact overlap weights to ``size`` x ``size``: float32 in [0, 1], ink = 1.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import downloads
from .archive import _safe_member, extract_zip
from .images import _decode_png_levels, area_downsample
from .registry import OMNIGLOT_SETS, DatasetError, _cache
from .sample import SAMPLE_OMNIGLOT_SETS, omniglot_sample

__all__ = ["OmniglotData", "load_omniglot", "extract_omniglot"]

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
                  cache_dir: str | os.PathLike | None = None, *, sample: bool = False,
                  **download_kwargs) -> OmniglotData:
    """Omniglot as OmniglotData: images (N, size, size) float32 in [0, 1] with ink = 1, labels (N,), classes.

    ``sets``: "small1", "small2", "background", "evaluation" (or zip names), one or several. Characters
    are keyed "Alphabet/characterNN", so alphabets present in several sets (Greek and Latin in both small
    sets) appear once: small1 + small2 gives 8 alphabets, 242 characters, 4,840 images. Classes are sorted
    by key, images within a class by file name. The result is cached as an ``.npz`` in the cache folder.

    ``sample=True``: the bundled sample instead (48 of the small1 + small2 characters, 6 per alphabet,
    all 20 drawings; :mod:`tinydan.datasets.sample`), read from the package with no network. It needs
    ``sets=("small1", "small2")`` and a ``size`` dividing 28, and then equals the full loader's images of
    those characters bit for bit; ``cache_dir`` and the download options are not used.
    """
    names = _omniglot_names(sets)
    size = int(size)
    if sample:
        return _sample_omniglot(names, size)
    cache = _cache(cache_dir)
    stems = "+".join(n[: -len(".zip")].replace("images_", "") for n in names)
    npz = cache / "omniglot" / f"processed_{stems}_{size}px_v{_OMNIGLOT_CACHE_VERSION}.npz"
    cached = _read_omniglot_npz(npz, size)
    if cached is not None:
        return cached

    zips = [downloads.download(n, cache, **download_kwargs) for n in names]
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


def _index_omniglot(zips: Sequence[Path]) -> dict[str, dict[str, tuple[Path, str]]]:
    """Class key "Alphabet/characterNN" -> PNG file name -> (zip, member); the first zip holding a file wins."""
    files: dict[str, dict[str, tuple[Path, str]]] = {}
    for zpath in zips:
        with zipfile.ZipFile(zpath) as zf:
            for member in zf.namelist():
                parts = _safe_member(member, zpath).parts
                if len(parts) != 4 or not parts[-1].lower().endswith(".png"):
                    continue
                key = f"{parts[1]}/{parts[2]}"
                files.setdefault(key, {}).setdefault(parts[3], (zpath, member))  # first set wins
    return files


def _build_omniglot(zips: Sequence[Path], size: int) -> OmniglotData:
    files = _index_omniglot(zips)  # class key -> file name -> (zip, member)
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

def _sample_omniglot(names: list[str], size: int) -> OmniglotData:
    if names != _omniglot_names(SAMPLE_OMNIGLOT_SETS):
        raise ValueError(
            f"the bundled Omniglot sample is drawn from small1 + small2 together, not {names}: pass "
            f"sets={SAMPLE_OMNIGLOT_SETS} or sample=False"
        )
    images, labels, classes = omniglot_sample(size)
    return OmniglotData(images, labels, classes)


def extract_omniglot(set_name: str = "small1", cache_dir: str | os.PathLike | None = None, **download_kwargs) -> Path:
    """Folder ``<cache>/omniglot/<zip stem>/<Alphabet>/characterNN/*.png``, downloading and extracting as needed."""
    name = _omniglot_zip(set_name)
    zpath = downloads.download(name, cache_dir, **download_kwargs)
    return extract_zip(zpath, _cache(cache_dir) / "omniglot" / name[: -len(".zip")], strip_components=1)
