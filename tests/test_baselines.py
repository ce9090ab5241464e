"""Continual-learning baselines: EWC's penalty and Fisher, the replay reservoir, warp layers."""
import numpy as np
import pytest

import tinydan as td
from tinydan.experiments.baselines import (ReservoirBuffer, WarpNet, ewc_penalty, output_fisher,
                               sequential_deploy, warp_width)
from tinydan.experiments.configs import build_regression_net, regression_config
from tinydan.nn import PlainMLP
from tinydan.tasks import EVAL_SEED, sample_functions
from tinydan.testing import check_grad

pytestmark = pytest.mark.regression


def _theta(rng, P=2, sizes=(1, 3, 3, 1)):
    return PlainMLP(sizes).init_synapses(P, rng, dtype=np.float64, same=False)


@pytest.mark.autograd
def test_ewc_penalty_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    theta = _theta(rng)
    names = list(theta)
    anchors = [({k: rng.uniform(0.1, 2.0, v.shape) for k, v in theta.items()},
                {k: v + rng.normal(0, 0.5, v.shape) for k, v in theta.items()}) for _ in range(2)]
    lam = 0.7

    def penalty(*ws):
        return ewc_penalty({k: w for k, w in zip(names, ws)}, anchors, lam)

    check_grad(penalty, *[theta[k] for k in names], order=2)          # float64, 1st and 2nd order
    # and it is the closed form lam * sum_i F_i (theta - star_i)
    leaves = {k: td.tensor(v, requires_grad=True) for k, v in theta.items()}
    gs = td.grad(ewc_penalty(leaves, anchors, lam), list(leaves.values()))
    for k, g in zip(names, gs):
        expect = lam * sum(F[k] * (theta[k] - s[k]) for F, s in anchors)
        assert np.allclose(g.data, expect)


@pytest.mark.autograd
def test_output_fisher_is_the_mean_squared_per_point_output_gradient():
    rng = np.random.default_rng(1)
    mlp, theta = PlainMLP((1, 3, 3, 1)), _theta(rng)
    x = rng.uniform(-2, 2, (2, 4, 1))
    fisher = output_fisher(mlp, theta, x)
    for p in range(2):
        for k in theta:
            sq = []
            for n in range(4):
                leaves = {j: td.tensor(v[p:p + 1], requires_grad=True) for j, v in theta.items()}
                out = mlp(td.tensor(x[p:p + 1, n:n + 1]), leaves)
                (g,) = td.grad(out.sum(), [leaves[k]])
                sq.append(g.data[0] ** 2)
            assert np.allclose(fisher[k][p], np.mean(sq, axis=0))


def test_replay_reservoir_never_holds_more_than_its_capacity_and_samples_uniformly():
    buf = ReservoirBuffer(5, streams=3, rng=np.random.default_rng(2))
    offered = []
    for b in (1, 3, 1, 7, 2, 20):                       # batches of several sizes
        x = np.random.default_rng(b).uniform(size=(3, b, 1)).astype(np.float32)
        buf.add(x, -x)
        offered.append(x)
        assert len(buf) <= 5 and buf.x.shape == (3, 5, 1) and buf.y.shape == (3, 5, 1)
    assert len(buf) == 5 and buf.seen == 34
    seen = np.concatenate(offered, axis=1)
    for s in range(3):                                  # only offered points, each with its y
        assert set(buf.x[s, :, 0]) <= set(seen[s, :, 0])
        assert np.array_equal(buf.y[s], -buf.x[s])
    xs, ys = buf.sample(8)
    assert xs.shape == (3, 8, 1) and np.array_equal(ys, -xs)
    # algorithm R keeps each of n points with probability capacity / n (4000 independent streams)
    big = ReservoirBuffer(5, streams=4000, rng=np.random.default_rng(3))
    for i in range(20):
        big.add(np.full((4000, 1, 1), i, np.float32), np.zeros((4000, 1, 1), np.float32))
    freq = np.array([(big.x[..., 0] == i).any(axis=1).mean() for i in range(20)])
    assert np.allclose(freq, 5 / 20, atol=0.04)
    with pytest.raises(ValueError, match="capacity"):
        ReservoirBuffer(0, streams=1)


@pytest.mark.meta
def test_sequential_deploy_naive_is_deploy_and_ewc_without_penalty_is_naive():
    from tinydan.regression import deploy
    cfg = regression_config("tiny")
    mlp = PlainMLP((1, 8, 8, 1))
    theta0 = mlp.init_synapses(1, np.random.default_rng(4))
    f = sample_functions(cfg, np.random.default_rng(EVAL_SEED), 3, "test")
    naive = sequential_deploy(mlp, theta0, f, cfg, lr=0.05)["R"]
    assert np.allclose(naive, deploy(mlp, theta0, f, cfg, lr=0.05)["R"], rtol=1e-5, atol=1e-7)
    assert np.allclose(sequential_deploy(mlp, theta0, f, cfg, lr=0.05, method="ewc", lam=0.0)["R"], naive)
    ewc = sequential_deploy(mlp, theta0, f, cfg, lr=0.05, method="ewc", lam=10.0)["R"]
    replay = sequential_deploy(mlp, theta0, f, cfg, lr=0.05, method="replay", capacity=4)["R"]
    assert ewc.shape == replay.shape == (3, 5, 5)
    assert not np.allclose(ewc, naive) and not np.allclose(replay, naive)
    with pytest.raises(ValueError, match="method"):
        sequential_deploy(mlp, theta0, f, cfg, lr=0.05, method="si")


@pytest.mark.meta
def test_warp_layers_are_meta_learned_and_fixed_at_deployment():
    from tinydan.meta import MetaTrainer
    from tinydan.regression import _sampler, deploy
    n_phi = build_regression_net(regression_config("default")).num_parameters()
    assert n_phi == 752
    h = warp_width(n_phi)
    assert abs(WarpNet((1, h, h, 1)).num_parameters() - n_phi) <= 0.05 * n_phi
    cfg = regression_config("tiny")
    net = WarpNet((1, 5, 5, 1))
    theta0 = net.init_synapses(cfg.population, np.random.default_rng(5))
    x = np.random.default_rng(6).uniform(-5, 5, (1, 7, 1)).astype(np.float32)
    plain = PlainMLP((1, 5, 5, 1))(x, {k: td.tensor(v) for k, v in theta0.items()}).data
    assert np.allclose(net(x, {k: td.tensor(v) for k, v in theta0.items()}).data, plain)  # identity start
    tr = MetaTrainer(net, theta0, _sampler(cfg), cfg.inner_lr, 1e-2, seed=0)
    before = net.state_dict()
    tr.run_epoch()
    after = net.state_dict()
    assert any(not np.array_equal(before[k], after[k]) for k in before)       # meta-learned
    f = sample_functions(cfg, np.random.default_rng(EVAL_SEED), 2, "test")
    R = deploy(net, theta0, f, cfg)["R"]
    assert R.shape == (2, 5, 5) and np.all(np.isfinite(R))
    assert all(np.array_equal(after[k], v) for k, v in net.state_dict().items())  # fixed
