"""The graph, backward, grad, gradients of gradients, and the gradient checker itself."""
import numpy as np
import pytest

import tinydan as td
from tinydan.tensor import Op, apply
from tinydan.testing import GradientCheckError, check_grad

pytestmark = pytest.mark.autograd


def f64(x, rg=True):
    return td.tensor(x, requires_grad=rg, dtype=np.float64)


def test_backward_simple_and_accumulates():
    x = td.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    assert np.allclose(x.grad.data, [2, 4, 6])
    (x * 3.0).sum().backward()                       # gradients accumulate ...
    assert np.allclose(x.grad.data, [5, 7, 9])
    x.zero_grad()                                    # ... until zeroed explicitly
    assert x.grad is None


def test_reused_tensor_sums_its_gradients():
    x = f64(2.0)
    y = x * x + x * 3.0 + td.exp(x)
    (g,) = td.grad(y, [x])
    assert np.isclose(g.item(), 2 * 2 + 3 + np.exp(2))


def test_nested_derivative_perturbation_confusion():
    """d/dx [x * (d/dy x*y at y=2)] at x=1 is 2 (a known bug of naive forward-mode nesting)."""
    x, y = f64(1.0), f64(2.0)
    inner = td.grad(x * y, y, create_graph=True)     # = x
    outer = td.grad(x * inner, x)                    # d/dx x^2 = 2x
    assert np.isclose(outer.item(), 2.0)


def test_second_and_third_derivatives():
    x = f64(0.7)
    y = td.tanh(x) * x ** 3
    d1 = td.grad(y, x, create_graph=True)
    d2 = td.grad(d1, x, create_graph=True)
    d3 = td.grad(d2, x)
    t = np.tanh(0.7)
    f = lambda v: np.tanh(v) * v ** 3
    h = 1e-3
    num3 = (f(0.7 + 2 * h) - 2 * f(0.7 + h) + 2 * f(0.7 - h) - f(0.7 - 2 * h)) / (2 * h ** 3)
    assert np.isclose(d1.item(), (1 - t * t) * 0.7 ** 3 + 3 * t * 0.7 ** 2)
    assert np.isclose(d3.item(), num3, rtol=1e-4)


def _sgd_step_meta_loss(w0, phi, x_task, y_task, x_meta, y_meta, lr, first_order):
    """Meta-loss after one differentiable SGD step on w: L_meta(w - lr grad_w L_task(w, phi), phi)."""
    def model(w, phi, x):
        return td.tanh(x @ w) @ phi
    task = td.mse_loss(model(w0, phi, x_task), y_task)
    g = td.grad(task, w0, create_graph=not first_order)
    w1 = w0 - lr * g
    return td.mse_loss(model(w1, phi, x_meta), y_meta)


def test_meta_gradient_through_one_sgd_step_matches_fd_and_differs_from_first_order():
    rng = np.random.default_rng(0)
    w0 = f64(rng.standard_normal((3, 4)))
    phi = f64(rng.standard_normal((4, 1)))
    xt, yt, xm, ym = (td.tensor(rng.standard_normal(s), dtype=np.float64)
                      for s in [(5, 3), (5, 1), (7, 3), (7, 1)])
    lr = 0.3
    full = td.grad(_sgd_step_meta_loss(w0, phi, xt, yt, xm, ym, lr, False), phi)
    fo = td.grad(_sgd_step_meta_loss(w0, phi, xt, yt, xm, ym, lr, True), phi)
    # finite differences of the post-step meta-loss as a function of phi alone
    eps, num = 1e-6, np.zeros_like(phi.data)
    for k in np.ndindex(phi.shape):
        vals = []
        for s in (eps, -eps):
            p = phi.data.copy()
            p[k] += s
            vals.append(_sgd_step_meta_loss(w0, f64(p), xt, yt, xm, ym, lr, False).item())
        num[k] = (vals[0] - vals[1]) / (2 * eps)
    assert np.allclose(full.data, num, atol=1e-7, rtol=1e-5)
    assert not np.allclose(fo.data, num, atol=1e-4)        # first-order drops the d(step)/d(phi) term
    # and check_grad agrees, second order included
    check_grad(lambda p: _sgd_step_meta_loss(w0.detach().requires_grad_(), p, xt, yt, xm, ym, lr,
                                             False), phi.data)


