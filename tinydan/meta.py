"""Algorithm 1 of the paper, written once for both experiments.

A **population** of M models shares one phenotype phi (the DANs, ``net``'s Parameters) and has its
own synapses theta_m (one leading axis of every synapse tensor: no Python loop over members).
Each meta-epoch every member gets a fresh task sequence and the synapses restart from theta_0.
After EVERY inner step

    theta_{t+1} = theta_t - alpha * grad_theta L_task(theta_t, phi)           (inner step, SGD)

comes a meta step on the meta-loss at the updated synapses, averaged over the population:

    phi <- Adam(phi, (1/M) sum_m grad_phi L_meta(theta_{t+1, m}, phi))        (meta step)

Two meta-gradients (docs/model-and-protocol.md#meta-gradients):

* ``first_order``: theta_{t+1} is held constant; only phi's direct effect on the meta-loss counts.
* ``one_step``: differentiate through the inner update too. theta_{t+1} depends on phi through
  grad_theta L_task, so this is a gradient of a gradient (``create_graph=True``).

The authors' notebook (config ``authors``) differs in two ways that ``MetaTrainer`` also runs:
the synapses learn with Adam instead of SGD (``inner_optimizer="adam"``, ``SynapseAdam``; first
order only), and phi takes ``meta_updates`` steps after every inner step, each on a fresh
meta-batch at the same theta_{t+1}.
"""
from __future__ import annotations

import warnings
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np

from . import ops
from .autograd import grad
from .nn.dan import DANNetwork
from .optim import Adam, SGD
from .tensor import Tensor, wrap

__all__ = ["META_GRADS", "task_loss", "inner_step", "meta_step", "MetaTrainer", "TaskSequence",
           "deploy_step", "sgd_step_", "meta_gradient", "SynapseAdam", "PopulationSplit"]

META_GRADS = ("first_order", "one_step")


class TaskSequence(Protocol):
    """One task sequence per population member, stacked on a leading axis of size M."""

    def inner_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x (M, b, n_in), y (M, b, n_out)) for every inner step, sub-task after sub-task."""

    def meta_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x (M, B, n_in), y (M, B, n_out)) for the meta-loss after the latest inner step."""


def task_loss(net: DANNetwork, theta: dict, x: Tensor, y: Tensor) -> Tensor:
    """sum over members of each member's mean squared error: sum_m mean_b (f(x_mb) - y_mb)^2.

    Summing (not averaging) over members gives each member's synapses exactly its own gradient.
    """
    pred = net(x, theta)
    return ops.mul(ops.mse_loss(pred, y), float(x.shape[0]))


def _as_leaves(theta: dict, copy: bool = False) -> dict:
    """Fresh leaf Tensors with requires_grad (sharing the arrays, or ``copy``-ing them)."""
    arrays = {k: v.data if isinstance(v, Tensor) else v for k, v in theta.items()}
    return {k: Tensor(np.array(a) if copy else a, requires_grad=True) for k, a in arrays.items()}


def inner_step(net: DANNetwork, theta: dict, x, y, lr: float, create_graph: bool = False,
               in_place: bool = False):
    """theta' = theta - lr * grad_theta L_task(theta, phi); returns (theta', L_task).

    ``in_place`` (plain numbers, a DANNetwork): the writable leaves of ``theta`` are overwritten
    and returned as theta' (own them), by the fused kernel ``_sgd_kernel``: the same update, one
    pass over each synapse matrix.
    """
    # BEGIN SOLUTION
    if in_place and not create_graph and isinstance(net, DANNetwork):
        return _sgd_kernel(net, theta, x, y, lr)
    names = list(theta)
    loss = task_loss(net, theta, _t(x), _t(y))
    grads = grad(loss, [theta[k] for k in names], create_graph=create_graph)
    if create_graph:           # theta' stays a function of phi (through the gradient)
        new = {k: ops.sub(theta[k], ops.mul(g, lr)) for k, g in zip(names, grads)}
    else:                      # plain numbers: new leaves
        new, used = {}, set()
        for k, g in zip(names, grads):
            gd, old = g.data, theta[k].data
            if gd.flags.owndata and gd.flags.writeable and id(gd) not in used \
                    and gd.shape == old.shape and gd.dtype == old.dtype:
                used.add(id(gd))                # a fresh gradient array: update in its buffer
                gd *= -lr
                gd += old
            else:
                gd = old - lr * gd
            t = wrap(gd)
            t.requires_grad = True
            new[k] = t
    return new, loss
    # END SOLUTION


