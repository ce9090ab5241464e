"""Every op passes a second-order gradient check in float64, on broadcast shapes too."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinydan as td
from tinydan.testing import check_grad

pytestmark = pytest.mark.ops

rng = np.random.default_rng(1234)


def r(*shape, positive=False):
    a = rng.standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


BINARY_SHAPES = [((), ()), ((2,), (2,)), ((3, 2), (1, 2)), ((3, 2), ()), ((2,), (3, 2)),
                 ((4, 1, 3), (2, 1))]

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0),
    "maximum": lambda a, b: td.maximum(a, b) * a,
    "minimum": lambda a, b: td.minimum(a, b) * b,
    "where": lambda a, b: td.where(a > 0, a * b, b * b),
    "pow_tensor": lambda a, b: td.pow(a * a + 1.0, b),
}


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_second_order(name, shapes):
    check_grad(BINARY[name], r(*shapes[0]), r(*shapes[1]), order=2)


UNARY = {
    "neg": (lambda a: -a * a, False),
    "pow3": (lambda a: a ** 3, False),
    "pow_half": (lambda a: a ** 0.5, True),
    "exp": (td.exp, False),
    "log": (td.log, True),
    "sqrt": (td.sqrt, True),
    "tanh": (td.tanh, False),
    "sigmoid": (td.sigmoid, False),
    "relu": (lambda a: td.relu(a) * a, False),
    "leaky_relu": (lambda a: td.leaky_relu(a, 0.1) * a, False),
    "abs": (lambda a: td.abs(a) * a, False),
    "rsub_rdiv": (lambda a: (1.0 - a) * (2.0 / (a * a + 1.0)), False),
}


@pytest.mark.parametrize("shape", [(), (2,), (3, 2)], ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_second_order(name, shape):
    f, positive = UNARY[name]
    check_grad(f, r(*shape, positive=positive), order=2)


REDUCE = {
    "sum_all": lambda a: (a * a).sum(),
    "sum_axis": lambda a: (a * a).sum(axis=1),
    "sum_keepdims": lambda a: (a * a).sum(axis=(0, 2), keepdims=True),
    "mean_all": lambda a: (a * a).mean(),
    "mean_axis": lambda a: (a * a).mean(axis=-1, keepdims=True),
    "max_axis": lambda a: (a * a).max(axis=1),
    "max_all": lambda a: (a * a).max(),
    "min_axis": lambda a: (a * a).min(axis=0, keepdims=True),
}


@pytest.mark.parametrize("name", sorted(REDUCE))
def test_reductions_second_order(name):
    check_grad(REDUCE[name], r(2, 3, 4), order=2)


SHAPE = {
    "reshape": lambda a: (a * a).reshape(4, -1),
    "transpose": lambda a: td.transpose(a * a, (2, 0, 1)),
    "permute": lambda a: (a * a).permute(1, 0, 2),
    "T": lambda a: (a * a).T,
    "broadcast_to": lambda a: td.broadcast_to(a[0] * a[0], (5, 3, 4)),
    "slice": lambda a: (a * a)[1:, ::2, -1],
    "fancy_index_repeats": lambda a: (a * a)[[0, 0, 1], :, [1, 1, 3]],
    "bool_mask": lambda a: (a * a)[np.arange(24).reshape(2, 3, 4) % 3 == 0],
    "pad": lambda a: td.pad(a * a, ((1, 0), (0, 2), (1, 1))),
    "concatenate": lambda a: td.concatenate([a * a, a[:, :1]], axis=1),
    "stack": lambda a: td.stack([a * a, a], axis=-1),
    "sum_to": lambda a: td.sum_to(a * a, (3, 1)),
}


@pytest.mark.parametrize("name", sorted(SHAPE))
def test_shape_ops_second_order(name):
    check_grad(SHAPE[name], r(2, 3, 4), order=2)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                                   ((3, 1), (1, 4)), ((2, 3, 1), (1, 4)), ((1, 1, 1), (2, 1, 5)),
                                   ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,))], ids=str)
def test_matmul_batched_second_order(sa, sb):
    check_grad(lambda a, b: td.tanh(a @ b), r(*sa), r(*sb), order=2)


@pytest.mark.parametrize("sx,sw,sb", [((3, 4), (4, 2), (2,)), ((2, 3, 4), (2, 4, 5), (2, 1, 5)),
                                      ((5, 4), (3, 4, 2), (2,))], ids=str)
def test_linear_second_order(sx, sw, sb):
    check_grad(lambda x, w, b: td.tanh(td.linear(x, w, b)), r(*sx), r(*sw), r(*sb), order=2)
    x, w, b = r(*sx), r(*sw), r(*sb)
    assert np.allclose(td.linear(td.tensor(x), td.tensor(w), td.tensor(b)).data, x @ w + b)


def test_third_derivative_of_tanh():
    """tanh's backward is its own op (TanhGrad); its backward must be right too."""
    x = td.tensor(0.3, requires_grad=True, dtype=np.float64)
    d1 = td.grad(td.tanh(x), x, create_graph=True)
    d2 = td.grad(d1, x, create_graph=True)
    d3 = td.grad(d2, x)
    t = np.tanh(0.3)
    assert np.isclose(d3.item(), -2 * (1 - t * t) * (1 - 3 * t * t))


