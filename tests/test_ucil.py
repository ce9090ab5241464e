"""The UCIL experiment: the conv DAN and its fast kernels, the autoencoder's shapes and counts,
the meta-gradient against finite differences, and an end-to-end run of the tiny config."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import tinydan as td
from tinydan import ucil
from tinydan.checkpoint import CheckpointError, load_checkpoint
from tinydan.experiments.common import ValidationQueue, validation_parts
from tinydan.meta import meta_step
from tinydan.nn.dan import ConvDAN
from tinydan.nn.module import functional_call
from tinydan.ops.conv import checkpoint_rows, conv2d_rows, dense_conv_weight, max_pool_rows
from tinydan.testing import check_grad


def _patch(monkeypatch, name, value):
    """Replace ``name`` wherever the UCIL experiment's modules hold it."""
    import importlib
    found = False
    for module in ("ucil", "ucil_cli", "ucil_compare", "ucil_selection", "ucil_data", "configs",
                   "common"):
        m = importlib.import_module(f"tinydan.experiments.{module}")
        if hasattr(m, name):
            monkeypatch.setattr(m, name, value)
            found = True
    assert found, name

pytestmark = pytest.mark.ucil

rng = np.random.default_rng(11)


def _rows(x):
    """(N, C, H, W) -> channels-last rows (N, H, W*C)."""
    n, c, h, w = x.shape
    return x.transpose(0, 2, 3, 1).reshape(n, h, w * c)


@pytest.fixture(scope="module")
def data():
    """Omniglot + MNIST, or a skip that says why."""
    from tinydan.datasets import DatasetError
    try:
        return ucil.load_data(ucil.ucil_config("tiny"), mnist=True)
    except (DatasetError, OSError) as e:
        pytest.skip(f"Omniglot/MNIST not found in the cache or an offline copy, and not "
                    f"downloadable: {e}")


# ------------------------------------------------------------------------------------------ shapes
def test_paper_config_shapes_and_counts():
    """docs/model-and-protocol.md#ucil-model: VEC shapes with n_out * C columns, skips A (0->2)
    and B (1->4), ~38.6M synapses per model (counted from the shapes, never allocated), and the
    DAN's phi."""
    cfg = ucil.ucil_config("paper")
    net = ucil.build_ucil_net(cfg)
    C = 100
    assert net.nodes == (784, 120, 100, 120, 784) and net.n_channels == C
    shapes = net.synapse_shapes()
    assert shapes["vec0.weight"] == (784, 120 * C)
    assert shapes["vec1.weight"] == (120, 100 * C)
    assert shapes["vec2.weight"] == (100, 120 * C)
    assert shapes["vec3.weight"] == (120, 784 * C)
    assert shapes["skip0_2.weight"] == (784, 100 * C)      # skip A: input DANs -> E2
    assert shapes["skip1_4.weight"] == (120, 784 * C)      # skip B: E1 -> output (jumps 3 layers)
    assert shapes["vec3.bias"] == (1, 784 * C)
    n = net.num_synapses()
    assert n == sum(int(np.prod(s)) for s in shapes.values())
    assert n == 38_576_400 and 38e6 < n < 39e6
    assert len(net.dans) == 4 and net.sharing == "per_layer"
    dan = net.dans[0]
    assert dan.side == 10 and dan.flat == 4 * 6 * 6 == 144
    counts = {k: p.size for k, p in dan.named_parameters()}
    assert counts == {"conv0_w": 8 * 1 * 2 * 2, "conv0_b": 8, "conv1_w": 4 * 8 * 2 * 2, "conv1_b": 4,
                      "fc0_w": 144 * 30, "fc0_b": 30, "fc1_w": 30, "fc1_b": 1}
    assert dan.num_parameters() == 4553
    inp = net.input_layer
    assert inp.w0.shape == (8, 1, 3, 3) and inp.w1.shape == (1, 8, 3, 3)
    assert net.num_parameters() == 4 * 4553 + (72 + 8 + 72 + 1)


def test_small_config_is_the_same_structure_scaled_down():
    cfg = ucil.ucil_config("small")
    paper = ucil.ucil_config("paper")
    assert cfg.skips == paper.skips and cfg.sharing == paper.sharing
    assert cfg.nodes[0] == cfg.nodes[-1] == cfg.image_side ** 2 == 196 and len(cfg.nodes) == 5
    assert cfg.deploy_steps == 60 and cfg.shots == 5 and cfg.n_classes == 10 and cfg.population == 3
    net = ucil.build_ucil_net(cfg)
    dan = net.dans[0]
    assert dan.side == 6 and dan.flat == 4 * 3 * 3
    assert net.num_synapses() < 5_000_000 < 38_000_000
    z = td.tensor(rng.standard_normal((2, 3, 36)).astype(np.float32))
    assert dan(z).shape == (2, 3)


def test_autoencoder_forward_shapes():
    cfg = ucil.ucil_config("tiny")
    net, theta0 = ucil.initial_state(cfg, 0, population=2)
    D = cfg.image_side ** 2
    x = rng.random((2, 3, D)).astype(np.float32)
    out = net(td.tensor(x), {k: td.tensor(v) for k, v in theta0.items()})
    assert out.shape == (2, 3, D) and out.dtype == np.float32
    with pytest.raises(ValueError, match=f"population, batch, {D}"):
        net(td.tensor(x[0]), {k: td.tensor(v) for k, v in theta0.items()})


# ------------------------------------------------------------------------------ fast conv kernels
@pytest.mark.parametrize("shape,wshape", [((3, 1, 10, 10), (8, 1, 2, 2)), ((2, 8, 9, 9), (4, 8, 2, 2)),
                                          ((2, 3, 7, 6), (2, 3, 3, 2))])
def test_banded_rows_convolution_matches_conv2d(shape, wshape):
    x, w, b = rng.standard_normal(shape), rng.standard_normal(wshape), rng.standard_normal(wshape[0])
    ref = _rows(td.conv2d(td.tensor(x), td.tensor(w), td.tensor(b)).data)
    ow = shape[3] - wshape[3] + 1
    for block in [d for d in range(1, ow + 1) if ow % d == 0]:
        out = conv2d_rows(td.tensor(_rows(x)), td.tensor(w), td.tensor(b), block=block)
        assert np.allclose(out.data, ref), block


@pytest.mark.parametrize("k", [1, 2, 3])
def test_separable_max_pool_matches_max_pool2d(k):
    x = rng.standard_normal((2, 4, 8, 8))
    ref = _rows(td.max_pool2d(td.tensor(x), k, 1).data)
    assert np.array_equal(max_pool_rows(td.tensor(_rows(x)), k, 4).data, ref)


def test_rows_kernels_second_order():
    check_grad(lambda x, w, b: td.tanh(conv2d_rows(x, w, b, block=2)), rng.standard_normal((2, 4, 15)),
               rng.standard_normal((2, 3, 2, 2)), rng.standard_normal(2))
    check_grad(lambda x: max_pool_rows(x * x, 3, 2) ** 2, rng.standard_normal((2, 5, 10)))

    def fn(x, ps):
        w, b = ps
        return td.tanh(td.linear(x, w, b)).sum(axis=1)
    check_grad(lambda x, w, b: checkpoint_rows(fn, x, [w, b], 2) ** 2, rng.standard_normal((5, 3)),
               rng.standard_normal((3, 4)), rng.standard_normal(4))


@pytest.mark.parametrize("C,convs,pool,dense_max,dense", [
    (100, ((8, 2), (4, 2)), 3, None, [False, False]),      # paper: banded strips
    (36, ((4, 2), (4, 2)), 2, None, [True, True]),         # small: whole-image matrices
    (36, ((4, 2), (4, 2)), 2, 4000, [True, False]),        # mixed
    (36, ((4, 2), (4, 2)), 2, 0, [False, False])])
@pytest.mark.parametrize("keep", [False, True])
def test_conv_dan_fast_path_matches_reference(C, convs, pool, dense_max, dense, keep):
    """forward (banded rows or whole-image matrices, separable pool, checkpointed chunks, kept or
    recomputed) == reference_forward (conv2d), and so do the gradients w.r.t. the inputs and phi."""
    dan = ConvDAN(C, convs, pool, 7, rng=rng, dtype=np.float64, chunk=4, dense_max=dense_max)
    assert dan.dense == dense
    dan.keep_bytes = dan.KEEP_BYTES if keep else 0
    z = td.tensor(rng.standard_normal((3, 5, C)), requires_grad=True)
    fast, ref = dan(z), dan.reference_forward(z)
    assert np.allclose(fast.data, ref.data, atol=1e-12)
    v = td.tensor(rng.standard_normal(fast.shape))
    g_fast = td.grad((fast * v).sum(), [z] + dan.parameters())
    g_ref = td.grad((ref * v).sum(), [z] + dan.parameters())
    for a, b in zip(g_fast, g_ref):
        assert np.allclose(a.data, b.data, atol=1e-10)