def deploy_step(net: DANNetwork, theta: dict, x, y, lr: float,
                in_place: bool = False) -> tuple[dict, float]:
    """One deployment SGD step on the synapses with phi fixed; returns (theta', loss per member)."""
    new, loss = inner_step(net, theta, x, y, lr, create_graph=False, in_place=in_place)
    return new, _number(loss) / x.shape[0]


def sgd_step_(net: DANNetwork, theta: dict, x, y, lr: float) -> tuple[dict, float]:
    """``deploy_step`` in place: theta's owned leaves are overwritten (``inner_step(in_place=True)``)."""
    return deploy_step(net, theta, x, y, lr, in_place=True)


def _sgd_kernel(net: DANNetwork, theta: dict, x, y, lr: float) -> tuple[dict, Tensor]:
    """The fused kernel of ``inner_step(in_place=True)``: W <- W - lr * a^T dL/dz, one GEMM per
    member, for every synapse tensor.

    The same update as the plain path (phi fixed, plain SGD; equal up to float rounding: BLAS
    rounds -lr a^T dz + W once), without a gradient array per synapse tensor: the backward stops
    at the VEC sums z (``DANNetwork.forward(record=...)``) and BLAS adds -lr a_m^T dz_m into W_m
    directly (GEMM with beta = 1), so each synapse matrix is read and written once per step instead
    of four times. Deployment is memory-bound (millions of synapses per member, five images), so
    this is where its time goes. Leaf Tensors with requires_grad and a writable array are updated
    in place; anything else is copied first. Returns (theta', L_task).
    """
    from scipy.linalg.blas import get_blas_funcs

    def owned(v):
        return isinstance(v, Tensor) and v.requires_grad and v._op is None and v.data.flags.writeable
    th = {k: v if owned(v) else Tensor(np.array(v.data if isinstance(v, Tensor) else v),
                                       requires_grad=True) for k, v in theta.items()}
    rec: dict = {}
    x, y = _t(x), _t(y)
    loss = ops.mul(ops.mse_loss(net(x, th, record=rec), y), float(x.shape[0]))
    if set(rec) != set(th):
        raise ValueError(f"an in-place step updates the synapses a DANNetwork records; got "
                         f"{sorted(th)}, the network uses {sorted(rec)}")
    zs = list({id(z): z for _, z in rec.values()}.values())
    dz = {id(z): g.data for z, g in zip(zs, grad(loss, zs))}
    for name, (a, z) in rec.items():
        W, g = th[name].data, dz[id(z)]                      # W (P, n_in, n_out C), g (P, B, n_out C)
        if a is None:                                        # a bias (P, 1, n_out C)
            W -= np.asarray(lr, W.dtype) * g.sum(axis=1, keepdims=True)
            continue
        gemm = get_blas_funcs("gemm", (W,))
        for m in range(W.shape[0]):                          # W_m^T <- -lr g_m^T a_m + W_m^T
            out = gemm(-lr, g[m], a.data[m], beta=1.0, c=W[m].T, trans_a=1, overwrite_c=1)
            if not np.shares_memory(out, W[m]):              # BLAS could not write in place
                W[m] = out.T
    return th, loss


def _number(t: Tensor) -> np.float64:
    """A scalar loss as a float64 NumPy number (not float(): a compiled step may not read values
    into Python; the same value bit for bit)."""
    return t.data.astype(np.float64)[()]


def _t(a) -> Tensor:
    return a if isinstance(a, Tensor) else wrap(a)


