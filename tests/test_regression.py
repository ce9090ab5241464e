"""The incremental-regression experiment end to end on the tiny config, checkpoints and the CLI."""
import json

import numpy as np
import pytest

from tinydan.checkpoint import CheckpointError, save_checkpoint
from tinydan.experiments.configs import RegressionConfig, regression_config
from tinydan.regression import (SHIPPED_PHENOTYPE, deploy, load_phenotype, main, meta_train,
                                new_trainer)
from tinydan.tasks import EVAL_SEED, VAL_SEED, SineSequence, sample_sines, windows

pytestmark = [pytest.mark.regression, pytest.mark.meta, pytest.mark.dan]   # topics it depends on


def test_task_stream_follows_the_protocol():
    f = sample_sines(np.random.default_rng(0), 3)
    assert np.all((f.a >= 0) & (f.a <= 2)) and np.all((f.r >= 0) & (f.r <= np.pi / 3))
    seq = SineSequence(f, np.random.default_rng(1), steps=100, batch=1)
    batches = list(seq.inner_batches())
    assert len(batches) == 500
    assert np.allclose(windows(), [[-5, -3], [-3, -1], [-1, 1], [1, 3], [3, 5]])
    for w in range(5):
        xs = np.stack([b[0] for b in batches[w * 100:(w + 1) * 100]])
        lo, hi = windows()[w]
        assert xs.shape == (100, 3, 1, 1) and xs.min() >= lo and xs.max() <= hi
    x, y = batches[0]
    a, r, p = f.a, f.r, f.p
    assert np.allclose(y[:, 0, 0], (a[:, 0] * np.sin(r[:, 0] * x[:, 0, 0] + p[:, 0]) +
                                    a[:, 1] * np.sin(r[:, 1] * x[:, 0, 0] + p[:, 1])), atol=1e-5)
    seq.current_window = 1
    xm, _ = seq.meta_batch(np.random.default_rng(2))
    assert xm.shape == (3, 32, 1) and xm.max() <= -1          # memory: windows seen so far


def test_held_out_functions_are_not_the_training_or_validation_ones():
    held = sample_sines(np.random.default_rng(EVAL_SEED), 5)
    val = sample_sines(np.random.default_rng(VAL_SEED), 5)
    train = sample_sines(np.random.default_rng([0, 1]), 5)
    assert not np.allclose(held.a, val.a) and not np.allclose(held.a, train.a)


def test_deploy_returns_the_loss_matrix_of_every_function():
    cfg = regression_config("tiny")
    tr = new_trainer(cfg, 0)
    f = sample_sines(np.random.default_rng(EVAL_SEED), 4)
    out = deploy(tr.net, tr.theta0, f, cfg, record=True)
    assert out["R"].shape == (4, 5, 5) and np.all(np.isfinite(out["R"]))
    assert out["preds"].shape == (4, 5, 1000)
    # functions are deployed independently: deploying the first two alone gives the same rows
    alone = deploy(tr.net, tr.theta0, f.subset([0, 1]), cfg)
    assert np.allclose(alone["R"], out["R"][:2], rtol=1e-3, atol=1e-6)


def test_meta_train_checkpoint_round_trip_and_refusals(tmp_path):
    cfg = regression_config("tiny", meta_epochs=2)
    ph = meta_train(cfg, 0, tmp_path / "run", quiet=True, log=lambda *a: None, workers=0)
    ckpt = tmp_path / "run" / "checkpoint.npz"
    loaded = load_phenotype(ckpt)
    assert loaded.cfg == cfg
    for (k, p), (k2, q) in zip(ph.net.named_parameters(), loaded.net.named_parameters()):
        assert k == k2 and np.array_equal(p.data, q.data)
    for k in ph.theta0:
        assert np.array_equal(ph.theta0[k], loaded.theta0[k])
    # resuming with another config is refused with a message naming the field
    with pytest.raises(CheckpointError, match="n_channels"):
            meta_train(cfg.replace(n_channels=7), 0, tmp_path / "run", resume=True, quiet=True,
                   log=lambda *a: None, workers=0)
    with pytest.raises(CheckpointError, match="config"):
        load_phenotype(ckpt, cfg=regression_config("paper"))
    # a foreign checkpoint (another kind) and a corrupt file are refused clearly
    save_checkpoint(tmp_path / "other.npz", {"w": np.zeros(2)}, {"kind": "tinydan.ucil"})
    with pytest.raises(CheckpointError, match="kind"):
        load_phenotype(tmp_path / "other.npz")
    (tmp_path / "bad.npz").write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_phenotype(tmp_path / "bad.npz")


def test_save_phenotype_round_trip(tmp_path):
    from tinydan.regression import save_phenotype
    cfg = regression_config("tiny", meta_epochs=1)
    ph = meta_train(cfg, 0, tmp_path / "run", quiet=True, log=lambda *a: None, workers=0)
    path = save_phenotype(ph, tmp_path / "ph.npz")
    back = load_phenotype(path)
    assert back.cfg == cfg and back.meta["command"].startswith("python -m tinydan.regression")
    for p, q in zip(ph.net.parameters(), back.net.parameters()):
        assert np.array_equal(p.data, q.data)


def test_resume_after_interruption_equals_a_straight_run(tmp_path):
    cfg = regression_config("tiny", meta_epochs=2)
    straight = meta_train(cfg, 1, tmp_path / "a", quiet=True, log=lambda *a: None, workers=0)
    meta_train(cfg.replace(meta_epochs=1), 1, tmp_path / "b", quiet=True, log=lambda *a: None, workers=0)
    # the checkpoint stores the config; continuing needs the same config, so rewrite epochs only
    from tinydan.checkpoint import load_checkpoint
    arrays, meta = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    meta["config"]["meta_epochs"] = 2
    save_checkpoint(tmp_path / "b" / "checkpoint.npz", arrays, meta)
    resumed = meta_train(cfg, 1, tmp_path / "b", resume=True, quiet=True, log=lambda *a: None, workers=0)
    assert resumed.meta["history"] == straight.meta["history"]


