"""The benchmark harness: every benchmark runs, and its correctness check really compares.

Timings are never asserted on (machines are noisy); only that they are finite and positive.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import tinydan as td
from tinydan import bench
from tinydan.tensor import Op, apply

pytestmark = pytest.mark.autograd

NAMES = list(bench.BENCHMARKS)


def test_registry_has_the_benchmarks_and_targets():
    for name in ("mlp40_b1", "mlp40_b32", "mlp256_b64", "conv2d_ucil", "conv2d_ucil_2",
                 "maxpool_ucil"):
        assert name in bench.BENCHMARKS
    assert bench.BENCHMARKS["mlp256_b64"].target == 1.15
    assert bench.BENCHMARKS["conv2d_ucil"].target == 1.3
    assert bench.BENCHMARKS["mlp40_b1"].target is None
    with pytest.raises(ValueError, match="twice"):
        bench.register("mlp40_b1")(lambda: None)


@pytest.mark.parametrize("name", NAMES)
def test_each_benchmark_runs_quick_with_finite_times(name):
    r = bench.run_benchmark(name, repeat=1, quick=True)
    assert r.name == name and r.repeat == 1 and r.number == 1
    for t in (*r.tinydan_samples, *r.reference_samples, r.tinydan_s, r.reference_s, r.ratio):
        assert math.isfinite(t) and t > 0
    assert r.ops > 0
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


@pytest.mark.parametrize("name", NAMES)
def test_check_compares_every_output_and_gradient(name):
    case = bench.BENCHMARKS[name].setup()
    got = [r.data if isinstance(r, td.Tensor) else np.asarray(r) for r in case.tinydan()]
    ref = [np.asarray(r) for r in case.reference()]
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
    before = {c: c.__dict__.get("forward") for c in bench._op_classes()}
    x = td.tensor(np.ones(3, np.float32), requires_grad=True)
    n, y = bench.count_ops(lambda: apply(_Twice, x))
    assert n == 1
    ones = np.ones(3, np.float32)
    n, g = bench.count_ops(lambda: td.grad(apply(_Twice, x), x, grad_outputs=ones))
    assert n == 2 and np.allclose(g.data, 2.0)
    assert {c: c.__dict__.get("forward") for c in bench._op_classes()} == before
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
    data = json.loads(out.read_text())
    assert data["machine"]["numpy"] == np.__version__
    (r,) = data["results"]
    assert r["name"] == "mlp40_b1" and len(r["tinydan_samples"]) == 2
    assert bench.main(["--list"]) == 0
    assert "conv2d_ucil_2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--only", "nope"])


def test_threads_flag_parsing_and_reexec(monkeypatch):
    assert bench._threads_from_argv([]) == 1
    assert bench._threads_from_argv(["--threads", "4"]) == 4
    assert bench._threads_from_argv(["--quick", "--threads=0"]) == 0
    for k in bench._BLAS_ENV:
        monkeypatch.setenv(k, "7")
    monkeypatch.delenv(bench._REEXEC_MARKER, raising=False)
    seen = []

    def fake_execv(path, args):
        seen.append(args)
        raise SystemExit(0)
    monkeypatch.setattr(bench.os, "execv", fake_execv)
    with pytest.raises(SystemExit):
        bench._set_blas_threads_or_reexec(["--quick"])
    assert seen == [[sys.executable, "-m", "tinydan.bench", "--quick"]]
    assert all(os.environ[k] == "1" for k in bench._BLAS_ENV)
    bench._set_blas_threads_or_reexec(["--quick"])         # already set: no second exec
    assert len(seen) == 1


def test_module_entry_point_sets_one_blas_thread():
    env = {k: v for k, v in os.environ.items()
           if k not in bench._BLAS_ENV and k != bench._REEXEC_MARKER}
    p = subprocess.run([sys.executable, "-m", "tinydan.bench", "--only", "mlp40_b1", "--quick",
                        "--repeat", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "OPENBLAS_NUM_THREADS=1" in p.stdout and "mlp40_b1" in p.stdout
