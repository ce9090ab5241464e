"""VECs (vectors of synapses), DANs (deep artificial neurons) and networks of DANs.

Vocabulary (docs/model-and-protocol.md#glossary):

* **synapses, theta**: a VEC layer from ``n_in`` nodes to ``n_out`` DANs with ``C`` channels is a
  weight ``(n_in, n_out*C)`` and a bias ``(n_out*C,)``; columns ``j*C:(j+1)*C`` are DAN ``j``'s
  input vector. Synapses are plain Tensors with a leading **population** axis ``P`` (one set per
  model of the population, or per function deployed in parallel), kept in a dict.
* **DAN, phenotype, phi**: a small network from a ``C``-vector to one scalar, a ``Module`` whose
  Parameters are phi. A layer of ``n`` DANs is ONE batched call on the reshaped ``(rows*n, C)``
  input, never a Python loop over neurons.
* **sharing**: ``global`` (one phi for every DAN layer), ``per_layer`` (one phi per layer),
  ``unique`` (one phi per neuron: weights with a leading neuron axis, one batched matmul).
* **skip VEC**: an extra VEC from layer j to layer k (k = j + 2 in the paper's regression model),
  without bias; its output is added to layer k's DAN input before the DANs.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .. import ops
from ..tensor import Tensor
from .init import INITS, fan_in_uniform, glorot_uniform, lecun_normal
from .module import Module, ModuleList, Parameter

__all__ = ["MLPDAN", "ConvDAN", "InputConvDAN", "DANNetwork", "SHARINGS", "vec"]

SHARINGS = ("global", "per_layer", "unique")

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": ops.tanh,
    "leaky_relu": ops.leaky_relu,
    "relu": ops.relu,
    "linear": lambda h: h,
}


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def vec(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A VEC layer: z = x @ W (+ b); x (P, B, n_in), W (P, n_in, n_out*C), b (P, 1, n_out*C)."""
    if bias is None:
        return ops.matmul(x, weight)                # (P, B, n_out*C)
    return ops.linear(x, weight, bias)


class MLPDAN(Module):
    """A DAN as an MLP: C -> hidden... -> 1, ``activation`` after every layer.

    With ``n_neurons`` set, every neuron has its own phi (``unique`` sharing): the weights get a
    leading neuron axis and the layer is still one batched matmul.
    """

    def __init__(self, n_channels: int, hidden: Sequence[int] = (15, 8), activation: str = "tanh",
                 n_neurons: int | None = None, rng: np.random.Generator | None = None,
                 dtype=np.float32, init: str = "glorot"):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        self.n_channels = int(n_channels)
        self.sizes = (self.n_channels, *[int(h) for h in hidden], 1)
        self.activation = activation
        self.act = _activation(activation)
        self.n_neurons = n_neurons
        self.n_layers = len(self.sizes) - 1
        lead = () if n_neurons is None else (int(n_neurons),)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            bshape = (b,) if n_neurons is None else lead + (1, b)
            if init == "glorot":        # Glorot-uniform weights, zero biases
                w, bias = glorot_uniform(rng, lead + (a, b), a, b, dtype), np.zeros(bshape, dtype)
            else:                       # U(+-1/sqrt(fan_in)) for both, as PyTorch's nn.Linear
                w, bias = fan_in_uniform(rng, lead + (a, b), a, dtype), fan_in_uniform(rng, bshape, a, dtype)
            setattr(self, f"w{i}", Parameter(w))
            setattr(self, f"b{i}", Parameter(bias))

    def forward(self, z: Tensor, final_activation: bool = True) -> Tensor:
        """z: (R, n, C) inputs of n DANs for R rows -> (R, n) DAN outputs."""
        # BEGIN SOLUTION
        R, n, C = z.shape
        if C != self.n_channels:
            raise ValueError(f"DAN expects {self.n_channels} channels per neuron, got input {z.shape}")
        if self.n_neurons is None:
            h = ops.reshape(z, (R * n, C))                          # every neuron is a row
        else:
            if n != self.n_neurons:
                raise ValueError(f"this unique-DAN layer has {self.n_neurons} neurons, got {n}")
            h = ops.transpose(z, (1, 0, 2))                         # (n, R, C): neuron = batch axis
        for i in range(self.n_layers):
            h = ops.linear(h, getattr(self, f"w{i}"), getattr(self, f"b{i}"))
            if i < self.n_layers - 1 or final_activation:
                h = self.act(h)
        if self.n_neurons is None:
            return ops.reshape(h, (R, n))
        return ops.transpose(ops.reshape(h, (n, R)))                # (n, R, 1) -> (R, n)
        # END SOLUTION


