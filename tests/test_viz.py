"""tinydan.viz: the graph it reads and the picture it draws match the autograd graph."""
from __future__ import annotations

import ast
import io
import sys
from pathlib import Path

import numpy as np
import pytest

import tinydan as td
import tinydan.viz as viz_module
from tinydan.meta import task_loss
from tinydan.nn import DANNetwork, MLPDAN
from tinydan.viz import STAGE_COLORS, draw_graph, graph_of

pytestmark = pytest.mark.autograd

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def ancestors(*roots):
    """Every Tensor that leads to ``roots`` (roots included), by identity: a plain stack walk."""
    seen, stack = {}, list(roots)
    while stack:
        t = stack.pop()
        if id(t) not in seen:
            seen[id(t)] = t
            stack.extend(t.inputs)
    return seen


def small_expression():
    x = td.Tensor(np.arange(6.0).reshape(2, 3), name="x")
    w = td.Tensor(np.ones((3, 4)), requires_grad=True, name="W")
    b = td.Tensor(np.zeros(4), requires_grad=True, name="b")
    return td.tanh(x @ w + b).sum(), (x, w, b)


def one_step_meta_loss():
    """The one-step meta-loss of a DAN network with one hidden DAN layer, float64."""
    net = DANNetwork((1, 2, 1), 2, lambda n_neurons=None: MLPDAN(
        2, (), n_neurons=n_neurons, rng=np.random.default_rng(0), dtype=np.float64),
        final_activation=False)
    theta = {k: td.tensor(v, requires_grad=True)
             for k, v in net.init_synapses(1, np.random.default_rng(1), dtype=np.float64).items()}
    x, y = td.tensor(np.full((1, 1, 1), 0.5)), td.tensor(np.ones((1, 1, 1)))
    loss = task_loss(net, theta, x, y)
    grads = td.grad(loss, list(theta.values()), create_graph=True)
    theta_1 = {k: v - 0.1 * g for (k, v), g in zip(theta.items(), grads)}
    xm, ym = td.tensor(np.linspace(-1, 1, 3).reshape(1, 3, 1)), td.tensor(np.zeros((1, 3, 1)))
    meta = td.mse_loss(net(xm, theta_1), ym)
    return meta, loss, grads, theta, theta_1, net


def test_graph_of_matches_the_autograd_graph():
    y, (x, w, b) = small_expression()
    g = graph_of(y)
    walked = ancestors(y)
    assert len(g) == len(walked) == 7
    assert {id(t) for t in g.tensors} == set(walked)
    for node, t in zip(g.nodes, g.tensors):
        assert node.op == (None if t.is_leaf else t._op.__name__)
        assert node.shape == t.shape and node.requires_grad == t.requires_grad
        assert node.is_output == (t is y)
        assert g.inputs_of(node.index) == [g.tensors.index(x_) for x_ in t.inputs]
    assert [n.op for n in g.nodes if n.op] == ["MatMul", "Add", "Tanh", "Sum"]
    assert g.op_counts() == {"MatMul": 1, "Add": 1, "Tanh": 1, "Sum": 1}
    assert len(g.edges) == sum(len(t.inputs) for t in g.tensors) == 6
    index = {id(t): i for i, t in enumerate(g.tensors)}
    for a, b_, _ in g.edges:                       # topological: inputs first
        assert a < b_
    assert g.nodes[index[id(y)]].depth == 4 and g.nodes[index[id(w)]].depth == 0
    assert [n.name for n in g.nodes if n.is_leaf] == ["x", "W", "b"]
    assert "requires grad" in g.nodes[index[id(w)]].label
    assert g.nodes[index[id(x)]].label.startswith("x\n") and "requires grad" not in \
        g.nodes[index[id(x)]].label
    assert "OUTPUT" in g.nodes[index[id(y)]].label and "Sum" in g.nodes[index[id(y)]].label
    text = str(g)
    assert text.startswith("7 nodes (3 leaves, 4 ops), 6 edges") and "OUTPUT" in text


def test_repeated_input_gives_one_node_and_two_edges():
    a = td.tensor([1.0, 2.0], requires_grad=True)
    sq = a * a
    g = graph_of(sq)
    assert len(g) == 2
    assert sorted(g.edges) == [(0, 1, 0), (0, 1, 1)]
    fig = draw_graph(sq)
    arrows = [t for t in fig.axes[0].texts if str(t.get_gid()).startswith("edge")]
    assert len(arrows) == 2


def test_constants_can_be_left_out_and_several_outputs_are_marked():
    y, (x, w, b) = small_expression()
    z = td.exp(w).sum()
    g = graph_of(y, z, constants=False)
    assert all(n.requires_grad for n in g.nodes)
    assert len(g) == len(ancestors(y, z)) - 1      # x (a constant) left out
    assert sum(n.is_output for n in g.nodes) == 2
    assert all(g.tensors[a] is not x for a, _, _ in g.edges)
    assert len(graph_of([y, z])) == len(graph_of(y, z)) == len(graph_of({"y": y, "z": z}))


def test_stages_tell_the_backward_pass_from_the_forward_pass():
    x = td.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    y = (td.tanh(x) * x).sum()
    dy = td.grad(y, x, create_graph=True)
    d2 = td.grad(dy.sum(), x, create_graph=True)
    stages = {"forward": y, "backward": dy, "second backward": d2}
    g = graph_of(d2, stages=stages)
    fwd, bwd = ancestors(y), ancestors(dy)
    for node, t in zip(g.nodes, g.tensors):
        want = "forward" if id(t) in fwd else "backward" if id(t) in bwd else "second backward"
        assert node.stage == want, (node, want)
    assert g.op_counts("forward").get("Tanh") == 1
    assert g.op_counts("backward") and g.op_counts("second backward")
    g1 = graph_of(dy, stages={"forward": y, "backward": dy})
    assert g1.op_counts("forward") == {"Tanh": 1}
    assert "TanhGrad" in g1.op_counts("backward") and "Sum" not in g1.op_counts()
    assert len(g) == len(ancestors(d2))
    assert {n.stage for n in graph_of(d2).nodes} == {"forward"}       # no stages: all forward


