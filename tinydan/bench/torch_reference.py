"""The regression model's steps and meta-training written in PyTorch eager: a reference to time
tinydan against, never a tinydan dependency (torch is imported lazily; without it the benchmarks
that need it say so and time tinydan alone).

* ``regression_forward``: ``DANNetwork.forward`` for a globally shared tanh ``MLPDAN``;
* ``TorchStep``: one step of the paper's regression model (the deployment SGD step, or the inner
  SGD step + first-order or one-step meta-gradient + Adam on phi), the same maths as
  ``tinydan.meta.deploy_step`` / ``meta_step`` with ``tinydan.optim.Adam``;
* ``meta_train``: Algorithm 1 for the regression experiment (paper section 3.1), the same
  network, initial phi and theta_0, task draws and step as ``python -m tinydan.regression
  meta-train``, run in PyTorch eager on one thread, with one validation at the end
  (``validate``). ``python -m tinydan.bench.torch_reference
  --epochs N`` runs it; ``python -m tinydan.bench --end-to-end N`` times it against tinydan's
  own command.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

__all__ = ["load_torch", "regression_forward", "TorchStep", "validate", "meta_train", "main"]

_THREADS_SET = False


def load_torch():
    """PyTorch with ONE intra-op thread, or None when it cannot be imported (imported lazily)."""
    global _THREADS_SET
    try:
        import torch
    except ImportError:
        return None
    if not _THREADS_SET:
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:                 # only settable before torch's first parallel work
            pass
        _THREADS_SET = True
    return torch


def regression_forward(torch, net, x, theta: dict, phi: list):
    """DANNetwork.forward in PyTorch for a globally shared tanh MLPDAN: x (P, B, n0) -> (P, B, nL).

    The same ops in the same order: VEC = x @ W + b (one fused baddbmm, like td.linear), skip
    VECs added before the DANs, one DAN call per layer on (P*B*n, C) rows, the final tanh and
    output scale as configured.
    """
    P, B, _ = x.shape
    C, nodes, L = net.n_channels, net.nodes, len(net.nodes) - 1
    n_dan = len(phi) // 2
    acts = [x]
    for l in range(1, L + 1):
        z = torch.baddbmm(theta[f"vec{l - 1}.bias"], acts[l - 1], theta[f"vec{l - 1}.weight"])
        for j, k in net.skips:
            if k == l:
                z = z + torch.bmm(acts[j], theta[f"skip{j}_{k}.weight"])
        h = z.reshape(P * B * nodes[l], C)                       # (P*B*n_l, C): one DAN call
        for i in range(n_dan):
            h = torch.addmm(phi[2 * i + 1], h, phi[2 * i])
            if i < n_dan - 1 or l < L or net.final_activation:
                h = torch.tanh(h)
        acts.append(h.reshape(P, B, nodes[l]))
    out = acts[-1]
    if net.output_scale is not None:
        out = out * float(net.output_scale)
    return out


class TorchStep:
    """One step of the regression model in PyTorch eager, from tinydan's phi and theta_0.

    ``kind`` "deploy": theta <- theta - lr grad_theta L_task (phi fixed); "first_order" /
    "one_step": that inner step, then the meta-loss at theta_{t+1} on (xm, ym), its gradient
    w.r.t. phi (through the inner step for one_step) and an Adam step on phi (the fused Adam
    where this torch has it). ``__call__(x, y, xm, ym)`` returns (meta-loss or None, task loss,
    phi gradients, old theta, new theta); ``reset(theta0)`` puts the synapses back.
    """

    def __init__(self, torch, net, kind: str, phi: list, theta0: dict, lr: float,
                 meta_lr: float | None = None):
        if net.sharing != "global" or not all(getattr(d, "activation", None) == "tanh"
                                              for d in net.dans):
            raise ValueError("the PyTorch reference expects the regression model's global "
                             "tanh MLPDAN")
        if kind not in ("deploy", "first_order", "one_step"):
            raise ValueError(f"kind must be 'deploy', 'first_order' or 'one_step', got {kind!r}")
        self.torch, self.net, self.kind, self.lr = torch, net, kind, float(lr)
        self.names = list(theta0)
        self.phi = [self._t(p).requires_grad_(kind != "deploy") for p in phi]
        self.reset(theta0)
        self.opt = None
        if kind != "deploy":
            try:                     # the fused Adam: the fastest PyTorch has on the CPU
                self.opt = torch.optim.Adam(self.phi, lr=meta_lr, fused=True)
            except (RuntimeError, TypeError, ValueError):
                self.opt = torch.optim.Adam(self.phi, lr=meta_lr)

    def _t(self, a):
        """A float32 torch tensor owning a private copy of ``a`` (an array or a Tensor)."""
        return self.torch.from_numpy(np.array(getattr(a, "data", a), dtype=np.float32))

    def reset(self, theta0: dict) -> None:
        """theta <- theta_0 (leaves that require grad)."""
        self.theta = {k: self._t(v).requires_grad_() for k, v in theta0.items()}

    def _inner(self, x, y, create_graph):
        """L_task = sum over members of the per-member MSE, and its gradient w.r.t. theta."""
        torch, old = self.torch, self.theta
        P = float(x.shape[0])
        out = regression_forward(torch, self.net, x, old, self.phi)
        loss = torch.nn.functional.mse_loss(out, y) * P
        gs = torch.autograd.grad(loss, [old[k] for k in self.names], create_graph=create_graph)
        return loss, gs

    def __call__(self, x, y, xm=None, ym=None):
        torch, old, lr = self.torch, self.theta, self.lr
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        P = float(x.shape[0])
        if self.kind == "deploy":
            loss, gs = self._inner(x, y, False)
            with torch.no_grad():
                new = {k: (old[k] - lr * g).requires_grad_() for k, g in zip(self.names, gs)}
            self.theta = new
            return None, loss.item() / P, (), old, new
        one_step = self.kind == "one_step"
        loss, gs = self._inner(x, y, one_step)
        if one_step:                                             # theta' stays a function of phi
            th1 = {k: old[k] - lr * g for k, g in zip(self.names, gs)}
        else:
            with torch.no_grad():
                th1 = {k: old[k] - lr * g for k, g in zip(self.names, gs)}
        out = regression_forward(torch, self.net, torch.from_numpy(xm), th1, self.phi)
        meta = torch.nn.functional.mse_loss(out, torch.from_numpy(ym))
        gphi = torch.autograd.grad(meta, self.phi)
        for p, g in zip(self.phi, gphi):
            p.grad = g
        self.opt.step()
        new = {k: v.detach().requires_grad_() for k, v in th1.items()}
        self.theta = new
        return meta.item(), loss.item() / P, gphi, old, new


def validate(torch, net, phi: list, theta0: dict, cfg, seed: int) -> float:
    """``tinydan.experiments.regression.validate`` in PyTorch: deploy phi (fixed) on the
    validation functions, all at once (a function axis in place of the population axis), with
    the same points in the same order; the mean final MSE over the whole function."""
    from tinydan.experiments.regression import EVAL_POINTS, _replicate
    from tinydan.tasks import VAL_SEED, SineSequence, sample_functions
    val = sample_functions(cfg, np.random.default_rng(VAL_SEED), cfg.val_functions, "val")
    seq = SineSequence(val, np.random.default_rng([seed, 7]), steps=cfg.steps_per_window,
                       batch=cfg.inner_batch, n_windows=cfg.n_windows,
                       meta_batch_size=cfg.meta_batch)
    xe, ye = seq.eval_points(EVAL_POINTS)                        # (F, T*200, 1)
    step = TorchStep(torch, net, "deploy", phi, _replicate(theta0, len(val)), cfg.inner_lr)
    for x, y in seq.inner_batches():
        step(x, y)
    with torch.no_grad():
        pred = regression_forward(torch, net, torch.from_numpy(xe), step.theta, step.phi)
    return float(((pred.numpy().astype(np.float64) - ye) ** 2).mean())


def meta_train(cfg, seed: int, epochs: int, log=None, validate_at_end: bool = True) -> dict:
    """Algorithm 1 for the regression experiment in PyTorch eager (plain SGD inner steps, one
    meta-update each, Adam on phi): the network, phi_0, theta_0 and every task draw are those of
    ``tinydan.experiments.regression.new_trainer(cfg, seed)``; then, like ``python -m
    tinydan.regression meta-train --val-every EPOCHS``, one validation of the final phi. Returns
    the history, the validation MSE, the final phi (numpy) and the seconds spent."""
    from tinydan.experiments.regression import new_trainer
    torch = load_torch()
    if torch is None:
        raise RuntimeError("PyTorch is not installed: `pip install torch` to run the reference")
    if cfg.inner_optimizer != "sgd" or cfg.meta_updates != 1 or cfg.meta_optimizer != "adam":
        raise ValueError("the PyTorch reference runs plain SGD inner steps with one Adam "
                         "meta-update each; this config asks for more")
    trainer = new_trainer(cfg, seed)                 # tinydan's draws, phi_0 and theta_0
    step = TorchStep(torch, trainer.net, cfg.meta_grad, trainer.phi, trainer.theta0,
                     cfg.inner_lr, cfg.meta_lr)
    rng, history = trainer.rng, {"epoch": [], "task_loss": [], "meta_loss": []}
    t0 = time.perf_counter()
    for e in range(epochs):
        seq = trainer.sample(rng)
        for group in step.opt.param_groups:
            group["lr"] = cfg.meta_lr * float(cfg.meta_lr_decay) ** e
        step.reset(trainer.theta0)
        task, meta = [], []
        for x, y in seq.inner_batches():
            xm, ym = seq.meta_batch(rng)
            lm, lt, *_ = step(x, y, xm, ym)
            task.append(lt)
            meta.append(lm)
        for k, v in (("epoch", e + 1), ("task_loss", float(np.mean(task))),
                     ("meta_loss", float(np.mean(meta)))):
            history[k].append(v)
        if log is not None:
            log(f"epoch {e + 1}: meta-loss {history['meta_loss'][-1]:.6f}")
    phi = [p.detach().numpy().copy() for p in step.phi]
    val = validate(torch, trainer.net, phi, trainer.theta0, cfg, seed) if validate_at_end \
        else None
    return {"history": history, "val": val, "seconds": time.perf_counter() - t0, "phi": phi}


def main(argv=None) -> int:
    """``python -m tinydan.bench.torch_reference``: meta-train the regression model in PyTorch."""
    from tinydan.experiments.configs import REGRESSION_CONFIGS, regression_config
    p = argparse.ArgumentParser(prog="python -m tinydan.bench.torch_reference",
                                description="Meta-train the regression model in PyTorch eager on "
                                            "one thread (the reference of the end-to-end "
                                            "benchmark): same network, initial values and task "
                                            "draws as `python -m tinydan.regression meta-train`.")
    p.add_argument("--config", choices=sorted(REGRESSION_CONFIGS), default="default")
    p.add_argument("--epochs", type=int, default=2, help="meta-epochs (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--meta-grad", choices=["first_order", "one_step"], default=None,
                   help="meta-gradient mode (default: the config's)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the history here")
    a = p.parse_args(argv)
    if a.epochs < 1:
        p.error("--epochs must be >= 1")
    cfg = regression_config(a.config, **({"meta_grad": a.meta_grad} if a.meta_grad else {}))
    try:
        out = meta_train(cfg, a.seed, a.epochs, log=print)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.epochs} meta-epochs and a validation (final MSE {out['val']:.4f}) in "
          f"{out['seconds']:.2f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"history": out["history"], "val": out["val"], "seconds": out["seconds"]},
                      f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
