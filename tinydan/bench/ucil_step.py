"""The paper-scale UCIL meta-step benchmark (paper section 3.2, the `paper` config).

``bench_paper_meta_step`` times meta-steps of the `paper` config in a forked subprocess and
measures their peak memory there; ``meta_step_flops`` is the FLOP model that turns the time into a
fraction of the machine's float32 matmul throughput (``sgemm_gflops``); ``tune_allocator`` is the
glibc setting the step runs under. Run it with ``python -m tinydan.bench --ucil`` or
``python -m tinydan.ucil bench``.

``tinydan.ucil`` is imported where it is used, not at the top: its ``bench`` command imports this
module, and a top-level import would make a cycle.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from tinydan.parallel import tune_allocator

if TYPE_CHECKING:
    from tinydan.experiments.configs import UCILConfig

__all__ = ["tune_allocator", "sgemm_gflops", "meta_step_flops", "bench_paper_meta_step",
           "PYTORCH_REFERENCE"]

#: A PyTorch CPU implementation of the same meta-step, for comparison (carried into the result):
#: its time with 2 and with 1 intra-op threads, and its peak memory.
PYTORCH_REFERENCE = {"pytorch_cpu_2_threads_seconds": 6.65, "pytorch_cpu_1_thread_seconds": 10.7,
                     "pytorch_peak_gib": 3.95}


def sgemm_gflops(n: int = 2048, repeat: int = 3) -> float:
    """The machine's float32 matmul throughput: 2 n^3 / (best of ``repeat`` n x n x n products),
    in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def meta_step_flops(cfg: UCILConfig, meta_grad: str = "first_order", as_executed: bool = True,
                    net=None) -> float:
    """FLOPs (2 per multiply-add) of one meta-step: an estimate for the fraction of matmul peak.

        F = M b (3 V + D(M b)) [x 2 for one_step] + M B (2 V + D(M B)),
        D(r) = sum over the DAN layers l of n_l f k_l(r)

    with M members, b images per inner step, B meta-batch images, V = 2 x synapses per member (a
    VEC forward on one image), f the FLOPs of one DAN forward on one neuron's C inputs, and k_l = 3
    (forward and two backward products) or 4 where the layer's call on r rows is too big to keep
    its intermediates and its forward is recomputed. ``as_executed``: f as this code runs it
    (banded convolutions with their zeros, or whole-image matrices for tiny DAN images); else the
    useful work only (direct convolutions, k = 3). ``net``: the UCIL network of ``cfg`` (built
    from seed 0 when None; only its shapes are read).
    """
    if net is None:
        from tinydan.experiments.configs import initial_state
        net, _ = initial_state(cfg, 0, population=0)
    M, b, B = cfg.population, cfg.shots, cfg.meta_batch
    vec = 2.0 * net.num_synapses()
    dan = net.dans[0]
    dan_fwd = 2.0 * (dan.flat * dan.fc0_w.shape[1] + dan.fc0_w.shape[1])
    for (c_in, c_out, k, s_in), block, dense in zip(dan.conv_shapes, dan.blocks, dan.dense):
        so = s_in - k + 1
        if as_executed and dense:                 # (s_in^2 c_in) x (so^2 c_out) image matrix
            dan_fwd += 2.0 * (s_in * s_in * c_in) * (so * so * c_out)
        elif as_executed:                         # banded strips of `block` output pixels
            dan_fwd += 2.0 * so * (so // block) * (k * (block + k - 1) * c_in) * (block * c_out)
        else:                                     # direct convolution
            dan_fwd += 2.0 * so * so * c_in * k * k * c_out

    def dans(rows_per_neuron):                  # forward (+ recompute) + backward (2 products)
        return sum(n * dan_fwd * (3 if not as_executed or
                                  rows_per_neuron * n * dan.row_bytes <= dan.keep_bytes else 4)
                   for n in cfg.nodes[1:])
    # inner step: VEC forward, dX and dW (3 products); meta step: VEC forward and dX (2 products)
    inner = M * b * 3 * vec + M * b * dans(M * b)
    meta = M * B * 2 * vec + M * B * dans(M * B)
    if meta_grad == "one_step":                   # the inner step's backward is differentiated
        inner *= 2
    return inner + meta


def _meta_batch(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(M, T, s, D) images -> (M, size, D): per member, ``size`` of its T*s images, no repeats."""
    M, T, s, D = images.shape
    flat = images.reshape(M, T * s, D)
    idx = np.argsort(rng.random((M, T * s)), axis=1)[:, :size]          # (M, size)
    return np.take_along_axis(flat, idx[..., None], axis=1)


def _bench_child(meta_grad: str, repeat: int, blas_threads: int, dan_threads: int, conn) -> None:
    """The subprocess of ``bench_paper_meta_step``: ``repeat`` timed meta-steps after one warm-up,
    sent back through ``conn`` with the process's peak resident memory and the step's FLOPs."""
    import resource

    from tinydan.meta import meta_step
    from tinydan.parallel import set_blas_threads
    from tinydan.tensor import Tensor
    from tinydan.experiments.configs import initial_state, ucil_config
    tune_allocator()
    set_blas_threads(blas_threads)
    cfg = ucil_config("paper", meta_grad=meta_grad)
    net, theta0 = initial_state(cfg, 0)
    flops = meta_step_flops(cfg, meta_grad, net=net)
    useful = meta_step_flops(cfg, meta_grad, as_executed=False, net=net)
    for dan in net.dans:
        dan.threads = dan_threads
    rng = np.random.default_rng(1)
    data = rng.random((cfg.population, cfg.n_classes, cfg.shots, cfg.nodes[0]), dtype=np.float32)
    theta = {k: Tensor(v, requires_grad=True) for k, v in theta0.items()}
    del theta0
    times, cpu = [], []
    for r in range(repeat + 1):                           # the first one warms up
        x = data[:, r % cfg.n_classes]                                  # (M, shots, D)
        xm = _meta_batch(data, cfg.meta_batch, rng)                     # (M, meta_batch, D)
        t, c = time.perf_counter(), time.process_time()
        theta, _, _, lm = meta_step(net, theta, x, x, xm, xm, cfg.inner_lr, meta_grad,
                                    in_place=True)     # as meta_train runs it
        if r:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # Linux: KiB
    conn.send({"seconds": times, "cpu_seconds": cpu, "peak_rss_bytes": peak,
               "synapses": net.num_synapses(), "phi": net.num_parameters(), "meta_loss": lm,
               "flops": flops, "useful_flops": useful})
    conn.close()


def bench_paper_meta_step(meta_grad: str = "first_order", repeat: int = 3,
                          threads: int | None = None, blas_threads: int = 1,
                          gemm: bool = True) -> dict:
    """Time one meta-step of the ``paper`` config (M = 3, 5 images per inner step, 50-image
    meta-batch, 38.6M synapses per model) and measure its peak memory.

    It runs in a fresh subprocess (fork), so that ``ru_maxrss`` (the peak resident set of that
    process, which counts NumPy's buffers: tracemalloc does not see them all) is the meta-step's
    own peak and nothing else's. ``threads`` (default: the cores, at most 2) is the number of
    threads that run the chunks of the DAN layers (``ConvDAN.threads``); ``blas_threads`` the
    OpenBLAS threads (default 1: the DAN layers are thousands of small products, where OpenBLAS
    threads spin and cost more than they give; threads over chunks use the cores instead).
    Returns the median wall time and the spread, CPU time, peak memory, the machine's float32
    matmul throughput (a 2048^3 sgemm with ``threads`` BLAS threads: the peak those cores can
    give) and the fraction of it the meta-step reaches, achieved GFLOP/s = ``meta_step_flops`` /
    median time. Raises RuntimeError when the subprocess dies (out of memory, most likely).
    """
    from tinydan.meta import META_GRADS
    from tinydan.parallel import mp_context, set_blas_threads, usable_cores
    if meta_grad not in META_GRADS:
        raise ValueError(f"meta_grad must be one of {META_GRADS}, got {meta_grad!r}")
    threads = min(2, usable_cores()) if threads is None else int(threads)
    ctx = mp_context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_bench_child, args=(meta_grad, int(repeat), int(blas_threads),
                                                 threads, child))
    proc.start()
    child.close()
    try:
        res = parent.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"the benchmark subprocess died (exit code {proc.exitcode}); "
                           "out of memory?") from None
    proc.join()
    flops, useful = res.pop("flops"), res.pop("useful_flops")
    out = {"config": "paper", "meta_grad": meta_grad, "population": 3, "inner_batch": 5,
           "meta_batch": 50, "threads": threads, "blas_threads": int(blas_threads),
           "repeat": int(repeat), **res}
    out["median_seconds"] = float(np.median(res["seconds"]))
    out["peak_rss_gib"] = res["peak_rss_bytes"] / 2 ** 30
    out["gflop_per_step"] = flops / 1e9
    out["useful_gflop_per_step"] = useful / 1e9
    out["achieved_gflops"] = flops / 1e9 / out["median_seconds"]
    out["useful_gflops"] = useful / 1e9 / out["median_seconds"]
    if gemm:
        set_blas_threads(threads)
        try:
            out["sgemm_gflops"] = sgemm_gflops()
        finally:
            set_blas_threads(1)
        out["fraction_of_sgemm_peak"] = out["achieved_gflops"] / out["sgemm_gflops"]
        out["useful_fraction_of_sgemm_peak"] = out["useful_gflops"] / out["sgemm_gflops"]
    out["reference"] = dict(PYTORCH_REFERENCE)
    return out
