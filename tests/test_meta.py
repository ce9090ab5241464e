"""Algorithm 1: the one-step meta-gradient, population averaging, determinism, resume."""
import sys

import numpy as np
import pytest

import tinydan as td
from tinydan.meta import MetaTrainer, inner_step, meta_step
from tinydan.experiments.configs import build_regression_net, regression_config
from tinydan.regression import new_trainer

pytestmark = [pytest.mark.meta, pytest.mark.dan]    # Algorithm 1 runs the DAN forward


def _setup(M=1, seed=0):
    cfg = regression_config("tiny")
    net = build_regression_net(cfg, np.random.default_rng(seed), dtype=np.float64)
    theta = net.init_synapses(M, np.random.default_rng(seed + 1), dtype=np.float64, same=False)
    rng = np.random.default_rng(seed + 2)
    xt = rng.uniform(-1, 1, (M, 2, 1))
    xm = rng.uniform(-1, 1, (M, 5, 1))
    return net, theta, xt, np.sin(3 * xt), xm, np.cos(2 * xm)


def _leaves(theta):
    return {k: td.tensor(v, requires_grad=True) for k, v in theta.items()}


def _post_step_meta_loss(net, theta, xt, yt, xm, ym, lr):
    _, _, _, lm = meta_step(net, _leaves(theta), xt, yt, xm, ym, lr, "one_step")
    return lm


def test_one_step_meta_gradient_matches_finite_differences_and_differs_from_first_order():
    net, theta, xt, yt, xm, ym = _setup()
    lr = 0.5                                   # large, so the step's dependence on phi matters
    _, g1, _, _ = meta_step(net, _leaves(theta), xt, yt, xm, ym, lr, "one_step")
    _, g0, _, _ = meta_step(net, _leaves(theta), xt, yt, xm, ym, lr, "first_order")
    phi = net.parameters()
    eps = 1e-6
    for p, ga, gf in zip(phi, g1, g0):
        num = np.zeros_like(p.data)
        for k in np.ndindex(p.shape):
            old = p.data[k]
            p.data[k] = old + eps
            hi = _post_step_meta_loss(net, theta, xt, yt, xm, ym, lr)
            p.data[k] = old - eps
            lo = _post_step_meta_loss(net, theta, xt, yt, xm, ym, lr)
            p.data[k] = old
            num[k] = (hi - lo) / (2 * eps)
        assert np.allclose(ga.data, num, atol=1e-7, rtol=1e-5), (ga.data, num)
    diff = max(np.abs(a.data - b.data).max() for a, b in zip(g1, g0))
    scale = max(np.abs(a.data).max() for a in g1)
    assert diff > 1e-3 * scale                  # first-order drops the d theta_1 / d phi term


def test_first_order_meta_gradient_is_the_gradient_at_fixed_updated_synapses():
    net, theta, xt, yt, xm, ym = _setup()
    new, _ = inner_step(net, _leaves(theta), xt, yt, 0.5)
    direct = td.grad(td.mse_loss(net(xm, {k: v.detach() for k, v in new.items()}), td.tensor(ym)),
                     net.parameters())
    _, g0, _, _ = meta_step(net, _leaves(theta), xt, yt, xm, ym, 0.5, "first_order")
    for a, b in zip(direct, g0):
        assert np.allclose(a.data, b.data)


@pytest.mark.parametrize("mode", ["first_order", "one_step"])
def test_population_gradient_is_the_mean_of_member_gradients(mode):
    M = 3
    net, theta, xt, yt, xm, ym = _setup(M)
    new, g, _, _ = meta_step(net, _leaves(theta), xt, yt, xm, ym, 0.3, mode)
    members = []
    for m in range(M):
        th_m = {k: v[m:m + 1] for k, v in theta.items()}
        new_m, g_m, _, _ = meta_step(net, _leaves(th_m), xt[m:m + 1], yt[m:m + 1], xm[m:m + 1],
                                     ym[m:m + 1], 0.3, mode)
        members.append(g_m)
        for k in new:                           # each member's synapses get exactly its own step
            assert np.allclose(new[k].data[m], new_m[k].data[0])
    for i, gp in enumerate(g):
        assert np.allclose(gp.data, np.mean([gm[i].data for gm in members], axis=0))


