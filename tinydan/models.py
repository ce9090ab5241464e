"""The networks of SPEC.md, built from ``tinydan.nn``: the regression network (section 3).

Configs are dataclasses so that a checkpoint can store them as JSON and refuse another config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .nn.dan import SHARINGS, DANNetwork, MLPDAN

__all__ = ["RegressionConfig", "REGRESSION_CONFIGS", "regression_config", "build_regression_net"]

OUTPUTS = ("scaled_tanh", "linear")


def config_from_dict(cls, d: dict, what: str):
    """A config dataclass from its to_dict() form: JSON lists become tuples again (at any depth);
    a key that is not a field of ``cls`` is an error naming it."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} config fields {sorted(unknown)}")

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v
    return cls(**{k: tup(v) for k, v in d.items()})


@dataclass(frozen=True)
class RegressionConfig:
    """Everything that defines a regression run (SPEC section 3)."""

    name: str = "paper"
    nodes: tuple = (1, 40, 40, 1)
    n_channels: int = 40
    dan_hidden: tuple = (15, 8)
    sharing: str = "global"
    output: str = "scaled_tanh"        # "scaled_tanh": 4 * tanh(DAN); "linear": no final tanh
    output_scale: float = 4.0
    skips: tuple = ((0, 2), (1, 3))
    n_windows: int = 5
    steps_per_window: int = 100
    inner_batch: int = 1
    meta_batch: int = 32
    meta_loss: str = "memory"
    population: int = 1
    inner_lr: float = 0.001
    meta_lr: float = 1e-4
    meta_optimizer: str = "adam"
    meta_grad: str = "first_order"
    meta_epochs: int = 400
    val_every: int = 10
    val_functions: int = 20
    eval_functions: int = 50
    joint_epochs: int = 300
    init: str = "glorot"               # phi and theta_0: "glorot" (+ LeCun-normal synapses) or
                                       # "fan_in_uniform" (PyTorch's nn.Linear default for both)
    # Fields for the authors' notebook (config `authors`); the defaults change nothing.
    synapse_init: str = "auto"         # theta_0 only: "auto" (follow `init`) or "xavier_uniform"
    vec_activation: str = "none"       # "tanh": tanh after every VEC sum, before the DANs
    inner_optimizer: str = "sgd"       # synapses in the inner loop and at deployment: "sgd"/"adam"
    meta_updates: int = 1              # phi updates after each inner step (authors: 50)
    target: str = "paper"              # target family: "paper" (SPEC 3) or "authors" (see tasks)
    target_noise: float = 0.0          # training targets get N(0, (noise * range of f)^2) noise

    def __post_init__(self):
        if self.sharing not in SHARINGS:
            raise ValueError(f"sharing must be one of {SHARINGS}, got {self.sharing!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.init not in ("glorot", "fan_in_uniform"):
            raise ValueError(f"init must be 'glorot' or 'fan_in_uniform', got {self.init!r}")
        if self.meta_grad not in ("first_order", "one_step"):
            raise ValueError(f"meta_grad must be 'first_order' or 'one_step', got {self.meta_grad!r}")
        for name, allowed in (("synapse_init", ("auto", "xavier_uniform")),
                              ("vec_activation", ("none", "tanh")),
                              ("inner_optimizer", ("sgd", "adam")),
                              ("target", ("paper", "authors"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.inner_optimizer == "adam" and self.meta_grad == "one_step":
            raise ValueError("meta_grad 'one_step' differentiates through an SGD step of the "
                             "synapses; with inner_optimizer 'adam' use 'first_order'")
        if not self.target_noise >= 0:
            raise ValueError(f"target_noise must be >= 0, got {self.target_noise}")
        for name in ("inner_lr", "meta_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("n_channels", "n_windows", "steps_per_window", "inner_batch", "meta_batch",
                     "population", "meta_epochs", "val_every", "val_functions", "eval_functions", "joint_epochs",
                     "meta_updates"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RegressionConfig":
        """Inverse of to_dict; unknown keys are an error."""
        return config_from_dict(cls, d, "regression")

    def replace(self, **changes) -> "RegressionConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


REGRESSION_CONFIGS = {
    # The paper as written: scaled tanh output, SGD 0.001 on synapses, Adam 1e-4 on phi.
    "paper": RegressionConfig(name="paper"),
    # What works within the time budget (see README, "How the default was chosen").
    "default": RegressionConfig(name="default", output="linear", inner_lr=0.01, meta_lr=1e-4,
                                meta_grad="first_order", meta_epochs=200, init="fan_in_uniform"),
    # A few-second config for tests and lessons.
    "tiny": RegressionConfig(name="tiny", nodes=(1, 8, 8, 1), n_channels=6, dan_hidden=(5, 4),
                             output="linear", inner_lr=0.01, meta_lr=1e-3, steps_per_window=10,
                             meta_batch=8, meta_epochs=3, val_every=1, val_functions=4,
                             eval_functions=6, joint_epochs=20),
    # The authors' public notebook (SPEC section 3, "Config `authors`"): Adam at lr 0.01 for both
    # theta and phi, population 3, 10 inner steps of 5 points per window, 50 meta-updates after
    # every inner step, meta-batches of 20 points from the whole function, output 5 * tanh(DAN),
    # tanh after every VEC sum, skips between every pair of non-adjacent layers, Xavier-uniform
    # synapses (phi as PyTorch's nn.Linear default), the authors' targets with 3% noise. One
    # meta-epoch is 50 inner steps x 50 meta-updates = 2500 phi updates (about 18 s on one
    # core, 10 of `default`'s meta-epochs), so 30 meta-epochs cost about what `default`'s
    # meta-training does.
    "authors": RegressionConfig(name="authors", output="scaled_tanh", output_scale=5.0,
                                skips=((0, 2), (0, 3), (1, 3)), steps_per_window=10, inner_batch=5,
                                meta_batch=20, meta_loss="memory+transfer", population=3,
                                inner_lr=0.01, meta_lr=0.01, inner_optimizer="adam",
                                meta_optimizer="adam", meta_grad="first_order", meta_updates=50,
                                meta_epochs=30, val_every=3, init="fan_in_uniform",
                                synapse_init="xavier_uniform", vec_activation="tanh",
                                target="authors", target_noise=0.03),
}


def regression_config(name: str, **overrides) -> RegressionConfig:
    """A named config with optional field overrides."""
    if name not in REGRESSION_CONFIGS:
        raise ValueError(f"unknown regression config {name!r}; choose one of "
                         f"{sorted(REGRESSION_CONFIGS)}")
    cfg = REGRESSION_CONFIGS[name]
    return cfg.replace(**overrides) if overrides else cfg


def build_regression_net(cfg: RegressionConfig, rng: np.random.Generator | None = None,
                         sharing: str | None = None, dtype=np.float32) -> DANNetwork:
    """The network of SPEC section 3: nodes [1, 40, 40, 1], C = 40, DAN C -> 15 -> 8 -> 1 (tanh),
    skip VECs 0->2 and 1->3; the output is 4 * tanh(DAN) (scaled_tanh) or the DAN without its
    final tanh (linear)."""
    rng = np.random.default_rng(0) if rng is None else rng

    def make_dan(n_neurons=None):
        return MLPDAN(cfg.n_channels, cfg.dan_hidden, "tanh", n_neurons=n_neurons, rng=rng,
                      dtype=dtype, init=cfg.init)

    linear = cfg.output == "linear"
    synapse_init = cfg.synapse_init if cfg.synapse_init != "auto" else \
        ("lecun" if cfg.init == "glorot" else "fan_in_uniform")
    return DANNetwork(cfg.nodes, cfg.n_channels, make_dan, sharing=sharing or cfg.sharing,
                      skips=cfg.skips, final_activation=not linear,
                      output_scale=None if linear else cfg.output_scale,
                      synapse_init=synapse_init,
                      vec_activation=None if cfg.vec_activation == "none" else cfg.vec_activation)


class PlainMLP:
    """A plain MLP (no DANs) with the same population interface as DANNetwork: all its weights are
    per-member "synapses", so ``forward(x, synapses)`` maps x (P, B, n_in) -> (P, B, n_out).

    Hidden layers use tanh; the output is linear. Used for the naive sequential baseline, the joint
    upper bound, EWC and replay.
    """

    def __init__(self, sizes=(1, 40, 40, 1)):
        self.sizes = tuple(int(s) for s in sizes)

    def synapse_shapes(self) -> dict[str, tuple]:
        """W_l (n_l, n_{l+1}) and b_l (1, n_{l+1}) for each layer."""
        shapes = {}
        for l, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            shapes[f"w{l}"] = (a, b)
            shapes[f"b{l}"] = (1, b)
        return shapes

    def init_synapses(self, population: int, rng: np.random.Generator, dtype=np.float32,
                      same: bool = True) -> dict[str, np.ndarray]:
        """Glorot-uniform weights, zero biases; the same draw for every member when same=True."""
        from .nn.init import glorot_uniform
        n = 1 if same else population
        theta = {}
        for name, shape in self.synapse_shapes().items():
            if name.startswith("b"):
                w = np.zeros((n,) + shape, dtype=dtype)
            else:
                w = glorot_uniform(rng, (n,) + shape, shape[0], shape[1], dtype)
            theta[name] = np.repeat(w, population, axis=0) if same else w
        return theta

    def num_synapses(self) -> int:
        """Number of parameters of one member."""
        return sum(int(np.prod(s)) for s in self.synapse_shapes().values())

    def parameters(self) -> list:
        """A plain MLP has no phenotype: nothing is meta-learned."""
        return []

    def __call__(self, x, synapses):
        """x (P, B, n_in) -> (P, B, n_out); a NumPy x is taken in the synapses' dtype."""
        from . import ops
        from .tensor import Tensor
        h = x if isinstance(x, Tensor) else Tensor(x, dtype=synapses["w0"].dtype)
        L = len(self.sizes) - 1
        for l in range(L):
            h = ops.linear(h, synapses[f"w{l}"], synapses[f"b{l}"])
            if l < L - 1:
                h = ops.tanh(h)
        return h
