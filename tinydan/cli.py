"""Small pieces shared by the command lines (python -m tinydan.regression / tinydan.ucil)."""
from __future__ import annotations

import argparse
import math

__all__ = ["progress", "positive_int", "positive_float"]


def progress(total, desc, disable=False, initial=0, unit="it"):
    """A tqdm progress bar (None if tqdm is missing)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, disable=disable, initial=initial, leave=False,
                dynamic_ncols=True, unit=unit)


def positive_int(s):
    """argparse type: a whole number >= 1, with a clear message otherwise."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def positive_float(s):
    """argparse type: a number > 0, with a clear message otherwise."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v
