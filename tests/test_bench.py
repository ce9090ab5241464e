"""The benchmark harness: every benchmark runs, and its correctness check really compares.

Timings are never asserted on (machines are noisy); only that they are finite and positive.
"""
import importlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import tinydan as td
import tinydan.bench.__main__ as entry
from tinydan import bench
from tinydan.bench import harness, ucil_step
from tinydan.tensor import Op, apply

pytestmark = pytest.mark.autograd

NAMES = list(bench.BENCHMARKS)
REGRESSION = ("regression_meta_first_order", "regression_meta_one_step", "regression_deploy")
COMPILED_VS_TORCH = ("regression_compiled_meta_first_order", "regression_compiled_meta_one_step",
                     "regression_compiled_deploy")
VS_TORCH = REGRESSION + COMPILED_VS_TORCH           # the rows whose reference is PyTorch eager
# the topics a benchmark depends on, as markers (coursework: blanking a topic fails only its tests)
ON_REGRESSION = [pytest.mark.meta, pytest.mark.dan]


def _with_topics(names):
    out = []
    for n in names:
        marks = ON_REGRESSION if "regression" in n or n.startswith("compiled") else \
            [pytest.mark.conv] if ("conv" in n or "pool" in n) else []
        out.append(pytest.param(n, marks=marks, id=n))
    return out

try:            # PyTorch: a reference for the regression benchmarks, never a tinydan dependency
    importlib.import_module("torch")
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed: the regression "
                                 "benchmarks have no reference to compare with")


@pytest.fixture
def no_torch(monkeypatch):
    """Make ``import torch`` fail, as on a machine without PyTorch."""
    monkeypatch.setitem(sys.modules, "torch", None)


def test_registry_has_the_benchmarks_and_targets():
    for name in ("mlp40_b1", "mlp40_b32", "mlp256_b64", "conv2d_ucil", "conv2d_ucil_2",
                 "maxpool_ucil"):
        assert name in bench.BENCHMARKS
    assert bench.BENCHMARKS["mlp256_b64"].target == 1.15
    assert bench.BENCHMARKS["conv2d_ucil"].target == 1.3
    assert bench.BENCHMARKS["mlp40_b1"].target is None
    for name in REGRESSION:
        assert bench.BENCHMARKS[name].target == 1.0          # PASS: faster than PyTorch eager
        assert name in bench.PUBLISHED_S
    for name in COMPILED_VS_TORCH:
        assert bench.BENCHMARKS[name].target == 0.5          # PASS: half PyTorch eager's time
    with pytest.raises(ValueError, match="twice"):
        bench.register("mlp40_b1")(lambda: None)


@pytest.mark.parametrize("name", _with_topics(NAMES))
def test_each_benchmark_runs_quick_with_finite_times(name):
    r = bench.run_benchmark(name, repeat=1, quick=True)
    assert r.name == name and r.repeat == 1 and r.number == 1
    replayed = "compiled" in name          # a replayed tape runs bare NumPy: no tinydan op at all
    assert (r.ops == 0) if replayed else (r.ops > 0)
    if name in VS_TORCH and not HAVE_TORCH:                   # tinydan alone
        assert r.reference_samples == [] and math.isnan(r.reference_s) and r.status == ""
        assert math.isfinite(r.tinydan_s) and r.tinydan_s > 0
        return
    for t in (*r.tinydan_samples, *r.reference_samples, r.tinydan_s, r.reference_s, r.ratio):
        assert math.isfinite(t) and t > 0
    if name.startswith("compiled_"):
        return
    if name in VS_TORCH:
        assert r.reference_name.startswith("torch")
    if bench.BENCHMARKS[name].target is None:
        assert r.status == ""
    else:
        assert r.status in ("PASS", "MISS")
    if name.startswith("mlp40"):
        assert r.per_op_us is not None and math.isfinite(r.per_op_us)
        assert "us/op" in r.notes


def _corrupt(a, k):
    a = np.array(a, copy=True)
    scale = float(np.max(np.abs(a)))
    a.flat[k] += 0.05 * max(abs(float(a.flat[k])), scale, 1e-3)
    return a


