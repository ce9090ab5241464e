"""Image decoding and resampling in plain NumPy: PNG (zlib, no Pillow) and exact area downsampling."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .registry import DatasetError

__all__ = ["decode_png", "area_matrix", "area_downsample"]

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
