"""The configs and networks of both experiments: what defines a run, and the model it builds.

Configs are frozen dataclasses, so a checkpoint stores one as JSON and refuses another
(``to_dict``/``from_dict``). ``build_regression_net`` is the regression network of paper section
3.1; ``build_ucil_net`` the autoencoder of DANs of section 3.2 (docs/model-and-protocol.md gives
every choice the paper leaves open).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ..meta import META_GRADS
from ..nn.dan import SHARINGS, ConvDAN, DANNetwork, InputConvDAN, MLPDAN

__all__ = ["RegressionConfig", "REGRESSION_CONFIGS", "regression_config", "build_regression_net",
           "UCILConfig", "UCIL_CONFIGS", "ucil_config", "build_ucil_net", "initial_state",
           "theta_fingerprint", "config_from_dict", "LR_SOURCES", "PHI0_STREAM"]

LR_SOURCES = ("omniglot", "mnist-val")
PHI0_STREAM = 1_000      # phi_0 candidate k > 0 draws from default_rng([seed, PHI0_STREAM, k]): a
                         # stream of its own ([seed, 1] samples the tasks, [seed, 3] the plain AE)

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
    """Everything that defines a regression run (paper sections 3.1, 4.1; docs/model-and-protocol.md)."""

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
    meta_lr_decay: float = 1.0         # phi's lr in meta-epoch e (from 0): meta_lr * decay^e
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
    target: str = "paper"              # target family: "paper" (section 3.1) or "authors" (tasks)
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
        for name in ("inner_lr", "meta_lr", "meta_lr_decay"):
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
    # What works within the time budget (docs/how-the-defaults-were-chosen.md).
    "default": RegressionConfig(name="default", output="linear", inner_lr=0.01, meta_lr=5e-4,
                                meta_lr_decay=0.98, meta_grad="one_step", meta_epochs=200,
                                init="fan_in_uniform"),
    # A few-second config for tests and lessons.
    "tiny": RegressionConfig(name="tiny", nodes=(1, 8, 8, 1), n_channels=6, dan_hidden=(5, 4),
                             output="linear", inner_lr=0.01, meta_lr=1e-3, steps_per_window=10,
                             meta_batch=8, meta_epochs=3, val_every=1, val_functions=4,
                             eval_functions=6, joint_epochs=20),
    # The authors' public notebook (docs/model-and-protocol.md): Adam at lr 0.01 for both
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
    """The network of paper section 3.1: nodes [1, 40, 40, 1], C = 40, DAN C -> 15 -> 8 -> 1 (tanh),
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