def test_long_chain_has_no_recursion_limit():
    x = td.tensor(1.0, requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert np.isclose(x.grad.item(), 1.0001 ** 10_000)


def test_no_grad_records_nothing():
    x = td.tensor([1.0], requires_grad=True)
    with td.no_grad():
        y = x * 2
        with td.enable_grad():
            z = x * 3
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad
    assert td.is_grad_enabled()


def test_backward_errors_are_clear():
    x = td.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(2,\) needs a gradient"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="gradient has shape"):
        (x * 2).backward(np.ones(3, dtype=np.float32))
    with pytest.raises(RuntimeError, match="does not require grad"):
        td.tensor([1.0]).sum().backward()
    y = td.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="was not used"):
        td.grad((x * 2).sum(), [x, y])
    gx, gy = td.grad((x * 2).sum(), [x, y], allow_unused=True)
    assert gy is None and np.allclose(gx.data, 2)
    with pytest.raises(RuntimeError, match="does not require grad"):
        td.grad((x * 2).sum(), td.tensor([1.0]))


def test_grad_wrt_intermediate_and_vector_jacobian():
    x = f64([1.0, 2.0])
    h = x * x
    y = h * 3.0
    gh, gx = td.grad(y, [h, x], grad_outputs=np.array([1.0, 10.0]))
    assert np.allclose(gh.data, [3, 30]) and np.allclose(gx.data, [6, 120])
    assert x.grad is None                                   # grad() accumulates nothing


def test_first_order_backward_records_nothing():
    x = f64([0.5, -1.0])
    (g,) = td.grad(td.tanh(x).sum(), [x])
    assert not g.requires_grad
    (g2,) = td.grad(td.tanh(x).sum(), [x], create_graph=True)
    assert g2.requires_grad


class WrongSignTanh(Op):
    @staticmethod
    def forward(ctx, a):
        return np.tanh(a)

    @staticmethod
    def backward(ctx, g):
        return (g * (ctx * ctx - 1.0),)          # sign flipped on purpose


class FirstOrderOnlyTanh(Op):
    @staticmethod
    def forward(ctx, a):
        return np.tanh(a)

    @staticmethod
    def backward(ctx, g):
        return (g * td.tensor(1 - ctx.data ** 2, dtype=ctx.dtype),)   # constant: no 2nd order


def test_check_grad_catches_a_wrong_gradient_and_names_the_worst_element():
    x = np.random.default_rng(0).standard_normal((3, 2))
    with pytest.raises(GradientCheckError, match=r"gradient of input 0 \(shape \(3, 2\)\).*index"):
        check_grad(lambda a: apply(WrongSignTanh, a), x)


def test_check_grad_catches_a_gradient_that_is_not_differentiable():
    x = np.random.default_rng(0).standard_normal(4)
    check_grad(lambda a: apply(FirstOrderOnlyTanh, a), x, order=1)      # first order is right
    with pytest.raises(GradientCheckError, match="Hessian-vector product"):
        check_grad(lambda a: apply(FirstOrderOnlyTanh, a), x, order=2)


def test_check_grad_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        check_grad(td.tanh, np.ones(3, dtype=np.float32))


def test_tensor_basics():
    t = td.tensor([[1, 2], [3, 4]])
    assert t.dtype == np.float32 and t.shape == (2, 2) and len(t) == 2
    assert "Tensor(" in repr(t)
    assert (t > 2).dtype == bool
    assert td.tensor(np.ones(2)).dtype == np.float64
    with pytest.raises(ValueError, match="one element"):
        t.item()


def test_a_deep_graph_pickles_as_a_leaf_without_recursion():
    """Pickling keeps values, not the graph: a 50,000-op chain pickles (no RecursionError) and
    comes back as a leaf with the same data, requires_grad and name; Parameters stay Parameters."""
    import copy
    import pickle
    from tinydan.nn import Parameter
    x = td.tensor(np.ones(3), requires_grad=True)
    y = x
    for _ in range(50_000):
        y = y * 1.0
    back = pickle.loads(pickle.dumps(y))
    assert np.array_equal(back.data, y.data) and back.requires_grad and back._op is None
    p = Parameter(np.arange(3.0), name="w")
    q = copy.deepcopy(p)
    assert type(q) is Parameter and q.name == "w" and np.array_equal(q.data, p.data)
    assert q.data is not p.data
