"""The figures of the docs: Figure 1 of the paper drawn by lesson 03's code, and small copies of
the runs' Figure 2 (UCIL) and Figure 3 (regression) PNGs (``python -m tinydan.experiments.docs
--figures``)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

__all__ = ["draw_figures"]


def _lesson_namespace(path: Path, names: tuple) -> dict:
    """The top-level definitions ``names`` of a lesson's source, executed (nothing else runs)."""
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
    tree = ast.parse(path.read_text(), str(path))
    keep = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name in names) or
            (isinstance(n, ast.Assign) and any(getattr(t, "id", None) in names for t in n.targets))]
    missing = set(names) - {getattr(n, "name", None) or n.targets[0].id for n in keep}
    if missing:
        raise ValueError(f"{path} no longer defines {', '.join(sorted(missing))}; update "
                         "tinydan/experiments/docs_figures.py's Figure 1 to the lesson's new names")
    ns = {"np": np, "Circle": Circle, "FancyArrowPatch": FancyArrowPatch,
          "FancyBboxPatch": FancyBboxPatch, "Rectangle": Rectangle}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), ns)
    return ns


def _shrink(src: Path, dst: Path, width: int) -> None:
    """dst: src scaled down to at most ``width`` pixels wide, 256 colours (a small PNG)."""
    from PIL import Image
    with Image.open(src) as im:
        im, width = im.convert("RGB"), min(width, im.width)
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im.quantize(256).save(dst, optimize=True)


def draw_figures(root: Path, lesson: Path, copies: list) -> list:
    """docs/figures/figure1.png (the drawing of the paper's Figure 1 by the ``lesson`` source's
    functions) and, for each (run PNG, name) of ``copies`` whose PNG exists (where its command was
    run again: the committed results folders keep results.json and results.md only), a small copy
    docs/figures/name. Paths are relative to ``root``. Returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    root = Path(root)
    out = root / "docs" / "figures"
    out.mkdir(parents=True, exist_ok=True)
    ns = _lesson_namespace(root / lesson, ("CHANNEL_COLORS", "layer_ys", "draw_network",
                                              "draw_dan_inside"))
    fig = Figure(figsize=(14, 4.6))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [4, 4, 3]})
    ns["draw_network"](axes[0], (2, 3, 2), 3, dans=False,
                       title="ordinary network: one weight per connection")
    ns["draw_network"](axes[1], (2, 3, 2), 3, dans=True,
                       title="network of DANs, C = 3: one VEC (3 synapses) per connection")
    ns["draw_dan_inside"](axes[2], sizes=(3, 15, 8, 1))
    fig.tight_layout()
    written = [out / "figure1.png"]
    fig.savefig(written[0], dpi=100, bbox_inches="tight")
    _shrink(written[0], written[0], 900)
    for src, name in copies:
        if (root / src).exists():
            _shrink(root / src, out / name, 1200)
            written.append(out / name)
    return written