# ---------------------------------------------------------------------------------------------
# unsupervised class-incremental learning (UCIL)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UCILConfig:
    """Everything that defines a UCIL run (paper sections 3.2, 4.2; docs/model-and-protocol.md)."""

    name: str = "paper"
    # the model
    image_side: int = 28
    input_hidden: int = 8                      # input DAN layer: 3x3 convs 1 -> 8 -> 1
    nodes: tuple = (784, 120, 100, 120, 784)   # input, E1, E2, D1, output
    n_channels: int = 100                      # C: each DAN reads a sqrt(C) x sqrt(C) image
    dan_convs: tuple = ((8, 2), (4, 2))        # (out channels, kernel) of the DAN's convolutions
    dan_pool: int = 3                          # max-pool kernel (stride 1)
    dan_hidden: int = 30                       # fc -> hidden -> 1
    slope: float = 0.01                        # leaky ReLU
    skips: tuple = ((0, 2), (1, 4))            # input DANs -> E2, E1 -> output
    sharing: str = "per_layer"
    # the protocol
    n_classes: int = 10                        # sub-tasks per sequence
    shots: int = 5                             # s images per class
    inner_steps: int = 60                      # k SGD steps per class (meta-training)
    deploy_steps: int = 60                     # SGD steps per digit at deployment (the paper's 60)
    meta_batch: int = 50                       # images per member for the meta-loss
    population: int = 3                        # M
    inner_lr: float = 0.01                     # alpha: synapse SGD in meta-training (and deployment
                                               # unless tune_deploy_lr)
    meta_lr: float = 1e-4                      # gamma: phi Adam
    meta_lr_decay: float = 1.0                 # gamma in meta-epoch e (from 0): meta_lr * decay^e
    meta_optimizer: str = "adam"
    meta_grad: str = "first_order"
    meta_epochs: int = 100
    val_classes: int = 40                      # Omniglot characters held out for validation
    val_sequences: int = 6                     # validation sequences per check
    val_every: int = 2                         # meta-epochs between validation checks
    eval_draws: int = 20                       # MNIST draws of the 5 images per digit
    deploy_group: int = 20                     # draws deployed at once (memory)
    ae_hidden: tuple = (512, 256, 512)         # the plain autoencoder baseline
    ae_lrs: tuple = (0.1, 0.3, 1.0, 3.0, 10.0)  # its SGD rates, one chosen on lr_source's sequences
    # Deployment lr of the DAN networks (net0, random DANs): False deploys at inner_lr (the paper);
    # True chooses it like the plain autoencoders' (grid ae_lrs, the same rule and sequences: lr_source).
    tune_deploy_lr: bool = False
    # Where deployment learning rates are chosen (every model alike, ``choose_lr``): "omniglot", the
    # validation sequences of held-out Omniglot characters; "mnist-val", lr_sequences sequences of a
    # fixed validation half of the MNIST test set (LR_SEED's permutation), whose other half is then
    # the only source of the reported draws. Meta-training never sees MNIST either way.
    lr_source: str = "omniglot"
    lr_sequences: int = 10
    # Which validated phi snapshot is deployed (``choose_epoch``): "omniglot", the meta-epoch with the
    # lowest Omniglot validation MSE; "mnist-val" (needs lr_source "mnist-val"), the snapshot whose
    # deployment on the rate-choosing sequences of MNIST's validation half ends lowest, every
    # snapshot at the rate chosen for the Omniglot-best one. Meta-training is the same either way.
    epoch_source: str = "omniglot"
    # Probability that a class of a meta-training or validation sequence is drawn with thickened
    # strokes (2x2 max filter at 28x28, then area-downsampled): a broader ink distribution than
    # Omniglot's thin strokes. 0: the plain preprocessing.
    thick_strokes: float = 0.0
    # phi_0 candidates: 1 = the seed's phi_0. K > 1: the seed's phi_0 and K - 1 more drawn from
    # (seed, PHI0_STREAM, k); meta-training starts from the one whose deployment (the protocol at
    # inner_lr, phi fixed) ends with the lowest final MSE on SCREEN_SEQUENCES sequences of Omniglot
    # meta-training characters (``screen_phi0``). theta_0 is the seed's either way.
    phi_candidates: int = 1
    # Race of starts (needs phi_candidates >= start_candidates): the start_candidates best-screened
    # phi_0 candidates are each meta-trained start_epochs meta-epochs, and the one with the lowest
    # Omniglot validation MSE at start_epochs continues from its checkpoint to meta_epochs
    # (``race_starts``): a screen at phi_0 cannot see how well a start meta-trains. 1: no race.
    start_candidates: int = 1
    start_epochs: int = 4
    # "full": the Omniglot and MNIST files (downloaded once); "sample": the small sample bundled
    # with tinydan (no network; for tests, lessons and the `tiny` config)
    data: str = "full"

    def __post_init__(self):
        if self.meta_grad not in META_GRADS:
            raise ValueError(f"meta_grad must be one of {META_GRADS}, got {self.meta_grad!r}")
        if self.nodes[0] != self.image_side ** 2 or self.nodes[-1] != self.image_side ** 2:
            raise ValueError(f"an autoencoder of {self.image_side}x{self.image_side} images needs "
                             f"{self.image_side ** 2} input and output nodes, got nodes {self.nodes}")
        if math.isqrt(self.n_channels) ** 2 != self.n_channels:
            raise ValueError(f"n_channels must be a square number (a DAN reads a square image), "
                             f"got {self.n_channels}")
        if self.data not in ("full", "sample"):
            raise ValueError(f"data must be 'full' or 'sample', got {self.data!r}")
        if self.lr_source not in LR_SOURCES:
            raise ValueError(f"lr_source must be one of {LR_SOURCES}, got {self.lr_source!r}")
        if self.epoch_source not in LR_SOURCES:
            raise ValueError(f"epoch_source must be one of {LR_SOURCES}, got {self.epoch_source!r}")
        if self.epoch_source == "mnist-val" and self.lr_source != "mnist-val":
            raise ValueError("epoch_source 'mnist-val' chooses the meta-epoch on the sequences the "
                             "rates are chosen on: it needs lr_source 'mnist-val' too (--lr-source "
                             "mnist-val, or --epoch-source omniglot)")
        if not 0.0 <= self.thick_strokes <= 1.0:
            raise ValueError(f"thick_strokes is a probability in [0, 1], got {self.thick_strokes}")
        for name in ("inner_lr", "meta_lr", "meta_lr_decay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("n_classes", "shots", "inner_steps", "deploy_steps", "meta_batch", "population",
                     "meta_epochs", "val_sequences", "val_every", "eval_draws", "deploy_group",
                     "phi_candidates", "lr_sequences", "start_candidates", "start_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.start_candidates > self.phi_candidates:
            raise ValueError(f"start_candidates {self.start_candidates} races more starts than the "
                             f"{self.phi_candidates} phi_0 candidates screened: raise "
                             "--phi-candidates or lower --start-candidates")
        if self.start_candidates > 1 and self.start_epochs % self.val_every:
            raise ValueError(f"start_epochs {self.start_epochs} must be a multiple of val_every "
                             f"{self.val_every}, so that the race's runs validate at the epochs "
                             "the winner's own run would (--start-epochs)")
        if self.start_candidates > 1 and self.start_epochs > self.meta_epochs:
            raise ValueError(f"the race of {self.start_candidates} starts runs start_epochs "
                             f"{self.start_epochs} meta-epochs each, more than meta_epochs "
                             f"{self.meta_epochs}: lower --start-epochs, raise --epochs, or "
                             "--start-candidates 1 (no race)")
        if self.meta_batch > self.n_classes * self.shots:
            raise ValueError(f"meta_batch {self.meta_batch} is larger than a sequence "
                             f"({self.n_classes} classes x {self.shots} images)")

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UCILConfig":
        """Inverse of to_dict; unknown keys are an error."""
        return config_from_dict(cls, d, "UCIL")

    def replace(self, **changes) -> "UCILConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


UCIL_CONFIGS = {
    # Paper section 3.2 as written: C = 100 (10x10 DAN images), nodes (784, 120, 100, 120, 784),
    # about 38.6M synapses per model.
    "paper": UCILConfig(name="paper", deploy_group=4),
    # The same structure scaled down to run on a laptop: 14x14 images, E1/E2/D1 = 120/100/120 DANs,
    # C = 36 (6x6 DAN images): about 4.13M synapses per model, 2,941 phi parameters. How each
    # choice below was made, on validation data only: docs/how-the-defaults-were-chosen.md.
    "small": UCILConfig(name="small", image_side=14, nodes=(196, 120, 100, 120, 196), n_channels=36,
                        dan_convs=((4, 2), (4, 2)), dan_pool=2, dan_hidden=16,
                        inner_steps=60, meta_batch=20, inner_lr=3.0, meta_lr=1e-3,
                        meta_epochs=8, val_every=2, ae_hidden=(512, 256, 512),
                        ae_lrs=(0.1, 0.3, 1.0, 3.0, 10.0), thick_strokes=0.5, tune_deploy_lr=True,
                        phi_candidates=8, start_candidates=2, start_epochs=4, meta_lr_decay=0.7,
                        lr_source="mnist-val", epoch_source="mnist-val"),
    # A few-second config for tests and lessons.
    "tiny": UCILConfig(name="tiny", image_side=14, nodes=(196, 6, 4, 6, 196), n_channels=16,
                       dan_convs=((3, 2), (2, 2)), dan_pool=2, dan_hidden=6, input_hidden=2,
                       n_classes=3, shots=2, inner_steps=2, deploy_steps=2, meta_batch=4,
                       inner_lr=0.01, meta_lr=1e-3, meta_epochs=2, val_classes=6,
                       val_sequences=2, val_every=1, eval_draws=3, deploy_group=3,
                       ae_hidden=(8, 4, 8), ae_lrs=(0.1, 1.0), data="sample"),
}


def ucil_config(name: str, **overrides) -> UCILConfig:
    """A named config with optional field overrides."""
    if name not in UCIL_CONFIGS:
        raise ValueError(f"unknown UCIL config {name!r}; choose one of {sorted(UCIL_CONFIGS)}")
    cfg = UCIL_CONFIGS[name]
    return cfg.replace(**overrides) if overrides else cfg


def build_ucil_net(cfg: UCILConfig, rng: np.random.Generator | None = None,
                   dtype=np.float32) -> DANNetwork:
    """The UCIL autoencoder of paper section 3.2 as a DANNetwork (phi drawn from ``rng``).

    input DAN layer (InputConvDAN) -> VEC -> E1 -> VEC -> E2 -> VEC -> D1 -> VEC -> output DANs,
    skip VECs (0 -> 2) and (1 -> 4); one ConvDAN phenotype per DAN layer; linear output.
    """
    rng = np.random.default_rng(0) if rng is None else rng

    def make_dan(n_neurons=None):
        if n_neurons is not None:
            raise ValueError("the UCIL model shares phi per layer; unique DANs are not built here")
        return ConvDAN(cfg.n_channels, cfg.dan_convs, cfg.dan_pool, cfg.dan_hidden, cfg.slope,
                       rng=rng, dtype=dtype)

    input_layer = InputConvDAN(cfg.input_hidden, cfg.image_side, cfg.slope, rng=rng, dtype=dtype)
    return DANNetwork(cfg.nodes, cfg.n_channels, make_dan, sharing=cfg.sharing, skips=cfg.skips,
                      final_activation=False, input_layer=input_layer)


def theta_fingerprint(theta0: dict) -> str:
    """A short checksum of theta_0 (CRC32 of the bytes of member 0), to detect a changed generator."""
    crc = 0
    for k in sorted(theta0):
        crc = zlib.crc32(np.ascontiguousarray(theta0[k][0]).tobytes(), crc)
    return f"{crc:08x}"


def initial_state(cfg: UCILConfig, seed: int, population: int | None = None, candidate: int = 0):
    """(net with the random phi_0, theta_0) drawn from ``seed``: phi_0 first, then theta_0.
    ``candidate`` k > 0: phi_0 is candidate k instead, drawn from (seed, PHI0_STREAM, k);
    theta_0 is the same.

    Both are regenerated from the seed rather than stored, so a phenotype file holds phi only.
    """
    rng = np.random.default_rng(seed)
    net = build_ucil_net(cfg, rng)
    theta0 = net.init_synapses(cfg.population if population is None else population, rng)
    if candidate:
        net = build_ucil_net(cfg, np.random.default_rng([seed, PHI0_STREAM, int(candidate)]))
    return net, theta0