def test_validation_in_a_worker_process_gives_the_same_run(tmp_path):
    """Validation runs on the second core when there is one; the result must not change."""
    cfg = regression_config("tiny", meta_epochs=2)
    inline = meta_train(cfg, 2, tmp_path / "a", quiet=True, log=lambda *a: None, workers=0)
    pooled = meta_train(cfg, 2, tmp_path / "b", quiet=True, log=lambda *a: None, workers=1)
    assert inline.meta["val_history"] == pooled.meta["val_history"]
    assert inline.meta["best_epoch"] == pooled.meta["best_epoch"]


def test_cli_run_writes_results_and_figures(tmp_path):
    out = tmp_path / "cli"
    assert main(["run", "--config", "tiny", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"net0 (meta-learned DANs)", "net2 (random DANs)",
                                  "naive MLP (sequential SGD)", "joint MLP (all windows at once)"}
    assert res["models"]["net0 (meta-learned DANs)"]["n_sequences"] == 6
    assert res["config"]["name"] == "tiny" and "versions" in res
    for png in ("figure3_predictions.png", "deployment_memory_loss.png", "loss_matrix_net0.png",
                "meta_training.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "checkpoint.npz").exists() and (out / "phenotype.npz").exists()
    # and deploying that checkpoint works
    assert main(["deploy", "--checkpoint", str(out / "checkpoint.npz"), "--out",
                 str(tmp_path / "dep"), "--quiet", "--eval-functions", "3"]) == 0


@pytest.mark.parametrize("argv,msg", [
    (["run", "--config", "nope"], "invalid choice"),
    (["run", "--epochs", "0"], "must be at least 1"),
    (["run", "--inner-lr", "-1"], "must be a finite number > 0"),
    (["run", "--meta-grad", "second"], "invalid choice"),
    (["run", "--resume"], "--resume needs --out"),
    (["deploy", "--checkpoint", "/nonexistent.npz"], "does not exist"),
])
def test_cli_bad_arguments_give_clear_errors(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_config_round_trips_through_json():
    cfg = regression_config("default")
    assert RegressionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown regression config fields"):
        RegressionConfig.from_dict({"bogus": 1})


@pytest.mark.skipif(not SHIPPED_PHENOTYPE.exists(), reason="no shipped phenotype in this checkout")
def test_shipped_phenotype_loads_and_beats_random_dans():
    ph = load_phenotype(SHIPPED_PHENOTYPE)
    assert ph.cfg.name == "default" and "command" in ph.meta
    f = sample_sines(np.random.default_rng(EVAL_SEED), 8)
    r0 = deploy(ph.net, ph.theta0, f, ph.cfg)["R"][:, -1].mean()
    from tinydan.experiments.configs import build_regression_net
    rand = build_regression_net(ph.cfg, np.random.default_rng(99))
    r2 = deploy(rand, ph.theta0, f, ph.cfg)["R"][:, -1].mean()
    assert r0 < 0.5 * r2


@pytest.mark.parametrize("meta_grad", ["first_order", "one_step"])
def test_compiled_and_eager_meta_training_and_deployment_are_the_same(tmp_path, meta_grad):
    """--no-compile runs the steps eagerly: the same run, array for array (compile replays the
    very kernels the eager step runs), with a decaying phi rate read afresh at every epoch."""
    import numpy as np
    from tinydan.checkpoint import load_checkpoint
    from tinydan.compiler import is_enabled, set_enabled
    arrays = {}
    for flag in (True, False):
        prev = set_enabled(flag)
        try:
            out = tmp_path / str(flag)
            cfg = regression_config("tiny", meta_epochs=2, meta_grad=meta_grad, meta_lr_decay=0.5)
            ph = meta_train(cfg, 0, out, quiet=True, workers=0, log=lambda *a: None)
            from tinydan.tasks import EVAL_SEED, sample_functions
            f = sample_functions(ph.cfg, np.random.default_rng(EVAL_SEED), 3, "test")
            arrays[flag] = (load_checkpoint(out / "checkpoint.npz")[0],
                            deploy(ph.net, ph.theta0, f, ph.cfg)["R"])
        finally:
            set_enabled(prev)
    assert is_enabled()
    (a, ra), (b, rb) = arrays[True], arrays[False]
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(ra, rb)


def test_meta_lr_decay_sets_phis_rate_each_epoch_and_changes_the_run():
    """meta_lr * decay^e in meta-epoch e (from 0): the rate Adam used, and a different phi."""
    import numpy as np
    from tinydan.experiments.regression import new_trainer
    runs = {}
    for decay in (1.0, 0.5):
        tr = new_trainer(regression_config("tiny", meta_lr_decay=decay), 0)
        rates = []
        for _ in range(3):
            tr.run_epoch()
            rates.append(tr.optimizer.lr)
        runs[decay] = (rates, [p.data.copy() for p in tr.phi])
    base = regression_config("tiny").meta_lr
    assert runs[0.5][0] == [base, base * 0.5, base * 0.25] and runs[1.0][0] == [base] * 3
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0.5][1], runs[1.0][1]))
    with pytest.raises(ValueError, match="meta_lr_decay must be > 0"):
        regression_config("tiny", meta_lr_decay=0.0)