def test_one_step_meta_gradient_graph_has_the_second_order_path():
    meta, loss, grads, theta, theta_1, net = one_step_meta_loss()
    g = graph_of(meta, stages={"forward": loss, "backward": grads})
    index = {id(t): i for i, t in enumerate(g.tensors)}
    assert len(g) == len(ancestors(meta))
    fwd, bwd = ancestors(loss), ancestors(*grads)
    backward = {i for i, t in enumerate(g.tensors) if id(t) not in fwd and id(t) in bwd}
    assert backward == {n.index for n in g.nodes if n.stage == "backward"} and backward
    assert {"MSEGrad", "MatMulTA", "MatMulTB"} <= set(g.op_counts("backward"))
    phi = {index[id(p)] for p in net.parameters()}

    def upstream(i):                                 # node i's ancestors, through the edges drawn
        seen, stack = set(), [i]
        while stack:
            for a in g.inputs_of(stack.pop()):
                if a not in seen:
                    seen.add(a)
                    stack.append(a)
        return seen

    for t in theta_1.values():                       # theta_1 = theta - alpha * grad: a forward op
        i = index[id(t)]                             # fed by a backward node that phi feeds
        assert g.nodes[i].stage == "forward" and g.nodes[i].op == "Sub"
        assert any(g.nodes[a].stage == "backward" and phi & upstream(a) for a in upstream(i))
    users = {}
    for a, b, _ in g.edges:
        users.setdefault(a, []).append(b)
    w0 = net.dans[0].w0                              # the DAN's weight feeds the backward pass
    assert any(g.nodes[u].stage == "backward" for u in users[index[id(w0)]])
    meta_phi = td.grad(meta, net.parameters())       # and the graph is the one autograd uses
    assert all(np.isfinite(m.data).all() for m in meta_phi)


def test_drawing_matches_the_graph_node_by_node():
    meta, loss, grads, *_ = one_step_meta_loss()
    stages = {"forward": loss, "backward": grads}
    g = graph_of(meta, stages=stages)
    fig = draw_graph(meta, stages=stages, title="one step")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    boxes = {t.get_gid(): t for t in ax.texts if str(t.get_gid()).startswith("node")}
    arrows = [t for t in ax.texts if str(t.get_gid()).startswith("edge")]
    assert len(boxes) == len(g) and len(arrows) == len(g.edges)
    for n in g.nodes:
        box = boxes[f"node{n.index}"]
        assert box.get_text() == n.label
        if n.op is not None:
            assert box.get_text().split("\n")[0] == n.op
            assert to_hex(box.get_bbox_patch().get_facecolor()) == STAGE_COLORS[n.stage]
        if n.is_output:
            assert to_hex(box.get_bbox_patch().get_edgecolor()) == "#cc0000"
    assert sum(n.stage == "backward" for n in g.nodes) >= 8
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layout_puts_every_op_below_its_inputs_and_boxes_apart():
    meta, loss, grads, *_ = one_step_meta_loss()
    g = graph_of(meta)
    for direction in ("down", "right"):
        fig = draw_graph(meta, direction=direction)
        pos = {t.get_gid(): t.get_position() for t in fig.axes[0].texts
               if str(t.get_gid()).startswith("node")}
        for a, b, _ in g.edges:
            pa, pb = pos[f"node{a}"], pos[f"node{b}"]
            if direction == "down":
                assert pb[1] < pa[1]
            else:
                assert pb[0] > pa[0]
        points = np.array(list(pos.values()))
        gaps = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(len(points))
        assert gaps.min() > 0.2                       # inches: no two boxes on one spot


def test_draws_into_a_given_axes():
    from matplotlib.figure import Figure as F
    y, _ = small_expression()
    fig = F()
    ax = fig.add_subplot(1, 2, 2)
    assert draw_graph(y, ax=ax) is fig
    assert sum(str(t.get_gid()).startswith("node") for t in ax.texts) == 7


def test_deep_graphs_need_no_recursion():
    x = td.tensor([0.5], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        g = graph_of(y)
    finally:
        sys.setrecursionlimit(limit)
    assert len(g) == 1 + 2 * 5000 and g.nodes[-1].depth == 5000
    z = x
    for _ in range(60):
        z = td.tanh(z) + x                           # long edges from x to every layer
    fig = draw_graph(z)
    assert sum(str(t.get_gid()).startswith("node") for t in fig.axes[0].texts) == 121


def test_errors_say_what_was_wrong():
    y, _ = small_expression()
    with pytest.raises(ValueError, match="at least one Tensor"):
        graph_of()
    with pytest.raises(TypeError, match="must be Tensors"):
        draw_graph(np.ones(3))
    with pytest.raises(ValueError, match="direction"):
        draw_graph(y, direction="up")
    with pytest.raises(TypeError, match="stage labels"):
        graph_of(y, stages={1: y})


def test_viz_stays_on_the_engine_floor():
    tree = ast.parse(Path(viz_module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.module in ("tensor", "autograd"), node.module
            else:
                assert node.module.split(".")[0] in ("__future__", "dataclasses", "typing",
                                                      "matplotlib"), node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] == "matplotlib", alias.name