def meta_step(net: DANNetwork, theta: dict, x_task, y_task, x_meta, y_meta, inner_lr: float,
              meta_grad: str = "first_order", phi: list | None = None, in_place: bool = False):
    """One inner step and the meta-gradient at the updated synapses.

    Returns (theta_{t+1} as new leaves, grads of the meta-loss w.r.t. ``phi`` (default: all of
    ``net``'s Parameters), task loss per member, meta-loss). ``in_place`` (first_order on a
    DANNetwork; ignored otherwise): the inner step overwrites the writable leaves of ``theta``
    (own them) and returns them as theta_{t+1} (``inner_step``); the same update up to float
    rounding, faster.
    """
    # BEGIN SOLUTION
    if meta_grad not in META_GRADS:
        raise ValueError(f"meta_grad must be one of {META_GRADS}, got {meta_grad!r}")
    phi = net.parameters() if phi is None else phi
    one_step = meta_grad == "one_step"
    theta1, loss = inner_step(net, theta, x_task, y_task, inner_lr, create_graph=one_step,
                              in_place=in_place)
    if not one_step:
        theta1_const = {k: wrap(v.data) for k, v in theta1.items()}
    else:
        theta1_const = theta1
    meta_loss = ops.mse_loss(net(_t(x_meta), theta1_const), _t(y_meta))   # mean over members
    gphi = grad(meta_loss, phi, allow_unused=True)
    if one_step:
        theta1 = {k: Tensor(v.data, requires_grad=True) for k, v in theta1.items()}
    return theta1, gphi, _number(loss) / x_task.shape[0], _number(meta_loss)
    # END SOLUTION


def meta_gradient(net: DANNetwork, theta1: dict, x_meta, y_meta, phi: list | None = None):
    """First-order meta-gradient at fixed synapses: (grad_phi L_meta(theta1, phi), L_meta).

    L_meta is the mean over members of each member's MSE on its meta-batch (as in meta_step).
    """
    phi = net.parameters() if phi is None else phi
    const = {k: wrap(v.data if isinstance(v, Tensor) else v) for k, v in theta1.items()}
    meta_loss = ops.mse_loss(net(_t(x_meta), const), _t(y_meta))
    return grad(meta_loss, phi, allow_unused=True), _number(meta_loss)


class SynapseAdam:
    """Adam on the synapses (the authors' inner optimizer), one state per population member.

    Adam is elementwise, so with the population axis every member (or deployed function) keeps
    its own moments: m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g^2,
    theta <- theta - lr * m_hat / (sqrt(v_hat) + eps). ``step`` returns NEW leaves (no graph).
    """

    def __init__(self, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.lr, self.eps = float(lr), float(eps)
        self.b1, self.b2 = (float(b) for b in betas)
        self.t, self.m, self.v = 0, {}, {}

    def step(self, theta: dict, grads) -> dict:
        """theta' (new leaves) from theta and grads (a list in theta's key order, or a dict)."""
        if not isinstance(grads, dict):
            grads = dict(zip(theta, grads))
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        new = {}
        for k, p in theta.items():
            data = p.data if isinstance(p, Tensor) else np.asarray(p)
            g = grads[k].data if isinstance(grads[k], Tensor) else np.asarray(grads[k])
            if k not in self.m:
                self.m[k], self.v[k] = np.zeros_like(data), np.zeros_like(data)
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * (g * g)
            upd = self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)
            new[k] = Tensor((data - upd).astype(data.dtype, copy=False), requires_grad=True)
        return new

    def deploy_step(self, net: DANNetwork, theta: dict, x, y) -> tuple[dict, float]:
        """One deployment Adam step on the synapses with phi fixed; returns (theta', loss)."""
        loss = task_loss(net, theta, _t(x), _t(y))
        grads = grad(loss, list(theta.values()))
        return self.step(theta, grads), float(loss.data) / x.shape[0]


