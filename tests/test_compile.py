"""tinydan.compile: a recorded tape replays exactly what eager computes, with new inputs.

Compiled must equal eager: random op programs in float64 (values, gradients and Hessian-vector
products, the inputs new at every replay, so that masks and arg-maxes change), the regression
experiment's three steps in float32 bit for bit (meta-steps with Adam on phi, and the deployment
step), a PyTorch-style step with backward() and .grad. A deliberately stale variant of the
recorder (a mask computed behind its back) shows that the comparisons can fail. Then the
refusals: a value-dependent branch, the in-place BLAS kernel, writes and stores the tape could
not repeat.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinydan.meta as meta
from tinydan import ops
from tinydan.autograd import grad
from tinydan.compiler import CompileError, callback, compile
from tinydan.compiler.recorder import Recorder
from tinydan.experiments.configs import build_regression_net, regression_config
from tinydan.nn import Linear, Sequential
from tinydan.optim import SGD, Adam
from tinydan.tensor import Tensor

pytestmark = pytest.mark.autograd


def _numpy_float(a):
    """float(a) as a NumPy float64 scalar: the same number, and compile can record it."""
    return a.astype(np.float64)[()] if isinstance(a, np.ndarray) else float(a)


@pytest.fixture
def numpy_floats(monkeypatch):
    """meta.py reports its losses with float(loss.data): a traced value read into Python, which
    compile refuses. Give meta.py a float() that stays in NumPy (bit-identical), as meta.py must
    do itself before the experiments compile their steps."""
    monkeypatch.setattr(meta, "float", _numpy_float, raising=False)


def _arrays(x):
    """Every array in an output (Tensors by their data), flattened, for comparing."""
    if isinstance(x, Tensor):
        return [x.data]
    if isinstance(x, (tuple, list)):
        return [a for i in x for a in _arrays(i)]
    if isinstance(x, dict):
        return [a for v in x.values() for a in _arrays(v)]
    return [np.asarray(x)]


def assert_same(got, want, tol=0.0):
    """Every array of ``got`` equals ``want``'s (to ``tol`` relative to its scale)."""
    got, want = _arrays(got), _arrays(want)
    assert len(got) == len(want), f"{len(got)} outputs, eager gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, \
            f"output {i}: {g.dtype}{g.shape}, eager gives {w.dtype}{w.shape}"
        diff = float(np.max(np.abs(g - w))) if g.size else 0.0
        assert diff <= tol * (1.0 + float(np.max(np.abs(w)))) if w.size else True, \
            f"output {i} differs from eager by {diff:.3g}"


# ---------------------------------------------------------------------------- random programs
OPS = ["tanh", "sigmoid", "relu", "leaky", "abs", "neg", "exp", "sqrt", "square", "cube", "log",
       "add", "sub", "mul", "div", "maximum", "minimum", "where", "matmul", "sum", "mean", "max",
       "gram", "getitem", "concat", "pad", "broadcast", "log_softmax"]


def _step(name, a, b, w):
    """One op of a random program on two (4, 3) tensors (and w (3, 3)); returns (4, 3)."""
    if name in ("tanh", "sigmoid", "relu", "abs", "exp", "sqrt", "log"):
        arg = {"exp": ops.tanh(a), "sqrt": a * a + 1.0, "log": a * a + 1.0}.get(name, a)
        return getattr(ops, name)(arg)
    table = {
        "leaky": lambda: ops.leaky_relu(a, 0.1), "neg": lambda: -a, "square": lambda: a ** 2,
        "cube": lambda: a ** 3 * 0.1, "add": lambda: a + b, "sub": lambda: a - b,
        "mul": lambda: a * b, "div": lambda: a / (b * b + 1.0),
        "maximum": lambda: ops.maximum(a, b), "minimum": lambda: ops.minimum(a, b),
        "where": lambda: ops.where(a > b, a * 2.0, b), "matmul": lambda: ops.matmul(a, w),
        "sum": lambda: a - ops.sum(a, axis=1, keepdims=True) * 0.3,
        "mean": lambda: a * ops.mean(a, axis=0, keepdims=True),
        "max": lambda: a - ops.max(a, axis=1, keepdims=True),                  # an arg-max mask
        "gram": lambda: ops.matmul(a, ops.matmul(ops.transpose(a), a)) * 0.1,
        "getitem": lambda: ops.concatenate([a[1:], a[:1]], axis=0) + a[np.array([3, 2, 1, 0])],
        "concat": lambda: ops.concatenate([a[:, :2], b[:, 2:]], axis=1),
        "pad": lambda: ops.pad(a, ((1, 0), (0, 1)))[:4, 1:],
        "broadcast": lambda: a + ops.broadcast_to(ops.sum(b, axis=0), a.shape),
        "log_softmax": lambda: ops.log_softmax(a, axis=1),                    # a max shift
    }
    return table[name]()


