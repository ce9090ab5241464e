"""The pieces both command lines (python -m tinydan.regression / tinydan.ucil) are built from.

* ``make_parser`` and ``add_run_options``: every option shows its default in ``--help``; the
  options a newcomer uses come first, the research knobs sit in an "advanced" group;
* ``RunFolder``: an output folder that protects its contents: it refuses to write into a folder
  that holds another run unless ``--resume`` or ``--overwrite`` is given, holds an advisory lock
  so that a second run into the same folder stops at once, and removes the temporary files a
  killed run left behind;
* ``run_cli``: parses, runs, and turns a user's mistake into one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ..checkpoint import CheckpointError

__all__ = ["progress", "positive_int", "positive_float", "seed_int", "nonnegative_int",
           "ci_count", "make_parser", "add_run_options", "RunFolder", "run_cli", "UsageError",
           "one_line", "load_refused_in_one_line"]

# the words the --help texts use, explained once (the epilog of both top-level parsers)
GLOSSARY = """words used above:
  phenotype   phi, the meta-learned parameters of the DANs (shared by many neurons), saved with
              its config in a .npz file; deployment keeps it fixed
  synapses    theta, the weights of the VECs joining neurons; the only thing SGD changes when a
              phenotype is deployed; theta_0 is where they start
  meta-epoch  one pass of Algorithm 1: a new task sequence per population member, an inner SGD
              step on the synapses then a meta step on phi after every step
  held-out    tasks from a seed meta-training and validation never see: what results report
  validation  tasks every choice (checkpoint, learning rate, meta-epoch) is made on
  draws       (UCIL) independent samples of the 5 images per MNIST digit deployed on
see docs/model-and-protocol.md for the protocol and the rest of the vocabulary"""


class UsageError(ValueError):
    """A mistake in the command line or the run folder: reported in one line, exit code 2."""


def progress(total, desc, disable=False, initial=0, unit="it"):
    """A tqdm progress bar (None if tqdm is missing)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, disable=disable, initial=initial, leave=False,
                dynamic_ncols=True, unit=unit)


def _whole(s, minimum: int, too_small: str) -> int:
    """int(s) if it is a whole number >= minimum, else one argparse error line."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"{too_small}, got {v}")
    return v


def positive_int(s):
    """argparse type: a whole number >= 1, with a clear message otherwise."""
    return _whole(s, 1, "must be at least 1")


def nonnegative_int(s):
    """argparse type: a whole number >= 0 (a count of worker processes; 0 runs inline)."""
    return _whole(s, 0, "must be 0 or more (0: no worker processes)")


def ci_count(s):
    """argparse type: a number of held-out functions or draws, >= 2 (a 95% confidence interval
    needs at least two)."""
    v = positive_int(s)
    if v < 2:
        raise argparse.ArgumentTypeError(f"confidence intervals need at least 2, got {v}")
    return v


def seed_int(s):
    """argparse type: a seed, a whole number >= 0 (NumPy's generators take no negative seeds)."""
    return _whole(s, 0, "a seed is a whole number >= 0")


def positive_float(s):
    """argparse type: a number > 0, with a clear message otherwise."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Every option that takes a value shows its default (its help text says it in words, or
    "(default: VALUE)" is added); flags do not; the epilog keeps its line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and action.nargs != 0 and "default" not in text
                and action.default is not None and action.default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The top-level parser of an experiment, its words explained in the epilog."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=GLOSSARY,
                                   formatter_class=_Formatter)


def add_subcommand(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows every default."""
    return sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)


def training_subcommands(sub):
    """(name, parser) of the ``run`` and ``meta-train`` subcommands, for the experiment's options."""
    for name, help in (("run", "meta-train, then deploy and compare (the default)"),
                       ("meta-train", "meta-train only; writes OUT/checkpoint.npz")):
        yield name, add_subcommand(sub, name, help)


def add_run_options(sp, configs, default_config: str | None, training: bool = True,
                    seed: bool = True):
    """--out, --seed, --quiet (and for training: --config, --epochs, --meta-grad, the rates,
    --resume, --overwrite). Returns the "advanced" argument group for the experiment's knobs."""
    sp.add_argument("--out", type=Path, default=None,
                    help="output folder (default: runs/<experiment>-<date>-<time>)")
    if seed:
        sp.add_argument("--seed", type=seed_int, default=0,
                        help="seed of the run (a whole number >= 0): phi_0, theta_0 and the "
                             "meta-training draws")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace the run that OUT holds (without it, a folder holding a run is "
                         "refused)")
    if training:
        sp.add_argument("--config", choices=sorted(configs), default=default_config,
                        help="model and protocol")
        sp.add_argument("--epochs", type=positive_int, default=None,
                        help="meta-epochs (default: the config's)")
        sp.add_argument("--resume", action="store_true",
                        help="continue the run in OUT from its checkpoint.npz (needs --out)")
    adv = sp.add_argument_group("advanced")
    adv.add_argument("--no-compile", action="store_true",
                     help="run every step eagerly instead of replaying its recorded tape "
                          "(tinydan.compile; the same numbers, slower)")
    if training:
        adv.add_argument("--meta-grad", choices=["first_order", "one_step"], default=None,
                         help="meta-gradient mode (default: the config's)")
        adv.add_argument("--inner-lr", type=positive_float, default=None,
                         help="synapse SGD learning rate (default: the config's)")
        adv.add_argument("--meta-lr", type=positive_float, default=None,
                         help="phi Adam learning rate (default: the config's)")
        adv.add_argument("--meta-lr-decay", type=positive_float, metavar="F", default=None,
                         help="phi's learning rate is multiplied by F after every meta-epoch "
                              "(default: the config's)")
    return adv


