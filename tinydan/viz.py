"""Draw the graph that produced some Tensors: ops, shapes, leaves, outputs, forward and backward.

``graph_of(*tensors)`` walks ``Tensor.inputs`` back from the given Tensors (an explicit stack, no
recursion) and returns a ``Graph``: one ``Node`` per Tensor, inputs before the ops that use them,
and one edge per (input, op) pair. ``draw_graph(*tensors)`` lays that graph out in layers by
depth from the leaves (rows, or columns with ``direction="right"``) and draws it with matplotlib
alone; in a notebook the returned Figure shows itself.

A gradient computed with ``td.grad(..., create_graph=True)`` is an ordinary Tensor whose graph
holds the backward pass (ops such as ``TanhGrad`` or ``MatMulTA``, made from the forward pass's
Tensors). The graph does not record which pass made a node, so the caller names the parts:
``stages={"forward": loss, "backward": grads}`` labels every node that leads to ``loss``
"forward", then every other node that leads to ``grads`` "backward"; the rest are "forward".
Drawing ``meta_loss`` with these stages shows the one-step meta-gradient's second-order path
(paper section 5): from phi through the backward nodes into theta_1 = theta - alpha * grads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .tensor import Tensor

__all__ = ["Node", "Graph", "graph_of", "draw_graph", "STAGE_COLORS"]

# fill colours of op nodes by stage; stages with other names take the extra colours in turn
STAGE_COLORS = {"forward": "#cfe2f3", "backward": "#f9cb9c"}
_EXTRA_COLORS = ("#d9ead3", "#d9d2e9", "#fff2cc", "#f4cccc", "#d0e0e3")
_EDGE_COLORS = {"forward": "0.45", "backward": "#b45f06"}
_PARAM_FILL, _PARAM_EDGE = "#ffffff", "#38761d"      # leaves that require grad
_CONST_FILL, _CONST_EDGE = "#eeeeee", "0.6"          # leaves that do not
_OUTPUT_EDGE = "#cc0000"


@dataclass(frozen=True)
class Node:
    """One Tensor of the graph: ``op`` is its op's name, or None for a leaf."""

    index: int
    op: str | None
    shape: tuple
    requires_grad: bool
    is_output: bool
    name: str | None
    stage: str
    depth: int            # longest path from a leaf (leaves: 0)

    @property
    def is_leaf(self) -> bool:
        return self.op is None

    @property
    def label(self) -> str:
        """The text of the node's box: what it is, its shape, and its role."""
        if self.op is not None:
            head = self.op if self.name is None else f"{self.op}: {self.name}"
        elif self.requires_grad:
            head = self.name or "leaf"
        else:
            head = self.name or "const"
        lines = [head, str(self.shape)]
        if self.is_leaf and self.requires_grad:
            lines.append("requires grad")
        if self.is_output:
            lines.append("OUTPUT")
        return "\n".join(lines)


@dataclass(frozen=True)
class Graph:
    """Nodes in topological order (inputs first), edges (input index, op index, input position)."""

    nodes: tuple
    edges: tuple
    tensors: tuple        # tensors[i] is the Tensor of nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)

    def inputs_of(self, i: int) -> list[int]:
        """Indices of node i's inputs, in the op's argument order."""
        return [a for a, b, _ in sorted((e for e in self.edges if e[1] == i), key=lambda e: e[2])]

    def op_counts(self, stage: str | None = None) -> dict:
        """How many nodes each op made (only in ``stage`` when given); leaves not counted."""
        counts: dict = {}
        for n in self.nodes:
            if n.op is not None and (stage is None or n.stage == stage):
                counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def __str__(self) -> str:
        ins: dict = {}
        for a, b, pos in sorted(self.edges, key=lambda e: e[2]):
            ins.setdefault(b, []).append(a)
        leaves = sum(n.is_leaf for n in self.nodes)
        lines = [f"{len(self.nodes)} nodes ({leaves} leaves, {len(self.nodes) - leaves} ops), "
                 f"{len(self.edges)} edges"]
        for n in self.nodes:
            what = n.op or ("leaf, requires grad" if n.requires_grad else "const")
            name = f" {n.name!r}" if n.name else ""
            arrow = f" <- {ins.get(n.index, [])}" if n.op else ""
            out = "  OUTPUT" if n.is_output else ""
            lines.append(f"  {n.index:3d} {n.stage:9s} {what}{name} {n.shape}{arrow}{out}")
        return "\n".join(lines)