class ConvDAN(Module):
    """A convolutional DAN (docs/model-and-protocol.md#ucil-model): the C inputs as a
    sqrt(C) x sqrt(C) image, conv(1->c1, k) + leaky ReLU, conv(c1->c2, k) + leaky ReLU,
    max-pool(pool, stride 1), fc -> hidden + leaky ReLU, fc -> 1 (linear).

    phi is stored as in the usual channels-first model (conv weights (F, C, kh, kw); ``fc0_w`` rows
    in (channel, row, column) order), and ``reference_forward`` computes the DAN that way with
    ``conv2d``/``max_pool2d``. ``forward`` computes the same numbers faster (tests check it):
    channels-last rows with banded weights (``ops.conv.conv2d_rows``) or, for a conv whose whole
    matrix has at most ``dense_max`` entries, one product with that matrix
    (``ops.conv.dense_conv_weight``), separable max-pooling, and
    the whole DAN run ``chunk`` neurons at a time (``ops.conv.checkpoint_rows``): a call of up to
    ``keep_bytes`` (estimated) keeps its intermediates for the backward, a bigger one recomputes
    them there, so a layer of 100,000 DANs stores nothing but its input. Both limits are per call.
    """

    DENSE_MAX = 16384      # entries of a conv's whole matrix up to which it runs as one GEMM
    SELECTION_MAX = 1 << 20  # ... and of the 0/1 matrix that builds it from the kernel
    KEEP_BYTES = 256 << 20  # intermediates a call may keep for its backward instead of recomputing

    def __init__(self, n_channels: int = 100, convs: Sequence[tuple[int, int]] = ((8, 2), (4, 2)),
                 pool: int = 3, fc_hidden: int = 30, slope: float = 0.01,
                 rng: np.random.Generator | None = None, dtype=np.float32,
                 chunk: int | None = None, dense_max: int | None = None):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        side = math.isqrt(int(n_channels))
        if side * side != n_channels:
            raise ValueError(f"a convolutional DAN needs a square number of channels, got {n_channels}")
        self.n_channels, self.side, self.slope, self.pool = int(n_channels), side, float(slope), pool
        c_in, s = 1, side
        self.n_convs = len(convs)
        self.conv_shapes = []                                      # (c_in, c_out, k, in_side)
        for i, (c_out, k) in enumerate(convs):
            fan_in = c_in * k * k
            setattr(self, f"conv{i}_w", Parameter(glorot_uniform(rng, (c_out, c_in, k, k), fan_in,
                                                                 c_out * k * k, dtype)))
            setattr(self, f"conv{i}_b", Parameter(np.zeros(c_out, dtype=dtype)))
            self.conv_shapes.append((c_in, c_out, k, s))
            c_in, s = c_out, s - k + 1
            if s < 1:
                raise ValueError(f"a {side}x{side} DAN input is too small for convs {convs}")
        self.c_last, self.conv_side = c_in, s
        s = s - pool + 1
        if s < 1:
            raise ValueError(f"a {side}x{side} DAN input is too small for convs {convs} and pool {pool}")
        self.pool_side = s
        self.flat = c_in * s * s
        self.fc0_w = Parameter(glorot_uniform(rng, (self.flat, fc_hidden), self.flat, fc_hidden, dtype))
        self.fc0_b = Parameter(np.zeros(fc_hidden, dtype=dtype))
        self.fc1_w = Parameter(glorot_uniform(rng, (fc_hidden, 1), fc_hidden, 1, dtype))
        self.fc1_b = Parameter(np.zeros(1, dtype=dtype))
        # output pixels per banded-matrix row: about 4 keeps the band dense enough, the product wide
        self.blocks = [max(b for b in range(1, min(4, side_in - k + 1) + 1) if (side_in - k + 1) % b == 0)
                       if c_in > 1 else side_in - k + 1
                       for c_in, _, k, side_in in self.conv_shapes]
        # a conv whose whole matrix (H*W*c_in x OH*OW*c_out) has at most dense_max entries runs as
        # ONE product with it (``ops.conv.dense_conv_weight``): for 6x6 DAN images that beats the
        # banded strips (no im2col copies, no col2im) although most of its entries are zeros
        self.dense_max = self.DENSE_MAX if dense_max is None else int(dense_max)
        # (the selection matrix that builds it has c_out*c_in*k*k rows of that size: bounded too)
        entries = [s_in * s_in * c_in * (s_in - k + 1) ** 2 * c_out
                   for c_in, c_out, k, s_in in self.conv_shapes]
        self.dense = [e <= self.dense_max and e * c_out * c_in * k * k <= self.SELECTION_MAX
                      for e, (c_in, c_out, k, _) in zip(entries, self.conv_shapes)]
        # neurons per chunk of checkpoint_rows: measured best near 1,000-2,000 for C = 100 and
        # 4,000 for C = 36 (intermediates of a few MB: the cache, and few Python-level ops)
        self.chunk = int(chunk) if chunk is not None else max(64, (1 << 17) // self.n_channels)
        self.threads = 1            # threads for the chunks (see ops.conv.checkpoint_rows)
        # bytes per row a recorded forward keeps (outputs, masks and temporaries, roughly): a call of
        # at most KEEP_BYTES keeps them (checkpoint_rows(keep=True)) instead of recomputing them
        self.row_bytes = 8 * np.dtype(dtype).itemsize * (
            self.n_channels + sum((s - k + 1) ** 2 * c for _, c, k, s in self.conv_shapes)
            + self.pool_side ** 2 * self.c_last + fc_hidden)
        self.keep_bytes = self.KEEP_BYTES

    def _row_params(self) -> list[Tensor]:
        """phi in the form the channels-last rows kernels use (recorded ops: gradients reach phi)."""
        params = []
        for i, (c_in, c_out, k, s_in) in enumerate(self.conv_shapes):
            w = getattr(self, f"conv{i}_w")
            if self.dense[i]:                       # T (s*s*c_in, so*so*c_out), bias per output
                block = (s_in - k + 1) ** 2
                params.append(ops.conv.dense_conv_weight(w, s_in, s_in))
            else:                                   # banded strips, bias per block of pixels
                block = self.blocks[i]
                params.append(ops.conv.banded_weight(w, block))
            params.append(ops.reshape(ops.broadcast_to(getattr(self, f"conv{i}_b"), (block, c_out)),
                                      (block * c_out,)))
        s, c = self.pool_side, self.c_last          # fc0 rows (c, y, x) -> channels-last (y, x, c)
        w0 = ops.transpose(ops.reshape(self.fc0_w, (c, s, s, -1)), (1, 2, 0, 3))
        params += [ops.reshape(w0, (self.flat, -1)), self.fc0_b, self.fc1_w, self.fc1_b]
        return params

    def _rows(self, x: Tensor, params: list) -> Tensor:
        """The DAN on rows: x (rows, C) -> (rows,), channels-last all the way."""
        rows = x.shape[0]
        h = ops.reshape(x, (rows, self.side, self.side))            # (rows, s, s*1)
        for i, (c_in, c_out, k, s_in) in enumerate(self.conv_shapes):
            if self.dense[i]:                                        # one GEMM: x.flat @ T + b
                so = s_in - k + 1
                h = ops.leaky_relu(ops.linear(ops.reshape(h, (rows, s_in * s_in * c_in)),
                                              params[2 * i], params[2 * i + 1]), self.slope)
                h = ops.reshape(h, (rows, so, so * c_out))           # (rows, s', s'*c_out)
            else:
                h = ops.conv.conv_rows_banded(h, params[2 * i], params[2 * i + 1], k, k, c_in,
                                              self.blocks[i], self.slope)  # (rows, s', s'*c_out)
        s_in, c = h.shape[1], self.c_last                           # (rows, s', s'*c_last)
        h = ops.transpose(ops.reshape(h, (rows, s_in, s_in, c)), (0, 3, 1, 2))  # (rows, c, s', s')
        h = ops.max_pool2d(h, self.pool, 1)                         # (rows, c, p, p)
        h = ops.reshape(ops.transpose(h, (0, 2, 3, 1)), (rows, self.flat))  # channels-last
        w0, b0, w1, b1 = params[2 * self.n_convs:]
        h = ops.leaky_relu(ops.linear(h, w0, b0), self.slope)
        return ops.reshape(ops.linear(h, w1, b1), (rows,))         # linear output

    def forward(self, z: Tensor, final_activation: bool = False) -> Tensor:
        """z: (R, n, C) -> (R, n); every neuron's C inputs become one small image of the batch."""
        R, n, C = z.shape
        if C != self.n_channels:
            raise ValueError(f"DAN expects {self.n_channels} channels per neuron, got input {z.shape}")
        # BEGIN SOLUTION
        h = ops.conv.checkpoint_rows(self._rows, ops.reshape(z, (R * n, C)), self._row_params(),
                                     self.chunk, self.threads,
                                     keep=R * n * self.row_bytes <= self.keep_bytes)
        if final_activation:
            h = ops.leaky_relu(h, self.slope)
        return ops.reshape(h, (R, n))
        # END SOLUTION

    def reference_forward(self, z: Tensor, final_activation: bool = False) -> Tensor:
        """The same DAN with conv2d / max_pool2d on (R*n, 1, s, s) images: the definition."""
        R, n, C = z.shape
        h = ops.reshape(z, (R * n, 1, self.side, self.side))        # (R*n, 1, s, s)
        for i in range(self.n_convs):
            h = ops.leaky_relu(ops.conv2d(h, getattr(self, f"conv{i}_w"), getattr(self, f"conv{i}_b")),
                               self.slope)
        h = ops.max_pool2d(h, self.pool, 1)                         # (R*n, c2, s', s')
        h = ops.reshape(h, (R * n, self.flat))
        h = ops.leaky_relu(ops.linear(h, self.fc0_w, self.fc0_b), self.slope)
        h = ops.linear(h, self.fc1_w, self.fc1_b)                   # (R*n, 1), linear
        if final_activation:
            h = ops.leaky_relu(h, self.slope)
        return ops.reshape(h, (R, n))


class InputConvDAN(Module):
    """The input DAN layer of the UCIL model: two stacked 3x3 convolutions with padding 1 and leaky
    ReLU, 1 -> hidden -> 1 channels, so an H x W image stays H*W values."""

    def __init__(self, hidden: int = 8, image_side: int = 28, slope: float = 0.01,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        self.side, self.slope = int(image_side), float(slope)
        self.w0 = Parameter(glorot_uniform(rng, (hidden, 1, 3, 3), 9, hidden * 9, dtype))
        self.b0 = Parameter(np.zeros(hidden, dtype=dtype))
        self.w1 = Parameter(glorot_uniform(rng, (1, hidden, 3, 3), hidden * 9, 9, dtype))
        self.b1 = Parameter(np.zeros(1, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        """x: (P, B, side*side) pixels -> (P, B, side*side) input-DAN outputs."""
        P, B, D = x.shape
        if D != self.side * self.side:
            raise ValueError(f"input DAN layer expects {self.side}x{self.side} = {self.side ** 2} "
                             f"pixels per image, got input of shape {x.shape}")
        h = ops.reshape(x, (P * B, 1, self.side, self.side))
        h = ops.leaky_relu(ops.conv2d(h, self.w0, self.b0, padding=1), self.slope)
        h = ops.leaky_relu(ops.conv2d(h, self.w1, self.b1, padding=1), self.slope)
        return ops.reshape(h, (P, B, D))


class DANNetwork(Module):
    """Layers of DANs joined by VECs: nodes[0] inputs, then DAN layers nodes[1:].

    ``forward(x, synapses)`` maps x (P, B, nodes[0]) to (P, B, nodes[-1]) with the synapses of each
    population member (dict of Tensors with leading axis P). The DANs (phi) are this Module's
    Parameters; the synapses (theta) are not, because every member has its own.
    """

    def __init__(self, nodes: Sequence[int], n_channels: int, make_dan: Callable[..., Module],
                 sharing: str = "global", skips: Sequence[tuple[int, int]] = (),
                 final_activation: bool = True, output_scale: float | None = None,
                 input_layer: Module | None = None, synapse_init: str = "lecun",
                 vec_activation: str | None = None):
        """``synapse_init``: "lecun" (weights N(0, 1/fan_in), zero biases), "fan_in_uniform"
        (weights and biases U(+-1/sqrt(fan_in)), PyTorch's nn.Linear default) or "xavier_uniform"
        (every VEC and skip weight Glorot-uniform with its own fans, n_in and n_out*C, as
        torch.nn.init.xavier_uniform_ on each nn.Linear; zero biases).

        ``vec_activation`` (e.g. "tanh", the authors' notebook): applied to every DAN layer's input
        after the VEC sum (VEC + skips), before the DANs; None (default) applies nothing."""
        super().__init__()
        if sharing not in SHARINGS:
            raise ValueError(f"sharing must be one of {SHARINGS}, got {sharing!r}")
        self.nodes = tuple(int(n) for n in nodes)
        if len(self.nodes) < 2 or min(self.nodes) < 1:
            raise ValueError(f"nodes must list at least an input and an output layer, got {nodes}")
        self.n_channels = int(n_channels)
        self.sharing = sharing
        self.skips = tuple((int(j), int(k)) for j, k in skips)
        for j, k in self.skips:
            if not 0 <= j < k - 1 < len(self.nodes) - 1:
                raise ValueError(f"skip ({j}, {k}) must jump over at least one layer of {self.nodes}")
        self.final_activation = bool(final_activation)
        self.output_scale = output_scale
        if synapse_init not in ("lecun", "fan_in_uniform", "xavier_uniform"):
            raise ValueError(f"synapse_init must be 'lecun', 'fan_in_uniform' or 'xavier_uniform', "
                             f"got {synapse_init!r}")
        self.synapse_init = synapse_init
        self.vec_activation = vec_activation
        self._vec_act = None if vec_activation is None else _activation(vec_activation)
        if input_layer is not None:
            self.input_layer = input_layer
        else:
            self.input_layer = None
        n_dan_layers = len(self.nodes) - 1
        if sharing == "global":
            self.dans = ModuleList([make_dan()])
        elif sharing == "per_layer":
            self.dans = ModuleList([make_dan() for _ in range(n_dan_layers)])
        else:
            self.dans = ModuleList([make_dan(n_neurons=n) for n in self.nodes[1:]])

    # ------------------------------------------------------------------ synapses (theta)
    def synapse_shapes(self) -> dict[str, tuple]:
        """Shapes of one member's synapses: VEC weights (n_l, n_{l+1} C), biases (1, n_{l+1} C),
        skip weights (n_j, n_k C)."""
        C, shapes = self.n_channels, {}
        for l in range(len(self.nodes) - 1):
            shapes[f"vec{l}.weight"] = (self.nodes[l], self.nodes[l + 1] * C)
            shapes[f"vec{l}.bias"] = (1, self.nodes[l + 1] * C)
        for j, k in self.skips:
            shapes[f"skip{j}_{k}.weight"] = (self.nodes[j], self.nodes[k] * C)
        return shapes

    def init_synapses(self, population: int, rng: np.random.Generator, dtype=np.float32,
                      same: bool = True) -> dict[str, np.ndarray]:
        """theta_0 for P members, by ``synapse_init`` (fan_in counts the skip inputs too).

        With ``same=True`` every member starts from the same theta_0 (Algorithm 1, line 2).
        """
        fan = {l: self.nodes[l - 1] for l in range(1, len(self.nodes))}
        for j, k in self.skips:
            fan[k] += self.nodes[j]
        n = 1 if same else population
        theta = {}
        for name, shape in self.synapse_shapes().items():
            target = int(name.split("_")[-1].split(".")[0]) if name.startswith("skip") \
                else int(name[3:].split(".")[0]) + 1
            if self.synapse_init == "fan_in_uniform":
                w = fan_in_uniform(rng, (n,) + shape, fan[target], dtype)
            elif self.synapse_init == "xavier_uniform" and not name.endswith("bias"):
                w = glorot_uniform(rng, (n,) + shape, shape[0], shape[1], dtype)
            elif name.endswith("bias"):
                w = np.zeros((n,) + shape, dtype=dtype)
            else:
                w = lecun_normal(rng, (n,) + shape, fan[target], dtype)
            theta[name] = np.repeat(w, population, axis=0) if same else w
        return theta

    def num_synapses(self) -> int:
        """Number of synapse parameters of one member."""
        return sum(int(np.prod(s)) for s in self.synapse_shapes().values())

    def dan_for_layer(self, layer: int) -> Module:
        """The DAN module that serves DAN layer ``layer`` (1-based, as in nodes)."""
        return self.dans[0] if self.sharing == "global" else self.dans[layer - 1]

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, synapses: dict, record: dict | None = None) -> Tensor:
        """x (P, B, nodes[0]) -> (P, B, nodes[-1]); a NumPy x is taken in the synapses' dtype.

        ``record`` (a dict): filled with {synapse name: (a, z)}, the activations a (P, B, n_in)
        the synapse multiplies and the VEC sum z = a W + ... (P, B, n_out*C) it adds to, so that
        dL/dW = a^T dL/dz (``tinydan.meta.sgd_step_``)."""
        if not isinstance(x, Tensor):
            x = Tensor(x, dtype=next(iter(synapses.values())).dtype)
        if x.ndim != 3 or x.shape[2] != self.nodes[0]:
            raise ValueError(f"expected input of shape (population, batch, {self.nodes[0]}), "
                             f"got {x.shape}")
        P, B, _ = x.shape
        C, L = self.n_channels, len(self.nodes) - 1
        acts = [x if self.input_layer is None else self.input_layer(x)]
        for l in range(1, L + 1):
            z = vec(acts[l - 1], synapses[f"vec{l - 1}.weight"], synapses[f"vec{l - 1}.bias"])
            for j, k in self.skips:
                if k == l:
                    z = ops.add(z, vec(acts[j], synapses[f"skip{j}_{k}.weight"]))
            if record is not None:
                record[f"vec{l - 1}.weight"] = (acts[l - 1], z)
                record[f"vec{l - 1}.bias"] = (None, z)
                for j, k in self.skips:
                    if k == l:
                        record[f"skip{j}_{k}.weight"] = (acts[j], z)
            if self._vec_act is not None:
                z = self._vec_act(z)
            z = ops.reshape(z, (P * B, self.nodes[l], C))          # one row of C per DAN
            a = self.dan_for_layer(l)(z, final_activation=(l < L or self.final_activation))
            acts.append(ops.reshape(a, (P, B, self.nodes[l])))
        out = acts[-1]
        if self.output_scale is not None:
            out = ops.mul(out, float(self.output_scale))
        return out