def random_program(seed: int, length: int = 8):
    """fn(x, w, vx, vw) -> (loss, dL/dx, dL/dw, H v for x, H v for w): a random chain of ops,
    its gradients with create_graph=True, and a Hessian-vector product."""
    r = np.random.default_rng(seed)
    names, final = [str(r.choice(OPS)) for _ in range(length)], int(r.integers(3))

    def fn(x, w, vx, vw):
        hs = [x, ops.matmul(x, w)]
        for name in names:
            hs.append(_step(name, hs[-1], hs[-2], w))
        h = hs[-1]
        loss = [ops.sum(h * h), ops.mean(ops.tanh(h)) + ops.max(h), ops.mse_loss(h, x)][final]
        gx, gw = grad(loss, [x, w], create_graph=True)
        hx, hw = grad(ops.sum(gx * vx) + ops.sum(gw * vw), [x, w], allow_unused=True)
        return loss, gx, gw, hx, hw

    return fn, names


def _program_inputs(r):
    return (Tensor(r.normal(size=(4, 3)), requires_grad=True),
            Tensor(r.normal(size=(3, 3)), requires_grad=True),
            Tensor(r.normal(size=(4, 3))), Tensor(r.normal(size=(3, 3))))


def check_program(seed: int, replays: int = 3) -> None:
    """Compile a random program and compare it with eager on new inputs at every replay."""
    fn, names = random_program(seed)
    compiled = compile(fn)
    r = np.random.default_rng(1000 + seed)
    for _ in range(replays + 1):                       # the first call records
        args = _program_inputs(r)
        got, want = compiled(*args), fn(*args)
        try:
            assert_same(got, want, tol=1e-12)
        except AssertionError as e:
            raise AssertionError(f"program {seed} {names}: {e}") from None
    assert compiled.records == 1


@pytest.mark.parametrize("block", range(4))
def test_random_programs_equal_eager_with_new_inputs(block):
    for seed in range(block * 12, block * 12 + 12):
        check_program(seed)


def test_a_stale_mask_is_caught(monkeypatch):
    """A recorder that lets x > 0 escape (a relu mask kept as a constant) must fail the check."""
    original = Recorder.ufunc

    def stale(self, uf, method, inputs, kwargs):
        if uf is np.greater:
            from tinydan.compiler.traced import plain
            return uf(*plain(inputs), **plain(kwargs))
        return original(self, uf, method, inputs, kwargs)

    fn = lambda x, w, vx, vw: grad(ops.sum(ops.relu(ops.matmul(x, w)) ** 2), [x, w])  # noqa: E731
    check_program(3)                                     # the honest recorder passes
    monkeypatch.setattr(Recorder, "ufunc", stale)
    compiled = compile(fn)
    r = np.random.default_rng(0)
    compiled(*_program_inputs(r))
    args = _program_inputs(r)
    with pytest.raises(AssertionError, match="differs from eager"):
        assert_same(compiled(*args), fn(*args), tol=1e-12)
    checked = compile(fn, check=True)
    checked(*_program_inputs(r))
    with pytest.raises(CompileError, match="check=True"):
        checked(*_program_inputs(r))


# ---------------------------------------------------------------------------- the regression steps
def _regression(kind: str, compiled: bool, steps: int):
    """``steps`` steps of the regression experiment's default network (float32): (per-step
    outputs, final theta, phi, Adam's t and moments, the compiled function)."""
    cfg = regression_config("default")
    rng = np.random.default_rng(0)
    net = build_regression_net(cfg, rng)
    theta = {k: Tensor(np.array(v), requires_grad=True)
             for k, v in net.init_synapses(cfg.population, rng).items()}
    phi = net.parameters()
    opt = Adam(phi, lr=1e-3)

    def step(theta, x, y, xm, ym):
        if kind == "deploy":
            return meta.deploy_step(net, theta, x, y, cfg.inner_lr)
        theta1, gphi, lt, lm = meta.meta_step(net, theta, x, y, xm, ym, cfg.inner_lr, kind, phi)
        opt.step(gphi)
        return theta1, lt, lm

    f = compile(step) if compiled else step
    data = np.random.default_rng(1)
    outs = []
    for _ in range(steps):
        x = data.uniform(-5, 5, (1, cfg.inner_batch, 1)).astype(np.float32)
        xm = data.uniform(-5, 5, (1, cfg.meta_batch, 1)).astype(np.float32)
        out = f(theta, x, np.sin(x), xm, np.sin(xm))
        theta = out[0]
        outs.append(out[1:])
    return outs, theta, [p.data for p in phi], opt.t, opt.m + opt.v, f