def _flatten(items, what: str) -> list:
    out = []
    for item in items:
        if isinstance(item, Tensor):
            out.append(item)
        elif isinstance(item, (list, tuple)):
            out.extend(_flatten(item, what))
        elif isinstance(item, Mapping):
            out.extend(_flatten(list(item.values()), what))
        else:
            raise TypeError(f"{what} must be Tensors (or lists, tuples or dicts of Tensors), "
                            f"got {type(item).__name__}")
    return out


def _post_order(roots: list) -> list:
    """Every Tensor that leads to ``roots``, each after all of its inputs (explicit stack)."""
    order, done, opened = [], set(), set()
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        t, inputs_done = stack.pop()
        key = id(t)
        if inputs_done:
            if key not in done:
                done.add(key)
                order.append(t)
            continue
        if key in opened:
            continue
        opened.add(key)
        stack.append((t, True))
        for x in reversed(t._inputs):
            if id(x) not in opened:
                stack.append((x, False))
    return order


def graph_of(*tensors, stages: Mapping | None = None, constants: bool = True) -> Graph:
    """The graph that produced ``tensors``: nodes (op name, shape, leaf, stage, depth) and edges.

    ``stages`` maps a label to Tensors (e.g. ``{"forward": loss, "backward": grads}``); a node gets
    the first label whose Tensors it leads to, else "forward". ``constants=False`` leaves out the
    leaves that do not require grad.
    """
    outputs = _flatten(tensors, "draw_graph's arguments")
    if not outputs:
        raise ValueError("graph_of needs at least one Tensor")
    out_ids = {id(t) for t in outputs}
    order = [t for t in _post_order(outputs)
             if constants or t._op is not None or t.requires_grad or id(t) in out_ids]
    index = {id(t): i for i, t in enumerate(order)}
    stage = {}
    for label, anchors in (stages or {}).items():
        if not isinstance(label, str):
            raise TypeError(f"stage labels must be strings, got {label!r}")
        for t in _post_order(_flatten([anchors], f"stages[{label!r}]")):
            if id(t) in index:
                stage.setdefault(id(t), label)
    edges, depth = [], []
    for i, t in enumerate(order):
        d = 0
        for pos, x in enumerate(t._inputs):
            j = index.get(id(x))
            if j is not None:
                edges.append((j, i, pos))
                d = max(d, depth[j] + 1)
        depth.append(d if t._op is not None else 0)
    nodes = tuple(
        Node(index=i, op=None if t._op is None else t._op.__name__, shape=tuple(t.shape),
             requires_grad=bool(t.requires_grad), is_output=id(t) in out_ids, name=t.name,
             stage=stage.get(id(t), "forward"), depth=depth[i])
        for i, t in enumerate(order))
    return Graph(nodes=nodes, edges=tuple(edges), tensors=tuple(order))


def _columns(graph: Graph) -> list[int]:
    """Layer of each node: its depth; a leaf sits one layer before its first user."""
    col = [n.depth for n in graph.nodes]
    first_user: dict = {}
    for a, b, _ in graph.edges:
        first_user[a] = min(first_user.get(a, col[b]), col[b])
    for n in graph.nodes:
        if n.is_leaf and n.index in first_user:
            col[n.index] = max(0, first_user[n.index] - 1)
    return col