def test_same_seed_gives_bit_identical_results():
    cfg = regression_config("tiny")
    a, b = new_trainer(cfg, 3), new_trainer(cfg, 3)
    for _ in range(2):
        ra, rb = a.run_epoch(), b.run_epoch()
        assert ra == rb
    for (ka, pa), (kb, pb) in zip(a.net.named_parameters(), b.net.named_parameters()):
        assert ka == kb and np.array_equal(pa.data, pb.data)
    c = new_trainer(cfg, 4)
    c.run_epoch()
    assert not np.array_equal(c.net.parameters()[0].data, a.net.parameters()[0].data)


def test_resume_continues_exactly():
    cfg = regression_config("tiny")
    straight = new_trainer(cfg, 5)
    for _ in range(3):
        straight.run_epoch()
    first = new_trainer(cfg, 5)
    first.run_epoch()
    arrays, meta = first.state_arrays(), first.state_meta()
    second = new_trainer(cfg, 5)
    second.load_state(arrays, meta)
    for _ in range(2):
        second.run_epoch()
    assert second.epoch == 3
    for p, q in zip(straight.net.parameters(), second.net.parameters()):
        assert np.array_equal(p.data, q.data)
    assert straight.history == second.history


def test_meta_training_reduces_the_meta_loss():
    """A few epochs of the tiny config must lower the meta-loss (Algorithm 1 actually learns)."""
    cfg = regression_config("tiny", meta_lr=3e-3, steps_per_window=20)
    tr = new_trainer(cfg, 0)
    losses = [tr.run_epoch()["meta_loss"] for _ in range(12)]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


def test_bad_meta_arguments_give_clear_errors():
    net, theta, xt, yt, xm, ym = _setup()
    with pytest.raises(ValueError, match="meta_grad must be one of"):
        meta_step(net, _leaves(theta), xt, yt, xm, ym, 0.1, "second_order")
    with pytest.raises(ValueError, match="meta_optimizer"):
        MetaTrainer(net, theta, None, 0.1, 0.1, meta_optimizer="rmsprop")


def test_differentiable_sgd_step_carries_the_gradient_graph():
    """optim.sgd_step: theta' = theta - lr g stays a function of what shaped g (create_graph)."""
    from tinydan.optim import sgd_step
    w = td.tensor(np.array([1.5, -0.5]), requires_grad=True)
    a = td.tensor(2.0, requires_grad=True, dtype=np.float64)
    g = td.grad((a * w * w).sum(), w, create_graph=True)          # g = 2 a w
    new = sgd_step({"w": w}, {"w": g}, 0.1)                          # w' = w - 0.2 a w
    (da,) = td.grad(new["w"].sum(), [a])
    assert np.isclose(da.item(), -0.2 * w.data.sum())
    assert np.allclose(new["w"].data, w.data * (1 - 0.2 * 2.0))


@pytest.mark.parametrize("dtype,vec_activation", [(np.float64, "none"), (np.float32, "tanh")])
def test_in_place_sgd_step_matches_deploy_step(dtype, vec_activation):
    """sgd_step_ (W -= lr a^T dz by one GEMM per member, in place) gives deploy_step's synapses,
    members apart (each its own data), skips and biases included."""
    from tinydan.meta import deploy_step, sgd_step_
    cfg = regression_config("tiny", vec_activation=vec_activation, skips=((0, 2), (1, 3)))
    net = build_regression_net(cfg, np.random.default_rng(0), dtype=dtype)
    theta = net.init_synapses(3, np.random.default_rng(1), dtype=dtype, same=False)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (3, 4, 1)).astype(dtype)
    y = np.sin(3 * x)
    want, want_loss = deploy_step(net, _leaves(theta), x, y, 0.3)
    mine = _leaves({k: v.copy() for k, v in theta.items()})
    arrays = {k: v.data for k, v in mine.items()}
    got, got_loss = sgd_step_(net, mine, x, y, 0.3)
    assert set(got) == set(theta) and np.isclose(got_loss, want_loss)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for k in theta:
        assert got[k].data is arrays[k], f"{k} was not updated in place"
        assert not np.allclose(got[k].data, theta[k]), f"{k} did not move"
        np.testing.assert_allclose(got[k].data, want[k].data, rtol=tol, atol=tol, err_msg=k)