@pytest.mark.parametrize("name", _with_topics(NAMES))
def test_check_compares_every_output_and_gradient(name):
    if name in VS_TORCH and not HAVE_TORCH:
        pytest.skip("PyTorch is not installed: the regression benchmarks have no reference")
    case = bench.BENCHMARKS[name].setup()
    got = [bench.as_array(r) for r in case.tinydan()]
    ref = [bench.as_array(r) for r in case.reference()]
    bench.compare(name, got, ref, case.rtol, case.atol)          # agrees as built
    assert len(ref) >= 2                                         # an output and >= 1 gradient
    for i in range(len(ref)):                # one wrong entry (the last) in any result is caught
        bad = list(ref)
        bad[i] = _corrupt(ref[i], ref[i].size - 1)
        with pytest.raises(bench.BenchmarkMismatch, match=f"result {i} "):
            bench.compare(name, got, bad, case.rtol, case.atol)
    with pytest.raises(bench.BenchmarkMismatch, match="results"):
        bench.compare(name, got, ref[:-1], case.rtol, case.atol)    # a missing gradient
    bad = list(ref)
    bad[-1] = ref[-1].reshape(-1)[:-1] if ref[-1].size > 1 else ref[-1].reshape(1, 1)
    with pytest.raises(bench.BenchmarkMismatch, match="shape"):
        bench.compare(name, got, bad, case.rtol, case.atol)


@needs_torch
@pytest.mark.parametrize("name", _with_topics(VS_TORCH))
def test_regression_check_compares_phi_gradients_and_synapse_updates_with_torch(name):
    case = bench.BENCHMARKS[name].setup()
    assert case.reference_name.startswith("torch")
    got, ref = list(case.tinydan()), list(case.reference())
    shapes = [bench.as_array(r).shape for r in ref]
    # the updates of vec0..2 (weight, bias), skip0_2 and skip1_3, for population 1, C = 40
    assert shapes[-8:] == [(1, 1, 1600), (1, 1, 1600), (1, 40, 1600), (1, 1, 1600),
                           (1, 40, 40), (1, 1, 40), (1, 1, 1600), (1, 40, 40)]
    if name.endswith("deploy"):          # the task loss, 8 updates
        assert shapes[:1] == [()] and len(shapes) == 9
    else:                                # meta-loss, task loss, the 6 phi gradients, 8 updates
        assert shapes[:8] == [(), (), (40, 15), (15,), (15, 8), (8,), (8, 1), (1,)]
    bench.compare(name, got, ref, case.rtol, case.atol)
    # the synapse updates are (theta' - theta) / lr = the task gradient: 10% off is caught
    bad = list(ref)
    bad[-1] = bench.as_array(ref[-1]) * 1.1
    with pytest.raises(bench.BenchmarkMismatch, match=f"result {len(ref) - 1} "):
        bench.compare(name, got, bad, case.rtol, case.atol)
    # and the step carries its state forward: the second steps agree too, and differ from the first
    got2, ref2 = case.tinydan(), case.reference()
    bench.compare(name, got2, ref2, case.rtol, case.atol)
    assert not np.array_equal(bench.as_array(got2[-1]), bench.as_array(got[-1]))


@needs_torch
@pytest.mark.meta
@pytest.mark.dan
def test_regression_torch_mismatch_fails_loudly(monkeypatch):
    """A wrong phi gradient on the torch side stops the benchmark before anything is timed."""
    orig = bench.BENCHMARKS["regression_meta_first_order"]

    def setup():
        case = orig.setup()
        good = case.reference

        def wrong():
            out = list(good())
            out[2] = out[2] * 1.01                  # the gradient of the DAN's first weight
            return tuple(out)
        case.reference = wrong
        return case

    monkeypatch.setitem(bench.BENCHMARKS, orig.name,
                        bench.Benchmark(orig.name, setup, orig.target, orig.description))
    with pytest.raises(bench.BenchmarkMismatch, match="result 2 "):
        bench.run_benchmark(orig.name, repeat=1, quick=True)