@pytest.mark.parametrize("dense_max", [None, 0])
def test_conv_dan_second_order(dense_max):
    dan = ConvDAN(16, ((3, 2), (2, 2)), 2, 5, rng=rng, dtype=np.float64, chunk=3, dense_max=dense_max)
    assert dan.dense == [dense_max is None] * 2
    names = [n for n, _ in dan.named_parameters()]
    check_grad(lambda z, *ps: functional_call(dan, dict(zip(names, ps)), z) ** 2,
               rng.standard_normal((2, 4, 16)), *[p.data.copy() for p in dan.parameters()])


@pytest.mark.parametrize("shape", [(2, 3, 1, 2), (3, 2, 2, 2), (4, 3, 2, 3)])
def test_dense_conv_weight_is_conv2d(shape):
    """x.flat @ dense_conv_weight(w) == conv2d(x, w) in channels-last order, and its gradient
    reaches w (a 3x4 image: not square, so rows and columns cannot be swapped unnoticed)."""
    f, c, kh, kw = shape
    x, w = rng.standard_normal((5, c, 3, 4)), rng.standard_normal(shape)
    ref = _rows(td.conv2d(td.tensor(x), td.tensor(w)).data).reshape(5, -1)
    T = dense_conv_weight(td.tensor(w), 3, 4)
    assert T.shape == (3 * 4 * c, (3 - kh + 1) * (4 - kw + 1) * f)
    assert np.allclose(_rows(x).reshape(5, -1) @ T.data, ref)
    check_grad(lambda w: td.tanh(dense_conv_weight(w, 3, 4)), w)


