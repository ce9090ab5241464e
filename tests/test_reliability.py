"""Runs that survive mistakes and crashes: a meta-training run killed at random points (SIGKILL)
and resumed with --resume ends bit for bit where the uninterrupted run ends, leaves no worker
process and no temporary file behind; a run folder refuses to be overwritten, is locked while a
run holds it and never holds half-written results; every user mistake stops the command line at
once with one line and exit code 2; --help shows every default."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinydan as td
from tinydan import regression, ucil
from tinydan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinydan.experiments import ablation_studies
from tinydan.experiments.cli import RunFolder, UsageError, one_line
from tinydan.experiments.common import write_results

ROOT = Path(__file__).resolve().parent.parent
LEFTOVERS = ("*.tmp-*", "*.part", "*.part-*")


# ---------------------------------------------------------------------------------------------
# processes seen through /proc
# ---------------------------------------------------------------------------------------------
def _proc_table() -> dict:
    """{pid: (ppid, start time, state)} of every process now (Linux /proc)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()      # fields 3 (state) onwards
        table[int(name)] = (int(rest[1]), rest[19], rest[0])
    return table


def _descendants(pid: int) -> dict:
    """{pid: start time} of the children of ``pid``, their children, and so on."""
    table, found, todo = _proc_table(), {}, [pid]
    while todo:
        parent = todo.pop()
        for p, (ppid, start, _) in table.items():
            if ppid == parent and p not in found:
                found[p] = start
                todo.append(p)
    return found