@needs_torch
@pytest.mark.meta
@pytest.mark.dan
def test_regression_check_tells_first_order_from_one_step():
    """The one-step meta-gradient (through the inner update) is not the first-order one: the
    check is sharp enough to see the second-order term."""
    fo = bench.BENCHMARKS["regression_meta_first_order"].setup()
    os_ = bench.BENCHMARKS["regression_meta_one_step"].setup()
    got, ref = fo.tinydan(), os_.reference()
    with pytest.raises(bench.BenchmarkMismatch, match="result [2-7] "):
        bench.compare("mixed", got, ref, fo.rtol, fo.atol)


@pytest.mark.meta
@pytest.mark.dan
def test_regression_without_torch_times_tinydan_alone(no_torch, capsys):
    case = bench.BENCHMARKS["regression_deploy"].setup()
    assert case.reference is None and "torch not installed" in case.notes
    r = bench.run_benchmark("regression_deploy", repeat=2, quick=True)
    assert len(r.tinydan_samples) == 2 and r.reference_samples == []
    assert math.isnan(r.reference_s) and math.isnan(r.ratio) and r.status == ""
    table = bench.format_table([r])
    row = [c for c in table.splitlines()[-1].split("  ") if c.strip()]      # 2+ spaces apart
    assert [c.strip() for c in row[:7]] == ["regression_deploy", bench.fmt_time(r.tinydan_s),
                                            "-", "torch (absent)", "-", "<= 1.00x", "-"]
    notes = bench.format_regression_notes([r], [1.0, 1.0, 1.0])
    assert "not installed" in notes and "JAX jit 0.14 ms" in notes
    assert bench.main(["--only", "regression_meta_one_step", "--quick", "--repeat", "1",
                       "--threads", "0"]) == 0
    out = capsys.readouterr().out
    assert "regression_meta_one_step" in out and "not installed" in out


def test_time_pair_times_one_side_without_a_reference():
    calls = []
    ta, tb, number = bench.time_pair(lambda: calls.append("a"), None, repeat=3, warmup=1,
                                     min_sample_s=0.0)
    assert len(ta) == 3 and tb == [] and number == 1 and calls == ["a"] * 4