def test_losses_second_order():
    check_grad(lambda p, t: td.mse_loss(td.tanh(p), t), r(3, 4), r(3, 4))
    check_grad(lambda z: td.softmax_cross_entropy(z * z, np.array([0, 2, 1])), r(3, 4))
    check_grad(lambda z: td.softmax(z, axis=0) * z, r(3, 4))


def test_forward_values_match_numpy():
    a, b = r(3, 4), r(4, 2)
    assert np.allclose((td.tensor(a) @ td.tensor(b)).data, a @ b)
    assert np.allclose(td.softmax(td.tensor(a)).data.sum(-1), 1)
    assert np.allclose(td.sigmoid(td.tensor(a)).data, 1 / (1 + np.exp(-a)))
    assert np.isclose(td.mse_loss(td.tensor(a), td.tensor(a * 0)).item(), np.mean(a * a))
    z = np.array([[1.0, 2.0, 3.0]])
    ce = td.softmax_cross_entropy(td.tensor(z), np.array([2])).item()
    assert np.isclose(ce, -np.log(np.exp(3) / np.exp(z).sum()))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=0, max_size=3),
       st.lists(st.booleans(), min_size=3, max_size=3))
def test_broadcast_gradient_shapes_hypothesis(shape, ones):
    """x.grad.shape == x.shape whatever broadcasting happened."""
    b_shape = tuple(1 if o else s for s, o in zip(shape, ones))
    a = td.tensor(r(*shape), requires_grad=True, dtype=np.float64)
    b = td.tensor(r(*b_shape), requires_grad=True, dtype=np.float64)
    ((a * b + b) / (1.0 + b * b)).sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    # d/db sum(a*b + b) over broadcast = sum of (a + 1) over the broadcast axes
    check_grad(lambda x, y: x * y + y, a.data, b.data, order=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept_through_every_op(dtype):
    x = td.tensor(r(2, 3, 4), dtype=dtype, requires_grad=True)
    w = td.tensor(r(4, 5), dtype=dtype, requires_grad=True)
    outs = [x + 1, x * 2.5, 1.0 / (x * x + 1), x ** 2, td.exp(x), td.tanh(x), td.sigmoid(x),
            td.relu(x), td.leaky_relu(x), td.abs(x), x.sum(axis=0), x.mean(), x.max(axis=1),
            x @ w, x[0], td.pad(x, ((0, 0), (1, 1), (0, 0))), td.concatenate([x, x], 1),
            td.stack([x, x]), td.mse_loss(x, x * 0), td.sqrt(x * x + 1), td.log(x * x + 1),
            td.linear(x, w, w[0])]
    for o in outs:
        assert o.dtype == dtype, o
    loss = sum(o.sum() for o in outs)
    gx, gw = td.grad(loss, [x, w])
    assert gx.dtype == dtype and gw.dtype == dtype


def test_mismatched_dtypes_give_clear_error():
    a = td.tensor([1.0], dtype=np.float32)
    b = td.tensor([1.0], dtype=np.float64)
    with pytest.raises(TypeError, match="mismatched dtypes float32 and float64"):
        a + b
    with pytest.raises(TypeError, match="mismatched dtypes"):
        a @ td.tensor([[1.0]], dtype=np.float64)


def test_wrong_shapes_give_clear_errors():
    with pytest.raises(ValueError, match=r"shapes \(3, 2\) and \(3,\) do not broadcast"):
        td.tensor(np.ones((3, 2))) + td.tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"last axis of the first \(3\)"):
        td.tensor(np.ones((2, 3))) @ td.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="cannot reshape"):
        td.tensor(np.ones((2, 3))).reshape(4, 2)
    with pytest.raises(ValueError, match="prediction has shape"):
        td.mse_loss(td.tensor(np.ones((2, 1))), td.tensor(np.ones(2)))
    with pytest.raises(TypeError, match="float32 or float64"):
        td.tensor([1, 2], dtype=np.int64)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_transposed_flag_matmul_second_order(ta, tb):
    """The internal op(a) @ op(b) used by matmul's backward, for every transpose combination."""
    from tinydan.ops.linalg import _mm
    a = r(2, 4, 3) if ta else r(2, 3, 4)
    b = r(5, 4) if tb else r(4, 5)
    check_grad(lambda x, y: td.tanh(_mm(x, y, ta=ta, tb=tb)), a, b, order=2)
    ref = (a.swapaxes(-1, -2) if ta else a) @ (b.T if tb else b)
    assert np.allclose(_mm(td.tensor(a), td.tensor(b), ta=ta, tb=tb).data, ref)


def test_mse_backward_is_itself_differentiable_to_second_order():
    """MSE's backward is one op (MSEGrad); its own gradient and Hessian-vector products must be right."""
    def grad_of_mse(p, t):
        w = td.tensor(np.zeros(p.shape), requires_grad=True)      # d/dw at w = 0 is d/dp
        return td.grad(td.mse_loss(td.tanh(p + w), t * t), w, create_graph=True)
    check_grad(grad_of_mse, r(3, 2), r(3, 2), order=2)


@pytest.mark.parametrize("slope", [0.0, 0.01, 1.0, 1.5, -0.2])
def test_leaky_relu_any_slope(slope):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 5))
    out = td.leaky_relu(td.tensor(a), slope).data
    assert np.allclose(out, np.where(a > 0, a, slope * a))
    check_grad(lambda x: td.leaky_relu(x, slope) * x, a, order=2)