@dataclass
class MetaTrainer:
    """Runs Algorithm 1: meta-epochs of (inner step, meta step) pairs over sampled task sequences.

    ``sample`` draws one TaskSequence for the whole population from a Generator. ``theta0`` is the
    synapse initialisation every member restarts from at each meta-epoch. ``net`` may be any
    object with ``parameters()`` (phi) and ``net(x, synapses)`` (e.g. a network of warp layers).

    ``inner_optimizer="adam"`` (first order only) learns the synapses with ``SynapseAdam`` (state
    reset with theta at each meta-epoch); ``meta_updates=k`` takes k phi steps after every inner
    step, each on a fresh meta-batch at theta_{t+1} (one_step: each one re-differentiates the inner
    step from theta_t under the current phi, and the synapses move on with the last). The epoch's
    meta-loss is that of the first meta-batch after each inner step. ``in_place=True`` (plain SGD,
    first_order, a DANNetwork; ignored otherwise) runs ``meta_step(in_place=True)`` on a copy of
    theta_0 made at each meta-epoch.
    """

    net: DANNetwork
    theta0: dict
    sample: Callable[[np.random.Generator], TaskSequence]
    inner_lr: float
    meta_lr: float
    meta_grad: str = "first_order"
    meta_optimizer: str = "adam"
    seed: int = 0
    epoch: int = 0
    history: dict = field(default_factory=lambda: {"epoch": [], "task_loss": [], "meta_loss": []})
    inner_optimizer: str = "sgd"
    meta_updates: int = 1
    # first_order with SGD on a DANNetwork: the inner step updates the synapses in place
    # (``sgd_step_``; theta is copied from theta_0 at each meta-epoch)
    in_place: bool = False
    # split the members across this many processes (plain SGD, meta_updates 1): this one and
    # processes - 1 workers (``PopulationSplit``)
    processes: int = 1
    # phi's learning rate in meta-epoch e (from 0) is meta_lr * meta_lr_decay ** e
    meta_lr_decay: float = 1.0
    # record the plain step (meta_step + the phi update) once and replay it (``tinydan.compile``):
    # the same numbers, faster; not for the in-place or split steps, whose kernels it cannot trace
    compile: bool = True

    def __post_init__(self):
        if self.meta_grad not in META_GRADS:
            raise ValueError(f"meta_grad must be one of {META_GRADS}, got {self.meta_grad!r}")
        if self.meta_optimizer not in ("adam", "sgd"):
            raise ValueError(f"meta_optimizer must be 'adam' or 'sgd', got {self.meta_optimizer!r}")
        self.phi = self.net.parameters()
        opt = Adam if self.meta_optimizer == "adam" else SGD
        self.optimizer = opt(self.phi, lr=self.meta_lr)
        self.rng = np.random.default_rng([self.seed, 1])
        if self.inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {self.inner_optimizer!r}")
        if self.inner_optimizer == "adam" and self.meta_grad == "one_step":
            raise ValueError("meta_grad 'one_step' differentiates through an SGD step; with "
                             "inner_optimizer 'adam' use 'first_order'")
        if int(self.meta_updates) < 1:
            raise ValueError(f"meta_updates must be >= 1, got {self.meta_updates}")
        if not self.meta_lr_decay > 0:
            raise ValueError(f"meta_lr_decay must be > 0, got {self.meta_lr_decay}")
        if int(self.processes) < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if int(self.processes) > 1 and (self.inner_optimizer != "sgd" or self.meta_updates != 1):
            raise ValueError("processes > 1 splits the plain step (inner_optimizer 'sgd', "
                             f"meta_updates 1); got inner_optimizer {self.inner_optimizer!r}, "
                             f"meta_updates {self.meta_updates}: use processes=1")
        self._split = None
        self._step = None

    def run_epoch(self, progress=None) -> dict:
        """One meta-epoch: reset theta to theta_0, a new task sequence per member, then for every
        inner step a meta step (Algorithm 1, lines 5-19). Returns the epoch's mean losses."""
        seq = self.sample(self.rng)
        self.optimizer.lr = self.meta_lr * float(self.meta_lr_decay) ** self.epoch
        split = self.start()
        if split is not None:
            theta = split.reset(self.theta0)
        else:
            theta = _as_leaves(self.theta0, copy=self.in_place)
        task_losses, meta_losses = [], []
        general = self.inner_optimizer != "sgd" or self.meta_updates != 1
        adam = SynapseAdam(self.inner_lr) if self.inner_optimizer == "adam" else None
        for x, y in seq.inner_batches():
            if general:
                theta, lt, lm = self._general_step(seq, theta, x, y, adam)
            else:
                xm, ym = seq.meta_batch(self.rng)
                if split is None and not self.in_place and self.compile:
                    theta, lt, lm = self._compiled_step()(theta, x, y, xm, ym, self.inner_lr,
                                                          self.meta_grad)
                else:
                    step = meta_step if split is None else split.meta_step
                    theta, gphi, lt, lm = step(self.net, theta, x, y, xm, ym, self.inner_lr,
                                               self.meta_grad, self.phi, in_place=self.in_place)
                    self.optimizer.step(gphi)
            task_losses.append(lt)
            meta_losses.append(lm)
            if progress is not None:
                progress(lm)
        self.epoch += 1
        out = {"epoch": self.epoch, "task_loss": float(np.mean(task_losses)),
               "meta_loss": float(np.mean(meta_losses))}
        for k in self.history:
            self.history[k].append(out[k])
        if not np.isfinite(out["meta_loss"]):
            raise FloatingPointError(f"meta-loss became {out['meta_loss']} at meta-epoch "
                                     f"{self.epoch}; lower the learning rates (inner {self.inner_lr}, "
                                     f"meta {self.meta_lr})")
        return out

    def __getstate__(self):
        """Copies and pickles leave out the compiled step and the worker processes (a copy makes
        its own: a compiled step belongs to this trainer's network and optimizer)."""
        state = self.__dict__.copy()
        state.update(_step=None, _split=None)
        return state

    def _compiled_step(self):
        """meta_step followed by the phi update, compiled (one tape per batch shape)."""
        if self._step is None:
            from .compiler import compile
            net, phi, optimizer = self.net, self.phi, self.optimizer

            def step(theta, x, y, xm, ym, inner_lr, meta_grad):
                theta1, gphi, lt, lm = meta_step(net, theta, x, y, xm, ym, inner_lr, meta_grad, phi)
                optimizer.step(gphi)
                return theta1, lt, lm
            self._step = compile(step)
        return self._step

    def _general_step(self, seq, theta, x, y, adam):
        """Inner step (SGD or Adam) and ``meta_updates`` phi updates; returns (theta', L_task, L_meta)."""
        first = None
        if adam is not None:                       # first order: theta_{t+1} is plain numbers
            loss = task_loss(self.net, theta, _t(x), _t(y))
            theta1 = adam.step(theta, grad(loss, list(theta.values())))
            lt = float(loss.data) / x.shape[0]
        for k in range(int(self.meta_updates)):
            xm, ym = seq.meta_batch(self.rng)
            if adam is None and (k == 0 or self.meta_grad == "one_step"):
                theta1, gphi, lt, lm = meta_step(self.net, theta, x, y, xm, ym, self.inner_lr,
                                                 self.meta_grad, self.phi)
            else:
                gphi, lm = meta_gradient(self.net, theta1, xm, ym, self.phi)
            self.optimizer.step(gphi)
            first = lm if first is None else first
        return theta1, lt, first

    def start(self) -> "PopulationSplit | None":
        """Start the worker processes of ``processes`` > 1 now (``run_epoch`` starts them if not):
        before any thread of the caller's, since they are forked on Linux. Returns the split."""
        if self._split is not None and self._split.closed:   # a worker stopped: start afresh
            self._split = None
        if int(self.processes) > 1 and self._split is None:
            M = len(next(iter(self.theta0.values())))
            try:
                self._split = PopulationSplit(self.net, M, int(self.processes))
            except (AssertionError, OSError, RuntimeError) as e:   # e.g. inside a daemon worker
                warnings.warn(f"could not start population worker processes ({e!r}); "
                              "running the whole population in this process", RuntimeWarning)
                self.processes = 1
                return None
            self.processes = self._split.processes  # at most one per member
        return self._split

    def close(self) -> None:
        """Stop the worker processes (if any); a later ``run_epoch`` starts new ones."""
        if self._split is not None:
            self._split.close()
            self._split = None

    # ---------------------------------------------------------------- checkpoint support
    def state_arrays(self) -> dict[str, np.ndarray]:
        """phi, the meta-optimizer state and theta_0 as named arrays."""
        arrays = {f"phi.{k}": v for k, v in self.net.state_dict().items()}
        arrays.update({f"optim.{k}": v for k, v in self.optimizer.state_dict().items()})
        arrays.update({f"theta0.{k}": np.asarray(v) for k, v in self.theta0.items()})
        return arrays

    def state_meta(self) -> dict:
        """The JSON-able part of the state: epoch, history and the generator's state."""
        return {"epoch": self.epoch, "history": self.history,
                "rng_state": _jsonable(self.rng.bit_generator.state)}

    def load_state(self, arrays: dict, meta: dict) -> None:
        """Restore what ``state_arrays``/``state_meta`` saved (resume)."""
        self.net.load_state_dict({k[4:]: v for k, v in arrays.items() if k.startswith("phi.")})
        self.optimizer.load_state_dict({k[6:]: v for k, v in arrays.items()
                                        if k.startswith("optim.")})
        self.theta0 = {k[7:]: v for k, v in arrays.items() if k.startswith("theta0.")}
        self.epoch = int(meta["epoch"])
        self.history = {k: list(v) for k, v in meta["history"].items()}
        self.rng.bit_generator.state = meta["rng_state"]


