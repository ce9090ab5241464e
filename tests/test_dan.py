"""VEC layers, DANs, sharing schemes and the regression network of
docs/model-and-protocol.md#regression-model."""
import numpy as np
import pytest

import tinydan as td
from tinydan.experiments.configs import build_regression_net, regression_config
from tinydan.nn import PlainMLP
from tinydan.nn import DANNetwork, MLPDAN, Module, Parameter, functional_call
from tinydan.testing import check_grad

pytestmark = pytest.mark.dan


def test_paper_network_shapes_and_parameter_counts():
    cfg = regression_config("paper")
    net = build_regression_net(cfg)
    # phi: 40*15 + 15 + 15*8 + 8 + 8*1 + 1
    assert net.num_parameters() == 752
    shapes = net.synapse_shapes()
    assert shapes == {"vec0.weight": (1, 1600), "vec0.bias": (1, 1600),
                      "vec1.weight": (40, 1600), "vec1.bias": (1, 1600),
                      "vec2.weight": (40, 40), "vec2.bias": (1, 40),
                      "skip0_2.weight": (1, 1600), "skip1_3.weight": (40, 40)}
    assert net.num_synapses() == 73640
    theta = {k: td.tensor(v) for k, v in net.init_synapses(3, np.random.default_rng(0)).items()}
    assert all(v.shape[0] == 3 for v in theta.values())
    assert np.array_equal(theta["vec1.weight"].data[0], theta["vec1.weight"].data[2])  # same theta0
    out = net(np.zeros((3, 7, 1)), theta)        # NumPy input: taken in the net's dtype
    assert out.shape == (3, 7, 1) and out.dtype == np.float32
    # scaled_tanh output lies in (-4, 4); linear output is not squashed
    assert np.all(np.abs(out.data) < 4)


def test_sharing_parameter_counts():
    cfg = regression_config("paper")
    per = 752
    assert build_regression_net(cfg, sharing="global").num_parameters() == per
    assert build_regression_net(cfg, sharing="per_layer").num_parameters() == 3 * per
    assert build_regression_net(cfg, sharing="unique").num_parameters() == 81 * per   # 81 DANs


def test_unique_sharing_equals_running_each_neuron_separately():
    rng = np.random.default_rng(0)
    C, n, R = 5, 4, 3
    dan = MLPDAN(C, (6, 3), n_neurons=n, rng=rng, dtype=np.float64)
    z = td.tensor(rng.standard_normal((R, n, C)))
    out = dan(z).data                                             # (R, n), one batched call
    for j in range(n):                                            # the loop the library avoids
        h = z.data[:, j, :]
        for i in range(3):
            h = h @ getattr(dan, f"w{i}").data[j] + getattr(dan, f"b{i}").data[j, 0]
            h = np.tanh(h)
        assert np.allclose(out[:, j], h[:, 0])


def test_shared_dan_is_one_function_applied_to_every_neuron():
    rng = np.random.default_rng(1)
    dan = MLPDAN(4, (3,), rng=rng, dtype=np.float64)
    z = rng.standard_normal((2, 5, 4))
    out = dan(td.tensor(z)).data
    single = dan(td.tensor(z[:, 2:3, :])).data
    assert np.allclose(out[:, 2:3], single)


def test_network_gradients_second_order_float64():
    cfg = regression_config("tiny")
    net = build_regression_net(cfg, np.random.default_rng(0), dtype=np.float64)
    theta = net.init_synapses(2, np.random.default_rng(1), dtype=np.float64, same=False)
    names = sorted(theta)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 1))

    def f(*ws):
        return net(td.tensor(x), dict(zip(names, ws)))
    check_grad(f, *[theta[k] for k in names], order=2)


def test_skip_vec_is_added_before_the_dans():
    """Zeroing the skip weights must equal a network built without skips."""
    cfg = regression_config("tiny")
    with_skip = build_regression_net(cfg, np.random.default_rng(0), dtype=np.float64)
    no_skip = build_regression_net(cfg.replace(skips=()), np.random.default_rng(0), dtype=np.float64)
    theta = with_skip.init_synapses(1, np.random.default_rng(1), dtype=np.float64)
    x = td.tensor(np.random.default_rng(2).uniform(-1, 1, (1, 4, 1)))
    base = no_skip(x, {k: td.tensor(v) for k, v in theta.items() if not k.startswith("skip")}).data
    zeroed = {k: td.tensor(v * 0 if k.startswith("skip") else v) for k, v in theta.items()}
    assert np.allclose(with_skip(x, zeroed).data, base)
    full = with_skip(x, {k: td.tensor(v) for k, v in theta.items()}).data
    assert not np.allclose(full, base)


def test_bad_shapes_and_configs_give_clear_errors():
    net = build_regression_net(regression_config("tiny"))
    theta = {k: td.tensor(v) for k, v in net.init_synapses(1, np.random.default_rng(0)).items()}
    with pytest.raises(ValueError, match=r"expected input of shape \(population, batch, 1\)"):
        net(td.tensor(np.zeros((1, 5, 3))), theta)
    with pytest.raises(ValueError, match="sharing must be one of"):
        build_regression_net(regression_config("tiny"), sharing="everything")
    with pytest.raises(ValueError, match="output must be one of"):
        regression_config("paper", output="sigmoid")
    with pytest.raises(ValueError, match="unknown regression config"):
        regression_config("huge")
    with pytest.raises(ValueError, match="channels per neuron"):
        MLPDAN(5)(td.tensor(np.zeros((2, 3, 4))))
    with pytest.raises(ValueError, match="skip"):
        DANNetwork((1, 4, 1), 3, lambda n_neurons=None: MLPDAN(3), skips=((0, 1),))


def test_module_state_dict_and_functional_call():
    class Affine(Module):
        def __init__(self):
            super().__init__()
            self.w = Parameter(np.ones((2, 2)))
            self.inner = MLPDAN(2, (3,), dtype=np.float64)

        def forward(self, x):
            return self.inner(td.reshape(x @ self.w, (1, 1, 2)))

    m = Affine()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["w", "inner.w0", "inner.b0", "inner.w1", "inner.b1"]
    sd = m.state_dict()
    m2 = Affine()
    m2.w.data = m2.w.data * 3
    m2.load_state_dict(sd)
    assert np.array_equal(m2.w.data, m.w.data)
    with pytest.raises(ValueError, match="has shape"):
        m2.load_state_dict({**sd, "w": np.ones(3)})
    with pytest.raises(KeyError, match="missing keys"):
        m2.load_state_dict({"w": sd["w"]})
    x = td.tensor(np.ones((1, 2)))
    w2 = td.tensor(np.full((2, 2), 2.0), requires_grad=True)
    y = functional_call(m, {"w": w2}, x)
    assert m.w is m._parameters["w"] and np.array_equal(m.w.data, sd["w"])  # restored
    g = td.grad(y.sum(), w2)                                     # gradient flows to the stand-in
    assert g.shape == (2, 2)


def test_plain_mlp_interface():
    mlp = PlainMLP((1, 40, 40, 1))
    assert mlp.num_synapses() == 40 + 40 + 1600 + 40 + 40 + 1
    theta = {k: td.tensor(v) for k, v in mlp.init_synapses(4, np.random.default_rng(0)).items()}
    assert mlp(np.zeros((4, 3, 1)), theta).shape == (4, 3, 1)