@pytest.mark.parametrize("threads", [1, 3])
def test_checkpoint_rows_keep_matches_recompute(threads):
    """keep=True stores each chunk's graph: the same gradients as recomputing, without calling fn
    again in a plain backward; first and second order (with create_graph it recomputes)."""
    calls = [0]

    def fn(x, ps):
        calls[0] += 1
        w, b = ps
        return td.tanh(td.linear(x, w, b)).sum(axis=1)
    x, w, b = rng.standard_normal((7, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    grads = []
    for keep in (False, True):
        ts = [td.tensor(a, requires_grad=True) for a in (x, w, b)]
        calls[0] = 0
        out = checkpoint_rows(fn, ts[0], ts[1:], 3, threads=threads, keep=keep)
        assert calls[0] == 3                                   # 7 rows in chunks of 3
        grads.append([g.data for g in td.grad((out ** 2).sum(), ts)])
        assert calls[0] == (3 if keep else 6)                  # kept: nothing recomputed
    for a, c in zip(*grads):
        assert np.allclose(a, c, rtol=1e-12, atol=1e-14)
    check_grad(lambda x, w, b: checkpoint_rows(fn, x, [w, b], 3, keep=True) ** 2, x, w, b)
    with td.no_grad():                                         # nothing to keep when not recording
        out = checkpoint_rows(fn, td.tensor(x), [td.tensor(w), td.tensor(b)], 3, keep=True)
    assert out._op is None


# ------------------------------------------------------------------------------ meta-gradient
def _tiny64():
    cfg = ucil.ucil_config("tiny", nodes=(784, 3, 2, 3, 784), image_side=28)
    r = np.random.default_rng(3)
    net = ucil.build_ucil_net(cfg, r, dtype=np.float64)
    for p in net.parameters():           # nonzero biases: no ties at the leaky ReLUs' kinks
        p.data = p.data + 0.05 * r.standard_normal(p.shape)
    theta = net.init_synapses(2, r, dtype=np.float64, same=False)
    x = r.random((2, 2, 784))
    xm = r.random((2, 3, 784))
    return net, theta, x, xm


@pytest.mark.parametrize("mode", ["first_order", "one_step"])
def test_meta_gradient_matches_finite_differences(mode):
    net, theta, x, xm = _tiny64()
    lr = 0.5
    phi = net.parameters()
    leaves = {k: td.Tensor(v, requires_grad=True) for k, v in theta.items()}
    theta1, gphi, _, _ = meta_step(net, leaves, x, x, xm, xm, lr, mode)
    fixed = {k: td.tensor(v.data) for k, v in theta1.items()}

    def meta_loss():
        if mode == "one_step":          # theta_1 moves with phi
            th = {k: td.Tensor(v, requires_grad=True) for k, v in theta.items()}
            loss = td.mse_loss(net(td.tensor(x), th), td.tensor(x)) * 2.0
            gs = td.grad(loss, list(th.values()))
            th1 = {k: td.tensor(th[k].data - lr * g.data) for k, g in zip(th, gs)}
        else:                           # theta_1 held constant
            th1 = fixed
        with td.no_grad():
            return float(td.mse_loss(net(td.tensor(xm), th1), td.tensor(xm)).data)

    r = np.random.default_rng(5)
    eps = 1e-6
    for _ in range(3):
        dirs = [r.standard_normal(p.shape) for p in phi]
        base = [p.data.copy() for p in phi]
        for p, b, d in zip(phi, base, dirs):
            p.data = b + eps * d
        up = meta_loss()
        for p, b, d in zip(phi, base, dirs):
            p.data = b - eps * d
        down = meta_loss()
        for p, b in zip(phi, base):
            p.data = b
        fd = (up - down) / (2 * eps)
        an = sum(float((g.data * d).sum()) for g, d in zip(gphi, dirs))
        assert an == pytest.approx(fd, rel=1e-5, abs=1e-9), (mode, an, fd)


def test_one_step_differs_from_first_order():
    net, theta, x, xm = _tiny64()
    grads = {}
    for mode in ("first_order", "one_step"):
        leaves = {k: td.Tensor(v, requires_grad=True) for k, v in theta.items()}
        _, g, _, _ = meta_step(net, leaves, x, x, xm, xm, 0.5, mode)
        grads[mode] = np.concatenate([a.data.ravel() for a in g])
    diff = np.abs(grads["one_step"] - grads["first_order"]).max()
    assert diff > 1e-6 * np.abs(grads["first_order"]).max()


# ------------------------------------------------------------------------------ end to end
def test_class_sequences_protocol():
    imgs = rng.random((3, 4, 2, 784)).astype(np.float32)
    seq = ucil.ClassSequences(imgs, steps=3, meta_batch=5)
    batches = list(seq.inner_batches())
    assert len(batches) == 4 * 3
    assert all(np.array_equal(x, imgs[:, i // 3]) and y is x for i, (x, y) in enumerate(batches))
    xm, ym = seq.meta_batch(np.random.default_rng(0))
    assert xm.shape == (3, 5, 784) and ym is xm
    flat = imgs.reshape(3, 8, 784)
    for m in range(3):                  # drawn without replacement from the member's own sequence
        rows = {tuple(np.flatnonzero((flat[m] == row).all(1))) for row in xm[m]}
        assert len(rows) == 5 and all(len(r) == 1 for r in rows)


def test_thick_strokes_sequences(data):
    thick = ucil.thicken_strokes(14, sample=True)         # the tiny config's data
    assert thick.shape == data.omniglot.shape and thick.dtype == np.float32
    assert 0 <= thick.min() and thick.max() <= 1 and thick.mean() > 1.5 * data.omniglot.mean()
    assert np.all(thick >= data.omniglot - 1e-6)            # thickening only adds ink
    both = ucil.UCILData(**{**data.__dict__, "omniglot_thick": thick})
    pool = both.train_classes

    def draw(p):
        cfg = ucil.ucil_config("tiny", thick_strokes=p)
        return ucil.omniglot_sequences(cfg, both, pool, 4, np.random.default_rng(5))
    cfg0 = ucil.ucil_config("tiny")
    plain = ucil.sample_sequences(data.omniglot, data.omniglot_labels, pool, 4, cfg0.n_classes,
                                  cfg0.shots, np.random.default_rng(5))
    assert np.array_equal(draw(0.0), plain)                  # p = 0: the paper's preprocessing
    all_thick = draw(1.0)
    mixed = draw(0.5)
    assert all_thick.shape == plain.shape and np.all(all_thick >= plain - 1e-6)
    is_thick = np.array([[np.array_equal(mixed[i, t], all_thick[i, t]) and
                          not np.array_equal(mixed[i, t], plain[i, t]) for t in range(plain.shape[1])]
                         for i in range(4)])
    is_thin = np.array([[np.array_equal(mixed[i, t], plain[i, t]) for t in range(plain.shape[1])]
                        for i in range(4)])
    assert np.all(is_thick | is_thin) and is_thick.any() and is_thin.any()   # whole classes, both kinds
    with pytest.raises(ValueError, match="thick_strokes"):
        ucil.ucil_config("tiny", thick_strokes=1.5)
    # resuming a checkpoint written before the field existed: its old value (0.0) is assumed,
    # any other value is refused by _check_newer_fields, naming the flag
    assert "thick_strokes" not in ucil.expect(cfg0, for_resume=True)["config"]
    ucil._check_newer_fields(Path("old.npz"), cfg0, {"config": {}})
    with pytest.raises(CheckpointError, match="--thick-strokes 0.0"):
        ucil._check_newer_fields(Path("old.npz"), ucil.ucil_config("tiny", thick_strokes=0.5),
                                 {"config": {}})


def test_tiny_end_to_end(tmp_path, data):
    cfg = ucil.ucil_config("tiny")
    # meta-train 2 epochs in one go, and 1 + 1 with a resume: the same phi
    full = ucil.meta_train(cfg, 0, tmp_path / "full", quiet=True, workers=0, data=data, log=lambda *a: None)
    ucil.meta_train(cfg.replace(meta_epochs=1), 0, tmp_path / "part", quiet=True, workers=0,
                    data=data, log=lambda *a: None)
    assert (tmp_path / "part" / "checkpoint.npz").exists()
    with pytest.raises(CheckpointError, match="config"):     # resuming with other settings is refused
        ucil.meta_train(cfg.replace(meta_lr=0.5), 0, tmp_path / "part", resume=True, quiet=True,
                        workers=0, data=data, log=lambda *a: None)
    resumed = ucil.meta_train(cfg.replace(meta_epochs=2), 0, tmp_path / "part", resume=True,
                              quiet=True, workers=0, data=data, log=lambda *a: None)
    # the checkpoint's config says meta_epochs=1: resume with 2 epochs must use that file anyway
    for (k, a), (_, b) in zip(full.net.state_dict().items(), resumed.net.state_dict().items()):
        assert np.array_equal(a, b), k
    assert full.meta["history"] == resumed.meta["history"]
    assert [e for e, _ in full.meta["val_history"]] == [0, 1, 2]

    # phenotype file: small, loads, refuses another config
    path = ucil.save_phenotype(full, tmp_path / "phenotype.npz")
    assert path.stat().st_size < 200_000
    ph = ucil.load_phenotype(path, cfg)
    for (k, a), (_, b) in zip(full.net.state_dict().items(), ph.net.state_dict().items()):
        assert np.array_equal(a, b), k
    with pytest.raises(CheckpointError, match="config"):
        ucil.load_phenotype(path, ucil.ucil_config("small"))
    assert ucil.main(["deploy", "--checkpoint", str(path), "--config", "small", "--quiet",
                      "--out", str(tmp_path / "refused")]) == 2

    # deploy on real MNIST: results.json and the figures
    res = ucil.compare(ph, tmp_path / "deploy", draws=3, quiet=True, workers=0, data=data,
                       log=lambda *a: None, figures="net0")
    written = json.loads((tmp_path / "deploy" / "results.json").read_text())
    assert written["config"]["name"] == "tiny" and written["seed"] == 0
    for name in (ucil.NET0, ucil.RANDOM, ucil.PLAIN, ucil.PLAIN_NODES):
        m = written["models"][name]
        assert m["n_sequences"] == 3 and m["n_subtasks"] == 10
        assert np.isfinite(m["final"]["mean"]) and m["final"]["ci"] >= 0
        assert len(m["R_mean"]) == 10
    assert set(written["versions"]) >= {"tinydan", "numpy", "python"}
    assert "command" in written and res["comparison"].keys() == written["comparison"].keys()
    for png in ("fig2_net0.png", "loss_matrix_net0.png", "transfer_curve.png"):
        assert (tmp_path / "deploy" / png).stat().st_size > 1000, png

    # the CLI's `deploy` without --baselines: net0 alone, fast; the comparison says nothing
    assert ucil.main(["deploy", "--checkpoint", str(path), "--quiet", "--draws", "2",
                      "--out", str(tmp_path / "net0_only")]) == 0
    alone = json.loads((tmp_path / "net0_only" / "results.json").read_text())
    assert list(alone["models"]) == [ucil.NET0] and alone["draws"] == 2
    assert alone["comparison"]["net0_vs_plain_ci_overlap"] is None
    assert alone["comparison"]["net0_lowest"] is None and "plain_autoencoders" in alone
    assert alone["plain_autoencoders"] == {}
    # --tune-deploy-lr on the command line overrides the phenotype's config for this deployment
    assert ucil.main(["deploy", "--checkpoint", str(path), "--quiet", "--draws", "1", "--tune-deploy-lr",
                      "--out", str(tmp_path / "tuned")]) == 0
    tuned = json.loads((tmp_path / "tuned" / "results.json").read_text())
    assert tuned["config"]["tune_deploy_lr"] is True
    assert tuned["deploy_lrs"][ucil.NET0]["lr"] in cfg.ae_lrs
    assert tuned["deploy_lrs"][ucil.NET0]["lr_scores"] is not None
    assert alone["deploy_lrs"][ucil.NET0]["lr"] == cfg.inner_lr      # tiny: off by default
    # net0's draws split between this process and a worker: the same losses as in one process
    split = ucil.compare(ph, tmp_path / "split", draws=3, quiet=True, workers=1, data=data,
                         log=lambda *a: None, baselines=False)
    inline = ucil.compare(ph, tmp_path / "inline", draws=3, quiet=True, workers=0, data=data,
                          log=lambda *a: None, baselines=False)
    assert np.allclose(split["models"][ucil.NET0]["R_mean"], inline["models"][ucil.NET0]["R_mean"],
                       rtol=1e-5, atol=1e-7)
    assert split["models"][ucil.NET0]["n_sequences"] == 3


def test_deploy_lr_rule(tmp_path, data, monkeypatch):
    """tune_deploy_lr: net0's and the random DANs' lr come from the plain autoencoders' grid and
    rule on Omniglot validation, are recorded in results.json and the phenotype file, and a
    recorded rate is reused without choosing again; off, the meta-training rate is used."""
    cfg = ucil.ucil_config("tiny", tune_deploy_lr=True, ae_lrs=(0.03, 0.3, 1e6))
    ph = ucil.random_phenotype(cfg, 0)
    # the rule: 1e6 diverges, so 0.3 (whose next larger rate diverges) is not safe: 0.03
    lr, scores = ucil.choose_lr(ph.net, ph.theta0, cfg, data)
    assert scores[1e6] == float("inf") and np.isfinite(scores[0.03]) and lr == 0.03 != cfg.inner_lr
    assert ucil.deploy_lr(ph, data)[0] == lr and ph.meta["deploy_lr"] == lr
    assert ucil.deploy_lr(ucil.random_phenotype(cfg.replace(tune_deploy_lr=False), 0))[0] == cfg.inner_lr
    # the chosen rate is the one deployed with: inline, with the baselines, and split over a worker
    seqs = ucil.mnist_sequences(cfg, data, 2)
    want = ucil.deploy(ph.net, ph.theta0, seqs, cfg.deploy_steps, lr)["R"].mean(0)
    other = ucil.deploy(ph.net, ph.theta0, seqs, cfg.deploy_steps, cfg.inner_lr)["R"].mean(0)
    assert not np.allclose(want, other)
    res = ucil.compare(ph, tmp_path / "dep", draws=2, quiet=True, workers=0, data=data,
                       log=lambda *a: None, figures="net0")
    assert np.allclose(res["models"][ucil.NET0]["R_mean"], want, rtol=1e-5, atol=1e-7)
    assert res["deploy_lrs"][ucil.NET0]["lr"] == lr and res["deploy_lrs"][ucil.RANDOM]["lr"] == lr
    assert f"net0 lr {lr}" in res["protocol"]
    split = ucil.compare(ph, tmp_path / "split", draws=2, quiet=True, workers=1, data=data,
                         log=lambda *a: None, baselines=False)
    assert np.allclose(split["models"][ucil.NET0]["R_mean"], want, rtol=1e-5, atol=1e-7)
    path = ucil.save_phenotype(ph, tmp_path / "ph.npz")
    again = ucil.load_phenotype(path)
    assert again.meta["deploy_lr"] == lr

    def refuse(*a, **k):
        raise AssertionError("a recorded deployment lr must not be chosen again")
    _patch(monkeypatch, "choose_lr", refuse)
    assert ucil.deploy_lr(again)[0] == lr


def test_choose_lr_reuses_validation(tmp_path, data, monkeypatch):
    """A score meta-training already measured (``validate`` at inner_lr: net0's best epoch, phi_0 at
    epoch 0 for the random DANs) is the score choose_lr would measure, and is not measured again."""
    cfg = ucil.ucil_config("tiny", tune_deploy_lr=True, ae_lrs=(0.01, 0.3, 3.0))
    ph = ucil.random_phenotype(cfg, 0)
    lr, fresh = ucil.choose_lr(ph.net, ph.theta0, cfg, data)
    v = ucil.validate(ph.net, ph.theta0, cfg, data)
    assert cfg.inner_lr == 0.01 and np.isclose(v, fresh[0.01], rtol=1e-5)
    calls = []
    real = ucil.deploy
    _patch(monkeypatch, "deploy", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    lr2, reused = ucil.choose_lr(ph.net, ph.theta0, cfg, data, known={0.01: v})
    assert 0.01 not in calls and len(calls) == len(fresh) - 1
    assert lr2 == lr and reused == {**fresh, 0.01: v}
    # where the known scores come from
    ph.meta["val_history"] = [(0, v), (1, 0.5)]
    assert ucil._known_val(ph) == {0.01: v}
    net0 = ucil.Phenotype(cfg, ph.net, ph.theta0, 0, {"best_val": 0.25, "val_history": [(0, v)]})
    assert ucil._known_val(net0) == {0.01: 0.25}
    assert ucil._known_val(ucil.random_phenotype(cfg, 0)) == {}
    # validated under another protocol (here: fewer steps per class): measured again
    other = ucil.Phenotype(cfg, ph.net, ph.theta0, 0, {"best_val": 0.25,
                                                       "config": cfg.replace(deploy_steps=1).to_dict()})
    assert ucil._known_val(other) == {}
    net0.meta["config"] = cfg.to_dict()
    assert ucil._known_val(net0) == {0.01: 0.25}
    # end to end: the random DANs' inner_lr score in compare is the run's epoch-0 validation
    net0.meta["val_history"] = [(0, 0.125)]
    _patch(monkeypatch, "deploy", real)
    res = ucil.compare(net0, tmp_path / "cmp", draws=1, quiet=True, workers=0, data=data,
                       log=lambda *a: None, figures="net0")
    assert res["deploy_lrs"][ucil.RANDOM]["lr_scores"]["0.01"] == 0.125
    assert res["deploy_lrs"][ucil.NET0]["lr_scores"]["0.01"] == 0.25


def test_lr_source_mnist_val(tmp_path, data, monkeypatch, capsys):
    """lr_source "mnist-val": MNIST's test set splits into two fixed disjoint halves (LR_SEED);
    rates are chosen on cfg.lr_sequences sequences of the validation half only, every reported
    draw comes from the other half; a rate recorded for another source is chosen again, Omniglot
    validation scores are not reused, and what was chosen where is recorded."""
    cfg = ucil.ucil_config("tiny", tune_deploy_lr=True, lr_source="mnist-val", lr_sequences=3,
                           ae_lrs=(0.03, 0.3))
    split = ucil.load_data(cfg, mnist=True)
    assert len(split.mnist) == len(split.mnist_val) == len(data.mnist) // 2

    def rows(a):                                # rows sorted: the halves' union, as a multiset
        return a[np.lexsort(a.T[::-1])]
    assert np.array_equal(rows(np.concatenate([split.mnist, split.mnist_val])), rows(data.mnist))
    val_label = {r.tobytes(): y for r, y in zip(split.mnist_val, split.mnist_val_labels)}
    seqs = ucil.rate_sequences(cfg, split)
    assert seqs.shape == (3, 10, cfg.shots, 196)
    assert [[val_label[img.tobytes()] for img in seqs[0, d]] for d in range(10)] == \
        [[d] * cfg.shots for d in range(10)]                     # digits 0..9 in order, val half
    assert all(img.tobytes() in val_label for img in seqs.reshape(-1, 196))
    evaluation = ucil.mnist_sequences(cfg, split, 4).reshape(-1, 196)
    assert not any(img.tobytes() in val_label for img in evaluation)
    with pytest.raises(ValueError, match="half of MNIST"):      # the whole test set: refused
        ucil.mnist_sequences(cfg, data, 2)
    with pytest.raises(ValueError, match="lr_source"):
        ucil.ucil_config("tiny", lr_source="mnist-train")
    # choose_lr scores each rate on those sequences; a rate recorded on Omniglot is chosen again
    ph = ucil.random_phenotype(cfg, 0)
    ph.meta.update(val_history=[(0, 0.125)], deploy_lr=0.3, deploy_lr_scores={"0.3": 0.1})
    assert ucil._known_val(ph) == {}
    lr, scores = ucil.deploy_lr(ph, split)
    want = {str(x): float(ucil.deploy(ph.net, ph.theta0, seqs, cfg.deploy_steps, x)["R"][:, -1].mean())
            for x in cfg.ae_lrs}
    assert scores == pytest.approx(want, rel=1e-6)
    assert lr == 0.03 and ph.meta["deploy_lr_source"] == "mnist-val"   # 0.3: grid's top, no margin
    again = ucil.load_phenotype(ucil.save_phenotype(ph, tmp_path / "ph.npz"))
    assert again.cfg.lr_source == "mnist-val" and again.meta["deploy_lr_source"] == "mnist-val"
    res = ucil.compare(again, tmp_path / "cmp", draws=2, quiet=True, workers=0, data=split,
                       log=lambda *a: None, figures="net0")
    assert "MNIST" in res["lr_chosen_on"] and "evaluation half" in res["protocol"]
    assert res["deploy_lrs"][ucil.NET0]["lr"] == lr
    ae = ucil.plain_autoencoder(cfg)
    ae_scores = res["deploy_lrs"][ucil.PLAIN]["lr_scores"]
    theta = ae.init_synapses(1, np.random.default_rng([0, 3]))
    assert ae_scores["0.03"] == pytest.approx(
        float(ucil.deploy(ae, theta, seqs, cfg.deploy_steps, 0.03)["R"][:, -1].mean()), rel=1e-6)
    # an old file's config has no lr_source: it was made choosing on Omniglot, its recorded rate
    # (no deploy_lr_source either) is reused as it is under "omniglot", chosen again otherwise
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("lr_source", "lr_sequences")}
    assert ucil.UCILConfig.from_dict(old).lr_source == "omniglot"
    made_before = ucil.Phenotype(ucil.UCILConfig.from_dict(old), ph.net, ph.theta0, 0,
                                 {"deploy_lr": 0.3, "deploy_lr_scores": {"0.3": 0.1}})
    assert ucil.recorded_rate_fits(made_before)
    made_before.cfg = made_before.cfg.replace(lr_source="mnist-val")
    assert not ucil.recorded_rate_fits(made_before)
    assert not ucil.recorded_rate_fits(ucil.Phenotype(cfg.replace(lr_sequences=4), ph.net, ph.theta0,
                                                       0, dict(again.meta)))   # other count: again
    # the source does not change a meta-training trajectory: a run may be resumed with either
    assert {"lr_source", "lr_sequences"}.isdisjoint(ucil.expect(cfg, for_resume=True)["config"])
    # `deploy --lr-source` overrides the file's source for that deployment (and chooses again)
    seen = {}
    _patch(monkeypatch, "compare", lambda ph, out, **k: seen.update(src=ph.cfg.lr_source,
                                                                           fits=ucil.recorded_rate_fits(ph)))
    _patch(monkeypatch, "_print_verdict", lambda res: None)
    path = ucil.save_phenotype(again, tmp_path / "ph2.npz")
    assert ucil.main(["deploy", "--checkpoint", str(path), "--quiet", "--lr-source", "omniglot",
                      "--out", str(tmp_path / "o")]) == 0
    assert seen == {"src": "omniglot", "fits": False}
    assert ucil.main(["deploy", "--checkpoint", str(path), "--quiet", "--out", str(tmp_path / "m")]) == 0
    assert seen == {"src": "mnist-val", "fits": True}


def _same_phi(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_epoch_snapshots_are_kept_and_resumed(tmp_path, data):
    """Meta-training keeps every validated phi (epochs >= 1) in the checkpoint and the phenotype
    file, each the very phi its validation score was measured on; a resumed run keeps them too."""
    cfg = ucil.ucil_config("tiny", meta_epochs=3)
    quiet = dict(quiet=True, workers=0, data=data, log=lambda *a: None)
    full = ucil.meta_train(cfg, 0, tmp_path / "full", **quiet)
    assert list(full.snapshots) == [0, 1, 2, 3]
    val = dict(full.meta["val_history"])
    for e, phi in full.snapshots.items():
        net, theta0 = ucil.initial_state(cfg, 0, population=1)
        net.load_state_dict(phi)
        assert ucil.validate(net, theta0, cfg, data) == pytest.approx(val[e], rel=1e-6), e
    assert _same_phi(full.snapshots[full.meta["best_epoch"]], full.net.state_dict())
    ucil.meta_train(cfg.replace(meta_epochs=2), 0, tmp_path / "part", **quiet)
    resumed = ucil.meta_train(cfg, 0, tmp_path / "part", resume=True, **quiet)
    for source in (resumed, ucil.load_phenotype(tmp_path / "part" / "checkpoint.npz"),
                   ucil.load_phenotype(ucil.save_phenotype(full, tmp_path / "ph.npz"))):
        assert list(source.snapshots) == [0, 1, 2, 3]
        assert all(_same_phi(source.snapshots[e], full.snapshots[e]) for e in (0, 1, 2, 3))
    # a checkpoint made before snapshots were kept: the best phi is one, the lost epochs are named
    ucil.meta_train(cfg.replace(meta_epochs=2), 0, tmp_path / "old", **quiet)
    from tinydan.checkpoint import save_checkpoint
    arrays, meta = load_checkpoint(tmp_path / "old" / "checkpoint.npz")
    save_checkpoint(tmp_path / "old" / "checkpoint.npz",
                    {k: v for k, v in arrays.items() if not k.startswith("snap.")}, meta)
    said = []
    old = ucil.meta_train(cfg, 0, tmp_path / "old", resume=True, **{**quiet, "log": said.append})
    kept = sorted({meta["best_epoch"], 3})
    assert list(old.snapshots) == kept and _same_phi(old.snapshots[3], full.snapshots[3])
    lost = sorted({1, 2} - {meta["best_epoch"]})
    assert any(f"no phi of meta-epoch(s) {lost}" in line for line in said), said


def test_choose_epoch_on_mnist_val(tmp_path, data, monkeypatch, capsys):
    """epoch_source "mnist-val": every snapshot is deployed at the rate chosen for the
    Omniglot-best one on the validation half of MNIST and the lowest final MSE is deployed (the
    evaluation half is never read); the choice is recorded and reused, "omniglot" goes back to the
    Omniglot-best, a file without snapshots deploys the Omniglot-best with a note."""
    import dataclasses
    from tinydan.checkpoint import save_checkpoint
    from tinydan.parallel import Workers
    cfg = ucil.ucil_config("tiny", tune_deploy_lr=True, lr_source="mnist-val", lr_sequences=2,
                           epoch_source="mnist-val", ae_lrs=(0.03, 0.3), meta_epochs=3)
    split = ucil.load_data(cfg, mnist=True)
    run = ucil.meta_train(cfg, 0, tmp_path / "run", quiet=True, workers=0, data=split,
                          log=lambda *a: None)
    seqs = ucil.rate_sequences(cfg, split)

    def score(phi, lr):
        net, theta0 = ucil.initial_state(cfg, 0, population=1)
        net.load_state_dict(phi)
        return float(ucil.deploy(net, theta0, seqs, cfg.deploy_steps, lr)["R"][:, -1].mean())
    # pretend the worst epoch on MNIST's validation half was the best on Omniglot: the choice
    # must move away from it
    lr0 = ucil.choose_lr(run.net, run.theta0, cfg, split)[0]
    worst = max((e for e in run.snapshots if e >= 1), key=lambda e: score(run.snapshots[e], lr0))

    def pretend(best):
        net, theta0 = ucil.initial_state(cfg, 0, population=1)
        net.load_state_dict(run.snapshots[best])
        return ucil.Phenotype(cfg, net, theta0, 0, {"best_epoch": best, "path": "p.npz"},
                              snapshots=dict(run.snapshots))
    ph = pretend(worst)
    lr = ucil.choose_lr(ph.net, ph.theta0, cfg, split)[0]
    want = {e: score(phi, lr) for e, phi in run.snapshots.items() if e >= 1}   # phi_0: never
    blind = dataclasses.replace(split, mnist=np.full_like(split.mnist, np.nan),
                                mnist_labels=np.zeros_like(split.mnist_labels))
    chosen = ucil.choose_epoch(ph, blind, log=lambda *a: None)     # evaluation half unreadable
    assert chosen == min(want, key=want.get) != worst and worst >= 1 and 0 not in want
    assert ph.meta["epoch_scores"] == pytest.approx({str(e): v for e, v in want.items()}, rel=1e-5)
    assert ph.meta["deployed_epoch"] == chosen and ph.meta["epoch_lr"] == lr == ph.meta["deploy_lr"]
    assert ph.meta["deployed_epoch_source"] == "mnist-val"
    assert _same_phi(ph.net.state_dict(), run.snapshots[chosen])
    # scored side by side with a worker: the same choice and scores
    side = pretend(worst)
    with Workers(1) as pool:
        assert ucil.choose_epoch(side, split, pool=pool, log=lambda *a: None) == chosen
    assert side.meta["epoch_scores"] == pytest.approx(ph.meta["epoch_scores"], rel=1e-5)
    # compare deploys the chosen phi at the rate r*, and says so
    res = ucil.compare(pretend(worst), tmp_path / "cmp", draws=2, quiet=True, workers=0, data=split,
                       log=lambda *a: None, baselines=False)
    assert res["phenotype"]["deployed_epoch"] == chosen and res["deploy_lrs"][ucil.NET0]["lr"] == lr
    net, theta0 = ucil.initial_state(cfg, 0, population=1)
    net.load_state_dict(run.snapshots[chosen])
    direct = ucil.deploy(net, theta0, ucil.mnist_sequences(cfg, split, 2), cfg.deploy_steps, lr)
    assert np.allclose(res["models"][ucil.NET0]["R_mean"], direct["R"].mean(0), rtol=1e-5, atol=1e-7)
    # recorded in the file: reused without deploying anything; "omniglot" goes back to the best
    again = ucil.load_phenotype(ucil.save_phenotype(ph, tmp_path / "chosen.npz"))
    assert _same_phi(again.net.state_dict(), run.snapshots[chosen])
    real = ucil.deploy

    def refuse(*a, **k):
        raise AssertionError("a recorded epoch choice must not be made again")
    _patch(monkeypatch, "deploy", refuse)
    assert ucil.choose_epoch(again, split) == chosen
    again.cfg = again.cfg.replace(epoch_source="omniglot")
    assert ucil.choose_epoch(again, split) == worst and "epoch_scores" not in again.meta
    assert _same_phi(again.net.state_dict(), run.snapshots[worst])
    old = pretend(worst)
    old.snapshots = {}
    assert ucil.choose_epoch(old, split) == worst
    assert "keeps no phi of another meta-epoch" in capsys.readouterr().out
    # a rate recorded for the epoch that differs from the one deployed: chosen again
    stale = ucil.load_phenotype(tmp_path / "chosen.npz")
    stale.meta["epoch_lr"] = 123.0
    with pytest.raises(AssertionError, match="must not be made again"):
        ucil.choose_epoch(stale, split)
    _patch(monkeypatch, "deploy", real)
    # another number of rate sequences: chosen again
    other = ucil.load_phenotype(tmp_path / "chosen.npz")
    other.cfg = other.cfg.replace(lr_sequences=3)
    ucil.choose_epoch(other, ucil.load_data(other.cfg, mnist=True), log=lambda *a: None)
    assert other.meta["epoch_lr_sequences"] == 3
    # the config and the CLI
    with pytest.raises(ValueError, match="needs lr_source 'mnist-val'"):
        ucil.ucil_config("tiny", epoch_source="mnist-val")
    with pytest.raises(ValueError, match="epoch_source must be one of"):
        ucil.ucil_config("tiny", epoch_source="mnist")
    assert "epoch_source" not in ucil.expect(cfg, for_resume=True)["config"]
    parse = ucil.build_parser().parse_args
    assert ucil.ucil_config("small").epoch_source == "mnist-val"
    assert ucil.ucil_config("paper").epoch_source == "omniglot"
    assert ucil._config_from_args(parse(["run", "--lr-source", "omniglot"])).epoch_source == "omniglot"
    assert ucil._config_from_args(parse(["run", "--epoch-source", "omniglot"])).lr_source == "mnist-val"
    with pytest.raises(SystemExit):
        ucil.main(["run", "--lr-source", "omniglot", "--epoch-source", "mnist-val"])
    assert "needs lr_source 'mnist-val'" in capsys.readouterr().err
    # `deploy --lr-source omniglot` chooses the epoch on Omniglot too, and says so
    seen = {}
    _patch(monkeypatch, "compare", lambda ph, out, **k: seen.update(
        lr=ph.cfg.lr_source, epoch=ph.cfg.epoch_source))
    _patch(monkeypatch, "_print_verdict", lambda res: None)
    assert ucil.main(["deploy", "--checkpoint", str(tmp_path / "chosen.npz"), "--quiet",
                      "--lr-source", "omniglot", "--out", str(tmp_path / "o")]) == 0
    assert seen == {"lr": "omniglot", "epoch": "omniglot"}
    assert "chosen on Omniglot too" in capsys.readouterr().out
    # a file made before epoch_source existed deploys its Omniglot-best epoch, and the note says so
    small = ucil.ucil_config("small")
    before = {k: v for k, v in small.to_dict().items() if k != "epoch_source"}
    net, theta0 = ucil.initial_state(small, 0, population=1)
    path = save_checkpoint(tmp_path / "before.npz", {f"phi.{k}": v for k, v in net.state_dict().items()},
                           {"kind": ucil.KIND, "config": before, "seed": 0})
    note = ucil.load_phenotype(path).meta["note"]
    assert "made before epoch_source existed" in note and "differs" not in note
    assert "note" not in ucil.load_phenotype(ucil.SHIPPED_PHENOTYPE).meta or \
        "differs" not in ucil.load_phenotype(ucil.SHIPPED_PHENOTYPE).meta["note"]


def test_choose_lr_side_by_side(data):
    """choose_lr with an idle worker scores two rates at a time: the same scores and rate, and
    rates above the first diverged one are not kept."""
    from tinydan.parallel import Workers
    cfg = ucil.ucil_config("tiny", tune_deploy_lr=True, ae_lrs=(0.03, 0.3, 1e6, 1e7))
    ph = ucil.random_phenotype(cfg, 0)
    alone = ucil.choose_lr(ph.net, ph.theta0, cfg, data)
    with Workers(1) as pool:
        side = ucil.choose_lr(ph.net, ph.theta0, cfg, data, pool=pool, phi=ph.net.state_dict(), seed=0)
    assert alone[0] == side[0] == 0.03 and list(side[1]) == [0.03, 0.3, 1e6] == list(alone[1])
    assert side[1][0.03] == pytest.approx(alone[1][0.03], rel=1e-5) and side[1][1e6] == float("inf")
    assert side[1][0.3] == pytest.approx(alone[1][0.3], rel=1e-5)        # scored by the worker


def test_cached_data_keeps_the_split_apart(monkeypatch):
    """_cached_data: a config choosing rates on MNIST's validation half never gets the whole-test-set
    data of an Omniglot config (nor the reverse), and a rate-choosing job gets the split data."""
    loads = []
    _patch(monkeypatch, "_DATA_CACHE", {})
    _patch(monkeypatch, "load_data", lambda cfg, mnist=True: loads.append((cfg.lr_source, mnist))
                        or object())
    omni = ucil.ucil_config("tiny")
    val = omni.replace(lr_source="mnist-val")
    a, b = ucil.cached_data(omni, True), ucil.cached_data(val, True)
    assert a is not b and loads == [("omniglot", True), ("mnist-val", True)]
    assert ucil.cached_data(val, False, rates=True) is b          # choosing rates: the split data
    assert ucil.cached_data(omni, False, rates=True) is ucil.cached_data(omni, False) is not a
    assert ucil.cached_data(val, False) is ucil.cached_data(omni, False)   # no MNIST: the same
    assert loads[2:] == [("omniglot", False)]


def test_phi0_screening(tmp_path, data, monkeypatch):
    """phi_candidates = K: meta-training starts from the candidate with the lowest screening score;
    the choice is recorded (checkpoint, phenotype file), survives --resume, and the random-DANs
    baseline is that same phi_0. theta_0 is the seed's for every candidate."""
    cfg = ucil.ucil_config("tiny", phi_candidates=3, meta_epochs=1)
    nets = [ucil.initial_state(cfg, 0, population=1, candidate=k) for k in range(3)]
    assert all(np.array_equal(nets[0][1][n], t[1][n]) for t in nets[1:] for n in nets[0][1])
    phis = [t[0].state_dict() for t in nets]
    assert not np.allclose(phis[0]["dans.0.fc1_w"], phis[2]["dans.0.fc1_w"])
    # the score: the candidate's deployment on the screening sequences, final MSE at inner_lr
    seqs = ucil.screen_sequences(cfg, data)
    assert seqs.shape == (ucil.SCREEN_SEQUENCES, cfg.n_classes, cfg.shots, 196)
    want = ucil.deploy(nets[1][0], nets[1][1], seqs, cfg.deploy_steps, cfg.inner_lr)["R"][:, -1].mean()
    assert np.isclose(ucil._screen_score(cfg, 0, 1, seqs), want, rtol=1e-6)
    # the choice: the argmin (fake scores make candidate 2 the best), inline
    _patch(monkeypatch, "_screen_score", lambda c, seed, k, s: [0.3, 0.2, 0.1][k])
    assert ucil.screen_phi0(cfg, 0, data, quiet=True, workers=0) == (2, [0.3, 0.2, 0.1])
    ph = ucil.meta_train(cfg, 0, tmp_path / "run", quiet=True, workers=0, data=data,
                         log=lambda *a: None)
    assert ph.meta["phi0_candidate"] == 2 and ph.meta["phi0_screen"] == [0.3, 0.2, 0.1]
    rand = ucil.random_phenotype(cfg, 0, candidate=2)
    assert dict(ph.meta["val_history"])[0] == pytest.approx(ucil.validate(rand.net, rand.theta0, cfg, data),
                                                            rel=1e-6)   # epoch 0 = candidate 2
    again = ucil.load_phenotype(ucil.save_phenotype(ph, tmp_path / "ph.npz"))
    assert again.meta["phi0_candidate"] == 2
    # --resume keeps the candidate without screening again
    _patch(monkeypatch, "screen_phi0", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    more = ucil.meta_train(cfg.replace(meta_epochs=2), 0, tmp_path / "run", resume=True, quiet=True,
                           workers=0, data=data, log=lambda *a: None)
    assert more.meta["phi0_candidate"] == 2 and more.meta["phi0_screen"] == [0.3, 0.2, 0.1]
    # resuming with another value of a newer field is refused, with the flag that resumes it
    for field, value, flag in (("phi_candidates", 1, "--phi-candidates 3"),
                               ("thick_strokes", 0.5, "--thick-strokes 0.0")):
        with pytest.raises(ucil.CheckpointError, match=flag):
            ucil.meta_train(cfg.replace(meta_epochs=3, **{field: value}), 0, tmp_path / "run",
                            resume=True, quiet=True, workers=0, data=data, log=lambda *a: None)
    # the random-DANs baseline deploys candidate 2's phi_0
    res = ucil.compare(ph, tmp_path / "cmp", draws=1, quiet=True, workers=0, data=data,
                       log=lambda *a: None, figures="net0")
    mn = ucil.mnist_sequences(cfg, data, 1)
    R = ucil.deploy(rand.net, rand.theta0, mn, cfg.deploy_steps, cfg.inner_lr)["R"]
    assert np.allclose(res["models"][ucil.RANDOM]["R_mean"], R.mean(0), rtol=1e-5, atol=1e-7)
    assert res["phenotype"]["phi0_candidate"] == 2


def _race(cfg, out, data, screen_scores, monkeypatch, resume=False):
    _patch(monkeypatch, "_screen_score", lambda c, seed, k, s: screen_scores[k])
    return ucil.meta_train(cfg, 0, out, resume=resume, quiet=True, workers=0, data=data,
                           log=lambda *a: None, processes=1)


def test_race_of_starts(tmp_path, data, monkeypatch):
    """start_candidates = 2: the two best-screened phi_0 candidates are meta-trained start_epochs
    each; the one with the lower Omniglot validation at start_epochs goes on, whatever its screen
    rank, and the run is, bit for bit, that candidate's own run; the race is recorded, survives
    --resume and is not run again."""
    cfg = ucil.ucil_config("tiny", phi_candidates=3, start_candidates=2, start_epochs=1,
                           meta_epochs=2)
    runs = {}
    for name, scores in (("a", [0.1, 0.3, 0.2]), ("b", [0.2, 0.3, 0.1])):   # ranks [0, 2], [2, 0]
        runs[name] = ph = _race(cfg, tmp_path / name, data, scores, monkeypatch)
        order = [0, 2] if name == "a" else [2, 0]
        assert [k for k, _ in ph.meta["phi0_starts"]] == order
        # each start's score is the validation of its own phi after start_epochs, measured afresh
        for k, v in ph.meta["phi0_starts"]:
            arrays, meta = load_checkpoint(tmp_path / name / "starts" / f"phi0-{k}" / "checkpoint.npz")
            assert meta["epoch"] == 1 and meta["phi0_candidate"] == k
            net, theta0 = ucil.initial_state(cfg, 0, population=1)
            net.load_state_dict({n[4:]: a for n, a in arrays.items() if n.startswith("phi.")})
            assert v == pytest.approx(ucil.validate(net, theta0, cfg, data), rel=1e-6)
        vals = dict(ph.meta["phi0_starts"])
        assert vals[0] != vals[2]
        assert ph.meta["phi0_candidate"] == min(vals, key=vals.get)
        assert ph.meta["phi0_start_epochs"] == 1 and ph.meta["phi0_screen"] == scores
        assert [e for e, _ in ph.meta["val_history"]] == [0, 1, 2]
    winner = runs["a"].meta["phi0_candidate"]
    assert runs["b"].meta["phi0_candidate"] == winner     # chosen by validation, not screen rank
    # the run equals the winner's own straight run of meta_epochs (no race), array for array
    straight = _race(cfg.replace(start_candidates=1), tmp_path / "straight", data,
                     [0.1 if k == winner else 0.5 for k in range(3)], monkeypatch)
    assert straight.meta["phi0_candidate"] == winner
    for name in ("a", "b"):
        assert runs[name].meta["val_history"] == straight.meta["val_history"]
        for k, v in straight.net.state_dict().items():
            assert np.array_equal(runs[name].net.state_dict()[k], v), k
        assert sorted(runs[name].snapshots) == sorted(straight.snapshots) == [0, 1, 2]
    saved = ucil.load_phenotype(ucil.save_phenotype(runs["a"], tmp_path / "ph.npz"))
    assert saved.meta["phi0_starts"] == runs["a"].meta["phi0_starts"]
    # --resume: a finished race is not run again; neither is a finished start when the copy of the
    # winner was lost; the record survives a resume of OUT's own checkpoint
    epochs = []
    real = ucil.MetaTrainer.run_epoch
    monkeypatch.setattr(ucil.MetaTrainer, "run_epoch",
                        lambda self, *a, **k: (epochs.append(self.epoch), real(self, *a, **k))[1])
    (tmp_path / "a" / "checkpoint.npz").unlink()
    again = _race(cfg, tmp_path / "a", data, [0.1, 0.3, 0.2], monkeypatch, resume=True)
    assert epochs == [1]                                     # the winner's second epoch only
    assert again.meta["phi0_starts"] == runs["a"].meta["phi0_starts"]
    assert again.meta["val_history"] == runs["a"].meta["val_history"]
    more = _race(cfg.replace(meta_epochs=3), tmp_path / "a", data, [0.1, 0.3, 0.2], monkeypatch,
                 resume=True)
    assert epochs == [1, 2] and more.meta["phi0_starts"] == runs["a"].meta["phi0_starts"]
    with pytest.raises(ucil.CheckpointError, match="--start-candidates 2"):
        _race(cfg.replace(meta_epochs=4, start_candidates=1), tmp_path / "a", data,
              [0.1, 0.3, 0.2], monkeypatch, resume=True)
    # a crash between the race and the winner's first saved epoch: OUT/checkpoint.npz already
    # holds the race's record, and --resume goes on from it without racing again
    real_run = ucil.meta_train_run

    def crash_on_out(cfg_, seed, out_dir, *a, **k):
        if Path(out_dir) == tmp_path / "c":
            raise KeyboardInterrupt
        return real_run(cfg_, seed, out_dir, *a, **k)
    _patch(monkeypatch, "meta_train_run", crash_on_out)
    with pytest.raises(KeyboardInterrupt):
        _race(cfg, tmp_path / "c", data, [0.1, 0.3, 0.2], monkeypatch)
    _, meta = load_checkpoint(tmp_path / "c" / "checkpoint.npz")
    assert meta["phi0_starts"] == runs["a"].meta["phi0_starts"] and meta["epoch"] == 1
    _patch(monkeypatch, "meta_train_run", real_run)
    _patch(monkeypatch, "screen_phi0", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    done = _race(cfg, tmp_path / "c", data, [0.1, 0.3, 0.2], monkeypatch, resume=True)
    assert done.meta["phi0_starts"] == runs["a"].meta["phi0_starts"]
    assert done.meta["val_history"] == runs["a"].meta["val_history"]


def test_race_config_errors():
    with pytest.raises(ValueError, match="--phi-candidates"):
        ucil.ucil_config("tiny", phi_candidates=2, start_candidates=3)
    with pytest.raises(ValueError, match="more than meta_epochs 2"):
        ucil.ucil_config("tiny", phi_candidates=2, start_candidates=2, start_epochs=3)
    with pytest.raises(ValueError, match="start_epochs must be >= 1"):
        ucil.ucil_config("tiny", start_epochs=0)
    with pytest.raises(ValueError, match="multiple of val_every 2"):      # small validates every 2
        ucil.ucil_config("small", start_candidates=2, start_epochs=3)
    assert ucil.ucil_config("small", start_candidates=1, start_epochs=3).start_epochs == 3  # no race
    parse = ucil.build_parser().parse_args
    cfg = ucil._config_from_args(parse(["meta-train", "--start-candidates", "3", "--start-epochs",
                                        "2"]))
    assert cfg.start_candidates == 3 and cfg.start_epochs == 2


def test_race_cli_error(capsys):
    with pytest.raises(SystemExit) as e:
        ucil.main(["meta-train", "--epochs", "2", "--start-candidates", "2", "--out", "unused"])
    assert e.value.code == 2 and "--start-candidates 1 (no race)" in capsys.readouterr().err


def test_one_blas_thread_restores_the_counts(monkeypatch):
    """A job runs with one BLAS thread wherever it runs (a worker, inline, this process); the
    caller's thread counts and environment come back afterwards."""
    from tinydan.parallel import _set_counts, blas_threads, one_blas_thread
    if not blas_threads():
        pytest.skip("no OpenBLAS found to set threads on")
    before = dict(blas_threads())
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        _set_counts({name: 2 for name in before})
        with one_blas_thread():
            assert all(n == 1 for _, n in blas_threads())
            assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == "1"
        assert all(n == 2 for _, n in blas_threads())
        assert os.environ["OPENBLAS_NUM_THREADS"] == "2" and "OMP_NUM_THREADS" not in os.environ

        @one_blas_thread()
        def job():
            return dict(blas_threads())
        assert set(job().values()) == {1} and set(dict(blas_threads()).values()) == {2}
    finally:
        _set_counts(before)


def test_in_place_sgd_step_on_the_ucil_net(data):
    """sgd_step_ on the UCIL autoencoder (input DAN layer, two skips) takes deploy_step's step; NumPy
    synapses are copied, not overwritten; synapses the network does not use are an error."""
    from tinydan.meta import deploy_step, sgd_step_
    cfg = ucil.ucil_config("tiny")
    net, theta0 = ucil.initial_state(cfg, 0, population=2)
    x = ucil.mnist_sequences(cfg, data, 2)[:, 0]                          # (2 draws, shots, D)
    keep = {k: v.copy() for k, v in theta0.items()}
    want, _ = deploy_step(net, {k: td.tensor(v, requires_grad=True) for k, v in theta0.items()},
                          x, x, 0.3)
    got, _ = sgd_step_(net, theta0, x, x, 0.3)
    for k in theta0:
        assert np.array_equal(theta0[k], keep[k]), f"{k}: a NumPy input was overwritten"
        assert not np.allclose(got[k].data, keep[k]), f"{k} did not move"
        np.testing.assert_allclose(got[k].data, want[k].data, rtol=1e-5, atol=1e-7, err_msg=k)
    with pytest.raises(ValueError, match="records"):
        sgd_step_(net, {**theta0, "extra.weight": np.zeros((2, 3, 3), np.float32)}, x, x, 0.3)


def test_shipped_phenotype_loads_and_deploys(data):
    assert ucil.SHIPPED_PHENOTYPE.exists(), "tinydan/phenotypes/ucil_small.npz is missing"
    assert ucil.SHIPPED_PHENOTYPE.stat().st_size < 1_000_000
    ph = ucil.load_phenotype(ucil.SHIPPED_PHENOTYPE, ucil.ucil_config("small"))
    assert ph.cfg.name == "small" and "command" in ph.meta and "note" not in ph.meta
    # the rate and meta-epoch are recorded: `python -m tinydan.ucil deploy` chooses nothing again
    assert ph.meta["deployed_epoch_source"] == "mnist-val" and ucil.recorded_rate_fits(ph)
    assert ph.meta["deployed_epoch"] in ph.snapshots and ph.meta["epoch_lr"] == ph.meta["deploy_lr"]
    seqs = ucil.mnist_sequences(ph.cfg.replace(lr_source="omniglot", epoch_source="omniglot"), data,
                                1)[:, :2]                                        # it runs
    out = ucil.deploy(ph.net, ph.theta0, seqs, 2, ph.cfg.inner_lr, snapshots=[(0, 1)])
    assert out["R"].shape == (1, 2, 2) and np.all(np.isfinite(out["R"]))
    assert out["recon"][(0, 1)].shape == (2, ph.cfg.shots, ph.cfg.image_side ** 2)


def test_cli_config_flags():
    parse = ucil.build_parser().parse_args
    paperlike = ucil._config_from_args(parse(["run", "--no-tune-deploy-lr", "--thick-strokes", "0"]))
    assert paperlike.tune_deploy_lr is False and paperlike.thick_strokes == 0.0
    default = ucil._config_from_args(parse(["run"]))
    assert default == ucil.ucil_config("small") and default.tune_deploy_lr and default.thick_strokes == 0.5
    assert default.phi_candidates == 8 and default.start_candidates == 2 and default.start_epochs == 4
    assert ucil._config_from_args(parse(["run", "--start-candidates", "1"])).start_candidates == 1
    one = ucil._config_from_args(parse(["meta-train", "--phi-candidates", "1"]))
    assert one.phi_candidates == 1 and one.start_candidates == 1      # one candidate: no race
    assert ucil._config_from_args(parse(["run", "--phi-candidates", "4"])).start_candidates == 2
    assert ucil._config_from_args(parse(["run", "--meta-lr-decay", "0.5"])).meta_lr_decay == 0.5
    assert default.meta_lr_decay == 0.7 and ucil.ucil_config("paper").meta_lr_decay == 1.0
    assert default.meta_epochs == 8
    assert default.lr_source == "mnist-val" and ucil.ucil_config("paper").lr_source == "omniglot"
    assert ucil._config_from_args(parse(["run", "--lr-source", "omniglot"])).lr_source == "omniglot"
    with pytest.raises(SystemExit):            # meta-train takes no deployment options
        parse(["meta-train", "--lr-source", "omniglot"])


def test_cli_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ucil.main(["--help"])
    assert e.value.code == 0
    assert "meta-train" in capsys.readouterr().out
    for bad in (["--config", "huge"], ["run", "--epochs", "0"], ["run", "--meta-grad", "second"],
                ["meta-train", "--inner-lr", "-1"], ["run", "--resume"],
                ["meta-train", "--thick-strokes", "2"], ["run", "--phi-candidates", "0"],
                ["run", "--meta-lr-decay", "0"], ["deploy", "--lr-source", "mnist"]):
        with pytest.raises(SystemExit) as e:
            ucil.main(bad)
        assert e.value.code == 2, bad
    err = capsys.readouterr().err
    assert "invalid choice: 'huge'" in err and "must be at least 1" in err and "--resume needs --out" in err
    assert "thick_strokes is a probability" in err and "invalid choice: 'mnist'" in err
    with pytest.raises(SystemExit):
        ucil.main(["deploy", "--checkpoint", str(tmp_path / "missing.npz")])
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    assert ucil.main(["deploy", "--checkpoint", str(tmp_path / "junk.npz"), "--quiet"]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_validation_in_parts_and_meta_training_across_processes(tmp_path, data):
    """validate(part=...) weighted over the parts is the whole validation (the last validation of a
    run is split between this process and the pool); meta-training with the population split
    across 2 processes trains phi as 1 process does (up to rounding) and records the number."""
    cfg = ucil.ucil_config("tiny")
    net, theta0 = ucil.initial_state(cfg, 0, population=1)
    whole = ucil.validate(net, theta0, cfg, data)
    parts = validation_parts(cfg.val_sequences, 2)
    assert len(parts) == 2 and sum(w for _, w in parts) == pytest.approx(1.0)
    split = sum(w * ucil.validate(net, theta0, cfg, data, part=p) for p, w in parts)
    assert split == pytest.approx(whole, rel=1e-5)
    assert len(validation_parts(1, 2)) == 1

    runs = {n: ucil.meta_train(cfg.replace(meta_epochs=1), 0, tmp_path / str(n), quiet=True,
                               workers=1, data=data, log=lambda *a: None, processes=n)
            for n in (1, 2)}
    assert [runs[n].meta["processes"] for n in (1, 2)] == [1, 2]
    saved = ucil.load_phenotype(ucil.save_phenotype(runs[2], tmp_path / "p2.npz"))
    assert saved.meta["processes"] == 2                       # how to reproduce it
    for (k, a), (_, b) in zip(runs[1].net.state_dict().items(), runs[2].net.state_dict().items()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=k)
    for (e1, v1), (e2, v2) in zip(runs[1].meta["val_history"], runs[2].meta["val_history"]):
        assert e1 == e2 and v1 == pytest.approx(v2, rel=1e-4)
    # the last validation (split in two) is the validation of the last phi
    arrays, _ = load_checkpoint(tmp_path / "1" / "checkpoint.npz")
    net.load_state_dict({k[4:]: v for k, v in arrays.items() if k.startswith("phi.")})
    assert runs[1].meta["val_history"][-1] == (1, pytest.approx(ucil.validate(net, theta0, cfg, data),
                                                                rel=1e-5))
    # a resumed run keeps the number of processes it was made with (here 1, the default is 2)
    more = ucil.meta_train(cfg.replace(meta_epochs=2), 0, tmp_path / "1", resume=True, quiet=True,
                           workers=0, data=data, log=lambda *a: None)
    assert more.meta["processes"] == 1


def test_validation_queue_feeds_the_pool_one_part_at_a_time_and_shares_the_rest(monkeypatch):
    """_ValidationQueue: one part in the pool at a time while meta-training runs; unfinished
    snapshots are reported (the checkpoint stores them); finish() runs queued parts here and
    the pool's part there, and every snapshot's score is the weighted sum of its halves."""
    calls = []

    def fake_job(cfg_dict, seed, phi, part):
        calls.append((phi["v"], part))
        return phi["v"] + part[0]                              # the two halves score differently

    class LazyFuture:
        def __init__(self, fn, args):
            self.fn, self.args, self.ready, self.where = fn, args, False, "pool"

        def done(self):
            return self.ready

        def result(self):
            in_pool.append(True)
            try:
                return self.fn(*self.args)
            finally:
                in_pool.pop()

    class FakePool:
        n = 1

        def __init__(self):
            self.futs = []

        def submit(self, fn, *args):
            self.futs.append(LazyFuture(fn, args))
            return self.futs[-1]

    here, in_pool = [], []

    def job(*args):                                  # the pool's job, or this process's (here)
        if not in_pool:
            here.append(args[-1])
        return fake_job(*args)

    pool, results = FakePool(), []
    q = ValidationQueue(pool, job, ({}, 0), validation_parts(3, 2),
                        lambda e, v, phi: results.append((e, v, phi["v"])))
    q.submit(0, {"v": 1.0})
    q.submit(2, {"v": 2.0})
    assert len(pool.futs) == 1 and len(q.queue) == 3           # one part in the pool at a time
    assert [e for e, _ in q.pending()] == [0, 2]
    q.pump()
    assert len(pool.futs) == 1                                 # still running: nothing new
    pool.futs[0].ready = True
    q.pump()
    assert len(pool.futs) == 2 and len(q.queue) == 2 and results == []
    q.finish()
    # 3 sequences: halves of 2 and 1, weights 2/3 and 1/3: 2/3 (v + 0) + 1/3 (v + 1)
    assert [(e, round(v, 12), p) for e, v, p in sorted(results)] == [(0, round(4 / 3, 12), 1.0),
                                                                     (2, round(7 / 3, 12), 2.0)]
    assert q.pending() == [] and q.queue == [] and q.running is None
    assert len(calls) == 4 and len(pool.futs) + len(here) == 4 and here   # some ran here