def test_in_place_meta_step_and_trainer():
    """meta_step(in_place=True) (first_order: the inner step is sgd_step_) returns the synapses and
    the meta-gradient of the plain first_order step; a MetaTrainer with in_place copies theta_0
    each meta-epoch (theta_0 is never overwritten) and trains phi as the plain one does."""
    net, theta, xt, yt, xm, ym = _setup(M=2)
    want = meta_step(net, _leaves(theta), xt, yt, xm, ym, 0.3, "first_order")
    mine = _leaves({k: v.copy() for k, v in theta.items()})
    arrays = {k: v.data for k, v in mine.items()}
    got = meta_step(net, mine, xt, yt, xm, ym, 0.3, "first_order", in_place=True)
    for k in theta:
        assert got[0][k].data is arrays[k] and np.allclose(got[0][k].data, want[0][k].data, atol=1e-12)
        assert not np.allclose(got[0][k].data, theta[k])
    for a, b in zip(got[1], want[1]):
        assert (a is None) == (b is None) and (a is None or np.allclose(a.data, b.data, atol=1e-12))
    assert np.isclose(got[2], want[2]) and np.isclose(got[3], want[3])

    cfg = regression_config("tiny")
    plain, fast = new_trainer(cfg, 3), new_trainer(cfg, 3)
    fast.in_place = True
    theta0 = {k: np.array(v) for k, v in fast.theta0.items()}
    for _ in range(2):
        ra, rb = plain.run_epoch(), fast.run_epoch()
        assert np.isclose(ra["meta_loss"], rb["meta_loss"], rtol=1e-4)
    for k, v in fast.theta0.items():
        assert np.array_equal(np.asarray(v), theta0[k]), f"theta_0 {k} was overwritten"
    for p, q in zip(plain.net.parameters(), fast.net.parameters()):
        assert np.allclose(p.data, q.data, rtol=1e-4, atol=1e-6)


def test_in_place_sgd_step_copies_read_only_synapses():
    """A leaf over a read-only array (np.load, broadcast_to) is copied, not written into."""
    from tinydan.meta import sgd_step_
    net, theta, xt, yt, _, _ = _setup(M=2)
    ro = {k: np.array(v) for k, v in theta.items()}
    for v in ro.values():
        v.flags.writeable = False
    leaves = _leaves(ro)
    got, _ = sgd_step_(net, leaves, xt, yt, 0.3)
    for k in theta:
        assert np.array_equal(ro[k], theta[k]) and got[k].data is not ro[k]
        assert not np.allclose(got[k].data, theta[k])


@pytest.mark.parametrize("meta_grad", ["first_order", "one_step"])
@pytest.mark.parametrize("processes", [2, 3])
def test_population_split_across_processes_is_the_same_meta_step(meta_grad, processes):
    """PopulationSplit: each process runs meta_step on its own members (the workers keep theirs
    between steps); the combined phi gradient and losses are the whole population's, step after
    step, in float64 to rounding."""
    from tinydan.meta import PopulationSplit, _as_leaves
    net, theta, xt, yt, xm, ym = _setup(M=3)
    split = PopulationSplit(net, 3, processes)
    try:
        assert [b.stop - b.start for b in split.blocks] == ([2, 1] if processes == 2 else [1, 1, 1])
        mine, whole = split.reset(theta), _as_leaves(theta, copy=True)
        for step in range(3):                              # the workers' synapses carry on
            a, b = xt + 0.1 * step, xm - 0.1 * step
            got = split.meta_step(net, mine, a, np.sin(3 * a), b, np.cos(2 * b), 0.3, meta_grad,
                                  in_place=True)
            want = meta_step(net, whole, a, np.sin(3 * a), b, np.cos(2 * b), 0.3, meta_grad,
                             in_place=True)
            mine, whole = got[0], want[0]
            for k in theta:                                # this process's members' synapses
                np.testing.assert_allclose(mine[k].data, whole[k].data[split.blocks[0]], rtol=1e-12)
            for g, w in zip(got[1], want[1]):
                assert (g is None) == (w is None)
                if g is not None:
                    np.testing.assert_allclose(g, w.data, rtol=1e-10, atol=1e-14)
            assert np.isclose(got[2], want[2], rtol=1e-12) and np.isclose(got[3], want[3], rtol=1e-12)
    finally:
        split.close()
    assert split.workers == []