def _alive(pid: int, start: str) -> bool:
    """The process ``pid`` that started at ``start`` still runs (not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[19] == start and rest[0] not in ("Z", "X")


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="the crash tests read processes from Linux's /proc")


# ---------------------------------------------------------------------------------------------
# killing and resuming a run
# ---------------------------------------------------------------------------------------------
def _env(**more) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(more)
    return env


def _stamp(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _run_once(cmd, cwd: Path, env: dict, plan, out: Path, timeout: float = 600.0) -> dict:
    """Run ``cmd``; ``plan`` None lets it finish, ("after-save", k, delay) kills it ``delay``
    seconds after its k-th checkpoint write, ("at", seconds) that long after it started.
    Returns {rc, killed, children, pending, stderr}."""
    log = cwd / f"stderr-{time.monotonic_ns()}.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    t0, saves, last, deadline = time.monotonic(), 0, _stamp(out / "checkpoint.npz"), None
    children: dict = {}
    try:
        while proc.poll() is None:
            children.update(_descendants(proc.pid))
            if plan is not None and deadline is None:
                stamp = _stamp(out / "checkpoint.npz")
                if stamp is not None and stamp != last:
                    saves, last = saves + 1, stamp
                if plan[0] == "at":
                    deadline = t0 + plan[1]
                elif saves >= plan[1]:
                    deadline = time.monotonic() + plan[2]
            if deadline is not None and time.monotonic() >= deadline:
                children.update(_descendants(proc.pid))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{cmd} ran over {timeout} s")
            time.sleep(0.03)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pending = None
    if proc.returncode == -signal.SIGKILL and (out / "checkpoint.npz").exists():
        pending = load_checkpoint(out / "checkpoint.npz")[1].get("pending_epochs")
    return {"rc": proc.returncode, "killed": proc.returncode == -signal.SIGKILL,
            "children": children, "pending": pending, "stderr": log.read_text()}


def _no_orphans(children: dict, within: float = 5.0) -> None:
    """Every process the killed run had started is gone within ``within`` seconds."""
    t_end = time.monotonic() + within
    while True:
        left = {p: s for p, s in children.items() if _alive(p, s)}
        if not left:
            return
        if time.monotonic() > t_end:
            raise AssertionError(f"worker processes {sorted(left)} of the killed run still run "
                                 f"{within} s after it was killed")
        time.sleep(0.1)


def _kill_and_resume(cmd, cwd: Path, out: Path, plans, env: dict) -> list:
    """Run ``cmd`` into ``out``, killing it by each plan in turn (the next start adds --resume),
    then resume until it finishes. Returns the record of every start."""
    records, resume = [], []
    for plan in list(plans) + [None] * 3:
        r = _run_once(cmd + resume, cwd, env, plan, out)
        records.append(dict(r, plan=plan))
        if r["killed"]:
            _no_orphans(r["children"])
        elif r["rc"] == 0 and plan is None:
            return records
        elif r["rc"] != 0:
            raise AssertionError(f"{cmd + resume} failed (exit {r['rc']}):\n{r['stderr'][-3000:]}")
        resume = ["--resume"]
    raise AssertionError(f"the run did not finish after {len(records)} starts: {records}")


def _npz(path: Path):
    return load_checkpoint(path)


def _assert_same_run(straight: Path, resumed: Path, what: str) -> None:
    """The same phi arrays, snapshots, optimiser and generator state, validation history, best
    epoch and phenotype file arrays, bit for bit (only times and the command may differ)."""
    volatile = {"meta_train_seconds", "command", "created", "wall_seconds_meta_training"}
    for name in ("checkpoint.npz", "phenotype.npz"):
        (a, ma), (b, mb) = _npz(straight / name), _npz(resumed / name)
        snaps = [sorted({k.split(".")[1] for k in x if k.startswith("snap.")}) for x in (a, b)]
        assert sorted(a) == sorted(b), (f"{what} {name}: other arrays (snapshots of meta-epochs "
                                        f"{snaps[0]} straight, {snaps[1]} resumed)")
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{what} {name}: {k}"
        for k in sorted((set(ma) | set(mb)) - volatile):
            assert ma.get(k) == mb.get(k), f"{what} {name}: meta {k!r} {ma.get(k)} != {mb.get(k)}"
        assert ma["val_history"] and ma["best_epoch"] == mb["best_epoch"]


def _leftovers(folder: Path) -> list:
    return sorted(str(p) for pattern in LEFTOVERS for p in folder.rglob(pattern))


def _crash_test(tmp_path, module: str, args: list, make_plans, env: dict) -> list:
    """The straight run, then the killed and resumed one (``make_plans(seconds the straight run
    took)``), compared."""
    cmd = [sys.executable, "-m", module, "meta-train", *args, "--quiet"]
    t0 = time.monotonic()
    straight = _run_once(cmd + ["--out", "straight"], tmp_path, env, None, tmp_path / "straight")
    assert straight["rc"] == 0, straight["stderr"][-3000:]
    out = tmp_path / "killed"
    plans = make_plans(time.monotonic() - t0)
    records = _kill_and_resume(cmd + ["--out", "killed"], tmp_path, out, plans, env)
    how = [(r["plan"], r["rc"], r["pending"]) for r in records]
    assert sum(r["killed"] for r in records) >= 1, how
    _assert_same_run(tmp_path / "straight", out, f"{module} after {how}:")
    assert _leftovers(out) == [] and _leftovers(tmp_path / "straight") == []
    return records


def _plans(rng: random.Random, epochs: int, kills: int):
    """Kills right after a checkpoint write (a validation is pending then) and at random times
    of a start (up to the straight run's duration)."""
    def make(seconds: float) -> list:
        plans = []
        for i in range(kills):
            if i % 2 == 0:
                plans.append(("after-save", rng.randint(1, max(1, epochs // 2)),
                              rng.uniform(0, 0.3)))
            else:
                plans.append(("at", rng.uniform(0.2, seconds)))
        return plans
    return make


def _regression_crash(tmp_path, epochs: int, kills: int):
    seed = random.SystemRandom().randrange(2 ** 32)
    rng = random.Random(seed)
    records = _crash_test(tmp_path, "tinydan.regression",
                          ["--config", "tiny", "--epochs", str(epochs), "--val-every", "1"],
                          _plans(rng, epochs, kills), _env())
    # whether a validation was still pending at a random kill depends on timing (the compiled
    # step makes epochs short); the kill with a pending validation is made deterministic in
    # test_a_run_killed_before_its_first_validation_finished_resumes_bit_for_bit
    return seed, records


@needs_proc
def test_killed_regression_run_resumes_bit_for_bit(tmp_path):
    """Two SIGKILLs (one right after a checkpoint write, validation pending; one at a random
    time), then --resume: the same run as an uninterrupted one."""
    _regression_crash(tmp_path, epochs=4, kills=2)


@needs_proc
@pytest.mark.slow
def test_killed_regression_run_resumes_bit_for_bit_many_kills(tmp_path):
    _regression_crash(tmp_path, epochs=8, kills=6)


class _Killed(BaseException):
    """Stands for SIGKILL in-process: nothing after it runs (no except Exception catches it)."""


def test_a_run_killed_before_its_first_validation_finished_resumes_bit_for_bit(tmp_path,
                                                                                monkeypatch):
    """The kill right after the first checkpoint write, its validation still running in the
    worker (the case a random kill finds now and then), made deterministic."""
    from tinydan.experiments import common
    cfg = regression.regression_config("tiny", meta_epochs=2)
    quiet = {"quiet": True, "log": lambda *a: None, "workers": 1}
    straight = regression.meta_train(cfg, 0, tmp_path / "a", **quiet)
    real = common.save_checkpoint

    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise _Killed
    monkeypatch.setattr(common, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        regression.meta_train(cfg, 0, tmp_path / "b", **quiet)
    monkeypatch.setattr(common, "save_checkpoint", real)
    meta = load_checkpoint(tmp_path / "b" / "checkpoint.npz")[1]
    if meta["val_history"]:
        pytest.skip("the first validation finished before the checkpoint was written")
    resumed = regression.meta_train(cfg, 0, tmp_path / "b", resume=True, **quiet)
    assert resumed.meta["val_history"] == straight.meta["val_history"]
    assert sorted(resumed.snapshots) == sorted(straight.snapshots)
    regression.save_phenotype(straight, tmp_path / "a" / "phenotype.npz")
    regression.save_phenotype(resumed, tmp_path / "b" / "phenotype.npz")
    _assert_same_run(tmp_path / "a", tmp_path / "b", "killed before its first validation:")


def _ucil_data_or_skip(monkeypatch):
    from tinydan.datasets import DatasetError
    monkeypatch.setenv("TINYDAN_OFFLINE", "1")
    try:
        ucil.load_data(ucil.ucil_config("tiny"), mnist=False)
    except (DatasetError, OSError) as e:
        pytest.skip(f"the Omniglot data is not available offline here ({one_line(e)})")


def _ucil_crash(tmp_path, monkeypatch, epochs: int, kills: int):
    _ucil_data_or_skip(monkeypatch)
    rng = random.Random(random.SystemRandom().randrange(2 ** 32))
    records = _crash_test(tmp_path, "tinydan.ucil", ["--config", "tiny", "--epochs", str(epochs)],
                          _plans(rng, epochs, kills), _env(TINYDAN_OFFLINE="1"))
    return records                     # pending validations at a kill: as for the regression


@needs_proc
@pytest.mark.ucil
def test_killed_ucil_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    """One SIGKILL right after a checkpoint write (validations pending), then --resume."""
    _ucil_crash(tmp_path, monkeypatch, epochs=3, kills=1)


@needs_proc
@pytest.mark.ucil
@pytest.mark.slow
def test_killed_ucil_run_resumes_bit_for_bit_many_kills(tmp_path, monkeypatch):
    _ucil_crash(tmp_path, monkeypatch, epochs=6, kills=5)


# ---------------------------------------------------------------------------------------------
# the run folder: overwrite refusal, the lock, atomic outputs, temporary files
# ---------------------------------------------------------------------------------------------
def _exit2(main, argv, capsys) -> str:
    """Run ``main(argv)``: it must stop with exit code 2, no traceback; returns the error line."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    assert rc == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("main,argv", [
    (regression.main, ["meta-train", "--config", "tiny"]),
    (regression.main, ["run", "--config", "tiny"]),
    (regression.main, ["deploy", "--eval-functions", "2"]),
    (ucil.main, ["meta-train", "--config", "tiny"]),
])
def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path, capsys, main,
                                                                       argv):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"kept": true}')
    line = _exit2(main, argv + ["--out", str(out), "--quiet"], capsys)
    assert "holds another run" in line and "--resume" in line and "--overwrite" in line
    assert (out / "results.json").read_text() == '{"kept": true}'
    with RunFolder(out, overwrite=True):       # either flag lets the run in
        pass
    with RunFolder(out, resume=True):
        pass


def test_a_held_folder_stops_a_second_run(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tinydan.experiments.cli import RunFolder\n"
         f"f = RunFolder({str(out)!r}).__enter__(); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(), text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = _exit2(regression.main, ["meta-train", "--config", "tiny", "--out", str(out),
                                        "--resume", "--quiet"], capsys)
        assert "in use by another run" in line
        assert not (out / "checkpoint.npz").exists()
    finally:
        holder.kill()
        holder.wait()
    with RunFolder(out, resume=True):          # a killed holder leaves the folder free
        with pytest.raises(UsageError, match="in use by another run"):
            RunFolder(out, resume=True).__enter__()     # the same process, a second time


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_does_not_keep_the_lock_of_a_killed_run(tmp_path):
    """The lock is the run's, not its workers': after the run is killed, a worker that is still
    winding down does not keep the folder locked (so --resume can start at once)."""
    out = tmp_path / "run"
    code = ("import os, sys, time\nfrom tinydan.experiments.cli import RunFolder\n"
            f"f = RunFolder({str(out)!r}).__enter__()\n"
            "pid = os.fork()\n"
            f"if pid == 0:\n    open({str(tmp_path / 'child-ready')!r}, 'w').close()\n"
            "    time.sleep(60)\n    os._exit(0)\n"
            "print(pid, flush=True)\nsys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=_env(), text=True)
    child = int(holder.stdout.readline())
    deadline = time.monotonic() + 30          # the child runs code after fork: its at-fork
    while not (tmp_path / "child-ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)                      # handlers (which drop the lock) have run
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert Path(f"/proc/{child}").exists() or not Path("/proc").exists()
        with RunFolder(out, resume=True):
            pass
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_failed_write_leaves_the_previous_results_and_no_temporary_file(tmp_path, monkeypatch):
    write_results(tmp_path, {"run": 1}, "# one\n")
    before = (tmp_path / "results.json").read_text()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_results(tmp_path, {"run": 2}, "# two\n")
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "checkpoint.npz", {"phi.w": np.ones(3)}, {"kind": "test"})
    monkeypatch.undo()
    assert (tmp_path / "results.json").read_text() == before
    assert json.loads(before)["run"] == 1 and (tmp_path / "results.md").read_text() == "# one\n"
    assert not (tmp_path / "checkpoint.npz").exists()
    assert _leftovers(tmp_path) == []


def test_temporary_files_of_dead_processes_are_removed_on_entry(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)
    live = os.getpid()
    (tmp_path / "cells").mkdir()
    stale = [tmp_path / f"checkpoint.npz.tmp-{dead}", tmp_path / "cells" / f"a.json.tmp-{dead}"]
    kept = [tmp_path / f"results.json.tmp-{live}", tmp_path / "notes.tmp-x"]
    for p in stale + kept:
        p.write_text("partial")
    with RunFolder(tmp_path, resume=True):
        pass
    assert [p.exists() for p in stale] == [False, False]
    assert [p.exists() for p in kept] == [True, True]


# ---------------------------------------------------------------------------------------------
# user mistakes: one line, exit code 2, before the long work
# ---------------------------------------------------------------------------------------------
SHIPPED_UCIL = ROOT / "tinydan" / "phenotypes" / "ucil_small.npz"


@pytest.fixture
def files(tmp_path):
    """A plain file, a non-regression checkpoint and regression checkpoints whose config was
    tampered with."""
    f = {"file": tmp_path / "a-file.txt", "foreign": tmp_path / "foreign.npz"}
    f["file"].write_text("not a folder")
    save_checkpoint(f["foreign"], {"phi.w": np.ones(2)}, {"kind": "tinydan.ucil", "config": {}})
    arrays, meta = load_checkpoint(regression.SHIPPED_PHENOTYPE)
    for name, nodes in (("shapes", [1, 9, 8, 1]), ("build", [1, 8, 1]), ("value", "x")):
        m = json.loads(json.dumps(meta))
        m["config"]["nodes"] = nodes
        f[name] = save_checkpoint(tmp_path / f"tampered-{name}.npz", arrays, m)
    m = json.loads(json.dumps(meta))
    m["config"]["sharing"] = "bogus"
    f["invalid"] = save_checkpoint(tmp_path / "tampered-invalid.npz", arrays, m)
    return f


MISTAKES = [  # (cli, argv with {file}/{foreign}/..., words of the one error line)
    ("regression", ["run", "--seed", "-1"], "a seed is a whole number >= 0"),
    ("regression", ["meta-train", "--seed", "-1"], "a seed is a whole number >= 0"),
    ("regression", ["ablate", "--seed", "-1"], "a seed is a whole number >= 0"),
    ("ucil", ["meta-train", "--seed", "-1"], "a seed is a whole number >= 0"),
    ("regression", ["meta-train", "--config", "tiny", "--out", "{file}"], "is a file, not a folder"),
    ("regression", ["meta-train", "--config", "tiny", "--out", "{file}/run"],
     "is a file, not a folder"),
    ("regression", ["deploy", "--out", "{file}/run"], "is a file, not a folder"),
    ("ucil", ["meta-train", "--config", "tiny", "--out", "{file}"], "is a file, not a folder"),
    ("regression", ["ablate", "--config", "tiny", "--out", "{file}/x"], "is a file, not a folder"),
    ("regression", ["run", "--eval-functions", "1"], "confidence intervals need at least 2"),
    ("regression", ["deploy", "--eval-functions", "1"], "confidence intervals need at least 2"),
    ("regression", ["ablate", "--eval-functions", "1"], "confidence intervals need at least 2"),
    ("regression", ["ablate", "--study", "models", "--phenotype", "{foreign}", "--out", "{tmp}/a"],
     "is not a regression phenotype"),
    ("regression", ["ablate", "--study", "baselines", "--phenotype", "{build}", "--out",
                    "{tmp}/a"], "does not build a network"),
    ("regression", ["deploy", "--checkpoint", "{shapes}", "--out", "{tmp}/d"],
     "theta0.vec0.weight has shape"),
    ("regression", ["deploy", "--checkpoint", "{build}", "--out", "{tmp}/d"],
     "does not build a network"),
    ("regression", ["deploy", "--checkpoint", "{value}", "--out", "{tmp}/d"],
     "does not build a network"),
    ("regression", ["deploy", "--checkpoint", "{invalid}", "--out", "{tmp}/d"],
     "its config cannot be read (sharing must be one of"),
    ("regression", ["deploy", "--checkpoint", "{foreign}", "--out", "{tmp}/d"],
     "made for other settings than you asked for: kind:"),
    ("regression", ["report", "{tmp}", "--out", "{file}/report.md"], "is a file, not a folder"),
    ("regression", ["ablate", "--workers", "-1"], "must be 0 or more"),
]


@pytest.mark.parametrize("cli,argv,words", MISTAKES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_mistake_stops_at_once_with_one_line_and_exit_code_2(tmp_path, capsys, files, cli,
                                                               argv, words):
    main = {"regression": regression.main, "ucil": ucil.main}[cli]
    names = dict(files, tmp=tmp_path)
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in argv] + ["--quiet"] * (
        argv[0] != "report")
    t0 = time.perf_counter()
    line = _exit2(main, argv, capsys)
    assert words in line, line
    assert time.perf_counter() - t0 < 30          # before any meta-training or deployment
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_a_tampered_checkpoint_stops_a_resumed_run_with_one_line(tmp_path, capsys, files):
    out = tmp_path / "run"
    out.mkdir()
    arrays, meta = load_checkpoint(files["shapes"])
    save_checkpoint(out / "checkpoint.npz", arrays, meta)
    line = _exit2(regression.main, ["meta-train", "--config", "tiny", "--out", str(out),
                                    "--resume", "--quiet"], capsys)
    assert "made for other settings than you asked for" in line and "config.nodes" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: folder permissions do not apply, so a read-only "
                           "--out cannot be refused here")
@pytest.mark.parametrize("where", ["run", "run/below"])
def test_a_read_only_out_is_refused(tmp_path, capsys, where):
    ro = tmp_path / "ro"
    ro.mkdir()
    if where == "run":
        (ro / "run").mkdir()
        os.chmod(ro / "run", 0o555)
    os.chmod(ro, 0o555)
    try:
        line = _exit2(regression.main, ["meta-train", "--config", "tiny", "--out",
                                        str(ro / where), "--quiet"], capsys)
        assert "not writable" in line
    finally:
        os.chmod(ro, 0o755)
        if (ro / "run").exists():
            os.chmod(ro / "run", 0o755)


def test_configs_read_from_files_are_validated_as_a_whole(files):
    with pytest.raises(CheckpointError, match="sharing must be one of"):
        regression.load_phenotype(files["invalid"])
    if not SHIPPED_UCIL.exists():
        pytest.skip("no shipped UCIL phenotype in this checkout")
    arrays, meta = load_checkpoint(SHIPPED_UCIL)
    for field, value in (("n_channels", 35), ("val_every", 0), ("bogus", 1)):
        m = json.loads(json.dumps(meta))
        m["config"][field] = value
        bad = save_checkpoint(files["file"].parent / f"ucil-{field}.npz", arrays, m)
        with pytest.raises(CheckpointError, match="config cannot be read"):
            ucil.load_phenotype(bad)


def test_one_line_joins_a_multi_line_message():
    assert one_line("made for other settings:\n  - kind: a\n  - seed: b\nPass another.") == \
        "made for other settings: kind: a; seed: b; Pass another."
    assert one_line("one") == "one"


# ---------------------------------------------------------------------------------------------
# --help shows every default
# ---------------------------------------------------------------------------------------------
def _subcommands(parser) -> dict:
    import argparse
    return next(dict(a.choices) for a in parser._actions
                if isinstance(a, argparse._SubParsersAction))


def _option_entries(help_text: str) -> list:
    """[(option syntax, its whole help text)] of a --help output."""
    entries = []
    for line in help_text.splitlines():
        if line.startswith("  -"):
            head, _, text = line.strip().partition("  ")
            entries.append([head, text])
        elif line.startswith("   ") and entries:
            entries[-1][1] += " " + line.strip()
        elif not line.startswith(" "):
            entries.append(["", ""])                   # a section heading ends an entry
    return [(h, " ".join(t.split())) for h, t in entries if h]


@pytest.mark.parametrize("cli", ["regression", "ucil"])
def test_help_shows_a_default_for_every_option_that_takes_a_value(cli, capsys):
    mod = {"regression": regression, "ucil": ucil}[cli]
    checked = 0
    for name in _subcommands(mod.build_parser()):
        with pytest.raises(SystemExit) as e:
            mod.main([name, "--help"])
        assert e.value.code == 0
        for head, text in _option_entries(capsys.readouterr().out):
            takes_value = any(" " in part for part in head.split(", "))
            if takes_value:
                checked += 1
                assert "default" in text, f"{cli} {name} {head}: {text!r}"
    assert checked > 10


def test_help_parser_finds_options_without_a_default():
    text = ("options:\n  -h, --help  show this help\n  --out OUT   output folder\n"
            "  --quiet     no bars\n  --config {a,b}\n              model (default: a)\n")
    assert _option_entries(text) == [("-h, --help", "show this help"),
                                     ("--out OUT", "output folder"), ("--quiet", "no bars"),
                                     ("--config {a,b}", "model (default: a)")]


# ---------------------------------------------------------------------------------------------
# grad of something computed under no_grad; ablate --sizes tiny starts in seconds
# ---------------------------------------------------------------------------------------------
def test_grad_of_an_output_made_under_no_grad_says_so():
    x = td.Tensor(np.ones(3), requires_grad=True)
    with td.no_grad():
        y = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"no graph: it was computed with gradient recording "
                                           r"off \(under no_grad\(\)\)"):
        td.grad(y, x)
    assert td.grad(y, x, allow_unused=True) is None
    z = td.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"inputs\[1\] .* was not used"):
        td.grad((x * 2).sum(), [x, z])


def test_ablate_with_tiny_sizes_deploys_the_shipped_phenotype(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_study(study, cfg, out, sizes, seed, phenotype, *args, **kwargs):
        seen.update(study=study, cfg=cfg.name, phenotype=phenotype)
    monkeypatch.setattr(ablation_studies, "run_study", fake_study)
    argv = ["ablate", "--study", "baselines", "--sizes", "tiny", "--quiet"]
    assert regression.main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert seen == {"study": "baselines", "cfg": "default",
                    "phenotype": regression.SHIPPED_PHENOTYPE}
    assert "the shipped phenotype" in capsys.readouterr().out
    assert regression.main(argv + ["--config", "tiny", "--out", str(tmp_path / "b")]) == 0
    assert seen["phenotype"] is None                      # tiny: meta-trained in seconds
    assert regression.main(argv + ["--epochs", "3", "--out", str(tmp_path / "c")]) == 0
    assert seen["phenotype"] is None                      # not the shipped config any more
    assert regression.main(["ablate", "--study", "baselines", "--quiet", "--out",
                            str(tmp_path / "d")]) == 0
    assert seen["phenotype"] is None                      # default sizes: meta-train as asked