def _isotonic(values: list, weights: list) -> list:
    """The non-decreasing sequence nearest to ``values`` in weighted squared error (pool adjacent
    violators): sum_i w_i (x_i - v_i)^2 with x_1 <= x_2 <= ..."""
    blocks: list = []                                  # [sum of w*v, sum of w, count]
    for v, w in zip(values, weights):
        blocks.append([w * v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            total, weight, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += weight
            blocks[-1][2] += count
    out: list = []
    for total, weight, count in blocks:
        out += [total / weight] * count
    return out


@dataclass
class _Layout:
    across: list          # position of every item (nodes, then bends) across the layers, inches
    along: list           # position along the layers, inches
    paths: list           # per edge: the bend items it passes through, in order
    extent: tuple         # (across, along) size in inches


def _layout(graph: Graph, sizes: list, sweeps: int = 8, max_bends: int = 2000) -> _Layout:
    """Layered layout: long edges bend through one point per layer they cross (so they go round
    the boxes), barycentre sweeps order each layer, and the pool-adjacent-violators fit puts each
    item as near the mean of its neighbours as the boxes' widths allow."""
    col = _columns(graph)
    width = [s[0] for s in sizes]                      # across the layers
    length = [s[1] for s in sizes]                     # along the layers
    nbrs: list = [[] for _ in graph.nodes]
    paths = []
    spans = sorted(col[b] - col[a] - 1 for a, b, _ in graph.edges)
    budget, longest = 0, 0                             # bends cost time: a big graph gets
    for span in spans:                                 # them on its shorter edges only
        if budget + span > max_bends:
            break
        budget, longest = budget + span, span
    for a, b, _ in graph.edges:                        # a bend per layer crossed: items len(col)..
        chain, prev = [], a
        for c in (range(col[a] + 1, col[b]) if col[b] - col[a] - 1 <= longest else ()):
            col.append(c)
            width.append(0.12)
            length.append(0.0)
            nbrs.append([])
            chain.append(len(col) - 1)
            nbrs[prev].append(chain[-1])
            nbrs[chain[-1]].append(prev)
            prev = chain[-1]
        nbrs[prev].append(b)
        nbrs[b].append(prev)
        paths.append(chain)
    layers: dict = {}
    for i, c in enumerate(col):
        layers.setdefault(c, []).append(i)
    keys = sorted(layers)
    leaves = {n.index for n in graph.nodes if n.is_leaf}
    # how hard each item holds its wanted place: ops most, bends less, leaves least
    n_nodes = len(graph.nodes)
    pull = [1.0 if i in leaves else 100.0 if i < n_nodes else 10.0 for i in range(len(col))]
    place = [0.0] * len(col)

    def pack(members, want):                           # keep order, keep gaps, stay near `want`
        offsets = [0.0]
        for u, v in zip(members, members[1:]):
            offsets.append(offsets[-1] + (width[u] + width[v]) / 2 + 0.25)
        fit = _isotonic([w - o for w, o in zip(want, offsets)], [pull[i] for i in members])
        for i, f, o in zip(members, fit, offsets):
            place[i] = f + o

    for c in keys:
        pack(layers[c], [0.0] * len(layers[c]))
    for sweep in range(sweeps):                        # down then up, alternately
        for c in (keys if sweep % 2 == 0 else reversed(keys)):
            members = layers[c]
            side = [[j for j in nbrs[i] if col[j] == c + (-1 if sweep % 2 == 0 else 1)]
                    for i in members]
            side = [[j for j in s if j not in leaves] or s for s in side]   # ops follow ops
            want = [sum(place[j] for j in s) / len(s) if s else place[i]
                    for i, s in zip(members, side)]
            if sweep < sweeps - 2:                     # reorder, then (last two sweeps) only move
                order = sorted(range(len(members)), key=lambda k: (want[k], place[members[k]]))
                members[:] = [members[k] for k in order]
                want = [want[k] for k in order]
            pack(members, want)
    step = {c: max(length[i] for i in layers[c]) for c in keys}
    along_of, pos = {}, 0.0
    for k, c in enumerate(keys):
        if k:
            pos += (step[keys[k - 1]] + step[c]) / 2 + 0.45
        along_of[c] = pos + step[keys[0]] / 2
    lo = min(p - w / 2 for p, w in zip(place, width))
    hi = max(p + w / 2 for p, w in zip(place, width))
    across = [p - lo for p in place]
    along = [along_of[c] for c in col]
    return _Layout(across, along, paths, (hi - lo, pos + step[keys[0]] / 2 + step[keys[-1]] / 2))


def _box_size(label: str, fontsize: float) -> tuple:
    """(width, height) in inches of a monospace text box with round padding."""
    lines = label.split("\n")
    pad = 2 * 0.35 * fontsize / 72
    return (max(map(len, lines)) * 0.6 * fontsize / 72 + pad,
            len(lines) * 1.2 * fontsize / 72 + pad)


def _stage_colors(graph: Graph, stages: Mapping | None) -> dict:
    colors = dict(STAGE_COLORS)
    extra = iter(_EXTRA_COLORS * 4)
    for label in list(stages or ()) + [n.stage for n in graph.nodes]:
        if label not in colors:
            colors[label] = next(extra, "#ffffff")
    return colors


def draw_graph(*tensors, ax=None, stages: Mapping | None = None, constants: bool = True,
               direction: str = "down", title: str | None = None, fontsize: float = 7.5):
    """Draw the graph behind ``tensors`` (see ``graph_of``) and return the matplotlib Figure.

    Op nodes are coloured by stage (forward blue, backward orange), leaves that require grad have a
    green border, constants are grey, outputs have a red border and say OUTPUT. Layers (rows, or
    columns with ``direction="right"``) are depths from the leaves. Every node's text has gid
    ``node<i>`` and every edge's arrow gid ``edge<k>``: ``graph_of(...).nodes[i]``, ``.edges[k]``.
    """
    if direction not in ("down", "right"):
        raise ValueError(f"direction must be 'down' or 'right', got {direction!r}")
    graph = graph_of(*tensors, stages=stages, constants=constants)
    down = direction == "down"
    for _ in range(2):                                 # a second pass with a smaller font if huge
        sizes = [_box_size(n.label, fontsize) for n in graph.nodes]
        if not down:
            sizes = [(h, w) for w, h in sizes]
        lay = _layout(graph, sizes)
        biggest = max(lay.extent)
        if biggest <= 60.0 or fontsize <= 2.0:
            break
        fontsize = max(2.0, fontsize * 60.0 / biggest)

    def xy(i):                                         # inches, y growing upwards
        return (lay.across[i], -lay.along[i]) if down else (lay.along[i], -lay.across[i])

    width, height = lay.extent if down else lay.extent[::-1]
    if ax is None:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(min(60.0, max(3.0, width + 0.6)), min(60.0, max(1.5, height + 0.9))),
                     layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    colors = _stage_colors(graph, stages)
    boxes = []
    for n in graph.nodes:
        if n.is_leaf:
            fc, ec, lw, ls = ((_PARAM_FILL, _PARAM_EDGE, 1.6, "-") if n.requires_grad
                              else (_CONST_FILL, _CONST_EDGE, 0.8, "--"))
        else:
            fc, ec, lw, ls = colors[n.stage], "0.3", 0.8, "-"
        if n.is_output:
            ec, lw = _OUTPUT_EDGE, 2.2
        boxes.append(ax.text(*xy(n.index), n.label, ha="center", va="center", fontsize=fontsize,
                             family="monospace", zorder=3, gid=f"node{n.index}",
                             color="0.35" if n.is_leaf and not n.requires_grad else "black",
                             bbox=dict(boxstyle="round,pad=0.35", fc=fc, ec=ec, lw=lw, ls=ls)))
    start, end = ((0.5, 0.0), (0.5, 1.0)) if down else ((1.0, 0.5), (0.0, 0.5))
    shrink = 0.6 * fontsize
    repeats: dict = {}
    for k, ((a, b, _), bends) in enumerate(zip(graph.edges, lay.paths)):
        repeats[(a, b)] = repeats.get((a, b), -1) + 1  # x * x: two arrows, bent apart
        color = _EDGE_COLORS.get(graph.nodes[b].stage, "0.45")
        line = dict(color=color, lw=0.8, shrinkA=shrink, shrinkB=shrink,
                    mutation_scale=1.2 * fontsize)
        if bends:
            pts = [xy(i) for i in bends]
            ax.annotate("", xy=pts[0], xytext=start, textcoords=boxes[a], zorder=2,
                        arrowprops=dict(line, arrowstyle="-", shrinkB=0))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=0.8, zorder=2)
            ax.annotate("", xy=end, xycoords=boxes[b], xytext=pts[-1], textcoords="data",
                        zorder=2, gid=f"edge{k}",
                        arrowprops=dict(line, arrowstyle="-|>", shrinkA=0))
        else:
            ax.annotate("", xy=end, xycoords=boxes[b], xytext=start, textcoords=boxes[a],
                        zorder=2, gid=f"edge{k}",
                        arrowprops=dict(line, arrowstyle="-|>",
                                        connectionstyle=f"arc3,rad={0.3 * repeats[(a, b)]}"))
    ax.set_xlim(-0.3, width + 0.3)
    ax.set_ylim(-height - 0.3, 0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    _legend(ax, graph, colors, fontsize)
    if title:
        ax.set_title(title, fontsize=fontsize + 1.5)
    return fig


def _legend(ax, graph: Graph, colors: dict, fontsize: float) -> None:
    from matplotlib.patches import Patch
    handles = []
    for label in dict.fromkeys(n.stage for n in graph.nodes if not n.is_leaf):
        handles.append(Patch(fc=colors[label], ec="0.3", label=f"{label} op"))
    if any(n.is_leaf and n.requires_grad for n in graph.nodes):
        handles.append(Patch(fc=_PARAM_FILL, ec=_PARAM_EDGE, lw=1.6, label="leaf, requires grad"))
    if any(n.is_leaf and not n.requires_grad for n in graph.nodes):
        handles.append(Patch(fc=_CONST_FILL, ec=_CONST_EDGE, ls="--", label="constant"))
    handles.append(Patch(fc="white", ec=_OUTPUT_EDGE, lw=2.2, label="output"))
    entry = max(len(h.get_label()) for h in handles) * 0.6 * fontsize / 72 + 0.45   # inches
    ncol = max(1, min(len(handles), int(ax.figure.get_figwidth() / entry)))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=fontsize,
              frameon=False, ncol=ncol, borderaxespad=0.2, handlelength=1.2)