def overrides(a, pairs) -> dict:
    """{config field: value} of the options given (None: the config's own)."""
    return {field: getattr(a, arg) for field, arg in pairs if getattr(a, arg, None) is not None}


_MARKERS = ("checkpoint.npz", "phenotype.npz", "results.json")


class RunFolder:
    """The output folder of one run, held for its duration (a context manager).

    Refuses (``UsageError``) a path that is a file or lies below one, a folder it cannot write,
    a folder holding another run (its checkpoint, phenotype or results) unless ``resume`` or
    ``overwrite``, and a folder another run holds right now (an advisory lock, ``OUT/.lock``).
    Temporary files of a killed earlier run (``*.tmp-PID``) are removed on entry. The lock belongs
    to the run's own process: forked workers drop their copy, so a killed run frees the folder at
    once, even while its workers wind down.
    """

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False):
        self.path, self.resume, self.overwrite = Path(path), bool(resume), bool(overwrite)
        self._fd = None

    def check(self) -> None:
        """The refusals above, before any work starts."""
        p = self.path
        for parent in [p, *p.parents]:
            if parent.exists() and not parent.is_dir():
                raise UsageError(f"--out {p}: {parent} is a file, not a folder; choose another --out")
            if parent.exists():
                break
        if p.exists():
            if not os.access(p, os.W_OK | os.X_OK):
                raise UsageError(f"--out {p}: the folder is not writable; choose another --out")
            held = [m for m in _MARKERS if (p / m).exists()]
            if held and not (self.resume or self.overwrite):
                raise UsageError(f"--out {p} holds another run ({', '.join(held)}): pass --resume "
                                 "to continue it, --overwrite to replace it, or choose another --out")
        else:
            parent = next((q for q in p.parents if q.exists()), None)
            if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"--out {p}: cannot create it under {parent} (not writable)")

    def __enter__(self) -> "RunFolder":
        self.check()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {self.path}: cannot create the folder ({e.strerror}); choose "
                             "another --out") from None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            fcntl = None
        self._fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._fd)
                self._fd = None
                raise UsageError(f"--out {self.path} is in use by another run right now; wait for "
                                 "it to finish or choose another --out") from None
        _HELD.add(self._fd)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())
        for tmp in self.path.rglob("*.tmp-*"):            # left by a killed run
            pid = tmp.name.rsplit(".tmp-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            try:
                (self.path / ".lock").unlink()              # no litter in the results folder
            except OSError:
                pass
            os.close(self._fd)                              # releases the lock
            self._fd = None


# The lock descriptors this process holds. A forked worker closes its copies at once, so the lock
# is released when the run's own process ends, even while a worker of a killed run still winds down.
_HELD: set = set()


def _close_held_locks() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_locks)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


def load_refused_in_one_line(load, path, *args):
    """``load(path, *args)`` (a phenotype loader) with a config that does not build a network (a
    ValueError or TypeError of the network's constructor) refused as one CheckpointError line."""
    try:
        return load(path, *args)
    except CheckpointError:
        raise
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its config does not build a network ({e}); was the file "
                              "edited, or written by another version of tinydan?") from None


def one_line(message) -> str:
    """A (possibly multi-line) error message as one line: its lines joined by "; "."""
    lines = [ln.strip().lstrip("-").strip() for ln in str(message).splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return type(message).__name__ if isinstance(message, BaseException) else ""
    head, rest = lines[0], lines[1:]
    return head + (" " if head.endswith(":") else "; ") + "; ".join(rest) if rest else head


def run_cli(parser: argparse.ArgumentParser, argv, handler, errors=()) -> int:
    """Parse ``argv`` (no subcommand: ``run``), call ``handler(args)``; a ``UsageError`` or one of
    ``errors`` becomes one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run"] + argv
    a = parser.parse_args(argv)
    if getattr(a, "no_compile", False):
        from ..compiler import set_enabled
        set_enabled(False)
    if getattr(a, "resume", False) and getattr(a, "out", "") is None:
        parser.error("--resume needs --out pointing at the run folder to continue")
    try:
        return int(handler(a) or 0)
    except UsageError as e:
        parser.exit(2, f"{parser.prog}: error: {one_line(e)}\n")
    except tuple(errors) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