class PopulationSplit:
    """The population's members split across processes: this one and ``processes - 1`` workers.

    Members are independent until their meta-gradients are averaged, so each process runs
    ``meta_step`` on its own members (contiguous blocks, the largest here) and the population mean
    is the member-weighted mean of the processes' means:

        grad_phi (1/M) sum_m L_meta,m = sum_p (M_p / M) * grad_phi (1/M_p) sum_{m in p} L_meta,m

    Each worker is a one-process ``Workers`` executor that keeps its members' synapses between
    steps (``_member_step``); each step sends it phi and its members' batches (a few kB), runs
    this process's share meanwhile, then combines. ``reset`` sends theta_0 at each meta-epoch.
    Same maths as one process; float rounding differs (the phi gradient is summed in another
    order), so a run is reproducible for a given number of processes. With M = 3 on 2 processes
    this one does 2 members and the worker 1, so the worker's core has room for a validation job.
    """

    def __init__(self, net, population: int, processes: int):
        from .parallel import Workers
        processes = max(1, min(int(processes), int(population)))
        bounds = np.linspace(0, population, processes + 1).round().astype(int)
        sizes = sorted((int(b - a) for a, b in zip(bounds[:-1], bounds[1:])), reverse=True)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.blocks = [slice(int(a), int(a + n)) for a, n in zip(starts, sizes)]
        self.population = int(population)
        self.processes = len(self.blocks)          # what runs: at most one per member
        self.workers: list = []
        self._procs: list = []
        self.closed = False
        try:
            for _ in self.blocks[1:]:
                pool = Workers(1, initializer=_member_init, initargs=(net,), fallback=False)
                self.workers.append(pool)
                pool.submit(_member_ready).result()        # started now, before any thread here
                self._procs += pool.processes()            # kept: a broken pool forgets them
        except BaseException:
            self.close()
            raise

    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [p.pid for p in self._procs]

    def reset(self, theta0: dict) -> dict:
        """theta_0 to every worker (its members' rows); returns this process's rows as new leaves."""
        try:
            futures = [pool.submit(_member_reset, {k: np.asarray(v)[sl] for k, v in theta0.items()})
                       for pool, sl in zip(self.workers, self.blocks[1:])]
            for f in futures:
                self._result(f)
        except BrokenExecutor as e:
            raise self._stopped(e) from None
        return _as_leaves({k: np.asarray(v)[self.blocks[0]] for k, v in theta0.items()}, copy=True)

    def meta_step(self, net, theta, x_task, y_task, x_meta, y_meta, inner_lr, meta_grad="first_order",
                  phi=None, in_place=False):
        """``meta_step`` for the whole population; ``theta`` and the returned theta_{t+1} are this
        process's members only."""
        if self.closed:
            raise RuntimeError("this PopulationSplit is closed (a worker stopped, or close() was "
                               "called); start a new one (MetaTrainer.start() does)")
        phi = net.parameters() if phi is None else phi
        phi_arrays = [p.data for p in phi]
        try:
            futures = [pool.submit(_member_step, phi_arrays, x_task[sl], y_task[sl], x_meta[sl],
                                   y_meta[sl], inner_lr, meta_grad, in_place)
                       for pool, sl in zip(self.workers, self.blocks[1:])]
            sl = self.blocks[0]
            theta1, gphi, lt, lm = meta_step(net, theta, x_task[sl], y_task[sl], x_meta[sl],
                                             y_meta[sl], inner_lr, meta_grad, phi, in_place=in_place)
            parts = [([None if g is None else g.data for g in gphi], lt, lm)]
            parts += [self._result(f) for f in futures]
        except BrokenExecutor as e:
            raise self._stopped(e) from None
        except BaseException:       # replies left unread would answer the next step: stop here
            self.close()
            raise
        assert len(parts) == len(self.blocks)
        w = [(b.stop - b.start) / self.population for b in self.blocks]
        grads = []
        for i in range(len(phi)):
            gs = [(wk, part[0][i]) for wk, part in zip(w, parts) if part[0][i] is not None]
            grads.append(None if not gs else sum(wk * g for wk, g in gs).astype(phi[i].dtype))
        return (theta1, grads, float(sum(wk * p[1] for wk, p in zip(w, parts))),
                float(sum(wk * p[2] for wk, p in zip(w, parts))))

    def _stopped(self, e: BaseException) -> RuntimeError:
        self.close()
        return RuntimeError(f"a population worker process has stopped ({e!r}); resume the run "
                            "from its checkpoint, or run with one process")

    def _result(self, future):
        try:
            return future.result()
        except BrokenExecutor:
            raise
        except Exception as e:
            self.close()
            raise RuntimeError(f"a population worker process failed: {e!r}") from e

    def close(self) -> None:
        """Stop the workers; the split cannot be used afterwards."""
        self.closed = True
        for pool in self.workers:          # the executor joins its processes (one joiner only:
            pool.shutdown(wait=True, cancel_futures=True)   # two would race for the exit status)
        self.workers, self._procs = [], []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_MEMBERS: dict = {}      # in a PopulationSplit worker: its network and its members' synapses


def _member_init(net) -> None:
    """A PopulationSplit worker starts: one BLAS thread, the network kept for its steps."""
    from .parallel import set_blas_threads
    set_blas_threads(1)
    _MEMBERS.update(net=net, theta=None)


def _member_ready() -> bool:
    return "net" in _MEMBERS


def _member_reset(theta_rows: dict) -> None:
    """theta_0 of this worker's members, at the start of a meta-epoch."""
    _MEMBERS["theta"] = _as_leaves(theta_rows, copy=True)


def _member_step(phi_arrays, x, y, xm, ym, lr, meta_grad, in_place):
    """``meta_step`` on this worker's members under the sent phi; returns (grads, L_task, L_meta)."""
    net = _MEMBERS["net"]
    phi = net.parameters()
    for p, a in zip(phi, phi_arrays):
        p.data = a
    theta, gphi, lt, lm = meta_step(net, _MEMBERS["theta"], x, y, xm, ym, lr, meta_grad, phi,
                                    in_place=in_place)
    _MEMBERS["theta"] = theta
    return [None if g is None else g.data for g in gphi], lt, lm


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