def test_trainer_with_processes_trains_as_one_process_and_reports_a_dead_worker():
    cfg = regression_config("tiny", population=3)
    one, two = new_trainer(cfg, 5), new_trainer(cfg, 5)
    two.processes = 2
    for _ in range(2):
        ra, rb = one.run_epoch(), two.run_epoch()
        assert np.isclose(ra["meta_loss"], rb["meta_loss"], rtol=1e-4)
    for p, q in zip(one.net.parameters(), two.net.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-4, atol=1e-6)
    procs = [proc for pool in two._split.workers for proc in pool.processes()]
    assert procs and all(p.is_alive() for p in procs)
    procs[0].kill()
    procs[0].join()
    with pytest.raises(RuntimeError, match="worker process has stopped.*resume"):
        two.run_epoch()
    assert not any(p.is_alive() for p in procs)
    # the next meta-epoch starts new workers (theta_0 is sent at each meta-epoch): nothing silently
    # runs with a member missing
    out = two.run_epoch()
    new = [proc for pool in two._split.workers for proc in pool.processes()]
    assert np.isfinite(out["meta_loss"]) and new and all(p.is_alive() for p in new)
    assert new[0] not in procs
    two.close()


def test_an_interrupted_split_step_closes_the_split(monkeypatch):
    """If this process's share fails after the workers were sent theirs, their replies are never
    read: the split closes (and says so next time) instead of answering a later step with them."""
    import tinydan.meta as meta
    from tinydan.meta import PopulationSplit
    net, theta, xt, yt, xm, ym = _setup(M=3)
    split = PopulationSplit(net, 3, 2)
    mine = split.reset(theta)
    procs = [p for pool in split.workers for p in pool.processes()]

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(meta, "meta_step", interrupted)     # this process only: the worker has forked
    with pytest.raises(KeyboardInterrupt):
        split.meta_step(net, mine, xt, yt, xm, ym, 0.3)
    monkeypatch.undo()
    assert split.closed and not any(p.is_alive() for p in procs)
    with pytest.raises(RuntimeError, match="closed"):
        split.meta_step(net, mine, xt, yt, xm, ym, 0.3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_population_worker_stops_when_its_parent_is_killed(tmp_path):
    """A killed parent sends no "stop": the worker notices that its parent is gone and exits."""
    import os
    import signal
    import subprocess
    import time
    script = tmp_path / "parent.py"
    script.write_text(
        "import time, numpy as np\n"
        "from tinydan.meta import PopulationSplit\n"
        "from tinydan.experiments.configs import build_regression_net, regression_config\n"
        "net = build_regression_net(regression_config('tiny'), np.random.default_rng(0))\n"
        "split = PopulationSplit(net, 2, 2)\n"
        "print(split.pids()[0], flush=True)\n"
        "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for _ in range(100):                                # up to 10 s
            try:                                            # gone, or a zombie nobody reaps
                with open(f"/proc/{child}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                        break
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the worker outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_bad_process_counts_are_refused():
    cfg = regression_config("tiny")
    with pytest.raises(ValueError, match="processes must be >= 1"):
        MetaTrainer(**{**_trainer_args(cfg), "processes": 0})
    with pytest.raises(ValueError, match="meta_updates 1"):
        MetaTrainer(**{**_trainer_args(cfg), "processes": 2, "meta_updates": 2})


def _trainer_args(cfg):
    t = new_trainer(cfg, 0)
    return dict(net=t.net, theta0=t.theta0, sample=t.sample, inner_lr=t.inner_lr, meta_lr=t.meta_lr)


def test_meta_lr_decays_per_meta_epoch_and_resumes_exactly():
    """meta_lr_decay d: phi's rate in meta-epoch e is meta_lr * d^e, derived from the epoch count,
    so a resumed trainer continues with the same rates."""
    cfg = regression_config("tiny")
    const, dec = new_trainer(cfg, 4), new_trainer(cfg, 4)
    dec.meta_lr_decay = 0.5
    rates = []
    for _ in range(3):
        const.run_epoch()
        dec.run_epoch()
        rates.append(dec.optimizer.lr)
    assert rates == [cfg.meta_lr, cfg.meta_lr / 2, cfg.meta_lr / 4] and const.optimizer.lr == cfg.meta_lr
    assert not all(np.allclose(p.data, q.data) for p, q in zip(const.net.parameters(),
                                                              dec.net.parameters()))
    again = new_trainer(cfg, 4)
    again.meta_lr_decay = 0.5
    again.run_epoch()
    resumed = new_trainer(cfg, 4)
    resumed.meta_lr_decay = 0.5
    resumed.load_state(again.state_arrays(), again.state_meta())
    for _ in range(2):
        resumed.run_epoch()
    for p, q in zip(dec.net.parameters(), resumed.net.parameters()):
        assert np.array_equal(p.data, q.data)
    with pytest.raises(ValueError, match="meta_lr_decay"):
        MetaTrainer(**{**_trainer_args(cfg), "meta_lr_decay": 0.0})


def test_a_copied_trainer_trains_as_the_original():
    """deepcopy of a MetaTrainer (lesson 05 copies one) leaves its compiled step behind: the copy
    records its own and trains exactly as the original does."""
    import copy
    one = new_trainer(regression_config("tiny"), 0)
    one.run_epoch()
    two = copy.deepcopy(one)
    one.run_epoch()
    two.run_epoch()
    for p, q in zip(one.net.parameters(), two.net.parameters()):
        assert np.array_equal(p.data, q.data) and p is not q


@pytest.mark.parametrize("dtypes", [("float32",) * 3, ("float64",) * 3, ("float32", "float64",
                                                                            "float32")])
def test_adam_flat_moments_equal_the_per_parameter_rule_bit_for_bit(dtypes):
    """Adam's moments live in two flat vectors when the parameters share a dtype (a loop over
    them otherwise); either way every element follows m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g^2,
    p <- p - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps sqrt(1-b2^t)) exactly, with a rate that
    changes between steps and a parameter without gradient skipped."""
    from tinydan.optim import Adam
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (3,), (2, 5)]
    init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    params = [td.tensor(x.copy(), requires_grad=True) for x in init]
    opt = Adam(params, lr=1e-2)
    assert (opt._slices is not None) == (len(set(dtypes)) == 1)
    ref_p = [x.copy() for x in init]
    ref_m = [np.zeros_like(x) for x in init]
    ref_v = [np.zeros_like(x) for x in init]
    b1, b2, eps, t = 0.9, 0.999, 1e-8, 0
    for step in range(6):
        gs = [(rng.standard_normal(s) * 3).astype(d) for s, d in zip(shapes, dtypes)]
        if step == 3:
            gs[1] = None                                     # no gradient: left alone
        opt.lr = 1e-2 * 0.5 ** step
        opt.step(gs)
        t += 1
        c2 = 1 - b2 ** t
        lr_t, eps_t = opt.lr * np.sqrt(c2) / (1 - b1 ** t), eps * np.sqrt(c2)
        for i, g in enumerate(gs):
            if g is None:
                continue
            ref_m[i] *= b1
            ref_m[i] += (1 - b1) * g
            ref_v[i] *= b2
            ref_v[i] += (1 - b2) * (g * g)
            ref_p[i] = ref_p[i] - (lr_t * ref_m[i] / (np.sqrt(ref_v[i]) + eps_t)).astype(
                ref_p[i].dtype, copy=False)
    for p, r, m, rm, v, rv in zip(params, ref_p, opt.m, ref_m, opt.v, ref_v):
        assert np.array_equal(p.data, r) and np.array_equal(m, rm) and np.array_equal(v, rv)
    state = opt.state_dict()                                 # the checkpoint format: m.i, v.i
    again = Adam([td.tensor(x.copy(), requires_grad=True) for x in init], lr=1e-2)
    again.load_state_dict(state)
    assert all(np.array_equal(a, b) for a, b in zip(again.m + again.v, opt.m + opt.v))
    if again._slices is not None:                            # restored into the flat vectors
        assert np.shares_memory(again.m[0], again.m_all)