@needs_torch
@pytest.mark.meta
@pytest.mark.dan
def test_cli_regression_prints_published_numbers_and_profile(capsys):
    assert bench.main(["--only", "regression_deploy", "--quick", "--repeat", "1",
                       "--threads", "0", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "torch 2" in out                                   # the ref column
    assert "PyTorch 2.13 eager 0.54 ms, HIPS autograd 1.30 ms, JAX jit 0.14 ms" in out
    assert "meaningful" in out and "load average" in out
    assert "cProfile of 3 tinydan steps of regression_deploy" in out and "tottime" in out


def test_ucil_flag_when_the_benchmark_cannot_run_says_so(monkeypatch, capsys):
    def died(**kwargs):
        raise RuntimeError("the benchmark subprocess died (exit code -9); out of memory?")
    monkeypatch.setattr(ucil_step, "bench_paper_meta_step", died)
    assert bench.main(["--ucil", "--threads", "0"]) == 1
    out = capsys.readouterr().out
    assert "--ucil: the benchmark subprocess died (exit code -9)" in out
    assert not [s for s in out.splitlines() if s.startswith("benchmark ")]   # alone: no table


def test_ucil_flag_runs_the_paper_step_benchmark_and_prints_its_result(monkeypatch, capsys,
                                                                      tmp_path):
    seen = []

    def bench_paper_meta_step(**kwargs):
        seen.append(kwargs)
        return {"time_per_meta_step_s": 1.25, "peak_memory_bytes": 3 * 2 ** 30,
                "matmul_peak_fraction": 0.4213}
    monkeypatch.setattr(ucil_step, "bench_paper_meta_step", bench_paper_meta_step)
    out_json = tmp_path / "u.json"
    assert bench.main(["--ucil", "--quick", "--threads", "0", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert seen == [{}]                                       # its own default repeat
    assert "time_per_meta_step_s: 1.250 s" in out and "3072.0 MiB" in out and "0.4213" in out
    assert not [s for s in out.splitlines() if s.startswith("benchmark ")]   # alone: no table
    assert json.loads(out_json.read_text())["ucil"]["matmul_peak_fraction"] == 0.4213
    assert bench.main(["--ucil", "--repeat", "2", "--threads", "0"]) == 0
    assert seen == [{}, {"repeat": 2}]
    assert bench.main(["--only", "mlp40_b1", "--quick", "--repeat", "1", "--threads", "0"]) == 0
    assert len(seen) == 2                                     # --ucil is opt-in


@pytest.mark.dan
def test_paper_meta_step_flop_model():
    """The FLOP estimate: more than the VEC products alone, grows with the batch; the useful work
    (direct convolutions, no recomputed forward) is less than the work as executed."""
    from tinydan.ucil import initial_state, ucil_config
    cfg = ucil_config("paper")
    net, _ = initial_state(cfg, 0, population=0)
    assert net.num_synapses() == 38_576_400
    f = ucil_step.meta_step_flops(cfg, net=net)
    vec_only = 2.0 * 38_576_400 * (3 * 5 * 3 + 3 * 50 * 2)
    assert vec_only < f < 5 * vec_only
    assert ucil_step.meta_step_flops(cfg.replace(meta_batch=10), net=net) < f
    assert vec_only < ucil_step.meta_step_flops(cfg, as_executed=False, net=net) < f
    assert ucil_step.meta_step_flops(cfg, "one_step", net=net) > f


def test_paper_meta_step_meta_batch_draws_without_repeats():
    images = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1)   # (M, T, s, D)
    xm = ucil_step._meta_batch(images, 12, np.random.default_rng(0))
    assert xm.shape == (2, 12, 1)
    for m in range(2):                   # all 12 images of member m, each once, in some order
        assert sorted(xm[m, :, 0]) == list(images[m].reshape(-1))


def test_mlp_gradients_are_the_weight_and_bias_gradients():
    case = bench.BENCHMARKS["mlp40_b32"].setup()
    shapes = [np.shape(r) for r in case.reference()]
    assert shapes == [(), (40, 40), (40,), (40, 40), (40,), (40, 1), (1,)]


def test_run_benchmark_fails_loudly_on_a_wrong_reference(monkeypatch):
    orig = bench.BENCHMARKS["mlp40_b1"]

    def setup():
        case = orig.setup()
        good = case.reference

        def wrong():                      # a reference with the tanh derivative forgotten in db1
            out = list(good())
            out[2] = out[2] * 1.5
            return tuple(out)
        case.reference = wrong
        return case

    monkeypatch.setitem(bench.BENCHMARKS, "mlp40_b1",
                        bench.Benchmark("mlp40_b1", setup, orig.target, orig.description))
    with pytest.raises(bench.BenchmarkMismatch, match="result 2"):
        bench.run_benchmark("mlp40_b1", repeat=1, quick=True)


class _Twice(Op):
    """2a, whose backward is itself one more _Twice: exactly 1 forward + 1 backward op."""

    @staticmethod
    def forward(ctx, a):
        return 2 * a

    @staticmethod
    def backward(ctx, g):
        return (apply(_Twice, g),)


def test_count_ops_counts_forward_and_backward_ops_and_restores_the_classes():
    before = {c: c.__dict__.get("forward") for c in harness._op_classes()}
    x = td.tensor(np.ones(3, np.float32), requires_grad=True)
    n, y = bench.count_ops(lambda: apply(_Twice, x))
    assert n == 1
    ones = np.ones(3, np.float32)
    n, g = bench.count_ops(lambda: td.grad(apply(_Twice, x), x, grad_outputs=ones))
    assert n == 2 and np.allclose(g.data, 2.0)
    assert {c: c.__dict__.get("forward") for c in harness._op_classes()} == before
    assert isinstance(_Twice.__dict__["forward"], staticmethod)
    # the MLP step: its 6 to 9 forward ops (3 linear or 3 matmul + 3 add, 2 tanh, mse) and more
    # in the backward
    n_mlp, _ = bench.count_ops(bench.BENCHMARKS["mlp40_b1"].setup().tinydan)
    assert n_mlp > 9


def test_time_pair_interleaves_and_returns_per_call_times():
    calls = []
    ta, tb, number = bench.time_pair(lambda: calls.append("a"), lambda: calls.append("b"),
                                     repeat=4, warmup=1, min_sample_s=0.0)
    assert len(ta) == len(tb) == 4 and number == 1
    assert calls == ["a", "b"] * 5


def test_cli_quick_json_and_list(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.main(["--only", "mlp40_b1", "--quick", "--repeat", "2", "--threads", "0",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "numpy" in text and "BLAS" in text and "CPUs" in text and "mlp40_b1" in text
    assert "ONE BLAS thread" in text
    assert "BLAS kernel" in text
    data = json.loads(out.read_text())
    assert data["machine"]["numpy"] == np.__version__
    libs = data["machine"]["blas_library"]
    assert libs and all({"library", "version", "architecture", "source"} <= set(d) for d in libs)
    (r,) = data["results"]
    assert r["name"] == "mlp40_b1" and len(r["tinydan_samples"]) == 2
    assert bench.main(["--list"]) == 0
    assert "conv2d_ucil_2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--only", "nope"])


def test_threads_flag_parsing_and_reexec(monkeypatch):
    assert entry._threads_from_argv([]) == 1
    assert entry._threads_from_argv(["--threads", "4"]) == 4
    assert entry._threads_from_argv(["--quick", "--threads=0"]) == 0
    assert entry._BLAS_ENV == harness.BLAS_ENV         # what is set is what the header reports
    for k in entry._BLAS_ENV:
        monkeypatch.setenv(k, "7")
    monkeypatch.delenv(entry._REEXEC_MARKER, raising=False)
    seen = []

    def fake_execv(path, args):
        seen.append(args)
        raise SystemExit(0)
    monkeypatch.setattr(entry.os, "execv", fake_execv)
    with pytest.raises(SystemExit):
        entry._set_blas_threads_or_reexec(["--quick"])
    assert seen == [[sys.executable, "-m", "tinydan.bench", "--quick"]]
    assert all(os.environ[k] == "1" for k in entry._BLAS_ENV)
    entry._set_blas_threads_or_reexec(["--quick"])         # already set: no second exec
    assert len(seen) == 1


def test_the_thread_setting_needs_no_numpy():
    """__main__.py's top (the --threads handling) imports the standard library only, so it can run
    before NumPy is loaded."""
    code = ("import importlib.util, sys\n"
            "sys.modules['numpy'] = None\n"                    # any import of NumPy fails
            f"spec = importlib.util.spec_from_file_location('entry', {entry.__file__!r})\n"
            "mod = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(mod)\n"
            "print(mod._threads_from_argv(['--threads', '3']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "3"


def test_module_entry_point_sets_one_blas_thread():
    env = {k: v for k, v in os.environ.items()
           if k not in entry._BLAS_ENV and k != entry._REEXEC_MARKER}
    p = subprocess.run([sys.executable, "-m", "tinydan.bench", "--only", "mlp40_b1", "--quick",
                        "--repeat", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "OPENBLAS_NUM_THREADS=1" in p.stdout and "mlp40_b1" in p.stdout


def test_cpu_clock_option(capsys):
    assert bench.main(["--only", "mlp40_b1", "--quick", "--repeat", "2", "--threads", "0",
                       "--clock", "cpu"]) == 0
    assert "CPU time of this thread" in capsys.readouterr().out


def test_cpu_clock_does_not_count_sleeping():
    import time
    nap = lambda: time.sleep(0.02)                              # noqa: E731
    wall, _, _ = bench.time_pair(nap, None, repeat=2, warmup=0, min_sample_s=0.0)
    cpu, _, _ = bench.time_pair(nap, None, repeat=2, warmup=0, min_sample_s=0.0, clock="cpu")
    assert min(wall) >= 0.019 and max(cpu) < 0.01
    with pytest.raises(ValueError, match="clock"):
        bench.time_pair(nap, None, repeat=1, clock="gpu")


def test_blas_library_from_threadpoolctl_or_numpy_config(monkeypatch):
    try:
        importlib.import_module("threadpoolctl")
        libs = harness.blas_library()
        assert libs and all(d["source"] == "threadpoolctl" for d in libs)
        if any(d["library"] == "openblas" for d in libs):          # OpenBLAS names its kernel
            assert all(d["architecture"] for d in libs if d["library"] == "openblas")
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)     # as without threadpoolctl
    libs = harness.blas_library()
    assert [d["source"] for d in libs] == ["numpy.show_config"]
    assert libs[0]["library"] and libs[0]["architecture"] is None
    assert "run-time kernel unknown" in harness._format_kernel(libs)


# ---------------------------------------------------------------- the PyTorch meta-training
@needs_torch
@pytest.mark.meta
@pytest.mark.dan
@pytest.mark.parametrize("meta_grad", ["first_order", "one_step"])
def test_torch_reference_meta_trains_like_tinydan(meta_grad):
    """Same network, phi_0, theta_0 and task draws: two meta-epochs in PyTorch land where
    tinydan's MetaTrainer does (float32 rounding apart), epoch by epoch, and so does the
    validation of the final phi."""
    from tinydan.bench.torch_reference import meta_train
    from tinydan.experiments.configs import regression_config
    from tinydan.experiments.regression import new_trainer
    cfg = regression_config("tiny", meta_grad=meta_grad, meta_lr_decay=0.5)
    theirs = meta_train(cfg, 3, 2)
    tr = new_trainer(cfg, 3)
    tr.run_epoch()
    tr.run_epoch()
    np.testing.assert_allclose(theirs["history"]["meta_loss"], tr.history["meta_loss"],
                               rtol=1e-4)
    np.testing.assert_allclose(theirs["history"]["task_loss"], tr.history["task_loss"],
                               rtol=1e-4)
    from tinydan.experiments.regression import validate
    assert theirs["val"] == pytest.approx(validate(tr.net, tr.theta0, cfg, 3), rel=1e-4)
    moved = 0.0
    for a, p, p0 in zip(theirs["phi"], tr.phi, new_trainer(cfg, 3).phi):
        np.testing.assert_allclose(a, p.data, rtol=1e-3, atol=1e-5)
        moved = max(moved, float(np.abs(p.data - p0.data).max()))
    assert moved > 1e-3                      # phi did move: the agreement is not at phi_0


@needs_torch
@pytest.mark.meta
@pytest.mark.dan
def test_end_to_end_times_both_commands_and_compares_their_losses(capsys):
    res = bench.end_to_end(1, rounds=2, config="tiny")
    assert len(res["samples"]["tinydan"]) == len(res["samples"]["torch"]) == 2
    for side in ("tinydan", "torch"):
        assert all(s["wall_s"] > 0 and s["cpu_s"] > 0 for s in res["samples"][side])
    assert res["meta_loss_max_rel_diff"] < 1e-4 and res["val_max_rel_diff"] < 1e-4
    assert res["ratio"]["wall_s"] > 0
    text = bench.format_end_to_end(res)
    assert "tinydan / PyTorch" in text and "1 meta-epochs of config 'tiny' (first_order)" in text


def test_end_to_end_refuses_bad_numbers_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--end-to-end", "0"])
    assert e.value.code == 2 and "--end-to-end must be >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rounds"):
        bench.end_to_end(1, rounds=0)


@pytest.mark.meta
def test_torch_reference_without_torch_says_how_to_get_it(no_torch, capsys):
    from tinydan.bench import torch_reference
    assert torch_reference.main(["--config", "tiny", "--epochs", "1"]) == 2
    assert "pip install torch" in capsys.readouterr().err