@pytest.mark.parametrize("kind", ["first_order", "one_step", "deploy"])
def test_regression_steps_equal_eager_bit_for_bit(kind, numpy_floats):
    """The float32 training curve (losses), synapses, phi and Adam's state of 4 compiled steps
    equal eager's exactly: the replay runs the same NumPy kernels in the same order."""
    eager = _regression(kind, compiled=False, steps=4)
    comp = _regression(kind, compiled=True, steps=4)
    assert comp[0] == eager[0], "the loss curves differ"
    assert_same(comp[1], eager[1])
    assert_same(comp[2], eager[2])
    assert comp[3] == eager[3] == (0 if kind == "deploy" else 4)
    assert_same(comp[4], eager[4])
    f = comp[5]
    assert f.records == 1 and f.tape.n_kernels() > 50
    assert isinstance(comp[0][0][0], np.float64)        # the losses stay NumPy floats


def test_check_mode_agrees_on_the_one_step_meta_step(numpy_floats):
    """check=True replays and runs eagerly at every call; a correct tape passes."""
    cfg = regression_config("default")
    rng = np.random.default_rng(0)
    net = build_regression_net(cfg, rng)
    phi = net.parameters()
    theta = {k: Tensor(np.array(v), requires_grad=True)
             for k, v in net.init_synapses(1, rng).items()}
    f = compile(lambda th, x, y: meta.meta_step(net, th, x, y, x, y, 0.01, "one_step", phi)[:2],
                check=True)
    for _ in range(3):
        x = rng.uniform(-5, 5, (1, 4, 1)).astype(np.float32)
        theta, gphi = f(theta, x, np.sin(x))
    assert f.records == 1


def test_backward_and_optimizers_write_grad_and_data():
    """zero_grad(); loss.backward(); opt.step(): .grad and .data written back at every replay."""
    for opt_class in (SGD, Adam):
        results = []
        for compiled in (False, True):
            model = Sequential(Linear(3, 8, rng=np.random.default_rng(0)),
                               Linear(8, 1, rng=np.random.default_rng(1)))
            opt = opt_class(model.parameters(), lr=0.01)

            def step(x, y):
                opt.zero_grad()
                loss = ops.mse_loss(ops.tanh(model(x)), y)
                loss.backward()
                opt.step()
                return loss

            f = compile(step) if compiled else step
            r = np.random.default_rng(2)
            losses = [f(Tensor(r.normal(size=(16, 3)).astype(np.float32)),
                        Tensor(r.normal(size=(16, 1)).astype(np.float32))).data for _ in range(6)]
            results.append((losses, [p.data for p in model.parameters()],
                            [p.grad.data for p in model.parameters()]))
        assert_same(results[1], results[0])


# ---------------------------------------------------------------------------- signatures and tapes
def test_a_new_signature_records_a_new_tape():
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    f = compile(lambda x, scale: ops.sum(ops.tanh(ops.matmul(x, w)) * scale))
    r = np.random.default_rng(0)
    for shape, scale, records in (((4, 3), 2.0, 1), ((4, 3), 2.0, 1), ((5, 3), 2.0, 2),
                                  ((4, 3), 3.0, 3), ((4, 3), 2.0, 3)):
        x = Tensor(r.normal(size=shape))
        assert_same(f(x, scale), ops.sum(ops.tanh(ops.matmul(x, w)) * scale))
        assert f.records == records, f"shape {shape}, scale {scale}"
    x32 = Tensor(r.normal(size=(4, 3)).astype(np.float32))
    with pytest.raises(TypeError, match="mismatched dtypes"):    # float32 against float64 w
        f(x32, 2.0)
    small = compile(lambda x: x * 2.0, cache_size=2)
    for n in (1, 2, 3, 1):
        small(Tensor(np.ones(n)))
    assert small.records == 4 and len(small.tapes()) == 2        # n=1 was evicted, then again


def test_an_optimizer_constant_that_changes_records_anew():
    p = Tensor(np.ones(3), requires_grad=True)
    opt = SGD([p], lr=0.1)
    f = compile(lambda: opt.step([Tensor(np.full(3, 2.0))]))
    f()
    f()
    assert f.records == 1 and np.allclose(p.data, 0.6)
    opt.lr = 0.2                                          # a guard: SGD declared lr as fixed
    f()
    assert f.records == 2 and np.allclose(p.data, 0.2)


def test_outputs_are_fresh_dead_values_dropped_and_buffers_reused():
    w = Tensor(np.linspace(-1, 1, 9).reshape(3, 3), requires_grad=True)

    def fn(x):
        h = ops.tanh(ops.matmul(x, w))
        ops.exp(h) * 3.0                                   # nothing needs it
        return ops.sum(ops.tanh(ops.matmul(h, w)) ** 2), grad(ops.sum(h * h), w)

    f = compile(fn)
    r = np.random.default_rng(0)
    first = f(Tensor(r.normal(size=(4, 3))))
    kept = [a.copy() for a in _arrays(first)]
    second = f(Tensor(r.normal(size=(4, 3))))
    assert_same(first, kept)                               # not overwritten by the next call
    assert not np.array_equal(_arrays(first)[1], _arrays(second)[1])
    text = str(f.tape)
    assert "exp" not in text and "recorded ones dropped" in text
    assert f.tape.recorded > f.tape.n_kernels() and len(f.tape.buffers) >= 1
    assert "reused buffers" in text and "tanh" in text and "<- input 0 (Tensor)" in text


class _Momentum:
    """SGD with momentum, its velocities in a dict: state a compiled step must carry."""

    def __init__(self, params, lr=0.1, mu=0.9):
        self.params, self.lr, self.mu = params, lr, mu
        self.velocity = {i: np.zeros_like(p.data) for i, p in enumerate(params)}

    def step(self, grads):
        from tinydan.compiler import declare_state
        declare_state(self, "velocity", fixed=("lr", "mu"), tensors=self.params)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.velocity[i] = self.mu * self.velocity[i] + g.data      # rebound: written back
            p.data = p.data - self.lr * self.velocity[i]


def test_declared_state_in_a_dict_is_carried_between_calls():
    results = []
    for compiled in (False, True):
        w = Tensor(np.linspace(-1, 1, 6).reshape(3, 2), requires_grad=True)
        opt = _Momentum([w])

        def step(x):
            loss = ops.sum(ops.tanh(ops.matmul(x, w)) ** 2)
            opt.step(grad(loss, [w]))
            return loss

        f = compile(step) if compiled else step
        r = np.random.default_rng(0)
        losses = [f(Tensor(r.normal(size=(4, 3)))).data for _ in range(5)]
        results.append((losses, w.data, opt.velocity[0]))
    assert_same(results[1], results[0])


def test_callback_runs_at_every_replay():
    draws = np.random.default_rng(0)
    f = compile(lambda x: x * callback(draws.normal, size=3))
    one, two = f(np.ones(3)), f(np.ones(3))
    assert not np.array_equal(one, two) and f.records == 1


# ---------------------------------------------------------------------------- refusals
def test_a_value_dependent_branch_names_the_line():
    def branchy(x):
        y = ops.tanh(x)
        if y.data.sum() > 0:                               # decides on a value
            return y * 2.0
        return y

    with pytest.raises(CompileError, match=r"test_compile\.py:\d+ in branchy \(`if y\.data\.sum"):
        compile(branchy)(Tensor(np.ones(3)))
    def reads_item(x):
        return ops.sum(x).item()

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(CompileError, match=r"float\(\).*in reads_item \(`return ops.sum"):
        compile(reads_item)(x)
    assert type(x.data) is np.ndarray, "a failed recording must give the Tensor its array back"


def test_the_in_place_blas_kernel_is_refused(numpy_floats):
    """inner_step(in_place=True) updates the synapses with BLAS on raw arrays: unrecordable."""
    cfg = regression_config("tiny")
    rng = np.random.default_rng(0)
    net = build_regression_net(cfg, rng)
    theta = {k: Tensor(np.array(v), requires_grad=True)
             for k, v in net.init_synapses(1, rng).items()}
    x = rng.uniform(-5, 5, (1, 1, 1)).astype(np.float32)
    f = compile(lambda th, x, y: meta.inner_step(net, th, x, y, 0.01, in_place=True))
    with pytest.raises(CompileError, match="BLAS"):
        f(theta, x, np.sin(x))


def test_writes_and_stores_the_tape_cannot_repeat_are_refused():
    buffer = np.zeros(3)

    def writes_outside(x):
        np.add(buffer, ops.tanh(x).data, out=buffer)       # an array that outlives the call
        return x

    with pytest.raises(CompileError, match="declare_state"):
        compile(writes_outside)(Tensor(np.ones(3)))
    cache = {}

    def stores(x):
        cache["h"] = ops.tanh(x).data                      # a computed array kept elsewhere
        return x

    with pytest.raises(CompileError, match="stored 1 computed array"):
        compile(stores)(Tensor(np.ones(3)))
    with pytest.raises(CompileError, match="has a graph"):
        w = Tensor(np.ones(3), requires_grad=True)
        compile(lambda x: x)(w * 2.0)
